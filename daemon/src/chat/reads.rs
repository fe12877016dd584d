//! Read positions: per user and conversation (`#lab`, `@bob`), the largest message id
//! the user has read, as their client marks it (`MarkRead`). They live on the server,
//! so the "new since you left" marker and `Catchup` follow the user from machine to
//! machine.
//!
//! [`ReadPositions`] is the boundary, next to [`ChatBus`](super::ChatBus): one daemon
//! keeps the positions in [`ReadFile`] (`<data_dir>/chat/read.json`); a bus for several
//! daemons keeps them in its key-value bucket instead (`read.<user>`, one key per
//! conversation, values only rising), answering reads from its local replica.
//!
//! A mark is durable when `MarkRead` is answered: the file is rewritten atomically
//! (temporary, fsync, rename, directory fsync) before the `Ok`. Clients mark at most
//! every few seconds, so one small file for all users costs little.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::warn;
use xfer_proto::Target;

/// Where read positions are kept (see the module doc).
pub trait ReadPositions: Send + Sync + 'static {
    /// The user's positions, by conversation.
    fn positions(&self, user: &str) -> BTreeMap<Target, u64>;
    /// Raises the user's position in `target` to `id` (never lowers it); true if it
    /// moved.
    fn mark(&self, user: &str, target: &Target, id: u64) -> bool;
    /// Makes the marks so far durable. Blocking.
    ///
    /// # Errors
    /// When they cannot be written (they stay to be written next time).
    fn persist(&self) -> io::Result<()>;
}

/// User → conversation (`#lab`, `@bob`) → position, as saved.
type Saved = BTreeMap<String, BTreeMap<String, u64>>;

/// User → conversation → position, in memory, and whether it changed since the last
/// save.
type Positions = (BTreeMap<String, BTreeMap<Target, u64>>, bool);

/// Read positions in one JSON file.
#[derive(Debug)]
pub struct ReadFile {
    path: PathBuf,
    /// The positions and whether they changed since the last save. Held while saving,
    /// so an older snapshot never replaces a newer one.
    state: Mutex<Positions>,
}

impl ReadFile {
    /// Reads the positions saved at `path` (none if it does not exist). A damaged file
    /// is reported and treated as empty: everything then counts as unread, nothing is
    /// lost. Entries naming no valid conversation are skipped.
    ///
    /// # Errors
    /// When the file exists but cannot be read at all.
    pub fn open(path: &Path) -> io::Result<ReadFile> {
        let saved: Saved = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(file = %path.display(), error = %e, "chat read positions unreadable; everything counts as unread");
                Saved::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Saved::new(),
            Err(e) => return Err(e),
        };
        let positions = saved
            .into_iter()
            .map(|(user, convs)| {
                let convs = convs
                    .into_iter()
                    .filter_map(|(t, id)| Target::parse(&t).ok().map(|t| (t, id)))
                    .collect();
                (user, convs)
            })
            .collect();
        Ok(ReadFile {
            path: path.to_owned(),
            state: Mutex::new((positions, false)),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReadPositions for ReadFile {
    fn positions(&self, user: &str) -> BTreeMap<Target, u64> {
        self.state().0.get(user).cloned().unwrap_or_default()
    }

    fn mark(&self, user: &str, target: &Target, id: u64) -> bool {
        let mut state = self.state();
        let convs = state.0.entry(user.to_owned()).or_default();
        if convs.get(target).is_some_and(|&p| p >= id) {
            return false;
        }
        convs.insert(target.clone(), id);
        state.1 = true;
        true
    }

    fn persist(&self) -> io::Result<()> {
        let mut state = self.state();
        if !state.1 {
            return Ok(());
        }
        let saved: Saved = state
            .0
            .iter()
            .map(|(user, convs)| {
                let convs = convs.iter().map(|(t, id)| (t.to_string(), *id)).collect();
                (user.clone(), convs)
            })
            .collect();
        let json = serde_json::to_vec(&saved).expect("a map of numbers serialises");
        super::history::write_atomic(&self.path, &json)?;
        state.1 = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn positions_only_rise_and_survive_a_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("read.json");
        let r = ReadFile::open(&path).unwrap();
        assert!(r.positions("alice").is_empty());
        assert!(r.mark("alice", &t("#lab"), 7));
        assert!(!r.mark("alice", &t("#lab"), 3), "never lowered");
        assert!(
            r.mark("alice", &t("@bob"), 0),
            "a first position of 0 is one"
        );
        r.persist().unwrap();
        let r = ReadFile::open(&path).unwrap();
        let alice = r.positions("alice");
        assert_eq!(alice.get(&t("#lab")), Some(&7));
        assert_eq!(alice.get(&t("@bob")), Some(&0));
        assert!(r.positions("bob").is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_file_means_everything_unread_not_refusal() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("read.json");
        std::fs::write(&path, b"{\"alice\": {\"#lab\": 7").unwrap();
        assert!(ReadFile::open(&path).unwrap().positions("alice").is_empty());
        std::fs::write(&path, br##"{"alice": {"#lab": 7, "no sigil": 3}}"##).unwrap();
        let alice = ReadFile::open(&path).unwrap().positions("alice");
        assert_eq!(alice.len(), 1, "{alice:?}");
    }
}
