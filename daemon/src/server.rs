//! The server: shared state, the accept loop, admission at accept and the drain on
//! shutdown. Everything that happens on one connection is in `session/`; the limits
//! themselves are in `admission/`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};
use xfer_certs::Fingerprint;

use crate::accounts::{LivePasswordFile, SessionStore, Throttle, Verifier};
use crate::admission::{Admission, PreAuthGuard};
use crate::chat::Chat;
use crate::config::Config;
use crate::connections::Connections;
use crate::storage::Storage;
use crate::storage::local::LocalStorage;

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

/// Everything sessions share; one `Arc` of it is handed to each connection.
pub struct ServerState {
    /// The validated configuration; replaced whole by a reload ([`ServerState::config`]).
    config: RwLock<Arc<Config>>,
    /// The TLS acceptor (TLS 1.3 only) and its certificate's fingerprint; a reload
    /// swaps both for new handshakes.
    tls: RwLock<(TlsAcceptor, Fingerprint)>,
    /// When the daemon started, for `xferd status`.
    pub started: Instant,
    /// Live connections, for `xferd status` and `xferd kick`.
    pub connections: Connections,
    /// The password file, re-read when `xferd user …` changes it.
    pub passwords: LivePasswordFile,
    /// Session tokens.
    pub sessions: SessionStore,
    /// argon2 verification, bounded.
    pub verifier: Verifier,
    /// Failed-login throttle.
    pub throttle: Throttle,
    /// Users' files.
    pub storage: Arc<dyn Storage>,
    /// Chat: live bus, history, delivery markers.
    pub chat: Arc<Chat>,
    /// Counters for the metrics endpoint.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Connection, transfer and bandwidth limits.
    pub admission: Admission,
}

impl ServerState {
    /// Prepares the data directory and TLS identity (generating a certificate on first
    /// start), loads accounts and sessions, and refuses unsafe files.
    ///
    /// # Errors
    /// Names the file or key at fault: a group-readable key or password file, a
    /// configured certificate that is missing, a malformed password file.
    pub async fn open(config: Config) -> anyhow::Result<ServerState> {
        ensure_data_dir(&config.data_dir)?;
        let (cert, key) = (config.cert_path(), config.key_path());
        if config.tls_is_generated() {
            let names = xfer_certs::generate::default_names(&config.tls.names);
            if let Some(fp) = xfer_certs::generate::ensure_identity(&cert, &key, &names)? {
                info!(cert = %cert.display(), fingerprint = %fp, ?names, "generated a self-signed certificate");
            }
        } else if !cert.exists() || !key.exists() {
            bail!(
                "configured [tls] cert `{}` or key `{}` does not exist; fix the paths or remove both keys to use a generated certificate",
                cert.display(),
                key.display()
            );
        }
        let tls = load_tls(&cert, &key)?;

        let passwords = LivePasswordFile::open(&config.password_file())?;
        if passwords.user_count() == 0 {
            warn!(password_file = %config.password_file().display(), "no user accounts yet; add one with `xferd user add NAME`");
        }
        let sessions_path = config.sessions_path();
        let sessions = SessionStore::open(
            &sessions_path,
            Duration::from_secs(config.login.session_ttl_secs),
        )
        .with_context(|| format!("opening session store `{}`", sessions_path.display()))?;
        let storage = LocalStorage::open(&config.data_dir, config.storage.clone())
            .with_context(|| format!("preparing `{}`", config.users_dir().display()))?;
        let chat = Chat::open(&config.data_dir, &config.chat).with_context(|| {
            format!("opening chat history in `{}`", config.chat_dir().display())
        })?;
        Ok(ServerState {
            storage: Arc::new(storage),
            chat: Arc::new(chat),
            metrics: Arc::default(),
            tls: RwLock::new(tls),
            started: Instant::now(),
            connections: Connections::default(),
            passwords,
            sessions,
            verifier: Verifier::new(config.hash_permits()).await,
            throttle: Throttle::new(config.throttle()),
            admission: Admission::new(config.limits.max_connections),
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration in force now. Take it once per decision: a reload may replace
    /// it between two calls.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The TLS acceptor for a new handshake.
    pub fn tls(&self) -> TlsAcceptor {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The fingerprint of the certificate served to new connections.
    pub fn fingerprint(&self) -> Fingerprint {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Installs a reloaded configuration; see `reload.rs`, which checks it first.
    pub(crate) fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Serves a new certificate and key to handshakes from now on.
    pub(crate) fn set_tls(&self, tls: (TlsAcceptor, Fingerprint)) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
    }
}

/// Reads a certificate chain and key into an acceptor, with the leaf's fingerprint.
///
/// # Errors
/// Names the file at fault (unreadable, malformed, a key readable by others).
pub(crate) fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<(TlsAcceptor, Fingerprint)> {
    let tls_config = xfer_certs::config::load_server_config(cert, key)?;
    let chain = xfer_certs::pem::load_certs(cert)?;
    let leaf = chain
        .first()
        .with_context(|| format!("certificate file `{}` holds no certificate", cert.display()))?;
    Ok((TlsAcceptor::from(tls_config), Fingerprint::of_der(leaf)))
}

/// Creates the data directory (mode 0700) if needed and warns if others can read it.
fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data directory `{}`", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading data directory `{}`", dir.display()))?;
    if !meta.is_dir() {
        bail!("data_dir `{}` is not a directory", dir.display());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        warn!(data_dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "data directory is accessible by group or others; consider `chmod 700`");
    }
    Ok(())
}

/// Accepts connections until `shutdown` fires, then lets sessions finish their current
/// request for up to `limits.shutdown_grace_secs` before returning.
///
/// Every connection is accepted at once and admitted as unauthenticated or closed
/// ([`Admission::admit`]); the `max_connections` slots are taken at login. The listener
/// is closed as soon as shutdown starts, so new clients are refused instead of queued.
pub async fn serve(state: Arc<ServerState>, listener: TcpListener, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    tracker.spawn(purge_sessions(state.clone(), shutdown.clone()));
    tracker.spawn(expire_partials(state.clone(), shutdown.clone()));
    tracker.spawn(maintain_chat(state.clone(), shutdown.clone()));
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
        tracker.spawn(handle(state, tcp, peer, accepted, preauth, shutdown).instrument(span));
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
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: tokio::time::Instant,
    preauth: PreAuthGuard,
    shutdown: CancellationToken,
) {
    let _open = state.metrics.connection_accepted();
    let _ = tcp.set_nodelay(true);
    crate::session::run(state, tcp, peer, accepted, preauth, shutdown).await;
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
