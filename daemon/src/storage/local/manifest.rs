//! Manifests of committed files: every chunk's digest and the whole file's.
//!
//! A manifest is written at commit into `<user>/manifests/<inode>.json` and is valid only
//! while the file's size and modification time (to the nanosecond) still match; a stale
//! or missing one is recomputed by hashing the file when a download or a conflict check
//! needs it. Listings never hash a large file: they show no digest instead.
//!
//! A file of at most [`COMPUTED_UP_TO`] bytes (one chunk) keeps no manifest file: its
//! chunk digest, with the size and time it is valid for, is an extended attribute of the
//! file itself ([`TAG`], written before the file is made durable and renamed into
//! place), so it costs no inode, block or rename of its own: a manifest file per small
//! file was most of the server's work for a tree of small files on some filesystems
//! (bench/RESULTS.md). Where the filesystem keeps no user attributes, or the tag is
//! missing or stale, the digest is computed from the data (one small read and a hash),
//! listings included. As with manifests, downloads send the recorded digest, so damage
//! on disk is caught by the receiver whenever the tag was there.

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

/// The extended attribute holding a small file's manifest: [`DIGEST_SCHEME`] (1 byte),
/// size (8, little-endian), modification time in nanoseconds (16), chunk digest (32;
/// none for an empty file).
pub(crate) const TAG: &str = "user.xfer.digest";

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
    /// The manifest for `stamp`, if one is stored and still matches the file. Never for
    /// a small file: one stored for it (before small files kept none, or a leftover of a
    /// file whose inode it reuses) is not trusted.
    pub fn load(manifests: &Dir, stamp: Stamp) -> Option<Manifest> {
        if !is_stored_for(stamp.size) {
            return None;
        }
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
            if let Some(m) = Self::read_tag(file, stamp) {
                return Ok(m);
            }
            let m = Self::of_small(file, stamp).ok_or_else(|| {
                StorageError::Conflict("the file changed while being hashed".into())
            })?;
            m.tag(file, stamp);
            return Ok(m);
        }
        if let Some(m) = Self::load(manifests, stamp) {
            return Ok(m);
        }
        let m = Self::compute(file, stamp.size)?;
        // Store it only if the file did not change while it was hashed.
        let after = file.metadata().map_err(io_err("reading file metadata"))?;
        // ...and still has a name: a manifest stored for a file removed meanwhile would
        // outlive it, keyed by an inode the next file may get.
        if after.len() == stamp.size
            && std::os::unix::fs::MetadataExt::nlink(&after) > 0
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

    /// Keeps this manifest of a small `file` of version `stamp` on the file itself
    /// ([`TAG`]). Best effort: without it the digest is computed when asked.
    pub fn tag(&self, file: &std::fs::File, stamp: Stamp) {
        let mut value = Vec::with_capacity(57);
        value.push(DIGEST_SCHEME as u8);
        value.extend_from_slice(&stamp.size.to_le_bytes());
        value.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        if let Some(chunk) = self.chunks.first() {
            value.extend_from_slice(chunk.as_bytes());
        }
        if let Err(e) = rustix::fs::fsetxattr(file, TAG, &value, rustix::fs::XattrFlags::empty()) {
            tracing::debug!(error = %e, "could not tag a small file with its digest");
        }
    }

    /// The manifest a small `file` is tagged with, if the tag is there and is for the
    /// version `stamp` describes.
    pub fn read_tag(file: &std::fs::File, stamp: Stamp) -> Option<Manifest> {
        let mut value = [0u8; 64];
        let len = rustix::fs::fgetxattr(file, TAG, &mut value[..]).ok()?;
        let (scheme, rest) = value[..len].split_first()?;
        let (size, rest) = rest.split_first_chunk::<8>()?;
        let (mtime, rest) = rest.split_first_chunk::<16>()?;
        if u32::from(*scheme) != DIGEST_SCHEME
            || u64::from_le_bytes(*size) != stamp.size
            || i128::from_le_bytes(*mtime) != stamp.mtime_ns
            || is_stored_for(stamp.size)
        {
            return None;
        }
        let chunks = match (stamp.size, <[u8; 32]>::try_from(rest)) {
            (0, _) if rest.is_empty() => Vec::new(),
            (1.., Ok(chunk)) => vec![Digest(chunk)],
            _ => return None,
        };
        Some(Manifest {
            digest: Digest::of_chunks(&chunks),
            chunks,
        })
    }
}
