// A Web Worker that reads one protocol chunk of a file, hashes it (its own digest and its
// chaining value in the file's tree) and, when given an upload URL and the digest the
// server already holds differs, sends it. Several jobs overlap: while one chunk's request
// is on the wire the worker hashes the next. BLAKE3 runs in WebAssembly SIMD (b3simd.js)
// where the browser has it, else in JavaScript; a job with engine 'js' asks for the latter.

import { chunkDigests, cvBytes, toHex, JS_ENGINE } from './blake3.js';
import { simdEngine } from './b3simd.js';

// Compiled once per worker, while the first chunk is read; null without wasm SIMD.
const simd = simdEngine().catch(() => null);

self.onmessage = async (ev) => {
  const { seq, file, index, start, end, chunkSize, single, expect, url, csrf } = ev.data;
  try {
    const buf = await file.slice(start, end).arrayBuffer();
    if (buf.byteLength !== end - start) throw new Error('the file changed while it was read');
    const engine = (ev.data.engine !== 'js' && (await simd)) || JS_ENGINE;
    // The protocol's chunk digest: the chunk's chaining value at its offset in the file,
    // or for a file of one chunk the file's BLAKE3 (docs/HTTP.md).
    const { digest, cv } = chunkDigests(new Uint8Array(buf), index, chunkSize, false, engine);
    const hex = toHex(single ? digest : cvBytes(cv));
    let sent = false;
    if (url && hex !== expect) {
      const res = await fetch(url, {
        method: 'PUT',
        body: buf,
        credentials: 'same-origin',
        headers: {
          'Content-Type': 'application/octet-stream',
          'X-Xfer-Blake3': hex,
          'X-CSRF-Token': csrf,
        },
      });
      if (!res.ok) {
        let body = null;
        try { body = await res.json(); } catch { /* not JSON */ }
        const e = (body && body.error) || {};
        self.postMessage({ seq, error: { status: res.status, code: e.code || 'http_' + res.status, message: e.message || 'HTTP ' + res.status } });
        return;
      }
      sent = true;
    }
    self.postMessage({ seq, digest: hex, root: digest && toHex(digest), cv, sent, engine: engine.name }, [cv.buffer]);
  } catch (e) {
    self.postMessage({ seq, error: { status: 0, code: 'network', message: String((e && e.message) || e) } });
  }
};
