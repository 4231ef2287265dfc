// The mock Gemini upstream, driven scenario by scenario with the official @google/genai SDK (no
// gateway): if the SDK parses what the mock sends (text, function calls, thoughts, usage, its
// ApiError with the right status), the mock speaks the real generateContent format.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { E2E_DIR } from '../lib/harness.mjs';
import { answerFor, promptTokens, startMockGemini } from '../mock_gemini.mjs';
import {
  CJK_TEXT, FUNCTION_CALL_SIGNATURE, JSON_TEXT, REASONING_SIGNATURE, REASONING_TEXT, REPLY_PIECES, REPLY_TEXT,
  TOOL_ARGS, TOOL_ARGS_2,
} from '../mock_openai.mjs';

if (!fs.existsSync(path.join(E2E_DIR, 'node_modules', '@google', 'genai', 'package.json'))) {
  throw new Error(`e2e: ${path.join(E2E_DIR, 'node_modules', '@google/genai')} is missing. Run \`npm ci\` in ${E2E_DIR}.`);
}
const { GoogleGenAI, ApiError } = await import('@google/genai');

const TOOLS = [{
  functionDeclarations: [
    { name: 'get_weather', description: 'Current weather', parameters: { type: 'OBJECT', properties: { city: { type: 'STRING' }, unit: { type: 'STRING' } }, required: ['city'] } },
    { name: 'get_time', description: 'Local time', parameters: { type: 'OBJECT', properties: { city: { type: 'STRING' } } } },
  ],
}];

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

async function collect(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

const textOf = (chunks) => chunks.map((c) => (c.candidates?.[0]?.content?.parts ?? []).filter((p) => !p.thought && typeof p.text === 'string').map((p) => p.text).join('')).join('');
const finishOf = (chunks) => chunks.map((c) => c.candidates?.[0]?.finishReason).filter(Boolean);

describe('mock Gemini upstream through @google/genai', { timeout: 60000 }, () => {
  let mock;
  let ai;

  before(async () => {
    mock = await startMockGemini({ writeDelayMs: 0 });
    ai = new GoogleGenAI({ apiKey: mock.apiKey, httpOptions: { baseUrl: mock.url } });
  });
  after(async () => {
    await mock?.close();
  });

  test('default reply, plain and streamed: exact text and usage, key in x-goog-api-key', async () => {
    const r = await ai.models.generateContent({ model: 'gemini-test-upstream', contents: 'Say hello', config: { systemInstruction: 'Be brief.' } });
    assert.equal(r.text, REPLY_TEXT);
    assert.equal(r.candidates[0].finishReason, 'STOP');
    assert.equal(r.candidates[0].content.role, 'model');
    const rec = mock.last();
    assert.equal(rec.path, '/v1beta/models/gemini-test-upstream:generateContent');
    assert.equal(rec.headers['x-goog-api-key'], mock.apiKey);
    assert.equal(rec.model, 'gemini-test-upstream');
    assert.equal(rec.scenario, 'default');
    assert.equal(r.usageMetadata.promptTokenCount, 3 + (3 + 2) + (3 + 2));
    assert.equal(r.usageMetadata.promptTokenCount, promptTokens(rec.body));
    assert.equal(r.usageMetadata.candidatesTokenCount, REPLY_PIECES.length);
    assert.equal(r.usageMetadata.totalTokenCount, r.usageMetadata.promptTokenCount + REPLY_PIECES.length);
    assert.deepEqual(r.usageMetadata, answerFor(rec.body, rec.model).usageMetadata);
    assert.ok(rec.writes.length > 3 && splitInsideUtf8(rec) > 0, 'the JSON went out in slices cut inside UTF-8');

    const chunks = await collect(await ai.models.generateContentStream({ model: 'gemini-test-upstream', contents: 'Say hello' }));
    const srec = mock.last();
    assert.equal(srec.path, '/v1beta/models/gemini-test-upstream:streamGenerateContent?alt=sse');
    assert.equal(srec.stream, true);
    assert.deepEqual(chunks.map((c) => c.text), REPLY_PIECES);
    assert.deepEqual(finishOf(chunks), ['STOP'], 'finishReason only on the last chunk');
    assert.ok(chunks.slice(0, -1).every((c) => c.usageMetadata === undefined), 'usage only on the last chunk');
    assert.deepEqual(chunks.at(-1).usageMetadata, answerFor(srec.body, srec.model).usageMetadata);
    const wire = Buffer.concat(srec.writes).toString('utf8');
    assert.match(wire, /^data: \{"candidates"/);
    assert.match(wire, /\}\r\n\r\ndata: /, 'events framed with CRLF');
    assert.doesNotMatch(wire, /\[DONE\]/);
    assert.ok(srec.writes.length >= 3 * chunks.length);
  });

  test('key rules and errors: Google error shapes and the SDK ApiError status', async () => {
    const inUrl = await fetch(`${mock.baseURL}/models/m:generateContent?key=${mock.apiKey}`, {
      method: 'POST', headers: { 'x-goog-api-key': mock.apiKey, 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
    });
    assert.equal(inUrl.status, 400);
    assert.equal((await inUrl.json()).error.status, 'INVALID_ARGUMENT');
    const noKey = await fetch(`${mock.baseURL}/models/m:generateContent`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
    });
    assert.equal(noKey.status, 403);
    assert.equal((await noKey.json()).error.status, 'PERMISSION_DENIED');

    const bad = new GoogleGenAI({ apiKey: 'AIzaWrongKey', httpOptions: { baseUrl: mock.url } });
    await assert.rejects(bad.models.generateContent({ model: 'm', contents: 'x' }), (e) => e instanceof ApiError && e.status === 400
      && JSON.parse(e.message).error.details[0].reason === 'API_KEY_INVALID');

    const cases = [
      ['mock-error-400', 400, 'INVALID_ARGUMENT'],
      ['mock-error-401', 401, 'UNAUTHENTICATED'],
      ['mock-error-429', 429, 'RESOURCE_EXHAUSTED'],
      ['mock-error-500', 500, 'INTERNAL'],
      ['mock-error-529', 503, 'UNAVAILABLE'],
    ];
    for (const [model, status, name] of cases) {
      for (const stream of [false, true]) {
        const call = stream
          ? ai.models.generateContentStream({ model, contents: 'x' })
          : ai.models.generateContent({ model, contents: 'x' });
        await assert.rejects(call, (e) => {
          assert.ok(e instanceof ApiError, `${model}: ${e}`);
          assert.equal(e.status, status);
          const body = JSON.parse(e.message);
          assert.equal(body.error.code, status);
          assert.equal(body.error.status, name);
          return true;
        });
      }
    }
    const r429 = await fetch(`${mock.baseURL}/models/mock-error-429:generateContent`, {
      method: 'POST', headers: { 'x-goog-api-key': mock.apiKey, 'content-type': 'application/json' }, body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
    });
    assert.equal(r429.headers.get('retry-after'), '7');
    assert.ok((await r429.json()).error.details.some((d) => d['@type'] === 'type.googleapis.com/google.rpc.RetryInfo' && d.retryDelay === '7s'));
  });

  test('mock-tools: one functionCall (with its thoughtSignature), then the functionResponse', async () => {
    const contents = [{ role: 'user', parts: [{ text: 'Weather in Paris?' }] }];
    const r = await ai.models.generateContent({ model: 'mock-tools', contents, config: { tools: TOOLS } });
    assert.deepEqual(r.functionCalls, [{ name: 'get_weather', args: TOOL_ARGS }]);
    assert.equal(r.candidates[0].finishReason, 'STOP');
    assert.equal(r.candidates[0].content.parts[0].thoughtSignature, FUNCTION_CALL_SIGNATURE);
    assert.equal(r.usageMetadata.candidatesTokenCount, 6, '1 for the name + 5 argument fragments');

    const chunks = await collect(await ai.models.generateContentStream({ model: 'mock-tools', contents, config: { tools: TOOLS } }));
    assert.deepEqual(chunks.flatMap((c) => c.functionCalls ?? []), [{ name: 'get_weather', args: TOOL_ARGS }]);

    const turn2 = [...contents, r.candidates[0].content, { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { result: '18°C and sunny' } } }] }];
    const r2 = await ai.models.generateContent({ model: 'mock-tools', contents: turn2, config: { tools: TOOLS } });
    assert.equal(r2.text, 'The weather is 18°C and sunny');
    const rec = mock.last();
    assert.deepEqual(rec.toolCallsReceived, [{ id: null, name: 'get_weather', arguments: TOOL_ARGS, args: TOOL_ARGS }]);
    assert.deepEqual(rec.toolResultsReceived, [{ id: null, name: 'get_weather', text: '18°C and sunny', response: { result: '18°C and sunny' } }]);
    assert.deepEqual(rec.reasoningReceived, { text: '', signatures: [FUNCTION_CALL_SIGNATURE] }, 'the signature came back');
    assert.equal(r2.usageMetadata.promptTokenCount, promptTokens(rec.body));

    // The chat helper does the same round trip.
    const chat = ai.chats.create({ model: 'mock-tools', config: { tools: TOOLS } });
    const c1 = await chat.sendMessage({ message: 'Weather?' });
    assert.deepEqual(c1.functionCalls, [{ name: 'get_weather', args: TOOL_ARGS }]);
    const c2 = await chat.sendMessage({ message: [{ functionResponse: { name: 'get_weather', response: { output: '21°C' } } }] });
    assert.equal(c2.text, 'The weather is 21°C');
  });

  test('mock-parallel-tools in two chunks, mock-tool-no-args, mock-length-tool', async () => {
    const chunks = await collect(await ai.models.generateContentStream({ model: 'mock-parallel-tools', contents: 'x', config: { tools: TOOLS } }));
    const withCalls = chunks.filter((c) => c.functionCalls?.length);
    assert.equal(withCalls.length, 2, 'one call per chunk');
    assert.deepEqual(withCalls.map((c) => c.functionCalls), [[{ name: 'get_weather', args: TOOL_ARGS }], [{ name: 'get_time', args: TOOL_ARGS_2 }]]);
    assert.deepEqual(finishOf(chunks), ['STOP']);
    assert.equal(chunks.at(-1).usageMetadata.candidatesTokenCount, 12);
    const plain = await ai.models.generateContent({ model: 'mock-parallel-tools', contents: 'x', config: { tools: TOOLS } });
    assert.deepEqual(plain.functionCalls, [{ name: 'get_weather', args: TOOL_ARGS }, { name: 'get_time', args: TOOL_ARGS_2 }]);

    for (const stream of [false, true]) {
      const p = { model: 'mock-tool-no-args', contents: 'x', config: { tools: TOOLS } };
      const res = stream ? await collect(await ai.models.generateContentStream(p)) : [await ai.models.generateContent(p)];
      const calls = res.flatMap((c) => c.functionCalls ?? []);
      assert.deepEqual(calls, [{ name: 'get_weather' }], 'a functionCall without args');
      assert.doesNotMatch(Buffer.concat(mock.last().writes).toString('utf8'), /"args"/);

      const cp = { model: 'mock-length-tool', contents: 'x', config: { tools: TOOLS, maxOutputTokens: 4 } };
      const cut = stream ? await collect(await ai.models.generateContentStream(cp)) : [await ai.models.generateContent(cp)];
      assert.deepEqual(cut.flatMap((c) => c.functionCalls ?? []), [{ name: 'get_weather', args: { city: 'Paris' } }]);
      assert.deepEqual(finishOf(cut), ['MAX_TOKENS']);
      assert.equal(cut.at(-1).usageMetadata.candidatesTokenCount, 4);
    }
  });

  test('mock-reasoning: thought parts, then text with a thoughtSignature, thoughtsTokenCount; the reasoning sent back', async () => {
    const config = { thinkingConfig: { includeThoughts: true } };
    const chunks = await collect(await ai.models.generateContentStream({ model: 'mock-reasoning', contents: 'think', config }));
    const parts = chunks.flatMap((c) => c.candidates[0].content.parts);
    const thoughts = parts.filter((p) => p.thought === true);
    assert.equal(thoughts.map((p) => p.text).join(''), REASONING_TEXT);
    assert.ok(thoughts.length > 1);
    const firstText = parts.findIndex((p) => !p.thought);
    assert.equal(firstText, thoughts.length, 'all thoughts come before the answer');
    assert.equal(parts[firstText].thoughtSignature, REASONING_SIGNATURE);
    assert.equal(textOf(chunks), REPLY_TEXT);
    const u = chunks.at(-1).usageMetadata;
    assert.equal(u.thoughtsTokenCount, 8);
    assert.equal(u.candidatesTokenCount, REPLY_PIECES.length, 'thoughts are not in candidatesTokenCount');
    assert.equal(u.totalTokenCount, u.promptTokenCount + REPLY_PIECES.length + 8);

    const r = await ai.models.generateContent({ model: 'mock-reasoning', contents: 'think', config });
    assert.equal(r.text, REPLY_TEXT, 'text leaves the thought out');
    assert.deepEqual(r.candidates[0].content.parts, [{ text: REASONING_TEXT, thought: true }, { text: REPLY_TEXT, thoughtSignature: REASONING_SIGNATURE }]);

    const chat = ai.chats.create({ model: 'mock-reasoning', config });
    await chat.sendMessage({ message: 'hi' });
    await chat.sendMessage({ message: 'again' });
    assert.deepEqual(mock.last().reasoningReceived, { text: REASONING_TEXT, signatures: [REASONING_SIGNATURE] });
  });

  test('mock-json, mock-stop, mock-length, mock-image, mock-cjk, mock-cache, countTokens', async () => {
    const json = await ai.models.generateContent({ model: 'mock-json', contents: 'x', config: { responseMimeType: 'application/json' } });
    assert.deepEqual(JSON.parse(json.text), { answer: 42 });
    assert.equal(mock.last().jsonRequested, true);
    const jsonStreamed = await collect(await ai.models.generateContentStream({ model: 'mock-json', contents: 'x' }));
    assert.equal(textOf(jsonStreamed), JSON_TEXT);
    assert.equal(mock.last().jsonRequested, false);

    for (const stream of [false, true]) {
      const run = async (p) => (stream ? collect(await ai.models.generateContentStream(p)) : [await ai.models.generateContent(p)]);
      const stop = await run({ model: 'mock-stop', contents: 'x', config: { stopSequences: [' mock', 'from'] } });
      assert.equal(textOf(stop), 'Hello from the');
      assert.deepEqual(finishOf(stop), ['STOP']);
      const len = await run({ model: 'mock-length', contents: 'x', config: { maxOutputTokens: 5 } });
      assert.equal(textOf(len), REPLY_PIECES.slice(0, 5).join(''));
      assert.deepEqual(finishOf(len), ['MAX_TOKENS']);
      assert.equal(len.at(-1).usageMetadata.candidatesTokenCount, 5);
    }

    const img = await ai.models.generateContent({
      model: 'mock-image',
      contents: [{ role: 'user', parts: [{ inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } }, { text: 'What is this?' }] }],
    });
    assert.equal(img.text, 'I see an image');
    assert.equal(mock.last().imageReceived, true);
    const file = await ai.models.generateContent({ model: 'mock-image', contents: [{ role: 'user', parts: [{ fileData: { mimeType: 'image/jpeg', fileUri: 'https://example.com/cat.jpg' } }] }] });
    assert.equal(file.text, 'I see an image');
    const noImg = await ai.models.generateContent({ model: 'mock-image', contents: 'x' });
    assert.equal(noImg.text, 'no image');

    const cjk = await collect(await ai.models.generateContentStream({ model: 'mock-cjk', contents: 'x' }));
    assert.equal(textOf(cjk), CJK_TEXT);
    assert.equal(cjk.length, 5);
    assert.ok(splitInsideUtf8(mock.last()) >= 10, 'every multi-byte character split across writes');

    const cache = await ai.models.generateContent({ model: 'mock-cache', contents: 'a b c d e f g' });
    const P = promptTokens(mock.last().body);
    assert.equal(cache.usageMetadata.promptTokenCount, P);
    assert.equal(cache.usageMetadata.cachedContentTokenCount, Math.floor(P / 2), 'included in promptTokenCount');

    const count = await ai.models.countTokens({ model: 'm', contents: 'one two three' });
    assert.equal(count.totalTokens, 3 + (3 + 3));
  });

  test('mock-truncated, mock-no-terminator (the normal end), mock-no-finish, mock-midstream-error, mock-slow, no alt=sse', async () => {
    const got = [];
    await assert.rejects((async () => {
      for await (const c of await ai.models.generateContentStream({ model: 'mock-truncated', contents: 'x' })) got.push(c.text);
    })());
    assert.deepEqual(got, REPLY_PIECES.slice(0, 3));
    assert.equal(mock.last().cutByMock, true);
    await assert.rejects(ai.models.generateContent({ model: 'mock-truncated', contents: 'x' }));

    const nt = await collect(await ai.models.generateContentStream({ model: 'mock-no-terminator', contents: 'x' }));
    assert.equal(textOf(nt), REPLY_TEXT);
    assert.deepEqual(finishOf(nt), ['STOP']);
    assert.equal(mock.last().closed, false);

    const nf = await collect(await ai.models.generateContentStream({ model: 'mock-no-finish', contents: 'x' }));
    assert.equal(textOf(nf), REPLY_TEXT);
    assert.deepEqual(finishOf(nf), [], 'no finishReason at all');
    assert.equal(nf.at(-1).usageMetadata.candidatesTokenCount, REPLY_PIECES.length);
    assert.equal(mock.last().closed, false, 'then a clean end');

    const mid = [];
    await assert.rejects((async () => {
      for await (const c of await ai.models.generateContentStream({ model: 'mock-midstream-error', contents: 'x' })) mid.push(c.text);
    })(), (e) => e instanceof ApiError && e.status === 503);
    assert.equal(mid.join(''), 'Hello from');

    const ac = new AbortController();
    let n = 0;
    await assert.rejects((async () => {
      for await (const c of await ai.models.generateContentStream({ model: 'mock-slow', contents: 'x', config: { abortSignal: ac.signal } })) {
        if (c.text) n += 1;
        if (n === 3) ac.abort();
      }
    })());
    const rec = mock.last();
    const deadline = Date.now() + 3000;
    while (!rec.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(rec.closed, true, 'the mock saw the caller hang up');
    assert.equal(rec.cutByMock, false);

    const fast = await startMockGemini({ slowPieceMs: 2 });
    try {
      const fastAi = new GoogleGenAI({ apiKey: fast.apiKey, httpOptions: { baseUrl: fast.url } });
      const t0 = Date.now();
      const r = await fastAi.models.generateContent({ model: 'mock-slow', contents: 'x', config: { maxOutputTokens: 3 } });
      assert.equal(r.text, ' w0 w1 w2');
      assert.ok(Date.now() - t0 >= 400, 'held its answer for 200 x slowPieceMs');
    } finally {
      await fast.close();
    }

    // streamGenerateContent without alt=sse answers one JSON array of the same chunks.
    const arr = await fetch(`${mock.baseURL}/models/m:streamGenerateContent`, {
      method: 'POST', headers: { 'x-goog-api-key': mock.apiKey, 'content-type': 'application/json' }, body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
    });
    const list = await arr.json();
    assert.equal(list.length, REPLY_PIECES.length);
    assert.equal(list.map((c) => c.candidates[0].content.parts[0].text).join(''), REPLY_TEXT);
  });
});
