//! Resume records for pushes: what an interrupted push already hashed, so the re-run
//! does not read and hash again the bytes the server holds.
//!
//! A push of a file of several chunks keeps a record in the client's home
//! (`pushes/KEY.rec`, KEY from the login, the destination and the local path): a header
//! line naming the local file's identity (device, inode, size, modification and change
//! times) and the chunk size, then one entry per chunk read, `index` and digest (the
//! chunk's BLAKE3 chaining value, [`Digest::of_chunk`]), appended as the push reads
//! them. The header is written whole or not at all (a short fixed temporary name, then
//! a rename); an entry cut short by a kill is ignored. The record is removed once the
//! push is committed.
//!
//! A re-run of the same push whose local file still has the recorded identity takes a
//! recorded digest instead of reading the chunk, but only for a chunk the server holds
//! with exactly that digest: then the server holds the bytes the file had when they were
//! hashed, and the file has not changed since. Anything else (no record, another
//! identity, another chunk size, a digest the server does not hold) reads and hashes
//! the chunk as a push without a record does. The server still checks the whole-file
//! digest at commit against what it holds, so a wrong record cannot commit a file that
//! does not match its digest; a forged record that claims the server's own digests for
//! content the local file does not have is outside this: it sits in the user's private
//! home, and whoever can write there can write the user's files too.
//!
//! A write within the timestamp granularity of the last one leaves the identity as it
//! was (the "racy" case): an entry is recorded only for a chunk read at least
//! [`racy_margin`] after the file's last change, so such a write cannot go unnoticed.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xfer_proto::Digest;

/// Format of the record (the `xfer_push` field of the header).
pub const RECORD_FORMAT: u32 = 1;
/// Where records live, under the client's home.
const RECORDS_DIR: &str = "pushes";
/// Bytes of one entry: the chunk index (little-endian u64) and its digest.
const ENTRY_LEN: usize = 8 + 32;
/// Records not touched for this long are removed when another push starts one (the
/// server's default for keeping an abandoned partial upload is a week).
const RECORD_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// Where the records of one login are kept.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
    /// `user@host:port`: records of another login are never used.
    login: String,
    /// Overrides [`racy_margin`] (tests).
    margin: Option<Duration>,
}

impl Records {
    /// The records of `login` (its key, `user@host:port`) under the client's home `home`.
    pub fn new(home: &Path, login: &str) -> Records {
        Records {
            dir: home.join(RECORDS_DIR),
            login: login.to_owned(),
            margin: None,
        }
    }

    /// Records that take a chunk read `margin` after the file's last change as settled
    /// (tests, whose files were just written).
    #[cfg(test)]
    pub fn with_margin(mut self, margin: Duration) -> Records {
        self.margin = Some(margin);
        self
    }

    /// The record file of a push of `local` (absolute) to `dest`.
    fn path(&self, local: &Path, dest: &str) -> PathBuf {
        let mut h = Digest::hasher();
        h.update(self.login.as_bytes()).update(b"\0");
        h.update(dest.as_bytes()).update(b"\0");
        h.update(local.as_os_str().as_encoded_bytes());
        let hex = h.finalize().to_string();
        self.dir.join(format!("{}.rec", &hex[..32]))
    }
}

/// What identifies the content of a local file without reading it: any write,
/// truncation or replacement changes at least the change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// When the file last changed, as a time.
    fn changed(&self) -> SystemTime {
        let (s, ns) = self.ctime;
        let since = Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32);
        UNIX_EPOCH + since
    }
}

/// How long after a file's last change a read of it is settled: a later write gets
/// another change time. Whole-second change times suggest a file system that keeps no
/// more (FAT keeps two seconds); others keep at least the kernel's clock tick.
pub fn racy_margin(id: &FileIdentity) -> Duration {
    if id.ctime.1 == 0 && id.mtime.1 == 0 {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(50)
    }
}

/// The first line of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    /// Always [`RECORD_FORMAT`].
    xfer_push: u32,
    login: String,
    dest: String,
    chunk_size: u64,
    file: FileIdentity,
}

/// A push's record: the digests an earlier run of it recorded (when its file is
/// unchanged), and the new record this run appends to.
pub struct Record {
    /// Recorded digests by chunk index (`None`: not recorded).
    pub earlier: Vec<Option<Digest>>,
    /// This run's record, or `None` when it cannot be written (the push goes on).
    pub writer: Option<RecordWriter>,
}

/// Reads the record of a push of `local` to `dest` (keeping the digests only if the
/// header matches `file` and `chunk_size` and the push resumes) and starts this run's
/// record in its place. Never fails: without a usable record the push reads every chunk.
pub fn open(
    records: &Records,
    local: &Path,
    dest: &str,
    file: FileIdentity,
    chunk_size: u64,
    chunks: u64,
    resuming: bool,
) -> Record {
    let Ok(local) = std::path::absolute(local) else {
        return Record {
            earlier: Vec::new(),
            writer: None,
        };
    };
    let path = records.path(&local, dest);
    let header = Header {
        xfer_push: RECORD_FORMAT,
        login: records.login.clone(),
        dest: dest.to_owned(),
        chunk_size,
        file,
    };
    let earlier = if resuming {
        read(&path, &header, chunks).unwrap_or_default()
    } else {
        Vec::new()
    };
    let margin = records.margin.unwrap_or_else(|| racy_margin(&file));
    let writer = start(&records.dir, &path, &header)
        .ok()
        .map(|f| RecordWriter {
            file: f,
            settled_at: file.changed() + margin,
            settled: false,
        });
    Record { earlier, writer }
}

/// Removes the record of a push of `local` to `dest` (it was committed, or the
/// destination already holds the content). Best effort.
pub fn forget(records: &Records, local: &Path, dest: &str) {
    if let Ok(local) = std::path::absolute(local) {
        let _ = std::fs::remove_file(records.path(&local, dest));
    }
}

/// The digests recorded at `path` under a header equal to `want`, by chunk index
/// (`chunks` of them); `None` when there is no such record.
fn read(path: &Path, want: &Header, chunks: u64) -> Option<Vec<Option<Digest>>> {
    let mut reader = std::io::BufReader::new(File::open(path).ok()?);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    let header: Header = serde_json::from_slice(line.strip_suffix(b"\n")?).ok()?;
    if header != *want {
        return None;
    }
    let mut entries = Vec::new();
    reader.read_to_end(&mut entries).ok()?;
    let mut earlier = vec![None; usize::try_from(chunks).ok()?];
    // A last entry cut short by a kill is left out.
    for entry in entries.chunks_exact(ENTRY_LEN) {
        let (index, digest) = entry.split_at(8);
        let index = u64::from_le_bytes(index.try_into().expect("8 bytes"));
        let digest = Digest(digest.try_into().expect("32 bytes"));
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| earlier.get_mut(i)) {
            *slot = Some(digest);
        }
    }
    Some(earlier)
}

/// Replaces the record at `path` with one holding only `header`, written whole or not
/// at all, and returns it open for appending entries.
fn start(dir: &Path, path: &Path, header: &Header) -> std::io::Result<File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    prune(dir);
    let mut line = serde_json::to_vec(header).expect("a record header always serialises");
    line.push(b'\n');
    // Short and fixed, as for the pull's part records.
    let tmp = dir.join(format!(".xfer-record-{}.tmp", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&line)?;
    std::fs::rename(&tmp, path)?;
    Ok(f)
}

/// Removes records nobody has written to for [`RECORD_TTL`].
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > RECORD_TTL);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// This run's record, appended to as chunks are hashed (on the reader's thread).
pub struct RecordWriter {
    file: File,
    /// Chunks read from this time on are settled ([`racy_margin`]).
    settled_at: SystemTime,
    settled: bool,
}

impl RecordWriter {
    /// Whether a chunk read now can be recorded; call it before reading the chunk.
    pub fn settled(&mut self) -> bool {
        self.settled = self.settled || SystemTime::now() >= self.settled_at;
        self.settled
    }

    /// Appends chunk `index`'s digest. A failed write stops the record, not the push.
    pub fn add(this: &mut Option<RecordWriter>, index: u64, digest: &Digest) {
        let Some(w) = this else { return };
        let mut entry = [0u8; ENTRY_LEN];
        entry[..8].copy_from_slice(&index.to_le_bytes());
        entry[8..].copy_from_slice(digest.as_bytes());
        if w.file.write_all(&entry).is_err() {
            *this = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> Digest {
        Digest([b; 32])
    }

    fn setup() -> (tempfile::TempDir, Records, PathBuf, FileIdentity) {
        let tmp = tempfile::tempdir().unwrap();
        let records = Records::new(tmp.path(), "alice@h:1").with_margin(Duration::ZERO);
        let local = tmp.path().join("f.bin");
        std::fs::write(&local, b"0123456789").unwrap();
        let id = FileIdentity::of(&std::fs::metadata(&local).unwrap());
        (tmp, records, local, id)
    }

    #[test]
    fn recorded_digests_come_back_for_the_same_file_and_push() {
        let (_tmp, records, local, id) = setup();
        let mut r = open(&records, &local, "x", id, 1024, 4, true);
        assert!(r.earlier.is_empty(), "nothing recorded yet");
        assert!(r.writer.as_mut().unwrap().settled());
        RecordWriter::add(&mut r.writer, 0, &d(1));
        RecordWriter::add(&mut r.writer, 2, &d(3));
        drop(r);
        let r = open(&records, &local, "x", id, 1024, 4, true);
        assert_eq!(r.earlier, vec![Some(d(1)), None, Some(d(3)), None]);
        // Opening started a new record: what the earlier run had is gone from it.
        drop(r);
        assert_eq!(
            open(&records, &local, "x", id, 1024, 4, true).earlier,
            vec![None; 4]
        );
    }

    #[test]
    fn another_identity_destination_chunk_size_or_login_reads_nothing() {
        let (tmp, records, local, id) = setup();
        let write = |dest: &str| {
            let mut r = open(&records, &local, dest, id, 1024, 2, false);
            RecordWriter::add(&mut r.writer, 0, &d(1));
        };
        write("x");
        assert!(
            open(&records, &local, "y", id, 1024, 2, true)
                .earlier
                .is_empty()
        );
        write("x");
        assert!(
            open(&records, &local, "x", id, 2048, 2, true)
                .earlier
                .is_empty()
        );
        write("x");
        let other = Records::new(tmp.path(), "bob@h:1");
        assert!(
            open(&other, &local, "x", id, 1024, 2, true)
                .earlier
                .is_empty()
        );
        write("x");
        // The file changed: its change time (and here its size) is not the recorded one.
        std::fs::write(&local, b"01234567890").unwrap();
        let now = FileIdentity::of(&std::fs::metadata(&local).unwrap());
        assert_ne!(now, id);
        assert!(
            open(&records, &local, "x", now, 1024, 2, true)
                .earlier
                .is_empty()
        );
        write("x");
        assert!(
            open(&records, &local, "x", id, 1024, 2, false)
                .earlier
                .is_empty(),
            "not resuming: nothing to reuse"
        );
    }

    #[test]
    fn a_torn_entry_or_header_is_ignored() {
        let (_tmp, records, local, id) = setup();
        let mut r = open(&records, &local, "x", id, 1024, 3, false);
        RecordWriter::add(&mut r.writer, 0, &d(1));
        RecordWriter::add(&mut r.writer, 1, &d(2));
        drop(r);
        let path = records.path(&std::path::absolute(&local).unwrap(), "x");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            open(&records, &local, "x", id, 1024, 3, true).earlier,
            vec![Some(d(1)), None, None]
        );
        std::fs::write(&path, b"{\"xfer_push\":1,").unwrap();
        assert!(
            open(&records, &local, "x", id, 1024, 3, true)
                .earlier
                .is_empty()
        );
        // An index past the file is dropped, not a panic.
        let mut r = open(&records, &local, "x", id, 1024, 3, false);
        RecordWriter::add(&mut r.writer, u64::MAX, &d(9));
        drop(r);
        assert_eq!(
            open(&records, &local, "x", id, 1024, 3, true).earlier,
            vec![None; 3]
        );
        forget(&records, &local, "x");
        assert!(!path.exists());
    }

    #[test]
    fn a_file_changed_just_now_is_not_settled() {
        let (_tmp, records, local, id) = setup();
        let records = records.with_margin(Duration::from_secs(3600));
        let mut r = open(&records, &local, "x", id, 1024, 2, false);
        assert!(!r.writer.as_mut().unwrap().settled());
        assert_eq!(racy_margin(&id), Duration::from_millis(50));
        let coarse = FileIdentity {
            mtime: (5, 0),
            ctime: (5, 0),
            ..id
        };
        assert_eq!(racy_margin(&coarse), Duration::from_secs(2));
    }
}
