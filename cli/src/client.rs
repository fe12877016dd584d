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
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use xfer_certs::Fingerprint;
use xfer_proto::{ClientCodec, Frame, Hello, ProtoError, Request, Response, Secret, WhoAmI};

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

/// An open, hello'd connection to a server.
pub struct Client {
    framed: Framed<TlsStream<TcpStream>, ClientCodec>,
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
                let msg = format!("TLS handshake with {hp} failed");
                let error = NetworkError::with_source(msg, e).into();
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
        let mut client = Client {
            framed: Framed::new(tls, ClientCodec::new(xfer_proto::MAX_FRAME_LEN)),
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
        let frame = tokio::time::timeout(REQUEST_TIMEOUT, self.recv())
            .await
            .map_err(|_| {
                NetworkError::new(format!(
                    "{} did not answer within {REQUEST_TIMEOUT:?}",
                    self.server
                ))
            })??;
        match frame {
            Frame::Message(Response::Error { code, message }) => {
                Err(RemoteError { code, message }.into())
            }
            Frame::Message(resp) => Ok(resp),
            _ => Err(self.unexpected("a response")),
        }
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
