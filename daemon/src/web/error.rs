//! JSON errors: `{"error":{"code":"not_found","message":"…"}}`, where `code` is the wire
//! protocol's [`ErrorCode`] in snake_case and the HTTP status follows from it, so a
//! script handles the API's refusals exactly as it handles the CLI's.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use xfer_proto::{Digest, ErrorCode};

use crate::storage::{PathError, StorageError};

/// A refusal as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    /// The wire protocol's code.
    pub code: ErrorCode,
    /// One line naming what was wrong and what to do.
    pub message: String,
    /// For a conflict: the file already there.
    pub existing: Option<(u64, Option<Digest>)>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            existing: None,
        }
    }

    /// A malformed request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// A failure on the server; the detail goes to the log, not the peer.
    pub fn internal(what: &str, e: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "{what} failed");
        ApiError::new(
            ErrorCode::Internal,
            format!("{what} failed on the server; see its log"),
        )
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        if let StorageError::Io { .. } = e {
            tracing::error!(error = %e, "storage failure");
        }
        ApiError::new(e.code(), e.peer_message())
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> ApiError {
        ApiError::new(ErrorCode::InvalidPath, e.to_string())
    }
}

/// The code's name in JSON.
pub fn code_name(code: ErrorCode) -> &'static str {
    use ErrorCode::*;
    match code {
        BadRequest => "bad_request",
        UnsupportedVersion => "unsupported_version",
        AuthFailed => "auth_failed",
        AuthRequired => "auth_required",
        Throttled => "throttled",
        NotFound => "not_found",
        Conflict => "conflict",
        ChecksumMismatch => "checksum_mismatch",
        QuotaExceeded => "quota_exceeded",
        NoSpace => "no_space",
        PermissionDenied => "permission_denied",
        Busy => "busy",
        TooLarge => "too_large",
        InvalidPath => "invalid_path",
        TypeRejected => "type_rejected",
        ShuttingDown => "shutting_down",
        Timeout => "timeout",
        RateLimited => "rate_limited",
        Internal | Unknown(_) => "internal",
    }
}

/// The HTTP status for a code (docs/HTTP.md, "Errors").
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        BadRequest | InvalidPath | UnsupportedVersion => StatusCode::BAD_REQUEST,
        AuthFailed | AuthRequired => StatusCode::UNAUTHORIZED,
        PermissionDenied => StatusCode::FORBIDDEN,
        NotFound => StatusCode::NOT_FOUND,
        Timeout => StatusCode::REQUEST_TIMEOUT,
        Conflict => StatusCode::CONFLICT,
        TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        TypeRejected => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ChecksumMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        Throttled | RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Busy | ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        QuotaExceeded | NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        Internal | Unknown(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "error": { "code": code_name(self.code), "message": self.message }
        });
        if let Some((size, digest)) = self.existing {
            body["existing"] = json!({ "size": size, "blake3": digest.map(|d| d.to_string()) });
        }
        (status_of(self.code), Json(body)).into_response()
    }
}

/// `/api/…` routes that do not exist.
pub async fn no_route() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such API route; see docs/HTTP.md")
}
