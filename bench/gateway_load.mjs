#!/usr/bin/env node
// Whole-call load benchmark: what the gateway adds to a chat completion under concurrent load.
//
// How to run it (Node >= 20), from the repository root:
//
//   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j"$(nproc)"
//   (cd tests/e2e && npm ci)                       # pg, used through tests/e2e/lib/harness.mjs
//   export TOLLGATE_TEST_DATABASE_URL=$(scripts/pg.sh start /tmp/tg-bench-pg --test)
//   node bench/gateway_load.mjs
//   scripts/pg.sh stop /tmp/tg-bench-pg              # when done
//
// What it does: starts the mock OpenAI-compatible upstream (tests/e2e/mock_openai.mjs, in its own
// Node process, --write-delay-ms 0 with bench/instant_timers.mjs preloaded, so that it answers at
// once: without it every slice of an answer waits >= 1 ms), creates a fresh database on
// TOLLGATE_TEST_DATABASE_URL, runs `tollgate migrate`, creates an API key with unlimited credits,
// writes a config with tests/e2e/lib/harness.mjs (writeConfig: io_threads 2) and starts
// `tollgate serve`. Then, with keep-alive HTTP connections (node:http Agent, one connection per
// concurrent caller, a fresh agent per row, an untimed warm-up before each row) it measures:
//   (a) mock direct         non-streamed POST /v1/chat/completions straight to the mock
//       mock direct streamed  the same with "stream": true and include_usage, to `data: [DONE]`:
//                           the baseline for (b) and (c), since the gateway always streams from
//                           its upstream, also for a non-streamed call
//   (b) gateway             the same through the gateway (model mock/gpt-test), and through a second
//                           gateway without the usage spool (usage.spool_dir empty): the difference is
//                           the cost of making each usage row durable before the answer's last byte
//   (c) gateway streamed    "stream": true through the gateway; two rows: time to the first byte
//                           of the response body (TTFB), and time to `data: [DONE]`
//   (d) local stories260k   non-streamed local/stories260k, max_tokens 16 (concurrency 1 and 8 only)
// at concurrency 1, 8 and 32, each row bounded by BENCH_REQUESTS requests (default 2000) or
// BENCH_SECONDS seconds (default 10), whichever comes first. Latency is per request, from sending
// it to the end of the answer (or [DONE]); req/s is successful requests over the time from the
// row's start to its last successful answer. Every answer is checked (status 200, JSON with a
// message / an SSE body ending in [DONE]; no answer in BENCH_TIMEOUT_MS, default 10000, is a
// failure); failed requests are left out of the latencies, listed below the table, and make the
// exit status 1.
//
// The load generator, the mock, the gateway and PostgreSQL all share the machine: on a small one
// the numbers say as much about CPU contention as about the gateway. The report prints the CPU
// count, model and load average so runs can be compared.
//
// Cleanup: whatever happens (an error, Ctrl-C, SIGTERM) it stops the gateway and the mock by PID,
// drops the database and removes its temporary folder. The PostgreSQL server itself is yours.
//
// Environment: TOLLGATE_TEST_DATABASE_URL (required), TOLLGATE_BIN (default build/bin/tollgate),
// TOLLGATE_MODEL_DIR (stories260K.gguf; see harness.mjs), BENCH_REQUESTS, BENCH_SECONDS,
// BENCH_TIMEOUT_MS, BENCH_KEEP_WORKDIR (keep the temporary folder: config, gateway and mock logs).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

import {
  E2E_DIR, REPO_ROOT, TOLLGATE_BIN, createDatabase, loadDeps, makeWorkDir, modelDir, requireBinary,
  runCliOk, startGateway, tail, writeConfig,
} from '../tests/e2e/lib/harness.mjs';
import { DEFAULT_API_KEY } from '../tests/e2e/mock_openai.mjs';

const INSTANT_TIMERS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'instant_timers.mjs');
const MAX_REQUESTS = Number(process.env.BENCH_REQUESTS || 2000);
const MAX_SECONDS = Number(process.env.BENCH_SECONDS || 10);
const REQUEST_TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS || 10000);
const log = (m) => process.stderr.write(`gateway_load: ${m}\n`);

// ---------------------------------------------------------------- preconditions

if (!process.env.TOLLGATE_TEST_DATABASE_URL) {
  log('TOLLGATE_TEST_DATABASE_URL is not set. It must be a superuser libpq URI of a PostgreSQL '
    + 'server this benchmark may create a database on. Start a private one with:\n'
    + '  export TOLLGATE_TEST_DATABASE_URL=$(scripts/pg.sh start /tmp/tg-bench-pg --test)\n'
    + 'and stop it afterwards with: scripts/pg.sh stop /tmp/tg-bench-pg');
  process.exit(2);
}
if (!(MAX_REQUESTS > 0) || !(MAX_SECONDS > 0)) {
  log('BENCH_REQUESTS and BENCH_SECONDS must be positive numbers');
  process.exit(2);
}

// ---------------------------------------------------------------- cleanup, always

const state = { gw: null, gwNoSpool: null, mock: null, database: null, workDir: null };
let cleaning = null;

function killMockNow() {
  if (state.mock && state.mock.exitCode === null && state.mock.signalCode === null) {
    try { process.kill(state.mock.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}
// Last resort (process.exit from anywhere): the harness SIGKILLs the gateway and CLI runs; this
// does the same for the mock.
process.on('exit', killMockNow);

async function stopMock(graceMs = 5000) {
  const child = state.mock;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  try { process.kill(child.pid, 'SIGTERM'); } catch { return; }
  const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
  await gone;
  clearTimeout(timer);
}

function cleanup() {
  if (!cleaning) {
    cleaning = (async () => {
      for (const gw of [state.gw, state.gwNoSpool]) {
        if (!gw) continue;
        const r = await gw.stop('SIGTERM', 15000).catch((e) => ({ error: e.message }));
        if (r && (r.code !== 0 && r.signal !== 'SIGTERM')) log(`gateway exited ${JSON.stringify(r)}; log ${gw.logFile}`);
      }
      await stopMock().catch((e) => log(`stopping the mock: ${e.message}`));
      if (state.database) {
        await state.database.drop().catch((e) => log(`could not drop database ${state.database.name}: ${e.message}`));
      }
      if (state.workDir && !process.env.BENCH_KEEP_WORKDIR) fs.rmSync(state.workDir, { recursive: true, force: true });
    })();
  }
  return cleaning;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (interrupted) { // a second signal: no more waiting
      killMockNow();
      process.exit(130);
    }
    interrupted = true;
    log(`${sig}: stopping what was started and dropping the database`);
    cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------- machine

function machine() {
  let cpus = os.availableParallelism?.() ?? os.cpus().length;
  try { cpus = Number(execFileSync('nproc', { encoding: 'utf8' }).trim()) || cpus; } catch { /* no nproc */ }
  let model = 'unknown CPU';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) model = m[1].trim();
  } catch { /* not Linux */ }
  return { cpus, model, load: os.loadavg().map((x) => x.toFixed(2)).join(' ') };
}

// ---------------------------------------------------------------- mock upstream, own process

async function startMockProcess(workDir) {
  const logFile = path.join(workDir, 'mock.log');
  const logFd = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, [
    '--import', pathToFileURL(INSTANT_TIMERS).href,
    path.join(E2E_DIR, 'mock_openai.mjs'), '--port', '0', '--write-delay-ms', '0',
  ], {
    cwd: E2E_DIR, stdio: ['ignore', 'pipe', logFd],
  });
  fs.closeSync(logFd);
  state.mock = child;
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the mock did not print its port in 10 s. Log:\n${tail(logFile)}`)), 10000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^(\d+)\n/.exec(out);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the mock exited early (code ${code}, signal ${signal}). Log:\n${tail(logFile)}`));
    });
  });
  child.stdout.resume();
  const url = `http://127.0.0.1:${port}`;
  return { pid: child.pid, url, baseURL: `${url}/v1`, apiKey: DEFAULT_API_KEY, logFile };
}

// ---------------------------------------------------------------- load generator

/** One request on `agent`; resolves {ok, total, ttfb, why}. Latencies in ms. */
function oneRequest(agent, target, { stream }) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let ttfb = null;
    let doneAt = null;
    let recent = ''; // the last bytes seen, to find `data: [DONE]` split across reads
    let settled = false;
    const finish = (r) => { if (!settled) { settled = true; resolve(r); } };
    const req = http.request({
      agent, host: target.host, port: target.port, path: target.path, method: 'POST',
      headers: { ...target.headers, 'content-length': target.body.length },
    }, (res) => {
      const parts = [];
      res.on('data', (c) => {
        const now = performance.now();
        if (ttfb === null) ttfb = now - t0;
        parts.push(c);
        if (stream && doneAt === null) {
          recent = (recent + c.toString('latin1')).slice(-64);
          if (recent.includes('data: [DONE]')) doneAt = now - t0;
        }
      });
      res.on('end', () => {
        const end = performance.now() - t0;
        const body = Buffer.concat(parts).toString('utf8');
        if (res.statusCode !== 200) return finish({ ok: false, why: `HTTP ${res.statusCode}: ${body.slice(0, 200)}` });
        if (stream) {
          if (doneAt === null || !body.endsWith('data: [DONE]\n\n')) return finish({ ok: false, why: `stream without [DONE]: ${body.slice(-200)}` });
          return finish({ ok: true, total: doneAt, ttfb });
        }
        try {
          const j = JSON.parse(body);
          if (typeof j?.choices?.[0]?.message?.content !== 'string') throw new Error('no choices[0].message.content');
        } catch (e) {
          return finish({ ok: false, why: `bad JSON answer (${e.message}): ${body.slice(0, 200)}` });
        }
        return finish({ ok: true, total: end, ttfb });
      });
      res.on('error', (e) => finish({ ok: false, why: `response: ${e.message}` }));
      res.on('aborted', () => finish({ ok: false, why: 'response aborted' }));
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer in ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', (e) => finish({ ok: false, why: `request: ${e.message}` }));
    req.end(target.body);
  });
}

/** Runs `concurrency` callers in closed loops until `maxRequests` are sent or `maxMs` has passed. */
async function runLoad(target, { concurrency, maxRequests, maxMs, stream = false, record = true }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const totals = [];
  const ttfbs = [];
  const failures = [];
  let issued = 0;
  const t0 = performance.now();
  const deadline = t0 + maxMs;
  let lastOkEnd = t0; // a failed (timed-out) request does not stretch the row's wall time
  const caller = async () => {
    while (issued < maxRequests && performance.now() < deadline) {
      issued++;
      const r = await oneRequest(agent, target, { stream });
      if (!record) continue;
      if (r.ok) {
        lastOkEnd = performance.now();
        totals.push(r.total);
        ttfbs.push(r.ttfb);
      } else {
        failures.push(r.why);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, caller));
  } finally {
    agent.destroy();
  }
  return { totals, ttfbs, failures, wallMs: lastOkEnd - t0 };
}

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function summarize(caseName, concurrency, latencies, wallMs, failures) {
  const s = [...latencies].sort((a, b) => a - b);
  return {
    caseName, concurrency, requests: s.length, failures: failures.length, firstFailure: failures[0],
    rps: s.length / (wallMs / 1000), p50: percentile(s, 0.5), p99: percentile(s, 0.99),
  };
}

// ---------------------------------------------------------------- main

async function main() {
  const m = machine();
  const started = new Date();
  requireBinary();
  const { pg } = await loadDeps();
  const model = `${modelDir()}/stories260K.gguf`;

  state.workDir = makeWorkDir('bench');
  log(`work folder ${state.workDir}`);
  const mock = await startMockProcess(state.workDir);
  log(`mock upstream pid ${mock.pid} at ${mock.baseURL}`);
  if (interrupted) return null;

  state.database = await createDatabase(pg, 'tollgate_bench');
  log(`database ${state.database.name}`);
  const env = { TOLLGATE_DATABASE_URL: state.database.url };
  await runCliOk(['migrate'], { env });
  const key = (await runCliOk(['keys', 'create', '--name', 'bench'], { env })).stdout.trim();
  if (!/^tg-/.test(key)) throw new Error(`keys create printed ${JSON.stringify(key)}, not a key`);
  if (interrupted) return null;

  const configPath = writeConfig(state.workDir, {
    databaseUrl: state.database.url, mockBaseURL: mock.baseURL, mockApiKey: mock.apiKey, modelPath: model,
  });
  state.gw = await startGateway({ configPath, workDir: state.workDir, env });
  log(`gateway pid ${state.gw.pid} at ${state.gw.url}`);
  // The same without the usage spool: what making each usage row durable before the answer's last
  // byte (an fdatasync per group of calls) costs.
  state.gwNoSpool = await startGateway({ configPath, workDir: state.workDir, env: { ...env, TOLLGATE_SPOOL_DIR: '' } });
  log(`gateway without spool pid ${state.gwNoSpool.pid} at ${state.gwNoSpool.url}`);

  const mockPort = Number(new URL(mock.url).port);
  const gwPort = state.gw.port;
  const messages = [{ role: 'user', content: 'Say hello to the benchmark.' }];
  const target = (port, auth, body) => ({
    host: '127.0.0.1', port, path: '/v1/chat/completions',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${auth}` },
    body: Buffer.from(JSON.stringify(body)),
  });
  const cases = [
    { name: 'mock direct', target: target(mockPort, mock.apiKey, { model: 'gpt-test-upstream', messages }), levels: [1, 8, 32] },
    {
      name: 'mock direct streamed', stream: true, onlyDone: true,
      target: target(mockPort, mock.apiKey, { model: 'gpt-test-upstream', messages, stream: true, stream_options: { include_usage: true } }),
      levels: [1, 8, 32],
    },
    { name: 'gateway', target: target(gwPort, key, { model: 'mock/gpt-test', messages }), levels: [1, 8, 32] },
    { name: 'gateway, no usage spool', target: target(state.gwNoSpool.port, key, { model: 'mock/gpt-test', messages }), levels: [1, 8, 32] },
    { name: 'gateway streamed', stream: true, target: target(gwPort, key, { model: 'mock/gpt-test', messages, stream: true }), levels: [1, 8, 32] },
    {
      name: 'local stories260k, max_tokens 16',
      target: target(gwPort, key, { model: 'local/stories260k', messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: 16 }),
      levels: [1, 8],
    },
  ];

  const rows = [];
  for (const c of cases) {
    for (const concurrency of c.levels) {
      if (interrupted) return null;
      if (state.gw.exited) throw new Error(`the gateway exited (${JSON.stringify(state.gw.exited)}). Log:\n${tail(state.gw.logFile)}`);
      // Warm-up: open the connections, fill caches; not measured.
      await runLoad(c.target, { concurrency, maxRequests: concurrency * 4 + 16, maxMs: 3000, stream: c.stream, record: false });
      const r = await runLoad(c.target, {
        concurrency, maxRequests: MAX_REQUESTS, maxMs: MAX_SECONDS * 1000, stream: c.stream,
      });
      if (c.onlyDone) {
        rows.push(summarize(`${c.name}, to [DONE]`, concurrency, r.totals, r.wallMs, r.failures));
      } else if (c.stream) {
        rows.push(summarize(`${c.name}, TTFB`, concurrency, r.ttfbs, r.wallMs, r.failures));
        rows.push(summarize(`${c.name}, to [DONE]`, concurrency, r.totals, r.wallMs, []));
      } else {
        rows.push(summarize(c.name, concurrency, r.totals, r.wallMs, r.failures));
      }
      const last = rows[rows.length - 1];
      log(`${c.name} x${concurrency}: ${r.totals.length} ok, ${r.failures.length} failed, p50 ${last.p50.toFixed(2)} ms`);
    }
  }
  return { m, started, rows };
}

function report({ m, started, rows }) {
  const f = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  const lines = [];
  lines.push('## Tollgate gateway load benchmark (bench/gateway_load.mjs)');
  lines.push('');
  lines.push(`date: ${started.toISOString()}`);
  lines.push(`machine: ${m.cpus} CPUs (nproc), ${m.model}; load average at start ${m.load}`);
  lines.push(`node ${process.version}; gateway ${path.relative(REPO_ROOT, TOLLGATE_BIN) || TOLLGATE_BIN} (io_threads 2); `
    + `mock upstream in its own Node process; keep-alive connections; each row: ${MAX_REQUESTS} requests or `
    + `${MAX_SECONDS} s, whichever first, after an untimed warm-up`);
  lines.push('');
  lines.push('| case | concurrency | requests | req/s | p50 ms | p99 ms |');
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    lines.push(`| ${r.caseName} | ${r.concurrency} | ${r.requests} | ${f(r.rps, 0)} | ${f(r.p50, 2)} | ${f(r.p99, 2)} |`);
  }
  lines.push('');
  const direct = rows.find((r) => r.caseName === 'mock direct' && r.concurrency === 1);
  const via = rows.find((r) => r.caseName === 'gateway' && r.concurrency === 1);
  lines.push(`gateway overhead at p50 (concurrency 1): ${f(via.p50 - direct.p50, 2)} ms`);
  const directS = rows.find((r) => r.caseName === 'mock direct streamed, to [DONE]' && r.concurrency === 1);
  const viaS = rows.find((r) => r.caseName === 'gateway streamed, to [DONE]' && r.concurrency === 1);
  lines.push(`gateway overhead at p50 (concurrency 1), streamed to [DONE] vs mock direct streamed: ${f(viaS.p50 - directS.p50, 2)} ms`);
  lines.push('(the gateway always asks its upstream for a stream, also for a non-streamed call)');
  const failed = rows.filter((r) => r.failures > 0);
  for (const r of failed) {
    lines.push(`FAILED: ${r.caseName}, concurrency ${r.concurrency}: ${r.failures} request(s), first: ${r.firstFailure.replace(/\s+/g, ' ').slice(0, 300)}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  return failed.length === 0;
}

let exitCode = 0;
try {
  const result = await main();
  if (result && !interrupted) exitCode = report(result) ? 0 : 1;
  else exitCode = 130;
} catch (e) {
  log(`failed: ${e.stack || e.message}`);
  exitCode = 1;
} finally {
  await cleanup();
}
process.exit(exitCode);
