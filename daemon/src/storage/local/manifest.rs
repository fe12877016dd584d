//! Manifests of committed files (every chunk's digest and the whole file's), and
//! downloads served from them.
//!
//! A manifest is written at commit into `<user>/manifests/<inode>.json` and is valid only
//! while the file's size and modification time (to the nanosecond) still match; a stale
//! or missing one is recomputed by hashing the file when a download or a conflict check
//! needs it. Listings never hash: they show no digest instead.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cap_std::fs::{Dir, Metadata, MetadataExt};
use serde::{Deserialize, Serialize};
use xfer_proto::Digest;

use super::upload::DIGEST_SCHEME;
use super::{CHUNK_SIZE, Download, StorageError, chunk_count, chunk_len, io_err};

/// What identifies one version of a committed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }

    pub fn modified_unix(&self) -> u64 {
        u64::try_from(self.mtime_ns / 1_000_000_000).unwrap_or(0)
    }

    fn file_name(&self) -> String {
        format!("{}.json", self.ino)
    }
}

/// Chunk digests and the whole-file digest of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub digest: Digest,
    pub chunks: Vec<Digest>,
}

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    /// [`DIGEST_SCHEME`] of `chunks`; a manifest of another scheme is recomputed.
    #[serde(default)]
    digests: u32,
    size: u64,
    mtime_ns: i128,
    digest: String,
    chunks: Vec<String>,
}

impl Manifest {
    /// The manifest for `stamp`, if one is stored and still matches the file.
    pub fn load(manifests: &Dir, stamp: Stamp) -> Option<Manifest> {
        let text = manifests.read(stamp.file_name()).ok()?;
        let f: ManifestFile = serde_json::from_slice(&text).ok()?;
        if f.size != stamp.size || f.mtime_ns != stamp.mtime_ns || f.digests != DIGEST_SCHEME {
            return None;
        }
        let chunks = f
            .chunks
            .iter()
            .map(|h| h.parse().ok())
            .collect::<Option<Vec<Digest>>>()?;
        if chunks.len() as u64 != chunk_count(stamp.size) {
            return None;
        }
        Some(Manifest {
            digest: f.digest.parse().ok()?,
            chunks,
        })
    }

    /// Stores the manifest for `stamp` (atomically: temporary file, then rename).
    pub fn store(&self, manifests: &Dir, stamp: Stamp) -> Result<(), StorageError> {
        let f = ManifestFile {
            digests: DIGEST_SCHEME,
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            digest: self.digest.to_string(),
            chunks: self.chunks.iter().map(ToString::to_string).collect(),
        };
        let json = serde_json::to_vec(&f).expect("a manifest always serialises");
        let tmp = format!("{}.tmp", stamp.file_name());
        super::private::write(manifests, &tmp, &json).map_err(io_err("writing a manifest"))?;
        manifests
            .rename(&tmp, manifests, stamp.file_name())
            .map_err(io_err("writing a manifest"))
    }

    /// Forgets the manifest of inode `ino` (best effort: a stale one is never used).
    pub fn remove(manifests: &Dir, ino: u64) {
        let _ = manifests.remove_file(format!("{ino}.json"));
    }

    /// Hashes a file: every chunk, once; the whole-file digest follows from those.
    pub fn compute(file: &std::fs::File, size: u64) -> Result<Manifest, StorageError> {
        let mut chunks = Vec::with_capacity(chunk_count(size) as usize);
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let mut reader = file;
        let changed = || StorageError::Conflict("the file changed while being hashed".into());
        for i in 0..chunk_count(size) {
            let len = chunk_len(size, i) as usize;
            reader.read_exact(&mut buf[..len]).map_err(|_| changed())?;
            chunks.push(Digest::of_chunk(&buf[..len], i * CHUNK_SIZE, size).ok_or_else(changed)?);
        }
        Ok(Manifest {
            digest: Digest::of_chunks(&chunks),
            chunks,
        })
    }

    /// The stored manifest of the open `file`, or a fresh one (then stored).
    pub fn load_or_compute(
        manifests: &Dir,
        file: &std::fs::File,
        stamp: Stamp,
    ) -> Result<Manifest, StorageError> {
        if let Some(m) = Self::load(manifests, stamp) {
            return Ok(m);
        }
        let m = Self::compute(file, stamp.size)?;
        // Store it only if the file did not change while it was hashed.
        let after = file.metadata().map_err(io_err("reading file metadata"))?;
        if after.len() == stamp.size
            && Stamp::of(&Metadata::from_just_metadata(after)) == stamp
            && let Err(e) = m.store(manifests, stamp)
        {
            tracing::warn!(error = %e, "could not store a file manifest");
        }
        Ok(m)
    }
}

/// Read buffers a download keeps for reuse: a chunk being sent, the next one being read,
/// and one spare.
const KEEP_READ_BUFFERS: usize = 3;

/// Chunk buffers of one download, reused once the frame made from one is sent: a fresh
/// 1 MiB buffer per chunk would be zeroed (and often faulted in) every time.
#[derive(Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    fn give(&self, buf: Vec<u8>) {
        let mut spare = self.lock();
        if spare.len() < KEEP_READ_BUFFERS {
            spare.push(buf);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A pool of plain buffers is consistent whatever a panicking holder did.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A chunk's data in a pooled buffer; goes back to the pool when the last `Bytes` viewing
/// it is dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// A committed file open for download.
pub(crate) struct LocalDownload {
    file: std::fs::File,
    stamp: Stamp,
    manifest: Manifest,
    buffers: Arc<BufferPool>,
}

impl LocalDownload {
    pub fn new(file: std::fs::File, stamp: Stamp, manifest: Manifest) -> Self {
        LocalDownload {
            file,
            stamp,
            manifest,
            buffers: Arc::default(),
        }
    }
}

impl Download for LocalDownload {
    fn size(&self) -> u64 {
        self.stamp.size
    }

    fn digest(&self) -> Digest {
        self.manifest.digest
    }

    fn modified_unix(&self) -> u64 {
        self.stamp.modified_unix()
    }

    fn chunk_digests(&self, first: u64, count: u64) -> Vec<Digest> {
        let n = self.manifest.chunks.len() as u64;
        let start = first.min(n);
        let end = first.saturating_add(count).min(n);
        self.manifest.chunks[start as usize..end as usize].to_vec()
    }

    fn read_chunk(&self, index: u64) -> Result<(Digest, Bytes), StorageError> {
        let digest = *self
            .manifest
            .chunks
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .ok_or_else(|| {
                StorageError::BadRequest("chunk index past the end of the file".into())
            })?;
        let len = chunk_len(self.stamp.size, index) as usize;
        let mut buf = self.buffers.take();
        // Free for a reused buffer: all chunks but the last have the same length.
        buf.resize(len, 0);
        self.file
            .read_exact_at(&mut buf, index * CHUNK_SIZE)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    StorageError::Conflict("the file shrank while being downloaded".into())
                }
                _ => StorageError::io("reading a file", e),
            })?;
        Ok((
            digest,
            Bytes::from_owner(Pooled {
                buf,
                pool: self.buffers.clone(),
            }),
        ))
    }
}
