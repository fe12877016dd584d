//! Deciding whether the chunks a partial upload holds must be read back when it is
//! resumed, so a resumed run does not pay again what sending them cost.
//!
//! When a connection closes an upload, the data is synced and the state is saved with a
//! [`Seal`]: the data file's identity, size and change times, taken after the sync and
//! only if nothing but this upload wrote the file since its last write (the ctime seen
//! right after that write). A resume that finds the file still exactly as sealed holds
//! the data exactly as it was when each chunk was verified, synced and recorded: the
//! recorded digests are trusted as they are, as those of a chunk written on an
//! uninterrupted connection are (which is never read back either). Damage no file time
//! shows (bit rot) is caught where it is for every stored file: the manifest (or a small
//! file's tag, `manifest.rs`) keeps the digests verified on arrival, downloads send
//! those, not digests of what is read, and the receiver refuses a chunk that does not
//! match. Without a matching seal (a daemon
//! that died, a file written since by anyone else) every recorded chunk is re-hashed
//! before the resume is answered, on a few threads at once ([`verify`]), and damaged ones
//! are asked for again.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};

use serde::{Deserialize, Serialize};
use xfer_proto::Digest;

use crate::storage::{CHUNK_SIZE, chunk_len};

/// The data file as it was sealed: any write, truncation or replacement since changes
/// one of these (the kernel gives a change after a `stat` its own ctime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seal {
    pub ino: u64,
    pub len: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Seal {
    pub fn of(file: &File) -> std::io::Result<Seal> {
        let m = file.metadata()?;
        Ok(Seal {
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether the data's change time is still `ctime` (nothing wrote it since).
    pub fn ctime_is(&self, ctime: (i64, i64)) -> bool {
        self.ctime == ctime
    }
}

/// The ctime of `file` now (taken after each write, so a later write by anyone else
/// shows as a different one).
pub(crate) fn ctime_of(file: &File) -> Option<(i64, i64)> {
    let m = file.metadata().ok()?;
    Some((m.ctime(), m.ctime_nsec()))
}

/// The chunks of `chunks` (index, recorded digest) whose data in `file` (of `size`
/// bytes) does not hash to the recorded digest, hashed on up to four threads.
pub(crate) fn verify(file: &File, size: u64, chunks: &[(u64, Digest)]) -> Vec<(u64, Digest)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4);
    if threads == 1 || chunks.len() < 2 {
        return damaged(file, size, chunks);
    }
    let per = chunks.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = chunks
            .chunks(per)
            .map(|part| s.spawn(move || damaged(file, size, part)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_default())
            .collect()
    })
}

/// The chunks of `chunks` that cannot be read or do not match, on this thread.
fn damaged(file: &File, size: u64, chunks: &[(u64, Digest)]) -> Vec<(u64, Digest)> {
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    chunks
        .iter()
        .filter(|(i, digest)| {
            let len = chunk_len(size, *i) as usize;
            let ok = file.read_exact_at(&mut buf[..len], i * CHUNK_SIZE).is_ok()
                && Digest::of_chunk(&buf[..len], i * CHUNK_SIZE, size) == Some(*digest);
            !ok
        })
        .copied()
        .collect()
}
