//! How a file is cut into chunks ([`ChunkLayout`]), the zstd level chunks are
//! compressed at ([`COMPRESS_LEVEL`]) and the recycled chunk buffers both ends read
//! file data into ([`BufferPool`]): facts of the protocol, written once for both ends.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::checksum::MIN_CHUNK_SIZE;

/// zstd level of compressed chunk frames. Level 1 compresses source code about 2×
/// faster than level 3 (≈600 vs ≈290 MB/s per core, measured in bench/RESULTS.md) for
/// output only ~12 % larger, so it stays ahead of a gigabit link on one core.
pub const COMPRESS_LEVEL: i32 = 1;

/// The chunks of a file of `size` bytes cut every `chunk_size` bytes: chunk `i` covers
/// `[i × chunk_size, min((i+1) × chunk_size, size))`. The chunk size is a power of two
/// from [`MIN_CHUNK_SIZE`] to [`crate::CHUNK_SIZE`], so every chunk is a subtree of the
/// file's BLAKE3 tree ([`crate::Digest::of_chunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLayout {
    size: u64,
    chunk_size: u64,
}

/// A chunk size the protocol does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unusable chunk size of {0} bytes (a power of two from 1 KiB to 1 MiB)")]
pub struct BadChunkSize(pub u32);

impl ChunkLayout {
    /// The layout every transfer uses today: chunks of [`crate::CHUNK_SIZE`].
    pub fn standard(size: u64) -> ChunkLayout {
        ChunkLayout {
            size,
            chunk_size: crate::CHUNK_SIZE as u64,
        }
    }

    /// The layout a peer announced (`PutReady`, `GetReady`).
    ///
    /// # Errors
    /// [`BadChunkSize`] unless `chunk_size` is a power of two from [`MIN_CHUNK_SIZE`] to
    /// [`crate::CHUNK_SIZE`].
    pub fn new(size: u64, chunk_size: u32) -> Result<ChunkLayout, BadChunkSize> {
        let allowed = MIN_CHUNK_SIZE..=crate::CHUNK_SIZE;
        if !chunk_size.is_power_of_two() || !allowed.contains(&(chunk_size as usize)) {
            return Err(BadChunkSize(chunk_size));
        }
        Ok(ChunkLayout {
            size,
            chunk_size: u64::from(chunk_size),
        })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk size in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size as u32
    }

    /// Number of chunks (0 for an empty file).
    pub fn count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// Where chunk `index` starts.
    pub fn offset(&self, index: u64) -> u64 {
        index.saturating_mul(self.chunk_size)
    }

    /// The bytes chunk `index` covers (empty, at the end, past the last chunk).
    pub fn range(&self, index: u64) -> Range<u64> {
        let start = self.offset(index).min(self.size);
        start..start.saturating_add(self.chunk_size).min(self.size)
    }

    /// Length of chunk `index` (0 past the last chunk).
    pub fn chunk_len(&self, index: u64) -> u64 {
        let r = self.range(index);
        r.end - r.start
    }
}

/// Where a [`ChunkBuf`]'s bytes start: on a page boundary. On the AMD EPYC machines
/// this project is measured on, the kernel copies a file's pages into a buffer that
/// starts 16 bytes past a 32-byte boundary (where glibc puts a large `malloc` block, so
/// any `Vec<u8>` of 1 MiB) about four times slower than into an aligned one: 0.58–0.70 s
/// against 0.15–0.20 s per GiB read from tmpfs (bench/RESULTS.md, `bench/copies.sh`).
/// Reading every chunk of a file into such a `Vec` cost a sender a quarter of its CPU.
pub const CHUNK_BUF_ALIGN: usize = 4096;

/// A buffer of `len` bytes for one chunk whose first byte is on a [`CHUNK_BUF_ALIGN`]
/// boundary: the place `pread` copies file data into. Dereferences to its bytes.
#[derive(Default)]
pub struct ChunkBuf {
    /// Room for the aligned bytes and the padding in front of them.
    vec: Vec<u8>,
    /// Where the aligned bytes start in `vec`.
    start: usize,
    len: usize,
}

impl ChunkBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> ChunkBuf {
        let mut buf = ChunkBuf::default();
        buf.resize(len);
        buf
    }

    /// Makes the buffer `len` bytes long, keeping its memory when that is big enough (the
    /// bytes are then a previous use's: fill all of them); new memory is zeroed.
    pub fn resize(&mut self, len: usize) {
        if self.vec.len() - self.start < len {
            self.vec = vec![0u8; len + CHUNK_BUF_ALIGN - 1];
            // `align_offset` may decline to say (never for bytes on Linux); the buffer is
            // then merely slower.
            self.start = match self.vec.as_ptr().align_offset(CHUNK_BUF_ALIGN) {
                start if start < CHUNK_BUF_ALIGN => start,
                _ => 0,
            };
        }
        self.len = len;
    }
}

impl std::fmt::Debug for ChunkBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkBuf")
            .field("len", &self.len)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for ChunkBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for ChunkBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + self.len]
    }
}

/// Chunk buffers reused once the last [`Bytes`] made from one is dropped (the frame was
/// encoded, the chunk compressed or written): a fresh 1 MiB buffer per chunk would be
/// zeroed, and often faulted in page by page, every time. Reused buffers stay warm in
/// the cache. At most `keep` spare buffers are held; the rest are freed.
#[derive(Debug)]
pub struct BufferPool {
    spare: Mutex<Vec<ChunkBuf>>,
    keep: usize,
}

impl BufferPool {
    /// A pool keeping at most `keep` spare buffers (about as many as are in flight).
    pub fn new(keep: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            spare: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// A buffer of exactly `len` bytes, recycled when one is free. Its contents are
    /// unspecified (a previous chunk's): fill all of it. Resizing a recycled buffer
    /// costs nothing, since every chunk but the last has the same length.
    pub fn take(&self, len: usize) -> ChunkBuf {
        let mut buf = self.lock().pop().unwrap_or_default();
        buf.resize(len);
        buf
    }

    /// `buf` as [`Bytes`] that give it back to this pool when the last one is dropped.
    pub fn bytes(self: &Arc<Self>, buf: ChunkBuf) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(self),
        })
    }

    fn give(&self, buf: ChunkBuf) {
        let mut spare = self.lock();
        if spare.len() < self.keep {
            spare.push(buf);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ChunkBuf>> {
        // A pool of plain buffers is consistent whatever a panicking holder did.
        self.spare.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A buffer on loan from a [`BufferPool`].
struct Pooled {
    buf: ChunkBuf,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_once() {
        let l = ChunkLayout::new(10 * 1024 + 5, 4096).unwrap();
        assert_eq!(l.count(), 3);
        assert_eq!(l.range(0), 0..4096);
        assert_eq!(l.range(2), 8192..10 * 1024 + 5);
        assert_eq!((l.chunk_len(2), l.chunk_len(3)), (2053, 0));
        assert_eq!(l.range(u64::MAX), l.size()..l.size(), "never overflows");
        assert_eq!(ChunkLayout::standard(0).count(), 0);
        assert_eq!(ChunkLayout::standard(1 << 20).count(), 1);
        assert_eq!(ChunkLayout::standard((1 << 20) + 1).chunk_len(1), 1);
        assert_eq!(ChunkLayout::standard(5).chunk_size(), 1 << 20);
    }

    #[test]
    fn only_protocol_chunk_sizes_are_accepted() {
        for ok in [1024, 4096, 1 << 20] {
            assert!(ChunkLayout::new(1, ok).is_ok(), "{ok}");
        }
        for bad in [0, 512, 1000, (1 << 20) + 1, 1 << 21] {
            assert_eq!(ChunkLayout::new(1, bad), Err(BadChunkSize(bad)));
        }
    }

    #[test]
    fn buffers_come_back_when_their_bytes_are_dropped() {
        let pool = BufferPool::new(1);
        let mut buf = pool.take(8);
        buf.copy_from_slice(b"abcdefgh");
        let ptr = buf.as_ptr();
        let bytes = pool.bytes(buf);
        let view = bytes.slice(2..4);
        drop(bytes);
        assert!(pool.lock().is_empty(), "a view still holds it");
        assert_eq!(&view[..], b"cd");
        drop(view);
        let again = pool.take(4);
        assert_eq!(
            (again.as_ptr(), again.len()),
            (ptr, 4),
            "the same allocation"
        );
        drop(pool.bytes(again));
        drop(pool.bytes(ChunkBuf::new(3)));
        assert_eq!(pool.lock().len(), 1, "at most `keep` spare");
    }

    #[test]
    fn chunk_buffers_start_on_a_page_and_keep_their_memory_when_shrunk() {
        for len in [1, 4096, (1 << 20) - 1, 1 << 20] {
            let mut buf = ChunkBuf::new(len);
            assert_eq!(buf.len(), len);
            assert!(buf.iter().all(|&b| b == 0), "new memory is zeroed");
            assert_eq!(buf.as_ptr() as usize % CHUNK_BUF_ALIGN, 0, "{len}");
            buf.fill(7);
            let ptr = buf.as_ptr();
            buf.resize(len / 2);
            assert_eq!((buf.as_ptr(), buf.len()), (ptr, len / 2));
            buf.resize(len);
            assert_eq!(buf.as_ptr(), ptr, "grown back within its memory");
            buf.resize(len + 1);
            assert_eq!(buf.len(), len + 1);
            assert_eq!(buf.as_ptr() as usize % CHUNK_BUF_ALIGN, 0, "{len} + 1");
        }
        assert!(ChunkBuf::default().is_empty());
    }
}
