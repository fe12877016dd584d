//! Operational metrics: counters the daemon keeps while it serves, and their
//! Prometheus text exposition (version 0.0.4) on an optional HTTP listener.
//!
//! [`Metrics`] owns a `prometheus-client` registry and keeps a clone of every series
//! handle, so recording is one relaxed atomic add: no lock, no label lookup, no
//! allocation. Every label value is created up front (each login outcome, each error
//! code, both directions), which also makes every series visible at 0 from the start,
//! as `rate()` and alerting want. Frames are counted where they cross the wire
//! ([`MeteredCodec`]); logins, commits and chunk verification at their call sites in
//! the session. The listener is in `http.rs`; it serves nothing but `GET /metrics`.

mod codec;
mod http;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use xfer_proto::ErrorCode;

use crate::storage::StorageError;

pub use crate::config::MetricsConfig;
pub use codec::MeteredCodec;
pub use http::Exporter;

/// How a login attempt ended; the `result` label of `xferd_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// Right user name and password.
    PasswordOk,
    /// A valid session token.
    TokenOk,
    /// Wrong password or unknown user (one argon2 verification ran).
    Failed,
    /// Refused by the failed-login throttle before any verification.
    Throttled,
    /// An unknown, expired or revoked token.
    TokenRefused,
}

impl LoginResult {
    const ALL: [LoginResult; 5] = [
        LoginResult::PasswordOk,
        LoginResult::TokenOk,
        LoginResult::Failed,
        LoginResult::Throttled,
        LoginResult::TokenRefused,
    ];

    fn label(self) -> &'static str {
        match self {
            LoginResult::PasswordOk => "password_ok",
            LoginResult::TokenOk => "token_ok",
            LoginResult::Failed => "failed",
            LoginResult::Throttled => "throttled",
            LoginResult::TokenRefused => "token_refused",
        }
    }
}

/// A single-label series set, e.g. `direction="in"`.
type Labelled = Family<[(&'static str, String); 1], Counter>;

/// `direction="in"` and `direction="out"` of one family.
#[derive(Debug, Clone)]
struct InOut {
    inbound: Counter,
    outbound: Counter,
}

impl InOut {
    fn register(registry: &mut Registry, name: &str, help: &str) -> InOut {
        let family = Labelled::default();
        registry.register(name, help, family.clone());
        let series = |d: &str| family.get_or_create_owned(&[("direction", d.to_owned())]);
        InOut {
            inbound: series("in"),
            outbound: series("out"),
        }
    }
}

/// Every series the daemon exports, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_accepted: Counter,
    connections_open: Gauge,
    logins: [Counter; LoginResult::ALL.len()],
    throttle_login: Counter,
    throttle_chat: Counter,
    file_bytes: InOut,
    wire_bytes: InOut,
    files: InOut,
    resumes: Counter,
    resumed_bytes: Counter,
    verify_failures: Counter,
    chat_said: Counter,
    chat_delivered: Counter,
    /// Every code this build knows, with its series.
    errors: Vec<(ErrorCode, Counter)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All series at 0, with the build version and this moment as the start time.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("xferd");
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let r = &mut registry;
        let connections_accepted = counter(r, "connections_accepted", "TCP connections accepted");
        let connections_open = Gauge::default();
        r.register(
            "connections_open",
            "Connections being served now (handshake, login or logged in)",
            connections_open.clone(),
        );
        let login_family = Labelled::default();
        r.register(
            "logins",
            "Login attempts by result: password_ok, token_ok, failed, throttled, token_refused",
            login_family.clone(),
        );
        let logins = LoginResult::ALL
            .map(|l| login_family.get_or_create_owned(&[("result", l.label().to_owned())]));
        let throttle_family = Labelled::default();
        r.register(
            "throttle_hits",
            "Requests refused by a throttle: login (failed-login throttle) or chat (chat rate limit)",
            throttle_family.clone(),
        );
        let throttle = |k: &str| throttle_family.get_or_create_owned(&[("throttle", k.to_owned())]);
        let (throttle_login, throttle_chat) = (throttle("login"), throttle("chat"));
        let file_bytes = InOut::register(
            r,
            "file_bytes",
            "File content bytes: in = chunks received and verified, out = chunks sent; uncompressed",
        );
        let wire_bytes = InOut::register(
            r,
            "wire_bytes",
            "Protocol frame bytes received (in) and sent (out), before TLS; compressed chunks count as sent",
        );
        let files = InOut::register(
            r,
            "files",
            "Files transferred whole: in = uploads and sends committed, out = downloads completed",
        );
        let resumes = counter(
            r,
            "upload_resumes",
            "Committed uploads that reused data the server already held from an earlier attempt",
        );
        let resumed_bytes = counter(
            r,
            "upload_resumed_bytes",
            "Bytes that resumed uploads did not send again",
        );
        let verify_failures = counter(
            r,
            "chunk_verify_failures",
            "Uploaded chunks refused because their data did not match their digest",
        );
        let chat_said = counter(r, "chat_messages_said", "Chat messages accepted from users");
        let chat_delivered = counter(
            r,
            "chat_messages_delivered",
            "Chat messages (and file notices) written to chat connections, replays included",
        );
        let error_family = Labelled::default();
        r.register(
            "errors_sent",
            "Error replies sent to peers, by protocol error code",
            error_family.clone(),
        );
        let errors = known_codes()
            .map(|c| {
                let series = error_family.get_or_create_owned(&[("code", format!("{c:?}"))]);
                (c, series)
            })
            .collect();
        r.register(
            "build",
            "The running version (always 1)",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let start: Gauge = Gauge::default();
        start.set(i64::try_from(crate::now_unix()).unwrap_or(i64::MAX));
        r.register(
            "start_time_seconds",
            "When this xferd process started, in seconds since the Unix epoch",
            start,
        );
        Metrics {
            registry,
            connections_accepted,
            connections_open,
            logins,
            throttle_login,
            throttle_chat,
            file_bytes,
            wire_bytes,
            files,
            resumes,
            resumed_bytes,
            verify_failures,
            chat_said,
            chat_delivered,
            errors,
        }
    }

    /// The Prometheus text exposition (version 0.0.4) of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// A connection was accepted; it counts as open until the guard drops.
    pub fn connection_accepted(self: &Arc<Self>) -> OpenConnection {
        self.connections_accepted.inc();
        self.connections_open.inc();
        OpenConnection(self.clone())
    }

    /// A login attempt ended with `result`.
    pub fn login(&self, result: LoginResult) {
        let index = LoginResult::ALL
            .iter()
            .position(|&l| l == result)
            .expect("ALL lists every result");
        self.logins[index].inc();
        if result == LoginResult::Throttled {
            self.throttle_login.inc();
        }
    }

    /// An uploaded chunk of `len` bytes was verified and written (`Ok`), or refused.
    pub fn chunk_received(&self, len: u64, result: &Result<(), StorageError>) {
        match result {
            Ok(()) => {
                self.file_bytes.inbound.inc_by(len);
            }
            Err(StorageError::ChecksumMismatch(_)) => {
                self.verify_failures.inc();
            }
            Err(_) => {}
        }
    }

    /// An upload (or a send) was committed; `resumed_from` bytes were already held.
    pub fn upload_committed(&self, resumed_from: u64) {
        self.files.inbound.inc();
        if resumed_from > 0 {
            self.resumes.inc();
            self.resumed_bytes.inc_by(resumed_from);
        }
    }

    /// A download sent the file's last chunk and was closed.
    pub fn download_completed(&self) {
        self.files.outbound.inc();
    }

    fn error_sent(&self, code: ErrorCode) {
        if let Some((_, series)) = self.errors.iter().find(|(c, _)| *c == code) {
            series.inc();
        }
        if code == ErrorCode::RateLimited {
            self.throttle_chat.inc();
        }
    }
}

/// Every code this build knows (the wire numbers are sparse, so probe them all).
fn known_codes() -> impl Iterator<Item = ErrorCode> {
    (0..=u16::from(u8::MAX))
        .map(ErrorCode::from_u16)
        .filter(|c| !matches!(c, ErrorCode::Unknown(_)))
}

/// Keeps `xferd_connections_open` raised while a connection is served.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

#[cfg(test)]
mod tests;
