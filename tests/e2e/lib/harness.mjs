// Shared helpers for the end-to-end tests: environment checks, a fresh database per test file,
// the tollgate CLI, a temporary config, and the gateway process (always killed by PID).
//
// Environment (set by tests/e2e/CMakeLists.txt through CTest, or by hand):
//   TOLLGATE_BIN                  the gateway binary (default: <repo>/build/bin/tollgate)
//   TOLLGATE_REPO_ROOT            the repository root (default: two levels above this folder)
//   TOLLGATE_TEST_DATABASE_URL    superuser libpq URI of a PostgreSQL server the tests may create
//                                 databases on (scripts/test.sh starts one and sets it)
//   TOLLGATE_MODEL_DIR            folder holding stories260K.gguf (default: <repo>/models, then
//                                 <repo>/../shared/models)
// Nothing here skips: a missing piece fails the test with a message saying what to do.
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { answerFor as anthropicAnswerFor } from '../mock_anthropic.mjs';
import { answerFor as geminiAnswerFor } from '../mock_gemini.mjs';
import { answerFor as openaiAnswerFor } from '../mock_openai.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const E2E_DIR = path.resolve(here, '..');
export const REPO_ROOT = path.resolve(process.env.TOLLGATE_REPO_ROOT || path.join(E2E_DIR, '..', '..'));
export const TOLLGATE_BIN = process.env.TOLLGATE_BIN || path.join(REPO_ROOT, 'build', 'bin', 'tollgate');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Imports the npm clients, failing with a clear message when `npm ci` has not been run. */
export async function loadDeps() {
  for (const dep of ['openai', '@openrouter/sdk', 'pg']) {
    if (!fs.existsSync(path.join(E2E_DIR, 'node_modules', dep, 'package.json'))) {
      throw new Error(`e2e: ${path.join(E2E_DIR, 'node_modules', dep)} is missing. `
        + `Run \`npm ci\` in ${E2E_DIR} (scripts/test.sh does this for you).`);
    }
  }
  const [{ default: OpenAI }, { OpenRouter }, orErrors, orModels, { default: pg }] = await Promise.all([
    import('openai'), import('@openrouter/sdk'), import('@openrouter/sdk/models/errors'),
    import('@openrouter/sdk/models'), import('pg'),
  ]);
  // int8 (bigint) columns come back as strings by default; our values are far below 2^53.
  pg.types.setTypeParser(20, (v) => Number(v));
  // orErrors: the SDK's typed errors (NotFoundResponseError, ResponseValidationError, ...);
  // orModels: its zod schemas (ChatStreamChunk$inboundSchema, ...), to validate raw bodies.
  return { OpenAI, OpenRouter, orErrors, orModels, pg };
}

/** The admin database URL, or a clear failure. */
export function adminDatabaseUrl() {
  const url = process.env.TOLLGATE_TEST_DATABASE_URL;
  if (!url) {
    throw new Error('e2e: TOLLGATE_TEST_DATABASE_URL is not set. It must be a superuser libpq URI, e.g. '
      + 'postgresql://postgres@127.0.0.1:PORT/postgres. scripts/test.sh starts a private PostgreSQL '
      + '(scripts/pg.sh) and sets it.');
  }
  return url;
}

export function requireBinary() {
  if (!fs.existsSync(TOLLGATE_BIN)) {
    throw new Error(`e2e: the gateway binary ${TOLLGATE_BIN} does not exist. Build it first: `
      + 'cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j"$(nproc)"');
  }
  return TOLLGATE_BIN;
}

/** Absolute path of the folder holding stories260K.gguf. */
export function modelDir() {
  const candidates = [
    process.env.TOLLGATE_MODEL_DIR,
    path.join(REPO_ROOT, 'models'),
    path.join(REPO_ROOT, '..', 'shared', 'models'),
  ].filter(Boolean);
  for (const d of candidates) {
    if (fs.existsSync(path.join(d, 'stories260K.gguf'))) return path.resolve(d);
  }
  throw new Error(`e2e: stories260K.gguf not found in ${candidates.join(', ')}. `
    + 'Set TOLLGATE_MODEL_DIR, or see README.md (Quick start) for where to get the model.');
}

/** The greedy reference for prompt "Once upon a time" (../shared/models/stories260K-reference.json). */
export function referenceFor(prompt) {
  const candidates = [
    process.env.TOLLGATE_MODEL_DIR,
    path.join(REPO_ROOT, 'models'),
    path.join(REPO_ROOT, '..', 'shared', 'models'),
  ].filter(Boolean).map((d) => path.join(d, 'stories260K-reference.json'));
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) throw new Error(`e2e: reference outputs not found in ${candidates.join(', ')}`);
  const ref = JSON.parse(fs.readFileSync(file, 'utf8'));
  const entry = ref.prompts.find((p) => p.prompt === prompt);
  if (!entry) throw new Error(`e2e: no reference for prompt ${JSON.stringify(prompt)} in ${file}`);
  const text = entry.llama_cpp_f32.text;
  if (!text.startsWith(prompt)) throw new Error('e2e: reference text does not start with its prompt');
  return {
    promptTokensWithBos: entry.prompt_ids_with_bos.length,
    generatedTokens: entry.llama_cpp_f32.generated_ids.length,
    generatedIds: entry.llama_cpp_f32.generated_ids,
    generatedText: text.slice(prompt.length), // what the model adds after the prompt
  };
}

// ---------------------------------------------------------------- processes, killed by PID

const livePids = new Set();
process.on('exit', () => {
  for (const pid of livePids) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});

/** Runs `tollgate ARGS...`; resolves {code, stdout, stderr}; never rejects on a non-zero exit. */
export function runCli(args, { env = {}, timeoutMs = 60000 } = {}) {
  const bin = requireBinary();
  return new Promise((resolve) => {
    const child = execFile(bin, args, {
      cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 << 20,
    }, (err, stdout, stderr) => {
      livePids.delete(child.pid);
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, signal: err?.signal ?? null, stdout, stderr });
    });
    livePids.add(child.pid);
  });
}

/** Runs the CLI and fails with its output unless it exits 0. */
export async function runCliOk(args, opts) {
  const r = await runCli(args, opts);
  if (r.code !== 0) {
    throw new Error(`tollgate ${args.join(' ')} exited ${r.code}${r.signal ? ` (${r.signal})` : ''}\n`
      + `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
  return r;
}

export function tail(file, lines = 60) {
  try {
    const all = fs.readFileSync(file, 'utf8').split('\n');
    return all.slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

let gatewayCount = 0;
/** The admin API's bearer token in every test gateway (billing.admin_token). */
export const ADMIN_TOKEN = 'e2e-admin-token-0123456789abcdef';

/**
 * Starts `tollgate serve --config CONFIG --listen 127.0.0.1:0 --port-file F`, waits for the port
 * file and a 200 from /healthz. The process's stdout and stderr go to `logFile`.
 * `noCoreDump`: run it with a core file size limit of 0 (`ulimit -c 0`, then exec: same PID), for
 * tests that crash it on purpose (no core file lands in the repository, the process's cwd).
 * `tlsCa`: the gateway serves HTTPS (server.tls): PEM of the CA(s) /healthz is checked against;
 * `url` is then https://.
 */
export async function startGateway({ configPath, workDir, env = {}, startTimeoutMs = 30000, noCoreDump = false, tlsCa = null }) {
  const bin = requireBinary();
  const stamp = `${Date.now()}-${++gatewayCount}`;
  const portFile = path.join(workDir, `port-${stamp}`);
  const logFile = path.join(workDir, `gateway-${stamp}.log`);
  // Each gateway process its own usage spool (one process per spool), unless the test names one
  // (a restarted gateway replays its predecessor's); and the admin API on, with a known token.
  env = { TOLLGATE_SPOOL_DIR: path.join(workDir, `spool-${stamp}`), TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN, ...env };
  const logFd = fs.openSync(logFile, 'a');
  const serveArgs = ['serve', '--config', configPath, '--listen', '127.0.0.1:0', '--port-file', portFile];
  const child = spawn(noCoreDump ? '/bin/sh' : bin, noCoreDump ? ['-c', 'ulimit -c 0 && exec "$@"', 'sh', bin, ...serveArgs] : serveArgs, {
    cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  livePids.add(child.pid);
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      livePids.delete(child.pid);
      exited = { code, signal };
      resolve(exited);
    });
  });

  const gw = {
    pid: child.pid, child, logFile, port: 0, url: '',
    get exited() { return exited; },
    /** SIGTERM (or `signal`), then SIGKILL after `graceMs`; resolves {code, signal}. */
    async stop(signal = 'SIGTERM', graceMs = 15000) {
      if (exited) return exited;
      try { process.kill(child.pid, signal); } catch { /* gone */ }
      const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
      const r = await exitPromise;
      clearTimeout(timer);
      return r;
    },
  };

  const deadline = Date.now() + startTimeoutMs;
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`tollgate serve exited early (code ${exited.code}, signal ${exited.signal}). Log:\n${tail(logFile)}`);
    }
    let text = '';
    try { text = fs.readFileSync(portFile, 'utf8').trim(); } catch { /* not yet */ }
    if (/^\d+$/.test(text)) {
      const port = Number(text);
      try {
        const status = tlsCa ? await httpsStatus(`https://127.0.0.1:${port}/healthz`, tlsCa)
          : (await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2000) })).status;
        if (status === 200) {
          gw.port = port;
          gw.url = `${tlsCa ? 'https' : 'http'}://127.0.0.1:${port}`;
          return gw;
        }
      } catch { /* not accepting yet, or a half-written port file */ }
    }
    await sleep(50);
  }
  await gw.stop('SIGKILL');
  throw new Error(`tollgate serve did not become healthy within ${startTimeoutMs} ms `
    + `(port file ${portFile}). Log:\n${tail(logFile)}`);
}

/** The status of a GET over HTTPS trusting only `ca` (PEM). */
function httpsStatus(url, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- database

/** Runs scripts/pg.sh (a private cluster of a test's own); resolves its stdout (the URI for start),
 * rejects with its stderr on failure. */
export function pgSh(args, timeoutMs = 90000) {
  return new Promise((resolve, reject) => {
    execFile(path.join(REPO_ROOT, 'scripts', 'pg.sh'), args, { cwd: REPO_ROOT, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`scripts/pg.sh ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** Creates database `name` on the cluster of superuser URI `adminUrl`; resolves the new database's URI. */
export async function createDatabaseAt(pg, adminUrl, name) {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  await c.query(`CREATE DATABASE "${name}"`);
  await c.end();
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Creates a fresh database on the test server; returns {name, url, drop()}. */
export async function createDatabase(pg, prefix = 'tollgate_e2e') {
  const admin = adminDatabaseUrl();
  const name = `${prefix}_${process.pid}_${Date.now().toString(36)}`;
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE "${name}"`);
  } finally {
    await c.end();
  }
  const u = new URL(admin);
  u.pathname = `/${name}`;
  return {
    name,
    url: u.toString(),
    async drop() {
      const d = new pg.Client({ connectionString: admin });
      await d.connect();
      try {
        await d.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await d.end();
      }
    },
  };
}

/** Polls `fn` until it returns a truthy value; returns it, or throws after `timeoutMs`. */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastErr;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`
    + (lastErr ? `; last error: ${lastErr.message}` : `; last value: ${JSON.stringify(last)}`));
}

/** The usage_events row of one request id, waiting for the write-behind flush. */
export function usageRow(db, requestId, { timeoutMs = 5000 } = {}) {
  return waitFor(async () => {
    const r = await db.query('SELECT * FROM usage_events WHERE request_id = $1', [requestId]);
    return r.rows[0];
  }, { timeoutMs, what: `usage_events row ${requestId}` });
}

// ---------------------------------------------------------------- config

/** Prices in USD per million tokens, as the config takes them, and in nano-USD per token. */
export const MOCK_PRICE = { prompt: '1.00', completion: '2.00', promptNano: 1000, completionNano: 2000 };
export const LOCAL_PRICE = { prompt: '0.01', completion: '0.02', promptNano: 10, completionNano: 20 };

/** Writes a config for the test gateway; returns its path. */
export function writeConfig(workDir, {
  databaseUrl, mockBaseURL, mockApiKey, modelPath, maxBodyBytes = 65536, flushIntervalMs = 50, batchSize = 64,
  requestTimeoutMs = 60000,
}) {
  const q = (s) => JSON.stringify(String(s)); // a JSON string is a valid YAML double-quoted scalar
  const mockModel = (id, upstream, name) => `  - id: ${q(id)}
    name: ${q(name)}
    context_length: 8192
    endpoint:
      provider: mock
      model: ${q(upstream)}
      pricing: {prompt: ${q(MOCK_PRICE.prompt)}, completion: ${q(MOCK_PRICE.completion)}}
`;
  const yaml = `# Written by tests/e2e/lib/harness.mjs for one test run.
server:
  listen: "127.0.0.1:0"
  io_threads: 2
  max_body_bytes: ${maxBodyBytes}
  request_timeout_ms: ${requestTimeoutMs}

database:
  url: ${q(databaseUrl)}

usage:
  flush_interval_ms: ${flushIntervalMs}
  batch_size: ${batchSize}
  spool_dir: "\${TOLLGATE_SPOOL_DIR:-}"

billing:
  admin_token: "\${TOLLGATE_ADMIN_TOKEN:-}"

providers:
  local:
    type: local
    display_name: Local
  mock:
    type: openai_compatible
    display_name: Mock Upstream
    base_url: ${q(mockBaseURL)}
    api_key: ${q(mockApiKey)}

models:
${mockModel('mock/gpt-test', 'gpt-test-upstream', 'Mock: GPT Test')}${mockModel('mock/error-401', 'mock-error-401', 'Mock: upstream 401')}${mockModel('mock/error-429', 'mock-error-429', 'Mock: upstream 429')}${mockModel('mock/error-500', 'mock-error-500', 'Mock: upstream 500')}${mockModel('mock/midstream-error', 'mock-midstream-error', 'Mock: error mid-stream')}${mockModel('mock/no-usage', 'mock-no-usage', 'Mock: no usage in streams')}${mockModel('mock/slow', 'mock-slow', 'Mock: slow stream')}  - id: "local/stories260k"
    name: "Local: stories260K"
    endpoint:
      provider: local
      model: ${q(modelPath)}
      pricing: {prompt: ${q(LOCAL_PRICE.prompt)}, completion: ${q(LOCAL_PRICE.completion)}}
`;
  const file = path.join(workDir, 'tollgate.yaml');
  fs.writeFileSync(file, yaml);
  return file;
}

export function makeWorkDir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tollgate-${tag}-`));
}

/** Cost in USD as the API reports it, from nano-USD (exact integer arithmetic, one division). */
export const usd = (nano) => nano / 1e9;

/**
 * Asserts the error shape {error: {message, type, code, param}}. With `flavor`, also the `code`:
 *   'openai'      (served under /v1)     a string or null, as OpenAI sends it
 *   'openrouter'  (served under /api/v1) the integer HTTP status (`status`, required then), as
 *                 OpenRouter sends it and @openrouter/sdk requires; error.metadata, when present,
 *                 is an object whose `reason`, when present, is a string
 * The flavor follows from the path: `errorFlavor(path)`.
 */
export function assertErrorShape(assert, body, where = '', { flavor = null, status = null } = {}) {
  assert.ok(body && typeof body === 'object' && body.error && typeof body.error === 'object',
    `${where} error body must be {"error": {...}}, got ${JSON.stringify(body)}`);
  for (const k of ['message', 'type', 'code', 'param']) {
    assert.ok(k in body.error, `${where} error.${k} missing in ${JSON.stringify(body)}`);
  }
  assert.equal(typeof body.error.message, 'string', `${where} error.message must be a string`);
  assert.ok(body.error.message.length > 0, `${where} error.message must not be empty`);
  assert.equal(typeof body.error.type, 'string', `${where} error.type must be a string`);
  assert.ok(body.error.param === null || typeof body.error.param === 'string', `${where} error.param must be a string or null`);
  const code = JSON.stringify(body.error.code);
  if (flavor === 'openai') {
    assert.ok(body.error.code === null || typeof body.error.code === 'string',
      `${where} under /v1 error.code must be OpenAI's string or null, got ${code}`);
  } else if (flavor === 'openrouter') {
    assert.ok(Number.isInteger(status), `${where}: assertErrorShape needs the HTTP status for the openrouter flavor`);
    assert.equal(body.error.code, status, `${where} under /api/v1 error.code must be the integer HTTP status ${status}, got ${code}`);
    const md = body.error.metadata;
    if (md !== undefined && md !== null) {
      assert.equal(typeof md, 'object', `${where} error.metadata must be an object`);
      assert.ok(md.reason === undefined || typeof md.reason === 'string', `${where} error.metadata.reason must be a string`);
    }
  } else {
    assert.equal(flavor, null, `${where}: unknown error flavor ${flavor}`);
  }
}

/** Which error flavor a path is served in: 'openrouter' under /api/, else 'openai'. */
export function errorFlavor(p) {
  return new URL(p, 'http://x').pathname.startsWith('/api/') ? 'openrouter' : 'openai';
}

/** Reads an SSE body into its `data:` payloads (strings), checking the framing strictly. */
export function parseSse(text) {
  assert_(text.endsWith('\n\n'), `SSE body must end with a blank line, ends with ${JSON.stringify(text.slice(-20))}`);
  const events = text.split('\n\n').slice(0, -1);
  const data = [];
  for (const ev of events) {
    const lines = ev.split('\n').filter((l) => !l.startsWith(':')); // comments (keep-alives) are allowed
    if (lines.length === 0) continue;
    const payload = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
    data.push(payload);
  }
  return data;
}

function assert_(cond, msg) {
  if (!cond) throw new Error(msg);
}

// ---------------------------------------------------------------- several upstream kinds
//
// What the SDK test files (test/providers.test.mjs, test/anthropic_api.test.mjs) share: the
// @anthropic-ai/sdk import, a config writer for any set of providers and models, exact prices, the
// local model's vocabulary (exact token counts for cut and stopped generations), named SSE events,
// and a stack that starts a database, mocks and one gateway and always stops them by PID.

/** Imports @anthropic-ai/sdk, failing with a clear message when `npm ci` has not been run. */
export async function loadAnthropicSdk() {
  const dir = path.join(E2E_DIR, 'node_modules', '@anthropic-ai', 'sdk');
  if (!fs.existsSync(path.join(dir, 'package.json'))) {
    throw new Error(`e2e: ${dir} is missing. Run \`npm ci\` in ${E2E_DIR} (scripts/test.sh does this for you).`);
  }
  const mod = await import('@anthropic-ai/sdk');
  return { Anthropic: mod.default, AnthropicErrors: mod };
}

/**
 * Writes a gateway config with any providers and models; returns its path.
 *   providers: { id: { type, preset?, display_name?, base_url?, api_key?, ...other keys } }
 *   models:    [{ id, name?, context_length?, routing?, endpoints: [{ provider, model, pricing: { prompt,
 *               completion, cached_prompt?, cache_write? } (USD per million tokens, strings), ...other keys }] }]
 *   routing:   the top-level `routing:` mapping, or undefined for none
 *   billing:   more `billing:` settings besides admin_token ({lease_idle_return_ms: 500, ...}), as JSON values
 * Keys beyond those named (a provider's context_length, an endpoint's id, max_concurrency, data_policy,
 * a pricing's tiers, a model's routing) are written as JSON flow values, which YAML reads as they are.
 */
export function writeGatewayConfig(workDir, {
  databaseUrl, providers, models, maxBodyBytes = 1 << 20, flushIntervalMs = 50, batchSize = 64,
  requestTimeoutMs = 60000, ioThreads = 2, file = 'tollgate.yaml', routing, answerAfterSpool = true, billing = {},
}) {
  const q = (s) => JSON.stringify(String(s));
  let yaml = `# Written by tests/e2e/lib/harness.mjs (writeGatewayConfig) for one test run.
server:
  listen: "127.0.0.1:0"
  io_threads: ${ioThreads}
  max_body_bytes: ${maxBodyBytes}
  request_timeout_ms: ${requestTimeoutMs}

database:
  url: ${q(databaseUrl)}

usage:
  flush_interval_ms: ${flushIntervalMs}
  batch_size: ${batchSize}
  spool_dir: "\${TOLLGATE_SPOOL_DIR:-}"
  answer_after_spool: ${answerAfterSpool}

billing:
  admin_token: "\${TOLLGATE_ADMIN_TOKEN:-}"
${Object.entries(billing).map(([k, v]) => `  ${k}: ${JSON.stringify(v)}\n`).join('')}
providers:
`;
  for (const [id, p] of Object.entries(providers)) {
    yaml += `  ${id}:\n`;
    for (const k of ['type', 'preset', 'display_name', 'base_url', 'api_key']) {
      if (p[k] !== undefined) yaml += `    ${k}: ${q(p[k])}\n`;
    }
    for (const [k, v] of Object.entries(p)) {
      if (!['type', 'preset', 'display_name', 'base_url', 'api_key'].includes(k) && v !== undefined) yaml += `    ${k}: ${JSON.stringify(v)}\n`;
    }
  }
  if (routing !== undefined) yaml += `\nrouting: ${JSON.stringify(routing)}\n`;
  yaml += '\nmodels:\n';
  for (const m of models) {
    yaml += `  - id: ${q(m.id)}\n`;
    if (m.name !== undefined) yaml += `    name: ${q(m.name)}\n`;
    if (m.context_length !== undefined) yaml += `    context_length: ${m.context_length}\n`;
    if (m.routing !== undefined) yaml += `    routing: ${JSON.stringify(m.routing)}\n`;
    yaml += '    endpoints:\n';
    for (const e of m.endpoints) {
      const pr = Object.entries(e.pricing).map(([k, v]) => `${k}: ${v !== null && typeof v === 'object' ? JSON.stringify(v) : q(v)}`).join(', ');
      yaml += `      - provider: ${q(e.provider)}\n        model: ${q(e.model)}\n        pricing: {${pr}}\n`;
      for (const [k, v] of Object.entries(e)) {
        if (!['provider', 'model', 'pricing'].includes(k) && v !== undefined) yaml += `        ${k}: ${JSON.stringify(v)}\n`;
      }
    }
  }
  const out = path.join(workDir, file);
  fs.writeFileSync(out, yaml);
  return out;
}

/** A price in USD per million tokens ("0.30") as BigInt femto-USD per token (= nano-USD per million). */
function femtoPerToken(usdPerMillion) {
  const m = /^(\d+)(?:\.(\d{1,9}))?$/.exec(String(usdPerMillion));
  if (!m) throw new Error(`e2e: bad price ${usdPerMillion}`);
  return BigInt(m[1]) * 1_000_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/**
 * The exact cost in nano-USD of a call, as core/money.hpp defines it: cache reads at cached_prompt,
 * cache writes at cache_write (both default to prompt), the rest of the prompt at prompt,
 * completion at completion; rounded half up to whole nano-USD. `pricing` is a config pricing
 * object (USD per million tokens); `usage` {prompt, completion, cached?, cacheWrite?}.
 */
export function costNano(pricing, { prompt, completion, cached = 0, cacheWrite = 0 }) {
  const p = femtoPerToken(pricing.prompt);
  const c = femtoPerToken(pricing.completion);
  const cr = pricing.cached_prompt !== undefined ? femtoPerToken(pricing.cached_prompt) : p;
  const cw = pricing.cache_write !== undefined ? femtoPerToken(pricing.cache_write) : p;
  const femto = BigInt(prompt - cached - cacheWrite) * p + BigInt(cached) * cr + BigInt(cacheWrite) * cw
    + BigInt(completion) * c;
  return Number((femto + 500_000n) / 1_000_000n);
}

/** GGUF metadata (key -> value) of a model file; arrays of strings and scalars only as needed. */
function readGgufMetadata(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, 4) !== 'GGUF') throw new Error(`e2e: ${file} is not a GGUF file`);
  let off = 8; // magic, version
  const u32 = () => { const v = buf.readUInt32LE(off); off += 4; return v; };
  const u64 = () => { const v = Number(buf.readBigUInt64LE(off)); off += 8; return v; };
  const str = () => { const n = u64(); const s = buf.toString('utf8', off, off + n); off += n; return s; };
  const SIZE = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const value = (type) => {
    if (type === 8) return str();
    if (type === 9) {
      const et = u32();
      const n = u64();
      const out = [];
      for (let i = 0; i < n; i++) out.push(value(et));
      return out;
    }
    if (!SIZE[type]) throw new Error(`e2e: GGUF value type ${type} in ${file}`);
    const v = type === 4 ? buf.readUInt32LE(off) : type === 5 ? buf.readInt32LE(off) : type === 7 ? buf[off] !== 0 : null;
    off += SIZE[type];
    return v;
  };
  u64(); // tensor count
  const n = u64();
  const meta = {};
  for (let i = 0; i < n; i++) {
    const key = str();
    meta[key] = value(u32());
  }
  return meta;
}

/**
 * The local model's greedy generation for `prompt` (the reference), token by token, from the
 * model file's own vocabulary: generated(maxTokens) and stopped(stop) give the exact text, token
 * count and finish reason the engine must report (local_provider.cpp: a token that completes a
 * stop string is counted; the stop string and what follows are cut).
 */
export function localGeneration(prompt) {
  const ref = referenceFor(prompt);
  const meta = readGgufMetadata(path.join(modelDir(), 'stories260K.gguf'));
  const tokens = meta['tokenizer.ggml.tokens'];
  const piece = (id) => {
    const byte = /^<0x([0-9A-F]{2})>$/.exec(tokens[id]);
    return byte ? String.fromCharCode(parseInt(byte[1], 16)) : tokens[id].replaceAll('\u2581', ' ');
  };
  const file = [process.env.TOLLGATE_MODEL_DIR, path.join(REPO_ROOT, 'models'), path.join(REPO_ROOT, '..', 'shared', 'models')]
    .filter(Boolean).map((d) => path.join(d, 'stories260K-reference.json')).find((f) => fs.existsSync(f));
  const entry = JSON.parse(fs.readFileSync(file, 'utf8')).prompts.find((p) => p.prompt === prompt);
  const pieces = entry.llama_cpp_f32.generated_ids.map(piece);
  if (pieces.join('') !== ref.generatedText) throw new Error('e2e: the vocabulary does not reproduce the reference text');
  return {
    promptTokens: ref.promptTokensWithBos,
    pieces,
    text: ref.generatedText,
    generated(maxTokens) {
      if (maxTokens > pieces.length) throw new Error(`e2e: the reference has only ${pieces.length} tokens`);
      return { text: pieces.slice(0, maxTokens).join(''), completionTokens: maxTokens, finish: 'length' };
    },
    stopped(stop) {
      let text = '';
      for (let i = 0; i < pieces.length; i++) {
        text += pieces[i];
        const at = text.indexOf(stop);
        if (at >= 0) return { text: text.slice(0, at), completionTokens: i + 1, finish: 'stop' };
      }
      throw new Error(`e2e: ${JSON.stringify(stop)} does not occur in the reference`);
    },
  };
}

/** Reads an SSE body into [{event, data}] (event null when unnamed), checking the framing strictly. */
export function parseSseEvents(text) {
  const body = text.replaceAll('\r\n', '\n');
  assert_(body.endsWith('\n\n'), `SSE body must end with a blank line, ends with ${JSON.stringify(body.slice(-20))}`);
  const out = [];
  for (const block of body.split('\n\n').slice(0, -1)) {
    const lines = block.split('\n').filter((l) => !l.startsWith(':'));
    if (lines.length === 0) continue;
    let event = null;
    const data = [];
    for (const l of lines) {
      if (l.startsWith('event:')) event = l.slice(6).trim();
      else if (l.startsWith('data:')) data.push(l.slice(5).replace(/^ /, ''));
      else throw new Error(`e2e: unexpected SSE line ${JSON.stringify(l)}`);
    }
    out.push({ event, data: data.join('\n') });
  }
  return out;
}

/** Waits `ms` for the write-behind flush, then resolves the rows of `requestId` (normally none). */
export async function usageRowsAfter(db, requestId, ms = 400) {
  await sleep(ms);
  return (await db.query('SELECT * FROM usage_events WHERE request_id = $1', [requestId])).rows;
}

/**
 * One database, the mocks and one gateway for a test file, stopped by stop() whatever happened:
 *   const stack = createStack('tag');
 *   before(() => stack.start({ pg, mocks: { openai: () => startMockOpenAI() }, keys: ['main'],
 *                              config: (mocks, databaseUrl) => ({ providers, models }) }));
 *   after(() => stack.stop());
 * Then stack.gw (the gateway), stack.db (a pg.Client on its database), stack.keys.main,
 * stack.mocks.openai, stack.env.
 */
export function createStack(tag) {
  const stack = {
    workDir: null, database: null, gw: null, db: null, mocks: {}, keys: {}, env: {}, stopped: null,
    async start({ pg, mocks = {}, keys = ['main'], config, gatewayEnv = {} }) {
      stack.workDir = makeWorkDir(tag);
      for (const [name, start] of Object.entries(mocks)) stack.mocks[name] = await start();
      stack.database = await createDatabase(pg, `tollgate_${tag.replace(/[^a-z0-9_]/gi, '_')}`);
      stack.env = { TOLLGATE_DATABASE_URL: stack.database.url };
      await runCliOk(['migrate'], { env: stack.env });
      for (const k of keys) {
        stack.keys[k] = (await runCliOk(['keys', 'create', '--name', `${tag}-${k}`], { env: stack.env })).stdout.trim();
      }
      stack.db = new pg.Client({ connectionString: stack.database.url });
      await stack.db.connect();
      const { providers, models, ...options } = config(stack.mocks, stack.database.url);
      const configPath = writeGatewayConfig(stack.workDir, { databaseUrl: stack.database.url, providers, models, ...options });
      stack.gw = await startGateway({ configPath, workDir: stack.workDir, env: { ...stack.env, ...gatewayEnv } });
      return stack;
    },
    async stop({ logLines = 60 } = {}) {
      if (stack.gw) stack.stopped = await stack.gw.stop('SIGTERM');
      for (const m of Object.values(stack.mocks)) await m.close().catch(() => {});
      if (stack.db) await stack.db.end().catch(() => {});
      if (stack.database) {
        await stack.database.drop().catch((e) => console.error(`e2e: could not drop ${stack.database.name}: ${e.message}`));
      }
      if (stack.gw) {
        console.error(`--- gateway log (${stack.gw.logFile}), exit ${JSON.stringify(stack.stopped)} ---\n${tail(stack.gw.logFile, logLines)}`);
      }
      if (stack.workDir) fs.rmSync(stack.workDir, { recursive: true, force: true });
    },
  };
  return stack;
}

// ---------------------------------------------------------------- the upstream matrix
//
// One gateway serving every kind of model the SDK test files drive: the local model, a mock
// OpenAI-compatible upstream through preset `openai` and through preset `deepseek` (base_url
// pointed at the mock), a mock Anthropic upstream and a mock Gemini upstream. Model ids are
// KIND/SCENARIO ("anthropic/mock-tools"); the upstream model is the scenario's magic name
// (mock_openai.mjs), or KIND-test-upstream for "KIND/default". Prices (USD per million tokens)
// differ per kind and are whole nano-USD per token, so every cost is exact.

export const MATRIX_KINDS = ['openai', 'deepseek', 'anthropic', 'gemini'];
export const MATRIX_PRICES = {
  local: { prompt: '0.01', completion: '0.02' },
  openai: { prompt: '1.00', completion: '2.00', cached_prompt: '0.50' },
  deepseek: { prompt: '0.25', completion: '1.10', cached_prompt: '0.07' },
  anthropic: { prompt: '3', completion: '15', cached_prompt: '0.30', cache_write: '3.75' },
  gemini: { prompt: '0.30', completion: '2.50', cached_prompt: '0.03' },
};
/** The display names usage rows and answers carry (the presets' own for openai and deepseek). */
export const MATRIX_PROVIDER_NAMES = {
  local: 'Local', openai: 'OpenAI', deepseek: 'DeepSeek', anthropic: 'Anthropic', gemini: 'Google AI Studio',
};
export const MATRIX_SCENARIOS = [
  'default', 'mock-tools', 'mock-parallel-tools', 'mock-tool-no-args', 'mock-reasoning', 'mock-json', 'mock-stop',
  'mock-length', 'mock-image', 'mock-cjk', 'mock-cache', 'mock-error-400', 'mock-error-401', 'mock-error-429',
  'mock-error-500', 'mock-error-529', 'mock-truncated', 'mock-midstream-error',
];
export const LOCAL_MODEL = 'local/stories260k';

/** The upstream model name of a matrix model id ("gemini/mock-json" -> "mock-json"). */
export function matrixUpstreamModel(id) {
  const [kind, scenario] = id.split('/');
  return scenario === 'default' ? `${kind}-test-upstream` : scenario;
}

/**
 * The config (providers and models) of the matrix for started mocks {openai, anthropic, gemini}.
 * `extraModels` are appended as they are (e.g. models with several endpoints).
 */
export function matrixConfig({ openai, anthropic, gemini }, { extraModels = [] } = {}) {
  const providers = {
    local: { type: 'local', display_name: MATRIX_PROVIDER_NAMES.local },
    openai: { type: 'openai_compatible', preset: 'openai', base_url: openai.baseURL, api_key: openai.apiKey },
    deepseek: { type: 'openai_compatible', preset: 'deepseek', base_url: openai.baseURL, api_key: openai.apiKey },
    anthropic: { type: 'anthropic', display_name: MATRIX_PROVIDER_NAMES.anthropic, base_url: anthropic.baseURL, api_key: anthropic.apiKey },
    gemini: { type: 'gemini', display_name: MATRIX_PROVIDER_NAMES.gemini, base_url: gemini.baseURL, api_key: gemini.apiKey },
  };
  const models = [{
    id: LOCAL_MODEL,
    name: 'Local: stories260K',
    endpoints: [{ provider: 'local', model: path.join(modelDir(), 'stories260K.gguf'), pricing: MATRIX_PRICES.local }],
  }];
  for (const kind of MATRIX_KINDS) {
    for (const scenario of MATRIX_SCENARIOS) {
      const id = `${kind}/${scenario}`;
      models.push({
        id, name: `Matrix: ${id}`, context_length: 65536,
        endpoints: [{ provider: kind, model: matrixUpstreamModel(id), pricing: MATRIX_PRICES[kind] }],
      });
    }
  }
  return { providers, models: [...models, ...extraModels] };
}

// ---------------------------------------------------------------- what the mock upstreams saw and reported

/** The mock a kind of upstream runs on (DeepSeek's preset talks to the OpenAI mock). */
export const mockOf = (stack, kind) => stack.mocks[kind === 'deepseek' ? 'openai' : kind];

/** The one upstream request of `kind` whose body carries `word`. */
export function upstreamRequest(stack, kind, word) {
  const hits = mockOf(stack, kind).requests.filter((r) => r.rawBody.includes(word));
  if (hits.length !== 1) throw new Error(`${kind}: exactly one upstream request carries ${word}, got ${hits.length}`);
  return hits[0];
}

/** What the upstream reported for request record `rec`, as the gateway must bill it (OpenAI semantics:
 * prompt includes cache reads and writes, completion includes reasoning). */
export function reportedUsage(kind, rec) {
  if (kind === 'openai' || kind === 'deepseek') {
    const u = openaiAnswerFor(rec.body).usage;
    return {
      prompt: u.prompt_tokens, completion: u.completion_tokens, cached: u.prompt_tokens_details.cached_tokens,
      cacheWrite: 0, reasoning: u.completion_tokens_details.reasoning_tokens,
    };
  }
  if (kind === 'anthropic') {
    const u = anthropicAnswerFor(rec.body).usage;
    return {
      prompt: u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens, completion: u.output_tokens,
      cached: u.cache_read_input_tokens, cacheWrite: u.cache_creation_input_tokens, reasoning: 0,
    };
  }
  const u = geminiAnswerFor(rec.body, rec.model).usageMetadata;
  return {
    prompt: u.promptTokenCount, completion: (u.candidatesTokenCount ?? 0) + (u.thoughtsTokenCount ?? 0),
    cached: u.cachedContentTokenCount ?? 0, cacheWrite: 0, reasoning: u.thoughtsTokenCount ?? 0,
  };
}

/** Checks the usage row of call `id` of a createStack() gateway field by field against the matrix prices. */
export async function checkUsageRow(stack, id, { model, kind, u, streamed, finish = 'stop', status = 200, estimated = false, errorCode = null }) {
  const row = await usageRow(stack.db, id);
  const got = {
    model: row.model, provider: row.provider, upstream_model: row.upstream_model, prompt_tokens: row.prompt_tokens,
    completion_tokens: row.completion_tokens, cached_tokens: row.cached_tokens, reasoning_tokens: row.reasoning_tokens,
    cache_write_tokens: row.cache_write_tokens, cost_nano_usd: row.cost_nano_usd, status: row.status, streamed: row.streamed,
    finish_reason: row.finish_reason, usage_estimated: row.usage_estimated, error_code: row.error_code,
  };
  assert.deepStrictEqual(got, {
    model, provider: MATRIX_PROVIDER_NAMES[kind],
    upstream_model: kind === 'local' ? path.join(modelDir(), 'stories260K.gguf') : matrixUpstreamModel(model),
    prompt_tokens: u.prompt, completion_tokens: u.completion, cached_tokens: u.cached ?? 0, reasoning_tokens: u.reasoning ?? 0,
    cache_write_tokens: u.cacheWrite ?? 0, cost_nano_usd: costNano(MATRIX_PRICES[kind], u), status, streamed,
    finish_reason: finish, usage_estimated: estimated, error_code: errorCode,
  }, `usage row of ${id} (${model})`);
}
