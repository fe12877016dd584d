//! Resumable verified uploads on S3 multipart uploads.
//!
//! Chunks (1 MiB) are verified on arrival and gathered into parts of
//! `part_chunks` chunks (8 MiB). A full part is stored with `UploadPart`, and the upload's
//! record (`partials/<path>`: multipart id, digests of the chunks in stored parts, part
//! ETags) is written again, so any node can resume from it. Only chunks in stored parts
//! count as held: a part still gathering when a node dies is sent again, at most one
//! part per upload. What one upload gathers in memory is bounded by
//! [`GATHER_BYTES`] (at least one part), whatever the peer sends; uploads are at most
//! [`MAX_OBJECT`] bytes, S3's own limit.
//!
//! The commit needs no re-read: the chunk digests are BLAKE3 chaining values, so they
//! give the whole-file digest ([`Digest::of_chunks`]), which must equal the client's;
//! then `CompleteMultipartUpload` makes the object appear whole at its final key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tracing::{info, warn};
use xfer_proto::Digest;

use super::client::{delete, get_record, os_err, put_record};
use super::keys::{self, Area};
use super::records::{FileManifest, PartialRecord, part_chunks_for};
use super::{Dest, Shared, best_effort, load_partial, partials_in_bucket};
use crate::storage::{
    CHUNK_SIZE, Committed, PathError, PutBegun, PutRequest, RelPath, StorageError, Upload,
    chunk_count, chunk_len,
};

/// Bytes one upload may be gathering at once (at least one part): chunks for a further
/// part are refused (clients send in order, so they never meet it).
pub(super) const GATHER_BYTES: u64 = 32 << 20;

/// Bytes of full parts one upload may have in flight to the store at once (at least
/// one part): stores overlap with receiving the next part's chunks, instead of holding
/// the connection for each part's round trip.
pub(super) const IN_FLIGHT_BYTES: u64 = 32 << 20;

/// The largest object S3 stores (5 TiB): a larger upload is refused at once, before
/// anything is allocated for it.
pub(super) const MAX_OBJECT: u64 = 5 << 40;

/// An open upload.
pub(super) struct S3Upload {
    shared: Arc<Shared>,
    user: String,
    pub path: RelPath,
    size: u64,
    force: bool,
    part_chunks: u64,
    upload_id: String,
    created_unix: u64,
    resumed_from: u64,
    policy: Arc<crate::storage::TypePolicy>,
    /// Set when another connection (or node) took the upload over, or it ended.
    superseded: AtomicBool,
    /// Set when the upload was removed or committed: its record is never written again.
    retired: AtomicBool,
    state: Mutex<State>,
    /// Serializes record writes, so an older state never overwrites a newer one.
    persist_lock: tokio::sync::Mutex<()>,
    /// Permits for part stores in flight (see [`IN_FLIGHT_BYTES`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// How many permits `in_flight` has in all.
    in_flight_max: u32,
    /// This upload, for the tasks that store its parts.
    me: Weak<S3Upload>,
}

struct State {
    /// Verified chunk digests; those in stored parts are held.
    digests: Vec<Option<Digest>>,
    /// ETags of stored parts.
    parts: Vec<Option<String>>,
    /// Parts being gathered: their chunks so far (kept until the part is stored, so a
    /// failed or cancelled store loses nothing the client was told was accepted).
    gathering: HashMap<u64, Vec<Option<Bytes>>>,
    /// Parts whose store is in flight.
    storing: std::collections::HashSet<u64>,
    /// Why a part store in the background failed, for the next chunk or the commit to
    /// report (the part stays gathered: a resend of its chunks stores it again).
    failed: Option<StorageError>,
    /// The record in the bucket is behind.
    dirty: bool,
    finished: bool,
}

impl State {
    fn held(&self, part_chunks: u64, index: u64) -> bool {
        self.parts[(index / part_chunks) as usize].is_some()
    }
}

/// Admission, then a new upload or the resumption of a recorded one.
pub(super) async fn begin(
    shared: &Arc<Shared>,
    user: &str,
    request: PutRequest,
) -> Result<PutBegun, StorageError> {
    let PutRequest {
        path,
        size,
        force,
        head,
    } = request;
    if path.is_home() {
        return Err(PathError::Home.into());
    }
    shared.check_fits(user, &path)?;
    let settings = shared.settings();
    let max = settings.config.max_file_bytes;
    if max > 0 && size > max {
        return Err(StorageError::TooLarge { size, max });
    }
    if size > MAX_OBJECT {
        return Err(StorageError::TooLarge {
            size,
            max: MAX_OBJECT,
        });
    }
    let _lock = shared.lock_user(user).await;
    let replaced = match shared.destination(user, &path, force).await? {
        Dest::Free => 0,
        Dest::Replaces(n) => n,
        Dest::Taken(meta) => {
            let (_, digest, _) = shared.manifest_of(user, &path, &meta).await?;
            return Ok(PutBegun::Exists {
                size: meta.size,
                digest: Some(digest),
            });
        }
    };
    settings.policy.check(&path, &head)?;
    let usage = shared.usage.get(shared, user).await?;
    let max_partials = settings.config.max_partials_per_user;
    if partials_in_bucket(usage.partials.keys(), path.as_str()) >= max_partials as usize {
        warn!(
            user,
            max_partials, "upload refused: too many unfinished uploads"
        );
        return Err(StorageError::TooManyPartials { max: max_partials });
    }
    let quota = settings.config.quota_bytes;
    if quota > 0 {
        let mut used = usage.used_bytes().saturating_sub(replaced);
        used = used.saturating_sub(usage.partials.get(path.as_str()).copied().unwrap_or(0));
        if used.saturating_add(size) > quota {
            return Err(StorageError::QuotaExceeded {
                used,
                limit: quota,
                size,
            });
        }
    }
    let now = crate::now_unix();
    // This node's open handle is the freshest state; else the record, from any node.
    let live = shared.live_upload(user, path.as_str());
    let resumed = match live {
        Some(old) if old.size == size => {
            info!(user, path = ?path, "upload taken over from another connection");
            old.superseded.store(true, Ordering::SeqCst);
            // Its part stores in flight finish first, so the record holds them and no
            // part is stored by both handles. A failed one is simply not held.
            let _ = old.settle().await;
            old.persist_now().await?;
            load_partial(shared, user, &path).await?
        }
        Some(old) => {
            // Another size: the recorded upload is aborted below, not orphaned.
            old.superseded.store(true, Ordering::SeqCst);
            old.retired.store(true, Ordering::SeqCst);
            load_partial(shared, user, &path).await?
        }
        None => load_partial(shared, user, &path).await?,
    };
    let record = match resumed {
        Some(r) if r.size == size => r,
        other => {
            if let Some(stale) = other {
                // A different file is going there now: the old upload goes.
                abort(shared, user, &path, &stale).await;
            }
            let part_chunks = part_chunks_for(size);
            let location = shared.key(user, Area::Files, &path);
            let upload_id = if size == 0 {
                String::new()
            } else {
                shared
                    .store
                    .create_multipart(&location)
                    .await
                    .map_err(os_err("starting an upload"))?
            };
            let record = PartialRecord {
                v: 1,
                path: path.as_str().to_owned(),
                size,
                upload_id,
                part_chunks,
                created_unix: now,
                touched_unix: now,
                chunks: vec![String::new(); chunk_count(size) as usize],
                parts: vec![String::new(); PartialRecord::part_count(size, part_chunks) as usize],
            };
            // Recorded before any part: an upload nobody finishes is found and aborted.
            put_record(
                &shared.store,
                &shared.key(user, Area::Partials, &path),
                &record,
            )
            .await?;
            record
        }
    };
    shared.usage.set_partial(user, path.as_str(), size);
    let upload = Arc::new_cyclic(|me| {
        S3Upload::from_record(
            shared.clone(),
            user,
            path,
            force,
            &record,
            settings.policy.clone(),
            me.clone(),
        )
    });
    shared.register(user, &upload);
    Ok(PutBegun::Ready(upload))
}

impl S3Upload {
    fn from_record(
        shared: Arc<Shared>,
        user: &str,
        path: RelPath,
        force: bool,
        r: &PartialRecord,
        policy: Arc<crate::storage::TypePolicy>,
        me: Weak<S3Upload>,
    ) -> S3Upload {
        let parts: Vec<Option<String>> = r
            .parts
            .iter()
            .map(|p| (!p.is_empty()).then(|| p.clone()))
            .collect();
        let digests: Vec<Option<Digest>> = r
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let part_stored = parts[i / r.part_chunks as usize].is_some();
                c.parse().ok().filter(|_| part_stored)
            })
            .collect();
        // A part counts only when all its chunks' digests are known.
        let mut state = State {
            digests,
            parts,
            gathering: HashMap::new(),
            storing: std::collections::HashSet::new(),
            failed: None,
            dirty: false,
            finished: false,
        };
        for p in 0..state.parts.len() {
            let first = p * r.part_chunks as usize;
            let last = (first + r.part_chunks as usize).min(state.digests.len());
            if state.digests[first..last].iter().any(Option::is_none) {
                state.parts[p] = None;
                state.digests[first..last].fill(None);
            }
        }
        let resumed_from = (0..state.digests.len() as u64)
            .filter(|&i| state.digests[i as usize].is_some())
            .map(|i| chunk_len(r.size, i))
            .sum();
        let part_bytes = r.part_chunks.max(1) * CHUNK_SIZE;
        let in_flight_max = (IN_FLIGHT_BYTES / part_bytes).clamp(1, 4) as u32;
        S3Upload {
            shared,
            user: user.to_owned(),
            path,
            size: r.size,
            force,
            part_chunks: r.part_chunks,
            upload_id: r.upload_id.clone(),
            created_unix: r.created_unix,
            resumed_from,
            policy,
            superseded: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            state: Mutex::new(state),
            persist_lock: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(in_flight_max as usize)),
            in_flight_max,
            me,
        }
    }

    /// Stores part `part` and then the record, in the background, once a permit is
    /// free (waiting for one holds the connection: the back-pressure); a failure is
    /// kept for the next chunk or the commit to report.
    async fn store_in_background(&self, part: u64, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        /// Ends the part's "storing" mark if the store never starts (no permit, or the
        /// caller cancelled while waiting for one); once started, `store_part` ends it.
        struct NotStarted<'a>(&'a S3Upload, u64, bool);
        impl Drop for NotStarted<'_> {
            fn drop(&mut self) {
                if self.2 {
                    self.0.lock().storing.remove(&self.1);
                }
            }
        }
        let mut mark = NotStarted(self, part, true);
        let (Some(me), Ok(permit)) = (
            self.me.upgrade(),
            self.in_flight.clone().acquire_owned().await,
        ) else {
            return Err(StorageError::Unavailable("storing upload data"));
        };
        mark.2 = false;
        tokio::spawn(async move {
            let stored = match me.store_part(part, chunks).await {
                Ok(()) => me.persist_now().await,
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                me.lock().failed.get_or_insert(e);
            }
            drop(permit);
        });
        Ok(())
    }

    /// Waits until no part store is in flight; then the first failure among them, if
    /// any.
    async fn settle(&self) -> Result<(), StorageError> {
        let all = self
            .in_flight
            .acquire_many(self.in_flight_max)
            .await
            .map_err(|_| StorageError::Unavailable("storing upload data"))?;
        drop(all);
        match self.lock().failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_live(&self, state: &State) -> Result<(), StorageError> {
        if self.superseded.load(Ordering::SeqCst) && !state.finished {
            return Err(StorageError::Busy(
                "this upload was resumed from another connection".into(),
            ));
        }
        if state.finished {
            return Err(StorageError::BadRequest(
                "this upload is already committed".into(),
            ));
        }
        Ok(())
    }

    fn record(&self, state: &State) -> PartialRecord {
        PartialRecord {
            v: 1,
            path: self.path.as_str().to_owned(),
            size: self.size,
            upload_id: self.upload_id.clone(),
            part_chunks: self.part_chunks,
            created_unix: self.created_unix,
            touched_unix: crate::now_unix(),
            chunks: state
                .digests
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Some(d) if state.held(self.part_chunks, i as u64) => d.to_string(),
                    _ => String::new(),
                })
                .collect(),
            parts: state
                .parts
                .iter()
                .map(|p| p.clone().unwrap_or_default())
                .collect(),
        }
    }

    /// Writes the record if it is behind (also for a superseded upload, so that the
    /// connection taking over starts from everything stored).
    async fn persist_now(&self) -> Result<(), StorageError> {
        let _order = self.persist_lock.lock().await;
        let record = {
            let mut state = self.lock();
            if !state.dirty || state.finished || self.retired.load(Ordering::SeqCst) {
                return Ok(());
            }
            state.dirty = false;
            self.record(&state)
        };
        let key = self.shared.key(&self.user, Area::Partials, &self.path);
        let written = put_record(&self.shared.store, &key, &record).await;
        if written.is_err() {
            self.lock().dirty = true;
        }
        written
    }

    /// Stores part `part` from its gathered chunks (which stay gathered until it is
    /// stored: on failure or cancellation the next chunk write for the part retries).
    async fn store_part(&self, part: u64, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        /// Ends the part's "storing" mark however the store ends, even cancelled.
        struct Storing<'a>(&'a S3Upload, u64);
        impl Drop for Storing<'_> {
            fn drop(&mut self) {
                self.0.lock().storing.remove(&self.1);
            }
        }
        let _mark = Storing(self, part);
        let location = self.shared.key(&self.user, Area::Files, &self.path);
        let payload = PutPayload::from_iter(chunks);
        let stored = self
            .shared
            .store
            .put_part(&location, &self.upload_id, part as usize, payload)
            .await
            .map_err(os_err("storing upload data"))?;
        let mut state = self.lock();
        state.parts[part as usize] = Some(stored.content_id);
        state.gathering.remove(&part);
        state.dirty = true;
        Ok(())
    }

    /// Ends this upload for good: aborts the multipart upload and removes its record.
    async fn discard(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.superseded.store(true, Ordering::SeqCst);
        let _order = self.persist_lock.lock().await;
        let record = self.record(&self.lock());
        abort(&self.shared, &self.user, &self.path, &record).await;
    }
}

#[async_trait]
impl Upload for S3Upload {
    fn size(&self) -> u64 {
        self.size
    }

    fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    fn chunks_held(&self) -> u64 {
        let state = self.lock();
        (0..state.digests.len() as u64)
            .filter(|&i| state.digests[i as usize].is_some() && state.held(self.part_chunks, i))
            .count() as u64
    }

    fn held_digests(&self, first: u64, count: u64) -> Vec<Option<Digest>> {
        let state = self.lock();
        let end = first.saturating_add(count).min(state.digests.len() as u64);
        (first.min(end)..end)
            .map(|i| state.digests[i as usize].filter(|_| state.held(self.part_chunks, i)))
            .collect()
    }

    async fn write_chunk(
        &self,
        offset: u64,
        digest: Digest,
        data: Bytes,
    ) -> Result<(), StorageError> {
        let n = chunk_count(self.size);
        if !offset.is_multiple_of(CHUNK_SIZE) || offset / CHUNK_SIZE >= n {
            return Err(StorageError::BadRequest(format!(
                "offset {offset} is not the start of a chunk of this {}-byte file",
                self.size
            )));
        }
        let index = offset / CHUNK_SIZE;
        let want = chunk_len(self.size, index);
        if data.len() as u64 != want {
            return Err(StorageError::BadRequest(format!(
                "chunk {index} must be {want} bytes, not {}",
                data.len()
            )));
        }
        let changed = {
            let mut state = self.lock();
            self.check_live(&state)?;
            if let Some(e) = state.failed.take() {
                return Err(e);
            }
            let part = index / self.part_chunks;
            if state.held(self.part_chunks, index) || state.storing.contains(&part) {
                if state.digests[index as usize] == Some(digest) {
                    return Ok(());
                }
                true
            } else {
                false
            }
        };
        let size = self.size;
        let hashed = data.clone();
        let actual = tokio::task::spawn_blocking(move || Digest::of_chunk(&hashed, offset, size))
            .await
            .map_err(|_| StorageError::Unavailable("verifying a chunk"))?;
        if actual != Some(digest) {
            return Err(StorageError::ChecksumMismatch(format!(
                "chunk {index} does not match its digest"
            )));
        }
        // Only a chunk that is what its digest says can tell the upload changed (a digest
        // of another kind for the same bytes, e.g. a plain BLAKE3 from the web API, is
        // refused above and sent again in the protocol's kind).
        if changed {
            // The local file changed since its stored parts were sent: they cannot be
            // taken back one chunk at a time, so the upload starts over.
            self.discard().await;
            return Err(StorageError::Conflict(format!(
                "chunk {index} differs from what this upload already stored (the file changed since the upload began); the upload was discarded: push again to start over"
            )));
        }
        if index == 0 && self.policy.applies(&self.path) {
            self.policy
                .check(&self.path, &data[..data.len().min(xfer_proto::SNIFF_LEN)])?;
        }
        let part = index / self.part_chunks;
        let full = {
            let mut state = self.lock();
            self.check_live(&state)?;
            if state.held(self.part_chunks, index) || state.storing.contains(&part) {
                // The same chunk again while its part was stored (checked above).
                return match state.digests[index as usize] {
                    Some(d) if d == digest => Ok(()),
                    _ => Err(StorageError::Conflict(format!(
                        "chunk {index} changed while its part was being stored; push again"
                    ))),
                };
            }
            let first = part * self.part_chunks;
            let len = (self.part_chunks).min(n - first) as usize;
            let max_parts = (GATHER_BYTES / (self.part_chunks * CHUNK_SIZE)).max(1) as usize;
            // Parts in flight are bounded apart (IN_FLIGHT_BYTES).
            let gathering = state
                .gathering
                .keys()
                .filter(|p| !state.storing.contains(p))
                .count();
            if !state.gathering.contains_key(&part) && gathering >= max_parts {
                return Err(StorageError::BadRequest(
                    "chunks arrive too far out of order for this server's object store; send them in order".into(),
                ));
            }
            let slots = state
                .gathering
                .entry(part)
                .or_insert_with(|| vec![None; len]);
            slots[(index - first) as usize] = Some(data);
            let full = slots
                .iter()
                .all(Option::is_some)
                .then(|| slots.iter().flatten().cloned().collect::<Vec<_>>());
            state.digests[index as usize] = Some(digest);
            if full.is_some() {
                state.storing.insert(part);
            }
            full
        };
        if let Some(chunks) = full {
            self.store_in_background(part, chunks).await?;
        }
        Ok(())
    }

    async fn persist(&self) -> Result<(), StorageError> {
        // What was stored is recorded even when a store failed; then the failure.
        let settled = self.settle().await;
        self.persist_now().await?;
        settled
    }

    async fn commit(&self, digest: Digest) -> Result<Committed, StorageError> {
        self.settle().await?;
        let shared = &self.shared;
        let _user = shared.lock_user(&self.user).await;
        let (chunks, parts) = {
            let state = self.lock();
            self.check_live(&state)?;
            let n = state.digests.len() as u64;
            let held = (0..n)
                .filter(|&i| state.digests[i as usize].is_some() && state.held(self.part_chunks, i))
                .count() as u64;
            if held < n {
                return Err(StorageError::BadRequest(format!(
                    "upload incomplete: {} of {n} chunks missing",
                    n - held
                )));
            }
            let chunks: Vec<Digest> = state.digests.iter().flatten().copied().collect();
            let parts: Vec<PartId> = state
                .parts
                .iter()
                .flatten()
                .map(|e| PartId {
                    content_id: e.clone(),
                })
                .collect();
            (chunks, parts)
        };
        let whole = Digest::of_chunks(&chunks);
        if whole != digest {
            return Err(StorageError::ChecksumMismatch(format!(
                "whole-file digest mismatch: the server assembled {whole}, the client announced {digest}"
            )));
        }
        let replaced = match shared
            .destination(&self.user, &self.path, self.force)
            .await?
        {
            Dest::Free => 0,
            Dest::Replaces(n) => n,
            Dest::Taken(_) => {
                return Err(StorageError::Conflict(
                    "a file appeared at the destination during the upload; use force to replace it"
                        .into(),
                ));
            }
        };
        let location = shared.key(&self.user, Area::Files, &self.path);
        let put = if self.size == 0 {
            shared
                .store
                .put(&location, PutPayload::default())
                .await
                .map_err(os_err("storing a file"))?
        } else {
            shared
                .store
                .complete_multipart(&location, &self.upload_id, parts)
                .await
                .map_err(os_err("completing an upload"))?
        };
        {
            let mut state = self.lock();
            state.finished = true;
        }
        self.superseded.store(true, Ordering::SeqCst);
        self.retired.store(true, Ordering::SeqCst);
        shared.usage.drop_partial(&self.user, self.path.as_str());
        shared
            .usage
            .add_files(&self.user, self.size as i64 - replaced as i64);
        let manifest = FileManifest::new(
            self.size,
            put.e_tag.unwrap_or_default(),
            &chunks,
            crate::now_unix(),
        );
        // The object is in place: from here failures only cost a recomputation.
        best_effort(
            "writing a manifest",
            put_record(
                &shared.store,
                &shared.key(&self.user, Area::Manifests, &self.path),
                &manifest,
            )
            .await,
        );
        best_effort(
            "removing an upload's record",
            delete(
                &shared.store,
                &shared.key(&self.user, Area::Partials, &self.path),
            )
            .await,
        );
        Ok(Committed {
            size: self.size,
            digest: whole,
        })
    }
}

/// Aborts a recorded upload and removes its record.
pub(super) async fn abort(shared: &Shared, user: &str, path: &RelPath, record: &PartialRecord) {
    if !record.upload_id.is_empty() {
        let location = shared.key(user, Area::Files, path);
        match shared
            .store
            .abort_multipart(&location, &record.upload_id)
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => warn!(user, error = %e, "aborting a multipart upload failed"),
        }
    }
    best_effort(
        "removing an upload's record",
        delete(&shared.store, &shared.key(user, Area::Partials, path)).await,
    );
    shared.usage.drop_partial(user, path.as_str());
}

/// Stops this node's handle on the upload to `path`, if one is open.
pub(super) fn supersede(shared: &Shared, user: &str, path: &str) {
    if let Some(u) = shared.live_upload(user, path) {
        u.superseded.store(true, Ordering::SeqCst);
        u.retired.store(true, Ordering::SeqCst);
    }
}

/// Aborts every upload untouched for longer than `partial_ttl_secs` and open on no
/// connection of this node; returns how many.
pub(super) async fn expire(shared: &Shared, now: u64) -> Result<usize, StorageError> {
    let ttl = shared.settings().config.partial_ttl_secs;
    let users = shared
        .store
        .list_with_delimiter(Some(&shared.keys.users()))
        .await
        .map_err(os_err("listing users"))?;
    let mut removed = 0;
    for prefix in users.common_prefixes {
        let Some(user) = keys::decode(&prefix) else {
            continue;
        };
        if user.parse::<crate::accounts::UserName>().is_err() {
            continue;
        }
        let base = shared.key(&user, Area::Partials, &RelPath::home());
        let records: Vec<_> = shared
            .store
            .list(Some(&base))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(os_err("listing uploads"))?;
        for meta in records {
            let Some(rel) =
                keys::below(&base, &meta.location).and_then(|p| RelPath::parse(&p).ok())
            else {
                continue;
            };
            // Under the user's lock, as admissions: an upload this node resumes now is
            // either live below, or resumed after the abort (and starts afresh).
            let _lock = shared.lock_user(&user).await;
            if shared.live_upload(&user, rel.as_str()).is_some() {
                continue;
            }
            // Read last: another node resuming it has just touched it.
            let Some(record) = get_record::<PartialRecord>(&shared.store, &meta.location).await?
            else {
                continue;
            };
            if record.touched_unix.saturating_add(ttl) <= now {
                info!(user, path = %rel, "removing an abandoned upload");
                abort(shared, &user, &rel, &record).await;
                removed += 1;
            }
        }
    }
    Ok(removed)
}
