//! The HTTPS application served on the xfer port to clients that negotiate ALPN
//! `http/1.1` or `h2` (browsers, curl; HTTP/1.1 first, see `xfer_certs::HTTP_ALPN`): the
//! same accounts, sessions, throttle, storage and chat as the framed protocol, behind a
//! JSON API under `/api/` and the embedded web page.
//! The contract is docs/HTTP.md.
//!
//! - `conn.rs`: one accepted TLS stream served by hyper-util's auto (HTTP/1.1 + h2)
//!   builder: deadlines, size bounds, admission, kick and shutdown; `linger.rs`: its
//!   close, which reads what the client still sends so a refusal sent before the body
//!   arrived is not lost to a reset.
//! - `auth.rs`: sign-in, logout, the [`Authed`] extractor (Bearer or cookie + CSRF).
//! - `files.rs`, `download.rs`, `thumb.rs`: listing, download with Range/ETag, small
//!   PUT, mkdir/rm/mv, thumbnails; all through [`crate::storage::Storage`].
//! - `uploads.rs`: verified, resumable uploads by chunk (a per-session registry);
//!   `chunks.rs`: their data, one chunk or a run of chunks per request.
//! - `headers.rs`: security headers on every response; `error.rs`: JSON errors.
//! - `assets.rs`: the page's static files, embedded.
//!
//! Extension point: another module adds routes by merging into [`router`] (e.g. the chat
//! WebSocket: `.route("/api/chat", get(chat::upgrade))`), taking [`Authed`] as an
//! extractor to get the signed-in user; it runs under the same headers, limits and auth.

mod assets;
mod auth;
mod chat;
mod chunks;
mod conn;
mod download;
mod error;
mod files;
mod headers;
mod linger;
mod thumb;
mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

pub use auth::Authed;
pub use conn::serve_connection;
pub use error::ApiError;

use crate::state::ServerState;

/// Largest JSON request body (login, mkdir, rm, mv, uploads).
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// What every handler shares: the daemon's state and the web's own registry of open
/// uploads. Cheap to clone.
#[derive(Clone)]
pub struct WebState {
    /// The daemon's shared state (accounts, sessions, storage, chat, admission).
    pub server: Arc<ServerState>,
    /// Open browser uploads, by session.
    pub(crate) uploads: Arc<uploads::Registry>,
    /// Chunk buffers reused across uploads.
    buffers: Arc<xfer_proto::BufferPool>,
}

impl WebState {
    /// The web's state for one `serve` run.
    pub fn new(server: Arc<ServerState>) -> WebState {
        WebState {
            server,
            uploads: Arc::default(),
            buffers: xfer_proto::BufferPool::new(chunks::POOLED_BUFFERS),
        }
    }
}

/// The whole application. Extend it by `.merge(...)` of a router with the same state.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/api/server", get(auth::server_info))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/session", get(auth::session))
        .route("/api/list", get(files::list))
        .route(
            "/api/file",
            get(download::get_file)
                .put(files::put_file)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/thumb", get(thumb::thumb))
        .route("/api/mkdir", post(files::mkdir))
        .route("/api/rm", post(files::rm))
        .route("/api/mv", post(files::mv))
        .route("/api/uploads", post(uploads::begin))
        .route("/api/uploads/{id}/manifest", get(uploads::manifest))
        .route(
            "/api/uploads/{id}/chunks/{index}",
            put(chunks::chunk).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/uploads/{id}/runs/{first}",
            put(chunks::run).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/uploads/{id}/commit", post(uploads::commit))
        .route("/api/uploads/{id}", axum::routing::delete(uploads::close))
        .route("/api/chat", get(chat::upgrade))
        .route("/api/{*rest}", axum::routing::any(error::no_route))
        .merge(assets::router())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(headers::strict))
        .with_state(state)
}

/// Drops idle browser uploads until `shutdown` (see `uploads::expire_idle`).
pub async fn expire_idle_uploads(web: WebState, shutdown: tokio_util::sync::CancellationToken) {
    uploads::expire_idle(web.uploads.clone(), shutdown).await;
}
