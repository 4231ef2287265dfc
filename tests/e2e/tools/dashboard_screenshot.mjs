// Makes the README's dashboard screenshot (docs/dashboard.png): a gateway on a fresh database
// with two weeks of synthetic usage (written in SQL the way the usage writer writes it: rows into
// usage_events and usage_request_ids, then tollgate_rollup_usage on them) plus a few real calls
// through a mock upstream, shown in Debian's headless chromium with the admin token and the 7d
// window. Not a test; the browser test is test/dashboard.test.mjs.
//
//   cd tests/e2e && TOLLGATE_TEST_DATABASE_URL=... node tools/dashboard_screenshot.mjs [out.png]
//
// Needs what the e2e tests need (build/bin/tollgate, npm ci here, /usr/bin/chromium); stops every
// process it started and drops its database, also on failure.
import fs from 'node:fs';
import path from 'node:path';

import {
  ADMIN_TOKEN, REPO_ROOT, adminDatabaseUrl, createDatabase, loadDeps, makeWorkDir, requireBinary, runCliOk,
  startGateway, waitFor, writeGatewayConfig,
} from '../lib/harness.mjs';
import { startMockOpenAI } from '../mock_openai.mjs';

const out = path.resolve(process.argv[2] || path.join(REPO_ROOT, 'docs', 'dashboard.png'));
const { pg } = await loadDeps();
adminDatabaseUrl();
requireBinary();
const { chromium } = await import('playwright-core');

// Models with their share of calls this week and the week before (so the rankings show trends),
// price (USD per million prompt/completion tokens) and speed.
const MODELS = [
  { id: 'openai/gpt-4o-mini', share: 0.30, before: 0.34, price: ['0.15', '0.60'], latency: 900 },
  { id: 'anthropic/claude-sonnet-4', share: 0.22, before: 0.18, price: ['3.00', '15.00'], latency: 2400 },
  { id: 'deepseek/deepseek-chat', share: 0.18, before: 0.22, price: ['0.27', '1.10'], latency: 1800 },
  { id: 'google/gemini-2.5-flash', share: 0.14, before: 0.15, price: ['0.30', '2.50'], latency: 1100 },
  { id: 'qwen/qwen3-coder', share: 0.10, before: 0.04, price: ['0.40', '1.60'], latency: 1500 },
  { id: 'local/stories260k', share: 0.06, before: 0.07, price: ['0.01', '0.02'], latency: 120 },
];
const APPS = [
  ['https://code-agent.example', 'Code Agent'], ['https://notes.example', 'Notes'], [null, 'batch-jobs'], [null, null],
];

const workDir = makeWorkDir('dashboard-screenshot');
let mock;
let database;
let db;
let gw;
let browser;
try {
  mock = await startMockOpenAI();
  database = await createDatabase(pg, 'tollgate_screenshot');
  const env = { TOLLGATE_DATABASE_URL: database.url };
  await runCliOk(['migrate'], { env });
  db = new pg.Client({ connectionString: database.url });
  await db.connect();
  const providers = { mock: { type: 'openai_compatible', display_name: 'Mock Upstream', base_url: mock.baseURL, api_key: mock.apiKey } };
  const configPath = writeGatewayConfig(workDir, {
    databaseUrl: database.url,
    providers,
    models: MODELS.map((m) => ({
      id: m.id, context_length: 32768,
      endpoints: [{ provider: 'mock', model: `${m.id.split('/')[1]}-upstream`, pricing: { prompt: m.price[0], completion: m.price[1] } }],
    })),
  });
  const keys = [];
  for (const name of ['ci-pipeline', 'web-app', 'research', 'support-bot']) {
    await runCliOk(['keys', 'create', '--name', name], { env });
    keys.push((await db.query('SELECT id, account_id FROM api_keys WHERE name = $1', [name])).rows[0]);
  }

  // Two weeks of hourly traffic with a daily rhythm, deterministic (a fixed LCG).
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const now = Date.now();
  const rows = [];
  for (let h = 14 * 24; h >= 1; h--) {
    const at = now - h * 3600e3;
    const hourOfDay = new Date(at).getUTCHours();
    const calls = Math.round(12 + 10 * Math.sin(((hourOfDay - 8) / 24) * 2 * Math.PI) + rand() * 6);
    for (let c = 0; c < calls; c++) {
      let pick = rand();
      const m = MODELS.find((x) => (pick -= h > 7 * 24 ? x.before : x.share) < 0) || MODELS[0];
      const key = keys[Math.floor(rand() * keys.length)];
      const [app, title] = APPS[Math.floor(rand() * APPS.length)];
      const prompt = Math.round(400 + rand() * 3000);
      const completion = Math.round(80 + rand() * 700);
      const failed = rand() < 0.02;
      const cost = Math.round(prompt * Number(m.price[0]) * 1000 + completion * Number(m.price[1]) * 1000);
      const latency = Math.round(m.latency * (0.6 + rand()));
      rows.push([`gen-shot-${rows.length}`, key.id, key.account_id, m.id, `${m.id.split('/')[1]}-upstream`,
        failed ? 0 : prompt, failed ? 0 : completion, failed ? 0 : cost, latency, Math.round(latency * 0.25),
        failed ? 502 : 200, new Date(at + rand() * 3600e3).toISOString(), app || (title ? `title:${title}` : null), title]);
    }
  }
  await db.query(`
    WITH v AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id text, k bigint, a bigint, m text, u text,
                 p bigint, c bigint, cost bigint, lat bigint, ttft bigint, st int, at timestamptz, app text, title text)),
         ids AS (INSERT INTO usage_request_ids SELECT id, at FROM v RETURNING request_id),
         ins AS (INSERT INTO usage_events (request_id, api_key_id, account_id, model, provider, upstream_model,
                   prompt_tokens, completion_tokens, cost_nano_usd, latency_ms, ttft_ms, status, created_at,
                   finished_at, endpoint_id, app, app_title, streamed)
                 SELECT id, k, a, m, 'Mock Upstream', u, p, c, cost, lat, ttft, st, at,
                   at + lat * interval '1 ms', m || '@mock', app, title, true FROM v RETURNING *)
    SELECT tollgate_rollup_usage(array_agg(ins::usage_events)) FROM ins`,
  [JSON.stringify(rows.map((r) => ({
    id: r[0], k: r[1], a: r[2], m: r[3], u: r[4], p: r[5], c: r[6], cost: r[7], lat: r[8], ttft: r[9], st: r[10],
    at: r[11], app: r[12], title: r[13],
  })))]);

  gw = await startGateway({ configPath, workDir });
  browser = await chromium.launch({ executablePath: process.env.TOLLGATE_CHROMIUM || '/usr/bin/chromium', headless: true });
  // Tall enough for every panel and the first calls; the full list would dwarf the rest.
  const context = await browser.newContext({ viewport: { width: 1400, height: 1800 }, timezoneId: 'UTC', locale: 'en-US' });
  const page = await context.newPage();
  await page.goto(`${gw.url}/dashboard`);
  await page.waitForSelector('body[data-loaded="1"]');
  await page.fill('#token-input', ADMIN_TOKEN);
  await page.click('#token-use');
  await page.waitForSelector('body[data-loaded="2"]', { timeout: 30000 });
  await page.click('[data-window="7d"]');
  await waitFor(async () => (await page.getAttribute('body', 'data-loaded')) === '3', { timeoutMs: 30000, what: 'the 7d view' });
  await page.waitForTimeout(500); // chart animation
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out });
  console.log(`dashboard_screenshot: ${rows.length} calls over 14 days -> ${out}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (gw) await gw.stop('SIGTERM').catch(() => {});
  if (mock) await mock.close().catch(() => {});
  if (db) await db.end().catch(() => {});
  if (database) await database.drop().catch(() => {});
  fs.rmSync(workDir, { recursive: true, force: true });
}
