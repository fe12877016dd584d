//! The `xfer` client: saved logins, server trust, typed requests, and one module per
//! subcommand. `main.rs` only parses arguments, dispatches, and maps errors to exit codes.
//!
//! Layers go one way: the subcommands ([`cmd`]) use the chat client ([`chat`]), and
//! both use what lies below them (opening a logged-in [`session`], the [`transfer`]
//! engines, the [`client`] connection); nothing below imports [`cmd`].

pub mod chat;
pub mod client;
pub mod cmd;
pub mod error;
pub mod home;
pub mod output;
pub mod preview;
pub mod session;
pub mod stall;
pub mod target;
pub mod transfer;
pub mod trust;

pub use error::{ErrorKind, exit_code};
