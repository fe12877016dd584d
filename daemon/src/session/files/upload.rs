//! Uploads: `PutBegin`, the chunk pipeline, `PutCommit`.
//!
//! Uploaded chunks are pipelined: while up to [`RUNNING_CHUNKS`] chunks are verified
//! and written in tasks (one task per chunk: decompress if it came compressed, hash,
//! then positioned write), the session goes on reading and decrypting the next frames,
//! up to [`MAX_QUEUED_CHUNKS`] waiting; beyond that it stops reading, which is the
//! backpressure. Chunks are acknowledged in arrival order (a chunk that cannot be taken
//! is answered once the ones before it are), and any other request first waits until
//! every earlier chunk is acknowledged, so responses keep request order.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinError;
use xfer_proto::{Chunk, ChunkEncoding, ErrorCode, Response, SNIFF_LEN};

use super::{Files, Transfer, UploadTransfer, millis, parse_entry};
use crate::audit;
use crate::chat::ConnId;
use crate::connections::{Direction, Registration};
use crate::session::link::{Link, Transport};
use crate::session::reply::{End, answer, internal_error, storage_error};
use crate::storage::{self, PutBegun, PutRequest, StorageError, Upload};

/// Chunk frames read ahead of the ones being written (16 MiB at most).
pub const MAX_QUEUED_CHUNKS: usize = xfer_proto::PUT_WINDOW;
/// Chunk jobs running at once. With two, the next chunk is already being hashed while
/// one is written, and the blocking threads need not wait for the session task (busy
/// decrypting the frames behind) to take a finished job's result and start the next:
/// with one, the chunk jobs of a 1 GiB push kept them busy about two thirds of the
/// time (bench/RESULTS.md).
pub const RUNNING_CHUNKS: usize = 2;
/// Result of one chunk job.
pub(in crate::session) type ChunkOutcome = Result<ChunkDone, JoinError>;

/// A chunk verified and written (or refused).
pub(in crate::session) struct ChunkDone {
    transfer_id: u64,
    offset: u64,
    len: u64,
    /// Bytes of the chunk as it travelled (compressed or not).
    wire: u64,
    result: Result<(), StorageError>,
}

/// The answer to a chunk of transfer `id` when no upload of that id is open.
fn no_upload(id: u64) -> Response {
    Response::error(
        ErrorCode::BadRequest,
        format!("no upload with transfer id {id} is open"),
    )
}

impl Files {
    /// Whether another chunk frame may be read now.
    pub fn can_queue(&self) -> bool {
        self.queue.len() < MAX_QUEUED_CHUNKS && self.paused_until.is_none()
    }

    /// Until when the user's bandwidth cap holds chunk frames back, if it does.
    pub fn paused_until(&self) -> Option<tokio::time::Instant> {
        self.paused_until
    }

    /// The bandwidth pause is over.
    pub fn resume(&mut self) {
        self.paused_until = None;
    }

    /// The outcome of the oldest running chunk job; pending forever when none runs.
    ///
    /// # Cancel safety
    /// Cancel-safe: the job is polled through `&mut`, and stays in `running` until
    /// [`Files::chunk_done`] takes it.
    pub async fn next_done(&mut self) -> ChunkOutcome {
        match self.running.front_mut() {
            Some(job) => job.await,
            None => std::future::pending().await,
        }
    }

    /// The upload a chunk of transfer `id` goes to, if one is open.
    fn upload(&self, id: u64) -> Option<Arc<dyn Upload>> {
        match self.transfers.get(&id) {
            Some(Transfer::Upload(t)) => Some(t.upload.clone()),
            _ => None,
        }
    }

    /// Starts the job writing `chunk` to `upload`.
    fn start_chunk(&mut self, chunk: Chunk, upload: Arc<dyn Upload>) {
        self.running.push_back(tokio::spawn(async move {
            let (transfer_id, offset) = (chunk.transfer_id, chunk.offset);
            let wire = chunk.data.len() as u64;
            // Decompression is bounded by the chunk size and runs off the async threads,
            // like the digest check that follows it.
            let raw = match chunk.encoding {
                ChunkEncoding::Raw => chunk.into_raw().map_err(|e| e.to_string()),
                ChunkEncoding::Zstd { .. } => {
                    match tokio::task::spawn_blocking(move || chunk.into_raw()).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            match raw {
                Ok(chunk) => ChunkDone {
                    transfer_id,
                    offset,
                    len: chunk.data.len() as u64,
                    wire,
                    result: upload.write_chunk(offset, chunk.digest, chunk.data).await,
                },
                Err(e) => ChunkDone {
                    transfer_id,
                    offset,
                    len: 0,
                    wire,
                    result: Err(StorageError::BadRequest(format!(
                        "compressed chunk at offset {offset} refused: {e}"
                    ))),
                },
            }
        }));
    }
    /// Takes a chunk frame of `user`'s into the pipeline, charging it to their bandwidth.
    pub async fn queue_chunk<T: Transport>(
        &mut self,
        user: &str,
        chunk: Chunk,
        link: &mut Link<T>,
    ) -> Result<(), End> {
        let rate = self.state.config().limits.user_bytes_per_sec;
        let wire = chunk.data.len() as u64;
        self.paused_until = self.state.admission.charge(user, wire, rate);
        self.queue.push_back(chunk);
        self.pump(link).await
    }

    /// On shutdown: writes the chunks already read (without acknowledging them: the
    /// client learns what is held when it resumes), then saves every upload's state,
    /// so a resume after the restart starts from everything received.
    pub async fn checkpoint(&mut self) {
        loop {
            while let Some(job) = self.running.pop_front() {
                let _ = job.await;
            }
            let Some(chunk) = self.queue.pop_front() else {
                break;
            };
            // A chunk that cannot be taken is dropped; the client sends it again.
            if let Some(upload) = self.upload(chunk.transfer_id) {
                self.start_chunk(chunk, upload);
            }
        }
        self.close_transfers().await;
    }

    /// Waits for the chunk jobs running, unanswered, and drops the chunks waiting: the
    /// connection is ending or logging in again.
    pub(super) async fn abandon_chunks(&mut self) {
        while let Some(job) = self.running.pop_front() {
            if let Ok(done) = job.await {
                self.state.metrics.chunk_received(done.len, &done.result);
            }
        }
        self.queue.clear();
    }

    /// Starts queued chunks while fewer than [`RUNNING_CHUNKS`] run (one at a time for a
    /// backend without [`Upload::concurrent_writes`]). A chunk that cannot be taken is
    /// answered once nothing runs before it, so answers keep arrival order.
    async fn pump<T: Transport>(&mut self, link: &mut Link<T>) -> Result<(), End> {
        while self.running.len() < RUNNING_CHUNKS {
            let Some(id) = self.queue.front().map(|c| c.transfer_id) else {
                break;
            };
            match self.upload(id) {
                Some(upload) if self.running.is_empty() || upload.concurrent_writes() => {
                    let chunk = self.queue.pop_front().expect("a queued chunk");
                    self.start_chunk(chunk, upload);
                }
                Some(_) => break,
                None if self.running.is_empty() => {
                    self.queue.pop_front();
                    link.send(no_upload(id)).await?;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Answers a finished chunk job and starts the next.
    pub async fn chunk_done<T: Transport>(
        &mut self,
        outcome: ChunkOutcome,
        link: &mut Link<T>,
    ) -> Result<(), End> {
        self.running.pop_front();
        if let Ok(done) = &outcome {
            self.state.metrics.chunk_received(done.len, &done.result);
        }
        let response = match outcome {
            Err(e) => internal_error("writing a chunk", &e),
            Ok(done) => match done.result {
                Ok(()) => match self.transfers.get_mut(&done.transfer_id) {
                    Some(Transfer::Upload(t)) => {
                        t.bytes_received += done.len;
                        t.wire_bytes += done.wire;
                        t.tracked.progress().add(done.len);
                        Response::ChunkAck {
                            transfer_id: done.transfer_id,
                            offset: done.offset,
                        }
                    }
                    // An error of a chunk before it, running beside it, ended the
                    // upload: answered as if it had been taken afterwards.
                    _ => no_upload(done.transfer_id),
                },
                Err(e) => {
                    // Any error ends the transfer; the partial stays for a resume.
                    self.end_transfer(done.transfer_id).await;
                    storage_error(&e)
                }
            },
        };
        link.send(response).await?;
        self.pump(link).await
    }

    /// Waits until every chunk received so far is answered.
    pub async fn drain_chunks<T: Transport>(&mut self, link: &mut Link<T>) -> Result<(), End> {
        while !self.running.is_empty() {
            let outcome = self.next_done().await;
            self.chunk_done(outcome, link).await?;
        }
        Ok(())
    }

    /// An upload by `caller`, into their own files, or with `send_to` (a `SendBegin`)
    /// into that user's files. Either way the transfer place is the caller's: a sender
    /// must not use up the recipient's `limits.max_transfers_per_user`.
    #[allow(clippy::too_many_arguments)] // the request's fields plus the send marker
    pub async fn put_begin(
        &mut self,
        registration: &Registration,
        caller: &str,
        path: &str,
        size: u64,
        force: bool,
        head: bytes::Bytes,
        send_to: Option<String>,
    ) -> Result<Response, Response> {
        let storage = self.storage.clone();
        let path = parse_entry(path)?;
        if head.len() > SNIFF_LEN {
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!("head is limited to {SNIFF_LEN} bytes"),
            ));
        }
        let id = self.open_slot()?;
        let slot = self.transfer_slot(caller)?;
        let user = send_to.as_deref().unwrap_or(caller);
        let request = PutRequest {
            path: path.clone(),
            size,
            force,
            head,
        };
        let begun = answer(storage.begin_upload(user, request)).await?;
        match begun {
            PutBegun::Exists { size, digest } => Ok(Response::Exists { size, digest }),
            PutBegun::Ready(upload) => {
                let chunks_held = upload.chunks_held();
                let tracked = registration.track(id, path.as_str(), Direction::Upload, size);
                tracked.progress().add(upload.resumed_from());
                self.transfers.insert(
                    id,
                    Transfer::Upload(UploadTransfer {
                        upload,
                        path,
                        started: Instant::now(),
                        bytes_received: 0,
                        wire_bytes: 0,
                        send_to,
                        tracked,
                        _slot: slot,
                    }),
                );
                Ok(Response::PutReady {
                    transfer_id: id,
                    chunk_size: storage::CHUNK_SIZE as u32,
                    chunks_held,
                })
            }
        }
    }

    /// `origin`: this connection on the chat bus, which a send's notice comes from.
    pub async fn put_commit(
        &mut self,
        user: &str,
        transfer_id: u64,
        digest: xfer_proto::Digest,
        origin: Option<ConnId>,
    ) -> Result<Response, Response> {
        let Some(Transfer::Upload(t)) = self.transfers.get(&transfer_id) else {
            return Err(Response::error(
                ErrorCode::BadRequest,
                format!("no upload with transfer id {transfer_id} is open"),
            ));
        };
        let upload = t.upload.clone();
        match answer(upload.commit(digest)).await {
            Ok(committed) => {
                let Some(Transfer::Upload(t)) = self.transfers.remove(&transfer_id) else {
                    unreachable!("checked above and nothing ran in between");
                };
                let record = audit::UploadRecord {
                    user,
                    path: t.path.as_str(),
                    bytes: committed.size,
                    digest: &committed.digest.to_string(),
                    duration_ms: millis(t.started),
                    resumed_from: t.upload.resumed_from(),
                    bytes_received: t.bytes_received,
                    wire_bytes: t.wire_bytes,
                };
                match t.send_to.as_deref() {
                    Some(to) => self.file_sent(origin, to, &record, committed.digest).await,
                    None => audit::upload(&record),
                }
                self.state.metrics.upload_committed(record.resumed_from);
                Ok(Response::Committed {
                    size: committed.size,
                    digest: committed.digest,
                })
            }
            Err(response) => {
                self.end_transfer(transfer_id).await;
                Err(response)
            }
        }
    }
}
