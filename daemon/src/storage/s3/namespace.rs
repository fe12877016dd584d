//! Listing, mkdir, remove and rename on the bucket, with the local backend's rules.
//!
//! A directory is the home, a marker under `dirs/` (made by mkdir, and kept for the
//! parent of what is removed so a directory does not vanish with its last file), or any
//! prefix of a stored file or upload. A move is a copy then a delete (S3 has no
//! rename): a crash in between leaves both, never neither.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use xfer_proto::{Entry, EntryKind};

use super::client::{delete, get_record, os_err, put_record};
use super::keys::{self, Area};
use super::records::{FileManifest, PartialRecord};
use super::{Dest, Shared, best_effort, delete_all, load_partial, put_marker, upload};
use crate::storage::{ListPage, PathError, RelPath, StorageError};

/// What one name of a directory is.
#[derive(Default)]
struct Names {
    files: BTreeMap<String, ObjectMeta>,
    dirs: BTreeSet<String>,
    partials: BTreeSet<String>,
}

async fn list_area(
    shared: &Shared,
    user: &str,
    area: Area,
    dir: &RelPath,
) -> Result<object_store::ListResult, StorageError> {
    shared
        .store
        .list_with_delimiter(Some(&shared.key(user, area, dir)))
        .await
        .map_err(os_err("listing a directory"))
}

pub(super) async fn list(
    shared: &Shared,
    user: &str,
    path: &RelPath,
    after: Option<&str>,
    limit: usize,
) -> Result<ListPage, StorageError> {
    let now = crate::now_unix();
    let ttl = shared.settings().config.partial_ttl_secs;
    if !path.is_home() {
        let name = path.file_name().expect("not the home").to_owned();
        if let Some(meta) = shared.head_file(user, path).await? {
            let entry = file_entry(shared, user, path, &name, &meta).await?;
            return Ok(ListPage {
                entries: vec![entry],
                more: false,
            });
        }
        if !shared.is_dir(user, path).await? {
            return match load_partial(shared, user, path).await? {
                Some(r) => Ok(ListPage {
                    entries: vec![partial_entry(&r, &name, ttl)],
                    more: false,
                }),
                None => Err(StorageError::NotFound),
            };
        }
    }
    let (files, dirs, partials) = futures_util::try_join!(
        list_area(shared, user, Area::Files, path),
        list_area(shared, user, Area::Dirs, path),
        list_area(shared, user, Area::Partials, path),
    )?;
    let mut names = Names::default();
    for m in files.objects {
        if let Some(n) = keys::decode(&m.location) {
            names.files.insert(n, m);
        }
    }
    for p in files
        .common_prefixes
        .iter()
        .chain(&dirs.common_prefixes)
        .chain(&partials.common_prefixes)
    {
        names.dirs.extend(keys::decode(p));
    }
    names.dirs.extend(
        dirs.objects
            .iter()
            .filter_map(|m| keys::decode(&m.location)),
    );
    names.partials.extend(
        partials
            .objects
            .iter()
            .filter_map(|m| keys::decode(&m.location)),
    );
    let mut all: BTreeSet<&String> = names.files.keys().collect();
    all.extend(&names.dirs);
    all.extend(&names.partials);
    let wanted: Vec<&String> = all
        .into_iter()
        .filter(|n| after.is_none_or(|a| n.as_str() > a))
        .collect();
    let more = wanted.len() > limit.max(1);
    let page: Vec<String> = wanted.into_iter().take(limit.max(1)).cloned().collect();
    let names = &names;
    let entries = futures_util::stream::iter(page)
        .map(move |name: String| {
            async move {
                let name = &name;
                let mut out = Vec::new();
                let Some(child) = path.join(name) else {
                    return Ok(out); // a reserved or unnameable key: not listed
                };
                if let Some(meta) = names.files.get(name) {
                    out.push(file_entry(shared, user, &child, name, meta).await?);
                } else if names.dirs.contains(name) {
                    out.push(Entry {
                        name: name.clone(),
                        kind: EntryKind::Dir,
                        size: 0,
                        modified_unix: 0,
                        digest: None,
                        received: None,
                        expires_unix: None,
                    });
                }
                if names.partials.contains(name)
                    && let Some(r) = load_partial(shared, user, &child).await?
                    && r.touched_unix.saturating_add(ttl) > now
                {
                    out.push(partial_entry(&r, name, ttl));
                }
                Ok::<_, StorageError>(out)
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await;
    let mut page = ListPage {
        entries: Vec::new(),
        more,
    };
    for e in entries {
        page.entries.extend(e?);
    }
    Ok(page)
}

async fn file_entry(
    shared: &Shared,
    user: &str,
    rel: &RelPath,
    name: &str,
    meta: &ObjectMeta,
) -> Result<Entry, StorageError> {
    let manifest =
        get_record::<FileManifest>(&shared.store, &shared.key(user, Area::Manifests, rel))
            .await?
            .filter(|m| m.describes(meta));
    Ok(Entry {
        name: name.to_owned(),
        kind: EntryKind::File,
        size: meta.size,
        modified_unix: manifest
            .as_ref()
            .map_or(meta.last_modified.timestamp().max(0) as u64, |m| {
                m.modified_unix
            }),
        digest: manifest.and_then(|m| m.digest.parse().ok()),
        received: None,
        expires_unix: None,
    })
}

fn partial_entry(r: &PartialRecord, name: &str, ttl: u64) -> Entry {
    Entry {
        name: name.to_owned(),
        kind: EntryKind::Partial,
        size: r.size,
        modified_unix: r.created_unix,
        digest: None,
        received: Some(r.received()),
        expires_unix: Some(r.touched_unix.saturating_add(ttl)),
    }
}

pub(super) async fn mkdir(
    shared: &Shared,
    user: &str,
    path: &RelPath,
    parents: bool,
) -> Result<(), StorageError> {
    if path.is_home() {
        return if parents {
            Ok(())
        } else {
            Err(StorageError::Conflict("the home directory exists".into()))
        };
    }
    shared.check_fits(user, path)?;
    let _lock = shared.lock_user(user).await;
    if shared.head_file(user, path).await?.is_some() {
        return Err(StorageError::Conflict(
            "something with that name exists".into(),
        ));
    }
    if shared.is_dir(user, path).await? {
        return if parents {
            Ok(())
        } else {
            Err(StorageError::Conflict(
                "something with that name exists".into(),
            ))
        };
    }
    shared
        .check_parents(user, path)
        .await
        .map_err(|_| StorageError::Conflict("a path component is not a directory".into()))?;
    let parent = path.parent().unwrap_or_else(RelPath::home);
    if !parents && !shared.is_dir(user, &parent).await? {
        return Err(StorageError::NotFound);
    }
    put_marker(shared, &shared.key(user, Area::Dirs, path)).await
}

/// Keeps `rel`'s parent directory in existence after what was in it went.
async fn keep_parent(shared: &Shared, user: &str, rel: &RelPath) {
    if let Some(parent) = rel.parent().filter(|p| !p.is_home()) {
        best_effort(
            "keeping a directory",
            put_marker(shared, &shared.key(user, Area::Dirs, &parent)).await,
        );
    }
}

pub(super) async fn remove(
    shared: &Shared,
    user: &str,
    path: &RelPath,
    recursive: bool,
    partial: bool,
) -> Result<(), StorageError> {
    if path.is_home() {
        return Err(PathError::Home.into());
    }
    let _lock = shared.lock_user(user).await;
    if partial {
        upload::supersede(shared, user, path.as_str());
        let Some(record) = load_partial(shared, user, path).await? else {
            return Err(StorageError::NotFound);
        };
        upload::abort(shared, user, path, &record).await;
        return Ok(());
    }
    if let Some(meta) = shared.head_file(user, path).await? {
        delete(&shared.store, &meta.location).await?;
        shared.usage.add_files(user, -(meta.size as i64));
        best_effort(
            "removing a manifest",
            delete(&shared.store, &shared.key(user, Area::Manifests, path)).await,
        );
        keep_parent(shared, user, path).await;
        return Ok(());
    }
    if !shared.is_dir(user, path).await? {
        return Err(StorageError::NotFound);
    }
    let marker = shared.key(user, Area::Dirs, path);
    if !recursive {
        for area in [Area::Files, Area::Dirs, Area::Partials] {
            if shared.any_under(&shared.key(user, area, path)).await? {
                return Err(StorageError::Conflict(
                    "directory not empty (remove it recursively)".into(),
                ));
            }
        }
        delete(&shared.store, &marker).await?;
        keep_parent(shared, user, path).await;
        return Ok(());
    }
    // Uploads into the tree go with it.
    let base = shared.key(user, Area::Partials, &RelPath::home());
    let records: Vec<ObjectMeta> = collect(shared, &shared.key(user, Area::Partials, path)).await?;
    for m in records {
        let Some(rel) = keys::below(&base, &m.location).and_then(|p| RelPath::parse(&p).ok())
        else {
            continue;
        };
        upload::supersede(shared, user, rel.as_str());
        if let Some(r) = get_record::<PartialRecord>(&shared.store, &m.location).await? {
            upload::abort(shared, user, &rel, &r).await;
        }
    }
    let gone = delete_all(shared, &shared.key(user, Area::Files, path)).await;
    match &gone {
        Ok(bytes) => shared.usage.add_files(user, -(*bytes as i64)),
        Err(_) => shared.usage.forget(user),
    }
    gone?;
    delete_all(shared, &shared.key(user, Area::Manifests, path)).await?;
    delete_all(shared, &marker).await?;
    delete(&shared.store, &marker).await?;
    keep_parent(shared, user, path).await;
    Ok(())
}

/// `base/below`, where `below` is a `/`-joined path listed under `base`.
fn join_below(base: &RelPath, below: &str) -> Option<RelPath> {
    if base.is_home() {
        RelPath::parse(below).ok()
    } else {
        RelPath::parse(&format!("{}/{below}", base.as_str())).ok()
    }
}

async fn collect(shared: &Shared, prefix: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
    shared
        .store
        .list(Some(prefix))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(os_err("listing"))
}

/// The first bytes of a stored object, for the type policy.
async fn head_bytes(shared: &Shared, key: &Path, size: u64) -> Result<bytes::Bytes, StorageError> {
    let n = size.min(xfer_proto::SNIFF_LEN as u64);
    if n == 0 {
        return Ok(bytes::Bytes::new());
    }
    shared
        .store
        .get_range(key, 0..n)
        .await
        .map_err(os_err("reading a file"))
}

/// Copies one committed file (object and manifest) from `from` to `to`.
async fn copy_file(
    shared: &Shared,
    user: &str,
    from: &RelPath,
    to: &RelPath,
    meta: &ObjectMeta,
) -> Result<(), StorageError> {
    let dest = shared.key(user, Area::Files, to);
    shared
        .store
        .copy(&meta.location, &dest)
        .await
        .map_err(os_err("copying a file"))?;
    // The copy's ETag may differ from the original's: the manifest follows it.
    let copied = shared
        .store
        .head(&dest)
        .await
        .map_err(os_err("copying a file"))?;
    let old = get_record::<FileManifest>(&shared.store, &shared.key(user, Area::Manifests, from))
        .await?
        .filter(|m| m.describes(meta));
    let mkey = shared.key(user, Area::Manifests, to);
    match old {
        Some(mut m) => {
            m.etag = copied.e_tag.unwrap_or_default();
            put_record(&shared.store, &mkey, &m).await
        }
        // Computed on first use at the new place.
        None => delete(&shared.store, &mkey).await,
    }
}

pub(super) async fn rename(
    shared: &Shared,
    user: &str,
    from: &RelPath,
    to: &RelPath,
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
    let _lock = shared.lock_user(user).await;
    let policy = shared.settings().policy.clone();
    let file = shared.head_file(user, from).await?;
    if file.is_none() && !shared.is_dir(user, from).await? {
        return Err(StorageError::NotFound);
    }
    if from == to {
        return Ok(());
    }
    shared.check_fits(user, to)?;
    let replaced = match shared.destination(user, to, force).await {
        Ok(Dest::Free) => 0,
        Ok(Dest::Taken(_)) => {
            return Err(StorageError::Conflict(
                "the destination exists; use force to replace it".into(),
            ));
        }
        Ok(Dest::Replaces(_)) if file.is_none() => {
            return Err(StorageError::Conflict(
                "a file exists at the destination; a directory cannot replace it".into(),
            ));
        }
        Ok(Dest::Replaces(n)) => n,
        Err(e) => return Err(e),
    };
    if let Some(meta) = file {
        if policy.applies(to) {
            let head = head_bytes(shared, &meta.location, meta.size).await?;
            policy.check_stored(
                &to.parent().unwrap_or_else(RelPath::home),
                &head,
                from.as_str(),
            )?;
        }
        copy_file(shared, user, from, to, &meta).await?;
        delete(&shared.store, &meta.location).await?;
        best_effort(
            "removing a manifest",
            delete(&shared.store, &shared.key(user, Area::Manifests, from)).await,
        );
        shared.usage.add_files(user, -(replaced as i64));
        keep_parent(shared, user, from).await;
        return Ok(());
    }
    // A directory. Multipart uploads are bound to their key: they cannot move.
    if shared
        .any_under(&shared.key(user, Area::Partials, from))
        .await?
    {
        return Err(StorageError::Conflict(format!(
            "uploads are in progress inside `{from}`; finish them, or remove them with `xfer rm --partial`, before moving it"
        )));
    }
    let fbase = shared.key(user, Area::Files, from);
    let files = collect(shared, &fbase).await?;
    let mut moved: Vec<(RelPath, RelPath, ObjectMeta)> = Vec::with_capacity(files.len());
    for m in files {
        let mapped = keys::below(&fbase, &m.location)
            .and_then(|below| Some((join_below(from, &below)?, join_below(to, &below)?)));
        let Some((src, dst)) = mapped else {
            // Nothing is moved (and so nothing deleted) unless every file can be.
            return Err(StorageError::Conflict(format!(
                "`{}` cannot be named at the destination (too long?); move or rename it first",
                keys::below(&fbase, &m.location).unwrap_or_default()
            )));
        };
        // Nothing is moved unless every key fits at the destination.
        shared.check_fits(user, &dst)?;
        moved.push((src, dst, m));
    }
    if policy.applies_within(to) {
        for (src, dst, m) in &moved {
            let dir = dst.parent().unwrap_or_else(RelPath::home);
            if policy.rule_in(&dir).is_some() {
                let head = head_bytes(shared, &m.location, m.size).await?;
                policy.check_stored(&dir, &head, src.as_str())?;
            }
        }
    }
    let copied: Vec<Result<(), StorageError>> = futures_util::stream::iter(moved.clone())
        .map(move |(src, dst, m)| async move { copy_file(shared, user, &src, &dst, &m).await })
        .buffer_unordered(16)
        .collect()
        .await;
    copied.into_iter().collect::<Result<(), _>>()?;
    // Directory markers move too.
    let dbase = shared.key(user, Area::Dirs, from);
    let mut markers: Vec<String> = collect(shared, &dbase)
        .await?
        .iter()
        .filter_map(|m| keys::below(&dbase, &m.location))
        .collect();
    markers.push(String::new());
    for below in &markers {
        let dst = if below.is_empty() {
            Some(to.clone())
        } else {
            join_below(to, below)
        };
        if let Some(dst) = dst {
            put_marker(shared, &shared.key(user, Area::Dirs, &dst)).await?;
        }
    }
    // Exactly what was copied goes: a file committed meanwhile by another node stays.
    let deleted: Vec<Result<(), StorageError>> = futures_util::stream::iter(moved)
        .map(move |(src, _, m)| async move {
            delete(&shared.store, &m.location).await?;
            delete(&shared.store, &shared.key(user, Area::Manifests, &src)).await
        })
        .buffer_unordered(16)
        .collect()
        .await;
    deleted.into_iter().collect::<Result<(), _>>()?;
    delete_all(shared, &dbase).await?;
    delete(&shared.store, &dbase).await?;
    keep_parent(shared, user, from).await;
    Ok(())
}
