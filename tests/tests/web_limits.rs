//! The HTTP side's bounds on one connection (docs/HTTP.md, "Limits and headers"), over
//! raw TLS with ALPN `http/1.1`: a request head over 64 KiB is refused, a head that
//! never ends is dropped after 30 s, and a connection whose requests never sign in is
//! closed at the login deadline however busy it keeps itself; a refusal sent before the
//! body was read reaches the client.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xfer_e2e::{CHUNK, DEADLINE, Daemon, blake3_hex, random_bytes};

use super::web_api::{Web, base64_head, begin, code, http1_tls};

/// Everything the server sends until it closes the connection, which must happen within
/// `limit`.
async fn read_to_close<R: tokio::io::AsyncRead + Unpin>(io: &mut R, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {limit:?}; it sent {} bytes",
        out.len()
    );
    out
}

fn request(header_len: usize) -> String {
    format!(
        "GET /api/server HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(header_len)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_64_kib_is_refused_and_one_under_it_is_served() {
    let d = Daemon::start_with(&["alice"], None);
    let mut tls = http1_tls(&d).await;
    tls.write_all(request(1024).as_bytes()).await.unwrap();
    let served = read_to_close(&mut tls, DEADLINE).await;
    let served = String::from_utf8_lossy(&served);
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");

    let mut tls = http1_tls(&d).await;
    // The server may stop reading (and close) before the whole head is written.
    let _ = tls.write_all(request(70 * 1024).as_bytes()).await;
    let refused = read_to_close(&mut tls, DEADLINE).await;
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_dropped_after_30_s() {
    // The login deadline far beyond the head's 30 s, so only the head timeout can close.
    let d = Daemon::start_with(&["alice"], Some("[limits]\nlogin_timeout_secs = 600\n"));
    let mut tls = http1_tls(&d).await;
    let started = std::time::Instant::now();
    tls.write_all(b"GET /api/server HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let sent = read_to_close(&mut tls, Duration::from_secs(30) + DEADLINE).await;
    // Not before the head's time was up (the server's clock started at the connection,
    // a little before this one).
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(25), "closed after {waited:?}");
    // Nothing was answered: the request never became one.
    let sent = String::from_utf8_lossy(&sent);
    assert!(!sent.contains("200 OK"), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_that_never_signs_in_is_closed_at_the_login_deadline() {
    let d = Daemon::start_with(&["alice"], Some("[limits]\nlogin_timeout_secs = 3\n"));
    let (mut rx, mut tx) = tokio::io::split(http1_tls(&d).await);
    // Anonymous requests one after another: the connection is never idle and no request
    // head is ever late, so nothing but the login deadline can close it.
    let writer = tokio::spawn(async move {
        let req = b"GET /api/server HTTP/1.1\r\nHost: localhost\r\n\r\n";
        // Paced, so the test does not take a core: the idle timeout (15 min) and the
        // head's 30 s are far longer than the gaps.
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        loop {
            pace.tick().await;
            if tx.write_all(req).await.is_err() {
                break;
            }
        }
    });
    let answers = read_to_close(&mut rx, Duration::from_secs(3) + DEADLINE).await;
    writer.abort();
    let answers = String::from_utf8_lossy(&answers);
    assert!(
        answers.matches("HTTP/1.1 200").count() > 1,
        "the anonymous requests were served until the deadline: {}",
        &answers[..answers.len().min(500)]
    );
    let logged = tokio::task::block_in_place(|| {
        xfer_e2e::poll(DEADLINE, || {
            d.log()
                .contains("closing connections that did not log in in time")
                .then_some(())
        })
    });
    assert!(logged.is_some(), "{}", d.log());
}

/// A refusal sent before the body was read closes an HTTP/1.1 connection with the body
/// still arriving; the client must get the refusal, not a reset (`web/linger.rs`).
/// Repeated, since without the linger the reset wins only some of the races.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_sent_before_the_body_is_read_reaches_an_http1_client() {
    let d = Daemon::start_with(&["alice"], None);
    let web = Web::with_alpn(&d, &[b"http/1.1"]);
    let (token, _) = web.session("alice").await;
    let data = random_bytes(2 * CHUNK, 21);
    let body = json!({ "path": "r.bin", "size": data.len(), "head": base64_head(&data) });
    let (status, open) = begin(&web, &token, body).await;
    assert_eq!(status, StatusCode::OK, "{open}");
    let id = open["id"].as_str().unwrap();
    let mut longer = data.clone();
    longer.extend_from_slice(&data[..CHUNK]);
    for round in 0..20 {
        let r = web
            .bearer(Method::PUT, &format!("/api/uploads/{id}/runs/0"), &token)
            .header(
                "x-xfer-blake3",
                [blake3_hex(&data[..CHUNK]), blake3_hex(&data[CHUNK..])].join(","),
            )
            .body(longer.clone())
            .send()
            .await;
        let r = r.unwrap_or_else(|e| panic!("round {round}: no answer but {e:?}"));
        assert_eq!(
            code(r).await,
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into()),
            "round {round}"
        );
    }
}
