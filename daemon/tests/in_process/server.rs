//! What the in-process tests share: `xferd::serve` on 127.0.0.1:0 over a temporary data
//! directory with a few users, and raw protocol connections to it over real TLS (the
//! test kit's [`RawConn`]).

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use xfer_e2e::{Dial, PASSWORD, RawConn};
use xferd::accounts::{PasswordFile, UserName, hash_password};
use xferd::{Config, ServerState};

/// A running in-process server.
pub struct Server {
    pub addr: SocketAddr,
    /// The certificate fingerprint, as the daemon prints it.
    pub fingerprint: String,
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
    let fingerprint = state.fingerprint().to_string();
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

    /// A raw connection logged in as `user` (password [`PASSWORD`]), with
    /// `TCP_NODELAY`.
    pub async fn login(&self, user: &str) -> RawConn {
        self.login_with(user, None).await
    }

    /// Like [`Server::login`]; `recv_buffer` shrinks the socket's receive buffer (a slow
    /// reader the server notices early).
    pub async fn login_with(&self, user: &str, recv_buffer: Option<u32>) -> RawConn {
        let dial = Dial {
            recv_buffer,
            nodelay: true,
            ..Dial::default()
        };
        RawConn::logged_in(self.addr, &self.fingerprint, user, dial).await
    }

    /// A user's visible home directory.
    pub fn home(&self, user: &str) -> PathBuf {
        self.data.path().join("data/users").join(user).join("files")
    }
}
