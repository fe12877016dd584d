//! The download engine: one remote file into one local path over an open session.
//!
//! Data goes into `NAME.xfer-part` beside the destination. On a re-run the part file's
//! chunks are re-verified against the server's manifest (the source of truth) and only
//! missing or bad ones are requested, in contiguous `GetChunks` runs with the next run
//! requested before the current one has arrived. A blocking writer task checks each
//! chunk's BLAKE3 against the manifest before writing it, and feeds the whole-file
//! hasher in file order. When all is there and the whole-file digest matches, the part
//! file is fsynced and renamed into place, and the directory fsynced.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use tokio::sync::mpsc;
use xfer_proto::{Digest, Request};

use super::progress::Progress;
use super::ratelimit::Throttle;
use super::{
    Failure, FileFailure as _, Options, Outcome, batch_runs, check_chunk_size, chunk_count,
    chunk_range, hash_file_async, part_path,
};
use crate::client::Client;
use crate::error::{ConflictError, IntegrityError, ProtocolError, RemoteError};

/// Chunks per `GetChunks` request.
const RUN_CHUNKS: u64 = 32;
/// `GetChunks` requests outstanding at once (the next is asked for while one arrives).
const RUNS_AHEAD: usize = 2;
/// Chunks received ahead of the writer task.
const WRITE_AHEAD: usize = 8;

enum ToWriter {
    Chunk(u64, Bytes),
    Finish,
}

/// What the part file already holds, from [`verify_part`].
struct PartState {
    /// Per chunk: present and matching the manifest.
    good: Vec<bool>,
    /// Whole-file hasher fed with chunks `0..hashed` (a good prefix).
    hasher: xfer_proto::checksum::Hasher,
    hashed: u64,
}

/// Downloads `remote` into `dest` (the exact local path).
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
            return Ok(outcome);
        }
        Err(e) => {
            close_quietly(client, id).await?;
            return Err(Failure::File(e));
        }
    }
    check_chunk_size(get.chunk_size)?;
    let (size, chunk_size) = (get.size, get.chunk_size);
    let n = chunk_count(size, chunk_size);
    let manifest: Vec<Digest> = client
        .manifest(id, 0, n)
        .await?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ProtocolError(format!("server's manifest of `{remote}` has gaps")))?;
    let manifest = std::sync::Arc::new(manifest);

    let part = part_path(dest);
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
    {
        Ok(f) => f,
        Err(e) => {
            close_quietly(client, id).await?;
            let e = anyhow::Error::new(e).context(format!("opening `{}`", part.display()));
            return Err(Failure::File(e));
        }
    };
    let state = {
        let file = file.try_clone().context("duplicating a file handle")?;
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || verify_part(&file, size, chunk_size, &manifest))
            .await
            .context("verification task failed")?
            .with_context(|| format!("reading `{}`", part.display()))?
    };
    let needed: Vec<u64> = (0..n).filter(|&i| !state.good[i as usize]).collect();
    let verified: u64 = (0..n)
        .filter(|&i| state.good[i as usize])
        .map(|i| chunk_range(size, chunk_size, i).1 as u64)
        .sum();
    let resumed_at = (verified > 0).then(|| {
        needed
            .first()
            .map_or(size, |&i| chunk_range(size, chunk_size, i).0)
    });

    let (tx, rx) = mpsc::channel::<ToWriter>(WRITE_AHEAD);
    let writer = {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || {
            write_chunks(file, size, chunk_size, &manifest, state, rx)
        })
    };

    let fp = progress.file(&dest.display().to_string(), size, verified);
    let mut throttle = Throttle::new(opts.limit_rate);
    let mut runs = batch_runs(needed, RUN_CHUNKS).into_iter();
    let mut pending: VecDeque<(u64, u64)> = VecDeque::new();
    let mut transferred = 0u64;
    let received = async {
        for run in runs.by_ref().take(RUNS_AHEAD) {
            request_run(client, id, run, &mut pending).await?;
        }
        client.flush().await?;
        while let Some(&(first, count)) = pending.front() {
            for index in first..first + count {
                let chunk = client.recv_chunk().await?;
                let (offset, len) = chunk_range(size, chunk_size, index);
                if chunk.transfer_id != id || chunk.offset != offset || chunk.data.len() != len {
                    return Err(ProtocolError(format!(
                        "server sent data at offset {} ({} bytes) where chunk {index} was expected",
                        chunk.offset,
                        chunk.data.len()
                    ))
                    .into());
                }
                if chunk.digest != manifest[index as usize] {
                    return Err(IntegrityError(format!(
                        "chunk {index} of `{remote}` does not match the server's manifest"
                    ))
                    .into());
                }
                let wait = throttle.take(len as u64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                if tx.send(ToWriter::Chunk(index, chunk.data)).await.is_err() {
                    // The writer stopped: its own error says why.
                    return Ok(false);
                }
                transferred += len as u64;
                fp.inc(len as u64);
            }
            pending.pop_front();
            if let Some(run) = runs.next() {
                request_run(client, id, run, &mut pending).await?;
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
    if digest != get.digest {
        let _ = std::fs::remove_file(&part);
        return Err(IntegrityError(format!(
            "`{remote}` arrived with BLAKE3 {digest}, but the server announced {}; \
             the partial download was removed, re-run to fetch it again",
            get.digest
        ))
        .into());
    }
    close_quietly(client, id).await?;
    install(&part, dest, get.modified_unix)
        .with_context(|| format!("moving `{}` into place", part.display()))?;
    Ok(Outcome::Done {
        size,
        digest,
        verified,
        resumed_at,
        transferred,
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
    pending: &mut VecDeque<(u64, u64)>,
) -> Result<()> {
    client
        .feed_request(Request::GetChunks {
            transfer_id,
            first,
            count,
            compress: false,
        })
        .await?;
    pending.push_back((first, count));
    Ok(())
}

/// Re-verifies what a part file holds against the manifest; trims it if it is longer
/// than the file. Chunks of a good prefix are also fed to the whole-file hasher.
fn verify_part(
    file: &File,
    size: u64,
    chunk_size: u32,
    manifest: &[Digest],
) -> std::io::Result<PartState> {
    let n = manifest.len() as u64;
    let mut len = file.metadata()?.len();
    if len > size {
        file.set_len(size)?;
        len = size;
    }
    let mut good = vec![false; manifest.len()];
    let mut hasher = Digest::hasher();
    let mut hashed = 0u64;
    let mut buf = vec![0u8; chunk_size as usize];
    for i in 0..n {
        let (offset, clen) = chunk_range(size, chunk_size, i);
        if offset + clen as u64 > len {
            break;
        }
        let data = &mut buf[..clen];
        file.read_exact_at(data, offset)?;
        if Digest::of(data) == manifest[i as usize] {
            good[i as usize] = true;
            if hashed == i {
                hasher.update(data);
                hashed += 1;
            }
        }
    }
    Ok(PartState {
        good,
        hasher,
        hashed,
    })
}

/// The writer task: verifies each chunk against the manifest, writes it, and feeds the
/// whole-file hasher in order (reading back chunks the part file already held). Returns
/// the whole-file digest after `Finish`, with the part file fsynced, or `None` when the
/// sender went away without finishing.
fn write_chunks(
    file: File,
    size: u64,
    chunk_size: u32,
    manifest: &[Digest],
    state: PartState,
    mut rx: mpsc::Receiver<ToWriter>,
) -> Result<Option<Digest>> {
    let PartState {
        good,
        mut hasher,
        mut hashed,
    } = state;
    let mut buf = Vec::new();
    let mut hash_held =
        |upto: u64, hasher: &mut xfer_proto::checksum::Hasher, hashed: &mut u64| -> Result<()> {
            while *hashed < upto {
                let i = *hashed;
                if !good[i as usize] {
                    return Err(ProtocolError(format!("chunk {i} never arrived")).into());
                }
                let (offset, len) = chunk_range(size, chunk_size, i);
                buf.resize(len, 0);
                file.read_exact_at(&mut buf, offset)
                    .context("reading the part file back")?;
                hasher.update(&buf);
                *hashed += 1;
            }
            Ok(())
        };
    loop {
        match rx.blocking_recv() {
            Some(ToWriter::Chunk(index, data)) => {
                if Digest::of(&data) != manifest[index as usize] {
                    let _ = file.sync_data();
                    return Err(IntegrityError(format!(
                        "chunk {index} failed verification; the part file keeps the chunks verified so far"
                    ))
                    .into());
                }
                let (offset, _) = chunk_range(size, chunk_size, index);
                file.write_all_at(&data, offset)
                    .context("writing the part file")?;
                hash_held(index, &mut hasher, &mut hashed)?;
                hasher.update(&data);
                hashed = index + 1;
            }
            Some(ToWriter::Finish) => {
                hash_held(manifest.len() as u64, &mut hasher, &mut hashed)?;
                file.set_len(size).context("sizing the part file")?;
                file.sync_all().context("syncing the part file")?;
                return Ok(Some(hasher.finalize()));
            }
            None => {
                // Interrupted: keep what was written for the next run; the receiving
                // side reports why.
                let _ = file.sync_data();
                return Ok(None);
            }
        }
    }
}

/// Renames the finished part file over `dest`, sets its modification time, and fsyncs
/// the directory.
fn install(part: &Path, dest: &Path, modified_unix: u64) -> std::io::Result<()> {
    if let Ok(f) = File::options().write(true).open(part) {
        let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(modified_unix));
    }
    std::fs::rename(part, dest)?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
