//! In-process transfers: `xferd::serve` on 127.0.0.1:0 with a temporary data directory,
//! driven by a raw protocol client over real TLS.

mod common;

use common::Server;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use xfer_proto::{
    CHUNK_SIZE, Chunk, Digest, EntryKind, ErrorCode, Frame, PUT_WINDOW, Request, Response,
};

async fn start(tweak: impl FnOnce(&mut xferd::Config)) -> Server {
    common::start(&["alice", "bob"], tweak).await
}

struct Conn {
    framed: common::Raw,
}

impl Conn {
    async fn login(server: &Server, user: &str) -> Conn {
        Conn {
            framed: common::login(server, user, None).await,
        }
    }

    async fn next(&mut self) -> Frame<Response> {
        tokio::time::timeout(Duration::from_secs(60), self.framed.next())
            .await
            .expect("server answers in time")
            .expect("connection open")
            .expect("valid frame")
    }

    async fn response(&mut self) -> Response {
        match self.next().await {
            Frame::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn request(&mut self, r: Request) -> Response {
        self.framed.send(Frame::Message(r)).await.unwrap();
        self.response().await
    }

    /// Sends chunk `indices` of `data` with up to PUT_WINDOW unacknowledged.
    async fn send_chunks(&mut self, id: u64, data: &[u8], indices: impl IntoIterator<Item = u64>) {
        let mut in_flight = 0;
        for i in indices {
            if in_flight == PUT_WINDOW {
                self.expect_ack(id).await;
                in_flight -= 1;
            }
            let start = i as usize * CHUNK_SIZE;
            let end = (start + CHUNK_SIZE).min(data.len());
            let chunk = Bytes::copy_from_slice(&data[start..end]);
            self.framed
                .feed(Frame::Chunk(Chunk::raw(
                    id,
                    start as u64,
                    Digest::of_chunk(&chunk, start as u64, data.len() as u64).unwrap(),
                    chunk,
                )))
                .await
                .unwrap();
            in_flight += 1;
        }
        self.framed.flush().await.unwrap();
        for _ in 0..in_flight {
            self.expect_ack(id).await;
        }
    }

    async fn expect_ack(&mut self, id: u64) {
        match self.response().await {
            Response::ChunkAck { transfer_id, .. } => assert_eq!(transfer_id, id),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    async fn put_begin(&mut self, path: &str, data: &[u8], force: bool) -> Response {
        self.request(Request::PutBegin {
            path: path.into(),
            size: data.len() as u64,
            force,
            head: Bytes::copy_from_slice(&data[..data.len().min(512)]),
        })
        .await
    }

    async fn push(&mut self, path: &str, data: &[u8]) -> u64 {
        let Response::PutReady {
            transfer_id,
            chunks_held,
            ..
        } = self.put_begin(path, data, false).await
        else {
            panic!("put refused");
        };
        assert_eq!(chunks_held, 0);
        self.send_chunks(transfer_id, data, 0..chunks(data)).await;
        let r = self
            .request(Request::PutCommit {
                transfer_id,
                digest: Digest::of(data),
            })
            .await;
        assert_eq!(
            r,
            Response::Committed {
                size: data.len() as u64,
                digest: Digest::of(data)
            }
        );
        transfer_id
    }

    async fn pull(&mut self, path: &str) -> Vec<u8> {
        let Response::GetReady {
            transfer_id,
            size,
            digest,
            ..
        } = self.request(Request::GetBegin { path: path.into() }).await
        else {
            panic!("get refused");
        };
        let n = size.div_ceil(CHUNK_SIZE as u64);
        let Response::Manifest { digests, .. } = self
            .request(Request::Manifest {
                transfer_id,
                first: 0,
                count: n as u32,
            })
            .await
        else {
            panic!("no manifest");
        };
        assert_eq!(digests.len() as u64, n);
        let mut out = Vec::with_capacity(size as usize);
        if n > 0 {
            self.framed
                .send(Frame::Message(Request::GetChunks {
                    transfer_id,
                    first: 0,
                    count: n,
                    compress: false,
                }))
                .await
                .unwrap();
            for i in 0..n {
                match self.next().await {
                    Frame::Chunk(c) => {
                        assert_eq!(c.offset, i * CHUNK_SIZE as u64);
                        assert_eq!(Some(c.digest), digests[i as usize]);
                        assert_eq!(Digest::of_chunk(&c.data, c.offset, size), Some(c.digest));
                        out.extend_from_slice(&c.data);
                    }
                    other => panic!("expected a chunk, got {other:?}"),
                }
            }
        }
        assert_eq!(Digest::of(&out), digest);
        assert_eq!(
            self.request(Request::Close { transfer_id }).await,
            Response::Ok
        );
        out
    }
}

fn chunks(data: &[u8]) -> u64 {
    (data.len() as u64).div_ceil(CHUNK_SIZE as u64)
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_list_pull_round_trip_of_awkward_sizes() {
    let server = start(|_| {}).await;
    let mut c = Conn::login(&server, "alice").await;
    for (i, len) in [
        0,
        1,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        3 * CHUNK_SIZE + 12345,
    ]
    .into_iter()
    .enumerate()
    {
        let data = random(len, i as u64);
        let path = format!("dir/f{i}");
        c.push(&path, &data).await;
        assert_eq!(
            std::fs::read(server.home("alice").join(&path)).unwrap(),
            data
        );
        assert_eq!(c.pull(&path).await, data, "size {len}");
    }
    let Response::Listing { entries } = c.request(Request::List { path: "dir".into() }).await
    else {
        panic!("no listing");
    };
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["f0", "f1", "f2", "f3", "f4", "f5"]);
    assert!(
        entries
            .iter()
            .all(|e| e.kind == EntryKind::File && e.digest.is_some())
    );
    // Same name again without force: Exists with the digest, so the client can say
    // "up to date".
    let data = random(1, 1);
    assert_eq!(
        c.put_begin("dir/f1", &data, false).await,
        Response::Exists {
            size: 1,
            digest: Some(Digest::of(&data))
        }
    );
    let Response::WhoAmI(who) = c.request(Request::WhoAmI).await else {
        panic!("whoami");
    };
    assert_eq!(who.quota_used_bytes, (6 * CHUNK_SIZE + 12346) as u64);
    assert_eq!(who.quota_limit_bytes, None);
    // Bob sees none of it.
    let mut b = Conn::login(&server, "bob").await;
    assert!(matches!(
        b.request(Request::List { path: "dir".into() }).await,
        Response::Error {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_push_resumes_from_the_verified_chunks() {
    let server = start(|_| {}).await;
    let data = random(6 * CHUNK_SIZE + 7, 42);
    let mut c = Conn::login(&server, "alice").await;
    let Response::PutReady { transfer_id, .. } = c.put_begin("v/big", &data, false).await else {
        panic!("put refused");
    };
    c.send_chunks(transfer_id, &data, 0..4).await;
    // A second client sees a partial, never a file.
    let mut watcher = Conn::login(&server, "alice").await;
    let list = async |w: &mut Conn| match w.request(Request::List { path: "v".into() }).await {
        Response::Listing { entries } => entries,
        other => panic!("no listing: {other:?}"),
    };
    let entries = list(&mut watcher).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, EntryKind::Partial);
    assert!(!server.home("alice").join("v/big").exists());
    drop(c); // the connection is cut mid-upload: the server saves what it holds
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = list(&mut watcher).await;
        if entries[0].received == Some(4 * CHUNK_SIZE as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "never saved: {entries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut c = Conn::login(&server, "alice").await;
    let Response::PutReady {
        transfer_id,
        chunks_held,
        ..
    } = c.put_begin("v/big", &data, false).await
    else {
        panic!("resume refused");
    };
    assert_eq!(chunks_held, 4);
    let Response::Manifest { first, digests } = c
        .request(Request::Manifest {
            transfer_id,
            first: 0,
            count: 100,
        })
        .await
    else {
        panic!("no manifest");
    };
    assert_eq!(first, 0);
    assert_eq!(digests.len(), 7);
    for (i, d) in digests.iter().enumerate() {
        let start = i * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(data.len());
        let expect = (i < 4)
            .then(|| Digest::of_chunk(&data[start..end], start as u64, data.len() as u64).unwrap());
        assert_eq!(*d, expect, "chunk {i}");
    }
    c.send_chunks(transfer_id, &data, 4..7).await;
    let r = c
        .request(Request::PutCommit {
            transfer_id,
            digest: Digest::of(&data),
        })
        .await;
    assert!(matches!(r, Response::Committed { .. }), "{r:?}");
    assert_eq!(
        std::fs::read(server.home("alice").join("v/big")).unwrap(),
        data
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors_and_the_connection_survives() {
    let server = start(|c| c.storage.quota_bytes = 4 * CHUNK_SIZE as u64).await;
    let mut c = Conn::login(&server, "alice").await;
    for bad in [
        "../x",
        "a/../../x",
        "/abs",
        "//x",
        "a\0b",
        "..\\x",
        "C:\\x",
        "a\nb",
        ".xfer-part",
    ] {
        let r = c.request(Request::List { path: bad.into() }).await;
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::InvalidPath,
                    ..
                }
            ),
            "{bad:?}: {r:?}"
        );
        let r = c.put_begin(bad, b"x", true).await;
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::InvalidPath,
                    ..
                }
            ),
            "{bad:?}: {r:?}"
        );
    }
    // Over quota: refused before any chunk.
    let big = random(5 * CHUNK_SIZE, 1);
    assert!(matches!(
        c.put_begin("big", &big, false).await,
        Response::Error {
            code: ErrorCode::QuotaExceeded,
            ..
        }
    ));
    // A chunk whose digest lies is refused and ends the transfer; a commit then fails.
    let data = random(2 * CHUNK_SIZE, 2);
    let Response::PutReady { transfer_id, .. } = c.put_begin("f", &data, false).await else {
        panic!("put refused");
    };
    c.framed
        .send(Frame::Chunk(Chunk::raw(
            transfer_id,
            0,
            Digest::of(b"lie"),
            Bytes::copy_from_slice(&data[..CHUNK_SIZE]),
        )))
        .await
        .unwrap();
    assert!(matches!(
        c.response().await,
        Response::Error {
            code: ErrorCode::ChecksumMismatch,
            ..
        }
    ));
    assert!(matches!(
        c.request(Request::PutCommit {
            transfer_id,
            digest: Digest::of(&data)
        })
        .await,
        Response::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    // Type policy over the wire.
    assert!(matches!(
        c.put_begin("images/a.png", b"plain text, not a picture", false)
            .await,
        Response::Error {
            code: ErrorCode::TypeRejected,
            ..
        }
    ));
    // Namespace requests.
    assert_eq!(
        c.request(Request::Mkdir {
            path: "m/n".into(),
            parents: true
        })
        .await,
        Response::Ok
    );
    c.push("m/n/file", b"hello").await;
    assert!(matches!(
        c.request(Request::Rename {
            from: "m".into(),
            to: "m/n/inside".into(),
            force: false
        })
        .await,
        Response::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    assert_eq!(
        c.request(Request::Rename {
            from: "m/n/file".into(),
            to: "moved".into(),
            force: false
        })
        .await,
        Response::Ok
    );
    assert_eq!(
        c.request(Request::Remove {
            path: "m".into(),
            recursive: true,
            partial: false
        })
        .await,
        Response::Ok
    );
    assert_eq!(c.pull("moved").await, b"hello");
    assert_eq!(c.request(Request::Ping).await, Response::Pong);
    server.stop().await;
}

/// Push and pull throughput over loopback. Run with
/// `cargo test --release -p xferd --test transfer throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    let server = start(|_| {}).await;
    let mut c = Conn::login(&server, "alice").await;
    let data = random(512 * CHUNK_SIZE, 7);
    let t = Instant::now();
    c.push("big", &data).await;
    let push = t.elapsed();
    let t = Instant::now();
    let back = c.pull("big").await;
    let pull = t.elapsed();
    assert_eq!(back.len(), data.len());
    let mb = data.len() as f64 / 1e6;
    println!(
        "push {:.0} MB/s, pull {:.0} MB/s",
        mb / push.as_secs_f64(),
        mb / pull.as_secs_f64()
    );
    server.stop().await;
}
