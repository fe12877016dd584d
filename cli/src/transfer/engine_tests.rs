//! The push and pull engines against an in-memory server that speaks the protocol
//! (small chunks, short manifest pages, and knobs to cut the connection or corrupt
//! data), so resume and verification are tested without a daemon.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_util::codec::Framed;
use xfer_e2e::random_bytes;
use xfer_proto::{Chunk, Digest, ErrorCode, Frame, Request, Response, ServerCodec};

use super::progress::{Direction, Progress};
use super::pull::pull_file;
use super::push::push_file;
use super::{Failure, Options, Outcome};
use crate::client::Client;
use crate::target::ServerAddr;

/// The smallest chunk size the protocol allows (1 KiB), so small files have many chunks.
const CS: usize = 1024;
const PAGE: usize = 3;

#[derive(Default)]
struct Partial {
    size: u64,
    chunks: Vec<Option<Bytes>>,
}

#[derive(Default)]
struct Mock {
    files: HashMap<String, Vec<u8>>,
    partials: HashMap<String, Partial>,
    /// Chunk frames received on the current connection.
    received: usize,
    /// Drop the connection after this many chunk frames.
    cut_after: Option<usize>,
    /// Flip a byte of this chunk index when serving it (the frame keeps the true digest).
    corrupt: Option<u64>,
    /// Announce a whole-file digest other than the one the chunks add up to.
    wrong_digest: bool,
    /// Compressed chunk frames received.
    compressed: usize,
}

enum Open {
    Put(String),
    Get(String),
}

fn chunks_of(data: &[u8]) -> Vec<&[u8]> {
    data.chunks(CS).collect()
}

/// The protocol's digest of chunk `i` of a file of `size` bytes.
fn chunk_digest(chunk: &[u8], i: usize, size: usize) -> Digest {
    Digest::of_chunk(chunk, (i * CS) as u64, size as u64).expect("a valid chunk")
}

async fn serve(stream: tokio::io::DuplexStream, state: Arc<Mutex<Mock>>) {
    let mut f = Framed::new(stream, ServerCodec::new(xfer_proto::MAX_FRAME_LEN));
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut next_id = 1;
    state.lock().unwrap().received = 0;
    while let Some(Ok(frame)) = f.next().await {
        let mut out: Vec<Frame<Response>> = Vec::new();
        {
            let mut s = state.lock().unwrap();
            match frame {
                Frame::Chunk(c) => {
                    if c.encoding != xfer_proto::ChunkEncoding::Raw {
                        s.compressed += 1;
                    }
                    let c = c.into_raw().expect("a decodable chunk");
                    s.received += 1;
                    if s.cut_after.is_some_and(|n| s.received > n) {
                        return;
                    }
                    let Some(Open::Put(path)) = open.get(&c.transfer_id) else {
                        panic!("chunk for no upload")
                    };
                    let p = s.partials.get_mut(path).unwrap();
                    let i = c.offset as usize / CS;
                    assert_eq!(chunk_digest(&c.data, i, p.size as usize), c.digest);
                    p.chunks[c.offset as usize / CS] = Some(c.data);
                    out.push(Frame::Message(Response::ChunkAck {
                        transfer_id: c.transfer_id,
                        offset: c.offset,
                    }));
                }
                Frame::Message(req) => match req {
                    Request::PutBegin {
                        path, size, force, ..
                    } => {
                        if let (Some(data), false) = (s.files.get(&path), force) {
                            out.push(Frame::Message(Response::Exists {
                                size: data.len() as u64,
                                digest: Some(Digest::of(data)),
                            }));
                        } else {
                            let n = (size as usize).div_ceil(CS);
                            let p = s.partials.entry(path.clone()).or_default();
                            if p.size != size || p.chunks.len() != n {
                                *p = Partial {
                                    size,
                                    chunks: vec![None; n],
                                };
                            }
                            let held = p.chunks.iter().filter(|c| c.is_some()).count() as u64;
                            open.insert(next_id, Open::Put(path));
                            out.push(Frame::Message(Response::PutReady {
                                transfer_id: next_id,
                                chunk_size: CS as u32,
                                chunks_held: held,
                            }));
                            next_id += 1;
                        }
                    }
                    Request::Manifest {
                        transfer_id,
                        first,
                        count,
                        ..
                    } => {
                        let digests: Vec<Option<Digest>> = match &open[&transfer_id] {
                            Open::Put(path) => {
                                let p = &s.partials[path];
                                p.chunks
                                    .iter()
                                    .enumerate()
                                    .map(|(i, c)| {
                                        c.as_ref().map(|d| chunk_digest(d, i, p.size as usize))
                                    })
                                    .collect()
                            }
                            Open::Get(path) => {
                                let data = &s.files[path];
                                chunks_of(data)
                                    .into_iter()
                                    .enumerate()
                                    .map(|(i, c)| Some(chunk_digest(c, i, data.len())))
                                    .collect()
                            }
                        };
                        let page = digests
                            .into_iter()
                            .skip(first as usize)
                            .take((count as usize).min(PAGE))
                            .collect();
                        out.push(Frame::Message(Response::Manifest {
                            first,
                            digests: page,
                        }));
                    }
                    Request::PutCommit {
                        transfer_id,
                        digest,
                    } => {
                        let Some(Open::Put(path)) = open.remove(&transfer_id) else {
                            panic!("commit of no upload")
                        };
                        let p = s.partials.remove(&path).unwrap();
                        let data: Vec<u8> = p
                            .chunks
                            .iter()
                            .flat_map(|c| c.as_ref().expect("all chunks held").to_vec())
                            .collect();
                        assert_eq!(Digest::of(&data), digest);
                        s.files.insert(path, data);
                        out.push(Frame::Message(Response::Committed {
                            size: p.size,
                            digest,
                        }));
                    }
                    Request::GetBegin { path } => match s.files.get(&path) {
                        Some(data) => {
                            out.push(Frame::Message(Response::GetReady {
                                transfer_id: next_id,
                                size: data.len() as u64,
                                digest: if s.wrong_digest {
                                    Digest::of(b"something else")
                                } else {
                                    Digest::of(data)
                                },
                                chunk_size: CS as u32,
                                modified_unix: 1_700_000_000,
                            }));
                            open.insert(next_id, Open::Get(path));
                            next_id += 1;
                        }
                        None => out.push(Frame::Message(Response::error(
                            ErrorCode::NotFound,
                            "no such file",
                        ))),
                    },
                    Request::GetChunks {
                        transfer_id,
                        first,
                        count,
                        compress,
                    } => {
                        let Open::Get(path) = &open[&transfer_id] else {
                            panic!("chunks of no download")
                        };
                        let data = &s.files[path];
                        for i in first..first + count {
                            let c = chunks_of(data)[i as usize];
                            let digest = chunk_digest(c, i as usize, data.len());
                            let mut bytes = c.to_vec();
                            if s.corrupt == Some(i) {
                                bytes[0] ^= 1;
                            }
                            let chunk =
                                Chunk::raw(transfer_id, i * CS as u64, digest, Bytes::from(bytes));
                            out.push(Frame::Chunk(if compress {
                                chunk.compress(1)
                            } else {
                                chunk
                            }));
                        }
                    }
                    Request::Close { transfer_id } => {
                        open.remove(&transfer_id);
                        out.push(Frame::Message(Response::Ok));
                    }
                    Request::SetModified { path, .. } => {
                        assert!(s.files.contains_key(&path), "time of no file {path}");
                        out.push(Frame::Message(Response::Ok));
                    }
                    other => panic!("unexpected request {other:?}"),
                },
                Frame::Hello(_) => panic!("no hello expected"),
            }
        }
        for frame in out {
            if f.feed(frame).await.is_err() {
                return;
            }
        }
        if f.flush().await.is_err() {
            return;
        }
    }
}

fn connect(state: &Arc<Mutex<Mock>>) -> Client {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve(b, state.clone()));
    Client::over_stream(a, ServerAddr::parse("mock:1").unwrap())
}

async fn push(
    state: &Arc<Mutex<Mock>>,
    local: &Path,
    remote: &str,
    force: bool,
) -> Result<Outcome, Failure> {
    push_with(state, local, remote, force, false).await
}

async fn push_with(
    state: &Arc<Mutex<Mock>>,
    local: &Path,
    remote: &str,
    force: bool,
    compress: bool,
) -> Result<Outcome, Failure> {
    let mut c = connect(state);
    let opts = Options {
        force,
        limit_rate: None,
        compress,
        records: None,
    };
    push_file(
        &mut c,
        local,
        remote,
        &opts,
        &Progress::new(true, 1, Direction::Up),
    )
    .await
}

async fn pull(
    state: &Arc<Mutex<Mock>>,
    remote: &str,
    dest: &Path,
    force: bool,
) -> Result<Outcome, Failure> {
    pull_with(state, remote, dest, force, false).await
}

async fn pull_with(
    state: &Arc<Mutex<Mock>>,
    remote: &str,
    dest: &Path,
    force: bool,
    compress: bool,
) -> Result<Outcome, Failure> {
    let mut c = connect(state);
    let opts = Options {
        force,
        limit_rate: None,
        compress,
        records: None,
    };
    pull_file(
        &mut c,
        remote,
        dest,
        &opts,
        &Progress::new(true, 1, Direction::Down),
    )
    .await
}

fn code(f: Failure) -> u8 {
    crate::exit_code(&f.into_error())
}

#[tokio::test]
async fn push_then_pull_is_byte_identical_at_every_boundary() {
    let state = Arc::new(Mutex::new(Mock::default()));
    let tmp = tempfile::tempdir().unwrap();
    for (k, len) in [0, 1, CS - 1, CS, CS + 1, 17 * CS + 7]
        .into_iter()
        .enumerate()
    {
        let content = random_bytes(len, k as u64);
        let local = tmp.path().join(format!("f{k}"));
        std::fs::write(&local, &content).unwrap();
        let name = format!("f{k}");
        let out = push(&state, &local, &name, false).await.unwrap();
        assert!(
            matches!(out, Outcome::Done { size, verified: 0, resumed_at: None, .. } if size == len as u64),
            "{out:?}"
        );
        assert_eq!(state.lock().unwrap().files[&name], content);
        let dest = tmp.path().join(format!("back{k}"));
        let out = pull(&state, &name, &dest, false).await.unwrap();
        assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), content, "{len} bytes");
        assert!(!super::part_path(&dest).exists());
    }
}

#[tokio::test]
async fn an_interrupted_push_resumes_and_sends_only_what_is_missing_or_changed() {
    let state = Arc::new(Mutex::new(Mock::default()));
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("big");
    let mut content = random_bytes(20 * CS + 5, 3);
    std::fs::write(&local, &content).unwrap();

    state.lock().unwrap().cut_after = Some(8);
    let cut = push(&state, &local, "big", false).await.unwrap_err();
    assert!(matches!(cut, Failure::Fatal(_)));
    assert_eq!(code(cut), 8, "connection lost");
    let held = state.lock().unwrap().partials["big"]
        .chunks
        .iter()
        .filter(|c| c.is_some())
        .count();
    assert_eq!(held, 8);

    // The local file changes in chunk 2 (held) before the re-run.
    content[2 * CS + 10] ^= 0xff;
    std::fs::write(&local, &content).unwrap();
    state.lock().unwrap().cut_after = None;
    let out = push(&state, &local, "big", false).await.unwrap();
    let s = state.lock().unwrap();
    assert_eq!(s.files["big"], content);
    // 21 chunks: 7 held and unchanged are skipped; chunk 2 and the 13 missing travel.
    assert_eq!(s.received, 14);
    match out {
        Outcome::Done {
            verified,
            resumed_at,
            transferred,
            ..
        } => {
            assert_eq!(verified, 7 * CS as u64);
            assert_eq!(resumed_at, Some(2 * CS as u64));
            // Chunks 8..=19 in full, the 5-byte last one, and the changed chunk 2.
            assert_eq!(transferred, 12 * CS as u64 + 5 + CS as u64);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn existing_remote_file_is_up_to_date_or_a_conflict() {
    let state = Arc::new(Mutex::new(Mock::default()));
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("a");
    std::fs::write(&local, random_bytes(3 * CS, 1)).unwrap();
    push(&state, &local, "a", false).await.unwrap();

    assert_eq!(
        push(&state, &local, "a", false).await.unwrap(),
        Outcome::UpToDate
    );
    assert_eq!(state.lock().unwrap().received, 0, "nothing sent");

    std::fs::write(&local, random_bytes(3 * CS, 2)).unwrap();
    let err = push(&state, &local, "a", false).await.unwrap_err();
    assert!(matches!(err, Failure::File(_)), "connection still usable");
    let msg = format!(
        "{:#}",
        match &err {
            Failure::File(e) | Failure::Fatal(e) => e,
        }
    );
    assert!(msg.contains("a exists; use --force to replace it"), "{msg}");
    assert_eq!(code(err), 6);
    assert_eq!(
        state.lock().unwrap().files["a"],
        random_bytes(3 * CS, 1),
        "remote unchanged"
    );

    push(&state, &local, "a", true).await.unwrap();
    assert_eq!(state.lock().unwrap().files["a"], random_bytes(3 * CS, 2));
}

#[tokio::test]
async fn a_corrupt_chunk_stops_the_pull_and_a_rerun_resumes_from_the_verified_part() {
    let state = Arc::new(Mutex::new(Mock::default()));
    let content = random_bytes(10 * CS + 1, 9);
    state
        .lock()
        .unwrap()
        .files
        .insert("f".into(), content.clone());
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("f");

    state.lock().unwrap().corrupt = Some(6);
    let err = pull(&state, "f", &dest, false).await.unwrap_err();
    assert_eq!(code(err), 7, "integrity");
    assert!(!dest.exists(), "nothing in place");
    let part = std::fs::read(super::part_path(&dest)).unwrap();
    assert!(part.len() >= 6 * CS);
    assert_eq!(&part[..6 * CS], &content[..6 * CS], "verified chunks kept");
    assert!(
        part.len() <= 6 * CS || part[6 * CS..] != content[6 * CS..7 * CS],
        "bad chunk never written"
    );
    assert_eq!(part.len(), 6 * CS, "nothing past the bad chunk");

    // Damage a kept chunk on disk too: the re-run re-verifies and fetches it again.
    let mut damaged = part.clone();
    damaged[CS + 3] ^= 1;
    std::fs::write(super::part_path(&dest), &damaged).unwrap();
    state.lock().unwrap().corrupt = None;
    let out = pull(&state, "f", &dest, false).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    match out {
        Outcome::Done {
            verified,
            resumed_at,
            transferred,
            ..
        } => {
            assert_eq!(verified, 5 * CS as u64);
            assert_eq!(resumed_at, Some(CS as u64));
            // Chunk 1 (damaged on disk), chunks 6..=9 and the 1-byte last one.
            assert_eq!(transferred, CS as u64 + 4 * CS as u64 + 1);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn compressed_push_and_pull_are_byte_identical() {
    let state = Arc::new(Mutex::new(Mock::default()));
    let tmp = tempfile::tempdir().unwrap();
    // Text-like (compresses) with a random stretch (sent raw) in the middle.
    let mut content: Vec<u8> = b"line of a log file, again and again\n"
        .iter()
        .copied()
        .cycle()
        .take(9 * CS + 17)
        .collect();
    content[3 * CS..4 * CS].copy_from_slice(&random_bytes(CS, 77));
    let local = tmp.path().join("log");
    std::fs::write(&local, &content).unwrap();
    push_with(&state, &local, "log", false, true).await.unwrap();
    assert_eq!(state.lock().unwrap().files["log"], content);
    // Ten chunks: the random one and the 17-byte tail do not shrink.
    assert_eq!(state.lock().unwrap().compressed, 8);
    let dest = tmp.path().join("back");
    pull_with(&state, "log", &dest, false, true).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);
}

#[tokio::test]
async fn a_manifest_that_does_not_add_up_to_the_announced_digest_is_refused_before_data() {
    let state = Arc::new(Mutex::new(Mock::default()));
    let content = random_bytes(5 * CS + 3, 4);
    {
        let mut s = state.lock().unwrap();
        s.files.insert("f".into(), content.clone());
        s.wrong_digest = true;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("f");
    let err = pull(&state, "f", &dest, false).await.unwrap_err();
    assert!(
        matches!(err, Failure::File(_)),
        "the connection is still usable"
    );
    let msg = format!("{:#}", err.into_error());
    assert!(msg.contains("do not add up"), "{msg}");
    assert!(
        !dest.exists() && !super::part_path(&dest).exists(),
        "nothing written"
    );

    state.lock().unwrap().wrong_digest = false;
    pull(&state, "f", &dest, false).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);
}

#[tokio::test]
async fn existing_local_file_is_up_to_date_or_a_conflict() {
    let state = Arc::new(Mutex::new(Mock::default()));
    let content = random_bytes(2 * CS, 4);
    state
        .lock()
        .unwrap()
        .files
        .insert("f".into(), content.clone());
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("f");
    std::fs::write(&dest, &content).unwrap();
    assert_eq!(
        pull(&state, "f", &dest, false).await.unwrap(),
        Outcome::UpToDate
    );

    std::fs::write(&dest, b"other").unwrap();
    let err = pull(&state, "f", &dest, false).await.unwrap_err();
    assert!(matches!(err, Failure::File(_)));
    assert_eq!(code(err), 6);
    assert_eq!(std::fs::read(&dest).unwrap(), b"other", "local unchanged");

    pull(&state, "f", &dest, true).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);

    let err = pull(&state, "missing", &tmp.path().join("m"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, Failure::File(_)));
    assert_eq!(code(err), 5);
}
