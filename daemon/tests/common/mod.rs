//! What the in-process tests share: `xferd::serve` on 127.0.0.1:0 over a temporary data
//! directory with a few users, and raw protocol connections to it over real TLS.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use xfer_certs::PinnedVerifier;
use xfer_proto::{ClientCodec, Frame, Hello, Request, Response, Secret};
use xferd::accounts::{PasswordFile, UserName, hash_password};
use xferd::{Config, ServerState};

/// Every test user's password.
pub const PASSWORD: &str = "correct horse battery";

/// A TLS connection speaking the xfer protocol as a client.
pub type Raw = Framed<TlsStream<TcpStream>, ClientCodec>;

/// A running in-process server.
pub struct Server {
    pub addr: SocketAddr,
    pub fingerprint: xfer_certs::Fingerprint,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub config: Config,
    pub data: TempDir,
}

/// Starts a server with `users` (password [`PASSWORD`]) on defaults changed by `tweak`.
pub async fn start(users: &[&str], tweak: impl FnOnce(&mut Config)) -> Server {
    let data = TempDir::new().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().join("data"),
        ..Config::default()
    };
    config.storage.min_free_bytes = 0;
    tweak(&mut config);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&config.data_dir)
        .unwrap();
    for user in users {
        let name: UserName = user.parse().unwrap();
        let phc = hash_password(PASSWORD).unwrap();
        PasswordFile::update(&config.password_file(), |f| f.add(&name, phc)).unwrap();
    }
    serve(config, data).await
}

async fn serve(config: Config, data: TempDir) -> Server {
    let state = Arc::new(ServerState::open(config.clone()).await.unwrap());
    let fingerprint = state.fingerprint();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(xferd::serve(state, listener, shutdown.clone()));
    Server {
        addr,
        fingerprint,
        shutdown,
        task,
        config,
        data,
    }
}

#[allow(dead_code)] // each test binary uses its own subset
impl Server {
    /// A clean stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// A clean stop and a new server on the same data directory.
    pub async fn restart(self) -> Server {
        self.shutdown.cancel();
        let _ = self.task.await;
        serve(self.config, self.data).await
    }

    /// A user's visible home directory.
    pub fn home(&self, user: &str) -> PathBuf {
        self.data.path().join("data/users").join(user).join("files")
    }
}

/// Connects, exchanges hellos and logs in as `user`; `recv_buffer` shrinks the socket's
/// receive buffer (a slow reader the server notices early).
pub async fn login(server: &Server, user: &str, recv_buffer: Option<u32>) -> Raw {
    let config =
        xfer_certs::config::client_config_pinned(PinnedVerifier::new(Some(server.fingerprint)));
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(n) = recv_buffer {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let tcp = socket.connect(server.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut framed = Framed::new(tls, ClientCodec::new(xfer_proto::MAX_FRAME_LEN));
    framed
        .send(Frame::Hello(Hello::current("test")))
        .await
        .unwrap();
    assert!(matches!(framed.next().await, Some(Ok(Frame::Hello(_)))));
    framed
        .send(Frame::Message(Request::Login {
            user: user.into(),
            password: Secret::new(PASSWORD),
        }))
        .await
        .unwrap();
    let r = framed.next().await;
    assert!(
        matches!(r, Some(Ok(Frame::Message(Response::LoggedIn { .. })))),
        "{r:?}"
    );
    framed
}
