//! Typed messages: the frozen [`Hello`], control [`Request`]s and [`Response`]s
//! (postcard-encoded), and the binary [`Chunk`] that carries file data.
//!
//! Control messages are postcard-encoded serde enums: variant order is part of the
//! protocol, so new variants are only ever appended, and a change in meaning bumps
//! [`crate::PROTOCOL_VERSION`].

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    Catchup, ChannelInfo, ChannelName, ChatEvent, ChatMessage, Digest, ErrorCode, Presence, Target,
};

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
    /// The empty path is the user's home. A directory comes in pages of at most
    /// [`crate::LIST_PAGE`] names: ask again with `after` set to the last name received
    /// while the answer says `more`.
    List {
        /// Relative path inside the user's namespace.
        path: String,
        /// Only names sorting after this one (byte order); `None` from the first.
        after: Option<String>,
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
        /// Let the server send zstd-compressed chunk frames (it does so only for chunks
        /// that shrink).
        compress: bool,
    },
    /// Closes an open transfer without committing (an upload stays resumable).
    Close {
        /// The transfer.
        transfer_id: u64,
    },
    /// Makes this connection a chat connection; answered by [`Response::ChatOpened`].
    /// From then on the server pushes [`Response::Event`]s: first the direct messages and
    /// file notices stored for this user since their last chat connection (or, with
    /// `after`, every direct message and notice with a larger id), then live ones.
    ChatOpen {
        /// Replay direct messages and notices after this message id (a reconnecting
        /// client passes the last id it saw).
        after: Option<u64>,
    },
    /// Joins a channel (created on first use); answered by [`Response::Joined`].
    /// Needs `ChatOpen` first.
    Join {
        /// The channel.
        channel: ChannelName,
        /// Replay the last `history` messages (at most [`crate::MAX_HISTORY`]).
        history: u32,
        /// Instead, replay the messages after this id (reconnect), at most `MAX_HISTORY`.
        after: Option<u64>,
    },
    /// Leaves a channel; answered by `Ok`.
    Part {
        /// The channel.
        channel: ChannelName,
    },
    /// Sends a message to `#channel` or `@user`; answered by [`Response::Said`]. Needs no
    /// `ChatOpen` (scripts say one line and leave) and no membership.
    Say {
        /// `#channel` or `@user`.
        target: Target,
        /// At most [`crate::MAX_MESSAGE_LEN`] bytes.
        text: String,
    },
    /// Reads stored messages of a channel or of this user's conversation with `@user`;
    /// answered by [`Response::History`], oldest first.
    History {
        /// `#channel` or `@user`.
        target: Target,
        /// How many (at most [`crate::MAX_HISTORY`]).
        count: u32,
        /// Only messages with a smaller id (paging backwards).
        before: Option<u64>,
    },
    /// Who is online: the members of `channel`, or every user with a chat connection;
    /// answered by [`Response::Who`].
    Who {
        /// The channel, or `None` for everyone online.
        channel: Option<ChannelName>,
    },
    /// Lists channels that have members now; answered by [`Response::Channels`].
    Channels,
    /// Marks this user away or back; answered by `Ok`.
    SetAway {
        /// Away (true) or back (false).
        away: bool,
    },
    /// Starts or resumes handing a file to another user: an upload, exactly like
    /// [`Request::PutBegin`], into `inbox/<sender>/<name>` in the recipient's namespace
    /// (counted against their quota). Answered by [`Response::PutReady`] or
    /// [`Response::Exists`]; the transfer then continues with `Manifest`, chunks and
    /// `PutCommit`. On commit the recipient gets a [`crate::MessageBody::File`] message.
    SendBegin {
        /// Recipient's account name.
        to: String,
        /// File name: one path component.
        name: String,
        /// Final size in bytes.
        size: u64,
        /// Replace a different file this sender already put there under that name.
        force: bool,
        /// Magic bytes of the file's start (at most [`crate::SNIFF_LEN`]).
        head: bytes::Bytes,
    },
    /// Sets a committed file's modification time (as `touch -d`, rsync `-t`); answered
    /// by `Ok`. A push sends it right after `PutCommit` with the local file's time, and
    /// `push --update` for a file whose content is already there but whose time differs.
    /// The file's digest stays known (its manifest follows the new time).
    SetModified {
        /// Relative path of a committed file.
        path: String,
        /// Seconds since the Unix epoch.
        modified_unix: u64,
    },
    /// Records that this user read `target` up to message `id` (a position only
    /// rises; one past the newest message is lowered to it); answered by `Ok`. Kept on
    /// the server, so it follows the user from machine to machine.
    MarkRead {
        /// `#channel` or `@user` (a conversation that has messages).
        target: Target,
        /// The largest message id read.
        id: u64,
    },
    /// What is new since this user's read positions; answered by
    /// [`Response::Catchup`]. Needs no `ChatOpen` and moves no position.
    Catchup,
    /// Uploads a whole file of at most one chunk in one request (admission, data and
    /// commit together), to `path`; answered by [`Response::Committed`] once the file is
    /// in place and durable, or [`Response::Exists`] when a file is there and `force` is
    /// false (if it holds exactly this content, its time is set as asked and nothing
    /// else changes). A client may send many before reading the answers, which come in
    /// request order; the server makes consecutive ones durable together.
    PutFile {
        /// Destination relative path.
        path: String,
        /// Replace an existing file (atomically).
        force: bool,
        /// The modification time to give the file, seconds since the Unix epoch.
        modified_unix: Option<u64>,
        /// BLAKE3 of the whole file, checked before anything is stored.
        digest: Digest,
        /// The file's bytes: at most [`crate::CHUNK_SIZE`]. The last field
        /// ([`crate::Payload`]).
        #[serde(with = "crate::payload")]
        data: bytes::Bytes,
    },
    /// Reads a whole file of at most [`crate::CHUNK_SIZE`] bytes in one request;
    /// answered by [`Response::File`]. A larger file is refused with `TooLarge` (read it
    /// with `GetBegin`). A client may send many before reading the answers.
    GetFile {
        /// Relative path.
        path: String,
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
    /// Answer to [`Request::List`]: one page of entries, sorted by name.
    Listing {
        /// The entries.
        entries: Vec<Entry>,
        /// More names follow the last of `entries`: ask again with `after` set to it.
        more: bool,
    },
    /// Answer to [`Request::PutBegin`]: send the chunks the server does not hold.
    PutReady {
        /// Names this transfer in later requests and chunk frames.
        transfer_id: u64,
        /// Chunk size in bytes, a power of two from 1 KiB to [`crate::CHUNK_SIZE`]; chunk
        /// `i` covers `[i * chunk_size, (i+1) * chunk_size)`.
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
        /// Chunk size in bytes (as in [`Response::PutReady`]).
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
    /// Answer to [`Request::ChatOpen`].
    ChatOpened {
        /// Account name of this session.
        user: String,
        /// The largest message id so far (0 if none).
        last_id: u64,
    },
    /// Answer to [`Request::Join`].
    Joined {
        /// The channel.
        channel: ChannelName,
        /// Who is in it now, including this user.
        members: Vec<Presence>,
        /// Replayed messages, oldest first.
        history: Vec<ChatMessage>,
    },
    /// Answer to [`Request::Say`]: stored and delivered.
    Said {
        /// The message's id.
        id: u64,
        /// The server's timestamp, milliseconds since the Unix epoch.
        time_unix_ms: u64,
    },
    /// Answer to [`Request::History`].
    History {
        /// `#channel` or `@user` as asked.
        target: Target,
        /// Oldest first.
        messages: Vec<ChatMessage>,
    },
    /// Answer to [`Request::Who`], sorted by name.
    Who {
        /// Users and their state.
        users: Vec<Presence>,
    },
    /// Answer to [`Request::Channels`], sorted by name.
    Channels {
        /// Channels with members.
        channels: Vec<ChannelInfo>,
    },
    /// Pushed unasked to a chat connection; never the answer to a request.
    Event(Box<ChatEvent>),
    /// Answer to [`Request::Catchup`].
    Catchup(Catchup),
    /// Answer to [`Request::GetFile`]: the whole file.
    File {
        /// BLAKE3 of the whole file (the client checks `data` against it).
        digest: Digest,
        /// Last modification, seconds since the Unix epoch.
        modified_unix: u64,
        /// The file's bytes. The last field ([`crate::Payload`]).
        #[serde(with = "crate::payload")]
        data: bytes::Bytes,
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

/// How a [`Chunk`]'s `data` is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEncoding {
    /// The file's bytes as they are (frame kind `0x02`).
    Raw,
    /// zstd-compressed; `raw_len` bytes once decompressed (frame kind `0x03`).
    Zstd {
        /// Length of the decompressed data, at most [`crate::CHUNK_SIZE`].
        raw_len: u32,
    },
}

/// A piece of file data, sent in its own binary frame (no re-encoding of the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The transfer this chunk belongs to.
    pub transfer_id: u64,
    /// Byte offset of the (decompressed) data within the file.
    pub offset: u64,
    /// Digest of the decompressed data at `offset` ([`Digest::of_chunk`]: its BLAKE3
    /// subtree chaining value), checked by the receiver before the data is used.
    pub digest: Digest,
    /// The bytes, encoded as `encoding` says.
    pub data: Bytes,
    /// Raw or compressed.
    pub encoding: ChunkEncoding,
}

impl Chunk {
    /// A chunk carrying `data` as it is.
    pub fn raw(transfer_id: u64, offset: u64, digest: Digest, data: Bytes) -> Self {
        Chunk {
            transfer_id,
            offset,
            digest,
            data,
            encoding: ChunkEncoding::Raw,
        }
    }

    /// Compresses a raw chunk with zstd at `level`, keeping it raw when that does not
    /// save at least 1/32 of its size (already-compressed media, random data).
    pub fn compress(self, level: i32) -> Self {
        if self.encoding != ChunkEncoding::Raw || self.data.len() < 64 {
            return self;
        }
        let Ok(packed) = zstd::bulk::compress(&self.data, level) else {
            return self;
        };
        if packed.len() + self.data.len() / 32 >= self.data.len() {
            return self;
        }
        Chunk {
            encoding: ChunkEncoding::Zstd {
                raw_len: self.data.len() as u32,
            },
            data: Bytes::from(packed),
            ..self
        }
    }

    /// The chunk with raw data: decompresses a zstd chunk, refusing one that would
    /// exceed [`crate::CHUNK_SIZE`] or does not decompress to exactly its `raw_len`.
    /// The digest is not checked here.
    pub fn into_raw(self) -> Result<Self, crate::ProtoError> {
        let ChunkEncoding::Zstd { raw_len } = self.encoding else {
            return Ok(self);
        };
        let raw_len = raw_len as usize;
        if raw_len > crate::CHUNK_SIZE {
            return Err(crate::ProtoError::Malformed(format!(
                "compressed chunk claims {raw_len} bytes, more than a chunk"
            )));
        }
        let data = zstd::bulk::decompress(&self.data, raw_len)
            .map_err(|e| crate::ProtoError::Malformed(format!("undecodable zstd chunk: {e}")))?;
        if data.len() != raw_len {
            return Err(crate::ProtoError::Malformed(format!(
                "compressed chunk decoded to {} bytes, not the {raw_len} it claims",
                data.len()
            )));
        }
        Ok(Chunk {
            data: Bytes::from(data),
            encoding: ChunkEncoding::Raw,
            ..self
        })
    }
}
