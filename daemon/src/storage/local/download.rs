//! Downloads of committed files, served from their manifests.
//!
//! Chunk digests come from the manifest (not recomputed, so data corrupted on disk is
//! caught by the receiver); chunk data is read into buffers recycled from one chunk to
//! the next.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use xfer_proto::Digest;

use super::blocking::blocking;
use super::manifest::{Manifest, Stamp};
use super::space::UserSpace;
use crate::storage::{CHUNK_SIZE, Download, RelPath, StorageError, chunk_len};

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

/// A committed file open for download: its manifest in memory, its data read chunk by
/// chunk in blocking tasks.
pub(crate) struct LocalDownload {
    file: Arc<std::fs::File>,
    stamp: Stamp,
    manifest: Manifest,
    buffers: Arc<BufferPool>,
}

impl LocalDownload {
    /// Opens `path` beneath the home, computing its manifest if none is stored (or the
    /// stored one is stale).
    pub fn open(space: &UserSpace, path: &RelPath) -> Result<LocalDownload, StorageError> {
        if path.is_home() {
            return Err(StorageError::BadRequest("the home is a directory".into()));
        }
        let (file, meta) = space.open_file(path)?;
        if !meta.is_file() {
            return Err(StorageError::BadRequest(format!(
                "`{path}` is a directory, not a file"
            )));
        }
        let stamp = Stamp::of(&meta);
        let manifest = Manifest::load_or_compute(&space.manifests, &file, stamp)?;
        Ok(LocalDownload {
            file: Arc::new(file),
            stamp,
            manifest,
            buffers: Arc::default(),
        })
    }
}

/// Reads chunk `index` (`len` bytes) of `file` into a pooled buffer.
fn read_chunk(
    file: &std::fs::File,
    buffers: &Arc<BufferPool>,
    index: u64,
    len: usize,
) -> Result<Bytes, StorageError> {
    let mut buf = buffers.take();
    // Free for a reused buffer: all chunks but the last have the same length.
    buf.resize(len, 0);
    file.read_exact_at(&mut buf, index * CHUNK_SIZE)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                StorageError::Conflict("the file shrank while being downloaded".into())
            }
            _ => StorageError::io("reading a file", e),
        })?;
    Ok(Bytes::from_owner(Pooled {
        buf,
        pool: buffers.clone(),
    }))
}

#[async_trait]
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

    async fn read_chunk(&self, index: u64) -> Result<(Digest, Bytes), StorageError> {
        let digest = *self
            .manifest
            .chunks
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .ok_or_else(|| {
                StorageError::BadRequest("chunk index past the end of the file".into())
            })?;
        let len = chunk_len(self.stamp.size, index) as usize;
        let (file, buffers) = (self.file.clone(), self.buffers.clone());
        let data = blocking("reading a file", move || {
            read_chunk(&file, &buffers, index, len)
        })
        .await?;
        Ok((digest, data))
    }
}
