//! Users' files behind a small trait, with the local filesystem as the implementation.
//!
//! Every method is synchronous and may block: sessions call them inside
//! `tokio::task::spawn_blocking`, never on the async threads. Paths arrive validated as
//! [`RelPath`]s; implementations resolve them beneath the user's home so that nothing
//! outside it can be reached (symlinks pointing out included).
//!
//! - `path.rs`: validation of peers' paths.
//! - `local.rs`: [`LocalStorage`]: homes, listing, mkdir/rm/mv, admission, expiry.
//! - `upload.rs`: resumable uploads: `.part` data, `.meta` state, verify, commit.
//! - `manifest.rs`: chunk digests kept for committed files; downloads.
//! - `policy.rs`: the content-type policy.
//! - `private.rs`: files 0600 and directories 0700, whatever the umask.

mod local;
mod manifest;
mod path;
mod policy;
mod private;
mod upload;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use xfer_proto::{ChunkLayout, Digest, Entry, ErrorCode};

pub use local::LocalStorage;
pub use path::{PathError, RelPath};
pub use policy::TypePolicy;

/// Chunk size of every transfer (the protocol's `CHUNK_SIZE`).
pub const CHUNK_SIZE: u64 = xfer_proto::CHUNK_SIZE as u64;

/// Number of chunks of a file of `size` bytes ([`ChunkLayout::standard`]).
pub fn chunk_count(size: u64) -> u64 {
    ChunkLayout::standard(size).count()
}

/// Length of chunk `index` of a file of `size` bytes (0 past the end).
pub fn chunk_len(size: u64, index: u64) -> u64 {
    ChunkLayout::standard(size).chunk_len(index)
}

/// What a user stores and may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Committed files plus live partial uploads at their final size.
    pub used_bytes: u64,
    /// The quota, if one is set.
    pub limit_bytes: Option<u64>,
}

/// An upload request, as admitted by [`Storage::begin_upload`].
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// Destination.
    pub path: RelPath,
    /// Final size.
    pub size: u64,
    /// Replace an existing file at commit.
    pub force: bool,
    /// The first bytes of the file, for the content-type policy.
    pub head: Bytes,
}

/// The answer to [`Storage::begin_upload`].
pub enum PutBegun {
    /// A file is there and `force` was not given.
    Exists {
        /// Its size.
        size: u64,
        /// Its digest.
        digest: Option<Digest>,
    },
    /// The upload is open.
    Ready(Arc<dyn Upload>),
}

impl std::fmt::Debug for PutBegun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutBegun::Exists { size, digest } => f
                .debug_struct("Exists")
                .field("size", size)
                .field("digest", digest)
                .finish(),
            PutBegun::Ready(u) => f.debug_struct("Ready").field("size", &u.size()).finish(),
        }
    }
}

/// A committed upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub digest: Digest,
}

/// Users' files.
pub trait Storage: Send + Sync + 'static {
    /// Applies new `[storage]` settings (a config reload) to operations that start from
    /// now on; uploads already open keep the type rules they began with.
    fn reconfigure(&self, config: crate::config::StorageConfig);
    /// Bytes stored by `user` and their quota.
    fn usage(&self, user: &str) -> Result<Usage, StorageError>;
    /// A directory's entries (with partial uploads into it), or one file's, by name.
    fn list(&self, user: &str, path: &RelPath) -> Result<Vec<Entry>, StorageError>;
    /// Creates a directory (and its parents, if asked; then an existing one is fine).
    fn mkdir(&self, user: &str, path: &RelPath, parents: bool) -> Result<(), StorageError>;
    /// Removes a file or directory, or (`partial`) the upload in progress to `path`.
    fn remove(
        &self,
        user: &str,
        path: &RelPath,
        recursive: bool,
        partial: bool,
    ) -> Result<(), StorageError>;
    /// Renames a file or directory; `force` replaces an existing file.
    fn rename(
        &self,
        user: &str,
        from: &RelPath,
        to: &RelPath,
        force: bool,
    ) -> Result<(), StorageError>;
    /// Admission (path, conflicts, size, quota, free space, type policy), then opens or
    /// resumes the upload, re-verifying what an earlier attempt left.
    fn begin_upload(&self, user: &str, request: PutRequest) -> Result<PutBegun, StorageError>;
    /// Opens a committed file for download, computing its manifest if needed.
    fn open_download(&self, user: &str, path: &RelPath) -> Result<Arc<dyn Download>, StorageError>;
    /// Removes partial uploads abandoned for longer than their time to live; returns
    /// how many.
    fn expire_partials(&self, now_unix: u64) -> Result<usize, StorageError>;
}

/// An open upload. Methods may block; all take `&self` so one handle can be moved into
/// blocking tasks by `Arc` clone.
pub trait Upload: Send + Sync {
    /// Final size.
    fn size(&self) -> u64;
    /// Bytes (of whole chunks) held and verified when the upload was opened.
    fn resumed_from(&self) -> u64;
    /// Number of chunks held and verified now.
    fn chunks_held(&self) -> u64;
    /// Digests of chunks `first..first+count` (clipped to the file), `None` where not held.
    fn held_digests(&self, first: u64, count: u64) -> Vec<Option<Digest>>;
    /// Verifies one chunk against `digest`, then writes it at `offset`.
    fn write_chunk(&self, offset: u64, digest: &Digest, data: &[u8]) -> Result<(), StorageError>;
    /// Saves the resume state (which chunks are held) to disk.
    fn persist(&self) -> Result<(), StorageError>;
    /// Checks completeness and the whole-file digest, then puts the file in place.
    fn commit(&self, digest: &Digest) -> Result<Committed, StorageError>;
}

/// An open download.
pub trait Download: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// BLAKE3 of the whole file, from its manifest.
    fn digest(&self) -> Digest;
    /// Last modification, seconds since the Unix epoch.
    fn modified_unix(&self) -> u64;
    /// Digests of chunks `first..first+count` (clipped to the file).
    fn chunk_digests(&self, first: u64, count: u64) -> Vec<Digest>;
    /// Reads chunk `index` with the digest recorded in the manifest (not recomputed, so
    /// data corrupted on disk is caught by the receiver).
    fn read_chunk(&self, index: u64) -> Result<(Digest, Bytes), StorageError>;
}

/// Why a storage operation failed. [`StorageError::code`] and
/// [`StorageError::peer_message`] are what the peer sees; `Io` details are only logged.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The path was refused by validation or by confinement.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Resolution left the home (a symlink pointing out).
    #[error("path refused: it leads outside your space")]
    Escape,
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// Something is in the way.
    #[error("{0}")]
    Conflict(String),
    /// A request that does not fit the state.
    #[error("{0}")]
    BadRequest(String),
    /// Over quota.
    #[error("over quota: {size} more bytes would exceed {limit} (in use: {used})")]
    QuotaExceeded {
        /// Bytes in use.
        used: u64,
        /// The quota.
        limit: u64,
        /// Size asked for.
        size: u64,
    },
    /// The disk is (or would be) full.
    #[error("server out of space")]
    NoSpace,
    /// File larger than allowed.
    #[error("file of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size asked for.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The content type is not accepted at that place.
    #[error("{}{detected} is not accepted in `{dir}`; accepted there: {}",
        file.as_ref().map(|f| format!("`{f}`: ")).unwrap_or_default(), accepted.join(", "))]
    TypeRejected {
        /// What the content looks like (`unknown` if not recognised).
        detected: String,
        /// The rule's directory.
        dir: String,
        /// The rule's types.
        accepted: Vec<String>,
        /// The stored file refused, when a move was (not named for an upload).
        file: Option<String>,
    },
    /// A move the type policy cannot check (a directory too large to walk).
    #[error("{0}")]
    Unchecked(String),
    /// Data did not match its digest.
    #[error("{0}")]
    ChecksumMismatch(String),
    /// Temporarily in the way (another connection, a limit).
    #[error("{0}")]
    Busy(String),
    /// An operating-system error not caused by the peer; logged, never sent.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// The stable code for the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::Path(_) | StorageError::Escape => ErrorCode::InvalidPath,
            StorageError::NotFound => ErrorCode::NotFound,
            StorageError::Conflict(_) => ErrorCode::Conflict,
            StorageError::BadRequest(_) => ErrorCode::BadRequest,
            StorageError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            StorageError::NoSpace => ErrorCode::NoSpace,
            StorageError::TooLarge { .. } => ErrorCode::TooLarge,
            StorageError::TypeRejected { .. } | StorageError::Unchecked(_) => {
                ErrorCode::TypeRejected
            }
            StorageError::ChecksumMismatch(_) => ErrorCode::ChecksumMismatch,
            StorageError::Busy(_) => ErrorCode::Busy,
            StorageError::Io { .. } => ErrorCode::Internal,
        }
    }

    /// One line for the peer: no server paths, no OS errors.
    pub fn peer_message(&self) -> String {
        match self {
            StorageError::Io { context, .. } => {
                format!("{context} failed on the server; see its log")
            }
            other => other.to_string(),
        }
    }

    /// Classifies an I/O error: the kinds a peer can cause (missing files, symlinks
    /// pointing out, full disk, something in the way) get their own codes.
    pub fn io(context: &'static str, e: io::Error) -> StorageError {
        const EXDEV: i32 = 18;
        const ENOTDIR: i32 = 20;
        const EISDIR: i32 = 21;
        const ENOSPC: i32 = 28;
        const ENAMETOOLONG: i32 = 36;
        const ELOOP: i32 = 40;
        const ENOTEMPTY: i32 = 39;
        const EDQUOT: i32 = 122;
        match (e.kind(), e.raw_os_error()) {
            (_, Some(ENOSPC | EDQUOT)) => StorageError::NoSpace,
            // The peer's path, too long for this filesystem: their error, not ours.
            (_, Some(ENAMETOOLONG)) => StorageError::Path(PathError::TooLongForServer),
            (io::ErrorKind::NotFound, _) => StorageError::NotFound,
            // cap-std reports an escape attempt as PermissionDenied; openat2 as EXDEV.
            (io::ErrorKind::PermissionDenied, _) | (_, Some(EXDEV | ELOOP)) => StorageError::Escape,
            (_, Some(ENOTDIR)) => {
                StorageError::Conflict("a path component is not a directory".into())
            }
            (_, Some(EISDIR)) => StorageError::Conflict("a directory is in the way".into()),
            (_, Some(ENOTEMPTY)) => {
                StorageError::Conflict("directory not empty (remove it recursively)".into())
            }
            (io::ErrorKind::AlreadyExists, _) => StorageError::Conflict("target exists".into()),
            _ => StorageError::Io { context, source: e },
        }
    }
}

/// `map_err` helper: `.map_err(io_err("reading a directory"))`.
pub(crate) fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> StorageError {
    move |e| StorageError::io(context, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_too_long_for_the_filesystem_is_an_invalid_path_not_internal() {
        let e = StorageError::io("listing", io::Error::from_raw_os_error(36));
        assert_eq!(e.code(), ErrorCode::InvalidPath);
        assert!(e.peer_message().contains("too long"), "{e}");
    }
}
