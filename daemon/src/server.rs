//! The server: the accept loop, admission at accept, the TLS handshake, background
//! maintenance and the drain on shutdown. The shared state is in `state.rs`; everything
//! that happens on one connection after TLS is in `session/`; the limits themselves are
//! in `admission/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::admission::PreAuthGuard;
use crate::session::{self, Accepted};
use crate::state::ServerState;

/// How often expired session tokens are purged from the store.
const SESSION_PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest pause between sweeps for abandoned partial uploads (shorter for short TTLs).
const PARTIAL_SWEEP_MAX_INTERVAL: Duration = Duration::from_secs(600);
/// How often chat logs written since the last time are fsynced and delivery markers saved.
const CHAT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often chat retention (age and count) is applied besides at start-up.
const CHAT_RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections until `shutdown` fires, then lets sessions finish their current
/// request for up to `limits.shutdown_grace_secs` before returning.
///
/// Every connection is accepted at once and admitted as unauthenticated or closed
/// ([`crate::admission::Admission::admit`]); the `max_connections` slots are taken at login. The listener
/// is closed as soon as shutdown starts, so new clients are refused instead of queued.
pub async fn serve(state: Arc<ServerState>, listener: TcpListener, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    tracker.spawn(purge_sessions(state.clone(), shutdown.clone()));
    tracker.spawn(expire_partials(state.clone(), shutdown.clone()));
    tracker.spawn(maintain_chat(state.clone(), shutdown.clone()));
    let web_state = crate::web::WebState::new(state.clone());
    tracker.spawn(crate::web::expire_idle_uploads(
        web_state.clone(),
        shutdown.clone(),
    ));
    let web = crate::web::router(web_state);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let accepted = tokio::time::Instant::now();
        let Some(preauth) = state.admission.admit(peer, &state.config().limits) else {
            // Closed at once: the peer sees the connection end before any TLS.
            drop(tcp);
            continue;
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("conn", %peer, user = tracing::field::Empty);
        let web = web.clone();
        tracker.spawn(handle(state, web, tcp, peer, accepted, preauth, shutdown).instrument(span));
    }
    drop(listener);
    info!("no longer accepting connections; draining sessions");
    tracker.close();
    let grace = Duration::from_secs(state.config().limits.shutdown_grace_secs);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            remaining = tracker.len(),
            "sessions still running after the shutdown grace period"
        );
    }
    // Everything acknowledged is already written; make it durable too.
    state.chat.sync().await;
}

async fn handle(
    state: Arc<ServerState>,
    web: axum::Router,
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: tokio::time::Instant,
    preauth: PreAuthGuard,
    shutdown: CancellationToken,
) {
    let _open = state.metrics.connection_accepted();
    let _ = tcp.set_nodelay(true);
    let registration = state.connections.register(peer, &shutdown);
    let config = state.config();
    let limits = &config.limits;
    let login_deadline = accepted + Duration::from_secs(limits.login_timeout_secs);
    let hello_deadline =
        (accepted + Duration::from_secs(limits.handshake_timeout_secs)).min(login_deadline);
    // A shutdown (or kick) does not wait for a handshake to finish or time out: an idle
    // peer must not hold the drain for the whole grace period.
    let stop = registration.stop_token();
    let handshook = tokio::select! {
        r = timeout_at(hello_deadline, state.tls().accept(tcp)) => r,
        () = stop.cancelled() => {
            debug!("stopped during the handshake");
            return;
        }
    };
    let tls = match handshook {
        Err(_) => {
            let reason = "TLS handshake timed out";
            state.admission.login_deadline_reached(peer, reason);
            return;
        }
        Ok(Err(e)) => {
            let reason = format!("TLS handshake failed: {e}");
            state.admission.handshake_failed(peer, &reason);
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let accepted = Accepted {
        peer,
        registration,
        preauth,
        hello_deadline,
        login_deadline,
    };
    // ALPN h2/http/1.1: the HTTPS application; xfer/1 or none: the framed protocol.
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn.is_some_and(|p| xfer_certs::HTTP_ALPN.contains(&p)) {
        crate::web::serve_connection(state, web, tls, accepted).await;
        return;
    }
    let io = session::framed(tls, state.metrics.clone());
    session::run(state, io, accepted).await;
}

async fn purge_sessions(state: Arc<ServerState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SESSION_PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let st = state.clone();
        match tokio::task::spawn_blocking(move || st.sessions.purge_expired(crate::now_unix()))
            .await
        {
            Ok(Ok(n)) if n > 0 => info!(purged = n, "expired sessions removed"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(error = %e, "purging expired sessions failed"),
            Err(e) => error!(error = %e, "session purge task failed"),
        }
    }
}

/// Removes abandoned partial uploads; sweeps at least twice per `partial_ttl_secs`.
/// The period is taken anew each round, so a reloaded `partial_ttl_secs` applies from the
/// next sweep.
async fn expire_partials(state: Arc<ServerState>, shutdown: CancellationToken) {
    loop {
        let storage = state.storage.clone();
        match storage.expire_partials(crate::now_unix()).await {
            Ok(n) if n > 0 => info!(removed = n, "abandoned partial uploads removed"),
            Ok(_) => {}
            Err(e) => error!(error = %e, "expiring partial uploads failed"),
        }
        let period = Duration::from_secs(state.config().storage.partial_ttl_secs / 2)
            .clamp(Duration::from_secs(1), PARTIAL_SWEEP_MAX_INTERVAL);
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Fsyncs chat logs and saves delivery markers every second; applies retention hourly.
async fn maintain_chat(state: Arc<ServerState>, shutdown: CancellationToken) {
    let mut sync = tokio::time::interval(CHAT_SYNC_INTERVAL);
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(CHAT_RETENTION_INTERVAL);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Retention already ran when the history was opened.
    retention.tick().await;
    loop {
        tokio::select! {
            _ = sync.tick() => state.chat.sync().await,
            _ = retention.tick() => state.chat.enforce_retention().await,
            () = shutdown.cancelled() => return,
        }
    }
}
