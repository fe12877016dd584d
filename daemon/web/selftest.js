// The BLAKE3 self-test page (/assets/selftest.html): the official vectors in the page and in
// the upload workers, whole-file digests joined from 1 MiB chunks (the browser test compares
// them with the Rust blake3 crate), and hashing speed with the workers the uploader uses.
// Everything runs twice: on the path the workers choose themselves (WebAssembly SIMD where
// the browser has it; `?blake3=js` forces JavaScript, as on the upload page) and on the
// JavaScript path forced. The result is JSON in #result, with data-done set when finished.

import { hash, toHex, fileDigest, chunkDigests, cvBytes, JS_ENGINE } from './blake3.js';
import { simdEngine } from './b3simd.js';
import { VECTORS } from './b3vectors.js';
import { workerPool } from './upload.js';

const UNIT = 1 << 20;
// Chunks per worker job (an upload reads and hashes runs of chunks; 3 puts the runs'
// boundaries off the BLAKE3 tree's power-of-two ones).
const RUN = 3;

function pattern(len) {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = i % 251;
  return b;
}

// The digest of `blob` the way an upload computes it: chunk by chunk in the workers, on
// their own engine (`engine` undefined) or the JavaScript one ('js').
async function viaWorkers(blob, engine) {
  const n = Math.ceil(blob.size / UNIT);
  const jobs = [];
  // Runs of up to RUN chunks, as an upload reads and hashes them.
  for (let i = 0; i < n; i += RUN) {
    const count = Math.min(RUN, n - i);
    const job = { file: blob, first: i, count, start: i * UNIT, end: Math.min(blob.size, (i + count) * UNIT), chunkSize: UNIT, single: blob.size <= UNIT };
    if (engine) job.engine = engine;
    jobs.push(workerPool().run(job));
  }
  const results = await Promise.all(jobs);
  const bad = results.find((r) => r.error);
  if (bad) throw new Error(bad.error.message);
  const first = results.length ? hexBytes(results[0].root) : null;
  return {
    digest: toHex(fileDigest(results.flatMap((r) => r.cvs), first)),
    engines: [...new Set(results.map((r) => r.engine))].join(','),
  };
}

function hexBytes(hex) {
  return Uint8Array.from(hex.match(/../g).map((x) => parseInt(x, 16)));
}

function tally(into, len, got, want) {
  if (got === want) into.passed++; else into.failed.push({ len, got, want });
}

// One path: the vectors in the page (with `page`, an engine of blake3.js) and in the
// workers, the joined digests, and with ?speed=MIB the hashing speed.
async function check(page, engine, mib) {
  const out = { page: page.name, workers: null, vectors: { passed: 0, failed: [] }, in_workers: { passed: 0, failed: [] }, joined: {}, speed: {}, ms: {} };
  const t0 = performance.now();
  const seen = new Set();
  for (const [len, want] of VECTORS) {
    tally(out.vectors, len, toHex(hash(pattern(len), page)), want);
    // An empty file has no chunk: its digest comes from fileDigest alone, as in an upload.
    const w = await viaWorkers(new Blob([pattern(len)]), engine);
    if (w.engines) seen.add(w.engines);
    tally(out.in_workers, len, w.digest, want);
  }
  out.ms.vectors = Math.round(performance.now() - t0);
  // Multi-chunk files: the joined digest (the browser test checks these with the Rust crate).
  for (const len of [UNIT, UNIT + 1, 3 * UNIT + 5, 5 * UNIT - 7, 8 * UNIT, 9 * UNIT + 3000]) {
    const w = await viaWorkers(new Blob([pattern(len)]), engine);
    seen.add(w.engines);
    out.joined[len] = w.digest;
  }
  out.workers = [...seen].join(',');
  out.ms.joined = Math.round(performance.now() - t0);
  if (mib > 0) {
    const big = new Blob([pattern(mib * UNIT)]);
    let t = performance.now();
    await viaWorkers(big, engine);
    out.speed.workers_mb_s = Math.round(big.size / 1e3 / (performance.now() - t));
    out.speed.workers = workerPool().workers.length;
    const one = pattern(Math.min(mib, 16) * UNIT);
    // Untimed first: the browser compiles hot code again, optimised, while it runs.
    hash(one.subarray(0, 4 * UNIT), page);
    t = performance.now();
    hash(one, page);
    out.speed.one_thread_mb_s = Math.round(one.length / 1e3 / (performance.now() - t));
  }
  out.ok = out.vectors.failed.length === 0 && out.in_workers.failed.length === 0;
  return out;
}

// Protocol chunks of random data at indices whose BLAKE3 counters need their high word,
// whole and cut short: `engine` gives the same digest and chaining value as JavaScript.
function agrees(engine) {
  const out = { passed: 0, failed: [] };
  const cases = [[0, UNIT], [1, UNIT], [7, UNIT - 1], [4095, 5], [4096, 1025], [(1 << 22) - 1, UNIT], [1 << 22, UNIT], [2 ** 32 + 5, 3 * 1024 + 1]];
  for (const [index, len] of cases) {
    const bytes = new Uint8Array(len);
    for (let i = 0; i < len; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
    const a = chunkDigests(bytes, index, UNIT, true, JS_ENGINE), b = chunkDigests(bytes, index, UNIT, true, engine);
    const same = toHex(a.digest) === toHex(b.digest) && toHex(cvBytes(a.cv)) === toHex(cvBytes(b.cv));
    if (same) out.passed++; else out.failed.push({ index, len });
  }
  return out;
}

async function main() {
  const mib = Number(new URLSearchParams(location.search).get('speed') || 0);
  const forced = workerPool().engine === 'js';
  const simd = forced ? null : await simdEngine();
  const chosen = await check(simd || JS_ENGINE, undefined, mib);
  const js = await check(JS_ENGINE, 'js', mib);
  const agree = agrees(simd || JS_ENGINE);
  return { chosen, js, agree, ok: chosen.ok && js.ok && agree.failed.length === 0 };
}

main().then((out) => {
  const el = document.getElementById('result');
  el.textContent = JSON.stringify(out, null, 1);
  el.dataset.done = out.ok ? 'ok' : 'failed';
}, (e) => {
  const el = document.getElementById('result');
  el.textContent = 'error: ' + e.message;
  el.dataset.done = 'error';
});
