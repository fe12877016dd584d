//! A connection to `xferd`: TCP, TLS with a given rustls config, the `Hello` exchange,
//! and typed request/response methods every command uses.
//!
//! Deciding which certificate to trust is not done here but in [`crate::trust`], which
//! builds the rustls config and interprets handshake failures.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;
use xfer_certs::Fingerprint;
use xfer_proto::{
    Chunk, ClientCodec, Digest, Entry, Frame, Hello, Payload as _, ProtoError, Request, Response,
    Secret, WhoAmI,
    codec::{write_chunk, write_message},
};

use crate::error::{NetworkError, ProtocolError, RemoteError};
use crate::target::ServerAddr;

/// Limit for TCP connect, and again for the TLS handshake plus `Hello`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Limit for one request's answer. Generous: a login may wait on the server's
/// deliberately slow password hashing and throttling.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server's certificate is verified on this connection (shown by `whoami`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Pinned fingerprint.
    Pinned(Fingerprint),
    /// Verified by a CA file.
    Ca(std::path::PathBuf),
}

/// Why [`Client::connect`] failed, so the caller can tell a rejected certificate
/// (whose details its verifier holds) from other failures.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect failed or timed out.
    Tcp(anyhow::Error),
    /// The TLS handshake failed; `rustls` holds the rustls reason if there was one.
    Tls {
        /// The error, as a [`NetworkError`].
        error: anyhow::Error,
        /// The rustls error behind it.
        rustls: Option<rustls::Error>,
    },
    /// After TLS: the `Hello` exchange failed.
    Hello(anyhow::Error),
}

impl ConnectError {
    /// The error to report.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            ConnectError::Tcp(e) | ConnectError::Tls { error: e, .. } | ConnectError::Hello(e) => e,
        }
    }
}

/// How the server answered [`Request::PutBegin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStart {
    /// The transfer is open.
    Ready {
        /// Its id.
        transfer_id: u64,
        /// Chunk size in bytes.
        chunk_size: u32,
        /// Chunks the server already holds, verified.
        chunks_held: u64,
    },
    /// A file is already there (and `force` was not set).
    Exists {
        /// Its size.
        size: u64,
        /// Its digest, if known.
        digest: Option<Digest>,
    },
}

/// An open download, from [`Request::GetBegin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetStart {
    /// Its id.
    pub transfer_id: u64,
    /// File size in bytes.
    pub size: u64,
    /// Whole-file BLAKE3.
    pub digest: Digest,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Last modification, Unix seconds.
    pub modified_unix: u64,
}

/// A byte stream a [`Client`] runs over: TLS over TCP in real use, an in-memory pipe
/// in tests.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// An open, hello'd connection to a server.
pub struct Client {
    framed: Framed<Box<dyn Transport>, ClientCodec>,
    server: ServerAddr,
    identity: Option<Identity>,
    server_software: String,
}

impl Client {
    /// Connects to `server`, verifying its certificate with `config`, and exchanges `Hello`s.
    ///
    /// # Errors
    /// See [`ConnectError`]; protocol version mismatch is a [`ProtocolError`] inside `Hello`.
    pub async fn connect(
        server: &ServerAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Client, ConnectError> {
        let hp = server.host_port();
        let addr = (server.host.as_str(), server.port);
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                let msg = format!("cannot connect to {hp}");
                return Err(ConnectError::Tcp(NetworkError::with_source(msg, e).into()));
            }
            Err(_) => {
                let msg = format!("cannot connect to {hp}: timed out after {CONNECT_TIMEOUT:?}");
                return Err(ConnectError::Tcp(NetworkError::new(msg).into()));
            }
        };
        // Requests are small and answered one at a time: do not let Nagle delay them.
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(server.host.clone()).map_err(|e| {
            ConnectError::Tcp(
                NetworkError::with_source(format!("invalid host name in {hp}"), e).into(),
            )
        })?;
        let connect = TlsConnector::from(config).connect(name, tcp);
        let tls = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let rustls = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .cloned();
                let error = handshake_failure(&hp, e).into();
                return Err(ConnectError::Tls { error, rustls });
            }
            Err(_) => {
                let msg = format!("TLS handshake with {hp} timed out after {CONNECT_TIMEOUT:?}");
                let error = NetworkError::new(msg).into();
                return Err(ConnectError::Tls {
                    error,
                    rustls: None,
                });
            }
        };
        if tls.get_ref().1.alpn_protocol() != Some(xfer_certs::ALPN) {
            return Err(ConnectError::Hello(
                NetworkError::new(format!(
                    "{hp} is a TLS server but not an xferd (no xfer ALPN); check the port"
                ))
                .into(),
            ));
        }
        let mut client = Client {
            // Writes get the answers' limit too, counted from when they stop moving.
            framed: Framed::new(
                Box::new(crate::stall::WriteDeadline::new(tls, REQUEST_TIMEOUT)),
                ClientCodec::new(xfer_proto::MAX_FRAME_LEN),
            ),
            server: server.clone(),
            identity: None,
            server_software: String::new(),
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, client.hello()).await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(ConnectError::Hello(e)),
            Err(_) => Err(ConnectError::Hello(
                NetworkError::new(format!(
                    "{hp} did not answer hello within {CONNECT_TIMEOUT:?}"
                ))
                .into(),
            )),
        }
    }

    /// A client over an already open stream, for tests: no TLS and no `Hello` exchange
    /// (the peer must not expect one).
    #[doc(hidden)]
    pub fn over_stream(stream: impl Transport + 'static, server: ServerAddr) -> Client {
        Client {
            framed: Framed::new(
                Box::new(stream),
                ClientCodec::new(xfer_proto::MAX_FRAME_LEN),
            ),
            server,
            identity: None,
            server_software: String::new(),
        }
    }

    async fn hello(&mut self) -> Result<()> {
        let ours = Hello::current(format!("xfer/{}", env!("CARGO_PKG_VERSION")));
        self.send(Frame::Hello(ours)).await?;
        match self.recv().await? {
            Frame::Hello(theirs) if theirs.version == xfer_proto::PROTOCOL_VERSION => {
                self.server_software = theirs.software;
                Ok(())
            }
            Frame::Hello(theirs) => Err(ProtocolError(format!(
                "server {} speaks xfer protocol v{}, this client speaks v{}; install matching versions",
                self.server,
                theirs.version,
                xfer_proto::PROTOCOL_VERSION
            ))
            .into()),
            Frame::Message(Response::Error { code, message }) => Err(RemoteError { code, message }.into()),
            _ => Err(self.unexpected("a hello")),
        }
    }

    /// The server this client is connected to.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// Records how the server's certificate was verified (by [`crate::trust`]).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// How the server's certificate was verified, once recorded.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The software name the server announced (for diagnostics; escape before printing).
    pub fn server_software(&self) -> &str {
        &self.server_software
    }

    /// Sends one request and reads its one response; `Response::Error` becomes [`RemoteError`].
    ///
    /// # Errors
    /// [`RemoteError`], [`NetworkError`] (connection lost, timeout), [`ProtocolError`].
    pub async fn request(&mut self, req: Request) -> Result<Response> {
        self.send(Frame::Message(req)).await?;
        self.recv_response().await
    }

    /// Logs in with a password; returns the new session token and its expiry (Unix seconds)
    /// and the account name as the server spells it.
    ///
    /// # Errors
    /// As [`Client::request`]; wrong credentials are `RemoteError` with `AuthFailed`.
    pub async fn login(&mut self, user: &str, password: Secret) -> Result<(String, Secret, u64)> {
        let req = Request::Login {
            user: user.to_string(),
            password,
        };
        match self.request(req).await? {
            Response::LoggedIn {
                user,
                token: Some(token),
                expires_unix,
            } => Ok((user, token, expires_unix)),
            _ => Err(self.unexpected("a session token")),
        }
    }

    /// Authenticates this connection with a saved session token; returns the account name.
    ///
    /// # Errors
    /// As [`Client::request`]; an invalid token is `RemoteError` with `AuthFailed`.
    pub async fn authenticate(&mut self, token: &Secret) -> Result<String> {
        let req = Request::Authenticate {
            token: token.clone(),
        };
        match self.request(req).await? {
            Response::LoggedIn { user, .. } => Ok(user),
            _ => Err(self.unexpected("a login confirmation")),
        }
    }

    /// Revokes this connection's session token on the server.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn logout(&mut self) -> Result<()> {
        match self.request(Request::Logout).await? {
            Response::Ok => Ok(()),
            _ => Err(self.unexpected("ok")),
        }
    }

    /// The session's account details.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn whoami(&mut self) -> Result<WhoAmI> {
        match self.request(Request::WhoAmI).await? {
            Response::WhoAmI(w) => Ok(w),
            _ => Err(self.unexpected("account details")),
        }
    }

    /// Lists a directory (or describes one file), page by page until the last. Names
    /// are not validated here.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let mut all: Vec<Entry> = Vec::new();
        loop {
            let req = Request::List {
                path: path.to_string(),
                after: all.last().map(|e| e.name.clone()),
            };
            match self.request(req).await? {
                Response::Listing { entries, more } => {
                    let progress = !entries.is_empty();
                    all.extend(entries);
                    // A server that says `more` but sends nothing would loop forever.
                    if !more || !progress {
                        return Ok(all);
                    }
                }
                _ => return Err(self.unexpected("a listing")),
            }
        }
    }

    /// Creates a directory (with its parents if `parents`).
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn mkdir(&mut self, path: &str, parents: bool) -> Result<()> {
        let req = Request::Mkdir {
            path: path.to_string(),
            parents,
        };
        self.expect_ok(req).await
    }

    /// Removes a file, a directory (`recursive` for a non-empty one) or, with `partial`,
    /// the upload in progress to `path`.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn remove(&mut self, path: &str, recursive: bool, partial: bool) -> Result<()> {
        let req = Request::Remove {
            path: path.to_string(),
            recursive,
            partial,
        };
        self.expect_ok(req).await
    }

    /// Renames `from` to `to`, replacing a file at `to` only with `force`.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn rename(&mut self, from: &str, to: &str, force: bool) -> Result<()> {
        let req = Request::Rename {
            from: from.to_string(),
            to: to.to_string(),
            force,
        };
        self.expect_ok(req).await
    }

    /// Sets a remote file's modification time (seconds since the Unix epoch).
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn set_modified(&mut self, path: &str, modified_unix: u64) -> Result<()> {
        let req = Request::SetModified {
            path: path.to_string(),
            modified_unix,
        };
        self.expect_ok(req).await
    }

    /// Starts or resumes an upload.
    ///
    /// # Errors
    /// As [`Client::request`] (admission refusals are `RemoteError`s).
    pub async fn put_begin(
        &mut self,
        path: &str,
        size: u64,
        force: bool,
        head: bytes::Bytes,
    ) -> Result<PutStart> {
        let req = Request::PutBegin {
            path: path.to_string(),
            size,
            force,
            head,
        };
        self.begin_upload(req).await
    }

    /// Sends `PutBegin` or `SendBegin` and reads the admission answer.
    async fn begin_upload(&mut self, req: Request) -> Result<PutStart> {
        match self.request(req).await? {
            Response::PutReady {
                transfer_id,
                chunk_size,
                chunks_held,
            } => Ok(PutStart::Ready {
                transfer_id,
                chunk_size,
                chunks_held,
            }),
            Response::Exists { size, digest } => Ok(PutStart::Exists { size, digest }),
            _ => Err(self.unexpected("an upload answer")),
        }
    }

    /// Reads digests `first..first + count` of an open transfer's manifest; returns every
    /// digest from `first` on, following pages until `count` are read.
    ///
    /// # Errors
    /// As [`Client::request`]; a page that starts elsewhere, is empty or runs past `count`
    /// is a [`ProtocolError`].
    pub async fn manifest(
        &mut self,
        transfer_id: u64,
        first: u64,
        count: u64,
    ) -> Result<Vec<Option<Digest>>> {
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 20));
        while (out.len() as u64) < count {
            let at = first + out.len() as u64;
            let want = (count - out.len() as u64).min(u64::from(xfer_proto::MANIFEST_PAGE));
            let req = Request::Manifest {
                transfer_id,
                first: at,
                count: want as u32,
            };
            match self.request(req).await? {
                Response::Manifest {
                    first: got_first,
                    digests,
                } if got_first == at && !digests.is_empty() && digests.len() as u64 <= want => {
                    out.extend(digests);
                }
                Response::Manifest { .. } => {
                    return Err(ProtocolError(format!(
                        "{} sent a manifest page other than the one asked for",
                        self.server
                    ))
                    .into());
                }
                _ => return Err(self.unexpected("a manifest page")),
            }
        }
        Ok(out)
    }

    /// Commits an upload whose chunks have all been acknowledged; returns size and digest.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn put_commit(&mut self, transfer_id: u64, digest: Digest) -> Result<(u64, Digest)> {
        match self
            .request(Request::PutCommit {
                transfer_id,
                digest,
            })
            .await?
        {
            Response::Committed { size, digest } => Ok((size, digest)),
            _ => Err(self.unexpected("a commit confirmation")),
        }
    }

    /// Opens a file for download.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn get_begin(&mut self, path: &str) -> Result<GetStart> {
        let req = Request::GetBegin {
            path: path.to_string(),
        };
        match self.request(req).await? {
            Response::GetReady {
                transfer_id,
                size,
                digest,
                chunk_size,
                modified_unix,
            } => Ok(GetStart {
                transfer_id,
                size,
                digest,
                chunk_size,
                modified_unix,
            }),
            _ => Err(self.unexpected("a download answer")),
        }
    }

    /// Closes an open transfer without committing it.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn close(&mut self, transfer_id: u64) -> Result<()> {
        self.expect_ok(Request::Close { transfer_id }).await
    }

    /// Queues a request without flushing or waiting for its answer (read it later with
    /// [`Client::recv_response`] or [`Client::recv_chunk`]). A request carrying a file of
    /// at least [`xfer_proto::payload::APART_MIN`] bytes is written at once behind what
    /// is queued, its data from its own buffer ([`write_message`]); as with a chunk, the
    /// TLS layer may keep its last bytes until the next [`Client::flush`].
    ///
    /// # Errors
    /// [`NetworkError`] if the connection fails while making room in the write buffer.
    pub async fn feed_request(&mut self, req: Request) -> Result<()> {
        if !req.has_large_payload() {
            return self
                .framed
                .feed(Frame::Message(req))
                .await
                .map_err(|e| self.proto_error(e));
        }
        // A whole file's data goes from its own buffer, as a chunk's does.
        self.framed.flush().await.map_err(|e| self.proto_error(e))?;
        match write_message(self.framed.get_mut(), req).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.proto_error(e)),
        }
    }

    /// Writes a chunk frame (the TLS layer may keep its last bytes until the next
    /// [`Client::flush`]); the server answers it with a `ChunkAck`.
    ///
    /// # Errors
    /// [`NetworkError`] if the connection fails while writing.
    pub async fn feed_chunk(&mut self, chunk: Chunk) -> Result<()> {
        // The frames queued before it go first; then the chunk from its own buffer.
        self.framed.flush().await.map_err(|e| self.proto_error(e))?;
        match write_chunk(self.framed.get_mut(), &chunk).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.proto_error(e)),
        }
    }

    /// Writes out everything queued.
    ///
    /// # Errors
    /// [`NetworkError`].
    pub async fn flush(&mut self) -> Result<()> {
        self.framed.flush().await.map_err(|e| self.proto_error(e))
    }

    /// Reads the next frame, which must be a message; `Response::Error` becomes
    /// [`RemoteError`].
    ///
    /// # Errors
    /// [`RemoteError`], [`NetworkError`] (including a [`REQUEST_TIMEOUT`] without a frame),
    /// [`ProtocolError`].
    pub async fn recv_response(&mut self) -> Result<Response> {
        match self.recv_timed().await? {
            Frame::Message(Response::Error { code, message }) => {
                Err(RemoteError { code, message }.into())
            }
            Frame::Message(resp) => Ok(resp),
            _ => Err(self.unexpected("a response")),
        }
    }

    /// Reads the next frame, which must be a chunk (or an `Error` in its place, which
    /// becomes [`RemoteError`]). The chunk is returned as it travelled: a compressed one
    /// is decoded with [`Chunk::into_raw`] by the caller, off the async threads.
    ///
    /// # Errors
    /// As [`Client::recv_response`].
    pub async fn recv_chunk(&mut self) -> Result<Chunk> {
        match self.recv_timed().await? {
            Frame::Chunk(chunk) => Ok(chunk),
            Frame::Message(Response::Error { code, message }) => {
                Err(RemoteError { code, message }.into())
            }
            _ => Err(self.unexpected("file data")),
        }
    }

    /// The next response if one has fully arrived already, without waiting.
    ///
    /// # Errors
    /// As [`Client::recv_response`].
    pub fn try_recv_response(&mut self) -> Option<Result<Response>> {
        use futures_util::FutureExt as _;
        let frame = self.framed.next().now_or_never()?;
        Some(match frame {
            Some(Ok(Frame::Message(Response::Error { code, message }))) => {
                Err(RemoteError { code, message }.into())
            }
            Some(Ok(Frame::Message(resp))) => Ok(resp),
            Some(Ok(_)) => Err(self.unexpected("a response")),
            Some(Err(e)) => Err(self.proto_error(e)),
            None => Err(NetworkError::new(format!("connection to {} closed", self.server)).into()),
        })
    }

    async fn recv_timed(&mut self) -> Result<Frame<Response>> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.recv())
            .await
            .map_err(|_| {
                NetworkError::new(format!(
                    "{} did not answer within {REQUEST_TIMEOUT:?}",
                    self.server
                ))
            })?
    }

    async fn expect_ok(&mut self, req: Request) -> Result<()> {
        match self.request(req).await? {
            Response::Ok => Ok(()),
            _ => Err(self.unexpected("ok")),
        }
    }

    async fn send(&mut self, frame: Frame<Request>) -> Result<()> {
        self.framed
            .send(frame)
            .await
            .map_err(|e| self.proto_error(e))
    }

    async fn recv(&mut self) -> Result<Frame<Response>> {
        match self.framed.next().await {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(e)) => Err(self.proto_error(e)),
            None => Err(NetworkError::new(format!("connection to {} closed", self.server)).into()),
        }
    }

    fn proto_error(&self, e: ProtoError) -> anyhow::Error {
        match e {
            // A peer that vanishes without TLS close_notify: rustls's text for it ends in
            // a documentation URL, which tells a user nothing.
            ProtoError::Io(io) if closed_by_peer(&io) => {
                NetworkError::new(format!("the server {} closed the connection", self.server))
                    .into()
            }
            ProtoError::Io(io) => {
                NetworkError::with_source(format!("connection to {} failed", self.server), io)
                    .into()
            }
            other => ProtocolError(format!("bad frame from {}: {other}", self.server)).into(),
        }
    }

    fn unexpected(&self, wanted: &str) -> anyhow::Error {
        ProtocolError(format!(
            "{} sent an unexpected reply instead of {wanted}",
            self.server
        ))
        .into()
    }
}

/// Requests for chat and for handing files to people. The event routing a chat
/// connection needs lives in [`crate::chat::conn`], on top of these.
impl Client {
    /// Starts or resumes handing a file to `to`: an upload into their
    /// `inbox/<this user>/<name>`, answered like [`Client::put_begin`].
    ///
    /// # Errors
    /// As [`Client::request`] (an unknown recipient is `RemoteError` with `NotFound`).
    pub async fn send_begin(
        &mut self,
        to: &str,
        name: &str,
        size: u64,
        force: bool,
        head: bytes::Bytes,
    ) -> Result<PutStart> {
        let req = Request::SendBegin {
            to: to.to_string(),
            name: name.to_string(),
            size,
            force,
            head,
        };
        self.begin_upload(req).await
    }

    /// Reads the next frame, which must be a message, however long it takes: a chat
    /// connection is quiet between events. `Response::Error` becomes [`RemoteError`].
    ///
    /// # Errors
    /// [`RemoteError`], [`NetworkError`] (connection lost), [`ProtocolError`].
    ///
    /// # Cancel safety
    /// Cancel-safe: a partly received frame stays in the connection's buffer.
    pub async fn recv_message(&mut self) -> Result<Response> {
        match self.recv().await? {
            Frame::Message(Response::Error { code, message }) => {
                Err(RemoteError { code, message }.into())
            }
            Frame::Message(resp) => Ok(resp),
            _ => Err(self.unexpected("a message")),
        }
    }
}

/// Whether an I/O error means the peer closed or reset the connection.
fn closed_by_peer(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// A failed TLS handshake in plain words: the usual causes are a port that is not
/// xferd's (another protocol, or another TLS server) and a peer that hung up.
fn handshake_failure(hp: &str, e: std::io::Error) -> NetworkError {
    let rustls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls {
        Some(rustls::Error::InvalidMessage(_)) => {
            NetworkError::new(format!("{hp} does not speak TLS — is this an xferd port?"))
        }
        Some(
            rustls::Error::NoApplicationProtocol
            | rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol),
        ) => NetworkError::new(format!(
            "{hp} is a TLS server but not an xferd (no xfer ALPN); check the port"
        )),
        _ if closed_by_peer(&e) => NetworkError::new(format!(
            "{hp} closed the connection during the TLS handshake — is this an xferd port?"
        )),
        _ => NetworkError::with_source(format!("TLS handshake with {hp} failed"), e),
    }
}
