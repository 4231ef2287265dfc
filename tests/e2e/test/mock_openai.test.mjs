// The mock upstream itself, checked against the official openai client: if the real SDK parses
// what the mock sends, the mock speaks the real wire format, and the gateway tests built on it mean
// something. Also checks that responses really arrive in split writes.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { loadDeps } from '../lib/harness.mjs';
import {
  REPLY_PIECES, REPLY_TEXT, completionFor, promptTokens, startMockOpenAI,
} from '../mock_openai.mjs';

const { OpenAI } = await loadDeps();

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
    assert.equal(mock.last().headers.authorization, `Bearer ${mock.apiKey}`);
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
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-429', messages: [] }), (e) => e instanceof OpenAI.RateLimitError && e.headers.get('retry-after') === '1');
    await assert.rejects(client.chat.completions.create({ model: 'mock-error-500', messages: [] }), (e) => e instanceof OpenAI.InternalServerError && e.type === 'server_error');
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

    // And a caller that waits gets the whole answer after 10 s, with closed still false.
    const done = mock.requests.length;
    const r = await client.chat.completions.create({ model: 'mock-slow', messages: [{ role: 'user', content: 'x' }], max_tokens: 3 });
    assert.equal(r.choices[0].message.content, ' w0 w1 w2');
    assert.equal(mock.requests[done].status, 200);
    assert.equal(mock.requests[done].closed, false);
    assert.ok(Date.now() - t0 >= 10000, 'mock-slow held its answer for 10 s');
  });

  test('bodies go out in several writes, cut inside "data:", JSON, multi-byte characters and across events', async () => {
    await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }], stream: true }).then(async (s) => { for await (const _ of s); });
    const rec = mock.last('/v1/chat/completions');
    const whole = Buffer.concat(rec.writes);
    const events = whole.toString('utf8').split('\n\n').filter(Boolean);
    assert.ok(rec.writes.length >= 3 * events.length, `${rec.writes.length} writes for ${events.length} events`);
    const ends = [];
    let off = 0;
    for (const w of rec.writes) { off += w.length; ends.push(off); }
    const byteAt = (i) => whole[i];
    assert.ok(ends.some((e) => e < whole.length && (byteAt(e) & 0xc0) === 0x80), 'a write ends inside a UTF-8 sequence');
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
