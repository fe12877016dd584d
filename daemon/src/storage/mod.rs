//! Users' files behind a small async trait, with the local filesystem as the first
//! implementation (`local/`).
//!
//! The traits are async so that a backend whose work is I/O on the network (an object
//! store) implements them directly; the local backend runs its blocking filesystem work
//! in `spawn_blocking` behind them, so callers just `.await`. Paths arrive validated as
//! [`RelPath`]s; implementations resolve them beneath the user's home so that nothing
//! outside it can be reached (symlinks pointing out included).
//!
//! - `crate::relpath`: validation of peers' paths (below both this module and `config`).
//! - `policy.rs`: the content-type policy.
//! - `error.rs`: [`StorageError`] and the peer's view of it.
//! - `local/`: [`local::LocalStorage`], users' files on the local filesystem.
//! - `s3/`: [`s3::S3Storage`], users' files in an S3-compatible bucket.
//!
//! This module and its generic parts never import `local/`: a second backend sits beside
//! it the same way.

mod error;
pub mod local;
mod policy;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use xfer_proto::{ChunkLayout, Digest, Entry};

pub use crate::relpath::{PathError, RelPath};
pub use error::StorageError;
pub(crate) use error::io_err;
pub use policy::TypePolicy;

/// Which share of the unfinished-uploads limit an upload to `path` counts against:
/// unfinished sends in an inbox (`inbox/<sender>/…`) count against their sender's
/// share, never against the owner's own uploads (`None`).
pub(crate) fn partial_bucket(path: &str) -> Option<&str> {
    path.strip_prefix("inbox/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(sender, _)| sender)
}

/// The `[storage]` settings in force, with the type policy built from them.
pub(crate) struct Settings {
    pub config: crate::config::StorageConfig,
    pub policy: Arc<TypePolicy>,
}

impl Settings {
    pub fn new(config: crate::config::StorageConfig) -> Arc<Settings> {
        Arc::new(Settings {
            policy: Arc::new(TypePolicy::new(&config.type_rules)),
            config,
        })
    }
}

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

/// A whole file of at most one chunk, put in one request ([`Storage::put_files`]).
#[derive(Debug, Clone)]
pub struct WholeFile {
    /// Destination.
    pub path: RelPath,
    /// Replace an existing file.
    pub force: bool,
    /// The modification time to give it.
    pub modified_unix: Option<u64>,
    /// BLAKE3 of `data`, as the client announced it.
    pub digest: Digest,
    /// The file's bytes.
    pub data: Bytes,
}

/// How one [`WholeFile`] of a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFileDone {
    /// In place and durable.
    Committed(Committed),
    /// A file is there and `force` was not given (with the same digest: its time was
    /// set as asked).
    Exists {
        /// Its size.
        size: u64,
        /// Its digest.
        digest: Option<Digest>,
    },
}

/// A whole file read in one request ([`Storage::read_whole`]).
#[derive(Debug, Clone)]
pub struct WholeRead {
    /// BLAKE3 of the whole file, from its manifest.
    pub digest: Digest,
    /// Last modification, seconds since the Unix epoch.
    pub modified_unix: u64,
    /// The bytes.
    pub data: Bytes,
}

/// Users' files.
/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    /// Entries sorted by name (a name may appear twice: a file and an upload to it).
    pub entries: Vec<Entry>,
    /// Names follow the last entry's.
    pub more: bool,
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Applies new `[storage]` settings (a config reload) to operations that start from
    /// now on; uploads already open keep the type rules they began with.
    fn reconfigure(&self, config: crate::config::StorageConfig);
    /// Bytes stored by `user` and their quota.
    async fn usage(&self, user: &str) -> Result<Usage, StorageError>;
    /// A page of a directory's entries (with partial uploads into it): the first
    /// `limit` names after `after`, by name; or one file's entry.
    async fn list(
        &self,
        user: &str,
        path: &RelPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError>;
    /// Creates a directory (and its parents, if asked; then an existing one is fine).
    async fn mkdir(&self, user: &str, path: &RelPath, parents: bool) -> Result<(), StorageError>;
    /// Removes a file or directory, or (`partial`) the upload in progress to `path`.
    async fn remove(
        &self,
        user: &str,
        path: &RelPath,
        recursive: bool,
        partial: bool,
    ) -> Result<(), StorageError>;
    /// Renames a file or directory; `force` replaces an existing file.
    async fn rename(
        &self,
        user: &str,
        from: &RelPath,
        to: &RelPath,
        force: bool,
    ) -> Result<(), StorageError>;
    /// Sets a committed file's modification time (seconds since the Unix epoch),
    /// keeping its known digest.
    async fn set_modified(
        &self,
        user: &str,
        path: &RelPath,
        modified_unix: u64,
    ) -> Result<(), StorageError>;
    /// Admission (path, conflicts, size, quota, free space, type policy), then opens or
    /// resumes the upload, re-verifying what an earlier attempt left unless it is exactly
    /// as a closing connection synced and sealed it.
    async fn begin_upload(&self, user: &str, request: PutRequest)
    -> Result<PutBegun, StorageError>;
    /// Opens a committed file for download, computing its manifest if needed.
    async fn open_download(
        &self,
        user: &str,
        path: &RelPath,
    ) -> Result<Arc<dyn Download>, StorageError>;
    /// Admits, writes and commits a batch of whole small files, making them durable
    /// together before any is reported committed; one answer per file, in order.
    async fn put_files(
        &self,
        user: &str,
        files: Vec<WholeFile>,
    ) -> Vec<Result<PutFileDone, StorageError>>;
    /// Reads a whole file of at most one chunk (a larger one is `TooLarge`).
    async fn read_whole(&self, user: &str, path: &RelPath) -> Result<WholeRead, StorageError>;
    /// Reads whole files as [`Storage::read_whole`] does, in order, until `max_bytes`
    /// have been read: one answer per path read, at least one, fewer than `paths` when
    /// the bound stopped it. By default only the first, so that each answer goes out as
    /// soon as it is read; a backend where reading many at once is cheaper does so.
    async fn read_wholes(
        &self,
        user: &str,
        paths: &[RelPath],
        _max_bytes: usize,
    ) -> Vec<Result<WholeRead, StorageError>> {
        match paths.first() {
            Some(path) => vec![self.read_whole(user, path).await],
            None => Vec::new(),
        }
    }
    /// Removes partial uploads abandoned for longer than their time to live; returns
    /// how many.
    async fn expire_partials(&self, now_unix: u64) -> Result<usize, StorageError>;
}

/// An open upload. The accessors answer from state held in memory; the async methods do
/// the I/O. All take `&self`, so one handle serves a pipeline of chunk tasks by `Arc`
/// clone.
#[async_trait]
pub trait Upload: Send + Sync {
    /// Final size.
    fn size(&self) -> u64;
    /// Bytes (of whole chunks) held and verified when the upload was opened.
    fn resumed_from(&self) -> u64;
    /// Number of chunks held and verified now.
    fn chunks_held(&self) -> u64;
    /// Digests of chunks `first..first+count` (clipped to the file), `None` where not held.
    fn held_digests(&self, first: u64, count: u64) -> Vec<Option<Digest>>;
    /// Whether a chunk may be written while an earlier one is still being written (they
    /// may then finish in either order). The S3 backend gathers chunks into parts in
    /// order and refuses ones that run too far ahead, so it says no.
    fn concurrent_writes(&self) -> bool {
        false
    }
    /// Verifies one chunk against `digest`, then writes it at `offset`.
    async fn write_chunk(
        &self,
        offset: u64,
        digest: Digest,
        data: Bytes,
    ) -> Result<(), StorageError>;
    /// Saves the resume state (which chunks are held).
    async fn persist(&self) -> Result<(), StorageError>;
    /// Checks completeness and the whole-file digest, then puts the file in place.
    async fn commit(&self, digest: Digest) -> Result<Committed, StorageError>;
}

/// An open download. The accessors answer from its manifest, read at open.
#[async_trait]
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
    async fn read_chunk(&self, index: u64) -> Result<(Digest, Bytes), StorageError>;
}
