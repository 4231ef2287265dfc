// The usage statistics API end to end (issue 10): real calls through the official `openai` client
// with OpenRouter's app attribution headers (HTTP-Referer, X-Title) from two keys, then:
//   1. /api/v1/stats/cost, /models, /timeseries, /providers agree with usage_events in PostgreSQL;
//      a key sees only its own rows, the admin token all; usage not reported stays null, not 0;
//   2. /api/v1/stats/calls pages newest first through next_cursor and links each call's generation
//      record (the admin token may read any, a key only its own);
//   3. CSV (RFC 4180 quoting of an app title with a comma and quotes), 400s naming the parameter,
//      401 and 403;
//   4. @openrouter/sdk 1.3.19 parses /datasets/rankings-daily, /datasets/app-rankings and /activity,
//      and gets its typed errors (OpenRouter's error shape) for 400, 401 and 403;
//   5. hostile input: a secret in HTTP-Referer never becomes the app id, CSV cells cannot be
//      formulas, dates the clock cannot hold and bytes that are not UTF-8 are 400s, and no
//      database error text reaches the client.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { ADMIN_TOKEN, createStack, loadDeps, waitFor } from '../lib/harness.mjs';
import { startMockOpenAI } from '../mock_openai.mjs';

const PRICE = { prompt: '1.00', completion: '2.00' };
const APP_URL = 'https://app.example.com/some/page?q=1';
const APP_ID = 'https://app.example.com';
const APP_TITLE = 'Stats "E2E", App';

describe('usage statistics API', { timeout: 120000 }, () => {
  const stack = createStack('stats');
  let deps;
  const ids = {};  // key name -> {id, account}
  const url = (p) => `${stack.gw.url}${p}`;

  async function get(p, token, { csv = false } = {}) {
    const r = await fetch(url(p), { headers: { authorization: `Bearer ${token}` } });
    const text = await r.text();
    return { status: r.status, type: r.headers.get('content-type'), text, body: csv || r.status >= 500 ? null : JSON.parse(text) };
  }
  async function ok(p, token) {
    const r = await get(p, token);
    assert.equal(r.status, 200, `${p}: ${r.text}`);
    return r.body;
  }
  async function sql(q, params = []) {
    return (await stack.db.query(q, params)).rows;
  }

  before(async () => {
    deps = await loadDeps();
    await stack.start({
      pg: deps.pg,
      mocks: { openai: () => startMockOpenAI({ writeDelayMs: 0 }) },
      keys: ['a', 'b'],
      config: (mocks) => ({
        providers: {
          mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey },
        },
        models: [
          { id: 'mock/ok', endpoints: [{ provider: 'mock', model: 'gpt-test-upstream', pricing: PRICE }] },
          { id: 'mock/no-usage', endpoints: [{ provider: 'mock', model: 'mock-no-usage', pricing: PRICE }] },
          { id: 'mock/error-500', endpoints: [{ provider: 'mock', model: 'mock-error-500', pricing: PRICE }] },
        ],
      }),
    });
    for (const k of ['a', 'b']) {
      const [row] = await sql('SELECT id, account_id FROM api_keys WHERE name = $1', [`stats-${k}`]);
      ids[k] = { id: Number(row.id), account: Number(row.account_id) };
    }
    const { OpenAI } = deps;
    const a = new OpenAI({
      apiKey: stack.keys.a, baseURL: `${stack.gw.url}/v1`, maxRetries: 0,
      defaultHeaders: { 'HTTP-Referer': APP_URL, 'X-Title': APP_TITLE },
    });
    const b = new OpenAI({
      apiKey: stack.keys.b, baseURL: `${stack.gw.url}/api/v1`, maxRetries: 0, defaultHeaders: { 'X-Title': 'Bee Tool' },
    });
    const msg = (content) => [{ role: 'user', content }];
    for (let i = 0; i < 3; i++) await a.chat.completions.create({ model: 'mock/ok', messages: msg(`hello ${i}`), max_tokens: 5 });
    for await (const _ of await a.chat.completions.create({
      model: 'mock/ok', messages: msg('stream me'), stream: true, stream_options: { include_usage: true },
    })) { /* drain */ }
    for await (const _ of await a.chat.completions.create({ model: 'mock/no-usage', messages: msg('no usage'), stream: true })) { /* drain */ }
    await assert.rejects(a.chat.completions.create({ model: 'mock/error-500', messages: msg('fail'), max_tokens: 5 }));
    for (let i = 0; i < 2; i++) await b.chat.completions.create({ model: 'mock/ok', messages: msg(`bee ${i}`), max_tokens: 5 });
    // The write-behind writer: 5 successes of A and 2 of B, plus the error row when it is recorded.
    await waitFor(async () => {
      const [r] = await sql('SELECT count(*)::int AS n FROM usage_events WHERE status = 200');
      return r.n >= 7;
    }, { what: 'usage rows', timeoutMs: 10000 });
    await waitFor(async () => {
      const [r] = await sql('SELECT count(*)::int AS n FROM usage_events');
      const [s] = await sql('SELECT coalesce(sum(requests), 0)::int AS n FROM usage_rollup_15m');
      return r.n === s.n && r.n >= 7;
    }, { what: 'rollups', timeoutMs: 5000 });
  });
  after(() => stack.stop());

  test('cost, models, timeseries and providers agree with usage_events; keys are scoped', async () => {
    const all = await sql(`SELECT count(*)::int AS n, sum(cost_nano_usd)::bigint AS cost,
      sum(prompt_tokens + completion_tokens)::bigint AS tokens FROM usage_events`);
    const mine = await sql(`SELECT model, count(*)::int AS n, sum(cost_nano_usd)::bigint AS cost,
      count(*) FILTER (WHERE status >= 400)::int AS errors FROM usage_events WHERE api_key_id = $1 GROUP BY model`, [ids.a.id]);

    // A key: its own rows only.
    const costA = await ok('/api/v1/stats/cost?group_by=model&window=24h', stack.keys.a);
    assert.equal(costA.group_by, 'model');
    assert.equal(costA.window, '24h');
    assert.equal(costA.data.length, mine.length);
    for (const m of mine) {
      const row = costA.data.find((r) => r.key === m.model);
      assert.ok(row, `no row for ${m.model}`);
      assert.equal(row.requests, m.n);
      assert.equal(row.errors, m.errors);
      assert.equal(row.cost_nano_usd, Number(m.cost));
      assert.equal(row.cost_usd, Number(m.cost) / 1e9);
    }
    assert.equal(costA.total.requests, mine.reduce((s, m) => s + m.n, 0));
    // Sorted by cost, descending.
    for (let i = 1; i < costA.data.length; i++) assert.ok(costA.data[i - 1].cost_nano_usd >= costA.data[i].cost_nano_usd);
    // Usage not reported: null token counts, counted apart, estimate shown apart.
    const noUsage = costA.data.find((r) => r.key === 'mock/no-usage');
    assert.equal(noUsage.prompt_tokens, null);
    assert.equal(noUsage.completion_tokens, null);
    assert.equal(noUsage.usage_not_reported_requests, 1);
    assert.ok(noUsage.estimated_tokens > 0);
    const okRow = costA.data.find((r) => r.key === 'mock/ok');
    assert.ok(okRow.prompt_tokens > 0);
    assert.ok(Math.abs(okRow.cost_per_million_tokens_usd - okRow.cost_usd / (okRow.prompt_tokens + okRow.completion_tokens) * 1e6) < 1e-9);

    // Key B never sees A's rows.
    const costB = await ok('/api/v1/stats/cost?group_by=key', stack.keys.b);
    assert.deepEqual(costB.data.map((r) => r.key), [String(ids.b.id)]);
    assert.equal(costB.data[0].label, 'stats-b');
    assert.equal(costB.total.requests, 2);
    assert.equal((await get(`/api/v1/stats/cost?key_id=${ids.a.id}`, stack.keys.b)).status, 403);

    // The admin token: everything, and may filter.
    const costAll = await ok('/api/v1/stats/cost?group_by=key', ADMIN_TOKEN);
    assert.equal(costAll.total.requests, all[0].n);
    assert.equal(costAll.total.cost_nano_usd, Number(all[0].cost));
    assert.deepEqual(costAll.data.map((r) => r.label).sort(), ['stats-a', 'stats-b']);
    const onlyA = await ok(`/api/v1/stats/cost?group_by=account&account_id=${ids.a.account}`, ADMIN_TOKEN);
    assert.equal(onlyA.total.requests, costA.total.requests);

    // Apps from HTTP-Referer (origin) and X-Title.
    const apps = await ok('/api/v1/stats/cost?group_by=app', ADMIN_TOKEN);
    const app = apps.data.find((r) => r.key === APP_ID);
    assert.ok(app, `apps: ${JSON.stringify(apps.data.map((r) => r.key))}`);
    assert.equal(app.label, APP_TITLE);
    assert.equal(app.requests, costA.total.requests);
    assert.ok(apps.data.find((r) => r.key === 'title:Bee Tool'));

    // Rankings: global, any key may read them.
    const models = await ok('/api/v1/stats/models?window=24h', stack.keys.b);
    assert.equal(models.total_requests, all[0].n);
    assert.equal(models.data[0].rank, 1);
    assert.equal(models.data[0].model, 'mock/ok');
    assert.equal(models.data[0].previous_rank, null);
    assert.equal(models.data[0].change, null);
    assert.ok(Math.abs(models.data.reduce((s, r) => s + r.share, 0) - 1) < 1e-9);
    assert.equal(models.total_tokens, models.data.reduce((s, r) => s + r.tokens, 0));

    // Time series in New York, hour buckets: the values add up to the window's total.
    const ts = await ok('/api/v1/stats/timeseries?metric=requests&group_by=model&bucket=hour&tz=America/New_York&window=24h', stack.keys.a);
    assert.equal(ts.tz, 'America/New_York');
    assert.ok(ts.buckets.length >= 24 && ts.buckets.length <= 25, `${ts.buckets.length} buckets`);
    assert.match(ts.buckets[0], /^\d{4}-\d\d-\d\dT\d\d:00:00-05:00$/);
    let sum = 0;
    for (const s of ts.series) {
      assert.equal(s.values.length, ts.buckets.length);
      assert.equal(s.total, s.values.reduce((x, v) => x + v, 0));
      sum += s.total;
    }
    assert.equal(sum, costA.total.requests);
    const lat = await ok('/api/v1/stats/timeseries?metric=latency_p50&bucket=day&window=7d&tz=Asia/Kathmandu', ADMIN_TOKEN);
    assert.equal(lat.series.length, 1);
    assert.equal(lat.series[0].key, 'all');
    assert.match(lat.buckets[0], /\+05:45$/);
    assert.ok(lat.series[0].values.some((v) => v !== null && v >= 0));
    assert.ok(lat.series[0].values.some((v) => v === null), 'days without calls are null');

    // Providers: per endpoint, with uptime and percentiles.
    const prov = await ok('/api/v1/stats/providers', ADMIN_TOKEN);
    const mock = prov.data.filter((r) => r.provider === 'Mock');
    assert.ok(mock.length >= 1);
    assert.equal(mock.reduce((s, r) => s + r.requests, 0), all[0].n);
    for (const r of mock) {
      assert.ok(r.uptime >= 0 && r.uptime <= 1);
      assert.equal(typeof r.latency_p50_ms, 'number');
      assert.ok(r.latency_p90_ms >= r.latency_p50_ms);
    }
  });

  test('calls page newest first and link their generation records', async () => {
    const expected = (await sql(`SELECT request_id FROM usage_events WHERE api_key_id = $1
      ORDER BY created_at DESC, request_id DESC`, [ids.a.id])).map((r) => r.request_id);
    const seen = [];
    let cursor = null;
    for (let page = 0; page < 20; page++) {
      const q = `/api/v1/stats/calls?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const body = await ok(q, stack.keys.a);
      assert.ok(body.data.length <= 2);
      for (const c of body.data) {
        assert.equal(c.key_id, ids.a.id);
        assert.equal(c.app, APP_ID);
        assert.equal(c.app_title, APP_TITLE);
        assert.equal(c.generation_url, `/api/v1/generation?id=${c.id}`);
        seen.push(c.id);
      }
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    assert.deepEqual(seen, expected);
    const errors = await ok('/api/v1/stats/calls?status=5xx', stack.keys.a);
    assert.ok(errors.data.every((c) => c.status >= 500));
    const noUsage = (await ok('/api/v1/stats/calls?model=mock/no-usage', stack.keys.a)).data[0];
    assert.equal(noUsage.usage_reported, false);
    assert.equal(noUsage.prompt_tokens, null);

    // The generation record: the key's own, and any call with the admin token.
    const okCall = (await ok('/api/v1/stats/calls?model=mock/ok&status=200&limit=1', stack.keys.a)).data[0];
    assert.equal((await get(okCall.generation_url, stack.keys.a)).status, 200);
    assert.equal((await get(okCall.generation_url, ADMIN_TOKEN)).status, 200);
    assert.equal((await get(okCall.generation_url, stack.keys.b)).status, 404);
    const bCall = (await ok('/api/v1/stats/calls', stack.keys.b)).data[0];
    assert.equal(bCall.key_id, ids.b.id);
    assert.equal((await get(`/v1/generation?id=${bCall.id}`, ADMIN_TOKEN)).status, 200);
  });

  test('CSV, 400s naming the parameter, 401 and 403', async () => {
    const csv = await get('/api/v1/stats/cost?group_by=app&format=csv', ADMIN_TOKEN, { csv: true });
    assert.equal(csv.status, 200);
    assert.equal(csv.type, 'text/csv; charset=utf-8');
    const lines = csv.text.split('\r\n');
    assert.ok(lines[0].startsWith('key,label,requests,errors,prompt_tokens,'), lines[0]);
    assert.ok(lines.some((l) => l.startsWith(`${APP_ID},"Stats ""E2E"", App",`)), csv.text);
    assert.equal(lines.at(-1), '');
    const tsCsv = await get('/api/v1/stats/timeseries?metric=tokens&group_by=model&format=csv', stack.keys.a, { csv: true });
    assert.equal(tsCsv.text.split('\r\n')[0], 'bucket,key,label,value');
    const callsCsv = await get('/api/v1/stats/calls?format=csv', stack.keys.a, { csv: true });
    assert.ok(callsCsv.text.startsWith('id,created_at,model,'));

    for (const [q, param] of [
      ['/api/v1/stats/models?window=2h', 'window'],
      ['/api/v1/stats/cost?group_by=user', 'group_by'],
      ['/api/v1/stats/timeseries?tz=Mars/Olympus_Mons', 'tz'],
      ['/api/v1/stats/timeseries?metric=p99', 'metric'],
      ['/api/v1/stats/timeseries?bucket=hour&start=2020-01-01&end=2026-01-01', 'bucket'],
      ['/api/v1/stats/calls?limit=0', 'limit'],
      ['/api/v1/stats/calls?start=yesterday', 'start'],
      ['/api/v1/datasets/rankings-daily?period=year', 'period'],
    ]) {
      const r = await get(q, stack.keys.a);
      assert.equal(r.status, 400, `${q}: ${r.text}`);
      assert.equal(r.body.error.param, param, q);
      assert.equal(r.body.error.type, 'invalid_request_error');
    }
    assert.equal((await fetch(url('/api/v1/stats/cost'))).status, 401);
    assert.equal((await get('/api/v1/stats/cost', 'tg-not-a-real-key')).status, 401);
    assert.equal((await get(`/api/v1/stats/calls?key_id=${ids.b.id}`, stack.keys.a)).status, 403);
    const post = await fetch(url('/api/v1/stats/cost'), { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(post.status, 405);
  });

  test('@openrouter/sdk parses rankings-daily, app-rankings and activity', async () => {
    const { OpenRouter } = deps;
    const or = new OpenRouter({ apiKey: stack.keys.a, serverURL: `${stack.gw.url}/api/v1`, retryConfig: { strategy: 'none' } });
    const today = new Date().toISOString().slice(0, 10);

    const daily = await or.datasets.getRankingsDaily({});
    assert.equal(daily.meta.version, 'v1');
    assert.equal(daily.meta.endDate, today);
    const todays = daily.data.filter((r) => r.date === today);
    assert.equal(todays.at(-1).modelPermaslug, 'other');
    const [tok] = await sql('SELECT sum(prompt_tokens + completion_tokens)::bigint AS t FROM usage_events');
    assert.equal(todays.reduce((s, r) => s + BigInt(r.totalTokens), 0n), BigInt(tok.t));
    const weekly = await or.datasets.getRankingsDaily({ period: 'week' });
    assert.ok(weekly.data.length >= 2);

    const apps = await or.datasets.getAppRankings({});
    const data = apps.result.data;
    assert.ok(data.length >= 2, JSON.stringify(apps.result));
    assert.equal(data[0].rank, 1);
    assert.ok(Number.isInteger(data[0].appId) && data[0].appId > 0);
    assert.ok(data.some((r) => r.appName === APP_TITLE));
    assert.equal(typeof data[0].totalTokens, 'string');

    const activity = await or.analytics.getUserActivity({});
    const [mine] = await sql('SELECT count(*)::int AS n, sum(cost_nano_usd)::bigint AS c FROM usage_events WHERE api_key_id = $1', [ids.a.id]);
    assert.equal(activity.data.reduce((s, r) => s + r.requests, 0), mine.n);
    assert.ok(Math.abs(activity.data.reduce((s, r) => s + r.usage, 0) - Number(mine.c) / 1e9) < 1e-9);
    assert.ok(activity.data.every((r) => r.date === today && r.providerName === 'Mock'));
    const adminActivity = await new OpenRouter({ apiKey: ADMIN_TOKEN, serverURL: `${stack.gw.url}/api/v1`, retryConfig: { strategy: 'none' } })
      .analytics.getUserActivity({});
    const [everyone] = await sql('SELECT count(*)::int AS n FROM usage_events');
    assert.equal(adminActivity.data.reduce((s, r) => s + r.requests, 0), everyone.n);
  });

  test('@openrouter/sdk gets its typed errors from the stats APIs (OpenRouter error shape)', async () => {
    const { OpenRouter, orErrors } = deps;
    const client = (apiKey) => new OpenRouter({ apiKey, serverURL: `${stack.gw.url}/api/v1`, retryConfig: { strategy: 'none' } });
    const or = client(stack.keys.a);
    const typed = (cls, param) => (err) => {
      assert.ok(err instanceof orErrors[cls], `${cls} expected, got ${err?.constructor?.name}: ${err?.message}`);
      assert.equal(typeof err.error.code, 'number');
      if (param) assert.equal(JSON.parse(err.body).error.param, param);  // the SDK's error data has no param
      return true;
    };
    await assert.rejects(or.analytics.getUserActivity({ date: 'nope' }), typed('BadRequestResponseError', 'date'));
    await assert.rejects(or.analytics.getUserActivity({ date: '1900-01-01' }), typed('BadRequestResponseError', 'date'));
    await assert.rejects(or.datasets.getRankingsDaily({ startDate: '2026-13-01' }), typed('BadRequestResponseError', 'start_date'));
    await assert.rejects(client('tg-not-a-real-key').datasets.getRankingsDaily({}), typed('UnauthorizedResponseError'));
    await assert.rejects(client('tg-not-a-real-key').analytics.getUserActivity({}), typed('UnauthorizedResponseError'));
    // 403 (no SDK call takes key_id): the same shape, integer code.
    const forbidden = await get(`/api/v1/activity?key_id=${ids.b.id}`, stack.keys.a);
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.body.error.code, 403);
    assert.ok(orErrors.ForbiddenResponseError);
    // Under /v1 the OpenAI shape stays.
    const openai = await get('/v1/stats/models?window=2h', stack.keys.a);
    assert.equal(openai.status, 400);
    assert.notEqual(typeof openai.body.error.code, 'number');
  });

  test('hostile input: referer secrets, CSV formulas, far dates, bad UTF-8, database errors', async () => {
    const SECRET = 'SECRET123';
    const FORMULA = '=HYPERLINK("http://evil.example","x")';
    const [before] = await sql('SELECT count(*)::int AS n FROM usage_events');
    const call = async (headers) => {
      const r = await fetch(url('/api/v1/chat/completions'), {
        method: 'POST',
        headers: { authorization: `Bearer ${stack.keys.b}`, 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ model: 'mock/ok', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }),
      });
      assert.equal(r.status, 200, await r.text());
    };
    // Origin() refuses the port: the raw referer (query included) must not become the app id.
    await call({ 'HTTP-Referer': `https://example.com:123456/cb?api_key=${SECRET}`, 'X-Title': FORMULA });
    await call({ 'HTTP-Referer': `https://user:${SECRET}@Ok.Example:8443/cb?api_key=${SECRET}` });
    await call({ 'HTTP-Referer': `ftp://${SECRET}@files.example/` });
    await waitFor(async () => {
      const [r] = await sql('SELECT count(*)::int AS n FROM usage_events');
      const [s] = await sql('SELECT coalesce(sum(requests), 0)::int AS n FROM usage_rollup_15m');
      return r.n === before.n + 3 && s.n === r.n;
    }, { what: 'usage rows', timeoutMs: 10000 });
    const rows = await sql(`SELECT app FROM usage_events WHERE api_key_id = $1 ORDER BY created_at DESC LIMIT 3`, [ids.b.id]);
    assert.deepEqual(rows.map((r) => r.app ?? 'none').sort(), ['https://ok.example:8443', 'none', `title:${FORMULA}`].sort());
    const apps = await sql('SELECT app, title FROM apps');
    assert.ok(!JSON.stringify(apps).includes(SECRET), JSON.stringify(apps));
    const rankings = await get('/api/v1/datasets/app-rankings', stack.keys.a);
    assert.equal(rankings.status, 200);
    assert.ok(!rankings.text.includes(SECRET), rankings.text);
    assert.ok(!(await get('/api/v1/stats/cost?group_by=app', ADMIN_TOKEN)).text.includes(SECRET));
    await new Promise((r) => setTimeout(r, 200));  // the last access-log lines
    const log = fs.readFileSync(stack.gw.logFile, 'utf8');
    assert.ok(!log.includes(SECRET), 'the secret in the access log');

    // CSV: the title is text and starts with '=': it goes out quoted as text; numbers stay numbers.
    const csv = await get('/api/v1/stats/cost?group_by=app&format=csv', ADMIN_TOKEN, { csv: true });
    const line = csv.text.split('\r\n').find((l) => l.startsWith(`"title:=HYPERLINK(`));
    assert.ok(line, csv.text);
    assert.ok(line.includes(`,"'=HYPERLINK(""http://evil.example"",""x"")",1,0,`), line);
    assert.ok(!csv.text.split('\r\n').some((l) => /(^|,)[=+\-@]/.test(l.replace(/"[^"]*"/g, '""'))), csv.text);

    // Dates the clock cannot hold; a cursor beyond it.
    for (const [q, param] of [
      ['/api/v1/stats/cost?start=2300-01-01&end=2300-01-02', 'end'],
      ['/api/v1/stats/cost?start=0000-01-01', 'start'],
      ['/api/v1/stats/cost?end=9999-12-30', 'end'],
      ['/api/v1/stats/calls?cursor=9223372036854775807.x', 'cursor'],
      ['/api/v1/stats/calls?cursor=-9223372036854775807.x', 'cursor'],
      ['/api/v1/activity?date=1900-01-01', 'date'],
      ['/api/v1/stats/calls?model=%FF%FE', 'model'],
      ['/api/v1/stats/calls?app=%FF%FE', 'app'],
      ['/api/v1/stats/calls?provider=%C3', 'provider'],
      ['/api/v1/stats/calls?endpoint=a%00b', 'endpoint'],
      [`/api/v1/stats/calls?model=${'m'.repeat(300)}`, 'model'],
      ['/api/v1/stats/timeseries?tz=%FF', 'tz'],
    ]) {
      const r = await get(q, stack.keys.a);
      assert.equal(r.status, 400, `${q}: ${r.text}`);
      assert.equal(r.body.error.param, param, q);
      assert.equal(r.body.error.code, 400, q);
    }

    // A database error: a generic 500, the details only in the log.
    await stack.db.query('ALTER TABLE usage_events RENAME TO usage_events_away');
    try {
      const r = await get('/api/v1/stats/calls', ADMIN_TOKEN);
      assert.equal(r.status, 500, r.text);
      assert.doesNotMatch(r.text, /usage_events|relation|SQLSTATE|SELECT/i);
    } finally {
      await stack.db.query('ALTER TABLE usage_events_away RENAME TO usage_events');
    }
    assert.equal((await get('/api/v1/stats/calls', ADMIN_TOKEN)).status, 200);
  });
});
