//! The dashboard's only way to the agent: the public /api/v1 API with the pasted bearer token (session storage).

const KEY = 'pvedeploy.token';
const BASE = '/api/v1';

export const session = {
  token: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An answer other than 2xx: `status`, and the API's body (`error`, `message`, `fields` on a 422). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
  /** The 422 field problems: [{field, rule, message}]. */
  get fields() {
    return Array.isArray(this.body.fields) ? this.body.fields : [];
  }
}

/** Called with the error when the token is refused (401), so the app can ask for it again. */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

function headers(extra) {
  const h = { Authorization: `Bearer ${session.token() || ''}`, ...extra };
  return h;
}

async function fail(res, quiet) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = { message: `${res.status} ${res.statusText}` };
  }
  const err = new ApiError(res.status, body);
  if (res.status === 401 && !quiet) onUnauthorized(err);
  throw err;
}

/** One JSON request; resolves to the parsed body, throws ApiError. With `token`, that token is tried instead of
 * the session's, and a 401 is only the caller's business (the login form checks a pasted token this way). */
export async function api(method, path, body, token) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (token !== undefined) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(BASE + path, init);
  if (!res.ok) await fail(res, token !== undefined);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => api('GET', path);

let described = null;

/**
 * The value lists of the API's named enums (`DeploymentStatus`, `Framework`, `GuestType`, `ScheduleAction`, …) as
 * the server's OpenAPI document states them, so the dashboard offers exactly what the API accepts. Read once (the
 * document is public); a failed read is tried again at the next call.
 */
export function enums() {
  if (!described) {
    described = fetch(`${BASE}/openapi.json`)
      .then((res) => (res.ok ? res.json() : fail(res, true)))
      .then((doc) => {
        const lists = {};
        for (const [name, schema] of Object.entries((doc.components && doc.components.schemas) || {})) {
          if (Array.isArray(schema.enum)) lists[name] = schema.enum;
        }
        return lists;
      });
    described.catch(() => { described = null; });
  }
  return described;
}

/** Fetches a file with the token and hands it to the browser as a download (links cannot carry the header). */
export async function download(path, filename) {
  const res = await fetch(BASE + path, { headers: headers({}) });
  if (!res.ok) await fail(res);
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/**
 * Follows a Server-Sent Events stream with the bearer token (EventSource cannot send headers): reads
 * `text/event-stream` from a fetch body and calls `onEvent({event, id, data})` per event. Resolves when the
 * server ends the stream, rejects on error; `signal` aborts it.
 */
export async function stream(path, onEvent, signal) {
  const res = await fetch(BASE + path, { headers: headers({ Accept: 'text/event-stream' }), signal });
  if (!res.ok) await fail(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n?/g, '\n');
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const ev = { event: 'message', id: null, data: [] };
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue; // keep-alive comments
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') ev.event = val;
        else if (field === 'id') ev.id = val;
        else if (field === 'data') ev.data.push(val);
      }
      if (ev.data.length) onEvent({ ...ev, data: ev.data.join('\n') });
    }
  }
}
