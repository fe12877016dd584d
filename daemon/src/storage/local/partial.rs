//! Partial uploads on disk, outside the visible home.
//!
//! An upload to `dest` keeps two files in the user's `partials/` directory, named by the
//! hex BLAKE3 of the normalized destination path:
//!
//! - `<key>.part`: the data, written at chunk offsets (sparse until complete);
//! - `<key>.meta`: JSON resume state: destination, size, chunk size, times, and the
//!   digest of every chunk that was verified and written.
//!
//! Listings show the saved state, so what `ls` reports as received survives a crash of
//! the daemon. Partials abandoned past their time to live are removed by [`expire`].

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use xfer_proto::{Entry, EntryKind};

use super::index::PartialInfo;
use super::private;
use super::seal::Seal;
use crate::storage::{StorageError, chunk_len, io_err};

/// File names of a partial upload.
pub(crate) fn part_name(key: &str) -> String {
    format!("{key}.part")
}

pub(crate) fn meta_name(key: &str) -> String {
    format!("{key}.meta")
}

/// The `.meta` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartialMeta {
    /// [`DIGEST_SCHEME`](super::manifest::DIGEST_SCHEME) of `chunks`.
    #[serde(default)]
    pub digests: u32,
    /// Destination, normalized.
    pub path: String,
    pub size: u64,
    pub chunk_size: u64,
    pub created_unix: u64,
    pub expires_unix: u64,
    /// `(index, hex digest)` of every verified chunk.
    pub chunks: Vec<(u64, String)>,
    /// The data file as synced when a connection closed the upload, if nothing else
    /// wrote it; a resume that finds it unchanged trusts the recorded chunks without
    /// reading them back (`seal.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Seal>,
}

impl PartialMeta {
    /// The state of partial `key`, if there is a live one.
    ///
    /// State whose data file is gone describes nothing: the commit's rename moved the
    /// data into place and the daemon died (or the unlink failed) before the state was
    /// removed, or a removal stopped halfway. Such state is removed here, on every
    /// access (listing, usage, `PutBegin`, the sweep at start), instead of being listed
    /// as a partial beside the committed file and counted twice.
    pub fn load(partials: &Dir, key: &str) -> Option<PartialMeta> {
        let bytes = partials.read(meta_name(key)).ok()?;
        let meta: PartialMeta = serde_json::from_slice(&bytes).ok()?;
        match partials.symlink_metadata(part_name(key)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match partials.remove_file(meta_name(key)) {
                    Ok(()) => {
                        info!(path = ?meta.path, "removed the state of an upload whose data is gone (committed before a crash)")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        warn!(path = ?meta.path, error = %e, "removing the state of a committed upload failed")
                    }
                }
                None
            }
            _ => Some(meta),
        }
    }

    pub fn store(&self, partials: &Dir, key: &str) -> Result<(), StorageError> {
        let json = serde_json::to_vec(self).expect("partial meta always serialises");
        let tmp = format!("{}.tmp", meta_name(key));
        let saved = private::write_synced(partials, &tmp, &json)
            .and_then(|()| partials.rename(&tmp, partials, meta_name(key)));
        if saved.is_err() {
            // A temporary cut short by a full disk would hold on to the space it got.
            let _ = partials.remove_file(&tmp);
        }
        saved.map_err(io_err("saving upload state"))
    }

    /// Bytes recorded as received and verified.
    pub fn received(&self) -> u64 {
        self.chunks
            .iter()
            .map(|(i, _)| chunk_len(self.size, *i))
            .sum()
    }
}

/// Moves partial `key` (whose state is `meta`) to destination `to`: the state under the
/// new key first, then the data, then the old state, so that a crash in between leaves
/// either the old partial whole or state without data (cleaned as a ghost). Returns the
/// new key and state.
pub(crate) fn rekey(
    partials: &Dir,
    key: &str,
    mut meta: PartialMeta,
    to: &crate::storage::RelPath,
) -> Result<(String, PartialMeta), StorageError> {
    let new_key = to.key();
    // Never over another upload (the move checked; this holds if that check missed).
    if partials.exists(meta_name(&new_key)) || partials.exists(part_name(&new_key)) {
        return Err(StorageError::Conflict(format!(
            "an upload in progress to `{}` is in the way",
            to.as_str()
        )));
    }
    meta.path = to.as_str().to_owned();
    meta.store(partials, &new_key)?;
    if let Err(e) = partials.rename(part_name(key), partials, part_name(&new_key)) {
        let _ = partials.remove_file(meta_name(&new_key));
        return Err(StorageError::io("moving an upload in progress", e));
    }
    let _ = partials.remove_file(meta_name(key));
    Ok((new_key, meta))
}

/// Removes a partial's files (best effort for the data).
pub(crate) fn remove_partial(partials: &Dir, key: &str) -> Result<(), StorageError> {
    let _ = partials.remove_file(part_name(key));
    match partials.remove_file(meta_name(key)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io("removing an upload", e))
        }
        _ => Ok(()),
    }
}

/// Removes state whose data is gone (see [`PartialMeta::load`]) by the names in
/// `partials` alone, reading no `.meta`: cheap enough for every `PutBegin` and listing,
/// as the partials of a user are bounded (`max_partials_per_user`). Returns their keys.
pub(crate) fn clean_ghosts(partials: &Dir) -> Vec<String> {
    let Ok(entries) = partials.entries() else {
        return Vec::new();
    };
    let names: std::collections::HashSet<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let ghosts: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".meta"))
        .filter(|k| !names.contains(&part_name(k)))
        .map(str::to_owned)
        .collect();
    for key in &ghosts {
        // Loading recognises it (data gone) and removes it, logging why.
        PartialMeta::load(partials, key);
    }
    ghosts
}

/// Every partial's meta in `partials`, by key.
pub(crate) fn metas(partials: &Dir) -> Vec<(String, PartialMeta)> {
    let Ok(entries) = partials.entries() else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let key = name.strip_suffix(".meta")?;
            Some((key.to_owned(), PartialMeta::load(partials, key)?))
        })
        .collect()
}

/// A partial as listed: `received` is what its saved state records (and would
/// survive a crash), at most about a second behind the live upload.
pub(crate) fn entry(info: &PartialInfo, name: &str) -> Entry {
    Entry {
        name: name.to_owned(),
        kind: EntryKind::Partial,
        size: info.size,
        modified_unix: info.created_unix,
        digest: None,
        received: Some(info.received),
        expires_unix: Some(info.expires_unix),
    }
}

/// Removes the expired partials in `partials` that no connection has open (`is_live`,
/// by key), and data without state (a crash between the two) or stray temporaries older
/// than `ttl`; returns the keys of the partials removed.
pub(crate) fn expire(
    user: &str,
    partials: &Dir,
    now: u64,
    ttl: std::time::Duration,
    is_live: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut removed = Vec::new();
    for (key, meta) in metas(partials) {
        if meta.expires_unix <= now && !is_live(&key) {
            match remove_partial(partials, &key) {
                Ok(()) => {
                    info!(user, path = ?meta.path, "removed an abandoned partial upload");
                    removed.push(key);
                }
                Err(e) => warn!(user, error = %e, "removing an expired partial failed"),
            }
        }
    }
    if let Ok(entries) = partials.entries() {
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let orphan = name.ends_with(".tmp")
                || name
                    .strip_suffix(".part")
                    .is_some_and(|k| !partials.exists(meta_name(k)) && !is_live(k));
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.into_std().elapsed().ok())
                .is_some_and(|age| age >= ttl);
            if orphan && old {
                let _ = partials.remove_file(&name);
            }
        }
    }
    removed
}
