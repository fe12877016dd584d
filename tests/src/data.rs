//! Test data written once for every test crate: deterministic pseudo-random bytes and an
//! independent BLAKE3, plus the sizes tests choose data by.

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// The protocol's chunk size, for sizes at chunk boundaries.
pub const CHUNK: usize = xfer_proto::CHUNK_SIZE;

/// Deterministic pseudo-random bytes (xorshift64*): fast, incompressible enough, and
/// different for each `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// BLAKE3 of `data` as lowercase hex, computed independently of the code under test.
pub fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}
