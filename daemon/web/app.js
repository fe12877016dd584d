// The page's entry: sign-in, the two views (files, chat) chosen by the URL's hash
// (#/files/<dir>, #/chat/<conversation>), and sign-out.

import { api, setCsrf, ApiError } from './api.js';
import { $, show } from './dom.js';
import * as files from './files.js';
import * as chat from './chat.js';

const state = { user: null, server: null };

async function boot() {
  $('#signin-form').addEventListener('submit', signIn);
  $('#logout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  try {
    state.server = await api('GET', '/api/server');
    $('#fingerprint').textContent = state.server.fingerprint;
  } catch (e) {
    $('#fingerprint').textContent = 'unavailable (' + e.message + ')';
  }
  try {
    const s = await api('GET', '/api/session');
    enter(s);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) $('#signin-error').textContent = e.message;
    showSignIn();
  }
}

function showSignIn() {
  show($('#top'), false);
  show($('#files'), false);
  show($('#chat'), false);
  show($('#signin'), true);
  $('#signin-user').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  $('#signin-error').textContent = '';
  const user = $('#signin-user').value.trim();
  const password = $('#signin-password').value;
  $('#signin-submit').disabled = true;
  try {
    const s = await api('POST', '/api/login', { user, password });
    $('#signin-password').value = '';
    enter(s);
  } catch (e) {
    $('#signin-error').textContent =
      e.code === 'auth_failed' ? 'Wrong user or password.' : e.message;
  } finally {
    $('#signin-submit').disabled = false;
  }
}

// Signing out loads the page afresh: nothing of this user's listing, uploads or chat
// stays in the page for whoever signs in next. Uploads in progress stop (they resume
// when the files are picked again), so the page asks first; a logout the server did not
// confirm leaves the page as it is, saying so.
async function signOut() {
  if (files.uploading()
    && !confirm('Uploads in progress will stop; pick the same files again later to resume them. Sign out?')) return;
  try {
    await api('POST', '/api/logout');
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) {
      const msg = 'Signing out failed (' + e.message + '); try again.';
      $('#files-error').textContent = msg;
      $('#chat-error').textContent = msg;
      return;
    }
  }
  chat.stop();
  state.user = null;
  setCsrf('');
  location.replace(location.pathname + location.search);
}

function enter(session) {
  state.user = session.user;
  setCsrf(session.csrf);
  $('#whoami').textContent = session.user;
  show($('#signin'), false);
  show($('#top'), true);
  const chunkSize = (state.server && state.server.chunk_size) || 1 << 20;
  files.init({ user: session.user, chunkSize, onAuthLost: showSignIn });
  chat.init({ user: session.user, chunkSize });
  route();
}

function route() {
  if (!state.user) return;
  const [view, ...rest] = location.hash.replace(/^#\/?/, '').split('/').map(safeDecode);
  const arg = rest.filter((s) => s !== '').join('/');
  const isChat = view === 'chat';
  show($('#files'), !isChat);
  show($('#chat'), isChat);
  $('#tab-files').classList.toggle('active', !isChat);
  $('#tab-chat').classList.toggle('active', isChat);
  if (isChat) chat.open(arg);
  else {
    chat.hide();
    files.open(arg);
  }
}

function safeDecode(s) {
  try { return decodeURIComponent(s); } catch { return s; }
}

boot();
