//! Creating files and directories under the data directory as the daemon's alone: files
//! mode 0600, directories 0700, whatever the umask (which can only narrow a mode).
//! Users' data, upload state and manifests are nobody else's business on the host.

use std::io::{self, Write};
use std::path::Path;

use cap_std::fs::{
    Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt,
};

/// Mode of every file the daemon creates under the data directory.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the daemon creates under the data directory.
pub const DIR_MODE: u32 = 0o700;

/// Writes `bytes` to `name` in `dir` (created or truncated), mode [`FILE_MODE`], and
/// flushes it to the disk: these are temporaries about to be renamed over state that
/// must survive a power cut (the rename may reach the disk before the data). A file left
/// with another mode (an older version's temporary) is narrowed too.
pub(crate) fn write_synced(dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut file = create(dir, name)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Writes `bytes` to `name` in `dir` (created or truncated), mode [`FILE_MODE`], without
/// flushing: for a batch of temporaries made durable together (one `syncfs`) before any
/// of them is renamed into place. Returns the open file.
pub(crate) fn write_unsynced(dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<std::fs::File> {
    let mut file = create(dir, name)?;
    file.write_all(bytes)?;
    Ok(file.into_std())
}

fn create(dir: &Dir, name: &str) -> io::Result<cap_std::fs::File> {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE);
    let file = dir.open_with(name, &options)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates directory `path` beneath `dir` (with its parents if `parents`, then an
/// existing one is fine), mode [`DIR_MODE`].
pub(crate) fn create_dir(dir: &Dir, path: &Path, parents: bool) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(parents).mode(DIR_MODE);
    dir.create_dir_with(path, &builder)
}
