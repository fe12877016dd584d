//! The `xfer` client: saved logins, server trust, typed requests, and one module per
//! subcommand. `main.rs` only parses arguments, dispatches, and maps errors to exit codes.

pub mod chat;
pub mod client;
pub mod cmd;
pub mod error;
pub mod home;
pub mod output;
pub mod preview;
pub mod target;
pub mod transfer;
pub mod trust;

pub use error::{ErrorKind, exit_code};
