// The web dashboard (GET /dashboard, issue 10) in a real browser: Debian's chromium driven by
// playwright-core (headless, /usr/bin/chromium, no browser download), against the real gateway
// with usage seeded by real calls through it (a mock OpenAI-compatible upstream, three models,
// two keys, app attribution headers) and a real PostgreSQL.
//
// Covered:
//   1. Serving: index, the chart library and page files come from the binary with their content
//      types, a strict Content-Security-Policy, ETags (304 on If-None-Match).
//   2. The admin token: the rankings table (order, token counts), a cost figure, the chart's
//      series totals and the first call's id equal what the stats APIs answer; user text (an app
//      title with markup) shows as text; the calls' generation link opens the record; the status
//      filter narrows the calls; the 7d window asks for day buckets and redraws the rankings.
//   3. A key's token: spend by key shows only that key's own row and cost; the account panel is
//      reserved to the admin token.
//   4. A wrong token: the page says the token was refused (401).
//   5. An empty database: every panel says there is no data, with no console or page error.
// In every page: no console error (except a refused token's own 401), no uncaught error, and no
// request to any origin but the gateway's. Screenshots go to $TOLLGATE_TEST_ARTEFACTS (default
// tests/e2e/artefacts/, git-ignored).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  ADMIN_TOKEN, E2E_DIR, adminDatabaseUrl, createDatabase, loadDeps, makeWorkDir, requireBinary, runCliOk,
  startGateway, tail, waitFor, writeGatewayConfig,
} from '../lib/harness.mjs';
import { startMockOpenAI } from '../mock_openai.mjs';

const { pg } = await loadDeps();
adminDatabaseUrl();
requireBinary();

const CHROMIUM = process.env.TOLLGATE_CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(path.join(E2E_DIR, 'node_modules', 'playwright-core', 'package.json'))) {
  throw new Error(`e2e: playwright-core is missing in ${E2E_DIR}/node_modules. Run \`npm ci\` there (scripts/test.sh does).`);
}
if (!fs.existsSync(CHROMIUM)) {
  throw new Error(`e2e: ${CHROMIUM} does not exist. Install Debian's chromium (scripts/setup.sh does: apt-get install chromium).`);
}
const { chromium } = await import('playwright-core');

const ARTEFACTS = path.resolve(process.env.TOLLGATE_TEST_ARTEFACTS || path.join(E2E_DIR, 'artefacts'));
const PRICE = { prompt: '1.00', completion: '2.00' };
// Markup in user-supplied text must reach the page as text.
const APP_TITLE = 'Dash <b>Bold</b> & "Quoted" App';
const APP_REFERER = 'https://dash-app.example/some/page?q=1';

describe('dashboard in headless chromium', { timeout: 180000 }, () => {
  let workDir;
  let mock;
  let database;
  let emptyDatabase;
  let db;
  let gw;
  let emptyGw;
  let browser;
  const keys = {}; // name -> {key, id}

  async function chat(key, model, content, headers = {}) {
    const r = await fetch(`${gw.url}/api/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: 30 }),
    });
    await r.text();
    return { status: r.status, id: r.headers.get('x-request-id') };
  }

  async function api(base, p, token = ADMIN_TOKEN) {
    const r = await fetch(`${base}${p}`, { headers: { authorization: `Bearer ${token}` } });
    const text = await r.text();
    assert.equal(r.status, 200, `GET ${p}: ${r.status} ${text}`);
    return JSON.parse(text);
  }

  /**
   * A fresh browser context (own sessionStorage) on `base`/dashboard with `token` pasted; waits
   * until every panel has been drawn. Returns {page, problems, close()}: problems lists console
   * errors, page errors and requests to other origins.
   */
  async function openDashboard(base, token, { allowConsole = null, timezoneId = 'UTC' } = {}) {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, timezoneId, locale: 'en-US' });
    const page = await context.newPage();
    const problems = [];
    const requests = []; // every URL the page asked for
    page.on('console', (m) => {
      if (m.type() === 'error' && !(allowConsole && allowConsole.test(m.text()))) problems.push(`console error: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (req) => {
      requests.push(req.url());
      if (!req.url().startsWith(`${base}/`)) problems.push(`request to another origin: ${req.url()}`);
    });
    const res = await page.goto(`${base}/dashboard`);
    assert.equal(res.status(), 200);
    // Without a token the page asks for one (first load, generation 1) and fetches nothing.
    await page.waitForSelector('body[data-loaded="1"]');
    assert.match(await page.textContent('#status'), /Paste a Tollgate API key/);
    assert.equal(requests.filter((u) => u.includes('/api/')).length, 0);
    await page.fill('#token-input', token);
    await page.click('#token-use');
    return { page, problems, requests, close: () => context.close() };
  }

  // The load after the token was pasted (generation 2) has drawn every panel.
  const loaded = (page) => page.waitForSelector('body[data-loaded="2"]', { timeout: 20000 });
  const values = (page, sel) => page.$$eval(sel, (els) => els.map((e) => JSON.parse(e.dataset.value)));
  const texts = (page, sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent));
  async function screenshot(page, name) {
    fs.mkdirSync(ARTEFACTS, { recursive: true });
    const file = path.join(ARTEFACTS, `dashboard-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
  }

  before(async () => {
    const t0 = Date.now();
    workDir = makeWorkDir('e2e-dashboard');
    mock = await startMockOpenAI();
    database = await createDatabase(pg, 'tollgate_e2e_dash');
    emptyDatabase = await createDatabase(pg, 'tollgate_e2e_dash_empty');
    for (const d of [database, emptyDatabase]) await runCliOk(['migrate'], { env: { TOLLGATE_DATABASE_URL: d.url } });
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    const config = (databaseUrl, file) => writeGatewayConfig(workDir, {
      databaseUrl,
      file,
      providers: { mock: { type: 'openai_compatible', display_name: 'Mock Upstream', base_url: mock.baseURL, api_key: mock.apiKey } },
      models: [
        { id: 'dash/alpha', context_length: 8192, endpoints: [{ provider: 'mock', model: 'alpha-upstream', pricing: PRICE }] },
        { id: 'dash/beta', context_length: 8192, endpoints: [{ provider: 'mock', model: 'beta-upstream', pricing: PRICE }] },
        { id: 'dash/gamma', context_length: 8192, endpoints: [{ provider: 'mock', model: 'gamma-upstream', pricing: PRICE }] },
        { id: 'dash/broken', context_length: 8192, endpoints: [{ provider: 'mock', model: 'mock-error-500', pricing: PRICE }] },
      ],
    });
    const env = { TOLLGATE_DATABASE_URL: database.url };
    for (const name of ['dash-key-one', 'dash-key-two']) {
      const key = (await runCliOk(['keys', 'create', '--name', name], { env })).stdout.trim();
      const id = (await db.query('SELECT id FROM api_keys WHERE name = $1', [name])).rows[0].id;
      keys[name] = { key, id };
    }
    [gw, emptyGw] = await Promise.all([
      startGateway({ configPath: config(database.url, 'seeded.yaml'), workDir }),
      startGateway({ configPath: config(emptyDatabase.url, 'empty.yaml'), workDir }),
    ]);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });

    // Seed: alpha 5 calls, beta 3, gamma 1 (so the ranking order is fixed), one upstream 500.
    const app = { 'HTTP-Referer': APP_REFERER, 'X-Title': APP_TITLE };
    const one = keys['dash-key-one'].key;
    const two = keys['dash-key-two'].key;
    const calls = [
      ...Array.from({ length: 5 }, (_, i) => chat(one, 'dash/alpha', `alpha call number ${i}`, app)),
      ...Array.from({ length: 3 }, (_, i) => chat(two, 'dash/beta', `beta call ${i}`, { 'X-Title': 'Beta tool' })),
      chat(one, 'dash/gamma', 'gamma', app),
      chat(two, 'dash/broken', 'this one fails upstream'),
    ];
    const results = await Promise.all(calls);
    assert.deepEqual(results.slice(0, 9).map((r) => r.status), Array(9).fill(200), 'every call to a working model answered 200');
    assert.ok(results[9].status >= 500, `the broken model answers a 5xx, got ${results[9].status}`);
    await waitFor(async () => (await db.query('SELECT count(*)::int AS n FROM usage_events')).rows[0].n >= 10,
      { timeoutMs: 15000, what: 'usage rows of the 10 seeded calls' });
    console.error(`dashboard e2e: setup ${Date.now() - t0} ms`);
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    for (const g of [gw, emptyGw]) {
      if (!g) continue;
      const r = await g.stop('SIGTERM');
      if (r.code !== 0) console.error(`--- gateway log (${g.logFile}), exit ${JSON.stringify(r)} ---\n${tail(g.logFile, 20)}`);
    }
    if (mock) await mock.close().catch(() => {});
    if (db) await db.end().catch(() => {});
    for (const d of [database, emptyDatabase]) if (d) await d.drop().catch((e) => console.error(`e2e: drop ${d.name}: ${e.message}`));
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  test('the gateway serves the page and the chart library itself, with a strict CSP and ETags', async () => {
    const page = await fetch(`${gw.url}/dashboard`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    const csp = page.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe/);
    const html = await page.text();
    assert.doesNotMatch(html, /https?:\/\//, 'the page names no other origin (no CDN)');
    const etag = page.headers.get('etag');
    assert.ok(etag, 'an ETag');
    const again = await fetch(`${gw.url}/dashboard/`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    const lib = await fetch(`${gw.url}/dashboard/vendor/chart.umd.min.js`);
    assert.equal(lib.status, 200);
    assert.equal(lib.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.match((await lib.text()).slice(0, 200), /Chart\.js v4\./);
    for (const f of ['app.js', 'api.js', 'format.js', 'charts.js', 'style.css', 'icon.svg']) {
      assert.equal((await fetch(`${gw.url}/dashboard/${f}`)).status, 200, f);
    }
    assert.equal((await fetch(`${gw.url}/dashboard/missing.js`)).status, 404);
  });

  test('admin token: rankings, cost, chart and calls match the stats APIs; user text stays text', async () => {
    const { page, problems, requests, close } = await openDashboard(gw.url, ADMIN_TOKEN, { timezoneId: 'America/New_York' });
    try {
      await loaded(page);
      assert.equal(await page.textContent('#status'), '', 'no message over a full page');
      const tsUrl = new URL(requests.find((u) => u.includes('/api/v1/stats/timeseries')));
      assert.equal(tsUrl.searchParams.get('tz'), 'America/New_York', 'the chart asks in the browser time zone');

      const models = await api(gw.url, '/api/v1/stats/models?window=24h');
      assert.equal(models.data[0].model, 'dash/alpha', 'alpha has the most tokens');
      assert.deepEqual(await texts(page, '#rankings tbody td.model'), models.data.map((m) => m.model), 'rankings order');
      assert.deepEqual(await values(page, '#rankings tbody td.tokens'), models.data.map((m) => m.tokens), 'token counts');
      assert.deepEqual(await values(page, '#rankings tbody td.requests'), models.data.map((m) => m.requests), 'requests');
      const firstTokens = await page.textContent('#rankings tbody tr:first-child td.tokens');
      assert.equal(firstTokens, models.data[0].tokens.toLocaleString('en-US'));

      const cost = await api(gw.url, '/api/v1/stats/cost?group_by=model&window=24h');
      assert.ok(cost.data.length > 0 && cost.data[0].cost_usd > 0, 'some spend');
      assert.deepEqual(await values(page, '#cost-model tbody td.cost'), cost.data.map((r) => r.cost_usd), 'cost by model');
      assert.deepEqual(await values(page, '#cost-model tbody td.per-m'), cost.data.map((r) => r.cost_per_million_tokens_usd));
      const byKey = await api(gw.url, '/api/v1/stats/cost?group_by=key&window=24h');
      assert.equal((await values(page, '#spend-key tbody td.cost')).length, byKey.data.length, 'a row per key');

      const ts = await api(gw.url, `/api/v1/stats/timeseries?metric=tokens&group_by=model&bucket=hour&tz=America%2FNew_York&window=24h`);
      const drawn = await page.evaluate(() => window.Chart.getChart('tokens-chart').data.datasets
        .map((d) => ({ label: d.label, total: d.data.reduce((a, v) => a + v, 0) })));
      assert.deepEqual(drawn.map((d) => d.total), ts.series.map((s) => s.values.reduce((a, v) => a + (v ?? 0), 0)), 'chart totals');
      assert.deepEqual(drawn.map((d) => d.label), ts.series.map((s) => s.label || s.key), 'legend labels');
      assert.ok(drawn.every((d) => d.label.length > 0), 'every series is named in the legend');

      const calls = await api(gw.url, '/api/v1/stats/calls?limit=50');
      const firstId = await page.getAttribute('#calls tbody tr:first-child', 'data-id');
      assert.equal(firstId, calls.data[0].id, 'the newest call first');
      assert.equal(await page.locator('#calls tbody tr').count(), calls.data.length);
      const appCells = await texts(page, '#calls tbody td.app');
      assert.ok(appCells.includes(APP_TITLE), `the app title shows as text: ${JSON.stringify(appCells)}`);
      assert.equal(await page.locator('#calls b, #rankings b, #cost-model b').count(), 0, 'no markup from user text');

      const shot = await screenshot(page, 'admin');
      // The generation link opens the record with the token (a plain navigation would not send it).
      await page.click('#calls tbody tr:first-child a.gen');
      await page.waitForFunction(() => document.querySelector('#generation').textContent.includes('"id"'));
      assert.ok((await page.textContent('#generation')).includes(calls.data[0].id));

      // The calls filter: status 5xx leaves the one failed call.
      await page.selectOption('#calls-filter select[name=status]', '5xx');
      await page.click('#calls-filter button[type=submit]');
      await page.waitForFunction(() => document.querySelectorAll('#calls tbody tr').length === 1);
      const failed = (await api(gw.url, '/api/v1/stats/calls?status=5xx')).data;
      assert.equal(failed.length, 1);
      assert.equal(await page.getAttribute('#calls tbody tr', 'data-id'), failed[0].id);
      // Another window: the chart asks for day buckets over 7 days.
      const before = requests.length;
      await page.click('[data-window="7d"]');
      await page.waitForSelector('body[data-loaded="3"]');
      const weekly = new URL(requests.slice(before).find((u) => u.includes('/api/v1/stats/timeseries')));
      assert.equal(weekly.searchParams.get('bucket'), 'day');
      assert.equal(weekly.searchParams.get('window'), '7d');
      assert.deepEqual(await values(page, '#rankings tbody td.tokens'),
        (await api(gw.url, '/api/v1/stats/models?window=7d')).data.map((m) => m.tokens));
      assert.deepEqual(problems, []);
      console.error(`dashboard e2e: admin screenshot ${shot}`);
    } finally {
      await close();
    }
  });

  test('a key sees only its own spend', async () => {
    const { key, id } = keys['dash-key-one'];
    const { page, problems, close } = await openDashboard(gw.url, key);
    try {
      await loaded(page);
      const own = await api(gw.url, '/api/v1/stats/cost?group_by=key&window=24h', key);
      assert.equal(own.data.length, 1, `the key's API answer holds its own row only: ${JSON.stringify(own.data)}`);
      assert.equal(String(own.data[0].key), String(id));
      const rows = await page.$$eval('#spend-key tbody tr', (trs) => trs.map((tr) => tr.dataset.key));
      assert.deepEqual(rows, [String(id)], 'spend by key: one row, this key');
      assert.deepEqual(await values(page, '#spend-key tbody td.cost'), [own.data[0].cost_usd]);
      assert.match(await page.textContent('#spend-account .empty'), /admin token only/);
      const calls = await api(gw.url, '/api/v1/stats/calls?limit=50', key);
      assert.ok(calls.data.every((c) => String(c.key_id) === String(id)));
      assert.equal(await page.locator('#calls tbody tr').count(), calls.data.length, 'its own calls only');
      await screenshot(page, 'key');
      assert.deepEqual(problems, []);
    } finally {
      await close();
    }
  });

  test('a wrong token: the page says it was refused', async () => {
    const { page, problems, close } = await openDashboard(gw.url, 'not-a-valid-token',
      { allowConsole: /status of 401/ });
    try {
      await page.waitForFunction(() => /401/.test(document.querySelector('#status').textContent));
      assert.match(await page.textContent('#status'), /refused this token \(401\)/);
      assert.equal(await page.isHidden('#panels'), true);
      await screenshot(page, 'refused');
      assert.deepEqual(problems, []);
    } finally {
      await close();
    }
  });

  test('an empty database: every panel says there is no data, with no errors', async () => {
    const { page, problems, close } = await openDashboard(emptyGw.url, ADMIN_TOKEN);
    try {
      await loaded(page);
      assert.match(await page.textContent('#status'), /No data yet/);
      for (const id of ['rankings', 'tokens', 'cost-model', 'cost-provider', 'spend-key', 'spend-account', 'providers', 'calls']) {
        assert.equal(await page.isVisible(`#${id} .empty`), true, `#${id} shows its empty line`);
        assert.doesNotMatch(await page.textContent(`#${id} .empty`), /Could not load/, `#${id}`);
        assert.equal(await page.locator(`#${id} tbody tr`).count(), 0);
      }
      await screenshot(page, 'empty');
      assert.deepEqual(problems, []);
    } finally {
      await close();
    }
  });
});
