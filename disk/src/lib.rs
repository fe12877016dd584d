//! A received file's data is made durable as it arrives, not all at the end
//! ([`Writeback`]): every [`FLUSH_EVERY`] bytes written, a thread of its own flushes the
//! file (`fdatasync`) beside the transfer, one flush at a time. The disk then writes
//! while the network delivers, and the final fsync, which the sender or the user waits
//! for, finds only the last stretch left. On this project's VM that fsync took half a
//! second of a 1 GiB push (bench/RESULTS.md). Both receivers use it: xferd for uploads,
//! xfer for downloads (and the benchmark's ceiling, which does what they do).
//!
//! What the final sync promises is unchanged: the receiver still syncs the whole file
//! through its own descriptor, and sees any write error. A flush runs on a new open file
//! description of the same file (`/proc/self/fd/N`, not a `dup`): Linux reports a
//! writeback error once to each open file description that was open when it happened,
//! so a flush that meets one does not take it from the receiver's descriptor, whose
//! next fsync fails as it would have without the flush. A descriptor opened later (a
//! resumed transfer, another process) would never hear of it, and the failed pages may
//! still be read back intact from memory: so the flush's error is also kept, and
//! [`Writeback::finish`] returns it. A receiver that meets it must treat the data it
//! wrote as lost (xferd and xfer discard it), not only fail this once.
//!
//! Big files skip the page cache where the filesystem allows it ([`Writer`], [`Reader`],
//! `direct.rs`):
//! each aligned chunk goes to the disk with `O_DIRECT`, so the receiver neither copies
//! it into cached pages nor makes the kernel allocate, write back and later reclaim
//! them, and a transfer of many gigabytes does not push the host's other files out of
//! its memory (MinIO writes large objects the same way).
#![warn(missing_docs)]

mod direct;

pub use direct::{DIRECT_MIN, Reader, Writer, direct_from_env};

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes written between the starts of two flushes.
pub const FLUSH_EVERY: u64 = 64 << 20;

/// The flushes of one file being received.
#[derive(Debug)]
pub struct Writeback {
    /// Bytes written since the last flush started.
    pending: u64,
    running: Option<JoinHandle<()>>,
    /// The flush threads' name.
    name: &'static str,
    /// Told of a flush that failed (the final sync reports it again).
    report: fn(io::Error),
    /// The first error a flush met, kept for [`Writeback::finish`].
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl Writeback {
    /// Flushes on threads named `name`; a flush that fails is passed to `report` (a log
    /// line, say) and is otherwise left to the final sync, which meets it too.
    pub fn new(name: &'static str, report: fn(io::Error)) -> Self {
        Writeback {
            pending: 0,
            running: None,
            name,
            report,
            failed: Arc::default(),
        }
    }

    /// Counts `len` bytes just written to `file`, and starts a flush once
    /// [`FLUSH_EVERY`] have been written since the last one started, if that one is
    /// done. A flush that cannot be started is left to the final sync.
    pub fn wrote(&mut self, file: &File, len: u64) {
        self.pending += len;
        if self.pending < FLUSH_EVERY || self.running.as_ref().is_some_and(|f| !f.is_finished()) {
            return;
        }
        let Ok(own) = reopen(file) else {
            return;
        };
        let report = self.report;
        let failed = Arc::clone(&self.failed);
        let started = std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                if let Err(e) = own.sync_data() {
                    let kept = io::Error::new(e.kind(), e.to_string());
                    report(e);
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(kept);
                }
            });
        if let Ok(flush) = started {
            self.running = Some(flush);
            self.pending = 0;
        }
    }
}

impl Writeback {
    /// Waits for the flush under way, if any: call it before the final sync, which then
    /// comes after every flush (it would wait for those pages anyway). The error of a
    /// flush that failed, if any: the data written so far may not be on the disk.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(flush) = self.running.take() {
            let _ = flush.join();
        }
        self.take_failure()
    }

    /// Whether a flush that already ended failed (without waiting for one under way).
    pub fn failed(&self) -> bool {
        self.lock_failed().is_some()
    }

    fn take_failure(&self) -> io::Result<()> {
        match self.lock_failed().as_ref() {
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("an earlier flush of the file failed: {e}"),
            )),
            None => Ok(()),
        }
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, Option<io::Error>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The file open again: a new open file description, with its own record of which
/// write errors it has reported.
fn reopen(file: &File) -> io::Result<File> {
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use std::io::{Seek as _, SeekFrom};
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn flushes_start_every_stretch_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let mut wb = Writeback::new("test-writeback", |e| panic!("flush failed: {e}"));
        wb.wrote(&file, FLUSH_EVERY - 1);
        assert!(wb.running.is_none(), "not before a whole stretch");
        wb.wrote(&file, 1);
        assert_eq!(wb.pending, 0);
        assert!(wb.running.is_some(), "a flush started");
        wb.wrote(&file, FLUSH_EVERY);
        wb.finish().unwrap();
        assert!(wb.running.is_none(), "finished");
    }

    #[test]
    fn a_flush_has_an_open_file_description_of_its_own() {
        // A `dup` shares the description (its offset, its record of reported write
        // errors); a reopened file does not.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut file = File::open(&path).unwrap();
        let mut dup = file.try_clone().unwrap();
        let mut own = reopen(&file).unwrap();
        file.seek(SeekFrom::Start(7)).unwrap();
        assert_eq!(dup.stream_position().unwrap(), 7, "a dup shares it");
        assert_eq!(own.stream_position().unwrap(), 0, "its own");
        assert_eq!(
            own.metadata().unwrap().ino(),
            file.metadata().unwrap().ino()
        );
    }
}
