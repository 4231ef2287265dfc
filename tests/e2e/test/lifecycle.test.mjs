// Operations (issue 13): config reload on SIGHUP and POST /admin/v1/reload (catalog, prices, limits, TLS
// certificate) without dropping the calls in flight, a bad config refused with the old one kept,
// SIGTERM turning /readyz to 503 at once, the request limits answered in the caller's shape with
// the right status while the process keeps serving, and TLS on the listener.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  ADMIN_TOKEN, adminDatabaseUrl, createDatabase, loadDeps, makeWorkDir, modelDir, parseSse, requireBinary,
  runCliOk, sleep, startGateway, tail, waitFor, writeConfig,
} from '../lib/harness.mjs';
import { startMockOpenAI } from '../mock_openai.mjs';

const { pg } = await loadDeps();
adminDatabaseUrl();
requireBinary();

/** One raw HTTP/1.1 exchange on a new socket: writes `text`, returns {status, headers, body} or null when closed unanswered. */
function rawExchange(port, text, { timeoutMs = 10000, host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    let data = '';
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no answer in ${timeoutMs} ms`)); }, timeoutMs);
    socket.on('connect', () => { if (text) socket.write(text); });
    socket.on('data', (d) => { data += d.toString('utf8'); });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      if (!data) return resolve(null);
      const [head, ...rest] = data.split('\r\n\r\n');
      const [statusLine, ...lines] = head.split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') });
    });
  });
}

function assertOpenAiError(r, status, pattern) {
  assert.ok(r, 'the connection closed without an answer');
  assert.equal(r.status, status, r.body);
  const body = JSON.parse(r.body);
  assert.equal(typeof body.error?.message, 'string', r.body);
  assert.match(body.error.message, pattern);
  return body;
}

const chatBody = (extra = {}) => JSON.stringify({ model: 'mock/gpt-test', messages: [{ role: 'user', content: 'hi' }], ...extra });

describe('config reload, drain, limits and TLS', { timeout: 240000 }, () => {
  let workDir;
  let database;
  let mock;
  let key;
  let baseConfig;
  const gateways = [];
  const env = () => ({ TOLLGATE_DATABASE_URL: database.url });

  before(async () => {
    workDir = makeWorkDir('e2e-lifecycle');
    mock = await startMockOpenAI({ slowPieceMs: 20 });
    database = await createDatabase(pg, 'tollgate_e2e_lifecycle');
    await runCliOk(['migrate'], { env: env() });
    key = (await runCliOk(['keys', 'create', '--name', 'lifecycle'], { env: env() })).stdout.trim();
    baseConfig = fs.readFileSync(writeConfig(workDir, {
      databaseUrl: database.url, mockBaseURL: mock.baseURL, mockApiKey: mock.apiKey,
      modelPath: `${modelDir()}/stories260K.gguf`,
    }), 'utf8');
  });

  after(async () => {
    for (const gw of gateways) {
      const r = await gw.stop('SIGKILL', 1000);
      if (process.env.E2E_VERBOSE) console.error(`--- ${gw.logFile}, exit ${JSON.stringify(r)} ---\n${tail(gw.logFile, 40)}`);
    }
    if (mock) await mock.close();
    if (database) await database.drop().catch((e) => console.error(`e2e: could not drop ${database.name}: ${e.message}`));
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  const start = async (file, yaml, opts = {}) => {
    const configPath = path.join(workDir, file);
    fs.writeFileSync(configPath, yaml);
    const gw = await startGateway({ configPath, workDir, env: env(), ...opts });
    gateways.push(gw);
    return { gw, configPath };
  };
  const call = (gw, body, headers = {}) => fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST', body, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
  });
  const modelIds = async (gw) => (await (await fetch(`${gw.url}/v1/models`)).json()).data.map((m) => m.id);
  const metric = async (gw, line) => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    const found = text.split('\n').find((l) => l.startsWith(line));
    return found === undefined ? undefined : Number(found.slice(line.length).trim());
  };

  test('SIGHUP and POST /admin/v1/reload swap the catalog and prices; calls in flight finish; a bad config is refused', async () => {
    const { gw, configPath } = await start('reload.yaml', baseConfig);
    assert.ok(!(await modelIds(gw)).includes('mock/added'));

    // A stream running across the reloads below (200 pieces, 20 ms apart: about 4 s).
    const slow = call(gw, JSON.stringify({ model: 'mock/slow', stream: true, messages: [{ role: 'user', content: 'x' }] }))
      .then(async (r) => ({ status: r.status, text: await r.text() }));
    await sleep(300);

    // 1. SIGHUP: a new model, and gpt-test's prompt price from 1.00 to 3.00 USD per million.
    const added = baseConfig.replace('models:\n', `models:
  - id: "mock/added"
    endpoint: {provider: mock, model: "gpt-test-upstream", pricing: {prompt: "5.00", completion: "6.00"}}
`).replace('pricing: {prompt: "1.00", completion: "2.00"}', 'pricing: {prompt: "3.00", completion: "2.00"}');
    assert.notEqual(added, baseConfig);
    fs.writeFileSync(configPath, added);
    process.kill(gw.pid, 'SIGHUP');
    await waitFor(async () => (await modelIds(gw)).includes('mock/added'), { timeoutMs: 10000, what: 'the reloaded catalog' });
    const priced = (await (await fetch(`${gw.url}/v1/models`)).json()).data.find((m) => m.id === 'mock/gpt-test');
    assert.equal(priced.pricing.prompt, '0.000003');
    const r1 = await call(gw, chatBody({ model: 'mock/added' }));
    assert.equal(r1.status, 200, await r1.clone().text());
    assert.equal(await metric(gw, 'tollgate_config_reloads_total{result="success"}'), 1);

    // 2. A bad file: refused over the admin API (422, the bad setting named), the running config kept.
    fs.writeFileSync(configPath, added.replace('pricing: {prompt: "5.00"', 'pricing: {prompt: "five"'));
    const refused = await fetch(`${gw.url}/admin/v1/reload`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(refused.status, 422);
    const refusedBody = await refused.json();
    assert.match(refusedBody.error.message, /models\[0\]\.endpoint\.pricing\.prompt/);
    assert.ok((await modelIds(gw)).includes('mock/added'));
    // ... and on SIGHUP: logged, counted, the process alive.
    process.kill(gw.pid, 'SIGHUP');
    await waitFor(async () => (await metric(gw, 'tollgate_config_reloads_total{result="failure"}')) === 2,
      { timeoutMs: 10000, what: 'the second refused reload' });
    assert.equal(await metric(gw, 'tollgate_config_last_reload_successful'), 0);
    assert.match(fs.readFileSync(gw.logFile, 'utf8'), /config reload refused; the running config stays: .*pricing\.prompt/);
    assert.equal(gw.exited, null);
    const unauthorized = await fetch(`${gw.url}/admin/v1/reload`, { method: 'POST' });
    assert.equal(unauthorized.status, 401);

    // 3. Back to the first file over the admin API: mock/added is gone, limits from the file apply.
    fs.writeFileSync(configPath, baseConfig.replace('max_body_bytes: 65536', 'max_body_bytes: 2048'));
    const ok = await fetch(`${gw.url}/admin/v1/reload`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(ok.status, 200);
    const okBody = await ok.json();
    assert.equal(okBody.data.status, 'reloaded');
    assert.ok(okBody.data.models >= 1);
    assert.ok(!(await modelIds(gw)).includes('mock/added'));
    const big = await call(gw, chatBody({ messages: [{ role: 'user', content: 'x'.repeat(4096) }] }));
    assert.equal(big.status, 413);
    assert.match((await big.json()).error.message, /larger than 2048 bytes/);

    // The stream that ran through all three reloads ended whole.
    const s = await slow;
    assert.equal(s.status, 200);
    const events = parseSse(s.text);
    assert.equal(events.at(-1), '[DONE]', s.text.slice(-300));
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    assert.equal(chunks.filter((c) => c.choices?.[0]?.finish_reason === 'stop').length, 1);
    assert.ok(!chunks.some((c) => c.error), 'no error event');
    assert.equal(chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('').split(' w').length - 1, 200);
  });

  test('SIGTERM: /readyz answers 503 at once on an open connection, the call in flight finishes, exit 0', async () => {
    const { gw } = await start('drain.yaml', baseConfig);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const readyz = () => new Promise((resolve, reject) => {
      http.get(`${gw.url}/readyz`, { agent }, (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode, body }));
      }).on('error', reject);
    });
    assert.equal((await readyz()).status, 200);  // opens the kept-alive connection
    const slow = call(gw, JSON.stringify({ model: 'mock/slow', stream: true, messages: [{ role: 'user', content: 'x' }] }))
      .then(async (r) => ({ status: r.status, text: await r.text() }));
    await sleep(300);
    const exit = gw.stop('SIGTERM', 30000);
    await sleep(100);
    const draining = await readyz();
    assert.equal(draining.status, 503);
    assert.match(draining.body, /draining/);
    // New connections are refused: the listener is closed.
    await assert.rejects(fetch(`${gw.url}/healthz`, { signal: AbortSignal.timeout(2000) }));
    const s = await slow;
    assert.equal(s.status, 200);
    assert.equal(parseSse(s.text).at(-1), '[DONE]');
    assert.deepEqual(await exit, { code: 0, signal: null });
    agent.destroy();
  });

  test('limits: each refusal in the caller\'s shape with its status, and the process keeps serving', async () => {
    const limited = baseConfig.replace('  io_threads: 2\n', `  io_threads: 2
  max_header_bytes: 2048
  max_headers: 20
  max_url_bytes: 512
  max_json_depth: 8
  max_messages: 3
  max_tools: 2
  max_content_parts: 5
  max_connections_per_client: 12
  header_timeout_ms: 600
  body_timeout_ms: 600
`);
    const { gw } = await start('limits.yaml', limited);
    const port = gw.port;
    const auth = `Authorization: Bearer ${key}\r\n`;
    const post = (target, body, extraHeaders = '') => `POST ${target} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\n`
      + `${extraHeaders}Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;

    // Header count, header bytes, URL length.
    const manyHeaders = Array.from({ length: 30 }, (_, i) => `X-H${i}: v\r\n`).join('');
    assertOpenAiError(await rawExchange(port, post('/v1/chat/completions', chatBody(), manyHeaders)), 431, /30|3\d header fields; at most 20/);
    assertOpenAiError(await rawExchange(port, post('/v1/chat/completions', chatBody(), `X-Big: ${'a'.repeat(3000)}\r\n`)), 431, /larger than 2048 bytes/);
    assertOpenAiError(await rawExchange(port, post(`/v1/chat/completions?${'q'.repeat(1000)}`, chatBody())), 414, /at most 512/);
    // OpenRouter's shape under /api/v1: `code` is the HTTP status; Anthropic's on /v1/messages, also
    // when the headers did not parse.
    assert.equal(assertOpenAiError(await rawExchange(port, post(`/api/v1/chat/completions?${'q'.repeat(1000)}`, chatBody())), 414, /at most 512/).error.code, 414);
    const bigHead = await rawExchange(port, post('/v1/messages', '{}', `X-Big: ${'a'.repeat(3000)}\r\n`));
    assert.equal(bigHead.status, 431);
    assert.equal(JSON.parse(bigHead.body).type, 'error');

    // Transfer-Encoding other than chunked alone: refused and closed, nothing after it is read as a request.
    const smuggle = await rawExchange(port, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: chunked, identity\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n`);
    assertOpenAiError(smuggle, 400, /Transfer-Encoding must be chunked alone/);
    assert.equal(smuggle.body.match(/HTTP\/1\.1 /g), null, 'no second response');
    // With Content-Length too, Beast refuses it first (400); alone, an unknown coding is 501.
    const xchunked = await rawExchange(port, post('/v1/chat/completions', chatBody(), 'Transfer-Encoding: xchunked\r\n'));
    assert.ok([400, 501].includes(xchunked?.status), xchunked?.body);
    assertOpenAiError(await rawExchange(port, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: gzip\r\n\r\n`), 501, /chunked alone/);

    // JSON nesting, named with its depth; in Anthropic's shape on /v1/messages.
    let deep = '"x"';
    for (let i = 0; i < 10; i++) deep = `{"a":${deep}}`;
    const deepBody = chatBody({ metadata: JSON.parse(deep) });
    const d = assertOpenAiError(await rawExchange(port, post('/v1/chat/completions', deepBody)), 400, /nests 11 levels deep; at most 8/);
    assert.equal(d.error.type, 'invalid_request_error');
    const anth = await rawExchange(port, post('/v1/messages', JSON.stringify({ model: 'mock/gpt-test', max_tokens: 5, metadata: JSON.parse(deep), messages: [{ role: 'user', content: 'hi' }] }), 'anthropic-version: 2023-06-01\r\n'));
    assert.equal(anth.status, 400);
    const anthBody = JSON.parse(anth.body);
    assert.equal(anthBody.type, 'error');
    assert.match(anthBody.error.message, /nests 11 levels deep/);

    // Counts.
    const msgs = (n) => Array.from({ length: n }, () => ({ role: 'user', content: 'hi' }));
    assertOpenAiError(await rawExchange(port, post('/v1/chat/completions', chatBody({ messages: msgs(4) }))), 400, /4 messages; at most 3/);
    const tool = (name) => ({ type: 'function', function: { name, parameters: { type: 'object' } } });
    assertOpenAiError(await rawExchange(port, post('/v1/chat/completions', chatBody({ tools: [tool('a'), tool('b'), tool('c')] }))), 400, /3 tools; at most 2/);
    const parts = Array.from({ length: 6 }, () => ({ type: 'text', text: 'p' }));
    assertOpenAiError(await rawExchange(port, post('/v1/chat/completions', chatBody({ messages: [{ role: 'user', content: parts }] }))), 400, /6 content parts; at most 5/);
    // System turns are not messages; count_tokens has the same limits.
    assert.equal((await call(gw, chatBody({ messages: [{ role: 'system', content: 's' }, ...msgs(3)] }))).status, 200);
    const counted = await rawExchange(port, post('/v1/messages/count_tokens', JSON.stringify({ model: 'mock/gpt-test', messages: msgs(4) }), 'anthropic-version: 2023-06-01\r\n'));
    assert.equal(counted.status, 400);
    assert.match(JSON.parse(counted.body).error.message, /4 messages; at most 3/);

    // Slow clients: headers, then a body, that do not arrive in time get 408.
    const t0 = Date.now();
    assertOpenAiError(await rawExchange(port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n'), 408, /within 600 ms \(server\.header_timeout_ms\)/);
    assert.ok(Date.now() - t0 < 5000);
    assertOpenAiError(await rawExchange(port, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 100\r\n\r\n{"model":`), 408, /server\.body_timeout_ms/);

    // Connections per client address: 12 open, the 13th is answered 429 and closed.
    const held = [];
    for (let i = 0; i < 12; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      await new Promise((r) => s.on('connect', r));
      held.push(s);
    }
    await sleep(100);
    const over = await rawExchange(port, '');
    assertOpenAiError(over, 429, /too many open connections from your address/);
    for (const s of held) s.destroy();
    await waitFor(async () => (await metric(gw, 'tollgate_connections_open')) <= 1, { timeoutMs: 5000, what: 'the held connections closed' });

    // Still serving, and every refusal was counted.
    const r = await call(gw, chatBody());
    assert.equal(r.status, 200);
    for (const limit of ['headers', 'header_bytes', 'url_bytes', 'json_depth', 'messages', 'tools', 'content_parts', 'header_timeout', 'body_timeout']) {
      assert.ok((await metric(gw, `tollgate_limit_rejections_total{limit="${limit}"}`)) >= 1, limit);
    }
    assert.ok((await metric(gw, 'tollgate_connections_refused_total{reason="per_client"}')) >= 1);
    assert.equal(gw.exited, null);
  });

  test('check-config refuses what serve would refuse, and names it', async () => {
    const check = (yaml, extraEnv = {}) => {
      const file = path.join(workDir, `check-${crypto.randomUUID()}.yaml`);
      fs.writeFileSync(file, yaml);
      try {
        const out = execFileSync(requireBinary(), ['check-config', '--config', file], { env: { ...process.env, ...extraEnv }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        return { code: 0, out };
      } catch (e) {
        return { code: e.status, out: `${e.stdout}${e.stderr}` };
      }
    };
    const good = check(baseConfig);
    assert.equal(good.code, 0, good.out);
    assert.match(good.out, /^config OK: /);
    const noCert = check(baseConfig.replace('  io_threads: 2\n', '  io_threads: 2\n  tls: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n'));
    assert.equal(noCert.code, 2);
    assert.match(noCert.out, /server\.tls\.cert_file/);
    const badProxy = check(`${baseConfig}outbound: {proxy: "socks5://127.0.0.1:1"}\n`);
    assert.equal(badProxy.code, 2);
    assert.match(badProxy.out, /providers\.mock: .*proxy/);
    const noModel = check(baseConfig.replace(/stories260K\.gguf/, 'no-such-model.gguf'));
    assert.equal(noModel.code, 2);
    assert.match(noModel.out, /cannot read .*no-such-model\.gguf/);
  });

  test('TLS on the listener; a new certificate is served after SIGHUP', async () => {
    const makeCert = (name) => {
      const keyFile = path.join(workDir, `${name}.key`);
      const certFile = path.join(workDir, `${name}.crt`);
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
        '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
      return { keyFile, certFile, pem: fs.readFileSync(certFile, 'utf8') };
    };
    const first = makeCert('tollgate-first');
    const second = makeCert('tollgate-second');
    const tlsYaml = (c) => baseConfig.replace('  io_threads: 2\n', `  io_threads: 2\n  tls: {cert_file: ${JSON.stringify(c.certFile)}, key_file: ${JSON.stringify(c.keyFile)}}\n`);
    const { gw, configPath } = await start('tls.yaml', tlsYaml(first), { tlsCa: first.pem + second.pem });
    assert.match(gw.url, /^https:/);
    const get = (ca, urlPath = '/v1/models') => new Promise((resolve, reject) => {
      https.get(`${gw.url}${urlPath}`, { ca, agent: false }, (res) => {
        let body = '';
        res.on('data', (dd) => { body += dd; });
        res.on('end', () => resolve({ status: res.statusCode, body, cert: res.socket.getPeerCertificate?.() }));
      }).on('error', reject);
    });
    const before1 = await get(first.pem);
    assert.equal(before1.status, 200);
    // Upstream-style verification holds: a client that trusts only the other certificate refuses.
    await assert.rejects(get(second.pem));
    // Plain HTTP on the TLS port gets no answer.
    const plain = await rawExchange(gw.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n').catch(() => null);
    assert.ok(plain === null || !(plain.status === 200));

    fs.writeFileSync(configPath, tlsYaml(second));
    process.kill(gw.pid, 'SIGHUP');
    await waitFor(async () => { try { return (await get(second.pem)).status === 200; } catch { return false; } },
      { timeoutMs: 10000, what: 'the new certificate' });
    const fp = (pem) => new crypto.X509Certificate(pem).fingerprint256;
    const after2 = await get(second.pem);
    assert.equal(after2.cert.fingerprint256, fp(second.pem));
  });
});
