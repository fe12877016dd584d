//! [`LocalStorage`]: users' files on the local filesystem.
//!
//! ```text
//! <data_dir>/users/<name>/files/       the user's home: everything they see
//!                         partials/    uploads in progress (<key>.part, <key>.meta)
//!                         manifests/   chunk digests of committed files (<inode>.json)
//! ```
//!
//! Directories are created mode 0700 and files 0600 (`private.rs`). Every path from a peer is
//! resolved beneath `files/` through a cap-std [`Dir`](cap_std::fs::Dir) (openat2
//! `RESOLVE_BENEATH` on Linux), so `..` tricks and symlinks pointing outside the home fail
//! as [`StorageError::Escape`] whatever string checks might have missed.
//!
//! The work is blocking filesystem I/O: every [`Storage`] method runs it in
//! `spawn_blocking` (`blocking.rs`), so sessions just `.await`. One file per part:
//!
//! - `space.rs`: a user's directories, the destination check, usage and free space;
//! - `namespace.rs`: listing, mkdir, remove, rename;
//! - `partial.rs`: the `.part`/`.meta` files of uploads in progress, and their expiry;
//! - `upload/`: resumable uploads, their data flushed as it arrives (crate xfer-disk),
//!   verify and commit (`commit.rs`); the registry of open ones (`live.rs`);
//! - `release.rs`: big files let go of after the answer, not inside it;
//! - `seal.rs`: whether a resumed upload reads back the chunks it held;
//! - `batch.rs`: whole small files in one request, committed in batches (one `syncfs`);
//! - `download.rs`: downloads served from manifests;
//! - `manifest.rs`: chunk digests kept for committed files;
//! - `private.rs`: files 0600 and directories 0700, whatever the umask.

mod batch;
mod blocking;
mod download;
mod index;
pub(crate) mod manifest;
mod namespace;
pub(crate) mod partial;
mod private;
mod release;
mod renormalize;
mod reserve;
mod seal;
mod space;
mod upload;

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use tracing::{info, warn};

use self::blocking::blocking;
use self::download::LocalDownload;
use self::manifest::Manifest;
use self::space::{Destination, UserSpace};
use self::upload::{LiveUploads, LocalUpload, UploadHandle};
use crate::accounts::UserName;
use crate::config::StorageConfig;
use crate::storage::{
    Download, ListPage, PathError, PutBegun, PutFileDone, PutRequest, RelPath, Settings, Storage,
    StorageError, Usage, WholeFile, WholeRead, io_err, partial_bucket,
};

/// Users' files under `<data_dir>/users`. Cheap to share: the state is behind an `Arc`
/// that each blocking task takes a clone of.
pub struct LocalStorage {
    local: Arc<Local>,
}

/// The state of [`LocalStorage`] and its blocking operations.
struct Local {
    data_dir: PathBuf,
    users_dir: PathBuf,
    /// Quotas, limits and type rules; replaced whole by a config reload.
    settings: RwLock<Arc<Settings>>,
    spaces: Mutex<HashMap<String, Arc<UserSpace>>>,
    live: LiveUploads,
    /// Free space promised to open uploads.
    reserve: reserve::Reserve,
    /// Buffers of whole files read for `GetFile` ([`Local::read_whole`]).
    whole_buffers: Arc<xfer_proto::BufferPool>,
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
            local: Arc::new(Local {
                data_dir: data_dir.to_owned(),
                users_dir,
                settings: RwLock::new(Settings::new(config)),
                spaces: Mutex::new(HashMap::new()),
                live: LiveUploads::default(),
                reserve: reserve::Reserve::default(),
                whole_buffers: xfer_proto::BufferPool::new(batch::KEEP_WHOLE_BUFFERS),
            }),
        })
    }

    /// Runs `op` on the state and the space of `user` in a blocking task.
    async fn with_space<T: Send + 'static>(
        &self,
        context: &'static str,
        user: &str,
        op: impl FnOnce(&Local, &UserSpace) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (local, user) = (self.local.clone(), user.to_owned());
        blocking(context, move || {
            let space = local.space(&user)?;
            op(&local, &space)
        })
        .await
    }

    #[cfg(test)]
    fn space(&self, user: &str) -> Result<Arc<UserSpace>, StorageError> {
        self.local.space(user)
    }

    #[cfg(test)]
    fn settings(&self) -> Arc<Settings> {
        self.local.settings()
    }
}

impl Local {
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
        let base = self.users_dir.join(user);
        // A home moved away (`xferd user del` archives it) is not followed: a new
        // account of that name gets a new, empty space.
        if let Some(s) = spaces.get(user).filter(|s| s.is_at(&base)) {
            return Ok(s.clone());
        }
        let space = Arc::new(UserSpace::open(&base)?);
        renormalize::renormalize(user, &space.home);
        spaces.insert(user.to_owned(), space.clone());
        Ok(space)
    }

    /// Removes a user's expired partials (not open on any connection) found on disk,
    /// with stray files; returns how many (the periodic sweep).
    fn expire_user(&self, user: &str, space: &UserSpace, now: u64) -> usize {
        let ttl = std::time::Duration::from_secs(self.settings().config.partial_ttl_secs);
        let removed = partial::expire(user, &space.partials, now, ttl, |key| {
            self.live.get(user, key).is_some()
        });
        space.update_index(|ix| {
            for key in &removed {
                ix.partials.remove(key);
            }
        });
        removed.len()
    }

    /// Removes a user's expired partials that the index knows of (at admission: no
    /// directory walk).
    fn expire_indexed(&self, user: &str, space: &UserSpace, lock: &MutexGuard<'_, ()>, now: u64) {
        for key in space.with_index(lock, |ix| ix.expired(now)) {
            if self.live.get(user, &key).is_some() {
                continue;
            }
            match partial::remove_partial(&space.partials, &key) {
                Ok(()) => {
                    info!(user, key, "removed an abandoned partial upload");
                    space.update_index(|ix| {
                        ix.partials.remove(&key);
                    });
                }
                Err(e) => warn!(user, error = %e, "removing an expired partial failed"),
            }
        }
    }

    fn usage(&self, space: &UserSpace) -> Usage {
        let lock = space.lock_mutations();
        Usage {
            used_bytes: space.with_index(&lock, |ix| ix.used_bytes(crate::now_unix(), None)),
            limit_bytes: Some(self.settings().config.quota_bytes).filter(|&q| q > 0),
        }
    }

    fn begin_upload(
        &self,
        user: &str,
        space: &Arc<UserSpace>,
        request: PutRequest,
    ) -> Result<PutBegun, StorageError> {
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
        let lock = space.lock_mutations();
        let replaced_size = match space.destination(&path, force, false)? {
            Destination::Free => 0,
            Destination::Replaces(m) => m.len(),
            Destination::Taken(m) => {
                return Ok(PutBegun::Exists {
                    size: m.len(),
                    digest: Some(existing_digest(space, &path)?),
                });
            }
        };
        settings.policy.check(&path, &head)?;

        let now = crate::now_unix();
        space.clean_ghosts();
        self.expire_indexed(user, space, &lock, now);
        let key = path.key();
        let max_partials = settings.config.max_partials_per_user;
        // Unfinished sends in an inbox count against their sender's share (each sender
        // may hold the limit there), never against the owner's own uploads.
        let bucket = partial_bucket(path.as_str());
        let (open_partials, used) = space.with_index(&lock, |ix| {
            let others = ix
                .partials
                .iter()
                .filter(|(k, info)| **k != key && partial_bucket(&info.path) == bucket)
                .count();
            (others, ix.used_bytes(now, Some(&key)))
        });
        if open_partials >= max_partials as usize {
            warn!(
                user,
                max_partials, "upload refused: too many unfinished uploads"
            );
            return Err(StorageError::TooManyPartials { max: max_partials });
        }
        if let Some(live) = self.live.get(user, &key) {
            info!(user, path = ?path, "upload taken over from another connection");
            live.hand_over();
        }
        let already = space
            .partial_state(&key)
            .filter(|m| m.size == size && m.path == path.as_str())
            .map_or(0, |m| m.received());
        if settings.config.quota_bytes > 0 {
            let used = used.saturating_sub(replaced_size);
            let limit = settings.config.quota_bytes;
            if used.saturating_add(size) > limit {
                return Err(StorageError::QuotaExceeded { used, limit, size });
            }
        }
        let needed = size.saturating_sub(already);
        let free = space::free_bytes(&self.data_dir)?;
        let reservation = self
            .reserve
            .admit(needed, free, settings.config.min_free_bytes)
            .inspect_err(
                |_| warn!(user, path = ?path, size, free, "upload refused: not enough free space"),
            )?;
        // Parents exist from now on, so the upload shows as a partial where it will land.
        let parent = path.parent().unwrap_or_else(RelPath::home);
        if !parent.is_home() {
            private::create_dir(&space.home, parent.as_path(), true)
                .map_err(io_err("creating directories"))?;
        }
        let upload = Arc::new(
            LocalUpload::open(space.clone(), path, size, force, &settings, now)?
                .with_reservation(reservation),
        );
        self.live.register(user, &upload);
        Ok(PutBegun::Ready(Arc::new(UploadHandle(upload))))
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

/// The digest of the committed file at `path`, from its manifest (computed if needed).
/// Whose share of the partials limit an upload to `path` uses: `Some(sender)` for a
/// send into `inbox/<sender>/`, `None` for the owner's own uploads.
fn existing_digest(space: &UserSpace, path: &RelPath) -> Result<xfer_proto::Digest, StorageError> {
    let (file, meta) = space.open_file(path)?;
    let stamp = manifest::Stamp::of(&meta);
    Ok(Manifest::load_or_compute(&space.manifests, &file, stamp)?.digest)
}

#[async_trait]
impl Storage for LocalStorage {
    fn reconfigure(&self, config: StorageConfig) {
        *self
            .local
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Settings::new(config);
    }

    async fn usage(&self, user: &str) -> Result<Usage, StorageError> {
        self.with_space("computing usage", user, |local, space| {
            Ok(local.usage(space))
        })
        .await
    }

    async fn list(
        &self,
        user: &str,
        path: &RelPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StorageError> {
        let path = path.clone();
        let after = after.map(str::to_owned);
        self.with_space("listing", user, move |_, space| {
            namespace::list(space, &path, after.as_deref(), limit)
        })
        .await
    }

    async fn mkdir(&self, user: &str, path: &RelPath, parents: bool) -> Result<(), StorageError> {
        let path = path.clone();
        self.with_space("creating a directory", user, move |_, space| {
            namespace::mkdir(space, &path, parents)
        })
        .await
    }

    async fn remove(
        &self,
        user: &str,
        path: &RelPath,
        recursive: bool,
        partial: bool,
    ) -> Result<(), StorageError> {
        let (path, owner) = (path.clone(), user.to_owned());
        self.with_space("removing", user, move |local, space| {
            namespace::remove(space, &local.live, &owner, &path, recursive, partial)
        })
        .await
    }

    async fn rename(
        &self,
        user: &str,
        from: &RelPath,
        to: &RelPath,
        force: bool,
    ) -> Result<(), StorageError> {
        let (from, to, owner) = (from.clone(), to.clone(), user.to_owned());
        let policy = self.local.settings().policy.clone();
        self.with_space("renaming", user, move |local, space| {
            namespace::rename(space, (&local.live, &owner), &policy, (&from, &to), force)
        })
        .await
    }

    async fn set_modified(
        &self,
        user: &str,
        path: &RelPath,
        modified_unix: u64,
    ) -> Result<(), StorageError> {
        let path = path.clone();
        self.with_space("setting a modification time", user, move |_, space| {
            namespace::set_modified(space, &path, modified_unix)
        })
        .await
    }

    async fn begin_upload(
        &self,
        user: &str,
        request: PutRequest,
    ) -> Result<PutBegun, StorageError> {
        let (local, user) = (self.local.clone(), user.to_owned());
        blocking("beginning an upload", move || {
            let space = local.space(&user)?;
            local.begin_upload(&user, &space, request)
        })
        .await
    }

    async fn open_download(
        &self,
        user: &str,
        path: &RelPath,
    ) -> Result<Arc<dyn Download>, StorageError> {
        let path = path.clone();
        self.with_space("opening a download", user, move |local, space| {
            let direct = local.settings().config.direct_io;
            Ok(Arc::new(LocalDownload::open(space, &path, direct)?) as Arc<dyn Download>)
        })
        .await
    }

    async fn put_files(
        &self,
        user: &str,
        files: Vec<WholeFile>,
    ) -> Vec<Result<PutFileDone, StorageError>> {
        let (local, owner, n) = (self.local.clone(), user.to_owned(), files.len());
        let done = blocking("committing small files", move || {
            let space = local.space(&owner)?;
            Ok(local.put_files(&owner, &space, files))
        })
        .await;
        match done {
            Ok(answers) => answers,
            Err(e) => (0..n)
                .map(|_| Err(StorageError::BadRequest(e.to_string())))
                .collect(),
        }
    }

    async fn read_whole(&self, user: &str, path: &RelPath) -> Result<WholeRead, StorageError> {
        let path = path.clone();
        self.with_space("reading a file", user, move |local, space| {
            local.read_whole(space, &path)
        })
        .await
    }

    async fn read_wholes(
        &self,
        user: &str,
        paths: &[RelPath],
        max_bytes: usize,
    ) -> Vec<Result<WholeRead, StorageError>> {
        // One blocking task for the lot: a task per file cost more in thread hand-offs
        // than reading a small file does.
        let (local, owner, paths) = (self.local.clone(), user.to_owned(), paths.to_vec());
        let read = blocking("reading files", move || {
            let space = local.space(&owner)?;
            let mut out = Vec::with_capacity(paths.len());
            let mut bytes = 0;
            for path in &paths {
                if bytes >= max_bytes && !out.is_empty() {
                    break;
                }
                let read = local.read_whole(&space, path);
                bytes += read.as_ref().map_or(0, |r| r.data.len());
                out.push(read);
            }
            Ok(out)
        })
        .await;
        read.unwrap_or_else(|e| vec![Err(e)])
    }

    async fn expire_partials(&self, now_unix: u64) -> Result<usize, StorageError> {
        let local = self.local.clone();
        blocking("expiring partial uploads", move || {
            local.expire_partials(now_unix)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
