//! `[cluster]`: the NATS server(s) several daemons share, and how to reach them.
//!
//! Off by default: with no `nats` URL the daemon keeps sessions, the login throttle and
//! chat to itself, with no network dependency. With one, sessions and the login
//! throttle live in JetStream key-value buckets on it; `[chat] bus = "nats"` moves chat
//! there too (see `cluster/` and README "Several daemons on one NATS").
//!
//! Credentials are read from files, never written in the config: a password or token
//! file (its first line), or a NATS `.creds` file. Relative paths resolve against
//! `data_dir`, like `password_file`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[cluster]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`, `tls://host:port`); one string or a list.
    /// Empty = no cluster.
    #[serde(deserialize_with = "one_or_many")]
    pub nats: Vec<String>,
    /// NATS user name; its password is the first line of `password_file`.
    pub user: Option<String>,
    /// File holding the NATS password of `user`.
    pub password_file: Option<PathBuf>,
    /// File holding a NATS authentication token.
    pub token_file: Option<PathBuf>,
    /// NATS credentials file (`.creds`: user JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// PEM CA certificate(s) to verify the NATS server's TLS certificate with; setting
    /// it turns TLS on for every URL.
    pub ca_file: Option<PathBuf>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) if s.trim().is_empty() => Vec::new(),
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl ClusterConfig {
    /// Whether a NATS server is configured.
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    /// The URLs, comma-separated, for messages.
    pub fn servers(&self) -> String {
        self.nats.join(", ")
    }

    /// `path` resolved against `data_dir` when relative.
    pub fn resolve(data_dir: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            data_dir.join(path)
        }
    }

    /// Checks the URLs and that at most one kind of credentials is given.
    ///
    /// # Errors
    /// Names the `cluster.*` key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        for url in &self.nats {
            let rest = url
                .strip_prefix("nats://")
                .or_else(|| url.strip_prefix("tls://"))
                .unwrap_or(url);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            let ok = rest
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return invalid(
                    "cluster.nats",
                    format!("{url:?} must be a URL such as nats://nats.lan:4222"),
                );
            }
            if url.contains('@') {
                return invalid(
                    "cluster.nats",
                    "must not carry credentials; use cluster.user with cluster.password_file, cluster.token_file or cluster.creds_file".into(),
                );
            }
        }
        let kinds = [
            self.password_file.is_some(),
            self.token_file.is_some(),
            self.creds_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return invalid(
                "cluster.password_file / cluster.token_file / cluster.creds_file",
                "set at most one kind of NATS credentials".into(),
            );
        }
        if self.user.is_some() != self.password_file.is_some() {
            return invalid(
                "cluster.user / cluster.password_file",
                "go together: a NATS user name and the file holding its password".into(),
            );
        }
        if !self.enabled() && (kinds.contains(&true) || self.ca_file.is_some()) {
            return invalid(
                "cluster.nats",
                "must name the NATS server(s) the other cluster keys are for".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClusterConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn one_url_or_a_list() {
        assert_eq!(parse(r#"nats = "nats://a:4222""#).nats, ["nats://a:4222"]);
        let c = parse(r#"nats = ["nats://a:4222", "nats://b:4222"]"#);
        assert_eq!(c.servers(), "nats://a:4222, nats://b:4222");
        assert!(!parse("").enabled());
        assert!(!parse(r#"nats = """#).enabled());
    }

    #[test]
    fn validation_names_the_key() {
        let bad = |t: &str| parse(t).validate().unwrap_err().to_string();
        assert!(bad(r#"nats = "nats://a""#).contains("cluster.nats"));
        assert!(bad(r#"nats = "nats://u:p@a:4222""#).contains("must not carry"));
        assert!(
            bad("nats = \"nats://a:1\"\ntoken_file = \"t\"\ncreds_file = \"c\"")
                .contains("at most one")
        );
        assert!(bad("nats = \"nats://a:1\"\nuser = \"x\"").contains("go together"));
        assert!(bad(r#"ca_file = "ca.pem""#).contains("must name"));
        parse("nats = \"tls://a:1\"\nuser = \"x\"\npassword_file = \"p\"\nca_file = \"ca\"")
            .validate()
            .unwrap();
    }
}
