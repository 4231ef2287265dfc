// GET /metrics against a real gateway (mock OpenAI upstream, real PostgreSQL):
//   1. after real calls (success, streamed, usage not reported, upstream 500 / 401 / 429, unknown
//      model, 402 and rate-limit refusals, malformed JSON) the exposition passes
//      `promtool check metrics` (Debian's `prometheus` package; scripts/setup.sh installs it) with no
//      output at all, and the counters say what happened;
//   2. cardinality: 500 keys, 500 distinct `user` values, 50 unknown model names and random app
//      headers leave the set of series exactly as a small warm-up left it;
//   3. deploy/: every PromQL expression of the Grafana dashboard names only metrics a real scrape has
//      and parses (`promtool check rules` on them as recording rules); `promtool check config` on the
//      Prometheus scrape config and `promtool check rules` on its rules.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ADMIN_TOKEN, LOCAL_MODEL, REPO_ROOT, createStack, loadDeps, modelDir, waitFor } from '../lib/harness.mjs';
import { startMockOpenAI } from '../mock_openai.mjs';

const PRICE = { prompt: '1.00', completion: '2.00' };
const MODELS = [
  ['mock/ok', 'gpt-test-upstream'],
  ['mock/no-usage', 'mock-no-usage'],
  ['mock/error-500', 'mock-error-500'],
  ['mock/error-401', 'mock-error-401'],
  ['mock/error-429', 'mock-error-429'],
];

/** promtool from PATH (scripts/setup.sh installs Debian's `prometheus` package), or a clear failure. */
function promtool() {
  const r = spawnSync('promtool', ['--version']);
  if (r.error) {
    throw new Error('e2e: promtool not found. It is in Debian 12\'s `prometheus` package: run scripts/setup.sh '
      + '(or apt-get install prometheus)');
  }
  return 'promtool';
}

/** Runs promtool with `args`, `input` on stdin; {status, out} (stdout and stderr together). */
function runPromtool(args, input) {
  const r = spawnSync(promtool(), args, { input, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

/** The series of an exposition: every sample line's name and labels (the value cut off). */
function seriesOf(text) {
  const out = new Set();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    out.add(line.slice(0, line.lastIndexOf(' ')));
  }
  return out;
}

/** The metric names of an exposition (from its TYPE lines, histograms with _bucket/_sum/_count). */
function metricNamesOf(text) {
  const names = new Set();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]);
    if (m[2] === 'histogram' || m[2] === 'summary') for (const s of ['_bucket', '_sum', '_count']) names.add(m[1] + s);
  }
  return names;
}

/** Runs `tasks` (functions returning promises) at most `limit` at a time. */
async function pool(tasks, limit) {
  const results = new Array(tasks.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  }));
  return results;
}

describe('Prometheus metrics', { timeout: 240000 }, () => {
  const stack = createStack('metrics');
  let deps;
  const url = (p) => `${stack.gw.url}${p}`;

  async function admin(method, p, body) {
    const r = await fetch(url(`/admin/v1${p}`), {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    assert.ok(r.status === 200 || r.status === 201, `${method} ${p}: ${r.status} ${text}`);
    return JSON.parse(text);  // {data} (a created key: and {key}, the plaintext)
  }
  async function chat(key, body, headers = {}) {
    const r = await fetch(url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: r.status, text: await r.text() };
  }
  const ask = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 5, ...extra });
  async function scrape() {
    const r = await fetch(url('/metrics'));
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    return r.text();
  }
  let accountId;

  before(async () => {
    deps = await loadDeps();
    await stack.start({
      pg: deps.pg,
      mocks: { openai: () => startMockOpenAI({ writeDelayMs: 0 }) },
      keys: ['main'],
      config: (mocks) => ({
        providers: {
          mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey },
          local: { type: 'local', display_name: 'Local' },
        },
        models: [
          ...MODELS.map(([id, upstream]) => ({ id, endpoints: [{ provider: 'mock', model: upstream, pricing: PRICE }] })),
          { id: LOCAL_MODEL, endpoints: [{ provider: 'local', model: path.join(modelDir(), 'stories260K.gguf'), pricing: PRICE }] },
        ],
      }),
    });
    accountId = (await admin('POST', '/accounts', { name: 'metrics-postpaid', prepaid: false })).data.id;
  });
  after(() => stack.stop());

  test('after real calls the exposition passes promtool check metrics and counts them', async () => {
    const key = stack.keys.main;
    assert.equal((await chat(key, ask('mock/ok'))).status, 200);
    assert.equal((await chat(key, ask('mock/ok', { stream: true, stream_options: { include_usage: true } }))).status, 200);
    assert.equal((await chat(key, ask('mock/no-usage', { stream: true }))).status, 200);
    assert.equal((await chat(key, ask(LOCAL_MODEL, { max_tokens: 8 }))).status, 200);
    assert.equal((await chat(key, ask('mock/error-500'))).status, 502);
    assert.equal((await chat(key, ask('mock/error-401'))).status, 502);
    assert.equal((await chat(key, ask('mock/error-429'))).status, 429);
    const unknown = await chat(key, ask('nobody/such-model'));
    assert.ok(unknown.status === 400 || unknown.status === 404, unknown.text);
    assert.equal((await chat(key, '{"model": "mock/ok", "messages": [')).status, 400);
    // 402: a prepaid account with no credits.
    const broke = await admin('POST', '/accounts', { name: 'metrics-broke', prepaid: true });
    const brokeKey = (await admin('POST', `/accounts/${broke.data.id}/keys`, { name: 'broke' })).key;
    const brokeCall = await chat(brokeKey, ask('mock/ok'));
    assert.equal(brokeCall.status, 402, brokeCall.text);
    // 429 of Tollgate's own rate limit.
    const slowKey = (await admin('POST', `/accounts/${accountId}/keys`, { name: 'one-a-minute', requests_per_minute: 1 })).key;
    assert.equal((await chat(slowKey, ask('mock/ok'))).status, 200);
    assert.equal((await chat(slowKey, ask('mock/ok'))).status, 429);

    await waitFor(async () => /tollgate_background\{item="usage_rows_pending"\} 0\b/.test(await scrape()), { what: 'rows written' });
    const text = await scrape();
    const file = path.join(stack.workDir, 'metrics.txt');
    fs.writeFileSync(file, text);
    const check = runPromtool(['check', 'metrics'], text);
    assert.equal(check.out, '', `promtool check metrics reports problems (${file}):\n${check.out}`);
    assert.equal(check.status, 0);

    const value = (series) => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      assert.ok(line, `${series} in /metrics:\n${text}`);
      return Number(line.slice(series.length + 1));
    };
    assert.equal(value('tollgate_calls_total{model="mock/ok",provider="Mock",status="200"}'), 3);
    assert.equal(value('tollgate_calls_total{model="mock/ok",provider="none",status="402"}'), 1);
    assert.equal(value('tollgate_calls_total{model="mock/ok",provider="none",status="429"}'), 1);
    assert.equal(value('tollgate_calls_total{model="mock/ok",provider="none",status="402"}'), 1);
    assert.equal(value('tollgate_calls_total{model="other",provider="none",status="400"}')
      + (text.includes('model="other",provider="none",status="404"') ? value('tollgate_calls_total{model="other",provider="none",status="404"}') : 0), 2,
    'unknown model and malformed JSON as model "other"');
    assert.equal(value('tollgate_upstream_errors_total{provider="Mock",reason="credentials"}'), 1);
    assert.equal(value('tollgate_upstream_errors_total{provider="Mock",reason="bad_response"}'), 1);
    assert.equal(value('tollgate_upstream_errors_total{provider="Mock",reason="rate_limited"}'), 1);
    assert.equal(value('tollgate_usage_not_reported_total{model="mock/no-usage",provider="Mock"}'), 1);
    assert.ok(value('tollgate_tokens_total{kind="estimated_completion",model="mock/no-usage",provider="Mock"}') > 0);
    assert.ok(!text.includes('kind="prompt",model="mock/no-usage"'), 'estimates are not counted as reported tokens');
    // Cost in USD equals the usage rows' cost.
    const rows = await stack.db.query("SELECT coalesce(sum(cost_nano_usd), 0)::bigint AS n FROM usage_events WHERE model = 'mock/ok'");
    assert.ok(rows.rows[0].n > 0);
    assert.equal(value('tollgate_cost_nano_usd_total{model="mock/ok",provider="Mock"}'), rows.rows[0].n);
    assert.ok(Math.abs(value('tollgate_cost_usd_total{model="mock/ok",provider="Mock"}') - rows.rows[0].n / 1e9) < 1e-12);
    assert.equal(value('tollgate_call_duration_seconds_count{model="mock/ok",provider="Mock"}'), 3);
    assert.equal(value('tollgate_time_to_first_token_seconds_count{model="mock/ok",provider="Mock"}'), 3);
    // The upstream's 429 (Retry-After: 7) cools its endpoint down.
    assert.equal(value('tollgate_endpoint_state{endpoint="mock/mock-error-429",item="cooling_down",model="mock/error-429"}'), 1);
    assert.ok(value('tollgate_endpoint_unavailable_seconds{endpoint="mock/mock-error-429",model="mock/error-429"}') > 0);
    assert.equal(value('tollgate_calls_in_flight'), 0);
    assert.ok(value('tollgate_http_requests_total{route="/v1/chat/completions",status="200"}') >= 4);
    // The local engine: its tokens, batch and KV cache.
    const engine = 'engine="local/stories260K"';
    assert.ok(value(`tollgate_local_engine_generated_tokens_total{${engine}}`) >= 1);
    assert.ok(value(`tollgate_local_engine_processed_tokens_total{${engine}}`) > value(`tollgate_local_engine_generated_tokens_total{${engine}}`));
    assert.equal(value(`tollgate_local_engine_batch_sequences{${engine}}`), 0, 'idle after the call');
    assert.ok(value(`tollgate_local_engine_kv_cache_usage_ratio{${engine}}`) >= 0);
    assert.equal(value('tollgate_admission_refusals_total{reason="payment_required:credits"}'), 1);
  });

  test('the series count does not grow with 500 keys, 500 users, 50 unknown models and random app headers', async () => {
    const started = Date.now();
    const rnd = () => Math.random().toString(36).slice(2, 10);
    // Warm-up: every kind of call the load below makes (a success, streamed or not, an unknown
    // model), twice. (The load makes no failing calls: enough of them would open a circuit, and
    // the refusals that follow are a new status, not cardinality.)
    const warmKey = (await admin('POST', `/accounts/${accountId}/keys`, { name: 'warm' })).key;
    const call = (key, model, i) => chat(key, ask(model, { user: `user-${i}-${rnd()}`, stream: i % 2 === 0 }), {
      'HTTP-Referer': `https://app-${rnd()}.example/${rnd()}`, 'X-Title': `App ${rnd()}`, 'x-session-id': rnd(),
    });
    for (const model of ['mock/ok', 'mock/error-500', 'nobody/warm-up']) {
      for (let i = 0; i < 2; i++) await call(warmKey, model, i);
    }
    await waitFor(async () => /tollgate_background\{item="usage_rows_pending"\} 0\b/.test(await scrape()), { what: 'rows written' });
    const before = seriesOf(await scrape());

    const keys = await pool(Array.from({ length: 500 }, (_, i) => async () =>
      (await admin('POST', `/accounts/${accountId}/keys`, { name: `load-${i}` })).key), 8);
    const statuses = {};
    const results = await pool(Array.from({ length: 550 }, (_, i) => () => (i < 500
      ? call(keys[i], 'mock/ok', i)
      : call(keys[i - 500], `unknown-vendor-${rnd()}/model-${i}`, i))), 16);
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    await waitFor(async () => /tollgate_background\{item="usage_rows_pending"\} 0\b/.test(await scrape()), { timeoutMs: 20000, what: 'rows written' });
    const afterText = await scrape();
    const afterSeries = seriesOf(afterText);
    const added = [...afterSeries].filter((s) => !before.has(s));
    const gone = [...before].filter((s) => !afterSeries.has(s));
    console.log(`cardinality: ${before.size} series after the warm-up, ${afterSeries.size} after 500 keys/users, `
      + `50 unknown models (statuses ${JSON.stringify(statuses)}) in ${Date.now() - started} ms`);
    assert.deepEqual({ added, gone }, { added: [], gone: [] });
    assert.deepEqual(statuses, { 200: 500, 404: 50 });
    for (const k of keys.slice(0, 5)) assert.ok(!afterText.includes(k.slice(3, 20)), 'no key in /metrics');
    assert.ok(!/unknown-vendor|app-|user-/.test(afterText), 'no raw input in /metrics');
  });

  test('deploy/: the Grafana dashboard uses only metrics a scrape has; promtool checks the Prometheus config', async () => {
    const text = await scrape();
    const names = metricNamesOf(text);
    const dashboard = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'deploy/grafana/tollgate-dashboard.json'), 'utf8'));
    const exprs = [];
    const walk = (v) => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        if (typeof v.expr === 'string') exprs.push(v.expr);
        if (v.type === 'query' && typeof v.query === 'string') exprs.push(v.query);
        else if (v.type === 'query' && v.query && typeof v.query.query === 'string') exprs.push(v.query.query);
        Object.values(v).forEach(walk);
      }
    };
    walk(dashboard.panels);
    walk(dashboard.templating);
    assert.ok(exprs.length >= 12, `the dashboard has its panels' queries (${exprs.length})`);
    assert.ok(dashboard.templating.list.some((t) => t.type === 'datasource'), 'a datasource variable');
    const missing = [];
    for (const e of exprs) {
      const used = [...e.matchAll(/\btollgate_[a-z0-9_]+/g)].map((m) => m[0]);
      if (used.length === 0 && !/^label_values\(/.test(e)) missing.push(`${e} (names no tollgate metric)`);
      for (const n of used) if (!names.has(n)) missing.push(`${n} in ${e}`);
    }
    assert.deepEqual(missing, [], 'every metric a dashboard query names is in a real scrape');
    // Each panel query parses as PromQL: promtool check rules on them as recording rules (Grafana's
    // $__rate_interval / $__range / $model variables replaced by what Grafana would put there).
    const grafanaVars = (e) => e.replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m').replaceAll('$__range', '1h')
      .replace(/\$\{?(model|provider|engine)\}?/g, '.*');
    const rules = { groups: [{ name: 'dashboard', rules: exprs.filter((e) => !/^label_values\(/.test(e))
      .map((e, i) => ({ record: `dashboard:query_${i}`, expr: grafanaVars(e) })) }] };
    const rulesFile = path.join(stack.workDir, 'dashboard-rules.json');
    fs.writeFileSync(rulesFile, JSON.stringify(rules));
    const parsed = runPromtool(['check', 'rules', rulesFile]);
    assert.equal(parsed.status, 0, `dashboard queries that do not parse:\n${parsed.out}`);

    const config = runPromtool(['check', 'config', path.join(REPO_ROOT, 'deploy/prometheus/prometheus.yml')]);
    assert.equal(config.status, 0, `promtool check config:\n${config.out}`);
    const rulesYaml = path.join(REPO_ROOT, 'deploy/prometheus/tollgate-rules.yml');
    const checkedRules = runPromtool(['check', 'rules', rulesYaml]);
    assert.equal(checkedRules.status, 0, `promtool check rules:\n${checkedRules.out}`);
    // The rules name only metrics that exist too.
    for (const n of fs.readFileSync(rulesYaml, 'utf8').matchAll(/\btollgate_[a-z0-9_]+/g)) {
      assert.ok(names.has(n[0]), `${n[0]} of ${rulesYaml} is in a real scrape`);
    }
  });
});
