//! `--update` and `--dry-run` for `push` and `pull`: what to do with one file, decided
//! before anything moves, from the source and the destination as they are.
//!
//! As rsync's quick check: the same size and modification time mean the same file, and
//! nothing is hashed. Otherwise the local file is hashed with BLAKE3 and compared with the
//! digest the server lists for its file: equal content only needs the destination's time
//! set. Content that differs replaces the destination (atomically, as `--force` does),
//! unless the destination is newer than the source: that one is kept, as `rsync -u`
//! does (`--force` replaces it too).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use xfer_proto::{Digest, Entry, EntryKind, ErrorCode};

use super::{hash_file_async, remote_basename, remote_parent};
use crate::client::Client;
use crate::error::is_remote;

/// What a push or pull does with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The destination does not exist: send the file.
    New,
    /// The destination differs: send the file and replace it atomically.
    Replace,
    /// The destination holds the same content with the same time: nothing to do.
    UpToDate,
    /// Same content, another time: only set the destination's time.
    Retime,
    /// Content differs and the destination is newer (`--update`): keep it.
    KeepNewer,
    /// The destination exists and differs, and neither `--update` nor `--force` was
    /// given (or it is a directory): the transfer engine reports the conflict.
    Conflict,
}

impl Action {
    /// How `--dry-run` names it.
    pub fn verb(self) -> &'static str {
        match self {
            Action::New => "new",
            Action::Replace => "replace",
            Action::UpToDate => "up to date",
            Action::Retime => "set time (same content)",
            Action::KeepNewer => "keep (newer at the destination)",
            Action::Conflict => "conflict (exists; use --update or --force)",
        }
    }
}

/// Size and modification time (whole seconds) of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub modified_unix: u64,
}

impl Stat {
    /// A local file's size and time; `None` unless it is a regular file (or a link to one).
    pub fn local(path: &Path) -> Option<Stat> {
        let meta = std::fs::metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file)?;
        Some(Stat {
            size: meta.len(),
            modified_unix: super::push::modified_secs(&meta).unwrap_or(0),
        })
    }

    /// A remote entry's size and time.
    pub fn remote(entry: &Entry) -> Stat {
        Stat {
            size: entry.size,
            modified_unix: entry.modified_unix,
        }
    }
}

/// The destination as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// Nothing there (an upload in progress counts as nothing: the push resumes it).
    Absent,
    /// A file.
    File(Stat),
    /// Something that is not a file (a directory).
    Other,
}

/// Decides what to do with one file. `src` and `dest` are the two sides; `local` is the
/// local file (the source of a push, the destination of a pull) and `remote_digest` the
/// server's BLAKE3 of its file, compared when size and time alone do not decide.
///
/// # Errors
/// The local file cannot be read.
pub async fn plan(
    src: Stat,
    dest: Dest,
    local: &Path,
    remote_digest: Option<Digest>,
    update: bool,
    force: bool,
) -> Result<Action> {
    let dst = match dest {
        Dest::Absent => return Ok(Action::New),
        Dest::Other => return Ok(Action::Conflict),
        Dest::File(d) => d,
    };
    if force && !update {
        return Ok(Action::Replace);
    }
    if update && dst == src {
        return Ok(Action::UpToDate);
    }
    if dst.size == src.size
        && let Some(remote) = remote_digest
        && hash_file_async(local).await? == remote
    {
        return Ok(if dst.modified_unix == src.modified_unix {
            Action::UpToDate
        } else {
            Action::Retime
        });
    }
    Ok(if !update && !force {
        Action::Conflict
    } else if update && !force && dst.modified_unix > src.modified_unix {
        Action::KeepNewer
    } else {
        Action::Replace
    })
}

/// Remote directory listings, each asked for once: the committed file entries by name.
#[derive(Default)]
pub struct RemoteIndex {
    dirs: HashMap<String, HashMap<String, Entry>>,
}

impl RemoteIndex {
    /// The committed entry (file or directory) at remote `path`, if any.
    ///
    /// # Errors
    /// The listing fails other than with "not found".
    pub async fn entry(&mut self, client: &mut Client, path: &str) -> Result<Option<Entry>> {
        let parent = remote_parent(path);
        if !self.dirs.contains_key(&parent) {
            let entries = match client.list(&parent).await {
                Ok(v) => v,
                Err(e) if is_remote(&e, ErrorCode::NotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            let by_name = entries
                .into_iter()
                .filter(|e| e.kind != EntryKind::Partial)
                .map(|e| (e.name.clone(), e))
                .collect();
            self.dirs.insert(parent.clone(), by_name);
        }
        Ok(self.dirs[&parent].get(&remote_basename(path)).cloned())
    }
}

/// The destination side of a push: the remote entry.
pub fn remote_dest(entry: Option<&Entry>) -> Dest {
    match entry {
        None => Dest::Absent,
        Some(e) if e.kind == EntryKind::File => Dest::File(Stat::remote(e)),
        Some(_) => Dest::Other,
    }
}

/// The destination side of a pull: the local path.
pub fn local_dest(path: &Path) -> Dest {
    match std::fs::symlink_metadata(path) {
        Err(_) => Dest::Absent,
        Ok(m) if m.is_file() => Stat::local(path).map_or(Dest::Other, Dest::File),
        Ok(_) => Dest::Other,
    }
}

/// Counts of a `--dry-run`, for its closing line.
#[derive(Debug, Default)]
pub struct DryRun {
    /// Files whose data would travel.
    pub send: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Up to date, or only their time set.
    pub up_to_date: usize,
    /// Kept because the destination is newer.
    pub kept: usize,
    /// Conflicts.
    pub conflicts: usize,
    /// Directories that would be created.
    pub dirs: usize,
}

impl DryRun {
    /// Counts one file of `size` bytes with `action`.
    pub fn count(&mut self, action: Action, size: u64) {
        match action {
            Action::New | Action::Replace => {
                self.send += 1;
                self.bytes += size;
            }
            Action::UpToDate | Action::Retime => self.up_to_date += 1,
            Action::KeepNewer => self.kept += 1,
            Action::Conflict => self.conflicts += 1,
        }
    }

    /// "dry run: 3 files: 1 to transfer (1.0 KiB), 2 up to date, 0 kept, 0 conflicts;
    /// 1 directories to create; nothing was changed".
    pub fn summary(&self) -> String {
        let files = self.send + self.up_to_date + self.kept + self.conflicts;
        format!(
            "dry run: {files} files: {} to transfer ({}), {} up to date, {} kept, {} conflicts; {} directories to create; nothing was changed",
            self.send,
            crate::output::human_bytes(self.bytes),
            self.up_to_date,
            self.kept,
            self.conflicts,
            self.dirs,
        )
    }
}

/// A `--dry-run` line: `new  a.txt -> docs/a.txt`.
pub fn dry_line(action: Action, from: &str, to: &str) -> String {
    let (from, to) = (
        crate::output::escape_control(from),
        crate::output::escape_control(to),
    );
    format!("{}  {from} -> {to}", action.verb())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(size: u64, t: u64) -> Stat {
        Stat {
            size,
            modified_unix: t,
        }
    }

    #[tokio::test]
    async fn update_decides_by_size_time_then_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"hello").unwrap();
        let same = Some(Digest::of(b"hello"));
        let other = Some(Digest::of(b"world"));
        let p = |src, dest, digest, update, force| plan(src, dest, &f, digest, update, force);
        let absent = Dest::Absent;
        assert_eq!(
            p(st(5, 9), absent, None, true, false).await.unwrap(),
            Action::New
        );
        let d = |s, t| Dest::File(st(s, t));
        // Quick check: same size and time, nothing hashed (a wrong digest is not looked at).
        assert_eq!(
            p(st(5, 9), d(5, 9), other, true, false).await.unwrap(),
            Action::UpToDate
        );
        // Same content, other time: only the time.
        assert_eq!(
            p(st(5, 9), d(5, 7), same, true, false).await.unwrap(),
            Action::Retime
        );
        // Different content: replaced if the destination is older, kept if newer.
        assert_eq!(
            p(st(5, 9), d(5, 7), other, true, false).await.unwrap(),
            Action::Replace
        );
        assert_eq!(
            p(st(5, 9), d(6, 10), other, true, false).await.unwrap(),
            Action::KeepNewer
        );
        assert_eq!(
            p(st(5, 9), d(6, 10), other, true, true).await.unwrap(),
            Action::Replace
        );
        // Without --update: equal content is up to date, anything else a conflict.
        assert_eq!(
            p(st(5, 9), d(5, 9), same, false, false).await.unwrap(),
            Action::UpToDate
        );
        assert_eq!(
            p(st(5, 9), d(5, 9), other, false, false).await.unwrap(),
            Action::Conflict
        );
        assert_eq!(
            p(st(5, 9), d(5, 9), same, false, true).await.unwrap(),
            Action::Replace
        );
        assert_eq!(
            p(st(5, 9), Dest::Other, None, true, true).await.unwrap(),
            Action::Conflict
        );
    }
}
