//! Verified, resumable uploads by chunk: `POST /api/uploads` opens (or resumes) an
//! upload through [`crate::storage::Storage::begin_upload`] — the same admission,
//! partial store and resume as `xfer push`/`xfer send` — and keeps it in a registry under
//! a random id, bound to the session that opened it. Chunks arrive in separate requests
//! (several at once), one or a run of them per request (`chunks.rs`), each checked
//! against its digest before it is written; the commit
//! checks the whole file's BLAKE3. An upload idle for [`IDLE_EXPIRY`] is dropped from
//! the registry (its partial stays, resumable, until `storage.partial_ttl_secs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use xfer_proto::{
    Digest, ErrorCode, MANIFEST_PAGE, MessageBody, SNIFF_LEN, Target, UserName, valid_user_name,
};

use super::files::{busy_transfers, conflict, json_body, query};
use super::{ApiError, Authed, WebState};
use crate::admission::TransferSlot;
use crate::audit;
use crate::storage::{self, PutBegun, PutRequest, RelPath, Upload};

/// An open upload with no request for this long leaves the registry.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(600);
/// Resume state is saved at most this often while chunks arrive (and at close).
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// The directory of a user's home that others deliver into (as `xfer send`).
const INBOX: &str = "inbox";
/// The header carrying a chunk's digest.
pub const DIGEST_HEADER: &str = "x-xfer-blake3";

/// One open upload.
pub(super) struct Open {
    session: [u8; 32],
    caller: String,
    /// Whose files it lands in (the caller's, or the recipient's for a send).
    owner: String,
    path: RelPath,
    send_to: Option<String>,
    modified: Option<u64>,
    upload: Arc<dyn Upload>,
    started: Instant,
    received: AtomicU64,
    last_used: Mutex<Instant>,
    last_persist: Mutex<Instant>,
    _slot: TransferSlot,
}

/// Open uploads by id.
#[derive(Default)]
pub struct Registry {
    open: Mutex<HashMap<String, Arc<Open>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Open>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops idle uploads; their partials stay.
    fn sweep(&self) -> Vec<Arc<Open>> {
        let now = Instant::now();
        let mut open = self.lock();
        let idle: Vec<String> = open
            .iter()
            .filter(|(_, o)| now.duration_since(*lock(&o.last_used)) > IDLE_EXPIRY)
            .map(|(id, _)| id.clone())
            .collect();
        idle.iter().filter_map(|id| open.remove(id)).collect()
    }

    pub(super) fn get(&self, id: &str, authed: &Authed) -> Result<Arc<Open>, ApiError> {
        let open = self
            .lock()
            .get(id)
            .filter(|o| o.session == authed.session_key())
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no open upload {id}; POST /api/uploads again to resume"),
                )
            })?;
        *lock(&open.last_used) = Instant::now();
        Ok(open)
    }

    fn remove(&self, id: &str) -> Option<Arc<Open>> {
        self.lock().remove(id)
    }

    /// Ends a session's uploads (logout); what they received stays resumable.
    pub async fn forget_session(&self, session: &[u8; 32]) {
        let ended: Vec<Arc<Open>> = {
            let mut open = self.lock();
            let ids: Vec<String> = open
                .iter()
                .filter(|(_, o)| &o.session == session)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| open.remove(id)).collect()
        };
        for open in ended {
            persist(&open).await;
        }
    }
}

/// How often idle uploads are looked for besides at each new upload.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Drops uploads idle for [`IDLE_EXPIRY`] (a closed tab, a failed page) until
/// `shutdown`, so they give back their place of `limits.max_transfers_per_user` even if
/// the user never opens the page again; their partials stay resumable.
pub async fn expire_idle(uploads: Arc<Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for idle in uploads.sweep() {
            persist(&idle).await;
        }
    }
}

impl Open {
    /// The storage's upload.
    pub(super) fn upload(&self) -> &Arc<dyn Upload> {
        &self.upload
    }

    /// Chunk data of `len` bytes was written: counts it, saves the resume state now and
    /// then, and paces the caller at `limits.user_bytes_per_sec`.
    pub(super) async fn stored(&self, state: &WebState, len: u64) {
        self.received.fetch_add(len, Ordering::Relaxed);
        if lock(&self.last_persist).elapsed() >= PERSIST_EVERY {
            persist(self).await;
        }
        let rate = state.server.config().limits.user_bytes_per_sec;
        if let Some(until) = state.server.admission.charge(&self.caller, len, rate) {
            tokio::time::sleep_until(until).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn persist(open: &Open) {
    if let Err(e) = open.upload.persist().await {
        tracing::warn!(error = %e, path = ?open.path.as_str(), "saving an upload's resume state failed");
    }
    *lock(&open.last_persist) = Instant::now();
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginBody {
    path: Option<String>,
    to: Option<String>,
    name: Option<String>,
    size: u64,
    #[serde(default)]
    force: bool,
    modified: Option<u64>,
    head: Option<String>,
}

/// `POST /api/uploads`: opens or resumes an upload.
pub async fn begin(
    State(state): State<WebState>,
    authed: Authed,
    body: Result<Json<BeginBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = json_body(body)?;
    super::files::check_modified(b.modified)?;
    for idle in state.uploads.sweep() {
        persist(&idle).await;
    }
    let server = &state.server;
    let (owner, path, send_to) = match (&b.to, &b.path) {
        (Some(to), None) => {
            let name = b.name.as_deref().unwrap_or_default();
            (
                to.clone(),
                send_path(&state, &authed.user, to, name).await?,
                Some(to.clone()),
            )
        }
        (None, Some(p)) if b.name.is_none() => {
            (authed.user.clone(), RelPath::parse_entry(p)?, None)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either \"path\", or \"to\" and \"name\"",
            ));
        }
    };
    let head = base64::engine::general_purpose::STANDARD
        .decode(b.head.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("head is not base64: {e}")))?;
    if head.len() > SNIFF_LEN {
        return Err(ApiError::bad_request(format!(
            "head is limited to {SNIFF_LEN} bytes"
        )));
    }
    // A new POST for the same upload (a reload) takes over from the old entry.
    let session = authed.session_key();
    let replaced: Vec<Arc<Open>> = {
        let mut open = state.uploads.lock();
        let ids: Vec<String> = open
            .iter()
            .filter(|(_, o)| o.session == session && o.owner == owner && o.path == path)
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().filter_map(|id| open.remove(id)).collect()
    };
    for old in replaced {
        persist(&old).await;
    }
    let limits = server.config().limits.clone();
    let slot = server
        .admission
        .begin_transfer(&authed.user, limits.max_transfers_per_user)
        .ok_or_else(busy_transfers)?;
    let request = PutRequest {
        path: path.clone(),
        size: b.size,
        force: b.force,
        head: head.into(),
    };
    let upload = match server.storage.begin_upload(&owner, request).await? {
        PutBegun::Exists { size, digest } => return Err(conflict(&path, size, digest)),
        PutBegun::Ready(u) => u,
    };
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| ApiError::internal("making an upload id", &e))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let answer = json!({
        "id": id,
        "chunk_size": storage::CHUNK_SIZE,
        "max_run_chunks": super::chunks::MAX_RUN_CHUNKS,
        "chunks_held": upload.chunks_held(),
        "resumed_from": upload.resumed_from(),
    });
    let now = Instant::now();
    state.uploads.lock().insert(
        id,
        Arc::new(Open {
            session,
            caller: authed.user.clone(),
            owner,
            path,
            send_to,
            modified: b.modified,
            upload,
            started: now,
            received: AtomicU64::new(0),
            last_used: Mutex::new(now),
            last_persist: Mutex::new(now),
            _slot: slot,
        }),
    );
    Ok(Json(answer))
}

/// Where a send of `name` from `from` to `to` lands: `inbox/<from>/<name>` in `to`'s
/// files, as for `xfer send`.
async fn send_path(
    state: &WebState,
    from: &str,
    to: &str,
    name: &str,
) -> Result<RelPath, ApiError> {
    if !valid_user_name(to) {
        return Err(ApiError::bad_request(format!("{to:?} is not a user name")));
    }
    if state.server.passwords.find(to).await.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no user {to}")));
    }
    let one = RelPath::parse_entry(name).is_ok_and(|p| p.components().count() == 1);
    if !one {
        return Err(ApiError::new(
            ErrorCode::InvalidPath,
            format!("{name:?} is not a file name: give one path component, such as photo.png"),
        ));
    }
    Ok(RelPath::parse_entry(&format!("{INBOX}/{from}/{name}"))?)
}

#[derive(Deserialize)]
pub struct ManifestQuery {
    #[serde(default)]
    first: u64,
    count: Option<u64>,
}

/// `GET /api/uploads/{id}/manifest?first=F&count=N`: the chunks held, verified.
pub async fn manifest(
    State(state): State<WebState>,
    authed: Authed,
    Path(id): Path<String>,
    q: Result<Query<ManifestQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let open = state.uploads.get(&id, &authed)?;
    let count = q
        .count
        .unwrap_or(u64::from(MANIFEST_PAGE))
        .min(u64::from(MANIFEST_PAGE));
    let digests: Vec<Option<String>> = open
        .upload
        .held_digests(q.first, count)
        .into_iter()
        .map(|d| d.map(|d| d.to_string()))
        .collect();
    Ok(Json(json!({ "first": q.first, "digests": digests })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    blake3: String,
}

/// `POST /api/uploads/{id}/commit`: checks the whole file and puts it in place.
pub async fn commit(
    State(state): State<WebState>,
    authed: Authed,
    Path(id): Path<String>,
    body: Result<Json<CommitBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = json_body(body)?;
    let digest: Digest = b
        .blake3
        .parse()
        .map_err(|_| ApiError::bad_request("blake3 is not 64 hex digits"))?;
    let open = state.uploads.get(&id, &authed)?;
    let result = open.upload.commit(digest).await;
    state.uploads.remove(&id);
    if result.is_err() {
        // What arrived stays resumable for the next POST.
        persist(&open).await;
    }
    let committed = result?;
    let server = &state.server;
    if let Some(m) = open.modified {
        super::files::set_modified_after_commit(server, &open.owner, &open.path, m).await;
    }
    let hex = committed.digest.to_string();
    let record = audit::UploadRecord {
        user: &open.caller,
        path: open.path.as_str(),
        bytes: committed.size,
        digest: &hex,
        duration_ms: u64::try_from(open.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        resumed_from: open.upload.resumed_from(),
        bytes_received: open.received.load(Ordering::Relaxed),
        wire_bytes: open.received.load(Ordering::Relaxed),
    };
    match &open.send_to {
        Some(to) => notify(&state, to, &record, committed.digest).await,
        None => audit::upload(&record),
    }
    server.metrics.upload_committed(record.resumed_from);
    Ok(Json(json!({
        "path": open.path.as_str(),
        "to": open.send_to,
        "size": committed.size,
        "blake3": hex,
        "resumed_from": record.resumed_from,
    })))
}

/// A send committed: audit it and post the file notice to the recipient (as `xfer send`).
async fn notify(state: &WebState, to: &str, record: &audit::UploadRecord<'_>, digest: Digest) {
    audit::send(record, to);
    let Ok(name) = UserName::new(to) else {
        return;
    };
    let body = MessageBody::File {
        path: record.path.to_owned(),
        size: record.bytes,
        digest,
    };
    let target = Target::User(name);
    if let Err(e) = state
        .server
        .chat
        .post(None, record.user, &target, body)
        .await
    {
        tracing::error!(error = %e, to, path = ?record.path, "storing the notice of a sent file failed");
    }
}

/// `DELETE /api/uploads/{id}`: closes the upload; its partial stays resumable.
pub async fn close(
    State(state): State<WebState>,
    authed: Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let open = state.uploads.get(&id, &authed)?;
    state.uploads.remove(&id);
    persist(&open).await;
    Ok(StatusCode::NO_CONTENT)
}
