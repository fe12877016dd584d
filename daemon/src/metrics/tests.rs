//! The registry's text output, the codec's counting and the listener's answers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use xfer_proto::{
    ChatEvent, ChatMessage, Chunk, ClientCodec, Digest, ErrorCode, Frame, MessageBody, Request,
    Response, ServerCodec,
};

use super::http::{CONNECTION_TIMEOUT, MAX_REQUEST_HEAD};
use super::*;

/// The value of the sample line `series` (name and labels exactly as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_family_has_help_and_type_and_starts_at_zero() {
    let text = Metrics::new().render();
    let families = [
        ("xferd_connections_accepted_total", "counter"),
        ("xferd_connections_open", "gauge"),
        ("xferd_logins_total", "counter"),
        ("xferd_throttle_hits_total", "counter"),
        ("xferd_file_bytes_total", "counter"),
        ("xferd_wire_bytes_total", "counter"),
        ("xferd_files_total", "counter"),
        ("xferd_upload_resumes_total", "counter"),
        ("xferd_upload_resumed_bytes_total", "counter"),
        ("xferd_chunk_verify_failures_total", "counter"),
        ("xferd_chat_messages_said_total", "counter"),
        ("xferd_chat_messages_delivered_total", "counter"),
        ("xferd_errors_sent_total", "counter"),
        ("xferd_build_info", "gauge"),
        ("xferd_start_time_seconds", "gauge"),
    ];
    for (name, kind) in families {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}:\n{text}"
        );
    }
    // Every name is prefixed, and nothing OpenMetrics-only leaks into the 0.0.4 text.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("xferd_"), "{line}");
    }
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    for result in [
        "password_ok",
        "token_ok",
        "failed",
        "throttled",
        "token_refused",
    ] {
        let series = format!("xferd_logins_total{{result=\"{result}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
    for series in [
        "xferd_file_bytes_total{direction=\"in\"}",
        "xferd_file_bytes_total{direction=\"out\"}",
        "xferd_errors_sent_total{code=\"AuthFailed\"}",
        "xferd_errors_sent_total{code=\"Internal\"}",
        "xferd_errors_sent_total{code=\"RateLimited\"}",
        "xferd_throttle_hits_total{throttle=\"chat\"}",
        "xferd_connections_open",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}:\n{text}");
    }
    let version = format!(
        "xferd_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), Some(1.0), "{text}");
    let start = sample(&text, "xferd_start_time_seconds").unwrap();
    assert!((start - crate::now_unix() as f64).abs() < 60.0, "{start}");
}

#[test]
fn hooks_move_their_series() {
    let m = Arc::new(Metrics::new());
    let open = m.connection_accepted();
    let _second = m.connection_accepted();
    drop(open);
    m.login(LoginResult::PasswordOk);
    m.login(LoginResult::Failed);
    m.login(LoginResult::Failed);
    m.login(LoginResult::Throttled);
    m.chunk_received(1000, &Ok(()));
    m.chunk_received(24, &Ok(()));
    m.chunk_received(
        500,
        &Err(StorageError::ChecksumMismatch("chunk at offset 0".into())),
    );
    m.chunk_received(7, &Err(StorageError::NotFound));
    m.upload_committed(0);
    m.upload_committed(4096);
    m.download_completed();
    let text = m.render();
    let expect = [
        ("xferd_connections_accepted_total", 2.0),
        ("xferd_connections_open", 1.0),
        ("xferd_logins_total{result=\"password_ok\"}", 1.0),
        ("xferd_logins_total{result=\"failed\"}", 2.0),
        ("xferd_logins_total{result=\"throttled\"}", 1.0),
        ("xferd_logins_total{result=\"token_ok\"}", 0.0),
        ("xferd_throttle_hits_total{throttle=\"login\"}", 1.0),
        ("xferd_file_bytes_total{direction=\"in\"}", 1024.0),
        ("xferd_chunk_verify_failures_total", 1.0),
        ("xferd_files_total{direction=\"in\"}", 2.0),
        ("xferd_files_total{direction=\"out\"}", 1.0),
        ("xferd_upload_resumes_total", 1.0),
        ("xferd_upload_resumed_bytes_total", 4096.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    }
}

fn message(from: &str, text: &str) -> ChatMessage {
    ChatMessage {
        id: 1,
        time_unix_ms: 0,
        from: from.into(),
        target: xfer_proto::Target::parse("#lab").unwrap(),
        body: MessageBody::Text(text.into()),
    }
}

#[test]
fn the_codec_counts_frames_errors_chunks_and_chat_without_changing_them() {
    let m = Arc::new(Metrics::new());
    let mut metered = MeteredCodec::new(ServerCodec::default(), m.clone());
    metered.set_max_frame_length(xfer_proto::MAX_FRAME_LEN);
    let mut plain = ServerCodec::new(xfer_proto::MAX_FRAME_LEN);
    let data = Bytes::from(vec![7u8; 3000]);
    let frames = [
        Frame::Message(Response::error(ErrorCode::AuthFailed, "no")),
        Frame::Message(Response::error(ErrorCode::RateLimited, "slow down")),
        Frame::Message(Response::Said {
            id: 1,
            time_unix_ms: 0,
        }),
        Frame::Message(Response::Event(Box::new(ChatEvent::Message(message(
            "bob", "hi",
        ))))),
        Frame::Chunk(Chunk::raw(1, 0, Digest::of(&data), data.clone())),
        Frame::Message(Response::Pong),
    ];
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    for f in frames {
        plain.encode(f.clone(), &mut a).unwrap();
        metered.encode(f, &mut b).unwrap();
    }
    assert_eq!(a, b, "the wrapper must not change a byte");

    // Two requests in, read back through the metered decoder.
    let mut client = ClientCodec::new(xfer_proto::MAX_FRAME_LEN);
    let mut wire = BytesMut::new();
    client
        .encode(Frame::Message(Request::Ping), &mut wire)
        .unwrap();
    client
        .encode(Frame::Message(Request::WhoAmI), &mut wire)
        .unwrap();
    let sent_in = wire.len() as f64;
    while metered.decode(&mut wire).unwrap().is_some() {}

    let text = m.render();
    let expect = [
        ("xferd_errors_sent_total{code=\"AuthFailed\"}", 1.0),
        ("xferd_errors_sent_total{code=\"RateLimited\"}", 1.0),
        ("xferd_errors_sent_total{code=\"Internal\"}", 0.0),
        ("xferd_throttle_hits_total{throttle=\"chat\"}", 1.0),
        ("xferd_chat_messages_said_total", 1.0),
        ("xferd_chat_messages_delivered_total", 1.0),
        ("xferd_file_bytes_total{direction=\"out\"}", 3000.0),
        ("xferd_wire_bytes_total{direction=\"out\"}", b.len() as f64),
        ("xferd_wire_bytes_total{direction=\"in\"}", sent_in),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    }
}

/// A writer that keeps what it accepts until it is flushed (TLS keeps what the socket did
/// not take the same way, for any part of a write).
struct HoldsUntilFlush(tokio::io::DuplexStream, Vec<u8>);

impl tokio::io::AsyncRead for HoldsUntilFlush {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for HoldsUntilFlush {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.1.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while !this.1.is_empty() {
            let n = std::task::ready!(Pin::new(&mut this.0).poll_write(cx, &this.1))?;
            this.1.drain(..n);
        }
        Pin::new(&mut this.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// A chunk sent past the encoder (`Transport::send_chunk`) puts on the wire exactly the
/// bytes of `Frame::Chunk`, behind the frames queued before it, all of them before it
/// returns (a writer that buffers, as TLS does, is flushed), and is counted the same.
#[tokio::test]
async fn a_chunk_sent_from_its_own_buffer_is_the_frame_and_is_counted() {
    use crate::session::{Transport, framed};
    use futures_util::SinkExt as _;

    let m = Arc::new(Metrics::new());
    let (ours, mut theirs) = tokio::io::duplex(4 << 20);
    let mut io = framed(HoldsUntilFlush(ours, Vec::new()), m.clone());
    io.set_max_frame_length(xfer_proto::MAX_FRAME_LEN);
    let data = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
    let chunk = Chunk::raw(3, 1 << 20, Digest::of(&data), data.clone());
    io.feed(Frame::Message(Response::Pong)).await.unwrap();
    io.send_chunk(chunk.clone()).await.unwrap();

    let mut expected = BytesMut::new();
    let mut plain = ServerCodec::new(xfer_proto::MAX_FRAME_LEN);
    plain
        .encode(Frame::Message(Response::Pong), &mut expected)
        .unwrap();
    plain.encode(Frame::Chunk(chunk), &mut expected).unwrap();
    // Nothing else is written: what send_chunk left in a buffer would never arrive.
    let mut wire = vec![0u8; expected.len()];
    let read = tokio::time::timeout(Duration::from_secs(30), theirs.read_exact(&mut wire));
    read.await
        .expect("the whole chunk frame arrives without another write")
        .unwrap();
    assert!(
        wire == expected,
        "the bytes on the wire differ from the frames"
    );
    drop(io);
    assert_eq!(theirs.read(&mut [0u8; 1]).await.unwrap(), 0, "nothing more");

    let text = m.render();
    let series = [
        ("xferd_file_bytes_total{direction=\"out\"}", data.len()),
        ("xferd_wire_bytes_total{direction=\"out\"}", expected.len()),
    ];
    for (series, value) in series {
        assert_eq!(
            sample(&text, series),
            Some(value as f64),
            "{series}:\n{text}"
        );
    }
}

/// Whole files' answers, their data written from its own buffer when large, arrive as
/// the encoder's frames in the order queued, and count as wire bytes.
#[tokio::test]
async fn whole_files_written_apart_are_the_frames_in_order_and_are_counted() {
    use crate::session::{Transport, framed};
    use futures_util::SinkExt;

    let m = Arc::new(Metrics::new());
    let (ours, mut theirs) = tokio::io::duplex(4 << 20);
    let mut io = framed(HoldsUntilFlush(ours, Vec::new()), m.clone());
    io.set_max_frame_length(xfer_proto::MAX_FRAME_LEN);
    let file = |len: usize| {
        let data = Bytes::from((0..len).map(|i| (i % 241) as u8).collect::<Vec<_>>());
        Response::File {
            digest: Digest::of(&data),
            modified_unix: 5,
            data,
        }
    };
    let answers = [
        Response::Pong,
        file(1 << 20),
        file(100),
        file(70_000),
        Response::Ok,
    ];
    let mut expected = BytesMut::new();
    let mut plain = ServerCodec::new(xfer_proto::MAX_FRAME_LEN);
    for answer in answers.clone() {
        plain
            .encode(Frame::Message(answer.clone()), &mut expected)
            .unwrap();
        io.feed_response(answer).await.unwrap();
    }
    SinkExt::<Frame<Response>>::flush(&mut io).await.unwrap();
    let mut wire = vec![0u8; expected.len()];
    let read = tokio::time::timeout(Duration::from_secs(30), theirs.read_exact(&mut wire));
    read.await.expect("every answer arrives").unwrap();
    assert!(
        wire == expected,
        "the bytes on the wire differ from the frames"
    );
    drop(io);
    assert_eq!(theirs.read(&mut [0u8; 1]).await.unwrap(), 0, "nothing more");
    assert_eq!(
        sample(&m.render(), "xferd_wire_bytes_total{direction=\"out\"}"),
        Some(expected.len() as f64)
    );
}

/// One raw HTTP exchange; returns the whole response.
async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn the_listener_serves_metrics_and_refuses_everything_else() {
    let m = Arc::new(Metrics::new());
    m.login(LoginResult::TokenOk);
    let config = MetricsConfig {
        listen: "127.0.0.1:0".into(),
        allow_remote: false,
    };
    let exporter = Exporter::bind(&config, m.clone()).await.unwrap().unwrap();
    let addr = exporter.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(exporter.run(shutdown.clone()));

    let ok = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("content-type: text/plain; version=0.0.4"),
        "{ok}"
    );
    assert!(
        ok.contains("xferd_logins_total{result=\"token_ok\"} 1\n"),
        "{ok}"
    );
    let missing = http(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = http(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(MAX_REQUEST_HEAD * 2)
    );
    let refused = http(addr, &huge).await;
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 431"),
        "{refused}"
    );

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the listener stops on shutdown")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_request_is_dropped() {
    let config = MetricsConfig {
        listen: "127.0.0.1:0".into(),
        allow_remote: false,
    };
    let exporter = Exporter::bind(&config, Arc::default())
        .await
        .unwrap()
        .unwrap();
    let addr = exporter.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(exporter.run(shutdown.clone()));
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let mut out = Vec::new();
    // With time paused, the read completes only once the header timeout fired.
    let read = tokio::time::timeout(CONNECTION_TIMEOUT * 2, slow.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server must close a stalled request");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    shutdown.cancel();
}
