// The BLAKE3 self-test page (/assets/selftest.html): the official vectors in the page and in
// the upload workers, whole-file digests joined from 1 MiB chunks (the browser test compares
// them with the Rust blake3 crate), and hashing speed with the workers the uploader uses.
// The result is JSON in #result, with data-done set when finished.

import { hash, toHex, fileDigest } from './blake3.js';
import { VECTORS } from './b3vectors.js';
import { workerPool } from './upload.js';

const UNIT = 1 << 20;

function pattern(len) {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = i % 251;
  return b;
}

// The digest of `blob` the way an upload computes it: chunk by chunk in the workers.
async function viaWorkers(blob) {
  const n = Math.ceil(blob.size / UNIT);
  const jobs = [];
  for (let i = 0; i < n; i++) {
    jobs.push(workerPool().run({
      file: blob, index: i, start: i * UNIT, end: Math.min(blob.size, (i + 1) * UNIT), chunkSize: UNIT, single: blob.size <= UNIT,
    }));
  }
  const results = await Promise.all(jobs);
  const bad = results.find((r) => r.error);
  if (bad) throw new Error(bad.error.message);
  const first = results.length ? hexBytes(results[0].root) : null;
  return { digest: toHex(fileDigest(results.map((r) => r.cv), first)), chunks: results.map((r) => r.digest) };
}

function hexBytes(hex) {
  return Uint8Array.from(hex.match(/../g).map((x) => parseInt(x, 16)));
}

async function main() {
  const out = { vectors: { passed: 0, failed: [] }, workers: { passed: 0, failed: [] }, joined: {}, speed: {}, ms: {} };
  const t0 = performance.now();
  for (const [len, want] of VECTORS) {
    const got = toHex(hash(pattern(len)));
    if (got === want) out.vectors.passed++; else out.vectors.failed.push({ len, got, want });
    const w = await viaWorkers(new Blob([pattern(len)]));
    const wgot = len === 0 ? toHex(hash(new Uint8Array(0))) : w.digest;
    if (wgot === want) out.workers.passed++; else out.workers.failed.push({ len, got: wgot, want });
  }
  out.ms.vectors = Math.round(performance.now() - t0);
  // Multi-chunk files: the joined digest (the browser test checks these with the Rust crate).
  for (const len of [UNIT, UNIT + 1, 3 * UNIT + 5, 5 * UNIT - 7, 8 * UNIT, 9 * UNIT + 3000]) {
    out.joined[len] = (await viaWorkers(new Blob([pattern(len)]))).digest;
  }
  out.ms.joined = Math.round(performance.now() - t0);
  // Speed (with ?speed=MIB): MIB through the workers, and in one thread for comparison.
  const mib = Number(new URLSearchParams(location.search).get('speed') || 0);
  if (mib > 0) {
    const big = new Blob([pattern(mib * UNIT)]);
    let t = performance.now();
    await viaWorkers(big);
    out.speed.workers_mb_s = Math.round(big.size / 1e3 / (performance.now() - t));
    out.speed.workers = workerPool().workers.length;
    const one = pattern(Math.min(mib, 16) * UNIT);
    t = performance.now();
    hash(one);
    out.speed.one_thread_mb_s = Math.round(one.length / 1e3 / (performance.now() - t));
  }
  out.ok = out.vectors.failed.length === 0 && out.workers.failed.length === 0;
  return out;
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
