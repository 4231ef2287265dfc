// The mock upstream itself, checked against the official openai client: if the real SDK parses
// what the mock sends, the mock speaks the real wire format, and the gateway tests built on it mean
// something. Also checks that responses really arrive in split writes, and drives every magic
// scenario (mock_openai.mjs header) streamed and not, with the SDK's stream helper where it applies.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { E2E_DIR } from '../lib/harness.mjs';
import {
  CJK_TEXT, JSON_TEXT, REASONING_TEXT, REPLY_PIECES, REPLY_TEXT, TOOL_ARGS, TOOL_ARGS_2, answerFor,
  completionFor, promptTokens, responsesEncryptedReasoning, responsesPromptTokens, startMockOpenAI,
} from '../mock_openai.mjs';

// Only the openai client is needed here (loadDeps() would also load @openrouter/sdk and pg: seconds).
if (!fs.existsSync(path.join(E2E_DIR, 'node_modules', 'openai', 'package.json'))) {
  throw new Error(`e2e: ${path.join(E2E_DIR, 'node_modules', 'openai')} is missing. Run \`npm ci\` in ${E2E_DIR}.`);
}
const { default: OpenAI } = await import('openai');

/** True when some write of `rec` ends inside a multi-byte UTF-8 sequence. */
function splitInsideUtf8(rec) {
  const whole = Buffer.concat(rec.writes);
  let off = 0;
  for (const w of rec.writes) {
    off += w.length;
    if (off < whole.length && (whole[off] & 0xc0) === 0x80) return true;
  }
  return false;
}

async function drain(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Current weather', parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'get_time', description: 'Local time', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
];

describe('mock OpenAI upstream', { timeout: 60000 }, () => {
  let mock;
  let client;

  before(async () => {
    mock = await startMockOpenAI();
    client = new OpenAI({ apiKey: mock.apiKey, baseURL: mock.baseURL, maxRetries: 0 });
  });
  after(async () => {
    await mock?.close();
  });

  test('chat completion parses with the openai SDK, deterministic text and usage', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hello' }];
    const r = await client.chat.completions.create({ model: 'gpt-test-upstream', messages });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.usage.prompt_tokens, 3 + (3 + 2) + (3 + 2));
    assert.equal(r.usage.prompt_tokens, promptTokens({ messages }));
    assert.equal(r.usage.completion_tokens, REPLY_PIECES.length);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.deepEqual(r.usage, answerFor({ model: 'gpt-test-upstream', messages }).usage);
    assert.equal(mock.last().headers.authorization, `Bearer ${mock.apiKey}`);
    assert.equal(mock.last().scenario, 'default');
  });

  test('streamed chat: usage chunk with empty choices only when include_usage, then [DONE]', async () => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'one two three' }], max_tokens: 7 };
    const want = completionFor(body);
    const withUsage = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const chunks = [];
    for await (const c of withUsage) {
      chunks.push(c);
      text += c.choices[0]?.delta?.content ?? '';
    }
    assert.equal(text, want.text);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 7);
    assert.equal(last.usage.prompt_tokens, promptTokens(body));
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null), 'other chunks carry "usage": null');
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'length');
    assert.match(Buffer.concat(mock.last().writes).toString('utf8'), /data: \[DONE\]\n\n$/);

    const noUsage = await client.chat.completions.create({ ...body, stream: true });
    const chunks2 = [];
    for await (const c of noUsage) chunks2.push(c);
    assert.ok(chunks2.every((c) => c.usage === undefined && c.choices.length === 1), 'no usage without include_usage');
  });

  test('legacy completions, plain and streamed', async () => {
    const r = await client.completions.create({ model: 'm', prompt: 'Once upon a time', max_tokens: 3 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].text, REPLY_PIECES.slice(0, 3).join(''));
    assert.equal(r.usage.prompt_tokens, 4);
    const s = await client.completions.create({ model: 'm', prompt: 'Once upon a time', stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage = null;
    for await (const c of s) {
      text += c.choices[0]?.text ?? '';
      if (c.usage) usage = c.usage;
    }
    assert.equal(text, REPLY_TEXT);
    assert.equal(usage.completion_tokens, REPLY_PIECES.length);
  });

  test('errors have the OpenAI shape and map to the SDK error classes', async () => {
    const bad = new OpenAI({ apiKey: 'sk-wrong', baseURL: mock.baseURL, maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create({ model: 'm', messages: [] }), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key');
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-400', messages: [] }), (e) => e instanceof OpenAI.BadRequestError && e.type === 'invalid_request_error');
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-401', messages: [] }), (e) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key');
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-429', messages: [] }), (e) => e instanceof OpenAI.RateLimitError
      && e.headers.get('retry-after') === '7' && e.code === 'rate_limit_exceeded' && e.type === 'requests');
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-500', messages: [] }), (e) => e instanceof OpenAI.InternalServerError && e.type === 'server_error');
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-529', messages: [] }), (e) => e instanceof OpenAI.InternalServerError && e.status === 503 && /overloaded/.test(e.message));
    // Streamed requests get the same errors before any event.
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-429', messages: [], stream: true }), (e) => e instanceof OpenAI.RateLimitError);
    const s = await client.chat.completions.create({ model: 'mock-midstream-error', messages: [{ role: 'user', content: 'x' }], stream: true });
    let text = '';
    await assert.rejects((async () => { for await (const c of s) text += c.choices[0]?.delta?.content ?? ''; })(), (e) => e instanceof OpenAI.APIError);
    assert.equal(text, 'Hello from');
  });

  test('mock-slow, not streamed, says nothing for seconds and records a caller that hangs up', async () => {
    const marker = `slow-abort-${Date.now()}`;
    const ac = new AbortController();
    const t0 = Date.now();
    const call = fetch(`${mock.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${mock.apiKey}` },
      body: JSON.stringify({ model: 'mock-slow', messages: [{ role: 'user', content: marker }] }),
      signal: ac.signal,
    });
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(call, (e) => e.name === 'AbortError');
    const rec = mock.requests.find((r) => r.rawBody.includes(marker));
    assert.ok(rec, 'the mock recorded the request');
    const deadline = Date.now() + 3000;
    while (!rec.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(rec.closed, true, 'closed flag set when the caller hangs up');
    assert.equal(rec.status, null, 'nothing was sent before the caller left');
    assert.ok(rec.closedAt - t0 < 3000, `closed ${rec.closedAt - t0} ms after the call`);

    // And a caller that waits gets the whole answer after 200 x slowPieceMs (10 s by default; a
    // mock started with slowPieceMs 2 holds it 0.4 s, so this test stays fast), closed still false.
    const fast = await startMockOpenAI({ slowPieceMs: 2 });
    try {
      const fastClient = new OpenAI({ apiKey: fast.apiKey, baseURL: fast.baseURL, maxRetries: 0 });
      const t1 = Date.now();
      const r = await fastClient.chat.completions.create({ model: 'mock-slow', messages: [{ role: 'user', content: 'x' }], max_tokens: 3 });
      assert.equal(r.choices[0].message.content, ' w0 w1 w2');
      assert.equal(fast.last().status, 200);
      assert.equal(fast.last().closed, false);
      assert.ok(Date.now() - t1 >= 400, 'mock-slow held its answer for 200 x slowPieceMs');
    } finally {
      await fast.close();
    }
  });

  test('bodies go out in several writes, cut inside "data:", JSON, multi-byte characters and across events', async () => {
    await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }], stream: true }).then(async (s) => { for await (const _ of s); });
    const rec = mock.last('/v1/chat/completions');
    const whole = Buffer.concat(rec.writes);
    const events = whole.toString('utf8').split('\n\n').filter(Boolean);
    assert.ok(rec.writes.length >= 3 * events.length, `${rec.writes.length} writes for ${events.length} events`);
    assert.ok(splitInsideUtf8(rec), 'a write ends inside a UTF-8 sequence');
    assert.ok(rec.writes.some((w) => w.toString('latin1').startsWith('a: ')), 'a write starts inside "data: "');
    assert.ok(rec.writes.some((w) => w.toString('latin1').startsWith('\ndat')), 'a write spans an event boundary');

    // And on the wire: a raw socket sees the stream in many reads.
    const reads = await new Promise((resolve, reject) => {
      const sock = net.connect(mock.port, '127.0.0.1');
      const got = [];
      const req = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }], stream: true });
      sock.on('connect', () => sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${mock.apiKey}\r\n`
        + `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(req)}\r\nConnection: close\r\n\r\n${req}`));
      sock.on('data', (d) => got.push(d));
      sock.on('end', () => resolve(got));
      sock.on('error', reject);
    });
    assert.ok(reads.length > events.length, `${reads.length} socket reads for ${events.length} events`);
    const wire = Buffer.concat(reads).toString('latin1');
    assert.match(wire, /Transfer-Encoding: chunked\r\n/i);
    assert.match(wire, /\r\n0\r\n\r\n$/, 'chunked body ends with the last-chunk marker');
  });
});

describe('mock OpenAI upstream: scenarios through the openai SDK', { timeout: 60000 }, () => {
  let mock;
  let client;

  before(async () => {
    mock = await startMockOpenAI({ writeDelayMs: 0 });
    client = new OpenAI({ apiKey: mock.apiKey, baseURL: mock.baseURL, maxRetries: 0 });
  });
  after(async () => {
    await mock?.close();
  });

  test('mock-tools: one call in several argument fragments (stream helper assembles it), then the tool result', async () => {
    const messages = [{ role: 'user', content: 'Weather in Paris?' }];
    const body = { model: 'mock-tools', messages, tools: TOOLS };
    const fragments = [];
    const stream = client.chat.completions.stream({ ...body, stream_options: { include_usage: true } });
    stream.on('tool_calls.function.arguments.delta', (e) => fragments.push(e.arguments_delta));
    const done = await stream.finalChatCompletion();
    const msg = done.choices[0].message;
    assert.equal(done.choices[0].finish_reason, 'tool_calls');
    assert.equal(msg.tool_calls.length, 1);
    assert.equal(msg.tool_calls[0].type, 'function');
    assert.equal(msg.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), TOOL_ARGS);
    assert.ok(fragments.filter(Boolean).length >= 3, `arguments in ${fragments.length} fragments`);
    assert.deepEqual(done.usage, answerFor(body).usage);
    assert.equal(done.usage.completion_tokens, 6, '1 for the name + 5 fragments');

    const plain = await client.chat.completions.create(body);
    assert.equal(plain.choices[0].finish_reason, 'tool_calls');
    assert.equal(plain.choices[0].message.content, null);
    assert.deepEqual(JSON.parse(plain.choices[0].message.tool_calls[0].function.arguments), TOOL_ARGS);

    // Second turn: the assistant's call and the tool result go back; the answer quotes the result.
    const call = msg.tool_calls[0];
    const turn2 = {
      model: 'mock-tools', tools: TOOLS,
      messages: [...messages, { role: 'assistant', content: null, tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: '18°C and sunny' }],
    };
    const r2 = await client.chat.completions.stream(turn2).finalChatCompletion();
    assert.equal(r2.choices[0].message.content, 'The weather is 18°C and sunny');
    assert.equal(r2.choices[0].finish_reason, 'stop');
    const rec = mock.last();
    assert.deepEqual(rec.toolCallsReceived, [{ id: call.id, name: 'get_weather', arguments: call.function.arguments, args: TOOL_ARGS }]);
    assert.deepEqual(rec.toolResultsReceived, [{ id: call.id, name: null, text: '18°C and sunny' }]);
  });

  test('mock-parallel-tools, mock-tool-no-args, mock-length-tool', async () => {
    const par = await client.chat.completions.stream({ model: 'mock-parallel-tools', messages: [{ role: 'user', content: 'x' }], tools: TOOLS }).finalChatCompletion();
    const calls = par.choices[0].message.tool_calls;
    assert.deepEqual(calls.map((c) => c.function.name), ['get_weather', 'get_time']);
    assert.deepEqual(calls.map((c) => JSON.parse(c.function.arguments)), [TOOL_ARGS, TOOL_ARGS_2]);
    assert.notEqual(calls[0].id, calls[1].id);
    const raw = Buffer.concat(mock.last().writes).toString('utf8');
    assert.match(raw, /"tool_calls":\[\{"index":1,"id":"call_/, 'the second call opens under index 1');

    const one = await client.chat.completions.stream({ model: 'mock-parallel-tools', messages: [{ role: 'user', content: 'x' }], tools: TOOLS.slice(0, 1) }).finalChatCompletion();
    assert.deepEqual(one.choices[0].message.tool_calls.map((c) => c.function.name), ['get_weather', 'get_weather'], 'the first tool twice');

    const none = await client.chat.completions.stream({ model: 'mock-tool-no-args', messages: [{ role: 'user', content: 'x' }], tools: TOOLS }).finalChatCompletion();
    assert.equal(none.choices[0].message.tool_calls[0].function.arguments, '');
    assert.equal(none.choices[0].finish_reason, 'tool_calls');
    assert.doesNotMatch(Buffer.concat(mock.last().writes).toString('utf8'), /"function":\{"arguments"/, 'no fragment after the opening ""');

    const cutBody = { model: 'mock-length-tool', messages: [{ role: 'user', content: 'x' }], tools: TOOLS, max_tokens: 4 };
    const cut = await client.chat.completions.stream(cutBody).finalChatCompletion();
    assert.equal(cut.choices[0].finish_reason, 'length');
    assert.equal(cut.choices[0].message.tool_calls[0].function.arguments, '{"city":"Paris",');
    const cutPlain = await client.chat.completions.create(cutBody);
    assert.equal(cutPlain.choices[0].message.tool_calls[0].function.arguments, '{"city":"Paris",');
    assert.deepEqual(cutPlain.usage, answerFor(cutBody).usage);
    assert.equal(cutPlain.usage.completion_tokens, 4);
  });

  test('mock-reasoning: reasoning_content deltas before the answer, reasoning_tokens, and the reasoning sent back', async () => {
    const body = { model: 'mock-reasoning', messages: [{ role: 'user', content: 'think' }], stream: true, stream_options: { include_usage: true } };
    let reasoning = '';
    let text = '';
    let sawTextBeforeReasoningEnded = false;
    let usage = null;
    for await (const c of await client.chat.completions.create(body)) {
      const d = c.choices[0]?.delta ?? {};
      if (typeof d.reasoning_content === 'string') { reasoning += d.reasoning_content; if (text) sawTextBeforeReasoningEnded = true; }
      text += d.content ?? '';
      if (c.usage) usage = c.usage;
    }
    assert.equal(reasoning, REASONING_TEXT);
    assert.equal(text, REPLY_TEXT);
    assert.equal(sawTextBeforeReasoningEnded, false);
    assert.equal(usage.completion_tokens_details.reasoning_tokens, 8);
    assert.equal(usage.completion_tokens, REPLY_PIECES.length + 8, 'reasoning tokens are part of completion_tokens');

    const plain = await client.chat.completions.create({ model: 'mock-reasoning', messages: body.messages });
    assert.equal(plain.choices[0].message.reasoning_content, REASONING_TEXT);
    assert.equal(plain.choices[0].message.content, REPLY_TEXT);

    await client.chat.completions.create({
      model: 'mock-reasoning',
      messages: [...body.messages, { role: 'assistant', content: REPLY_TEXT, reasoning_content: REASONING_TEXT }, { role: 'user', content: 'again' }],
    });
    assert.deepEqual(mock.last().reasoningReceived, { text: REASONING_TEXT, signatures: [] });
  });

  test('mock-json, mock-stop, mock-length, mock-image, mock-cjk, mock-cache', async () => {
    const user = [{ role: 'user', content: 'x' }];
    const json = await client.chat.completions.create({ model: 'mock-json', messages: user, response_format: { type: 'json_object' } });
    assert.deepEqual(JSON.parse(json.choices[0].message.content), { answer: 42 });
    assert.equal(json.choices[0].message.content, JSON_TEXT);
    assert.equal(mock.last().jsonRequested, true);
    const jsonStreamed = await client.chat.completions.stream({ model: 'mock-json', messages: user }).finalChatCompletion();
    assert.equal(jsonStreamed.choices[0].message.content, JSON_TEXT);
    assert.equal(mock.last().jsonRequested, false);

    for (const stream of [false, true]) {
      const stop = stream
        ? await client.chat.completions.stream({ model: 'mock-stop', messages: user, stop: [' mock', 'from'] }).finalChatCompletion()
        : await client.chat.completions.create({ model: 'mock-stop', messages: user, stop: ' mock' });
      assert.equal(stop.choices[0].message.content, 'Hello from the', 'only the first stop sequence counts');
      assert.equal(stop.choices[0].finish_reason, 'stop');

      const len = stream
        ? await client.chat.completions.stream({ model: 'mock-length', messages: user, max_completion_tokens: 5 }).finalChatCompletion()
        : await client.chat.completions.create({ model: 'mock-length', messages: user, max_completion_tokens: 5 });
      assert.equal(len.choices[0].message.content, REPLY_PIECES.slice(0, 5).join(''));
      assert.equal(len.choices[0].finish_reason, 'length');
    }
    const lenDefault = await client.chat.completions.create({ model: 'mock-length', messages: user });
    assert.equal(lenDefault.choices[0].message.content, REPLY_PIECES.slice(0, 4).join(''), '4 pieces without a limit');

    const img = await client.chat.completions.create({
      model: 'mock-image',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }],
    });
    assert.equal(img.choices[0].message.content, 'I see an image');
    assert.equal(mock.last().imageReceived, true);
    const noImg = await client.chat.completions.stream({ model: 'mock-image', messages: user }).finalChatCompletion();
    assert.equal(noImg.choices[0].message.content, 'no image');
    assert.equal(mock.last().imageReceived, false);

    const cjk = await client.chat.completions.stream({ model: 'mock-cjk', messages: user }).finalChatCompletion();
    assert.equal(cjk.choices[0].message.content, CJK_TEXT);
    const rec = mock.last();
    const whole = Buffer.concat(rec.writes);
    let inside = 0;
    let off = 0;
    for (const w of rec.writes) { off += w.length; if (off < whole.length && (whole[off] & 0xc0) === 0x80) inside += 1; }
    assert.ok(inside >= 10, `${inside} writes end inside a multi-byte character`);
    const cjkPlain = await client.chat.completions.create({ model: 'mock-cjk', messages: user });
    assert.equal(cjkPlain.choices[0].message.content, CJK_TEXT);
    assert.ok(splitInsideUtf8(mock.last()));

    const cache = await client.chat.completions.create({ model: 'mock-cache', messages: [{ role: 'user', content: 'a b c d e f g' }] });
    assert.equal(cache.usage.prompt_tokens, 13);
    assert.equal(cache.usage.prompt_tokens_details.cached_tokens, 6, 'floor(prompt / 2), included in prompt_tokens');
  });

  test('mock-truncated, mock-no-terminator, mock-no-finish, mock-slow streamed', async () => {
    const user = [{ role: 'user', content: 'x' }];
    let text = '';
    const s = await client.chat.completions.create({ model: 'mock-truncated', messages: user, stream: true });
    await assert.rejects((async () => { for await (const c of s) text += c.choices[0]?.delta?.content ?? ''; })());
    assert.equal(text, REPLY_PIECES.slice(0, 3).join(''));
    assert.equal(mock.last().cutByMock, true);
    assert.doesNotMatch(Buffer.concat(mock.last().writes).toString('utf8'), /\[DONE\]/);
    await assert.rejects(client.chat.completions.create({ model: 'mock-truncated', messages: user }));

    const nt = await drain(await client.chat.completions.create({ model: 'mock-no-terminator', messages: user, stream: true, stream_options: { include_usage: true } }));
    assert.equal(nt.at(-2).choices[0].finish_reason, 'stop');
    assert.equal(nt.at(-1).usage.completion_tokens, REPLY_PIECES.length);
    assert.doesNotMatch(Buffer.concat(mock.last().writes).toString('utf8'), /\[DONE\]/);
    assert.equal(mock.last().closed, false, 'ended cleanly');

    const nf = await drain(await client.chat.completions.create({ model: 'mock-no-finish', messages: user, stream: true }));
    assert.equal(nf.map((c) => c.choices[0].delta.content ?? '').join(''), REPLY_TEXT);
    assert.ok(nf.every((c) => c.choices[0].finish_reason === null));
    await assert.rejects(client.chat.completions.stream({ model: 'mock-no-finish', messages: user }).finalChatCompletion(), /missing finish_reason/);

    const slow = await client.chat.completions.create({ model: 'mock-slow', messages: user, stream: true });
    let n = 0;
    for await (const c of slow) {
      if (c.choices[0]?.delta?.content) n += 1;
      if (n === 3) break; // the SDK aborts the request
    }
    const rec = mock.last();
    const deadline = Date.now() + 3000;
    while (!rec.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(rec.closed, true);
    assert.equal(rec.cutByMock, false);
  });
});

// POST /v1/responses: the same plans in OpenAI's Responses wire format, read by the SDK's
// client.responses.create (plain: a Response object, the SDK adding output_text; stream: typed
// events with consecutive sequence numbers, ending in response.completed / response.incomplete).
describe('mock OpenAI upstream: the Responses API through the openai SDK', { timeout: 60000 }, () => {
  let mock;
  let client;
  const RSP_TOOLS = [
    { type: 'function', name: 'get_weather', description: 'Current weather', parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] }, strict: false },
    { type: 'function', name: 'get_time', description: 'Local time', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: false },
  ];

  before(async () => {
    mock = await startMockOpenAI({ writeDelayMs: 0 });
    client = new OpenAI({ apiKey: mock.apiKey, baseURL: mock.baseURL, maxRetries: 0 });
  });
  after(async () => {
    await mock?.close();
  });

  async function events(params) {
    const stream = await client.responses.create({ ...params, stream: true });
    const out = [];
    for await (const e of stream) out.push(e);
    out.forEach((e, i) => assert.equal(e.sequence_number, i, `event ${i} (${e.type})`));
    assert.equal(out[0].type, 'response.created');
    assert.equal(out[1].type, 'response.in_progress');
    return out;
  }

  test('plain and streamed text, usage, the request recorded', async () => {
    const params = { model: 'gpt-test-upstream', instructions: 'Be brief.', input: 'Say hello' };
    const r = await client.responses.create(params);
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'completed');
    assert.equal(r.output_text, REPLY_TEXT);
    assert.equal(r.output.length, 1);
    assert.equal(r.output[0].type, 'message');
    const prompt = responsesPromptTokens(params);
    assert.equal(prompt, 3 + 3 + 2 + 3 + 2);
    assert.deepEqual(r.usage, {
      input_tokens: prompt, input_tokens_details: { cached_tokens: 0 }, output_tokens: REPLY_PIECES.length,
      output_tokens_details: { reasoning_tokens: 0 }, total_tokens: prompt + REPLY_PIECES.length,
    });
    assert.equal(mock.last('/v1/responses').scenario, 'default');
    assert.equal(mock.last('/v1/responses').stream, false);

    const es = await events(params);
    assert.deepEqual(es.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta), REPLY_PIECES);
    const types = es.map((e) => e.type);
    assert.deepEqual(types.slice(2, 4), ['response.output_item.added', 'response.content_part.added']);
    assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
    const last = es.at(-1);
    assert.equal(last.type, 'response.completed');
    assert.equal(last.response.output[0].content[0].text, REPLY_TEXT);
    assert.equal(last.response.usage.output_tokens, REPLY_PIECES.length);
    assert.equal(mock.last('/v1/responses').stream, true);
  });

  test('mock-tools and mock-parallel-tools: function_call items with argument deltas; the tool result turn', async () => {
    const es = await events({ model: 'mock-tools', input: 'Weather in Paris?', tools: RSP_TOOLS });
    const done = es.filter((e) => e.type === 'response.output_item.done').map((e) => e.item);
    assert.equal(done.length, 1);
    assert.equal(done[0].type, 'function_call');
    assert.equal(done[0].name, 'get_weather');
    assert.deepEqual(JSON.parse(done[0].arguments), TOOL_ARGS);
    assert.ok(es.filter((e) => e.type === 'response.function_call_arguments.delta').length > 1);
    assert.equal(es.at(-1).type, 'response.completed');

    const call = done[0];
    const r = await client.responses.create({
      model: 'mock-tools', tools: RSP_TOOLS,
      input: [{ role: 'user', content: 'Weather in Paris?' }, call, { type: 'function_call_output', call_id: call.call_id, output: '18°C' }],
    });
    assert.equal(r.output_text, 'The weather is 18°C');
    const rec = mock.last('/v1/responses');
    assert.deepEqual(rec.toolCallsReceived.map((c) => c.id), [call.call_id]);
    assert.deepEqual(rec.toolResultsReceived, [{ id: call.call_id, name: null, text: '18°C' }]);

    const p = await client.responses.create({ model: 'mock-parallel-tools', input: 'Both cities', tools: RSP_TOOLS });
    assert.deepEqual(p.output.map((o) => [o.type, o.name, JSON.parse(o.arguments)]),
      [['function_call', 'get_weather', TOOL_ARGS], ['function_call', 'get_time', TOOL_ARGS_2]]);
  });

  test('mock-reasoning: a reasoning item with a summary and encrypted content, recognised when replayed', async () => {
    const es = await events({ model: 'mock-reasoning', input: 'Think.', store: false, include: ['reasoning.encrypted_content'] });
    const summary = es.filter((e) => e.type === 'response.reasoning_summary_text.delta').map((e) => e.delta).join('');
    assert.equal(summary, REASONING_TEXT);
    const final = es.at(-1).response;
    const [reasoning, message] = final.output;
    assert.equal(reasoning.type, 'reasoning');
    assert.equal(reasoning.encrypted_content, responsesEncryptedReasoning(reasoning.id));
    assert.equal(message.content[0].text, REPLY_TEXT);
    assert.equal(final.usage.output_tokens_details.reasoning_tokens, final.usage.output_tokens - REPLY_PIECES.length);
    assert.ok(final.usage.output_tokens_details.reasoning_tokens > 0);

    await client.responses.create({ model: 'mock-reasoning', input: [{ role: 'user', content: 'Think.' }, reasoning, message, { role: 'user', content: 'Again' }] });
    const rec = mock.last('/v1/responses');
    assert.equal(rec.reasoningItemsReceived.length, 1);
    assert.equal(rec.reasoningItemsReceived[0].intact, true);
    assert.equal(rec.reasoningReceived.text, REASONING_TEXT);
    await client.responses.create({ model: 'mock-reasoning', input: [{ ...reasoning, encrypted_content: 'gAAAAABtampered' }, { role: 'user', content: 'Again' }] });
    assert.equal(mock.last('/v1/responses').reasoningItemsReceived[0].intact, false);
  });

  test('mock-length (incomplete), mock-json, mock-cjk, errors, mock-midstream-error', async () => {
    const len = await client.responses.create({ model: 'mock-length', input: 'Tell me', max_output_tokens: 2 });
    assert.equal(len.status, 'incomplete');
    assert.deepEqual(len.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(len.output_text, REPLY_PIECES.slice(0, 2).join(''));
    const es = await events({ model: 'mock-length', input: 'Tell me', max_output_tokens: 2 });
    assert.equal(es.at(-1).type, 'response.incomplete');

    const json = await client.responses.create({ model: 'mock-json', input: 'JSON', text: { format: { type: 'json_object' } } });
    assert.equal(json.output_text, JSON_TEXT);
    assert.equal(mock.last('/v1/responses').jsonRequested, true);
    const cjk = await events({ model: 'mock-cjk', input: 'Hi' });
    assert.equal(cjk.at(-1).response.output[0].content[0].text, CJK_TEXT);

    await assert.rejects(client.responses.create({ model: 'mock-error-429', input: 'Hi' }), (e) => e.status === 429 && e.headers.get('retry-after') === '7');
    await assert.rejects(client.responses.create({ model: 'mock-error-400', input: 'Hi' }), (e) => e.status === 400);

    // Mid-stream: text deltas, then an `error` event and response.failed, nothing after.
    const stream = await client.responses.create({ model: 'mock-midstream-error', input: 'Hi', stream: true });
    const seen = [];
    try { for await (const e of stream) seen.push(e.type); } catch { /* an SDK may throw on the error event */ }
    assert.ok(seen.includes('response.output_text.delta'));
    assert.ok(!seen.includes('response.completed'));
    const raw = Buffer.concat(mock.last('/v1/responses').writes).toString('utf8');
    assert.match(raw, /event: error\ndata: \{"type":"error","sequence_number":\d+,"code":"server_error"/);
    assert.match(raw, /event: response\.failed\n/);
  });
});
