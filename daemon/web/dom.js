// Tiny DOM helpers. Every piece of data enters the page as a text node (textContent or
// attribute values set through the DOM), never as HTML, so names and messages cannot
// inject markup.

/** `h('a', {href: u, class: 'x', onclick: f}, 'text', child)` → an element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function show(el, visible) {
  el.hidden = !visible;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function fmtSize(n) {
  if (n === null || n === undefined) return '';
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + UNITS[i];
}

export function fmtRate(bytesPerSec) {
  return (bytesPerSec / 1e6).toFixed(bytesPerSec < 1e7 ? 1 : 0) + ' MB/s';
}

export function fmtDuration(sec) {
  if (!isFinite(sec) || sec < 0) return '';
  sec = Math.round(sec);
  if (sec < 60) return sec + ' s';
  if (sec < 3600) return Math.floor(sec / 60) + ' min ' + (sec % 60) + ' s';
  return Math.floor(sec / 3600) + ' h ' + Math.floor((sec % 3600) / 60) + ' min';
}

export function fmtTime(unixSec) {
  if (!unixSec) return '';
  const d = new Date(unixSec * 1000);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** The URL hash for a view and its argument (a path or a conversation). */
export function viewHref(view, arg) {
  return '#/' + view + '/' + (arg || '').split('/').map(encodeURIComponent).join('/');
}
