// No secret in any log line, metric, error or response (ARCHITECTURE.md "Conventions"): calls that
// fail in every way a secret could leak (unknown key, revoked key, a wrong admin token, the admin
// token used as a caller key, an upstream that refuses the provider key, an account's own provider
// key (BYOK) refused, malformed JSON, an unknown model, an error in mid-stream), then the gateway's
// whole stdout/stderr, GET /metrics and every response body and header are searched for every
// caller key, the admin tokens and the provider keys used. Also checks the access log: exactly one
// JSON line per request to a call route, refused ones included (401, 400, 404, 429), with the
// documented fields, its request_id the response's x-request-id.
//
// The second test (issue 13) widens the run: an upstream that echoes the provider key (and its own
// host) in its 400/401/429/500/503 error bodies, in a mid-stream error event, in an unparseable
// answer and in a response header, also for an account's own key (BYOK); upstreams that refuse the
// connection (a host name and an address); a body over server.max_body_bytes and malformed JSON
// with a key inside; the three API flavours (/v1 chat, /v1/messages, /api/v1); every read endpoint
// (/metrics, /v1/models, /api/v1/providers, the model's endpoints, key and credits, generation
// records, every statistics endpoint, the dashboard and its assets, the admin API's lists); the
// gateway's database URL carrying a password; bad configs on a second start and CLI commands with
// an unreachable database; and two gateways crashed on purpose (SIGSEGV, SIGABRT) after serving such
// calls. None of the caller keys, admin tokens, provider keys, BYOK keys, the secret-box key or the
// database password may appear in any output or response, and no upstream host (address, name,
// host:port) may reach a caller (responses and /metrics).
//
// The third test: a variable holding a secret interpolated into a field of the wrong type (two
// variables swapped in a deployment) makes the config error name the field, not print the value.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ADMIN_TOKEN, createStack, loadDeps, runCli, startGateway, waitFor } from '../lib/harness.mjs';
import { startMockOpenAI } from '../mock_openai.mjs';

const PRICE = { prompt: '1.00', completion: '2.00' };
const WRONG_PROVIDER_KEY = 'sk-wrong-provider-key-5f0c9d8e7b6a4c3d2e1f00112233';
const BYOK_KEY = 'sk-byok-refused-key-a1b2c3d4e5f60718293a4b5c6d7e8f90';
const WRONG_ADMIN_TOKEN = 'wrong-admin-token-9e8d7c6b5a4f3e2d1c0b';
const SECRET_KEY = '0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0';
const FAKE_KEY = `tg-${'Zq7'.repeat(14)}x`;
// Issue 13: the echoing upstream's key, an account's own key for it, the database password, and the
// secrets of the bad configs.
const ECHO_PROVIDER_KEY = 'sk-echo-provider-key-c0ffee11d00d22beef33cafe44f00d55';
const BYOK_ECHO_KEY = 'sk-byok-echoed-key-77aa88bb99cc00dd11ee22ff33aa44bb';
const DB_PASSWORD = 'db-pass-W7x2Qk9ZrT4mN8vB3cH6';
const SHORT_ADMIN_TOKEN = 'Sh0rt-adm1n-tok'; // 15 characters: refused by the config loader
const BAD_CONFIG_PROVIDER_KEY = 'sk-bad-config-provider-key-5e4d3c2b1a0f9e8d7c6b';
// Loopback addresses that name nothing else in this run: an upstream's address must never reach a caller.
const ECHO_HOST = '127.83.41.29';
const REFUSING_HOST = '127.83.41.30';

/** A port on `host` that nothing listens on (bound, then closed). */
function closedPort(host) {
  return new Promise((resolve, reject) => {
    const srv = http.createServer();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * An OpenAI-compatible upstream (https://platform.openai.com/docs/guides/error-codes: errors as
 * {"error": {message, type, param, code}}; streams as `data: {chunk}` SSE) that puts everything a
 * careless provider might echo into its errors: the Authorization header it got (the provider key,
 * or an account's BYOK key), its own Host header and base URL. Upstream model names:
 *   echo-400 / echo-401 / echo-429 (Retry-After: 3) / echo-500 / echo-503   that status
 *   echo-midstream   200, one chunk, then `data: {"error": ...}` with the echo, then the end
 *   echo-garbage     200 with a body that is not JSON (nor SSE) and holds the echo
 *   (any other)      a normal answer ("echo ok"), with usage
 * Every response carries `x-echo: <key> <host>` too. Listens on ECHO_HOST.
 */
function startEchoUpstream() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body = {};
      try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch { /* not JSON */ }
      requests.push({ path: req.url, headers: req.headers, body });
      const auth = req.headers.authorization ?? '';
      const key = auth.replace(/^Bearer /, '');
      const echo = `key ${key} (${auth}) at ${req.headers.host} base ${server.baseURL}`;
      const headers = { 'x-echo': `${key} ${req.headers.host}` };
      const model = String(body.model ?? '');
      const status = /^echo-(\d{3})$/.exec(model)?.[1];
      if (status) {
        const code = { 400: null, 401: 'invalid_api_key', 429: 'rate_limit_exceeded', 500: 'server_error', 503: 'overloaded' }[status] ?? null;
        const type = { 400: 'invalid_request_error', 401: 'invalid_request_error', 429: 'requests' }[status] ?? 'server_error';
        if (status === '429') headers['retry-after'] = '3';
        res.writeHead(Number(status), { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify({ error: { message: `Incorrect request: ${echo}`, type, param: status === '400' ? 'messages' : null, code } }));
        return;
      }
      if (model === 'echo-garbage') {
        res.writeHead(200, { 'content-type': 'application/json', ...headers });
        res.end(`<html>upstream proxy error: ${echo}</html>`);
        return;
      }
      const chunk = (delta, finish = null, usage = undefined) => `data: ${JSON.stringify({
        id: 'chatcmpl-echo', object: 'chat.completion.chunk', created: 1767225600, model,
        choices: usage ? [] : [{ index: 0, delta, finish_reason: finish }], ...(usage ? { usage } : {}),
      })}\n\n`;
      const usage = { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };
      if (model === 'echo-midstream') {
        res.writeHead(200, { 'content-type': 'text/event-stream', ...headers });
        res.write(chunk({ role: 'assistant', content: 'echo' }));
        res.end(`data: ${JSON.stringify({ error: { message: `stream failed: ${echo}`, type: 'server_error', param: null, code: 'server_error' } })}\n\n`);
        return;
      }
      if (body.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream', ...headers });
        res.end(chunk({ role: 'assistant', content: 'echo' }) + chunk({ content: ' ok' }, 'stop')
          + (body.stream_options?.include_usage ? chunk(null, null, usage) : '') + 'data: [DONE]\n\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify({
        id: 'chatcmpl-echo', object: 'chat.completion', created: 1767225600, model,
        choices: [{ index: 0, message: { role: 'assistant', content: 'echo ok' }, finish_reason: 'stop' }], usage,
      }));
    });
  });
  return new Promise((resolve) => {
    server.listen(0, ECHO_HOST, () => {
      server.baseURL = `http://${ECHO_HOST}:${server.address().port}/v1`;
      resolve({
        baseURL: server.baseURL, host: ECHO_HOST, port: server.address().port, apiKey: ECHO_PROVIDER_KEY, requests,
        close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
      });
    });
  });
}

/** Every place in `places` ({where: text}) holding a secret of `secrets` ({what: value}) or 16 characters of it past its prefix. */
function findLeaks(secrets, places) {
  const leaks = [];
  for (const [what, secret] of Object.entries(secrets)) {
    const probes = [secret];
    for (let i = 3; i + 16 <= secret.length; i += 8) probes.push(secret.slice(i, i + 16));
    for (const [where, text] of Object.entries(places)) {
      const hit = probes.find((p) => text.includes(p));
      if (hit) leaks.push(`${what} (${hit}) in ${where}`);
    }
  }
  return leaks;
}

describe('secrets stay out of logs, metrics and responses', { timeout: 120000 }, () => {
  const stack = createStack('secrets');
  const seen = [];  // every response: status, headers and body as text
  const calls = [];  // every response of a call route: { status, id (x-request-id) }
  const allSecrets = {};  // what the first test used, for the second one's sweep
  let upstreamKey;
  let refusedPorts;  // {name: port on localhost, ip: port on REFUSING_HOST}

  // `issuing`: the admin API's create-key answer, the one place a key is shown (not recorded).
  // `gw`: another gateway than the stack's (its calls are not counted in `calls`).
  async function request(method, p, { token, body, headers = {}, issuing = false, gw = null } = {}) {
    const r = await fetch(`${(gw ?? stack.gw).url}${p}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    if (!gw && /^\/(api\/)?v1\/(chat\/completions|completions|messages)$/.test(p)) calls.push({ status: r.status, id: r.headers.get('x-request-id') });
    // The request line without its query (which may carry keys on purpose): only what came back is searched.
    if (!issuing) seen.push(`${method} ${p.replace(/\?.*/, '?...')} -> ${r.status}\n${[...r.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${text}`);
    let json = null;
    try { json = JSON.parse(text); } catch { /* SSE or text */ }
    return { status: r.status, text, json, id: r.headers.get('x-request-id') };
  }
  const admin = (method, p, body) => request(method, `/admin/v1${p}`, { token: ADMIN_TOKEN, body, issuing: /\/keys$/.test(p) && method === 'POST' });
  const chat = (key, model, extra = {}) => request('POST', '/v1/chat/completions', {
    token: key, body: { model, messages: [{ role: 'user', content: 'hello' }], max_tokens: 5, ...extra },
  });

  before(async () => {
    const { pg } = await loadDeps();
    refusedPorts = { name: await closedPort('127.0.0.1'), ip: await closedPort(REFUSING_HOST) };
    await stack.start({
      pg,
      mocks: { openai: () => startMockOpenAI({ writeDelayMs: 0 }), echo: startEchoUpstream },
      keys: ['main'],
      // An empty TOLLGATE_DATABASE_URL counts as unset: the gateway takes database.url, with its password.
      gatewayEnv: { TOLLGATE_SECRET_KEY: SECRET_KEY, TOLLGATE_DATABASE_URL: '' },
      config: (mocks, databaseUrl) => {
        upstreamKey = mocks.openai.apiKey;
        const withPassword = new URL(databaseUrl);
        withPassword.password = DB_PASSWORD;  // the test server trusts loopback: the password is only carried
        const echo = (upstream) => [{ provider: 'echo', model: upstream, pricing: PRICE }];
        return {
          databaseUrl: withPassword.toString(),
          // Every failing call must reach its upstream (no open circuit, no 429 cooldown in the way).
          routing: { breaker: { consecutive_failures: 1000 }, default_cooldown_ms: 0, max_cooldown_ms: 0 },
          providers: {
            mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey },
            wrongkey: { type: 'openai_compatible', display_name: 'Wrong Key', base_url: mocks.openai.baseURL, api_key: WRONG_PROVIDER_KEY },
            echo: { type: 'openai_compatible', display_name: 'Echo', base_url: mocks.echo.baseURL, api_key: ECHO_PROVIDER_KEY },
            refusedname: { type: 'openai_compatible', display_name: 'Refused Name', base_url: `http://localhost:${refusedPorts.name}/v1`, api_key: ECHO_PROVIDER_KEY },
            refusedip: { type: 'openai_compatible', display_name: 'Refused IP', base_url: `http://${REFUSING_HOST}:${refusedPorts.ip}/v1`, api_key: ECHO_PROVIDER_KEY },
          },
          models: [
            { id: 'mock/ok', endpoints: [{ provider: 'mock', model: 'gpt-test-upstream', pricing: PRICE }] },
            { id: 'mock/error-401', endpoints: [{ provider: 'mock', model: 'mock-error-401', pricing: PRICE }] },
            { id: 'mock/midstream-error', endpoints: [{ provider: 'mock', model: 'mock-midstream-error', pricing: PRICE }] },
            { id: 'wrong/creds', endpoints: [{ provider: 'wrongkey', model: 'gpt-test-upstream', pricing: PRICE }] },
            { id: 'echo/ok', endpoints: echo('echo-ok') },
            ...['400', '401', '429', '500', '503'].map((st) => ({ id: `echo/e${st}`, endpoints: echo(`echo-${st}`) })),
            { id: 'echo/midstream', endpoints: echo('echo-midstream') },
            { id: 'echo/garbage', endpoints: echo('echo-garbage') },
            { id: 'refused/name', endpoints: [{ provider: 'refusedname', model: 'any', pricing: PRICE }] },
            { id: 'refused/ip', endpoints: [{ provider: 'refusedip', model: 'any', pricing: PRICE }] },
            // Every endpoint fails in another way: the answer sums up several attempts.
            {
              id: 'echo/all-fail',
              endpoints: [
                { provider: 'echo', model: 'echo-500', pricing: PRICE },
                { provider: 'refusedname', model: 'any', pricing: PRICE },
                { provider: 'refusedip', model: 'any', pricing: PRICE },
                { provider: 'echo', model: 'echo-429', pricing: PRICE },
              ],
            },
          ],
        };
      },
    });
  });
  after(() => stack.stop());

  test('failed calls of every kind leak no key or token, and each call has one access-log line', async () => {
    const main = stack.keys.main;
    const ok = await chat(main, 'mock/ok');
    assert.equal(ok.status, 200, ok.text);

    // Unknown key, the admin token as a caller key, a wrong admin token, no token at all.
    assert.equal((await chat(FAKE_KEY, 'mock/ok')).status, 401);
    assert.equal((await chat(ADMIN_TOKEN, 'mock/ok')).status, 401);
    assert.equal((await request('GET', '/v1/key', { token: FAKE_KEY })).status, 401);
    const wrongAdmin = await request('GET', '/admin/v1/accounts', { token: WRONG_ADMIN_TOKEN });
    assert.ok(wrongAdmin.status === 401 || wrongAdmin.status === 403, wrongAdmin.text);
    assert.ok([401, 403].includes((await request('GET', '/admin/v1/keys', { token: main })).status));

    // A revoked key.
    const account = (await admin('POST', '/accounts', { name: 'secrets', prepaid: false })).json.data;
    const created = (await admin('POST', `/accounts/${account.id}/keys`, { name: 'to-revoke' })).json;
    const revokedKey = created.key;
    assert.equal((await chat(revokedKey, 'mock/ok')).status, 200);
    assert.equal((await admin('DELETE', `/keys/${created.data.id}`)).status, 200);
    await waitFor(async () => (await chat(revokedKey, 'mock/ok')).status === 401, { what: 'the revoked key refused' });

    // The upstream refuses the provider key: its magic 401, and a provider configured with a wrong key.
    const refused = await chat(main, 'mock/error-401');
    assert.equal(refused.status, 502, refused.text);
    assert.equal((await chat(main, 'wrong/creds')).status, 502);
    assert.equal((await chat(main, 'wrong/creds', { stream: true })).status, 502);

    // The account's own provider key (BYOK) refused by the upstream.
    const byokAccount = (await admin('POST', '/accounts', { name: 'secrets-byok', prepaid: false })).json.data;
    const put = await admin('PUT', `/accounts/${byokAccount.id}/provider_keys/mock`, { key: BYOK_KEY });
    assert.equal(put.status, 200, put.text);
    const byokKey = (await admin('POST', `/accounts/${byokAccount.id}/keys`, { name: 'byok' })).json.key;
    const byok = await chat(byokKey, 'mock/ok');
    assert.equal(byok.status, 502, byok.text);
    assert.match(byok.json.error.message, /own API key/);

    // Malformed JSON, an unknown model, an error in mid-stream.
    assert.equal((await request('POST', '/v1/chat/completions', { token: main, body: '{"model": "mock/ok", "messages": [' })).status, 400);
    const unknown = await chat(main, 'nobody/no-such-model');
    assert.ok([400, 404].includes(unknown.status), unknown.text);
    assert.equal((await chat(main, 'mock/midstream-error', { stream: true })).status, 200);

    // Rate limited: a key allowed one request a minute (a minute boundary may admit a second).
    const slow = (await admin('POST', `/accounts/${account.id}/keys`, { name: 'one-a-minute', requests_per_minute: 1 })).json;
    let limited;
    for (let i = 0; i < 3 && !limited; i++) {
      const r = await chat(slow.key, 'mock/ok');
      if (r.status === 429) limited = r;
    }
    assert.ok(limited, 'a 429 for the one-a-minute key');

    await waitFor(async () => /tollgate_background\{item="usage_rows_pending"\} 0\b/.test(
      await (await fetch(`${stack.gw.url}/metrics`)).text()), { what: 'rows written' });
    const metrics = (await request('GET', '/metrics')).text;
    await new Promise((r) => setTimeout(r, 200));  // the last log lines
    const log = fs.readFileSync(stack.gw.logFile, 'utf8');

    const secrets = {
      'caller key': main, 'revoked key': revokedKey, 'BYOK account key': byokKey, 'unknown key': FAKE_KEY, 'rate-limited key': slow.key,
      'admin token': ADMIN_TOKEN, 'wrong admin token': WRONG_ADMIN_TOKEN, 'provider key': upstreamKey,
      'wrong provider key': WRONG_PROVIDER_KEY, 'BYOK provider key': BYOK_KEY, 'secret box key': SECRET_KEY,
    };
    Object.assign(allSecrets, secrets);
    const places = { 'gateway stdout/stderr': log, '/metrics': metrics, responses: seen.join('\n----\n') };
    // The whole secret and any 16 characters of it past its prefix ("tg-", "sk-").
    assert.deepEqual(findLeaks(secrets, places), [], `secrets leaked; log ${stack.gw.logFile}`);

    // The access log: a JSON line per call that reached the driver, with the documented fields.
    const lines = log.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).filter((o) => o.log === 'access');
    const line = lines.find((o) => o.request_id === ok.id);
    assert.ok(line, `an access-log line for ${ok.id}:\n${log}`);
    const keyId = (await stack.db.query("SELECT id FROM api_keys WHERE name = 'secrets-main'")).rows[0].id;
    assert.equal(line.key_id, keyId);
    assert.equal(line.model, 'mock/ok');
    assert.equal(line.provider, 'Mock');
    assert.equal(line.endpoint, 'mock/gpt-test-upstream');
    assert.equal(line.status, 200);
    assert.equal(line.usage_reported, true);
    assert.ok(line.prompt_tokens > 0 && line.completion_tokens > 0);
    const row = (await stack.db.query('SELECT cost_nano_usd FROM usage_events WHERE request_id = $1', [ok.id])).rows[0];
    assert.equal(line.cost_nano_usd, row.cost_nano_usd);
    assert.equal(line.cost_usd, row.cost_nano_usd / 1e9);
    for (const f of ['ts', 'account_id', 'cached_tokens', 'cache_write_tokens', 'reasoning_tokens', 'latency_ms', 'ttft_ms', 'streamed']) {
      assert.ok(f in line, `${f} in ${JSON.stringify(line)}`);
    }
    assert.match(line.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const failed = lines.find((o) => o.request_id === refused.id);
    assert.ok(failed && failed.status === 502 && failed.metered === true, JSON.stringify(failed));
    const unknownLine = lines.find((o) => o.request_id === unknown.id);
    assert.ok(unknownLine && unknownLine.model === 'other' && unknownLine.provider === null, JSON.stringify(unknownLine));
    assert.equal(unknownLine.status, unknown.status);
    assert.equal(unknownLine.error_code, unknown.status === 404 ? 'not_found_error' : 'invalid_request_error');

    // Exactly one line per request to a call route, refused ones included, found by x-request-id.
    const byId = new Map();
    for (const o of lines) byId.set(o.request_id, [...(byId.get(o.request_id) ?? []), o]);
    for (const c of calls) {
      assert.match(c.id ?? '', /^gen-/, `x-request-id on every call response (${c.status})`);
      assert.equal(byId.get(c.id)?.length, 1, `one access-log line for ${c.id} (${c.status}): ${JSON.stringify(byId.get(c.id))}`);
      // A stream that fails mid-way was answered 200; its line has the outcome (502).
      if (c.status !== 200) assert.equal(byId.get(c.id)[0].status, c.status, c.id);
    }
    assert.equal(lines.length, calls.length, 'no access-log line but for a call request');
    const lineOf = (r) => byId.get(r.id)[0];
    const unauth = lineOf(calls.find((c) => c.status === 401));
    assert.equal(unauth.key_id, null);
    assert.equal(unauth.account_id, null);
    assert.equal(unauth.error_code, 'authentication_error');
    assert.equal(unauth.model, 'mock/ok');
    assert.equal(unauth.metered, false);
    assert.ok(typeof unauth.latency_ms === 'number' && unauth.ts, JSON.stringify(unauth));
    const malformed = lineOf(calls.find((c) => c.status === 400));
    assert.equal(malformed.key_id, keyId);
    assert.equal(malformed.error_code, 'invalid_request_error');
    assert.equal(malformed.model, 'other');
    const limitedLine = lineOf(limited);
    assert.equal(limitedLine.status, 429);
    assert.equal(limitedLine.key_id, slow.data.id);
    assert.equal(limitedLine.account_id, account.id);
    assert.equal(limitedLine.error_code, 'rate_limit_error');
    assert.equal(limitedLine.reason, 'rate_limit_exceeded');
    assert.equal(limitedLine.model, 'mock/ok');
    for (const key of [main, revokedKey, byokKey, FAKE_KEY, slow.key, ADMIN_TOKEN]) {
      assert.ok(!lines.some((o) => JSON.stringify(o).includes(key)), 'no key in an access-log line');
    }
    assert.ok(!log.includes('nobody/no-such-model') || !lines.some((o) => JSON.stringify(o).includes('nobody/')),
      'the access log names unknown models "other"');
  });

  test('every error path, every read endpoint, bad configs and crashes: no secret anywhere, no upstream host to a caller', { timeout: 90000 }, async () => {
    const main = stack.keys.main;
    const echo = stack.mocks.echo;
    const configPath = path.join(stack.workDir, 'tollgate.yaml');
    const outputs = {};  // where -> text, beyond the stack gateway's log, /metrics and the responses
    const check = (cond, what, r) => assert.ok(cond, `${what}: ${r.status} ${r.text?.slice(0, 400)}`);

    /** The error paths of the echoing and refusing upstreams, through `gw` (null: the stack's). */
    async function errorPaths(gw, key) {
      const call = (model, extra = {}, p = '/v1/chat/completions') => request('POST', p, {
        gw, token: key, body: { model, messages: [{ role: 'user', content: 'hello' }], max_tokens: 5, ...extra },
      });
      const ok = await call('echo/ok');
      check(ok.status === 200, 'echo/ok', ok);
      for (const stream of [false, true]) {
        const e400 = await call('echo/e400', { stream });
        check(e400.status === 400, 'upstream 400 -> 400', e400);
        // The upstream's own message is passed on (README "Errors"): the echo reached the caller, scrubbed.
        check(stream || e400.json?.error?.message?.startsWith('Incorrect request: key '), 'the upstream 400 message', e400);
        const e401 = await call('echo/e401', { stream });
        check(e401.status === 502, 'upstream 401 -> 502', e401);
        const e429 = await call('echo/e429', { stream });
        check(e429.status === 429, 'upstream 429 -> 429', e429);
        for (const m of ['echo/e500', 'echo/e503', 'echo/garbage', 'refused/name', 'refused/ip', 'echo/all-fail']) {
          const r = await call(m, { stream });
          check(r.status >= 500 && r.status <= 504 || r.status === 429, m, r);
        }
        const mid = await call('echo/midstream', { stream });
        check(stream ? mid.status === 200 && /"error"/.test(mid.text) : mid.status >= 500, 'mid-stream error', mid);
      }
      // The Anthropic flavour and OpenRouter's base path.
      const anth = await request('POST', '/v1/messages', {
        gw, headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01' },
        body: { model: 'echo/e400', max_tokens: 5, messages: [{ role: 'user', content: 'hello' }] },
      });
      check(anth.status === 400 && anth.json?.type === 'error', '/v1/messages upstream 400', anth);
      for (const m of ['echo/e401', 'echo/all-fail', 'refused/name']) {
        const r = await request('POST', '/v1/messages', {
          gw, headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01' },
          body: { model: m, max_tokens: 5, stream: true, messages: [{ role: 'user', content: 'hello' }] },
        });
        check(r.status >= 400, `/v1/messages ${m}`, r);
      }
      for (const m of ['echo/e400', 'echo/e401', 'echo/e429', 'refused/ip', 'echo/garbage']) {
        const r = await call(m, {}, '/api/v1/chat/completions');
        check(r.status >= 400 && Number.isInteger(r.json?.error?.code), `/api/v1 ${m}`, r);
      }
      const legacy = await request('POST', '/v1/completions', { gw, token: key, body: { model: 'echo/e401', prompt: 'hello', max_tokens: 5 } });
      check(legacy.status === 502, '/v1/completions upstream 401', legacy);
      const responses = await request('POST', '/v1/responses', { gw, token: key, body: { model: 'echo/e400', input: 'hello', max_output_tokens: 16 } });
      check(responses.status === 400, '/v1/responses upstream 400', responses);
      return ok;
    }

    // ---- the stack's gateway: every error path
    const ok = await errorPaths(null, main);
    // The account's own key (BYOK) for the echoing provider: echoed back by the upstream.
    const byokAcct = (await admin('POST', '/accounts', { name: 'secrets-byok-echo', prepaid: false })).json.data;
    assert.equal((await admin('PUT', `/accounts/${byokAcct.id}/provider_keys/echo`, { key: BYOK_ECHO_KEY })).status, 200);
    const byokKey = (await admin('POST', `/accounts/${byokAcct.id}/keys`, { name: 'byok-echo' })).json.key;
    await errorPaths(null, byokKey);
    assert.ok(echo.requests.some((r) => r.headers.authorization === `Bearer ${BYOK_ECHO_KEY}`), 'the BYOK key reached the upstream');
    assert.ok(echo.requests.some((r) => r.headers.authorization === `Bearer ${ECHO_PROVIDER_KEY}`), 'the provider key reached the upstream');

    // Too large a body (server.max_body_bytes: 1 MiB) and malformed JSON, both with a key inside.
    const big = JSON.stringify({ model: 'echo/ok', messages: [{ role: 'user', content: `${byokKey} `.repeat(30000) }] });
    const tooBig = await request('POST', '/v1/chat/completions', { token: main, body: big });
    check(tooBig.status === 413, 'body over max_body_bytes', tooBig);
    const malformed = await request('POST', '/v1/chat/completions', { token: main, body: `{"model": "echo/ok", "messages": [{"role": "user", "content": "${byokKey}"}` });
    check(malformed.status === 400, 'malformed JSON', malformed);
    const anthMalformed = await request('POST', '/v1/messages', { headers: { 'x-api-key': main }, body: `{"model": "echo/ok", "x": "${byokKey}" ` });
    check(anthMalformed.status === 400, 'malformed JSON on /v1/messages', anthMalformed);
    // Keys in places they do not belong: the admin token and a caller key as query strings.
    check((await request('GET', `/v1/models?key=${main}&token=${ADMIN_TOKEN}`)).status === 200, 'query string', {});
    check((await request('GET', `/admin/v1/accounts?token=${ADMIN_TOKEN}`, { token: byokKey })).status >= 401, 'admin with a caller key', {});
    check((await request('GET', '/admin/v1/ledger/check', { token: `${ADMIN_TOKEN}x` })).status >= 401, 'admin token with a suffix', {});

    // ---- every read endpoint, as the caller and as the admin
    await waitFor(async () => /tollgate_background\{item="usage_rows_pending"\} 0\b/.test(
      await (await fetch(`${stack.gw.url}/metrics`)).text()), { what: 'rows written' });
    const failed = calls.filter((c) => c.status >= 400 && c.id).map((c) => c.id);
    const reads = [
      '/healthz', '/readyz', '/v1/models', '/api/v1/models', '/api/v1/providers', '/v1/providers',
      '/api/v1/models/echo/e401/endpoints', '/api/v1/models/refused/name/endpoints', '/api/v1/models/echo/all-fail/endpoints',
      '/api/v1/key', '/api/v1/credits', `/api/v1/generation?id=${ok.id}`,
      ...failed.slice(-20).map((id) => `/api/v1/generation?id=${id}`),
      '/api/v1/stats/models?window=24h', '/api/v1/stats/providers?window=24h', '/api/v1/stats/calls?limit=500',
      '/api/v1/stats/calls?status=error&limit=500', '/api/v1/stats/timeseries?metric=errors&group_by=endpoint&bucket=hour',
      ...['model', 'provider', 'endpoint', 'key', 'account', 'app'].map((g) => `/api/v1/stats/cost?group_by=${g}&window=24h`),
      '/api/v1/stats/calls?format=csv&limit=500', '/api/v1/datasets/rankings-daily', '/api/v1/datasets/app-rankings', '/api/v1/activity',
    ];
    for (const p of reads) {
      for (const token of [main, ADMIN_TOKEN]) {
        const r = await request('GET', p, { token });
        check(r.status < 500, `GET ${p}`, r);
      }
    }
    const dash = await request('GET', '/dashboard');
    check(dash.status === 200, '/dashboard', dash);
    const assets = [...dash.text.matchAll(/(?:src|href)="(\/[^"]+)"/g)].map((m) => m[1]);
    for (const a of new Set(assets)) check((await request('GET', a)).status === 200, `dashboard asset ${a}`, {});
    for (const p of ['/accounts', '/keys', `/accounts/${byokAcct.id}/provider_keys`, `/accounts/${byokAcct.id}`, '/ledger/check']) {
      check((await admin('GET', p)).status === 200, `admin GET ${p}`, {});
    }
    const metrics = (await request('GET', '/metrics')).text;

    // ---- bad configs on a second start, and CLI commands with an unreachable database
    const badDbPort = await closedPort('127.0.0.1');
    const good = fs.readFileSync(configPath, 'utf8');
    const badConfigs = {
      'admin token too short': [good.replace(/admin_token: .*/, `admin_token: "${SHORT_ADMIN_TOKEN}"`), /billing\.admin_token/],
      'database unreachable (URL with a password)': [
        good.replace(/url: .*/, `url: "postgresql://postgres:${DB_PASSWORD}@127.0.0.1:${badDbPort}/tollgate"`), /cannot connect/],
      'unknown provider type': [good.replace(/providers:\n/, `providers:\n  badtype:\n    type: "openai_compatibel"\n    base_url: "http://${ECHO_HOST}:1/v1"\n    api_key: "${BAD_CONFIG_PROVIDER_KEY}"\n`),
        /providers\.badtype\.type/],
      'provider option out of range': [good.replace(/providers:\n/, `providers:\n  badopt:\n    type: "openai_compatible"\n    base_url: "http://${ECHO_HOST}:1/v1"\n    api_key: "${BAD_CONFIG_PROVIDER_KEY}"\n    max_idle_connections: -5\n`),
        /providers\.badopt\.max_idle_connections/],
      'YAML syntax error next to a key': [good.replace(/providers:\n/, `providers:\n  broken:\n    api_key: "${BAD_CONFIG_PROVIDER_KEY}\n    base_url: [\n`), /line \d+/],
    };
    for (const [what, [text, expected]] of Object.entries(badConfigs)) {
      const file = path.join(stack.workDir, `bad-${Object.keys(outputs).length}.yaml`);
      fs.writeFileSync(file, text);
      const r = await runCli(['serve', '--config', file, '--listen', '127.0.0.1:0'], {
        env: { TOLLGATE_DATABASE_URL: '', TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN, TOLLGATE_SECRET_KEY: SECRET_KEY, TOLLGATE_SPOOL_DIR: path.join(stack.workDir, 'bad-spool') },
        timeoutMs: 20000,
      });
      assert.ok(r.code !== 0 && r.signal === null, `${what}: the second start must fail: ${r.code} ${r.signal}\n${r.stderr}`);
      assert.ok(r.stderr.trim().length > 0, `${what}: says why`);
      assert.match(r.stderr, expected, `${what}: the reason`);
      outputs[`second start (${what})`] = `${r.stdout}\n${r.stderr}`;
    }
    const badUrl = `postgresql://postgres:${DB_PASSWORD}@127.0.0.1:${badDbPort}/tollgate`;
    for (const args of [['migrate'], ['keys', 'list'], ['ledger', 'check'], ['accounts', 'list']]) {
      const r = await runCli(args, { env: { TOLLGATE_DATABASE_URL: badUrl }, timeoutMs: 20000 });
      assert.notEqual(r.code, 0, `tollgate ${args.join(' ')} with an unreachable database`);
      outputs[`tollgate ${args.join(' ')} (database down)`] = `${r.stdout}\n${r.stderr}`;
    }

    // ---- two more gateways on the same config serve the error paths, then crash (SIGSEGV, SIGABRT)
    for (const signal of ['SIGSEGV', 'SIGABRT']) {
      const gw = await startGateway({ configPath, workDir: stack.workDir, env: { TOLLGATE_DATABASE_URL: '', TOLLGATE_SECRET_KEY: SECRET_KEY }, noCoreDump: true });
      try {
        await errorPaths(gw, byokKey);
        await errorPaths(gw, main);
        process.kill(gw.pid, signal);
        const exit = await gw.stop(signal, 10000);
        assert.equal(exit.signal, signal, `the gateway died of ${signal}: ${JSON.stringify(exit)}`);
      } finally {
        await gw.stop('SIGKILL');
      }
      outputs[`gateway crashed by ${signal}`] = fs.readFileSync(gw.logFile, 'utf8');
      assert.match(outputs[`gateway crashed by ${signal}`], /"log":"access"/, 'the crashed gateway had logged its calls');
    }
    assert.ok(!fs.existsSync(path.join(stack.workDir, 'core')), 'no core file');

    // ---- the sweep
    await new Promise((r) => setTimeout(r, 200));  // the last log lines
    const log = fs.readFileSync(stack.gw.logFile, 'utf8');
    const secrets = {
      ...allSecrets, 'caller key': main, 'BYOK echo account key': byokKey, 'echoed provider key': ECHO_PROVIDER_KEY,
      'echoed BYOK provider key': BYOK_ECHO_KEY, 'database password': DB_PASSWORD, 'short admin token (bad config)': SHORT_ADMIN_TOKEN,
      'bad config provider key': BAD_CONFIG_PROVIDER_KEY, 'admin token': ADMIN_TOKEN, 'secret box key': SECRET_KEY,
    };
    const responses = seen.join('\n----\n');
    const places = { 'gateway stdout/stderr': log, '/metrics': metrics, responses, ...outputs };
    const leaks = findLeaks(secrets, places);
    // Upstream hosts: never in what a caller can read (responses, /metrics).
    const hosts = [ECHO_HOST, REFUSING_HOST, `localhost:${refusedPorts.name}`, `127.0.0.1:${refusedPorts.name}`, `:${echo.port}/`, echo.baseURL];
    for (const h of hosts) {
      for (const [where, text] of Object.entries({ '/metrics': metrics, responses })) {
        if (text.includes(h)) {
          const at = text.indexOf(h);
          leaks.push(`upstream host ${h} in ${where}: ...${text.slice(Math.max(0, at - 300), at + 100)}...`);
        }
      }
    }
    console.log(`secrets sweep: ${Object.keys(secrets).length} secrets, ${hosts.length} upstream hosts; `
      + `${seen.length} responses (${Math.round(responses.length / 1024)} KiB), gateway log ${Math.round(log.length / 1024)} KiB, `
      + `${Object.keys(outputs).length} more outputs (${Object.keys(outputs).join('; ')}); ${echo.requests.length} upstream requests to the echo`);
    assert.deepEqual(leaks, [], `leaked; log ${stack.gw.logFile}`);
  });

  // A variable holding a secret interpolated into the wrong field (two variables swapped in a
  // deployment's config): the error must name the field and the variable, not print the value.
  test('a secret interpolated into the wrong config field is not printed by the config error', async () => {
    const good = fs.readFileSync(path.join(stack.workDir, 'tollgate.yaml'), 'utf8');
    const swappedKey = 'sk-swapped-into-type-9f8e7d6c5b4a3928171605f4e3d2';
    const cases = {
      'server.io_threads': [good.replace(/io_threads: .*/, 'io_threads: "${TOLLGATE_ADMIN_TOKEN}"'), ADMIN_TOKEN],
      'providers.swapped.type': [good.replace(/providers:\n/, 'providers:\n  swapped:\n    type: "${SWAPPED_PROVIDER_KEY}"\n'), swappedKey],
      'usage.batch_size': [good.replace(/batch_size: .*/, 'batch_size: "${TOLLGATE_SECRET_KEY}"'), SECRET_KEY],
    };
    const leaks = [];
    for (const [field, [text, secret]] of Object.entries(cases)) {
      const file = path.join(stack.workDir, `swapped-${field}.yaml`);
      fs.writeFileSync(file, text);
      const r = await runCli(['serve', '--config', file, '--listen', '127.0.0.1:0'], {
        env: { TOLLGATE_DATABASE_URL: '', TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN, TOLLGATE_SECRET_KEY: SECRET_KEY, SWAPPED_PROVIDER_KEY: swappedKey },
        timeoutMs: 20000,
      });
      assert.ok(r.code !== 0 && r.signal === null, `${field}: the start must fail: ${r.code} ${r.signal}\n${r.stderr}`);
      assert.ok(r.stderr.includes(field), `${field}: the error names the field: ${r.stderr}`);
      leaks.push(...findLeaks({ [`the value of ${field}`]: secret }, { [`stderr of a start with a bad ${field}`]: `${r.stdout}\n${r.stderr}` })
        .map((l) => `${l}: ${r.stderr.trim()}`));
    }
    assert.deepEqual(leaks, []);
  });
});
