//! File requests and transfers on one connection.
//!
//! Storage work is awaited (the local backend runs it in `spawn_blocking`; decompression
//! and compression run there too). Uploaded chunks are pipelined: while up to
//! [`RUNNING_CHUNKS`] chunks are verified and written in tasks (one task per chunk:
//! decompress if it came compressed, hash, then positioned write), the session goes on
//! reading and decrypting the next frames, up to [`MAX_QUEUED_CHUNKS`] waiting; beyond
//! that it stops reading, which is the backpressure. Chunks are acknowledged in arrival
//! order (a chunk that cannot be taken is answered once the ones before it are), and any
//! other request first waits until every earlier chunk is acknowledged, so responses
//! keep request order. Downloads read (and, when
//! asked, compress) the next chunk in a task while the current one is sent.
//!
//! Each transfer holds one of its user's `limits.max_transfers_per_user` places. With
//! `limits.user_bytes_per_sec`, every chunk is charged to the user's shared bucket:
//! an upload stops reading frames until the bucket allows (chunks already read are
//! still written and acknowledged), a download waits before sending. On shutdown the
//! chunks already read are written and the upload's state saved ([`Files::checkpoint`]).
//!
//! [`Files`] owns all of this; the session hands it the logged-in user and, where it
//! answers by itself (chunk acknowledgements, streamed chunks), the [`Link`] to write to.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use xfer_proto::{
    Chunk, ChunkEncoding, ErrorCode, Frame, LIST_PAGE, MANIFEST_PAGE, Response, SNIFF_LEN,
};

use super::link::{Link, Transport};
use super::reply::{End, answer, internal_error, storage_error};
use crate::admission::TransferSlot;
use crate::audit;
use crate::chat::ConnId;
use crate::connections::{Direction, Registration, Tracked};
use crate::state::ServerState;
use crate::storage::{
    self, Download, PutBegun, PutRequest, RelPath, Storage, StorageError, Upload,
};

/// Transfers one connection may hold open at once.
pub const MAX_TRANSFERS: usize = 8;
/// Chunk frames read ahead of the ones being written (16 MiB at most).
pub const MAX_QUEUED_CHUNKS: usize = xfer_proto::PUT_WINDOW;
/// Chunk jobs running at once. With two, the next chunk is already being hashed while
/// one is written, and the blocking threads need not wait for the session task (busy
/// decrypting the frames behind) to take a finished job's result and start the next:
/// with one, the chunk jobs of a 1 GiB push kept them busy about two thirds of the
/// time (bench/RESULTS.md).
pub const RUNNING_CHUNKS: usize = 2;
/// zstd level for downloads that ask for compression: the protocol's, the cheapest
/// level, because the server compresses for every such client.
pub use xfer_proto::COMPRESS_LEVEL;

/// Result of one chunk job.
pub(super) type ChunkOutcome = Result<ChunkDone, JoinError>;

/// A chunk verified and written (or refused).
pub(super) struct ChunkDone {
    transfer_id: u64,
    offset: u64,
    len: u64,
    /// Bytes of the chunk as it travelled (compressed or not).
    wire: u64,
    result: Result<(), StorageError>,
}

struct UploadTransfer {
    upload: Arc<dyn Upload>,
    path: RelPath,
    started: Instant,
    bytes_received: u64,
    /// Chunk bytes as they travelled (less than `bytes_received` when compressed).
    wire_bytes: u64,
    /// For `SendBegin`: the recipient, in whose namespace `path` is.
    send_to: Option<String>,
    /// Progress shown by `xferd status`, listed while this transfer is open.
    tracked: Tracked,
    /// The user's place for this transfer.
    _slot: TransferSlot,
}

struct DownloadTransfer {
    download: Arc<dyn Download>,
    /// Who downloads, for the audit record.
    user: String,
    path: RelPath,
    started: Instant,
    bytes_sent: u64,
    /// Chunk bytes as they travelled (less than `bytes_sent` when compressed).
    wire_bytes: u64,
    first_index: Option<u64>,
    last_sent: bool,
    /// Progress shown by `xferd status`, listed while this transfer is open.
    tracked: Tracked,
    /// The user's place for this transfer.
    _slot: TransferSlot,
}

enum Transfer {
    Upload(UploadTransfer),
    Download(DownloadTransfer),
}

/// The file side of a session: open transfers and the chunk pipeline.
pub(super) struct Files {
    state: Arc<ServerState>,
    storage: Arc<dyn Storage>,
    transfers: HashMap<u64, Transfer>,
    next_id: u64,
    queue: VecDeque<Chunk>,
    /// Chunk jobs in arrival order, at most [`RUNNING_CHUNKS`].
    running: VecDeque<JoinHandle<ChunkDone>>,
    /// Set while the user's bandwidth cap holds further chunk frames back.
    paused_until: Option<tokio::time::Instant>,
}

impl Files {
    pub fn new(state: Arc<ServerState>) -> Files {
        Files {
            storage: state.storage.clone(),
            state,
            transfers: HashMap::new(),
            next_id: 1,
            queue: VecDeque::new(),
            running: VecDeque::with_capacity(RUNNING_CHUNKS),
            paused_until: None,
        }
    }

    /// The server, for `send.rs`.
    pub(super) fn state(&self) -> &ServerState {
        &self.state
    }

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

    fn open_slot(&mut self) -> Result<u64, Response> {
        if self.transfers.len() >= MAX_TRANSFERS {
            return Err(Response::error(
                ErrorCode::Busy,
                format!(
                    "at most {MAX_TRANSFERS} transfers may be open on one connection; close one"
                ),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        Ok(id)
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
}

/// The answer to a chunk of transfer `id` when no upload of that id is open.
fn no_upload(id: u64) -> Response {
    Response::error(
        ErrorCode::BadRequest,
        format!("no upload with transfer id {id} is open"),
    )
}

fn parse(path: &str) -> Result<RelPath, Response> {
    RelPath::parse(path).map_err(|e| Response::error(ErrorCode::InvalidPath, e.to_string()))
}

fn parse_entry(path: &str) -> Result<RelPath, Response> {
    RelPath::parse_entry(path).map_err(|e| Response::error(ErrorCode::InvalidPath, e.to_string()))
}

fn no_transfer(id: u64) -> Response {
    Response::error(
        ErrorCode::BadRequest,
        format!("no transfer with id {id} is open"),
    )
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Files {
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

    /// A place for one more transfer of `user`, or the reply refusing it.
    pub(super) fn transfer_slot(&self, user: &str) -> Result<TransferSlot, Response> {
        let max = self.state.config().limits.max_transfers_per_user;
        self.state
            .admission
            .begin_transfer(user, max)
            .ok_or_else(|| {
                Response::error(
                    ErrorCode::Busy,
                    format!(
                        "{user} already has {max} transfers in progress (limits.max_transfers_per_user); retry when one ends"
                    ),
                )
            })
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

    /// Closes one transfer: an upload saves its resume state, a download that reached
    /// the end of the file is audited.
    async fn end_transfer(&mut self, id: u64) -> bool {
        let Some(transfer) = self.transfers.remove(&id) else {
            return false;
        };
        match transfer {
            Transfer::Upload(t) => {
                if let Err(Response::Error { message, .. }) = answer(t.upload.persist()).await {
                    tracing::warn!(path = ?t.path, message, "saving upload state failed");
                }
            }
            Transfer::Download(t) => {
                if t.last_sent {
                    audit::download(&audit::DownloadRecord {
                        user: &t.user,
                        path: t.path.as_str(),
                        size: t.download.size(),
                        bytes_sent: t.bytes_sent,
                        wire_bytes: t.wire_bytes,
                        resumed: t.first_index.is_some_and(|i| i > 0),
                        duration_ms: millis(t.started),
                    });
                    self.state.metrics.download_completed();
                }
            }
        }
        true
    }

    /// Ends every transfer (connection end, logout, new login): waits for the chunks
    /// being written, then saves upload state.
    pub async fn close_transfers(&mut self) {
        while let Some(job) = self.running.pop_front() {
            if let Ok(done) = job.await {
                self.state.metrics.chunk_received(done.len, &done.result);
            }
        }
        self.queue.clear();
        let ids: Vec<u64> = self.transfers.keys().copied().collect();
        for id in ids {
            self.end_transfer(id).await;
        }
    }

    pub async fn list(
        &mut self,
        user: &str,
        path: &str,
        after: Option<&str>,
    ) -> Result<Response, Response> {
        let p = parse(path)?;
        let page = answer(self.storage.list(user, &p, after, LIST_PAGE)).await?;
        Ok(Response::Listing {
            entries: page.entries,
            more: page.more,
        })
    }

    pub async fn mkdir(
        &mut self,
        user: &str,
        path: &str,
        parents: bool,
    ) -> Result<Response, Response> {
        let p = parse_entry(path)?;
        answer(self.storage.mkdir(user, &p, parents))
            .await
            .map(|()| Response::Ok)
    }

    pub async fn remove(
        &mut self,
        user: &str,
        path: &str,
        recursive: bool,
        partial: bool,
    ) -> Result<Response, Response> {
        let p = parse_entry(path)?;
        answer(self.storage.remove(user, &p, recursive, partial))
            .await
            .map(|()| Response::Ok)
    }

    pub async fn rename(
        &mut self,
        user: &str,
        from: &str,
        to: &str,
        force: bool,
    ) -> Result<Response, Response> {
        let (f, t) = (parse_entry(from)?, parse_entry(to)?);
        answer(self.storage.rename(user, &f, &t, force))
            .await
            .map(|()| Response::Ok)
    }

    pub async fn set_modified(
        &mut self,
        user: &str,
        path: &str,
        modified_unix: u64,
    ) -> Result<Response, Response> {
        let p = parse_entry(path)?;
        answer(self.storage.set_modified(user, &p, modified_unix))
            .await
            .map(|()| Response::Ok)
    }

    /// Closing what is already closed (e.g. ended by an error) is not an error.
    pub async fn close(&mut self, transfer_id: u64) -> Response {
        self.end_transfer(transfer_id).await;
        Response::Ok
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

    pub fn manifest(&self, transfer_id: u64, first: u64, count: u32) -> Response {
        let count = u64::from(count.min(MANIFEST_PAGE));
        let digests = match self.transfers.get(&transfer_id) {
            Some(Transfer::Upload(t)) => t.upload.held_digests(first, count),
            Some(Transfer::Download(t)) => t
                .download
                .chunk_digests(first, count)
                .into_iter()
                .map(Some)
                .collect(),
            None => return no_transfer(transfer_id),
        };
        Response::Manifest { first, digests }
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

    pub async fn get_begin(
        &mut self,
        registration: &Registration,
        user: &str,
        path: &str,
    ) -> Result<Response, Response> {
        let (storage, user) = (self.storage.clone(), user.to_owned());
        let path = parse_entry(path)?;
        let id = self.open_slot()?;
        let slot = self.transfer_slot(&user)?;
        let download = answer(storage.open_download(&user, &path)).await?;
        let empty = storage::chunk_count(download.size()) == 0;
        let response = Response::GetReady {
            transfer_id: id,
            size: download.size(),
            digest: download.digest(),
            chunk_size: storage::CHUNK_SIZE as u32,
            modified_unix: download.modified_unix(),
        };
        let tracked = registration.track(id, path.as_str(), Direction::Download, download.size());
        self.transfers.insert(
            id,
            Transfer::Download(DownloadTransfer {
                download,
                user,
                path,
                started: Instant::now(),
                bytes_sent: 0,
                wire_bytes: 0,
                first_index: None,
                // An empty file is complete without any chunk.
                last_sent: empty,
                tracked,
                _slot: slot,
            }),
        );
        Ok(response)
    }

    /// Answers `GetChunks` with `count` chunk frames in order, or an `Error` in place of
    /// the first one that cannot be sent. The next chunk is read (and, with `compress`,
    /// compressed) in a task while one is sent. A kick or the shutdown ends it
    /// with [`End::Stopped`].
    #[allow(clippy::too_many_arguments)] // the request's fields plus what it writes to
    pub async fn stream_chunks<T: Transport>(
        &mut self,
        user: &str,
        link: &mut Link<T>,
        transfer_id: u64,
        first: u64,
        count: u64,
        compress: bool,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let Some(Transfer::Download(t)) = self.transfers.get(&transfer_id) else {
            return link.send(no_transfer(transfer_id)).await;
        };
        let download = t.download.clone();
        let n = storage::chunk_count(download.size());
        let end = first.checked_add(count).filter(|&e| e <= n && count > 0);
        let Some(end) = end else {
            return link
                .send(Response::error(
                    ErrorCode::BadRequest,
                    format!("chunks {first}+{count} are not inside the file's {n} chunks"),
                ))
                .await;
        };
        let read = |index: u64| {
            let d = download.clone();
            tokio::spawn(async move {
                let (digest, data) = d.read_chunk(index).await?;
                let chunk = Chunk::raw(transfer_id, index * storage::CHUNK_SIZE, digest, data);
                if !compress {
                    return Ok(chunk);
                }
                // CPU work: off the async threads.
                tokio::task::spawn_blocking(move || chunk.compress(COMPRESS_LEVEL))
                    .await
                    .map_err(|e| StorageError::Io {
                        context: "compressing a chunk",
                        source: std::io::Error::other(e),
                    })
            })
        };
        let mut next = Some(read(first));
        for index in first..end {
            let current = next.take().expect("one read is always in flight").await;
            if index + 1 < end && !shutdown.is_cancelled() {
                next = Some(read(index + 1));
            }
            let chunk = match current {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => return link.send(storage_error(&e)).await,
                Err(e) => return link.send(internal_error("reading a chunk", &e)).await,
            };
            // A kick or the shutdown: the peer hears which, as on every other path.
            if shutdown.is_cancelled() {
                return Err(End::Stopped);
            }
            let len = match chunk.encoding {
                ChunkEncoding::Raw => chunk.data.len() as u64,
                ChunkEncoding::Zstd { raw_len } => u64::from(raw_len),
            };
            let wire = chunk.data.len() as u64;
            if !self.pace_download(user, wire, shutdown).await {
                return Err(End::Stopped);
            }
            link.send_frame(Frame::Chunk(chunk)).await?;
            if let Some(Transfer::Download(t)) = self.transfers.get_mut(&transfer_id) {
                t.bytes_sent += len;
                t.wire_bytes += wire;
                t.first_index.get_or_insert(index);
                t.tracked
                    .progress()
                    .reach(index * storage::CHUNK_SIZE + len);
                t.last_sent |= index + 1 == n;
            }
        }
        Ok(())
    }

    /// Waits as the user's bandwidth cap says before sending `wire` bytes; false when
    /// shutdown came first.
    async fn pace_download(&self, user: &str, wire: u64, shutdown: &CancellationToken) -> bool {
        let rate = self.state.config().limits.user_bytes_per_sec;
        let Some(until) = self.state.admission.charge(user, wire, rate) else {
            return true;
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => true,
            () = shutdown.cancelled() => false,
        }
    }
}
