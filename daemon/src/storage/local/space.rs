//! One user's directories (`files/`, `partials/`, `manifests/`) and the questions asked
//! of them before anything changes: what is at a destination, how much is stored (the
//! index kept in memory), how much the disk has left.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata};

use super::index::Index;
use super::{partial, private};
use crate::storage::{RelPath, StorageError, io_err};

/// One user's directories, opened once and shared by their sessions.
pub(crate) struct UserSpace {
    pub home: Dir,
    pub partials: Dir,
    pub manifests: Dir,
    /// Serialises admission, commits and namespace changes of this user, so that two
    /// sessions cannot both pass a quota check or race a no-overwrite rename.
    mutations: Mutex<()>,
    /// Upload state, by key, whose last save failed (a full disk): newer than the
    /// `.meta`, so the next upload to the key resumes from it instead of losing the
    /// chunks verified since. Memory only: a restart falls back to the `.meta`.
    unsaved: Mutex<HashMap<String, partial::PartialMeta>>,
    /// Usage and partials in memory (`index.rs`), computed at first use.
    index: Mutex<Option<Index>>,
}

/// What is at a destination, as [`UserSpace::destination`] found it.
pub(crate) enum Destination {
    /// Nothing: the name is free.
    Free,
    /// A file, and `force` allows replacing it.
    Replaces(Metadata),
    /// A file, and `force` was not given.
    Taken(Metadata),
}

impl UserSpace {
    /// Opens (creating, mode 0700) the directories of the user whose data lives in `base`.
    pub fn open(base: &Path) -> Result<UserSpace, StorageError> {
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
        Ok(UserSpace {
            home: open("files")?,
            partials: open("partials")?,
            manifests: open("manifests")?,
            mutations: Mutex::new(()),
            unsaved: Mutex::new(HashMap::new()),
            index: Mutex::new(None),
        })
    }

    /// Whether this space's home is still `base/files` (the same directory, not one
    /// made in its place after it was moved away).
    pub fn is_at(&self, base: &Path) -> bool {
        use cap_std::fs::MetadataExt as _;
        use std::os::unix::fs::MetadataExt as _;
        match (
            self.home.dir_metadata(),
            std::fs::metadata(base.join("files")),
        ) {
            (Ok(open), Ok(there)) => open.dev() == there.dev() && open.ino() == there.ino(),
            _ => false,
        }
    }

    pub fn lock_mutations(&self) -> MutexGuard<'_, ()> {
        self.mutations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `meta` of partial `key` in memory after its save failed (`None`: saved).
    pub fn set_unsaved(&self, key: &str, meta: Option<partial::PartialMeta>) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        match meta {
            Some(m) => unsaved.insert(key.to_owned(), m),
            None => unsaved.remove(key),
        };
    }

    /// The state of partial `key`: what its last save failed to write, if that is newer
    /// than the `.meta` (same upload, by creation time), else the `.meta`.
    pub fn partial_state(&self, key: &str) -> Option<partial::PartialMeta> {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        let Some(on_disk) = partial::PartialMeta::load(&self.partials, key) else {
            unsaved.remove(key);
            return None;
        };
        match unsaved.get(key) {
            Some(m) if m.created_unix == on_disk.created_unix && m.path == on_disk.path => {
                Some(m.clone())
            }
            _ => Some(on_disk),
        }
    }

    /// The one check of a destination before a file is put at `dest` (upload admission,
    /// commit, rename): its parent must be a directory or not exist yet (then, with
    /// `create_parent`, it is created), and no directory may be at `dest`. A file there
    /// is [`Destination::Taken`] unless `force`; each caller words that refusal itself.
    /// The last component is not followed, so a symlink at `dest` is replaced, never
    /// written through.
    pub fn destination(
        &self,
        dest: &RelPath,
        force: bool,
        create_parent: bool,
    ) -> Result<Destination, StorageError> {
        let parent = dest.parent().unwrap_or_else(RelPath::home);
        if !parent.is_home() {
            match self.home.metadata(parent.as_path()) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(StorageError::Conflict(format!(
                        "`{parent}` is a file, not a directory"
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if create_parent {
                        private::create_dir(&self.home, parent.as_path(), true)
                            .map_err(io_err("creating directories"))?;
                    }
                }
                Err(e) => return Err(StorageError::io("checking the destination", e)),
            }
        }
        match self.home.symlink_metadata(dest.as_path()) {
            Ok(m) if m.is_dir() => Err(StorageError::Conflict(
                "a directory exists at the destination".into(),
            )),
            Ok(m) if force => Ok(Destination::Replaces(m)),
            Ok(m) => Ok(Destination::Taken(m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Destination::Free),
            Err(e) => Err(StorageError::io("checking the destination", e)),
        }
    }

    /// Opens `path` beneath the home for reading, with its metadata.
    pub fn open_file(&self, path: &RelPath) -> Result<(std::fs::File, Metadata), StorageError> {
        let file = self
            .home
            .open(path.as_path())
            .map_err(io_err("opening a file"))?
            .into_std();
        let meta = Metadata::from_file(&file).map_err(io_err("reading metadata"))?;
        Ok((file, meta))
    }

    /// Runs `f` on the user's [`Index`], computing it first if this is its first use;
    /// the caller holds the mutations lock, so no commit, removal or rename of this user
    /// runs while the index is computed.
    pub fn with_index<T>(
        &self,
        _mutations: &MutexGuard<'_, ()>,
        f: impl FnOnce(&mut Index) -> T,
    ) -> T {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        f(index.get_or_insert_with(|| Index::compute(&self.home, &self.partials)))
    }

    /// Cleans upload state whose data is gone (a commit's unlink failed, a crash in
    /// between), from the disk and the index.
    pub fn clean_ghosts(&self) {
        let ghosts = partial::clean_ghosts(&self.partials);
        if !ghosts.is_empty() {
            self.update_index(|ix| {
                for key in &ghosts {
                    ix.partials.remove(key);
                }
            });
        }
    }

    /// Applies a change to the index if it was computed (else the computation will see
    /// the change on disk).
    pub fn update_index(&self, f: impl FnOnce(&mut Index)) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = index.as_mut() {
            f(index);
        }
    }

    /// The index as kept, and as computed afresh from the disk (tests).
    #[cfg(test)]
    pub fn index_and_recomputed(&self) -> (Option<Index>, Index) {
        let _lock = self.lock_mutations();
        let kept = self.index.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (kept, Index::compute(&self.home, &self.partials))
    }
}

/// Bytes free for the daemon on the filesystem holding `data_dir`, counting those of
/// files let go of and about to be freed (`release.rs`).
pub(crate) fn free_bytes(data_dir: &Path) -> Result<u64, StorageError> {
    let st = nix::sys::statvfs::statvfs(data_dir)
        .map_err(|e| StorageError::io("checking free space", std::io::Error::from(e)))?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let free = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    Ok(free.saturating_add(super::release::releasing_bytes()))
}
