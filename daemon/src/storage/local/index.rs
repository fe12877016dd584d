//! What a user stores, kept in memory: bytes of committed files and the partial uploads
//! by key. Computed once per user on first use after the daemon starts (a walk of the
//! home and a read of every `.meta`), then updated by every change the daemon makes
//! (state saves, commits, removals, renames, expiry), so that admission, usage and
//! listings cost nothing per file. Before, each `PutBegin` walked the tree and read
//! every `.meta`, which made `push -r` of many files quadratic.
//!
//! Changes made behind the daemon's back (an admin deleting files) show after a restart.

use std::collections::HashMap;
use std::path::Path;

use cap_std::fs::{Dir, Metadata};

use super::partial::{self, PartialMeta};
use crate::storage::RelPath;

/// A partial upload as listings and usage need it (no chunk digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartialInfo {
    /// Destination, normalized.
    pub path: String,
    pub size: u64,
    pub created_unix: u64,
    pub expires_unix: u64,
    /// Bytes recorded as received in the saved state.
    pub received: u64,
}

impl From<&PartialMeta> for PartialInfo {
    fn from(m: &PartialMeta) -> PartialInfo {
        PartialInfo {
            path: m.path.clone(),
            size: m.size,
            created_unix: m.created_unix,
            expires_unix: m.expires_unix,
            received: m.received(),
        }
    }
}

/// One user's stored bytes and partials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Index {
    /// Bytes of committed files beneath the home.
    pub committed: u64,
    /// Partial uploads by key.
    pub partials: HashMap<String, PartialInfo>,
}

impl Index {
    /// Computes the index from the disk.
    pub fn compute(home: &Dir, partials: &Dir) -> Index {
        Index {
            committed: tree_bytes(home, &RelPath::home()),
            partials: partial::metas(partials)
                .iter()
                .map(|(k, m)| (k.clone(), PartialInfo::from(m)))
                .collect(),
        }
    }

    /// Bytes of committed files plus live partials at their final size, leaving out the
    /// partial `except_key` (the one being admitted again).
    pub fn used_bytes(&self, now: u64, except_key: Option<&str>) -> u64 {
        let partials: u64 = self
            .partials
            .iter()
            .filter(|(k, p)| p.expires_unix > now && Some(k.as_str()) != except_key)
            .map(|(_, p)| p.size)
            .sum();
        self.committed.saturating_add(partials)
    }

    /// Keys of the partials expired at `now`.
    pub fn expired(&self, now: u64) -> Vec<String> {
        self.partials
            .iter()
            .filter(|(_, p)| p.expires_unix <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Keys of the partials whose destination is `dir` or beneath it.
    pub fn partials_under(&self, dir: &RelPath) -> Vec<String> {
        self.partials
            .iter()
            .filter(|(_, p)| RelPath::parse(&p.path).is_ok_and(|d| d.starts_with(dir)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The live partials whose destination is directly in `dir`.
    pub fn partials_in(&self, dir: &RelPath, now: u64) -> Vec<PartialInfo> {
        self.partials
            .values()
            .filter(|p| {
                p.expires_unix > now
                    && RelPath::parse(&p.path).is_ok_and(|d| d.parent().as_ref() == Some(dir))
            })
            .cloned()
            .collect()
    }

    /// A committed file of `added` bytes took the place of one of `removed` bytes.
    pub fn committed_changed(&mut self, added: u64, removed: u64) {
        self.committed = self.committed.saturating_add(added).saturating_sub(removed);
    }
}

/// Bytes of the regular files at and beneath `path` in `home` (symlinks are neither
/// followed nor counted).
pub(crate) fn tree_bytes(home: &Dir, path: &RelPath) -> u64 {
    let mut total = 0u64;
    walk_files(home, path, |_, m| total = total.saturating_add(m.len()));
    total
}

/// Calls `f` with the path (under `home`) and metadata of every regular file at and
/// beneath `path` in `home` (symlinks are neither followed nor reported).
pub(crate) fn walk_files(home: &Dir, path: &RelPath, mut f: impl FnMut(&Path, &Metadata)) {
    match home.symlink_metadata(path.as_path()) {
        Ok(m) if m.is_file() => return f(path.as_path(), &m),
        Ok(m) if m.is_dir() => {}
        _ => return,
    }
    let mut stack = vec![path.as_path().to_owned()];
    while let Some(dir_path) = stack.pop() {
        let Ok(dir) = home.open_dir(&dir_path) else {
            continue;
        };
        let Ok(entries) = dir.entries() else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(dir_path.join(e.file_name()));
            } else if ft.is_file()
                && let Ok(m) = e.metadata()
            {
                f(&dir_path.join(e.file_name()), &m);
            }
        }
    }
}
