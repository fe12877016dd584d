//! The admin commands' end of the control socket: one request, one reply, blocking.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ControlReply, ControlRequest};

/// How long a reply may take: a reload re-reads files and certificates.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: no daemon runs with this configuration.
    #[error(
        "no xferd is running with control socket `{0}` (start it, or check control_socket and --config)"
    )]
    NotRunning(PathBuf),
    /// The socket exists but this user may not use it.
    #[error("cannot use control socket `{0}`: permission denied; run as the daemon's user or root")]
    Denied(PathBuf),
    /// Anything else on the way.
    #[error("talking to xferd on `{path}`: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Sends `request` to the daemon on `path` and returns its reply.
///
/// # Errors
/// [`ClientError::NotRunning`] when no daemon answers; others as named.
pub fn request(path: &Path, request: &ControlRequest) -> Result<ControlReply, ClientError> {
    let io = |source: std::io::Error| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(path.to_owned())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Denied(path.to_owned()),
        _ => io(e),
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| io(std::io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable reply ({e})"),
        ))
    })
}
