//! Many small files over one connection: each file of at most one chunk travels whole
//! in one request (`PutFile` up, `GetFile` down), and up to [`WINDOW_FILES`] requests
//! (at most [`WINDOW_BYTES`] of data) are in flight before the first answer is read.
//! Answers come in request order, so each is matched to its file by position.
//!
//! Up, a blocking reader task reads and hashes the next files while earlier ones travel;
//! the server commits the files it has received together and answers once they are
//! durable. Down, a blocking writer task puts each file into its part file (with its
//! record, as any download: `part.rs`) and installs the files in batches: one `syncfs`
//! makes a batch's data durable, then the part files are renamed into place, and a
//! second `syncfs` makes the renames durable, so a listed file is complete.

use std::collections::VecDeque;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use xfer_proto::{Digest, Request, Response};

use super::{Failure, Outcome};
use crate::client::Client;
use crate::error::{ConflictError, ProtocolError, RemoteError};

/// Requests in flight at most: the server's largest batch (256 files), so that while
/// one batch is made durable the next one is already on its way (with 64, batches of
/// tiny files stayed small and paid a `syncfs` pair every 64 files; bench/RESULTS.md).
pub const WINDOW_FILES: usize = 256;
/// File bytes in flight at most.
pub const WINDOW_BYTES: usize = 16 << 20;
/// Unflushed request bytes before the connection is flushed anyway.
const FLUSH_BYTES: usize = 256 << 10;

/// A local file read whole and hashed, ready to be put.
#[derive(Debug)]
pub struct WholeLocal {
    pub data: Bytes,
    pub digest: Digest,
    pub modified_unix: Option<u64>,
}

/// Reads `local` whole if it is (still) at most `max` bytes; `Ok(None)` when it grew
/// past that (it then goes the chunked way).
///
/// # Errors
/// The file cannot be read or is not a regular file.
pub fn read_whole(local: &Path, max: u64) -> Result<Option<WholeLocal>> {
    let mut file =
        std::fs::File::open(local).with_context(|| format!("opening `{}`", local.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading `{}`", local.display()))?;
    if !meta.is_file() {
        return Err(anyhow!("`{}` is not a regular file", local.display()));
    }
    if meta.len() > max {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // One byte more than allowed tells a file that grew since the stat.
    (&mut file)
        .take(max + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading `{}`", local.display()))?;
    if data.len() as u64 > max {
        return Ok(None);
    }
    Ok(Some(WholeLocal {
        digest: Digest::of(&data),
        data: Bytes::from(data),
        modified_unix: super::push::modified_secs(&meta),
    }))
}

/// What a request in flight was for.
#[derive(Debug)]
pub enum Waiting<T> {
    /// `Mkdir` of this remote directory.
    Mkdir(String),
    /// A file: the caller's tag, and what to check the answer against.
    File { tag: T, size: u64, digest: Digest },
}

/// What came back for one request, in request order.
#[derive(Debug)]
pub enum Answered<T> {
    /// The directory exists now, or why not.
    Mkdir(String, Result<()>),
    /// A put's outcome, or a get's file.
    File(T, Result<Answer, Failure>),
}

/// A file's answer.
#[derive(Debug)]
pub enum Answer {
    /// Put: committed and durable on the server, or the same content was there.
    Put(Outcome),
    /// Get: the whole file, checked against its digest.
    Got {
        data: Bytes,
        digest: Digest,
        modified_unix: u64,
    },
}

/// Requests in flight on one connection, answered in order.
pub struct Window<T> {
    waiting: VecDeque<Waiting<T>>,
    bytes: usize,
    unflushed: usize,
}

impl<T> Default for Window<T> {
    fn default() -> Self {
        Window {
            waiting: VecDeque::new(),
            bytes: 0,
            unflushed: 0,
        }
    }
}

impl<T> Window<T> {
    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queues `req`; when the window is full, first waits for the oldest answers
    /// (returned, in order).
    ///
    /// # Errors
    /// The connection failed (fatal for the command).
    pub async fn send(
        &mut self,
        client: &mut Client,
        req: Request,
        waiting: Waiting<T>,
        bytes: usize,
    ) -> Result<Vec<Answered<T>>> {
        let mut out = Vec::new();
        while !self.waiting.is_empty()
            && (self.waiting.len() >= WINDOW_FILES || self.bytes + bytes > WINDOW_BYTES)
        {
            self.flush(client).await?;
            out.push(self.recv(client).await?);
        }
        client.feed_request(req).await?;
        self.waiting.push_back(waiting);
        self.bytes += bytes;
        self.unflushed += bytes + 64;
        // Start the server early, then flush in large writes.
        if self.waiting.len() == 1 || self.unflushed >= FLUSH_BYTES {
            self.flush(client).await?;
        }
        // Answers already here free the window without waiting.
        while !self.waiting.is_empty() {
            match client.try_recv_response() {
                Some(resp) => out.push(self.take(client, resp)?),
                None => break,
            }
        }
        Ok(out)
    }

    /// Writes out what is queued.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn flush(&mut self, client: &mut Client) -> Result<()> {
        if self.unflushed > 0 {
            client.flush().await?;
            self.unflushed = 0;
        }
        Ok(())
    }

    /// Waits for every answer.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn drain(&mut self, client: &mut Client) -> Result<Vec<Answered<T>>> {
        self.flush(client).await?;
        let mut out = Vec::with_capacity(self.waiting.len());
        while !self.waiting.is_empty() {
            out.push(self.recv(client).await?);
        }
        Ok(out)
    }

    async fn recv(&mut self, client: &mut Client) -> Result<Answered<T>> {
        let resp = client.recv_response().await;
        self.take(client, resp)
    }

    /// Matches `resp` to the oldest request in flight.
    fn take(&mut self, client: &Client, resp: Result<Response>) -> Result<Answered<T>> {
        let waiting = self
            .waiting
            .pop_front()
            .expect("an answer is awaited only while a request is in flight");
        // A refusal of this request leaves the connection usable; anything else not.
        let resp = match resp {
            Err(e) if e.chain().any(|c| c.is::<RemoteError>()) => Err(e),
            Err(e) => return Err(e),
            Ok(r) => Ok(r),
        };
        Ok(match waiting {
            Waiting::Mkdir(dir) => {
                let r = match resp {
                    Ok(Response::Ok) => Ok(()),
                    Ok(_) => return Err(unexpected(client, "ok")),
                    Err(e) => Err(e),
                };
                Answered::Mkdir(dir, r)
            }
            Waiting::File { tag, size, digest } => {
                self.bytes = self.bytes.saturating_sub(size as usize);
                let r = match resp {
                    Err(e) => Err(Failure::File(e)),
                    Ok(resp) => file_answer(client, resp, size, digest)?,
                };
                Answered::File(tag, r)
            }
        })
    }
}

/// The outcome a file's answer means. `size` and `digest` are the local file's (put) or
/// the listing's size and nothing (get: the answer carries the digest).
fn file_answer(
    client: &Client,
    resp: Response,
    size: u64,
    digest: Digest,
) -> Result<Result<Answer, Failure>> {
    Ok(match resp {
        Response::Committed {
            size: got,
            digest: committed,
        } => {
            if got != size || committed != digest {
                return Err(ProtocolError(format!(
                    "{} committed {got} bytes with BLAKE3 {committed}, \
                     but this client sent {size} bytes with BLAKE3 {digest}",
                    client.server()
                ))
                .into());
            }
            Ok(Answer::Put(Outcome::Done {
                size,
                digest,
                verified: 0,
                resumed_at: None,
                transferred: size,
            }))
        }
        Response::Exists {
            size: there,
            digest: Some(d),
        } if there == size && d == digest => Ok(Answer::Put(Outcome::UpToDate)),
        // The caller words the conflict: it knows the destination's name.
        Response::Exists { .. } => Err(Failure::File(ConflictError(String::new()).into())),
        Response::File {
            digest,
            modified_unix,
            data,
        } => Ok(Answer::Got {
            data,
            digest,
            modified_unix,
        }),
        _ => return Err(unexpected(client, "a file's answer")),
    })
}

fn unexpected(client: &Client, wanted: &str) -> anyhow::Error {
    ProtocolError(format!(
        "{} sent an unexpected reply instead of {wanted}",
        client.server()
    ))
    .into()
}

/// Whether `e` is the bare conflict `file_answer` gives for `Exists`.
pub fn is_bare_conflict(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConflictError>()
        .is_some_and(|c| c.0.is_empty())
}

/// The `PutFile` request for `dest`.
pub fn put_request(dest: &str, force: bool, file: WholeLocal) -> Request {
    Request::PutFile {
        path: dest.to_owned(),
        force,
        modified_unix: file.modified_unix,
        digest: file.digest,
        data: file.data,
    }
}

/// Local paths of a pulled file: where it goes and its part file.
pub fn part_of(dest: &Path) -> PathBuf {
    super::part_path(dest)
}
