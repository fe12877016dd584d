//! Metrics: the `[metrics]` listener serves Prometheus text that counts what the real
//! client did, byte for byte; it is off unless configured and refuses remote addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use futures_util::SinkExt;
use tempfile::TempDir;
use xfer_e2e::{
    CHUNK, Client, DEADLINE, Daemon, MIB, PASSWORD, RawConn, alice, audit_u64, poll, random_bytes,
    write_file,
};
use xfer_proto::{Chunk, Digest, ErrorCode, Frame, Request, Response};

const ON: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// A plain HTTP/1.1 GET; returns the status code, the headers and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).expect("connect to the metrics listener");
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The scrape, asserting a 200 in the Prometheus text format.
fn scrape(d: &Daemon) -> String {
    let (status, head, body) = get(d.metrics_addr(), "/metrics");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The value of one series (name and labels exactly as exported).
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[test]
fn a_login_a_push_and_a_pull_show_up_byte_for_byte() {
    let d = Daemon::start_with(&["alice"], Some(ON));
    let before = scrape(&d);
    assert_eq!(
        value(&before, "xferd_logins_total{result=\"password_ok\"}"),
        0
    );

    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let size = 3 * CHUNK + 12_345;
    let path = write_file(local.path(), "m.bin", &random_bytes(size, 7));
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "push: {}", out.stderr());
    let back = TempDir::new().unwrap();
    let out = c.xfer(
        &["pull", "m.bin", &format!("{}/", back.path().display())],
        "",
    );
    assert_eq!(out.code(), 0, "pull: {}", out.stderr());

    let m = scrape(&d);
    let size = size as u64;
    assert_eq!(value(&m, "xferd_logins_total{result=\"password_ok\"}"), 1);
    assert_eq!(value(&m, "xferd_logins_total{result=\"failed\"}"), 0);
    assert!(
        value(&m, "xferd_logins_total{result=\"token_ok\"}") >= 2,
        "{m}"
    );
    assert_eq!(value(&m, "xferd_file_bytes_total{direction=\"in\"}"), size);
    assert_eq!(value(&m, "xferd_file_bytes_total{direction=\"out\"}"), size);
    assert_eq!(value(&m, "xferd_files_total{direction=\"in\"}"), 1);
    assert_eq!(value(&m, "xferd_files_total{direction=\"out\"}"), 1);
    assert_eq!(value(&m, "xferd_upload_resumes_total"), 0);
    assert_eq!(value(&m, "xferd_chunk_verify_failures_total"), 0);
    // The frames carried the file's data plus their headers and control messages.
    assert!(
        value(&m, "xferd_wire_bytes_total{direction=\"in\"}") > size / 2,
        "{m}"
    );
    // The pull's chunks, sent from their own buffers, are counted as well.
    assert!(
        value(&m, "xferd_wire_bytes_total{direction=\"out\"}") > size,
        "{m}"
    );
    // login, push and pull each connected once (the scrapes are not counted).
    assert!(value(&m, "xferd_connections_accepted_total") >= 3, "{m}");
    assert_eq!(value(&m, "xferd_errors_sent_total{code=\"AuthFailed\"}"), 0);
    let version = format!(
        "xferd_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&m, &version), 1);
}

#[test]
fn a_failed_login_is_counted_as_failed_and_as_an_error_sent() {
    let d = Daemon::start_with(&["alice"], Some(ON));
    let c = Client::new();
    let out = c.xfer(
        &[
            "login",
            &format!("alice@{}", d.host_port()),
            "--password-stdin",
            "--fingerprint",
            &d.fingerprint,
        ],
        "not the password\n",
    );
    assert_eq!(out.code(), 3, "{}", out.stderr());
    let m = scrape(&d);
    assert_eq!(value(&m, "xferd_logins_total{result=\"failed\"}"), 1);
    assert_eq!(value(&m, "xferd_logins_total{result=\"password_ok\"}"), 0);
    assert_eq!(value(&m, "xferd_errors_sent_total{code=\"AuthFailed\"}"), 1);
}

#[test]
fn only_the_metrics_path_is_served() {
    let d = Daemon::start_with(&[], Some(ON));
    let addr = d.metrics_addr();
    for path in ["/", "/metrics/", "/favicon.ico", "/metricsx"] {
        let (status, head, _) = get(addr, path);
        assert_eq!(status, 404, "{path}: {head}");
    }
    assert!(d.wait_for_log("metrics listening on 127.0.0.1:"));
}

#[test]
fn metrics_are_off_by_default() {
    let d = Daemon::start();
    // The metrics line would be logged before this one.
    assert!(d.wait_for_log(" listening bound="), "{}", d.log());
    assert!(!d.log().contains("metrics listening"), "{}", d.log());
}

#[test]
fn a_non_loopback_metrics_address_is_refused_unless_allowed() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("x.toml");
    std::fs::write(&cfg, "[metrics]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let err = Daemon::start_in(&data, &["--config", cfg.to_str().unwrap()])
        .err()
        .expect("xferd refuses to start");
    assert!(err.contains("metrics.listen"), "{err}");
    assert!(err.contains("metrics.allow_remote"), "{err}");

    std::fs::write(
        &cfg,
        "[metrics]\nlisten = \"0.0.0.0:0\"\nallow_remote = true\n",
    )
    .unwrap();
    let d = Daemon::start_in(&data, &["--config", cfg.to_str().unwrap()]).expect("starts");
    let addr = d.metrics_addr();
    assert!(addr.ip().is_unspecified(), "{addr}");
    let local = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    assert_eq!(get(local, "/metrics").0, 200);
}

#[test]
fn a_resumed_push_counts_one_resume_and_the_bytes_it_skipped() {
    let d = Daemon::start_with(&["alice"], Some(ON));
    let c = alice(&d);
    let local = TempDir::new().unwrap();
    let size = 30 * CHUNK + 999;
    let path = write_file(local.path(), "r.bin", &random_bytes(size, 8));
    let mut push = c.spawn(&["push", "-q", "--limit-rate", "5M", &path]);
    let held = poll(DEADLINE, || {
        assert!(!push.finished(), "push ended before it could be cut");
        c.partial_received("r.bin").filter(|&r| r >= 4 * MIB)
    });
    assert!(held.is_some(), "the server never held 4 MiB of r.bin");
    push.kill9();
    let out = c.xfer(&["push", "-q", &path], "");
    assert_eq!(out.code(), 0, "re-run: {}", out.stderr());

    let line = poll(DEADLINE, || d.audit_events("upload").pop()).expect("upload audited");
    let resumed = audit_u64(&line, "resumed_from").expect("resumed_from=");
    let received = audit_u64(&line, "bytes_received").expect("bytes_received=");
    assert!(resumed >= 4 * MIB, "{line}");
    let m = scrape(&d);
    assert_eq!(value(&m, "xferd_upload_resumes_total"), 1);
    assert_eq!(value(&m, "xferd_upload_resumed_bytes_total"), resumed);
    assert_eq!(value(&m, "xferd_files_total{direction=\"in\"}"), 1);
    // Every verified chunk counts once: what the first run left plus what the second sent.
    assert_eq!(
        value(&m, "xferd_file_bytes_total{direction=\"in\"}"),
        resumed + received,
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_that_fails_its_digest_counts_as_a_verify_failure() {
    let d = tokio::task::block_in_place(|| Daemon::start_with(&["alice"], Some(ON)));
    let mut conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
    assert!(conn.login("alice", PASSWORD).await.is_some());
    let data = b"twelve bytes".to_vec();
    let r = conn
        .request(Request::PutBegin {
            path: "bad.txt".into(),
            size: data.len() as u64,
            force: false,
            head: data.clone().into(),
        })
        .await;
    let Some(Response::PutReady { transfer_id, .. }) = r else {
        panic!("upload not admitted: {r:?}");
    };
    let wrong = Digest::of(b"something else");
    conn.framed
        .send(Frame::Chunk(Chunk::raw(transfer_id, 0, wrong, data.into())))
        .await
        .unwrap();
    let reply = conn.next().await;
    assert!(
        matches!(
            reply,
            Some(Response::Error {
                code: ErrorCode::ChecksumMismatch,
                ..
            })
        ),
        "{reply:?}"
    );
    let m = tokio::task::block_in_place(|| scrape(&d));
    assert_eq!(value(&m, "xferd_chunk_verify_failures_total"), 1);
    assert_eq!(
        value(&m, "xferd_errors_sent_total{code=\"ChecksumMismatch\"}"),
        1
    );
    assert_eq!(value(&m, "xferd_file_bytes_total{direction=\"in\"}"), 0);
}
