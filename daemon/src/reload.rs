//! Reload: a new configuration for the running daemon, on SIGHUP or `xferd reload`.
//!
//! The file the daemon started with is read and validated again, and the certificate
//! and key are loaded, before anything changes: a reload that fails at any step leaves
//! the running configuration in force, and says why in one line. What can change live
//! does: limits and timeouts (for new connections and requests), login throttling,
//! session lifetime, storage quotas and type rules, chat limits, and the TLS identity
//! (for new handshakes; open connections keep theirs). What is bound at start (the
//! listen address, `data_dir`, the password file and control socket paths, the number
//! of concurrent password checks) keeps its running value and is named in one warning.
//! Around the work, systemd is told `RELOADING=1` (with `MONOTONIC_USEC`) and `READY=1`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{error, info, warn};
use xfer_certs::Fingerprint;

use crate::config::Config;
use crate::state::{ServerState, load_tls};

/// Reads and validates the configuration again, the way it was read at start
/// (same file, same command-line overrides).
pub type ConfigLoader = Arc<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// Runs reloads one at a time for the signal handler and the control socket.
pub struct Reloader {
    state: Arc<ServerState>,
    source: Option<PathBuf>,
    load: ConfigLoader,
    running: tokio::sync::Mutex<()>,
}

/// What a successful reload did.
#[derive(Debug)]
pub struct Reloaded {
    /// The file read, if any (without one, built-in defaults were applied again).
    pub source: Option<PathBuf>,
    /// Keys whose new value waits for a restart.
    pub restart_needed: Vec<&'static str>,
    /// The new certificate's fingerprint, when it changed.
    pub new_fingerprint: Option<Fingerprint>,
}

impl Reloaded {
    /// One line for the admin who asked.
    pub fn summary(&self) -> String {
        let mut line = match &self.source {
            Some(p) => format!("reloaded {}", p.display()),
            None => "reloaded the built-in defaults (no config file)".to_owned(),
        };
        if let Some(fp) = &self.new_fingerprint {
            line.push_str(&format!("; new connections get certificate {fp}"));
        }
        if !self.restart_needed.is_empty() {
            line.push_str(&format!(
                "; changed but applied only after a restart: {}",
                self.restart_needed.join(", ")
            ));
        }
        line
    }
}

impl Reloader {
    /// A reloader for `state`; `source` names the file `load` reads, for messages.
    pub fn new(state: Arc<ServerState>, source: Option<PathBuf>, load: ConfigLoader) -> Reloader {
        Reloader {
            state,
            source,
            load,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Reloads and logs the outcome; `trigger` says who asked (`SIGHUP`, `control`).
    ///
    /// # Errors
    /// The one line that was logged, naming the file or key at fault; the running
    /// configuration stays in force.
    pub async fn reload(&self, trigger: &'static str) -> Result<Reloaded, String> {
        let _one_at_a_time = self.running.lock().await;
        notify_reloading();
        let load = self.load.clone();
        let loaded = tokio::task::spawn_blocking(move || load())
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        let result = loaded.and_then(|config| apply(&self.state, config, self.source.clone()));
        // READY=1 either way: the daemon goes on serving, with one configuration or
        // the other.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        match result {
            Ok(reloaded) => {
                info!(
                    trigger,
                    fingerprint = %self.state.fingerprint(),
                    "{}",
                    reloaded.summary()
                );
                Ok(reloaded)
            }
            Err(e) => {
                let line = format!("reload failed, the running configuration stays: {e:#}");
                error!(trigger, "{line}");
                Err(line)
            }
        }
    }
}

/// `RELOADING=1` with the monotonic time systemd needs to match it to the request.
fn notify_reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    let _ = sd_notify::notify(&states);
}

/// Checks `new` against the running configuration, loads its certificate and key, then
/// installs it. Nothing changes unless every check passed.
///
/// # Errors
/// The certificate or key cannot be loaded.
pub fn apply(
    state: &ServerState,
    mut new: Config,
    source: Option<PathBuf>,
) -> anyhow::Result<Reloaded> {
    let old = state.config();
    let restart_needed = keep_fixed(&old, &mut new);
    let (cert, key) = (new.cert_path(), new.key_path());
    let tls = load_tls(&cert, &key).with_context(|| {
        format!(
            "loading [tls] cert `{}` and key `{}`",
            cert.display(),
            key.display()
        )
    })?;
    let new_fingerprint = (tls.1 != state.fingerprint()).then_some(tls.1);
    state.storage.reconfigure(new.storage.clone());
    state.throttle.reconfigure(new.throttle());
    if let Some(shared) = &state.shared_throttle {
        shared.reconfigure(new.throttle());
    }
    state.chat.reconfigure(&new.chat);
    state
        .sessions
        .set_ttl(Duration::from_secs(new.login.session_ttl_secs));
    state.set_tls(tls);
    state
        .admission
        .set_max_connections(new.limits.max_connections);
    state.set_config(new);
    if !restart_needed.is_empty() {
        warn!(
            "config keys {} changed but keep their running values until a restart",
            restart_needed.join(", ")
        );
    }
    Ok(Reloaded {
        source,
        restart_needed,
        new_fingerprint,
    })
}

/// Gives `new` the running values of what cannot change live; returns the keys whose
/// values differed. `data_dir` goes first, so paths under it compare as resolved.
fn keep_fixed(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.data_dir != old.data_dir {
        changed.push("data_dir");
        new.data_dir = old.data_dir.clone();
    }
    if new.listen != old.listen {
        changed.push("listen");
        new.listen = old.listen.clone();
    }
    if new.password_file() != old.password_file() {
        changed.push("password_file");
        new.password_file = old.password_file.clone();
    }
    if new.control_socket_path() != old.control_socket_path() {
        changed.push("control_socket");
        new.control_socket = old.control_socket.clone();
    }
    if new.login.max_concurrent_hashes != old.login.max_concurrent_hashes {
        changed.push("login.max_concurrent_hashes");
        new.login.max_concurrent_hashes = old.login.max_concurrent_hashes;
    }
    // The metrics listener is bound once at start: a new address (or a withdrawn
    // `allow_remote`) would look applied while the old listener kept serving.
    if new.metrics != old.metrics {
        changed.push("metrics");
        new.metrics = old.metrics.clone();
    }
    // The storage backend is opened once: files do not move between backends on a
    // reload (`xferd migrate` moves them).
    if new.storage.backend != old.storage.backend || new.storage.s3 != old.storage.s3 {
        changed.push("storage.backend");
        new.storage.backend = old.storage.backend;
        new.storage.s3 = old.storage.s3.clone();
    }
    // A generated certificate is made once; new names need a new certificate.
    if old.tls_is_generated() && new.tls.names != old.tls.names {
        changed.push("tls.names");
        new.tls.names = old.tls.names.clone();
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_keys_keep_running_values_and_are_named() {
        let old = Config {
            data_dir: "/srv/a".into(),
            ..Config::default()
        };
        let mut new = Config {
            data_dir: "/srv/b".into(),
            listen: "127.0.0.1:9".into(),
            ..Config::default()
        };
        new.storage.quota_bytes = 5;
        let changed = keep_fixed(&old, &mut new);
        assert_eq!(changed, ["data_dir", "listen"]);
        assert_eq!(new.data_dir, old.data_dir);
        assert_eq!(new.listen, old.listen);
        assert_eq!(
            new.storage.quota_bytes, 5,
            "live keys keep their new values"
        );
        let mut same = old.clone();
        assert!(keep_fixed(&old, &mut same).is_empty());
    }
}
