//! One TLS stream that negotiated `h2` or `http/1.1`, served by hyper-util's auto
//! builder with the router. Bounded like the framed protocol: the request head must
//! arrive within [`HEADER_TIMEOUT`] and fit [`MAX_HEAD`]; at most [`MAX_STREAMS`] h2
//! requests at once; a connection with no signed-in request by the login deadline, or
//! none at all for `limits.idle_timeout_secs`, is closed gracefully (requests in flight
//! finish). It holds its unauthenticated place from accept until a request signs in,
//! then one `max_connections` slot; a kick or the shutdown closes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, Version};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until};
use tokio_rustls::server::TlsStream;
use tower::ServiceExt as _;
use tracing::debug;
use xfer_proto::ErrorCode;

use super::ApiError;
use super::linger::Linger;
use crate::admission::PreAuthGuard;
use crate::connections::Registration;
use crate::session::Accepted;
use crate::state::ServerState;

/// Time for a request's head (line and headers) to arrive; also bounds an idle
/// HTTP/1.1 keep-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (HTTP/1.1 read buffer; h2 header list).
pub const MAX_HEAD: usize = 64 * 1024;
/// h2 requests in flight on one connection.
pub const MAX_STREAMS: u32 = 64;
/// Time requests in flight get to finish once the connection is told to close.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What a request knows about its connection (a request extension).
pub struct ConnCtx {
    /// The client's address (throttle, audit).
    pub peer: SocketAddr,
    registration: Registration,
    preauth: Mutex<Option<PreAuthGuard>>,
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Unix seconds of the latest request, for the idle close.
    last_request: AtomicU64,
}

impl ConnCtx {
    /// Cancelled on a kick or the shutdown (for what outlives the request: a WebSocket).
    pub fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.registration.stop_token()
    }

    /// A request on this connection signed in as `user`: from now on it counts among
    /// logged-in connections (taking a `max_connections` slot once) and `xferd status`
    /// shows the user.
    ///
    /// # Errors
    /// `busy` when every `max_connections` slot is taken.
    pub fn signed_in(&self, state: &ServerState, user: &str) -> Result<(), ApiError> {
        {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(state.admission.connection_slot(user).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Busy,
                        "server is at its connection limit (limits.max_connections); retry shortly",
                    )
                })?);
            }
        }
        self.preauth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.registration.set_user(Some(user));
        Ok(())
    }

    fn is_signed_in(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// Serves HTTP on `tls` until the peer closes, a deadline passes, or a stop.
pub async fn serve_connection(
    state: Arc<ServerState>,
    router: Router,
    tls: TlsStream<TcpStream>,
    accepted: Accepted,
) {
    let Accepted {
        peer,
        registration,
        preauth,
        login_deadline,
        ..
    } = accepted;
    let stop = registration.stop_token();
    let ctx = Arc::new(ConnCtx {
        peer,
        registration,
        preauth: Mutex::new(Some(preauth)),
        slot: Mutex::new(None),
        last_request: AtomicU64::new(crate::now_unix()),
    });
    let c = ctx.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        c.last_request.store(crate::now_unix(), Ordering::Relaxed);
        req.extensions_mut().insert(c.clone());
        // A refused HTTP/1.1 request may leave its body unread, and then hyper closes the
        // connection after the answer; saying so in the answer keeps the client from
        // sending its next request on a connection that is closing (`linger.rs` keeps
        // the answer itself from being lost).
        let may_close = req.version() == Version::HTTP_11 && !req.body().is_end_stream();
        let answer = router.clone().oneshot(req.map(Body::new));
        async move {
            let mut res = answer.await?;
            if may_close && (res.status().is_client_error() || res.status().is_server_error()) {
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32)
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(Some(HEADER_TIMEOUT))
        .keep_alive_timeout(HEADER_TIMEOUT);
    let http1 = tls.get_ref().1.alpn_protocol() == Some(b"http/1.1");
    let io = Linger::new(tls, http1, stop.clone());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = Duration::from_secs(state.config().limits.idle_timeout_secs);
    let why = loop {
        let last = ctx.last_request.load(Ordering::Relaxed);
        let idle_at = Instant::now()
            + (idle.saturating_sub(Duration::from_secs(crate::now_unix().saturating_sub(last))));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = stop.cancelled() => break "stopped",
            () = sleep_until(login_deadline), if !ctx.is_signed_in() => {
                state.admission.login_deadline_reached(peer, "no signed-in request in time");
                break "login deadline";
            }
            () = sleep_until(idle_at) => {
                let last = ctx.last_request.load(Ordering::Relaxed);
                if crate::now_unix().saturating_sub(last) >= idle.as_secs() {
                    break "idle";
                }
            }
        }
    };
    debug!(why, "closing HTTP connection");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
}
