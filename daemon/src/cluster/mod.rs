//! Several daemons on one NATS server: the connection, and what lives on it.
//!
//! With `[cluster] nats` set, [`Cluster::connect`] opens one NATS connection per daemon
//! (it reconnects by itself, for ever) and JetStream on it. What is shared:
//! - login sessions (`sessions.rs`, bucket `xfer_sessions`) and the failed-login throttle
//!   (`throttle.rs`, bucket `xfer_throttle`), always;
//! - with `[chat] bus = "nats"`, chat: history in the stream `XFER_CHAT` (the stream
//!   sequence is the message id, unique and increasing across daemons; `history.rs`),
//!   live delivery from that stream (`feed.rs`), presence and channel membership in the
//!   bucket `xfer_presence` with a TTL refreshed while connected (`bus.rs`), delivery
//!   markers and read positions in `xfer_chat_state` (`markers.rs`).
//!
//! What each daemon keeps to itself: users' files, the password file (which must be the
//! same on every daemon), its certificate, and its connections. It does not parse
//! requests: sessions and chat call into it through the same types as the local
//! implementations.

pub mod bus;
pub mod feed;
pub mod history;
pub mod markers;
pub mod sessions;
pub mod throttle;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use tracing::{info, warn};

use crate::config::ClusterConfig;

/// How long one JetStream request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection to NATS shared by everything on it.
pub struct Cluster {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The configured URLs, for messages.
    servers: String,
    /// This process's name on the bus: unique per start, so keys of a daemon that died
    /// are told apart from those of its successor (they expire by TTL).
    node: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("servers", &self.servers)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Why something on NATS cannot be done now.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Not connected now (async-nats reconnects by itself).
    #[error("the message bus at {0} is unreachable; try again later")]
    Unreachable(String),
}

impl Cluster {
    /// Connects to the configured servers, with the configured credentials and TLS.
    /// Fails when none can be reached now: a daemon of a cluster does not start alone.
    ///
    /// # Errors
    /// Names the credentials file or the servers at fault.
    pub async fn connect(config: &ClusterConfig, data_dir: &Path) -> anyhow::Result<Cluster> {
        let mut options = async_nats::ConnectOptions::new()
            .name("xferd")
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Bounded: after at most a few seconds between attempts, so chat recovers
            // soon after NATS is back.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * attempts as u64).min(2000))
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        warn!("disconnected from NATS; reconnecting")
                    }
                    other => info!(event = %other, "NATS"),
                }
            });
        let read = |p: &Path| -> anyhow::Result<String> {
            let p = ClusterConfig::resolve(data_dir, p);
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading NATS credentials `{}`", p.display()))?;
            Ok(text.lines().next().unwrap_or("").trim().to_owned())
        };
        if let (Some(user), Some(file)) = (&config.user, &config.password_file) {
            options = options.user_and_password(user.clone(), read(file)?);
        }
        if let Some(file) = &config.token_file {
            options = options.token(read(file)?);
        }
        if let Some(file) = &config.creds_file {
            let p = ClusterConfig::resolve(data_dir, file);
            options = options
                .credentials_file(&p)
                .await
                .with_context(|| format!("reading NATS credentials `{}`", p.display()))?;
        }
        if let Some(ca) = &config.ca_file {
            let p = ClusterConfig::resolve(data_dir, ca);
            options = options.require_tls(true).tls_client_config(tls_config(&p)?);
        }
        let servers = config.servers();
        let urls: Vec<async_nats::ServerAddr> = config
            .nats
            .iter()
            .map(|u| u.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("cluster.nats `{servers}`"))?;
        let client = options
            .connect(urls)
            .await
            .with_context(|| format!("cannot reach NATS at {servers}"))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).context("system random number generator")?;
        let node = crate::accounts::hex(&id);
        info!(servers = %servers, node = %node, "NATS cluster");
        Ok(Cluster {
            client,
            js,
            servers,
            node,
        })
    }

    /// JetStream on the connection.
    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// This daemon's name on the bus.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Ok when connected now, else the one-line reason.
    ///
    /// # Errors
    /// [`ClusterError::Unreachable`].
    pub fn check(&self) -> Result<(), ClusterError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(self.unreachable()),
        }
    }

    /// The error for "not connected".
    pub fn unreachable(&self) -> ClusterError {
        ClusterError::Unreachable(self.servers.clone())
    }

    /// Opens (creating or updating) a key-value bucket.
    ///
    /// # Errors
    /// When JetStream refuses or cannot be reached.
    pub async fn bucket(
        &self,
        name: &str,
        max_age: Duration,
        history: i64,
    ) -> anyhow::Result<jetstream::kv::Store> {
        use jetstream::stream;
        // The bucket's stream is made here, as async-nats would make it, because its
        // own `create_key_value` first asks for account details that nats-server 2.9
        // does not send in the form this client expects.
        let config = stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: history.max(1),
            max_age,
            max_bytes: -1,
            max_message_size: -1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            num_replicas: 1,
            discard: stream::DiscardPolicy::New,
            // Nats refuses a duplicate window longer than the age limit.
            duplicate_window: if max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                max_age.min(Duration::from_secs(120))
            },
            ..Default::default()
        };
        let context = || {
            format!(
                "opening NATS key-value bucket `{name}` on {} (is JetStream on: nats-server -js?)",
                self.servers
            )
        };
        self.js
            .create_or_update_stream(config)
            .await
            .with_context(context)?;
        self.js.get_key_value(name).await.with_context(context)
    }
}

/// A rustls client config that trusts the CA certificate(s) in `ca`, built with an
/// explicit provider (ring), as every TLS config of this workspace is.
fn tls_config(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in xfer_certs::pem::load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate in `{}`", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(xfer_certs::config::provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A user or channel name as one token of a NATS subject or key: names may hold `.`,
/// which separates tokens, so it is written `=2e` (`=` is in no name, so this is
/// reversible and never collides).
pub fn token(name: &str) -> String {
    name.replace('.', "=2e")
}

/// The name a [`token`] stands for.
pub fn untoken(token: &str) -> String {
    token.replace("=2e", ".")
}

/// Runs `f` on the runtime from a blocking thread, with a deadline: the stores below
/// have blocking interfaces (their callers use `spawn_blocking`).
pub(crate) fn block_on<T>(
    handle: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    handle
        .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, f).await })
        .ok()
}

/// Keeps running `task` until `cluster` is dropped: whenever it returns (its NATS
/// stream ended or failed, e.g. while NATS was down) it is started again after a short
/// pause, so subscriptions, watchers and consumers come back by themselves.
pub(crate) fn supervise<F, Fut>(cluster: &Arc<Cluster>, what: &'static str, mut task: F)
where
    F: FnMut(Arc<Cluster>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let weak = Arc::downgrade(cluster);
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(200);
        loop {
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            if cluster.check().is_ok() {
                match task(cluster).await {
                    Ok(()) => pause = Duration::from_millis(200),
                    Err(e) => {
                        warn!(
                            error = format!("{e:#}"),
                            task = what,
                            "NATS task ended; restarting it"
                        );
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    });
}

/// Chat on NATS (`[chat] bus = "nats"`): the stream, the buckets, the feed and the bus;
/// returns once the feed has read the stream, so the daemon serves with the whole
/// history known.
///
/// # Errors
/// When JetStream cannot be reached or refuses, or the stream cannot be read in time.
pub async fn open_chat(
    cluster: &Arc<Cluster>,
    config: &crate::config::ChatConfig,
) -> anyhow::Result<crate::chat::Chat> {
    let hub = Arc::new(crate::chat::InProcessHub::new(config.hub_config()));
    let feed = feed::Feed::new(hub.clone(), cluster.node());
    let history =
        history::NatsHistory::open(cluster.clone(), feed.clone(), config.history_config()).await?;
    let bus = bus::NatsBus::open(cluster, hub).await?;
    let markers = markers::NatsMarkers::open(cluster).await?;
    {
        let feed = feed.clone();
        supervise(cluster, "chat feed", move |c| feed.clone().run(c));
    }
    tokio::time::timeout(Duration::from_secs(120), feed.wait_caught_up())
        .await
        .with_context(|| {
            format!(
                "reading the chat stream {} from NATS took too long",
                feed::STREAM
            )
        })?;
    info!(last_id = feed.last_id(), "chat history on NATS read");
    Ok(crate::chat::Chat::with_stores(
        Arc::new(bus),
        Arc::new(history),
        markers.clone(),
        markers,
        config,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_hold_dots() {
        for name in ["alice", "a.b", "x_y-z", "a..b"] {
            let t = token(name);
            assert!(!t.contains('.'), "{t}");
            assert_eq!(untoken(&t), name);
        }
        assert_ne!(token("a.b"), token("a_b"));
    }
}
