//! The client's home directory (`--home`, `XFER_HOME`, or the XDG config directory):
//! known hosts, saved logins and, later, transfer state.
//!
//! The directory is created 0700 and `logins.toml` is written atomically with mode 0600
//! because it holds session tokens. This module does not talk to servers.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use xfer_proto::Secret;

use crate::error::AuthError;
use crate::target::{ServerAddr, Target};

const LOGINS_FILE: &str = "logins.toml";
const KNOWN_HOSTS_FILE: &str = "known_hosts";

/// The client's home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// Opens `dir`, or the default XDG config directory, creating it (0700) if missing.
    ///
    /// # Errors
    /// No home directory can be determined, or it cannot be created.
    pub fn open(dir: Option<PathBuf>) -> Result<Self> {
        let dir = match dir {
            Some(d) => d,
            None => directories::ProjectDirs::from("", "", "xfer")
                .context("cannot determine a configuration directory; use --home or XFER_HOME")?
                .config_dir()
                .to_path_buf(),
        };
        create_private_dir(&dir)
            .with_context(|| format!("creating home directory `{}`", dir.display()))?;
        Ok(Home { dir })
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The known hosts file (server fingerprints pinned on first use).
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join(KNOWN_HOSTS_FILE)
    }

    /// The saved logins file.
    pub fn logins_path(&self) -> PathBuf {
        self.dir.join(LOGINS_FILE)
    }

    /// Reads the saved logins; a missing file means none.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load_logins(&self) -> Result<Logins> {
        let path = self.logins_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Logins::default()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading saved logins `{}`", path.display()));
            }
        };
        toml::from_str(&text).with_context(|| format!("parsing saved logins `{}`", path.display()))
    }

    /// Writes the saved logins atomically, mode 0600 (they contain session tokens).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_logins(&self, logins: &Logins) -> Result<()> {
        let path = self.logins_path();
        let text = toml::to_string(logins).context("serialising saved logins")?;
        xfer_certs::pem::write_atomic(&path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing saved logins `{}`", path.display()))
    }

    /// The current login.
    ///
    /// # Errors
    /// [`AuthError`] if there is none; the file cannot be read.
    pub fn current_login(&self) -> Result<SavedLogin> {
        let logins = self.load_logins()?;
        logins
            .current
            .as_deref()
            .and_then(|key| logins.logins.get(key))
            .cloned()
            .ok_or_else(|| AuthError("not logged in; run `xfer login USER@HOST`".into()).into())
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Everything in `logins.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logins {
    /// Key (`user@host:port`) of the login commands use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Saved logins by key.
    #[serde(default)]
    pub logins: BTreeMap<String, SavedLogin>,
}

impl Logins {
    /// Adds or replaces `login` and makes it current; returns the login it replaced.
    pub fn insert_current(&mut self, login: SavedLogin) -> Option<SavedLogin> {
        let key = login.key();
        let replaced = self.logins.insert(key.clone(), login);
        self.current = Some(key);
        replaced
    }

    /// Removes the login under `key`, clearing `current` if it was that one.
    pub fn remove(&mut self, key: &str) -> Option<SavedLogin> {
        if self.current.as_deref() == Some(key) {
            self.current = None;
        }
        self.logins.remove(key)
    }
}

/// One saved login: where, as whom, and the session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedLogin {
    /// Account name.
    pub user: String,
    /// Host as in [`ServerAddr::host`].
    pub host: String,
    /// Port.
    pub port: u16,
    /// Session token.
    pub token: Secret,
    /// When the session expires, seconds since the Unix epoch.
    pub expires_unix: u64,
    /// CA file that verifies the server, instead of a pinned fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl SavedLogin {
    /// The server of this login.
    pub fn server(&self) -> ServerAddr {
        ServerAddr {
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// The target (`user@host:port`) of this login.
    pub fn target(&self) -> Target {
        Target {
            user: self.user.clone(),
            server: self.server(),
        }
    }

    /// The key it is saved under: `user@host:port`.
    pub fn key(&self) -> String {
        self.target().key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str, ca: Option<&str>) -> SavedLogin {
        SavedLogin {
            user: user.into(),
            host: "::1".into(),
            port: 7000,
            token: Secret::new(format!("tok-{user}")),
            expires_unix: 1_777_636_800,
            ca: ca.map(PathBuf::from),
        }
    }

    #[test]
    fn logins_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::open(Some(dir.path().join("home"))).expect("open");
        assert_eq!(
            home.load_logins().expect("missing = empty"),
            Logins::default()
        );
        assert!(home.current_login().is_err());

        let mut logins = Logins::default();
        logins.insert_current(login("bob", Some("/etc/ca.pem")));
        logins.insert_current(login("alice", None));
        home.save_logins(&logins).expect("save");

        let text = fs::read_to_string(home.logins_path()).expect("read");
        assert!(text.contains(r#"current = "alice@[::1]:7000""#), "{text}");
        assert!(text.contains(r#"[logins."alice@[::1]:7000"]"#), "{text}");
        assert_eq!(home.load_logins().expect("load"), logins);
        assert_eq!(home.current_login().expect("current"), login("alice", None));

        logins.remove("alice@[::1]:7000");
        assert_eq!(logins.current, None);
        assert_eq!(logins.logins.len(), 1);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&home.logins_path()), 0o600);
            assert_eq!(mode(home.dir()), 0o700);
        }
    }
}
