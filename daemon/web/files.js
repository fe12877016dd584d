// The files view: a folder of the user's space (home or inbox) with breadcrumbs, sizes,
// times and BLAKE3 digests; new folder, rename, delete; thumbnails and an image viewer;
// picking or dropping files and folders hands them to the uploader.

import { api, q, fileUrl } from './api.js';
import { $, h, clear, show, fmtSize, fmtTime, viewHref } from './dom.js';
import { Uploader } from './upload.js';

const IMAGE = /\.(png|jpe?g|gif|webp)$/i;
let ctx = null;
let cwd = '';
let entries = [];
let uploader = null;
let loadSeq = 0;

export function init(c) {
  ctx = c;
  if (uploader) return;
  uploader = new Uploader({ chunkSize: c.chunkSize, onFileDone: () => refreshSoon() });
  $('#mkdir').addEventListener('click', mkdir);
  $('#pick-files').addEventListener('change', (ev) => pick(ev.target));
  $('#pick-folder').addEventListener('change', (ev) => pick(ev.target));
  setUpDrop();
  setUpViewer();
}

/** Shows folder `path` ('' = home). */
export function open(path) {
  cwd = path || '';
  error('');
  load();
}

function join(dir, name) {
  return dir ? dir + '/' + name : name;
}

function error(msg) {
  $('#files-error').textContent = msg || '';
}

async function load() {
  const seq = ++loadSeq;
  renderCrumbs();
  let listing;
  try {
    listing = await api('GET', '/api/list' + q({ path: cwd }));
  } catch (e) {
    if (e.status === 401) return ctx.onAuthLost();
    error(e.message);
    listing = { entries: [] };
  }
  if (seq !== loadSeq) return;
  entries = listing.entries || [];
  entries.sort((a, b) => (a.kind === 'dir') !== (b.kind === 'dir')
    ? (a.kind === 'dir' ? -1 : 1) : a.name.localeCompare(b.name));
  renderEntries();
}

let refreshTimer = 0;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(load, 150);
}

function renderCrumbs() {
  const nav = clear($('#crumbs'));
  const parts = cwd ? cwd.split('/') : [];
  nav.append(h('a', { href: viewHref('files', '') }, 'Home'));
  nav.append(' ', h('a', { href: viewHref('files', 'inbox') }, '(Inbox)'));
  let acc = '';
  parts.forEach((p, i) => {
    acc = join(acc, p);
    nav.append(' / ');
    nav.append(i === parts.length - 1 ? h('span', {}, p) : h('a', { href: viewHref('files', acc) }, p));
  });
}

function renderEntries() {
  const body = clear($('#entries'));
  show($('#empty'), entries.length === 0);
  for (const e of entries) body.append(row(e));
}

function row(e) {
  const path = join(cwd, e.name);
  const cells = { thumb: h('td', { class: 'thumb' }), name: h('td', { class: 'name' }) };
  let extra = null;
  if (e.kind === 'dir') {
    cells.name.append(h('a', { href: viewHref('files', path), class: 'dir' }, e.name + '/'));
  } else if (e.kind === 'partial') {
    cells.name.append(h('span', {}, e.name));
    extra = 'partial: ' + fmtSize(e.held) + ' of ' + fmtSize(e.size) + ' held'
      + (e.expires ? ', kept until ' + fmtTime(e.expires) : '') + ' (pick the file again to resume)';
  } else {
    cells.name.append(h('a', { href: fileUrl(path), download: e.name, class: 'file' }, e.name));
    if (IMAGE.test(e.name)) {
      cells.thumb.append(h('img', {
        class: 'thumb', src: '/api/thumb' + q({ path }), alt: '', loading: 'lazy',
        onclick: () => view(e.name),
      }));
    }
  }
  if (extra) cells.name.append(h('div', { class: 'muted' }, extra));
  const digest = e.blake3 || '';
  return h('tr', { class: e.kind, dataset: { name: e.name } },
    cells.thumb, cells.name,
    h('td', { class: 'num' }, e.kind === 'dir' ? '' : fmtSize(e.size)),
    h('td', { class: 'time' }, fmtTime(e.modified)),
    h('td', { class: 'hash', title: digest }, digest),
    h('td', { class: 'actions' }, actions(e, path)));
}

function actions(e, path) {
  const out = [];
  if (e.kind !== 'partial') out.push(h('button', { type: 'button', onclick: () => rename(e) }, 'Rename'));
  out.push(h('button', { type: 'button', onclick: () => remove(e, path) }, 'Delete'));
  return out;
}

async function act(fn) {
  error('');
  try {
    await fn();
  } catch (e) {
    if (e.status === 401) return ctx.onAuthLost();
    error(e.message);
  }
  load();
}

function mkdir() {
  const name = prompt('New folder name');
  if (!name) return;
  act(() => api('POST', '/api/mkdir', { path: join(cwd, name), parents: false }));
}

// Onto a name that is taken, the page asks before it replaces (the API's `force`).
function rename(e) {
  const to = prompt('Rename ' + e.name + ' to', e.name);
  if (!to || to === e.name) return;
  const mv = (force) => api('POST', '/api/mv', { from: join(cwd, e.name), to: join(cwd, to), force });
  act(async () => {
    try {
      await mv(false);
    } catch (err) {
      // Only a file this folder shows under that name is offered for replacing; anything
      // else (a folder, a path elsewhere) gets the server's refusal as it is.
      if (err.code !== 'conflict' || !entries.some((x) => x.name === to && x.kind === 'file')) throw err;
      if (!confirm(to + ' already exists here. Replace it with ' + e.name + '?')) {
        throw new Error(to + ' already exists here; ' + e.name + ' was not renamed');
      }
      await mv(true);
    }
  });
}

function remove(e, path) {
  const what = e.kind === 'dir' ? 'the folder ' + e.name + ' and everything in it' : e.name;
  if (!confirm('Delete ' + what + '?')) return;
  act(() => api('POST', '/api/rm', { path, recursive: e.kind === 'dir', partial: e.kind === 'partial' }));
}

// Uploads: from the two pickers and drag-and-drop. Folder picks carry relative paths.

function pick(input) {
  const list = [...input.files].map((file) => ({ file, rel: file.webkitRelativePath || file.name }));
  input.value = '';
  upload(list);
}

function upload(list) {
  if (list.length === 0) return;
  uploader.add(list.map(({ file, rel }) => ({ file, path: join(cwd, rel) })));
}

function setUpDrop() {
  let depth = 0;
  const body = document.body;
  const active = () => !$('#files').hidden;
  body.addEventListener('dragenter', (ev) => {
    if (!active()) return;
    ev.preventDefault();
    depth++;
    body.classList.add('dragging');
  });
  body.addEventListener('dragleave', () => {
    if (--depth <= 0) { depth = 0; body.classList.remove('dragging'); }
  });
  body.addEventListener('dragover', (ev) => { if (active()) ev.preventDefault(); });
  body.addEventListener('drop', async (ev) => {
    if (!active()) return;
    ev.preventDefault();
    depth = 0;
    body.classList.remove('dragging');
    const roots = [...ev.dataTransfer.items]
      .map((it) => it.webkitGetAsEntry && it.webkitGetAsEntry()).filter(Boolean);
    const list = [];
    if (roots.length) {
      for (const entry of roots) await walk(entry, '', list);
    } else {
      for (const file of ev.dataTransfer.files) list.push({ file, rel: file.name });
    }
    upload(list);
  });
}

// A dropped folder: every file under it, with its path relative to the drop.
async function walk(entry, prefix, out) {
  const rel = prefix ? prefix + '/' + entry.name : entry.name;
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, rel });
    return;
  }
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (batch.length === 0) break;
    for (const child of batch) await walk(child, rel, out);
  }
}

// The image viewer: the current folder's images, one at a time.

let viewing = -1;

function images() {
  return entries.filter((e) => e.kind === 'file' && IMAGE.test(e.name));
}

function view(name) {
  const list = images();
  viewing = list.findIndex((e) => e.name === name);
  if (viewing < 0) return;
  showImage();
  const d = $('#viewer');
  if (!d.open) d.showModal();
}

function showImage() {
  const list = images();
  const e = list[viewing];
  if (!e) return;
  const path = join(cwd, e.name);
  $('#viewer-img').src = fileUrl(path, true);
  $('#viewer-img').alt = e.name;
  $('#viewer-name').textContent = e.name + ' — ' + fmtSize(e.size);
  $('#viewer-download').href = fileUrl(path);
  $('#viewer-download').setAttribute('download', e.name);
  $('#viewer-prev').disabled = viewing === 0;
  $('#viewer-next').disabled = viewing === list.length - 1;
}

function setUpViewer() {
  const step = (d) => {
    const n = images().length;
    if (viewing + d >= 0 && viewing + d < n) { viewing += d; showImage(); }
  };
  $('#viewer-prev').addEventListener('click', () => step(-1));
  $('#viewer-next').addEventListener('click', () => step(1));
  $('#viewer-close').addEventListener('click', () => $('#viewer').close());
  $('#viewer').addEventListener('keydown', (ev) => {
    if (ev.key === 'ArrowLeft') step(-1);
    if (ev.key === 'ArrowRight') step(1);
  });
}

/** Whether an upload is queued, running or paused. */
export function uploading() {
  return !!uploader && uploader.active();
}

/** For the chat view: send files into a person's inbox with the same uploads. */
export function sendTo(user, fileList) {
  if (!uploader) return;
  uploader.add([...fileList].map((file) => ({ file, to: user, name: file.name })));
}
