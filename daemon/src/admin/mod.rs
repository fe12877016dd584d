//! The administrative subcommands: `xferd init`, `xferd user …`, `xferd fingerprint`.
//! They work on the files directly (no running daemon needed); the daemon notices a
//! changed password file on its own.

pub mod control;
pub mod fingerprint;
pub mod init;
pub mod user;
