//! Resumable uploads into a partial (`partial.rs`), and the registry of those open on
//! some connection.
//!
//! A chunk's digest is checked before it is written. The meta is saved every
//! [`SAVE_EVERY_CHUNKS`] chunks (at most every [`SAVE_MIN_INTERVAL`], at least every
//! [`SAVE_MAX_INTERVAL`] while chunks arrive) and when the transfer closes; losing the
//! last few entries to a crash only costs re-sending those chunks. Listings show the
//! saved state, so what `ls` reports as received survives a crash of the daemon.
//! On resume the recorded chunks are trusted as they are when the data is exactly as a
//! closing connection synced and sealed it (`seal.rs`); otherwise each is read back and
//! re-hashed before the resume is answered, and damaged ones are dropped from the held
//! set and asked for again. Chunk digests are BLAKE3 subtree
//! chaining values ([`Digest::of_chunk`]), so the whole-file digest is derived from the
//! verified chunk digests at commit ([`Digest::of_chunks`]) without reading or hashing
//! the data again; it is compared with the client's, the data is fsynced, renamed into
//! place beneath the home and the directory fsynced. The state is removed last: state
//! a crash left without its data is recognised and removed by [`PartialMeta::load`].
//!
//! [`LocalUpload`] does the blocking work (its commit in `commit.rs`); [`UploadHandle`]
//! is the [`Upload`] that sessions hold, running it in blocking tasks; `live.rs` keeps
//! the registry of open ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use cap_std::fs::{OpenOptions, OpenOptionsExt};
use tracing::{debug, info, warn};
use xfer_disk::Writer;
use xfer_proto::Digest;

use super::blocking::blocking;
use super::index::PartialInfo;
use super::manifest::DIGEST_SCHEME;
use super::partial::{PartialMeta, part_name, remove_partial};
use super::reserve::Reservation;
use super::seal::{self, Seal};
use super::space::UserSpace;
use crate::storage::{
    CHUNK_SIZE, Committed, RelPath, Settings, StorageError, TypePolicy, Upload, chunk_count,
    chunk_len, io_err,
};

mod commit;
mod live;

pub(crate) use live::LiveUploads;

/// Save the resume state after this many new chunks...
pub const SAVE_EVERY_CHUNKS: u32 = 16;
/// ...but not more often than this (keeps large manifests from being rewritten constantly).
pub const SAVE_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// A slow upload still saves at least this often, so listings (which show the saved,
/// crash-proof state) keep moving.
pub const SAVE_MAX_INTERVAL: Duration = Duration::from_secs(1);

struct Inner {
    file: std::fs::File,
    /// Verified chunks by index: grows with what arrived, never with the declared size
    /// (a peer may declare terabytes and send nothing).
    held: BTreeMap<u64, Digest>,
    unsaved: u32,
    last_saved: Instant,
    finished: bool,
    /// Free space promised to the bytes not written yet (`reserve.rs`); dropped (given
    /// back) at commit, takeover, or when the last handle goes.
    reservation: Option<Reservation>,
    /// The seal the data still matches: the one it was resumed under, or the one taken
    /// at close; `None` once anything is written.
    sealed: Option<Seal>,
    /// The data's ctime right after this upload last wrote it (or opened it): a seal is
    /// only taken if it is unchanged, i.e. nobody else wrote since.
    own_ctime: Option<(i64, i64)>,
    /// How the data reaches the disk: past the page cache for a big file where the
    /// filesystem allows it, otherwise flushed as it arrives (crate xfer-disk).
    writer: Writer,
}

/// An upload in progress on the local filesystem.
pub(crate) struct LocalUpload {
    space: Arc<UserSpace>,
    dest: RelPath,
    key: String,
    size: u64,
    force: bool,
    ttl_secs: u64,
    created_unix: u64,
    resumed_from: u64,
    policy: Arc<TypePolicy>,
    /// Set when another connection took this upload over (or it was removed); its
    /// writes are refused.
    superseded: AtomicBool,
    /// Set (with `superseded`) when its destination directory was moved.
    moved: AtomicBool,
    inner: Mutex<Inner>,
}

impl LocalUpload {
    /// Opens (creating or resuming) the partial for `dest`, re-verifying every chunk an
    /// earlier attempt recorded unless the data is exactly as sealed (`seal.rs`). A
    /// partial of another size is discarded.
    pub fn open(
        space: Arc<UserSpace>,
        dest: RelPath,
        size: u64,
        force: bool,
        settings: &Settings,
        now_unix: u64,
    ) -> Result<LocalUpload, StorageError> {
        let (ttl_secs, policy) = (settings.config.partial_ttl_secs, settings.policy.clone());
        let key = dest.key();
        let n = chunk_count(size);
        let mut meta = space.partial_state(&key);
        if meta.as_ref().is_some_and(|m| {
            m.size != size
                || m.chunk_size != CHUNK_SIZE
                || m.path != dest.as_str()
                || m.digests != DIGEST_SCHEME
        }) {
            debug!(path = ?dest, "discarding a partial upload of another size or format");
            remove_partial(&space.partials, &key)?;
            meta = None;
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).mode(0o600);
        let file = space
            .partials
            .open_with(part_name(&key), &options)
            .map_err(io_err("opening upload data"))?
            .into_std();
        // Before anything below could touch the file.
        let sealed = meta
            .as_ref()
            .and_then(|m| m.sealed)
            .filter(|s| Seal::of(&file).is_ok_and(|now| now == *s));
        if meta.is_none() {
            file.set_len(0).map_err(io_err("preparing upload data"))?;
        }
        if file
            .metadata()
            .map_err(io_err("preparing upload data"))?
            .len()
            != size
        {
            file.set_len(size)
                .map_err(io_err("preparing upload data"))?;
        }
        let own_ctime = seal::ctime_of(&file);
        let writer = upload_writer(&file, size, settings.config.direct_io);
        let recorded = meta
            .as_ref()
            .map(|m| recorded_chunks(m, n))
            .unwrap_or_default();
        let held: BTreeMap<u64, Digest> = recorded.iter().copied().collect();
        let (sealed, held) = match sealed {
            // Exactly as synced and sealed: what was verified on arrival is still there.
            Some(s) => {
                debug!(path = ?dest, chunks = held.len(), "resuming a sealed partial upload");
                (Some(s), held)
            }
            None => {
                if !recorded.is_empty() {
                    info!(path = ?dest, chunks = recorded.len(), "resuming a partial upload that was not sealed: reading back the chunks it holds");
                }
                let damaged = seal::verify(&file, size, &recorded);
                if !damaged.is_empty() {
                    warn!(path = ?dest, dropped = damaged.len(), "partial upload held damaged chunks; they will be sent again");
                }
                let mut held = held;
                for (i, _) in damaged {
                    held.remove(&i);
                }
                (None, held)
            }
        };
        let resumed_from = held.keys().map(|&i| chunk_len(size, i)).sum();
        let upload = LocalUpload {
            created_unix: meta.as_ref().map_or(now_unix, |m| m.created_unix),
            space,
            dest,
            key,
            size,
            force,
            ttl_secs,
            resumed_from,
            policy,
            superseded: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                file,
                held,
                unsaved: 0,
                last_saved: Instant::now(),
                finished: false,
                reservation: None,
                sealed,
                own_ctime,
                writer,
            }),
        };
        // Saved at once: the partial now counts against the quota and shows in listings.
        upload.save(&upload.lock())?;
        Ok(upload)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Attaches the free space admission promised to the bytes still to be written.
    pub fn with_reservation(self, reservation: Reservation) -> LocalUpload {
        self.lock().reservation = Some(reservation);
        self
    }

    /// Entries allocated for the held-chunk index (tests: it grows with what arrived).
    #[cfg(test)]
    pub fn held_slots(&self) -> usize {
        self.lock().held.len()
    }

    /// Stops this handle because its destination directory moved (see [`Self::supersede`]).
    pub fn stop_moved(&self) {
        self.moved.store(true, Ordering::SeqCst);
        self.supersede();
    }

    /// Stops this handle: later writes and commits are refused, the state is saved.
    pub fn supersede(&self) {
        self.stop(false);
    }

    /// Stops this handle for another connection that takes the upload over: as
    /// [`Self::supersede`], with the state synced and sealed as when its connection
    /// closes ([`Self::persist`]), so the new connection trusts what this one verified
    /// instead of reading it all back. A push re-run at once after an interrupted one
    /// gets here when the daemon has not seen the old connection go (a network cut, a
    /// client stopped rather than killed).
    pub fn hand_over(&self) {
        self.stop(true);
    }

    fn stop(&self, seal: bool) {
        let mut inner = self.lock();
        self.superseded.store(true, Ordering::SeqCst);
        // The connection taking over is admitted with a reservation of its own.
        inner.reservation = None;
        if inner.finished {
            return;
        }
        let saved = if seal {
            self.seal_and_save(&mut inner)
        } else if inner.writer.finish().is_err() {
            self.forget_data(&mut inner);
            Ok(())
        } else {
            self.save(&inner)
        };
        if let Err(e) = saved {
            warn!(error = %e, "saving a superseded upload failed");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the state inconsistent in a way
        // that matters: the seal is dropped before a write and taken again only if the
        // data's ctime is this upload's own, so chunks written then are re-verified on
        // resume.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_live(&self, inner: &Inner) -> Result<(), StorageError> {
        if self.moved.load(Ordering::SeqCst) {
            return Err(StorageError::Conflict(
                "the directory this upload goes into was moved; push again to its new place to resume"
                    .into(),
            ));
        }
        if self.superseded.load(Ordering::SeqCst) {
            return Err(StorageError::Busy(
                "this upload was resumed from another connection".into(),
            ));
        }
        if inner.finished {
            return Err(StorageError::BadRequest(
                "this upload is already committed".into(),
            ));
        }
        Ok(())
    }

    fn save(&self, inner: &Inner) -> Result<(), StorageError> {
        let meta = PartialMeta {
            digests: DIGEST_SCHEME,
            path: self.dest.as_str().to_owned(),
            size: self.size,
            chunk_size: CHUNK_SIZE,
            created_unix: self.created_unix,
            expires_unix: crate::now_unix().saturating_add(self.ttl_secs),
            chunks: inner
                .held
                .iter()
                .map(|(&i, d)| (i, d.to_string()))
                .collect(),
            sealed: inner.sealed,
        };
        // A failed save (a full disk) keeps the previous `.meta` valid, and the state
        // in memory until a save succeeds: verified chunks are never forgotten.
        match meta.store(&self.space.partials, &self.key) {
            Ok(()) => {
                self.space.set_unsaved(&self.key, None);
                let info = PartialInfo::from(&meta);
                self.space.update_index(|ix| {
                    ix.partials.insert(self.key.clone(), info);
                });
                Ok(())
            }
            Err(e) => {
                self.space.set_unsaved(&self.key, Some(meta));
                Err(e)
            }
        }
    }
}

/// The blocking work of an upload; [`UploadHandle`] runs it off the async threads.
impl LocalUpload {
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    pub fn chunks_held(&self) -> u64 {
        self.lock().held.len() as u64
    }

    pub fn held_digests(&self, first: u64, count: u64) -> Vec<Option<Digest>> {
        let inner = self.lock();
        let n = chunk_count(self.size);
        let (start, end) = (first.min(n), first.saturating_add(count).min(n));
        (start..end).map(|i| inner.held.get(&i).copied()).collect()
    }

    pub fn write_chunk(
        &self,
        offset: u64,
        digest: &Digest,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let n = chunk_count(self.size);
        if !offset.is_multiple_of(CHUNK_SIZE) || offset / CHUNK_SIZE >= n {
            return Err(StorageError::BadRequest(format!(
                "chunk offset {offset} is not a chunk boundary inside the file"
            )));
        }
        let index = offset / CHUNK_SIZE;
        let expected = chunk_len(self.size, index);
        if data.len() as u64 != expected {
            return Err(StorageError::BadRequest(format!(
                "chunk at offset {offset} has {} bytes, expected {expected}",
                data.len()
            )));
        }
        // The expensive part runs without the lock.
        if Digest::of_chunk(data, offset, self.size) != Some(*digest) {
            return Err(StorageError::ChecksumMismatch(format!(
                "chunk at offset {offset} does not match its digest; it was discarded"
            )));
        }
        if index == 0 {
            self.policy.check(&self.dest, data)?;
        }
        let mut inner = self.lock();
        self.check_live(&inner)?;
        if inner.writer.failed() {
            // Nothing written so far is trusted; the client sends it all again.
            let e = inner.writer.finish().err();
            self.forget_data(&mut inner);
            let e = e.unwrap_or_else(|| std::io::Error::other("a flush failed"));
            return Err(StorageError::io(DATA_LOST, e));
        }
        if let Some(seal) = inner.sealed.take() {
            // Before the data can differ from the seal, the saved state stops claiming
            // it: a power cut can keep a write yet lose the file times it changed, and a
            // seal that still matched would then vouch for the new bytes. Once per
            // resumed upload; no write until it is done.
            let unsealed = self.save(&inner).and_then(|()| {
                self.space
                    .partials
                    .open(".")
                    .and_then(|d| d.sync_all())
                    .map_err(io_err("saving upload state"))
            });
            if let Err(e) = unsealed {
                inner.sealed = Some(seal);
                return Err(e);
            }
        }
        let inner = &mut *inner;
        inner
            .writer
            .write_at(&inner.file, data, offset)
            .map_err(io_err("writing upload data"))?;
        inner.own_ctime = seal::ctime_of(&inner.file);
        if inner.held.insert(index, *digest).is_none()
            && let Some(r) = inner.reservation.as_mut()
        {
            r.consume(expected);
        }
        inner.unsaved += 1;
        let since = inner.last_saved.elapsed();
        if (inner.unsaved >= SAVE_EVERY_CHUNKS && since >= SAVE_MIN_INTERVAL)
            || since >= SAVE_MAX_INTERVAL
        {
            match self.save(inner) {
                Ok(()) => {
                    inner.unsaved = 0;
                    inner.last_saved = Instant::now();
                }
                Err(e) => warn!(error = %e, "saving upload state failed; will retry"),
            }
        }
        Ok(())
    }

    /// Saves the state as the connection closes the upload: with a seal (after syncing
    /// the data) when nothing else wrote it, so a resume can answer at once.
    pub fn persist(&self) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if inner.finished || self.superseded.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.seal_and_save(&mut inner)
    }

    /// Waits for the data's flushes, then syncs and seals it (unless sealed already or
    /// written by someone else) and saves the state if anything changed.
    fn seal_and_save(&self, inner: &mut Inner) -> Result<(), StorageError> {
        if inner.writer.finish().is_err() {
            self.forget_data(inner);
            return Ok(());
        }
        let resealed = if inner.sealed.is_none() {
            match take_seal(inner) {
                Ok(seal) => inner.sealed = seal,
                // Unsynced data is never sealed, nor trusted.
                Err(_) => {
                    self.forget_data(inner);
                    return Ok(());
                }
            }
            inner.sealed.is_some()
        } else {
            false
        };
        if inner.unsaved == 0 && !resealed {
            return Ok(());
        }
        self.save(inner)?;
        inner.unsaved = 0;
        inner.last_saved = Instant::now();
        Ok(())
    }
}

impl LocalUpload {
    /// A flush of the data failed: the disk may not hold what was written, though the
    /// pages may still read back intact from memory, and a later descriptor's fsync
    /// would not report it. Nothing received so far is trusted any more: the held
    /// chunks are forgotten (and the state saved so), to be sent again.
    fn forget_data(&self, inner: &mut Inner) {
        warn!(path = ?self.dest, chunks = inner.held.len(), "a flush of upload data failed; its chunks will be sent again");
        inner.held.clear();
        inner.sealed = None;
        inner.unsaved = 0;
        if let Err(e) = self.save(inner) {
            warn!(error = %e, "saving the state of an upload whose data was lost failed");
        }
    }
}

/// The writer of one upload's file: a flush that fails is logged, and the commit meets
/// the error again.
fn upload_writer(file: &std::fs::File, size: u64, direct: bool) -> Writer {
    Writer::new(file, size, direct, "xferd-writeback", |e| {
        warn!(error = %e, "flushing upload data failed; the commit will report it");
    })
}

/// The chunks `meta` records for a file of `n` chunks, in order, each once.
fn recorded_chunks(meta: &PartialMeta, n: u64) -> Vec<(u64, Digest)> {
    let mut recorded: Vec<(u64, Digest)> = meta
        .chunks
        .iter()
        .filter_map(|(i, hex)| Some((*i, hex.parse().ok()?)))
        .filter(|(i, _)| *i < n)
        .collect();
    recorded.sort_by_key(|(i, _)| *i);
    recorded.dedup_by_key(|(i, _)| *i);
    recorded
}

/// Syncs the data and seals it, if nothing but this upload wrote it since its last
/// write; `None` otherwise. An error when the sync fails: what was written may not be
/// on the disk.
fn take_seal(inner: &Inner) -> std::io::Result<Option<Seal>> {
    let Some(own) = inner.own_ctime else {
        return Ok(None);
    };
    inner.file.sync_data()?;
    Ok(Seal::of(&inner.file).ok().filter(|s| s.ctime_is(own)))
}

/// What a client hears when the disk lost some of an upload's data.
pub(super) const DATA_LOST: &str =
    "syncing upload data (the disk lost some; every chunk will be sent again)";

/// An open [`LocalUpload`] as sessions hold it.
pub(crate) struct UploadHandle(pub Arc<LocalUpload>);

#[async_trait]
impl Upload for UploadHandle {
    fn size(&self) -> u64 {
        self.0.size
    }

    fn resumed_from(&self) -> u64 {
        self.0.resumed_from()
    }

    fn chunks_held(&self) -> u64 {
        self.0.chunks_held()
    }

    fn held_digests(&self, first: u64, count: u64) -> Vec<Option<Digest>> {
        self.0.held_digests(first, count)
    }

    fn concurrent_writes(&self) -> bool {
        // Hashing runs outside the lock; the write and the bookkeeping under it.
        true
    }

    async fn write_chunk(
        &self,
        offset: u64,
        digest: Digest,
        data: Bytes,
    ) -> Result<(), StorageError> {
        let upload = self.0.clone();
        blocking("writing upload data", move || {
            upload.write_chunk(offset, &digest, &data)
        })
        .await
    }

    async fn persist(&self) -> Result<(), StorageError> {
        let upload = self.0.clone();
        blocking("saving upload state", move || upload.persist()).await
    }

    async fn commit(&self, digest: Digest) -> Result<Committed, StorageError> {
        let upload = self.0.clone();
        blocking("committing an upload", move || upload.commit(&digest)).await
    }
}
