// The JSON API (docs/HTTP.md): same-origin fetch with the session cookie, the CSRF token on
// every request that changes state, and errors turned into ApiError with the server's code.

let csrf = '';

export function setCsrf(token) {
  csrf = token || '';
}

export function csrfToken() {
  return csrf;
}

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code || 'HTTP ' + status);
    this.status = status;
    this.code = code || 'http_' + status;
    this.body = body;
  }
}

async function fail(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const e = body && body.error;
  throw new ApiError(res.status, e && e.code, e && e.message, body);
}

/** A request; `body` is JSON unless it is a Blob/ArrayBuffer (sent as is). */
export async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers }, credentials: 'same-origin' };
  if (method !== 'GET' && method !== 'HEAD') init.headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
      init.body = body;
    } else {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
  }
  const res = await fetch(path, init);
  if (!res.ok) await fail(res);
  if (res.status === 204) return null;
  const type = res.headers.get('Content-Type') || '';
  return type.includes('json') ? res.json() : res;
}

export const q = (params) => '?' + new URLSearchParams(params).toString();

export function fileUrl(path, inline) {
  return '/api/file' + q(inline ? { path, inline: 1 } : { path });
}
