//! `xferd`: the xfer daemon as a library, so tests can run it in-process.
//!
//! [`ServerState::open`] prepares everything a server needs (data directory, TLS
//! identity, password file, session store, users' storage) and refuses unsafe set-ups; [`serve`]
//! runs the accept loop until its cancellation token fires, then drains sessions.
//! Argument parsing and signals live in `main.rs`; config discovery in [`config::discover`],
//! the never-failing log writer in [`logging`].

pub mod accounts;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod control;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod relpath;
pub mod server;
pub mod session;
pub mod state;
pub mod storage;
pub mod web;

pub use config::Config;
pub use server::serve;
pub use state::ServerState;

/// `xferd/<version>`, sent in the protocol hello.
pub const SOFTWARE: &str = concat!("xferd/", env!("CARGO_PKG_VERSION"));

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
