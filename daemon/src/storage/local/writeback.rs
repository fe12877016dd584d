//! An upload's data is made durable as it arrives, not all at the commit: every
//! [`FLUSH_EVERY`] bytes written, a thread of its own flushes the file (`fdatasync`)
//! beside the upload, one flush at a time. The disk then writes while the network
//! delivers, and the commit's fsync, which the client waits for, finds only the last
//! stretch left: on this project's VM that fsync took half a second of a 1 GiB push
//! (bench/RESULTS.md).
//!
//! What the commit and the seal promise is unchanged: they still sync the whole file
//! through the upload's own descriptor, and see any write error. A flush runs on a new
//! open file description of the same file (`/proc/self/fd/N`, not a `dup`): Linux
//! reports a writeback error once to each open file description that was open when it
//! happened, so a flush that meets one (and logs it) does not take it from the upload's
//! descriptor, whose next fsync fails as it would have without the flush.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::thread::JoinHandle;

use tracing::warn;

/// Bytes written between the starts of two flushes.
pub(super) const FLUSH_EVERY: u64 = 64 << 20;

/// The flushes of one upload's file.
#[derive(Debug, Default)]
pub(super) struct Writeback {
    /// Bytes written since the last flush started.
    pending: u64,
    running: Option<JoinHandle<()>>,
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
        let Ok(own) = reopen(file) else {
            return;
        };
        let started = std::thread::Builder::new()
            .name("xferd-writeback".into())
            .spawn(move || {
                if let Err(e) = own.sync_data() {
                    warn!(error = %e, "flushing upload data failed; the commit will report it");
                }
            });
        if let Ok(flush) = started {
            self.running = Some(flush);
            self.pending = 0;
        }
    }
}

/// The file open again: a new open file description, with its own record of which
/// write errors it has reported.
fn reopen(file: &File) -> std::io::Result<File> {
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
        let mut wb = Writeback::default();
        wb.wrote(&file, FLUSH_EVERY - 1);
        assert!(wb.running.is_none(), "not before a whole stretch");
        wb.wrote(&file, 1);
        assert_eq!(wb.pending, 0);
        let flush = wb.running.take().expect("a flush started");
        flush.join().unwrap();
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
