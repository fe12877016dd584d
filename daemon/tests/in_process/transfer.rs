//! In-process transfers: `xferd::serve` on 127.0.0.1:0 with a temporary data directory,
//! driven by the test kit's raw protocol client over real TLS.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use xfer_e2e::{RawConn, random_bytes};
use xfer_proto::{CHUNK_SIZE, Chunk, Digest, EntryKind, ErrorCode, Frame, Request, Response};

use super::server::{self, Server};

async fn start(tweak: impl FnOnce(&mut xferd::Config)) -> Server {
    server::start(&["alice", "bob"], tweak).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_list_pull_round_trip_of_awkward_sizes() {
    let server = start(|_| {}).await;
    let mut c = server.login("alice").await;
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
        let data = random_bytes(len, i as u64);
        let path = format!("dir/f{i}");
        c.push(&path, &data).await;
        assert_eq!(
            std::fs::read(server.home("alice").join(&path)).unwrap(),
            data
        );
        assert_eq!(c.pull(&path).await, data, "size {len}");
    }
    let Response::Listing { entries, .. } = c
        .call(Request::List {
            path: "dir".into(),
            after: None,
        })
        .await
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
    let data = random_bytes(1, 1);
    assert_eq!(
        c.put_begin("dir/f1", &data, false).await,
        Response::Exists {
            size: 1,
            digest: Some(Digest::of(&data))
        }
    );
    let Response::WhoAmI(who) = c.call(Request::WhoAmI).await else {
        panic!("whoami");
    };
    assert_eq!(who.quota_used_bytes, (6 * CHUNK_SIZE + 12346) as u64);
    assert_eq!(who.quota_limit_bytes, None);
    // Bob sees none of it.
    let mut b = server.login("bob").await;
    assert!(matches!(
        b.call(Request::List {
            path: "dir".into(),
            after: None
        })
        .await,
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
    let data = random_bytes(6 * CHUNK_SIZE + 7, 42);
    let mut c = server.login("alice").await;
    let Response::PutReady { transfer_id, .. } = c.put_begin("v/big", &data, false).await else {
        panic!("put refused");
    };
    c.send_chunks(transfer_id, &data, 0..4).await;
    // A second client sees a partial, never a file.
    let mut watcher = server.login("alice").await;
    let list = async |w: &mut RawConn| match w
        .call(Request::List {
            path: "v".into(),
            after: None,
        })
        .await
    {
        Response::Listing { entries, .. } => entries,
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

    let mut c = server.login("alice").await;
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
        .call(Request::Manifest {
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
        .call(Request::PutCommit {
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
    let mut c = server.login("alice").await;
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
        let r = c
            .call(Request::List {
                path: bad.into(),
                after: None,
            })
            .await;
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
    let big = random_bytes(5 * CHUNK_SIZE, 1);
    assert!(matches!(
        c.put_begin("big", &big, false).await,
        Response::Error {
            code: ErrorCode::QuotaExceeded,
            ..
        }
    ));
    // A chunk whose digest lies is refused and ends the transfer; the chunk sent right
    // behind it (written beside it, or queued) is answered after it, as belonging to no
    // open upload; a commit then fails.
    let data = random_bytes(2 * CHUNK_SIZE, 2);
    let Response::PutReady { transfer_id, .. } = c.put_begin("f", &data, false).await else {
        panic!("put refused");
    };
    let second = Bytes::copy_from_slice(&data[CHUNK_SIZE..]);
    for chunk in [
        Chunk::raw(
            transfer_id,
            0,
            Digest::of(b"lie"),
            Bytes::copy_from_slice(&data[..CHUNK_SIZE]),
        ),
        Chunk::raw(
            transfer_id,
            CHUNK_SIZE as u64,
            Digest::of_chunk(&second, CHUNK_SIZE as u64, data.len() as u64).unwrap(),
            second.clone(),
        ),
    ] {
        c.framed.send(Frame::Chunk(chunk)).await.unwrap();
    }
    assert!(matches!(
        c.response().await,
        Response::Error {
            code: ErrorCode::ChecksumMismatch,
            ..
        }
    ));
    match c.response().await {
        Response::Error {
            code: ErrorCode::BadRequest,
            message,
        } => assert_eq!(
            message,
            format!("no upload with transfer id {transfer_id} is open")
        ),
        other => panic!("the chunk behind a refused one got {other:?}"),
    }
    assert!(matches!(
        c.call(Request::PutCommit {
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
        c.call(Request::Mkdir {
            path: "m/n".into(),
            parents: true
        })
        .await,
        Response::Ok
    );
    c.push("m/n/file", b"hello").await;
    assert!(matches!(
        c.call(Request::Rename {
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
        c.call(Request::Rename {
            from: "m/n/file".into(),
            to: "moved".into(),
            force: false
        })
        .await,
        Response::Ok
    );
    assert_eq!(
        c.call(Request::Remove {
            path: "m".into(),
            recursive: true,
            partial: false
        })
        .await,
        Response::Ok
    );
    assert_eq!(c.pull("moved").await, b"hello");
    assert_eq!(c.call(Request::Ping).await, Response::Pong);
    server.stop().await;
}

/// Push and pull throughput over loopback. Run with
/// `cargo test --release -p xferd --test in_process transfer::throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    let server = start(|_| {}).await;
    let mut c = server.login("alice").await;
    let data = random_bytes(512 * CHUNK_SIZE, 7);
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
