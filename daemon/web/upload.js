// Verified, resumable uploads (docs/HTTP.md "uploads"): open an upload (the server says how
// much it already holds), read its manifest, hash every chunk in Web Workers, send only the
// chunks the server lacks or holds differently (several in flight), then commit with the
// whole-file BLAKE3 joined from the chunks' chaining values. Picking the same file again
// after a reload or a cut resumes, because the server keeps the partial by path and size.

import { api, csrfToken } from './api.js';
import { $, h, show, fmtSize, fmtRate, fmtDuration } from './dom.js';
import { fileDigest, toHex } from './blake3.js';

// Requests in flight: enough for IN_FLIGHT chunks, and at least RUNS_IN_FLIGHT (runs of 8:
// three, 24 MiB read and hashed ahead or on the wire).
const IN_FLIGHT = 6;
const RUNS_IN_FLIGHT = 3;
// Chunks per request: with 8 MiB bodies the browser spends about 40 % less CPU per byte
// than with 1 MiB ones (bench/RESULTS.md); `?run=N` in the page's address sets it (1: a
// request per chunk), up to the server's `max_run_chunks` (a server without runs takes 1).
const RUN_CHUNKS = 8;
const RETRIES = 5;
// Below this rate (bytes/s) a run's request reports progress while it is out (through
// XMLHttpRequest); above it runs end often enough for the bars to move (and fetch costs
// the browser about 4 % less CPU per byte: bench/RESULTS.md).
const PROGRESS_BELOW = 50e6;
const MANIFEST_PAGE = 16384;

function runChunks(serverMax) {
  const asked = Number(new URLSearchParams(location.search).get('run')) || RUN_CHUNKS;
  return Math.max(1, Math.min(asked, serverMax || 1));
}

/**
 * Web Workers that hash (and send) chunks; a job goes to the least busy one. `engine`
 * 'js' makes every job hash in JavaScript even where WebAssembly SIMD is available.
 */
class Pool {
  constructor(n, engine) {
    this.engine = engine;
    this.workers = [];
    this.waiting = new Map();
    this.onProgress = new Map();
    this.seq = 0;
    for (let i = 0; i < n; i++) {
      const w = new Worker('/assets/hashworker.js', { type: 'module' });
      w.busy = 0;
      w.onmessage = (ev) => {
        const { seq, progress } = ev.data;
        if (progress !== undefined) {
          const report = this.onProgress.get(seq);
          if (report) report(progress);
          return;
        }
        w.busy--;
        const done = this.waiting.get(seq);
        this.waiting.delete(seq);
        this.onProgress.delete(seq);
        done(ev.data);
      };
      this.workers.push(w);
    }
  }

  /** Runs `job`; `onProgress(bytes)` hears of bytes sent while its request is out. */
  run(job, onProgress) {
    const w = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    w.busy++;
    const seq = ++this.seq;
    if (onProgress) this.onProgress.set(seq, onProgress);
    return new Promise((resolve) => {
      this.waiting.set(seq, resolve);
      w.postMessage({ engine: this.engine, ...job, seq });
    });
  }
}

let pool = null;
/** The page's pool; `?blake3=js` in the page's address forces the JavaScript BLAKE3. */
export function workerPool() {
  if (!pool) {
    const engine = new URLSearchParams(location.search).get('blake3') === 'js' ? 'js' : null;
    pool = new Pool(Math.max(2, Math.min(4, navigator.hardwareConcurrency || 2)), engine);
  }
  return pool;
}

function b64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Bytes per second over the last few seconds of (time, bytes) samples. */
class Meter {
  constructor() { this.samples = []; }
  add(bytes) {
    const now = performance.now();
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 4000) this.samples.shift();
  }
  rate() {
    const s = this.samples;
    if (s.length < 2) return 0;
    const dt = (s[s.length - 1][0] - s[0][0]) / 1000;
    // Never below 0: a failed request takes its bytes back off a file's count.
    return dt > 0 ? Math.max(0, (s[s.length - 1][1] - s[0][1]) / dt) : 0;
  }
}

class Job {
  constructor(item, force) {
    Object.assign(this, item);
    this.force = !!force;
    this.size = item.file.size;
    this.done = 0;
    this.sent = 0;
    this.state = 'queued';
    this.paused = false;
    this.wake = null;
    this.meter = new Meter();
    this.label = item.to ? item.name + ' → ' + item.to : item.path;
    this.bar = h('progress', { max: Math.max(1, this.size), value: 0 });
    this.status = h('div', { class: 'ustatus' }, 'queued');
    this.pauseBtn = h('button', { type: 'button', onclick: () => this.togglePause() }, 'Pause');
    this.el = h('li', { dataset: { state: 'queued', path: this.label } },
      h('div', { class: 'uname' }, this.label, ' ', h('span', { class: 'muted' }, fmtSize(this.size)), ' ', this.pauseBtn),
      this.bar, this.status);
  }

  set(state, text) {
    this.state = state;
    this.el.dataset.state = state;
    if (text !== undefined) this.status.textContent = text;
    show(this.pauseBtn, state === 'sending' || state === 'paused');
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseBtn.textContent = this.paused ? 'Resume' : 'Pause';
    if (this.paused) this.set('paused', 'paused at ' + pct(this.done, this.size));
    else {
      this.set('sending');
      if (this.wake) this.wake();
    }
  }

  progress(bytes, sent) {
    this.done += bytes;
    this.sent += sent;
    this.bar.value = this.done;
    this.meter.add(this.done);
  }

  // The test hook behind the Pause button's automation (`xfer.pauseAt` in
  // sessionStorage, a fraction): checked when a run is held by the server, not on bytes
  // merely handed to the network.
  runHeld() {
    const at = sessionStorage.getItem('xfer.pauseAt');
    if (at !== null && !this.paused && this.done >= Number(at) * this.size) {
      sessionStorage.removeItem('xfer.pauseAt');
      this.togglePause();
    }
  }
}

function pct(a, b) {
  return (b ? Math.floor((100 * a) / b) : 100) + ' %';
}

export class Uploader {
  constructor({ chunkSize, onFileDone }) {
    this.chunkSize = chunkSize;
    this.onFileDone = onFileDone;
    this.jobs = [];
    this.running = false;
    this.total = new Meter();
    // Bytes that went on the wire, over every file: the link's rate, which decides
    // whether requests report progress while they are out.
    this.wire = new Meter();
    this.wireBytes = 0;
    this.dirsMade = new Set();
    setInterval(() => this.tick(), 500);
  }

  add(items, force) {
    show($('#uploads'), true);
    for (const item of items) {
      const job = new Job(item, force);
      this.jobs.push(job);
      $('#upload-list').append(job.el);
    }
    this.run();
  }

  async run() {
    if (this.running) return;
    this.running = true;
    try {
      for (let job; (job = this.jobs.find((j) => j.state === 'queued'));) {
        try {
          await this.upload(job);
        } catch (e) {
          job.set('failed', 'failed: ' + e.message + ' (pick the file again to resume)');
        }
      }
    } finally {
      this.running = false;
    }
  }

  onWire(bytes) {
    this.wireBytes += bytes;
    this.wire.add(this.wireBytes);
  }

  /** Whether an upload is queued, running or paused (signing out would stop it). */
  active() {
    return this.jobs.some((j) => ['queued', 'hashing', 'sending', 'committing', 'paused'].includes(j.state));
  }

  // Progress and rate, per file and in total, twice a second.
  tick() {
    let size = 0, done = 0;
    for (const j of this.jobs) {
      if (j.state === 'failed' || j.state === 'conflict' || j.state === 'cancelled') continue;
      size += j.size;
      done += j.done;
      if (j.state === 'sending') {
        const rate = j.meter.rate();
        j.status.textContent = 'sending: ' + pct(j.done, j.size) + ', ' + fmtRate(rate)
          + (rate > 0 ? ', ' + fmtDuration((j.size - j.done) / rate) + ' left' : '')
          + (j.resumedFrom ? ' (resumed from ' + fmtSize(j.resumedFrom) + ')' : '');
      }
    }
    if (this.jobs.length === 0) return;
    this.total.add(done);
    const rate = this.total.rate();
    $('#total-bar').max = Math.max(1, size);
    $('#total-bar').value = done;
    $('#total-text').textContent = fmtSize(done) + ' of ' + fmtSize(size) + ' (' + pct(done, size) + ')'
      + (rate > 0 && done < size ? ', ' + fmtRate(rate) + ', ' + fmtDuration((size - done) / rate) + ' left' : '');
  }

  async makeParents(path) {
    const dir = path.split('/').slice(0, -1).join('/');
    if (!dir || this.dirsMade.has(dir)) return;
    try { await api('POST', '/api/mkdir', { path: dir, parents: true }); } catch { /* exists */ }
    this.dirsMade.add(dir);
  }

  async upload(job) {
    const t0 = performance.now();
    job.set('hashing', 'opening');
    const head = new Uint8Array(await job.file.slice(0, 512).arrayBuffer());
    const req = {
      size: job.size, force: job.force, head: b64(head),
      modified: Math.floor(job.file.lastModified / 1000) || null,
    };
    if (job.to) Object.assign(req, { to: job.to, name: job.name });
    else {
      req.path = job.path;
      await this.makeParents(job.path);
    }
    let open;
    try {
      open = await api('POST', '/api/uploads', req);
    } catch (e) {
      if (e.code === 'conflict') return this.conflict(job, e);
      throw e;
    }
    job.id = open.id;
    job.resumedFrom = open.resumed_from || 0;
    const cs = open.chunk_size || this.chunkSize;
    const n = Math.ceil(job.size / cs);
    const held = open.chunks_held > 0 ? await this.manifest(job.id, n) : [];
    job.set('sending', 'sending');
    const cvs = new Array(n);
    let first = null;
    await this.chunks(job, n, cs, held, runChunks(open.max_run_chunks), (i, cv, r) => {
      cvs[i] = cv;
      job.engine = r.engine;
      if (i === 0) first = hexBytes(r.root);
    });
    job.set('committing', 'checking the whole file');
    const digest = toHex(fileDigest(cvs, first));
    const done = await api('POST', '/api/uploads/' + encodeURIComponent(job.id) + '/commit', { blake3: digest });
    job.bar.value = job.size;
    job.set('done', 'done: ' + fmtSize(job.size) + (job.resumedFrom ? ', resumed from ' + fmtSize(job.resumedFrom) : '')
      + ', sent ' + fmtSize(job.sent) + ', BLAKE3 ' + done.blake3);
    job.el.dataset.blake3 = done.blake3;
    job.el.dataset.ms = String(Math.round(performance.now() - t0));
    job.el.dataset.engine = job.engine || '';
    this.onFileDone(job);
  }

  async manifest(id, n) {
    const out = [];
    for (let first = 0; first < n; first += MANIFEST_PAGE) {
      const page = await api('GET', '/api/uploads/' + encodeURIComponent(id) + '/manifest?first=' + first
        + '&count=' + Math.min(MANIFEST_PAGE, n - first));
      out.push(...page.digests);
    }
    return out;
  }

  // Every chunk through the pool, in runs of consecutive chunks (one Blob read, and one
  // request for those the server lacks), a few runs in flight, in order of index; a run
  // that fails is retried with a growing pause, then the upload fails (and stays
  // resumable).
  async chunks(job, n, cs, held, runLen, onChunk) {
    const url = '/api/uploads/' + encodeURIComponent(job.id);
    const inFlight = Math.max(RUNS_IN_FLIGHT, Math.ceil(IN_FLIGHT / runLen));
    let next = 0, active = 0, failure = null;
    await new Promise((resolve) => {
      const pump = async () => {
        while (!failure && !job.paused && active < inFlight && next < n) {
          const first = next;
          const count = Math.min(runLen, n - first);
          next += count;
          active++;
          this.sendRun(job, first, count, cs, held.slice(first, first + count), url).then((r) => {
            r.cvs.forEach((cv, k) => onChunk(first + k, cv, r));
            // The run's bytes, less those already counted while they were sent.
            job.progress(Math.min(job.size, (first + count) * cs) - first * cs - r.counted, r.sent);
            this.onWire(Math.max(0, r.sent - r.counted));
            job.runHeld();
          }, (e) => { failure = failure || e; }).finally(() => {
            active--;
            pump();
          });
        }
        if (active === 0 && (failure || next >= n)) resolve();
        else if (active === 0 && job.paused) job.wake = () => { job.wake = null; pump(); };
      };
      pump();
    });
    if (failure) throw failure;
  }

  async sendRun(job, first, count, cs, expect, url) {
    const start = first * cs, end = Math.min(job.size, (first + count) * cs);
    for (let attempt = 0; ; attempt++) {
      let counted = 0;
      // Progress while the request is out only where a run takes long enough to need it:
      // on a link (bytes actually sent, over every file) slower than PROGRESS_BELOW.
      const progress = this.wire.rate() < PROGRESS_BELOW;
      const r = await workerPool().run({
        file: job.file, first, count, start, end, chunkSize: cs, single: job.size <= cs, expect, url, csrf: csrfToken(), progress,
      }, (bytes) => { counted += bytes; job.progress(bytes, 0); this.onWire(bytes); });
      if (!r.error) return { ...r, counted };
      // What a failed request had sent is not held: take it back off the bars.
      job.progress(-counted, 0);
      const retry = [0, 408, 422, 429, 500, 502, 503, 504].includes(r.error.status);
      if (!retry || attempt >= RETRIES) throw new Error(r.error.message);
      await new Promise((res) => setTimeout(res, 250 * 2 ** attempt));
    }
  }

  conflict(job, e) {
    const ex = (e.body && e.body.existing) || {};
    job.set('conflict', 'a different file is already there (' + fmtSize(ex.size) + ', BLAKE3 ' + (ex.blake3 || '?') + '). ');
    job.status.append(h('button', {
      type: 'button',
      onclick: () => {
        job.set('cancelled', 'replaced below');
        this.add([{ file: job.file, path: job.path, to: job.to, name: job.name }], true);
      },
    }, 'Replace it'));
  }
}

function hexBytes(hex) {
  const b = new Uint8Array(hex.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(hex.substr(2 * i, 2), 16);
  return b;
}
