//! The namespace of a user's home: listing, mkdir, remove and rename, with the type
//! policy's check of what a rename brings under a rule.

use std::io::Read;

use cap_std::fs::Dir;
use tracing::{debug, warn};
use xfer_proto::{Entry, EntryKind};

use super::index::{tree_bytes, walk_files};
use super::manifest::{self, Manifest, Stamp};
use super::partial::{self, PartialMeta, remove_partial};
use super::private;
use super::release::{Held, MAX_HELD_PER_REMOVE};
use super::space::{Destination, UserSpace};
use super::upload::LiveUploads;
use crate::storage::policy::{MAX_MOVE_CHECK_ENTRIES, STORED_SNIFF_BYTES};
use crate::storage::{ListPage, PathError, RelPath, StorageError, TypePolicy, io_err};

/// The entry for `path` (named `name`), whose metadata is `meta`.
fn file_entry(
    space: &UserSpace,
    path: &RelPath,
    name: &str,
    meta: &cap_std::fs::Metadata,
) -> Entry {
    let stamp = Stamp::of(meta);
    let dir = meta.is_dir();
    Entry {
        name: name.to_owned(),
        kind: if dir { EntryKind::Dir } else { EntryKind::File },
        size: if dir { 0 } else { meta.len() },
        modified_unix: stamp.modified_unix(),
        digest: (!dir).then(|| listed_digest(space, path, stamp)).flatten(),
        received: None,
        expires_unix: None,
    }
}

/// A file's digest as listings show it: from its manifest, or for a small file from its
/// tag or else its data; none for a large file without a current manifest (listings
/// never hash one) or a file changing while it is read.
fn listed_digest(space: &UserSpace, path: &RelPath, stamp: Stamp) -> Option<xfer_proto::Digest> {
    if manifest::is_stored_for(stamp.size) {
        return Manifest::load(&space.manifests, stamp).map(|m| m.digest);
    }
    let file = space.home.open(path.as_path()).ok()?.into_std();
    Manifest::read_tag(&file, stamp)
        .or_else(|| Manifest::of_small(&file, stamp))
        .map(|m| m.digest)
}

/// Sets the modification time of the committed file at `path`; its manifest, keyed by
/// the time, is stored again under the new one so the listing keeps the digest.
pub(crate) fn set_modified(
    space: &UserSpace,
    path: &RelPath,
    modified_unix: u64,
) -> Result<(), StorageError> {
    if path.is_home() {
        return Err(StorageError::BadRequest(
            "the home is not a file; name a file to set its time".into(),
        ));
    }
    let _lock = space.lock_mutations();
    set_modified_locked(space, path, modified_unix)
}

/// [`set_modified`] for a caller that holds the user's mutations lock.
pub(crate) fn set_modified_locked(
    space: &UserSpace,
    path: &RelPath,
    modified_unix: u64,
) -> Result<(), StorageError> {
    let (file, meta) = space.open_file(path)?;
    if !meta.is_file() {
        return Err(StorageError::BadRequest(format!(
            "{} is not a file; only a file's time can be set",
            path.as_str()
        )));
    }
    let before = Stamp::of(&meta);
    let manifest = if manifest::is_stored_for(before.size) {
        Manifest::load(&space.manifests, before)
    } else {
        Manifest::read_tag(&file, before)
    };
    // A time the filesystem cannot hold (beyond i64 seconds) is refused, never a panic.
    let time = i64::try_from(modified_unix)
        .ok()
        .and_then(|_| {
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(modified_unix))
        })
        .ok_or_else(|| {
            StorageError::BadRequest(format!("modification time {modified_unix} is out of range"))
        })?;
    // futimens: the daemon owns the file, so a descriptor opened for reading will do.
    file.set_modified(time)
        .map_err(io_err("setting a modification time"))?;
    let after = Stamp::of(
        &cap_std::fs::Metadata::from_file(&file).map_err(io_err("reading file metadata"))?,
    );
    if let Some(m) = manifest
        && after != before
    {
        if !manifest::is_stored_for(after.size) {
            m.tag(&file, after);
        } else if let Err(e) = m.store(&space.manifests, after) {
            warn!(error = %e, "storing the manifest of a file whose time was set failed");
        }
    }
    Ok(())
}

/// A page of a directory's entries (with partial uploads into it), the first `limit`
/// names after `after`; or one file's entry.
pub(crate) fn list(
    space: &UserSpace,
    path: &RelPath,
    after: Option<&str>,
    limit: usize,
) -> Result<ListPage, StorageError> {
    let now = crate::now_unix();
    let home = &space.home;
    let one = |entry| {
        Ok(ListPage {
            entries: vec![entry],
            more: false,
        })
    };
    let meta = match home.metadata(path.as_path()) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.is_home() => {
            // Perhaps an upload in progress to that name.
            let key = path.key();
            return match PartialMeta::load(&space.partials, &key) {
                Some(m) if m.expires_unix > now && m.path == path.as_str() => {
                    let name = path.file_name().expect("not the home");
                    one(partial::entry(&(&m).into(), name))
                }
                _ => Err(StorageError::NotFound),
            };
        }
        Err(e) => return Err(StorageError::io("reading metadata", e)),
    };
    if !meta.is_dir() {
        let name = path.file_name().expect("the home is a directory");
        return one(file_entry(space, path, name, &meta));
    }
    let wanted = |name: &str| after.is_none_or(|a| name > a);
    // Names first (cheap), then metadata only for the page's names: a page of a huge
    // directory costs its own entries, not the directory's.
    let dir = home
        .open_dir(path.as_path())
        .map_err(io_err("opening a directory"))?;
    let mut names = Vec::new();
    for e in dir.entries().map_err(io_err("reading a directory"))? {
        let e = e.map_err(io_err("reading a directory"))?;
        let Ok(name) = e.file_name().into_string() else {
            continue; // not UTF-8: cannot be named in the protocol
        };
        if wanted(&name) {
            names.push(name);
        }
    }
    let mut uploads = Vec::new();
    let in_dir = {
        let lock = space.lock_mutations();
        space.clean_ghosts();
        space.with_index(&lock, |ix| ix.partials_in(path, now))
    };
    for info in in_dir {
        let Ok(dest) = RelPath::parse(&info.path) else {
            continue;
        };
        let name = dest.file_name().expect("a destination is never the home");
        if wanted(name) {
            uploads.push(partial::entry(&info, name));
        }
    }
    names.sort_unstable();
    uploads.sort_unstable_by(|a, b| b.name.cmp(&a.name)); // popped from the end
    let mut page = ListPage::default();
    let mut names = names.into_iter().peekable();
    loop {
        let next = match (names.peek(), uploads.last()) {
            (Some(n), Some(u)) => n.as_str().min(u.name.as_str()).to_owned(),
            (Some(n), None) => n.clone(),
            (None, Some(u)) => u.name.clone(),
            (None, None) => break,
        };
        // A page never ends between a file and the upload of the same name.
        if page.entries.len() >= limit && page.entries.last().is_some_and(|e| e.name != next) {
            page.more = true;
            break;
        }
        if names.next_if(|n| *n == next).is_some() {
            let Some(child) = path.join(&next) else {
                continue; // reserved or otherwise unnameable
            };
            // Resolved beneath the home: a symlink pointing outside is simply not listed.
            match home.metadata(child.as_path()) {
                Ok(m) if m.is_dir() || m.is_file() => {
                    page.entries.push(file_entry(space, &child, &next, &m));
                }
                Ok(_) => {}
                Err(err) => debug!(error = %err, "skipping an entry that cannot be resolved"),
            }
        }
        while uploads.last().is_some_and(|u| u.name == next) {
            page.entries.extend(uploads.pop());
        }
    }
    Ok(page)
}

/// Creates a directory (and its parents, if asked; then an existing one is fine).
pub(crate) fn mkdir(space: &UserSpace, path: &RelPath, parents: bool) -> Result<(), StorageError> {
    if path.is_home() {
        return if parents {
            Ok(())
        } else {
            Err(StorageError::Conflict("the home directory exists".into()))
        };
    }
    let _lock = space.lock_mutations();
    match private::create_dir(&space.home, path.as_path(), parents) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StorageError::Conflict(
            "something with that name exists".into(),
        )),
        r => r.map_err(io_err("creating a directory")),
    }
}

/// Removes a file or directory of `user`, or (`partial`) the upload in progress to
/// `path`; uploads open on it (or into a removed tree) are stopped.
pub(crate) fn remove(
    space: &UserSpace,
    live: &LiveUploads,
    user: &str,
    path: &RelPath,
    recursive: bool,
    partial: bool,
) -> Result<(), StorageError> {
    if path.is_home() {
        return Err(PathError::Home.into());
    }
    let lock = space.lock_mutations();
    let forget = |key: &str| {
        space.update_index(|ix| {
            ix.partials.remove(key);
        });
    };
    if partial {
        let key = path.key();
        live.supersede(user, &key);
        if PartialMeta::load(&space.partials, &key).is_none() {
            forget(&key);
            return Err(StorageError::NotFound);
        }
        remove_partial(&space.partials, &key)?;
        forget(&key);
        return Ok(());
    }
    let meta = space
        .home
        .symlink_metadata(path.as_path())
        .map_err(io_err("reading metadata"))?;
    if !meta.is_dir() {
        let gone = if meta.is_file() { meta.len() } else { 0 };
        let held = Held::open(&space.home, path.as_path(), &meta);
        space
            .home
            .remove_file(path.as_path())
            .map_err(io_err("removing a file"))?;
        space.update_index(|ix| ix.committed_changed(0, gone));
        Manifest::remove(&space.manifests, Stamp::of(&meta).ino);
        held.release();
        return Ok(());
    }
    if !recursive {
        return space
            .home
            .remove_dir(path.as_path())
            .map_err(io_err("removing a directory"));
    }
    // What the tree holds, and the manifests of its files, which go with them; its
    // first big files are held, to be let go of after the answer (`release.rs`).
    let mut bytes = 0u64;
    let mut manifests = Vec::new();
    let mut held = Vec::new();
    walk_files(&space.home, path, |file, m| {
        bytes = bytes.saturating_add(m.len());
        // Small files too: one committed before they kept none may have one.
        manifests.push(Stamp::of(m).ino);
        if held.len() < MAX_HELD_PER_REMOVE {
            held.extend(Held::open(&space.home, file, m).holding());
        }
    });
    let removed = space.home.remove_dir_all(path.as_path());
    // A manifest is a cache: one removed for a file that stayed is computed again.
    for ino in manifests {
        Manifest::remove(&space.manifests, ino);
    }
    held.into_iter().for_each(Held::release);
    // Whatever part went is no longer stored: count again rather than guess.
    let left = if removed.is_ok() {
        0
    } else {
        tree_bytes(&space.home, path)
    };
    space.update_index(|ix| ix.committed_changed(0, bytes.saturating_sub(left)));
    removed.map_err(io_err("removing a directory"))?;
    // Uploads into the removed tree go with it.
    for key in space.with_index(&lock, |ix| ix.partials_under(path)) {
        live.supersede(user, &key);
        let _ = remove_partial(&space.partials, &key);
        forget(&key);
    }
    Ok(())
}

/// Renames a file or directory of `user`; `force` replaces an existing file. Uploads
/// into a moved directory move with it ([`move_partials`]).
pub(crate) fn rename(
    space: &UserSpace,
    (live, user): (&LiveUploads, &str),
    policy: &TypePolicy,
    (from, to): (&RelPath, &RelPath),
    force: bool,
) -> Result<(), StorageError> {
    if from.is_home() || to.is_home() {
        return Err(PathError::Home.into());
    }
    if to != from && to.starts_with(from) {
        return Err(StorageError::BadRequest(
            "cannot move a directory into itself".into(),
        ));
    }
    let lock = space.lock_mutations();
    let home = &space.home;
    let from_meta = home
        .symlink_metadata(from.as_path())
        .map_err(io_err("reading metadata"))?;
    if from == to {
        return Ok(());
    }
    let mut replaced_bytes = 0;
    let mut held = None;
    let replaced = match space.destination(to, force, false)? {
        Destination::Free => None,
        Destination::Taken(_) => {
            return Err(StorageError::Conflict(
                "the destination exists; use force to replace it".into(),
            ));
        }
        Destination::Replaces(_) if from_meta.is_dir() => {
            return Err(StorageError::Conflict(
                "a file exists at the destination; a directory cannot replace it".into(),
            ));
        }
        Destination::Replaces(m) => {
            replaced_bytes = if m.is_file() { m.len() } else { 0 };
            held = Some(Held::open(home, to.as_path(), &m));
            Some(Stamp::of(&m).ino)
        }
    };
    // Under the lock: nothing can be slipped in between the check and the rename.
    check_move(policy, home, from, to, from_meta.is_dir())?;
    if from_meta.is_dir() {
        check_partials_fit(space, &lock, from, to)?;
    }
    home.rename(from.as_path(), home, to.as_path())
        .map_err(io_err("renaming"))?;
    space.update_index(|ix| ix.committed_changed(0, replaced_bytes));
    if let Some(ino) = replaced {
        Manifest::remove(&space.manifests, ino);
    }
    if let Some(held) = held {
        held.release();
    }
    if from_meta.is_dir() {
        move_partials(space, live, user, &lock, from, to);
    }
    Ok(())
}

/// Refuses to move directory `from` to `to` when an upload in progress inside it would
/// land where another upload is in progress (possible when the directory that held the
/// other one was removed while it was empty of files): one of them would be lost.
fn check_partials_fit(
    space: &UserSpace,
    lock: &std::sync::MutexGuard<'_, ()>,
    from: &RelPath,
    to: &RelPath,
) -> Result<(), StorageError> {
    space.with_index(lock, |ix| {
        for key in ix.partials_under(from) {
            let Some(info) = ix.partials.get(&key) else {
                continue;
            };
            let suffix = info.path.get(from.as_str().len()..).unwrap_or_default();
            let dest = format!("{}{suffix}", to.as_str());
            if let Ok(dest) = RelPath::parse(&dest)
                && ix.partials.contains_key(&dest.key())
            {
                return Err(StorageError::Conflict(format!(
                    "an upload in progress to `{}` is in the way; finish it, or discard it with `xfer rm --partial {}`",
                    dest.as_str(),
                    dest.as_str()
                )));
            }
        }
        Ok(())
    })
}

/// Uploads into directory `from`, just renamed to `to`, move with it: their partials
/// are re-keyed to the new paths (listed there; a push to the new place resumes them)
/// instead of committing at the old place later, and connections still uploading to
/// the old paths are stopped with an error saying so.
fn move_partials(
    space: &UserSpace,
    live: &LiveUploads,
    user: &str,
    lock: &std::sync::MutexGuard<'_, ()>,
    from: &RelPath,
    to: &RelPath,
) {
    for key in space.with_index(lock, |ix| ix.partials_under(from)) {
        if let Some(upload) = live.get(user, &key) {
            upload.stop_moved();
        }
        let Some(meta) = space.partial_state(&key) else {
            continue;
        };
        let suffix = meta.path.get(from.as_str().len()..).unwrap_or_default();
        let Ok(dest) = RelPath::parse(&format!("{}{suffix}", to.as_str())) else {
            warn!(user, path = ?meta.path, "an upload into a moved directory cannot follow it (path too long)");
            continue;
        };
        match partial::rekey(&space.partials, &key, meta, &dest) {
            Ok((new_key, meta)) => {
                space.set_unsaved(&key, None);
                space.update_index(|ix| {
                    ix.partials.remove(&key);
                    ix.partials.insert(new_key, (&meta).into());
                });
            }
            Err(e) => warn!(user, error = %e, "moving an upload with its directory failed"),
        }
    }
}

/// Checks renaming `from` (beneath `home`) to `to` against the type policy: a file by
/// its content, a directory by the content of every regular file in it that would land
/// under a rule. Symlinks are not followed (peers cannot create them).
///
/// # Errors
/// [`StorageError::TypeRejected`] naming the first file refused, or
/// [`StorageError::Unchecked`] for a directory over `MAX_MOVE_CHECK_ENTRIES` entries.
fn check_move(
    policy: &TypePolicy,
    home: &Dir,
    from: &RelPath,
    to: &RelPath,
    is_dir: bool,
) -> Result<(), StorageError> {
    let mut buf = Vec::new();
    if !is_dir {
        if !policy.applies(to) {
            return Ok(());
        }
        let file = home
            .open(from.as_path())
            .map_err(io_err("opening a file"))?;
        let target = to.parent().unwrap_or_else(RelPath::home);
        return policy.check_stored(&target, read_head(file, &mut buf)?, from.as_str());
    }
    if !policy.applies_within(to) {
        return Ok(());
    }
    let mut seen = 0;
    // (directory beneath the home, its name for messages, where it will be)
    let mut stack = vec![(from.as_path().to_owned(), from.to_string(), to.clone())];
    while let Some((src, shown, dst)) = stack.pop() {
        let dir = home.open_dir(&src).map_err(io_err("opening a directory"))?;
        for e in dir.entries().map_err(io_err("reading a directory"))? {
            let e = e.map_err(io_err("reading a directory"))?;
            seen += 1;
            if seen > MAX_MOVE_CHECK_ENTRIES {
                return Err(StorageError::Unchecked(format!(
                    "`{from}` holds more than {MAX_MOVE_CHECK_ENTRIES} entries, too many to \
                     check against the file type rules at `{to}`; move its contents in parts"
                )));
            }
            let name = e.file_name();
            let text = name.to_string_lossy();
            let child_shown = format!("{shown}/{text}");
            let ft = e.file_type().map_err(io_err("reading a directory"))?;
            if ft.is_dir() {
                // A name no path can spell is under no deeper rule than its parent.
                let child_dst = dst.join(&text).unwrap_or_else(|| dst.clone());
                stack.push((src.join(&name), child_shown, child_dst));
            } else if ft.is_file() && policy.rule_in(&dst).is_some() {
                let file = e.open().map_err(io_err("opening a file"))?;
                policy.check_stored(&dst, read_head(file, &mut buf)?, &child_shown)?;
            }
        }
    }
    Ok(())
}

/// A stored file's first bytes, as much as type detection reads.
fn read_head(file: cap_std::fs::File, buf: &mut Vec<u8>) -> Result<&[u8], StorageError> {
    buf.clear();
    file.take(STORED_SNIFF_BYTES)
        .read_to_end(buf)
        .map_err(io_err("reading a file"))?;
    Ok(buf)
}
