//! `USER@HOST[:PORT]` targets and the `host:port` key servers are known by.
//!
//! The key is the same everywhere (known hosts, saved logins, messages): host lowercased,
//! IPv6 addresses in canonical form inside brackets, port always explicit.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::error::UsageError;

/// A server address: host (without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Lowercased DNS name, IPv4 address, or canonical IPv6 address without brackets.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl ServerAddr {
    /// Parses `HOST[:PORT]`, `[IPV6][:PORT]`; the port defaults to [`xfer_proto::DEFAULT_PORT`].
    pub fn parse(s: &str) -> Result<Self, UsageError> {
        let bad = |why: &str| UsageError(format!("invalid server `{s}`: {why}"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing `]` after IPv6 address"))?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| bad("not an IPv6 address inside `[...]`"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected `:PORT` after `]`"))?,
                ),
            };
            (ip.to_string(), port)
        } else {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            if port.is_some_and(|p| p.contains(':')) {
                return Err(bad("write IPv6 addresses in brackets, e.g. `[::1]:7443`"));
            }
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if !host.chars().all(valid) {
                return Err(bad(
                    "host may contain only letters, digits, `.`, `-` and `_`",
                ));
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => xfer_proto::DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("port must be a number from 1 to 65535")),
                Ok(n) => n,
            },
        };
        Ok(ServerAddr { host, port })
    }

    /// The key this server is known by: `host:port`, or `[v6]:port`.
    pub fn host_port(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `USER@HOST[:PORT]`: who logs in where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Account name as typed.
    pub user: String,
    /// The server.
    pub server: ServerAddr,
}

impl Target {
    /// The key a saved login is stored under: `user@host:port`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.user, self.server)
    }
}

impl Target {
    /// Parses `[USER@]HOST[:PORT]`: without `USER@`, the user is `default_user` (the
    /// local account name, as ssh does).
    ///
    /// # Errors
    /// [`UsageError`] for a bad target, or no user at all.
    pub fn with_default_user(s: &str, default_user: Option<&str>) -> Result<Self, UsageError> {
        if s.contains('@') {
            return s.parse();
        }
        match default_user {
            Some(user) => format!("{user}@{s}").parse(),
            None => Err(UsageError(format!(
                "no user name in `{}` and $USER is not set; write USER@HOST",
                crate::output::escape_control(s)
            ))),
        }
    }
}

impl FromStr for Target {
    type Err = UsageError;

    fn from_str(s: &str) -> Result<Self, UsageError> {
        let (user, server) = s.split_once('@').ok_or_else(|| {
            UsageError(format!("invalid target `{s}`: expected USER@HOST[:PORT]"))
        })?;
        if user.is_empty() {
            return Err(UsageError(format!("invalid target `{s}`: empty user name")));
        }
        // The one account-name rule (the server's): a name it could never accept is
        // refused here, before a password is asked for.
        if !xfer_proto::valid_user_name(user) {
            return Err(UsageError(format!(
                "invalid target `{}`: `{}` is not a user name; use 1 to 32 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit",
                crate::output::escape_control(s),
                crate::output::escape_control(user)
            )));
        }
        Ok(Target {
            user: user.to_string(),
            server: ServerAddr::parse(server)?,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_targets_parse() {
        let table = [
            ("alice@host", "alice", "host", 7443, "alice@host:7443"),
            (
                "alice@Host.LAN:7000",
                "alice",
                "host.lan",
                7000,
                "alice@host.lan:7000",
            ),
            ("alice@[::1]:7000", "alice", "::1", 7000, "alice@[::1]:7000"),
            ("alice@[0:0::1]", "alice", "::1", 7443, "alice@[::1]:7443"),
            ("bob@10.0.0.2:1", "bob", "10.0.0.2", 1, "bob@10.0.0.2:1"),
        ];
        for (input, user, host, port, key) in table {
            let t: Target = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(t.user, user, "{input}");
            assert_eq!(t.server.host, host, "{input}");
            assert_eq!(t.server.port, port, "{input}");
            assert_eq!(t.key(), key, "{input}");
        }
    }

    #[test]
    fn the_user_defaults_to_the_local_account() {
        let t = Target::with_default_user("nas.lan", Some("carol")).unwrap();
        assert_eq!(t.key(), "carol@nas.lan:7443");
        let t = Target::with_default_user("bob@nas.lan:1", Some("carol")).unwrap();
        assert_eq!(t.key(), "bob@nas.lan:1");
        let e = Target::with_default_user("nas.lan", None).unwrap_err();
        assert!(e.to_string().contains("USER@HOST"), "{e}");
    }

    #[test]
    fn bad_targets_are_refused_with_one_line() {
        let table = [
            "host",
            "@host",
            "alice@",
            "alice@:7000",
            "alice@host:0",
            "alice@host:70000",
            "alice@host:",
            "alice@host:x",
            "alice@::1",
            "alice@[::1",
            "alice@[nothost]:1",
            "alice@[::1]7000",
            "alice@ho st",
            "alice@a@b",
            "al ice@host",
            "jöhn@host",
            "-alice@host",
            "alice/bob@host",
        ];
        for input in table {
            let err = input.parse::<Target>().expect_err(input).to_string();
            assert!(err.starts_with("invalid "), "{input}: {err}");
            assert!(!err.contains('\n'), "{input}: {err}");
        }
    }
}
