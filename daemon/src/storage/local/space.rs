//! One user's directories (`files/`, `partials/`, `manifests/`) and the questions asked
//! of them before anything changes: what is at a destination, how much is stored, how
//! much the disk has left.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata};

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

    /// Bytes of committed files plus live partials (at their final size), leaving out
    /// the partial `except_key` (the one being admitted again).
    pub fn used_bytes(&self, except_key: Option<&str>) -> u64 {
        let now = crate::now_unix();
        let partials: u64 = partial::metas(&self.partials)
            .into_iter()
            .filter(|(k, m)| m.expires_unix > now && Some(k.as_str()) != except_key)
            .map(|(_, m)| m.size)
            .sum();
        self.committed_bytes() + partials
    }

    /// Bytes of committed files beneath the home (symlinks are not followed or counted).
    fn committed_bytes(&self) -> u64 {
        let mut total = 0;
        let mut stack = vec![PathBuf::from(".")];
        while let Some(dir_path) = stack.pop() {
            let Ok(dir) = self.home.open_dir(&dir_path) else {
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
}

/// Bytes free for the daemon on the filesystem holding `data_dir`.
pub(crate) fn free_bytes(data_dir: &Path) -> Result<u64, StorageError> {
    let st = nix::sys::statvfs::statvfs(data_dir)
        .map_err(|e| StorageError::io("checking free space", std::io::Error::from(e)))?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    Ok(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
}
