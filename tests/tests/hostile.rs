//! Peers that misbehave get a clean error, and the daemon keeps serving everyone else.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;
use xfer_e2e::{Client, Daemon, PASSWORD, RawConn, tls_connect};
use xfer_proto::{ClientCodec, ErrorCode, Frame, Hello, Request, Response};

/// Reads until the server closes; returns what arrived (bounded by the deadline).
async fn read_to_close(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(xfer_e2e::DEADLINE, stream.read_to_end(&mut out)).await;
    out
}

fn still_serves(d: &Daemon) {
    let c = Client::new();
    c.login(d, "alice", PASSWORD);
    assert_eq!(c.xfer(&["whoami"], "").code(), 0);
}

#[tokio::test]
async fn an_oversized_frame_gets_a_too_large_error() {
    let d = Daemon::start();
    let mut conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
    // Announce a 1 GiB frame before logging in: refused without buffering it.
    let stream = conn.framed.get_mut();
    stream.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    stream.write_all(&[1u8; 64]).await.unwrap();
    match conn.next().await {
        Some(Response::Error {
            code: ErrorCode::TooLarge,
            message,
        }) => {
            assert!(message.contains("exceeds"), "{message}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(conn.next().await, None, "closed after the error");
    still_serves(&d);
}

#[tokio::test]
async fn garbage_instead_of_tls_is_dropped() {
    let d = Daemon::start();
    let mut tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = read_to_close(&mut tcp).await;
    assert!(reply.len() < 64, "at most a TLS alert comes back");
    assert!(d.wait_for_log("TLS handshake failed"));
    still_serves(&d);
}

#[tokio::test]
async fn garbage_after_the_handshake_gets_an_error() {
    let d = Daemon::start();
    let mut tls = tls_connect(d.addr, &d.fingerprint, None).await.unwrap();
    tls.write_all(&[0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4])
        .await
        .unwrap();
    let mut framed = Framed::new(tls, ClientCodec::default());
    match tokio::time::timeout(xfer_e2e::DEADLINE, framed.next()).await {
        Ok(Some(Ok(Frame::Message(Response::Error {
            code: ErrorCode::BadRequest,
            ..
        })))) => {}
        other => panic!("expected BadRequest, got {other:?}"),
    }
    still_serves(&d);
}

#[tokio::test]
async fn a_wrong_protocol_version_is_told_the_servers_version() {
    let d = Daemon::start();
    let tls = tls_connect(d.addr, &d.fingerprint, None).await.unwrap();
    let mut framed = Framed::new(tls, ClientCodec::default());
    framed
        .send(Frame::Hello(Hello {
            version: 999,
            software: "future".into(),
        }))
        .await
        .unwrap();
    match framed.next().await {
        Some(Ok(Frame::Hello(h))) => assert_eq!(h.version, 5),
        other => panic!("expected the server's hello, got {other:?}"),
    }
    assert!(
        framed.next().await.is_none_or(|r| r.is_err()),
        "then closed"
    );
    assert!(d.wait_for_log("speaks protocol v999, this server v5"));
    still_serves(&d);
}

#[tokio::test]
async fn requests_before_login_are_refused() {
    let d = Daemon::start();
    let mut conn = RawConn::connect(d.addr, &d.fingerprint, None).await;
    let r = conn.request(Request::WhoAmI).await;
    assert!(
        matches!(
            r,
            Some(Response::Error {
                code: ErrorCode::AuthRequired,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(conn.request(Request::Ping).await, Some(Response::Pong));
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_handshake_deadline() {
    let tmp = tempfile::TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("xferd.toml");
    std::fs::write(&cfg, "[limits]\nhandshake_timeout_secs = 1\n").unwrap();
    xfer_e2e::add_user(&data, "alice", PASSWORD);
    let d = Daemon::start_in(&data, &["--config", cfg.to_str().unwrap()]).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let started = std::time::Instant::now();
    read_to_close(&mut tcp).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "closed by the deadline"
    );
    assert!(d.wait_for_log("TLS handshake timed out"));
}

#[test]
fn the_client_names_a_protocol_version_mismatch() {
    // A fake server that speaks TLS with a real certificate but protocol v999.
    let tmp = tempfile::TempDir::new().unwrap();
    let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    xfer_certs::generate::ensure_identity(&cert, &key, &["localhost".into()]).unwrap();
    let config = xfer_certs::config::load_server_config(&cert, &key).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut framed = Framed::new(tls, xfer_proto::ServerCodec::default());
            let _ = framed.next().await;
            let _ = framed
                .send(Frame::Hello(Hello {
                    version: 999,
                    software: "fake".into(),
                }))
                .await;
        }
    });
    let c = Client::new();
    let out = c.xfer(
        &[
            "login",
            &format!("alice@{addr}"),
            "--password-stdin",
            "--accept-new",
        ],
        "password1\n",
    );
    assert_eq!(out.code(), 9, "protocol errors exit 9: {}", out.stderr());
    assert!(
        out.stderr()
            .contains("speaks xfer protocol v999, this client speaks v5"),
        "{}",
        out.stderr()
    );
}
