//! `[metrics]`: where (and whether) the Prometheus endpoint listens.
//!
//! Off by default. The endpoint is plain HTTP without authentication, so a
//! non-loopback address is refused unless `allow_remote` says the admin means it:
//! counters reveal activity (how busy, and when), not names or content, but that is
//! still not for every host on the LAN.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[metrics]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address and port of the HTTP listener serving `GET /metrics`; empty = off.
    pub listen: String,
    /// Allow a `listen` address other than loopback (127.0.0.0/8, ::1).
    pub allow_remote: bool,
}

impl MetricsConfig {
    /// The listen address, or `None` when metrics are off.
    ///
    /// # Errors
    /// Names `metrics.listen` when it is not an address and port, or is not loopback
    /// while `metrics.allow_remote` is false.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "metrics.listen",
            message: format!(
                "{:?} must be an address and port such as 127.0.0.1:9464, or empty to turn metrics off",
                self.listen
            ),
        })?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(ConfigError::Invalid {
                key: "metrics.listen",
                message: format!(
                    "{addr} is not a loopback address, and metrics are served without TLS or \
                     authentication; use 127.0.0.1, or set metrics.allow_remote = true"
                ),
            });
        }
        Ok(Some(addr))
    }

    /// Checks `listen` (see [`MetricsConfig::listen_addr`]).
    ///
    /// # Errors
    /// As [`MetricsConfig::listen_addr`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str, allow_remote: bool) -> MetricsConfig {
        MetricsConfig {
            listen: listen.into(),
            allow_remote,
        }
    }

    #[test]
    fn off_by_default_and_when_empty() {
        assert_eq!(MetricsConfig::default().listen_addr().unwrap(), None);
        assert_eq!(cfg("  ", false).listen_addr().unwrap(), None);
    }

    #[test]
    fn loopback_is_accepted_and_port_zero_too() {
        let a = cfg("127.0.0.1:9464", false).listen_addr().unwrap().unwrap();
        assert_eq!(a.port(), 9464);
        assert!(cfg("[::1]:0", false).listen_addr().unwrap().is_some());
    }

    #[test]
    fn remote_needs_allow_remote_and_errors_name_the_key() {
        let err = cfg("0.0.0.0:9464", false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.listen"), "{err}");
        assert!(err.contains("metrics.allow_remote"), "{err}");
        cfg("0.0.0.0:9464", true).validate().unwrap();
        let err = cfg("localhost:9464", false)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.listen"), "{err}");
        assert!(err.contains("127.0.0.1:9464"), "{err}");
    }
}
