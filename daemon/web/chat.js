// The chat view over a WebSocket (docs/HTTP.md "chat"): channels and direct messages,
// history with scroll-back, presence, a "new since you left" mark from the last-read
// position, file notices linking to the download, sending a file to a person (the same
// resumable upload into their inbox) and browser notifications when permitted.

import { csrfToken, fileUrl } from './api.js';
import { $, h, clear, show, fmtSize, viewHref } from './dom.js';
import { sendTo } from './files.js';

let me = null;
let ws = null;
let stopped = true;
let retry = 0;
let current = '';
// Whether the chat view is on screen: a conversation is read only while it is shown.
let viewing = false;
const convs = new Map(); // key ('#lab' or a user) → { messages, oldest, unread, lastRead, more }
const people = new Map(); // user → 'online' | 'away' | 'offline'

const store = {
  get: (k, d) => { try { return JSON.parse(localStorage.getItem('xfer.' + me + '.' + k)) ?? d; } catch { return d; } },
  set: (k, v) => localStorage.setItem('xfer.' + me + '.' + k, JSON.stringify(v)),
};

export function init(ctx) {
  if (me === ctx.user && !stopped) return;
  me = ctx.user;
  stopped = false;
  if (!init.wired) {
    init.wired = true;
    $('#composer').addEventListener('submit', say);
    $('#join-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      let name = $('#join-name').value.trim();
      if (!name) return;
      if (!name.startsWith('#')) name = '#' + name;
      $('#join-name').value = '';
      join(name);
      location.hash = viewHref('chat', name);
    });
    $('#dm-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = $('#dm-name').value.trim();
      if (!name) return;
      $('#dm-name').value = '';
      location.hash = viewHref('chat', name);
    });
    $('#older').addEventListener('click', older);
    $('#messages').addEventListener('scroll', () => { if ($('#messages').scrollTop === 0) older(); });
    $('#send-file').addEventListener('change', (ev) => {
      sendTo(current, ev.target.files);
      ev.target.value = '';
    });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) markRead(); });
  }
  connect();
}

export function stop() {
  stopped = true;
  viewing = false;
  current = '';
  if (ws) ws.close();
  ws = null;
  convs.clear();
  people.clear();
}

function connect() {
  if (stopped) return;
  const url = 'wss://' + location.host + '/api/chat?csrf=' + encodeURIComponent(csrfToken());
  ws = new WebSocket(url);
  status('connecting…');
  ws.onopen = () => { retry = 0; status('connected'); };
  ws.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    handle(m);
  };
  ws.onclose = () => {
    ws = null;
    if (stopped) return;
    status('disconnected; reconnecting…');
    setTimeout(connect, Math.min(30000, 1000 * 2 ** retry++));
  };
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  else error('not connected yet; try again in a moment');
}

function status(text) {
  $('#chat-status').textContent = text;
}

function error(text) {
  $('#chat-error').textContent = text || '';
}

function conv(key) {
  if (!convs.has(key)) {
    convs.set(key, { messages: [], oldest: null, unread: 0, lastRead: store.get('read.' + key, 0), more: true, loaded: false });
  }
  return convs.get(key);
}

const convOf = (m) => (m.to && m.to.startsWith('#') ? m.to : (m.from === me ? m.to : m.from));

function handle(m) {
  switch (m.type) {
    case 'hello':
      for (const c of new Set([...(m.channels || []), ...store.get('channels', [])])) join(c);
      send({ op: 'who' });
      send({ op: 'catchup' });
      renderSide();
      // After a reconnect: the open conversation again, if it is on screen.
      if (current && viewing) open(current);
      break;
    case 'message':
    case 'file':
      incoming(m);
      break;
    case 'history':
      history(m);
      break;
    case 'catchup':
      // Read positions are kept on the server: another browser or `xfer chat` may have
      // moved them since this one last stored its own.
      for (const u of m.conversations || []) {
        const c = conv(u.to);
        if (u.read != null && u.read > c.lastRead) {
          c.lastRead = u.read;
          store.set('read.' + u.to, u.read);
        }
        if (u.to !== current || !viewing) c.unread = u.unread;
      }
      renderSide();
      break;
    case 'joined':
    case 'parted':
      if (m.user === me) {
        if (m.type === 'joined') conv(m.channel);
        else convs.delete(m.channel);
        for (const p of m.members || []) people.set(p.user, p.state);
      } else if (m.channel === current) {
        note(m.user + (m.type === 'joined' ? ' joined ' : ' left ') + m.channel);
      }
      renderSide();
      break;
    case 'presence':
      people.set(m.user, m.state);
      renderSide();
      break;
    case 'who':
      for (const p of m.users || []) people.set(p.user, p.state);
      renderSide();
      break;
    case 'missed':
      if (m.to === current) note(m.count + ' messages were skipped; scroll up for history');
      break;
    case 'error':
      error(m.message || m.code);
      break;
  }
}

function join(channel) {
  conv(channel);
  const list = store.get('channels', []);
  if (!list.includes(channel)) store.set('channels', [...list, channel]);
  send({ op: 'join', channel });
}

function part(channel) {
  send({ op: 'part', channel });
  store.set('channels', store.get('channels', []).filter((c) => c !== channel));
  convs.delete(channel);
  if (current === channel) location.hash = viewHref('chat', '');
  renderSide();
}

function incoming(m) {
  const key = convOf(m);
  const c = conv(key);
  if (c.messages.some((x) => x.id === m.id)) return;
  c.messages.push(m);
  if (c.oldest === null) c.oldest = m.id;
  const seen = key === current && viewing && !document.hidden;
  if (m.from !== me && !seen) {
    c.unread++;
    notify(m, key);
  }
  if (key === current) {
    const box = $('#messages');
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.append(line(m));
    if (atBottom || m.from === me) box.scrollTop = box.scrollHeight;
    if (seen) markRead();
  }
  renderSide();
}

function history(m) {
  const c = conv(m.to);
  const known = new Set(c.messages.map((x) => x.id));
  const older = (m.messages || []).filter((x) => !known.has(x.id));
  c.messages = [...older, ...c.messages].sort((a, b) => a.id - b.id);
  if (c.messages.length) c.oldest = c.messages[0].id;
  c.more = (m.messages || []).length > 0;
  c.loaded = true;
  if (m.to === current) renderMessages(older.length > 0 && c.rendered);
}

function older() {
  const c = convs.get(current);
  if (!c || !c.more) return;
  send({ op: 'history', to: current, before: c.oldest, limit: 50 });
}

/** Shows conversation `key` ('' = none chosen). */
export function open(key) {
  viewing = true;
  current = key || '';
  error('');
  const isDm = current && !current.startsWith('#');
  show($('#send-file-label'), !!isDm);
  $('#conv-title').textContent = current ? (isDm ? 'Direct: ' + current : current) : 'Pick a channel or a person';
  show($('#composer'), !!current);
  if (!current) { clear($('#messages')); renderSide(); return; }
  const c = conv(current);
  if (!c.loaded) send({ op: 'history', to: current, before: null, limit: 50 });
  renderMessages(false);
  askNotifications();
}

function renderMessages(keepPosition) {
  const box = $('#messages');
  const fromBottom = box.scrollHeight - box.scrollTop;
  clear(box);
  const c = conv(current);
  c.rendered = true;
  let marked = false;
  for (const m of c.messages) {
    if (!marked && c.lastRead && m.id > c.lastRead && m.from !== me) {
      box.append(h('li', { class: 'newmark' }, 'new since you left'));
      marked = true;
    }
    box.append(line(m));
  }
  show($('#older'), c.more && c.messages.length > 0);
  box.scrollTop = keepPosition ? box.scrollHeight - fromBottom : box.scrollHeight;
  if (!document.hidden) markRead();
  renderSide();
}

// Read positions go to the server at most every READ_EVERY ms per conversation (the
// latest one wins): a busy channel must not cost a durable write per message.
const READ_EVERY = 2000;
const readTimers = new Map(); // conversation → { id, timer }

function sendRead(key, id) {
  const t = readTimers.get(key);
  if (t) {
    t.id = Math.max(t.id, id);
    return;
  }
  send({ op: 'read', to: key, id });
  const entry = { id, timer: null };
  entry.timer = setTimeout(() => {
    readTimers.delete(key);
    if (entry.id > id) sendRead(key, entry.id);
  }, READ_EVERY);
  readTimers.set(key, entry);
}

/** The files view took the screen: nothing here is being read until `open` again. */
export function hide() {
  viewing = false;
}

function markRead() {
  if (!viewing) return;
  const c = convs.get(current);
  if (!c || c.messages.length === 0) return;
  const last = c.messages[c.messages.length - 1].id;
  c.unread = 0;
  if (last > c.lastRead) {
    store.set('read.' + current, last);
    c.lastReadSaved = last;
    sendRead(current, last);
  }
  renderSide();
}

function line(m) {
  const time = new Date(m.time).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  const li = h('li', { dataset: { id: m.id } }, h('span', { class: 'time' }, time), h('span', { class: 'from' }, m.from));
  if (m.type === 'file') {
    const name = m.path.split('/').pop();
    li.append('sent a file: ');
    if (m.to === me) li.append(h('a', { href: fileUrl(m.path), download: name }, name));
    else li.append(name);
    li.append(' (' + fmtSize(m.size) + ')');
    if (m.blake3) li.append(h('span', { class: 'muted hash', title: m.blake3 }, ' BLAKE3 ' + m.blake3.slice(0, 16) + '…'));
  } else {
    li.append(h('span', { class: 'text' }, m.text));
  }
  return li;
}

function note(text) {
  $('#messages').append(h('li', { class: 'event' }, text));
}

function say(ev) {
  ev.preventDefault();
  const input = $('#say');
  const text = input.value;
  if (!text.trim() || !current) return;
  send({ op: 'say', to: current, text });
  input.value = '';
}

function renderSide() {
  const chans = clear($('#chan-list'));
  const dms = clear($('#people-list'));
  let unread = 0;
  for (const [key, c] of [...convs].sort()) {
    unread += c.unread;
    if (!key.startsWith('#')) continue;
    chans.append(item(key, key, c, h('button', { type: 'button', title: 'Leave ' + key, onclick: (e) => { e.stopPropagation(); part(key); } }, '×')));
  }
  const names = new Set([...people.keys(), ...[...convs.keys()].filter((k) => !k.startsWith('#'))]);
  names.delete(me);
  for (const name of [...names].sort()) {
    const dot = h('span', { class: 'dot ' + (people.get(name) || 'offline'), title: people.get(name) || 'offline' });
    dms.append(item(name, [dot, name], convs.get(name)));
  }
  const badge = $('#chat-badge');
  badge.textContent = String(unread);
  show(badge, unread > 0);
}

function item(key, label, c, extra) {
  return h('li', { class: key === current ? 'active' : '', dataset: { conv: key }, onclick: () => { location.hash = viewHref('chat', key); } },
    label, c && c.unread ? h('span', { class: 'badge' }, String(c.unread)) : null, extra);
}

function askNotifications() {
  if (!('Notification' in window) || Notification.permission !== 'default' || $('#notify-ask')) return;
  const btn = h('button', { id: 'notify-ask', type: 'button', onclick: () => Notification.requestPermission().then(() => btn.remove()) }, 'Enable notifications');
  $('#chat-side').append(btn);
}

function notify(m, key) {
  if (!('Notification' in window) || Notification.permission !== 'granted' || !document.hidden) return;
  const body = m.type === 'file' ? 'sent a file: ' + m.path.split('/').pop() : m.text;
  const n = new Notification(m.from + (key.startsWith('#') ? ' in ' + key : ''), { body, tag: 'xfer-' + key });
  n.onclick = () => { window.focus(); location.hash = viewHref('chat', key); };
}
