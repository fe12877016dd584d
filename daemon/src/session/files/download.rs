//! Downloads: `GetBegin` and the chunks `GetChunks` asks for. The next chunk is read
//! (and, when asked, compressed) in a task while the current one is sent.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use xfer_proto::{Chunk, ChunkEncoding, ErrorCode, Response};

use super::{DownloadTransfer, Files, Transfer, no_transfer, parse_entry};
use crate::connections::{Direction, Registration};
use crate::session::link::{Link, Transport};
use crate::session::reply::{End, answer, internal_error, storage_error};
use crate::storage::{self, StorageError};

/// Chunk reads of a download in flight at once: the next chunk to send and the two
/// after it.
const READ_AHEAD: u64 = 3;

/// zstd level for downloads that ask for compression: the protocol's, the cheapest
/// level, because the server compresses for every such client.
use xfer_proto::COMPRESS_LEVEL;

impl Files {
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
        // While a chunk is sent the next ones are read, up to `READ_AHEAD` reads at
        // once: a read past the page cache waits for the disk, and one wait at a time
        // would leave the link idle (bench/RESULTS.md).
        let mut reads = std::collections::VecDeque::with_capacity(READ_AHEAD as usize);
        let mut queued = first;
        for index in first..end {
            while queued < end && queued < index.saturating_add(READ_AHEAD) {
                if shutdown.is_cancelled() && queued > index {
                    break;
                }
                reads.push_back(read(queued));
                queued += 1;
            }
            let current = reads
                .pop_front()
                .expect("the chunk being sent was read")
                .await;
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
            link.send_chunk(chunk).await?;
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
