//! File requests and transfers on one connection.
//!
//! [`Files`] holds the connection's open transfers; the session hands it the logged-in
//! user and, where it answers by itself (chunk acknowledgements, streamed chunks), the
//! [`Link`](super::link::Link) to write to. Storage work is awaited (the local backend
//! runs it in `spawn_blocking`; decompression and compression run there too). Uploads
//! and their chunk pipeline are in [`upload`], downloads in [`download`]; requests that
//! open no transfer (list, mkdir, remove, rename, set the time) are here.
//!
//! Each transfer holds one of its user's `limits.max_transfers_per_user` places. With
//! `limits.user_bytes_per_sec`, every chunk is charged to the user's shared bucket:
//! an upload stops reading frames until the bucket allows (chunks already read are
//! still written and acknowledged), a download waits before sending. On shutdown the
//! chunks already read are written and the upload's state saved ([`Files::checkpoint`]).

mod download;
mod upload;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;
use xfer_proto::{Chunk, ErrorCode, LIST_PAGE, MANIFEST_PAGE, Response};

use super::reply::answer;
use crate::admission::TransferSlot;
use crate::audit;
use crate::connections::Tracked;
use crate::state::ServerState;
use crate::storage::{Download, RelPath, Storage, Upload};
pub(super) use upload::ChunkOutcome;
use upload::{ChunkDone, RUNNING_CHUNKS};

/// Transfers one connection may hold open at once.
pub const MAX_TRANSFERS: usize = 8;
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
        self.abandon_chunks().await;
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

    /// `Manifest`: the digests of chunks of an open transfer, held ones only for an
    /// upload.
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

    /// Closing what is already closed (e.g. ended by an error) is not an error.
    pub async fn close(&mut self, transfer_id: u64) -> Response {
        self.end_transfer(transfer_id).await;
        Response::Ok
    }
}
