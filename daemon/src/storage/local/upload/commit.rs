//! The commit of an upload: every chunk held and verified, the whole-file digest derived
//! from the chunk digests and compared with the client's, the data synced, the manifest
//! stored, the file renamed into place (a big file it replaces let go of after the
//! answer, `release.rs`), the directory synced, and the state removed last.

use std::os::unix::fs::FileExt as _;

use cap_std::fs::Metadata;
use tracing::warn;
use xfer_proto::Digest;

use super::super::manifest::{self, Manifest, Stamp};
use super::super::partial::{meta_name, part_name};
use super::super::release::Held;
use super::super::space::Destination;
use super::{DATA_LOST, LocalUpload};
use crate::storage::policy::STORED_SNIFF_BYTES;
use crate::storage::{Committed, RelPath, StorageError, chunk_count, io_err};

impl LocalUpload {
    pub fn commit(&self, digest: &Digest) -> Result<Committed, StorageError> {
        // Lock order everywhere: the user's mutation lock, then the upload's.
        let space = &self.space;
        let _user = space.lock_mutations();
        let mut inner = self.lock();
        self.check_live(&inner)?;
        let n = chunk_count(self.size);
        let held = inner.held.len() as u64;
        if held < n {
            return Err(StorageError::BadRequest(format!(
                "upload incomplete: {} of {n} chunks missing",
                n - held
            )));
        }
        // Keys are the indexes below `n` (checked on write), in order: all of them.
        let chunks: Vec<Digest> = inner.held.values().copied().collect();
        let whole = Digest::of_chunks(&chunks);
        if whole != *digest {
            return Err(StorageError::ChecksumMismatch(format!(
                "whole-file digest mismatch: the server assembled {whole}, the client announced {digest}"
            )));
        }
        // Chunk 0 was judged when it arrived, for the path of that time; an upload whose
        // directory moved since lands elsewhere. Judge the content for where it lands.
        if self.policy.applies(&self.dest) {
            let mut head = vec![0u8; STORED_SNIFF_BYTES.min(self.size) as usize];
            inner
                .file
                .read_exact_at(&mut head, 0)
                .map_err(io_err("reading upload data"))?;
            self.policy.check(&self.dest, &head)?;
        }
        // Keyed by inode and stamp, which the rename keeps. A small file's is a tag on
        // the file itself, made durable with its data (`manifest.rs`).
        let stamp =
            Stamp::of(&Metadata::from_file(&inner.file).map_err(io_err("reading file metadata"))?);
        let manifest = Manifest {
            digest: whole,
            chunks,
        };
        if !manifest::is_stored_for(stamp.size) {
            manifest.tag(&inner.file, stamp);
        }
        if let Err(e) = inner.writer.finish().and_then(|()| inner.file.sync_all()) {
            self.forget_data(&mut inner);
            return Err(StorageError::io(DATA_LOST, e));
        }
        let home = &space.home;
        let parent = self.dest.parent().unwrap_or_else(RelPath::home);
        let mut replaced_bytes = 0;
        // A big file replaced is held open across the rename, so that freeing it is not
        // part of the rename (`release.rs`).
        let mut held_old = None;
        let replaced = match space.destination(&self.dest, self.force, true)? {
            Destination::Free => None,
            Destination::Replaces(m) => {
                replaced_bytes = if m.is_file() { m.len() } else { 0 };
                held_old = Some(Held::open(home, self.dest.as_path(), &m));
                Some(Stamp::of(&m).ino)
            }
            Destination::Taken(_) => {
                return Err(StorageError::Conflict(
                    "a file appeared at the destination meanwhile; use force to replace it".into(),
                ));
            }
        };
        // The manifest goes in first, so a listing never sees the committed name without
        // its digest.
        let stored = manifest::is_stored_for(stamp.size)
            && match manifest.store(&space.manifests, stamp) {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "storing the manifest of a committed file failed");
                    false
                }
            };
        // Atomic: the name shows the old file (or none) until it shows the complete one.
        if let Err(e) = space
            .partials
            .rename(part_name(&self.key), home, self.dest.as_path())
        {
            if stored {
                Manifest::remove(&space.manifests, stamp.ino);
            }
            return Err(StorageError::io("moving the upload into place", e));
        }
        // cap-std opens directories O_PATH, which cannot be fsynced: open it for reading.
        home.open(parent.as_path())
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing a directory"))?;
        inner.finished = true;
        inner.reservation = None;
        self.space.set_unsaved(&self.key, None);
        space.update_index(|ix| {
            ix.partials.remove(&self.key);
            ix.committed_changed(self.size, replaced_bytes);
        });
        if let Some(old) = replaced.filter(|&ino| ino != stamp.ino) {
            Manifest::remove(&space.manifests, old);
        }
        if let Some(old) = held_old {
            old.release();
        }
        // After the rename, so a crash in between leaves state without data, which
        // `PartialMeta::load` recognises and removes; a listing may have done so already.
        match space.partials.remove_file(meta_name(&self.key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(error = %e, "removing the state of a committed upload failed; it is removed on next access");
            }
            _ => {}
        }
        Ok(Committed {
            size: self.size,
            digest: whole,
        })
    }
}
