//! `xferd user del` keeps a deleted user's data: their home (files, uploads in
//! progress, manifests) and their direct-message logs move into
//! `<data_dir>/archive/<name>-<unix time>/` (`home/` and `direct/`, directories 0700),
//! so a later `user add` of the same name starts empty instead of inheriting them.
//! Nothing is ever deleted; the admin decides what to do with an archive.
//!
//! Every move is a `rename` within the data directory, so each piece is either still in
//! place or archived whole. A running daemon notices the moved logs on its next read of
//! them and forgets those conversations.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::Config;
use crate::accounts::UserName;

/// What was archived, for the command's report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Archived {
    /// The archive directory, when anything was moved into it.
    pub dir: Option<PathBuf>,
    /// Whether the user's home was moved.
    pub home: bool,
    /// Direct-message logs moved (file names, e.g. `alice+bob.log`).
    pub direct_logs: Vec<String>,
}

impl Archived {
    /// One line for people: what went where.
    pub fn summary(&self, user: &str) -> String {
        let Some(dir) = &self.dir else {
            return format!("{user} had no home or direct-message logs to archive");
        };
        let mut parts = Vec::new();
        if self.home {
            parts.push(format!("{user}'s home"));
        }
        if !self.direct_logs.is_empty() {
            let n = self.direct_logs.len();
            let s = if n == 1 { "" } else { "s" };
            parts.push(format!("{n} direct-message log{s}"));
        }
        format!(
            "archived {} to {} (nothing was deleted)",
            parts.join(" and "),
            dir.display()
        )
    }
}

/// Moves `user`'s home and direct-message logs into a new archive directory.
///
/// # Errors
/// When a directory cannot be made or a move fails; what was moved before stays moved
/// (and is named in the error), nothing is removed.
pub fn archive_user(config: &Config, user: &str) -> anyhow::Result<Archived> {
    // Only a valid name can become a path here (never `..` or `a/b`).
    let user = user.parse::<UserName>()?;
    let user = user.as_str();
    let home = config.users_dir().join(user);
    let direct = config.chat_dir().join("direct");
    let logs =
        direct_logs_of(&direct, user).with_context(|| format!("listing `{}`", direct.display()))?;
    let mut done = Archived::default();
    if !home.exists() && logs.is_empty() {
        return Ok(done);
    }
    let dir = new_archive_dir(&config.data_dir.join("archive"), user)?;
    done.dir = Some(dir.clone());
    if home.exists() {
        let to = dir.join("home");
        std::fs::rename(&home, &to)
            .with_context(|| format!("moving `{}` to `{}`", home.display(), to.display()))?;
        done.home = true;
    }
    if !logs.is_empty() {
        let to_dir = dir.join("direct");
        make_dir(&to_dir)?;
        for name in logs {
            let (from, to) = (direct.join(&name), to_dir.join(&name));
            std::fs::rename(&from, &to).with_context(|| {
                format!(
                    "moving `{}` to `{}` ({} archived so far)",
                    from.display(),
                    to.display(),
                    done.summary(user)
                )
            })?;
            done.direct_logs.push(name);
        }
    }
    Ok(done)
}

/// The logs of direct conversations `user` takes part in: `user+b.log`, `a+user.log`.
fn direct_logs_of(direct: &Path, user: &str) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(direct) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((a, b)) = name.strip_suffix(".log").and_then(|s| s.split_once('+')) else {
            continue;
        };
        if a == user || b == user {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `archive/<user>-<unix time>` (with `-2`, `-3`… if deleted twice in one second),
/// created 0700 along with `archive/`.
fn new_archive_dir(root: &Path, user: &str) -> anyhow::Result<PathBuf> {
    make_dir(root)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for n in 1u32.. {
        let name = if n == 1 {
            format!("{user}-{now}")
        } else {
            format!("{user}-{now}-{n}")
        };
        let dir = root.join(name);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating `{}`", dir.display())),
        }
    }
    unreachable!("some suffix is free")
}

fn make_dir(dir: &Path) -> anyhow::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating `{}`", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn home_and_direct_logs_move_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: tmp.path().to_path_buf(),
            ..Config::default()
        };
        let home = config.users_dir().join("bob/files");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("a.txt"), "old bob").unwrap();
        let direct = config.chat_dir().join("direct");
        std::fs::create_dir_all(&direct).unwrap();
        for log in [
            "alice+bob.log",
            "bob+carol.log",
            "alice+bobby.log",
            "bo+bob2.log",
        ] {
            std::fs::write(direct.join(log), "{}\n").unwrap();
        }
        let done = archive_user(&config, "bob").unwrap();
        let dir = done.dir.clone().unwrap();
        assert!(done.home);
        assert_eq!(done.direct_logs, ["alice+bob.log", "bob+carol.log"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("home/files/a.txt")).unwrap(),
            "old bob"
        );
        assert!(dir.join("direct/alice+bob.log").is_file());
        assert!(!config.users_dir().join("bob").exists());
        assert!(direct.join("alice+bobby.log").is_file() && direct.join("bo+bob2.log").is_file());
        for d in [dir.parent().unwrap(), &dir, &dir.join("direct")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        assert!(
            done.summary("bob")
                .starts_with("archived bob's home and 2 direct-message logs to ")
        );

        // Again in the same second: a second archive, nothing overwritten.
        std::fs::create_dir_all(config.users_dir().join("bob")).unwrap();
        let again = archive_user(&config, "bob").unwrap();
        assert_ne!(again.dir, done.dir);
        assert!(again.home && again.direct_logs.is_empty());
        // Nothing left: nothing made.
        assert_eq!(archive_user(&config, "bob").unwrap(), Archived::default());
    }
}
