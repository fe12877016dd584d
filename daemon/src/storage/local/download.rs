//! Downloads of committed files, served from their manifests.
//!
//! Chunk digests come from the manifest, or a small file's tag (`manifest.rs`): recorded
//! at upload, not recomputed, so data corrupted on disk is caught by the receiver; chunk
//! data is read into buffers recycled from one chunk to the next. A big file's chunks
//! come from the page cache when they are there and past it otherwise (crate
//! xfer-disk's `Reader`, `[storage] direct_io`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use xfer_disk::Reader;
use xfer_proto::{BufferPool, ChunkLayout, Digest};

use super::blocking::blocking;
use super::manifest::{Manifest, Stamp};
use super::space::UserSpace;
use crate::storage::{Download, RelPath, StorageError};

/// Read buffers a download keeps for reuse: a chunk being sent, up to three being read
/// (the session's read-ahead), and one spare.
const KEEP_READ_BUFFERS: usize = 5;

/// A committed file open for download: its manifest in memory, its data read chunk by
/// chunk in blocking tasks.
pub(crate) struct LocalDownload {
    file: Arc<(std::fs::File, Reader)>,
    stamp: Stamp,
    manifest: Manifest,
    buffers: Arc<BufferPool>,
}

impl LocalDownload {
    /// Opens `path` beneath the home, computing its manifest if none is stored (or the
    /// stored one is stale).
    pub fn open(
        space: &UserSpace,
        path: &RelPath,
        direct: bool,
    ) -> Result<LocalDownload, StorageError> {
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
        let reader = Reader::new(&file, stamp.size, direct);
        Ok(LocalDownload {
            file: Arc::new((file, reader)),
            stamp,
            manifest,
            buffers: BufferPool::new(KEEP_READ_BUFFERS),
        })
    }
}

/// Reads chunk `index` of `file` into a pooled buffer.
fn read_chunk(
    (file, reader): &(std::fs::File, Reader),
    buffers: &Arc<BufferPool>,
    layout: ChunkLayout,
    index: u64,
) -> Result<Bytes, StorageError> {
    let mut buf = buffers.take(layout.chunk_len(index) as usize);
    reader
        .read_exact_at(file, &mut buf, layout.offset(index))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                StorageError::Conflict("the file shrank while being downloaded".into())
            }
            _ => StorageError::io("reading a file", e),
        })?;
    Ok(buffers.bytes(buf))
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
        let layout = ChunkLayout::standard(self.stamp.size);
        let (file, buffers) = (self.file.clone(), self.buffers.clone());
        let data = blocking("reading a file", move || {
            read_chunk(&file, &buffers, layout, index)
        })
        .await?;
        Ok((digest, data))
    }
}
