// The management API client: HTTP Basic credentials kept in sessionStorage, JSON both ways,
// RabbitMQ's error bodies ({"error": …, "reason": …}) turned into ApiError.

const KEY = 'warren.credentials';

export class ApiError extends Error {
  constructor(status, error, reason) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }
}

// Called with the API's reason when the credentials stop working (set by the app).
let loggedOut = () => {};
export function onLoggedOut(fn) {
  loggedOut = fn;
}

export function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

export function setCredentials(user, password) {
  sessionStorage.setItem(KEY, JSON.stringify({ user, password }));
}

export function clearCredentials() {
  sessionStorage.removeItem(KEY);
}

// Base64 of the UTF-8 bytes (btoa alone takes Latin-1 only).
function base64(text) {
  let binary = '';
  for (const b of new TextEncoder().encode(text)) binary += String.fromCharCode(b);
  return btoa(binary);
}

// An API path from raw segments, each percent-encoded ("/" as a vhost becomes %2F).
export function path(...segments) {
  return '/api/' + segments.map((s) => encodeURIComponent(s)).join('/');
}

// A query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

// Reasons for which the API refuses the user itself, not one operation.
const SESSION_ENDED = ['Login failed', 'Not management user'];

// One API call. `body` is sent as JSON unless it is a string (sent as it is, as JSON).
export async function request(method, url, { body, headers = {} } = {}) {
  const c = credentials();
  const h = { Accept: 'application/json', ...headers };
  if (c) h.Authorization = 'Basic ' + base64(`${c.user}:${c.password}`);
  // credentials 'omit': the API's 401 carries `WWW-Authenticate: Basic`, and with credentials a
  // browser would answer it with its own login prompt instead of handing the 401 to the page.
  const init = { method, headers: h, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 'network', `The broker did not answer (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (res.ok) return data;
  const error = data && typeof data === 'object' ? data.error : undefined;
  const reason = data && typeof data === 'object' ? data.reason : typeof data === 'string' ? data : '';
  // An answer without a body (a path this API does not have) names the request.
  const err = new ApiError(res.status, error, reason || `${res.status} ${res.statusText}: ${method} ${url}`);
  if (res.status === 401 && SESSION_ENDED.includes(reason)) {
    clearCredentials();
    loggedOut(reason);
  }
  throw err;
}

export const get = (url) => request('GET', url);
export const put = (url, body) => request('PUT', url, { body: body ?? {} });
export const post = (url, body) => request('POST', url, { body: body ?? {} });
export const del = (url, headers) => request('DELETE', url, { headers });

// The sample-series parameters of RabbitMQ's API: ten minutes in 5 s steps.
export const SAMPLES = { lengths_age: 600, lengths_incr: 5, msg_rates_age: 600, msg_rates_incr: 5 };

// The virtual host chosen in the header ('' for all), kept for the session.
export function selectedVhost() {
  return sessionStorage.getItem('warren.vhost') || '';
}

export function selectVhost(v) {
  sessionStorage.setItem('warren.vhost', v);
}

// The vhosts, fetched once per refresh cycle at most by the caller.
export async function vhostNames() {
  const list = await get('/api/vhosts');
  return list.map((v) => v.name).sort();
}
