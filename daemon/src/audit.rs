//! Audit events: one `target: "audit"` event per login attempt, logout, committed upload,
//! committed send (a file handed to another user) and completed download, so they can be routed separately (`RUST_LOG=audit=info`).
//! Field names are a contract: tests and log tooling read `resumed_from=` and
//! `bytes_received=` from upload events to measure what a resume actually sent, and
//! `wire_bytes=` (upload and download) to see what compression saved on the wire.
//!
//! Names supplied by peers are logged with `Debug` formatting, which escapes control
//! characters: a user name cannot forge extra log lines.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::{info, warn};

/// How a login was attempted.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// User name and password (argon2 verification).
    Password,
    /// A session token from an earlier login.
    Token,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Token => "token",
        }
    }
}

/// A login succeeded.
pub fn login_succeeded(user: &str, peer: SocketAddr, method: Method) {
    info!(target: "audit", event = "login", outcome = "success", method = method.as_str(), user, %peer);
}

/// A password was checked and was wrong (or the user does not exist): one real
/// argon2 verification ran (`verified=true`).
pub fn login_failed(user: &str, peer: SocketAddr, user_known: bool) {
    warn!(
        target: "audit", event = "login", outcome = "failure", method = "password",
        reason = "bad_credentials", verified = true, user_known, user = ?user, %peer
    );
}

/// A token was presented that is unknown, expired or revoked.
pub fn token_refused(peer: SocketAddr) {
    warn!(target: "audit", event = "login", outcome = "failure", method = "token", reason = "invalid_token", %peer);
}

/// A login was refused by the throttle without any verification (`verified=false`).
pub fn login_throttled(user: &str, peer: SocketAddr, retry_after: Duration) {
    warn!(
        target: "audit", event = "login", outcome = "throttled", method = "password",
        verified = false, retry_after_secs = retry_after.as_secs(), user = ?user, %peer
    );
}

/// A session token was revoked by its owner.
pub fn logout(user: &str, peer: SocketAddr) {
    info!(target: "audit", event = "logout", user, %peer);
}

/// A committed upload, for [`upload`].
#[derive(Debug)]
pub struct UploadRecord<'a> {
    /// Account name.
    pub user: &'a str,
    /// Destination, relative to the user's home.
    pub path: &'a str,
    /// Size of the committed file.
    pub bytes: u64,
    /// Its BLAKE3, hex.
    pub digest: &'a str,
    /// From `PutBegin` to the commit.
    pub duration_ms: u64,
    /// Bytes the server already held, verified, when this transfer began.
    pub resumed_from: u64,
    /// Chunk bytes received (and verified) on this transfer.
    pub bytes_received: u64,
    /// The same chunks' bytes as they travelled (fewer when compressed).
    pub wire_bytes: u64,
}

/// An upload was verified and committed under its name.
pub fn upload(r: &UploadRecord<'_>) {
    info!(
        target: "audit", event = "upload", outcome = "success", user = r.user, path = ?r.path,
        bytes = r.bytes, digest = r.digest, duration_ms = r.duration_ms,
        resumed_from = r.resumed_from, bytes_received = r.bytes_received,
        wire_bytes = r.wire_bytes
    );
}

/// A file handed to `to` was verified and committed in their inbox. `user` is the
/// sender; `path` is in the recipient's namespace.
pub fn send(r: &UploadRecord<'_>, to: &str) {
    info!(
        target: "audit", event = "send", outcome = "success", user = r.user, to, path = ?r.path,
        bytes = r.bytes, digest = r.digest, duration_ms = r.duration_ms,
        resumed_from = r.resumed_from, bytes_received = r.bytes_received
    );
}

/// A download that reached the end of the file, for [`download`].
#[derive(Debug)]
pub struct DownloadRecord<'a> {
    /// Account name.
    pub user: &'a str,
    /// The file, relative to the user's home.
    pub path: &'a str,
    /// Its size.
    pub size: u64,
    /// Chunk bytes sent on this transfer.
    pub bytes_sent: u64,
    /// The same chunks' bytes as they travelled (fewer when compressed).
    pub wire_bytes: u64,
    /// Whether the first chunk asked for was not the file's first (a resumed pull).
    pub resumed: bool,
    /// From `GetBegin` to the close.
    pub duration_ms: u64,
}

/// A download sent the file's last chunk and was closed.
pub fn download(r: &DownloadRecord<'_>) {
    info!(
        target: "audit", event = "download", outcome = "success", user = r.user, path = ?r.path,
        size = r.size, bytes = r.bytes_sent, wire_bytes = r.wire_bytes, resumed = r.resumed,
        duration_ms = r.duration_ms
    );
}
