// The mock Anthropic upstream, driven scenario by scenario with the official @anthropic-ai/sdk
// (no gateway): if the SDK's stream helper assembles what the mock streams, its typed errors come
// out with the right status and it reads the usage, the mock speaks the real Messages API format.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { E2E_DIR } from '../lib/harness.mjs';
import {
  ANTHROPIC_VERSION, answerFor, promptTokens, startMockAnthropic,
} from '../mock_anthropic.mjs';
import {
  CJK_TEXT, JSON_TEXT, REASONING_SIGNATURE, REASONING_TEXT, REPLY_PIECES, REPLY_TEXT, TOOL_ARGS, TOOL_ARGS_2,
} from '../mock_openai.mjs';

if (!fs.existsSync(path.join(E2E_DIR, 'node_modules', '@anthropic-ai', 'sdk', 'package.json'))) {
  throw new Error(`e2e: ${path.join(E2E_DIR, 'node_modules', '@anthropic-ai/sdk')} is missing. Run \`npm ci\` in ${E2E_DIR}.`);
}
const { default: Anthropic } = await import('@anthropic-ai/sdk');
const { jsonSchemaOutputFormat } = await import('@anthropic-ai/sdk/helpers/json-schema');

const TOOLS = [
  { name: 'get_weather', description: 'Current weather', input_schema: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] } },
  { name: 'get_time', description: 'Local time', input_schema: { type: 'object', properties: { city: { type: 'string' } } } },
];
const USER = [{ role: 'user', content: 'Say hello' }];

function splitInsideUtf8(rec) {
  const whole = Buffer.concat(rec.writes);
  let n = 0;
  let off = 0;
  for (const w of rec.writes) {
    off += w.length;
    if (off < whole.length && (whole[off] & 0xc0) === 0x80) n += 1;
  }
  return n;
}

/** The raw events of a streamed create(), with the text they carry. */
async function rawEvents(client, params) {
  const events = [];
  for await (const e of await client.messages.create({ ...params, stream: true })) events.push(e);
  return events;
}

describe('mock Anthropic upstream through @anthropic-ai/sdk', { timeout: 60000 }, () => {
  let mock;
  let client;

  before(async () => {
    mock = await startMockAnthropic({ writeDelayMs: 0 });
    client = new Anthropic({ apiKey: mock.apiKey, baseURL: mock.url, maxRetries: 0 });
  });
  after(async () => {
    await mock?.close();
  });

  test('default reply, plain and streamed: exact text and usage, auth and version recorded', async () => {
    const body = { model: 'claude-test-upstream', max_tokens: 1024, system: 'Be brief.', messages: USER };
    const r = await client.messages.create(body);
    assert.equal(r.type, 'message');
    assert.equal(r.role, 'assistant');
    assert.deepEqual(r.content.map((b) => b.type), ['text']);
    assert.equal(r.content[0].text, REPLY_TEXT);
    assert.equal(r.stop_reason, 'end_turn');
    assert.equal(r.stop_sequence, null);
    assert.equal(r.usage.input_tokens, 3 + (3 + 2) + (3 + 2));
    assert.equal(r.usage.input_tokens, promptTokens(body));
    assert.equal(r.usage.output_tokens, REPLY_PIECES.length);
    assert.deepEqual(r.usage, answerFor(body).usage);
    const rec = mock.last('/v1/messages');
    assert.equal(rec.authVia, 'bearer', 'this SDK sends the key as a Bearer token');
    assert.equal(rec.anthropicVersion, '2026-10-21');
    assert.equal(rec.scenario, 'default');
    assert.ok(rec.writes.length > 3, 'the JSON body went out in several writes');
    assert.ok(splitInsideUtf8(rec) > 0);

    const texts = [];
    const stream = client.messages.stream(body);
    stream.on('text', (t) => texts.push(t));
    const fm = await stream.finalMessage();
    assert.deepEqual(texts, REPLY_PIECES);
    assert.equal(fm.content[0].text, REPLY_TEXT);
    assert.equal(fm.stop_reason, 'end_turn');
    assert.deepEqual(fm.usage.output_tokens, REPLY_PIECES.length);
    assert.equal(fm.usage.input_tokens, promptTokens(body));
    const wire = Buffer.concat(mock.last().writes).toString('utf8');
    assert.match(wire, /^event: message_start\ndata: \{"type":"message_start"/);
    assert.match(wire, /event: ping\n/);
    assert.match(wire, /event: message_stop\ndata: \{"type":"message_stop"\}\n\n$/);
    assert.ok(mock.last().writes.some((w) => w.toString('latin1').startsWith('nt: ')), 'a write starts inside "event: "');

    // The documented header works too (what a gateway sends), with the older version.
    const raw = await fetch(`${mock.baseURL}/messages`, {
      method: 'POST',
      headers: { 'x-api-key': mock.apiKey, 'anthropic-version': ANTHROPIC_VERSION, 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, temperature: 0.5 }),
    });
    assert.equal(raw.status, 200);
    assert.equal((await raw.json()).content[0].text, REPLY_TEXT);
    assert.equal(mock.last().authVia, 'x-api-key');
    assert.equal(mock.last().headers['x-api-key'], mock.apiKey);
  });

  test('auth, version and request errors: Anthropic error shapes and SDK classes', async () => {
    const bad = new Anthropic({ apiKey: 'sk-ant-wrong', baseURL: mock.url, maxRetries: 0 });
    await assert.rejects(bad.messages.create({ model: 'm', max_tokens: 10, messages: USER }), (e) => e instanceof Anthropic.AuthenticationError
      && e.status === 401 && e.type === 'authentication_error' && e.requestID === mock.last().upstreamId);
    const noVersion = await fetch(`${mock.baseURL}/messages`, {
      method: 'POST', headers: { 'x-api-key': mock.apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', max_tokens: 10, messages: USER }),
    });
    assert.equal(noVersion.status, 400);
    assert.deepEqual(await noVersion.json(), { type: 'error', error: { type: 'invalid_request_error', message: 'anthropic-version: header is required' }, request_id: mock.last().upstreamId });
    await assert.rejects(client.messages.create({ model: 'm', max_tokens: 10, messages: USER, temperature: 1 }), (e) => e instanceof Anthropic.BadRequestError
      && /temperature: Extra inputs are not permitted/.test(e.message));
    const noMax = await fetch(`${mock.baseURL}/messages`, {
      method: 'POST', headers: { 'x-api-key': mock.apiKey, 'anthropic-version': ANTHROPIC_VERSION, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: USER }),
    });
    assert.equal(noMax.status, 400);

    const cases = [
      ['mock-error-400', Anthropic.BadRequestError, 400, 'invalid_request_error'],
      ['mock-error-401', Anthropic.AuthenticationError, 401, 'authentication_error'],
      ['mock-error-429', Anthropic.RateLimitError, 429, 'rate_limit_error'],
      ['mock-error-500', Anthropic.InternalServerError, 500, 'api_error'],
      ['mock-error-529', Anthropic.OverloadedError, 529, 'overloaded_error'],
    ];
    for (const [model, cls, status, type] of cases) {
      for (const stream of [false, true]) {
        const call = stream
          ? client.messages.stream({ model, max_tokens: 10, messages: USER }).finalMessage()
          : client.messages.create({ model, max_tokens: 10, messages: USER });
        await assert.rejects(call, (e) => e instanceof cls && e.status === status && e.type === type, `${model} stream=${stream}`);
      }
    }
    await assert.rejects(client.messages.create({ model: 'mock-error-429', max_tokens: 10, messages: USER }), (e) => e.headers.get('retry-after') === '7');
  });

  test('mock-tools: one tool_use whose input arrives in several input_json_delta fragments, then the tool result', async () => {
    const body = { model: 'mock-tools', max_tokens: 1024, tools: TOOLS, messages: [{ role: 'user', content: 'Weather in Paris?' }] };
    const fragments = [];
    const stream = client.messages.stream(body);
    stream.on('inputJson', (partial) => fragments.push(partial));
    const fm = await stream.finalMessage();
    assert.equal(fm.stop_reason, 'tool_use');
    assert.equal(fm.content.length, 1);
    const use = fm.content[0];
    assert.equal(use.type, 'tool_use');
    assert.equal(use.name, 'get_weather');
    assert.match(use.id, /^toolu_/);
    assert.deepEqual(use.input, TOOL_ARGS);
    assert.ok(fragments.length >= 3, `input in ${fragments.length} fragments`);
    assert.equal(fm.usage.output_tokens, 6);
    assert.deepEqual(fm.usage, { ...answerFor(body).usage });

    const plain = await client.messages.create(body);
    assert.deepEqual(plain.content, [{ type: 'tool_use', id: plain.content[0].id, name: 'get_weather', input: TOOL_ARGS }]);

    const turn2 = {
      ...body,
      messages: [...body.messages, { role: 'assistant', content: fm.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '18°C and sunny' }] }],
    };
    const r2 = await client.messages.stream(turn2).finalMessage();
    assert.equal(r2.content[0].text, 'The weather is 18°C and sunny');
    assert.equal(r2.stop_reason, 'end_turn');
    const rec = mock.last();
    assert.deepEqual(rec.toolCallsReceived, [{ id: use.id, name: 'get_weather', arguments: TOOL_ARGS, args: TOOL_ARGS }]);
    assert.deepEqual(rec.toolResultsReceived, [{ id: use.id, name: null, text: '18°C and sunny', isError: false }]);
    assert.equal(r2.usage.input_tokens, promptTokens(turn2));
  });

  test('mock-parallel-tools, mock-tool-no-args, mock-length-tool', async () => {
    const par = await client.messages.stream({ model: 'mock-parallel-tools', max_tokens: 1024, tools: TOOLS, messages: USER }).finalMessage();
    assert.deepEqual(par.content.map((b) => [b.type, b.name, b.input]), [['tool_use', 'get_weather', TOOL_ARGS], ['tool_use', 'get_time', TOOL_ARGS_2]]);
    assert.notEqual(par.content[0].id, par.content[1].id);
    assert.equal(par.usage.output_tokens, 12);

    const events = await rawEvents(client, { model: 'mock-tool-no-args', max_tokens: 1024, tools: TOOLS, messages: USER });
    assert.ok(!events.some((e) => e.type === 'content_block_delta'), 'no input_json_delta at all');
    const none = await client.messages.stream({ model: 'mock-tool-no-args', max_tokens: 1024, tools: TOOLS, messages: USER }).finalMessage();
    assert.deepEqual(none.content.map((b) => [b.type, b.name, b.input]), [['tool_use', 'get_weather', {}]]);
    assert.equal(none.stop_reason, 'tool_use');
    const nonePlain = await client.messages.create({ model: 'mock-tool-no-args', max_tokens: 1024, tools: TOOLS, messages: USER });
    assert.deepEqual(nonePlain.content[0].input, {});

    const cutBody = { model: 'mock-length-tool', max_tokens: 4, tools: TOOLS, messages: USER };
    const cut = await client.messages.stream(cutBody).finalMessage();
    assert.equal(cut.stop_reason, 'max_tokens');
    assert.deepEqual(cut.content[0].input, { city: 'Paris' }, 'what the 3 fragments sent hold');
    const cutPlain = await client.messages.create(cutBody);
    assert.equal(cutPlain.stop_reason, 'max_tokens');
    assert.deepEqual(cutPlain.content[0].input, { city: 'Paris' });
    assert.deepEqual(cutPlain.usage, answerFor(cutBody).usage);
    assert.equal(cutPlain.usage.output_tokens, 4);
  });

  test('mock-reasoning: thinking_delta then signature_delta before the text, and the thinking block sent back', async () => {
    const body = { model: 'mock-reasoning', max_tokens: 2048, thinking: { type: 'adaptive' }, messages: USER };
    const thinking = [];
    const signatures = [];
    const stream = client.messages.stream(body);
    stream.on('thinking', (d) => thinking.push(d));
    stream.on('signature', (s) => signatures.push(s));
    const fm = await stream.finalMessage();
    assert.deepEqual(fm.content.map((b) => b.type), ['thinking', 'text']);
    assert.equal(fm.content[0].thinking, REASONING_TEXT);
    assert.equal(fm.content[0].signature, REASONING_SIGNATURE);
    assert.equal(thinking.join(''), REASONING_TEXT);
    assert.ok(thinking.length > 1);
    assert.deepEqual(signatures, [REASONING_SIGNATURE]);
    assert.equal(fm.content[1].text, REPLY_TEXT);
    assert.equal(fm.usage.output_tokens, 8 + REPLY_PIECES.length, 'thinking counts in output_tokens');
    const events = await rawEvents(client, body);
    const deltas = events.filter((e) => e.type === 'content_block_delta').map((e) => e.delta.type);
    assert.equal(deltas.indexOf('signature_delta'), 8, 'signature after the 8 thinking deltas');
    assert.equal(deltas.lastIndexOf('thinking_delta'), 7);

    const plain = await client.messages.create(body);
    assert.deepEqual(plain.content[0], { type: 'thinking', thinking: REASONING_TEXT, signature: REASONING_SIGNATURE });

    await client.messages.create({ ...body, messages: [...USER, { role: 'assistant', content: fm.content }, { role: 'user', content: 'again' }] });
    assert.deepEqual(mock.last().reasoningReceived, { text: REASONING_TEXT, signatures: [REASONING_SIGNATURE] });
  });

  test('mock-json, mock-stop, mock-length, mock-image, mock-cjk, mock-cache, count_tokens', async () => {
    const schema = { type: 'object', properties: { answer: { type: 'integer' } }, required: ['answer'], additionalProperties: false };
    const parsed = await client.messages.parse({ model: 'mock-json', max_tokens: 100, messages: USER, output_config: { format: jsonSchemaOutputFormat(schema) } });
    assert.deepEqual(parsed.parsed_output, { answer: 42 });
    assert.equal(mock.last().jsonRequested, true);
    const jsonStreamed = await client.messages.stream({ model: 'mock-json', max_tokens: 100, messages: USER }).finalMessage();
    assert.equal(jsonStreamed.content[0].text, JSON_TEXT);
    assert.equal(mock.last().jsonRequested, false);

    for (const stream of [false, true]) {
      const call = (p) => (stream ? client.messages.stream(p).finalMessage() : client.messages.create(p));
      const stop = await call({ model: 'mock-stop', max_tokens: 100, messages: USER, stop_sequences: [' mock', 'from'] });
      assert.equal(stop.content[0].text, 'Hello from the');
      assert.equal(stop.stop_reason, 'stop_sequence');
      assert.equal(stop.stop_sequence, ' mock');
      assert.equal(stop.usage.output_tokens, 3);

      const len = await call({ model: 'mock-length', max_tokens: 5, messages: USER });
      assert.equal(len.content[0].text, REPLY_PIECES.slice(0, 5).join(''));
      assert.equal(len.stop_reason, 'max_tokens');
      assert.equal(len.usage.output_tokens, 5);
    }

    const img = await client.messages.create({
      model: 'mock-image', max_tokens: 100,
      messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }, { type: 'text', text: 'What is this?' }] }],
    });
    assert.equal(img.content[0].text, 'I see an image');
    assert.equal(mock.last().imageReceived, true);
    const noImg = await client.messages.stream({ model: 'mock-image', max_tokens: 100, messages: USER }).finalMessage();
    assert.equal(noImg.content[0].text, 'no image');

    const texts = [];
    const cjk = client.messages.stream({ model: 'mock-cjk', max_tokens: 100, messages: USER });
    cjk.on('text', (t) => texts.push(t));
    assert.equal((await cjk.finalMessage()).content[0].text, CJK_TEXT);
    assert.equal(texts.length, 5);
    assert.ok(splitInsideUtf8(mock.last()) >= 10, 'every multi-byte character split across writes');

    const cacheBody = { model: 'mock-cache', max_tokens: 100, system: [{ type: 'text', text: 'a b c d e', cache_control: { type: 'ephemeral' } }], messages: USER };
    const P = promptTokens(cacheBody);
    assert.equal(P, 3 + (3 + 5) + (3 + 2));
    for (const u of [(await client.messages.create(cacheBody)).usage, (await client.messages.stream(cacheBody).finalMessage()).usage]) {
      assert.equal(u.cache_read_input_tokens, Math.floor(P / 2));
      assert.equal(u.cache_creation_input_tokens, Math.floor(P / 4));
      assert.equal(u.input_tokens, P - Math.floor(P / 2) - Math.floor(P / 4), 'input_tokens excludes the cache');
    }

    const count = await client.messages.countTokens({ model: 'm', system: 'Be brief.', messages: USER });
    assert.equal(count.input_tokens, promptTokens({ system: 'Be brief.', messages: USER }));
  });

  test('mock-truncated, mock-no-terminator, mock-no-finish, mock-midstream-error, mock-slow', async () => {
    const texts = [];
    const tr = client.messages.stream({ model: 'mock-truncated', max_tokens: 100, messages: USER });
    tr.on('text', (t) => texts.push(t));
    await assert.rejects(tr.finalMessage());
    assert.equal(texts.join(''), REPLY_PIECES.slice(0, 3).join(''));
    assert.equal(mock.last().cutByMock, true);
    await assert.rejects(client.messages.create({ model: 'mock-truncated', max_tokens: 100, messages: USER }));

    const nt = await rawEvents(client, { model: 'mock-no-terminator', max_tokens: 100, messages: USER });
    assert.equal(nt.at(-1).type, 'message_delta');
    assert.equal(nt.at(-1).delta.stop_reason, 'end_turn');
    assert.equal(nt.at(-1).usage.output_tokens, REPLY_PIECES.length);
    assert.ok(!nt.some((e) => e.type === 'message_stop'));
    assert.equal(mock.last().closed, false, 'ended cleanly');
    await assert.rejects(client.messages.stream({ model: 'mock-no-terminator', max_tokens: 100, messages: USER }).finalMessage(), /stream ended without producing a Message/);

    const nf = await rawEvents(client, { model: 'mock-no-finish', max_tokens: 100, messages: USER });
    assert.ok(!nf.some((e) => e.type === 'message_delta'));
    assert.equal(nf.at(-1).type, 'message_stop');

    const got = [];
    const mid = await client.messages.create({ model: 'mock-midstream-error', max_tokens: 100, messages: USER, stream: true });
    await assert.rejects((async () => {
      for await (const e of mid) if (e.type === 'content_block_delta') got.push(e.delta.text);
    })(), (e) => e instanceof Anthropic.APIError && e.type === 'overloaded_error');
    assert.equal(got.join(''), 'Hello from');

    const slow = client.messages.stream({ model: 'mock-slow', max_tokens: 1000, messages: USER });
    const ended = slow.finalMessage().catch((e) => e);
    let n = 0;
    await new Promise((resolve) => {
      slow.on('text', () => { n += 1; if (n === 3) { slow.abort(); resolve(); } });
    });
    assert.ok((await ended) instanceof Anthropic.APIUserAbortError);
    const rec = mock.last();
    const deadline = Date.now() + 3000;
    while (!rec.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(rec.closed, true, 'the mock saw the caller hang up');
    assert.equal(rec.cutByMock, false);

    const fast = await startMockAnthropic({ slowPieceMs: 2 });
    try {
      const fastClient = new Anthropic({ apiKey: fast.apiKey, baseURL: fast.url, maxRetries: 0 });
      const t0 = Date.now();
      const r = await fastClient.messages.create({ model: 'mock-slow', max_tokens: 3, messages: USER });
      assert.equal(r.content[0].text, ' w0 w1 w2');
      assert.ok(Date.now() - t0 >= 400, 'held its answer for 200 x slowPieceMs');
    } finally {
      await fast.close();
    }
  });
});
