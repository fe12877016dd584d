// A Web Worker that reads a run of consecutive protocol chunks of a file in one Blob read,
// hashes each (its own digest and its chaining value in the file's tree) and, when given
// an upload URL, sends the chunks whose digest differs from the one the server already
// holds: consecutive ones together in one request (`PUT …/runs/{first}`, or `…/chunks/{i}`
// for a single chunk), since the browser's cost of sending falls with the body's size.
// Several jobs overlap: while one run's request is on the wire the worker hashes the next.
// Asked to, it reports the bytes sent while a request is on the wire.
// BLAKE3 runs in WebAssembly SIMD (b3simd.js) where the browser has it, else in
// JavaScript; a job with engine 'js' asks for the latter.

import { chunkDigests, cvBytes, toHex, JS_ENGINE } from './blake3.js';
import { simdEngine } from './b3simd.js';

// Compiled once per worker, while the first chunk is read; null without wasm SIMD.
const simd = simdEngine().catch(() => null);

// One PUT. With `progress`, through XMLHttpRequest, which (unlike fetch) reports upload
// progress: on a slow link the page's bars, rates and times left then move while a run
// of 8 MiB is on the wire, not only when it ends. Progress goes to the page as
// { seq, progress: bytes since the last report }. Without it, through fetch, which costs
// the browser a little less CPU per byte (bench/RESULTS.md); the page asks for progress
// only while the upload is slower than its runs are long.
async function put(seq, url, body, headers, progress) {
  if (!progress) {
    const res = await fetch(url, { method: 'PUT', body, headers, credentials: 'same-origin' });
    return { ok: res.ok, status: res.status, text: res.ok ? '' : await res.text() };
  }
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    let reported = 0;
    xhr.upload.onprogress = (ev) => {
      if (ev.loaded > reported) {
        self.postMessage({ seq, progress: ev.loaded - reported });
        reported = ev.loaded;
      }
    };
    xhr.onload = () => resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, text: xhr.responseText });
    xhr.onerror = () => reject(new Error('the connection to the server failed'));
    xhr.onabort = () => reject(new Error('the request was aborted'));
    xhr.send(body);
  });
}

self.onmessage = async (ev) => {
  const { seq, file, first, count, start, end, chunkSize, single, expect, url, csrf, progress } = ev.data;
  try {
    const buf = await file.slice(start, end).arrayBuffer();
    if (buf.byteLength !== end - start) throw new Error('the file changed while it was read');
    const engine = (ev.data.engine !== 'js' && (await simd)) || JS_ENGINE;
    const cvs = [];
    const hexes = [];
    let root = null;
    for (let k = 0; k < count; k++) {
      const off = k * chunkSize;
      const bytes = new Uint8Array(buf, off, Math.min(chunkSize, buf.byteLength - off));
      // The protocol's chunk digest: the chunk's chaining value at its offset in the
      // file, or for a file of one chunk the file's BLAKE3 (docs/HTTP.md).
      const { digest, cv } = chunkDigests(bytes, first + k, chunkSize, false, engine);
      hexes.push(toHex(single ? digest : cvBytes(cv)));
      cvs.push(cv);
      if (first + k === 0) root = toHex(digest);
    }
    let sent = 0;
    for (let k = 0; url && k < count;) {
      if (hexes[k] === (expect && expect[k])) { k++; continue; }
      let j = k + 1;
      while (j < count && hexes[j] !== (expect && expect[j])) j++;
      const from = k * chunkSize, to = Math.min(buf.byteLength, j * chunkSize);
      const res = await put(seq, url + (j - k > 1 ? '/runs/' : '/chunks/') + (first + k),
        new Uint8Array(buf, from, to - from), {
          'Content-Type': 'application/octet-stream',
          'X-Xfer-Blake3': hexes.slice(k, j).join(','),
          'X-CSRF-Token': csrf,
        }, progress);
      if (!res.ok) {
        let body = null;
        try { body = JSON.parse(res.text); } catch { /* not JSON */ }
        const e = (body && body.error) || {};
        self.postMessage({ seq, error: { status: res.status, code: e.code || 'http_' + res.status, message: e.message || 'HTTP ' + res.status } });
        return;
      }
      sent += to - from;
      k = j;
    }
    self.postMessage({ seq, digests: hexes, root, cvs, sent, engine: engine.name }, cvs.map((cv) => cv.buffer));
  } catch (e) {
    self.postMessage({ seq, error: { status: 0, code: 'network', message: String((e && e.message) || e) } });
  }
};
