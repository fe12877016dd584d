//! What every handler shares and nothing else defines: why a connection ends ([`End`])
//! and the answers for refusals common to all handlers. A leaf: it imports no other
//! module of the session.

use std::future::Future;

use xfer_proto::{ErrorCode, ProtoError, Response};

use crate::storage::StorageError;

/// Why a connection ended, for the log.
#[derive(Debug)]
pub(super) enum End {
    PeerClosed,
    Idle,
    LoginDeadline,
    /// A kick or the shutdown, not yet told to the peer (`Session::stopped` does).
    Stopped,
    Shutdown,
    Kicked,
    TooManyAttempts,
    Protocol(ProtoError),
}

pub(super) fn not_logged_in() -> Response {
    Response::error(ErrorCode::AuthRequired, "not logged in")
}

pub(super) fn internal_error(what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "{what} failed");
    Response::error(
        ErrorCode::Internal,
        format!("{what} failed on the server; see its log"),
    )
}

/// Awaits storage work; errors become the peer's response.
pub(super) async fn answer<T>(
    work: impl Future<Output = Result<T, StorageError>>,
) -> Result<T, Response> {
    work.await.map_err(|e| storage_error(&e))
}

/// The peer's view of a storage error; internal ones are logged here, once.
pub(super) fn storage_error(e: &StorageError) -> Response {
    if let StorageError::Io { .. } = e {
        tracing::error!(error = %e, "storage failure");
    }
    Response::error(e.code(), e.peer_message())
}
