//! The download engine: one remote file into one local path over an open session, in
//! three phases: begin, pipeline, commit.
//!
//! Data goes into `NAME.xfer-part` beside the destination, recorded as xfer's in
//! `NAME.xfer-part.json` ([`part`]; a user's own file of that name is never touched). On a re-run the part file's
//! chunks are re-verified against the server's manifest (the source of truth) and only
//! missing or bad ones are requested, in contiguous `GetChunks` runs with the next run
//! requested before the current one has arrived. The manifest must add up to the
//! announced whole-file digest ([`Digest::of_chunks`]) before any data is asked for; a
//! blocking writer task then decompresses each chunk (with `--compress`) and checks its
//! digest against the manifest before writing it, so every byte is hashed once and a
//! file whose chunks all match has the announced digest. When all is there, the part file is fsynced and renamed into
//! place, and the directory fsynced.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use xfer_disk::Writer;
use xfer_proto::{Chunk, ChunkEncoding, ChunkLayout, Digest, Request};

use super::part::{self, PartRecord};
use super::progress::Progress;
use super::ratelimit::Throttle;
use super::{
    Failure, FileFailure as _, Options, Outcome, batch_runs, chunk_layout, hash_file_async,
    part_path,
};
use crate::client::Client;
use crate::error::{ConflictError, IntegrityError, ProtocolError, RemoteError};
use crate::output::{escape_control, human_bytes};

/// Chunks per `GetChunks` request.
const RUN_CHUNKS: u64 = 32;
/// `GetChunks` requests outstanding at once (the next is asked for while one arrives).
const RUNS_AHEAD: usize = 2;
/// Chunks received ahead of the writer task.
const WRITE_AHEAD: usize = 8;

enum ToWriter {
    /// Chunk `index`, as it travelled (decompressed by the writer).
    Chunk(u64, Chunk),
    Finish,
}

/// A download the server opened, with its part file ready: what the pipeline and the
/// commit need to know.
struct Download<'a> {
    remote: &'a str,
    dest: &'a Path,
    /// Where the data goes until it is complete ([`part_path`]).
    part: PathBuf,
    id: u64,
    size: u64,
    layout: ChunkLayout,
    modified_unix: u64,
    /// The server's chunk digests, checked to add up to the announced digest.
    manifest: Arc<Vec<Digest>>,
    /// Bytes the part file already held, verified.
    verified: u64,
    /// Offset of the first chunk to fetch, when the part file held something.
    resumed_at: Option<u64>,
    /// What the part file's record says, forgotten once the file is in place.
    record: PartRecord,
    /// The part file, held open (and so locked, [`part::open_part`]) until it is moved
    /// into place, and checked to be what `part` still names then.
    held: File,
}

/// What `begin` found.
enum Begun<'a> {
    /// Nothing to fetch: the destination already holds this content.
    Finished(Outcome),
    /// Ready: the download, its open part file, and which chunks it holds verified.
    Ready(Download<'a>, File, Vec<bool>),
}

/// What the pipeline received, for the commit.
struct Received {
    /// Whole-file BLAKE3 of the complete, fsynced part file.
    digest: Digest,
    /// Bytes that travelled.
    transferred: u64,
}

/// Downloads `remote` into `dest` (the exact local path): `begin` opens the transfer
/// and the part file, `pipeline` fetches and writes what is missing, `commit` moves the
/// finished file into place.
///
/// # Errors
/// [`Failure::File`] when the download could not start or the destination conflicts
/// (the connection can go on); [`Failure::Fatal`] otherwise. A chunk that does not match
/// the manifest is an [`IntegrityError`]; the part file keeps its verified chunks.
pub async fn pull_file(
    client: &mut Client,
    remote: &str,
    dest: &Path,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, Failure> {
    let (download, file, good) = match begin(client, remote, dest, opts).await? {
        Begun::Finished(outcome) => return Ok(outcome),
        Begun::Ready(download, file, good) => (download, file, good),
    };
    let received = pipeline(client, &download, file, good, opts, progress).await?;
    commit(client, &download, received).await
}

/// Opens the transfer (`GetBegin`), checks the destination, fetches the manifest and
/// checks it against the announced digest, then opens the part file and re-verifies
/// what it holds. Every refusal before data flows closes the transfer and is a
/// [`Failure::File`].
async fn begin<'a>(
    client: &mut Client,
    remote: &'a str,
    dest: &'a Path,
    opts: &Options,
) -> Result<Begun<'a>, Failure> {
    let get = client
        .get_begin(remote)
        .await
        .with_context(|| format!("pulling `{remote}`"))
        .file_failure()?;
    let id = get.transfer_id;
    match prepare_destination(dest, get.digest, opts.force).await {
        Ok(None) => {}
        Ok(Some(outcome)) => {
            close_quietly(client, id).await?;
            // Same content: take the server's time, as a download would have.
            set_time(dest, get.modified_unix)
                .with_context(|| format!("setting the time of `{}`", dest.display()))
                .file_failure()?;
            return Ok(Begun::Finished(outcome));
        }
        Err(e) => {
            close_quietly(client, id).await?;
            return Err(Failure::File(e));
        }
    }
    let layout = chunk_layout(get.size, get.chunk_size)?;
    let size = get.size;
    let n = layout.count();
    let manifest: Vec<Digest> = client
        .manifest(id, 0, n)
        .await?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ProtocolError(format!("server's manifest of `{remote}` has gaps")))?;
    if Digest::of_chunks(&manifest) != get.digest {
        close_quietly(client, id).await?;
        return Err(Failure::File(
            IntegrityError(format!(
                "the server's chunk digests of `{remote}` do not add up to its BLAKE3 {}; \
                 nothing was downloaded",
                get.digest
            ))
            .into(),
        ));
    }
    let manifest = Arc::new(manifest);

    let part = part_path(dest);
    let record = PartRecord::new(
        client.server().to_string(),
        remote.to_owned(),
        size,
        get.digest.to_string(),
    );
    let file = match part::open_part(&part, &record) {
        Ok(f) => f,
        Err(e) => {
            close_quietly(client, id).await?;
            return Err(Failure::File(e));
        }
    };
    let held = file.try_clone().context("duplicating a file handle")?;
    let good = {
        let file = file.try_clone().context("duplicating a file handle")?;
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || verify_part(&file, layout, &manifest))
            .await
            .context("verification task failed")?
            .with_context(|| format!("reading `{}`", part.display()))?
    };
    let verified: u64 = (0..n)
        .filter(|&i| good[i as usize])
        .map(|i| layout.chunk_len(i))
        .sum();
    let resumed_at = (verified > 0).then(|| {
        (0..n)
            .find(|&i| !good[i as usize])
            .map_or(size, |i| layout.offset(i))
    });
    let download = Download {
        remote,
        dest,
        part,
        id,
        size,
        layout,
        modified_unix: get.modified_unix,
        manifest,
        verified,
        resumed_at,
        record,
        held,
    };
    Ok(Begun::Ready(download, file, good))
}

/// Fetches the chunks the part file lacks, in contiguous `GetChunks` runs with the next
/// run requested before the current one has arrived; a blocking writer task verifies
/// and writes each. Returns once the part file is complete and fsynced.
async fn pipeline(
    client: &mut Client,
    download: &Download<'_>,
    file: File,
    good: Vec<bool>,
    opts: &Options,
    progress: &Progress,
) -> Result<Received, Failure> {
    let Download {
        remote,
        id,
        size,
        layout,
        ref manifest,
        ..
    } = *download;
    let needed: Vec<u64> = (0..good.len() as u64)
        .filter(|&i| !good[i as usize])
        .collect();
    let (tx, rx) = mpsc::channel::<ToWriter>(WRITE_AHEAD);
    let writer = {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || write_chunks(file, layout, &manifest, good, rx))
    };

    if let Some(at) = download.resumed_at {
        progress.info(&format!(
            "{}: resuming at {} ({} verified)",
            escape_control(&download.dest.display().to_string()),
            human_bytes(at),
            human_bytes(download.verified)
        ));
    }
    let fp = progress.file(
        &download.dest.display().to_string(),
        size,
        download.verified,
    );
    let mut throttle = Throttle::new(opts.limit_rate);
    let mut runs = batch_runs(needed, RUN_CHUNKS).into_iter();
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut transferred = 0u64;
    let received = async {
        for run in runs.by_ref().take(RUNS_AHEAD) {
            request_run(client, id, run, opts.compress, &mut pending).await?;
        }
        client.flush().await?;
        while let Some(&(first, count)) = pending.front() {
            for index in first..first + count {
                let chunk = client.recv_chunk().await?;
                let (offset, len) = (layout.offset(index), layout.chunk_len(index) as usize);
                let raw_len = match chunk.encoding {
                    ChunkEncoding::Raw => chunk.data.len(),
                    ChunkEncoding::Zstd { raw_len } => raw_len as usize,
                };
                if chunk.transfer_id != id || chunk.offset != offset || raw_len != len {
                    return Err(ProtocolError(format!(
                        "server sent data at offset {} ({raw_len} bytes) where chunk {index} was expected",
                        chunk.offset,
                    ))
                    .into());
                }
                if chunk.digest != manifest[index as usize] {
                    return Err(IntegrityError(format!(
                        "chunk {index} of `{remote}` does not match the server's manifest"
                    ))
                    .into());
                }
                // The rate limit is on what crosses the network.
                let wait = throttle.take(chunk.data.len() as u64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                if tx.send(ToWriter::Chunk(index, chunk)).await.is_err() {
                    // The writer stopped: its own error says why.
                    return Ok(false);
                }
                transferred += len as u64;
                fp.inc(len as u64);
            }
            pending.pop_front();
            if let Some(run) = runs.next() {
                request_run(client, id, run, opts.compress, &mut pending).await?;
                client.flush().await?;
            }
        }
        anyhow::Ok(true)
    }
    .await;
    let complete = match received {
        Ok(c) => c,
        Err(e) => {
            drop(tx);
            // Keep the writer's error if it failed first (e.g. a bad chunk).
            return Err(match writer.await {
                Ok(Err(we)) => we.into(),
                _ => e.into(),
            });
        }
    };
    if complete {
        let _ = tx.send(ToWriter::Finish).await;
    }
    drop(tx);
    let digest = writer
        .await
        .context("writer task failed")??
        .ok_or_else(|| anyhow::anyhow!("download of `{remote}` stopped before it was complete"))?;
    fp.finish();
    Ok(Received {
        digest,
        transferred,
    })
}

/// Closes the transfer, moves the finished part file into place and forgets its record.
async fn commit(
    client: &mut Client,
    download: &Download<'_>,
    received: Received,
) -> Result<Outcome, Failure> {
    close_quietly(client, download.id).await?;
    let part = &download.part;
    if let Err(e) = part::still_names(part, &download.held) {
        // The record no longer speaks for what the name holds. The transfer is closed:
        // this file fails, the pull goes on.
        part::forget(part, &download.record);
        return Err(Failure::File(e));
    }
    install(part, download.dest, download.modified_unix)
        .with_context(|| format!("moving `{}` into place", part.display()))?;
    part::forget(part, &download.record);
    Ok(Outcome::Done {
        size: download.size,
        digest: received.digest,
        verified: download.verified,
        resumed_at: download.resumed_at,
        transferred: received.transferred,
    })
}

/// Checks the destination before downloading: `Some(UpToDate)` if it already holds
/// the same content, an error if it exists otherwise (without `force`) or is a directory.
async fn prepare_destination(dest: &Path, digest: Digest, force: bool) -> Result<Option<Outcome>> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("checking `{}`", dest.display())),
        Ok(meta) if meta.is_dir() => {
            Err(ConflictError(format!("{} is a directory", dest.display())).into())
        }
        Ok(_) if force => Ok(None),
        Ok(meta) => {
            if meta.is_file() && hash_file_async(dest).await? == digest {
                Ok(Some(Outcome::UpToDate))
            } else {
                Err(ConflictError(format!(
                    "{} exists; use --force to replace it",
                    dest.display()
                ))
                .into())
            }
        }
    }
}

/// Sends `Close`; a server error (e.g. the transfer is already closed) is ignored.
async fn close_quietly(client: &mut Client, id: u64) -> Result<()> {
    match client.close(id).await {
        Ok(()) => Ok(()),
        Err(e) if e.chain().any(|c| c.is::<RemoteError>()) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn request_run(
    client: &mut Client,
    transfer_id: u64,
    (first, count): (u64, u64),
    compress: bool,
    pending: &mut VecDeque<(u64, u64)>,
) -> Result<()> {
    client
        .feed_request(Request::GetChunks {
            transfer_id,
            first,
            count,
            compress,
        })
        .await?;
    pending.push_back((first, count));
    Ok(())
}

/// Re-verifies what a part file holds against the manifest (per chunk: present and
/// matching); trims the file if it is longer than the remote one.
fn verify_part(
    file: &File,
    layout: ChunkLayout,
    manifest: &[Digest],
) -> std::io::Result<Vec<bool>> {
    let size = layout.size();
    let n = manifest.len() as u64;
    let mut len = file.metadata()?.len();
    if len > size {
        file.set_len(size)?;
        len = size;
    }
    let mut good = vec![false; manifest.len()];
    let mut buf = vec![0u8; layout.chunk_size() as usize];
    for i in 0..n {
        let (offset, clen) = (layout.offset(i), layout.chunk_len(i) as usize);
        if offset + clen as u64 > len {
            break;
        }
        let data = &mut buf[..clen];
        file.read_exact_at(data, offset)?;
        good[i as usize] = Digest::of_chunk(data, offset, size) == Some(manifest[i as usize]);
    }
    Ok(good)
}

/// The writer task: verifies each chunk against the manifest and writes it. Returns the
/// whole-file digest (that of the manifest, which was checked against the announced
/// one) after `Finish`, with every chunk present and the part file fsynced, or `None`
/// when the sender went away without finishing.
///
/// If a flush or the final sync failed, the disk may not hold what was written though
/// it still reads back intact from memory, and the next run's fsync would not hear of
/// it: the part file is emptied, so the next run starts over.
fn write_chunks(
    file: File,
    layout: ChunkLayout,
    manifest: &[Digest],
    have: Vec<bool>,
    rx: mpsc::Receiver<ToWriter>,
) -> Result<Option<Digest>> {
    // A big file goes past the page cache where the filesystem allows it; the rest is
    // flushed as it fills, so the final sync finds little left.
    let mut writer = Writer::new(
        &file,
        layout.size(),
        xfer_disk::direct_from_env(),
        "xfer-writeback",
        |_| {},
    );
    let written = write_all_chunks(&file, &mut writer, layout, manifest, have, rx);
    let lost = match &written {
        Ok(Written::Complete) => {
            let synced = writer.finish().and_then(|()| file.sync_all());
            match synced {
                Ok(()) => return Ok(Some(Digest::of_chunks(manifest))),
                Err(e) => Some(e),
            }
        }
        _ => writer.finish().err(),
    };
    if let Some(e) = lost {
        let _ = file.set_len(0);
        return Err(e).context("syncing the part file (it was emptied: pull again)");
    }
    // Interrupted, or refused (a chunk that does not match): keep what was written for
    // the next run, if it is on the disk; the receiving side reports why.
    if file.sync_data().is_err() {
        let _ = file.set_len(0);
    }
    written.map(|_| None)
}

/// How [`write_all_chunks`] ended without an error.
enum Written {
    /// Every chunk is written and the file has its size: sync it.
    Complete,
    /// The sender went away first.
    Interrupted,
}

fn write_all_chunks(
    file: &File,
    writer: &mut Writer,
    layout: ChunkLayout,
    manifest: &[Digest],
    mut have: Vec<bool>,
    mut rx: mpsc::Receiver<ToWriter>,
) -> Result<Written> {
    let size = layout.size();
    loop {
        match rx.blocking_recv() {
            Some(ToWriter::Chunk(index, chunk)) => {
                let offset = layout.offset(index);
                // Bounded by the chunk's announced length, itself at most 1 MiB.
                let data = chunk
                    .into_raw()
                    .map_err(|e| ProtocolError(format!("server sent chunk {index}: {e}")))?
                    .data;
                if Digest::of_chunk(&data, offset, size) != Some(manifest[index as usize]) {
                    return Err(IntegrityError(format!(
                        "chunk {index} does not match the digest the server stored for it (damaged on the server's disk or on the way); the part file keeps the chunks verified so far: pull again, and if it fails the same way ask the server's admin to check its disk"
                    ))
                    .into());
                }
                writer
                    .write_at(file, &data, offset)
                    .context("writing the part file")?;
                have[index as usize] = true;
            }
            Some(ToWriter::Finish) => {
                if let Some(i) = have.iter().position(|&h| !h) {
                    return Err(ProtocolError(format!("chunk {i} never arrived")).into());
                }
                file.set_len(size).context("sizing the part file")?;
                return Ok(Written::Complete);
            }
            None => return Ok(Written::Interrupted),
        }
    }
}

/// Gives the local file at `path` the modification time `modified_unix`.
pub fn set_time(path: &Path, modified_unix: u64) -> std::io::Result<()> {
    // A server's time the system cannot represent is refused, never a panic.
    let time = UNIX_EPOCH
        .checked_add(Duration::from_secs(modified_unix))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the server's modification time {modified_unix} is out of range"),
            )
        })?;
    // futimens needs ownership, not write access: a read-only file gets its time too.
    File::open(path)?.set_modified(time)
}

/// Renames the finished part file over `dest`, sets its modification time, and fsyncs
/// the directory.
fn install(part: &Path, dest: &Path, modified_unix: u64) -> std::io::Result<()> {
    let _ = set_time(part, modified_unix);
    std::fs::rename(part, dest)?;
    File::open(super::dir_of(dest))?.sync_all()
}
