//! [`LocalStorage`]: users' files on the local filesystem.
//!
//! ```text
//! <data_dir>/users/<name>/files/       the user's home: everything they see
//!                         partials/    uploads in progress (<key>.part, <key>.meta)
//!                         manifests/   chunk digests of committed files (<inode>.json)
//! ```
//!
//! Directories are created mode 0700 and files 0600 (`private.rs`). Every path from a peer is
//! resolved beneath `files/` through a cap-std [`Dir`] (openat2 `RESOLVE_BENEATH` on
//! Linux), so `..` tricks and symlinks pointing outside the home fail as
//! [`StorageError::Escape`] whatever string checks might have missed.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use tracing::{debug, info, warn};
use xfer_proto::{Digest, Entry, EntryKind};

use super::manifest::{LocalDownload, Manifest, Stamp};
use super::private;
use super::upload::{LocalUpload, PartialMeta, remove_partial};
use super::{
    Download, PathError, PutBegun, PutRequest, RelPath, Storage, StorageError, TypePolicy, Usage,
    io_err,
};
use crate::accounts::UserName;
use crate::config::StorageConfig;

/// One user's directories, opened once and shared by their sessions.
pub(crate) struct UserSpace {
    pub home: Dir,
    pub partials: Dir,
    pub manifests: Dir,
    /// Serialises admission, commits and namespace changes of this user, so that two
    /// sessions cannot both pass a quota check or race a no-overwrite rename.
    mutations: Mutex<()>,
}

impl UserSpace {
    pub fn lock_mutations(&self) -> MutexGuard<'_, ()> {
        self.mutations.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `[storage]` settings in force, with the type policy built from them.
struct Settings {
    config: StorageConfig,
    policy: Arc<TypePolicy>,
}

impl Settings {
    fn new(config: StorageConfig) -> Arc<Settings> {
        Arc::new(Settings {
            policy: Arc::new(TypePolicy::new(&config.type_rules)),
            config,
        })
    }
}

/// Users' files under `<data_dir>/users`.
pub struct LocalStorage {
    data_dir: PathBuf,
    users_dir: PathBuf,
    /// Quotas, limits and type rules; replaced whole by a config reload.
    settings: RwLock<Arc<Settings>>,
    spaces: Mutex<HashMap<String, Arc<UserSpace>>>,
    /// Uploads open on some connection, by (user, key): a second `PutBegin` for the same
    /// destination takes the upload over (the first connection may be dead but not yet
    /// timed out, e.g. after a network cut).
    live: Mutex<HashMap<(String, String), Weak<LocalUpload>>>,
}

impl LocalStorage {
    /// Prepares `<data_dir>/users` (mode 0700).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(data_dir: &Path, config: StorageConfig) -> std::io::Result<LocalStorage> {
        let users_dir = data_dir.join("users");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&users_dir)?;
        Ok(LocalStorage {
            data_dir: data_dir.to_owned(),
            users_dir,
            settings: RwLock::new(Settings::new(config)),
            spaces: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// The settings in force now; an operation takes them once and keeps them.
    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn space(&self, user: &str) -> Result<Arc<UserSpace>, StorageError> {
        if user.parse::<UserName>().is_err() {
            return Err(StorageError::BadRequest("invalid user name".into()));
        }
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = spaces.get(user) {
            return Ok(s.clone());
        }
        let base = self.users_dir.join(user);
        let open = |sub: &str| -> Result<Dir, StorageError> {
            let p = base.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(io_err("creating a user's directories"))?;
            Dir::open_ambient_dir(&p, ambient_authority())
                .map_err(io_err("opening a user's directories"))
        };
        let space = Arc::new(UserSpace {
            home: open("files")?,
            partials: open("partials")?,
            manifests: open("manifests")?,
            mutations: Mutex::new(()),
        });
        spaces.insert(user.to_owned(), space.clone());
        Ok(space)
    }

    fn live_upload(&self, user: &str, key: &str) -> Option<Arc<LocalUpload>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&(user.to_owned(), key.to_owned()))?.upgrade()
    }

    fn register(&self, user: &str, upload: &Arc<LocalUpload>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(
            (user.to_owned(), upload.key().to_owned()),
            Arc::downgrade(upload),
        );
    }

    /// Every partial's meta in a user's space, by key.
    fn partial_metas(space: &UserSpace) -> Vec<(String, PartialMeta)> {
        let Ok(entries) = space.partials.entries() else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let key = name.strip_suffix(".meta")?;
                Some((key.to_owned(), PartialMeta::load(&space.partials, key)?))
            })
            .collect()
    }

    /// Removes a user's expired partials (not open on any connection); returns how many.
    fn expire_user(&self, user: &str, space: &UserSpace, now: u64) -> usize {
        let mut removed = 0;
        for (key, meta) in Self::partial_metas(space) {
            if meta.expires_unix <= now && self.live_upload(user, &key).is_none() {
                match remove_partial(&space.partials, &key) {
                    Ok(()) => {
                        info!(user, path = ?meta.path, "removed an abandoned partial upload");
                        removed += 1;
                    }
                    Err(e) => warn!(user, error = %e, "removing an expired partial failed"),
                }
            }
        }
        // Data without state (a crash between the two) or stray temporaries.
        if let Ok(entries) = space.partials.entries() {
            let ttl = std::time::Duration::from_secs(self.settings().config.partial_ttl_secs);
            for e in entries.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                let orphan = name.ends_with(".tmp")
                    || name.strip_suffix(".part").is_some_and(|k| {
                        !space.partials.exists(super::upload::meta_name(k))
                            && self.live_upload(user, k).is_none()
                    });
                let old = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.into_std().elapsed().ok())
                    .is_some_and(|age| age >= ttl);
                if orphan && old {
                    let _ = space.partials.remove_file(&name);
                }
            }
        }
        removed
    }

    /// Bytes of committed files beneath the home (symlinks are not followed or counted).
    fn committed_bytes(space: &UserSpace) -> u64 {
        let mut total = 0;
        let mut stack = vec![PathBuf::from(".")];
        while let Some(dir_path) = stack.pop() {
            let Ok(dir) = space.home.open_dir(&dir_path) else {
                continue;
            };
            let Ok(entries) = dir.entries() else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(dir_path.join(e.file_name()));
                } else if ft.is_file() {
                    total += e.metadata().map_or(0, |m| m.len());
                }
            }
        }
        total
    }

    fn usage_of(&self, space: &UserSpace, except_key: Option<&str>) -> u64 {
        let now = crate::now_unix();
        let partials: u64 = Self::partial_metas(space)
            .into_iter()
            .filter(|(k, m)| m.expires_unix > now && Some(k.as_str()) != except_key)
            .map(|(_, m)| m.size)
            .sum();
        Self::committed_bytes(space) + partials
    }

    fn free_bytes(&self) -> Result<u64, StorageError> {
        let st = nix::sys::statvfs::statvfs(&self.data_dir)
            .map_err(|e| StorageError::io("checking free space", std::io::Error::from(e)))?;
        #[allow(clippy::useless_conversion)] // the field types differ between platforms
        Ok(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
    }

    /// A partial as listed: `received` is what its saved state records (and would
    /// survive a crash), at most about a second behind the live upload.
    fn partial_entry(meta: &PartialMeta, name: &str) -> Entry {
        let received = meta.received();
        Entry {
            name: name.to_owned(),
            kind: EntryKind::Partial,
            size: meta.size,
            modified_unix: meta.created_unix,
            digest: None,
            received: Some(received),
            expires_unix: Some(meta.expires_unix),
        }
    }

    fn file_entry(space: &UserSpace, name: &str, meta: &cap_std::fs::Metadata) -> Entry {
        let stamp = Stamp::of(meta);
        let dir = meta.is_dir();
        Entry {
            name: name.to_owned(),
            kind: if dir { EntryKind::Dir } else { EntryKind::File },
            size: if dir { 0 } else { meta.len() },
            modified_unix: stamp.modified_unix(),
            digest: (!dir)
                .then(|| Manifest::load(&space.manifests, stamp).map(|m| m.digest))
                .flatten(),
            received: None,
            expires_unix: None,
        }
    }

    /// Opens `path` beneath the user's home for reading, with its metadata.
    fn open_file(
        space: &UserSpace,
        path: &RelPath,
    ) -> Result<(std::fs::File, cap_std::fs::Metadata), StorageError> {
        let file = space
            .home
            .open(path.as_path())
            .map_err(io_err("opening a file"))?
            .into_std();
        let meta = cap_std::fs::Metadata::from_file(&file).map_err(io_err("reading metadata"))?;
        Ok((file, meta))
    }

    fn existing_digest(space: &UserSpace, path: &RelPath) -> Result<Option<Digest>, StorageError> {
        let (file, meta) = Self::open_file(space, path)?;
        Ok(Some(
            Manifest::load_or_compute(&space.manifests, &file, Stamp::of(&meta))?.digest,
        ))
    }
}

impl Storage for LocalStorage {
    fn reconfigure(&self, config: StorageConfig) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Settings::new(config);
    }

    fn usage(&self, user: &str) -> Result<Usage, StorageError> {
        let space = self.space(user)?;
        Ok(Usage {
            used_bytes: self.usage_of(&space, None),
            limit_bytes: Some(self.settings().config.quota_bytes).filter(|&q| q > 0),
        })
    }

    fn list(&self, user: &str, path: &RelPath) -> Result<Vec<Entry>, StorageError> {
        let space = self.space(user)?;
        let now = crate::now_unix();
        let home = &space.home;
        let meta = match home.metadata(path.as_path()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.is_home() => {
                // Perhaps an upload in progress to that name.
                let key = path.key();
                return match PartialMeta::load(&space.partials, &key) {
                    Some(m) if m.expires_unix > now && m.path == path.as_str() => {
                        let name = path.file_name().expect("not the home");
                        Ok(vec![Self::partial_entry(&m, name)])
                    }
                    _ => Err(StorageError::NotFound),
                };
            }
            Err(e) => return Err(StorageError::io("reading metadata", e)),
        };
        if !meta.is_dir() {
            let name = path.file_name().expect("the home is a directory");
            return Ok(vec![Self::file_entry(&space, name, &meta)]);
        }
        let dir = home
            .open_dir(path.as_path())
            .map_err(io_err("opening a directory"))?;
        let mut entries = Vec::new();
        for e in dir.entries().map_err(io_err("reading a directory"))? {
            let e = e.map_err(io_err("reading a directory"))?;
            let Ok(name) = e.file_name().into_string() else {
                continue; // not UTF-8: cannot be named in the protocol
            };
            let Some(child) = path.join(&name) else {
                continue; // reserved or otherwise unnameable
            };
            // Resolved beneath the home: a symlink pointing outside is simply not listed.
            match home.metadata(child.as_path()) {
                Ok(m) if m.is_dir() || m.is_file() => {
                    entries.push(Self::file_entry(&space, &name, &m));
                }
                Ok(_) => {}
                Err(err) => debug!(error = %err, "skipping an entry that cannot be resolved"),
            }
        }
        for (_, m) in Self::partial_metas(&space) {
            let Ok(dest) = RelPath::parse(&m.path) else {
                continue;
            };
            if m.expires_unix > now && dest.parent().as_ref() == Some(path) {
                let name = dest.file_name().expect("a destination is never the home");
                entries.push(Self::partial_entry(&m, name));
            }
        }
        entries.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then((a.kind as u8).cmp(&(b.kind as u8)))
        });
        Ok(entries)
    }

    fn mkdir(&self, user: &str, path: &RelPath, parents: bool) -> Result<(), StorageError> {
        if path.is_home() {
            return if parents {
                Ok(())
            } else {
                Err(StorageError::Conflict("the home directory exists".into()))
            };
        }
        let space = self.space(user)?;
        let _lock = space.lock_mutations();
        match private::create_dir(&space.home, path.as_path(), parents) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StorageError::Conflict(
                "something with that name exists".into(),
            )),
            r => r.map_err(io_err("creating a directory")),
        }
    }

    fn remove(
        &self,
        user: &str,
        path: &RelPath,
        recursive: bool,
        partial: bool,
    ) -> Result<(), StorageError> {
        if path.is_home() {
            return Err(PathError::Home.into());
        }
        let space = self.space(user)?;
        let _lock = space.lock_mutations();
        if partial {
            let key = path.key();
            if let Some(live) = self.live_upload(user, &key) {
                live.supersede();
            }
            if PartialMeta::load(&space.partials, &key).is_none() {
                return Err(StorageError::NotFound);
            }
            return remove_partial(&space.partials, &key);
        }
        let meta = space
            .home
            .symlink_metadata(path.as_path())
            .map_err(io_err("reading metadata"))?;
        if meta.is_dir() {
            if recursive {
                space
                    .home
                    .remove_dir_all(path.as_path())
                    .map_err(io_err("removing a directory"))?;
                // Uploads into the removed tree go with it.
                for (key, m) in Self::partial_metas(&space) {
                    if RelPath::parse(&m.path).is_ok_and(|d| d.starts_with(path)) {
                        if let Some(live) = self.live_upload(user, &key) {
                            live.supersede();
                        }
                        let _ = remove_partial(&space.partials, &key);
                    }
                }
                Ok(())
            } else {
                space
                    .home
                    .remove_dir(path.as_path())
                    .map_err(io_err("removing a directory"))
            }
        } else {
            space
                .home
                .remove_file(path.as_path())
                .map_err(io_err("removing a file"))?;
            Manifest::remove(&space.manifests, Stamp::of(&meta).ino);
            Ok(())
        }
    }

    fn rename(
        &self,
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
        let settings = self.settings();
        let space = self.space(user)?;
        let _lock = space.lock_mutations();
        let home = &space.home;
        let from_meta = home
            .symlink_metadata(from.as_path())
            .map_err(io_err("reading metadata"))?;
        if from == to {
            return Ok(());
        }
        let replaced = match home.symlink_metadata(to.as_path()) {
            Ok(m) if m.is_dir() => {
                return Err(StorageError::Conflict(
                    "a directory exists at the destination".into(),
                ));
            }
            Ok(_) if !force => {
                return Err(StorageError::Conflict(
                    "the destination exists; use force to replace it".into(),
                ));
            }
            Ok(_) if from_meta.is_dir() => {
                return Err(StorageError::Conflict(
                    "a file exists at the destination; a directory cannot replace it".into(),
                ));
            }
            Ok(m) => Some(Stamp::of(&m).ino),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io("reading metadata", e)),
        };
        // Under the lock: nothing can be slipped in between the check and the rename.
        settings
            .policy
            .check_move(home, from, to, from_meta.is_dir())?;
        home.rename(from.as_path(), home, to.as_path())
            .map_err(io_err("renaming"))?;
        if let Some(ino) = replaced {
            Manifest::remove(&space.manifests, ino);
        }
        Ok(())
    }

    fn begin_upload(&self, user: &str, request: PutRequest) -> Result<PutBegun, StorageError> {
        let PutRequest {
            path,
            size,
            force,
            head,
        } = request;
        let settings = self.settings();
        if path.is_home() {
            return Err(PathError::Home.into());
        }
        let max = settings.config.max_file_bytes;
        if max > 0 && size > max {
            return Err(StorageError::TooLarge { size, max });
        }
        let space = self.space(user)?;
        let _lock = space.lock_mutations();
        let home = &space.home;
        let parent = path.parent().unwrap_or_else(RelPath::home);
        match home.metadata(parent.as_path()) {
            Ok(m) if !m.is_dir() => {
                return Err(StorageError::Conflict(format!(
                    "`{parent}` is a file, not a directory"
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("checking the destination", e)),
        }
        let replaced_size = match home.metadata(path.as_path()) {
            Ok(m) if m.is_dir() => {
                return Err(StorageError::Conflict(
                    "a directory exists at that path".into(),
                ));
            }
            Ok(m) if !force => {
                return Ok(PutBegun::Exists {
                    size: m.len(),
                    digest: Self::existing_digest(&space, &path)?,
                });
            }
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io("checking the destination", e)),
        };
        settings.policy.check(&path, &head)?;

        let now = crate::now_unix();
        self.expire_user(user, &space, now);
        let key = path.key();
        if let Some(live) = self.live_upload(user, &key) {
            info!(user, path = ?path, "upload taken over from another connection");
            live.supersede();
        }
        let already = PartialMeta::load(&space.partials, &key)
            .filter(|m| m.size == size && m.path == path.as_str())
            .map_or(0, |m| m.received());
        if settings.config.quota_bytes > 0 {
            let used = self
                .usage_of(&space, Some(&key))
                .saturating_sub(replaced_size);
            let limit = settings.config.quota_bytes;
            if used.saturating_add(size) > limit {
                return Err(StorageError::QuotaExceeded { used, limit, size });
            }
        }
        let needed = size.saturating_sub(already);
        let free = self.free_bytes()?;
        if needed > free.saturating_sub(settings.config.min_free_bytes) {
            warn!(user, size, free, "upload refused: not enough free space");
            return Err(StorageError::NoSpace);
        }
        // Parents exist from now on, so the upload shows as a partial where it will land.
        if !parent.is_home() {
            private::create_dir(home, parent.as_path(), true)
                .map_err(io_err("creating directories"))?;
        }
        let upload = Arc::new(LocalUpload::open(
            space.clone(),
            path,
            size,
            force,
            settings.config.partial_ttl_secs,
            settings.policy.clone(),
            now,
        )?);
        self.register(user, &upload);
        Ok(PutBegun::Ready(upload))
    }

    fn open_download(&self, user: &str, path: &RelPath) -> Result<Arc<dyn Download>, StorageError> {
        if path.is_home() {
            return Err(StorageError::BadRequest("the home is a directory".into()));
        }
        let space = self.space(user)?;
        let (file, meta) = Self::open_file(&space, path)?;
        if !meta.is_file() {
            return Err(StorageError::BadRequest(format!(
                "`{path}` is a directory, not a file"
            )));
        }
        let stamp = Stamp::of(&meta);
        let manifest = Manifest::load_or_compute(&space.manifests, &file, stamp)?;
        Ok(Arc::new(LocalDownload::new(file, stamp, manifest)))
    }

    fn expire_partials(&self, now_unix: u64) -> Result<usize, StorageError> {
        let entries =
            std::fs::read_dir(&self.users_dir).map_err(io_err("reading the users directory"))?;
        let mut removed = 0;
        for e in entries.flatten() {
            let Ok(user) = e.file_name().into_string() else {
                continue;
            };
            if user.parse::<UserName>().is_err() || !e.path().join("partials").is_dir() {
                continue;
            }
            let space = self.space(&user)?;
            let _lock = space.lock_mutations();
            removed += self.expire_user(&user, &space, now_unix);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
