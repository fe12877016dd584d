//! Content digests: BLAKE3, 32 bytes, written as 64 lowercase hex digits.
//!
//! BLAKE3 was chosen over SHA-256 for speed (several GB/s with SIMD), which keeps
//! hashing off the critical path of a transfer. A file's digest is plain BLAKE3 (what
//! `b3sum` prints). A chunk's digest is the BLAKE3 *chaining value* of the subtree its
//! bytes form in the file's hash tree ([`Digest::of_chunk`]), so the whole-file digest
//! follows from the chunk digests alone ([`Digest::of_chunks`]) and each side of a
//! transfer hashes every byte once, not once per chunk and again for the file. This
//! module only names, computes and formats digests; deciding what to hash is the job of
//! the transfer code.

use std::fmt;
use std::str::FromStr;

use blake3::hazmat::{
    ChainingValue, HasherExt as _, Mode, max_subtree_len, merge_subtrees_non_root,
    merge_subtrees_root,
};
use serde::{Deserialize, Serialize};

/// The smallest unit of BLAKE3's tree (1 KiB). Chunk sizes for [`Digest::of_chunk`] are
/// powers of two no smaller than this.
pub const MIN_CHUNK_SIZE: usize = blake3::CHUNK_LEN;

/// A BLAKE3 digest of some bytes (a chunk or a whole file).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `data` in one go.
    pub fn of(data: &[u8]) -> Self {
        Digest(*blake3::hash(data).as_bytes())
    }

    /// The digest of one chunk of a file of `file_size` bytes: `data` found at `offset`,
    /// where the file is cut into chunks of one power-of-two size of at least
    /// [`MIN_CHUNK_SIZE`] (the last one may be shorter). It is the BLAKE3 chaining value
    /// of the subtree covering those bytes, or, when `data` is the whole file, the file's
    /// BLAKE3. It therefore depends on where the data sits, not only on the data.
    ///
    /// `None` when `data` cannot be such a chunk: empty, past `file_size`, `offset` not a
    /// multiple of [`MIN_CHUNK_SIZE`], or longer than a subtree starting at `offset` can
    /// be (a chunk longer than the chunk size its offset implies). Never panics.
    pub fn of_chunk(data: &[u8], offset: u64, file_size: u64) -> Option<Digest> {
        let len = data.len() as u64;
        let fits = offset.checked_add(len).is_some_and(|end| end <= file_size);
        if len == 0 || !fits || !offset.is_multiple_of(MIN_CHUNK_SIZE as u64) {
            return None;
        }
        if offset == 0 && len == file_size {
            return Some(Digest::of(data));
        }
        if max_subtree_len(offset).is_some_and(|max| len > max) {
            return None;
        }
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        hasher.update(data);
        Some(Digest(hasher.finalize_non_root()))
    }

    /// The digest of a whole file from the digests of all its chunks, in order, as
    /// [`Digest::of_chunk`] computes them: equal to [`Digest::of`] of the file's bytes.
    /// Merging costs one compression per chunk, nothing per byte.
    pub fn of_chunks(chunks: &[Digest]) -> Digest {
        match chunks {
            [] => Digest::of(b""),
            [whole] => *whole,
            _ => {
                let (left, right) = split_subtrees(chunks);
                let root = merge_subtrees_root(&subtree(left), &subtree(right), Mode::Hash);
                Digest(*root.as_bytes())
            }
        }
    }

    /// Starts an incremental hash, for data that arrives in pieces.
    pub fn hasher() -> Hasher {
        Hasher(blake3::Hasher::new())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// An incremental BLAKE3 hasher producing a [`Digest`].
#[derive(Clone, Default)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    /// The digest of everything fed so far.
    pub fn finalize(&self) -> Digest {
        Digest(*self.0.finalize().as_bytes())
    }
}

/// The chaining value of the subtree over `chunks` (not the root).
fn subtree(chunks: &[Digest]) -> ChainingValue {
    if let [one] = chunks {
        return one.0;
    }
    let (left, right) = split_subtrees(chunks);
    merge_subtrees_non_root(&subtree(left), &subtree(right), Mode::Hash)
}

/// BLAKE3's split of `n ≥ 2` equal-size chunks (the last may be shorter): the left
/// subtree takes the largest power of two strictly less than `n`. With power-of-two
/// chunk sizes this is the same split BLAKE3 makes on the bytes.
fn split_subtrees(chunks: &[Digest]) -> (&[Digest], &[Digest]) {
    let n = chunks.len();
    debug_assert!(n >= 2);
    let left = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    chunks.split_at(left)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Error from parsing a hex digest.
#[derive(Debug, thiserror::Error)]
#[error("a digest is 64 hex digits, got {0:?}")]
pub struct ParseDigestError(String);

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseDigestError(s.chars().take(80).collect());
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Digest(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_value() {
        let d = Digest::of(b"");
        // BLAKE3 of the empty input, from the BLAKE3 test vectors.
        assert_eq!(
            d.to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("xyz".parse::<Digest>().is_err());
        assert!("g".repeat(64).parse::<Digest>().is_err());
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The file's digest from its chunk digests equals plain BLAKE3 (what `b3sum`
    /// prints), for every chunk size and awkward lengths around chunk boundaries.
    #[test]
    fn chunk_digests_combine_into_the_file_digest() {
        let data = pseudo_random(9 * 4096 + 1);
        let sizes = [
            0, 1, 1023, 1024, 1025, 2048, 3000, 4095, 4096, 4097, 8192, 12_288, 12_289, 20_480,
            36_864, 36_865,
        ];
        for chunk in [1024usize, 2048, 4096] {
            for size in sizes.into_iter().filter(|&s| s <= data.len()) {
                let file = &data[..size];
                let digests: Vec<Digest> = file
                    .chunks(chunk)
                    .enumerate()
                    .map(|(i, c)| Digest::of_chunk(c, (i * chunk) as u64, size as u64).unwrap())
                    .collect();
                assert_eq!(
                    Digest::of_chunks(&digests),
                    Digest::of(file),
                    "size {size}, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn chunk_digests_at_the_protocol_chunk_size_match_blake3() {
        let cs = crate::CHUNK_SIZE;
        let data = pseudo_random(5 * cs + 77);
        for size in [cs - 1, cs, cs + 1, 2 * cs, 3 * cs + 5, 5 * cs + 77] {
            let file = &data[..size];
            let digests: Vec<Digest> = file
                .chunks(cs)
                .enumerate()
                .map(|(i, c)| Digest::of_chunk(c, (i * cs) as u64, size as u64).unwrap())
                .collect();
            assert_eq!(Digest::of_chunks(&digests), Digest::of(file), "size {size}");
        }
        // A one-chunk file's chunk digest is the file's digest.
        assert_eq!(Digest::of_chunk(b"abc", 0, 3), Some(Digest::of(b"abc")));
    }

    #[test]
    fn chunk_digests_depend_on_position_and_refuse_impossible_chunks() {
        let block = pseudo_random(2048);
        let at0 = Digest::of_chunk(&block, 0, 8192).unwrap();
        let at2k = Digest::of_chunk(&block, 2048, 8192).unwrap();
        assert_ne!(at0, at2k, "the same bytes elsewhere have another digest");
        assert_ne!(
            at0,
            Digest::of(&block),
            "a part is not hashed as a whole file"
        );
        assert_eq!(Digest::of_chunk(&[], 0, 10), None, "empty");
        assert_eq!(
            Digest::of_chunk(&block, 100, 8192),
            None,
            "unaligned offset"
        );
        assert_eq!(Digest::of_chunk(&block, 8000, 8192), None, "past the end");
        assert_eq!(Digest::of_chunk(&block, u64::MAX - 10, u64::MAX), None);
        // 2 KiB cannot start at offset 1 KiB: that subtree holds at most 1 KiB.
        assert_eq!(Digest::of_chunk(&block, 1024, 8192), None, "too long");
    }

    #[test]
    fn incremental_matches_one_shot() {
        let mut h = Digest::hasher();
        h.update(b"hello ").update(b"world");
        assert_eq!(h.finalize(), Digest::of(b"hello world"));
    }
}
