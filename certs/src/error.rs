//! The crate's error type, [`CertError`].
//!
//! Every variant that concerns a file carries its path so the binaries can print one line
//! saying which file to fix; this module does not decide exit codes or wording of prompts.

use std::path::PathBuf;

/// Errors from loading, generating, checking and trusting TLS identities.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading, writing or inspecting a file failed.
    #[error("file `{}`", path.display())]
    Io {
        /// The file (or directory) involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A PEM file has no certificate, no private key, or cannot be decoded.
    #[error("`{}`: {message}", path.display())]
    Pem {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A private key file is readable by group or others.
    #[error(
        "`{}` is readable by group or others (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecureMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`st_mode & 0o7777`).
        mode: u32,
    },

    /// A file meant to be a certificate authority is not one, or its key does not match.
    #[error("`{}`: {message}", path.display())]
    Ca {
        /// The CA certificate file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// Certificate generation failed (the message comes from rcgen).
    #[error("generating certificate: {0}")]
    Generate(String),

    /// rustls rejected a certificate, key or configuration.
    #[error(transparent)]
    Tls(#[from] rustls::Error),

    /// A fingerprint string could not be parsed; holds the rejected input.
    #[error("bad fingerprint: expected SHA256:<43 base64 chars>, got `{0}`")]
    BadFingerprint(String),

    /// A `known_hosts` line is malformed, or an entry to be added is invalid.
    #[error("{}:{line}: {message}", path.display())]
    KnownHosts {
        /// The known-hosts file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
}

impl CertError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
