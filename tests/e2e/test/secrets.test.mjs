// No secret in any log line, metric, error or response (ARCHITECTURE.md "Conventions"): calls that
// fail in every way a secret could leak (unknown key, revoked key, a wrong admin token, the admin
// token used as a caller key, an upstream that refuses the provider key, an account's own provider
// key (BYOK) refused, malformed JSON, an unknown model, an error in mid-stream), then the gateway's
// whole stdout/stderr, GET /metrics and every response body and header are searched for every
// caller key, the admin tokens and the provider keys used. Also checks the access log: exactly one
// JSON line per request to a call route, refused ones included (401, 400, 404, 429), with the
// documented fields, its request_id the response's x-request-id.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { ADMIN_TOKEN, createStack, loadDeps, waitFor } from '../lib/harness.mjs';
import { startMockOpenAI } from '../mock_openai.mjs';

const PRICE = { prompt: '1.00', completion: '2.00' };
const WRONG_PROVIDER_KEY = 'sk-wrong-provider-key-5f0c9d8e7b6a4c3d2e1f00112233';
const BYOK_KEY = 'sk-byok-refused-key-a1b2c3d4e5f60718293a4b5c6d7e8f90';
const WRONG_ADMIN_TOKEN = 'wrong-admin-token-9e8d7c6b5a4f3e2d1c0b';
const SECRET_KEY = '0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0';
const FAKE_KEY = `tg-${'Zq7'.repeat(14)}x`;

describe('secrets stay out of logs, metrics and responses', { timeout: 120000 }, () => {
  const stack = createStack('secrets');
  const seen = [];  // every response: status, headers and body as text
  const calls = [];  // every response of a call route: { status, id (x-request-id) }
  let upstreamKey;

  // `issuing`: the admin API's create-key answer, the one place a key is shown (not recorded).
  async function request(method, p, { token, body, headers = {}, issuing = false } = {}) {
    const r = await fetch(`${stack.gw.url}${p}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    if (/^\/(api\/)?v1\/(chat\/completions|completions|messages)$/.test(p)) calls.push({ status: r.status, id: r.headers.get('x-request-id') });
    if (!issuing) seen.push(`${method} ${p} -> ${r.status}\n${[...r.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${text}`);
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
    await stack.start({
      pg,
      mocks: { openai: () => startMockOpenAI({ writeDelayMs: 0 }) },
      keys: ['main'],
      gatewayEnv: { TOLLGATE_SECRET_KEY: SECRET_KEY },
      config: (mocks) => {
        upstreamKey = mocks.openai.apiKey;
        return {
          providers: {
            mock: { type: 'openai_compatible', display_name: 'Mock', base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey },
            wrongkey: { type: 'openai_compatible', display_name: 'Wrong Key', base_url: mocks.openai.baseURL, api_key: WRONG_PROVIDER_KEY },
          },
          models: [
            { id: 'mock/ok', endpoints: [{ provider: 'mock', model: 'gpt-test-upstream', pricing: PRICE }] },
            { id: 'mock/error-401', endpoints: [{ provider: 'mock', model: 'mock-error-401', pricing: PRICE }] },
            { id: 'mock/midstream-error', endpoints: [{ provider: 'mock', model: 'mock-midstream-error', pricing: PRICE }] },
            { id: 'wrong/creds', endpoints: [{ provider: 'wrongkey', model: 'gpt-test-upstream', pricing: PRICE }] },
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
    const places = { 'gateway stdout/stderr': log, '/metrics': metrics, responses: seen.join('\n----\n') };
    const leaks = [];
    for (const [what, secret] of Object.entries(secrets)) {
      // The whole secret and any 16 characters of it past its prefix ("tg-", "sk-").
      const probes = [secret];
      for (let i = 3; i + 16 <= secret.length; i += 8) probes.push(secret.slice(i, i + 16));
      for (const [where, text] of Object.entries(places)) {
        const hit = probes.find((p) => text.includes(p));
        if (hit) leaks.push(`${what} (${hit}) in ${where}`);
      }
    }
    assert.deepEqual(leaks, [], `secrets leaked; log ${stack.gw.logFile}`);

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
});
