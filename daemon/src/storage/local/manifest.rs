//! Manifests of committed files: every chunk's digest and the whole file's.
//!
//! A manifest is written at commit into `<user>/manifests/<inode>.json` and is valid only
//! while the file's size and modification time (to the nanosecond) still match; a stale
//! or missing one is recomputed by hashing the file when a download or a conflict check
//! needs it. Listings never hash a large file: they show no digest instead.
//!
//! A file of at most [`COMPUTED_UP_TO`] bytes keeps no manifest: its digest is computed
//! from the data whenever it is asked for, listings included (one small read and a hash,
//! less than reading and parsing the manifest's own file). A manifest per small file
//! cost a second inode, block and rename for every file written, which was most of the
//! server's work for a tree of small files on some filesystems (bench/RESULTS.md).

use std::io::Read;

use cap_std::fs::{Dir, Metadata, MetadataExt};
use serde::{Deserialize, Serialize};
use xfer_proto::{ChunkLayout, Digest};

use super::private;
use crate::storage::{StorageError, io_err};

/// How chunk digests in `.meta` and manifest files are computed: 2 = subtree chaining
/// values (protocol v2). Files written with another scheme (0 = absent: plain BLAKE3
/// per chunk, protocol v1) are recomputed or discarded, never trusted.
pub(crate) const DIGEST_SCHEME: u32 = 2;

/// Files up to this size keep no stored manifest (see the module's documentation).
pub(crate) const COMPUTED_UP_TO: u64 = 64 << 10;

/// Whether a file of `size` bytes keeps a stored manifest.
pub(crate) fn is_stored_for(size: u64) -> bool {
    size > COMPUTED_UP_TO
}

/// What identifies one version of a committed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }

    pub fn modified_unix(&self) -> u64 {
        u64::try_from(self.mtime_ns / 1_000_000_000).unwrap_or(0)
    }

    fn file_name(&self) -> String {
        format!("{}.json", self.ino)
    }
}

/// Chunk digests and the whole-file digest of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub digest: Digest,
    pub chunks: Vec<Digest>,
}

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    /// [`DIGEST_SCHEME`] of `chunks`; a manifest of another scheme is recomputed.
    #[serde(default)]
    digests: u32,
    size: u64,
    mtime_ns: i128,
    digest: String,
    chunks: Vec<String>,
}

impl Manifest {
    /// The manifest for `stamp`, if one is stored and still matches the file.
    pub fn load(manifests: &Dir, stamp: Stamp) -> Option<Manifest> {
        let text = manifests.read(stamp.file_name()).ok()?;
        let f: ManifestFile = serde_json::from_slice(&text).ok()?;
        if f.size != stamp.size || f.mtime_ns != stamp.mtime_ns || f.digests != DIGEST_SCHEME {
            return None;
        }
        let chunks = f
            .chunks
            .iter()
            .map(|h| h.parse().ok())
            .collect::<Option<Vec<Digest>>>()?;
        if chunks.len() as u64 != ChunkLayout::standard(stamp.size).count() {
            return None;
        }
        Some(Manifest {
            digest: f.digest.parse().ok()?,
            chunks,
        })
    }

    /// Stores the manifest for `stamp` (atomically: temporary file, then rename).
    pub fn store(&self, manifests: &Dir, stamp: Stamp) -> Result<(), StorageError> {
        let f = ManifestFile {
            digests: DIGEST_SCHEME,
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            digest: self.digest.to_string(),
            chunks: self.chunks.iter().map(ToString::to_string).collect(),
        };
        let json = serde_json::to_vec(&f).expect("a manifest always serialises");
        let tmp = format!("{}.tmp", stamp.file_name());
        private::write_synced(manifests, &tmp, &json).map_err(io_err("writing a manifest"))?;
        manifests
            .rename(&tmp, manifests, stamp.file_name())
            .map_err(io_err("writing a manifest"))
    }

    /// Writes the manifest for `stamp` to a temporary without flushing it (a batch of
    /// commits makes it durable with its data, `batch.rs`); returns the temporary's name,
    /// for [`Manifest::publish`].
    pub fn stage(&self, manifests: &Dir, stamp: Stamp) -> Result<String, StorageError> {
        let f = ManifestFile {
            digests: DIGEST_SCHEME,
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            digest: self.digest.to_string(),
            chunks: self.chunks.iter().map(ToString::to_string).collect(),
        };
        let json = serde_json::to_vec(&f).expect("a manifest always serialises");
        let tmp = format!("{}.tmp", stamp.file_name());
        private::write_unsynced(manifests, &tmp, &json).map_err(io_err("writing a manifest"))?;
        Ok(tmp)
    }

    /// Puts a manifest [`Manifest::stage`]d as `tmp` in place for `stamp`.
    pub fn publish(manifests: &Dir, tmp: &str, stamp: Stamp) -> Result<(), StorageError> {
        manifests
            .rename(tmp, manifests, stamp.file_name())
            .map_err(io_err("writing a manifest"))
    }

    /// Forgets the manifest of inode `ino` (best effort: a stale one is never used).
    pub fn remove(manifests: &Dir, ino: u64) {
        let _ = manifests.remove_file(format!("{ino}.json"));
    }

    /// Hashes a file: every chunk, once; the whole-file digest follows from those.
    pub fn compute(file: &std::fs::File, size: u64) -> Result<Manifest, StorageError> {
        let layout = ChunkLayout::standard(size);
        let mut chunks = Vec::with_capacity(layout.count() as usize);
        let mut buf = vec![0u8; u64::from(layout.chunk_size()).min(size) as usize];
        let mut reader = file;
        let changed = || StorageError::Conflict("the file changed while being hashed".into());
        for i in 0..layout.count() {
            let len = layout.chunk_len(i) as usize;
            reader.read_exact(&mut buf[..len]).map_err(|_| changed())?;
            let digest = Digest::of_chunk(&buf[..len], layout.offset(i), size);
            chunks.push(digest.ok_or_else(changed)?);
        }
        Ok(Manifest {
            digest: Digest::of_chunks(&chunks),
            chunks,
        })
    }

    /// The stored manifest of the open `file`, or a fresh one (then stored, unless the
    /// file is small enough to keep none).
    pub fn load_or_compute(
        manifests: &Dir,
        file: &std::fs::File,
        stamp: Stamp,
    ) -> Result<Manifest, StorageError> {
        if !is_stored_for(stamp.size) {
            return Self::of_small(file, stamp).ok_or_else(|| {
                StorageError::Conflict("the file changed while being hashed".into())
            });
        }
        if let Some(m) = Self::load(manifests, stamp) {
            return Ok(m);
        }
        let m = Self::compute(file, stamp.size)?;
        // Store it only if the file did not change while it was hashed.
        let after = file.metadata().map_err(io_err("reading file metadata"))?;
        if after.len() == stamp.size
            && Stamp::of(&Metadata::from_just_metadata(after)) == stamp
            && let Err(e) = m.store(manifests, stamp)
        {
            tracing::warn!(error = %e, "could not store a file manifest");
        }
        Ok(m)
    }

    /// The manifest of a small `file` (one that keeps none), from its data, if the file
    /// is still the version `stamp` describes once read.
    pub fn of_small(file: &std::fs::File, stamp: Stamp) -> Option<Manifest> {
        let mut reader = file;
        let mut data = Vec::with_capacity(stamp.size as usize);
        (&mut reader)
            .take(stamp.size + 1)
            .read_to_end(&mut data)
            .ok()?;
        let now = Stamp::of(&Metadata::from_file(file).ok()?);
        if now != stamp || data.len() as u64 != stamp.size {
            return None;
        }
        let chunks = if data.is_empty() {
            Vec::new()
        } else {
            vec![Digest::of_chunk(&data, 0, stamp.size)?]
        };
        Some(Manifest {
            digest: Digest::of_chunks(&chunks),
            chunks,
        })
    }
}
