// BLAKE3 with 128-bit WebAssembly SIMD: four inputs compressed at once, one per i32x4 lane
// (the reference implementation's "hash_many"). The module is assembled here, byte by
// byte, when a worker starts: the project has no wasm toolchain and ships no binary blob,
// and the code below is the whole of it. blake3.js keeps the tree; this file gives it an
// engine that turns complete subtrees of whole 1 KiB chunks into chaining values, the
// bulk of every upload. A browser without wasm SIMD (or a CSP without
// 'wasm-unsafe-eval') gets null from `simdEngine` and the page hashes in JavaScript.

const IV = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const CHUNK_START = 1, CHUNK_END = 2, PARENT = 4;
const CHUNK_LEN = 1024, BLOCK_LEN = 64, CV_LEN = 32;
const PAGE = 65536;
// The message word order of each of the 7 rounds (BLAKE3's permutation applied r times).
const SCHEDULE = (() => {
  const perm = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
  const out = [[...Array(16).keys()]];
  for (let r = 1; r < 7; r++) out.push(perm.map((p) => out[r - 1][p]));
  return out;
})();

// --- Encoding -------------------------------------------------------------------------

function uleb(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n) {
  const out = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) return [...out, b];
    out.push(b | 0x80);
  }
}

const section = (id, body) => [id, ...uleb(body.length), ...body];
const vec = (items) => [...uleb(items.length), ...items.flat()];
const name = (s) => vec([...s].map((c) => c.charCodeAt(0)));

const I32 = 0x7f, V128 = 0x7b;
// Core opcodes, and the SIMD ones (0xfd prefix, LEB128 sub-opcode).
const op = {
  block: 0x02, loop: 0x03, end: 0x0b, br_if: 0x0d, select: 0x1b,
  get: 0x20, set: 0x21, tee: 0x22, i32const: 0x41,
  i32eqz: 0x45, i32eq: 0x46, i32ltu: 0x49, i32add: 0x6a, i32mul: 0x6c, i32or: 0x72, i32shl: 0x74,
};
const simd = (n, ...imm) => [0xfd, ...uleb(n), ...imm];
const memarg = (offset) => [4, ...uleb(offset)]; // align 2^4: the loads are 16-byte aligned
const v128load = (offset) => simd(0x00, ...memarg(offset));
const v128store = (offset) => simd(0x0b, ...memarg(offset));
const shuffle = (lanes) => simd(0x0d, ...lanes);
const i32x4splat = simd(0x11);
const i32x4replace = (lane) => simd(0x1c, lane);
const v128or = simd(0x50), v128xor = simd(0x51);
const i32x4shl = simd(0xab), i32x4shru = simd(0xad), i32x4add = simd(0xae);

// Byte shuffles: rotate each 32-bit lane right by 16 or 8; interleave 32- and 64-bit lanes
// of two vectors (the 4x4 transposes between "one input per vector" and "one word per vector").
const perLane = (f) => [0, 1, 2, 3].flatMap((i) => f(4 * i));
const ROT16 = perLane((b) => [b + 2, b + 3, b, b + 1]);
const ROT8 = perLane((b) => [b + 1, b + 2, b + 3, b]);
const words = (...w) => w.flatMap((x) => [4 * x, 4 * x + 1, 4 * x + 2, 4 * x + 3]);
const LO32 = words(0, 4, 1, 5), HI32 = words(2, 6, 3, 7);
const LO64 = words(0, 1, 4, 5), HI64 = words(2, 3, 6, 7);

// --- The function ---------------------------------------------------------------------

// hashMany(input, groups, blocks, counterLo, counterHi, counterStep, flags, flagsStart,
// flagsEnd, output): for each group of four inputs of `blocks` 64-byte blocks each, laid
// one after another from `input`, the four chaining values (32 bytes each, in input order)
// from `output` + 128 * group. Input i has counter `counter + i * counterStep` (step 1 for
// chunks, 0 for parents); its first block adds flagsStart, its last flagsEnd.
const P = {
  input: 0, groups: 1, blocks: 2, ctrLo: 3, ctrHi: 4, ctrStep: 5, flags: 6, flagsStart: 7,
  flagsEnd: 8, output: 9,
};
const NPARAMS = 10;
// i32 locals, then v128 locals.
const L = { g: 10, b: 11, stride: 12, p: 13, ctr: 14, blockFlags: 15 };
const NI32 = 6;
const V = NPARAMS + NI32; // v0..v15 at V + 0..15
const M = V + 16; // m0..m15
const H = M + 16; // h0..h7
const CLO = H + 8, CHI = CLO + 1, T = CHI + 1; // T..T+3 transpose temporaries, T+4.. loads
const NV128 = 16 + 16 + 8 + 2 + 8;

const get = (i) => [op.get, ...uleb(i)];
const set = (i) => [op.set, ...uleb(i)];
const tee = (i) => [op.tee, ...uleb(i)];
const i32c = (n) => [op.i32const, ...sleb(n | 0)];

// The G function on state words a, b, c, d with message words x, y.
function g(a, b, c, d, x, y) {
  const va = V + a, vb = V + b, vc = V + c, vd = V + d;
  const rotr = (v, n) => [...tee(v), ...i32c(n), ...i32x4shru, ...get(v), ...i32c(32 - n), ...i32x4shl, ...v128or, ...set(v)];
  const bytes = (v, lanes) => [...tee(v), ...get(v), ...shuffle(lanes), ...set(v)];
  return [
    ...get(va), ...get(vb), ...i32x4add, ...get(M + x), ...i32x4add, ...tee(va),
    ...get(vd), ...v128xor, ...bytes(vd, ROT16),
    ...get(vc), ...get(vd), ...i32x4add, ...tee(vc),
    ...get(vb), ...v128xor, ...rotr(vb, 12),
    ...get(va), ...get(vb), ...i32x4add, ...get(M + y), ...i32x4add, ...tee(va),
    ...get(vd), ...v128xor, ...bytes(vd, ROT8),
    ...get(vc), ...get(vd), ...i32x4add, ...tee(vc),
    ...get(vb), ...v128xor, ...rotr(vb, 7),
  ];
}

// Four vectors in locals a[0..3] -> their transpose into dst[0..3] (through T..T+3).
function transpose(a, dst) {
  const pair = (x, y, lanes, t) => [...get(x), ...get(y), ...shuffle(lanes), ...set(t)];
  return [
    ...pair(a[0], a[1], LO32, T), ...pair(a[0], a[1], HI32, T + 1),
    ...pair(a[2], a[3], LO32, T + 2), ...pair(a[2], a[3], HI32, T + 3),
    ...pair(T, T + 2, LO64, dst[0]), ...pair(T, T + 2, HI64, dst[1]),
    ...pair(T + 1, T + 3, LO64, dst[2]), ...pair(T + 1, T + 3, HI64, dst[3]),
  ];
}

// The block at p + lane * stride for each lane -> m0..m15, one message word per vector.
function loadMessage() {
  const out = [];
  const q = [T + 4, T + 5, T + 6, T + 7];
  for (let quad = 0; quad < 4; quad++) {
    for (let lane = 0; lane < 4; lane++) {
      out.push(...get(L.p), ...get(L.stride), ...i32c(lane), op.i32mul, op.i32add,
        ...v128load(16 * quad), ...set(q[lane]));
    }
    out.push(...transpose(q, [M + 4 * quad, M + 4 * quad + 1, M + 4 * quad + 2, M + 4 * quad + 3]));
  }
  return out;
}

// Counters of the group's four inputs: low words in CLO, high words in CHI.
function counters() {
  const out = [];
  for (let lane = 0; lane < 4; lane++) {
    // ctr = counterLo + (4g + lane) * step, with the carry into the high word.
    out.push(...get(P.ctrLo), ...get(L.g), ...i32c(4), op.i32mul, ...i32c(lane), op.i32add,
      ...get(P.ctrStep), op.i32mul, op.i32add, ...set(L.ctr));
    out.push(...get(CLO), ...get(L.ctr), ...i32x4replace(lane), ...set(CLO));
    out.push(...get(CHI), ...get(P.ctrHi), ...get(L.ctr), ...get(P.ctrLo), op.i32ltu, op.i32add,
      ...i32x4replace(lane), ...set(CHI));
  }
  return out;
}

function compressBlock() {
  const out = [];
  for (let i = 0; i < 8; i++) out.push(...get(H + i), ...set(V + i));
  for (let i = 0; i < 4; i++) out.push(...i32c(IV[i]), ...i32x4splat, ...set(V + 8 + i));
  out.push(...get(CLO), ...set(V + 12), ...get(CHI), ...set(V + 13));
  out.push(...i32c(BLOCK_LEN), ...i32x4splat, ...set(V + 14));
  out.push(...get(L.blockFlags), ...i32x4splat, ...set(V + 15));
  for (const s of SCHEDULE) {
    out.push(...g(0, 4, 8, 12, s[0], s[1]), ...g(1, 5, 9, 13, s[2], s[3]),
      ...g(2, 6, 10, 14, s[4], s[5]), ...g(3, 7, 11, 15, s[6], s[7]),
      ...g(0, 5, 10, 15, s[8], s[9]), ...g(1, 6, 11, 12, s[10], s[11]),
      ...g(2, 7, 8, 13, s[12], s[13]), ...g(3, 4, 9, 14, s[14], s[15]));
  }
  for (let i = 0; i < 8; i++) out.push(...get(V + i), ...get(V + 8 + i), ...v128xor, ...set(H + i));
  return out;
}

// h0..h7 (one word of four inputs each) -> four 32-byte chaining values at output + 128 g.
function storeOutput() {
  const out = [];
  const q = [T + 4, T + 5, T + 6, T + 7];
  for (let half = 0; half < 2; half++) {
    out.push(...transpose([H + 4 * half, H + 4 * half + 1, H + 4 * half + 2, H + 4 * half + 3], q));
    for (let lane = 0; lane < 4; lane++) {
      out.push(...get(P.output), ...get(L.g), ...i32c(128), op.i32mul, op.i32add,
        ...get(q[lane]), ...v128store(CV_LEN * lane + 16 * half));
    }
  }
  return out;
}

function body() {
  const code = [
    ...get(P.blocks), ...i32c(BLOCK_LEN), op.i32mul, ...set(L.stride),
    op.block, 0x40,
    ...get(P.groups), op.i32eqz, op.br_if, 0,
    op.loop, 0x40, // each group
  ];
  for (let i = 0; i < 8; i++) code.push(...i32c(IV[i]), ...i32x4splat, ...set(H + i));
  code.push(...counters());
  code.push(
    ...get(P.input), ...get(L.g), ...get(L.stride), op.i32mul, ...i32c(4), op.i32mul, op.i32add, ...set(L.p),
    ...i32c(0), ...set(L.b),
    op.loop, 0x40, // each block
    // blockFlags = flags | (b == 0 ? flagsStart : 0) | (b == blocks - 1 ? flagsEnd : 0)
    ...get(P.flags),
    ...get(P.flagsStart), ...i32c(0), ...get(L.b), op.i32eqz, op.select, op.i32or,
    ...get(P.flagsEnd), ...i32c(0), ...get(L.b), ...i32c(1), op.i32add, ...get(P.blocks), op.i32eq,
    op.select, op.i32or, ...set(L.blockFlags),
    ...loadMessage(),
    ...compressBlock(),
    ...get(L.p), ...i32c(BLOCK_LEN), op.i32add, ...set(L.p),
    ...get(L.b), ...i32c(1), op.i32add, ...tee(L.b), ...get(P.blocks), op.i32ltu, op.br_if, 0,
    op.end,
    ...storeOutput(),
    ...get(L.g), ...i32c(1), op.i32add, ...tee(L.g), ...get(P.groups), op.i32ltu, op.br_if, 0,
    op.end,
    op.end,
    op.end,
  );
  const locals = vec([[...uleb(NI32), I32], [...uleb(NV128), V128]]);
  const fn = [...locals, ...code];
  return [...uleb(fn.length), ...fn];
}

/** The module's bytes: one function, `hashMany`, over an imported memory `env.memory`. */
export function moduleBytes() {
  const type = [0x60, ...vec(Array(NPARAMS).fill([I32])), 0];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([type])),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, 0x00, 1]])),
    ...section(3, vec([[0]])),
    ...section(7, vec([[...name('hashMany'), 0x00, 0]])),
    ...section(10, vec([body()])),
  ]);
}

// --- The engine -----------------------------------------------------------------------

/**
 * The SIMD engine for blake3.js, or null when this browser cannot compile it. Memory
 * layout: chaining values of the subtree being merged at 0, the input after them.
 */
export async function simdEngine() {
  // Chaining values are read back through a Uint32Array: wasm memory is little-endian.
  if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) return null;
  if (typeof WebAssembly !== 'object') return null;
  const bytes = moduleBytes();
  if (!WebAssembly.validate(bytes)) return null;
  try {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
    return new SimdEngine(memory, instance.exports.hashMany);
  } catch {
    return null; // e.g. a Content-Security-Policy without 'wasm-unsafe-eval'
  }
}

class SimdEngine {
  constructor(memory, hashMany) {
    this.name = 'wasm-simd';
    this.memory = memory;
    this.hashMany = hashMany;
    this.input = 0;
  }

  /** Copies `bytes` into the module's memory, for the `subtree` calls that follow. */
  load(bytes) {
    const chunks = Math.ceil(bytes.length / CHUNK_LEN);
    // Room for every chunk's chaining value plus a padded group's, then the input plus
    // the chunks a padded group of four reads past its end.
    this.input = Math.ceil(((chunks + 8) * CV_LEN) / BLOCK_LEN) * BLOCK_LEN;
    const need = this.input + (chunks + 4) * CHUNK_LEN;
    const have = this.memory.buffer.byteLength;
    if (need > have) this.memory.grow(Math.ceil((need - have) / PAGE));
    new Uint8Array(this.memory.buffer, this.input, bytes.length).set(bytes);
  }

  /**
   * The chaining value of the complete subtree of `count` (a power of two) whole chunks
   * of the loaded input from chunk `first` on, whose first chunk has counter `counter`,
   * into dst[off..off+8].
   */
  subtree(first, count, counter, dst, off) {
    const lo = counter >>> 0, hi = Math.floor(counter / 0x100000000) >>> 0;
    this.hashMany(this.input + first * CHUNK_LEN, Math.ceil(count / 4), CHUNK_LEN / BLOCK_LEN,
      lo, hi, 1, 0, CHUNK_START, CHUNK_END, 0);
    // Each level in place: group k reads values 8k..8k+7 before writing 4k..4k+3.
    for (let n = count; n > 1; n >>>= 1) this.hashMany(0, Math.ceil(n / 8), 1, 0, 0, 0, PARENT, 0, 0, 0);
    dst.set(new Uint32Array(this.memory.buffer, 0, 8), off);
  }
}
