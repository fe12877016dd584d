//! An upload's data is made durable as it arrives, not all at the commit: every
//! [`FLUSH_EVERY`] bytes written, a thread of its own flushes the file (`fdatasync`)
//! beside the upload, one flush at a time. The disk then writes while the network
//! delivers, and the commit's fsync, which the client waits for, finds only the last
//! stretch left: on this project's VM that fsync took half a second of a 1 GiB push
//! (bench/RESULTS.md). What the commit promises is unchanged: it still syncs the whole
//! file itself, and it fails if any flush before it failed (an error a flush reports
//! may not be reported again to the commit's fsync).

use std::fs::File;
use std::thread::JoinHandle;

/// Bytes written between the starts of two flushes.
pub(super) const FLUSH_EVERY: u64 = 64 << 20;

/// The flushes of one upload's file.
#[derive(Default)]
pub(super) struct Writeback {
    /// Bytes written since the last flush started.
    pending: u64,
    running: Option<JoinHandle<std::io::Result<()>>>,
    /// The first error a flush met.
    failed: Option<std::io::Error>,
}

impl Writeback {
    /// Counts `len` bytes just written to `file`, and starts a flush once
    /// [`FLUSH_EVERY`] have been written since the last one started, if that one is
    /// done. A flush that cannot be started is left to the commit.
    pub fn wrote(&mut self, file: &File, len: u64) {
        self.pending += len;
        if self.pending < FLUSH_EVERY || self.running.as_ref().is_some_and(|f| !f.is_finished()) {
            return;
        }
        self.reap();
        let Ok(file) = file.try_clone() else {
            return;
        };
        let started = std::thread::Builder::new()
            .name("xferd-writeback".into())
            .spawn(move || file.sync_data());
        if let Ok(flush) = started {
            self.running = Some(flush);
            self.pending = 0;
        }
    }

    /// Waits for the flush running, if any; the first error of any flush.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.reap();
        self.failed.take().map_or(Ok(()), Err)
    }

    fn reap(&mut self) {
        let result = match self.running.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("a writeback thread panicked")),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.failed.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_start_every_stretch_one_at_a_time_and_the_commit_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let mut wb = Writeback::default();
        wb.wrote(&file, FLUSH_EVERY - 1);
        assert!(wb.running.is_none(), "not before a whole stretch");
        wb.wrote(&file, 1);
        assert!(wb.running.is_some());
        assert_eq!(wb.pending, 0);
        wb.finish().unwrap();
        assert!(wb.running.is_none(), "finish waits for the flush");
    }

    #[test]
    fn a_failed_flush_fails_the_commit() {
        // fdatasync of a pipe fails (EINVAL): the flush's error is kept for finish.
        let (reader, _writer) = std::io::pipe().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(reader));
        let mut wb = Writeback::default();
        wb.wrote(&pipe, FLUSH_EVERY);
        assert!(wb.finish().is_err());
        assert!(wb.finish().is_ok(), "reported once");
    }
}
