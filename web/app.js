//! The dashboard's shell: token login, hash routing, the background watcher (live refresh and toasts), dialogs.

import { api, get, stream, session, whenUnauthorized, ApiError } from './api.js';
import { h, clear } from './views.js';
import * as views from './views.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let current = null; // { refresh?, leave? } of the view on screen

/** A short message in the corner; `kind` is info, ok or error. */
export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const t = h('div', { class: `toast ${kind}` }, text, ' ',
    h('button', { type: 'button', class: 'icon', 'aria-label': 'Dismiss', onclick: () => t.remove() }, '×'));
  box.append(t);
  setTimeout(() => t.remove(), 6000);
}

/** The confirmation dialog; resolves true when confirmed. Focus returns where it was. */
export function confirmDialog(title, text, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  const back = document.activeElement;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => {
      if (back && back.focus) back.focus();
      resolve(dlg.returnValue === 'ok');
    }, { once: true });
  });
}

const ctx = { toast, confirmDialog, go: (hash) => { location.hash = hash; } };

function loginView() {
  nav.hidden = true;
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-help token-error' });
  const err = h('p', { id: 'token-error', class: 'field-error', role: 'alert' });
  const form = h('form', { class: 'card narrow', id: 'login' },
    h('h1', {}, 'Log in'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'muted' }, 'Paste a pvedeploy API token. It is kept in this tab only (session storage) and sent as a bearer token.'),
    err,
    h('button', { type: 'submit', class: 'primary' }, 'Log in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    err.textContent = '';
    if (!token) {
      err.textContent = 'Paste a token first.';
      input.focus();
      return;
    }
    try {
      await api('GET', '/deployments?limit=1', undefined, token);
      session.set(token);
      route();
      sync();
    } catch (ex) {
      err.textContent = ex instanceof ApiError && ex.status === 401 ? 'This token was not accepted.' : `Could not check the token: ${ex.message}`;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  });
  clear(main).append(form);
  input.focus();
}

/** Renders the view the hash names. */
function route() {
  if (current && current.leave) current.leave();
  current = null;
  if (!session.token()) return loginView();
  nav.hidden = false;
  const hash = (location.hash.replace(/^#/, '') || '/').split('?')[0];
  const parts = hash.split('/').filter(Boolean);
  for (const a of nav.querySelectorAll('a')) {
    const here = a.getAttribute('href') === `#/${parts[0] || ''}`;
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  clear(main);
  if (parts[0] === 'deploy') current = views.deployForm(main, ctx);
  else if (parts[0] === 'deployments' && parts[1]) current = views.detail(main, ctx, decodeURIComponent(parts[1]));
  else if (parts[0] === 'deployments') current = views.list(main, ctx);
  else if (parts[0] === 'resources') current = views.resources(main, ctx);
  else current = views.dashboard(main, ctx);
  main.focus({ preventScroll: true });
}

// The watcher: status changes arrive live on the `/events` stream (SSE read through fetch); a full read every few
// seconds catches anything missed and the newest webhook delivery. Changes become toasts, and the view on screen
// refreshes itself, so nothing needs a reload.
const known = new Map(); // id → { name, status }
let seenDelivery = null;
let primed = false;
let changes = null; // AbortController of the events stream

function note(id, name, status) {
  const before = known.get(id);
  if (primed && before && before.status !== status) {
    const kind = status === 'failed' ? 'error' : status === 'running' ? 'ok' : 'info';
    toast(`${name}: ${before.status} → ${status}`, kind);
  }
  known.set(id, { name, status });
}

let pending = null;
function refreshView() {
  clearTimeout(pending);
  pending = setTimeout(() => { if (current && current.refresh) current.refresh(); }, 100);
}

/** The agent says when it is read-only (its store lost acknowledged writes) and why: shown above every view. */
async function checkStore() {
  let r = null;
  try { r = await get('/ready'); } catch (e) { r = e instanceof ApiError ? e.body : null; }
  const el = document.getElementById('readonly');
  if (r && r.store === 'read-only') {
    el.textContent = `Read-only: ${r.store_reason || 'the store cannot be trusted'}`;
    el.hidden = false;
  } else {
    el.hidden = true;
  }
}

async function sync() {
  if (!session.token()) return;
  connect();
  checkStore();
  try {
    const page = await get('/deployments?limit=100');
    for (const d of page.items) note(d.id, d.name, d.status);
    try {
      const del = await get('/webhooks/deliveries?limit=1');
      const newest = del.items[0];
      if (newest && seenDelivery !== null && newest.delivery !== seenDelivery && newest.event === 'push') {
        toast(`push received: ${newest.repo || ''} ${newest.ref || ''} (${newest.outcome})`);
      }
      seenDelivery = newest ? newest.delivery : '';
    } catch { /* deliveries are optional figures */ }
    primed = true;
    refreshView();
  } catch (e) {
    if (!(e instanceof ApiError)) console.warn('sync', e);
  }
}

async function onChange(ev) {
  const e = JSON.parse(ev.data);
  if (e.kind !== 'status') return sync();
  let name = known.has(e.deployment) ? known.get(e.deployment).name : null;
  if (!name) {
    try { name = (await get(`/deployments/${e.deployment}`)).name; } catch { name = e.deployment; }
  }
  note(e.deployment, name, e.status);
  refreshView();
}

function connect() {
  if (changes || !session.token()) return;
  const ctl = new AbortController();
  changes = ctl;
  stream('/events', onChange, ctl.signal)
    .catch(() => {})
    .finally(() => {
      if (changes === ctl) changes = null;
      if (!ctl.signal.aborted) setTimeout(connect, 3000);
    });
}

function disconnect() {
  if (changes) changes.abort();
  changes = null;
  known.clear();
  primed = false;
}

whenUnauthorized(() => {
  session.clear();
  disconnect();
  toast('The token was refused; log in again.', 'error');
  route();
});

document.getElementById('logout').addEventListener('click', () => {
  session.clear();
  disconnect();
  location.hash = '#/';
  route();
});

window.addEventListener('hashchange', route);
route();
setInterval(sync, 5000);
sync();
