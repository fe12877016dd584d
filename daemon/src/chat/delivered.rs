//! Per-user delivery markers: the largest id of a direct message or file notice to the
//! user that was written and flushed to one of their chat connections (never past one
//! that connection's queue dropped), or that the client acknowledged with
//! `ChatOpen { after }`. `ChatOpen` without `after` replays what lies above it, so
//! messages sent while a user was offline arrive. A marker tells what reached a
//! socket, not what a client showed: a client killed before printing a flushed
//! message only gets it back by opening with `after`.
//!
//! Markers live in memory and are saved to `<data_dir>/chat/delivered.json` (atomic
//! rewrite) about once a second when changed, and at shutdown. After a crash a marker
//! may be up to a second behind: a message can then be replayed a second time.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::warn;

/// The markers. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Delivered {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    markers: Mutex<BTreeMap<String, u64>>,
    dirty: AtomicBool,
    /// Serialises saves, so an older snapshot never replaces a newer one.
    saving: Mutex<()>,
}

impl Delivered {
    /// Reads the markers saved at `path` (none if it does not exist; an unreadable file
    /// is reported and treated as empty: replaying twice beats losing messages).
    ///
    /// # Errors
    /// When the file exists but cannot be read at all.
    pub fn open(path: &Path) -> io::Result<Delivered> {
        let markers = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(file = %path.display(), error = %e, "chat delivery markers unreadable; direct messages may be replayed again");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Delivered {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                markers: Mutex::new(markers),
                dirty: AtomicBool::new(false),
                saving: Mutex::new(()),
            }),
        })
    }

    fn markers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.inner.markers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user's marker (0 if nothing was ever delivered).
    pub fn get(&self, user: &str) -> u64 {
        self.markers().get(user).copied().unwrap_or(0)
    }

    /// Raises the user's marker to `id` (never lowers it).
    pub fn advance(&self, user: &str, id: u64) {
        let mut markers = self.markers();
        let m = markers.entry(user.to_owned()).or_insert(0);
        if id > *m {
            *m = id;
            self.inner.dirty.store(true, Ordering::Release);
        }
    }

    /// Whether a marker changed since the last save.
    pub fn is_dirty(&self) -> bool {
        self.inner.dirty.load(Ordering::Acquire)
    }

    /// Writes the markers if they changed since the last save. Blocking.
    ///
    /// # Errors
    /// When the file cannot be written (the markers stay dirty for the next try).
    pub fn save(&self) -> io::Result<()> {
        let _saving = self.inner.saving.lock().unwrap_or_else(|p| p.into_inner());
        if !self.inner.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let json = serde_json::to_vec(&*self.markers()).expect("a map of numbers serialises");
        let result = super::history::write_atomic(&self.inner.path, &json);
        if result.is_err() {
            self.inner.dirty.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_only_rise_and_survive_a_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("delivered.json");
        let d = Delivered::open(&path).unwrap();
        assert_eq!(d.get("bob"), 0);
        d.advance("bob", 7);
        d.advance("bob", 3);
        assert_eq!(d.get("bob"), 7);
        d.save().unwrap();
        let d = Delivered::open(&path).unwrap();
        assert_eq!(d.get("bob"), 7);
        assert_eq!(d.get("alice"), 0);
    }

    #[test]
    fn a_damaged_file_means_replay_not_refusal() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("delivered.json");
        std::fs::write(&path, b"{\"bob\": 7").unwrap();
        let d = Delivered::open(&path).unwrap();
        assert_eq!(d.get("bob"), 0);
    }
}
