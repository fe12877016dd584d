//! The data of verified uploads (`uploads.rs` opens, lists and commits them):
//! `PUT /api/uploads/{id}/chunks/{index}` carries one chunk, `PUT
//! /api/uploads/{id}/runs/{first}` a run of up to [`MAX_RUN_CHUNKS`] consecutive chunks
//! back to back, with one digest per chunk in `X-Xfer-Blake3` (comma-separated). Both go
//! through one receiver: each chunk is cut from the body as it arrives and handed to the
//! storage, which checks it against its digest before it writes it; the last chunk is
//! written only once the body has ended exactly where the declared chunks end. A run costs
//! the browser far less than as many requests (its cost of sending falls with the body's
//! size), and the server holds one chunk of it at a time, in a buffer reused from a small
//! pool rather than a fresh allocation per chunk.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use xfer_proto::{BufferPool, ChunkBuf, Digest, ErrorCode};

use super::files::BODY_TIMEOUT;
use super::uploads::{DIGEST_HEADER, Open};
use super::{ApiError, Authed, WebState};
use crate::storage::{self, StorageError};

/// Most chunks one `PUT …/runs/{first}` carries (16 MiB of 1 MiB chunks).
pub const MAX_RUN_CHUNKS: u64 = 16;
/// Chunk buffers kept for reuse (xferd's [`BufferPool`]); more in use at once are
/// allocated and freed as usual.
pub const POOLED_BUFFERS: usize = 16;

/// A request body read piece by piece, each piece within [`BODY_TIMEOUT`].
struct BodyReader {
    body: Body,
    rest: Bytes,
    ended: bool,
}

impl BodyReader {
    fn new(body: Body) -> BodyReader {
        BodyReader {
            body,
            rest: Bytes::new(),
            ended: false,
        }
    }

    /// The next non-empty piece of data, `None` once the body has ended.
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        if !self.rest.is_empty() {
            return Ok(Some(std::mem::take(&mut self.rest)));
        }
        while !self.ended {
            let frame = match tokio::time::timeout(BODY_TIMEOUT, self.body.frame()).await {
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorCode::Timeout,
                        "request body stalled; send it again",
                    ));
                }
                Ok(None) => {
                    self.ended = true;
                    break;
                }
                Ok(Some(Err(e))) => {
                    return Err(ApiError::bad_request(format!("reading the body: {e}")));
                }
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// The next `len` bytes, or `Err(n)` when the body ended after `n` of them. Holds at
    /// most `len` bytes (and what was left over of the last piece, which the body sent).
    async fn take(
        &mut self,
        len: usize,
        pool: &Arc<BufferPool>,
    ) -> Result<Result<Bytes, usize>, ApiError> {
        let mut buf: Option<ChunkBuf> = None;
        let mut have = 0;
        while have < len {
            let Some(mut piece) = self.next().await? else {
                return Ok(Err(have));
            };
            if piece.len() > len - have {
                self.rest = piece.split_off(len - have);
            }
            if buf.is_none() && piece.len() == len {
                return Ok(Ok(piece));
            }
            buf.get_or_insert_with(|| pool.take(len))[have..have + piece.len()]
                .copy_from_slice(&piece);
            have += piece.len();
        }
        Ok(Ok(pool.bytes(buf.unwrap_or_default())))
    }
}

/// `PUT /api/uploads/{id}/chunks/{index}`: one chunk, checked before it is written.
pub async fn chunk(
    State(state): State<WebState>,
    authed: Authed,
    Path((id, index)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let open = state.uploads.get(&id, &authed)?;
    let digests = digests(&headers, 1)?;
    receive(&state, &open, index, &digests, &headers, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/uploads/{id}/runs/{first}`: consecutive chunks from `first`, one digest each,
/// every chunk checked before it is written.
pub async fn run(
    State(state): State<WebState>,
    authed: Authed,
    Path((id, first)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let open = state.uploads.get(&id, &authed)?;
    let digests = digests(&headers, MAX_RUN_CHUNKS)?;
    receive(&state, &open, first, &digests, &headers, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The digests of `X-Xfer-Blake3`: 1 to `max`, comma-separated.
fn digests(headers: &HeaderMap, max: u64) -> Result<Vec<Digest>, ApiError> {
    let value = headers
        .get(DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing X-Xfer-Blake3 header"))?;
    let parsed: Vec<Digest> = value
        .split(',')
        .map(|d| d.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ApiError::bad_request(if max == 1 {
                "X-Xfer-Blake3 is not 64 hex digits".to_owned()
            } else {
                format!("X-Xfer-Blake3 is not 1 to {max} digests of 64 hex digits, comma-separated")
            })
        })?;
    if parsed.len() as u64 > max {
        return Err(ApiError::bad_request(if max == 1 {
            format!(
                "X-Xfer-Blake3 names {} chunks; this route takes one",
                parsed.len()
            )
        } else {
            format!(
                "X-Xfer-Blake3 names {} chunks; a run is at most {max}",
                parsed.len()
            )
        }));
    }
    Ok(parsed)
}

/// Receives chunks `first..` (one per digest) from `body` and stores each. A refusal
/// names the chunk; the chunks of the run before it were written (each verified).
async fn receive(
    state: &WebState,
    open: &Open,
    first: u64,
    digests: &[Digest],
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    let size = open.upload().size();
    let n = storage::chunk_count(size);
    let count = digests.len() as u64;
    let last = first.saturating_add(count - 1);
    if last >= n {
        return Err(ApiError::bad_request(if count == 1 {
            format!("chunk {first} is past the end of a {size}-byte file")
        } else {
            format!("chunks {first}..={last} run past the end of a {size}-byte file of {n} chunks")
        }));
    }
    let total: u64 = (first..=last).map(|i| storage::chunk_len(size, i)).sum();
    let what = if count == 1 {
        format!("chunk {first}")
    } else {
        format!("chunks {first}..={last}")
    };
    let too_long = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("body is larger than the {total} bytes of {what}"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(d) if d > total => return Err(too_long()),
        Some(d) if d < total => {
            return Err(ApiError::bad_request(format!(
                "{what} must be exactly {total} bytes, got {d}"
            )));
        }
        _ => {}
    }
    let mut reader = BodyReader::new(body);
    let mut received = 0;
    for (index, given) in (first..).zip(digests) {
        let len = storage::chunk_len(size, index);
        let data = match reader.take(len as usize, &state.buffers).await? {
            Ok(data) => data,
            Err(got) => {
                return Err(written_before(
                    ApiError::bad_request(format!(
                        "{what} must be exactly {total} bytes, got {}",
                        received + got as u64
                    )),
                    first,
                    index,
                ));
            }
        };
        received += len;
        if index == last && reader.next().await?.is_some() {
            return Err(written_before(too_long(), first, index));
        }
        store(state, open, index, *given, data)
            .await
            .map_err(|e| written_before(e, first, index))?;
    }
    Ok(())
}

/// Adds to a refusal of chunk `index` which chunks of its run were written before it.
fn written_before(e: ApiError, first: u64, index: u64) -> ApiError {
    if index == first {
        return e;
    }
    let message = format!(
        "{}; chunks {first}..={} of this run were written",
        e.message,
        index - 1
    );
    ApiError { message, ..e }
}

/// Stores chunk `index`, whose digest the client gave as `given`.
async fn store(
    state: &WebState,
    open: &Open,
    index: u64,
    given: Digest,
    data: Bytes,
) -> Result<(), ApiError> {
    let upload = open.upload();
    let offset = index * storage::CHUNK_SIZE;
    let len = data.len() as u64;
    // The storage checks `given` as the protocol's chunk digest (what the page sends)
    // before it writes; only if that fails is it taken as the plain BLAKE3 of the bytes
    // (`b3sum` of a piece, from curl). So the page's chunks are hashed once here.
    let mut written = upload.write_chunk(offset, given, data.clone()).await;
    if matches!(written, Err(StorageError::ChecksumMismatch(_))) && Digest::of(&data) == given {
        let cv = Digest::of_chunk(&data, offset, upload.size())
            .ok_or_else(|| ApiError::internal("placing a chunk", &index))?;
        written = upload.write_chunk(offset, cv, data).await;
    }
    state.server.metrics.chunk_received(len, &written);
    match written {
        Err(StorageError::ChecksumMismatch(_)) => {
            return Err(ApiError::new(
                ErrorCode::ChecksumMismatch,
                format!("chunk {index} does not match its X-Xfer-Blake3; send it again"),
            ));
        }
        other => other?,
    }
    open.stored(state, len).await;
    Ok(())
}
