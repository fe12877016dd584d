//! Daemon configuration: a TOML file whose every key has a built-in default.
//!
//! `Config::default()` matches `config/xferd.toml` (a unit test checks this), so the
//! daemon runs with no file at all. Unknown keys are rejected, and `validate()` names
//! the key at fault. Which file is used is decided in [`discover`], for the daemon and
//! every admin command alike.
//!
//! Paths in a file are relative to that file, not to the working directory of whoever
//! runs `xferd`: a relative `data_dir` (and the default `./xferd-data` when the file
//! does not set it) resolves against the file's directory, and relative `password_file`
//! and `[tls]` paths resolve against `data_dir`. New path keys should follow the same
//! rule (resolve them in [`Config::load`]).

mod cluster;
pub mod discover;
mod metrics;

pub use cluster::ClusterConfig;
pub use metrics::MetricsConfig;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accounts::ThrottleConfig;

/// Longest unix socket path (`sun_path` is 108 bytes on Linux, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The example configuration shipped in `config/`; `xferd init` writes it out.
pub const EXAMPLE: &str = include_str!("../../config/xferd.toml");

/// Everything `xferd` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: String,
    /// Where accounts, sessions, the certificate and (later) files live.
    pub data_dir: PathBuf,
    /// `name:PHC` password file; default `<data_dir>/passwd`.
    pub password_file: Option<PathBuf>,
    /// The admin's control socket; default `<data_dir>/control.sock`.
    pub control_socket: Option<PathBuf>,
    /// TLS identity.
    pub tls: TlsConfig,
    /// Resource bounds.
    pub limits: LimitsConfig,
    /// Login policy.
    pub login: LoginConfig,
    /// Users' files: quotas, limits, partial uploads, content-type policy.
    pub storage: StorageConfig,
    /// Chat: history retention, rate limits, buffers.
    pub chat: ChatConfig,
    /// Prometheus metrics listener (off by default).
    pub metrics: MetricsConfig,
    /// The NATS server several daemons share (off by default).
    pub cluster: ClusterConfig,
}

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; default `<data_dir>/tls/cert.pem`, generated if missing.
    pub cert: Option<PathBuf>,
    /// PEM private key (mode 0600); default `<data_dir>/tls/key.pem`, generated if missing.
    pub key: Option<PathBuf>,
    /// Extra names and addresses for a generated certificate's SANs.
    pub names: Vec<String>,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Logged-in connections served at once; a login beyond it is refused as busy.
    pub max_connections: usize,
    /// From accept: time allowed for the TLS handshake and the hello exchange.
    pub handshake_timeout_secs: u64,
    /// From accept: time allowed for handshake, hello and login together.
    pub login_timeout_secs: u64,
    /// An authenticated connection with no traffic for this long is closed.
    pub idle_timeout_secs: u64,
    /// On shutdown, how long sessions get to finish their current request.
    pub shutdown_grace_secs: u64,
    /// Connections not yet logged in from one source address; more are refused.
    pub unauthenticated_per_source: usize,
    /// From this many connections not yet logged in (all sources), new ones are
    /// dropped with a probability rising to 1 at `unauthenticated_full`.
    pub unauthenticated_start: usize,
    /// Connections not yet logged in (all sources) beyond which all new ones are refused.
    pub unauthenticated_full: usize,
    /// Uploads and downloads one user may have in progress, over all connections.
    pub max_transfers_per_user: usize,
    /// Bytes per second one user's transfers may move together (0 = no cap).
    pub user_bytes_per_sec: u64,
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Bytes each user may store (committed files plus partial uploads at their final
    /// size); 0 = unlimited.
    pub quota_bytes: u64,
    /// Largest single file accepted; 0 = unlimited.
    pub max_file_bytes: u64,
    /// Free space kept on the data directory's filesystem: an upload that would eat
    /// into it is refused with "server out of space" before any data flows.
    pub min_free_bytes: u64,
    /// An upload untouched for this long is removed with its partial data.
    pub partial_ttl_secs: u64,
    /// Unfinished uploads one user may hold at once; a new one past it is refused
    /// until some finish or are removed (`xfer rm --partial`).
    pub max_partials_per_user: u32,
    /// Writes a big upload (64 MiB and more) to the disk past the page cache
    /// (`O_DIRECT`) where the data directory's filesystem supports it; `false` writes
    /// every upload through the page cache.
    pub direct_io: bool,
    /// Content-type policy: each rule restricts what may be uploaded into a directory
    /// and everything below it (the most specific rule applies).
    pub type_rules: Vec<TypeRule>,
    /// Where files live: `local` (under `data_dir`, the default) or `s3` (an
    /// S3-compatible bucket, `[storage.s3]`).
    pub backend: StorageBackend,
    /// `[storage.s3]`: the bucket, when `backend = "s3"`.
    pub s3: S3Config,
}

/// `[storage] backend`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Users' files under `<data_dir>/users`.
    #[default]
    Local,
    /// Users' files in an S3-compatible bucket.
    S3,
}

/// `[storage.s3]`: an S3-compatible bucket (Garage, MinIO, Ceph RGW, AWS).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The S3 API's base URL, such as `http://127.0.0.1:3900` (plain HTTP only on a
    /// loopback address or with `allow_http`).
    pub endpoint: String,
    /// The bucket; xferd keeps everything under `prefix` in it.
    pub bucket: String,
    /// The region the store expects in signatures (Garage: its `s3_region`).
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`), as Garage and MinIO serve by
    /// default; `false` for virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// A key prefix inside the bucket (`""` = the bucket's root), so several
    /// deployments can share one bucket.
    pub prefix: String,
    /// A file (mode 0600) with `access_key_id = "…"` and `secret_access_key = "…"`;
    /// relative to `data_dir`. Without it, `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` from the environment are used.
    pub credentials_file: Option<PathBuf>,
    /// Allow a plain-HTTP endpoint that is not on a loopback address.
    pub allow_http: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            bucket: String::new(),
            region: "garage".into(),
            path_style: true,
            prefix: String::new(),
            credentials_file: None,
            allow_http: false,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials never live here, but keep the shape explicit.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("credentials_file", &self.credentials_file)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// `[[storage.type_rules]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRule {
    /// Directory relative to each user's home (`""` = the whole home).
    pub dir: String,
    /// MIME types accepted there, detected from the content's magic bytes.
    pub accept: Vec<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            quota_bytes: 0,
            max_file_bytes: 0,
            min_free_bytes: 64 << 20,
            partial_ttl_secs: 7 * 24 * 3600,
            max_partials_per_user: 100,
            direct_io: true,
            type_rules: vec![TypeRule {
                dir: "images".into(),
                accept: ["image/jpeg", "image/png", "image/gif", "image/webp"]
                    .map(String::from)
                    .to_vec(),
            }],
            backend: StorageBackend::Local,
            s3: S3Config::default(),
        }
    }
}

/// `[chat]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Messages kept per conversation (a channel, or a pair of users); 0 = no limit.
    pub history_max_messages: u64,
    /// Messages older than this many days are removed; 0 = kept forever.
    pub history_retention_days: u64,
    /// Messages, joins and parts one connection may send per second, sustained.
    pub messages_per_sec: u32,
    /// ... and in a burst.
    pub message_burst: u32,
    /// Events buffered per channel: a reader further behind skips the oldest and is
    /// told how many it missed.
    pub channel_buffer: usize,
    /// Direct messages, file notices and presence changes buffered per connection.
    pub connection_buffer: usize,
    /// Channels the server holds (with members now, or with stored history).
    pub max_channels: usize,
    /// Channels with stored history one user may have started (their message is the
    /// oldest kept); 0 = no limit.
    pub max_channels_per_user: usize,
    /// A channel holding a single message this many days old, with nobody in it, is
    /// removed; 0 = only by `history_retention_days`.
    pub lone_channel_days: u64,
    /// Channels one connection may be in at once.
    pub max_joined: usize,
    /// Direct messages replayed at most when a user connects; older ones are reported
    /// as missed (`History` pages through them).
    pub replay_max: u32,
    /// Where chat lives: `local` (this daemon: in-process hub, files under
    /// `data_dir/chat`) or `nats` (shared by every daemon on `[cluster] nats`).
    pub bus: ChatBusKind,
}

/// `[chat] bus`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatBusKind {
    /// The in-process hub and local files.
    #[default]
    Local,
    /// NATS subjects, a JetStream stream and key-value buckets.
    Nats,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history_max_messages: 10_000,
            history_retention_days: 365,
            messages_per_sec: 5,
            message_burst: 20,
            channel_buffer: 1024,
            connection_buffer: 1024,
            max_channels: 10_000,
            max_channels_per_user: 100,
            lone_channel_days: 7,
            max_joined: 64,
            replay_max: 1000,
            bus: ChatBusKind::Local,
        }
    }
}

impl ChatConfig {
    /// The history store's settings.
    pub fn history_config(&self) -> crate::chat::history::HistoryConfig {
        crate::chat::history::HistoryConfig {
            max_messages: self.history_max_messages,
            retention_ms: self.history_retention_days.saturating_mul(24 * 3600 * 1000),
            max_channels: self.max_channels,
            max_channels_per_user: self.max_channels_per_user,
            lone_message_ms: self.lone_channel_days.saturating_mul(24 * 3600 * 1000),
        }
    }

    /// The in-process hub's settings.
    pub fn hub_config(&self) -> crate::chat::hub::HubConfig {
        crate::chat::hub::HubConfig {
            channel_buffer: self.channel_buffer,
            connection_buffer: self.connection_buffer,
            max_channels: self.max_channels,
            max_joined: self.max_joined,
        }
    }
}

/// `[login]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// How long a session token stays valid.
    pub session_ttl_secs: u64,
    /// Password or token attempts allowed per connection before it is closed.
    pub max_attempts_per_connection: u32,
    /// Failed verifications allowed from one source address before it is throttled.
    pub source_burst: u32,
    /// One failure from a source is forgiven per this many seconds.
    pub source_refill_secs: u64,
    /// Failed verifications allowed on one user name before that name is throttled.
    pub user_burst: u32,
    /// One failure on a user name is forgiven per this many seconds.
    pub user_refill_secs: u64,
    /// argon2 verifications run at once; 0 means one per CPU core.
    pub max_concurrent_hashes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: format!("0.0.0.0:{}", xfer_proto::DEFAULT_PORT),
            data_dir: default_data_dir(),
            password_file: None,
            control_socket: None,
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            login: LoginConfig::default(),
            storage: StorageConfig::default(),
            chat: ChatConfig::default(),
            metrics: MetricsConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 1024,
            handshake_timeout_secs: 10,
            login_timeout_secs: 120,
            idle_timeout_secs: 900,
            shutdown_grace_secs: 10,
            unauthenticated_per_source: 32,
            unauthenticated_start: 64,
            unauthenticated_full: 256,
            max_transfers_per_user: 16,
            user_bytes_per_sec: 0,
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        let t = ThrottleConfig::default();
        LoginConfig {
            session_ttl_secs: 30 * 24 * 3600,
            max_attempts_per_connection: 3,
            source_burst: t.source_burst,
            source_refill_secs: t.source_refill_secs,
            user_burst: t.user_burst,
            user_refill_secs: t.user_refill_secs,
            max_concurrent_hashes: 0,
        }
    }
}

/// `$STATE_DIRECTORY` under systemd (`StateDirectory=xferd`), else `./xferd-data`.
fn default_data_dir() -> PathBuf {
    first_env_dir("STATE_DIRECTORY").unwrap_or_else(|| PathBuf::from("./xferd-data"))
}

/// The first directory of a systemd `*_DIRECTORY` variable, if set.
fn first_env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).and_then(|v| {
        // systemd passes a colon-separated list when several are configured.
        let s = v.to_string_lossy().split(':').next()?.to_owned();
        (!s.is_empty()).then(|| PathBuf::from(s))
    })
}

/// A configuration problem, naming the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type).
    #[error("config `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, which names the key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("config key `{key}` {message}")]
    Invalid {
        /// The key, dotted (`limits.max_connections`).
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A value in a config file is out of range ([`ConfigError::Invalid`] plus the file).
    #[error("config `{path}`: key `{key}` {message}")]
    InvalidIn {
        /// The file.
        path: PathBuf,
        /// The key, dotted.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file named by `--config` or `$XFERD_CONFIG` does not exist.
    #[error(
        "config file `{path}` (from {via}) does not exist; fix the path, or create it with `xferd --config {path} init`"
    )]
    Missing {
        /// The file, absolute.
        path: PathBuf,
        /// `--config` or `$XFERD_CONFIG`.
        via: &'static str,
    },
}

impl Config {
    /// Reads a config file, resolves its relative paths against the file's directory
    /// (see the module comment) and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let path = discover::absolute(path);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.clone(),
            message,
        })?;
        // Validated before resolving, so that `data_dir = ""` is an error, not the
        // file's own directory.
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message } => ConfigError::InvalidIn {
                path: path.clone(),
                key,
                message,
            },
            other => other,
        })?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        config.data_dir = discover::resolve(dir, &config.data_dir);
        Ok(config)
    }

    /// Parses TOML text (without validating ranges).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }

    /// Checks ranges and formats, naming the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.listen_addr().is_err() {
            return invalid("listen", "must be an address and port such as 0.0.0.0:7443");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        // sockaddr_un holds 108 bytes with the terminating NUL.
        let socket = self.control_socket_path();
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return invalid(
                "control_socket",
                &format!(
                    "`{}` is longer than the {MAX_SOCKET_PATH} bytes a unix socket path may have; set control_socket to a shorter absolute path such as /run/xferd/control.sock",
                    socket.display()
                ),
            );
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be > 0");
        }
        if l.handshake_timeout_secs == 0 || l.login_timeout_secs == 0 || l.idle_timeout_secs == 0 {
            return invalid("limits.*_timeout_secs", "must be > 0");
        }
        if l.unauthenticated_per_source == 0 {
            return invalid("limits.unauthenticated_per_source", "must be > 0");
        }
        if l.unauthenticated_start == 0 {
            return invalid("limits.unauthenticated_start", "must be > 0");
        }
        if l.unauthenticated_full < l.unauthenticated_start {
            return invalid(
                "limits.unauthenticated_full",
                "must be >= limits.unauthenticated_start",
            );
        }
        if l.max_transfers_per_user == 0 {
            return invalid("limits.max_transfers_per_user", "must be > 0");
        }
        let g = &self.login;
        if g.session_ttl_secs < 60 {
            return invalid("login.session_ttl_secs", "must be at least 60");
        }
        if g.max_attempts_per_connection == 0 {
            return invalid("login.max_attempts_per_connection", "must be > 0");
        }
        if g.source_burst == 0 || g.user_burst == 0 {
            return invalid("login.source_burst / login.user_burst", "must be > 0");
        }
        if g.source_refill_secs == 0 || g.user_refill_secs == 0 {
            return invalid("login.*_refill_secs", "must be > 0");
        }
        let s = &self.storage;
        if s.partial_ttl_secs == 0 {
            return invalid("storage.partial_ttl_secs", "must be > 0");
        }
        if s.max_partials_per_user == 0 {
            return invalid("storage.max_partials_per_user", "must be > 0");
        }
        for rule in &s.type_rules {
            if !rule.dir.is_empty() && crate::relpath::RelPath::parse(&rule.dir).is_err() {
                return invalid(
                    "storage.type_rules.dir",
                    &format!(
                        "{:?} is not a relative path such as \"images\" or \"photos/raw\"",
                        rule.dir
                    ),
                );
            }
            if rule.accept.is_empty() {
                return invalid(
                    "storage.type_rules.accept",
                    &format!("rule for {:?} accepts nothing; list MIME types", rule.dir),
                );
            }
            if let Some(bad) = rule.accept.iter().find(|m| {
                let mut parts = m.split('/');
                !(parts.next().is_some_and(|p| !p.is_empty())
                    && parts.next().is_some_and(|p| !p.is_empty())
                    && parts.next().is_none())
            }) {
                return invalid(
                    "storage.type_rules.accept",
                    &format!("{bad:?} is not a MIME type such as \"image/png\""),
                );
            }
        }
        if s.backend == StorageBackend::S3 {
            self.validate_s3()?;
        }
        let c = &self.chat;
        if c.messages_per_sec == 0 || c.message_burst == 0 {
            return invalid("chat.messages_per_sec / chat.message_burst", "must be > 0");
        }
        if c.channel_buffer == 0 || c.connection_buffer == 0 {
            return invalid(
                "chat.channel_buffer / chat.connection_buffer",
                "must be > 0",
            );
        }
        if c.max_channels == 0 || c.max_joined == 0 {
            return invalid("chat.max_channels / chat.max_joined", "must be > 0");
        }
        if c.replay_max == 0 {
            return invalid("chat.replay_max", "must be > 0");
        }
        // A per-user limit above max_channels is allowed: max_channels caps everyone
        // anyway, and a config that lowered only max_channels stays valid.
        if c.bus == ChatBusKind::Nats && !self.cluster.enabled() {
            return invalid(
                "chat.bus",
                "is \"nats\" but [cluster] nats names no server; set cluster.nats = \"nats://host:4222\"",
            );
        }
        self.cluster.validate()?;
        self.metrics.validate()
    }

    /// Checks `[storage.s3]` (also for `xferd migrate`, whatever the backend).
    pub(crate) fn validate_s3(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let s3 = &self.storage.s3;
        let endpoint = s3.endpoint.trim_end_matches('/');
        let Some((scheme, rest)) = endpoint.split_once("://") else {
            return invalid(
                "storage.s3.endpoint",
                "must be a URL such as http://127.0.0.1:3900 or https://s3.lan".into(),
            );
        };
        let host = rest.split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match scheme {
            "https" => {}
            "http" if loopback || s3.allow_http => {}
            "http" => {
                return invalid(
                    "storage.s3.endpoint",
                    format!(
                        "{endpoint} is plain HTTP to another host: credentials and files would cross the network unencrypted; use https, or set storage.s3.allow_http = true on a trusted network"
                    ),
                );
            }
            _ => {
                return invalid(
                    "storage.s3.endpoint",
                    format!("{endpoint}: the scheme must be http or https"),
                );
            }
        }
        if host.is_empty() {
            return invalid("storage.s3.endpoint", format!("{endpoint} names no host"));
        }
        if s3.bucket.is_empty() {
            return invalid("storage.s3.bucket", "must name the bucket".into());
        }
        if s3.region.is_empty() {
            return invalid(
                "storage.s3.region",
                "must be the store's region (Garage: its s3_region)".into(),
            );
        }
        if s3.prefix.starts_with('/') || s3.prefix.contains("//") {
            return invalid(
                "storage.s3.prefix",
                "must be a relative key prefix such as \"xfer\" (or empty)".into(),
            );
        }
        Ok(())
    }

    /// The S3 credentials file, resolved against `data_dir`.
    pub fn s3_credentials_file(&self) -> Option<PathBuf> {
        self.storage
            .s3
            .credentials_file
            .as_ref()
            .map(|p| self.data_dir.join(p))
    }

    /// Where chat history and delivery markers live.
    pub fn chat_dir(&self) -> PathBuf {
        self.data_dir.join("chat")
    }

    /// Where users' homes, partial uploads and file manifests live.
    pub fn users_dir(&self) -> PathBuf {
        self.data_dir.join("users")
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }

    fn under_data_dir(&self, p: &Option<PathBuf>, default: &str) -> PathBuf {
        match p {
            Some(p) => self.data_dir.join(p),
            None => self.data_dir.join(default),
        }
    }

    /// The password file's path.
    pub fn password_file(&self) -> PathBuf {
        self.under_data_dir(&self.password_file, "passwd")
    }

    /// The control socket's path: `control_socket` (relative to `data_dir`), else
    /// `<data_dir>/control.sock`. Never taken from the environment: the admin's
    /// `xferd status` in a shell must find the socket the daemon under systemd made.
    pub fn control_socket_path(&self) -> PathBuf {
        match &self.control_socket {
            Some(p) => self.data_dir.join(p),
            None => self.data_dir.join("control.sock"),
        }
    }

    /// The certificate's path.
    pub fn cert_path(&self) -> PathBuf {
        self.under_data_dir(&self.tls.cert, "tls/cert.pem")
    }

    /// The private key's path.
    pub fn key_path(&self) -> PathBuf {
        self.under_data_dir(&self.tls.key, "tls/key.pem")
    }

    /// The local CA's certificate (`xferd ca`): `<data_dir>/ca/ca.pem`, what devices install.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.data_dir.join("ca/ca.pem")
    }

    /// The local CA's private key (mode 0600): `<data_dir>/ca/ca-key.pem`. The daemon
    /// never reads it; only `xferd ca` does, to issue the server certificate.
    pub fn ca_key_path(&self) -> PathBuf {
        self.data_dir.join("ca/ca-key.pem")
    }

    /// Whether the TLS identity is the generated default (so a missing one may be created).
    pub fn tls_is_generated(&self) -> bool {
        self.tls.cert.is_none() && self.tls.key.is_none()
    }

    /// Where session tokens (hashed) are kept.
    pub fn sessions_path(&self) -> PathBuf {
        self.data_dir.join("sessions.json")
    }

    /// The throttle settings of `[login]`.
    pub fn throttle(&self) -> ThrottleConfig {
        ThrottleConfig {
            source_burst: self.login.source_burst,
            source_refill_secs: self.login.source_refill_secs,
            user_burst: self.login.user_burst,
            user_refill_secs: self.login.user_refill_secs,
            ..ThrottleConfig::default()
        }
    }

    /// argon2 verifications allowed at once.
    pub fn hash_permits(&self) -> usize {
        match self.login.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// Shorthand for `Duration::from_secs`.
    pub fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_socket_path_too_long_for_a_unix_socket_names_the_key() {
        let mut config = Config {
            data_dir: PathBuf::from(format!("/srv/{}", "d".repeat(120))),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("control_socket"), "{err}");
        config.control_socket = Some("/run/xferd/control.sock".into());
        config.validate().unwrap();
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        // Built-in defaults and the documented example must never drift apart.
        let parsed = Config::parse(EXAMPLE).unwrap();
        let default = Config {
            data_dir: parsed.data_dir.clone(), // depends on $STATE_DIRECTORY
            ..Config::default()
        };
        assert_eq!(parsed, default);
        parsed.validate().unwrap();
    }

    #[test]
    fn every_file_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
        let err = Config::parse("[tls]\ncertificate = \"x\"\n").unwrap_err();
        assert!(err.contains("certificate"), "{err}");
    }

    #[test]
    fn validate_names_the_key() {
        let mut c = Config::default();
        c.limits.max_connections = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("limits.max_connections")
        );
        let c = Config {
            listen: "nowhere".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`listen`"));
    }

    #[test]
    fn admission_limits_are_validated_by_key() {
        for (toml, key) in [
            (
                "unauthenticated_per_source = 0",
                "limits.unauthenticated_per_source",
            ),
            ("unauthenticated_start = 0", "limits.unauthenticated_start"),
            (
                "unauthenticated_start = 10\nunauthenticated_full = 9",
                "limits.unauthenticated_full",
            ),
            (
                "max_transfers_per_user = 0",
                "limits.max_transfers_per_user",
            ),
        ] {
            let c = Config::parse(&format!("[limits]\n{toml}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let c = Config::parse("[limits]\nuser_bytes_per_sec = 1000000\n").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn storage_rules_are_validated_by_key() {
        let c = Config::parse("[[storage.type_rules]]\ndir = \"../x\"\naccept = [\"image/png\"]\n")
            .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storage.type_rules.dir")
        );
        let c = Config::parse("[[storage.type_rules]]\ndir = \"x\"\naccept = [\"png\"]\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storage.type_rules.accept")
        );
        let c = Config::parse("[storage]\ntype_rules = []\nquota_bytes = 5\n").unwrap();
        c.validate().unwrap();
        assert!(c.storage.type_rules.is_empty());
        assert!(
            Config::parse("[storage]\nquota = 5\n")
                .unwrap_err()
                .contains("quota")
        );
    }

    #[test]
    fn chat_limits_are_validated_by_key() {
        let c = Config::parse("[chat]\nmessages_per_sec = 0\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("chat.messages_per_sec")
        );
        let c = Config::parse("[chat]\nchannel_buffer = 0\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("chat.channel_buffer")
        );
        let c = Config::parse("[chat]\nhistory_retention_days = 0\nhistory_max_messages = 0\n")
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.chat.history_config().retention_ms, 0);
        assert!(
            Config::parse("[chat]\nhistory_days = 5\n")
                .unwrap_err()
                .contains("history_days")
        );
    }

    #[test]
    fn relative_paths_in_a_file_resolve_against_its_directory() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = tmp.path().join("etc");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("xferd.toml");
        let text = "data_dir = \"./data\"\npassword_file = \"pw\"\n[tls]\ncert = \"c.pem\"\nkey = \"/k.pem\"\n";
        std::fs::write(&file, text).unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.data_dir.to_str(), dir.join("data").to_str());
        assert_eq!(c.password_file(), dir.join("data/pw"));
        assert_eq!(c.cert_path(), dir.join("data/c.pem"));
        assert_eq!(c.key_path(), Path::new("/k.pem"));

        std::fs::write(&file, "data_dir = \"/srv/x\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.data_dir, Path::new("/srv/x"));
        assert_eq!(c.password_file(), Path::new("/srv/x/passwd"));

        // The default data directory is next to the file too (unless systemd sets one).
        std::fs::write(&file, "").unwrap();
        let c = Config::load(&file).unwrap();
        if std::env::var_os("STATE_DIRECTORY").is_none() {
            assert_eq!(c.data_dir.to_str(), dir.join("xferd-data").to_str());
            assert_eq!(c.cert_path(), dir.join("xferd-data/tls/cert.pem"));
        }

        std::fs::write(&file, "data_dir = \"\"\n").unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("data_dir") && err.contains("xferd.toml"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_in_a_file_names_the_file_and_the_key() {
        let tmp = tempfile::TempDir::new().unwrap();
        let file = tmp.path().join("x.toml");
        std::fs::write(&file, "[limits]\nmax_connections = 0\n").unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("limits.max_connections") && err.contains(&*file.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_resolve_under_data_dir() {
        let c = Config::parse("data_dir = \"/srv/x\"\npassword_file = \"pw\"\n").unwrap();
        assert_eq!(c.password_file(), Path::new("/srv/x/pw"));
        assert_eq!(c.key_path(), Path::new("/srv/x/tls/key.pem"));
        let c = Config::parse("data_dir = \"/srv/x\"\npassword_file = \"/etc/pw\"\n").unwrap();
        assert_eq!(c.password_file(), Path::new("/etc/pw"));
    }

    /// The Debian package's /etc/xferd/xferd.toml is this example plus the paths the
    /// package sets up (the unit's RuntimeDirectory holds the socket), and it validates.
    #[test]
    fn packaged_config_is_the_example_with_the_package_paths() {
        const PACKAGED: &str = include_str!("../../packaging/xferd.toml");
        const PATHS: [&str; 2] = ["data_dir", "control_socket"];
        let mut packaged: toml::Table = toml::from_str(PACKAGED).unwrap();
        assert_eq!(packaged["data_dir"].as_str(), Some("/var/lib/xferd"));
        assert_eq!(
            packaged["control_socket"].as_str(),
            Some("/run/xferd/control.sock")
        );
        // Until the control socket's key exists in this schema, validate without it.
        let mut checked = packaged.clone();
        if Config::parse("control_socket = \"/run/x.sock\"").is_err() {
            checked.remove("control_socket");
        }
        let config: Config = checked.try_into().unwrap();
        config.validate().unwrap();

        let mut example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        for key in PATHS {
            packaged.remove(key);
            example.remove(key);
        }
        assert_eq!(
            packaged, example,
            "packaging/xferd.toml must set every key config/xferd.toml sets, to the same \
             value, besides {PATHS:?}: copy the changed lines (with their comments)"
        );
    }
}
