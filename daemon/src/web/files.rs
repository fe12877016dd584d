//! Listing, small single-request uploads, mkdir, rm and mv: each a thin translation of
//! an HTTP request into one [`crate::storage::Storage`] call for the signed-in user, with
//! paths validated as [`RelPath`]s exactly as for the CLI, so nothing outside the user's
//! own space can be named.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use xfer_proto::{Digest, EntryKind, ErrorCode, LIST_PAGE, SNIFF_LEN};

use super::{ApiError, Authed, WebState};
use crate::audit;
use crate::storage::{self, PutBegun, PutRequest, RelPath};

/// Largest body of `PUT /api/file`; larger files go through `/api/uploads`.
pub const MAX_SMALL_PUT: u64 = 64 * 1024 * 1024;
/// Most entries one listing returns (then `"more": true`).
const MAX_LISTING: usize = 100_000;
/// Longest wait for the next piece of a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A query string or JSON body, or the one-line reason it was refused.
pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(super) fn json_body<T>(j: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    j.map(|Json(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `1`, `true` or `yes`.
pub(super) fn flag(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true" | "yes"))
}

/// Reads a request body of at most `max` bytes, giving each piece [`BODY_TIMEOUT`] to
/// arrive and handing it to `seen` as it comes (to hash while receiving).
pub(super) async fn read_body(
    body: Body,
    max: u64,
    mut seen: impl FnMut(&[u8]),
) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(BODY_TIMEOUT, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    "request body stalled; send it again",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!("reading the body: {e}")));
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > max {
                return Err(ApiError::new(
                    ErrorCode::TooLarge,
                    format!("body is larger than {max} bytes"),
                ));
            }
            seen(&data);
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[derive(Deserialize)]
pub struct PathQuery {
    #[serde(default)]
    path: String,
}

/// `GET /api/list?path=DIR`.
pub async fn list(
    State(state): State<WebState>,
    authed: Authed,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let path = RelPath::parse(&q.path)?;
    let storage = &state.server.storage;
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    let more = loop {
        let page = storage
            .list(&authed.user, &path, after.as_deref(), LIST_PAGE)
            .await?;
        after = page.entries.last().map(|e| e.name.clone());
        entries.extend(page.entries.iter().map(entry_json));
        if !page.more || after.is_none() {
            break false;
        }
        if entries.len() >= MAX_LISTING {
            break true;
        }
    };
    Ok(Json(
        json!({ "path": path.as_str(), "entries": entries, "more": more }),
    ))
}

fn entry_json(e: &xfer_proto::Entry) -> Value {
    match e.kind {
        EntryKind::Partial => json!({
            "name": e.name, "kind": "partial", "size": e.size, "modified": e.modified_unix,
            "held": e.received.unwrap_or(0), "expires": e.expires_unix,
        }),
        kind => json!({
            "name": e.name,
            "kind": if kind == EntryKind::Dir { "dir" } else { "file" },
            "size": e.size, "modified": e.modified_unix,
            "blake3": e.digest.map(|d| d.to_string()),
        }),
    }
}

#[derive(Deserialize)]
pub struct PutQuery {
    path: String,
    force: Option<String>,
    modified: Option<u64>,
}

/// `PUT /api/file?path=P`: a small file in one request, hashed as it arrives and
/// admitted (quota, space, type policy) at the size actually received.
pub async fn put_file(
    State(state): State<WebState>,
    authed: Authed,
    q: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let q = query(q)?;
    let path = RelPath::parse_entry(&q.path)?;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_SMALL_PUT) {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "PUT /api/file takes at most {MAX_SMALL_PUT} bytes; use POST /api/uploads for larger files"
            ),
        ));
    }
    check_modified(q.modified)?;
    let server = &state.server;
    let limits = server.config().limits.clone();
    let _slot = server
        .admission
        .begin_transfer(&authed.user, limits.max_transfers_per_user)
        .ok_or_else(busy_transfers)?;
    let started = std::time::Instant::now();
    let mut hasher = Digest::hasher();
    let data = read_body(body, MAX_SMALL_PUT, |d| {
        hasher.update(d);
    })
    .await?;
    let digest = hasher.finalize();
    let size = data.len() as u64;
    if let Some(until) = server
        .admission
        .charge(&authed.user, size, limits.user_bytes_per_sec)
    {
        tokio::time::sleep_until(until).await;
    }
    let request = PutRequest {
        path: path.clone(),
        size,
        force: flag(q.force.as_deref()),
        head: data.slice(..data.len().min(SNIFF_LEN)),
    };
    let upload = match server.storage.begin_upload(&authed.user, request).await? {
        PutBegun::Exists { size, digest } => return Err(conflict(&path, size, digest)),
        PutBegun::Ready(u) => u,
    };
    for index in 0..storage::chunk_count(size) {
        let offset = index * storage::CHUNK_SIZE;
        let len = storage::chunk_len(size, index);
        let chunk = data.slice(offset as usize..(offset + len) as usize);
        let cv = Digest::of_chunk(&chunk, offset, size)
            .ok_or_else(|| ApiError::internal("cutting a chunk", &index))?;
        let written = upload.write_chunk(offset, cv, chunk).await;
        server.metrics.chunk_received(len, &written);
        written?;
    }
    let committed = upload.commit(digest).await?;
    if let Some(m) = q.modified {
        set_modified_after_commit(server, &authed.user, &path, m).await;
    }
    let hex = committed.digest.to_string();
    audit::upload(&audit::UploadRecord {
        user: &authed.user,
        path: path.as_str(),
        bytes: committed.size,
        digest: &hex,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        resumed_from: upload.resumed_from(),
        bytes_received: size,
        wire_bytes: size,
    });
    server.metrics.upload_committed(upload.resumed_from());
    Ok((
        StatusCode::CREATED,
        Json(json!({ "path": path.as_str(), "size": committed.size, "blake3": hex })),
    ))
}

pub(super) fn busy_transfers() -> ApiError {
    ApiError::new(
        ErrorCode::Busy,
        "too many transfers at once (limits.max_transfers_per_user); retry when one ends",
    )
}

pub(super) fn conflict(path: &RelPath, size: u64, digest: Option<Digest>) -> ApiError {
    ApiError {
        code: ErrorCode::Conflict,
        message: format!("{} already exists; pass force to replace it", path.as_str()),
        existing: Some((size, digest)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirBody {
    path: String,
    #[serde(default)]
    parents: bool,
}

/// `POST /api/mkdir`.
pub async fn mkdir(
    State(state): State<WebState>,
    authed: Authed,
    body: Result<Json<MkdirBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = json_body(body)?;
    let path = RelPath::parse_entry(&b.path)?;
    state
        .server
        .storage
        .mkdir(&authed.user, &path, b.parents)
        .await?;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmBody {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    partial: bool,
}

/// `POST /api/rm`.
pub async fn rm(
    State(state): State<WebState>,
    authed: Authed,
    body: Result<Json<RmBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = json_body(body)?;
    let path = RelPath::parse_entry(&b.path)?;
    state
        .server
        .storage
        .remove(&authed.user, &path, b.recursive, b.partial)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MvBody {
    from: String,
    to: String,
    #[serde(default)]
    force: bool,
}

/// `POST /api/mv`.
pub async fn mv(
    State(state): State<WebState>,
    authed: Authed,
    body: Result<Json<MvBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let b = json_body(body)?;
    let (from, to) = (RelPath::parse_entry(&b.from)?, RelPath::parse_entry(&b.to)?);
    state
        .server
        .storage
        .rename(&authed.user, &from, &to, b.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a modification time the store cannot set, before anything is written.
pub(super) fn check_modified(modified: Option<u64>) -> Result<(), ApiError> {
    match modified {
        Some(m) if i64::try_from(m).is_err() => Err(ApiError::bad_request(
            "modified is out of range: give seconds since the Unix epoch",
        )),
        _ => Ok(()),
    }
}

/// Sets the time of a file just committed. The file is in place whatever happens here,
/// so a failure is logged, never answered: the commit is audited and reported as done.
pub(super) async fn set_modified_after_commit(
    server: &crate::state::ServerState,
    user: &str,
    path: &RelPath,
    modified: u64,
) {
    if let Err(e) = server.storage.set_modified(user, path, modified).await {
        tracing::warn!(user, path = path.as_str(), error = %e, "setting the modification time of a committed upload failed");
    }
}
