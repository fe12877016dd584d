//! Whole small files in one request each: `PutFile` and `GetFile`.
//!
//! A client sends many `PutFile`s before reading any answer. The first one read starts
//! a batch; every further `PutFile` that has already arrived (decoded from what the
//! transport holds, never waiting) joins it, up to [`MAX_BATCH_FILES`] files or
//! [`MAX_BATCH_BYTES`]. The batch is admitted, written and made durable together
//! (`Storage::put_files`: one `syncfs` for the data, one for the renames), then answered
//! in request order with one flush. While it commits, the session goes on reading: the
//! `PutFile`s that arrive meanwhile form the next batch (the two together hold at most
//! [`MAX_BATCH_BYTES`]), committed as soon as the one before is answered. So the
//! network and the decryption never wait for the disk, and the slower the disk, the
//! larger the batches: group commit. The first frame that is no `PutFile` stops the
//! reading; it is kept and handled right after the answers to the files before it, so
//! responses keep request order.
//!
//! `GetFile` answers with the whole file (`Response::File`); the client pipelines them,
//! and the `GetFile`s that have arrived together are read together (`Storage::read_wholes`)
//! and answered with one flush.

use std::time::Instant;

use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;
use xfer_proto::{Digest, ErrorCode, Frame, ProtoError, Request, Response};

use super::Session;
use super::link::Transport;
use super::reply::{End, storage_error};
use crate::audit;
use crate::state::ServerState;
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

impl PutFile {
    /// The `PutFile` request `frame` is, if it is one.
    fn from_frame(frame: Frame<Request>) -> Result<PutFile, Frame<Request>> {
        match frame {
            Frame::Message(Request::PutFile {
                path,
                force,
                modified_unix,
                digest,
                data,
            }) => Ok(PutFile {
                path,
                force,
                modified_unix,
                digest,
                data,
            }),
            other => Err(other),
        }
    }
}

/// The files of one batch, and when its first one was read.
struct Batch {
    files: Vec<PutFile>,
    bytes: usize,
    started: Instant,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            files: Vec::new(),
            bytes: 0,
            started: Instant::now(),
        }
    }

    fn push(&mut self, file: PutFile) {
        if self.files.is_empty() {
            self.started = Instant::now();
        }
        self.bytes += file.data.len();
        self.files.push(file);
    }
}

impl<T: Transport> Session<T> {
    /// Answers `first` and every `PutFile` behind it, in durable batches. The first
    /// batch is what has already arrived; while a batch commits, the next one is read,
    /// until a frame that is no `PutFile`, the bounds (the two batches together hold at
    /// most [`MAX_BATCH_BYTES`]), the user's bandwidth cap or shutdown stops the
    /// reading. Returns once nothing read is left unanswered.
    pub(super) async fn put_files(
        &mut self,
        user: &str,
        first: PutFile,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let rate = self.state.config().limits.user_bytes_per_sec;
        let mut paused = self
            .state
            .admission
            .charge(user, first.data.len() as u64, rate);
        let mut batch = Batch::new();
        batch.push(first);
        // What has already arrived joins the first batch.
        while paused.is_none()
            && batch.files.len() < MAX_BATCH_FILES
            && batch.bytes < MAX_BATCH_BYTES
        {
            let Some(read) = self.link.next().now_or_never() else {
                break;
            };
            if !self.take_put_file(read, user, &mut batch, &mut paused) {
                break;
            }
        }
        loop {
            let mut next = Batch::new();
            // The batch is one transfer for `limits.max_transfers_per_user`: refused
            // whole when the user has no place left, as a `PutBegin` would be.
            let slot = self.files.transfer_slot(user);
            let held = batch.bytes;
            let state = self.state.clone();
            let commit = async move {
                match slot {
                    Ok(_slot) => commit_files(&state, user, batch).await,
                    Err(busy) => vec![busy; batch.files.len()],
                }
            };
            tokio::pin!(commit);
            let answers = loop {
                let reading = self.stashed.is_none()
                    && paused.is_none()
                    && !shutdown.is_cancelled()
                    && next.files.len() < MAX_BATCH_FILES
                    && held + next.bytes < MAX_BATCH_BYTES;
                tokio::select! {
                    biased;
                    answers = &mut commit => break answers,
                    () = shutdown.cancelled(), if reading => {}
                    read = self.link.next(), if reading => {
                        self.take_put_file(read, user, &mut next, &mut paused);
                    }
                }
            };
            self.link.send_answers(answers).await?;
            // The user's bandwidth cap: no further frame is read before it allows. On
            // shutdown the files already read are still committed and answered below.
            if let Some(until) = paused.take() {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            if next.files.is_empty() {
                return Ok(());
            }
            batch = next;
        }
    }

    /// Adds the frame `read` to `batch` if it is a `PutFile`, charging it to the user's
    /// bandwidth (`paused`: until when the cap holds further frames back). Anything else
    /// (another request, an error, the end) is kept for after the answers before it, so
    /// responses keep request order; false then.
    fn take_put_file(
        &mut self,
        read: Option<Result<Frame<Request>, ProtoError>>,
        user: &str,
        batch: &mut Batch,
        paused: &mut Option<tokio::time::Instant>,
    ) -> bool {
        match read {
            Some(Ok(frame)) => match PutFile::from_frame(frame) {
                Ok(file) => {
                    let rate = self.state.config().limits.user_bytes_per_sec;
                    *paused = self
                        .state
                        .admission
                        .charge(user, file.data.len() as u64, rate);
                    batch.push(file);
                    true
                }
                Err(other) => {
                    self.stashed = Some(Some(Ok(other)));
                    false
                }
            },
            other => {
                self.stashed = Some(other);
                false
            }
        }
    }
}

/// Validates each file's path, commits the valid ones as one batch, and audits what was
/// committed; one answer per file, in order.
async fn commit_files(state: &ServerState, user: &str, batch: Batch) -> Vec<Response> {
    let Batch {
        files: batch,
        started,
        ..
    } = batch;
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
            Err(e) => answers.push(Some(Response::error(ErrorCode::InvalidPath, e.to_string()))),
        }
    }
    let paths: Vec<String> = files.iter().map(|f| f.path.as_str().to_owned()).collect();
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

impl<T: Transport> Session<T> {
    /// `GetFile`s: `first` and every `GetFile` that has already arrived behind it (up
    /// to [`MAX_BATCH_FILES`]), read together and answered with one flush, each with
    /// the whole file (`Response::File`) or why not, in request order. Each read stops
    /// at [`MAX_BATCH_BYTES`] (about a second's worth under `limits.user_bytes_per_sec`)
    /// and the next starts once its answers are sent. Each read holds a place of
    /// the user's `limits.max_transfers_per_user` and is paced by
    /// `limits.user_bytes_per_sec` like a chunked download. The first frame that is no
    /// `GetFile` is handled after these answers.
    pub(super) async fn get_files(
        &mut self,
        user: &str,
        first: String,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let mut paths = vec![first];
        while paths.len() < MAX_BATCH_FILES {
            let Some(read) = self.link.next().now_or_never() else {
                break;
            };
            match read {
                Some(Ok(Frame::Message(Request::GetFile { path }))) => paths.push(path),
                other => {
                    self.stashed = Some(other);
                    break;
                }
            }
        }
        // A path that does not parse is answered in its place.
        let parsed: Vec<Result<RelPath, Response>> = paths
            .iter()
            .map(|p| {
                RelPath::parse_entry(p)
                    .map_err(|e| Response::error(ErrorCode::InvalidPath, e.to_string()))
            })
            .collect();
        // Under a bandwidth cap, about a second's worth at a time, so that answers keep
        // coming while the cap paces them.
        let rate = self.state.config().limits.user_bytes_per_sec;
        let max_bytes = match usize::try_from(rate) {
            Ok(0) | Err(_) => MAX_BATCH_BYTES,
            Ok(rate) => rate.min(MAX_BATCH_BYTES),
        };
        let mut rest = &parsed[..];
        while !rest.is_empty() {
            // A kick or the shutdown: the peer hears which, as on every other path.
            if shutdown.is_cancelled() {
                return Err(End::Stopped);
            }
            let valid = rest.iter().take_while(|p| p.is_ok()).count();
            let (mut answers, bytes) = if valid == 0 {
                let Err(refusal) = &rest[0] else {
                    unreachable!("no valid path leads")
                };
                (vec![refusal.clone()], 0)
            } else {
                let wanted: Vec<RelPath> = rest[..valid]
                    .iter()
                    .filter_map(|p| p.as_ref().ok().cloned())
                    .collect();
                self.read_files(user, &wanted, max_bytes).await
            };
            if answers.is_empty() {
                // A backend must answer at least one; never loop on one that does not.
                answers.push(Response::error(
                    ErrorCode::Internal,
                    "the storage read no file; see the log",
                ));
                tracing::error!("read_wholes answered nothing");
            }
            rest = &rest[answers.len()..];
            if let Some(until) = self.state.admission.charge(user, bytes, rate) {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = shutdown.cancelled() => return Err(End::Stopped),
                }
            }
            self.link.send_answers(answers).await?;
        }
        Ok(())
    }

    /// Reads a leading run of `paths` (all of them, or up to `max_bytes`) under one
    /// transfer place: one answer per path read, and the file bytes read.
    async fn read_files(
        &mut self,
        user: &str,
        paths: &[RelPath],
        max_bytes: usize,
    ) -> (Vec<Response>, u64) {
        let _slot = match self.files.transfer_slot(user) {
            Ok(slot) => slot,
            // Refused whole, as a `GetBegin` would be.
            Err(busy) => return (vec![busy; paths.len()], 0),
        };
        let state = self.files.state();
        let reads = state.storage.read_wholes(user, paths, max_bytes).await;
        let mut bytes = 0;
        let answers = reads
            .into_iter()
            .zip(paths)
            .map(|(read, path)| match read {
                Ok(read) => {
                    let size = read.data.len() as u64;
                    audit::download(&audit::DownloadRecord {
                        user,
                        path: path.as_str(),
                        size,
                        bytes_sent: size,
                        wire_bytes: size,
                        resumed: false,
                        duration_ms: 0,
                    });
                    state.metrics.download_completed();
                    bytes += size;
                    Response::File {
                        digest: read.digest,
                        modified_unix: read.modified_unix,
                        data: read.data,
                    }
                }
                Err(e) => storage_error(&e),
            })
            .collect();
        (answers, bytes)
    }
}
