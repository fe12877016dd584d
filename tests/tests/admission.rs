//! Admission and drain: connections that never log in cannot crowd out those that do and
//! are closed by one deadline from accept; a user's transfers are capped in number and
//! (optionally) in bandwidth; SIGTERM checkpoints uploads in flight, tells chat users,
//! and exits 0 within the grace time, and the upload resumes after the restart.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use xfer_e2e::{
    Client, DEADLINE, Daemon, MIB, PASSWORD, RawConn, alice, audit_field, audit_u64, blake3_hex,
    poll, random_bytes, write_file,
};
use xfer_proto::{ErrorCode, Frame, Request, Response};

/// How late a deadline may be observed on a loaded machine.
const MARGIN: Duration = Duration::from_secs(10);

async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source");
    socket.connect(addr).await.expect("connect")
}

/// Whether the server has closed `tcp` (EOF or reset), without waiting.
fn is_closed(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match tcp.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_neither_stop_a_login_from_another_nor_outlive_the_deadline()
 {
    const FLOOD: usize = 500;
    // Long enough for a real login (process start, TLS, argon2) on a loaded machine to
    // finish while the flood is still held open.
    const LOGIN_SECS: u64 = 20;
    // max_connections below the flood: before login, connections must not use it up.
    let config = format!(
        "[limits]\nmax_connections = 100\nhandshake_timeout_secs = {LOGIN_SECS}\nlogin_timeout_secs = {LOGIN_SECS}\n"
    );
    let d = Daemon::start_with(&["alice"], Some(&config));
    // Linux picks 127.0.0.1 as the source of any loopback connection that does not bind
    // one, and `xfer` does not bind: so the flood comes from 127.0.0.2 and the
    // legitimate login from 127.0.0.1.
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let started = Instant::now();
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(connect_from(flooder, d.addr).await);
    }

    let c = Client::new();
    let mut cmd = std::process::Command::new(xfer_e2e::bin("xfer"));
    cmd.args([
        "login",
        &format!("alice@{}", d.host_port()),
        "--password-stdin",
    ])
    .args(["--fingerprint", &d.fingerprint])
    .env("XFER_HOME", c.home());
    let login =
        tokio::task::spawn_blocking(move || xfer_e2e::run(&mut cmd, &format!("{PASSWORD}\n")))
            .await
            .unwrap();
    assert!(
        login.status.success(),
        "login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    // Event, not time: the login got in while part of the flood was still held open,
    // so it did not have to wait for the flood to time out.
    let open = flood.iter().filter(|t| !is_closed(t)).count();
    assert!(open > 0, "the login only got in after the flood was gone");

    let limit = started + Duration::from_secs(LOGIN_SECS) + MARGIN;
    let mut waits = tokio::task::JoinSet::new();
    for (i, mut tcp) in flood.into_iter().enumerate() {
        waits.spawn(async move {
            let mut buf = [0u8; 64];
            let closed =
                tokio::time::timeout_at(tokio::time::Instant::from_std(limit), tcp.read(&mut buf))
                    .await;
            assert!(
                matches!(closed, Ok(Ok(0) | Err(_))),
                "idle connection {i} still open {:?} after it started: {closed:?}",
                started.elapsed()
            );
        });
    }
    while let Some(r) = waits.join_next().await {
        r.expect("every idle connection is closed by the deadline");
    }
    // Logged when it bites, once per burst: not one line per refused connection.
    let refusals = d
        .log()
        .matches("refusing connections not yet logged in")
        .count();
    assert!(
        (1..=2).contains(&refusals),
        "{refusals} refusal lines:\n{}",
        d.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_pings_before_login_is_cut_at_the_login_deadline() {
    const LOGIN_SECS: u64 = 3;
    let config =
        format!("[limits]\nhandshake_timeout_secs = 2\nlogin_timeout_secs = {LOGIN_SECS}\n");
    let d = Daemon::start_with(&["alice"], Some(&config));
    let started = Instant::now();
    let conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
    let (mut tx, mut rx) = conn.framed.split();
    // Pings go out back to back, without waiting for answers, so that a frame is
    // always waiting on the server side.
    let writer = tokio::spawn(async move {
        while tx.feed(Frame::Message(Request::Ping)).await.is_ok() {
            if tx.flush().await.is_err() {
                break;
            }
        }
    });
    let (mut pongs, mut ended_by) = (0u64, None);
    let limit = Duration::from_secs(LOGIN_SECS) + MARGIN;
    let read_all = async {
        while let Some(Ok(frame)) = rx.next().await {
            match frame {
                Frame::Message(Response::Pong) => pongs += 1,
                Frame::Message(other) => ended_by = Some(other),
                _ => {}
            }
        }
    };
    let cut = tokio::time::timeout(limit, read_all).await;
    writer.abort();
    assert!(
        cut.is_ok(),
        "a ping flood kept a connection without login open {limit:?}"
    );
    assert!(pongs > 0, "the flood was answered until the deadline");
    assert!(
        matches!(
            ended_by,
            Some(Response::Error {
                code: ErrorCode::Timeout,
                ..
            })
        ),
        "{ended_by:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(LOGIN_SECS));
}

#[test]
fn a_transfer_beyond_the_per_user_cap_is_refused_as_busy() {
    let d = Daemon::start_with(&["alice"], Some("[limits]\nmax_transfers_per_user = 1\n"));
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let small = write_file(local.path(), "small.bin", &random_bytes(1000, 1));
    assert_eq!(c.xfer(&["push", "-q", &small], "").code(), 0);
    let big = write_file(local.path(), "big.bin", &random_bytes(32 * MIB as usize, 2));
    let mut push = c.spawn(&["push", "-q", "--limit-rate", "1M", &big]);
    let held = poll(DEADLINE, || c.partial_received("big.bin"));
    assert!(
        held.is_some(),
        "big.bin never started: {}",
        push.stderr_so_far()
    );

    // Another connection of the same user: an upload and a download are both refused.
    let other = write_file(local.path(), "other.bin", &random_bytes(1000, 3));
    for args in [
        vec!["push", "-q", other.as_str()],
        vec!["pull", "-q", "small.bin", local.path().to_str().unwrap()],
    ] {
        let out = c.xfer(&args, "");
        assert_eq!(out.code(), 1, "{args:?}: {}", out.stderr());
        assert!(
            out.stderr().contains(
                "alice already has 1 transfers in progress (limits.max_transfers_per_user)"
            ),
            "{args:?}: {}",
            out.stderr()
        );
    }
    assert!(d.wait_for_log("limits.max_transfers_per_user reached"));

    // The place comes back when the transfer ends.
    push.kill9();
    let pushed = poll(DEADLINE, || {
        (c.xfer(&["push", "-q", &other], "").code() == 0).then_some(())
    });
    assert!(
        pushed.is_some(),
        "the slot was not freed when the push ended"
    );
}

#[test]
fn a_user_bandwidth_cap_paces_transfers_that_still_arrive_intact() {
    let d = Daemon::start_with(&["alice"], Some("[limits]\nuser_bytes_per_sec = 2097152\n"));
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    // More than one second's worth, so the bucket runs dry both ways.
    let data = random_bytes(5 * MIB as usize + 123, 4);
    let path = write_file(local.path(), "capped.bin", &data);
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(d.wait_for_log("limits.user_bytes_per_sec reached"));
    let stored = std::fs::read(d.files_dir("alice").join("capped.bin")).unwrap();
    assert_eq!(blake3_hex(&stored), blake3_hex(&data));

    let back = local.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let out = c.xfer(&["pull", "-q", "capped.bin", back.to_str().unwrap()], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let pulled = std::fs::read(back.join("capped.bin")).unwrap();
    assert_eq!(blake3_hex(&pulled), blake3_hex(&data));

    // Whole small files (`PutFile` batches) are paced too, and all arrive.
    let tree = local.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let files: Vec<Vec<u8>> = (0..6).map(|i| random_bytes(MIB as usize, 10 + i)).collect();
    for (i, data) in files.iter().enumerate() {
        write_file(&tree, &format!("f{i}.bin"), data);
    }
    // 6 MiB at 2 MiB/s with at most a second's burst (2 MiB) saved up: at least 2 s
    // each way, however slow the machine (a lower bound only).
    let paced = Duration::from_millis(1500);
    let started = Instant::now();
    let out = c.xfer(&["push", "-r", "-q", tree.to_str().unwrap()], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        started.elapsed() >= paced,
        "push -r took {:?}",
        started.elapsed()
    );
    for (i, data) in files.iter().enumerate() {
        let stored = std::fs::read(d.files_dir("alice").join(format!("tree/f{i}.bin"))).unwrap();
        assert_eq!(blake3_hex(&stored), blake3_hex(data), "tree/f{i}.bin");
    }
    // And back: `GetFile`s read together are paced too, and answered while paced.
    let started = Instant::now();
    let out = c.xfer(&["pull", "-r", "-q", "tree", back.to_str().unwrap()], "");
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        started.elapsed() >= paced,
        "pull -r took {:?}",
        started.elapsed()
    );
    for (i, data) in files.iter().enumerate() {
        let pulled = std::fs::read(back.join(format!("tree/f{i}.bin"))).unwrap();
        assert_eq!(blake3_hex(&pulled), blake3_hex(data), "tree/f{i}.bin");
    }
}

/// A size that keeps the upload in flight at `--limit-rate` and the re-run quick on a
/// 2-core CI machine; the drain does not depend on the size (the acceptance text names
/// 1 GiB).
const DRAIN_SIZE: usize = 256 * MIB as usize;
const GRACE_SECS: u64 = 5;

#[test]
fn sigterm_during_an_upload_exits_zero_in_time_and_the_rerun_resumes() {
    let config = format!("[limits]\nshutdown_grace_secs = {GRACE_SECS}\n");
    let d = Daemon::start_with(&["alice"], Some(&config));
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let data = random_bytes(DRAIN_SIZE, 7);
    let digest = blake3_hex(&data);
    let path = write_file(local.path(), "huge.bin", &data);
    drop(data);

    let push = c.spawn(&["push", "-q", "--limit-rate", "16M", &path]);
    let before = poll(DEADLINE, || {
        c.partial_received("huge.bin").filter(|&r| r >= 16 * MIB)
    });
    let before =
        before.unwrap_or_else(|| panic!("upload never got going: {}", push.stderr_so_far()));

    let (code, took, d) = d.stop_and_restart("TERM");
    assert_eq!(code, Some(0), "xferd exit code after SIGTERM");
    assert!(
        took < Duration::from_secs(GRACE_SECS) + MARGIN,
        "xferd took {took:?} to exit (grace {GRACE_SECS} s)"
    );
    let out = push.wait(DEADLINE);
    assert_eq!(
        out.code(),
        1,
        "the interrupted push fails: {}",
        out.stderr()
    );
    assert!(
        out.stderr().contains("shutting down"),
        "the push says why it stopped: {}",
        out.stderr()
    );
    // The checkpoint kept at least what the server had saved before the signal.
    let held = c
        .partial_received("huge.bin")
        .expect("partial survives the restart");
    assert!(
        held >= before,
        "held {held} after the restart, {before} before"
    );

    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());
    let line = poll(DEADLINE, || {
        d.audit_events("upload")
            .into_iter()
            .find(|l| l.contains("huge.bin"))
    })
    .unwrap_or_else(|| panic!("no upload audit line:\n{}", d.log()));
    let resumed = audit_u64(&line, "resumed_from").expect("resumed_from=");
    assert!(
        resumed >= held,
        "resumed from {resumed}, held {held}: {line}"
    );
    assert_eq!(
        audit_field(&line, "digest").as_deref(),
        Some(digest.as_str()),
        "{line}"
    );
    let stored = std::fs::read(d.files_dir("alice").join("huge.bin")).expect("committed file");
    assert_eq!(
        blake3_hex(&stored),
        digest,
        "stored file differs from the source"
    );
}

#[test]
fn chat_users_are_told_the_server_is_restarting_and_reconnect() {
    let d = Daemon::start_with(&["alice", "bob"], None);
    let b = Client::new();
    b.login(&d, "bob", PASSWORD);
    let f = b.spawn(&["chat", "#general", "--follow"]);
    assert!(
        f.wait_stderr(DEADLINE, "xfer: following "),
        "{}",
        f.stderr_so_far()
    );

    let (code, _, d) = d.stop_and_restart("TERM");
    assert_eq!(code, Some(0));
    assert!(
        f.wait_stderr(DEADLINE, "the server is shutting down or restarting"),
        "{}",
        f.stderr_so_far()
    );
    assert!(
        f.wait_stderr(DEADLINE, "reconnected"),
        "{}",
        f.stderr_so_far()
    );
    drop(d);
}
