//! [`StorageError`]: why a storage operation failed, whatever the backend, and what of it
//! the peer sees.

use std::io;

use xfer_proto::ErrorCode;

use crate::relpath::PathError;

/// Why a storage operation failed. [`StorageError::code`] and
/// [`StorageError::peer_message`] are what the peer sees; `Io` details are only logged.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The path was refused by validation or by confinement.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Resolution left the home (a symlink pointing out).
    #[error("path refused: it leads outside your space")]
    Escape,
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// Something is in the way.
    #[error("{0}")]
    Conflict(String),
    /// A request that does not fit the state.
    #[error("{0}")]
    BadRequest(String),
    /// Over quota.
    #[error("over quota: {size} more bytes would exceed {limit} (in use: {used})")]
    QuotaExceeded {
        /// Bytes in use.
        used: u64,
        /// The quota.
        limit: u64,
        /// Size asked for.
        size: u64,
    },
    /// A new upload past the user's number of unfinished ones.
    #[error(
        "you already have {max} unfinished uploads, the most this server allows \
         (storage.max_partials_per_user); finish or remove some first: `xfer ls` shows \
         them as partial, `xfer rm --partial PATH` removes one"
    )]
    TooManyPartials {
        /// The limit.
        max: u32,
    },
    /// The disk is (or would be) full.
    #[error("server out of space")]
    NoSpace,
    /// The data filesystem is mounted read-only.
    #[error("the server's storage is read-only for now; try again later")]
    ReadOnly,
    /// File larger than allowed.
    #[error("file of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size asked for.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The content type is not accepted at that place.
    #[error("{}{detected} is not accepted in `{dir}`; accepted there: {}",
        file.as_ref().map(|f| format!("`{f}`: ")).unwrap_or_default(), accepted.join(", "))]
    TypeRejected {
        /// What the content looks like (`unknown` if not recognised).
        detected: String,
        /// The rule's directory.
        dir: String,
        /// The rule's types.
        accepted: Vec<String>,
        /// The stored file refused, when a move was (not named for an upload).
        file: Option<String>,
    },
    /// A move the type policy cannot check (a directory too large to walk).
    #[error("{0}")]
    Unchecked(String),
    /// Data did not match its digest.
    #[error("{0}")]
    ChecksumMismatch(String),
    /// Temporarily in the way (another connection, a limit).
    #[error("{0}")]
    Busy(String),
    /// The object store (an `s3` backend) did not answer or failed; the detail is
    /// logged, the peer is told to try again.
    #[error(
        "storage unavailable: {0} failed because the server's object store did not answer; \
         try again later (an interrupted upload resumes)"
    )]
    Unavailable(&'static str),
    /// An operating-system error not caused by the peer; logged, never sent.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// The stable code for the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::Path(_) | StorageError::Escape => ErrorCode::InvalidPath,
            StorageError::NotFound => ErrorCode::NotFound,
            StorageError::Conflict(_) => ErrorCode::Conflict,
            StorageError::BadRequest(_) => ErrorCode::BadRequest,
            StorageError::QuotaExceeded { .. } | StorageError::TooManyPartials { .. } => {
                ErrorCode::QuotaExceeded
            }
            // Nothing can be stored now, as on a full disk.
            StorageError::NoSpace | StorageError::ReadOnly => ErrorCode::NoSpace,
            StorageError::TooLarge { .. } => ErrorCode::TooLarge,
            StorageError::TypeRejected { .. } | StorageError::Unchecked(_) => {
                ErrorCode::TypeRejected
            }
            StorageError::ChecksumMismatch(_) => ErrorCode::ChecksumMismatch,
            StorageError::Busy(_) | StorageError::Unavailable(_) => ErrorCode::Busy,
            StorageError::Io { .. } => ErrorCode::Internal,
        }
    }

    /// One line for the peer: no server paths, no OS errors.
    pub fn peer_message(&self) -> String {
        match self {
            StorageError::Io { context, .. } => {
                format!("{context} failed on the server; see its log")
            }
            other => other.to_string(),
        }
    }

    /// Classifies an I/O error: the kinds a peer can cause (missing files, symlinks
    /// pointing out, full disk, something in the way) get their own codes.
    pub fn io(context: &'static str, e: io::Error) -> StorageError {
        const EXDEV: i32 = 18;
        const ENOTDIR: i32 = 20;
        const EISDIR: i32 = 21;
        const ENOSPC: i32 = 28;
        const EROFS: i32 = 30;
        const ENAMETOOLONG: i32 = 36;
        const ELOOP: i32 = 40;
        const ENOTEMPTY: i32 = 39;
        const EDQUOT: i32 = 122;
        match (e.kind(), e.raw_os_error()) {
            (_, Some(ENOSPC | EDQUOT)) => StorageError::NoSpace,
            (_, Some(EROFS)) => StorageError::ReadOnly,
            // The peer's path, too long for this filesystem: their error, not ours.
            (_, Some(ENAMETOOLONG)) => StorageError::Path(PathError::TooLongForServer),
            (io::ErrorKind::NotFound, _) => StorageError::NotFound,
            // cap-std reports an escape attempt as PermissionDenied; openat2 as EXDEV.
            (io::ErrorKind::PermissionDenied, _) | (_, Some(EXDEV | ELOOP)) => StorageError::Escape,
            (_, Some(ENOTDIR)) => {
                StorageError::Conflict("a path component is not a directory".into())
            }
            (_, Some(EISDIR)) => StorageError::Conflict("a directory is in the way".into()),
            (_, Some(ENOTEMPTY)) => {
                StorageError::Conflict("directory not empty (remove it recursively)".into())
            }
            (io::ErrorKind::AlreadyExists, _) => StorageError::Conflict("target exists".into()),
            _ => StorageError::Io { context, source: e },
        }
    }
}

/// `map_err` helper: `.map_err(io_err("reading a directory"))`.
pub(crate) fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> StorageError {
    move |e| StorageError::io(context, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_too_long_for_the_filesystem_is_an_invalid_path_not_internal() {
        let e = StorageError::io("listing", io::Error::from_raw_os_error(36));
        assert_eq!(e.code(), ErrorCode::InvalidPath);
        assert!(e.peer_message().contains("too long"), "{e}");
    }

    #[test]
    fn a_full_or_read_only_disk_is_out_of_space_not_internal() {
        for (errno, words) in [
            (28, "out of space"),
            (122, "out of space"),
            (30, "read-only"),
        ] {
            let e = StorageError::io("writing", io::Error::from_raw_os_error(errno));
            assert_eq!(e.code(), ErrorCode::NoSpace, "errno {errno}");
            assert!(e.peer_message().contains(words), "{e}");
        }
    }
}
