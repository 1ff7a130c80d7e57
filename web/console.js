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
    session = null; /* the new key's scope is asked again */
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
  try {
    if (page) await page(view, route, () => seq === renderSeq);
    else view.append(el('h1', {}, 'Not found'), el('p', {}, 'No such page: ', route.page));
  } catch (e) {
    if (seq !== renderSeq) return;
    view.append(el('p', { className: 'error', role: 'alert' },
      e instanceof ApiError ? e.code + ': ' + e.message : String(e)));
  }
  /* the page is complete (a test waits for this number to pass the one it saw) */
  if (seq === renderSeq) document.body.dataset.rendered = String(seq);
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

/* ---- SVG helpers ------------------------------------------------------------------------ */

const SVG_NS = 'http://www.w3.org/2000/svg';

/* svg('rect', {x: 1, ...}, children...): attributes set with setAttribute (presentation
 * attributes only, no style), string children as text nodes. */
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {}))
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtNum(v, digits) {
  return v === null || v === undefined ? '—' : Number(v).toFixed(digits);
}

function shortName(s) {
  return s.name === null || s.name === undefined ? s.id.slice(0, 11) + '…' : s.name;
}

/* ---- the caller (GET /v1/whoami) --------------------------------------------------------- */

let session = null; /* {scope, tenant}: what the key may do; null until asked */

async function whoami() {
  if (session) return session;
  session = await api('GET', '/v1/whoami');
  const who = document.getElementById('who');
  who.textContent = session.scope === 'read' ? 'read-only key' :
    session.scope === 'admin' ? 'admin key' : (apiKey() ? 'write key' : '');
  if (session.tenant) who.textContent += ' · tenant ' + session.tenant;
  return session;
}

function canWrite() {
  return session && session.scope !== 'read';
}

/* ---- State ------------------------------------------------------------------------------ */

/* A definition list of the record's fields. */
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
  if (s.merge_mode) row('merge mode', s.merge_mode);
  if (s.shared) row('shared', 'yes');
  row('model', s.model);
  row('checksum', s.checksum);
  return dl;
}

/* Ancestors of s by its records' parents, breadth first, to `depth` generations and at most
 * `max` states: [{state, level (-1, -2, ...)}]. A parent that is gone (deleted, or not the
 * caller's) is kept as {id} only. */
async function ancestors(s, depth, max, live) {
  const out = [], seen = new Set([s.id]);
  let front = [s];
  for (let level = -1; level >= -depth && front.length && out.length < max; level--) {
    const next = [];
    for (const child of front) {
      for (const p of child.parents || []) {
        if (seen.has(p.id) || out.length >= max) continue;
        seen.add(p.id);
        let rec;
        try { rec = await api('GET', '/v1/states/' + encodeURIComponent(p.id)); }
        catch (e) { if (!(e instanceof ApiError) || e.status !== 404) throw e; rec = null; }
        if (!live()) return out;
        const st = rec || { id: p.id, name: null, parents: [], gone: true };
        out.push({ state: st, level });
        if (rec) next.push(rec);
      }
    }
    front = next;
  }
  return out;
}

/* The lineage graph: generations as columns (ancestors left, the state, children right), an
 * edge from each parent to each child shown, labelled with the child's weight for it. */
function lineageSvg(center, nodes) {
  const cols = new Map();
  for (const n of nodes) {
    if (!cols.has(n.level)) cols.set(n.level, []);
    cols.get(n.level).push(n);
  }
  const levels = [...cols.keys()].sort((a, b) => a - b);
  const W = 170, H = 46, GX = 70, GY = 14;
  const rows = Math.max(...levels.map((l) => cols.get(l).length));
  const width = levels.length * W + (levels.length - 1) * GX + 20;
  const height = rows * H + (rows - 1) * GY + 20;
  const pos = new Map();
  levels.forEach((l, ci) => cols.get(l).forEach((n, ri) => {
    pos.set(n.state.id, { x: 10 + ci * (W + GX), y: 10 + ri * (H + GY), n });
  }));
  const g = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', id: 'lineage-graph',
    'aria-label': 'Lineage graph',
  });
  g.append(svg('defs', {}, svg('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7,
    orient: 'auto-start-reverse',
  }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#5b6475' }))));
  for (const { n } of pos.values()) {
    for (const p of n.state.parents || []) {
      const from = pos.get(p.id), to = pos.get(n.state.id);
      if (!from || !to) continue;
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
      g.append(svg('line', { x1, y1, x2, y2, stroke: '#5b6475', 'marker-end': 'url(#arrow)' }),
        svg('text', {
          x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, 'text-anchor': 'middle', 'font-size': 12,
          fill: '#1d2330', class: 'edge-weight',
        }, String(p.weight)));
    }
  }
  for (const { x, y, n } of pos.values()) {
    const isCenter = n.state.id === center.id;
    const box = svg('g', { class: 'node' },
      svg('rect', {
        x, y, width: W, height: H, rx: 6, fill: isCenter ? '#1f5fbf' : n.state.gone ? '#eee' : '#e6edf8',
        stroke: '#1f5fbf',
      }),
      svg('text', { x: x + 8, y: y + 19, 'font-size': 13, 'font-weight': 700, fill: isCenter ? '#fff' : '#1d2330' },
        shortName(n.state).slice(0, 22)),
      svg('text', { x: x + 8, y: y + 36, 'font-size': 11, fill: isCenter ? '#fff' : '#5b6475' },
        n.state.gone ? 'not available' : `${n.state.n_tokens} tokens`));
    if (isCenter || n.state.gone) {
      g.append(box);
    } else {
      const a = svg('a', { href: '#/state/' + encodeURIComponent(n.state.id) });
      a.append(svg('title', {}, shortName(n.state) + ' (' + n.state.id + ')'), box);
      g.append(a);
    }
  }
  return g;
}

/* Per-layer norms of the conv and SSM state as a small grouped bar chart (log-free, scaled to
 * the largest), with the numbers in a table beside it. */
function normsChart(stats) {
  const L = stats.layers.length;
  const max = Math.max(1e-30, ...stats.layers.map((l) => Math.max(l.conv_norm || 0, l.ssm_norm || 0)));
  const BW = 10, GAP = 8, H = 120, left = 44, width = left + L * (2 * BW + GAP) + 10;
  const g = svg('svg', {
    viewBox: `0 0 ${width} ${H + 40}`, width, height: H + 40, role: 'img', id: 'norms-chart',
    'aria-label': 'Per-layer norms of the conv and SSM state',
  });
  g.append(svg('line', { x1: left - 4, y1: 10, x2: left - 4, y2: 10 + H, stroke: '#5b6475' }),
    svg('text', { x: left - 8, y: 16, 'text-anchor': 'end', 'font-size': 10, fill: '#5b6475' }, max.toPrecision(3)),
    svg('text', { x: left - 8, y: 10 + H, 'text-anchor': 'end', 'font-size': 10, fill: '#5b6475' }, '0'));
  stats.layers.forEach((l, i) => {
    const x = left + i * (2 * BW + GAP);
    const hc = (l.conv_norm || 0) / max * H, hs = (l.ssm_norm || 0) / max * H;
    g.append(svg('rect', { x, y: 10 + H - hc, width: BW, height: hc, fill: '#1f5fbf' },
      svg('title', {}, `layer ${l.layer} conv ${l.conv_norm}`)),
    svg('rect', { x: x + BW, y: 10 + H - hs, width: BW, height: hs, fill: '#f0a500' },
      svg('title', {}, `layer ${l.layer} ssm ${l.ssm_norm}`)));
    if (L <= 32 || i % Math.ceil(L / 32) === 0)
      g.append(svg('text', { x: x + BW, y: H + 24, 'text-anchor': 'middle', 'font-size': 10, fill: '#5b6475' }, l.layer));
  });
  g.append(svg('rect', { x: left, y: H + 30, width: 10, height: 8, fill: '#1f5fbf' }),
    svg('text', { x: left + 14, y: H + 38, 'font-size': 10 }, 'conv'),
    svg('rect', { x: left + 50, y: H + 30, width: 10, height: 8, fill: '#f0a500' }),
    svg('text', { x: left + 64, y: H + 38, 'font-size': 10 }, 'ssm'));
  return g;
}

function normsTable(stats) {
  return el('table', { id: 'norms', className: 'compact' },
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Layer'),
      el('th', { scope: 'col', className: 'num' }, 'conv'), el('th', { scope: 'col', className: 'num' }, 'ssm'),
      el('th', { scope: 'col', className: 'num' }, 'both'))),
    el('tbody', {}, stats.layers.map((l) => el('tr', { dataset: { layer: l.layer } },
      el('td', {}, String(l.layer)),
      el('td', { className: 'num', dataset: { v: l.conv_norm } }, fmtNum(l.conv_norm, 4)),
      el('td', { className: 'num', dataset: { v: l.ssm_norm } }, fmtNum(l.ssm_norm, 4)),
      el('td', { className: 'num', dataset: { v: l.norm } }, fmtNum(l.norm, 4))))));
}

/* Download the state as a safetensors file (GET /v1/states/{id}/data with the key). */
async function exportState(s) {
  const res = await api('GET', '/v1/states/' + encodeURIComponent(s.id) + '/data', undefined, { raw: true });
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: (s.name || s.id).replace(/[^A-Za-z0-9._-]/g, '_') + '.safetensors' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

pages.state = async function (view, route, live) {
  const ref = route.rest[0] || '';
  view.append(el('h1', {}, 'State'));
  const [s] = await Promise.all([api('GET', '/v1/states/' + encodeURIComponent(ref)), whoami()]);
  if (!live()) return;
  view.querySelector('h1').textContent = 'State ' + (s.name || s.id);

  const tools = el('div', { className: 'toolbar' },
    el('button', {
      type: 'button', id: 'export', className: 'secondary',
      onclick: () => exportState(s).catch((e) => status('Export failed: ' + e.message)),
    }, 'Download (safetensors)'),
    el('a', { href: hashFor('playground', { states: s.id }), className: 'button-link' }, 'Open in playground'));
  if (canWrite()) {
    const confirmBox = el('div', { id: 'delete-confirm', className: 'confirm', role: 'alertdialog', hidden: true,
      'aria-label': 'Confirm delete' },
    el('p', {}, 'Delete ', el('strong', {}, s.name || s.id), '? This cannot be undone.'),
    el('button', {
      type: 'button', id: 'delete-yes', className: 'danger', onclick: async () => {
        try {
          await api('DELETE', '/v1/states/' + encodeURIComponent(s.id));
          status('Deleted ' + (s.name || s.id) + '.');
          location.hash = '#/catalog';
        } catch (e) { status('Delete failed: ' + e.message); }
      },
    }, 'Delete'),
    el('button', { type: 'button', id: 'delete-no', className: 'secondary', onclick: () => { confirmBox.hidden = true; } }, 'Cancel'));
    tools.append(el('button', {
      type: 'button', id: 'delete', className: 'danger',
      onclick: () => { confirmBox.hidden = false; document.getElementById('delete-no').focus(); },
    }, 'Delete…'));
    view.append(tools, confirmBox);
  } else {
    view.append(tools);
  }
  view.append(recordView(s));
  view.append(el('h2', {}, 'Metadata'),
    el('pre', { className: 'metadata', id: 'metadata' }, JSON.stringify(s.metadata ?? null, null, 2)));

  /* lineage: parents (from the records) and children (GET .../children) */
  const lineage = el('section', { id: 'lineage' }, el('h2', {}, 'Lineage'));
  view.append(lineage);
  const [anc, kids] = await Promise.all([
    ancestors(s, 4, 60, live),
    api('GET', '/v1/states/' + encodeURIComponent(s.id) + '/children?depth=3&limit=60'),
  ]);
  if (!live()) return;
  const nodes = [{ state: s, level: 0 }, ...anc,
    ...kids.data.map((c) => ({ state: c.state, level: c.depth }))];
  if (nodes.length > 1) lineage.append(el('div', { className: 'graphwrap' }, lineageSvg(s, nodes)));
  lineage.append(el('h3', {}, 'Parents'), (s.parents || []).length ?
    el('table', { id: 'parents', className: 'compact' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Parent'), el('th', { scope: 'col' }, 'Id'),
        el('th', { scope: 'col', className: 'num' }, 'Weight'))),
      el('tbody', {}, s.parents.map((p) => {
        const a = anc.find((x) => x.state.id === p.id);
        return el('tr', { dataset: { id: p.id } },
          el('td', {}, a && !a.state.gone ? el('a', { href: '#/state/' + encodeURIComponent(p.id) }, shortName(a.state)) : '(not available)'),
          el('td', { className: 'id' }, p.id), el('td', { className: 'num' }, String(p.weight)));
      }))) : el('p', { className: 'muted' }, 'No parents: made from a prompt (or imported).'));
  lineage.append(el('h3', {}, 'Children'), kids.data.length ?
    el('table', { id: 'children', className: 'compact' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Child'), el('th', { scope: 'col', className: 'num' }, 'Depth'),
        el('th', { scope: 'col' }, 'From'), el('th', { scope: 'col', className: 'num' }, 'Weight'))),
      el('tbody', {}, kids.data.map((c) => el('tr', { dataset: { id: c.state.id } },
        el('td', {}, el('a', { href: '#/state/' + encodeURIComponent(c.state.id) }, shortName(c.state))),
        el('td', { className: 'num' }, String(c.depth)),
        el('td', { className: 'id' }, c.parent), el('td', { className: 'num' }, String(c.weight)))))) :
    el('p', { className: 'muted' }, 'No state was made from this one.'));
  if (kids.truncated) lineage.append(el('p', { className: 'muted' }, 'More children than shown.'));

  const stats = await api('GET', '/v1/states/' + encodeURIComponent(s.id) + '/stats');
  if (!live()) return;
  view.append(el('section', { id: 'stats' }, el('h2', {}, 'Per-layer norms'),
    el('p', { className: 'muted' }, `whole state ${fmtNum(stats.norm, 4)} · conv ${fmtNum(stats.conv_norm, 4)} · ssm ${fmtNum(stats.ssm_norm, 4)} · final hidden ${fmtNum(stats.final_hidden_norm, 4)}`),
    el('div', { className: 'chartrow' }, el('div', { className: 'graphwrap' }, normsChart(stats)), normsTable(stats))));
};

/* ---- Similarity ------------------------------------------------------------------------- */

/* Diverging colour of a cosine: blue for 1, white for 0, red for -1. */
function cosColor(v) {
  if (v === null) return '#dddddd';
  const t = Math.max(-1, Math.min(1, v));
  const mix = (a, b, f) => Math.round(a + (b - a) * f);
  return t >= 0 ? `rgb(${mix(255, 31, t)},${mix(255, 95, t)},${mix(255, 191, t)})`
    : `rgb(${mix(255, 180, -t)},${mix(255, 35, -t)},${mix(255, 24, -t)})`;
}

function heatmap(states, m) {
  const n = states.length, C = n <= 16 ? 44 : n <= 32 ? 22 : 12, left = 120, top = 10;
  const width = left + n * C + 10, height = top + n * C + 110;
  const g = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', id: 'heatmap',
    'aria-label': 'Pairwise cosine similarity' });
  states.forEach((s, i) => {
    g.append(svg('text', { x: left - 6, y: top + i * C + C / 2 + 4, 'text-anchor': 'end', 'font-size': 11 }, shortName(s).slice(0, 18)));
    const x = left + i * C + C / 2, y = top + n * C + 6;
    g.append(svg('text', { x, y, 'font-size': 11, transform: `rotate(60 ${x} ${y})` }, shortName(s).slice(0, 18)));
  });
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const v = m[i][j];
      const cell = svg('g', { class: 'cell', 'data-i': i, 'data-j': j, 'data-v': v === null ? 'null' : v },
        svg('rect', { x: left + j * C, y: top + i * C, width: C, height: C, fill: cosColor(v), stroke: '#fff' }),
        svg('title', {}, `${shortName(states[i])} · ${shortName(states[j])}: ${v === null ? 'n/a (zero)' : v}`));
      if (C >= 40) cell.append(svg('text', { x: left + j * C + C / 2, y: top + i * C + C / 2 + 4, 'text-anchor': 'middle', 'font-size': 11,
        fill: v !== null && Math.abs(v) > 0.6 ? '#fff' : '#1d2330' }, fmtNum(v, 2)));
      g.append(cell);
    }
  }
  return g;
}

pages.similarity = async function (view, route, live) {
  const q = route.q;
  const names = (q.get('states') || '').split(',').map((x) => x.trim()).filter(Boolean);
  const layer = q.get('layer') || 'whole';
  view.append(el('h1', {}, 'Similarity'));
  const list = el('textarea', { id: 'sim-states', rows: 5, cols: 40, value: names.join('\n') });
  const newest = el('select', { id: 'sim-newest' }, [4, 8, 16, 32, 64].map((n) => el('option', { value: n }, n)));
  view.append(el('form', {
    className: 'filters', onsubmit: (ev) => {
      ev.preventDefault();
      const st = list.value.split(/[\n,]/).map((x) => x.trim()).filter(Boolean);
      location.hash = hashFor('similarity', { states: st.join(','), layer });
    },
  },
  el('div', {}, el('label', { htmlFor: 'sim-states' }, 'States (ids or names, one a line, up to 64)'), list),
  el('div', {}, el('button', { type: 'submit', id: 'sim-go' }, 'Compare')),
  el('div', {}, el('label', { htmlFor: 'sim-newest' }, 'Or the newest'), newest,
    el('button', {
      type: 'button', id: 'sim-fill', className: 'secondary', onclick: async () => {
        const page = await api('GET', '/v1/states?limit=' + newest.value);
        list.value = page.data.map((s) => s.name || s.id).join('\n');
      },
    }, 'Fill in'))));
  if (!names.length) {
    view.append(el('p', { className: 'muted' }, 'Name 1 to 64 states to see their pairwise cosine similarity.'));
    return;
  }
  status('Computing…');
  const r = await api('POST', '/v1/states/similarity', { states: names, per_layer: true });
  if (!live()) return;
  status('');
  const L = r.layers ? r.layers.length : 0;
  const sel = el('select', {
    id: 'sim-layer', onchange: () => { location.hash = hashFor('similarity', { states: names.join(','), layer: sel.value }); },
  }, el('option', { value: 'whole', selected: layer === 'whole' }, 'Whole state'),
  Array.from({ length: L }, (_, l) => el('option', { value: String(l), selected: layer === String(l) }, 'Layer ' + l)));
  const m = layer === 'whole' ? r.similarity : (r.layers[parseInt(layer, 10)] || r.similarity);
  view.append(el('div', { className: 'toolbar' }, el('div', {}, el('label', { htmlFor: 'sim-layer' }, 'Over'), sel)),
    el('div', { className: 'graphwrap' }, heatmap(r.states, m)),
    el('p', { className: 'muted' }, 'Cosine similarity of the recurrent state (conv and SSM; final hidden left out). Hover a cell for the exact value.'));
};

/* ---- Playground ------------------------------------------------------------------------- */

/* Read a text/event-stream body, calling onEvent(parsed JSON) per data line until [DONE]. */
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of block.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

function logprobTable(rows) {
  return el('table', { id: 'logprobs', className: 'compact' },
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, '#'), el('th', { scope: 'col' }, 'Token'),
      el('th', { scope: 'col', className: 'num' }, 'Id'), el('th', { scope: 'col', className: 'num' }, 'Log-prob'))),
    el('tbody', {}, rows.map((r, i) => el('tr', {},
      el('td', { className: 'num' }, String(i)), el('td', { className: 'tok' }, JSON.stringify(r.text ?? '')),
      el('td', { className: 'num' }, r.token === undefined ? '' : String(r.token)),
      el('td', { className: 'num', dataset: { v: r.logprob === null ? 'null' : r.logprob } }, fmtNum(r.logprob, 4))))));
}

pages.playground = async function (view, route, live) {
  await whoami();
  if (!live()) return;
  view.append(el('h1', {}, 'Playground'));
  const q = route.q;
  const rows = el('div', { id: 'pg-sources', className: 'sources' });
  const addRow = (state, weight) => {
    const i = rows.children.length;
    const row = el('div', { className: 'source' },
      el('label', { htmlFor: 'pg-state-' + i }, 'State'), el('input', { id: 'pg-state-' + i, className: 'pg-state', value: state || '', size: 24 }),
      el('label', { htmlFor: 'pg-weight-' + i }, 'Weight'), el('input', { id: 'pg-weight-' + i, className: 'pg-weight', type: 'number', step: 'any', value: weight ?? 1, size: 6 }),
      el('button', { type: 'button', className: 'secondary', 'aria-label': 'Remove this state', onclick: () => row.remove() }, '✕'));
    rows.append(row);
  };
  const initial = (q.get('states') || '').split(',').filter(Boolean);
  if (initial.length) initial.forEach((s) => addRow(s, 1 / initial.length)); else addRow('', 1);
  const prompt = el('textarea', { id: 'pg-prompt', rows: 4, cols: 60, value: q.get('prompt') || '' });
  const mode = el('select', { id: 'pg-mode' }, el('option', { value: 'generate' }, 'Generate'), el('option', { value: 'score' }, 'Score a continuation'));
  const cont = el('textarea', { id: 'pg-continuation', rows: 2, cols: 60 });
  const maxTok = el('input', { id: 'pg-max', type: 'number', value: 32, min: 1, max: 4096, size: 5 });
  const temp = el('input', { id: 'pg-temp', type: 'number', step: 'any', value: 0, min: 0, size: 5 });
  const seed = el('input', { id: 'pg-seed', type: 'number', value: 1, size: 8 });
  const stream = el('input', { id: 'pg-stream', type: 'checkbox', checked: true });
  const out = el('div', { id: 'pg-out', 'aria-live': 'polite' });
  const contRow = el('div', { hidden: true }, el('label', { htmlFor: 'pg-continuation' }, 'Continuation to score'), cont);
  mode.addEventListener('change', () => { contRow.hidden = mode.value !== 'score'; });

  const sources = () => [...rows.querySelectorAll('.source')].map((r) => ({
    state: r.querySelector('.pg-state').value.trim(), weight: Number(r.querySelector('.pg-weight').value),
  })).filter((s) => s.state);
  /* retrieve-then-merge: the daemon searches the catalog and merges the k states it finds */
  const retr = el('input', { id: 'pg-retrieve', type: 'checkbox' });
  const rq = el('textarea', { id: 'pg-rquery', rows: 2, cols: 30, placeholder: 'query (empty: the prompt)' });
  const rk = el('input', { id: 'pg-rk', type: 'number', value: 3, min: 1, max: 100 });
  const rw = el('select', { id: 'pg-rweights' }, el('option', { value: 'softmax' }, 'softmax of scores'),
    el('option', { value: 'uniform' }, 'uniform'));
  const retrieveSpec = () => {
    const spec = { k: Number(rk.value), weights: rw.value };
    if (rq.value.trim()) spec.query = rq.value;
    return { merge: { retrieve: spec } };
  };
  const start = (src) => retr.checked ? retrieveSpec() : src.length === 0 ? {} :
    src.length === 1 && src[0].weight === 1 ? { state: src[0].state } : { merge: src };
  let lastRetrieved = null; /* what the last retrieving run merged: "save this merge" stores it */
  const showRetrieved = (list) => {
    if (!list || !list.length) return;
    lastRetrieved = list;
    out.append(el('h2', {}, 'Retrieved and merged'), el('table', { id: 'pg-retrieved', className: 'compact' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'State'), el('th', { scope: 'col', className: 'num' }, 'Score'),
        el('th', { scope: 'col', className: 'num' }, 'Weight'))),
      el('tbody', {}, list.map((r) => el('tr', { dataset: { id: r.id } },
        el('td', {}, el('a', { href: '#/state/' + encodeURIComponent(r.id) }, shortName(r))),
        el('td', { className: 'num' }, fmtNum(r.score, 4)), el('td', { className: 'num' }, fmtNum(r.weight, 4)))))));
  };

  const run = async () => {
    const src = sources();
    out.replaceChildren();
    status('Running…');
    if (mode.value === 'score') {
      const body = { ...start(src), context: prompt.value, continuation: cont.value };
      const r = await api('POST', '/v1/score', body);
      out.append(el('p', { id: 'pg-score' }, `${r.n_tokens} tokens · log-prob sum ${fmtNum(r.logprob_sum, 4)} · perplexity ${fmtNum(r.perplexity, 4)}`),
        logprobTable(r.token_logprobs.map((lp) => ({ logprob: lp }))));
      showRetrieved(r.retrieved);
      status('');
      return;
    }
    const body = { ...start(src), prompt: prompt.value, max_tokens: Number(maxTok.value),
      temperature: Number(temp.value), seed: Number(seed.value), logprobs: 1 };
    const text = el('pre', { id: 'pg-text', className: 'gen' });
    const fin = el('p', { id: 'pg-finish', className: 'muted' });
    out.append(text, fin);
    const toks = [];
    let retrieved = null;
    if (stream.checked) {
      const res = await api('POST', '/v1/generate', { ...body, stream: true }, { raw: true });
      await readEvents(res, (ev) => {
        if (ev.error) throw new ApiError(500, ev.error.code, ev.error.message);
        if (ev.token !== undefined) toks.push({ text: ev.text, token: ev.token, logprob: ev.logprob });
        text.append(document.createTextNode(ev.text || ''));
        if (ev.finish_reason) fin.textContent = `finish: ${ev.finish_reason} · ${ev.usage.completion_tokens} tokens`;
        if (ev.retrieved) retrieved = ev.retrieved;
      });
    } else {
      const r = await api('POST', '/v1/generate', body);
      text.textContent = r.text;
      (r.logprobs || []).forEach((l) => toks.push(l));
      fin.textContent = `finish: ${r.finish_reason} · ${r.usage.completion_tokens} tokens`;
      retrieved = r.retrieved;
    }
    showRetrieved(retrieved);
    out.append(el('h2', {}, 'Per-token log-probabilities'), logprobTable(toks));
    status('');
  };

  const saveName = el('input', { id: 'pg-save-name', size: 20, placeholder: 'name (optional)' });
  const saved = el('p', { id: 'pg-saved' });
  const save = async () => {
    const src = retr.checked ? (lastRetrieved || []).map((r) => ({ state: r.id, weight: r.weight })) : sources();
    if (!src.length) { status(retr.checked ? 'Run first: the states retrieved are saved.' : 'Name at least one state to merge.'); return; }
    const body = { sources: src };
    if (saveName.value.trim()) body.name = saveName.value.trim();
    const rec = await api('POST', '/v1/states/merge', body);
    saved.replaceChildren('Saved as ', el('a', { href: '#/state/' + encodeURIComponent(rec.id) }, shortName(rec)), '.');
  };

  view.append(el('form', {
    className: 'playground', onsubmit: (ev) => { ev.preventDefault(); run().catch((e) => { status(''); out.replaceChildren(el('p', { className: 'error', role: 'alert' }, e.code ? e.code + ': ' + e.message : String(e))); }); },
  },
  el('fieldset', {}, el('legend', {}, 'Start from (empty: the zero state)'), rows,
    el('button', { type: 'button', id: 'pg-add', className: 'secondary', onclick: () => addRow('', 1) }, 'Add a state'),
    el('div', { className: 'toolbar retrieve' },
      el('div', {}, el('label', { htmlFor: 'pg-retrieve' }, 'Or retrieve them'), retr),
      el('div', {}, el('label', { htmlFor: 'pg-rquery' }, 'Query'), rq),
      el('div', {}, el('label', { htmlFor: 'pg-rk' }, 'k'), rk),
      el('div', {}, el('label', { htmlFor: 'pg-rweights' }, 'Weights'), rw))),
  el('div', {}, el('label', { htmlFor: 'pg-prompt' }, 'Prompt'), prompt),
  contRow,
  el('div', { className: 'toolbar' },
    el('div', {}, el('label', { htmlFor: 'pg-mode' }, 'Mode'), mode),
    el('div', {}, el('label', { htmlFor: 'pg-max' }, 'Max tokens'), maxTok),
    el('div', {}, el('label', { htmlFor: 'pg-temp' }, 'Temperature'), temp),
    el('div', {}, el('label', { htmlFor: 'pg-seed' }, 'Seed'), seed),
    el('div', {}, el('label', { htmlFor: 'pg-stream' }, 'Stream'), stream),
    el('button', { type: 'submit', id: 'pg-run' }, 'Run'))));
  if (canWrite()) {
    view.append(el('div', { className: 'toolbar', id: 'pg-save' },
      el('div', {}, el('label', { htmlFor: 'pg-save-name' }, 'Save this merge'), saveName),
      el('button', { type: 'button', id: 'pg-save-btn', className: 'secondary', onclick: () => save().catch((e) => status('Save failed: ' + e.message)) }, 'Save'), saved));
  }
  view.append(out);
};

/* ---- Model & health --------------------------------------------------------------------- */

/* Prometheus text -> Map of "name{labels}" (as written) -> number, and name -> summed value. */
function parseMetrics(text) {
  const series = new Map(), sums = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const key = line.slice(0, sp), v = Number(line.slice(sp + 1));
    series.set(key, v);
    const name = key.replace(/\{.*$/, '');
    if (!name.endsWith('_bucket')) sums.set(name, (sums.get(name) || 0) + v);
  }
  return { series, sums };
}

let healthTimer = null;

pages.health = async function (view, route, live) {
  view.append(el('h1', {}, 'Model & health'));
  const [models, metricsText] = await Promise.all([
    api('GET', '/v1/models'),
    api('GET', '/metrics', undefined, { raw: true }).then((r) => r.text()),
  ]);
  let health;
  try { health = await api('GET', '/healthz'); } catch (e) { health = { status: e.code, reason: e.message }; }
  if (!live()) return;
  const m = models.data[0];
  const card = el('dl', { className: 'record', id: 'model-card' });
  for (const [k, v] of Object.entries(m)) {
    if (v !== null && typeof v === 'object') continue;
    card.append(el('dt', {}, k), el('dd', { dataset: { field: k } }, String(v)));
  }
  view.append(el('h2', {}, 'Model'), card);
  const first = parseMetrics(metricsText);
  const sum = (n) => first.sums.get(n);
  const map = sum('statesoup_store_map_bytes'), used = sum('statesoup_store_used_bytes');
  const meter = el('meter', { id: 'map-meter', min: 0, max: map || 1, value: used || 0 });
  const figures = el('dl', { className: 'record', id: 'health' });
  const fig = (k, v, id) => figures.append(el('dt', {}, k), el('dd', { id }, v));
  fig('health', health.status + (health.reason ? ' (' + health.reason + ')' : ''), 'h-status');
  fig('states stored', String(sum('statesoup_states_stored')), 'h-states');
  fig('state bytes', fmtBytes(sum('statesoup_state_bytes')), 'h-bytes');
  const pcBudget = sum('statesoup_prefix_cache_budget_bytes'); /* --prefix-cache-budget only */
  if (pcBudget !== undefined) {
    fig('prompt cache', `${sum('statesoup_prefix_cache_entries')} entries, ` +
      `${fmtBytes(sum('statesoup_prefix_cache_bytes'))} of ${fmtBytes(pcBudget)}`, 'h-pcache');
  }
  fig('store map', `${fmtBytes(used)} used of ${fmtBytes(map)} (${map ? (100 * used / map).toFixed(1) : '0'} %)`, 'h-map');
  figures.append(el('dt', {}, 'map usage'), el('dd', {}, meter));
  fig('uptime', fmtNum(sum('statesoup_uptime_seconds'), 0) + ' s', 'h-uptime');
  fig('requests', String(sum('statesoup_http_requests_total') ?? '—'), 'h-requests');
  fig('tokens prefilled / generated', `${sum('statesoup_tokens_prefilled_total')} / ${sum('statesoup_tokens_generated_total')}`, 'h-tokens');
  const rates = el('p', { id: 'h-rates', className: 'muted' }, 'Rates appear after the next sample (every 5 s).');
  view.append(el('h2', {}, 'Health and catalog'), figures, el('h2', {}, 'Rates'), rates);

  let prev = { t: performance.now(), m: first };
  if (healthTimer) clearInterval(healthTimer);
  healthTimer = setInterval(async () => {
    if (!live()) { clearInterval(healthTimer); healthTimer = null; return; }
    try {
      const text = await api('GET', '/metrics', undefined, { raw: true }).then((r) => r.text());
      const now = { t: performance.now(), m: parseMetrics(text) };
      const dt = (now.t - prev.t) / 1000;
      const rate = (n) => ((now.m.sums.get(n) || 0) - (prev.m.sums.get(n) || 0)) / dt;
      rates.textContent = `requests ${rate('statesoup_http_requests_total').toFixed(2)}/s · ` +
        `tokens prefilled ${rate('statesoup_tokens_prefilled_total').toFixed(1)}/s · ` +
        `generated ${rate('statesoup_tokens_generated_total').toFixed(1)}/s (over the last ${dt.toFixed(1)} s)`;
      prev = now;
    } catch (e) { rates.textContent = 'metrics unavailable: ' + e.message; }
  }, 5000);
};

/* ---- start ------------------------------------------------------------------------------ */

document.addEventListener('DOMContentLoaded', () => {
  setupKeyForm();
  window.addEventListener('hashchange', render);
  render();
});
