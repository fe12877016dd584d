//! Whole small files, put and read in one request each, committed in batches.
//!
//! A batch of [`WholeFile`]s (consecutive `PutFile` requests of one connection) is
//! admitted file by file under the user's mutations lock, as `PutBegin` would (path,
//! conflicts, size, quota, free space, type policy) and checked against its digest. Each
//! admitted file is written to a temporary in `partials/`, given its time, and its
//! manifest staged beside the others, none of them flushed. Then the whole batch is made
//! durable with one `syncfs`, every file is renamed into place (its manifest first), and
//! a second `syncfs` makes the renames durable, which also covers each directory the
//! batch touched once. Only then are the files reported committed. A crash at any point
//! leaves each file either absent or complete: the temporaries are never listed (and are
//! removed with the other strays after `storage.partial_ttl_secs`), and no name appears
//! before its data is on the disk. One `syncfs` for many files costs about what one
//! file's two fsyncs did (measured in bench/RESULTS.md, "Many small files").

use std::collections::HashSet;
use std::os::fd::AsFd as _;
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cap_std::fs::Metadata;
use tracing::{info, warn};
use xfer_proto::Digest;

use super::Local;
use super::manifest::{self, Manifest, Stamp};
use super::namespace;
use super::partial::remove_partial;
use super::space::{self, Destination, UserSpace};
use crate::storage::{
    CHUNK_SIZE, Committed, PathError, PutFileDone, RelPath, StorageError, WholeFile, WholeRead,
    io_err,
};

/// Names temporaries uniquely within the daemon (two connections may put the same path).
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// A file written to its temporary, waiting for the batch's `syncfs`.
struct Staged {
    /// Position in the batch, for the answer.
    index: usize,
    path: RelPath,
    key: String,
    tmp: String,
    manifest_tmp: Option<String>,
    stamp: Stamp,
    size: u64,
    digest: Digest,
    /// Inode of the file this one replaces, and its size.
    replaces: Option<(u64, u64)>,
}

/// What admission decided for one file.
enum Admitted {
    /// Answered without writing (the same content is there already).
    Answered(PutFileDone),
    Staged(Staged),
}

impl Local {
    /// Admits, writes and commits `files` as one batch; one answer per file, in order.
    pub(super) fn put_files(
        &self,
        user: &str,
        space: &UserSpace,
        files: Vec<WholeFile>,
    ) -> Vec<Result<PutFileDone, StorageError>> {
        let mut answers: Vec<Option<Result<PutFileDone, StorageError>>> =
            (0..files.len()).map(|_| None).collect();
        let lock = space.lock_mutations();
        let now = crate::now_unix();
        space.clean_ghosts();
        let mut batch = Batch {
            staged: Vec::new(),
            added: 0,
            free: None,
            parents: HashSet::new(),
        };
        for (index, file) in files.into_iter().enumerate() {
            // The same destination twice: the first is committed before the second is
            // judged, as if they had come in two batches.
            if batch.staged.iter().any(|s| s.path == file.path) {
                for (i, result) in self.commit_batch(user, space, std::mem::take(&mut batch.staged))
                {
                    answers[i] = Some(result);
                }
                batch.added = 0;
            }
            match self.admit_whole((user, space, &lock), &mut batch, index, file, now) {
                Ok(Admitted::Answered(done)) => answers[index] = Some(Ok(done)),
                Ok(Admitted::Staged(s)) => batch.staged.push(s),
                Err(e) => answers[index] = Some(Err(e)),
            }
        }
        for (index, result) in self.commit_batch(user, space, batch.staged) {
            answers[index] = Some(result);
        }
        answers
            .into_iter()
            .map(|a| a.expect("every file of the batch is answered"))
            .collect()
    }

    /// Checks one file as `PutBegin` would, then writes it to a temporary (unflushed).
    fn admit_whole(
        &self,
        (user, space, lock): (&str, &UserSpace, &MutexGuard<'_, ()>),
        batch: &mut Batch,
        index: usize,
        file: WholeFile,
        now: u64,
    ) -> Result<Admitted, StorageError> {
        let WholeFile {
            path,
            force,
            modified_unix,
            digest,
            data,
        } = file;
        let settings = self.settings();
        if path.is_home() {
            return Err(PathError::Home.into());
        }
        let size = data.len() as u64;
        let max = settings.config.max_file_bytes;
        if max > 0 && size > max {
            return Err(StorageError::TooLarge { size, max });
        }
        if size > CHUNK_SIZE {
            return Err(StorageError::BadRequest(format!(
                "a whole file in one request is at most {CHUNK_SIZE} bytes; use PutBegin"
            )));
        }
        let whole = whole_digest(&data)?;
        if whole != digest {
            return Err(StorageError::ChecksumMismatch(format!(
                "the data is not what its digest says: the server computed {whole}, the client announced {digest}"
            )));
        }
        let replaces = match space.destination(&path, force, false)? {
            Destination::Free => None,
            Destination::Replaces(m) => {
                Some((Stamp::of(&m).ino, if m.is_file() { m.len() } else { 0 }))
            }
            Destination::Taken(m) => {
                let existing = super::existing_digest(space, &path)?;
                if m.len() == size
                    && existing == digest
                    && let Some(t) = modified_unix
                {
                    namespace::set_modified_locked(space, &path, t)?;
                }
                return Ok(Admitted::Answered(PutFileDone::Exists {
                    size: m.len(),
                    digest: Some(existing),
                }));
            }
        };
        settings.policy.check(&path, &data)?;
        let replaced = replaces.map_or(0, |(_, s)| s);
        if settings.config.quota_bytes > 0 {
            let used = space.with_index(lock, |ix| ix.used_bytes(now, None));
            let used = (used + batch.added).saturating_sub(replaced);
            let limit = settings.config.quota_bytes;
            if used.saturating_add(size) > limit {
                return Err(StorageError::QuotaExceeded { used, limit, size });
            }
        }
        let free = match batch.free {
            Some(f) => f,
            None => *batch.free.insert(space::free_bytes(&self.data_dir)?),
        };
        // Admitted against what the batch already wrote; given back once written.
        drop(
            self.reserve
                .admit(size, free, settings.config.min_free_bytes)
                .inspect_err(|_| warn!(user, path = ?path, size, free, "upload refused: not enough free space"))?,
        );
        batch.free = Some(free.saturating_sub(size));
        let parent = path.parent().unwrap_or_else(RelPath::home);
        if !parent.is_home() && batch.parents.insert(parent.as_str().to_owned()) {
            super::private::create_dir(&space.home, parent.as_path(), true)
                .map_err(io_err("creating directories"))?;
        }
        let staged = stage(space, index, path, &data, whole, modified_unix, replaces)?;
        batch.added += size;
        Ok(Admitted::Staged(staged))
    }

    /// Makes the staged files durable, renames them into place and makes the renames
    /// durable; answers each by its position in the batch.
    fn commit_batch(
        &self,
        user: &str,
        space: &UserSpace,
        staged: Vec<Staged>,
    ) -> Vec<(usize, Result<PutFileDone, StorageError>)> {
        if staged.is_empty() {
            return Vec::new();
        }
        // Durability point 1: every temporary's data and manifest.
        if let Err(e) = sync_fs(space) {
            warn!(user, error = %e, files = staged.len(), "syncing a batch of small files failed");
            for s in &staged {
                discard(space, s);
            }
            return staged
                .into_iter()
                .map(|s| (s.index, Err(copy_error(&e))))
                .collect();
        }
        let mut answers = Vec::with_capacity(staged.len());
        let mut placed = Vec::with_capacity(staged.len());
        for s in staged {
            match place(self, user, space, &s) {
                Ok(()) => placed.push(s),
                Err(e) => {
                    discard(space, &s);
                    answers.push((s.index, Err(e)));
                }
            }
        }
        // Durability point 2: the renames, so each directory the batch touched, once.
        let synced = if placed.is_empty() {
            Ok(())
        } else {
            sync_fs(space)
        };
        for s in placed {
            let answer = match &synced {
                Ok(()) => Ok(PutFileDone::Committed(Committed {
                    size: s.size,
                    digest: s.digest,
                })),
                Err(e) => Err(copy_error(e)),
            };
            answers.push((s.index, answer));
        }
        answers
    }

    /// Reads a whole file of at most one chunk, with its digest and time. A file of
    /// [`POOLED_WHOLE_MIN`] bytes or more is read into a recycled buffer: a fresh one per
    /// file (an `mmap` of its own under xferd's allocator settings) was faulted in page
    /// by page and unmapped again, a tenth of xferd's CPU when 200 files of 1 MiB were
    /// pulled (bench/RESULTS.md).
    pub(super) fn read_whole(
        &self,
        space: &UserSpace,
        path: &RelPath,
    ) -> Result<WholeRead, StorageError> {
        if path.is_home() {
            return Err(StorageError::BadRequest("the home is a directory".into()));
        }
        let (file, meta) = space.open_file(path)?;
        if !meta.is_file() {
            return Err(StorageError::BadRequest(format!(
                "`{path}` is a directory, not a file"
            )));
        }
        if meta.len() > CHUNK_SIZE {
            return Err(StorageError::TooLarge {
                size: meta.len(),
                max: CHUNK_SIZE,
            });
        }
        let stamp = Stamp::of(&meta);
        let changed = || StorageError::Conflict("the file changed while being read".into());
        let len = meta.len() as usize;
        let mut data = if len >= POOLED_WHOLE_MIN {
            Whole::Pooled(self.whole_buffers.take(len))
        } else {
            Whole::Plain(vec![0u8; len])
        };
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, 0).map_err(|_| changed())?;
        let digest = if manifest::is_stored_for(stamp.size) {
            Manifest::load_or_compute(&space.manifests, &file, stamp)?.digest
        } else {
            // Small: its tag, or the digest of the bytes just read if they are still the
            // file's.
            match Manifest::read_tag(&file, stamp) {
                Some(m) => m.digest,
                None => {
                    let now = Stamp::of(
                        &Metadata::from_file(&file).map_err(io_err("reading file metadata"))?,
                    );
                    if now != stamp {
                        return Err(changed());
                    }
                    whole_digest(&data)?
                }
            }
        };
        let data = match data {
            Whole::Pooled(buf) => self.whole_buffers.bytes(buf),
            Whole::Plain(vec) => Bytes::from(vec),
        };
        Ok(WholeRead {
            digest,
            modified_unix: stamp.modified_unix(),
            data,
        })
    }
}

/// Files at least this big are read into recycled buffers; smaller ones into their own
/// (a recycled buffer keeps its 1 MiB when shrunk, which many small files in flight
/// would each hold).
const POOLED_WHOLE_MIN: usize = 64 * 1024;

/// Spare buffers of whole files kept for reuse by the whole daemon.
pub(super) const KEEP_WHOLE_BUFFERS: usize = 16;

/// The buffer a whole file is read into.
enum Whole {
    Pooled(xfer_proto::ChunkBuf),
    Plain(Vec<u8>),
}

impl std::ops::Deref for Whole {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Whole::Pooled(buf) => buf,
            Whole::Plain(vec) => vec,
        }
    }
}

impl std::ops::DerefMut for Whole {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Whole::Pooled(buf) => buf,
            Whole::Plain(vec) => vec,
        }
    }
}

/// What a batch has admitted so far.
struct Batch {
    staged: Vec<Staged>,
    /// Bytes the staged files add to the user's usage.
    added: u64,
    /// Free space left on the filesystem, taken once per batch.
    free: Option<u64>,
    /// Parent directories already created in this batch.
    parents: HashSet<String>,
}

/// BLAKE3 of a whole file of at most one chunk, from its chunk digest as the protocol
/// defines it.
fn whole_digest(data: &[u8]) -> Result<Digest, StorageError> {
    let size = data.len() as u64;
    if size == 0 {
        return Ok(Digest::of_chunks(&[]));
    }
    let chunk = Digest::of_chunk(data, 0, size)
        .ok_or_else(|| StorageError::BadRequest("the file cannot be hashed as one chunk".into()))?;
    Ok(Digest::of_chunks(&[chunk]))
}

/// Writes the temporary (mode 0600), gives it its time, and stages its manifest.
fn stage(
    space: &UserSpace,
    index: usize,
    path: RelPath,
    data: &[u8],
    digest: Digest,
    modified_unix: Option<u64>,
    replaces: Option<(u64, u64)>,
) -> Result<Staged, StorageError> {
    let key = path.key();
    let tmp = format!("{key}.w{}.tmp", NEXT_TMP.fetch_add(1, Ordering::Relaxed));
    let written = super::private::write_unsynced(&space.partials, &tmp, data)
        .map_err(io_err("writing upload data"));
    let file = match written {
        Ok(f) => f,
        Err(e) => {
            let _ = space.partials.remove_file(&tmp);
            return Err(e);
        }
    };
    let prepared = (|| {
        if let Some(t) = modified_unix {
            let time = i64::try_from(t)
                .ok()
                .and_then(|_| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(t)))
                .ok_or_else(|| {
                    StorageError::BadRequest(format!("modification time {t} is out of range"))
                })?;
            file.set_modified(time)
                .map_err(io_err("setting a modification time"))?;
        }
        let stamp =
            Stamp::of(&Metadata::from_file(&file).map_err(io_err("reading file metadata"))?);
        // One chunk that is the whole file: its digest is the file's (`Digest::of_chunk`),
        // which admission has just computed, so the data is not hashed a second time.
        let chunks = if data.is_empty() {
            Vec::new()
        } else {
            vec![digest]
        };
        let manifest = Manifest { digest, chunks };
        // A manifest is a cache (recomputed when missing): a file without one is fine.
        // A small file's is a tag on the file, made durable with its data.
        let manifest_tmp = if !manifest::is_stored_for(stamp.size) {
            manifest.tag(&file, stamp);
            None
        } else {
            match manifest.stage(&space.manifests, stamp) {
                Ok(t) => Some(t),
                Err(e) => {
                    warn!(error = %e, "staging the manifest of a small file failed");
                    None
                }
            }
        };
        Ok((stamp, manifest_tmp))
    })();
    match prepared {
        Ok((stamp, manifest_tmp)) => Ok(Staged {
            index,
            size: data.len() as u64,
            path,
            key,
            tmp,
            manifest_tmp,
            stamp,
            digest,
            replaces,
        }),
        Err(e) => {
            let _ = space.partials.remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renames one durable temporary into place (its manifest first, so a listing never
/// sees the name without its digest), and brings the index and any partial of the same
/// destination up to date.
fn place(local: &Local, user: &str, space: &UserSpace, s: &Staged) -> Result<(), StorageError> {
    if let Some(tmp) = &s.manifest_tmp
        && let Err(e) = Manifest::publish(&space.manifests, tmp, s.stamp)
    {
        warn!(error = %e, "storing the manifest of a small file failed");
    }
    if let Err(e) = space.partials.rename(&s.tmp, &space.home, s.path.as_path()) {
        Manifest::remove(&space.manifests, s.stamp.ino);
        return Err(StorageError::io("moving the upload into place", e));
    }
    let replaced = s.replaces.map_or(0, |(_, size)| size);
    space.update_index(|ix| ix.committed_changed(s.size, replaced));
    if let Some((ino, _)) = s.replaces.filter(|&(ino, _)| ino != s.stamp.ino) {
        Manifest::remove(&space.manifests, ino);
    }
    // An interrupted upload to this name is moot now that the whole file is here.
    if let Some(live) = local.live.get(user, &s.key) {
        live.supersede();
    }
    if space.partial_state(&s.key).is_some() {
        match remove_partial(&space.partials, &s.key) {
            Ok(()) => {
                info!(user, path = ?s.path, "removed an unfinished upload replaced by a whole file");
                space.set_unsaved(&s.key, None);
                space.update_index(|ix| {
                    ix.partials.remove(&s.key);
                });
            }
            Err(e) => warn!(user, error = %e, "removing an unfinished upload failed"),
        }
    }
    Ok(())
}

/// Removes a staged file's temporaries (best effort: strays are swept later).
fn discard(space: &UserSpace, s: &Staged) {
    let _ = space.partials.remove_file(&s.tmp);
    if let Some(tmp) = &s.manifest_tmp {
        let _ = space.manifests.remove_file(tmp);
    }
}

/// One `syncfs` of the filesystem holding the user's space: every file, manifest and
/// directory entry the batch wrote reaches the disk.
fn sync_fs(space: &UserSpace) -> Result<(), StorageError> {
    // cap-std holds directories O_PATH, which syncfs refuses: open one for reading.
    let dir = space
        .partials
        .open(".")
        .map_err(io_err("syncing a batch of files"))?;
    nix::unistd::syncfs(dir.as_fd())
        .map_err(|e| StorageError::io("syncing a batch of files", std::io::Error::from(e)))
}

/// The batch's one failure, for each file it fails.
fn copy_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::Io { context, source } => StorageError::Io {
            context,
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => StorageError::BadRequest(other.to_string()),
    }
}
