//! The writer of a pull of many small files: writes each whole file where it waits for
//! its batch, and installs them in batches, so the disk is flushed once per batch
//! instead of twice per file.
//!
//! A file whose destination is free waits in an unnamed file of the destination's
//! directory (`O_TMPFILE`): nothing of it has a name until it is installed, and a crash
//! leaves nothing behind, so it needs no part file or record (one inode per file, as for
//! any copy). A file that replaces another (`--force`), one with a part file left by an
//! earlier pull, or one on a filesystem without `O_TMPFILE` goes into its part file with
//! its record, as every download does ([`super::part`]).
//!
//! A batch is installed when no further file is waiting, or after [`BATCH_FILES`] (fewer
//! under a low limit on open files):
//! one `syncfs` per filesystem makes the data durable, each file is linked in (unnamed)
//! or renamed over its destination (part file), a second `syncfs` makes the names
//! durable, and only then are the records removed and the files reported done. A crash
//! leaves each destination either absent (or the old file) or complete, and at most a
//! part file with its record, which the next pull takes over.

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use xfer_proto::Digest;

use super::part::{self, PartRecord};
use super::{Outcome, dir_of, hash_file, part_path};
use crate::error::{ConflictError, IntegrityError};

/// Files installed together at most.
pub const BATCH_FILES: usize = 128;

/// Descriptors left for everything but the files of a pull: the standard streams, the
/// connection, the runtime's, a chunked file and its directory.
const OTHER_FILES: u64 = 32;

/// Files installed together in this process: [`BATCH_FILES`], or fewer when the limit on
/// open files (`ulimit -n`) would not hold three batches of them (see [`run`]).
fn batch_files() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    static BATCH: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BATCH.get_or_init(|| {
        let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return BATCH_FILES;
        };
        let fit = soft.saturating_sub(OTHER_FILES) / 3;
        usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .clamp(1, BATCH_FILES)
    })
}

/// What the writer is handed, in the order results are to be reported.
pub enum ToWriter {
    /// A whole file as the server sent it.
    File(Box<Received>),
    /// A file that failed before reaching the writer: reported in its place.
    Failed {
        remote: String,
        dest: PathBuf,
        error: anyhow::Error,
    },
    /// Install what is pending, then answer (before a file goes the chunked way).
    Sync(oneshot::Sender<()>),
}

/// One whole file from the server.
pub struct Received {
    pub remote: String,
    pub dest: PathBuf,
    pub data: Bytes,
    pub digest: Digest,
    pub modified_unix: u64,
    /// Replace an existing different file.
    pub force: bool,
    /// `host:port`, for the part file's record.
    pub server: String,
}

/// One file's result, in order: the remote path, the local one, and how it ended.
pub type Installed = (String, PathBuf, Result<Outcome>);

/// A file written and waiting for its batch's flush.
struct Pending {
    remote: String,
    dest: PathBuf,
    staged: Staged,
    file: std::fs::File,
    size: u64,
    digest: Digest,
}

/// Where a file's bytes wait for their batch.
enum Staged {
    /// An unnamed file in the destination's directory, linked in at install.
    Unnamed,
    /// A part file with its record, renamed over the destination at install.
    Part(PathBuf, PartRecord),
}

/// The writer task: runs until `rx` closes, sending every result to `done` in order.
///
/// It writes each file where it waits, and hands each batch to an installer thread of
/// its own, so the next batch is written while the one before is flushed and linked:
/// on a disk the flushes are a third of a pull of many small files (bench/RESULTS.md).
/// At most one batch waits for the installer besides the one it installs, so up to three
/// batches of files are open at once (that one, the one waiting, the one being written).
///
/// Files that are already waiting when one arrives are written on [`WRITERS`] threads
/// at once (`write_run`).
pub fn run(mut rx: mpsc::Receiver<ToWriter>, done: mpsc::UnboundedSender<Installed>) {
    let installer = Installer::start(done);
    let mut batch = Batch::default();
    // A message taken while gathering files that is not a file: handled next.
    let mut held: Option<ToWriter> = None;
    loop {
        let next = match held.take().map_or_else(|| rx.try_recv(), Ok) {
            Ok(m) => Some(m),
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing waiting: what was written goes to be installed now.
                if !batch.is_empty() && !installer.take(std::mem::take(&mut batch)) {
                    break;
                }
                rx.blocking_recv()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let Some(msg) = next else {
            break;
        };
        match msg {
            ToWriter::File(r) => {
                // With it, the files already waiting, up to what the batch has room for
                // and at most RUN_MAX (a run's files are held in memory beside the
                // channel's).
                let room = batch_files()
                    .saturating_sub(batch.pending.len())
                    .clamp(1, RUN_MAX);
                let mut run = vec![*r];
                while run.len() < room {
                    match rx.try_recv() {
                        Ok(ToWriter::File(r)) => run.push(*r),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                for (remote, dest, written) in write_run(run) {
                    match written {
                        Ok(Written::Pending(p)) => {
                            batch.pending.push(p);
                            batch.order.push(None);
                        }
                        Ok(Written::Done(outcome)) => {
                            batch.order.push(Some((remote, dest, Ok(outcome))));
                        }
                        Err(e) => batch.order.push(Some((remote, dest, Err(e)))),
                    }
                }
            }
            ToWriter::Failed {
                remote,
                dest,
                error,
            } => batch.order.push(Some((remote, dest, Err(error)))),
            ToWriter::Sync(ack) => {
                // Answered once this batch, and so every one before it, is installed.
                batch.ack = Some(ack);
                if !installer.take(std::mem::take(&mut batch)) {
                    break;
                }
                continue;
            }
        }
        if batch.pending.len() >= batch_files() && !installer.take(std::mem::take(&mut batch)) {
            break;
        }
    }
    if !batch.is_empty() {
        installer.take(batch);
    }
    installer.finish();
}

/// Where batches are installed: a thread of their own, or, when none can be started,
/// the writer itself.
enum Installer {
    Thread(
        std::sync::mpsc::SyncSender<Batch>,
        std::thread::JoinHandle<()>,
    ),
    Inline(mpsc::UnboundedSender<Installed>),
}

impl Installer {
    fn start(done: mpsc::UnboundedSender<Installed>) -> Installer {
        let (tx, batches) = std::sync::mpsc::sync_channel::<Batch>(1);
        let results = done.clone();
        let thread = std::thread::Builder::new()
            .name("xfer-install".into())
            .spawn(move || {
                for batch in batches {
                    batch.install(&results);
                }
            });
        match thread {
            Ok(thread) => Installer::Thread(tx, thread),
            Err(_) => Installer::Inline(done),
        }
    }

    /// Hands `batch` over (waiting while one is already queued); false when the
    /// installer is gone.
    fn take(&self, batch: Batch) -> bool {
        match self {
            Installer::Thread(tx, _) => tx.send(batch).is_ok(),
            Installer::Inline(done) => {
                batch.install(done);
                true
            }
        }
    }

    /// Waits until every batch handed over is installed. A panic of the installer is
    /// the writer's: the pull must not end as if its files were all reported.
    fn finish(self) {
        if let Installer::Thread(tx, thread) = self {
            drop(tx);
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Files written and waiting to be installed together, with the results of the files
/// answered before them, in order.
#[derive(Default)]
struct Batch {
    pending: Vec<Pending>,
    /// One entry per file in order: its result, or `None` for the next pending one.
    order: Vec<Option<Installed>>,
    /// Told once the batch is installed.
    ack: Option<oneshot::Sender<()>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.order.is_empty() && self.ack.is_none()
    }

    /// Installs the pending files (flush, link or rename, flush) and sends every result
    /// in order.
    fn install(mut self, done: &mpsc::UnboundedSender<Installed>) {
        let mut installed = install_batch(&mut self.pending).into_iter();
        for slot in self.order {
            let r = match slot {
                Some(r) => r,
                None => installed.next().expect("one result per pending file"),
            };
            let _ = done.send(r);
        }
        if let Some(ack) = self.ack {
            let _ = ack.send(());
        }
    }
}

/// Threads that write the files of one run at once.
///
/// Creating a file is most of the cost of a small one, and on a filesystem that must
/// search for a free inode (ext4 without a journal skips the inodes freed in the last
/// minute, one by one) it is CPU time in the kernel, which a second thread overlaps:
/// `bench/RESULTS.md` has the figures. Two: more were not measured (the project's
/// machine has two cores, and the pull's network task needs one as well).
pub const WRITERS: usize = 2;

/// Files taken into one run at most: with the channel's, at most this many more whole
/// files (of at most a chunk each) are held in memory than with one writer.
const RUN_MAX: usize = 16;

/// Runs shorter than this are written on the writer's thread alone: starting a helper
/// costs about as much as writing a file or two.
const RUN_FOR_HELPERS: usize = 4;

/// Writes each file of `run` ([`write`]), on up to [`WRITERS`] threads that take the
/// files in turn; the results come back in the order of `run`. A helper that cannot be
/// started leaves its share to the others. A run with two destinations that differ only
/// in case is written on one thread.
fn write_run(run: Vec<Received>) -> Vec<(String, PathBuf, Result<Written>)> {
    let results: Vec<Result<Written>> = if run.len() < RUN_FOR_HELPERS || !distinct(&run) {
        run.iter().map(write).collect()
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Each thread takes the next file not taken yet and keeps its results by position.
        let work = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(r) = run.get(i) else { break done };
                done.push((i, write(r)));
            }
        };
        let mut results: Vec<Option<Result<Written>>> = run.iter().map(|_| None).collect();
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..WRITERS)
                // A thread that cannot be started leaves its share to this one.
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .name("xfer-write".into())
                        .spawn_scoped(scope, work)
                        .ok()
                })
                .collect();
            let mut all = work();
            for helper in helpers {
                all.extend(
                    helper
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p)),
                );
            }
            for (i, written) in all {
                results[i] = Some(written);
            }
        });
        results
            .into_iter()
            .map(|r| r.expect("every file is written"))
            .collect()
    };
    run.into_iter()
        .zip(results)
        .map(|(r, written)| (r.remote, r.dest, written))
        .collect()
}

/// Whether no two destinations of `run` could be one file on a filesystem that ignores
/// case: those are written one after the other, as with one writer, never into one part
/// file at once.
fn distinct(run: &[Received]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(run.len());
    run.iter()
        .all(|r| seen.insert(r.dest.to_string_lossy().to_lowercase()))
}

enum Written {
    Pending(Pending),
    /// Nothing to install (the same content is there).
    Done(Outcome),
}

/// Checks the data and the destination, then writes the file where it waits for its
/// batch (not flushed).
fn write(r: &Received) -> Result<Written> {
    let Received {
        remote,
        dest,
        data,
        digest,
        modified_unix,
        force,
        server,
    } = r;
    let (digest, modified_unix, force) = (*digest, *modified_unix, *force);
    if Digest::of(data) != digest {
        return Err(IntegrityError(format!(
            "`{remote}` arrived with BLAKE3 {}, not the {digest} the server announced; nothing was written",
            Digest::of(data)
        ))
        .into());
    }
    let time = UNIX_EPOCH
        .checked_add(Duration::from_secs(modified_unix))
        .ok_or_else(|| anyhow!("the server's modification time {modified_unix} is out of range"))?;
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking `{}`", dest.display())),
        Ok(meta) if meta.is_dir() => {
            return Err(ConflictError(format!("{} is a directory", dest.display())).into());
        }
        Ok(_) if force => {}
        Ok(meta) => {
            if meta.is_file()
                && hash_file(dest).with_context(|| format!("reading `{}`", dest.display()))?
                    == digest
            {
                std::fs::File::open(dest)
                    .and_then(|f| f.set_modified(time))
                    .with_context(|| format!("setting the time of `{}`", dest.display()))?;
                return Ok(Written::Done(Outcome::UpToDate));
            }
            return Err(ConflictError(format!(
                "{} exists; use --force to replace it",
                dest.display()
            ))
            .into());
        }
    }
    let part = part_path(dest);
    let size = data.len() as u64;
    // Unnamed when nothing is there to replace or take over (a part file, or a record a
    // crash left without its part file, goes the part file's way and is cleaned up).
    let free = !force
        || matches!(std::fs::symlink_metadata(dest), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let leftover = std::fs::symlink_metadata(&part).is_ok()
        || std::fs::symlink_metadata(part::record_path(&part)).is_ok();
    let unnamed = (free && !leftover)
        .then(|| unnamed_in(dir_of(dest)))
        .flatten();
    let (file, staged) = match unnamed {
        Some(file) => (file, Staged::Unnamed),
        None => {
            let record = PartRecord::new(server.clone(), remote.clone(), size, digest.to_string());
            let file = part::open_part(&part, &record)?;
            file.set_len(0)
                .with_context(|| format!("writing `{}`", part.display()))?;
            (file, Staged::Part(part, record))
        }
    };
    file.write_all_at(data, 0)
        .and_then(|()| file.set_modified(time))
        .with_context(|| format!("writing `{}`", dest.display()))?;
    Ok(Written::Pending(Pending {
        remote: remote.clone(),
        dest: dest.clone(),
        staged,
        file,
        size,
        digest,
    }))
}

/// A new unnamed file in `dir` (`O_TMPFILE`, mode 0666 less the umask, like any new
/// file), or `None` where that cannot be done or linked in later: a filesystem without
/// `O_TMPFILE`, or no `/proc/self/fd` to link it through.
fn unnamed_in(dir: &Path) -> Option<std::fs::File> {
    static LINKABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*LINKABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o666)
        .custom_flags(nix::libc::O_TMPFILE)
        .open(dir)
        .ok()
}

/// Gives the unnamed `file` the name `dest`, which must be free: a file that appeared
/// there since the pull looked is not replaced.
fn link_in(file: &std::fs::File, dest: &Path) -> Result<()> {
    use nix::fcntl::{AT_FDCWD, AtFlags};
    let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
    match nix::unistd::linkat(
        AT_FDCWD,
        fd.as_str(),
        AT_FDCWD,
        dest,
        AtFlags::AT_SYMLINK_FOLLOW,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Err(ConflictError(format!(
            "{} appeared while the pull ran and was left as it is; pull again (with --force to replace it)",
            dest.display()
        ))
        .into()),
        Err(e) => Err(std::io::Error::from(e))
            .with_context(|| format!("putting `{}` in place", dest.display())),
    }
}

/// Durability point, renames, durability point; one result per file, in order.
fn install_batch(batch: &mut [Pending]) -> Vec<Installed> {
    if batch.is_empty() {
        return Vec::new();
    }
    let synced = sync_filesystems(batch);
    let mut out = Vec::with_capacity(batch.len());
    let mut renamed = Vec::new();
    for (i, p) in batch.iter().enumerate() {
        let r = synced
            .as_ref()
            .map_err(|e| anyhow!("{e:#}"))
            .and_then(|()| match &p.staged {
                Staged::Unnamed => link_in(&p.file, &p.dest),
                Staged::Part(part, record) => match part::still_names(part, &p.file) {
                    Ok(()) => std::fs::rename(part, &p.dest)
                        .with_context(|| format!("moving `{}` into place", part.display())),
                    // The record no longer speaks for what the name holds.
                    Err(e) => {
                        part::forget(part, record);
                        Err(e)
                    }
                },
            });
        if r.is_ok() {
            renamed.push(i);
        }
        out.push((p.remote.clone(), p.dest.clone(), r.map(|()| outcome(p))));
    }
    if !renamed.is_empty()
        && let Err(e) = sync_filesystems(batch)
    {
        for &i in &renamed {
            out[i].2 = Err(anyhow!("{e:#}"));
        }
    }
    for &i in &renamed {
        if let Staged::Part(part, record) = &batch[i].staged {
            part::forget(part, record);
        }
    }
    out
}

fn outcome(p: &Pending) -> Outcome {
    Outcome::Done {
        size: p.size,
        digest: p.digest,
        verified: 0,
        resumed_at: None,
        transferred: p.size,
    }
}

/// One `syncfs` per filesystem the batch's files are on.
fn sync_filesystems(batch: &[Pending]) -> Result<()> {
    let mut seen = Vec::new();
    for p in batch {
        let dev = p
            .file
            .metadata()
            .with_context(|| format!("reading `{}`", p.dest.display()))?
            .dev();
        if !seen.contains(&dev) {
            seen.push(dev);
            nix::unistd::syncfs(&p.file)
                .with_context(|| format!("flushing `{}` to the disk", dir_of(&p.dest).display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(dest: PathBuf, data: &[u8], force: bool) -> Received {
        Received {
            remote: "r".into(),
            dest,
            data: Bytes::copy_from_slice(data),
            digest: Digest::of(data),
            modified_unix: 1_700_000_000,
            force,
            server: "h:1".into(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_free_name_waits_unnamed_and_a_replaced_one_in_its_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let free = dir.path().join("free");
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"old").unwrap();
        let mut batch = Vec::new();
        for r in [
            received(free.clone(), b"new", false),
            received(taken.clone(), b"newer", true),
        ] {
            match write(&r).unwrap() {
                Written::Pending(p) => batch.push(p),
                Written::Done(_) => panic!("nothing was up to date"),
            }
        }
        assert!(matches!(batch[0].staged, Staged::Unnamed));
        assert!(matches!(batch[1].staged, Staged::Part(..)));
        // Before the install, nothing of the free one has a name.
        assert_eq!(
            names(dir.path()),
            ["taken", "taken.xfer-part", "taken.xfer-part.json"]
        );
        for (_, _, r) in install_batch(&mut batch) {
            r.unwrap();
        }
        assert_eq!(names(dir.path()), ["free", "taken"]);
        assert_eq!(std::fs::read(&free).unwrap(), b"new");
        assert_eq!(std::fs::read(&taken).unwrap(), b"newer");
    }

    /// Writes `run` one file after the other and installs it; one result per file.
    fn write_and_install(run: &[Received]) -> Vec<Result<()>> {
        install_written(run.iter().map(write))
    }

    /// Installs what was written (in order); one result per file, an up-to-date one Ok.
    fn install_written(written: impl IntoIterator<Item = Result<Written>>) -> Vec<Result<()>> {
        let mut batch = Vec::new();
        let mut results: Vec<Option<Result<()>>> = Vec::new();
        for w in written {
            match w {
                Ok(Written::Pending(p)) => {
                    batch.push(p);
                    results.push(None);
                }
                Ok(Written::Done(_)) => results.push(Some(Ok(()))),
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut installed = install_batch(&mut batch).into_iter();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| installed.next().unwrap().2.map(|_| ())))
            .collect()
    }

    #[test]
    fn a_file_named_like_another_files_record_is_not_removed_with_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let (x, record) = (dir.path().join("x"), dir.path().join("x.xfer-part.json"));
        std::fs::write(&x, b"old").unwrap();
        // `x` goes through its part file (it replaces one) and its record; then a file
        // of the remote tree named like that record replaces it.
        let results = write_and_install(&[
            received(x.clone(), b"new x", true),
            received(record.clone(), b"precious", true),
        ]);
        for r in results {
            r.unwrap();
        }
        assert_eq!(std::fs::read(&x).unwrap(), b"new x");
        assert_eq!(std::fs::read(&record).unwrap(), b"precious");
        assert_eq!(names(dir.path()), ["x", "x.xfer-part.json"]);
    }

    #[test]
    fn a_part_file_replaced_while_the_pull_wrote_it_is_not_moved_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x");
        let part = part_path(&x);
        std::fs::write(&x, b"old").unwrap();
        // What an interrupted pull of another version of `x` left.
        let stale = PartRecord::new(
            "h:1".into(),
            "r".into(),
            9,
            Digest::of(b"stale").to_string(),
        );
        drop(part::open_part(&part, &stale).unwrap());
        std::fs::write(&part, b"stale").unwrap();
        // A remote file named like the part file, replaced first (through a part file
        // of its own, renamed over `x.xfer-part`), then `x` itself, whose data went into
        // the part file that name held.
        let results = write_and_install(&[
            received(part.clone(), b"a file named x.xfer-part", true),
            received(x.clone(), b"new x", true),
        ]);
        results[0].as_ref().unwrap();
        let err = results[1].as_ref().unwrap_err();
        assert!(err.is::<ConflictError>(), "{err:#}");
        assert!(format!("{err}").contains("was replaced"), "{err:#}");
        // `x` kept its old bytes rather than the other file's under its name.
        assert_eq!(std::fs::read(&x).unwrap(), b"old");
        assert_eq!(std::fs::read(&part).unwrap(), b"a file named x.xfer-part");
        // Nor does a record claim that file for xfer, where a later pull would take it.
        assert_eq!(names(dir.path()), ["x", "x.xfer-part"]);
    }

    #[test]
    fn two_names_of_one_file_in_a_run_never_put_one_files_bytes_under_the_other() {
        // `alias` is a symlink to `real`: `alias/f` and `real/f` are one file, which
        // `distinct` cannot see. Both replace it through one part file, on two threads.
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let real = dir.path().join("real");
            std::fs::create_dir(&real).unwrap();
            std::os::unix::fs::symlink(&real, dir.path().join("alias")).unwrap();
            std::fs::write(real.join("f"), b"old").unwrap();
            let mut run = vec![
                received(dir.path().join("alias/f"), b"through the alias", true),
                received(real.join("f"), b"through the real name", true),
            ];
            for i in 0..4 {
                run.push(received(real.join(format!("g{i}")), b"other", false));
            }
            let results = install_written(write_run(run).into_iter().map(|(_, _, w)| {
                assert!(
                    !matches!(w, Ok(Written::Done(_))),
                    "{round}: nothing was up to date"
                );
                w
            }));
            let done: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
            assert_eq!(
                done.len(),
                1,
                "{round}: one of the two names is written: {results:?}"
            );
            let failed = results[1 - done[0]].as_ref().unwrap_err();
            assert!(failed.is::<ConflictError>(), "{round}: {failed:#}");
            let expected: &[u8] = [&b"through the alias"[..], b"through the real name"][done[0]];
            assert_eq!(std::fs::read(real.join("f")).unwrap(), expected, "{round}");
            for r in &results[2..] {
                r.as_ref().unwrap();
            }
            // The refused one wrote nothing: no record of it is left either.
            assert_eq!(names(&real), ["f", "g0", "g1", "g2", "g3"], "{round}");
        }
    }

    #[test]
    fn a_run_written_on_several_threads_keeps_its_order_and_each_file_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let same = dir.path().join("f0007");
        std::fs::write(&same, b"file 7").unwrap();
        let other = dir.path().join("f0011");
        std::fs::write(&other, b"someone's").unwrap();
        let run: Vec<Received> = (0..64)
            .map(|i| {
                let mut r = received(
                    dir.path().join(format!("f{i:04}")),
                    format!("file {i}").as_bytes(),
                    false,
                );
                r.remote = format!("f{i:04}");
                if i == 30 {
                    r.digest = Digest::of(b"something else");
                }
                // Every fifth replaces a file there, through its part file and record:
                // several records are written in one directory at once.
                if i % 5 == 0 {
                    std::fs::write(&r.dest, b"old").unwrap();
                    r.force = true;
                }
                r
            })
            .collect();
        let written = write_run(run);
        assert_eq!(written.len(), 64);
        let mut pending = Vec::new();
        for (i, (remote, dest, w)) in written.into_iter().enumerate() {
            assert_eq!(remote, format!("f{i:04}"));
            assert_eq!(dest, dir.path().join(format!("f{i:04}")));
            match (i, w) {
                (7, Ok(Written::Done(Outcome::UpToDate))) => {}
                (11, Err(e)) => assert!(e.to_string().contains("--force"), "{e}"),
                (30, Err(e)) => assert!(e.to_string().contains("BLAKE3"), "{e}"),
                (7 | 11 | 30, _) => panic!("{i}: not the result it should have"),
                (_, Ok(Written::Pending(p))) => {
                    assert_eq!(p.dest, dest, "{i}: another file's result");
                    assert!(
                        matches!(p.staged, Staged::Unnamed) == (i % 5 != 0),
                        "{i}: staged the wrong way"
                    );
                    pending.push(p);
                }
                (_, _) => panic!("{i}: not written"),
            }
        }
        assert_eq!(pending.len(), 61);
        // Each record is its own file's, and no temporary is left.
        for p in &pending {
            if let Staged::Part(part, _) = &p.staged {
                let record = std::fs::read_to_string(part::record_path(part)).unwrap();
                let name = p.dest.file_name().unwrap().to_str().unwrap();
                assert!(record.contains(&format!("\"{name}\"")), "{record}");
                assert!(record.contains(&p.digest.to_string()), "{record}");
            }
        }
        assert!(
            names(dir.path()).iter().all(|n| !n.ends_with(".tmp")),
            "{:?}",
            names(dir.path())
        );
        for (_, dest, r) in install_batch(&mut pending) {
            r.unwrap();
            let i: usize = dest.file_name().unwrap().to_str().unwrap()[1..]
                .parse()
                .unwrap();
            assert_eq!(
                std::fs::read(&dest).unwrap(),
                format!("file {i}").as_bytes()
            );
        }
        assert_eq!(std::fs::read(&other).unwrap(), b"someone's");
        assert_eq!(std::fs::read(dir.path().join("f0030")).unwrap(), b"old");
    }

    #[test]
    fn destinations_that_differ_only_in_case_are_not_written_at_once() {
        let run = |names: &[&str]| -> Vec<Received> {
            names
                .iter()
                .map(|n| received(PathBuf::from(n), b"x", false))
                .collect()
        };
        assert!(distinct(&run(&["d/a", "d/b", "e/a", "d/A.txt"])));
        assert!(!distinct(&run(&["d/a", "d/b", "d/A"])));
        assert!(!distinct(&run(&["D/a", "d/b", "d/a"])));
    }

    #[test]
    fn a_name_taken_while_the_pull_ran_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let Written::Pending(p) = write(&received(dest.clone(), b"pulled", false)).unwrap() else {
            panic!("to install");
        };
        std::fs::write(&dest, b"someone's").unwrap();
        let out = install_batch(&mut [p]);
        let err = out[0].2.as_ref().unwrap_err().to_string();
        assert!(err.contains("appeared while the pull ran"), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"someone's");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn results_come_in_order_across_batches_and_a_sync_waits_for_the_ones_before() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(BATCH_FILES);
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let writer = std::thread::spawn(move || run(rx, done_tx));
        let n = 2 * BATCH_FILES + 44;
        let mut acked = None;
        for i in 0..n {
            let dest = dir.path().join(format!("f{i:04}"));
            let msg = if i == 100 {
                ToWriter::Failed {
                    remote: format!("f{i:04}"),
                    dest,
                    error: anyhow!("refused"),
                }
            } else {
                let mut r = received(dest, format!("file {i}").as_bytes(), false);
                r.remote = format!("f{i:04}");
                ToWriter::File(Box::new(r))
            };
            tx.blocking_send(msg).unwrap();
            if i == BATCH_FILES + 10 {
                let (ack, rx) = oneshot::channel();
                tx.blocking_send(ToWriter::Sync(ack)).unwrap();
                acked = Some(rx);
            }
        }
        // The sync is answered once every file before it is installed and reported.
        acked.unwrap().blocking_recv().unwrap();
        let mut seen = Vec::new();
        while let Ok(r) = done.try_recv() {
            seen.push(r);
        }
        assert!(
            seen.len() > BATCH_FILES + 10,
            "{} reported before the sync's answer",
            seen.len()
        );
        for (i, (remote, dest, _)) in seen.iter().take(BATCH_FILES + 11).enumerate() {
            assert_eq!(remote, &format!("f{i:04}"));
            assert_eq!(
                dest.exists(),
                i != 100,
                "{i} is installed by the sync's answer"
            );
        }
        drop(tx);
        writer.join().unwrap();
        while let Some(r) = done.blocking_recv() {
            seen.push(r);
        }
        assert_eq!(seen.len(), n);
        for (i, (remote, dest, r)) in seen.iter().enumerate() {
            assert_eq!(remote, &format!("f{i:04}"));
            if i == 100 {
                assert!(r.is_err());
                assert!(!dest.exists());
            } else {
                assert!(r.is_ok(), "{i}: {r:?}");
                assert_eq!(std::fs::read(dest).unwrap(), format!("file {i}").as_bytes());
            }
        }
    }
}
