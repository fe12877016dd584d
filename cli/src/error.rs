//! Typed errors the client keeps inside its `anyhow` chains, and the exit code each maps to.
//!
//! Commands return `anyhow::Result`; whatever went wrong is one of the typed errors below
//! somewhere in the chain, and [`exit_code`] finds the first one to pick the exit code.
//! This module does not print anything: `main` prints the whole chain on one line.

use std::path::PathBuf;

use xfer_certs::Fingerprint;
use xfer_proto::ErrorCode;

/// What kind of failure ended a command; each kind has its own, documented exit code.
///
/// | code | kind | examples |
/// |------|------|----------|
/// | 0 | success | |
/// | 1 | [`Other`](ErrorKind::Other) | local I/O error, no terminal to ask for a password, server internal error |
/// | 2 | [`Usage`](ErrorKind::Usage) | bad command line (reported by the argument parser), bad `USER@HOST[:PORT]` |
/// | 3 | [`Auth`](ErrorKind::Auth) | wrong user name or password, session expired or revoked, too many failed logins, not logged in |
/// | 4 | [`HostKey`](ErrorKind::HostKey) | server certificate not trusted yet (non-interactive), changed, or not the one given with `--fingerprint`; not valid for the `--ca` |
/// | 5 | [`NotFound`](ErrorKind::NotFound) | no such file, directory or user |
/// | 6 | [`Conflict`](ErrorKind::Conflict) | the target already exists |
/// | 7 | [`Integrity`](ErrorKind::Integrity) | data did not match its checksum |
/// | 8 | [`Network`](ErrorKind::Network) | connection refused or timed out, TLS failure, connection dropped |
/// | 9 | [`Protocol`](ErrorKind::Protocol) | client and server speak different protocol versions, malformed reply, invalid name in a listing |
/// | 10 | [`Refused`](ErrorKind::Refused) | refused by the server: over quota, server out of space, content type not accepted, invalid path, permission denied, file or name too large |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Anything not covered by another kind (exit 1).
    Other,
    /// The command line was not valid (exit 2).
    Usage,
    /// Authentication failed or is missing (exit 3).
    Auth,
    /// The server's identity could not be verified (exit 4).
    HostKey,
    /// Something named does not exist (exit 5).
    NotFound,
    /// Something named already exists (exit 6).
    Conflict,
    /// Data was corrupted (exit 7).
    Integrity,
    /// The connection could not be made or was lost (exit 8).
    Network,
    /// The peer does not speak this client's protocol (exit 9).
    Protocol,
    /// The server refused the request by policy or limit (exit 10).
    Refused,
}

impl ErrorKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Other => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Auth => 3,
            ErrorKind::HostKey => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::Conflict => 6,
            ErrorKind::Integrity => 7,
            ErrorKind::Network => 8,
            ErrorKind::Protocol => 9,
            ErrorKind::Refused => 10,
        }
    }

    /// The kind a server error code belongs to.
    pub fn from_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::AuthFailed | ErrorCode::AuthRequired | ErrorCode::Throttled => {
                ErrorKind::Auth
            }
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::Conflict => ErrorKind::Conflict,
            ErrorCode::ChecksumMismatch => ErrorKind::Integrity,
            ErrorCode::UnsupportedVersion => ErrorKind::Protocol,
            ErrorCode::QuotaExceeded
            | ErrorCode::NoSpace
            | ErrorCode::TypeRejected
            | ErrorCode::InvalidPath
            | ErrorCode::PermissionDenied
            | ErrorCode::RateLimited
            | ErrorCode::TooLarge => ErrorKind::Refused,
            _ => ErrorKind::Other,
        }
    }
}

/// A command line that parsed but does not make sense (e.g. a bad `USER@HOST[:PORT]`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Not logged in, or the saved session is no longer accepted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

/// The server's certificate could not be trusted; nothing was sent to it.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// First contact, and nothing allowed trusting the certificate.
    #[error(
        "{host_port} presents a certificate this machine has not seen: {actual}; \
         check `xferd fingerprint` on the server, then re-run with `--fingerprint {actual}` \
         (or `--accept-new` to trust it blindly)"
    )]
    Unknown {
        /// `host:port` of the server.
        host_port: String,
        /// The fingerprint the server presented.
        actual: Fingerprint,
    },
    /// The user was asked and did not say yes.
    #[error("did not trust the certificate {actual} of {host_port}")]
    Declined {
        /// `host:port` of the server.
        host_port: String,
        /// The fingerprint the server presented.
        actual: Fingerprint,
    },
    /// The server presents another certificate than the one pinned in known hosts.
    #[error(
        "the certificate of {host_port} has CHANGED; this may be an attack.\n  \
         pinned: {pinned}  ({} line {line})\n  \
         now:    {actual}\n\
         Nothing was sent. If `xferd fingerprint` on the server prints the new one, re-pin with:\n  \
         xfer login {user}@{host_port} --fingerprint {actual}",
        path.display()
    )]
    Changed {
        /// `host:port` of the server.
        host_port: String,
        /// The user the hint names.
        user: String,
        /// The fingerprint in known hosts.
        pinned: Fingerprint,
        /// The fingerprint the server presented.
        actual: Fingerprint,
        /// The known hosts file.
        path: PathBuf,
        /// 1-based line of the pin in that file.
        line: usize,
    },
    /// The server's certificate is not the one given with `--fingerprint`.
    #[error("{host_port} presents {actual}, not the expected {expected}")]
    Mismatch {
        /// `host:port` of the server.
        host_port: String,
        /// The fingerprint given on the command line.
        expected: Fingerprint,
        /// The fingerprint the server presented.
        actual: Fingerprint,
    },
    /// With `--ca`, the certificate does not verify against the CA for this host name.
    #[error(
        "certificate of {host_port} is not valid for CA `{}`: {reason}; check that this CA issued it (`xferd ca show` on the server) and that the name you used is one of its names",
        ca.display()
    )]
    NotValidForCa {
        /// `host:port` of the server.
        host_port: String,
        /// The CA file.
        ca: PathBuf,
        /// Why rustls rejected it.
        reason: String,
    },
}

/// The connection could not be made, or was lost.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct NetworkError {
    /// What failed, naming `host:port`.
    pub message: String,
    /// The underlying cause, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl NetworkError {
    /// A network error without an underlying cause.
    pub fn new(message: impl Into<String>) -> Self {
        NetworkError {
            message: message.into(),
            source: None,
        }
    }

    /// A network error caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        NetworkError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// A destination already exists and `--force` was not given (local or remote).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConflictError(pub String);

/// Data did not match its digest (a chunk or a whole file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IntegrityError(pub String);

/// The server does not speak this client's protocol, or sent something unexpected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// A local file or directory named on the command line could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LocalError {
    /// What failed, naming the path, in plain words (no `os error N`).
    pub message: String,
    /// Whether the path does not exist (exit 5) rather than failing otherwise (exit 1).
    pub not_found: bool,
}

impl LocalError {
    /// Reading `path` failed with `e`.
    pub fn reading(path: &std::path::Path, e: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        let shown = path.display();
        let message = match e.kind() {
            ErrorKind::NotFound => format!("no such local file or directory `{shown}`"),
            ErrorKind::PermissionDenied => format!("no permission to read `{shown}`"),
            _ => format!("cannot read `{shown}`: {}", plain_io(e)),
        };
        LocalError {
            message,
            not_found: e.kind() == ErrorKind::NotFound,
        }
    }
}

/// An I/O error's text without the `(os error N)` tail people do not need.
pub fn plain_io(e: &std::io::Error) -> String {
    strip_os_error(&e.to_string())
}

/// `text` with every ` (os error N)` removed.
pub fn strip_os_error(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" (os error ") {
        let tail = &rest[at + " (os error ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && tail.as_bytes().get(digits) == Some(&b')') {
            out.push_str(&rest[..at]);
            rest = &tail[digits + 1..];
        } else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The server answered a request with `Response::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// The stable reason.
    pub code: ErrorCode,
    /// The server's one-line message (escape before printing).
    pub message: String,
}

/// The kind of the first typed error in `err`'s chain, or [`ErrorKind::Other`].
pub fn error_kind(err: &anyhow::Error) -> ErrorKind {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return ErrorKind::Usage;
        }
        if cause.is::<AuthError>() {
            return ErrorKind::Auth;
        }
        if cause.is::<HostKeyError>() {
            return ErrorKind::HostKey;
        }
        if cause.is::<NetworkError>() {
            return ErrorKind::Network;
        }
        if cause.is::<ProtocolError>() {
            return ErrorKind::Protocol;
        }
        if cause.is::<ConflictError>() {
            return ErrorKind::Conflict;
        }
        if cause.is::<IntegrityError>() {
            return ErrorKind::Integrity;
        }
        if let Some(remote) = cause.downcast_ref::<RemoteError>() {
            return ErrorKind::from_code(remote.code);
        }
        if let Some(local) = cause.downcast_ref::<LocalError>() {
            return if local.not_found {
                ErrorKind::NotFound
            } else {
                ErrorKind::Other
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::NotFound
        {
            return ErrorKind::NotFound;
        }
    }
    ErrorKind::Other
}

/// The process exit code for `err` (see [`ErrorKind`] for the table).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    error_kind(err).exit_code()
}

/// Whether `err` is the server refusing credentials (`AuthFailed`).
pub fn is_remote(err: &anyhow::Error, code: ErrorCode) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<RemoteError>()
            .is_some_and(|r| r.code == code)
    })
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    fn fp() -> Fingerprint {
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            .parse()
            .expect("valid fingerprint")
    }

    fn remote(code: ErrorCode) -> anyhow::Error {
        RemoteError {
            code,
            message: "m".into(),
        }
        .into()
    }

    #[test]
    fn typed_errors_map_to_documented_codes() {
        let cases: Vec<(anyhow::Error, u8)> = vec![
            (anyhow::anyhow!("plain"), 1),
            (UsageError("bad target".into()).into(), 2),
            (AuthError("not logged in".into()).into(), 3),
            (
                HostKeyError::Unknown {
                    host_port: "h:1".into(),
                    actual: fp(),
                }
                .into(),
                4,
            ),
            (NetworkError::new("connection closed").into(), 8),
            (ProtocolError("version".into()).into(), 9),
            (remote(ErrorCode::AuthFailed), 3),
            (remote(ErrorCode::AuthRequired), 3),
            (remote(ErrorCode::Throttled), 3),
            (remote(ErrorCode::NotFound), 5),
            (remote(ErrorCode::Conflict), 6),
            (remote(ErrorCode::ChecksumMismatch), 7),
            (remote(ErrorCode::UnsupportedVersion), 9),
            (remote(ErrorCode::Internal), 1),
            (ConflictError("x exists".into()).into(), 6),
            (IntegrityError("bad chunk".into()).into(), 7),
            (remote(ErrorCode::QuotaExceeded), 10),
            (remote(ErrorCode::NoSpace), 10),
            (remote(ErrorCode::TypeRejected), 10),
            (remote(ErrorCode::InvalidPath), 10),
            (remote(ErrorCode::PermissionDenied), 10),
            (remote(ErrorCode::TooLarge), 10),
            (remote(ErrorCode::Busy), 1),
            (remote(ErrorCode::RateLimited), 10),
            (remote(ErrorCode::Unknown(999)), 1),
        ];
        for (err, code) in cases {
            assert_eq!(exit_code(&err), code, "{err:#}");
        }
    }

    #[test]
    fn os_error_tails_are_dropped() {
        assert_eq!(
            strip_os_error("a: No such file or directory (os error 2)"),
            "a: No such file or directory"
        );
        assert_eq!(strip_os_error("x (os error 13) y (os error 1)"), "x y");
        assert_eq!(strip_os_error("keep (os error x)"), "keep (os error x)");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err: anyhow::Error =
            LocalError::reading(std::path::Path::new("a.bin"), &missing).into();
        assert_eq!(exit_code(&err), 5);
        assert_eq!(err.to_string(), "no such local file or directory `a.bin`");
    }

    #[test]
    fn typed_error_is_found_under_context() {
        let err: anyhow::Result<()> = Err(NetworkError::with_source(
            "cannot connect to h:1",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )
        .into());
        let err = err.context("logging out").unwrap_err();
        assert_eq!(exit_code(&err), 8);
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("logging out: cannot connect to h:1: "),
            "{msg}"
        );
    }

    #[test]
    fn changed_message_names_everything() {
        let err = HostKeyError::Changed {
            host_port: "lab:7070".into(),
            user: "alice".into(),
            pinned: fp(),
            actual: fp(),
            path: "/home/a/.config/xfer/known_hosts".into(),
            line: 3,
        };
        let msg = err.to_string();
        assert!(msg.contains("lab:7070"), "{msg}");
        assert!(msg.contains("known_hosts line 3"), "{msg}");
        assert!(
            msg.contains("xfer login alice@lab:7070 --fingerprint SHA256:"),
            "{msg}"
        );
        // A short block, as OpenSSH's banner, rather than one 400-character line.
        assert!(msg.lines().count() <= 6, "{msg}");
    }
}
