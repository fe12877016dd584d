//! The state every session shares: configuration, TLS identity, accounts, storage,
//! chat, metrics and admission, opened once at start-up ([`ServerState::open`]) and
//! handed to each connection in an `Arc`. Its own module, like mini-redis's `db.rs`, so
//! the accept loop (`server.rs`) and the sessions (`session/`) both depend on it and
//! not on each other.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};
use xfer_certs::Fingerprint;

use crate::accounts::{LivePasswordFile, SessionStore, Throttle, Verdict, Verifier};
use crate::admission::Admission;
use crate::chat::Chat;
use crate::cluster::Cluster;
use crate::cluster::throttle::SharedThrottle;
use crate::config::{ChatBusKind, Config, StorageBackend};
use crate::connections::Connections;
use crate::storage::Storage;
use crate::storage::local::LocalStorage;
use crate::storage::s3::S3Storage;

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
    /// The NATS server shared with other daemons (`[cluster] nats`), if any.
    pub cluster: Option<Arc<Cluster>>,
    /// The failed-login throttle shared with them.
    pub shared_throttle: Option<SharedThrottle>,
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
        let storage: Arc<dyn Storage> = match config.storage.backend {
            StorageBackend::Local => Arc::new(
                LocalStorage::open(&config.data_dir, config.storage.clone())
                    .with_context(|| format!("preparing `{}`", config.users_dir().display()))?,
            ),
            StorageBackend::S3 => Arc::new(
                S3Storage::open(
                    &config.storage.s3,
                    config.s3_credentials_file().as_deref(),
                    config.storage.clone(),
                )
                .await?,
            ),
        };
        let (cluster, shared_throttle) = open_cluster(&config, &sessions).await?;
        let chat = match (&cluster, config.chat.bus) {
            (Some(cluster), ChatBusKind::Nats) => {
                crate::cluster::open_chat(cluster, &config.chat).await?
            }
            _ => Chat::open(&config.data_dir, &config.chat).with_context(|| {
                format!("opening chat history in `{}`", config.chat_dir().display())
            })?,
        };
        Ok(ServerState {
            storage,
            chat: Arc::new(chat),
            metrics: Arc::default(),
            tls: RwLock::new(tls),
            started: Instant::now(),
            connections: Connections::default(),
            passwords,
            sessions,
            verifier: Verifier::new(config.hash_permits()).await,
            throttle: Throttle::new(config.throttle()),
            cluster,
            shared_throttle,
            admission: Admission::new(config.limits.max_connections),
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Reserves a failed login for `source` trying `user` (given back by
    /// [`ServerState::refund_login`] when it succeeds), here and, in a cluster, on
    /// every daemon; or the time to wait.
    pub async fn admit_login(&self, source: std::net::IpAddr, user: &str) -> Verdict {
        let local = self.throttle.admit(source, user, Instant::now());
        if local != Verdict::Allow {
            return local;
        }
        match &self.shared_throttle {
            Some(shared) => shared.admit(source, user).await,
            None => Verdict::Allow,
        }
    }

    /// Gives back what [`ServerState::admit_login`] reserved: the login succeeded.
    pub async fn refund_login(&self, source: std::net::IpAddr, user: &str) {
        self.throttle.refund(source, user, Instant::now());
        if let Some(shared) = &self.shared_throttle {
            shared.refund(source, user).await;
        }
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

/// With `[cluster] nats`: connects, makes the shared session store the authority for
/// `sessions`, and opens the shared login throttle.
async fn open_cluster(
    config: &Config,
    sessions: &SessionStore,
) -> anyhow::Result<(Option<Arc<Cluster>>, Option<SharedThrottle>)> {
    if !config.cluster.enabled() {
        return Ok((None, None));
    }
    let cluster = Arc::new(Cluster::connect(&config.cluster, &config.data_dir).await?);
    let shared = crate::cluster::sessions::NatsSessions::open(
        cluster.clone(),
        Duration::from_secs(config.login.session_ttl_secs),
    )
    .await?;
    sessions.share(Arc::new(shared));
    let throttle = SharedThrottle::open(cluster.clone(), config.throttle()).await?;
    Ok((Some(cluster), Some(throttle)))
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
