//! Whole small files in one request each: `PutFile` and `GetFile`.
//!
//! A client sends many `PutFile`s before reading any answer. The first one read starts
//! a batch; every further `PutFile` that has already arrived (decoded from what the
//! transport holds, never waiting) joins it, up to [`MAX_BATCH_FILES`] files or
//! [`MAX_BATCH_BYTES`]. The batch is admitted, written and made durable together
//! (`Storage::put_files`: one `syncfs` for the data, one for the renames), then answered
//! in request order with one flush. While it commits, the next files pile up in the
//! connection, so the next batch is larger: group commit. The first frame that is no
//! `PutFile` is kept and handled right after the batch's answers, so responses keep
//! request order.
//!
//! `GetFile` answers with the whole file (`Response::File`); the client pipelines them.

use std::time::Instant;

use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;
use xfer_proto::{Digest, ErrorCode, Frame, Request, Response};

use super::Session;
use super::link::Transport;
use super::reply::{End, answer, storage_error};
use crate::audit;
use crate::storage::{PutFileDone, RelPath, WholeFile};

/// Files committed together at most: bounds the batch's open temporaries and the time
/// before the first of them is answered.
pub const MAX_BATCH_FILES: usize = 256;
/// Bytes of file data held by one batch at most (each file is at most one chunk).
pub const MAX_BATCH_BYTES: usize = 32 << 20;

/// One `PutFile` as it arrived.
pub(super) struct PutFile {
    pub path: String,
    pub force: bool,
    pub modified_unix: Option<u64>,
    pub digest: Digest,
    pub data: bytes::Bytes,
}

impl<T: Transport> Session<T> {
    /// Answers `first` and every `PutFile` already behind it, as one durable batch.
    pub(super) async fn put_files(
        &mut self,
        user: &str,
        first: PutFile,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let started = Instant::now();
        let rate = self.state.config().limits.user_bytes_per_sec;
        let mut bytes = first.data.len();
        let mut paused = self.state.admission.charge(user, bytes as u64, rate);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_FILES && bytes < MAX_BATCH_BYTES && paused.is_none() {
            match self.link.next().now_or_never() {
                Some(Some(Ok(Frame::Message(Request::PutFile {
                    path,
                    force,
                    modified_unix,
                    digest,
                    data,
                })))) => {
                    bytes += data.len();
                    paused = self.state.admission.charge(user, data.len() as u64, rate);
                    batch.push(PutFile {
                        path,
                        force,
                        modified_unix,
                        digest,
                        data,
                    });
                }
                // Anything else is handled after this batch's answers, in order.
                Some(other) => {
                    self.stashed = Some(other);
                    break;
                }
                None => break,
            }
        }
        // The batch is one transfer for `limits.max_transfers_per_user`: refused whole
        // when the user has no place left, as a `PutBegin` would be.
        let answers = match self.files.transfer_slot(user) {
            Ok(_slot) => self.commit_files(user, batch, started).await,
            Err(busy) => vec![busy; batch.len()],
        };
        let sent = tokio::time::timeout(
            self.link.idle(),
            self.link.send_all(answers.into_iter().map(Frame::Message)),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return Err(End::PeerClosed);
        }
        // The user's bandwidth cap: no further frame is read before it allows.
        if let Some(until) = paused {
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = shutdown.cancelled() => return Err(End::Stopped),
            }
        }
        Ok(())
    }

    /// Validates each file's path, commits the valid ones as one batch, and audits what
    /// was committed; one answer per file, in order.
    async fn commit_files(
        &mut self,
        user: &str,
        batch: Vec<PutFile>,
        started: Instant,
    ) -> Vec<Response> {
        let mut answers: Vec<Option<Response>> = Vec::with_capacity(batch.len());
        let mut files = Vec::with_capacity(batch.len());
        for f in batch {
            match RelPath::parse_entry(&f.path) {
                Ok(path) => {
                    answers.push(None);
                    files.push(WholeFile {
                        path,
                        force: f.force,
                        modified_unix: f.modified_unix,
                        digest: f.digest,
                        data: f.data,
                    });
                }
                Err(e) => {
                    answers.push(Some(Response::error(ErrorCode::InvalidPath, e.to_string())))
                }
            }
        }
        let paths: Vec<String> = files.iter().map(|f| f.path.as_str().to_owned()).collect();
        let state = self.files.state();
        let done = state.storage.put_files(user, files).await;
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut done = done.into_iter().zip(paths);
        for slot in answers.iter_mut().filter(|a| a.is_none()) {
            let Some((result, path)) = done.next() else {
                break;
            };
            *slot = Some(match result {
                Ok(PutFileDone::Committed(c)) => {
                    audit::upload(&audit::UploadRecord {
                        user,
                        path: &path,
                        bytes: c.size,
                        digest: &c.digest.to_string(),
                        duration_ms: millis,
                        resumed_from: 0,
                        bytes_received: c.size,
                        wire_bytes: c.size,
                    });
                    state.metrics.upload_committed(0);
                    Response::Committed {
                        size: c.size,
                        digest: c.digest,
                    }
                }
                Ok(PutFileDone::Exists { size, digest }) => Response::Exists { size, digest },
                Err(e) => storage_error(&e),
            });
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Response::error(ErrorCode::Internal, "the batch lost a file; see the log")
                })
            })
            .collect()
    }

    /// `GetFile`: the whole file in one answer. It holds a place of the user's
    /// `limits.max_transfers_per_user` while it reads, and is paced by
    /// `limits.user_bytes_per_sec` like a chunked download.
    pub(super) async fn get_file(
        &mut self,
        user: &str,
        path: &str,
        shutdown: &CancellationToken,
    ) -> Result<Response, End> {
        match self.read_file(user, path).await {
            Ok((response, bytes)) => {
                let rate = self.state.config().limits.user_bytes_per_sec;
                if let Some(until) = self.state.admission.charge(user, bytes, rate) {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = shutdown.cancelled() => return Err(End::Stopped),
                    }
                }
                Ok(response)
            }
            Err(refusal) => Ok(refusal),
        }
    }

    async fn read_file(&mut self, user: &str, path: &str) -> Result<(Response, u64), Response> {
        let path = RelPath::parse_entry(path)
            .map_err(|e| Response::error(ErrorCode::InvalidPath, e.to_string()))?;
        let _slot = self.files.transfer_slot(user)?;
        let state = self.files.state();
        let read = answer(state.storage.read_whole(user, &path)).await?;
        audit::download(&audit::DownloadRecord {
            user,
            path: path.as_str(),
            size: read.data.len() as u64,
            bytes_sent: read.data.len() as u64,
            wire_bytes: read.data.len() as u64,
            resumed: false,
            duration_ms: 0,
        });
        state.metrics.download_completed();
        let bytes = read.data.len() as u64;
        let response = Response::File {
            digest: read.digest,
            modified_unix: read.modified_unix,
            data: read.data,
        };
        Ok((response, bytes))
    }
}
