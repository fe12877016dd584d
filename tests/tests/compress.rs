//! `--compress`: zstd chunk frames on push and pull are byte-identical end to end, really
//! shrink what crosses the wire (the daemon's `wire_bytes=` audit field counts the bytes
//! as they travelled), leave incompressible data raw, resume like raw transfers, and a
//! peer that lies in a compressed frame is refused without harming anyone else.

use std::path::Path;

use futures_util::SinkExt;
use tempfile::TempDir;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, MIB, RawConn, alice, audit_u64, blake3_hex, poll,
    random_bytes, write_file,
};
use xfer_proto::{Chunk, ChunkEncoding, Digest, ErrorCode, Frame, Request, Response};

/// Log-like text: compresses several times over, but is not one repeated line.
fn log_text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 200);
    let mut i = seed;
    while out.len() < len {
        i += 1;
        let line = format!(
            "2026-11-21T07:{:02}:{:02}.{:06}Z INFO xferd::session{{peer=127.0.0.1:{} user=alice}}: \
             upload committed bytes={} path=\"docs/report-{}.txt\" duration_ms={}\n",
            (i / 60) % 60,
            i % 60,
            i.wrapping_mul(7919) % 1_000_000,
            40_000 + i % 20_000,
            i.wrapping_mul(4099) % 10_000_000,
            i % 977,
            i % 313,
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

/// Text in which half of every line is random hex: compresses to roughly 60 %, so a
/// rate-limited compressed push still takes a while.
fn half_random_text(len: usize, seed: u64) -> Vec<u8> {
    let noise = random_bytes(len / 2 + 64, seed);
    let mut out = Vec::with_capacity(len + 200);
    for (n, pair) in noise.chunks(16).enumerate() {
        if out.len() >= len {
            break;
        }
        let hex: String = pair.iter().map(|b| format!("{b:02x}")).collect();
        out.extend_from_slice(format!("line {n:08} token {hex} status=ok\n").as_bytes());
    }
    out.truncate(len);
    out
}

/// The last audit line of `event` (`"upload"` or `"download"`) naming `name`.
fn audit_line(d: &Daemon, event: &str, name: &str) -> String {
    poll(DEADLINE, || {
        d.audit_events(event)
            .into_iter()
            .rfind(|l| l.contains(name))
    })
    .unwrap_or_else(|| panic!("no {event} audit line for {name}:\n{}", d.log()))
}

fn pull_into(c: &Client, args: &[&str], dir: &Path, name: &str) -> Vec<u8> {
    let dest = format!("{}/", dir.display());
    let mut all = vec!["pull", "-q"];
    all.extend_from_slice(args);
    all.push(&dest);
    let out = c.xfer(&all, "");
    assert_eq!(out.code(), 0, "xfer {all:?}: {}", out.stderr());
    std::fs::read(dir.join(name)).expect("pulled file")
}

#[test]
fn compressed_push_and_pull_are_byte_identical_and_smaller_on_the_wire() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let back = TempDir::new().unwrap();
    let data = log_text(6 * CHUNK + 777, 1);
    let size = data.len() as u64;
    let path = write_file(local.path(), "app.log", &data);

    let out = c.xfer(&["push", "-q", "--compress", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let stored = std::fs::read(d.files_dir("alice").join("app.log")).unwrap();
    assert!(stored == data, "stored bytes differ from the local file");
    let entry = c.ls_entry(&["-l"], "app.log").expect("listed");
    assert_eq!(entry["digest"], blake3_hex(&data), "{entry}");
    let up = audit_line(&d, "upload", "app.log");
    assert_eq!(audit_u64(&up, "bytes_received"), Some(size), "{up}");
    let wire = audit_u64(&up, "wire_bytes").expect("wire_bytes= in the upload line");
    assert!(wire < size / 3, "{wire} bytes on the wire for {size}: {up}");

    let got = pull_into(&c, &["--compress", "app.log"], back.path(), "app.log");
    assert!(got == data, "pulled bytes differ");
    let down = audit_line(&d, "download", "app.log");
    assert_eq!(audit_u64(&down, "bytes"), Some(size), "{down}");
    let wire = audit_u64(&down, "wire_bytes").expect("wire_bytes= in the download line");
    assert!(
        wire < size / 3,
        "{wire} bytes on the wire for {size}: {down}"
    );

    // Without the flag the same file travels raw both ways: the counter is real.
    let out = c.xfer(&["push", "-q", "--force", &path, "plain.log"], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let up = audit_line(&d, "upload", "plain.log");
    assert_eq!(audit_u64(&up, "wire_bytes"), Some(size), "{up}");
    let again = TempDir::new().unwrap();
    assert!(pull_into(&c, &["plain.log"], again.path(), "plain.log") == data);
    let down = audit_line(&d, "download", "plain.log");
    assert_eq!(audit_u64(&down, "wire_bytes"), Some(size), "{down}");
}

#[test]
fn incompressible_data_travels_raw_with_compress() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let back = TempDir::new().unwrap();
    for (i, size) in [0, 1, 100, CHUNK, 3 * CHUNK + 7].into_iter().enumerate() {
        let data = random_bytes(size, 40 + i as u64);
        let name = format!("noise{size}.bin");
        let path = write_file(local.path(), &name, &data);
        let out = c.xfer(&["push", "-q", "--compress", &path], "");
        assert_eq!(out.code(), 0, "push {size} B: {}", out.stderr());
        let up = audit_line(&d, "upload", &name);
        assert_eq!(
            audit_u64(&up, "wire_bytes"),
            Some(size as u64),
            "random data is sent raw: {up}"
        );
        let got = pull_into(&c, &["--compress", &name], back.path(), &name);
        assert!(got == data, "{size} B: pulled bytes differ");
        let entry = c.ls_entry(&["-l"], &name).expect("listed");
        assert_eq!(entry["digest"], blake3_hex(&data), "{entry}");
    }
    let down = audit_line(&d, "download", "noise3145735.bin");
    assert_eq!(audit_u64(&down, "wire_bytes"), Some(3 * MIB + 7), "{down}");
}

#[test]
fn a_compressed_push_resumes_after_client_kill() {
    let d = Daemon::start();
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = half_random_text(40 * CHUNK + 99, 5);
    let size = data.len() as u64;
    let path = write_file(local.path(), "half.txt", &data);
    let cut_at = 8 * MIB;

    // The limit applies to wire bytes, so about 3-4 MB/s of file data get through.
    let mut push = c.spawn(&["push", "-q", "--compress", "--limit-rate", "2M", &path]);
    let got = poll(DEADLINE, || {
        assert!(
            !push.finished(),
            "push ended before it could be cut: {}",
            push.stderr_so_far()
        );
        c.partial_received("half.txt").filter(|&r| r >= cut_at)
    });
    assert!(got.is_some(), "the server never held {cut_at} bytes");
    push.kill9();

    let out = c.xfer(&["push", "-q", "--compress", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    assert!(
        out.stdout().is_empty(),
        "quiet re-run prints nothing: {}",
        out.stdout()
    );
    let stored = std::fs::read(d.files_dir("alice").join("half.txt")).unwrap();
    assert!(stored == data, "stored bytes differ after the resume");
    let up = audit_line(&d, "upload", "half.txt");
    let resumed = audit_u64(&up, "resumed_from").expect("resumed_from=");
    let received = audit_u64(&up, "bytes_received").expect("bytes_received=");
    let wire = audit_u64(&up, "wire_bytes").expect("wire_bytes=");
    assert!(resumed >= cut_at, "resumed from {resumed}: {up}");
    assert!(
        received.abs_diff(size - resumed) <= 3 * MIB,
        "re-run received {received} of {} missing: {up}",
        size - resumed
    );
    assert!(wire < received * 9 / 10, "the re-run was compressed: {up}");
}

/// Logs in as alice and opens an upload of `size` bytes to `name`.
async fn open_upload(d: &Daemon, name: &str, size: u64) -> (RawConn, u64) {
    let mut conn = d.raw_login("alice").await;
    let r = conn
        .request(Request::PutBegin {
            path: name.into(),
            size,
            force: false,
            head: b"plain text".to_vec().into(),
        })
        .await;
    let Some(Response::PutReady { transfer_id, .. }) = r else {
        panic!("upload not admitted: {r:?}");
    };
    (conn, transfer_id)
}

/// A zstd frame of `data` that claims `raw_len` decompressed bytes.
fn lying_chunk(transfer_id: u64, data: &[u8], raw_len: u32) -> Frame<Request> {
    let packed = Chunk::raw(transfer_id, 0, Digest::of(data), data.to_vec().into()).compress(1);
    assert!(
        matches!(packed.encoding, ChunkEncoding::Zstd { .. }),
        "test data must compress"
    );
    Frame::Chunk(Chunk {
        encoding: ChunkEncoding::Zstd { raw_len },
        ..packed
    })
}

/// A fresh connection can still log in and push.
fn still_serves(d: &Daemon) {
    let c = alice(d);
    let local = TempDir::new().unwrap();
    let path = write_file(local.path(), "after.txt", b"still here\n");
    let out = c.xfer(&["push", "-q", "--compress", "--force", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_frame_claiming_more_than_a_chunk_is_refused() {
    let d = tokio::task::block_in_place(Daemon::start);
    let data = log_text(CHUNK, 9);
    let (mut conn, id) = open_upload(&d, "big.log", data.len() as u64).await;
    let claim = 2 * CHUNK as u32;
    conn.framed
        .send(lying_chunk(id, &data, claim))
        .await
        .unwrap();
    match conn.next().await {
        Some(Response::Error {
            code: ErrorCode::BadRequest,
            message,
        }) => assert!(
            message.contains(&claim.to_string()) && message.contains("more than a chunk"),
            "{message}"
        ),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert_eq!(conn.next().await, None, "closed after the error");
    tokio::task::block_in_place(|| {
        assert!(!d.files_dir("alice").join("big.log").exists());
        still_serves(&d);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_frame_lying_about_its_size_is_refused_and_nothing_is_written() {
    let d = tokio::task::block_in_place(Daemon::start);
    let data = log_text(200_000, 11);
    let size = data.len() as u32;
    // Claims fewer bytes than it holds (a decompression bomb in miniature), then more.
    for (name, claim) in [("short.log", size / 4), ("long.log", size + 1000)] {
        let (mut conn, id) = open_upload(&d, name, u64::from(claim)).await;
        conn.framed
            .send(lying_chunk(id, &data, claim))
            .await
            .unwrap();
        match conn.next().await {
            Some(Response::Error {
                code: ErrorCode::BadRequest,
                message,
            }) => assert!(
                message.contains("compressed chunk") && message.contains("offset 0"),
                "{name}: {message}"
            ),
            other => panic!("{name}: expected BadRequest, got {other:?}"),
        }
        // The transfer is over, the connection is not.
        let r = conn
            .request(Request::PutCommit {
                transfer_id: id,
                digest: Digest::of(&data),
            })
            .await;
        assert!(
            matches!(
                r,
                Some(Response::Error {
                    code: ErrorCode::BadRequest,
                    ..
                })
            ),
            "{name}: {r:?}"
        );
        assert_eq!(conn.request(Request::Ping).await, Some(Response::Pong));
        assert!(!d.files_dir("alice").join(name).exists(), "{name} stored");
    }
    // Garbage that is not zstd at all.
    let (mut conn, id) = open_upload(&d, "junk.log", 5000).await;
    let junk = vec![0xA5u8; 3000];
    conn.framed
        .send(Frame::Chunk(Chunk {
            transfer_id: id,
            offset: 0,
            digest: Digest::of(&junk),
            data: junk.into(),
            encoding: ChunkEncoding::Zstd { raw_len: 5000 },
        }))
        .await
        .unwrap();
    match conn.next().await {
        Some(Response::Error {
            code: ErrorCode::BadRequest,
            message,
        }) => assert!(message.contains("compressed chunk"), "{message}"),
        other => panic!("expected BadRequest, got {other:?}"),
    }
    tokio::task::block_in_place(|| still_serves(&d));
}
