//! The administrative subcommands: `xferd init`, `xferd user …` (`archive`: what
//! `user del` keeps), `xferd fingerprint`, `xferd check`, `xferd ca …` (a local CA that
//! issues the server certificate), `xferd migrate` (a single host's files into the
//! bucket of `[storage.s3]`). They work on the files directly (no running daemon
//! needed); the daemon notices a changed password file on its own. All of them find the config the
//! same way (`config::discover`).

pub mod archive;
pub mod ca;
pub mod check;
pub mod control;
pub mod fingerprint;
pub mod init;
pub mod migrate;
pub mod user;
