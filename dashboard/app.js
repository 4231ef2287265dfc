// The Tollgate dashboard: one page over the stats APIs (/api/v1/stats/...), called with the
// token the user pastes. Every panel is an aggregate the gateway computes from rollups; the
// only raw rows fetched are one page of calls at a time, so the page stays light at any size.
import { ApiError, getJson, getToken, setToken } from './api.js';
import { clearTokensChart, renderTokensChart } from './charts.js';
import {
  changeText, DASH, el, fmtInt, fmtMs, fmtPct, fmtTime, fmtUsd, numCell, rankMove,
} from './format.js';

const WINDOWS = ['1h', '24h', '7d', '30d'];
const API_KEY_SHAPE = /^tg-[0-9A-Za-z]{43}$/; // billing/include/tollgate/billing/api_key.hpp
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

const $ = (sel) => document.querySelector(sel);
const state = {
  window: WINDOWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : '24h',
  bucket: null, // null: hour for 1h/24h, day for 7d/30d
  load: 0, // generation counter: answers of an older load are dropped
  windowStart: null,
  nextCursor: null,
};

// ---------------------------------------------------------------- status and panels

function setStatus(text, kind = '') {
  const s = $('#status');
  s.textContent = text;
  s.className = `status ${kind}`.trim();
}

/** Empties a panel's table; shows its "empty" line with `message` (or hides it with null). */
function resetPanel(id, message = null, isError = false) {
  const panel = document.getElementById(id);
  const body = panel.querySelector('tbody');
  if (body) body.replaceChildren();
  const empty = panel.querySelector('.empty');
  if (empty) {
    if (message === null) {
      empty.hidden = true;
    } else {
      empty.hidden = false;
      empty.textContent = message;
      empty.classList.toggle('error', isError);
    }
  }
  return body;
}

function panelError(id, err) {
  resetPanel(id, `Could not load: ${describe(err)}`, true);
}

function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 0) return err.message;
    if (err.status === 404) return `this gateway has no such API (404: ${err.message})`;
    if (err.status === 503) return `the database is unreachable (503: ${err.message})`;
    return `${err.status}: ${err.message}`;
  }
  return err && err.message ? err.message : String(err);
}

// ---------------------------------------------------------------- panels

function renderRankings(r) {
  const body = resetPanel('rankings', r.data.length ? null : 'No usage in this window yet.');
  for (const m of r.data) {
    const move = rankMove(m.rank, m.previous_rank);
    const change = changeText(m.change);
    body.append(el('tr', { dataset: { model: m.model } },
      numCell(m.rank, String(m.rank), 'rank'),
      el('td', { class: `move ${move.cls}` }, move.text),
      el('td', { class: 'model' }, m.model),
      numCell(m.tokens, fmtInt(m.tokens), 'tokens'),
      numCell(m.share, fmtPct(m.share), 'share'),
      numCell(m.requests, fmtInt(m.requests), 'requests'),
      el('td', { class: `num change ${change.cls}`, dataset: { value: m.change ?? 'null' } }, change.text)));
  }
}

/** Tokens of a cost row: reported prompt + completion, plus Tollgate's estimates; null when none. */
function costTokens(row) {
  const parts = [row.prompt_tokens, row.completion_tokens, row.estimated_tokens];
  if (parts.every((p) => p === null || p === undefined)) return null;
  return parts.reduce((a, p) => a + (p ?? 0), 0);
}

function renderCost(id, body, withPerToken) {
  const tbody = resetPanel(id, body.data.length ? null : 'No spend in this window yet.');
  for (const row of body.data) {
    const tokens = costTokens(row);
    const name = row.label && row.label !== row.key ? `${row.label} (${row.key})` : String(row.key ?? DASH);
    tbody.append(el('tr', { dataset: { key: row.key } },
      el('td', { class: 'name' }, name),
      numCell(row.requests, fmtInt(row.requests), 'requests'),
      numCell(tokens, fmtInt(tokens), 'tokens'),
      numCell(row.cost_usd, fmtUsd(row.cost_usd), 'cost'),
      withPerToken ? numCell(row.cost_per_million_tokens_usd, fmtUsd(row.cost_per_million_tokens_usd), 'per-m') : null));
  }
}

const pick = (o, ...names) => {
  for (const n of names) if (o[n] !== undefined) return o[n];
  return null;
};

function renderProviders(p) {
  const rows = p.data || [];
  const tbody = resetPanel('providers', rows.length ? null : 'No calls in this window yet.');
  for (const r of rows) {
    const lat50 = pick(r, 'latency_p50_ms', 'latency_p50');
    const lat90 = pick(r, 'latency_p90_ms', 'latency_p90');
    const ttft50 = pick(r, 'ttft_p50_ms', 'ttft_p50');
    const ttft90 = pick(r, 'ttft_p90_ms', 'ttft_p90');
    const tput = pick(r, 'throughput_tokens_per_second', 'throughput');
    tbody.append(el('tr', { dataset: { provider: r.provider } },
      el('td', { class: 'name' }, pick(r, 'provider_name', 'provider') ?? DASH),
      el('td', {}, pick(r, 'endpoint_id', 'endpoint') ?? DASH),
      numCell(r.requests, fmtInt(r.requests), 'requests'),
      numCell(r.uptime, fmtPct(r.uptime), 'uptime'),
      el('td', { class: 'num' }, `${fmtMs(lat50)} / ${fmtMs(lat90)}`),
      el('td', { class: 'num' }, `${fmtMs(ttft50)} / ${fmtMs(ttft90)}`),
      numCell(tput, tput === null ? DASH : `${tput.toFixed(1)} tok/s`, 'throughput')));
  }
}

function renderCalls(c, append) {
  const panel = document.getElementById('calls');
  const tbody = append ? panel.querySelector('tbody') : resetPanel('calls');
  const empty = panel.querySelector('.empty');
  empty.hidden = append || c.data.length > 0;
  empty.textContent = 'No calls match.';
  empty.classList.remove('error');
  for (const r of c.data) {
    const status = r.error_code ? `${r.status} ${r.error_code}` : String(r.status);
    const tokens = r.usage_reported === false && r.prompt_tokens === null
      ? 'not reported' : `${fmtInt(r.prompt_tokens)} / ${fmtInt(r.completion_tokens)}`;
    const app = r.app_title || r.app || '';
    const link = el('a', { href: r.generation_url, class: 'gen', dataset: { url: r.generation_url } }, r.id);
    tbody.append(el('tr', { dataset: { id: r.id }, class: r.status >= 400 ? 'failed' : '' },
      el('td', { class: 'time' }, fmtTime(r.created_at)),
      el('td', { class: 'model' }, r.model),
      el('td', {}, r.provider ?? DASH),
      el('td', {}, r.key_id ?? DASH),
      el('td', { class: 'app', title: r.app || '' }, app),
      el('td', { class: 'status-code' }, status),
      el('td', { class: 'num' }, tokens),
      numCell(r.cost_usd, fmtUsd(r.cost_usd), 'cost'),
      numCell(r.latency_ms, fmtMs(r.latency_ms), 'latency'),
      el('td', {}, link)));
  }
  state.nextCursor = c.next_cursor ?? null;
  $('#calls-more').hidden = !state.nextCursor;
}

// ---------------------------------------------------------------- loading

function bucket() {
  return state.bucket ?? (state.window === '7d' || state.window === '30d' ? 'day' : 'hour');
}

function callParams(cursor) {
  const f = new FormData($('#calls-filter'));
  const isoOf = (v) => (v ? new Date(v).toISOString() : '');
  return {
    model: f.get('model').trim(), provider: f.get('provider').trim(), key_id: f.get('key_id').trim(),
    status: f.get('status'),
    start: isoOf(f.get('start')) || state.windowStart || '', end: isoOf(f.get('end')),
    limit: 50, cursor,
  };
}

async function loadCalls(append) {
  const gen = state.load;
  try {
    const c = await getJson('/api/v1/stats/calls', callParams(append ? state.nextCursor : undefined));
    if (gen === state.load) renderCalls(c, append);
  } catch (err) {
    if (gen === state.load) panelError('calls', err);
  }
}

async function loadChart() {
  const gen = state.load;
  const panel = document.getElementById('tokens');
  const empty = panel.querySelector('.empty');
  try {
    const ts = await getJson('/api/v1/stats/timeseries',
      { metric: 'tokens', group_by: 'model', bucket: bucket(), tz: TZ, window: state.window });
    if (gen !== state.load) return;
    const hasData = ts.series.some((s) => s.values.some((v) => v));
    empty.hidden = hasData;
    empty.textContent = 'No tokens in this window yet.';
    empty.classList.remove('error');
    panel.querySelector('.chart').hidden = !hasData;
    if (hasData) renderTokensChart($('#tokens-chart'), ts); else clearTokensChart();
  } catch (err) {
    if (gen !== state.load) return;
    clearTokensChart();
    panel.querySelector('.chart').hidden = true;
    empty.hidden = false;
    empty.textContent = `Could not load: ${describe(err)}`;
    empty.classList.add('error');
  }
}

/** Loads every panel; marks body[data-loaded] when done (also after an error), for tests. */
async function loadAll() {
  const gen = ++state.load;
  try {
    await loadPanels(gen);
  } finally {
    if (gen === state.load) document.body.dataset.loaded = String(gen);
  }
}

async function loadPanels(gen) {
  for (const b of document.querySelectorAll('[data-window]')) {
    b.setAttribute('aria-pressed', String(b.dataset.window === state.window));
  }
  $('#bucket').value = bucket();
  const token = getToken();
  $('#token-input').value = token;
  document.body.classList.toggle('no-token', !token);
  if (!token) {
    $('#panels').hidden = true;
    $('#range').textContent = '';
    setStatus('Paste a Tollgate API key (tg-...) or the admin token above to see usage. '
      + 'It stays in this tab only (sessionStorage).', 'info');
    return;
  }
  const admin = !API_KEY_SHAPE.test(token);
  setStatus('Loading…', 'info');
  const win = state.window;

  let rankings;
  try {
    rankings = await getJson('/api/v1/stats/models', { window: win });
  } catch (err) {
    if (gen !== state.load) return;
    $('#panels').hidden = true;
    $('#range').textContent = '';
    if (err instanceof ApiError && err.status === 401) {
      setStatus('The gateway refused this token (401). Paste a valid API key or the admin token.', 'error');
    } else {
      setStatus(`Could not load statistics: ${describe(err)}`, 'error');
    }
    return;
  }
  if (gen !== state.load) return;
  $('#panels').hidden = false;
  state.windowStart = rankings.start;
  $('#range').textContent = `${admin ? 'Admin view (all keys)' : 'Your key’s view'} · window ${win}: `
    + `${fmtTime(rankings.start)} – ${fmtTime(rankings.end)} (${TZ})`;
  $('#tz').textContent = `times in ${TZ}`;
  renderRankings(rankings);
  setStatus(rankings.data.length
    ? ''
    : 'No data yet: no calls were recorded in this window. Make a call through the gateway, or pick a longer window.',
  rankings.data.length ? '' : 'info');

  const cost = (id, groupBy, perToken) => getJson('/api/v1/stats/cost', { group_by: groupBy, window: win })
    .then((b) => { if (gen === state.load) renderCost(id, b, perToken); },
      (err) => { if (gen === state.load) panelError(id, err); });
  const tasks = [
    loadChart(),
    cost('cost-model', 'model', true),
    cost('cost-provider', 'provider', true),
    cost('spend-key', 'key', false),
    getJson('/api/v1/stats/providers', { window: win })
      .then((b) => { if (gen === state.load) renderProviders(b); },
        (err) => { if (gen === state.load) panelError('providers', err); }),
    loadCalls(false),
  ];
  if (admin) {
    tasks.push(cost('spend-account', 'account', false));
  } else {
    resetPanel('spend-account', 'Spend by account is shown to the admin token only.');
  }
  await Promise.all(tasks);
}

async function showGeneration(url) {
  const pre = $('#generation');
  pre.hidden = false;
  pre.textContent = 'Loading…';
  try {
    pre.textContent = JSON.stringify(await getJson(url), null, 2);
  } catch (err) {
    pre.textContent = `Could not load ${url}: ${describe(err)}`;
  }
}

// ---------------------------------------------------------------- wiring

$('#token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  setToken($('#token-input').value.trim());
  loadAll();
});
$('#token-forget').addEventListener('click', () => {
  setToken('');
  loadAll();
});
for (const b of document.querySelectorAll('[data-window]')) {
  b.addEventListener('click', () => {
    state.window = b.dataset.window;
    history.replaceState(null, '', `#${state.window}`);
    loadAll();
  });
}
$('#bucket').addEventListener('change', (e) => {
  state.bucket = e.target.value;
  loadChart();
});
$('#calls-filter').addEventListener('submit', (e) => {
  e.preventDefault();
  loadCalls(false);
});
$('#calls-more').addEventListener('click', () => loadCalls(true));
$('#calls tbody').addEventListener('click', (e) => {
  const a = e.target.closest('a.gen');
  if (!a) return;
  e.preventDefault(); // the link needs the bearer token, which a plain navigation would not send
  showGeneration(a.dataset.url);
});

loadAll();
