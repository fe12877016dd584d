//! The upload engine: one local file to one remote path over an open session, in three
//! phases: begin, pipeline, commit.
//!
//! `PutBegin` decides admission; on `PutReady` the server's manifest (if it holds
//! chunks) says what can be skipped. A blocking reader task reads the file in chunk-sized
//! blocks into recycled buffers, hashes each chunk once (the whole-file digest follows
//! from the chunk digests, [`Digest::of_chunks`]) and, with `--compress`, compresses
//! the chunks the server lacks, so neither hashing nor zstd runs on the async threads.
//! The async loop sends the chunks the server lacks, keeping up to [`PUT_WINDOW`]
//! unacknowledged, then commits with the whole-file digest.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use tokio::sync::mpsc;
use xfer_proto::{
    BufferPool, Chunk, ChunkBuf, ChunkLayout, Digest, ErrorCode, PUT_WINDOW, Response, SNIFF_LEN,
};

use super::progress::Progress;
use super::ratelimit::Throttle;
use super::resume::{self, FileIdentity, RecordWriter};
use super::{
    COMPRESS_LEVEL, Failure, FileFailure as _, Options, Outcome, chunk_layout, hash_file_async,
    must_send,
};
use crate::client::{Client, PutStart};
use crate::error::{ConflictError, ProtocolError, is_remote};
use crate::output::{escape_control, human_bytes};

/// Chunks read ahead of the send loop.
const READ_AHEAD: usize = 4;

/// What the reader hands the send loop for one chunk, in file order.
enum ReadChunk {
    /// The server already holds this chunk with the same digest: `len` bytes verified.
    Held(u64),
    /// A chunk to send (compressed when asked and worth it); `len` is its size in the file.
    Send { chunk: Chunk, len: u64 },
}

/// What the reader needs to know about the transfer.
struct ReadPlan {
    transfer_id: u64,
    size: u64,
    layout: ChunkLayout,
    /// The server's manifest of what it holds (empty when nothing).
    held: Vec<Option<Digest>>,
    /// Digests an interrupted run of this push recorded for the unchanged file, by
    /// chunk index (empty when none, [`resume`]).
    recorded: Vec<Option<Digest>>,
    compress: bool,
}

impl ReadPlan {
    /// The digest of chunk `index` without reading it: recorded by an earlier run of
    /// this push and held by the server with that very digest.
    fn known(&self, index: u64) -> Option<Digest> {
        let i = usize::try_from(index).ok()?;
        let recorded = (*self.recorded.get(i)?)?;
        (self.held.get(i).copied().flatten() == Some(recorded)).then_some(recorded)
    }
}

/// Where an upload goes: a path in the user's own space (`push`), or another user's
/// inbox (`send`). Only the request that opens the transfer differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// This exact path in the user's own space (`PutBegin`).
    Path(&'a str),
    /// `inbox/<this user>/<name>` in the space of user `to` (`SendBegin`).
    Inbox {
        /// The recipient.
        to: &'a str,
        /// The file name there (one component).
        name: &'a str,
    },
}

impl<'a> From<&'a str> for Destination<'a> {
    fn from(path: &'a str) -> Self {
        Destination::Path(path)
    }
}

impl<'a> From<&'a String> for Destination<'a> {
    fn from(path: &'a String) -> Self {
        Destination::Path(path)
    }
}

impl Destination<'_> {
    /// How messages and the progress bar name it: the path, or `@USER/NAME`.
    pub fn label(&self) -> String {
        match self {
            Destination::Path(p) => (*p).to_string(),
            Destination::Inbox { to, name } => format!("@{to}/{name}"),
        }
    }

    /// What the upload does, for error context: ``pushing to `a/b` `` or
    /// ``sending `b` to bob``.
    pub fn action(&self) -> String {
        match self {
            Destination::Path(p) => format!("pushing to `{p}`"),
            Destination::Inbox { to, name } => format!("sending `{name}` to {to}"),
        }
    }

    /// Why a different file already there stops the upload, and what to do.
    fn conflict(&self) -> String {
        match self {
            Destination::Path(p) => format!("{p} exists; use --force to replace it"),
            Destination::Inbox { to, name } => {
                format!("{to}'s inbox already has {name} from you; use --force to replace it")
            }
        }
    }

    fn is_inbox(&self) -> bool {
        matches!(self, Destination::Inbox { .. })
    }

    /// Opens (or resumes) the transfer with `PutBegin` or `SendBegin`.
    async fn begin(
        &self,
        client: &mut Client,
        size: u64,
        force: bool,
        head: Bytes,
    ) -> anyhow::Result<PutStart> {
        match self {
            Destination::Path(p) => client.put_begin(p, size, force, head).await,
            Destination::Inbox { to, name } => client.send_begin(to, name, size, force, head).await,
        }
    }
}

/// An upload the server admitted: what the pipeline and the commit need to know.
struct Upload<'a> {
    local: &'a Path,
    /// How progress and messages name the destination ([`Destination::label`]).
    label: String,
    size: u64,
    transfer_id: u64,
    /// The server held chunks of an earlier attempt: this run resumes it.
    resuming: bool,
    /// The local file's modification time, given to the committed file (`push` only).
    modified_unix: Option<u64>,
    /// This run keeps a resume record, removed once committed.
    recorded: bool,
}

/// What `begin` found.
enum Begun<'a> {
    /// Nothing to send: the destination already holds this content (and the local
    /// file has this modification time).
    Finished(Outcome, Option<u64>),
    /// Admitted: the upload, and the open file with the reader's plan and record.
    Ready(Upload<'a>, File, ReadPlan, Option<RecordWriter>),
}

/// What the pipeline sent, for the commit.
struct Sent {
    /// Whole-file BLAKE3, from the chunk digests.
    digest: Digest,
    /// Bytes the server already held with the same digest.
    verified: u64,
    /// Bytes that travelled.
    transferred: u64,
    /// Offset of the first chunk sent, if any was.
    first_sent: Option<u64>,
}

/// Uploads `local` to `remote` (the exact destination path, or another user's inbox):
/// `begin` opens the transfer, `pipeline` streams what the server lacks, `commit` seals
/// it with the whole-file digest.
///
/// # Errors
/// [`Failure::File`] when the upload was refused or conflicts before any data flowed
/// (the connection can go on); [`Failure::Fatal`] otherwise.
pub async fn push_file<'a>(
    client: &mut Client,
    local: &Path,
    remote: impl Into<Destination<'a>>,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, Failure> {
    let dest = remote.into();
    let (upload, file, plan, record) = match begin(client, local, dest, opts).await? {
        Begun::Finished(outcome, modified_unix) => {
            keep_time(client, dest, modified_unix)
                .await
                .file_failure()?;
            return Ok(outcome);
        }
        Begun::Ready(upload, file, plan, record) => (upload, file, plan, record),
    };
    let sent = pipeline(client, &upload, file, (plan, record), opts, progress).await?;
    let outcome = commit(client, &upload, sent).await?;
    if let (true, Some(records)) = (upload.recorded, &opts.records) {
        resume::forget(records, local, &upload.label);
    }
    keep_time(client, dest, upload.modified_unix)
        .await
        .file_failure()?;
    Ok(outcome)
}

/// A file's modification time in whole seconds since the Unix epoch (`None` before it).
pub fn modified_secs(meta: &std::fs::Metadata) -> Option<u64> {
    let t = meta.modified().ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// Gives the remote file at `dest` the local file's time (rsync `-t`); nothing for an
/// inbox, whose files carry their arrival time.
async fn keep_time(
    client: &mut Client,
    dest: Destination<'_>,
    modified_unix: Option<u64>,
) -> anyhow::Result<()> {
    if let (Destination::Path(p), Some(t)) = (dest, modified_unix) {
        client
            .set_modified(p, t)
            .await
            .with_context(|| format!("setting the modification time of `{p}`"))?;
    }
    Ok(())
}

/// Opens the local file and the transfer (`PutBegin` or `SendBegin`), and fetches the
/// server's manifest when it holds chunks of an earlier attempt. A destination that
/// already holds the same content is [`Begun::Finished`]; another one is a conflict.
async fn begin<'a>(
    client: &mut Client,
    local: &'a Path,
    dest: Destination<'_>,
    opts: &Options,
) -> Result<Begun<'a>, Failure> {
    let label = dest.label();
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

    let start = match dest.begin(client, size, opts.force, head).await {
        // "no user carol" says everything; "sending `f` to carol: " would say it twice.
        Err(e) if dest.is_inbox() && is_remote(&e, ErrorCode::NotFound) => Err(e),
        r => r.with_context(|| dest.action()),
    }
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
                return Ok(Begun::Finished(Outcome::UpToDate, modified_secs(&meta)));
            }
            return Err(Failure::File(ConflictError(dest.conflict()).into()));
        }
        PutStart::Ready {
            transfer_id,
            chunk_size,
            chunks_held,
        } => (transfer_id, chunk_size, chunks_held),
    };
    let layout = chunk_layout(size, chunk_size)?;
    let n = layout.count();
    let held = if chunks_held > 0 {
        client.manifest(transfer_id, 0, n).await?
    } else {
        Vec::new()
    };
    // Only a file of several chunks is worth a record: one chunk is sent whole anyway.
    let record = match &opts.records {
        Some(records) if n > 1 => {
            let (records, local, dest, id) = (
                records.clone(),
                local.to_owned(),
                label.clone(),
                FileIdentity::of(&meta),
            );
            let chunk_size = u64::from(chunk_size);
            tokio::task::spawn_blocking(move || {
                resume::open(&records, &local, &dest, id, chunk_size, n, chunks_held > 0)
            })
            .await
            .ok()
        }
        _ => None,
    };
    let upload = Upload {
        local,
        label,
        size,
        transfer_id,
        resuming: chunks_held > 0,
        modified_unix: modified_secs(&meta),
        recorded: record.is_some(),
    };
    let (recorded, writer) = record.map_or((Vec::new(), None), |r| (r.earlier, r.writer));
    let plan = ReadPlan {
        transfer_id,
        size,
        layout,
        held,
        recorded,
        compress: opts.compress,
    };
    Ok(Begun::Ready(upload, file, plan, writer))
}

/// Streams the file: a blocking reader task reads, hashes and (when asked) compresses
/// each chunk; this loop sends those the server lacks, keeping up to [`PUT_WINDOW`]
/// unacknowledged, within the rate limit, and waits for the last acknowledgement.
async fn pipeline(
    client: &mut Client,
    upload: &Upload<'_>,
    file: File,
    (plan, record): (ReadPlan, Option<RecordWriter>),
    opts: &Options,
    progress: &Progress,
) -> Result<Sent, Failure> {
    let (local, transfer_id) = (upload.local, upload.transfer_id);
    if upload.resuming {
        let count = plan.layout.count();
        let bytes_of = |f: &dyn Fn(u64) -> bool| -> u64 {
            (0..count)
                .filter(|&i| f(i))
                .map(|i| plan.layout.chunk_len(i))
                .sum()
        };
        let held = bytes_of(&|i| plan.held.get(i as usize).is_some_and(Option::is_some));
        let known = bytes_of(&|i| plan.known(i).is_some());
        let by_record = if known > 0 {
            format!(
                ", {} of it by the record of the interrupted run",
                human_bytes(known)
            )
        } else {
            String::new()
        };
        progress.info(&format!(
            "{}: resuming; the server holds {} of {} (each chunk is checked against this file{by_record})",
            escape_control(&upload.label),
            human_bytes(held),
            human_bytes(upload.size)
        ));
    }
    let (tx, mut rx) = mpsc::channel::<std::io::Result<ReadChunk>>(READ_AHEAD);
    let reader = tokio::task::spawn_blocking(move || read_chunks(&file, &plan, record, &tx));

    let fp = progress.file(&upload.label, upload.size, 0);
    let mut throttle = Throttle::new(opts.limit_rate);
    let mut in_flight: VecDeque<(u64, u64)> = VecDeque::with_capacity(PUT_WINDOW);
    let mut verified = 0u64;
    let mut transferred = 0u64;
    let mut first_sent: Option<u64> = None;
    while let Some(item) = rx.recv().await {
        let (chunk, len) = match item.with_context(|| format!("reading `{}`", local.display()))? {
            ReadChunk::Held(len) => {
                verified += len;
                fp.held(len);
                continue;
            }
            ReadChunk::Send { chunk, len } => (chunk, len),
        };
        let offset = chunk.offset;
        first_sent.get_or_insert(offset);
        while in_flight.len() >= PUT_WINDOW {
            client.flush().await?;
            let len = await_ack(client, transfer_id, &mut in_flight).await?;
            fp.inc(len);
        }
        // The rate limit is on what crosses the network.
        let wait = throttle.take(chunk.data.len() as u64);
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
        client.feed_chunk(chunk).await?;
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
    let digests = reader
        .await
        .context("file reader task failed")?
        .ok_or_else(|| anyhow!("reading `{}` stopped early", local.display()))?;
    client.flush().await?;
    while !in_flight.is_empty() {
        let len = await_ack(client, transfer_id, &mut in_flight).await?;
        fp.inc(len);
    }
    let digest = Digest::of_chunks(&digests);
    fp.finish();
    Ok(Sent {
        digest,
        verified,
        transferred,
        first_sent,
    })
}

/// Commits the transfer with the whole-file digest and checks that the server stored
/// exactly what was sent.
async fn commit(client: &mut Client, upload: &Upload<'_>, sent: Sent) -> Result<Outcome, Failure> {
    let (size, digest) = (upload.size, sent.digest);
    let (committed_size, committed) = client
        .put_commit(upload.transfer_id, digest)
        .await
        .context("committing")?;
    if committed_size != size || committed != digest {
        return Err(ProtocolError(format!(
            "server committed `{}` as {committed_size} bytes with BLAKE3 {committed}, \
             but this client sent {size} bytes with BLAKE3 {digest}",
            upload.label
        ))
        .into());
    }
    Ok(Outcome::Done {
        size,
        digest,
        verified: sent.verified,
        resumed_at: upload.resuming.then(|| sent.first_sent.unwrap_or(size)),
        transferred: sent.transferred,
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

/// Spare chunk buffers the reader keeps: about as many as are in flight at once (the
/// read-ahead, the one being sent and the one being read).
const KEEP_READ_BUFFERS: usize = READ_AHEAD + 2;

/// Reads every chunk in order into pooled buffers, hashing each, and hands it to the
/// send loop (as a chunk to send, compressed if asked, or as one the server holds).
/// A chunk whose digest is known from the record of an interrupted run
/// ([`ReadPlan::known`]) is not read. Each digest goes into this run's `record`.
/// Returns every chunk's digest, or `None` when it stopped early: after sending an
/// error, or because the send loop has gone away.
fn read_chunks(
    file: &File,
    plan: &ReadPlan,
    mut record: Option<RecordWriter>,
    tx: &mpsc::Sender<std::io::Result<ReadChunk>>,
) -> Option<Vec<Digest>> {
    let n = plan.layout.count();
    let mut digests = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let pool = BufferPool::new(KEEP_READ_BUFFERS);
    for index in 0..n {
        if let Some(digest) = plan.known(index) {
            digests.push(digest);
            RecordWriter::add(&mut record, index, &digest);
            let held = ReadChunk::Held(plan.layout.chunk_len(index));
            if tx.blocking_send(Ok(held)).is_err() {
                return None;
            }
            continue;
        }
        // Whether the file had settled before this read ([`resume::racy_margin`]).
        let settled = record.as_mut().is_some_and(RecordWriter::settled);
        // A recycled buffer, when one is back (once its frame is encoded or the chunk
        // compressed).
        let buf = pool.take(plan.layout.chunk_len(index) as usize);
        let item = read_chunk(file, plan, index, buf).map(|(buf, digest)| {
            digests.push(digest);
            if settled {
                RecordWriter::add(&mut record, index, &digest);
            }
            prepare(plan, index, pool.bytes(buf), digest)
        });
        let failed = item.is_err();
        if tx.blocking_send(item).is_err() || failed {
            return None;
        }
    }
    Some(digests)
}

/// Reads chunk `index` into `buf` and hashes it.
fn read_chunk(
    file: &File,
    plan: &ReadPlan,
    index: u64,
    mut buf: ChunkBuf,
) -> std::io::Result<(ChunkBuf, Digest)> {
    let offset = plan.layout.offset(index);
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(e.kind(), "the file shrank while it was being sent")
        } else {
            e
        }
    })?;
    let digest = Digest::of_chunk(&buf, offset, plan.size).ok_or_else(|| {
        std::io::Error::other(format!(
            "chunk size {} cannot be hashed as a BLAKE3 subtree",
            plan.layout.chunk_size()
        ))
    })?;
    Ok((buf, digest))
}

/// What the send loop gets for a chunk read and hashed: skip it if the server holds it
/// with this digest, else send it (compressed when asked and worth it).
fn prepare(plan: &ReadPlan, index: u64, data: Bytes, digest: Digest) -> ReadChunk {
    let (offset, len) = (plan.layout.offset(index), plan.layout.chunk_len(index));
    if !must_send(&plan.held, index, &digest) {
        return ReadChunk::Held(len);
    }
    let chunk = Chunk::raw(plan.transfer_id, offset, digest, data);
    ReadChunk::Send {
        chunk: if plan.compress {
            chunk.compress(COMPRESS_LEVEL)
        } else {
            chunk
        },
        len,
    }
}
