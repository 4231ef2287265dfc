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
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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

/**
 * Starts `tollgate serve --config CONFIG --listen 127.0.0.1:0 --port-file F`, waits for the port
 * file and a 200 from /healthz. The process's stdout and stderr go to `logFile`.
 */
export async function startGateway({ configPath, workDir, env = {}, startTimeoutMs = 30000 }) {
  const bin = requireBinary();
  const portFile = path.join(workDir, `port-${Date.now()}`);
  const logFile = path.join(workDir, `gateway-${Date.now()}.log`);
  const logFd = fs.openSync(logFile, 'a');
  const child = spawn(bin, ['serve', '--config', configPath, '--listen', '127.0.0.1:0', '--port-file', portFile], {
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
        const r = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2000) });
        if (r.status === 200) {
          gw.port = port;
          gw.url = `http://127.0.0.1:${port}`;
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

// ---------------------------------------------------------------- database

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
