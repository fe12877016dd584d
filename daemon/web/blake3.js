// BLAKE3 (hash mode, 32-byte output) in plain JavaScript, small and allocation-free in its
// inner loop. Besides the ordinary digest it exposes the pieces of BLAKE3's tree that let
// the page hash a file in parallel without reading it twice: a protocol chunk (1 MiB, a
// power of two of BLAKE3's 1 KiB chunks) is a complete subtree, so a worker returns its
// chaining value at its position in the file and the page joins those with the parent rule.

const IV = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8;
export const CHUNK_LEN = 1024;
const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

// One compression. Reads the chaining value cv[co..co+8] and the block m[mo..mo+16];
// writes the first 8 output words (or all 16 when `full`) to out[oo..].
function compress(cv, co, m, mo, counter, len, flags, out, oo, full) {
  let m0 = m[mo], m1 = m[mo + 1], m2 = m[mo + 2], m3 = m[mo + 3], m4 = m[mo + 4], m5 = m[mo + 5],
    m6 = m[mo + 6], m7 = m[mo + 7], m8 = m[mo + 8], m9 = m[mo + 9], m10 = m[mo + 10],
    m11 = m[mo + 11], m12 = m[mo + 12], m13 = m[mo + 13], m14 = m[mo + 14], m15 = m[mo + 15];
  let v0 = cv[co], v1 = cv[co + 1], v2 = cv[co + 2], v3 = cv[co + 3], v4 = cv[co + 4],
    v5 = cv[co + 5], v6 = cv[co + 6], v7 = cv[co + 7], v8 = IV[0], v9 = IV[1], v10 = IV[2],
    v11 = IV[3], v12 = counter | 0, v13 = (counter / 0x100000000) | 0, v14 = len, v15 = flags;
  for (let r = 0; r < 7; r++) {
    // Columns.
    v0 = (v0 + v4 + m0) | 0; v12 ^= v0; v12 = (v12 >>> 16) | (v12 << 16);
    v8 = (v8 + v12) | 0; v4 ^= v8; v4 = (v4 >>> 12) | (v4 << 20);
    v0 = (v0 + v4 + m1) | 0; v12 ^= v0; v12 = (v12 >>> 8) | (v12 << 24);
    v8 = (v8 + v12) | 0; v4 ^= v8; v4 = (v4 >>> 7) | (v4 << 25);
    v1 = (v1 + v5 + m2) | 0; v13 ^= v1; v13 = (v13 >>> 16) | (v13 << 16);
    v9 = (v9 + v13) | 0; v5 ^= v9; v5 = (v5 >>> 12) | (v5 << 20);
    v1 = (v1 + v5 + m3) | 0; v13 ^= v1; v13 = (v13 >>> 8) | (v13 << 24);
    v9 = (v9 + v13) | 0; v5 ^= v9; v5 = (v5 >>> 7) | (v5 << 25);
    v2 = (v2 + v6 + m4) | 0; v14 ^= v2; v14 = (v14 >>> 16) | (v14 << 16);
    v10 = (v10 + v14) | 0; v6 ^= v10; v6 = (v6 >>> 12) | (v6 << 20);
    v2 = (v2 + v6 + m5) | 0; v14 ^= v2; v14 = (v14 >>> 8) | (v14 << 24);
    v10 = (v10 + v14) | 0; v6 ^= v10; v6 = (v6 >>> 7) | (v6 << 25);
    v3 = (v3 + v7 + m6) | 0; v15 ^= v3; v15 = (v15 >>> 16) | (v15 << 16);
    v11 = (v11 + v15) | 0; v7 ^= v11; v7 = (v7 >>> 12) | (v7 << 20);
    v3 = (v3 + v7 + m7) | 0; v15 ^= v3; v15 = (v15 >>> 8) | (v15 << 24);
    v11 = (v11 + v15) | 0; v7 ^= v11; v7 = (v7 >>> 7) | (v7 << 25);
    // Diagonals.
    v0 = (v0 + v5 + m8) | 0; v15 ^= v0; v15 = (v15 >>> 16) | (v15 << 16);
    v10 = (v10 + v15) | 0; v5 ^= v10; v5 = (v5 >>> 12) | (v5 << 20);
    v0 = (v0 + v5 + m9) | 0; v15 ^= v0; v15 = (v15 >>> 8) | (v15 << 24);
    v10 = (v10 + v15) | 0; v5 ^= v10; v5 = (v5 >>> 7) | (v5 << 25);
    v1 = (v1 + v6 + m10) | 0; v12 ^= v1; v12 = (v12 >>> 16) | (v12 << 16);
    v11 = (v11 + v12) | 0; v6 ^= v11; v6 = (v6 >>> 12) | (v6 << 20);
    v1 = (v1 + v6 + m11) | 0; v12 ^= v1; v12 = (v12 >>> 8) | (v12 << 24);
    v11 = (v11 + v12) | 0; v6 ^= v11; v6 = (v6 >>> 7) | (v6 << 25);
    v2 = (v2 + v7 + m12) | 0; v13 ^= v2; v13 = (v13 >>> 16) | (v13 << 16);
    v8 = (v8 + v13) | 0; v7 ^= v8; v7 = (v7 >>> 12) | (v7 << 20);
    v2 = (v2 + v7 + m13) | 0; v13 ^= v2; v13 = (v13 >>> 8) | (v13 << 24);
    v8 = (v8 + v13) | 0; v7 ^= v8; v7 = (v7 >>> 7) | (v7 << 25);
    v3 = (v3 + v4 + m14) | 0; v14 ^= v3; v14 = (v14 >>> 16) | (v14 << 16);
    v9 = (v9 + v14) | 0; v4 ^= v9; v4 = (v4 >>> 12) | (v4 << 20);
    v3 = (v3 + v4 + m15) | 0; v14 ^= v3; v14 = (v14 >>> 8) | (v14 << 24);
    v9 = (v9 + v14) | 0; v4 ^= v9; v4 = (v4 >>> 7) | (v4 << 25);
    // BLAKE3's message permutation, for the next round.
    const t0 = m0, t1 = m1, t4 = m4, t5 = m5, t8 = m8, t9 = m9;
    m0 = m2; m1 = m6; m2 = m3; m3 = m10; m4 = m7; m5 = t0; m6 = t4; m7 = m13;
    m8 = t1; m9 = m11; m10 = m12; m11 = t5; m12 = t9; m13 = m14; m14 = m15; m15 = t8;
  }
  if (full) {
    out[oo + 8] = v8 ^ cv[co]; out[oo + 9] = v9 ^ cv[co + 1]; out[oo + 10] = v10 ^ cv[co + 2];
    out[oo + 11] = v11 ^ cv[co + 3]; out[oo + 12] = v12 ^ cv[co + 4]; out[oo + 13] = v13 ^ cv[co + 5];
    out[oo + 14] = v14 ^ cv[co + 6]; out[oo + 15] = v15 ^ cv[co + 7];
  }
  out[oo] = v0 ^ v8; out[oo + 1] = v1 ^ v9; out[oo + 2] = v2 ^ v10; out[oo + 3] = v3 ^ v11;
  out[oo + 4] = v4 ^ v12; out[oo + 5] = v5 ^ v13; out[oo + 6] = v6 ^ v14; out[oo + 7] = v7 ^ v15;
}

// The output of a chunk or parent node before its last compression: the caller decides
// whether it becomes a chaining value (inside the tree) or the root digest.
function newOutput() {
  return { cv: new Uint32Array(8), block: new Uint32Array(16), counter: 0, len: 0, flags: 0 };
}

function chainingValue(o, dst, off) {
  compress(o.cv, 0, o.block, 0, o.counter, o.len, o.flags, dst, off, false);
}

function rootBytes(o) {
  const w = new Uint32Array(8);
  compress(o.cv, 0, o.block, 0, 0, o.len, o.flags | ROOT, w, 0, false);
  return wordsToBytes(w);
}

function wordsToBytes(w) {
  const b = new Uint8Array(32);
  for (let i = 0; i < 8; i++) {
    b[4 * i] = w[i]; b[4 * i + 1] = w[i] >>> 8; b[4 * i + 2] = w[i] >>> 16; b[4 * i + 3] = w[i] >>> 24;
  }
  return b;
}

// The input as little-endian words, without a copy when the platform and alignment allow.
function asWords(bytes) {
  if (LITTLE && bytes.byteOffset % 4 === 0) {
    return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  }
  const w = new Uint32Array(bytes.length >>> 2);
  for (let i = 0; i < w.length; i++) {
    const j = 4 * i;
    w[i] = bytes[j] | (bytes[j + 1] << 8) | (bytes[j + 2] << 16) | (bytes[j + 3] << 24);
  }
  return w;
}

// One 1 KiB chunk at byte `pos`, `len` bytes (0..1024): all blocks but the last are
// compressed; the last is left in `o`.
function chunk(words, bytes, pos, len, counter, o) {
  o.cv.set(IV);
  let flags = CHUNK_START, off = 0;
  for (; len - off > 64; off += 64) {
    compress(o.cv, 0, words, (pos + off) >>> 2, counter, 64, flags, o.cv, 0, false);
    flags = 0;
  }
  const last = len - off;
  o.block.fill(0);
  for (let i = 0; i < last; i++) {
    const b = bytes[pos + off + i];
    o.block[i >>> 2] |= b << (8 * (i & 3));
  }
  o.counter = counter; o.len = last; o.flags = flags | CHUNK_END;
}

function parentOf(o, words, wo) {
  o.cv.set(IV);
  o.block.set(words.subarray(wo, wo + 16));
  o.counter = 0; o.len = 64; o.flags = PARENT;
}

// The plain JavaScript engine: the chaining value of the complete subtree of `count` (a
// power of two) whole chunks from chunk `first` of the input given to `load`, whose first
// chunk has counter `counter`, into dst[off..off+8]. b3simd.js has the same interface.
export const JS_ENGINE = {
  name: 'js',
  words: null,
  bytes: null,
  load(bytes) {
    this.bytes = bytes;
    this.words = asWords(bytes);
  },
  subtree(first, count, counter, dst, off) {
    const o = newOutput();
    const stack = new Uint32Array(8 * 64);
    let sp = 0;
    for (let i = 0; i < count; i++) {
      chunk(this.words, this.bytes, (first + i) * CHUNK_LEN, CHUNK_LEN, counter + i, o);
      chainingValue(o, stack, 8 * sp++);
      for (let total = i + 1; (total & 1) === 0; total >>>= 1) {
        sp--;
        compress(IV, 0, stack, 8 * (sp - 1), 0, 64, PARENT, stack, 8 * (sp - 1), false);
      }
    }
    dst.set(stack.subarray(0, 8), off);
  },
};

// BLAKE3's tree over bytes[0..len] whose first chunk has counter `c0` (a multiple of a
// power of two at least as large as the input), leaving the top node's output in `o`.
// Going left to right, the tree is a run of complete subtrees of whole chunks, each the
// largest power of two that leaves at least one byte to its right, then the last chunk:
// the engine hashes the subtrees, and their chaining values fold into the last chunk's
// output from the right.
function tree(bytes, c0, o, engine) {
  const words = asWords(bytes);
  const n = Math.max(1, Math.ceil(bytes.length / CHUNK_LEN));
  const stack = new Uint32Array(8 * 64);
  let sp = 0, first = 0;
  if (n > 1) engine.load(bytes);
  while (n - first > 1) {
    let count = 1;
    while (2 * count < n - first) count *= 2;
    engine.subtree(first, count, c0 + first, stack, 8 * sp++);
    first += count;
  }
  chunk(words, bytes, first * CHUNK_LEN, bytes.length - first * CHUNK_LEN, c0 + first, o);
  foldStack(o, stack, sp);
}

// Finalisation: merges the right edge from the top of the stack down into `o`.
function foldStack(o, stack, sp) {
  const pair = new Uint32Array(16);
  while (sp > 0) {
    sp--;
    pair.set(stack.subarray(8 * sp, 8 * sp + 8), 0);
    chainingValue(o, pair, 8);
    parentOf(o, pair, 0);
  }
}

/** The BLAKE3 digest (32 bytes) of `bytes` (a Uint8Array), with `engine` for the bulk. */
export function hash(bytes, engine = JS_ENGINE) {
  const o = newOutput();
  tree(bytes, 0, o, engine);
  return rootBytes(o);
}

/**
 * For protocol chunk `index` of a file (bytes = that chunk, `unit` = the protocol chunk size,
 * a power of two times 1 KiB): its chaining value at its place in the file's tree (the
 * protocol's chunk digest, and what `fileDigest` joins) and its digest as a file of its own
 * (the protocol's chunk digest when the file is this one chunk). One pass over the bytes
 * for the first chunk; `standalone` = false skips the second pass for the others.
 */
export function chunkDigests(bytes, index, unit, standalone = true, engine = JS_ENGINE) {
  const o = newOutput();
  const cv = new Uint32Array(8);
  let digest = null;
  if (index === 0 || standalone) {
    tree(bytes, 0, o, engine);
    digest = rootBytes(o);
  }
  if (index > 0) tree(bytes, index * (unit / CHUNK_LEN), o, engine);
  chainingValue(o, cv, 0);
  return { digest, cv };
}

/** The chaining value's 32 bytes (little-endian words), as the protocol writes it. */
export function cvBytes(cv) {
  return wordsToBytes(cv);
}

/**
 * The whole file's digest from its protocol chunks' chaining values (in order) and the first
 * chunk's own digest (which is the file's digest when there is only one chunk).
 */
export function fileDigest(cvs, firstDigest) {
  if (cvs.length === 0) return hash(new Uint8Array(0));
  if (cvs.length === 1) return firstDigest;
  const stack = new Uint32Array(8 * 64);
  let sp = 0;
  for (let i = 0; i < cvs.length - 1; i++) {
    stack.set(cvs[i], 8 * sp++);
    for (let total = i + 1; (total & 1) === 0; total >>>= 1) {
      sp--;
      compress(IV, 0, stack, 8 * (sp - 1), 0, 64, PARENT, stack, 8 * (sp - 1), false);
    }
  }
  // The last chunk's chaining value stands in for the last node's output.
  const o = newOutput();
  const pair = new Uint32Array(16);
  sp--;
  pair.set(stack.subarray(8 * sp, 8 * sp + 8), 0);
  pair.set(cvs[cvs.length - 1], 8);
  parentOf(o, pair, 0);
  foldStack(o, stack, sp);
  return rootBytes(o);
}

export function toHex(bytes) {
  let s = '';
  for (const b of bytes) s += (b < 16 ? '0' : '') + b.toString(16);
  return s;
}
