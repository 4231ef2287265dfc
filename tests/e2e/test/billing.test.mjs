// Billing end to end (issue 9): accounts, credits, key limits, budgets and rate limits that hold
// across gateway replicas, and usage that is never lost or counted twice. Real processes throughout:
// two `tollgate serve` processes (A and B) on one PostgreSQL database, mock OpenAI-compatible
// upstreams (mock_openai.mjs), the official `openai` and `@openrouter/sdk` clients, and checks of
// usage_events, ledger_entries, accounts, period_usage and credit_leases in PostgreSQL.
//
// Covered, in file order:
//   1. 200 concurrent calls over A and B against an account whose credits cover 50 worst cases, then
//      the same against a key's spending limit and against an account budget shared by two keys:
//      nothing goes below zero or above the limit while it runs (sampled), the sum of a pot's
//      leases never exceeds its capacity, balance = credits - sum(costs) = sum(ledger), every 200
//      has exactly one usage row, every 402 says which pot and by how much.
//   2. Requests-per-minute and tokens-per-minute limits of one key shared by A and B: admitted within
//      the documented tolerance, 429s with Retry-After and x-ratelimit-*, successes with x-ratelimit-*.
//   3. A key revoked through the admin API, another through the CLI: 401 on both replicas within 1 s.
//   4. A client that leaves a stream mid-way: status 499, cancelled, billed for what was produced,
//      and the upstream request closed.
//   5. kill -9 of a gateway with 40 calls in flight, restart on the same spool: every call whose
//      client got a complete 200 has exactly one usage row; balance = sum(ledger).
//   6. PostgreSQL (a private cluster) stopped for 10 s under load: calls keep answering 200 (postpaid
//      key), every 200 has exactly one row after the restart, `tollgate ledger check` exits 0.
//   7. GET /api/v1/key and /api/v1/credits through @openrouter/sdk match the database.
//   8. The admin API: accounts with credits, idempotent credit movements, 401 for a wrong token.
//   9. BYOK: the account's own provider key reaches the upstream, the row carries the provider's cost
//      and the fee; the key never shows in admin responses, logs or usage rows.
//  10. A key's soft limit: the x-tollgate-soft-limit header and tollgate_soft_limit_warnings_total.
//  And at the end: `tollgate ledger check` and GET /admin/v1/ledger/check after all of the above.
//
// Money: prices are whole nano-USD per token, so every cost and worst case here is exact.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  ADMIN_TOKEN, adminDatabaseUrl, assertErrorShape, costNano, createDatabase, createDatabaseAt, loadDeps,
  makeWorkDir, pgSh, requireBinary, runCli, runCliOk, sleep, startGateway, tail, waitFor, writeGatewayConfig,
} from '../lib/harness.mjs';
import { REPLY_PIECES, answerFor, startMockOpenAI } from '../mock_openai.mjs';

const { OpenAI, OpenRouter, pg } = await loadDeps();
adminDatabaseUrl(); // fail at once, clearly, without a database
requireBinary();

// USD per million tokens = nano-USD per thousand tokens: '1.00' is 1000 nano-USD per token.
const PRICE = { prompt: '1.00', completion: '2.00' };
const PRICE_NANO = { prompt: 1000, completion: 2000 };
// BYOK prices chosen so that 5% of a call's cost is not a whole nano-USD (the fee rounds up).
const BYOK_PRICE = { prompt: '1.01', completion: '2.00' };
const BYOK_KEY = 'sk-byok-e2e-7d1f0c2a9b8e4f6a0123456789abcdefZZQX';
const OPERATOR_KEY = 'sk-operator-key-the-byok-mock-refuses';
const SECRET_KEY = 'a3f1c9e07b2d4e58a6c0f1e2d3c4b5a69788f7e6d5c4b3a2918273645546372f'; // 64 hex chars
const CONTEXT = 8192;

// Every burst call: one user message of exactly 5 bytes ("b0042") and max_tokens 20. Admission's
// worst case (call_driver.cpp WorstCaseCost): prompt bound = bytes + 8 per message + 1 = 14 tokens
// at the prompt price, plus max_tokens at the completion price.
const MAX_TOKENS = 20;
const burstContent = (i) => `b${String(i).padStart(4, '0')}`;
const WORST = (5 + 8 + 1) * PRICE_NANO.prompt + MAX_TOKENS * PRICE_NANO.completion; // 54,000 nano-USD
// What the mock answers such a call: prompt (3 + 1 word) + 3 = 7 tokens, the 12 reply pieces.
const burstBody = (i) => ({ model: 'bill/m', messages: [{ role: 'user', content: burstContent(i) }], max_tokens: MAX_TOKENS });
const ACTUAL = (() => {
  const u = answerFor(burstBody(0)).usage;
  const usage = { prompt: u.prompt_tokens, completion: u.completion_tokens };
  return { ...usage, cost: costNano(PRICE, usage) };
})();

/** nano-USD as the gateway formats USD in messages: "$0.000054" (core FormatUsd: trailing zeros cut). */
function usdText(nano) {
  const whole = Math.trunc(nano / 1e9);
  const frac = String(nano % 1e9).padStart(9, '0').replace(/0+$/, '');
  return `$${whole}${frac ? `.${frac}` : ''}`;
}

/** Summary statistics of a list of numbers, for the printed report. */
const stats = (xs) => {
  if (xs.length === 0) return 'none';
  const s = [...xs].sort((a, b) => a - b);
  return `n=${s.length} min=${s[0]} p50=${s[Math.floor(s.length / 2)]} max=${s[s.length - 1]}`;
};

describe('billing across two replicas', { timeout: 240000 }, () => {
  let workDir;
  let database;
  let db; // pg.Client on the shared database (tests' checks)
  let mock; // the main upstream
  let slowMock; // mock-slow holding 200 x 5 ms = 1 s (kill -9 test)
  let byokMock; // accepts only BYOK_KEY
  let configPath;
  let gwA;
  let gwB;
  const env = {};
  const gatewayEnv = { TOLLGATE_SECRET_KEY: SECRET_KEY };
  const extraGateways = []; // started by single tests; stopped there, and here as a last resort
  const seen402Messages = []; // one 402 message per burst, for the report

  // ---------------------------------------------------------------- helpers

  /** An admin API call: {status, body (parsed or null), text, headers}. */
  async function admin(gw, method, p, body, { token = ADMIN_TOKEN, headers = {} } = {}) {
    const r = await fetch(`${gw.url}/admin/v1${p}`, {
      method,
      headers: {
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed = null;
    try { parsed = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, body: parsed, text, headers: r.headers };
  }
  async function adminOk(gw, method, p, body, expected = [200, 201]) {
    const r = await admin(gw, method, p, body);
    assert.ok(expected.includes(r.status), `${method} /admin/v1${p}: ${r.status} ${r.text}`);
    return r.body;
  }
  /** A prepaid (credits) or postpaid account through the admin API; returns its id. */
  async function createAccount(name, fields = {}) {
    return (await adminOk(gwA, 'POST', '/accounts', { name, ...fields })).data.id;
  }
  /** A key of `accountId` through the CLI (`keys create --account`); returns {key, id}. */
  async function createKey(accountId, name, extra = []) {
    const key = (await runCliOk(['keys', 'create', '--account', String(accountId), '--name', name, ...extra], { env })).stdout.trim();
    assert.match(key, /^tg-[0-9A-Za-z]{43}$/, 'keys create prints the plaintext key alone');
    const id = (await db.query('SELECT id FROM api_keys WHERE name = $1', [name])).rows[0].id;
    return { key, id };
  }
  /** One chat call by fetch: {status, headers, body, text, id (x-request-id)}. */
  async function chat(gw, key, body, { signal } = {}) {
    const r = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal,
    });
    const text = await r.text();
    let parsed = null;
    try { parsed = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, headers: r.headers, body: parsed, text, id: r.headers.get('x-request-id') };
  }
  const one = async (sql, params = []) => (await db.query(sql, params)).rows[0];
  const accountMoney = (accountId) => one(`
    SELECT a.balance_nano_usd AS balance,
           (SELECT coalesce(sum(amount_nano_usd), 0) FROM ledger_entries l WHERE l.account_id = a.id)::bigint AS ledger,
           (SELECT coalesce(sum(amount_nano_usd), 0) FROM ledger_entries l
             WHERE l.account_id = a.id AND kind IN ('credit', 'debit'))::bigint AS credits,
           (SELECT coalesce(sum(cost_nano_usd), 0) FROM usage_events u WHERE u.account_id = a.id)::bigint AS cost,
           (SELECT count(*) FROM usage_events u WHERE u.account_id = a.id)::bigint AS rows
      FROM accounts a WHERE a.id = $1`, [accountId]);

  /**
   * Samples `sql` (one row) every few ms until stop(); `check(row)` returns an error text or null.
   * stop() resolves {samples, violations (the first 10; a failing sampler counts as one)}.
   */
  function sampler(sql, params, check) {
    const client = new pg.Client({ connectionString: database.url });
    let running = true;
    const out = { samples: 0, violations: [] };
    const done = (async () => {
      await client.connect();
      try {
        while (running) {
          const row = (await client.query(sql, params)).rows[0];
          out.samples++;
          const bad = check(row);
          if (bad && out.violations.length < 10) out.violations.push(bad);
          await sleep(5);
        }
      } finally {
        await client.end();
      }
    })().catch((e) => { out.violations.push(`the sampler failed: ${e.message}`); });
    return { async stop() { running = false; await done; return out; } };
  }

  /** Every 200 in `results` has exactly one usage row and one ledger 'usage' entry (when it cost > 0). */
  async function checkExactlyOnce(results, what) {
    const ids = results.filter((r) => r.status === 200).map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length, `${what}: request ids are unique`);
    assert.ok(ids.every((id) => typeof id === 'string' && id.length > 0), `${what}: every 200 has an x-request-id`);
    const rows = await waitFor(async () => {
      const r = await db.query('SELECT request_id, count(*)::bigint AS n FROM usage_events WHERE request_id = ANY($1) GROUP BY request_id', [ids]);
      return r.rows.length === ids.length ? r.rows : null;
    }, { timeoutMs: 15000, what: `${what}: a usage row for each of ${ids.length} answered calls` });
    assert.ok(rows.every((r) => r.n === 1), `${what}: exactly one row per call`);
    const ledger = await db.query(`SELECT idempotency_key, count(*)::bigint AS n FROM ledger_entries
      WHERE kind = 'usage' AND idempotency_key = ANY($1) GROUP BY idempotency_key`, [ids]);
    const paid = await db.query('SELECT count(*)::bigint AS n FROM usage_events WHERE request_id = ANY($1) AND cost_nano_usd > 0', [ids]);
    assert.equal(ledger.rows.length, paid.rows[0].n, `${what}: one ledger entry per call that cost something`);
    assert.ok(ledger.rows.every((r) => r.n === 1), `${what}: no call charged twice in the ledger`);
    return ids;
  }

  /**
   * 200 concurrent calls, alternating between A and B (and between `keys`), while `sample` watches
   * the database. Returns {results, violations, samples, ms}.
   */
  async function burst(keys, sample) {
    const s = sample();
    const t0 = Date.now();
    let results;
    let ms;
    let sampled;
    try {
      results = await Promise.all(Array.from({ length: 200 }, (_, i) => chat(i % 2 ? gwB : gwA, keys[(i >> 1) % keys.length], burstBody(i))));
      ms = Date.now() - t0;
      // Keep sampling until the write-behind has written every answered call.
      const ids = results.filter((r) => r.status === 200).map((r) => r.id);
      await waitFor(async () => (await one('SELECT count(*)::bigint AS n FROM usage_events WHERE request_id = ANY($1)', [ids])).n === ids.length,
        { timeoutMs: 15000, what: 'the usage rows of the burst' });
    } finally {
      sampled = await s.stop();
    }
    assert.ok(sampled.samples >= 5, `the database was sampled during the burst (${sampled.samples} samples)`);
    return { results, ms, ...sampled };
  }

  /** Statuses of a burst are 200 or 402; every 402 names `pot` and the call's worst case, in OpenAI's error shape. */
  function check402s(results, pot, what) {
    const statuses = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    assert.deepEqual(Object.keys(statuses).filter((s) => s !== '200' && s !== '402'), [],
      `${what}: only 200 and 402, got ${JSON.stringify(statuses)}; e.g. ${results.find((r) => r.status !== 200 && r.status !== 402)?.text}`);
    for (const r of results.filter((x) => x.status === 402)) {
      assertErrorShape(assert, r.body, `${what} 402`, { flavor: 'openai' });
      const m = r.body.error.message;
      assert.ok(m.startsWith(`${pot}: `), `${what}: the 402 names the pot "${pot}": ${m}`);
      assert.ok(m.includes(`may cost up to ${usdText(WORST)}`), `${what}: the 402 names the amount ${usdText(WORST)}: ${m}`);
      assert.match(m, /but only \$[0-9.]+ of .* is left$/, `${what}: the 402 says what is left: ${m}`);
      assert.equal(r.body.error.code, 'insufficient_credits', `${what}: 402 code`);
    }
    seen402Messages.push(results.find((r) => r.status === 402)?.body?.error?.message);
    return statuses;
  }

  before(async () => {
    workDir = makeWorkDir('e2e-billing');
    mock = await startMockOpenAI();
    slowMock = await startMockOpenAI({ slowPieceMs: 5 });
    byokMock = await startMockOpenAI({ apiKey: BYOK_KEY });
    database = await createDatabase(pg, 'tollgate_e2e_billing');
    env.TOLLGATE_DATABASE_URL = database.url;
    await runCliOk(['migrate'], { env });
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    configPath = writeGatewayConfig(workDir, {
      databaseUrl: database.url,
      providers: {
        mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mock.baseURL, api_key: mock.apiKey },
        slowmock: { type: 'openai_compatible', display_name: 'Slow Mock', base_url: slowMock.baseURL, api_key: slowMock.apiKey },
        byok: { type: 'openai_compatible', display_name: 'BYOK Upstream', base_url: byokMock.baseURL, api_key: OPERATOR_KEY },
      },
      models: [
        { id: 'bill/m', context_length: CONTEXT, endpoints: [{ provider: 'mock', model: 'bill-upstream', pricing: PRICE }] },
        { id: 'bill/slow', context_length: CONTEXT, endpoints: [{ provider: 'mock', model: 'mock-slow', pricing: PRICE }] },
        { id: 'kill/slow', context_length: CONTEXT, endpoints: [{ provider: 'slowmock', model: 'mock-slow', pricing: PRICE }] },
        { id: 'byok/m', context_length: CONTEXT, endpoints: [{ provider: 'byok', model: 'byok-upstream', pricing: BYOK_PRICE }] },
      ],
    });
    gwA = await startGateway({ configPath, workDir, env: { ...env, ...gatewayEnv } });
    gwB = await startGateway({ configPath, workDir, env: { ...env, ...gatewayEnv } });
  });

  after(async () => {
    for (const [name, gw] of [['A', gwA], ['B', gwB], ...extraGateways.map((g, i) => [`extra${i}`, g])]) {
      if (!gw) continue;
      const r = await gw.stop('SIGTERM');
      console.error(`--- gateway ${name} log (${gw.logFile}), exit ${JSON.stringify(r)} ---\n${tail(gw.logFile, 15)}`);
    }
    for (const m of [mock, slowMock, byokMock]) if (m) await m.close().catch(() => {});
    if (db) await db.end().catch(() => {});
    if (database) await database.drop().catch((e) => console.error(`e2e: could not drop ${database.name}: ${e.message}`));
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  // ================================================================ 1. no overspend under concurrency

  test('200 concurrent calls on two replicas against credits for 50: never below zero, balance = credits - costs = ledger', async () => {
    const credits = 50 * WORST;
    const accountId = await createAccount('burst-credits', { credits_nano_usd: credits });
    const { key } = await createKey(accountId, 'burst-credits-key');
    const { results, samples, violations, ms } = await burst([key], () => sampler(`
      SELECT a.balance_nano_usd AS balance,
             (SELECT coalesce(sum(amount_nano_usd), 0) FROM credit_leases l WHERE l.scope = 'credits'
                AND l.owner_id = a.id AND l.expires_at > now())::bigint AS leased
        FROM accounts a WHERE a.id = $1`, [accountId], (r) => (r.balance < 0 ? `balance ${r.balance} < 0`
      : r.leased > r.balance ? `leases ${r.leased} > balance ${r.balance}` : null)));
    const statuses = check402s(results, 'account credits', 'credits burst');
    const admitted = statuses[200] ?? 0;
    console.log(`credits burst: ${JSON.stringify(statuses)} in ${ms} ms; ${samples} balance samples; `
      + `worst case ${WORST} nano-USD, actual cost ${ACTUAL.cost}; credits ${credits}`);
    assert.deepEqual(violations, [], 'the balance never went below zero and leases never exceeded it');
    assert.ok(admitted >= 1, 'some calls were admitted');
    assert.ok(statuses[402] >= 1, 'the credits ran out: some calls were refused');
    await checkExactlyOnce(results, 'credits burst');
    const m = await accountMoney(accountId);
    assert.equal(m.rows, admitted, 'one usage row per admitted call, none for the refused ones');
    assert.equal(m.cost, admitted * ACTUAL.cost, 'each call cost what the mock reported');
    assert.equal(m.balance, credits - m.cost, 'balance = credits - sum(costs)');
    assert.equal(m.balance, m.ledger, 'balance = sum(ledger)');
    assert.ok(m.balance >= 0, 'final balance >= 0');
  });

  test('the same against a per-key limit (keys create --account --limit): period usage never above it', async () => {
    const limit = 50 * WORST;
    const accountId = await createAccount('burst-keylimit', { prepaid: false });
    const { key, id: keyId } = await createKey(accountId, 'burst-keylimit-key', ['--limit', (limit / 1e9).toFixed(9)]);
    assert.equal((await one('SELECT credit_limit_nano_usd AS l FROM api_keys WHERE id = $1', [keyId])).l, limit);
    const { results, samples, violations, ms } = await burst([key], () => sampler(`
      SELECT coalesce((SELECT usage_nano_usd FROM period_usage WHERE scope = 'key' AND owner_id = $1), 0)::bigint AS used,
             (SELECT coalesce(sum(amount_nano_usd), 0) FROM credit_leases WHERE scope = 'key' AND owner_id = $1
                AND expires_at > now())::bigint AS leased`, [keyId],
    (r) => (r.used > limit ? `period usage ${r.used} > limit ${limit}`
      : r.leased > limit - r.used ? `leases ${r.leased} > limit - usage ${limit - r.used}` : null)));
    const statuses = check402s(results, 'key limit', 'key-limit burst');
    const admitted = statuses[200] ?? 0;
    console.log(`key-limit burst: ${JSON.stringify(statuses)} in ${ms} ms; ${samples} samples`);
    assert.deepEqual(violations, []);
    assert.ok(admitted >= 1 && statuses[402] >= 1, `some admitted, some refused: ${JSON.stringify(statuses)}`);
    await checkExactlyOnce(results, 'key-limit burst');
    const used = (await one("SELECT usage_nano_usd AS u FROM period_usage WHERE scope = 'key' AND owner_id = $1", [keyId])).u;
    const spent = (await one('SELECT spent_nano_usd AS s FROM api_keys WHERE id = $1', [keyId])).s;
    const m = await accountMoney(accountId);
    assert.equal(m.cost, admitted * ACTUAL.cost);
    assert.equal(used, m.cost, 'period usage = sum(costs)');
    assert.equal(spent, m.cost, 'the key\'s spend = sum(costs)');
    assert.ok(used <= limit, `period usage ${used} <= limit ${limit}`);
    assert.equal(m.balance, -m.cost, 'postpaid: the balance records the spend');
    assert.equal(m.balance, m.ledger, 'balance = sum(ledger)');
  });

  test('the same against an account budget shared by two keys: budget usage never above it', async () => {
    const budget = 50 * WORST;
    const accountId = await createAccount('burst-budget', { prepaid: false, budget_nano_usd: budget });
    const k1 = await createKey(accountId, 'burst-budget-k1');
    const k2 = await createKey(accountId, 'burst-budget-k2');
    const { results, samples, violations, ms } = await burst([k1.key, k2.key], () => sampler(`
      SELECT coalesce((SELECT usage_nano_usd FROM period_usage WHERE scope = 'budget' AND owner_id = $1), 0)::bigint AS used,
             (SELECT coalesce(sum(amount_nano_usd), 0) FROM credit_leases WHERE scope = 'budget' AND owner_id = $1
                AND expires_at > now())::bigint AS leased`, [accountId],
    (r) => (r.used > budget ? `budget usage ${r.used} > budget ${budget}`
      : r.leased > budget - r.used ? `leases ${r.leased} > budget - usage ${budget - r.used}` : null)));
    const statuses = check402s(results, 'account budget', 'budget burst');
    const admitted = statuses[200] ?? 0;
    const perKey = await db.query('SELECT api_key_id, count(*)::bigint AS n FROM usage_events WHERE account_id = $1 GROUP BY 1', [accountId]);
    console.log(`budget burst: ${JSON.stringify(statuses)} in ${ms} ms; ${samples} samples; per key ${JSON.stringify(perKey.rows)}`);
    assert.deepEqual(violations, []);
    assert.ok(admitted >= 1 && statuses[402] >= 1, `some admitted, some refused: ${JSON.stringify(statuses)}`);
    await checkExactlyOnce(results, 'budget burst');
    const used = (await one("SELECT usage_nano_usd AS u FROM period_usage WHERE scope = 'budget' AND owner_id = $1", [accountId])).u;
    const m = await accountMoney(accountId);
    assert.equal(m.cost, admitted * ACTUAL.cost);
    assert.equal(used, m.cost, 'budget period usage = sum(costs of both keys)');
    assert.ok(used <= budget, `budget usage ${used} <= budget ${budget}`);
    assert.equal(m.balance, m.ledger, 'balance = sum(ledger)');
  });

  // ================================================================ 2. rate limits across replicas

  /**
   * Sends `n` calls, one every `paceMs`, alternating A and B, through the openai SDK (no retries).
   * Resolves [{status, headers, id, gw}] in send order.
   */
  async function paced(key, n, paceMs) {
    const clients = [gwA, gwB].map((gw) => new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 }));
    const pending = [];
    for (let i = 0; i < n; i++) {
      const gw = i % 2;
      pending.push(clients[gw].chat.completions.create(burstBody(1000 + i)).withResponse().then(
        ({ response }) => ({ status: response.status, headers: response.headers, id: response.headers.get('x-request-id'), gw }),
        (e) => {
          if (!(e instanceof OpenAI.APIError) || !e.status) throw e;
          return { status: e.status, headers: e.headers, error: e.error, id: e.headers?.get('x-request-id'), gw };
        }));
      await sleep(paceMs);
    }
    return Promise.all(pending);
  }

  /**
   * The limiter's windows are UTC minutes: a run that would cross a minute boundary (less than
   * `durationMs` + 1 s left of this minute) waits for the next minute to begin, so that one window
   * holds the whole run.
   */
  async function withinOneMinute(durationMs) {
    const left = 60000 - (Date.now() % 60000);
    if (left < durationMs + 1000) await sleep(left + 100);
  }

  /** Admitted calls (usage rows) of a key per UTC minute window (the limiter's windows). */
  async function perWindow(keyId, n200) {
    await waitFor(async () => (await one('SELECT count(*)::bigint AS n FROM usage_events WHERE api_key_id = $1', [keyId])).n === n200,
      { timeoutMs: 10000, what: 'the rate-limited calls\' usage rows' });
    return (await db.query(`SELECT date_trunc('minute', created_at) AS w, count(*)::bigint AS n,
        sum(prompt_tokens + completion_tokens)::bigint AS tokens FROM usage_events WHERE api_key_id = $1 GROUP BY 1 ORDER BY 1`, [keyId])).rows;
  }

  const GO_DURATION = /^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$/;

  test('requests per minute across two replicas: admitted <= rpm + tolerance; 429s and 200s carry x-ratelimit-*', async () => {
    const RPM = 20;
    // One call every 50 ms, alternating replicas: each replica gets 10 calls a second. The documented
    // tolerance (rate_limiter.hpp) is what the other replica admits within 2 sync intervals + 2 round
    // trips (about 0.5 s at the default 250 ms): here up to ~5 calls; we allow a whole second (10).
    const TOLERANCE = 10;
    const accountId = await createAccount('rpm', { prepaid: false });
    const { key, id: keyId } = await createKey(accountId, 'rpm-key', ['--rpm', String(RPM)]);
    await withinOneMinute(50 * 50 + 1000);
    const t0 = Date.now();
    const results = await paced(key, 50, 50);
    const statuses = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    const admitted = statuses[200] ?? 0;
    const windows = await perWindow(keyId, admitted);
    console.log(`rpm ${RPM}: ${JSON.stringify(statuses)} in ${Date.now() - t0} ms; per window ${JSON.stringify(windows.map((w) => w.n))}; `
      + `per replica ${JSON.stringify([0, 1].map((g) => results.filter((r) => r.gw === g && r.status === 200).length))}`);
    assert.deepEqual(Object.keys(statuses).sort(), ['200', '429'], `only 200 and 429: ${JSON.stringify(statuses)}`);
    for (const w of windows) assert.ok(w.n <= RPM + TOLERANCE, `window ${w.w.toISOString()}: ${w.n} admitted > ${RPM} + ${TOLERANCE}`);
    assert.equal(windows.length, 1, 'the run fell in one window');
    assert.ok(admitted >= RPM, `the limit itself is reachable: ${admitted} >= ${RPM}`);
    for (const r of results) {
      const h = (n) => r.headers.get(n);
      assert.equal(h('x-ratelimit-limit-requests'), String(RPM), `x-ratelimit-limit-requests on a ${r.status}`);
      assert.match(h('x-ratelimit-remaining-requests') ?? '', /^\d+$/, `x-ratelimit-remaining-requests on a ${r.status}`);
      assert.ok(Number(h('x-ratelimit-remaining-requests')) <= RPM);
      assert.match(h('x-ratelimit-reset-requests') ?? '', GO_DURATION,
        `x-ratelimit-reset-requests on a ${r.status}: ${h('x-ratelimit-reset-requests')}`);
      assert.equal(h('x-ratelimit-limit-tokens'), null, 'no token headers without a token limit');
      if (r.status === 200) {
        assert.ok(Number(h('x-ratelimit-remaining-requests')) < RPM, 'a success counts itself');
        assert.equal(h('retry-after'), null, 'no Retry-After on a success');
      } else {
        assert.equal(h('x-ratelimit-remaining-requests'), '0', 'a 429 leaves nothing');
        assert.match(h('retry-after') ?? '', /^\d+$/, 'Retry-After in whole seconds');
        assert.ok(Number(h('retry-after')) >= 1 && Number(h('retry-after')) <= 60, `Retry-After ${h('retry-after')}`);
        assertErrorShape(assert, { error: r.error }, '429', { flavor: 'openai' });
        assert.match(r.error.message, /requests per minute/);
      }
    }
  });

  test('tokens per minute across two replicas: admitted tokens <= tpm + tolerance; x-ratelimit-*-tokens', async () => {
    const TPM = 300;
    // Admission counts the estimate: prompt bytes / 4 + 1 = 4, plus max_tokens 20 = 24 tokens, then
    // the actual 19 when the call ends. One call every 100 ms, alternating: the other replica's
    // share within a second, 5 calls of 24 tokens, is the tolerance.
    const EST = Math.floor((5 + 8) / 4) + 1 + MAX_TOKENS;
    const TOLERANCE = 5 * EST;
    const accountId = await createAccount('tpm', { prepaid: false });
    const { key, id: keyId } = await createKey(accountId, 'tpm-key', ['--tpm', String(TPM)]);
    await withinOneMinute(30 * 100 + 1000);
    const t0 = Date.now();
    const results = await paced(key, 30, 100);
    const statuses = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    const admitted = statuses[200] ?? 0;
    const windows = await perWindow(keyId, admitted);
    console.log(`tpm ${TPM}: ${JSON.stringify(statuses)} in ${Date.now() - t0} ms; `
      + `tokens per window ${JSON.stringify(windows.map((w) => w.tokens))}`);
    assert.deepEqual(Object.keys(statuses).sort(), ['200', '429'], `only 200 and 429: ${JSON.stringify(statuses)}`);
    for (const w of windows) assert.ok(w.tokens <= TPM + TOLERANCE, `window ${w.w.toISOString()}: ${w.tokens} tokens > ${TPM} + ${TOLERANCE}`);
    // A refusal needs counted tokens + 24 > 300, and a call counts at most 24: so at least 12 admitted.
    assert.equal(windows.length, 1, 'the run fell in one window');
    assert.ok(admitted >= Math.ceil((TPM - EST + 1) / EST), `admitted ${admitted}`);
    for (const r of results) {
      const h = (n) => r.headers.get(n);
      assert.equal(h('x-ratelimit-limit-tokens'), String(TPM), `x-ratelimit-limit-tokens on a ${r.status}`);
      assert.match(h('x-ratelimit-remaining-tokens') ?? '', /^\d+$/);
      assert.match(h('x-ratelimit-reset-tokens') ?? '', GO_DURATION);
      assert.equal(h('x-ratelimit-limit-requests'), null, 'no request headers without a request limit');
      if (r.status === 429) {
        assert.match(h('retry-after') ?? '', /^\d+$/);
        assert.match(r.error.message, /tokens per minute/);
      }
    }
  });

  // ================================================================ 3. revocation reaches both replicas

  async function revocationLatency(key, revoke) {
    // Both replicas know the key (a call on each), then it is revoked; both are polled.
    for (const gw of [gwA, gwB]) assert.equal((await chat(gw, key, burstBody(1))).status, 200, 'the key works before');
    const t0 = performance.now();
    const revoked = revoke();
    const latency = await Promise.all([gwA, gwB].map(async (gw) => {
      for (;;) {
        const r = await fetch(`${gw.url}/api/v1/key`, { headers: { authorization: `Bearer ${key}` } });
        const body = await r.json();
        if (r.status === 401) {
          assertErrorShape(assert, body, 'revoked key', { flavor: 'openrouter', status: 401 });
          assert.match(body.error.message, /revoked/);
          return Math.round(performance.now() - t0);
        }
        assert.equal(r.status, 200, `before the revocation lands: ${JSON.stringify(body)}`);
        if (performance.now() - t0 > 5000) return Infinity;
        await sleep(10);
      }
    }));
    await revoked;
    for (const gw of [gwA, gwB]) {
      const r = await chat(gw, key, burstBody(2));
      assert.equal(r.status, 401, 'chat refused with 401');
      assert.equal(r.body.error.code, 'revoked_api_key');
    }
    return latency;
  }

  test('a key revoked through the admin API is refused (401) by both replicas within 1 s', async () => {
    const accountId = await createAccount('revoke-admin', { prepaid: false });
    const { key, id } = await createKey(accountId, 'revoke-admin-key');
    const latency = await revocationLatency(key, async () => {
      const r = await adminOk(gwA, 'DELETE', `/keys/${id}`);
      assert.equal(r.data.revoked, true);
    });
    console.log(`revocation via DELETE /admin/v1/keys/${id} on A: 401 on A after ${latency[0]} ms, on B after ${latency[1]} ms`);
    for (const [i, ms] of latency.entries()) assert.ok(ms <= 1000, `replica ${'AB'[i]} refused the revoked key after ${ms} ms (> 1 s)`);
  });

  test('a key revoked through the CLI (keys revoke) is refused (401) by both replicas within 1 s', async () => {
    const accountId = await createAccount('revoke-cli', { prepaid: false });
    const { key, id } = await createKey(accountId, 'revoke-cli-key');
    // Timed from starting the CLI process, so its start-up counts against the second.
    const latency = await revocationLatency(key, () => runCliOk(['keys', 'revoke', String(id)], { env }));
    console.log(`revocation via \`tollgate keys revoke ${id}\`: 401 on A after ${latency[0]} ms, on B after ${latency[1]} ms (incl. CLI start)`);
    for (const [i, ms] of latency.entries()) assert.ok(ms <= 1000, `replica ${'AB'[i]} refused the revoked key after ${ms} ms (> 1 s)`);
  });

  // ================================================================ 4. mid-stream disconnect

  test('a client that leaves mid-stream: upstream closed, row 499 cancelled, billed for what was produced', async () => {
    const credits = 1_000_000_000;
    const accountId = await createAccount('midstream', { credits_nano_usd: credits });
    const { key, id: keyId } = await createKey(accountId, 'midstream-key');
    const client = new OpenAI({ apiKey: key, baseURL: `${gwB.url}/v1`, maxRetries: 0 });
    const marker = `leave-me-${Date.now()}`;
    const { data: stream, response } = await client.chat.completions.create({
      model: 'bill/slow', messages: [{ role: 'user', content: marker }], stream: true, stream_options: { include_usage: true },
    }).withResponse();
    const requestId = response.headers.get('x-request-id');
    let chunks = 0;
    let seen = '';
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta?.content;
      if (piece) {
        chunks++;
        seen += piece;
      }
      if (chunks >= 5) break;
    }
    stream.controller.abort();
    const leftAt = Date.now();
    const up = mock.requests.find((r) => r.rawBody.includes(marker));
    assert.ok(up, 'the call reached the mock');
    await waitFor(() => up.closed, { timeoutMs: 5000, what: 'the gateway to close the upstream request' });
    const row = await waitFor(async () => (await db.query('SELECT * FROM usage_events WHERE request_id = $1', [requestId])).rows[0],
      { what: 'the usage row of the abandoned stream' });
    assert.equal((await one('SELECT count(*)::bigint AS n FROM usage_events WHERE api_key_id = $1', [keyId])).n, 1, 'one row');
    console.log(`mid-stream: left after ${chunks} chunks; upstream closed ${up.closedAt - leftAt} ms later `
      + `(${up.closedAt - up.receivedAt} ms after it arrived; the whole stream takes 10 s); row: completion_tokens `
      + `${row.completion_tokens}, cost ${row.cost_nano_usd}, estimated ${row.usage_estimated}`);
    assert.ok(up.closedAt - up.receivedAt < 9000, 'the upstream stopped well before its end');
    assert.equal(row.status, 499);
    assert.equal(row.cancelled, true);
    assert.equal(row.streamed, true);
    assert.equal(row.finish_reason, 'cancelled');
    // No usage report came (the stream was cut): the gateway estimates 1 token per 4 output bytes
    // (call_driver.cpp EstimateUsage), so what the client saw is the floor.
    const seenBytes = Buffer.byteLength(seen);
    assert.equal(row.usage_estimated, true, 'an estimate: the upstream never reported usage');
    assert.ok(row.completion_tokens >= Math.floor((seenBytes + 3) / 4),
      `billed at least the ${seenBytes} bytes the client saw: ${row.completion_tokens} tokens`);
    assert.ok(row.completion_tokens < 200, `billed less than the whole stream: ${row.completion_tokens}`);
    assert.ok(row.cost_nano_usd > 0, 'billed for what was produced');
    assert.equal(row.cost_nano_usd, costNano(PRICE, { prompt: row.prompt_tokens, completion: row.completion_tokens }));
    const entry = await one("SELECT amount_nano_usd AS a FROM ledger_entries WHERE kind = 'usage' AND idempotency_key = $1", [requestId]);
    assert.equal(entry.a, -row.cost_nano_usd, 'the ledger charged the same');
    const m = await accountMoney(accountId);
    assert.equal(m.balance, credits - row.cost_nano_usd);
    assert.equal(m.balance, m.ledger);
  });

  // ================================================================ 5. kill -9 under load

  test('kill -9 with 40 calls in flight, restart on the same spool: every complete 200 has exactly one row', async () => {
    const credits = 5_000_000_000;
    const accountId = await createAccount('killed', { credits_nano_usd: credits });
    const { key } = await createKey(accountId, 'killed-key');
    const spoolDir = path.join(workDir, 'spool-killed');
    // The killed process writes usage rows to the database only every minute (or per 1000 rows):
    // the rows of its completed calls are in its spool only when it is killed, and only the replay
    // by the restarted process (the usual 50 ms interval) can bring them.
    const killConfig = (file, flushIntervalMs, batchSize) => writeGatewayConfig(workDir, {
      file, databaseUrl: database.url, flushIntervalMs, batchSize,
      providers: { slowmock: { type: 'openai_compatible', display_name: 'Slow Mock', base_url: slowMock.baseURL, api_key: slowMock.apiKey } },
      models: [
        { id: 'kill/slow', context_length: CONTEXT, endpoints: [{ provider: 'slowmock', model: 'mock-slow', pricing: PRICE }] },
        { id: 'bill/m', context_length: CONTEXT, endpoints: [{ provider: 'slowmock', model: 'bill-upstream', pricing: PRICE }] },
      ],
    });
    const slowWriter = killConfig('killed.yaml', 60000, 1000);
    const restartConfig = killConfig('restarted.yaml', 50, 64);
    const startC = async (configPath) => {
      const gw = await startGateway({ configPath, workDir, env: { ...env, TOLLGATE_SPOOL_DIR: spoolDir } });
      extraGateways.push(gw);
      return gw;
    };
    const gw = await startC(slowWriter);
    let restarted = null;
    try {
      const results = [];
      let completed = 0;
      let killed = false;
      const pending = [];
      // One call every 40 ms; each takes about 1 s (the mock holds 200 x 5 ms, then answers).
      const launcher = (async () => {
        for (let i = 0; i < 40 && !killed; i++) {
          const body = { model: 'kill/slow', messages: [{ role: 'user', content: `kill${i}` }], max_tokens: 50 };
          pending.push(chat(gw, key, body).then((r) => {
            results.push(r);
            if (r.status === 200 && r.body?.choices) completed++;
          }, (e) => results.push({ status: 0, error: e.message })));
          await sleep(40);
        }
      })();
      await waitFor(() => completed >= 20, { timeoutMs: 20000, intervalMs: 5, what: '20 completed calls' });
      const oldPid = gw.pid;
      process.kill(oldPid, 'SIGKILL');
      killed = true;
      const exit = await gw.stop('SIGKILL');
      assert.equal(exit.signal, 'SIGKILL');
      await launcher;
      await Promise.all(pending);
      const ok = results.filter((r) => r.status === 200 && r.body?.choices);
      const cut = results.filter((r) => r.status === 0);
      const ids = ok.map((r) => r.id);
      const before = (await one('SELECT count(*)::bigint AS n FROM usage_events WHERE request_id = ANY($1)', [ids])).n;
      assert.equal(before, 0, 'precondition: the killed process had written no usage row (60 s flush interval)');
      const oldHolders = (await db.query("SELECT DISTINCT replica_id FROM credit_leases WHERE scope = 'credits' AND owner_id = $1",
        [accountId])).rows.map((r) => r.replica_id);
      assert.ok(oldHolders.length > 0, 'the killed process held a lease of the account\'s credits');
      const spoolFiles = fs.existsSync(spoolDir) ? fs.readdirSync(spoolDir) : [];
      const t0 = Date.now();
      restarted = await startC(restartConfig);
      await checkExactlyOnce(ok, 'kill -9');
      console.log(`kill -9: ${results.length} calls sent, ${ok.length} complete 200s, ${cut.length} cut by the kill, `
        + `${results.length - ok.length - cut.length} other; ${before}/${ok.length} complete calls in the database at the kill, `
        + `all ${ok.length} ${Date.now() - t0} ms after the restart; spool held ${JSON.stringify(spoolFiles)}`);
      const m = await waitFor(async () => {
        const x = await accountMoney(accountId);
        return x.rows >= ok.length ? x : null;
      }, { what: 'the rows' });
      assert.equal(m.balance, m.ledger, 'balance = sum(ledger)');
      assert.equal(m.balance, credits - m.cost, 'balance = credits - sum(costs)');
      const dup = await one(`SELECT count(*)::bigint AS n FROM (SELECT idempotency_key FROM ledger_entries
        WHERE account_id = $1 GROUP BY 1 HAVING count(*) > 1) d`, [accountId]);
      assert.equal(dup.n, 0, 'nothing charged twice');
      // The restarted process (same stable id, new boot) drops the killed boot's leases after the replay.
      await waitFor(async () => (await one('SELECT count(*)::bigint AS n FROM credit_leases WHERE replica_id = ANY($1)', [oldHolders])).n === 0,
        { timeoutMs: 10000, what: `the killed boot's leases (${oldHolders}) to be dropped` });
      const rows = await db.query('SELECT DISTINCT lease_holder FROM usage_events WHERE request_id = ANY($1)', [ok.map((r) => r.id)]);
      assert.deepEqual(rows.rows.map((r) => r.lease_holder), oldHolders, 'the replayed rows name the killed boot\'s lease');
      // And it serves.
      assert.equal((await chat(restarted, key, burstBody(7))).status, 200);
    } finally {
      if (gw) await gw.stop('SIGKILL');
      if (restarted) await restarted.stop('SIGTERM');
    }
  });

  // ================================================================ 6. PostgreSQL stopped under load

  test('PostgreSQL stopped for 10 s under load: calls keep answering, no call lost, none counted twice', { timeout: 120000 }, async () => {
    const pgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-pg-outage-'));
    const gwDir = makeWorkDir('e2e-billing-outage');
    let pgRunning = false;
    let outageDb = null;
    let gw = null;
    const stop = { load: false };
    try {
      const adminUrl = await pgSh(['start', pgDir, '--test']);
      pgRunning = true;
      const url = await createDatabaseAt(pg, adminUrl, `tollgate_e2e_outage_${process.pid}`);
      const oenv = { TOLLGATE_DATABASE_URL: url };
      await runCliOk(['migrate'], { env: oenv });
      // Postpaid (no --credits), no limit, no budget: admission needs no database.
      const key = (await runCliOk(['keys', 'create', '--name', 'outage'], { env: oenv })).stdout.trim();
      const cfg = writeGatewayConfig(gwDir, {
        databaseUrl: url,
        providers: { mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mock.baseURL, api_key: mock.apiKey } },
        models: [{ id: 'bill/m', context_length: CONTEXT, endpoints: [{ provider: 'mock', model: 'bill-upstream', pricing: PRICE }] }],
      });
      gw = await startGateway({ configPath: cfg, workDir: gwDir, env: oenv });
      extraGateways.push(gw);
      const calls = [];
      // 4 clients in a loop, each call right after the previous one.
      const load = Promise.all(Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; !stop.load; i++) {
          const sent = Date.now();
          const r = await chat(gw, key, { ...burstBody(i), messages: [{ role: 'user', content: `o${w}x${i}` }] })
            .catch((e) => ({ status: 0, error: e.message }));
          calls.push({ ...r, sent, done: Date.now() });
          await sleep(20);
        }
      }));
      await sleep(1500);
      await pgSh(['stop', pgDir]);
      pgRunning = false;
      const downAt = Date.now();
      await sleep(10000);
      const upAt = Date.now();
      const again = await pgSh(['start', pgDir, '--test']);
      pgRunning = true;
      assert.equal(again, adminUrl, 'the cluster came back on the same port');
      await sleep(2000);
      stop.load = true;
      await load;
      const during = calls.filter((x) => x.sent >= downAt && x.done <= upAt);
      const statuses = {};
      for (const x of calls) statuses[x.status] = (statuses[x.status] ?? 0) + 1;
      const outageDb_ = new pg.Client({ connectionString: url });
      await outageDb_.connect();
      outageDb = outageDb_;
      const ok = calls.filter((x) => x.status === 200);
      const ids = ok.map((x) => x.id);
      const t0 = Date.now();
      const rows = await waitFor(async () => {
        const r = await outageDb.query('SELECT request_id, count(*)::bigint AS n FROM usage_events WHERE request_id = ANY($1) GROUP BY 1', [ids]);
        return r.rows.length === ids.length ? r.rows : null;
      }, { timeoutMs: 40000, intervalMs: 200, what: `rows of all ${ids.length} answered calls after the restart` });
      console.log(`PostgreSQL outage: ${calls.length} calls ${JSON.stringify(statuses)}; ${during.length} sent and answered while it was down `
        + `(${during.filter((x) => x.status === 200).length} with 200); all ${ids.length} rows ${Date.now() - t0} ms after the wait began `
        + `(${Date.now() - upAt} ms after the restart began)`);
      assert.ok(during.length >= 10, `calls ran during the outage: ${during.length}`);
      assert.deepEqual(during.filter((x) => x.status !== 200).map((x) => `${x.status} ${x.text ?? x.error}`), [],
        'every call during the outage answered 200');
      assert.ok(rows.every((r) => r.n === 1), 'exactly one row per answered call');
      const all = (await outageDb.query('SELECT count(*)::bigint AS n FROM usage_events')).rows[0].n;
      assert.equal(all, ok.length, 'no other rows: nothing counted twice');
      const led = (await outageDb.query(`SELECT count(*)::bigint AS n, count(DISTINCT idempotency_key)::bigint AS d
        FROM ledger_entries WHERE kind = 'usage'`)).rows[0];
      assert.equal(led.n, ok.length, 'one ledger entry per call');
      assert.equal(led.d, led.n);
      const check = await runCli(['ledger', 'check'], { env: oenv });
      assert.equal(check.code, 0, `tollgate ledger check: ${check.stdout}${check.stderr}`);
    } finally {
      stop.load = true;
      if (gw) {
        const r = await gw.stop('SIGTERM', 10000);
        if (r.code !== 0) console.error(`--- outage gateway log, exit ${JSON.stringify(r)} ---\n${tail(gw.logFile, 30)}`);
      }
      if (outageDb) await outageDb.end().catch(() => {});
      if (pgRunning) await pgSh(['stop', pgDir]).catch((e) => console.error(e.message));
      fs.rmSync(pgDir, { recursive: true, force: true });
      fs.rmSync(gwDir, { recursive: true, force: true });
    }
  });

  // ================================================================ 6b. answering before the spool

  test('usage.answer_after_spool: false: 40 concurrent calls answered first, then a graceful stop: every 200 has exactly one row', async () => {
    const accountId = await createAccount('nowait', { credits_nano_usd: 5_000_000_000 });
    const { key } = await createKey(accountId, 'nowait-key');
    const configPath = writeGatewayConfig(workDir, {
      file: 'nowait.yaml', databaseUrl: database.url, answerAfterSpool: false,
      providers: { mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mock.baseURL, api_key: mock.apiKey } },
      models: [{ id: 'bill/m', context_length: CONTEXT, endpoints: [{ provider: 'mock', model: 'bill-upstream', pricing: PRICE }] }],
    });
    const gw = await startGateway({ configPath, workDir, env: { ...env, TOLLGATE_SPOOL_DIR: path.join(workDir, 'spool-nowait') } });
    extraGateways.push(gw);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => chat(gw, key, burstBody(5000 + i))));
    assert.deepEqual(results.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.text}`), [], 'every call answered 200');
    // A graceful stop writes what was answered but not yet in the database.
    const exit = await gw.stop('SIGTERM', 10000);
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}`);
    await checkExactlyOnce(results, 'answer_after_spool: false');
    const m = await accountMoney(accountId);
    assert.equal(m.rows, 40, 'no other rows for the account');
    assert.equal(m.balance, 5_000_000_000 - m.cost, 'balance = credits - sum(costs)');
  });

  // ================================================================ 7. /api/v1/key and /api/v1/credits

  test('@openrouter/sdk: GET /api/v1/key and /api/v1/credits parse and match the database', async () => {
    const accountId = await createAccount('or-sdk', { credits: '1.5' });
    await adminOk(gwA, 'POST', `/accounts/${accountId}/credits`, { amount: '-0.25', reason: 'correction', idempotency_key: `or-sdk-${Date.now()}` });
    const { key, id: keyId } = await createKey(accountId, 'or-sdk-key', ['--limit', '0.5', '--limit-reset', 'daily', '--rpm', '600']);
    for (let i = 0; i < 3; i++) assert.equal((await chat(i % 2 ? gwB : gwA, key, burstBody(i))).status, 200);
    await waitFor(async () => (await one('SELECT count(*)::bigint AS n FROM usage_events WHERE api_key_id = $1', [keyId])).n === 3,
      { what: 'the three rows' });
    const k = await one('SELECT spent_nano_usd, credit_limit_nano_usd FROM api_keys WHERE id = $1', [keyId]);
    const period = (await one(`SELECT coalesce(sum(usage_nano_usd), 0)::bigint AS u FROM period_usage
      WHERE scope = 'key' AND owner_id = $1 AND period_start = tollgate_period_start('daily', now())`, [keyId])).u;
    const led = await one(`SELECT coalesce(sum(amount_nano_usd) FILTER (WHERE kind IN ('credit', 'debit')), 0)::bigint AS credits,
      coalesce(-sum(amount_nano_usd) FILTER (WHERE kind IN ('usage', 'refund')), 0)::bigint AS usage
      FROM ledger_entries WHERE account_id = $1`, [accountId]);
    const label = (await adminOk(gwA, 'GET', `/keys/${keyId}`)).data.label;
    assert.equal(k.spent_nano_usd, 3 * ACTUAL.cost);
    assert.equal(period, 3 * ACTUAL.cost);
    assert.equal(led.credits, 1_250_000_000);
    for (const gw of [gwA, gwB]) {
      const or = new OpenRouter({ apiKey: key, serverURL: `${gw.url}/api/v1`, retryConfig: { strategy: 'none' } });
      const kd = (await or.apiKeys.getCurrentKeyMetadata()).data;
      assert.equal(kd.label, label);
      assert.equal(kd.limit, 0.5);
      assert.equal(kd.limitReset, 'daily');
      assert.equal(kd.limitRemaining, (k.credit_limit_nano_usd - period) / 1e9, 'limit_remaining = limit - period usage');
      assert.equal(kd.usage, k.spent_nano_usd / 1e9, 'usage = the key\'s spend');
      assert.equal(kd.usageDaily, period / 1e9);
      assert.equal(kd.isFreeTier, false);
      assert.equal(kd.rateLimit.requests, 600);
      const cd = (await or.credits.getCredits()).data;
      assert.equal(cd.totalCredits, led.credits / 1e9, 'total_credits = credits granted less removed');
      assert.equal(cd.totalUsage, led.usage / 1e9, 'total_usage = usage in the ledger');
      const bal = (await accountMoney(accountId)).balance;
      assert.equal(led.credits - led.usage, bal, 'total_credits - total_usage = balance');
    }
  });

  // ================================================================ 8. admin API

  test('admin API: account with credits; the same Idempotency-Key twice moves credits once; wrong token 401', async () => {
    const created = await admin(gwA, 'POST', '/accounts', { name: 'admin-api', credits: '2.5' });
    assert.equal(created.status, 201, created.text);
    const id = created.body.data.id;
    assert.equal(created.body.data.balance_nano_usd, 2_500_000_000);
    assert.equal(created.body.data.balance, 2.5);
    assert.equal(created.body.data.prepaid, true);
    const idem = `admin-topup-${Date.now()}`;
    const body = { amount: '1.25', reason: 'top-up' };
    const first = await admin(gwA, 'POST', `/accounts/${id}/credits`, body, { headers: { 'idempotency-key': idem } });
    const second = await admin(gwB, 'POST', `/accounts/${id}/credits`, body, { headers: { 'idempotency-key': idem } });
    assert.equal(first.status, 201, first.text);
    assert.equal(second.status, 200, `a replay answers 200: ${second.text}`);
    assert.equal(second.body.data.id, first.body.data.id, 'the replay returns the original entry');
    // Stored as "admin:" + the caller's key (account_store.hpp), apart from usage entries' request ids.
    const rows = (await db.query("SELECT * FROM ledger_entries WHERE idempotency_key LIKE '%' || $1", [idem])).rows;
    assert.equal(rows.length, 1, 'one ledger row');
    assert.equal(rows[0].idempotency_key, `admin:${idem}`);
    assert.equal(rows[0].amount_nano_usd, 1_250_000_000);
    assert.equal(rows[0].kind, 'credit');
    const other = await admin(gwA, 'POST', `/accounts/${id}/credits`, { amount: '2', reason: 'top-up' }, { headers: { 'idempotency-key': idem } });
    assert.equal(other.status, 409, `the key reused with another amount: ${other.text}`);
    assertErrorShape(assert, other.body, '409');
    const missing = await admin(gwA, 'POST', `/accounts/${id}/credits`, body);
    assert.equal(missing.status, 400, 'an idempotency key is required');
    const m = await accountMoney(id);
    assert.equal(m.balance, 3_750_000_000);
    assert.equal(m.balance, m.ledger);
    const shown = await adminOk(gwB, 'GET', `/accounts/${id}`);
    assert.equal(shown.data.balance_nano_usd, 3_750_000_000);
    const ledger = await adminOk(gwA, 'GET', `/accounts/${id}/ledger?limit=10`);
    assert.deepEqual(ledger.data.map((e) => e.amount_nano_usd).sort(), [1_250_000_000, 2_500_000_000].sort());
    for (const [token, what] of [['wrong-token-0123456789abcdef', 'wrong token'], [null, 'no token']]) {
      for (const gw of [gwA, gwB]) {
        const r = await admin(gw, 'GET', '/accounts', undefined, { token });
        assert.equal(r.status, 401, `${what}: ${r.text}`);
        assertErrorShape(assert, r.body, what);
        const w = await admin(gw, 'POST', `/accounts/${id}/credits`,
          { amount: '100', reason: 'x', idempotency_key: `evil-${Date.now()}` }, { token });
        assert.equal(w.status, 401);
      }
    }
    assert.equal((await accountMoney(id)).balance, 3_750_000_000, 'unauthenticated calls moved nothing');
  });

  // ================================================================ 9. BYOK

  test('BYOK: the account\'s own provider key reaches the upstream; row has the provider cost and a 5% fee; the key is never shown', async () => {
    const accountId = await createAccount('byok', { credits: '1' });
    const { key, id: keyId } = await createKey(accountId, 'byok-key');
    const texts = [];
    const put = await admin(gwA, 'PUT', `/accounts/${accountId}/provider_keys/byok`, { key: BYOK_KEY });
    texts.push(put.text);
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body.data.provider, 'byok');
    assert.equal(put.body.data.label, `sk-...${BYOK_KEY.slice(-4)}`);
    texts.push((await admin(gwB, 'GET', `/accounts/${accountId}/provider_keys`)).text);
    texts.push((await admin(gwB, 'GET', `/accounts/${accountId}/provider_keys/byok`)).text);
    texts.push((await admin(gwA, 'GET', `/accounts/${accountId}`)).text);
    const unknown = await admin(gwA, 'PUT', `/accounts/${accountId}/provider_keys/nosuch`, { key: 'sk-x-0123456789' });
    assert.equal(unknown.status, 400, `an unknown provider is refused: ${unknown.text}`);
    // The change reaches every replica within a second (billing/README.md); this waits that second.
    await sleep(1000);
    const ids = [];
    for (const gw of [gwA, gwB]) {
      const client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
      const marker = `byok-${gw.port}-${Date.now()}`;
      const { data, response } = await client.chat.completions
        .create({ model: 'byok/m', messages: [{ role: 'user', content: marker }] }).withResponse();
      assert.equal(data.choices[0].message.content, REPLY_PIECES.join(''));
      const up = byokMock.requests.find((r) => r.rawBody.includes(marker));
      assert.ok(up, 'the call reached the BYOK upstream');
      assert.equal(up.headers.authorization, `Bearer ${BYOK_KEY}`, 'sent with the account\'s own key');
      ids.push(response.headers.get('x-request-id'));
    }
    texts.push((await admin(gwA, 'GET', `/accounts/${accountId}/ledger`)).text);
    for (const id of ids) {
      const row = await waitFor(async () => (await db.query('SELECT * FROM usage_events WHERE request_id = $1', [id])).rows[0],
        { what: 'the BYOK row' });
      const providerCost = costNano(BYOK_PRICE, { prompt: row.prompt_tokens, completion: row.completion_tokens });
      const fee = Number((BigInt(providerCost) * 50000n + 999999n) / 1000000n);
      assert.equal(row.byok, true);
      assert.equal(row.provider_cost_nano_usd, providerCost, 'the provider\'s cost');
      assert.equal(row.cost_nano_usd, fee, `cost = the 5% fee rounded up (${providerCost} -> ${fee})`);
      assert.notEqual(providerCost * 50000 % 1000000, 0, 'the fee needed rounding (the test covers it)');
      assert.equal(row.api_key_id, keyId);
      const entry = await one("SELECT amount_nano_usd AS a FROM ledger_entries WHERE idempotency_key = $1 AND kind = 'usage'", [id]);
      assert.equal(entry.a, -fee, 'the ledger charged only the fee');
      console.log(`BYOK ${id}: provider cost ${providerCost} nano-USD, fee charged ${fee}`);
    }
    const m = await accountMoney(accountId);
    assert.equal(m.balance, 1_000_000_000 - m.cost);
    assert.equal(m.balance, m.ledger);
    // Another account has no key of its own: the operator's key is sent (the BYOK mock refuses it).
    const otherAcc = await createAccount('byok-other', { prepaid: false });
    const other = await createKey(otherAcc, 'byok-other-key');
    const marker = `byok-operator-${Date.now()}`;
    const r = await chat(gwA, other.key, { model: 'byok/m', messages: [{ role: 'user', content: marker }] });
    assert.notEqual(r.status, 200);
    assert.equal(byokMock.requests.find((x) => x.rawBody.includes(marker))?.headers.authorization, `Bearer ${OPERATOR_KEY}`);
    // Never shown back, never logged, never stored in clear.
    for (const t of texts) assert.ok(!t.includes(BYOK_KEY) && !t.includes(BYOK_KEY.slice(3, 30)), `admin response shows the key: ${t}`);
    for (const gw of [gwA, gwB]) {
      const log = fs.readFileSync(gw.logFile, 'utf8');
      assert.ok(!log.includes(BYOK_KEY.slice(3, 30)), `the gateway log ${gw.logFile} holds the BYOK key`);
    }
    const clear = await one(`SELECT
        (SELECT count(*) FROM provider_keys WHERE position(convert_to($1, 'UTF8') IN ciphertext) > 0 OR label LIKE '%' || $1 || '%')::bigint AS pk,
        (SELECT count(*) FROM usage_events u WHERE row_to_json(u)::text LIKE '%' || $1 || '%')::bigint AS ue,
        (SELECT count(*) FROM call_attempts a WHERE row_to_json(a)::text LIKE '%' || $1 || '%')::bigint AS ca`, [BYOK_KEY.slice(3, 30)]);
    assert.deepEqual(clear, { pk: 0, ue: 0, ca: 0 }, 'the key is stored only encrypted');
  });

  // ================================================================ 10. soft limit

  test('a key\'s soft limit: x-tollgate-soft-limit on the answers past it, and tollgate_soft_limit_warnings_total', async () => {
    const metric = async () => {
      const text = await (await fetch(`${gwA.url}/metrics`)).text();
      const m = /^tollgate_soft_limit_warnings_total\{scope="key"\} (\d+)/m.exec(text);
      return m ? Number(m[1]) : 0;
    };
    const base = await metric();
    const accountId = await createAccount('soft', { prepaid: false });
    // Each call costs 31,000 nano-USD: usage reaches the 50,000 soft limit after the second call.
    const { key } = await createKey(accountId, 'soft-key', ['--limit', '0.001', '--soft-limit', '0.00005']);
    const seen = [];
    for (let i = 0; i < 5; i++) {
      const r = await chat(gwA, key, burstBody(i));
      assert.equal(r.status, 200, r.text);
      seen.push(r.headers.get('x-tollgate-soft-limit'));
    }
    const warnings = (await metric()) - base;
    console.log(`soft limit: headers ${JSON.stringify(seen)}; metric +${warnings}`);
    assert.equal(seen[0], null, 'no warning before any spend');
    assert.equal(seen[1], null, 'no warning at 31,000 of the 50,000');
    const first = seen.indexOf('key');
    assert.equal(first, 2, 'the third call (usage 62,000 >= 50,000) carries the warning');
    assert.ok(seen.slice(first).every((h) => h === 'key'), 'every call past the soft limit carries it');
    assert.equal(warnings, seen.filter((h) => h !== null).length, 'the metric counts each warning');
  });

  // ================================================================ after all of it

  test('tollgate ledger check exits 0 after all of the above; so does GET /admin/v1/ledger/check', async () => {
    const r = await runCli(['ledger', 'check'], { env });
    assert.equal(r.code, 0, `ledger check: ${r.stdout}${r.stderr}`);
    const api = await adminOk(gwB, 'GET', '/ledger/check');
    assert.equal(api.data.ok, true, JSON.stringify(api));
    assert.ok(api.data.accounts_checked >= 10, `accounts checked: ${api.data.accounts_checked}`);
    console.log(`ledger check: ${api.data.accounts_checked} accounts, ${api.data.keys_checked} keys; `
      + `402 messages seen: ${JSON.stringify(seen402Messages)}`);
  });
});
