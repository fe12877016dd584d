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
    /// Lists a directory, or describes one file; answered by [`Response::Listing`].
    /// The empty path is the user's home.
    List {
        /// Relative path inside the user's namespace.
        path: String,
    },
    /// Creates a directory; answered by `Ok`.
    Mkdir {
        /// Relative path.
        path: String,
        /// Also create missing parents, and succeed if it exists (`mkdir -p`).
        parents: bool,
    },
    /// Removes a file or directory; answered by `Ok`.
    Remove {
        /// Relative path.
        path: String,
        /// Remove a non-empty directory and everything in it.
        recursive: bool,
        /// Remove the upload in progress to `path` instead of a committed file.
        partial: bool,
    },
    /// Renames a file or directory; answered by `Ok`.
    Rename {
        /// Existing relative path.
        from: String,
        /// New relative path.
        to: String,
        /// Replace an existing file at `to`.
        force: bool,
    },
    /// Starts or resumes an upload of `size` bytes to `path`; answered by
    /// [`Response::PutReady`], or [`Response::Exists`] when a file is there and `force`
    /// is false. Admission (path, quota, space, size and conflicts) is decided here,
    /// before any data flows.
    PutBegin {
        /// Destination relative path.
        path: String,
        /// Final size in bytes.
        size: u64,
        /// Replace an existing file (atomically, at commit).
        force: bool,
        /// Magic bytes of the file's start (at most [`crate::SNIFF_LEN`]), for the
        /// server's content-type policy before any chunk travels.
        head: bytes::Bytes,
    },
    /// Reads chunk digests of an open transfer; answered by [`Response::Manifest`]. For an
    /// upload these are the chunks the server holds, verified; for a download, every chunk.
    Manifest {
        /// The transfer.
        transfer_id: u64,
        /// First chunk index.
        first: u64,
        /// Number of digests wanted (the server may return fewer, at most [`crate::MANIFEST_PAGE`]).
        count: u32,
    },
    /// Completes an upload whose chunks have all been acknowledged; answered by
    /// [`Response::Committed`]. The server compares the whole-file digest, fsyncs the
    /// file and renames it into place.
    PutCommit {
        /// The transfer.
        transfer_id: u64,
        /// BLAKE3 of the whole file.
        digest: Digest,
    },
    /// Opens a file for download; answered by [`Response::GetReady`].
    GetBegin {
        /// Relative path.
        path: String,
    },
    /// Asks for `count` chunks starting at index `first` of an open download; answered by
    /// that many [`Chunk`] frames in order (or an `Error` in their place).
    GetChunks {
        /// The transfer.
        transfer_id: u64,
        /// First chunk index.
        first: u64,
        /// Number of chunks.
        count: u64,
    },
    /// Closes an open transfer without committing (an upload stays resumable).
    Close {
        /// The transfer.
        transfer_id: u64,
    },
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A committed, verified file.
    File,
    /// A directory.
    Dir,
    /// An upload in progress: never a complete file.
    Partial,
}

/// One entry of a [`Response::Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's name: one path component.
    pub name: String,
    /// File, directory or upload in progress.
    pub kind: EntryKind,
    /// Size in bytes (for a partial, the final size).
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified_unix: u64,
    /// BLAKE3 of the whole file, for committed files whose digest is known.
    pub digest: Option<Digest>,
    /// Bytes received and verified so far, for partials.
    pub received: Option<u64>,
    /// When an abandoned partial is removed, seconds since the Unix epoch.
    pub expires_unix: Option<u64>,
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
    /// Answer to [`Request::List`]: entries sorted by name.
    Listing {
        /// The entries.
        entries: Vec<Entry>,
    },
    /// Answer to [`Request::PutBegin`]: send the chunks the server does not hold.
    PutReady {
        /// Names this transfer in later requests and chunk frames.
        transfer_id: u64,
        /// Chunk size in bytes; chunk `i` covers `[i * chunk_size, (i+1) * chunk_size)`.
        chunk_size: u32,
        /// How many chunks the server already holds, verified (read them with `Manifest`).
        chunks_held: u64,
    },
    /// Answer to [`Request::PutBegin`] without `force` when the destination exists.
    Exists {
        /// Size of the existing file.
        size: u64,
        /// Its BLAKE3, if known: equal means the upload has nothing to do.
        digest: Option<Digest>,
    },
    /// Answer to [`Request::Manifest`].
    Manifest {
        /// Index of the first digest.
        first: u64,
        /// Digests; `None` for chunks the server does not hold.
        digests: Vec<Option<Digest>>,
    },
    /// Acknowledges one uploaded chunk: verified and written.
    ChunkAck {
        /// The transfer.
        transfer_id: u64,
        /// The chunk's offset.
        offset: u64,
    },
    /// Answer to [`Request::PutCommit`]: the file is in place under its name.
    Committed {
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the whole file.
        digest: Digest,
    },
    /// Answer to [`Request::GetBegin`].
    GetReady {
        /// Names this transfer.
        transfer_id: u64,
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the whole file.
        digest: Digest,
        /// Chunk size in bytes.
        chunk_size: u32,
        /// Last modification, seconds since the Unix epoch.
        modified_unix: u64,
    },
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
