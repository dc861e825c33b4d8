// REST client and session: tokens live in localStorage so every tab shares one
// sign-in. The access token is refreshed a minute before it expires, and on a
// 401; one refresh runs at a time across all tabs (Web Locks, re-reading storage
// inside the lock so a tab that waited uses the token another tab just got).

const KEY = 'sb.session';
const EARLY_MS = 60_000;

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function load() {
  try {
    return JSON.parse(localStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

let session = load();
const listeners = new Set();
let timer = null;

export const getSession = () => session;
export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit() {
  scheduleRefresh();
  for (const fn of listeners) fn(session);
}

function save(next) {
  session = next;
  if (next) localStorage.setItem(KEY, JSON.stringify(next));
  else localStorage.removeItem(KEY);
  emit();
}

// Another tab signed in, refreshed or signed out.
window.addEventListener('storage', (e) => {
  if (e.key !== KEY) return;
  session = load();
  emit();
});

function scheduleRefresh() {
  clearTimeout(timer);
  if (!session) return;
  const wait = Math.max(1000, session.expires_at - Date.now() - EARLY_MS);
  timer = setTimeout(() => refresh().catch(() => {}), wait);
}

function fromTokens(t, user) {
  return {
    access_token: t.access_token,
    refresh_token: t.refresh_token,
    expires_at: Date.now() + t.expires_in * 1000,
    user: t.user ?? user,
  };
}

let inflight = null;

/** One refresh for this tab; the lock makes it one for every tab. */
export function refresh(staleToken = null) {
  if (!inflight) {
    const run = () => doRefresh(staleToken);
    const p = navigator.locks ? navigator.locks.request('sb.refresh', run) : run();
    inflight = p.finally(() => (inflight = null));
  }
  return inflight;
}

async function doRefresh(staleToken) {
  const current = load();
  if (!current) {
    if (session) save(null);
    throw new ApiError(401, 'unauthorized', 'Signed out');
  }
  const fresh = current.expires_at - Date.now() > EARLY_MS;
  if (fresh && current.access_token !== staleToken) {
    if (current.access_token !== session?.access_token) {
      session = current;
      emit();
    }
    return current.access_token;
  }
  let res;
  try {
    res = await fetch('/api/auth/refresh', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ refresh_token: current.refresh_token }),
    });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached');
  }
  if (res.status === 401) {
    save(null);
    throw new ApiError(401, 'unauthorized', 'Your session ended; please sign in again');
  }
  if (!res.ok) throw new ApiError(res.status, 'unavailable', 'Could not refresh the session');
  const tokens = await res.json();
  save(fromTokens(tokens, current.user));
  return tokens.access_token;
}

/** A valid access token, refreshed first when it is about to expire. */
export async function accessToken() {
  if (!session) throw new ApiError(401, 'unauthorized', 'Signed out');
  if (session.expires_at - Date.now() > EARLY_MS) return session.access_token;
  return refresh();
}

/** JSON request; errors become ApiError with the server's code and message. */
export async function request(method, path, body, { auth = true, retry = true } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let token = null;
  if (auth) {
    token = await accessToken();
    headers.authorization = `Bearer ${token}`;
  }
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached');
  }
  if (res.status === 401 && auth && retry) {
    await refresh(token);
    return request(method, path, body, { auth, retry: false });
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    throw new ApiError(
      res.status,
      data?.error?.code ?? `http_${res.status}`,
      data?.error?.message ?? (res.statusText || 'Request failed'),
      res.headers.get('retry-after'),
    );
  }
  return data;
}

export async function signin(email, password) {
  const t = await request('POST', '/api/auth/signin', { email, password }, { auth: false });
  save(fromTokens(t, t.user));
}

export async function signup(email, username, password) {
  await request('POST', '/api/auth/signup', { email, username, password }, { auth: false });
  await signin(email, password);
}

export async function signout() {
  const s = session;
  save(null);
  if (s) {
    await request('POST', '/api/auth/signout', { refresh_token: s.refresh_token }, { auth: false }).catch(
      () => {},
    );
  }
}

scheduleRefresh();
