//! The raw protocol client, written once: TLS with the xfer ALPN pinned to the server's
//! fingerprint, the hello exchange, login, and requests and responses frame by frame.
//! The end-to-end scenarios use it to play peers the real client never would; the
//! daemon's in-process tests use it to check the server request by request.
//!
//! Two kinds of calls: the lenient ones return `Option` (`None` when the server closed or
//! went quiet past [`DEADLINE`]), for tests where that is the expected outcome; the strict
//! ones ([`RawConn::call`], [`RawConn::response`], [`RawConn::frame`] and the chat and file
//! helpers in [`chat`] and [`files`]) panic instead. Chat events that arrive while a
//! request waits for its answer are kept, in order, for [`RawConn::next`] and
//! [`RawConn::event`].

pub mod chat;
pub mod files;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use xfer_certs::{Fingerprint, PinnedVerifier};
use xfer_proto::{ChatEvent, ClientCodec, ErrorCode, Frame, Hello, Request, Response, Secret};

use crate::{DEADLINE, PASSWORD};

/// How the TCP connection under TLS is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dial {
    /// Local source address (anything in 127.0.0.0/8 works on Linux loopback), so the
    /// server sees different peers.
    pub source: Option<IpAddr>,
    /// Shrinks the socket's receive buffer: a slow reader that the server notices early.
    pub recv_buffer: Option<u32>,
    /// Sends small frames at once (`TCP_NODELAY`), as the in-process tests' request
    /// loops want; off by default, so flooding peers write as they always did.
    pub nodelay: bool,
}

/// A TLS connection that trusts exactly `fingerprint`, optionally from a chosen local
/// source address (anything in 127.0.0.0/8 works on Linux loopback).
pub async fn tls_connect(
    addr: SocketAddr,
    fingerprint: &str,
    source: Option<IpAddr>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let dial = Dial {
        source,
        ..Dial::default()
    };
    tls_dial(addr, fingerprint, dial).await
}

/// A TLS connection that trusts exactly `fingerprint`, with the xfer ALPN (what the
/// client's rustls config offers), opened as `dial` says.
pub async fn tls_dial(
    addr: SocketAddr,
    fingerprint: &str,
    dial: Dial,
) -> std::io::Result<TlsStream<TcpStream>> {
    let fp: Fingerprint = fingerprint.parse().expect("fingerprint");
    let config = xfer_certs::config::client_config_pinned(PinnedVerifier::new(Some(fp)));
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = dial.source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    if let Some(n) = dial.recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(dial.nodelay)?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A raw protocol connection, past the hello: over TLS by default, or over any byte
/// stream ([`RawConn::over`], e.g. an in-memory pipe to a session without TLS).
pub struct RawConn<S = TlsStream<TcpStream>> {
    /// The framed stream, for writing frames (or bytes, through `get_mut`) no helper
    /// covers.
    pub framed: Framed<S, ClientCodec>,
    /// Chat events that arrived while a request waited for its answer, oldest first.
    events: VecDeque<ChatEvent>,
}

impl RawConn {
    /// Connects, completes TLS and the hello exchange.
    pub async fn connect(addr: SocketAddr, fingerprint: &str, source: Option<IpAddr>) -> RawConn {
        let dial = Dial {
            source,
            ..Dial::default()
        };
        Self::dial(addr, fingerprint, dial).await
    }

    /// Like [`RawConn::connect`], with the socket opened as `dial` says.
    pub async fn dial(addr: SocketAddr, fingerprint: &str, dial: Dial) -> RawConn {
        let tls = tls_dial(addr, fingerprint, dial)
            .await
            .expect("tls connect");
        RawConn::over(tls).await
    }

    /// Connects as `dial` says and logs in as `user` with [`PASSWORD`], asserting that
    /// the server accepts.
    pub async fn logged_in(addr: SocketAddr, fingerprint: &str, user: &str, dial: Dial) -> RawConn {
        let mut conn = Self::dial(addr, fingerprint, dial).await;
        let r = conn.request(login_request(user, PASSWORD)).await;
        assert!(
            matches!(r, Some(Response::LoggedIn { .. })),
            "login as {user}: {r:?}"
        );
        conn
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    /// Speaks the protocol over `io`, from the hello on.
    pub async fn over(io: S) -> RawConn<S> {
        let mut framed = Framed::new(io, ClientCodec::new(xfer_proto::MAX_FRAME_LEN));
        framed
            .send(Frame::Hello(Hello::current("e2e")))
            .await
            .expect("send hello");
        match framed.next().await {
            Some(Ok(Frame::Hello(h))) => assert_eq!(h.version, xfer_proto::PROTOCOL_VERSION),
            other => panic!("expected hello, got {other:?}"),
        }
        RawConn {
            framed,
            events: VecDeque::new(),
        }
    }

    /// Logs in with a password; the session token, or `None` if refused.
    pub async fn login(&mut self, user: &str, password: &str) -> Option<String> {
        match self.request(login_request(user, password)).await? {
            Response::LoggedIn {
                token: Some(token), ..
            } => Some(token.expose().to_owned()),
            _ => None,
        }
    }

    /// Authenticates with a token from [`RawConn::login`]; whether it was accepted.
    pub async fn authenticate(&mut self, token: &str) -> bool {
        let req = Request::Authenticate {
            token: Secret::new(token),
        };
        matches!(self.request(req).await, Some(Response::LoggedIn { .. }))
    }

    /// Sends a request without waiting for anything.
    pub async fn send(&mut self, req: Request) -> bool {
        self.framed.send(Frame::Message(req)).await.is_ok()
    }

    /// Sends a request and reads until its answer, keeping the chat events that arrive
    /// first; `None` if the server closed.
    pub async fn request(&mut self, req: Request) -> Option<Response> {
        self.send(req).await.then_some(())?;
        loop {
            match self.read().await? {
                Response::Event(e) => self.events.push_back(*e),
                other => return Some(other),
            }
        }
    }

    /// Like [`RawConn::request`], moving the chat events kept so far into `events`.
    pub async fn request_collecting(
        &mut self,
        req: Request,
        events: &mut Vec<ChatEvent>,
    ) -> Option<Response> {
        let r = self.request(req).await;
        events.extend(self.events.drain(..));
        r
    }

    /// The next message: a kept event first, else what the server sends next; `None` on
    /// close, error, a frame that is not a message, or silence past [`DEADLINE`].
    pub async fn next(&mut self) -> Option<Response> {
        match self.events.pop_front() {
            Some(e) => Some(Response::Event(Box::new(e))),
            None => self.read().await,
        }
    }

    /// Sends a request and returns its answer, keeping events that arrive first; panics
    /// if the server closes or does not answer in time.
    pub async fn call(&mut self, req: Request) -> Response {
        self.framed.send(Frame::Message(req)).await.expect("send");
        self.response().await
    }

    /// The next answer (a message that is not an event), keeping events that arrive
    /// first; panics on anything else.
    pub async fn response(&mut self) -> Response {
        loop {
            match self.frame().await {
                Frame::Message(Response::Event(e)) => self.events.push_back(*e),
                Frame::Message(m) => return m,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next frame off the wire; panics on close, error or silence past [`DEADLINE`].
    pub async fn frame(&mut self) -> Frame<Response> {
        tokio::time::timeout(DEADLINE, self.framed.next())
            .await
            .expect("server answers in time")
            .expect("connection open")
            .expect("valid frame")
    }

    /// The next message off the wire, or `None`.
    async fn read(&mut self) -> Option<Response> {
        match tokio::time::timeout(DEADLINE, self.framed.next()).await {
            Ok(Some(Ok(Frame::Message(m)))) => Some(m),
            _ => None,
        }
    }
}

/// Asserts that `r` is an error with `code` whose message contains `needle`.
pub fn assert_error(r: Response, code: ErrorCode, needle: &str) {
    match r {
        Response::Error { code: c, message } => {
            assert_eq!(c, code, "{message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected {code:?} error, got {other:?}"),
    }
}

fn login_request(user: &str, password: &str) -> Request {
    Request::Login {
        user: user.into(),
        password: Secret::new(password),
    }
}
