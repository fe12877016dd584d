//! Part files xfer made, told apart from a user's own files of the same name.
//!
//! A download goes into `NAME.xfer-part`; beside it `NAME.xfer-part.json` records that
//! xfer created that part file and for which remote file (server, path, size, BLAKE3).
//! The record is written before the part file is created and removed after the part
//! file is renamed into place, so a crash at any point leaves either no part file or
//! one with its record. A `NAME.xfer-part` (or `.json`) without a valid record is the
//! user's: it is never opened for writing, truncated or renamed; the pull stops with a
//! conflict naming it. A part recorded for another size or digest (the remote file
//! changed) is started over; one for the same content is resumed, its chunks
//! re-verified against the server's manifest as always.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::error::ConflictError;

/// Format of the record (the `xfer_part` field); anything else is not ours.
pub const RECORD_FORMAT: u32 = 1;

/// What a part file holds: the remote file it is a download of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// Always [`RECORD_FORMAT`]: marks the record (and so the part file) as xfer's.
    pub xfer_part: u32,
    pub server: String,
    pub remote: String,
    pub size: u64,
    /// Hex BLAKE3 of the whole remote file.
    pub digest: String,
}

impl PartRecord {
    pub fn new(server: String, remote: String, size: u64, digest: String) -> PartRecord {
        PartRecord {
            xfer_part: RECORD_FORMAT,
            server,
            remote,
            size,
            digest,
        }
    }
}

/// The record of part file `part`: `NAME.xfer-part.json`.
pub fn record_path(part: &Path) -> PathBuf {
    let mut name = part.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    part.with_file_name(name)
}

/// The record at `path`: `Ok(None)` if there is none, an error if something that is
/// not an xfer record is there.
fn read_record(path: &Path) -> Result<Option<PartRecord>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("checking `{}`", path.display())),
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(not_ours(path)),
    }
    let text = std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?;
    match serde_json::from_slice::<PartRecord>(&text) {
        Ok(r) if r.xfer_part == RECORD_FORMAT => Ok(Some(r)),
        _ => Err(not_ours(path)),
    }
}

fn not_ours(path: &Path) -> anyhow::Error {
    ConflictError(format!(
        "{} exists and was not made by xfer; it was left untouched: move or remove it, then pull again",
        path.display()
    ))
    .into()
}

/// Writes the record whole or not at all (a temporary beside it, then a rename): a
/// record cut short by a kill would read as not xfer's, and the pull would refuse to go on.
fn write_record(path: &Path, record: &PartRecord) -> Result<()> {
    let json = serde_json::to_vec(record).expect("a part record always serialises");
    // Short, not NAME + suffix: a long NAME would go past the file system's limit on a
    // name (the record's own name already adds 15 bytes). Unique per call, since a pull
    // writes several files' records at once (`install::write_run`).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".xfer-record-{}-{n}.tmp", std::process::id()));
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing `{}`", path.display()))
}

/// Opens `part` for a download of `record`'s file: resumes a part xfer made for the same
/// content, starts over one it made for other content, creates one (record first)
/// if there is none. A part file without a valid record is a conflict and untouched.
///
/// The part file is locked (`flock`) for as long as the returned file or a duplicate of
/// it is open: another download into the same place (a second `xfer pull`, or another
/// file of this one reaching the same file through a symlinked directory or a name the
/// filesystem folds together) is refused as a conflict before it truncates or writes a
/// byte, instead of the two writing one file.
pub fn open_part(part: &Path, record: &PartRecord) -> Result<File> {
    // From looking for the record to locking the part file, one download at a time in
    // the directory: two that both found no part file would otherwise both write their
    // record, and the one left without a part file would have replaced the other's.
    let _dir = lock_dir(part);
    let record_file = record_path(part);
    let recorded = read_record(&record_file)?;
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    match std::fs::symlink_metadata(part) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            write_record(&record_file, record)?;
            // Exclusive: a part file that appeared meanwhile is not taken over.
            options.create_new(true);
            let file = match options.open(part) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(not_ours(part)),
                r => r.with_context(|| format!("creating `{}`", part.display()))?,
            };
            lock(&file, part)?;
            Ok(file)
        }
        Err(e) => Err(e).with_context(|| format!("checking `{}`", part.display())),
        Ok(m) if !m.is_file() => Err(not_ours(part)),
        Ok(_) => {
            let Some(recorded) = recorded else {
                return Err(not_ours(part));
            };
            let file = options
                .open(part)
                .with_context(|| format!("opening `{}`", part.display()))?;
            lock(&file, part)?;
            if (recorded.size, &recorded.digest) != (record.size, &record.digest) {
                file.set_len(0)
                    .with_context(|| format!("starting `{}` over", part.display()))?;
            }
            if recorded != *record {
                write_record(&record_file, record)?;
            }
            Ok(file)
        }
    }
}

/// The directory of `part`, locked (`flock`) for this download while it opens its part
/// file; `None` where it cannot be (the download goes on without). Another download
/// holds the lock for a few system calls; one that still holds it after a while (a
/// process stopped there) is not waited for longer.
fn lock_dir(part: &Path) -> Option<File> {
    let dir = File::open(super::dir_of(part)).ok()?;
    // The writer threads of one pull meet here often: short waits.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match dir.try_lock() {
            Ok(()) => return Some(dir),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            Err(_) => return None,
        }
    }
}

/// Locks the part file `file` opened at `part` for this download alone.
fn lock(file: &File, part: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(ConflictError(format!(
            "{} is being written by another download into the same place (another xfer pull, \
             or another file of this one with the same destination); it was left to that one: \
             pull again once it is done",
            part.display()
        ))
        .into()),
        // A filesystem that cannot lock (NFS without its lock service, some FUSE ones)
        // goes on without: the guard is lost there, not the download.
        Err(std::fs::TryLockError::Error(_)) => Ok(()),
    }
}

/// Checks that `part` still names `file`, the part file this download wrote: a file of
/// the same pull named like it (`NAME.xfer-part`, replaced with `--force`) may have been
/// renamed over it, and renaming that into place would put another file's bytes under
/// this one's name.
pub fn still_names(part: &Path, file: &File) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let ours = file
        .metadata()
        .with_context(|| format!("checking `{}`", part.display()))?;
    let there = std::fs::symlink_metadata(part)
        .with_context(|| format!("checking `{}`", part.display()))?;
    if (ours.dev(), ours.ino()) == (there.dev(), there.ino()) {
        Ok(())
    } else {
        Err(ConflictError(format!(
            "{} was replaced by another file while the pull wrote it, and was left as it is; \
             nothing was moved into place: pull again",
            part.display()
        ))
        .into())
    }
}

/// Removes the record of a part file that was renamed into place, if it is still the
/// record this download wrote: a file of the same pull named like the record
/// (`NAME.xfer-part.json`) may have been put there since, and is the user's (best
/// effort: a record without its part file is rewritten by the next download).
pub fn forget(part: &Path, record: &PartRecord) {
    let path = record_path(part);
    if let Ok(Some(r)) = read_record(&path)
        && r == *record
    {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(size: u64) -> PartRecord {
        PartRecord::new("h:1".into(), "f".into(), size, "ab".into())
    }

    /// The length of `part` as `open_part` leaves it for a download of `record`.
    fn opened_len(part: &Path, record: &PartRecord) -> u64 {
        open_part(part, record).unwrap().metadata().unwrap().len()
    }

    #[test]
    fn a_users_part_file_is_refused_and_left_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let part = tmp.path().join("x.xfer-part");
        std::fs::write(&part, b"mine").unwrap();
        let err = open_part(&part, &rec(10)).unwrap_err();
        assert!(err.is::<ConflictError>(), "{err:#}");
        assert!(err.to_string().contains("not made by xfer"), "{err}");
        assert_eq!(std::fs::read(&part).unwrap(), b"mine");
        assert!(!record_path(&part).exists());

        // Nor is a user's file where the record goes.
        std::fs::remove_file(&part).unwrap();
        std::fs::write(record_path(&part), b"{}").unwrap();
        assert!(open_part(&part, &rec(10)).is_err());
        assert!(!part.exists());
        assert_eq!(std::fs::read(record_path(&part)).unwrap(), b"{}");
    }

    #[test]
    fn a_part_file_being_written_is_not_opened_by_a_second_download() {
        let tmp = tempfile::tempdir().unwrap();
        let part = tmp.path().join("x.xfer-part");
        let first = open_part(&part, &rec(10)).unwrap();
        std::fs::write(&part, b"12345").unwrap();
        let dup = first.try_clone().unwrap();
        drop(first);
        // Held through a duplicate: refused before anything is truncated.
        let err = open_part(&part, &rec(11)).unwrap_err();
        assert!(err.is::<ConflictError>(), "{err:#}");
        assert!(err.to_string().contains("another download"), "{err}");
        assert_eq!(std::fs::read(&part).unwrap(), b"12345");
        assert_eq!(read_record(&record_path(&part)).unwrap(), Some(rec(10)));
        drop(dup);
        assert_eq!(opened_len(&part, &rec(10)), 5);
    }

    #[test]
    fn xfers_own_part_is_resumed_or_started_over() {
        let tmp = tempfile::tempdir().unwrap();
        let part = tmp.path().join("x.xfer-part");
        drop(open_part(&part, &rec(10)).unwrap());
        std::fs::write(&part, b"12345").unwrap();
        assert_eq!(opened_len(&part, &rec(10)), 5);
        // The remote file changed: what the part holds is not of it.
        assert_eq!(opened_len(&part, &rec(11)), 0);
        assert_eq!(read_record(&record_path(&part)).unwrap(), Some(rec(11)));
        // Only the record this download wrote is forgotten.
        forget(&part, &rec(10));
        assert!(record_path(&part).exists());
        forget(&part, &rec(11));
        assert!(!record_path(&part).exists());
        // A user's file that took the record's name stays.
        std::fs::write(record_path(&part), b"precious").unwrap();
        forget(&part, &rec(11));
        assert_eq!(std::fs::read(record_path(&part)).unwrap(), b"precious");
    }
}
