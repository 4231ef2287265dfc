// End to end: the real tollgate binary, a fresh PostgreSQL database, the mock OpenAI-compatible
// upstream and the bundled local model, driven by the official `openai` and `@openrouter/sdk`
// clients; every call's usage row is then checked in PostgreSQL.
//
// Token counts and costs are exact: the mock's are deterministic (see mock_openai.mjs) and the
// local model's are the greedy reference (../shared/models/stories260K-reference.json).
// Prices: mock/* 1.00 / 2.00 USD per million prompt / completion tokens = 1000 / 2000 nano-USD per
// token; local/stories260k 0.01 / 0.02 = 10 / 20 nano-USD per token.
import net from 'node:net';
import crypto from 'node:crypto';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  LOCAL_PRICE, MOCK_PRICE, adminDatabaseUrl, assertErrorShape, createDatabase, errorFlavor, loadDeps,
  makeWorkDir, modelDir, parseSse, referenceFor, requireBinary, runCli, runCliOk, sleep, startGateway,
  tail, usageRow, usd, waitFor, writeConfig,
} from '../lib/harness.mjs';
import {
  REPLY_PIECES, REPLY_TEXT, completionFor, promptTokens, startMockOpenAI,
} from '../mock_openai.mjs';

const { OpenAI, OpenRouter, orErrors, orModels, pg } = await loadDeps();
adminDatabaseUrl(); // fail at once, clearly, without a database
requireBinary();

const MOCK = 'mock/gpt-test';
const LOCAL = 'local/stories260k';
const MOCK_PROVIDER_NAMES = ['Mock Upstream', 'mock']; // display name (OpenRouter style) or config key
const LOCAL_PROVIDER_NAMES = ['Local', 'local'];
const REF = referenceFor('Once upon a time');

const mockCostNano = (p, c) => p * MOCK_PRICE.promptNano + c * MOCK_PRICE.completionNano;
const localCostNano = (p, c) => p * LOCAL_PRICE.promptNano + c * LOCAL_PRICE.completionNano;

describe('tollgate end to end', { timeout: 180000 }, () => {
  const ctx = {};
  let workDir;
  let database;
  let mock;
  let gw;
  let db; // pg.Client on the test database
  let client; // openai SDK, base /v1
  let keys = {};

  const authed = (key = keys.main) => ({ authorization: `Bearer ${key}` });
  const post = (p, body, { key = keys.main, headers = {} } = {}) => fetch(`${gw.url}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? authed(key) : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const keyRow = async (name) => (await db.query('SELECT * FROM api_keys WHERE name = $1', [name])).rows[0];
  // @openrouter/sdk retries 5XX and connection errors with backoff for up to an hour by default.
  const openRouter = (key = keys.main) => new OpenRouter({
    apiKey: key, serverURL: `${gw.url}/api/v1`, retryConfig: { strategy: 'none' },
  });

  before(async () => {
    workDir = makeWorkDir('e2e');
    mock = await startMockOpenAI();
    database = await createDatabase(pg);
    const env = { TOLLGATE_DATABASE_URL: database.url };
    ctx.env = env;

    await runCliOk(['migrate'], { env });
    await runCliOk(['migrate'], { env }); // applying twice is harmless

    for (const [name, extra] of [['e2e-main', ['--credits', '5']], ['e2e-other', []], ['e2e-revoked', []]]) {
      const r = await runCliOk(['keys', 'create', '--name', name, ...extra], { env });
      keys[name.slice(4)] = r.stdout.trim();
      ctx[`create-${name}`] = r;
    }
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    const revoked = await keyRow('e2e-revoked');
    await runCliOk(['keys', 'revoke', String(revoked.id)], { env });

    const config = writeConfig(workDir, {
      databaseUrl: database.url,
      mockBaseURL: mock.baseURL,
      mockApiKey: mock.apiKey,
      modelPath: `${modelDir()}/stories260K.gguf`,
    });
    gw = await startGateway({ configPath: config, workDir, env });
    client = new OpenAI({ apiKey: keys.main, baseURL: `${gw.url}/v1`, maxRetries: 0, timeout: 60000 });
  });

  after(async () => {
    // Always: stop every process we started (by PID), then drop the database.
    let stopped;
    if (gw) stopped = await gw.stop('SIGTERM');
    if (mock) await mock.close();
    if (db) await db.end().catch(() => {});
    if (database) await database.drop().catch((e) => console.error(`e2e: could not drop ${database.name}: ${e.message}`));
    if (gw) {
      console.error(`--- gateway log (${gw.logFile}), exit ${JSON.stringify(stopped)} ---\n${tail(gw.logFile, 80)}`);
    }
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  // ------------------------------------------------------------------ CLI and process

  test('keys create prints only a tg- key; the database stores a hash, and --credits funds the key\'s own prepaid account', async () => {
    for (const k of Object.values(keys)) assert.match(k, /^tg-[0-9A-Za-z]{43,}$/, 'tg- + >= 32 random bytes in base62');
    assert.equal(ctx['create-e2e-main'].stdout.split('\n').filter(Boolean).length, 1, 'stdout is the key alone');
    const row = await keyRow('e2e-main');
    assert.ok(row, 'api_keys row for e2e-main');
    assert.equal(row.credit_limit_nano_usd, null, 'credits belong to the account, not a key limit');
    const account = (await db.query('SELECT * FROM accounts WHERE id = $1', [row.account_id])).rows[0];
    assert.equal(account.prepaid, true);
    assert.equal(account.balance_nano_usd, 5_000_000_000);
    const ledger = (await db.query('SELECT * FROM ledger_entries WHERE account_id = $1', [row.account_id])).rows;
    assert.deepEqual(ledger.map((e) => [e.kind, e.amount_nano_usd]), [['credit', 5_000_000_000]]);
    // Only the SHA-256 is stored: no column holds any 6-character piece of the key after "tg-".
    const stored = JSON.stringify(row);
    for (let i = 3; i + 6 <= keys.main.length; i++) {
      assert.ok(!stored.includes(keys.main.slice(i, i + 6)), `api_keys holds part of the key: ${keys.main.slice(i, i + 6)}`);
    }
    assert.equal(row.key_hash, crypto.createHash('sha256').update(keys.main).digest('hex'));
  });

  test('keys list names the keys without showing them', async () => {
    const r = await runCliOk(['keys', 'list'], { env: ctx.env });
    const out = r.stdout + r.stderr;
    assert.match(out, /e2e-main/);
    assert.match(out, /e2e-revoked/);
    for (const k of Object.values(keys)) assert.ok(!out.includes(k), 'keys list must not print a full key');
  });

  test('serve logs its address; /healthz and /readyz answer 200, also under /api/v1', async () => {
    assert.match(fs.readFileSync(gw.logFile, 'utf8'), new RegExp(`^tollgate: .*listening on http://127\\.0\\.0\\.1:${gw.port}$`, 'm'));
    for (const p of ['/healthz', '/readyz', '/api/v1/healthz', '/api/v1/readyz']) {
      const r = await fetch(`${gw.url}${p}`);
      assert.equal(r.status, 200, p);
    }
  });

  // ------------------------------------------------------------------ models

  test('GET /v1/models and /api/v1/models list the configured models with per-token prices', async () => {
    for (const p of ['/v1/models', '/api/v1/models']) {
      const r = await fetch(`${gw.url}${p}`, { headers: authed() });
      assert.equal(r.status, 200, p);
      const body = await r.json();
      const byId = Object.fromEntries(body.data.map((m) => [m.id, m]));
      const m = byId[MOCK];
      assert.ok(m, `${MOCK} listed at ${p}`);
      assert.equal(m.name, 'Mock: GPT Test');
      assert.equal(m.context_length, 8192);
      for (const [k, v] of Object.entries({ prompt: 1e-6, completion: 2e-6 })) {
        assert.match(m.pricing[k], /^\d+(\.\d+)?$/, `pricing.${k} is a plain decimal string: ${m.pricing[k]}`);
        assert.equal(Number(m.pricing[k]), v, `pricing.${k}`);
      }
      const l = byId[LOCAL];
      assert.ok(l, `${LOCAL} listed`);
      assert.ok(Number.isInteger(l.context_length) && l.context_length > 0, 'local context_length from the GGUF');
      assert.equal(Number(l.pricing.prompt), 1e-8);
      assert.equal(Number(l.pricing.completion), 2e-8);
    }
  });

  test('@openrouter/sdk lists models (strict schema)', async () => {
    const or = new OpenRouter({ apiKey: keys.main, serverURL: `${gw.url}/api/v1` });
    const page = await or.models.list();
    const ids = page.result.data.map((m) => m.id);
    assert.ok(ids.includes(MOCK) && ids.includes(LOCAL), `ids: ${ids}`);
    const m = page.result.data.find((x) => x.id === MOCK);
    assert.equal(Number(m.pricing.prompt), 1e-6);
    assert.equal(Number(m.pricing.completion), 2e-6);
  });

  test('@openrouter/sdk lists a model\'s endpoints (strict schema)', async () => {
    const or = new OpenRouter({ apiKey: keys.main, serverURL: `${gw.url}/api/v1` });
    const r = await or.endpoints.list({ author: 'mock', slug: 'gpt-test' });
    assert.equal(r.data.id, MOCK);
    assert.equal(r.data.endpoints.length, 1);
    const e = r.data.endpoints[0];
    assert.ok(MOCK_PROVIDER_NAMES.includes(e.providerName), `provider ${e.providerName}`);
    assert.equal(Number(e.pricing.prompt), 1e-6);
    assert.equal(Number(e.pricing.completion), 2e-6);
    const missing = await fetch(`${gw.url}/api/v1/models/nobody/nothing/endpoints`);
    assert.equal(missing.status, 404);
    assertErrorShape(assert, await missing.json(), 'unknown model endpoints', { flavor: 'openrouter', status: 404 });
  });

  // ------------------------------------------------------------------ @openrouter/sdk chat

  // The SDK parses every plain answer with its zod schema ChatResult and every streamed chunk with
  // ChatStreamChunk, throwing on the first mismatch; raw bodies are checked against the same
  // schemas too, so that a failure names the field.
  const SDK_CHAT = [
    [LOCAL, { temperature: 0, maxTokens: 24 }, (t) => t.length > 0 && REF.generatedText.startsWith(t)],
    [MOCK, {}, (t) => t === REPLY_TEXT],
  ];
  const rawParams = (p) => ({
    ...(p.temperature !== undefined ? { temperature: p.temperature } : {}),
    ...(p.maxTokens !== undefined ? { max_tokens: p.maxTokens } : {}),
  });

  for (const [model, params, expectText] of SDK_CHAT) {
    test(`@openrouter/sdk chat.send to ${model}, plain: the answer validates`, async () => {
      const messages = [{ role: 'user', content: 'Once upon a time' }];
      const raw = await post('/api/v1/chat/completions', { model, messages, ...rawParams(params) });
      assert.equal(raw.status, 200);
      const body = await raw.json();
      const v = orModels.ChatResult$inboundSchema.safeParse(body);
      assert.ok(v.success, `answer rejected by @openrouter/sdk's ChatResult: ${JSON.stringify(body)}\n${JSON.stringify(v.error?.issues)}`);

      const plain = await openRouter().chat.send({ chatRequest: { model, messages, ...params } });
      assert.ok(!(plain instanceof ReadableStream), 'a plain call answers JSON');
      assert.equal(plain.object, 'chat.completion');
      assert.match(plain.id, /^gen-/);
      assert.equal(plain.model, model);
      assert.ok(expectText(plain.choices[0].message.content), `text ${JSON.stringify(plain.choices[0].message.content)}`);
      assert.equal(plain.choices[0].message.content, body.choices[0].message.content, 'deterministic');
      assert.equal(plain.usage.completionTokens, body.usage.completion_tokens);
    });

    test(`@openrouter/sdk chat.send to ${model}, streamed: every chunk validates, text equals the non-streamed text`, async () => {
      const messages = [{ role: 'user', content: 'Once upon a time' }];
      // The non-streamed answer, read raw so that this test does not depend on the one above.
      const plainRes = await post('/api/v1/chat/completions', { model, messages, ...rawParams(params) });
      assert.equal(plainRes.status, 200);
      const plain = await plainRes.json();
      const plainText = plain.choices[0].message.content;
      assert.ok(expectText(plainText), `plain text ${JSON.stringify(plainText)}`);

      const stream = await openRouter().chat.send({
        chatRequest: { model, messages, ...params, stream: true, streamOptions: { includeUsage: true } },
      });
      assert.ok(stream instanceof ReadableStream, 'a streamed call answers an event stream');
      const chunks = [];
      for await (const c of stream) chunks.push(c); // throws on a chunk the SDK's schema rejects
      assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
      const id = chunks[0].id;
      assert.match(id, /^gen-/);
      assert.ok(chunks.every((c) => c.id === id && c.object === 'chat.completion.chunk' && c.model === model));
      const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
      assert.equal(text, plainText, 'streamed text equals the non-streamed text');
      const finishes = chunks.map((c) => c.choices[0]?.finishReason).filter((f) => f != null);
      assert.deepEqual(finishes, [plain.choices[0].finish_reason], 'one finish reason, as in the plain answer');
      const last = chunks.at(-1);
      assert.deepEqual(last.choices, [], 'the usage chunk comes last, with no choices');
      assert.equal(last.usage.completionTokens, plain.usage.completion_tokens);
      assert.equal(last.usage.promptTokens, plain.usage.prompt_tokens);
      assert.equal(last.usage.cost, plain.usage.cost);

      const row = await usageRow(db, id);
      assert.equal(row.model, model);
      assert.equal(row.streamed, true);
      assert.equal(row.status, 200);
      assert.equal(row.completion_tokens, last.usage.completionTokens);

      // The same stream, raw: no `system_fingerprint: null` (the chunk schema takes a string or
      // nothing), and each chunk passes ChatStreamChunk on its own.
      const r = await post('/api/v1/chat/completions', {
        model, messages, stream: true, stream_options: { include_usage: true }, ...rawParams(params),
      });
      assert.equal(r.status, 200);
      const data = parseSse(await r.text());
      assert.equal(data.at(-1), '[DONE]');
      for (const d of data.slice(0, -1)) {
        const c = JSON.parse(d);
        assert.ok(!('system_fingerprint' in c) || typeof c.system_fingerprint === 'string',
          `system_fingerprint must be a string or absent in a chunk: ${d}`);
        const v = orModels.ChatStreamChunk$inboundSchema.safeParse(c);
        assert.ok(v.success, `chunk rejected by @openrouter/sdk's ChatStreamChunk: ${d}\n${JSON.stringify(v.error?.issues)}`);
      }
    });
  }

  // ------------------------------------------------------------------ mock upstream, chat

  test('chat, plain, to the mock: exact text, usage, cost; request forwarded faithfully', async () => {
    const messages = [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Say hello to the e2e test' },
    ];
    const { data: r, response } = await client.chat.completions.create({
      model: MOCK, messages, max_tokens: 100, temperature: 0.5, top_p: 0.9, seed: 7, stop: ['never-appears'], user: 'e2e-user',
    }).withResponse();
    ctx.plainMockId = r.id;
    ctx.plainMockCost = r.usage?.cost;
    const P = promptTokens({ messages });
    const C = REPLY_PIECES.length;
    assert.equal(P, 18);
    assert.match(r.id, /^gen-/);
    assert.equal(response.headers.get('x-request-id'), r.id);
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, MOCK);
    assert.ok(MOCK_PROVIDER_NAMES.includes(r.provider), `provider: ${r.provider}`);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.usage.prompt_tokens, P);
    assert.equal(r.usage.completion_tokens, C);
    assert.equal(r.usage.total_tokens, P + C);
    assert.equal(r.usage.cost, usd(mockCostNano(P, C)), 'usage.cost in USD, exact');

    const up = mock.last('/v1/chat/completions');
    assert.equal(up.body.model, 'gpt-test-upstream', 'the endpoint model name goes upstream');
    assert.equal(up.headers.authorization, `Bearer ${mock.apiKey}`, 'the provider key goes upstream');
    for (const [h, v] of Object.entries(up.headers)) {
      assert.ok(!String(v).includes(keys.main), `caller key leaked upstream in header ${h}`);
    }
    assert.deepEqual(up.body.messages, messages);
    assert.equal(up.body.max_tokens ?? up.body.max_completion_tokens, 100);
    assert.equal(up.body.temperature, 0.5);
    assert.equal(up.body.top_p, 0.9);
    assert.equal(up.body.seed, 7);
    assert.deepEqual([].concat(up.body.stop), ['never-appears']);
    // Whether the gateway streams from upstream for a non-streamed call is its choice; if it does,
    // it must ask for usage.
    if (up.body.stream) assert.equal(up.body.stream_options?.include_usage, true);

    const row = await usageRow(db, r.id);
    const keyId = (await keyRow('e2e-main')).id;
    assert.equal(String(row.api_key_id), String(keyId));
    assert.equal(row.model, MOCK);
    assert.ok(MOCK_PROVIDER_NAMES.includes(row.provider), `row provider ${row.provider}`);
    assert.equal(row.upstream_model, 'gpt-test-upstream');
    assert.equal(row.prompt_tokens, P);
    assert.equal(row.completion_tokens, C);
    assert.equal(row.cost_nano_usd, mockCostNano(P, C));
    assert.equal(row.status, 200);
    assert.equal(row.finish_reason, 'stop');
    assert.equal(row.streamed, false);
    assert.equal(row.cancelled, false);
    assert.equal(row.usage_estimated, false);
    assert.ok(row.latency_ms >= 0);
    assert.ok(row.finished_at >= row.created_at);
  });

  test('chat, streamed with include_usage, to the mock: one id, usage chunk last with empty choices', async () => {
    const messages = [{ role: 'user', content: 'Stream me something nice' }];
    const { data: stream, response } = await client.chat.completions.create({
      model: MOCK, messages, stream: true, stream_options: { include_usage: true },
    }).withResponse();
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const id = chunks[0].id;
    ctx.streamMockId = id;
    assert.match(id, /^gen-/);
    assert.equal(response.headers.get('x-request-id'), id);
    assert.ok(chunks.every((c) => c.id === id), 'same id on every chunk');
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, REPLY_TEXT, 'content intact across split writes and multi-byte characters');
    const usageChunks = chunks.filter((c) => c.usage);
    assert.equal(usageChunks.length, 1, 'exactly one chunk carries usage');
    assert.equal(usageChunks[0], chunks.at(-1), 'the usage chunk is the last one');
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason === 'stop').length, 1);
    const P = promptTokens({ messages });
    const C = REPLY_PIECES.length;
    const u = chunks.at(-1).usage;
    assert.equal(u.prompt_tokens, P);
    assert.equal(u.completion_tokens, C);
    assert.equal(u.total_tokens, P + C);
    assert.equal(u.cost, usd(mockCostNano(P, C)));

    const up = mock.last('/v1/chat/completions');
    assert.equal(up.body.stream, true);
    assert.equal(up.body.stream_options?.include_usage, true);

    const row = await usageRow(db, id);
    assert.equal(row.streamed, true);
    assert.equal(row.status, 200);
    assert.equal(row.prompt_tokens, P);
    assert.equal(row.completion_tokens, C);
    assert.equal(row.cost_nano_usd, mockCostNano(P, C));
    assert.equal(row.finish_reason, 'stop');
    assert.equal(row.usage_estimated, false);
    assert.ok(row.ttft_ms !== null && row.ttft_ms >= 0 && row.ttft_ms <= row.latency_ms, `ttft ${row.ttft_ms} latency ${row.latency_ms}`);
  });

  test('chat, streamed without include_usage: no usage reaches the caller, yet upstream was asked and the row is exact', async () => {
    const messages = [{ role: 'user', content: 'no usage please' }];
    const stream = await client.chat.completions.create({ model: MOCK, messages, stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.every((c) => !c.usage), 'no chunk carries usage');
    assert.ok(chunks.every((c) => Array.isArray(c.choices) && c.choices.length === 1), 'no empty-choices usage chunk');
    assert.equal(chunks.map((c) => c.choices[0].delta?.content ?? '').join(''), REPLY_TEXT);

    const up = mock.last('/v1/chat/completions');
    assert.equal(up.body.stream_options?.include_usage, true, 'the gateway asks upstream for usage anyway');

    const row = await usageRow(db, chunks[0].id);
    const P = promptTokens({ messages });
    assert.equal(row.prompt_tokens, P);
    assert.equal(row.completion_tokens, REPLY_PIECES.length);
    assert.equal(row.cost_nano_usd, mockCostNano(P, REPLY_PIECES.length));
    assert.equal(row.usage_estimated, false);
  });

  test('raw SSE framing: data: events, UTF-8 intact, ends with data: [DONE]', async () => {
    const body = { model: MOCK, messages: [{ role: 'user', content: 'raw' }], stream: true, max_tokens: 10 };
    const r = await post('/v1/chat/completions', body);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/event-stream/);
    const raw = await r.text();
    const data = parseSse(raw);
    assert.equal(data.at(-1), '[DONE]');
    assert.ok(raw.endsWith('data: [DONE]\n\n'));
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    const want = completionFor(body);
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), want.text);
    assert.equal(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason, 'length');
  });

  test('max_tokens and max_completion_tokens cut the reply (finish_reason length)', async () => {
    const a = await client.chat.completions.create({ model: MOCK, messages: [{ role: 'user', content: 'a' }], max_tokens: 3 });
    assert.equal(a.choices[0].message.content, REPLY_PIECES.slice(0, 3).join(''));
    assert.equal(a.choices[0].finish_reason, 'length');
    assert.equal(a.usage.completion_tokens, 3);
    const b = await client.chat.completions.create({ model: MOCK, messages: [{ role: 'user', content: 'b' }], max_completion_tokens: 4 });
    assert.equal(b.choices[0].message.content, REPLY_PIECES.slice(0, 4).join(''));
    assert.equal(b.usage.completion_tokens, 4);
    assert.equal(b.usage.cost, usd(mockCostNano(promptTokens({ messages: [{ content: 'b' }] }), 4)));
  });

  // ------------------------------------------------------------------ mock upstream, completions

  test('completions to the mock, plain and streamed', async () => {
    const r = await client.completions.create({ model: MOCK, prompt: 'Once upon a time', max_tokens: 5 });
    const up = mock.last('/v1/');
    const kind = up.path.startsWith('/v1/completions') ? 'completions' : 'chat';
    const P = promptTokens(up.body, kind);
    assert.match(r.id, /^gen-/);
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].text, REPLY_PIECES.slice(0, 5).join(''));
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.prompt_tokens, P);
    assert.equal(r.usage.completion_tokens, 5);
    assert.equal(r.usage.cost, usd(mockCostNano(P, 5)));
    const row = await usageRow(db, r.id);
    assert.equal(row.cost_nano_usd, mockCostNano(P, 5));

    const s = await client.completions.create({ model: MOCK, prompt: 'Once upon a time', stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of s) chunks.push(c);
    assert.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), REPLY_TEXT);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, REPLY_PIECES.length);
    assert.equal(last.usage.cost, usd(mockCostNano(last.usage.prompt_tokens, REPLY_PIECES.length)));
    const srow = await usageRow(db, chunks[0].id);
    assert.equal(srow.streamed, true);
    assert.equal(srow.completion_tokens, REPLY_PIECES.length);
  });

  test('app attribution: HTTP-Referer and X-Title reach the usage row and apps (chat, completions, messages)', async () => {
    const headers = { 'HTTP-Referer': 'https://Example.com/path?q=1', 'X-Title': '  My App ' };
    const ids = [];
    for (const [path, body] of [
      ['/v1/chat/completions', { model: MOCK, messages: [{ role: 'user', content: 'app?' }], max_tokens: 5 }],
      ['/v1/completions', { model: MOCK, prompt: 'app?', max_tokens: 5 }],
      ['/v1/messages', { model: MOCK, messages: [{ role: 'user', content: 'app?' }], max_tokens: 5 }],
    ]) {
      const res = await post(path, body, { headers });
      assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
      ids.push(res.headers.get('x-request-id'));
    }
    for (const id of ids) {
      const row = await usageRow(db, id);
      assert.equal(row.app, 'https://example.com', id);
      assert.equal(row.app_title, 'My App', id);
    }
    // A title alone names the app "title:<title>"; X-OpenRouter-Title is read too; neither: NULL.
    const titled = await post('/v1/chat/completions', { model: MOCK, messages: [{ role: 'user', content: 'x' }], max_tokens: 2 },
      { headers: { 'X-OpenRouter-Title': 'Cli Tool' } });
    const plain = await post('/v1/chat/completions', { model: MOCK, messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
    const t = await usageRow(db, titled.headers.get('x-request-id'));
    assert.equal(t.app, 'title:Cli Tool');
    assert.equal(t.app_title, 'Cli Tool');
    const n = await usageRow(db, plain.headers.get('x-request-id'));
    assert.equal(n.app, null);
    assert.equal(n.app_title, null);
    const apps = (await db.query("SELECT app, title FROM apps WHERE app IN ('https://example.com', 'title:Cli Tool') ORDER BY app")).rows;
    assert.deepEqual(apps, [{ app: 'https://example.com', title: 'My App' }, { app: 'title:Cli Tool', title: 'Cli Tool' }]);
    const rolled = await db.query("SELECT sum(requests)::int AS n FROM usage_rollup_1d WHERE app = 'https://example.com'");
    assert.equal(rolled.rows[0].n, 3);
  });

  test('usage prune creates the partitions a week ahead and keeps rows within retention', async () => {
    const ahead = "'usage_events_p' || to_char((now() AT TIME ZONE 'UTC')::date + 7, 'YYYYMMDD')";
    await db.query(`DO $$ BEGIN EXECUTE 'DROP TABLE IF EXISTS ' || ${ahead}; END $$`);
    const before = (await db.query('SELECT count(*)::int AS n FROM usage_events')).rows[0].n;
    const r = await runCliOk(['usage', 'prune', '--retention-days', '30'], { env: ctx.env });
    assert.match(r.stdout, /^1 daily partitions created, 0 dropped \(raw rows older than 30 days removed\)/);
    assert.equal((await db.query(`SELECT to_regclass(${ahead}) IS NOT NULL AS ok`)).rows[0].ok, true);
    assert.equal((await db.query('SELECT count(*)::int AS n FROM usage_events')).rows[0].n, before);
    const bad = await runCli(['usage', 'prune', '--retention-days', '-1'], { env: ctx.env });
    assert.equal(bad.code, 2);
  });

  // ------------------------------------------------------------------ local model

  test('local model, chat, greedy: reproduces the reference text exactly', async () => {
    const r = await client.chat.completions.create({
      model: LOCAL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: REF.generatedTokens,
    });
    assert.equal(r.choices[0].message.content, REF.generatedText);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.ok(LOCAL_PROVIDER_NAMES.includes(r.provider), `provider: ${r.provider}`);
    assert.equal(r.usage.prompt_tokens, REF.promptTokensWithBos, 'prompt tokens count BOS, as llama.cpp does');
    assert.equal(r.usage.completion_tokens, REF.generatedTokens);
    const nano = localCostNano(REF.promptTokensWithBos, REF.generatedTokens);
    assert.equal(r.usage.cost, usd(nano));
    const row = await usageRow(db, r.id);
    assert.equal(row.model, LOCAL);
    assert.ok(LOCAL_PROVIDER_NAMES.includes(row.provider), `row provider ${row.provider}`);
    assert.equal(row.prompt_tokens, REF.promptTokensWithBos);
    assert.equal(row.completion_tokens, REF.generatedTokens);
    assert.equal(row.cost_nano_usd, nano);
    assert.equal(row.status, 200);
    assert.equal(row.streamed, false);
    assert.equal(row.finish_reason, 'length');
  });

  test('local model, chat, greedy with logit_bias and penalties: the sampler honours them', async () => {
    const ask = (extra) => client.chat.completions.create({
      model: LOCAL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: 8, ...extra,
    });
    const plain = (await ask({})).choices[0].message.content;
    assert.ok(REF.generatedText.startsWith(plain), 'greedy without extras is the reference');
    // Banning the reference's first token changes the answer's start; min_p and top_k with greedy change nothing.
    const banned = (await ask({ logit_bias: { [String(REF.generatedIds[0])]: -100 } })).choices[0].message.content;
    assert.notEqual(banned.slice(0, 3), plain.slice(0, 3), `banned first token: ${JSON.stringify(banned)}`);
    assert.equal((await ask({ min_p: 0.1, top_k: 5 })).choices[0].message.content, plain);
    // A strong repetition penalty steers greedy decoding away from the reference.
    const penalised = (await ask({ repetition_penalty: 2, max_tokens: 24 })).choices[0].message.content;
    assert.notEqual(penalised, REF.generatedText.slice(0, penalised.length), `penalised: ${JSON.stringify(penalised)}`);
    // Out of range: a 400 naming the field.
    await assert.rejects(ask({ logit_bias: { 5: 101 } }), (e) => e.status === 400 && /logit_bias/.test(e.message));
  });

  test('local model, chat, streamed with include_usage: same text as plain', async () => {
    const N = 40;
    const body = { model: LOCAL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: N };
    const plain = await client.chat.completions.create(body);
    const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.ok(text.length > 0);
    assert.ok(REF.generatedText.startsWith(text), `streamed text is a prefix of the reference: ${JSON.stringify(text)}`);
    assert.equal(text, plain.choices[0].message.content);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, N);
    assert.equal(last.usage.prompt_tokens, REF.promptTokensWithBos);
    assert.equal(last.usage.cost, usd(localCostNano(REF.promptTokensWithBos, N)));
    const row = await usageRow(db, chunks[0].id);
    assert.equal(row.streamed, true);
    assert.equal(row.completion_tokens, N);
    assert.equal(row.cost_nano_usd, localCostNano(REF.promptTokensWithBos, N));
    assert.ok(row.ttft_ms !== null && row.ttft_ms <= row.latency_ms);
  });

  test('local model, completions: raw prompt, reference text; streamed prefix', async () => {
    const r = await client.completions.create({ model: LOCAL, prompt: 'Once upon a time', temperature: 0, max_tokens: REF.generatedTokens });
    assert.equal(r.choices[0].text, REF.generatedText);
    assert.equal(r.usage.completion_tokens, REF.generatedTokens);
    assert.equal(r.usage.prompt_tokens, REF.promptTokensWithBos);
    const s = await client.completions.create({ model: LOCAL, prompt: 'Once upon a time', temperature: 0, max_tokens: 20, stream: true });
    let text = '';
    const ids = new Set();
    for await (const c of s) {
      text += c.choices[0]?.text ?? '';
      ids.add(c.id);
      assert.ok(!c.usage, 'no usage without include_usage');
    }
    assert.equal(ids.size, 1);
    assert.ok(text.length > 0 && REF.generatedText.startsWith(text), JSON.stringify(text));
    const row = await usageRow(db, [...ids][0]);
    assert.equal(row.completion_tokens, 20);
    assert.equal(row.streamed, true);
  });

  test('the /api/v1 base path serves the same API (OpenRouter clients)', async () => {
    const orClient = new OpenAI({ apiKey: keys.main, baseURL: `${gw.url}/api/v1`, maxRetries: 0 });
    const r = await orClient.chat.completions.create({ model: LOCAL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: 8 });
    assert.match(r.id, /^gen-/);
    assert.ok(REF.generatedText.startsWith(r.choices[0].message.content));
    assert.equal(r.usage.completion_tokens, 8);
  });

  test('pipelined non-streamed requests on one connection are all answered, in order', async () => {
    // While a non-streamed call runs, the gateway watches the socket for the client leaving;
    // a pipelined request arriving meanwhile must not be mistaken for that, nor stall anything.
    const url = new URL(gw.url);
    // The first call generates long enough (~200 tokens) for the next requests to arrive during it.
    const body = (n) => JSON.stringify({ model: LOCAL, messages: [{ role: 'user', content: `Once upon a time ${n}` }], max_tokens: n === 1 ? 200 : 8 });
    const request = (n, last) => `POST /v1/chat/completions HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${keys.main}\r\n`
      + `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body(n))}\r\n${last ? 'Connection: close\r\n' : ''}\r\n${body(n)}`;
    const raw = await new Promise((resolve, reject) => {
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(request(1, false));
        setTimeout(() => socket.write(request(2, false) + request(3, true)), 1);
      });
      let data = '';
      socket.setEncoding('utf8');
      socket.on('data', (d) => { data += d; });
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
      socket.setTimeout(20000, () => { socket.destroy(); reject(new Error(`no full answer in 20 s; got: ${data.slice(0, 300)}`)); });
    });
    // Responses follow each other directly (a body is not newline-terminated).
    const statuses = [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 200, 200], raw.slice(0, 500));
  });

  test('concurrent calls all succeed, each with its own row', async () => {
    const calls = [];
    for (let i = 0; i < 4; i++) {
      calls.push(client.chat.completions.create({ model: MOCK, messages: [{ role: 'user', content: `parallel ${i}` }] }));
      calls.push(client.chat.completions.create({ model: LOCAL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: 16 }));
    }
    const rs = await Promise.all(calls);
    const ids = rs.map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length, 'distinct ids');
    rs.forEach((r, i) => {
      if (i % 2 === 0) {
        assert.equal(r.choices[0].message.content, REPLY_TEXT);
      } else {
        assert.equal(r.usage.completion_tokens, 16);
        assert.ok(REF.generatedText.startsWith(r.choices[0].message.content), 'local output under load');
      }
    });
    for (const r of rs) {
      const row = await usageRow(db, r.id);
      assert.equal(row.completion_tokens, r.usage.completion_tokens);
      assert.equal(usd(row.cost_nano_usd), r.usage.cost);
    }
  });

  // ------------------------------------------------------------------ generation lookup

  test('@openrouter/sdk fetches a generation by id (strict schema)', async () => {
    const or = new OpenRouter({ apiKey: keys.main, serverURL: `${gw.url}/api/v1` });
    const id = ctx.plainMockId;
    assert.ok(id, 'needs the plain mock call above');
    const g = await waitFor(() => or.generations.getGeneration({ id }), { what: `generation ${id}` });
    const d = g.data;
    assert.equal(d.id, id);
    assert.equal(d.model, MOCK);
    assert.ok(MOCK_PROVIDER_NAMES.includes(d.providerName), `providerName ${d.providerName}`);
    assert.equal(d.tokensPrompt, 18);
    assert.equal(d.tokensCompletion, REPLY_PIECES.length);
    assert.equal(d.totalCost, ctx.plainMockCost);
    assert.equal(d.finishReason, 'stop');
    assert.equal(d.streamed, false);
    assert.ok(typeof d.latency === 'number' && d.latency >= 0, `latency ${d.latency}`);
    assert.ok(!Number.isNaN(Date.parse(d.createdAt)), `createdAt ${d.createdAt}`);

    const raw = await fetch(`${gw.url}/api/v1/generation?id=${encodeURIComponent(ctx.streamMockId)}`, { headers: authed() });
    assert.equal(raw.status, 200);
    const body = await raw.json();
    assert.equal(body.data.id, ctx.streamMockId);
    assert.equal(body.data.streamed, true);
    assert.equal(body.data.tokens_completion, REPLY_PIECES.length);
    assert.ok(body.data.generation_time === null || body.data.generation_time >= 0);
  });

  test('a key sees only its own generations; unknown ids are 404', async () => {
    assert.ok(ctx.plainMockId, 'needs the plain mock call above');
    const other = await fetch(`${gw.url}/api/v1/generation?id=${encodeURIComponent(ctx.plainMockId)}`, { headers: authed(keys.other) });
    assert.equal(other.status, 404);
    assertErrorShape(assert, await other.json(), 'other key', { flavor: 'openrouter', status: 404 });
    const unknown = await fetch(`${gw.url}/api/v1/generation?id=gen-doesnotexist`, { headers: authed() });
    assert.equal(unknown.status, 404);
    assertErrorShape(assert, await unknown.json(), 'unknown id', { flavor: 'openrouter', status: 404 });
    const noauth = await fetch(`${gw.url}/api/v1/generation?id=${encodeURIComponent(ctx.plainMockId)}`);
    assert.equal(noauth.status, 401);
    assertErrorShape(assert, await noauth.json(), 'no key', { flavor: 'openrouter', status: 401 });
  });

  test('@openrouter/sdk throws its typed errors for gateway errors (integer code under /api/v1)', async () => {
    const or = openRouter();
    const typed = (Cls, status) => (e) => {
      assert.ok(!(e instanceof orErrors.ResponseValidationError),
        `the SDK could not parse the error body: ${e.pretty?.() ?? e.message}`);
      assert.ok(e instanceof Cls, `expected ${Cls.name}, got ${e?.name}: ${e?.message}`);
      assert.equal(e.statusCode, status);
      assert.equal(e.error.code, status, 'error.code is the HTTP status');
      assert.equal(typeof e.error.message, 'string');
      assert.ok(e.error.message.length > 0);
      return true;
    };
    await assert.rejects(or.generations.getGeneration({ id: 'gen-nope' }), typed(orErrors.NotFoundResponseError, 404));
    const messages = [{ role: 'user', content: 'hi' }];
    await assert.rejects(or.chat.send({ chatRequest: { model: 'nope/nothing', messages } }),
      typed(orErrors.NotFoundResponseError, 404));
    await assert.rejects(or.chat.send({ chatRequest: { model: 'nope/nothing', messages, stream: true } }),
      typed(orErrors.NotFoundResponseError, 404));
    const bogus = openRouter('tg-notarealkeynotarealkeynotarealkeynotarealkey');
    await assert.rejects(bogus.generations.getGeneration({ id: 'gen-nope' }), typed(orErrors.UnauthorizedResponseError, 401));
    await assert.rejects(bogus.chat.send({ chatRequest: { model: MOCK, messages } }), typed(orErrors.UnauthorizedResponseError, 401));
  });

  test('the same errors under /v1 keep OpenAI\'s string-or-null code; /api/v1 has the status and metadata.reason', async () => {
    const cases = [
      ['unknown generation', 'GET', '/generation?id=gen-nope', null, keys.main, 404],
      ['unknown model', 'POST', '/chat/completions', { model: 'nope/nothing', messages: [{ role: 'user', content: 'hi' }] }, keys.main, 404],
      ['unknown model, completions', 'POST', '/completions', { model: 'nope/nothing', prompt: 'hi' }, keys.main, 404],
      ['malformed JSON', 'POST', '/chat/completions', '{"model": [', keys.main, 400],
      ['messages not a list', 'POST', '/chat/completions', { model: MOCK, messages: 'hi' }, keys.main, 400],
      ['bad key', 'GET', '/generation?id=gen-nope', null, 'tg-notarealkeynotarealkeynotarealkeynotarealkey', 401],
      ['no key', 'POST', '/chat/completions', { model: MOCK, messages: [{ role: 'user', content: 'hi' }] }, null, 401],
    ];
    for (const [name, method, p, body, key, status] of cases) {
      const call = (base) => fetch(`${gw.url}${base}${p}`, {
        method,
        headers: { ...(body !== null ? { 'content-type': 'application/json' } : {}), ...(key ? authed(key) : {}) },
        ...(body !== null ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
      });
      const v1 = await call('/v1');
      assert.equal(v1.status, status, `${name} /v1: status`);
      const a = await v1.json();
      assertErrorShape(assert, a, `${name} /v1`, { flavor: 'openai' });
      const api = await call('/api/v1');
      assert.equal(api.status, status, `${name} /api/v1: status`);
      const b = await api.json();
      assertErrorShape(assert, b, `${name} /api/v1`, { flavor: 'openrouter', status });
      assert.equal(b.error.type, a.error.type, `${name}: same type under both paths`);
      assert.equal(b.error.param, a.error.param, `${name}: same param under both paths`);
      if (typeof a.error.code === 'string') {
        assert.equal(b.error.metadata?.reason, a.error.code, `${name}: /api/v1 error.metadata.reason carries /v1's code`);
      } else {
        assert.equal(b.error.metadata?.reason, undefined, `${name}: no reason under /api/v1 when /v1's code is null`);
      }
    }
    // The openai client reads /v1's errors as before.
    await assert.rejects(client.chat.completions.create({ model: 'nope/nothing', messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof OpenAI.NotFoundError && (e.code === null || typeof e.code === 'string'));
  });

  // ------------------------------------------------------------------ rejected calls

  test('rejected calls: right status, OpenAI error shape, server stays up, nothing billed', async () => {
    await sleep(300); // let earlier rows flush
    const since = (await db.query('SELECT now() AS t')).rows[0].t;
    const before = await db.query('SELECT count(*)::int AS n, coalesce(sum(cost_nano_usd), 0)::bigint AS cost FROM usage_events');
    const spentBefore = (await keyRow('e2e-main')).spent_nano_usd;
    const good = { model: MOCK, messages: [{ role: 'user', content: 'hi' }] };
    const cases = [
      ['no key', () => post('/v1/chat/completions', good, { key: null }), 401],
      ['bad key', () => post('/v1/chat/completions', good, { key: 'tg-notarealkeynotarealkeynotarealkeynotarealkey' }), 401],
      ['revoked key', () => post('/v1/chat/completions', good, { key: keys.revoked }), 401],
      ['unknown model', () => post('/v1/chat/completions', { ...good, model: 'nope/nothing' }), 404],
      ['missing model', () => post('/v1/chat/completions', { messages: good.messages }), 400],
      ['messages not a list', () => post('/v1/chat/completions', { model: MOCK, messages: 'hi' }), 400],
      ['malformed JSON', () => post('/v1/chat/completions', '{"model": "mock/gpt-test", "messages": [}'), 400],
      ['unknown route', () => fetch(`${gw.url}/v1/nope`, { headers: authed() }), 404],
      ['unknown model, completions', () => post('/v1/completions', { model: 'nope/nothing', prompt: 'x' }), 404],
      ['malformed JSON, /api/v1', () => post('/api/v1/chat/completions', 'not json'), 400],
      ['body over max_body_bytes', () => post('/v1/chat/completions', { ...good, messages: [{ role: 'user', content: 'x'.repeat(128 * 1024) }] }), 413],
    ];
    for (const [name, call, status] of cases) {
      const r = await call();
      assert.equal(r.status, status, `${name}: status`);
      assertErrorShape(assert, await r.json(), name, { flavor: errorFlavor(r.url), status });
    }
    // The official client maps them to its error classes.
    const bad = new OpenAI({ apiKey: 'tg-bogus', baseURL: `${gw.url}/v1`, maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create(good), (e) => e instanceof OpenAI.AuthenticationError);
    await assert.rejects(client.chat.completions.create({ ...good, model: 'nope/nothing' }), (e) => e instanceof OpenAI.NotFoundError);

    assert.equal((await fetch(`${gw.url}/healthz`)).status, 200, 'server still up');
    await sleep(400);
    const afterQ = await db.query('SELECT count(*)::int AS n, coalesce(sum(cost_nano_usd), 0)::bigint AS cost FROM usage_events');
    assert.equal(afterQ.rows[0].cost, before.rows[0].cost, 'no cost recorded for rejected calls');
    const nonzero = await db.query('SELECT request_id, status FROM usage_events WHERE created_at >= $1 AND cost_nano_usd <> 0', [since]);
    assert.deepEqual(nonzero.rows, []);
    assert.equal((await keyRow('e2e-main')).spent_nano_usd, spentBefore, 'spent unchanged');
  });

  // ------------------------------------------------------------------ upstream failures

  test('upstream errors reach the caller OpenAI-shaped, without the provider key, and are not billed', async () => {
    for (const [model, ok] of [
      ['mock/error-429', (s) => s === 429],
      ['mock/error-500', (s) => s >= 500 && s <= 504],
      ['mock/error-401', (s) => s >= 400 && s !== 200],
    ]) {
      const r = await post('/v1/chat/completions', { model, messages: [{ role: 'user', content: 'x' }] });
      assert.ok(ok(r.status), `${model}: status ${r.status}`);
      const text = await r.text();
      assert.ok(!text.includes(mock.apiKey), `${model}: provider key leaked`);
      assertErrorShape(assert, JSON.parse(text), model, { flavor: 'openai' });
      const up = mock.last('/v1/chat/completions');
      assert.equal(up.body.model, model.replace('mock/', 'mock-'), `${model}: the call reached the mock`);
      const id = r.headers.get('x-request-id');
      assert.match(id ?? '', /^gen-/, `${model}: x-request-id on the error response`);
      const row = await usageRow(db, id);
      assert.equal(row.model, model);
      assert.equal(row.status, r.status, `${model}: the row records the status the caller got`);
      assert.equal(row.cost_nano_usd, 0, `${model}: not billed`);
      assert.equal(row.cancelled, false);
    }
  });

  test('an error event mid-stream reaches the caller as an SSE error', async () => {
    const s = await client.chat.completions.create({ model: 'mock/midstream-error', messages: [{ role: 'user', content: 'x' }], stream: true });
    let text = '';
    await assert.rejects((async () => { for await (const c of s) text += c.choices[0]?.delta?.content ?? ''; })(), (e) => e instanceof OpenAI.APIError);
    assert.equal(text, 'Hello from');
    assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
  });

  test('a stream whose upstream never reports usage is metered with estimated counts', async () => {
    const s = await client.chat.completions.create({ model: 'mock/no-usage', messages: [{ role: 'user', content: 'x' }], stream: true });
    const chunks = [];
    for await (const c of s) chunks.push(c);
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), REPLY_TEXT);
    const row = await usageRow(db, chunks[0].id);
    assert.equal(row.usage_estimated, true);
    assert.ok(row.completion_tokens > 0 && row.prompt_tokens > 0);
  });

  test('a client that goes away mid-stream cancels the upstream call and is recorded as cancelled', async () => {
    const s = await client.chat.completions.create({ model: 'mock/slow', messages: [{ role: 'user', content: 'x' }], stream: true });
    let id;
    let n = 0;
    for await (const c of s) {
      id = c.id;
      if (++n >= 3) break; // breaking out aborts the HTTP request
    }
    assert.equal(n, 3, 'three chunks arrived before the client left');
    assert.match(id, /^gen-/);
    const up = mock.last('/v1/chat/completions');
    assert.equal(up.body.model, 'mock-slow');
    await waitFor(() => up.aborted, { timeoutMs: 5000, what: 'the gateway to close the upstream stream' });
    const row = await usageRow(db, id);
    assert.equal(row.cancelled, true);
    assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
  });

  test('a non-streamed call whose client hangs up is cancelled upstream and recorded as 499, cancelled', async () => {
    // A key of its own, so that its only row is this call's (nothing reached the client, not
    // even the request id).
    const key = (await runCliOk(['keys', 'create', '--name', 'e2e-abort'], { env: ctx.env })).stdout.trim();
    const keyId = (await keyRow('e2e-abort')).id;
    const marker = `abort-me-${Date.now()}`;
    const ac = new AbortController();
    const call = fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...authed(key) },
      body: JSON.stringify({ model: 'mock/slow', messages: [{ role: 'user', content: marker }] }),
      signal: ac.signal,
    });
    const up = await waitFor(() => mock.requests.find((r) => r.rawBody.includes(marker)), { what: 'the call to reach the mock' });
    await sleep(300);
    ac.abort();
    await assert.rejects(call, (e) => e.name === 'AbortError', 'the gateway must not have answered yet (the mock waits 10 s)');
    // The mock would answer after 10 s; the gateway must hang up on it well before.
    // (The gateway may stream from upstream even for a non-streamed call: the mock then streams
    // 200 pieces over 10 s; either way `closed` means it hung up before the mock was done.)
    await waitFor(() => up.closed, { timeoutMs: 5000, what: 'the gateway to close the upstream request' });
    assert.ok(up.closedAt - up.receivedAt < 9000, `upstream closed ${up.closedAt - up.receivedAt} ms after it arrived`);

    const row = await waitFor(async () => {
      const r = await db.query('SELECT * FROM usage_events WHERE api_key_id = $1', [keyId]);
      return r.rows.length ? r.rows : null;
    }, { what: 'the usage row of the abandoned call' });
    assert.equal(row.length, 1, `one row: ${JSON.stringify(row)}`);
    assert.equal(row[0].model, 'mock/slow');
    assert.equal(row[0].streamed, false);
    assert.equal(row[0].status, 499);
    assert.equal(row[0].cancelled, true);
    assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
  });

  // ------------------------------------------------------------------ ledger

  test('a key created a moment ago works at once; concurrent calls cannot overspend its credit', async () => {
    // Worst case of one call below: prompt <= 2 bytes + 8 + 1 = 11 tokens at $1/M, plus
    // max_tokens 20 at $2/M = 51,000 nano-USD. A limit of 80,000 admits one such call at a time.
    const r = await runCliOk(['keys', 'create', '--name', 'e2e-small', '--credits', '0.00008'], { env: ctx.env });
    const small = r.stdout.trim();
    const body = { model: 'mock/slow', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20, stream: true };
    const responses = await Promise.all(Array.from({ length: 5 }, () => post('/v1/chat/completions', body, { key: small })));
    const statuses = responses.map((x) => x.status).sort();
    await Promise.all(responses.map((x) => x.text()));
    assert.deepEqual(statuses, [200, 402, 402, 402, 402]);
    for (const x of responses.filter((y) => y.status === 402)) {
      assert.equal(x.headers.get('content-type'), 'application/json');
    }
  });

  test('a key limit, an expiry, allowed models and a disabled account are enforced with their own errors', async () => {
    const created = await runCliOk(['accounts', 'create', '--name', 'e2e-limits', '--postpaid'], { env: ctx.env });
    const account = (await db.query("SELECT id FROM accounts WHERE name = 'e2e-limits'")).rows[0].id;
    assert.ok(account, created.stderr);
    const make = async (name, extra) => (await runCliOk(['keys', 'create', '--account', String(account), '--name', name, ...extra],
      { env: ctx.env })).stdout.trim();
    const limited = await make('e2e-limited', ['--limit', '0.00002', '--limit-reset', 'daily']);
    const expired = await make('e2e-expired', ['--expires', '2020-01-01T00:00:00Z']);
    const onlyLocal = await make('e2e-only-local', ['--models', 'local/stories260k']);
    const body = { model: 'mock/gpt-test', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20 };

    // Worst case 11 prompt tokens at $1/M + 20 at $2/M = $0.000051 > the $0.00002 daily limit.
    let r = await post('/v1/chat/completions', body, { key: limited });
    assert.equal(r.status, 402);
    let e = (await r.json()).error;
    assert.match(e.message, /key limit/);
    assert.match(e.message, /daily/);
    assert.match(e.message, /\$0\.000051/, 'names what the call may cost');

    r = await post('/v1/chat/completions', body, { key: expired });
    assert.equal(r.status, 401);
    e = (await r.json()).error;
    assert.equal(e.code, 'expired_api_key');

    r = await post('/v1/chat/completions', body, { key: onlyLocal });
    assert.equal(r.status, 403);
    e = (await r.json()).error;
    assert.equal(e.code, 'model_not_allowed');
    assert.match(e.message, /local\/stories260k/);
    r = await post('/v1/chat/completions', { ...body, model: 'local/stories260k', max_tokens: 4 }, { key: onlyLocal });
    assert.equal(r.status, 200);
    await r.text();

    // Disabling the account refuses its keys within a second (LISTEN/NOTIFY), with the reason.
    await runCliOk(['accounts', 'disable', String(account)], { env: ctx.env });
    const refused = await waitFor(async () => {
      const x = await post('/v1/chat/completions', { ...body, model: 'local/stories260k', max_tokens: 4 }, { key: onlyLocal });
      const j = await x.json().catch(() => ({}));
      return x.status === 401 ? j.error : null;
    }, { timeoutMs: 1000, intervalMs: 20, what: 'the disabled account refused' });
    assert.equal(refused.code, 'account_disabled');
    assert.equal((await db.query('SELECT count(*)::int AS n FROM usage_events u JOIN api_keys k ON k.id = u.api_key_id WHERE k.name = $1',
      ['e2e-limited'])).rows[0].n, 0, 'a refused call is never billed');
  });

  test('/metrics counts the metered calls, their tokens and the usage rows written', async () => {
    // Wait until every row is durable, then compare the counters with the database.
    await waitFor(async () => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      return /tollgate_background\{item="usage_rows_pending"\} 0\b/.test(text);
    }, { what: 'no usage rows pending' });
    const res = await fetch(`${gw.url}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    const value = (re) => {
      const m = re.exec(text);
      assert.ok(m, `metric ${re} in /metrics`);
      return Number(m[1]);
    };
    const rows = await db.query(
      "SELECT coalesce(sum(prompt_tokens), 0)::bigint AS p, count(*)::bigint AS n FROM usage_events WHERE model = $1", [LOCAL]);
    const promptTokens = value(/tollgate_tokens_total\{kind="prompt",model="local\/stories260k",provider="Local"\} (\d+)/);
    assert.equal(promptTokens, rows.rows[0].p, 'prompt tokens counted = prompt tokens stored for the local model');
    const written = value(/tollgate_background\{item="usage_rows_written"\} (\d+)/);
    const all = await db.query('SELECT count(*)::bigint AS n FROM usage_events');
    assert.equal(written, all.rows[0].n, 'rows written = rows in usage_events');
    assert.ok(!text.includes('tg-'), 'no key in /metrics');
  });

  test('spent_nano_usd of the key equals the sum of its rows', async () => {
    const keyId = (await keyRow('e2e-main')).id;
    await waitFor(async () => {
      const s = await db.query('SELECT coalesce(sum(cost_nano_usd), 0)::bigint AS cost FROM usage_events WHERE api_key_id = $1', [keyId]);
      const k = await keyRow('e2e-main');
      return s.rows[0].cost > 0 && s.rows[0].cost === k.spent_nano_usd;
    }, { what: 'spent_nano_usd = sum(cost_nano_usd)' });
  });
});

// A second gateway with a short server.request_timeout_ms: calls that outlive it end as timeouts
// (504), whether or not anything reached the caller yet, and are recorded so, not as cancelled.
describe('tollgate request timeout', { timeout: 120000 }, () => {
  const TIMEOUT_MS = 1500;
  let workDir;
  let database;
  let mock;
  let gw;
  let db;
  let key;

  before(async () => {
    workDir = makeWorkDir('e2e-timeout');
    mock = await startMockOpenAI();
    database = await createDatabase(pg, 'tollgate_e2e_timeout');
    const env = { TOLLGATE_DATABASE_URL: database.url };
    await runCliOk(['migrate'], { env });
    key = (await runCliOk(['keys', 'create', '--name', 'e2e-timeout'], { env })).stdout.trim();
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    const config = writeConfig(workDir, {
      databaseUrl: database.url, mockBaseURL: mock.baseURL, mockApiKey: mock.apiKey,
      modelPath: `${modelDir()}/stories260K.gguf`, requestTimeoutMs: TIMEOUT_MS,
    });
    assert.match(fs.readFileSync(config, 'utf8'), new RegExp(`^server:\\n(  .*\\n)*  request_timeout_ms: ${TIMEOUT_MS}\\n`, 'm'));
    gw = await startGateway({ configPath: config, workDir, env });
  });

  after(async () => {
    let stopped;
    if (gw) stopped = await gw.stop('SIGTERM'); // by PID, SIGKILL after a grace period
    if (mock) await mock.close();
    if (db) await db.end().catch(() => {});
    if (database) await database.drop().catch((e) => console.error(`e2e: could not drop ${database.name}: ${e.message}`));
    if (gw) console.error(`--- timeout gateway log (${gw.logFile}), exit ${JSON.stringify(stopped)} ---\n${tail(gw.logFile, 40)}`);
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  const post = (p, body) => fetch(`${gw.url}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  const upstreamOf = (marker) => mock.requests.find((r) => r.rawBody.includes(marker));

  test('non-streamed: 504 with an OpenAI-shaped error; the row says 504, not cancelled', async () => {
    const marker = `timeout-plain-${Date.now()}`;
    const t0 = Date.now();
    const r = await post('/v1/chat/completions', { model: 'mock/slow', messages: [{ role: 'user', content: marker }] });
    const elapsed = Date.now() - t0;
    assert.equal(r.status, 504, `status after ${elapsed} ms`);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
    assertErrorShape(assert, await r.json(), 'timeout', { flavor: 'openai' });
    assert.ok(elapsed >= TIMEOUT_MS - 100, `answered after ${elapsed} ms, before the timeout`);
    assert.ok(elapsed < 8000, `answered after ${elapsed} ms; the mock would have answered at 10 s`);
    const id = r.headers.get('x-request-id');
    assert.match(id ?? '', /^gen-/, 'x-request-id on the timeout response');

    const up = upstreamOf(marker);
    assert.ok(up, 'the call reached the mock');
    await waitFor(() => up.closed, { timeoutMs: 3000, what: 'the gateway to stop the upstream call after the timeout' });

    const row = await usageRow(db, id);
    assert.equal(row.model, 'mock/slow');
    assert.equal(row.streamed, false);
    assert.equal(row.status, 504);
    assert.equal(row.cancelled, false);
    assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
  });

  for (const base of ['/v1', '/api/v1']) {
    test(`streamed under ${base}: 200, content, then an error event; the row says 504, not cancelled`, async () => {
      const marker = `timeout-stream-${Date.now()}`;
      const t0 = Date.now();
      const r = await post(`${base}/chat/completions`, { model: 'mock/slow', messages: [{ role: 'user', content: marker }], stream: true });
      assert.equal(r.status, 200);
      assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/);
      const id = r.headers.get('x-request-id');
      assert.match(id ?? '', /^gen-/);
      const raw = await r.text();
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= TIMEOUT_MS - 100 && elapsed < 8000, `stream ended after ${elapsed} ms`);
      const data = parseSse(raw).filter((d) => d !== '[DONE]');
      const events = data.map((d) => JSON.parse(d));
      const errAt = events.findIndex((e) => e.error !== undefined);
      assert.ok(errAt > 0, `an error event after some chunks; got ${raw.slice(-400)}`);
      assert.equal(errAt, events.length - 1, 'the error event is the last event (but for [DONE])');
      const text = events.slice(0, errAt).map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
      assert.match(text, /^( w\d+)+$/, `content before the error: ${JSON.stringify(text)}`);
      const errEvent = events[errAt];
      assert.equal(typeof errEvent.error.message, 'string');
      assert.ok(errEvent.error.message.length > 0);
      if (base === '/v1') {
        assert.ok(errEvent.error.code === null || typeof errEvent.error.code === 'string', `/v1 error.code: ${JSON.stringify(errEvent.error)}`);
      } else {
        assert.equal(errEvent.error.code, 504, `/api/v1 error.code: ${JSON.stringify(errEvent.error)}`);
      }

      const row = await usageRow(db, id);
      assert.equal(row.streamed, true);
      assert.equal(row.status, 504);
      assert.equal(row.cancelled, false);
      assert.equal((await fetch(`${gw.url}/healthz`)).status, 200);
    });
  }

  test('the openai client sees the timeout as an API error', async () => {
    const client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: 'mock/slow', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.APIError && e.status === 504);
    const s = await client.chat.completions.create({ model: 'mock/slow', messages: [{ role: 'user', content: 'x' }], stream: true });
    let text = '';
    await assert.rejects((async () => { for await (const c of s) text += c.choices[0]?.delta?.content ?? ''; })(),
      (e) => e instanceof OpenAI.APIError);
    assert.ok(text.length > 0, 'content arrived before the timeout');
  });

  test('calls that finish in time are unaffected', async () => {
    const client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: MOCK, messages: [{ role: 'user', content: 'quick' }] });
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    const row = await usageRow(db, r.id);
    assert.equal(row.status, 200);
  });
});

// A short check that needs no gateway: CLI errors are reported, not crashes.
describe('tollgate CLI', { timeout: 60000 }, () => {
  test('an unknown command exits non-zero with a message', async () => {
    const r = await runCli(['no-such-command']);
    assert.notEqual(r.code, 0);
    assert.ok((r.stderr + r.stdout).length > 0);
  });
});
