// PostgreSQL restarted under load (issue 13, "Faults"): no call lost (the usage spool), none counted
// twice, and the gateway recovers. The test runs its own private cluster (scripts/pg.sh in a temp
// dir, with fsync on: an immediate shutdown then loses no committed transaction, so a missing row is
// the gateway's fault), never the shared one of TOLLGATE_TEST_DATABASE_URL.
//
// One gateway with usage.spool_dir, a healthy upstream (mock_faults.mjs, faults off), and 6 clients
// in a loop (stream and not, the `openai` SDK and raw fetch) with two keys: a postpaid one and a
// prepaid one whose credits are leased to the process (billing/README.md: admission needs no
// database while the lease lasts). While that runs, PostgreSQL is
//   1. stopped with a fast shutdown (pg.sh stop) for OUTAGE_MS, then started again;
//   2. stopped with an immediate shutdown (SIGQUIT to the postmaster: a crash; recovery replays the
//      WAL on start) for OUTAGE_MS, then started again.
// During each outage a call with a key the gateway has never seen is made (it cannot be looked up).
// Checks: the process never dies; every call is a complete answer or a well-formed error; /readyz
// says 503 while the database is down and 200 after; calls of known keys keep being answered during
// the outages; after the restarts every answered call (complete, or a stream broken after its first
// byte) has exactly one usage row, no row has a request id no client saw, each key's spend and the
// prepaid account's balance match the rows' costs, one ledger entry per charged row, and
// `tollgate ledger check` exits 0. The statuses seen during each outage are printed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  adminDatabaseUrl, costNano, createDatabaseAt, loadDeps, makeWorkDir, pgSh, requireBinary, runCli, runCliOk,
  sleep, startGateway, tail, waitFor, writeGatewayConfig,
} from '../lib/harness.mjs';
import { callChat } from '../lib/outcomes.mjs';
import { startFaultMock } from '../mock_faults.mjs';

const { OpenAI, pg } = await loadDeps();
adminDatabaseUrl(); // the suite's contract: fail at once, clearly, without the test database
requireBinary();

const OUTAGE_MS = 6000;
const WORKERS = 6;
const PRICE = { prompt: '1.00', completion: '2.00' };
const CREDITS_USD = 50;

/** Immediate shutdown (SIGQUIT to the postmaster, as `pg_ctl -m immediate` does); waits until it is gone. */
async function crashPostgres(dir) {
  const pid = Number(fs.readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  assert.ok(pid > 0, 'postmaster pid');
  process.kill(pid, 'SIGQUIT');
  await waitFor(async () => {
    try {
      process.kill(pid, 0);
      const state = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2];
      return state === 'Z'; // a zombie until PID 1 reaps it (../shared/DEPENDENCIES.md pitfall 11)
    } catch {
      return true;
    }
  }, { timeoutMs: 20000, intervalMs: 50, what: `postmaster ${pid} to exit after SIGQUIT` });
}

describe('PostgreSQL restarted under load: nothing lost, nothing counted twice', { timeout: 180000 }, () => {
  let pgDir;
  let pgRunning = false;
  let workDir;
  let url;
  let db = null;
  let mock;
  let gw;
  const keys = {};

  before(async () => {
    pgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-pg-restart-'));
    const adminUrl = await pgSh(['start', pgDir]); // fsync on: see the header
    pgRunning = true;
    url = await createDatabaseAt(pg, adminUrl, `tollgate_e2e_pg_restart_${process.pid}`);
    const env = { TOLLGATE_DATABASE_URL: url };
    await runCliOk(['migrate'], { env });
    keys.post = (await runCliOk(['keys', 'create', '--name', 'restart-postpaid'], { env })).stdout.trim();
    keys.pre = (await runCliOk(['keys', 'create', '--name', 'restart-prepaid', '--credits', String(CREDITS_USD)], { env })).stdout.trim();
    mock = await startFaultMock({ name: 'healthy', weights: { ok: 1 } });
    workDir = makeWorkDir('e2e-pg-restart');
    const cfg = writeGatewayConfig(workDir, {
      databaseUrl: url, requestTimeoutMs: 20000, flushIntervalMs: 50,
      providers: { up: { type: 'openai_compatible', display_name: 'Upstream', base_url: mock.baseURL, api_key: mock.apiKey } },
      models: [{ id: 'restart/m', context_length: 8192, endpoints: [{ id: 'up-m', provider: 'up', model: 'restart-upstream', pricing: PRICE }] }],
    });
    gw = await startGateway({ configPath: cfg, workDir, env });
  });

  after(async () => {
    let exit = null;
    if (gw) exit = await gw.stop('SIGTERM', 15000);
    if (mock) await mock.close().catch(() => {});
    if (db) await db.end().catch(() => {});
    if (pgRunning) await pgSh(['stop', pgDir]).catch((e) => console.error(e.message));
    if (gw && (!exit || exit.code !== 0)) console.error(`--- gateway log (${gw.logFile}), exit ${JSON.stringify(exit)} ---\n${tail(gw.logFile, 60)}`);
    if (pgDir) fs.rmSync(pgDir, { recursive: true, force: true });
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  test('two outages (fast shutdown, then a crash) under load', async () => {
    const calls = [];
    const ready = []; // {t, status}
    const unknownKey = [];
    const stop = { load: false };
    const outages = [];
    let n = 0;
    const load = Promise.all(Array.from({ length: WORKERS }, async (_, w) => {
      while (!stop.load) {
        const i = n++;
        const keyName = i % 2 === 0 ? 'post' : 'pre';
        const stream = (i >> 1) % 2 === 1;
        const via = (i >> 2) % 2 === 0 ? 'sdk' : 'fetch';
        const tag = `restart w${w} call ${i}`;
        const sent = Date.now();
        const o = await callChat({
          baseUrl: gw.url, key: keys[keyName], OpenAI, via, model: 'restart/m', stream, includeUsage: stream,
          maxTokens: 32, messages: [{ role: 'user', content: tag }], tag, timeoutMs: 30000,
        });
        calls.push({ ...o, keyName, sent, done: Date.now() });
        await sleep(40); // a steady load, not a CPU hog on 2 cores
      }
    }));
    const probe = (async () => {
      while (!stop.load) {
        const t = Date.now();
        const status = await fetch(`${gw.url}/readyz`, { signal: AbortSignal.timeout(3000) }).then((r) => r.status, () => 0);
        ready.push({ t, status });
        await sleep(100);
      }
    })();

    const outage = async (how) => {
      if (how === 'fast') await pgSh(['stop', pgDir]);
      else await crashPostgres(pgDir);
      pgRunning = false;
      const down = Date.now();
      await sleep(OUTAGE_MS / 2);
      // A key created before the outage but never used: the gateway's key cache has it from its
      // start (full snapshot), so this is a cache hit; a key it never saw cannot be looked up.
      unknownKey.push({ how, ...(await callChat({
        baseUrl: gw.url, key: `tg-${'x'.repeat(43)}`, via: 'fetch', model: 'restart/m', messages: [{ role: 'user', content: 'who' }], timeoutMs: 20000,
      })) });
      await sleep(OUTAGE_MS / 2);
      const upStart = Date.now();
      await pgSh(['start', pgDir]);
      pgRunning = true;
      outages.push({ how, down, up: upStart, upDone: Date.now() });
      // Ready again within 10 s of the restart.
      await waitFor(async () => (await fetch(`${gw.url}/readyz`)).status === 200, { timeoutMs: 10000, intervalMs: 100, what: '/readyz 200 after the restart' });
      outages.at(-1).readyAt = Date.now();
    };

    try {
      await sleep(2000);
      await outage('fast');
      await sleep(3000);
      await outage('immediate');
      await sleep(3000);
    } finally {
      stop.load = true;
      await load;
      await probe;
    }

    assert.equal(gw.exited, null, `the gateway died: ${JSON.stringify(gw.exited)}\n${tail(gw.logFile, 40)}`);
    const bad = calls.filter((o) => o.kind === 'bad');
    assert.deepEqual(bad.map((o) => `${o.tag} (${o.keyName} ${o.via} ${o.stream ? 'stream' : 'json'}) ${o.status}: ${o.problems.join('; ')}`), [],
      'every call is a complete answer or a well-formed error');

    // What the calls and /readyz saw in each outage.
    const count = (xs, f) => xs.reduce((m, x) => { const k = f(x); m[k] = (m[k] ?? 0) + 1; return m; }, {});
    for (const o of outages) {
      const during = calls.filter((x) => x.sent >= o.down && x.done <= o.up);
      const readyDuring = ready.filter((x) => x.t >= o.down + 1000 && x.t <= o.up);
      const uk = unknownKey.find((x) => x.how === o.how);
      console.log(`outage ${o.how}: ${OUTAGE_MS} ms down, restart took ${o.upDone - o.up} ms, /readyz 200 again ${o.readyAt - o.upDone} ms after; `
        + `calls sent and done while down: ${JSON.stringify(count(during, (x) => `${x.keyName}:${x.kind}:${x.status}`))}; `
        + `/readyz while down (after the first second): ${JSON.stringify(count(readyDuring, (x) => x.status))}; `
        + `a key never seen: ${uk.status} ${uk.error?.error?.message ?? uk.problems.join('; ')}`);
      assert.ok(during.length >= 10, `calls ran during the ${o.how} outage: ${during.length}`);
      assert.ok(readyDuring.length > 0 && readyDuring.every((x) => x.status === 503), `/readyz 503 while the database is down (${o.how}): ${JSON.stringify(count(readyDuring, (x) => x.status))}`);
      for (const k of ['post', 'pre']) {
        const mine = during.filter((x) => x.keyName === k);
        assert.ok(mine.length > 0 && mine.every((x) => x.kind === 'complete'),
          `known ${k === 'post' ? 'postpaid' : 'prepaid (leased credits)'} key answered during the ${o.how} outage: ${JSON.stringify(count(mine, (x) => `${x.kind}:${x.status}`))}`);
      }
      assert.ok(['error'].includes(uk.kind) && [401, 503].includes(uk.status), `a key never seen during the ${o.how} outage: a well-formed 401 or 503, got ${uk.kind} ${uk.status}`);
    }
    assert.equal((await fetch(`${gw.url}/readyz`)).status, 200, '/readyz 200 at the end');

    // Every answered call has exactly one row; nothing else.
    db = new pg.Client({ connectionString: url });
    await db.connect();
    const answered = calls.filter((o) => o.kind === 'complete' || o.kind === 'stream-error');
    const ids = answered.map((o) => o.requestId);
    const t0 = Date.now();
    await waitFor(async () => {
      const r = await db.query('SELECT count(DISTINCT request_id)::bigint AS n FROM usage_events WHERE request_id = ANY($1)', [ids]);
      return r.rows[0].n === ids.length;
    }, { timeoutMs: 40000, intervalMs: 200, what: `rows of all ${ids.length} answered calls after the restarts` });
    const waited = Date.now() - t0;
    await sleep(500);
    const rows = (await db.query(`SELECT u.*, k.name AS key_name FROM usage_events u JOIN api_keys k ON k.id = u.api_key_id`)).rows;
    const seen = new Set(calls.map((o) => o.requestId).filter(Boolean));
    const perId = count(rows, (r) => r.request_id);
    assert.deepEqual(Object.entries(perId).filter(([, c]) => c > 1), [], 'no request id has two rows');
    assert.deepEqual(rows.filter((r) => !seen.has(r.request_id)).map((r) => `${r.request_id} ${r.status}`), [], 'no row for a request id no client saw');
    const problems = [];
    const byId = new Map(rows.map((r) => [r.request_id, r]));
    for (const o of answered) {
      const r = byId.get(o.requestId);
      if (o.kind === 'complete') {
        if (r.status !== 200) problems.push(`${o.tag}: row status ${r.status}`);
        if (o.usage && (r.prompt_tokens !== o.usage.prompt_tokens || r.completion_tokens !== o.usage.completion_tokens)) {
          problems.push(`${o.tag}: row tokens ${r.prompt_tokens}/${r.completion_tokens}, client ${o.usage.prompt_tokens}/${o.usage.completion_tokens}`);
        }
      }
      if (r.cost_nano_usd !== costNano(PRICE, { prompt: r.prompt_tokens, completion: r.completion_tokens })) problems.push(`${o.tag}: cost ${r.cost_nano_usd}`);
    }
    assert.deepEqual(problems, [], 'rows as the clients saw the calls');
    const led = (await db.query(`SELECT count(*)::bigint AS n, count(DISTINCT idempotency_key)::bigint AS d FROM ledger_entries WHERE kind = 'usage'`)).rows[0];
    const charged = rows.filter((r) => r.cost_nano_usd > 0).length;
    assert.equal(led.d, led.n, 'no ledger entry twice');
    assert.ok(led.n >= charged && led.n <= rows.length, `one ledger entry per charged row: ${led.n} entries, ${charged} charged rows, ${rows.length} rows`);
    for (const k of ['post', 'pre']) {
      const sum = rows.filter((r) => r.key_name === `restart-${k === 'post' ? 'postpaid' : 'prepaid'}`).reduce((a, r) => a + r.cost_nano_usd, 0);
      const kr = (await db.query('SELECT spent_nano_usd, account_id FROM api_keys WHERE name = $1', [`restart-${k === 'post' ? 'postpaid' : 'prepaid'}`])).rows[0];
      assert.equal(kr.spent_nano_usd, sum, `${k}: the key's spend = the sum of its rows' costs`);
      if (k === 'pre') {
        const bal = (await db.query('SELECT balance_nano_usd FROM accounts WHERE id = $1', [kr.account_id])).rows[0].balance_nano_usd;
        assert.equal(bal, CREDITS_USD * 1e9 - sum, 'prepaid balance = credits - sum of costs');
      }
    }
    const check = await runCli(['ledger', 'check'], { env: { TOLLGATE_DATABASE_URL: url } });
    assert.equal(check.code, 0, `tollgate ledger check: ${check.stdout}${check.stderr}`);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    const item = (name) => Number(new RegExp(`tollgate_background\\{item="${name}"\\} (\\d+)`).exec(metrics)?.[1] ?? NaN);
    assert.equal(item('usage_rows_lost'), 0, 'usage_rows_lost');
    assert.equal(item('usage_rows_rejected'), 0, 'usage_rows_rejected');
    console.log(`pg restart metrics: usage_write_failures ${item('usage_write_failures')}, usage_rows_written ${item('usage_rows_written')}`);
    console.log(`pg restart: ${calls.length} calls ${JSON.stringify(count(calls, (x) => `${x.kind}:${x.status}`))}; `
      + `all ${ids.length} rows in the database ${waited} ms after the load ended; ${rows.length} rows, ${led.n} ledger entries`);
  });
});
