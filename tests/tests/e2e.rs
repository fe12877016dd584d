//! One test binary, one module per capability (ripgrep's `tests/tests.rs` layout).

mod admin;
mod admin_path;
mod admission;
mod channels;
mod chat;
mod chat_server;
mod chat_tty;
mod client_ux;
mod compress;
mod confinement;
mod files;
mod hostile;
mod identity;
mod lifecycle;
mod logging;
mod login;
mod metrics;
mod names;
mod operate;
mod packaging;
mod pipe;
mod preview;
mod resume;
mod sync;
mod web_api;
