//! The xfer wire protocol, version [`PROTOCOL_VERSION`].
//!
//! Everything that crosses the wire is defined here: the frame layout ([`codec`]), the
//! version-independent [`Hello`], the typed control messages ([`Request`], [`Response`]),
//! the binary file-data frame ([`Chunk`]) and the stable error codes ([`ErrorCode`]).
//! The crate is pure: it works on any `AsyncRead`/`AsyncWrite` through
//! `tokio_util::codec::Framed` and knows nothing of sockets, TLS or files.
//! `docs/PROTOCOL.md` is the written form of this crate and changes with it.
#![warn(missing_docs)]

pub mod chat;
pub mod checksum;
pub mod codec;
pub mod error;
pub mod layout;
pub mod message;
pub mod names;
pub mod payload;
pub mod text;

pub use chat::{
    Catchup, ChannelInfo, ChatEvent, ChatMessage, MAX_CATCHUP_FILES, MAX_HISTORY, MAX_MESSAGE_LEN,
    MessageBody, Presence, PresenceState, Target, TargetError, Unread, mentions,
};
pub use checksum::Digest;
pub use codec::{ClientCodec, Frame, ServerCodec, XferCodec};
pub use error::{ErrorCode, ProtoError};
pub use layout::{
    BadChunkSize, BufferPool, CHUNK_BUF_ALIGN, COMPRESS_LEVEL, ChunkBuf, ChunkLayout,
};
pub use message::{
    Chunk, ChunkEncoding, Entry, EntryKind, Hello, Request, Response, Secret, WhoAmI,
};
pub use names::{
    ChannelName, InvalidChannelName, InvalidUserName, MAX_CHANNEL_LEN, MAX_USER_LEN, UserName,
    valid_channel_name, valid_user_name,
};
pub use payload::Payload;

/// The protocol version this build speaks. Both ends must agree exactly; the [`Hello`]
/// exchange that compares them has a layout frozen across all versions. Version 2 made
/// chunk digests BLAKE3 subtree chaining values ([`Digest::of_chunk`]); version 3 carries
/// chat targets and channel names typed ([`Target`], [`ChannelName`]) instead of strings;
/// version 4 adds [`Request::SetModified`] (modification times kept on push); version 5
/// adds [`Request::MarkRead`] and [`Request::Catchup`] (read positions kept on the server),
/// and [`Request::PutFile`] and [`Request::GetFile`] (small files in one request each).
pub const PROTOCOL_VERSION: u16 = 5;

/// Size of a file-data chunk in bytes (1 MiB): large enough that per-chunk overhead
/// (frame header, digest, acknowledgement) is negligible, small enough that a bounded
/// window of chunks in flight costs little memory per connection.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Largest frame body accepted once a connection is authenticated: one full chunk plus
/// its header, with room to spare for control messages.
pub const MAX_FRAME_LEN: usize = CHUNK_SIZE + 4096;

/// Largest frame body accepted before authentication. An anonymous peer can make the
/// other end buffer at most this much.
pub const MAX_PREAUTH_FRAME_LEN: usize = 16 * 1024;

/// Names per [`Request::List`] page. An entry encodes to at most about 340 bytes (a
/// 255-byte name, sizes, times, a digest), so a full page stays far below
/// [`MAX_FRAME_LEN`] however long the names.
pub const LIST_PAGE: usize = 1_000;

/// Chunk digests per [`Request::Manifest`] page: 16,384 × 33 bytes fits a frame easily.
pub const MANIFEST_PAGE: u32 = 16_384;

/// Bytes of a file's start sent with [`Request::PutBegin`] for content-type sniffing.
pub const SNIFF_LEN: usize = 512;

/// Chunks an uploader may have sent but not yet seen acknowledged: enough to keep a
/// loopback or LAN link busy, small enough to bound what a connection holds (16 MiB).
pub const PUT_WINDOW: usize = 16;

/// Whether a file of `size` bytes to or from `path` travels whole in one
/// [`Request::PutFile`] / [`Response::File`]: at most one chunk, and the frame (data,
/// path and fields) within [`MAX_FRAME_LEN`].
pub fn travels_whole(size: u64, path: &str) -> bool {
    size <= CHUNK_SIZE as u64 && size as usize + path.len() + 128 <= MAX_FRAME_LEN
}

/// Default TCP port of `xferd`.
pub const DEFAULT_PORT: u16 = 7443;
