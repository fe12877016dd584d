//! TLS identity for xfer, shared by the daemon (`xferd`) and the client (`xfer`).
//!
//! The daemon generates a self-signed certificate on first start ([`generate`]) and serves
//! it with a TLS 1.3-only [`config::server_config`]. Clients either pin the certificate's
//! SHA-256 [`Fingerprint`] on first use ([`KnownHosts`] plus [`PinnedVerifier`], like OpenSSH
//! `known_hosts`) or verify it against a CA file ([`config::client_config_ca`]); [`ca`] is a
//! small local CA that issues the daemon's certificate for that second mode. This crate
//! does no networking and no prompting: deciding whether to trust an unknown or changed
//! fingerprint is the caller's job.

#![warn(missing_docs)]

pub mod ca;
pub mod config;
pub mod error;
pub mod fingerprint;
pub mod generate;
pub mod known_hosts;
pub mod pem;
pub mod verifier;

pub use error::CertError;
pub use fingerprint::Fingerprint;
pub use known_hosts::{HostStatus, KnownHosts};
pub use verifier::PinnedVerifier;

/// The ALPN protocol identifier both sides offer; a peer that does not speak it is refused.
pub const ALPN: &[u8] = b"xfer/1";

/// The ALPN identifiers of the HTTPS application the daemon also serves on its port
/// (browsers, curl): offered after [`ALPN`], so an xfer client always gets the protocol.
/// HTTP/1.1 comes before h2: a browser's upload costs it and the daemon about 1.7 CPU
/// seconds per GiB less than over h2's framing and flow control (bench/RESULTS.md), and
/// a LAN page gains little from h2's single connection. A client offering only h2 gets it.
pub const HTTP_ALPN: [&[u8]; 2] = [b"http/1.1", b"h2"];
