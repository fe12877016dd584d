//! One test binary, one module per capability (ripgrep's `tests/tests.rs` layout).

mod admin;
mod admission;
mod chat;
mod chat_server;
mod compress;
mod confinement;
mod files;
mod hostile;
mod identity;
mod lifecycle;
mod login;
mod preview;
mod resume;
