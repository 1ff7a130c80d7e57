/*
 * console.js - the operators' console of statesoupd: a small single-page app over the HTTP API
 * (docs/api.md), no framework. Pages are routed by the URL's fragment (#/catalog?tag=x, ...),
 * so the back button and links work and nothing of a page's state goes to the server.
 *
 * Safety rules kept everywhere below: every string that comes from the API (names, tags,
 * metadata, generated text) is put in the page as text (textContent / text nodes, never
 * innerHTML); the API key lives in sessionStorage only and travels in the Authorization header.
 * The daemon serves this file with a Content-Security-Policy that forbids inline script.
 */
'use strict';

const KEY_STORE = 'statesoup.key';

/* ---- small DOM helpers ------------------------------------------------------------------ */

/* el('a', {href: '#/x', className: 'y'}, 'text', child...): properties are assigned, never
 * parsed as HTML; string children become text nodes. */
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('aria-') || k === 'role' || k === 'scope') e.setAttribute(k, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function status(text) {
  document.getElementById('status').textContent = text || '';
}

function fmtBytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}

/* ---- the API ---------------------------------------------------------------------------- */

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || '';
}

/* fetch(path) with the key; JSON in and out. Resolves to the parsed body (or the Response when
 * opts.raw), rejects with an ApiError carrying the API's code and message. A 401 shows the key
 * form. */
async function api(method, path, body, opts) {
  const headers = {};
  const key = apiKey();
  if (key) headers['Authorization'] = 'Bearer ' + key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit', cache: 'no-store',
  });
  if (!res.ok) {
    let code = 'http_' + res.status, message = res.statusText;
    try {
      const j = await res.json();
      if (j && j.error) { code = j.error.code; message = j.error.message; }
    } catch (e) { /* not JSON */ }
    if (res.status === 401) showKeyForm(message);
    throw new ApiError(res.status, code, message);
  }
  if (opts && opts.raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

function showKeyForm(message) {
  const form = document.getElementById('keyform');
  form.hidden = false;
  document.getElementById('keyform-error').textContent = apiKey() ? message : '';
  document.getElementById('key').focus();
}

function setupKeyForm() {
  document.getElementById('keyform-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = document.getElementById('key');
    sessionStorage.setItem(KEY_STORE, input.value.trim());
    input.value = '';
    document.getElementById('keyform').hidden = true;
    render();
  });
}

/* ---- routing ---------------------------------------------------------------------------- */

/* "#/catalog?tag=a&limit=50" -> {page: 'catalog', rest: [], q: URLSearchParams} */
function currentRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  const qi = h.indexOf('?');
  const path = (qi < 0 ? h : h.slice(0, qi)).split('/').map(decodeURIComponent);
  const q = new URLSearchParams(qi < 0 ? '' : h.slice(qi + 1));
  return { page: path[0] || 'catalog', rest: path.slice(1), q };
}

function hashFor(page, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {}))
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const qs = q.toString();
  return '#/' + page + (qs ? '?' + qs : '');
}

const pages = {};
let renderSeq = 0;

async function render() {
  const route = currentRoute();
  const seq = ++renderSeq;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === route.page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  const page = pages[route.page];
  const view = el('div', { className: 'page page-' + route.page });
  main.replaceChildren(view);
  status('');
  if (!page) {
    view.append(el('h1', {}, 'Not found'), el('p', {}, 'No such page: ', route.page));
    return;
  }
  try {
    await page(view, route, () => seq === renderSeq);
  } catch (e) {
    if (seq !== renderSeq) return;
    view.append(el('p', { className: 'error', role: 'alert' },
      e instanceof ApiError ? e.code + ': ' + e.message : String(e)));
  }
}

/* ---- Catalog ---------------------------------------------------------------------------- */

const CATALOG_COLUMNS = [
  { key: 'name', label: 'Name', get: (s) => s.name || '' },
  { key: 'id', label: 'Id', get: (s) => s.id },
  { key: 'tags', label: 'Tags', get: (s) => (s.tags || []).join(',') },
  { key: 'tokens', label: 'Tokens', num: true, get: (s) => s.n_tokens },
  { key: 'size', label: 'Size', num: true, get: (s) => s.bytes },
  { key: 'dtype', label: 'Dtype', get: (s) => s.dtype },
  { key: 'created', label: 'Created', get: (s) => s.created_at },
  { key: 'parents', label: 'Parents', num: true, get: (s) => (s.parents || []).length },
];

function catalogCell(col, s) {
  switch (col.key) {
  case 'name':
    return el('td', {}, el('a', { href: '#/state/' + encodeURIComponent(s.id) },
      s.name === null || s.name === undefined ? '(unnamed)' : s.name));
  case 'id': return el('td', { className: 'id' }, s.id);
  case 'tags': return el('td', {}, (s.tags || []).map((t) => el('span', { className: 'tag' }, t)));
  case 'size': return el('td', { className: 'num', title: s.bytes + ' bytes' }, fmtBytes(s.bytes));
  default: return el('td', { className: col.num ? 'num' : '' }, String(col.get(s)));
  }
}

/* The catalog: GET /v1/states with the tag and name-prefix filters and the store's own cursor
 * paging (each page is one range read in the store, fast at any size); sorting orders the page
 * shown (the store lists newest first). */
pages.catalog = async function (view, route, live) {
  const q = route.q;
  const tag = q.get('tag') || '', prefix = q.get('prefix') || '';
  const limit = Math.min(Math.max(parseInt(q.get('limit') || '50', 10) || 50, 1), 1000);
  const cursor = q.get('cursor') || '';
  const back = (q.get('back') || '').split(' ').filter(Boolean); /* cursors of earlier pages */
  const sort = q.get('sort') || '', dir = q.get('dir') === 'desc' ? 'desc' : 'asc';

  view.append(el('h1', {}, 'Catalog'));
  const tagIn = el('input', { id: 'f-tag', name: 'tag', value: tag, size: 14 });
  const prefixIn = el('input', { id: 'f-prefix', name: 'prefix', value: prefix, size: 14 });
  const limitIn = el('select', { id: 'f-limit', name: 'limit' },
    [10, 25, 50, 100, 250].map((n) => el('option', { value: n, selected: n === limit }, n)));
  view.append(el('form', {
    className: 'filters', role: 'search', onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = hashFor('catalog', {
        tag: tagIn.value.trim(), prefix: prefixIn.value, limit: limitIn.value, sort, dir,
      });
    },
  },
  el('div', {}, el('label', { htmlFor: 'f-prefix' }, 'Name starts with'), prefixIn),
  el('div', {}, el('label', { htmlFor: 'f-tag' }, 'Tag'), tagIn),
  el('div', {}, el('label', { htmlFor: 'f-limit' }, 'Per page'), limitIn),
  el('button', { type: 'submit', id: 'f-apply' }, 'Filter')));

  const params = new URLSearchParams({ limit: String(limit) });
  if (tag) params.set('tag', tag);
  if (prefix) params.set('prefix', prefix);
  if (cursor) params.set('cursor', cursor);
  status('Loading…');
  const page = await api('GET', '/v1/states?' + params.toString());
  if (!live()) return;
  status('');

  const rows = page.data.slice();
  const col = CATALOG_COLUMNS.find((c) => c.key === sort);
  if (col) {
    rows.sort((a, b) => {
      const x = col.get(a), y = col.get(b);
      const c = col.num ? x - y : String(x).localeCompare(String(y));
      return dir === 'desc' ? -c : c;
    });
  }
  const keep = { tag, prefix, limit, cursor, back: back.join(' ') };
  const head = el('tr', {}, CATALOG_COLUMNS.map((c) => {
    const active = c.key === sort;
    const next = active && dir === 'asc' ? 'desc' : 'asc';
    return el('th', {
      scope: 'col', className: c.num ? 'num' : '',
      'aria-sort': active ? (dir === 'asc' ? 'ascending' : 'descending') : 'none',
    }, el('button', {
      type: 'button', dataset: { sort: c.key },
      onclick: () => { location.hash = hashFor('catalog', { ...keep, sort: c.key, dir: next }); },
    }, c.label + (active ? (dir === 'asc' ? ' ▲' : ' ▼') : '')));
  }));
  const body = el('tbody', {}, rows.map((s) =>
    el('tr', { dataset: { id: s.id } }, CATALOG_COLUMNS.map((c) => catalogCell(c, s)))));
  view.append(el('div', { className: 'tablewrap' },
    el('table', { id: 'catalog' },
      el('caption', { className: 'muted' },
        rows.length ? `${rows.length} state${rows.length === 1 ? '' : 's'} on this page` +
          (page.skipped ? `, ${page.skipped} unreadable left out` : '') : 'No states match.'),
      el('thead', {}, head), body)));

  const prev = back.length ? back[back.length - 1] : null;
  view.append(el('div', { className: 'pager' },
    el('button', {
      type: 'button', id: 'prev', className: 'secondary', disabled: !cursor,
      onclick: () => {
        location.hash = hashFor('catalog', {
          ...keep, cursor: prev === '-' ? '' : prev, back: back.slice(0, -1).join(' '), sort, dir,
        });
      },
    }, '← Newer'),
    el('button', {
      type: 'button', id: 'next', className: 'secondary', disabled: !page.next_cursor,
      onclick: () => {
        location.hash = hashFor('catalog', {
          ...keep, cursor: page.next_cursor, back: back.concat([cursor || '-']).join(' '), sort, dir,
        });
      },
    }, 'Older →')));
};

/* ---- State ------------------------------------------------------------------------------ */

/* A definition list of the record's fields; metadata shown as indented JSON text. */
function recordView(s) {
  const dl = el('dl', { className: 'record', id: 'record' });
  const row = (k, v) => dl.append(el('dt', {}, k), el('dd', { dataset: { field: k } }, v));
  row('name', s.name === null || s.name === undefined ? '(unnamed)' : s.name);
  row('id', s.id);
  row('tags', (s.tags || []).map((t) => el('span', { className: 'tag' }, t)));
  row('tokens', String(s.n_tokens));
  row('size', fmtBytes(s.bytes) + ' (' + s.bytes + ' bytes)');
  row('dtype', s.dtype);
  row('created', s.created_at);
  row('model', s.model);
  row('checksum', s.checksum);
  return dl;
}

pages.state = async function (view, route, live) {
  const ref = route.rest[0] || '';
  view.append(el('h1', {}, 'State'));
  const s = await api('GET', '/v1/states/' + encodeURIComponent(ref));
  if (!live()) return;
  view.querySelector('h1').textContent = 'State ' + (s.name || s.id);
  view.append(recordView(s));
  view.append(el('h2', {}, 'Metadata'),
    el('pre', { className: 'metadata', id: 'metadata' }, JSON.stringify(s.metadata ?? null, null, 2)));
};

/* ---- start ------------------------------------------------------------------------------ */

document.addEventListener('DOMContentLoaded', () => {
  setupKeyForm();
  window.addEventListener('hashchange', render);
  render();
});
