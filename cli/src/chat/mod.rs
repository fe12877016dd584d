//! The chat client: a connection that routes pushed events apart from answers
//! ([`conn`]), what a session remembers to survive a dropped connection ([`state`]),
//! the loop that drives it and reconnects ([`session`]), slash commands ([`command`],
//! carried out in [`execute`]), how messages are shown ([`render`]), and the terminal
//! side of interactive mode ([`terminal`]). Read positions are kept on the server
//! ([`read`]); [`catchup`] prints what is new since them.
//!
//! The `xfer chat` command picks the mode; nothing here parses the command line or
//! decides exit codes, and nothing here imports the commands: connections come from
//! [`crate::session`], file sends from [`crate::transfer::send`].

pub mod catchup;
pub mod command;
pub mod complete;
pub mod conn;
pub mod execute;
pub mod read;
pub mod redraw;
pub mod render;
pub mod session;
pub mod state;
pub mod terminal;
