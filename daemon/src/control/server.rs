//! The daemon's end of the control socket: bind it safely, then answer one request per
//! connection.
//!
//! Binding refuses to take over a socket another live daemon answers on, removes a
//! stale one left by a crash, and sets mode 0600 (the directory it lives in, the
//! runtime or data directory, is private too). Because a client could connect in the
//! instant between `bind` and `chmod`, every connection's peer credentials are also
//! checked: only the daemon's own user and root are served.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Control, ControlReply, ControlRequest};

/// Longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 4096;
/// Time a client gets to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound control socket; the file is removed when [`ControlSocket::serve`] ends.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` with mode 0600.
    ///
    /// # Errors
    /// Another daemon answers on `path`; `path` is something other than a socket; or
    /// it cannot be bound (missing directory, permissions).
    pub fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
        Self::refuse_if_running(path)?;
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding control socket `{}`", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on `{}`", path.display()))?;
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
        })
    }

    /// Fails if a live daemon answers on `path`; removes a stale socket left by one
    /// that died. Called before start-up touches the data directory, and again by
    /// [`ControlSocket::bind`].
    ///
    /// # Errors
    /// Another daemon answers; `path` is not a socket; a stale one cannot be removed.
    pub fn refuse_if_running(path: &Path) -> anyhow::Result<()> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                bail!(
                    "control_socket `{}` exists and is not a socket; remove it or set control_socket to another path",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another xferd is running with control socket `{}`; stop it first, or give this one its own data_dir or control_socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale control socket `{}`", path.display()))?;
            info!(path = %path.display(), "removed a stale control socket");
        }
        Ok(())
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until `shutdown` fires, then removes the socket file.
    pub async fn serve(self, control: Arc<Control>, shutdown: CancellationToken) {
        loop {
            let stream = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            let control = control.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(&control, stream).await {
                    debug!(error = %e, "control connection failed");
                }
            });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon's effective uid and root may use the socket.
fn allowed(stream: &UnixStream) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    stream
        .peer_cred()
        .is_ok_and(|cred| cred.uid() == me || cred.uid() == 0)
}

async fn answer(control: &Control, stream: UnixStream) -> std::io::Result<()> {
    let reply = if allowed(&stream) {
        None
    } else {
        warn!("control socket connection refused: peer is neither this daemon's user nor root");
        Some(ControlReply::Error {
            message: "permission denied: run as the daemon's user or root".into(),
        })
    };
    let (read, mut write) = stream.into_split();
    let reply = match reply {
        Some(r) => r,
        None => {
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
            match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
                Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
                    Ok(request) => control.handle(request).await,
                    Err(e) => ControlReply::Error {
                        message: format!("bad control request: {e}"),
                    },
                },
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}
