// Scale-out (issue 13): N replicas on one PostgreSQL. Two `tollgate serve` processes, A and B, each
// with its own port and usage spool, share one database and one mock OpenAI-compatible upstream
// (mock_openai.mjs). Calls alternate strictly between A and B (A, B, A, B, ... one at a time), and
// admin changes are made on one replica and observed on the other. What must hold across replicas,
// with the bound each is documented with (README "Accounts, credits and limits";
// billing/include/tollgate/billing/credit_guard.hpp, rate_limiter.hpp, key_cache.hpp):
//
//   (a) revocation: a key revoked through the admin API on A, and an account disabled through the
//       admin API on B, are refused (401) by both replicas within 1 s (LISTEN/NOTIFY), and never
//       accepted again after the first refusal;
//   (b) a credit limit: a prepaid account's credits, then a key's all-time spending limit: spend
//       never exceeds it (the documented overspend is zero), calls past it get 402 on both replicas,
//       and nothing stays stranded in a replica's lease: once both are idle (leases returned) a call
//       is refused only when what is left is less than its worst case, so the final spend is within
//       one worst case of the limit; new credits / a raised limit posted on one replica are usable on
//       the other within 1 s;
//   (c) budgets: a key's daily limit, and an account's monthly budget shared by two keys (one key
//       used on A, the other on B), likewise;
//   (d) requests per minute of one key: paced slower than the sync slack (a call a second,
//       alternating), exactly `rpm` calls are admitted and the rest refused, in order; paced faster
//       (a call every 20 ms), the admitted count stays within the documented bound: rpm + what the
//       other replica admitted within T = 2 sync intervals + 4 round durations before the last
//       admission (T taken generously from client-side times); and a key used up on A is refused
//       at its first use on B once T has passed (each replica reads every key's counts).
//
// Settings: billing.lease_idle_return_ms is 300 (default 2000) so the idle step of (b)/(c) is short;
// rate_limit_sync_ms stays at its default, 250. Money: prices are whole nano-USD per token, every
// cost and worst case here is exact.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  ADMIN_TOKEN, adminDatabaseUrl, assertErrorShape, costNano, createDatabase, loadDeps, makeWorkDir, requireBinary,
  runCliOk, sleep, startGateway, tail, waitFor, writeGatewayConfig,
} from '../lib/harness.mjs';
import { answerFor, startMockOpenAI } from '../mock_openai.mjs';

const { pg } = await loadDeps();
adminDatabaseUrl();
requireBinary();

const PRICE = { prompt: '1.00', completion: '2.00' }; // 1000 and 2000 nano-USD per token
const MODEL = 'scale/m';
const MAX_TOKENS = 20;
// Each call: one user message of exactly 5 bytes and max_tokens 20. Worst case at admission
// (call_driver.cpp WorstCaseCost): (5 bytes + 8 per message + 1) prompt tokens at 1000 plus 20
// completion tokens at 2000 = 54,000 nano-USD. The mock answers 7 prompt and 12 completion tokens.
const body = (i) => ({ model: MODEL, messages: [{ role: 'user', content: `s${String(i).padStart(4, '0')}` }], max_tokens: MAX_TOKENS });
const WORST = (5 + 8 + 1) * 1000 + MAX_TOKENS * 2000;
const ACTUAL = (() => {
  const u = answerFor(body(0)).usage;
  return costNano(PRICE, { prompt: u.prompt_tokens, completion: u.completion_tokens });
})();
const IDLE_RETURN_MS = 300;
const SYNC_MS = 250; // billing.rate_limit_sync_ms, the default
const PROPAGATION_BOUND_MS = 1000; // README: revocation, limit changes and new credits reach every replica within a second

/** nano-USD as the gateway writes USD in messages ("$0.000054"). */
function usdText(nano) {
  const whole = Math.trunc(nano / 1e9);
  const frac = String(nano % 1e9).padStart(9, '0').replace(/0+$/, '');
  return `$${whole}${frac ? `.${frac}` : ''}`;
}

describe('two replicas on one PostgreSQL', { timeout: 240000 }, () => {
  let workDir;
  let database;
  let db;
  let mock;
  let gwA;
  let gwB;
  const env = {};
  const report = [];

  async function http(gw, method, p, { token, json } = {}) {
    const r = await fetch(`${gw.url}${p}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(json !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    const text = await r.text();
    let parsed = null;
    try { parsed = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, body: parsed, text, headers: r.headers, id: r.headers.get('x-request-id') };
  }
  async function admin(gw, method, p, json) {
    const r = await http(gw, method, `/admin/v1${p}`, { token: ADMIN_TOKEN, json });
    assert.ok(r.status === 200 || r.status === 201, `${method} /admin/v1${p} on ${gw === gwA ? 'A' : 'B'}: ${r.status} ${r.text}`);
    return r.body.data ?? r.body;
  }
  const chat = (gw, key, i) => http(gw, 'POST', '/v1/chat/completions', { token: key, json: body(i) });
  const one = async (sql, params = []) => (await db.query(sql, params)).rows[0];
  const name = (gw) => (gw === gwA ? 'A' : 'B');

  /** A key through the admin API on `gw`; returns {key, id}. */
  async function createKey(gw, accountId, fields) {
    const r = await http(gw, 'POST', `/admin/v1/accounts/${accountId}/keys`, { token: ADMIN_TOKEN, json: fields });
    assert.equal(r.status, 201, r.text);
    assert.match(r.body.key, /^tg-/);
    return { key: r.body.key, id: r.body.data.id };
  }

  before(async () => {
    workDir = makeWorkDir('e2e-scale');
    mock = await startMockOpenAI({ writeDelayMs: 0 });
    database = await createDatabase(pg, 'tollgate_e2e_scale');
    env.TOLLGATE_DATABASE_URL = database.url;
    await runCliOk(['migrate'], { env });
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    const configPath = writeGatewayConfig(workDir, {
      databaseUrl: database.url,
      billing: { lease_idle_return_ms: IDLE_RETURN_MS },
      providers: { mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mock.baseURL, api_key: mock.apiKey } },
      models: [{ id: MODEL, context_length: 8192, endpoints: [{ provider: 'mock', model: 'scale-upstream', pricing: PRICE }] }],
    });
    gwA = await startGateway({ configPath, workDir, env });
    gwB = await startGateway({ configPath, workDir, env });
    assert.notEqual(gwA.port, gwB.port);
  });

  after(async () => {
    for (const [n, gw] of [['A', gwA], ['B', gwB]]) {
      if (!gw) continue;
      const r = await gw.stop('SIGTERM');
      console.error(`--- gateway ${n} log (${gw.logFile}), exit ${JSON.stringify(r)} ---\n${tail(gw.logFile, 10)}`);
    }
    if (mock) await mock.close().catch(() => {});
    if (db) await db.end().catch(() => {});
    if (database) await database.drop().catch((e) => console.error(`e2e: could not drop ${database.name}: ${e.message}`));
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
    console.log(`scale-out report:\n  ${report.join('\n  ')}`);
  });

  // ================================================================ (a) revocation

  /**
   * Alternates calls A, B, A, B ... with `key` from t0 until both replicas have answered 401
   * (each must stay 401 afterwards). Returns the ms from t0 to each replica's first 401.
   */
  async function untilRefusedOnBoth(key, t0, expectCode) {
    const first = new Map();
    let i = 0;
    while (first.size < 2) {
      const gw = i % 2 ? gwB : gwA;
      const r = await chat(gw, key, 100 + i);
      const ms = Math.round(performance.now() - t0);
      if (first.has(gw)) {
        assert.equal(r.status, 401, `${name(gw)} accepted the key again ${ms} ms after the change: ${r.text}`);
      } else if (r.status === 401) {
        assertErrorShape(assert, r.body, 'refused key', { flavor: 'openai' });
        assert.equal(r.body.error.code, expectCode, r.text);
        first.set(gw, ms);
      } else {
        assert.equal(r.status, 200, `${name(gw)} before it learned of the change: ${r.text}`);
        assert.ok(ms < 5000, `${name(gw)} still accepts the key ${ms} ms after the change`);
      }
      i++;
    }
    return [first.get(gwA), first.get(gwB)];
  }

  test('(a) a key revoked on A, an account disabled on B: 401 on both replicas within 1 s', async () => {
    const acct = (await admin(gwA, 'POST', '/accounts', { name: 'revoke', prepaid: false })).id;
    const k = await createKey(gwB, acct, { name: 'revoke-key' });
    for (let i = 0; i < 4; i++) assert.equal((await chat(i % 2 ? gwB : gwA, k.key, i)).status, 200, 'the key works on both');
    const t0 = performance.now();
    const revoked = await admin(gwA, 'DELETE', `/keys/${k.id}`);
    assert.equal(revoked.revoked, true);
    const [ra, rb] = await untilRefusedOnBoth(k.key, t0, 'revoked_api_key');
    report.push(`(a) DELETE /admin/v1/keys on A: first 401 on A after ${ra} ms, on B after ${rb} ms (bound ${PROPAGATION_BOUND_MS})`);
    assert.ok(ra <= PROPAGATION_BOUND_MS && rb <= PROPAGATION_BOUND_MS, `revocation took ${ra} ms on A, ${rb} ms on B`);

    // An account disabled on B: its keys refused on A (and B).
    const acct2 = (await admin(gwB, 'POST', '/accounts', { name: 'disable', prepaid: false })).id;
    const k2 = await createKey(gwA, acct2, { name: 'disable-key' });
    for (let i = 0; i < 4; i++) assert.equal((await chat(i % 2 ? gwB : gwA, k2.key, i)).status, 200);
    const t1 = performance.now();
    assert.equal((await admin(gwB, 'PATCH', `/accounts/${acct2}`, { disabled: true })).disabled, true);
    const [da, dbb] = await untilRefusedOnBoth(k2.key, t1, 'account_disabled');
    report.push(`(a) PATCH /admin/v1/accounts {disabled} on B: first 401 on A after ${da} ms, on B after ${dbb} ms`);
    assert.ok(da <= PROPAGATION_BOUND_MS && dbb <= PROPAGATION_BOUND_MS, `disabling took ${da} ms on A, ${dbb} ms on B`);
  });

  // ================================================================ (b), (c) money limits

  /**
   * Spends a pot down with calls alternating between A and B (`pick(i)` -> [gw, key]), then:
   *   - strict alternation, one call at a time, until both replicas answered 402 in a row;
   *   - then rounds in which both replicas are idle for longer than lease_idle_return_ms (so every
   *     free lease is back in the database) before each call, until a round refuses on both.
   * Every answer is 200 or 402 (naming `potLabel` and the worst case). Returns the results.
   */
  async function spendDown(pick, potLabel, what) {
    const results = [];
    const call = async (i) => {
      const [gw, key] = pick(i);
      const r = await chat(gw, key, i);
      assert.ok(r.status === 200 || r.status === 402, `${what}: call ${i} on ${name(gw)}: ${r.status} ${r.text}`);
      if (r.status === 402) {
        assertErrorShape(assert, r.body, `${what} 402`, { flavor: 'openai' });
        assert.equal(r.body.error.code, 'insufficient_credits');
        const m = r.body.error.message;
        assert.ok(m.startsWith(`${potLabel}: `), `${what}: the 402 names "${potLabel}": ${m}`);
        assert.ok(m.includes(`may cost up to ${usdText(WORST)}`), `${what}: the 402 names the worst case: ${m}`);
      } else {
        assert.equal(r.body.usage.total_tokens, answerFor(body(i)).usage.total_tokens);
      }
      results.push({ i, gw: name(gw), status: r.status, id: r.id, idle: false });
      return r.status;
    };
    let i = 0;
    for (;;) {
      const s1 = await call(i++);
      const s2 = await call(i++);
      if (s1 === 402 && s2 === 402) break;
      assert.ok(i < 400, `${what}: the pot never ran out`);
    }
    const beforeIdle = results.length;
    for (;;) {
      const statuses = [];
      for (let k = 0; k < 2; k++) {
        await sleep(IDLE_RETURN_MS + 400);
        statuses.push(await call(i++));
        results[results.length - 1].idle = true;
      }
      if (statuses.every((s) => s === 402)) break;
      assert.ok(i < 400, `${what}: idle rounds never ended`);
    }
    const count = (rs, s) => rs.filter((r) => r.status === s).length;
    const admitted = count(results, 200);
    // 402s answered while the other replica may still have held a free lease (the design counts
    // capacity leased to another replica as used until it is returned).
    const early = results.slice(0, beforeIdle).filter((r, k, a) => r.status === 402 && a.slice(k + 1).some((x) => x.status === 200)).length;
    report.push(`${what}: ${admitted} admitted (A ${results.filter((r) => r.gw === 'A' && r.status === 200).length}, `
      + `B ${results.filter((r) => r.gw === 'B' && r.status === 200).length}), ${count(results, 402)} refused; `
      + `${results.length - beforeIdle} calls after idle steps (${count(results.slice(beforeIdle), 200)} admitted); `
      + `${early} refusals while capacity was still leased to the other replica`);
    // Every answered call has exactly one usage row, refused ones none.
    const ok = results.filter((r) => r.status === 200).map((r) => r.id);
    const refused = results.filter((r) => r.status === 402).map((r) => r.id);
    await waitFor(async () => (await one('SELECT count(*)::int AS n FROM usage_events WHERE request_id = ANY($1)', [ok])).n === ok.length,
      { timeoutMs: 10000, what: `${what}: a usage row per admitted call` });
    const dup = await one('SELECT count(*)::int AS n FROM (SELECT request_id FROM usage_events WHERE request_id = ANY($1) GROUP BY 1 HAVING count(*) > 1) d', [ok]);
    assert.equal(dup.n, 0, `${what}: no call counted twice`);
    assert.equal((await one('SELECT count(*)::int AS n FROM usage_events WHERE request_id = ANY($1) AND status <> 200', [refused])).n, 0,
      `${what}: refused calls are not billed`);
    return { results, admitted };
  }

  /** Waits until a call of `key` on `gw` is admitted; returns the ms from t0 (a refused call uses no credit). */
  async function admittedWithin(gw, key, t0, i0) {
    for (let i = i0; ; i++) {
      const r = await chat(gw, key, i);
      const ms = Math.round(performance.now() - t0);
      if (r.status === 200) return { ms, id: r.id };
      assert.equal(r.status, 402, r.text);
      assert.ok(ms < 5000, `${name(gw)} still refuses ${ms} ms after the change`);
      await sleep(20);
    }
  }

  const sumCost = async (where, params) => (await one(`SELECT coalesce(sum(cost_nano_usd), 0)::bigint AS c, count(*)::int AS n
    FROM usage_events WHERE ${where}`, params));

  test('(b) prepaid credits across A and B: never overspent, 402 on both, within one worst case of the credits; new credits reach the other replica', async () => {
    const CREDITS = 20 * WORST;
    const acct = (await admin(gwA, 'POST', '/accounts', { name: 'credits', credits_nano_usd: CREDITS })).id;
    const k = await createKey(gwB, acct, { name: 'credits-key' });
    const { admitted } = await spendDown((i) => [i % 2 ? gwB : gwA, k.key], 'account credits', '(b) credits');
    const spent = await sumCost('account_id = $1', [acct]);
    assert.equal(spent.n, admitted);
    assert.equal(spent.c, admitted * ACTUAL, 'every call cost what the mock reported');
    const acctRow = await admin(gwB, 'GET', `/accounts/${acct}`);
    assert.equal(acctRow.balance_nano_usd, CREDITS - spent.c, 'balance = credits - costs');
    assert.ok(spent.c <= CREDITS, `spend ${spent.c} <= credits ${CREDITS} (zero overspend)`);
    assert.ok(CREDITS - spent.c < WORST, `left ${CREDITS - spent.c} < one worst case ${WORST}: nothing stranded in a lease`);
    // The exact count: calls are admitted while what is left covers a worst case.
    assert.equal(admitted, Math.floor((CREDITS - WORST) / ACTUAL) + 1);

    // New credits posted on B: A admits within 1 s (and B too).
    const t0 = performance.now();
    await admin(gwB, 'POST', `/accounts/${acct}/credits`, { amount_nano_usd: 3 * WORST, reason: 'top-up', idempotency_key: `scale-topup-${acct}` });
    const onA = await admittedWithin(gwA, k.key, t0, 900);
    const onB = await admittedWithin(gwB, k.key, t0, 950);
    report.push(`(b) credits: balance ${CREDITS - spent.c} left of ${CREDITS} (worst case ${WORST}); credits posted on B usable on A after ${onA.ms} ms`);
    assert.ok(onA.ms <= PROPAGATION_BOUND_MS, `new credits usable on A after ${onA.ms} ms`);
  });

  test('(b) a key\'s all-time limit across A and B: usage never above it, 402 on both, within one worst case; a raised limit reaches the other replica', async () => {
    const LIMIT = 16 * WORST;
    const acct = (await admin(gwB, 'POST', '/accounts', { name: 'keylimit', prepaid: false })).id;
    const k = await createKey(gwA, acct, { name: 'keylimit-key', limit_nano_usd: LIMIT });
    const { admitted } = await spendDown((i) => [i % 2 ? gwA : gwB, k.key], 'key limit', '(b) key limit');
    const spent = await sumCost('api_key_id = $1', [k.id]);
    assert.equal(spent.c, admitted * ACTUAL);
    const used = (await one("SELECT usage_nano_usd AS u FROM period_usage WHERE scope = 'key' AND owner_id = $1", [k.id])).u;
    assert.equal(used, spent.c, 'the key\'s period usage = sum of its costs');
    assert.ok(used <= LIMIT, `usage ${used} <= limit ${LIMIT}`);
    assert.ok(LIMIT - used < WORST, `left ${LIMIT - used} < one worst case`);
    assert.equal(admitted, Math.floor((LIMIT - WORST) / ACTUAL) + 1);
    const keyView = await admin(gwA, 'GET', `/keys/${k.id}`);
    assert.equal(keyView.limit_nano_usd, LIMIT);
    assert.equal(keyView.usage_nano_usd, used, 'GET /admin/v1/keys/{id} on A: the usage of both replicas');

    // The limit raised on A: B admits within 1 s.
    const t0 = performance.now();
    await admin(gwA, 'PATCH', `/keys/${k.id}`, { limit_nano_usd: LIMIT + 2 * WORST });
    const onB = await admittedWithin(gwB, k.key, t0, 900);
    report.push(`(b) key limit raised on A: admitted on B after ${onB.ms} ms`);
    assert.ok(onB.ms <= PROPAGATION_BOUND_MS, `the raised limit reached B after ${onB.ms} ms`);
  });

  /** Waits, when a period of `reset` starts within `ms`, until it has started (a run must not straddle it). */
  async function clearOfPeriodStart(reset, ms) {
    const now = new Date();
    const next = reset === 'daily'
      ? Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1)
      : Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
    if (next - now.getTime() < ms) await sleep(next - now.getTime() + 500);
  }

  test('(c) a key\'s daily limit across A and B: the period\'s usage never above it, 402 on both', async () => {
    await clearOfPeriodStart('daily', 30000);
    const LIMIT = 12 * WORST;
    const acct = (await admin(gwA, 'POST', '/accounts', { name: 'daily', prepaid: false })).id;
    const k = await createKey(gwB, acct, { name: 'daily-key', limit_nano_usd: LIMIT, limit_reset: 'daily' });
    const { admitted } = await spendDown((i) => [i % 2 ? gwB : gwA, k.key], 'key limit', '(c) daily key limit');
    const today = new Date();
    const period = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()));
    const row = await one("SELECT period_start, usage_nano_usd AS u FROM period_usage WHERE scope = 'key' AND owner_id = $1", [k.id]);
    assert.equal(row.period_start.getTime(), period.getTime(), 'the usage is in today\'s (UTC) period');
    assert.equal(row.u, admitted * ACTUAL);
    assert.ok(row.u <= LIMIT && LIMIT - row.u < WORST, `daily usage ${row.u}, limit ${LIMIT}`);
    assert.equal(admitted, Math.floor((LIMIT - WORST) / ACTUAL) + 1);
    const meta = await http(gwB, 'GET', '/api/v1/key', { token: k.key });
    assert.equal(meta.status, 200, meta.text);
    assert.equal(meta.body.data.limit_reset, 'daily');
    assert.equal(Math.round(meta.body.data.limit_remaining * 1e9), LIMIT - row.u, '/api/v1/key on B: limit_remaining');
  });

  test('(c) an account\'s monthly budget shared by a key on A and a key on B: budget usage never above it, 402 on both', async () => {
    await clearOfPeriodStart('monthly', 30000);
    const BUDGET = 14 * WORST;
    const acct = (await admin(gwB, 'POST', '/accounts', { name: 'budget', prepaid: false, budget_nano_usd: BUDGET, budget_reset: 'monthly' })).id;
    const k1 = await createKey(gwA, acct, { name: 'budget-k1' });
    const k2 = await createKey(gwB, acct, { name: 'budget-k2' });
    const { admitted, results } = await spendDown((i) => (i % 2 ? [gwB, k2.key] : [gwA, k1.key]), 'account budget', '(c) monthly budget');
    const byKey = await db.query('SELECT api_key_id, count(*)::int AS n FROM usage_events WHERE account_id = $1 GROUP BY 1 ORDER BY 1', [acct]);
    assert.equal(byKey.rows.length, 2, `both keys spent: ${JSON.stringify(byKey.rows)}`);
    const used = (await one("SELECT usage_nano_usd AS u FROM period_usage WHERE scope = 'budget' AND owner_id = $1", [acct])).u;
    assert.equal(used, admitted * ACTUAL);
    assert.ok(used <= BUDGET && BUDGET - used < WORST, `budget usage ${used}, budget ${BUDGET}`);
    assert.equal(admitted, Math.floor((BUDGET - WORST) / ACTUAL) + 1);
    assert.ok(results.slice(-2).every((r) => r.status === 402) && new Set(results.slice(-2).map((r) => r.gw)).size === 2, '402 on both');
    report.push(`(c) budget: per key ${JSON.stringify(byKey.rows.map((r) => r.n))} calls`);
    const check = await admin(gwA, 'GET', '/ledger/check');
    assert.equal(check.ok, true, JSON.stringify(check));
  });

  // ================================================================ (d) rate limits

  /** Waits for the next UTC minute when fewer than `ms` + 1 s are left of this one (the limiter's windows). */
  async function withinOneMinute(ms) {
    const left = 60000 - (Date.now() % 60000);
    if (left < ms + 1000) await sleep(left + 200);
  }

  /** Sends `n` calls of `key`, one every `paceMs`, alternating A and B; resolves [{gw, status, sent, done, headers}]. */
  async function paced(key, n, paceMs, i0) {
    const pending = [];
    for (let i = 0; i < n; i++) {
      const gw = i % 2 ? gwB : gwA;
      const sent = performance.now();
      pending.push(chat(gw, key, i0 + i).then((r) => ({ gw: name(gw), status: r.status, sent, done: performance.now(), headers: r.headers, text: r.text })));
      await sleep(paceMs);
    }
    return Promise.all(pending);
  }

  test('(d) requests per minute, paced slower than the sync slack: exactly rpm admitted across A and B, in order', async () => {
    const RPM = 4;
    const N = 7;
    const PACE = 1000; // > T = 2 x 250 ms + 2 round trips, with room for a slow round trip on a busy machine
    const acct = (await admin(gwA, 'POST', '/accounts', { name: 'rpm-exact', prepaid: false })).id;
    const k = await createKey(gwB, acct, { name: 'rpm-exact-key', requests_per_minute: RPM });
    await withinOneMinute(N * PACE + 1000);
    const results = await paced(k.key, N, PACE, 2000);
    const statuses = results.map((r) => r.status);
    report.push(`(d) rpm ${RPM} paced ${PACE} ms: ${statuses.join(' ')}`);
    assert.deepEqual(statuses, [...Array(RPM).fill(200), ...Array(N - RPM).fill(429)], 'exactly rpm admitted, the rest refused');
    for (const r of results) {
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), String(RPM));
      if (r.status === 429) {
        assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
        assert.match(r.headers.get('retry-after') ?? '', /^\d+$/);
        assert.match(JSON.parse(r.text).error.message, /requests per minute/);
      }
    }
    // The remaining-requests header counts the other replica's calls too, the key's first call on
    // B included: 3, 2, 1, 0 in order.
    const remaining = results.slice(0, RPM).map((r) => Number(r.headers.get('x-ratelimit-remaining-requests')));
    assert.deepEqual(remaining, Array.from({ length: RPM }, (_, j) => RPM - 1 - j),
      `x-ratelimit-remaining-requests counts both replicas: ${remaining}`);
  });

  test('(d) requests per minute: a key used up on A is refused at its first use on B', async () => {
    const RPM = 5;
    const acct = (await admin(gwA, 'POST', '/accounts', { name: 'rpm-first-use', prepaid: false })).id;
    const k = await createKey(gwA, acct, { name: 'rpm-first-use-key', requests_per_minute: RPM });
    await withinOneMinute(6000);
    const onA = [];
    for (let i = 0; i < RPM + 1; i++) onA.push((await chat(gwA, k.key, 9000 + i)).status);
    assert.deepEqual(onA, [...Array(RPM).fill(200), 429]);
    await sleep(2 * SYNC_MS + 500);  // T: two sync intervals and the round trips
    const onB = (await Promise.all(Array.from({ length: RPM + 1 }, (_, i) => chat(gwB, k.key, 9100 + i)))).map((r) => r.status);
    report.push(`(d) rpm ${RPM} used up on A, then ${RPM + 1} concurrent first calls on B: ${onB.join(' ')}`);
    assert.deepEqual(onB, Array(RPM + 1).fill(429), 'B counts what A admitted');
  });

  test('(d) requests per minute, paced faster than the sync slack: admitted within rpm + the other replica\'s admissions within T', async () => {
    const RPM = 20;
    const N = 80;
    const PACE = 20; // 50 calls a second, 25 per replica
    const acct = (await admin(gwB, 'POST', '/accounts', { name: 'rpm-burst', prepaid: false })).id;
    const k = await createKey(gwA, acct, { name: 'rpm-burst-key', requests_per_minute: RPM });
    await withinOneMinute(N * PACE + 2000);
    const results = await paced(k.key, N, PACE, 3000);
    const ok = results.filter((r) => r.status === 200);
    assert.deepEqual([...new Set(results.map((r) => r.status))].sort(), [200, 429], 'only 200 and 429');
    // T from rate_limiter.hpp: 2 sync intervals + 4 round durations (100 ms allowed for them).
    // An admission happened between a call's send and its answer, so count, conservatively, every
    // admission of the other replica whose [sent, done] meets (last.sent - T, last.done].
    const T = 2 * SYNC_MS + 100;
    const last = ok.reduce((a, b) => (b.done > a.done ? b : a));
    const slack = ok.filter((r) => r.gw !== last.gw && r.done > last.sent - T && r.sent <= last.done).length;
    const perReplica = ['A', 'B'].map((g) => ok.filter((r) => r.gw === g).length);
    report.push(`(d) rpm ${RPM}, ${N} calls ${PACE} ms apart: ${ok.length} admitted (A ${perReplica[0]}, B ${perReplica[1]}); `
      + `bound rpm + ${slack} = ${RPM + slack}`);
    assert.ok(ok.length >= RPM, `the limit itself is reachable: ${ok.length}`);
    assert.ok(ok.length <= RPM + slack, `admitted ${ok.length} > rpm ${RPM} + ${slack} admitted by the other replica within T = ${T} ms`);
    // Rows in the database agree (one window).
    const rows = await waitFor(async () => {
      const r = await one('SELECT count(*)::int AS n, count(DISTINCT date_trunc(\'minute\', created_at))::int AS w FROM usage_events WHERE api_key_id = $1', [k.id]);
      return r.n === ok.length ? r : null;
    }, { timeoutMs: 10000, what: 'the usage rows of the admitted calls' });
    assert.equal(rows.w, 1, 'the run fell in one window');
  });
});
