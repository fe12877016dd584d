//! Typed messages: the frozen [`Hello`], control [`Request`]s and [`Response`]s
//! (postcard-encoded), and the binary [`Chunk`] that carries file data.
//!
//! Control messages are postcard-encoded serde enums: variant order is part of the
//! protocol, so new variants are only ever appended, and a change in meaning bumps
//! [`crate::PROTOCOL_VERSION`].

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Digest, ErrorCode};

/// The first frame each side sends. Its layout is frozen across protocol versions
/// so that any two builds can tell each other which version they speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the sender speaks.
    pub version: u16,
    /// Free-form software name and version, e.g. `xfer/0.1.0`, for logs only.
    pub software: String,
}

impl Hello {
    /// A hello for this build's [`crate::PROTOCOL_VERSION`].
    pub fn current(software: impl Into<String>) -> Self {
        Hello {
            version: crate::PROTOCOL_VERSION,
            software: software.into(),
        }
    }
}

/// A secret string (password or session token): serialised as itself, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A request from client to server. Each is answered by exactly one [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Log in with a password; answered by [`Response::LoggedIn`] carrying a new token.
    Login {
        /// Account name.
        user: String,
        /// The password, which only ever travels inside TLS.
        password: Secret,
    },
    /// Authenticate this connection with a session token from an earlier login;
    /// answered by [`Response::LoggedIn`] without a token.
    Authenticate {
        /// The session token.
        token: Secret,
    },
    /// Revoke the session token that authenticated this connection; answered by `Ok`.
    Logout,
    /// Ask who this session belongs to; answered by [`Response::WhoAmI`].
    WhoAmI,
    /// Keep-alive; answered by [`Response::Pong`].
    Ping,
}

/// Account details returned by [`Request::WhoAmI`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// Account name.
    pub user: String,
    /// When the session token expires, in seconds since the Unix epoch.
    pub session_expires_unix: u64,
    /// Bytes stored by this user.
    pub quota_used_bytes: u64,
    /// The user's quota in bytes, if one is set.
    pub quota_limit_bytes: Option<u64>,
}

/// A response from server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request succeeded and has nothing to report.
    Ok,
    /// The connection is now authenticated as `user`.
    LoggedIn {
        /// Account name.
        user: String,
        /// A new session token (only after a password login).
        token: Option<Secret>,
        /// When the session expires, in seconds since the Unix epoch.
        expires_unix: u64,
    },
    /// Answer to [`Request::WhoAmI`].
    WhoAmI(WhoAmI),
    /// Answer to [`Request::Ping`].
    Pong,
    /// The request failed.
    Error {
        /// Stable reason.
        code: ErrorCode,
        /// One human-readable line; never contains server paths or OS errors.
        message: String,
    },
}

impl Response {
    /// Shorthand for an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

/// A piece of file data, sent in its own binary frame (no re-encoding of the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The transfer this chunk belongs to.
    pub transfer_id: u64,
    /// Byte offset of `data` within the file.
    pub offset: u64,
    /// BLAKE3 digest of `data`, checked by the receiver before the data is used.
    pub digest: Digest,
    /// The bytes.
    pub data: Bytes,
}
