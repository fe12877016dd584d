//! The upload engine: one local file to one remote path over an open session.
//!
//! `PutBegin` decides admission; on `PutReady` the server's manifest (if it holds
//! chunks) says what can be skipped. A blocking reader task reads the file in chunk-sized
//! blocks and hashes each chunk; a second blocking task computes the whole-file BLAKE3
//! from the same buffers. The async loop sends the chunks the server lacks, keeping up
//! to [`PUT_WINDOW`] unacknowledged, then commits with the whole-file digest.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use tokio::sync::mpsc;
use xfer_proto::{Chunk, Digest, PUT_WINDOW, Response, SNIFF_LEN};

use super::progress::Progress;
use super::ratelimit::Throttle;
use super::{
    Failure, FileFailure as _, Options, Outcome, check_chunk_size, chunk_count, chunk_range,
    hash_file_async, must_send,
};
use crate::client::{Client, PutStart};
use crate::error::{ConflictError, ProtocolError};

/// Chunks read ahead of the send loop.
const READ_AHEAD: usize = 4;

/// One chunk read and hashed.
type ReadChunk = (u64, Bytes, Digest);

/// Uploads `local` to `remote` (the exact destination path).
///
/// # Errors
/// [`Failure::File`] when the upload was refused or conflicts before any data flowed
/// (the connection can go on); [`Failure::Fatal`] otherwise.
pub async fn push_file(
    client: &mut Client,
    local: &Path,
    remote: &str,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, Failure> {
    let file = File::open(local)
        .with_context(|| format!("opening `{}`", local.display()))
        .file_failure()?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading `{}`", local.display()))
        .file_failure()?;
    if !meta.is_file() {
        return Err(Failure::File(anyhow!(
            "`{}` is not a regular file",
            local.display()
        )));
    }
    let size = meta.len();
    let head = read_head(&file, size)
        .with_context(|| format!("reading `{}`", local.display()))
        .file_failure()?;

    let start = client
        .put_begin(remote, size, opts.force, head)
        .await
        .with_context(|| format!("pushing to `{remote}`"))
        .file_failure()?;
    let (transfer_id, chunk_size, chunks_held) = match start {
        PutStart::Exists {
            size: remote_size,
            digest,
        } => {
            if remote_size == size
                && let Some(remote_digest) = digest
                && hash_file_async(local).await.file_failure()? == remote_digest
            {
                return Ok(Outcome::UpToDate);
            }
            return Err(Failure::File(
                ConflictError(format!("{remote} exists; use --force to replace it")).into(),
            ));
        }
        PutStart::Ready {
            transfer_id,
            chunk_size,
            chunks_held,
        } => (transfer_id, chunk_size, chunks_held),
    };
    check_chunk_size(chunk_size)?;
    let n = chunk_count(size, chunk_size);
    let held = if chunks_held > 0 {
        client.manifest(transfer_id, 0, n).await?
    } else {
        Vec::new()
    };

    let (tx, mut rx) = mpsc::channel::<std::io::Result<ReadChunk>>(READ_AHEAD);
    let (whole_tx, whole_rx) = std::sync::mpsc::sync_channel::<Bytes>(READ_AHEAD * 2);
    let reader =
        tokio::task::spawn_blocking(move || read_chunks(&file, size, chunk_size, &tx, &whole_tx));
    let hasher = tokio::task::spawn_blocking(move || {
        let mut h = Digest::hasher();
        while let Ok(b) = whole_rx.recv() {
            h.update(&b);
        }
        h.finalize()
    });

    let fp = progress.file(remote, size, 0);
    let mut throttle = Throttle::new(opts.limit_rate);
    let mut in_flight: VecDeque<(u64, u64)> = VecDeque::with_capacity(PUT_WINDOW);
    let mut verified = 0u64;
    let mut transferred = 0u64;
    let mut first_sent: Option<u64> = None;
    while let Some(item) = rx.recv().await {
        let (index, data, digest) =
            item.with_context(|| format!("reading `{}`", local.display()))?;
        let (offset, len) = chunk_range(size, chunk_size, index);
        let len = len as u64;
        if !must_send(&held, index, &digest) {
            verified += len;
            fp.inc(len);
            continue;
        }
        first_sent.get_or_insert(offset);
        while in_flight.len() >= PUT_WINDOW {
            client.flush().await?;
            let len = await_ack(client, transfer_id, &mut in_flight).await?;
            fp.inc(len);
        }
        let wait = throttle.take(len);
        if !wait.is_zero() {
            client.flush().await?;
            // Count acknowledgements while waiting, so progress follows the server.
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    ack = await_ack(client, transfer_id, &mut in_flight), if !in_flight.is_empty() => fp.inc(ack?),
                }
            }
        }
        client
            .feed_chunk(Chunk::raw(transfer_id, offset, digest, data))
            .await?;
        in_flight.push_back((offset, len));
        transferred += len;
        // Take in the acknowledgements that are already here (never waits).
        while !in_flight.is_empty() {
            match client.try_recv_response() {
                Some(resp) => fp.inc(take_ack(resp?, transfer_id, &mut in_flight)?),
                None => break,
            }
        }
    }
    reader.await.context("file reader task failed")?;
    client.flush().await?;
    while !in_flight.is_empty() {
        let len = await_ack(client, transfer_id, &mut in_flight).await?;
        fp.inc(len);
    }
    let digest = hasher.await.context("hashing task failed")?;
    fp.finish();

    let (committed_size, committed) = client
        .put_commit(transfer_id, digest)
        .await
        .context("committing")?;
    if committed_size != size || committed != digest {
        return Err(ProtocolError(format!(
            "server committed `{remote}` as {committed_size} bytes with BLAKE3 {committed}, \
             but this client sent {size} bytes with BLAKE3 {digest}"
        ))
        .into());
    }
    Ok(Outcome::Done {
        size,
        digest,
        verified,
        resumed_at: (chunks_held > 0).then(|| first_sent.unwrap_or(size)),
        transferred,
    })
}

/// Waits for one `ChunkAck` of `transfer_id` and removes its chunk from `in_flight`;
/// returns that chunk's length.
///
/// # Cancel safety
/// Cancel-safe: a partly received frame stays in the connection's buffer.
async fn await_ack(
    client: &mut Client,
    transfer_id: u64,
    in_flight: &mut VecDeque<(u64, u64)>,
) -> anyhow::Result<u64> {
    take_ack(client.recv_response().await?, transfer_id, in_flight)
}

/// Checks that `resp` acknowledges a chunk in flight and removes it; returns its length.
fn take_ack(
    resp: Response,
    transfer_id: u64,
    in_flight: &mut VecDeque<(u64, u64)>,
) -> anyhow::Result<u64> {
    match resp {
        Response::ChunkAck {
            transfer_id: t,
            offset,
        } if t == transfer_id => {
            let pos = in_flight
                .iter()
                .position(|(o, _)| *o == offset)
                .ok_or_else(|| {
                    ProtocolError(format!(
                        "server acknowledged offset {offset}, which was not sent"
                    ))
                })?;
            let (_, len) = in_flight.remove(pos).expect("position is in range");
            Ok(len)
        }
        _ => Err(ProtocolError(
            "server sent an unexpected reply instead of a chunk acknowledgement".into(),
        )
        .into()),
    }
}

/// The first [`SNIFF_LEN`] bytes (or fewer) for the server's content-type check.
fn read_head(file: &File, size: u64) -> std::io::Result<Bytes> {
    let len = size.min(SNIFF_LEN as u64) as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(Bytes::from(buf))
}

/// Reads every chunk in order, hashing each, and hands it to the send loop and to the
/// whole-file hasher. Stops quietly when the send loop has gone away.
fn read_chunks(
    file: &File,
    size: u64,
    chunk_size: u32,
    tx: &mpsc::Sender<std::io::Result<ReadChunk>>,
    whole: &std::sync::mpsc::SyncSender<Bytes>,
) {
    for index in 0..chunk_count(size, chunk_size) {
        let (offset, len) = chunk_range(size, chunk_size, index);
        let mut buf = vec![0u8; len];
        let item = match file.read_exact_at(&mut buf, offset) {
            Ok(()) => {
                let data = Bytes::from(buf);
                let digest = Digest::of(&data);
                if whole.send(data.clone()).is_err() {
                    return;
                }
                Ok((index, data, digest))
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(std::io::Error::new(
                e.kind(),
                "the file shrank while it was being sent",
            )),
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
    }
}
