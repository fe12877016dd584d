//! The metrics listener: plain HTTP/1.1 serving `GET /metrics` and nothing else.
//!
//! Bounded so that it cannot become a way into the daemon's resources: at most
//! [`MAX_CONNECTIONS`] clients at once (more wait in the kernel backlog), a request
//! head of at most [`MAX_REQUEST_HEAD`] bytes that must arrive within
//! [`HEADER_TIMEOUT`], one request per connection, and [`CONNECTION_TIMEOUT`] for
//! the whole exchange. It does not read request bodies and has no TLS: keep it on
//! loopback (the default when enabled) or behind a firewall.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Metrics, MetricsConfig};

/// Scrapes served at once; a scraper needs one, an admin's curl another.
pub const MAX_CONNECTIONS: usize = 4;
/// Request line plus headers (hyper's smallest read buffer).
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time for the request head to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the whole exchange, the response included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A bound metrics listener, not yet serving.
#[derive(Debug)]
pub struct Exporter {
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Binds `[metrics] listen`; `None` when metrics are off. Logs the bound address
    /// (port 0 picks a free port).
    ///
    /// # Errors
    /// An invalid `metrics.listen`, or an address that cannot be bound.
    pub async fn bind(
        config: &MetricsConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Exporter>> {
        let Some(addr) = config.listen_addr()? else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr} (metrics.listen)"))?;
        let addr = listener
            .local_addr()
            .context("reading the metrics address")?;
        info!(%addr, "metrics listening on {addr}");
        Ok(Some(Exporter {
            listener,
            addr,
            metrics,
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves scrapes until `shutdown` fires; then closes the listener and ends the
    /// exchanges still running.
    pub async fn run(self, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut exchanges = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
                () = shutdown.cancelled() => break,
            };
            let tcp = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            while exchanges.try_join_next().is_some() {}
            let metrics = self.metrics.clone();
            exchanges.spawn(async move {
                serve_one(tcp, metrics).await;
                drop(permit);
            });
        }
        debug!(addr = %self.addr, "metrics listener closed");
    }
}

/// One connection, one request, within [`CONNECTION_TIMEOUT`].
async fn serve_one(tcp: TcpStream, metrics: Arc<Metrics>) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let response = respond(req.method(), req.uri().path(), &metrics);
        async move { Ok::<_, Infallible>(response) }
    });
    let exchange = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "metrics request failed"),
        Err(_) => debug!("metrics client too slow; connection closed"),
    }
}

/// `GET /metrics` (or `HEAD`) gets the exposition; anything else a short text error.
fn respond(method: &Method, path: &str, metrics: &Metrics) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(ALLOW, "GET, HEAD".parse().expect("valid header"));
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            .parse()
            .expect("valid header"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("valid header"),
    );
    r
}
