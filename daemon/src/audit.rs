//! Audit events: one `target: "audit"` event per login attempt, logout and (later)
//! committed transfer, so they can be routed separately (`RUST_LOG=audit=info`).
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
