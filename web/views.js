//! The dashboard's views (dashboard, deploy form, deployments list, detail, resources) built as DOM from API answers.

import { api, get, download, stream, enums, ApiError } from './api.js';

// ---------- DOM helpers (text only through textContent: nothing from the API is parsed as HTML) ----------

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  el.append(...nodes(children));
  return el;
}

/** Children as nodes: arrays flattened, null/undefined/false dropped, anything else as text. */
function nodes(children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

/** Replaces an element's children. */
export function clear(el, ...children) {
  el.replaceChildren(...nodes(children));
  return el;
}

const BUSY = new Set(['pending', 'provisioning', 'installing', 'deploying', 'destroying']);
/** How the guest types read in the form (a type without a label here shows as the API spells it). */
const GUEST_TYPE_LABELS = { vm: 'VM (QEMU)', lxc: 'Container (LXC)' };

/** Adds the values of the API's enum `name` (as its OpenAPI document lists them) to `select`, `value` selected. */
async function fillFrom(select, name, value, labels = {}) {
  const values = (await enums())[name];
  if (!values) throw new Error(`the API does not describe ${name}`);
  select.append(...values.map((v) => h('option', { value: v, selected: v === value }, labels[v] || v)));
}

const badge = (status) => h('span', { class: `badge s-${status}` }, status);

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)} ${units[i]}`;
}

function age(iso) {
  if (!iso) return '';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

const seconds = (x) => (x === null || x === undefined ? '—' : x < 120 ? `${x.toFixed(1)} s` : `${(x / 60).toFixed(1)} min`);

/** A labelled bar: `used` of `total`; the width is set through the CSSOM (the CSP forbids style attributes). */
function bar(label, used, total, text) {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  const fill = h('span', { class: `fill${pct > 85 ? ' hot' : ''}` });
  fill.style.width = `${pct.toFixed(1)}%`;
  return h('div', { class: 'bar-row' },
    h('span', { class: 'bar-label' }, label),
    h('span', { class: 'bar', role: 'meter', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct.toFixed(0), 'aria-valuetext': text }, fill),
    h('span', { class: 'bar-text' }, text));
}

function errorBox(e) {
  return h('p', { class: 'error-box', role: 'alert' }, e instanceof ApiError ? `${e.body.error || e.status}: ${e.message}` : String(e.message || e));
}

/** Runs `load` now and on every refresh; a failure shows in `slot` without stopping the next refresh. */
function live(slot, load) {
  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      await load();
    } catch (e) {
      clear(slot, errorBox(e));
    } finally {
      busy = false;
    }
  };
  refresh();
  return refresh;
}

// ---------- Dashboard ----------

export function dashboard(main) {
  const figures = h('section', { 'aria-labelledby': 'fig-h' });
  const cluster = h('section', { class: 'card', 'aria-labelledby': 'cl-h' });
  const recent = h('section', { class: 'card', 'aria-labelledby': 'rec-h' });
  main.append(h('h1', {}, 'Dashboard'), figures, h('div', { class: 'grid2' }, cluster, recent));
  const refresh = live(figures, async () => {
    const st = await get('/status');
    const cards = [
      ['Deployments', st.total],
      ['Success rate', st.success_rate === undefined || st.success_rate === null ? '—' : `${(st.success_rate * 100).toFixed(0)} %`],
      ['Mean deploy time', seconds(st.mean_deploy_seconds)],
      ['p95 deploy time', seconds(st.p95_deploy_seconds)],
    ];
    clear(figures, 
      h('h2', { id: 'fig-h', class: 'visually-hidden' }, 'Figures'),
      h('div', { class: 'stats' }, cards.map(([k, v]) => h('div', { class: 'stat card' }, h('span', { class: 'stat-value' }, v), h('span', { class: 'stat-label' }, k)))),
      h('ul', { class: 'counts', 'aria-label': 'Deployments by status' },
        st.by_status.filter((c) => c.count > 0 || !['destroying', 'destroyed'].includes(c.status)).map((c) =>
          h('li', {}, h('a', { href: `#/deployments?status=${c.status}`, class: 'count-link' }, badge(c.status), h('strong', {}, c.count))))));
    const r = st.resources;
    clear(cluster, h('h2', { id: 'cl-h' }, 'Proxmox cluster'),
      r.available ? r.nodes.map((n) => nodeBars(n)) : h('p', { class: 'muted' }, `No figures: ${r.reason || 'unknown'}`));
    const page = await get('/deployments?limit=6');
    const details = await Promise.all(page.items.map((d) => get(`/deployments/${d.id}`).catch(() => null)));
    const events = details.filter(Boolean).flatMap((d) => d.events.map((e) => ({ ...e, name: d.name, id: d.id })));
    events.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
    clear(recent, h('h2', { id: 'rec-h' }, 'Recent events'),
      events.length ? h('ol', { class: 'events' }, events.slice(0, 10).map((e) =>
        h('li', {}, h('a', { href: `#/deployments/${e.id}` }, e.name), ' ', badge(e.to), ' ', h('span', { class: 'muted' }, e.message), ' ', h('time', { datetime: e.at, class: 'muted' }, age(e.at)))))
        : h('p', { class: 'muted' }, 'Nothing yet. ', h('a', { href: '#/deploy' }, 'Deploy something.')));
  });
  return { refresh };
}

function nodeBars(n) {
  return h('div', { class: 'node' },
    h('h3', {}, n.node, ' ', h('span', { class: `badge ${n.online ? 's-running' : 's-failed'}` }, n.online ? 'online' : 'offline'), ' ', h('span', { class: 'muted' }, `${n.guests} guests`)),
    bar('CPU', n.cpu_used, n.cpu_total, `${n.cpu_used.toFixed(1)} / ${n.cpu_total} cores`),
    bar('Memory', n.memory_used_bytes, n.memory_total_bytes, `${bytes(n.memory_used_bytes)} / ${bytes(n.memory_total_bytes)}`),
    bar('Disk', n.disk_used_bytes, n.disk_total_bytes, `${bytes(n.disk_used_bytes)} / ${bytes(n.disk_total_bytes)}`));
}

// ---------- Deploy form ----------

/** A labelled field with its hint and its error slot (`err-<name>`), wired for screen readers. */
function field(name, label, control, hint) {
  control.id = `f-${name}`;
  control.name = name;
  const describedBy = [hint ? `hint-${name}` : null, `err-${name}`].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', describedBy);
  return h('div', { class: 'field', 'data-field': name },
    h('label', { for: control.id }, label),
    control,
    hint ? h('p', { class: 'hint', id: `hint-${name}` }, hint) : null,
    h('p', { class: 'field-error', id: `err-${name}` }));
}

/** Shows each 422 problem next to its field (`fallback` for fields the form does not have); focuses the first. */
function showFieldErrors(form, problems, fallback) {
  for (const p of form.querySelectorAll('.field-error')) p.textContent = '';
  for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
  let first = null;
  const rest = [];
  for (const p of problems) {
    const slot = form.querySelector(`#err-${CSS.escape(p.field)}`);
    if (!slot) { rest.push(p); continue; }
    slot.textContent = slot.textContent ? `${slot.textContent} ${p.message}` : `${p.field} ${p.message}`;
    const control = form.querySelector(`#f-${CSS.escape(p.field)}`);
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      first = first || control;
    }
  }
  if (fallback) fallback.textContent = rest.map((p) => `${p.field}: ${p.message} (${p.rule})`).join(' · ');
  if (first) first.focus();
}

/** Integers are sent as numbers; anything else as typed, so the API names the field and the rule. */
function numberOrText(v) {
  const t = v.trim();
  if (t === '') return undefined;
  return /^-?\d+$/.test(t) ? Number(t) : t;
}

function envRows(container) {
  const add = (name = '', value = '') => {
    const i = container.children.length;
    const row = h('div', { class: 'env-row' },
      h('label', { class: 'visually-hidden', for: `env-n-${i}` }, `Variable ${i + 1} name`),
      h('input', { id: `env-n-${i}`, class: 'env-name', placeholder: 'NAME', value: name, autocomplete: 'off', spellcheck: 'false' }),
      h('label', { class: 'visually-hidden', for: `env-v-${i}` }, `Variable ${i + 1} value`),
      h('input', { id: `env-v-${i}`, class: 'env-value', placeholder: 'value', value, type: 'password', autocomplete: 'off' }),
      h('button', { type: 'button', class: 'icon', 'aria-label': `Remove variable ${i + 1}`, onclick: () => row.remove() }, '×'));
    container.append(row);
  };
  const read = () => {
    const vars = {};
    for (const row of container.querySelectorAll('.env-row')) {
      const n = row.querySelector('.env-name').value.trim();
      if (n) vars[n] = row.querySelector('.env-value').value;
    }
    return vars;
  };
  return { add, read };
}

export function deployForm(main, ctx) {
  const text = (attrs = {}) => h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs });
  const frameworks = h('select', {});
  const types = h('select', {});
  const envBox = h('div', { class: 'env-rows' });
  const env = envRows(envBox);
  const general = h('p', { class: 'field-error', id: 'err-form', role: 'alert' });
  const envError = h('p', { class: 'field-error', id: 'err-vars' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Deploy');
  const form = h('form', { class: 'card', id: 'deploy-form', novalidate: true },
    h('div', { class: 'grid2' },
      field('name', 'Name', text({ required: true, placeholder: 'shop' }), 'Lowercase letters, digits and hyphens; unique.'),
      field('repo_url', 'Repository URL', text({ required: true, inputmode: 'url', placeholder: 'https://github.com/owner/repo' })),
      field('branch', 'Branch', text({ placeholder: 'main' })),
      field('framework', 'Framework', frameworks),
      field('type', 'Guest type', types),
      field('cpu', 'CPU cores', text({ inputmode: 'numeric', placeholder: '1' })),
      field('memory_mib', 'Memory (MiB)', text({ inputmode: 'numeric', placeholder: '1024' })),
      field('disk_gb', 'Disk (GB)', text({ inputmode: 'numeric', placeholder: '10' }))),
    h('fieldset', { class: 'env' },
      h('legend', {}, 'Environment variables'),
      h('p', { class: 'hint' }, 'Values are write-only: sealed at rest, never shown again.'),
      envBox,
      h('button', { type: 'button', onclick: () => env.add() }, 'Add variable'),
      envError),
    general,
    h('div', { class: 'row end' }, submit));
  // The choices are the API's own lists; the form is sent only once they are in.
  const lists = Promise.all([fillFrom(frameworks, 'Framework', 'flask'), fillFrom(types, 'GuestType', 'vm', GUEST_TYPE_LABELS)])
    .catch((ex) => { general.textContent = `Could not read the API's choices: ${ex.message}`; });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    await lists;
    const v = (n) => form.querySelector(`#f-${n}`).value;
    const body = { name: v('name').trim(), repo_url: v('repo_url').trim(), framework: v('framework'), type: v('type') };
    if (v('branch').trim()) body.branch = v('branch').trim();
    for (const n of ['cpu', 'memory_mib', 'disk_gb']) {
      const x = numberOrText(v(n));
      if (x !== undefined) body[n] = x;
    }
    const vars = env.read();
    submit.disabled = true;
    general.textContent = '';
    try {
      const d = await api('POST', '/deployments', body);
      if (Object.keys(vars).length) {
        try {
          await api('PUT', `/deployments/${d.id}/env`, { vars });
        } catch (ex) {
          ctx.toast(`Environment not set: ${ex.message}`, 'error');
        }
      }
      ctx.toast(`${d.name} accepted`, 'ok');
      ctx.go(`#/deployments/${d.id}`);
    } catch (ex) {
      if (ex instanceof ApiError && ex.status === 422) showFieldErrors(form, ex.fields, general);
      else general.textContent = ex.message;
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h('h1', {}, 'Deploy a repository'), form);
  form.querySelector('#f-name').focus();
  return {};
}

// ---------- Actions shared by the list and the detail page ----------

function actions(d, ctx, after) {
  const act = async (label, method, path, confirmText) => {
    if (confirmText && !(await ctx.confirmDialog(`${label} ${d.name}?`, confirmText, label))) return;
    try {
      await api(method, path);
      ctx.toast(`${label}: ${d.name} accepted`, 'ok');
    } catch (e) {
      ctx.toast(`${label} ${d.name}: ${e.message}`, 'error');
    }
    if (after) after();
  };
  const gone = d.status === 'destroyed' || d.status === 'destroying';
  const btn = (label, enabled, onclick, cls = '') => h('button', { type: 'button', class: cls, disabled: !enabled, 'aria-label': `${label} ${d.name}`, onclick }, label);
  return h('div', { class: 'actions' },
    btn('Redeploy', d.status === 'running' || d.status === 'failed', () => act('Redeploy', 'POST', `/deployments/${d.id}/redeploy`)),
    btn('Rollback', d.status === 'running', () => act('Rollback', 'POST', `/deployments/${d.id}/rollback`)),
    d.status === 'stopped'
      ? btn('Start', true, () => act('Start', 'POST', `/deployments/${d.id}/start`))
      : btn('Stop', d.status === 'running', () => act('Stop', 'POST', `/deployments/${d.id}/stop`)),
    btn('Destroy', !gone, () => act('Destroy', 'DELETE', `/deployments/${d.id}`, `This stops and deletes the guest of ${d.name} and releases its name. It cannot be undone.`), 'danger'));
}

const short = (sha) => (sha ? sha.slice(0, 7) : '—');
const urlLink = (url) => (url ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url) : '—');

// ---------- Deployments list ----------

export function list(main, ctx) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const status = h('select', { id: 'filter-status' }, h('option', { value: '' }, 'any'));
  // The statuses are the API's list; without it the list is shown unfiltered.
  const statuses = fillFrom(status, 'DeploymentStatus', params.get('status')).catch(() => {});
  const search = h('input', { id: 'filter-name', type: 'search', placeholder: 'name starts with…', autocomplete: 'off' });
  const slot = h('div', { id: 'deployments' });
  main.append(h('div', { class: 'row between' }, h('h1', {}, 'Deployments'), h('a', { class: 'button primary', href: '#/deploy' }, 'New deployment')),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'filter-status' }, 'Status'), status,
      h('label', { for: 'filter-name' }, 'Search'), search),
    slot);
  // Pages already shown below the first (by cursor), kept across refreshes until the filter changes.
  let extra = [];
  let cursor = null;
  const query = (after) => {
    const q = new URLSearchParams({ limit: '100' });
    if (status.value) q.set('status', status.value);
    // Names are lowercase; the filter is their start.
    if (search.value.trim()) q.set('name', search.value.trim().toLowerCase());
    if (after) q.set('after', after);
    return `/deployments?${q}`;
  };
  const refresh = live(slot, async () => {
    await statuses;
    const page = await get(query());
    const items = page.items.concat(extra);
    if (!extra.length) cursor = page.next_cursor || null;
    // Keep focus on an action button across a refresh.
    const focused = document.activeElement && slot.contains(document.activeElement) ? document.activeElement.getAttribute('aria-label') : null;
    if (!items.length) {
      clear(slot, h('p', { class: 'muted' }, 'No deployments match.'));
      return;
    }
    const cols = ['Name', 'Status', 'URL', 'Commit', 'Node', 'Age', 'Actions'];
    const more = cursor
      ? h('button', { type: 'button', id: 'list-more', onclick: async () => {
        const next = await get(query(cursor));
        extra = extra.concat(next.items);
        cursor = next.next_cursor || null;
        refresh();
      } }, `Show more (${items.length} of ${page.total})`)
      : null;
    clear(slot, h('table', { class: 'list' },
      h('caption', { class: 'visually-hidden' }, `${page.total} deployments`),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, items.map((d) => h('tr', { 'data-id': d.id, 'data-name': d.name, 'data-status': d.status },
        h('td', { 'data-label': 'Name' }, h('a', { href: `#/deployments/${d.id}`, class: 'name' }, d.name), h('span', { class: 'muted small' }, ` ${d.framework} · ${d.type}`)),
        h('td', { 'data-label': 'Status' }, badge(d.status)),
        h('td', { 'data-label': 'URL' }, urlLink(d.url)),
        h('td', { 'data-label': 'Commit' }, h('code', {}, short(d.commit))),
        h('td', { 'data-label': 'Node' }, d.proxmox_node || '—'),
        h('td', { 'data-label': 'Age' }, h('time', { datetime: d.created_at }, age(d.created_at))),
        h('td', { 'data-label': 'Actions' }, actions(d, ctx, () => refresh())))))), more);
    if (focused) {
      const again = slot.querySelector(`[aria-label="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  });
  const restart = () => { extra = []; cursor = null; refresh(); };
  status.addEventListener('change', restart);
  let t = null;
  search.addEventListener('input', () => { clearTimeout(t); t = setTimeout(restart, 250); });
  return { refresh };
}

// ---------- Detail ----------

export function detail(main, ctx, id) {
  const head = h('section', { id: 'detail-head' });
  const timeline = h('section', { class: 'card', 'aria-labelledby': 'tl-h' });
  const releases = h('section', { class: 'card', 'aria-labelledby': 'rel-h' });
  const logPre = h('pre', { id: 'log', class: 'log', tabindex: '0', 'aria-label': 'Deployment log', 'aria-live': 'off' });
  const logState = h('p', { class: 'muted small', id: 'log-state' });
  const logBox = h('section', { class: 'card', 'aria-labelledby': 'log-h' }, h('h2', { id: 'log-h' }, 'Log'), logState, logPre);
  const tf = h('section', { class: 'card', 'aria-labelledby': 'tf-h' });
  const envSec = h('section', { class: 'card', 'aria-labelledby': 'env-h' });
  const hooks = h('section', { class: 'card', 'aria-labelledby': 'wh-h' });
  const safety = h('div', { class: 'grid2' });
  main.append(h('p', {}, h('a', { href: '#/deployments' }, '← Deployments')), head,
    h('div', { class: 'grid2' }, timeline, releases), logBox, safety, h('div', { class: 'grid2' }, envSec, tf), hooks);

  let dep = null;
  let following = null; // AbortController of the live log
  let lastSeq = 0;
  let followedOnce = false;
  const follow = () => {
    if (following) return;
    followedOnce = true;
    following = new AbortController();
    logState.textContent = 'Following live…';
    stream(`/deployments/${id}/logs?follow=true&after=${lastSeq}`, (ev) => {
      if (ev.event !== 'log') return;
      const l = JSON.parse(ev.data);
      lastSeq = Math.max(lastSeq, l.seq);
      const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 8;
      logPre.append(h('span', { class: `l-${l.level}` }, `${l.ts.slice(11, 19)} ${l.step.padEnd(9)} ${l.text}\n`));
      if (atBottom) logPre.scrollTop = logPre.scrollHeight;
    }, following.signal)
      .then(() => { logState.textContent = 'The deployment settled; the log is complete.'; })
      .catch((e) => { if (e.name !== 'AbortError') logState.textContent = `Live log stopped: ${e.message}`; })
      .finally(() => { following = null; });
  };

  const refresh = live(head, async () => {
    const d = await get(`/deployments/${id}`);
    dep = d;
    const facts = [
      ['Status', badge(d.status)], ['URL', urlLink(d.url)], ['Commit', h('code', {}, short(d.commit))],
      ['Repository', `${d.repo_url} (${d.branch})`], ['Framework', d.framework], ['Guest', `${d.type} ${d.proxmox_id ?? '—'} on ${d.proxmox_node || '—'}`],
      ['Address', d.ip_address || '—'], ['Size', `${d.cpu} CPU · ${d.memory_mib} MiB · ${d.disk_gb} GB`], ['Created', h('time', { datetime: d.created_at }, age(d.created_at))],
    ];
    clear(head, 
      h('div', { class: 'row between' }, h('h1', {}, d.name, ' ', badge(d.status)), actions(d, ctx, () => refresh())),
      d.error_message ? h('p', { class: 'error-box' }, d.error_message) : null,
      h('dl', { class: 'facts card' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))));
    clear(timeline, h('h2', { id: 'tl-h' }, 'Timeline'), h('ol', { class: 'timeline' }, d.events.map((e) =>
      h('li', {}, badge(e.to), ' ', h('span', {}, e.message), ' ', h('time', { datetime: e.at, class: 'muted small' }, new Date(e.at).toLocaleTimeString())))));
    const rs = await get(`/deployments/${id}/releases`).catch(() => []);
    clear(releases, h('h2', { id: 'rel-h' }, 'Releases'), rs.length
      ? h('ul', { class: 'releases' }, rs.map((r) => h('li', {},
        h('div', {}, h('code', {}, short(r.commit)), ' ', h('span', { class: `badge r-${r.status}` }, r.status), ' ', h('span', { class: 'muted small' }, `${r.trigger} · ${r.step}`)),
        h('div', { class: 'small muted' }, r.timings.map((t) => `${t.step} ${(t.ms / 1000).toFixed(1)} s`).join(' · ') || 'no step finished yet'),
        r.error ? h('div', { class: 'small error-text' }, r.error) : null)))
      : h('p', { class: 'muted' }, 'No release yet.'));
    if (!following && (BUSY.has(d.status) || !followedOnce)) follow();
  });

  // Environment: names only; the form replaces all variables.
  const envNames = h('ul', { class: 'env-names' });
  const envBox = h('div', { class: 'env-rows' });
  const env = envRows(envBox);
  const envErr = h('p', { class: 'field-error', id: 'err-vars', role: 'alert' });
  const envForm = h('form', { id: 'env-form' }, envBox,
    h('div', { class: 'row' }, h('button', { type: 'button', onclick: () => env.add() }, 'Add variable'), h('button', { type: 'submit', class: 'primary' }, 'Replace variables')), envErr);
  const loadEnv = async () => {
    const r = await get(`/deployments/${id}/env`);
    clear(envNames, ...(r.names.length ? r.names.map((n) => h('li', {}, h('code', {}, n))) : [h('li', { class: 'muted' }, 'none set')]));
  };
  envForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    envErr.textContent = '';
    try {
      await api('PUT', `/deployments/${id}/env`, { vars: env.read() });
      clear(envBox);
      ctx.toast('Environment saved; it applies at the next deploy.', 'ok');
      await loadEnv();
    } catch (ex) {
      envErr.textContent = ex instanceof ApiError && ex.fields.length ? ex.fields.map((p) => `${p.field}: ${p.message}`).join(' · ') : ex.message;
    }
  });
  envSec.append(h('h2', { id: 'env-h' }, 'Environment'), h('p', { class: 'hint' }, 'Names of the variables set; values are write-only. Saving replaces all of them and applies at the next deploy.'), envNames, envForm);
  loadEnv().catch((e) => envNames.replaceChildren(errorBox(e)));

  // Terraform export, on demand.
  const tfOut = h('div', { id: 'terraform' });
  tf.append(h('h2', { id: 'tf-h' }, 'Terraform export'),
    h('div', { class: 'row' },
      h('button', { type: 'button', id: 'tf-show', onclick: async () => {
        try {
          const x = await get(`/deployments/${id}/terraform`);
          clear(tfOut, ...x.files.map((f) => h('details', {}, h('summary', {}, f.path), h('pre', { class: 'code' }, f.content))));
        } catch (e) {
          clear(tfOut, errorBox(e));
        }
      } }, 'Show files'),
      h('button', { type: 'button', onclick: () => download(`/deployments/${id}/terraform.tar.gz`, `${dep ? dep.name : id}-terraform.tar.gz`).catch((e) => ctx.toast(e.message, 'error')) }, 'Download .tar.gz')),
    tfOut);

  // Webhook deliveries that named this deployment.
  hooks.append(h('h2', { id: 'wh-h' }, 'Webhook deliveries'));
  const hookList = h('div', {});
  hooks.append(hookList);
  get(`/webhooks/deliveries?deployment=${encodeURIComponent(id)}&limit=10`).then((p) => {
    clear(hookList, p.items.length ? h('ul', {}, p.items.map((d) => h('li', {}, h('code', {}, short(d.after)), ` ${d.event} ${d.ref || ''} by ${d.pusher || '—'}: `, h('strong', {}, d.outcome), ' ', h('time', { class: 'muted small', datetime: d.received_at }, age(d.received_at)))))
      : h('p', { class: 'muted' }, 'No push has named this deployment.'));
  }).catch((e) => clear(hookList, errorBox(e)));

  const data = dataSafety(safety, ctx, id, () => refresh());

  return {
    refresh: () => { refresh(); data.load(); },
    leave: () => { if (following) following.abort(); },
  };
}

// ---------- Snapshots and backups (detail page) ----------

function dataSafety(box, ctx, id, after) {
  const snapSec = h('section', { class: 'card', 'aria-labelledby': 'snap-h' });
  const backSec = h('section', { class: 'card', 'aria-labelledby': 'bk-h' });
  box.append(snapSec, backSec);
  const snapList = h('div', { id: 'snap-list' });
  const backList = h('div', { id: 'backup-list' });
  const base = `/deployments/${id}`;
  // One action on a snapshot or backup: confirmed when it overwrites or deletes, reported in a toast, lists reloaded.
  const act = async (label, method, path, body, confirmText) => {
    if (confirmText && !(await ctx.confirmDialog(`${label}?`, confirmText, label))) return null;
    try {
      const r = await api(method, path, body);
      ctx.toast(`${label}: done`, 'ok');
      load();
      after();
      return r;
    } catch (e) {
      ctx.toast(`${label}: ${e.message}`, 'error');
      return null;
    }
  };
  const btn = (label, aria, onclick, cls = '') => h('button', { type: 'button', class: cls, 'aria-label': aria, onclick }, label);

  const snapName = h('input', { id: 'snap-name', placeholder: 'snapshot name', autocomplete: 'off', 'aria-label': 'Snapshot name' });
  const snapErr = h('p', { class: 'field-error', id: 'err-snap-name', role: 'alert' });
  const snapForm = h('form', { id: 'snap-take', class: 'row' }, snapName, h('button', { type: 'submit' }, 'Take snapshot'));
  snapForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    snapErr.textContent = '';
    try {
      await api('POST', `${base}/snapshots`, { name: snapName.value.trim() });
      snapName.value = '';
      ctx.toast('Snapshot taken', 'ok');
      load();
    } catch (ex) {
      snapErr.textContent = ex instanceof ApiError && ex.fields.length ? ex.fields.map((p) => `${p.field}: ${p.message}`).join(' · ') : ex.message;
    }
  });
  snapSec.append(h('h2', { id: 'snap-h' }, 'Snapshots'), snapList, snapForm, snapErr);

  const asName = h('input', { id: 'restore-as-name', placeholder: 'new deployment name', autocomplete: 'off', 'aria-label': 'Name of a deployment restored from a backup' });
  backSec.append(h('h2', { id: 'bk-h' }, 'Backups'), h('p', { class: 'hint' }, 'vzdump backups in the backup storage; they outlive the deployment. Restore in place overwrites the guest; restore as new makes a new deployment named below.'),
    backList, h('div', { class: 'row' }, btn('Take backup', 'Take backup', () => act('Backup', 'POST', `${base}/backups`, {})), asName));

  const load = async () => {
    try {
      const s = await get(`${base}/snapshots`);
      clear(snapList, s.items.length
        ? h('ul', { class: 'snapshots' }, s.items.map((x) => h('li', { 'data-snapshot': x.name },
          h('code', {}, x.name), ' ', h('span', { class: 'muted small' }, `${x.kind}${x.taken_at ? ` · ${age(x.taken_at)}` : ''}`), ' ',
          btn('Rollback', `Rollback to ${x.name}`, () => act(`Rollback to ${x.name}`, 'POST', `${base}/snapshots/${encodeURIComponent(x.name)}/rollback`, {}, `The guest is stopped and returns to snapshot ${x.name}; what changed since is lost.`), 'danger'), ' ',
          btn('Delete', `Delete snapshot ${x.name}`, () => act(`Delete snapshot ${x.name}`, 'DELETE', `${base}/snapshots/${encodeURIComponent(x.name)}`, undefined, `Snapshot ${x.name} is deleted.`)))))
        : h('p', { class: 'muted' }, 'No snapshot.'));
    } catch (e) {
      clear(snapList, errorBox(e));
    }
    try {
      const b = await get(`${base}/backups`);
      clear(backList, b.items.length
        ? h('ul', { class: 'backups' }, b.items.map((x) => h('li', { 'data-backup': x.name },
          h('code', {}, x.name), ' ', h('span', { class: 'muted small' }, `${x.taken_by} · ${bytes(x.size_bytes)}${x.taken_at ? ` · ${age(x.taken_at)}` : ''}`), ' ',
          btn('Restore', `Restore ${x.name}`, () => act(`Restore ${x.name}`, 'POST', `${base}/backups/${encodeURIComponent(x.name)}/restore`, {}, `The guest is stopped and overwritten from ${x.name}; what changed since is lost.`), 'danger'), ' ',
          btn('Restore as new', `Restore ${x.name} as new`, async () => {
            const name = asName.value.trim();
            if (!name) { asName.focus(); ctx.toast('Name the new deployment first', 'error'); return; }
            const d = await act(`Restore ${x.name} as ${name}`, 'POST', `${base}/backups/${encodeURIComponent(x.name)}/restore`, { as_new: { name } });
            if (d && d.id) ctx.go(`#/deployments/${d.id}`);
          }), ' ',
          btn('Delete', `Delete backup ${x.name}`, () => act(`Delete backup ${x.name}`, 'DELETE', `${base}/backups/${encodeURIComponent(x.name)}`, undefined, `Backup ${x.name} is deleted from the storage.`)))))
        : h('p', { class: 'muted' }, 'No backup.'));
    } catch (e) {
      clear(backList, errorBox(e));
    }
  };
  load();
  return { load };
}

// ---------- Resources ----------

export function resources(main) {
  const slot = h('div', {});
  main.append(h('h1', {}, 'Resources'), slot);
  const refresh = live(slot, async () => {
    const r = await get('/resources');
    if (!r.available) {
      clear(slot, h('p', { class: 'muted' }, `No Proxmox figures: ${r.reason || 'unknown'}`));
      return;
    }
    const free = (used, total) => bytes(Math.max(0, total - used));
    clear(slot, 
      h('section', { class: 'card', 'aria-labelledby': 'nodes-h' }, h('h2', { id: 'nodes-h' }, 'Nodes'),
        h('div', { class: 'nodes' }, r.nodes.map((n) => h('div', {}, nodeBars(n),
          h('p', { class: 'small muted' }, `Free: ${(n.cpu_total - n.cpu_used).toFixed(1)} cores · ${free(n.memory_used_bytes, n.memory_total_bytes)} memory · ${free(n.disk_used_bytes, n.disk_total_bytes)} disk`))))),
      h('section', { class: 'card', 'aria-labelledby': 'st-h' }, h('h2', { id: 'st-h' }, 'Storages'),
        h('table', { class: 'list' },
          h('thead', {}, h('tr', {}, ['Node', 'Storage', 'Used', 'Free', 'Total', ''].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, r.storages.map((s) => h('tr', {},
            h('td', { 'data-label': 'Node' }, s.node),
            h('td', { 'data-label': 'Storage' }, s.storage, s.shared ? ' (shared)' : ''),
            h('td', { 'data-label': 'Used' }, bytes(s.used_bytes)),
            h('td', { 'data-label': 'Free' }, free(s.used_bytes, s.total_bytes)),
            h('td', { 'data-label': 'Total' }, bytes(s.total_bytes)),
            h('td', { 'data-label': 'Use' }, bar(`${s.node}/${s.storage}`, s.used_bytes, s.total_bytes, `${s.total_bytes ? ((s.used_bytes / s.total_bytes) * 100).toFixed(0) : 0} %`))))))),
      h('p', { class: 'muted small' }, `As of ${r.as_of ? new Date(r.as_of).toLocaleTimeString() : '—'}`));
  });
  return { refresh };
}
