//! The two small JSON records xferd keeps in the bucket beside users' objects: the
//! manifest of a committed file and the state of an upload in progress. Both are
//! bounded by the file's size (one digest per MiB), never by what a peer declares
//! elsewhere, and a damaged record reads as absent.

use serde::{Deserialize, Serialize};
use xfer_proto::Digest;

/// The largest record read back (a 1 TiB file's manifest is about 70 MiB of hex; far
/// larger files would not fit one multipart upload anyway).
pub(super) const MAX_RECORD: u64 = 256 << 20;

/// What is known of a committed file (`manifests/<path>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FileManifest {
    /// Format version.
    pub v: u32,
    /// Size of the object.
    pub size: u64,
    /// The object's ETag when the manifest was written: a manifest whose ETag no
    /// longer matches belongs to an older object and is recomputed.
    pub etag: String,
    /// BLAKE3 of the whole file.
    pub digest: String,
    /// Modification time to show, seconds since the Unix epoch.
    pub modified_unix: u64,
    /// Chunk digests (hex), in order.
    pub chunks: Vec<String>,
    /// Set by `xferd migrate` (the local file's modification time): such an object may
    /// be replaced by a later migration run; one a user uploaded is left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated: Option<u64>,
}

impl FileManifest {
    pub fn new(size: u64, etag: String, chunks: &[Digest], modified_unix: u64) -> FileManifest {
        FileManifest {
            v: 1,
            size,
            etag,
            digest: Digest::of_chunks(chunks).to_string(),
            modified_unix,
            chunks: chunks.iter().map(Digest::to_string).collect(),
            migrated: None,
        }
    }

    /// Whether the manifest describes `meta`'s object: same size, same ETag. ETags are
    /// compared without their quotes and weak marker, which stores and proxies do not
    /// all keep alike.
    pub fn describes(&self, meta: &object_store::ObjectMeta) -> bool {
        self.size == meta.size
            && meta
                .e_tag
                .as_deref()
                .is_some_and(|e| bare_etag(e) == bare_etag(&self.etag))
    }

    /// The whole-file digest and chunk digests, if the record is well formed for a
    /// file of its size.
    pub fn digests(&self) -> Option<(Digest, Vec<Digest>)> {
        let digest = self.digest.parse().ok()?;
        let chunks: Vec<Digest> = self
            .chunks
            .iter()
            .map(|c| c.parse().ok())
            .collect::<Option<_>>()?;
        (chunks.len() as u64 == crate::storage::chunk_count(self.size)).then_some((digest, chunks))
    }
}

/// An ETag without its weak marker and quotes: `W/"abc"` and `"abc"` are `abc`.
pub(crate) fn bare_etag(etag: &str) -> &str {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"')
}

/// An upload in progress (`partials/<path>`): enough for any node to resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PartialRecord {
    /// Format version.
    pub v: u32,
    /// Destination, relative to the home.
    pub path: String,
    /// Final size.
    pub size: u64,
    /// The store's multipart upload id (empty for an empty file, which needs none).
    pub upload_id: String,
    /// Chunks per multipart part.
    pub part_chunks: u64,
    /// When the upload began.
    pub created_unix: u64,
    /// Last activity: the upload expires `partial_ttl_secs` after it.
    pub touched_unix: u64,
    /// Digests (hex) of the chunks in stored parts; `""` where not held.
    pub chunks: Vec<String>,
    /// ETags of the stored parts; `""` where not stored.
    pub parts: Vec<String>,
}

impl PartialRecord {
    /// Parts of an upload of `size` bytes at `part_chunks` chunks per part.
    pub fn part_count(size: u64, part_chunks: u64) -> u64 {
        crate::storage::chunk_count(size).div_ceil(part_chunks)
    }

    /// Whether the record is consistent with itself (lengths match the size).
    pub fn is_sound(&self) -> bool {
        self.v == 1
            && self.part_chunks > 0
            && self.chunks.len() as u64 == crate::storage::chunk_count(self.size)
            && self.parts.len() as u64 == Self::part_count(self.size, self.part_chunks)
    }

    /// Bytes of the chunks held.
    pub fn received(&self) -> u64 {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_empty())
            .map(|(i, _)| crate::storage::chunk_len(self.size, i as u64))
            .sum()
    }
}

/// Chunks per multipart part for a file of `size` bytes: 8 MiB parts (S3 wants at
/// least 5 MiB but the last), larger for files that would need more than 10,000.
pub(crate) fn part_chunks_for(size: u64) -> u64 {
    const MAX_PARTS: u64 = 10_000;
    crate::storage::chunk_count(size).div_ceil(MAX_PARTS).max(8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn etags_compare_without_quotes_or_weak_marker() {
        use super::bare_etag;
        assert_eq!(bare_etag("\"abc-3\""), "abc-3");
        assert_eq!(bare_etag("W/\"abc-3\""), "abc-3");
        assert_eq!(bare_etag("abc-3"), "abc-3");
        assert_ne!(bare_etag("\"abc\""), bare_etag("\"abd\""));
    }

    use super::*;

    #[test]
    fn parts_stay_within_the_s3_limits() {
        for size in [0, 1, 5 << 20, 8 << 20, (8 << 20) + 1, 1 << 40, 5 << 40] {
            let per = part_chunks_for(size);
            assert!(per * crate::storage::CHUNK_SIZE >= 5 << 20);
            assert!(PartialRecord::part_count(size, per) <= 10_000, "{size}");
        }
    }

    #[test]
    fn a_manifest_of_the_wrong_length_is_refused() {
        let d = Digest::of(b"x");
        let mut m = FileManifest::new(3 << 20, "e".into(), &[d, d, d], 0);
        assert!(m.digests().is_some());
        m.chunks.pop();
        assert!(m.digests().is_none());
    }
}
