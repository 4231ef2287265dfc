// The official `openai` client (chat completions) against every kind of model one gateway serves:
// the local model (text only), a mock OpenAI-compatible upstream through preset `openai` (and
// preset `deepseek` for reasoning_content), a mock Anthropic upstream and a mock Gemini upstream
// (the upstream matrix of lib/harness.mjs). Each scenario runs plain and streamed where it
// applies, and every call's usage row is checked in PostgreSQL against what the upstream reported
// (the mocks' answerFor / promptTokens on the exact body the gateway sent), with the cost in
// nano-USD from the configured prices.
//
// Each call carries a unique word ("zq17x") in its last user message, so the upstream request it
// caused is found in the mock's records whatever else ran.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  LOCAL_MODEL, MATRIX_PRICES, MATRIX_PROVIDER_NAMES, adminDatabaseUrl, costNano, createStack, loadDeps,
  localGeneration, matrixConfig, parseSse, requireBinary, usageRow, usageRowsAfter, usd,
  checkUsageRow, mockOf as sharedMockOf, reportedUsage, upstreamRequest,
} from '../lib/harness.mjs';
import {
  CJK_TEXT, FUNCTION_CALL_SIGNATURE, JSON_TEXT, REASONING_SIGNATURE, REASONING_TEXT, REPLY_PIECES, REPLY_TEXT,
  RETRY_AFTER_SECONDS, TOOL_ARGS, TOOL_ARGS_2, answerFor as openaiAnswerFor, promptTokens as openaiPromptTokens,
  startMockOpenAI,
} from '../mock_openai.mjs';
import { answerFor as anthropicAnswerFor, startMockAnthropic } from '../mock_anthropic.mjs';
import { startMockGemini } from '../mock_gemini.mjs';

const { OpenAI, pg } = await loadDeps();
adminDatabaseUrl(); // fail at once, clearly, without a database
requireBinary();

const ALL_REMOTE = ['openai', 'deepseek', 'anthropic', 'gemini'];
const LOCAL = localGeneration('Once upon a time');
const PNG = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather', description: 'Current weather',
      parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] },
    },
  },
  {
    type: 'function',
    function: { name: 'get_time', description: 'Local time', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
  },
];
// Which JSON modes each upstream takes (presets.cpp, remote_provider.cpp): DeepSeek has json_object
// only, Anthropic structured outputs only.
const JSON_MODES = {
  openai: { schema: true, object: true }, deepseek: { schema: false, object: true },
  anthropic: { schema: true, object: false }, gemini: { schema: true, object: true },
};
const JSON_SCHEMA_FORMAT = {
  type: 'json_schema',
  json_schema: { name: 'answer', schema: { type: 'object', properties: { answer: { type: 'number' } }, required: ['answer'] } },
};
// Tool call ids as each upstream kind makes them (Gemini has none: the gateway makes one up).
const CALL_ID = {
  openai: /^call_mock\d+_\d$/, deepseek: /^call_mock\d+_\d$/, anthropic: /^toolu_mock\d+_\d$/, gemini: /^call_[0-9A-Za-z]{24}$/,
};

const stack = createStack('e2e-providers');
let client; // openai SDK on /v1
let seq = 0;
/** A unique word for one call's prompt (no tag is a substring of another). */
const tag = () => `zq${++seq}x`;

const mockOf = (kind) => sharedMockOf(stack, kind);

const upstream = (kind, word) => upstreamRequest(stack, kind, word);

const reported = reportedUsage;

/** The `usage` object of an OpenAI-shaped answer for usage `u` of `kind`. */
function usageJson(kind, u) {
  return {
    prompt_tokens: u.prompt, completion_tokens: u.completion, total_tokens: u.prompt + u.completion,
    prompt_tokens_details: { cached_tokens: u.cached ?? 0, cache_write_tokens: u.cacheWrite ?? 0 },
    completion_tokens_details: { reasoning_tokens: u.reasoning ?? 0 },
    cost: usd(costNano(MATRIX_PRICES[kind], u)), is_byok: false,
  };
}

const checkRow = (id, expected) => checkUsageRow(stack, id, expected);

/** A plain create() with its response headers. */
async function create(params) {
  const { data, response } = await client.chat.completions.create(params).withResponse();
  assert.equal(response.headers.get('x-request-id'), data.id);
  return { r: data, headers: response.headers };
}

/** A streamed create(): every chunk, and what they add up to (reasoning_details merged by index). */
async function streamed(params) {
  const { data: stream, response } = await client.chat.completions
    .create({ ...params, stream: true, stream_options: { include_usage: true } }).withResponse();
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  const id = chunks[0].id;
  assert.match(id, /^gen-/);
  assert.equal(response.headers.get('x-request-id'), id);
  assert.ok(chunks.every((c) => c.id === id && c.object === 'chat.completion.chunk' && c.model === params.model));
  const deltas = chunks.flatMap((c) => c.choices.map((ch) => ch.delta ?? {}));
  const details = [];
  for (const d of deltas.flatMap((x) => x.reasoning_details ?? [])) {
    const at = details.find((x) => x.index === d.index);
    if (!at) { details.push({ ...d }); continue; }
    if (d.text) at.text += d.text;
    if (d.data) at.data = (at.data ?? '') + d.data;
    if (d.signature) at.signature = d.signature;
  }
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, [], 'the usage chunk comes last, with no choices');
  return {
    id, chunks, headers: response.headers, usage: last.usage,
    text: deltas.map((d) => d.content ?? '').join(''),
    reasoning: deltas.map((d) => d.reasoning ?? '').join(''),
    details,
    finishes: chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f != null),
  };
}

/** Raw POST with the main key. */
function post(p, body, headers = {}) {
  return fetch(`${stack.gw.url}${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${stack.keys.main}`, ...headers },
    body: JSON.stringify(body),
  });
}

/** Runs `fn`, which must throw; returns the error. */
async function rejects(fn, what) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  assert.fail(`${what}: expected an error`);
}

/** The gateway's usage estimate (call_driver.cpp EstimateUsage) for text-only messages and output. */
function estimate(messages, outputText) {
  let bytes = 0;
  for (const m of messages) bytes += 8 + Buffer.byteLength(typeof m.content === 'string' ? m.content : '');
  return { prompt: Math.floor(bytes / 4) + 1, completion: Math.floor((Buffer.byteLength(outputText) + 3) / 4) };
}

describe('openai SDK against every kind of upstream', { timeout: 120000 }, () => {
  before(async () => {
    await stack.start({
      pg,
      mocks: {
        openai: () => startMockOpenAI({ writeDelayMs: 1 }),
        anthropic: () => startMockAnthropic({ writeDelayMs: 1 }),
        gemini: () => startMockGemini({ writeDelayMs: 1 }),
      },
      config: (mocks) => matrixConfig(mocks, {
        extraModels: [{
          // Two endpoints: the first fails before anything reached the client, the second serves.
          id: 'multi/fallback', name: 'Multi: fallback',
          endpoints: [
            { provider: 'openai', model: 'mock-error-500', pricing: MATRIX_PRICES.openai },
            { provider: 'anthropic', model: 'anthropic-test-upstream', pricing: MATRIX_PRICES.anthropic },
          ],
        }],
      }),
    });
    client = new OpenAI({ apiKey: stack.keys.main, baseURL: `${stack.gw.url}/v1`, maxRetries: 0, timeout: 30000 });
  });

  after(() => stack.stop());

  // ------------------------------------------------------------------ plain text

  test('local model: plain and streamed, exact reference text, usage and rows', async () => {
    const params = { model: LOCAL_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: LOCAL.pieces.length };
    const { r } = await create(params);
    const u = { prompt: LOCAL.promptTokens, completion: LOCAL.pieces.length };
    assert.equal(r.provider, 'Local');
    assert.equal(r.choices[0].message.content, LOCAL.text);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.deepEqual(r.usage, usageJson('local', u));
    const s = await streamed(params);
    assert.equal(s.text, r.choices[0].message.content, 'streamed text equals the non-streamed text');
    assert.deepEqual(s.finishes, ['length']);
    assert.deepEqual(s.usage, usageJson('local', u));
    await checkRow(r.id, { model: LOCAL_MODEL, kind: 'local', u, streamed: false, finish: 'length' });
    await checkRow(s.id, { model: LOCAL_MODEL, kind: 'local', u, streamed: true, finish: 'length' });
  });

  test('local model: 300 streams in a row each end with their finish chunk, the usage chunk and [DONE]', async () => {
    // The local engine hands over its last tokens and the end of the call while the previous
    // chunk may still be being written; none of it may be lost. (A race: hence many streams, of
    // a few lengths.)
    const broken = [];
    for (let i = 0; i < 300; i++) {
      const n = [24, 48, 64][i % 3];
      const cut = LOCAL.generated(n);
      const res = await post('/v1/chat/completions', {
        model: LOCAL_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: n,
        stream: true, stream_options: { include_usage: true },
      });
      const data = parseSse(await res.text());
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
      const ok = data.at(-1) === '[DONE]' && text === cut.text
        && chunks.at(-2)?.choices[0]?.finish_reason === 'length' && chunks.at(-1)?.usage?.completion_tokens === n;
      const shown = (d) => (d === '[DONE]' ? d : JSON.stringify(JSON.parse(d).choices[0]?.delta ?? JSON.parse(d).usage ?? JSON.parse(d)));
      if (!ok) broken.push(`#${i} ${res.headers.get('x-request-id')}: ${text.length} of ${cut.text.length} characters, ends ${data.slice(-2).map(shown).join(' | ')}`);
    }
    assert.deepEqual(broken, [], `${broken.length} of 300 streams lost their end`);
  });

  for (const kind of ALL_REMOTE) {
    test(`${kind}: plain text, plain and streamed: exact text, usage, cost, provider and rows`, async () => {
      const model = `${kind}/default`;
      const t1 = tag();
      const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: `Say hello ${t1}` }];
      const { r } = await create({ model, messages });
      const rec = upstream(kind, t1);
      const u = reported(kind, rec);
      assert.equal(u.prompt, openaiPromptTokens({ messages }), 'the upstream saw the same conversation');
      assert.equal(u.completion, REPLY_PIECES.length);
      assert.equal(r.model, model);
      assert.equal(r.provider, MATRIX_PROVIDER_NAMES[kind]);
      assert.equal(r.choices[0].message.role, 'assistant');
      assert.equal(r.choices[0].message.content, REPLY_TEXT);
      assert.equal(r.choices[0].finish_reason, 'stop');
      assert.deepEqual(r.usage, usageJson(kind, u));

      const t2 = tag();
      const s = await streamed({ model, messages: [messages[0], { role: 'user', content: `Say hello ${t2}` }] });
      assert.equal(s.text, r.choices[0].message.content, 'streamed text equals the non-streamed text');
      assert.deepEqual(s.finishes, ['stop']);
      assert.equal(s.chunks[0].provider, MATRIX_PROVIDER_NAMES[kind]);
      assert.deepEqual(s.usage, usageJson(kind, reported(kind, upstream(kind, t2))));
      await checkRow(r.id, { model, kind, u, streamed: false });
      await checkRow(s.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });
    });
  }

  // ------------------------------------------------------------------ tools

  for (const kind of ALL_REMOTE) {
    test(`${kind}: tool call round trip: streamed call equals the plain one; the result reaches the upstream in its format`, async () => {
      const model = `${kind}/mock-tools`;
      const t1 = tag();
      const messages = [{ role: 'user', content: `What is the weather in Paris? ${t1}` }];
      const { r } = await create({ model, messages, tools: TOOLS });
      const m = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, 'tool_calls');
      assert.equal(m.content, null);
      assert.equal(m.tool_calls.length, 1);
      const call = m.tool_calls[0];
      assert.match(call.id, CALL_ID[kind]);
      assert.equal(call.type, 'function');
      assert.equal(call.function.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.function.arguments), TOOL_ARGS);
      if (kind === 'gemini') {
        // Gemini 3's thought signature of the call travels as a reasoning.encrypted entry tied to it.
        assert.deepEqual(m.reasoning_details, [
          { type: 'reasoning.encrypted', data: FUNCTION_CALL_SIGNATURE, format: 'google-gemini-v1', index: 0, id: call.id },
        ]);
      }
      await checkRow(r.id, { model, kind, u: reported(kind, upstream(kind, t1)), streamed: false, finish: 'tool_calls' });

      // The SDK's stream helper assembles the same call from the deltas.
      const t2 = tag();
      const runner = client.chat.completions.stream({
        model, messages: [{ role: 'user', content: `What is the weather in Paris? ${t2}` }], tools: TOOLS,
        stream_options: { include_usage: true },
      });
      const final = await runner.finalChatCompletion();
      const sm = final.choices[0].message;
      assert.equal(final.choices[0].finish_reason, 'tool_calls');
      assert.equal(sm.tool_calls.length, 1);
      assert.match(sm.tool_calls[0].id, CALL_ID[kind]);
      assert.equal(sm.tool_calls[0].function.name, call.function.name);
      assert.deepEqual(JSON.parse(sm.tool_calls[0].function.arguments), JSON.parse(call.function.arguments));
      await checkRow(final.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true, finish: 'tool_calls' });

      // Second turn: the assistant message as the SDK returned it, then the tool's result.
      const t3 = tag();
      const turn2 = [
        { role: 'user', content: `What is the weather in Paris? ${t3}` }, m,
        { role: 'tool', tool_call_id: call.id, content: '22 C and sunny' },
      ];
      const { r: r2 } = await create({ model, messages: turn2, tools: TOOLS });
      assert.equal(r2.choices[0].message.content, 'The weather is 22 C and sunny');
      assert.equal(r2.choices[0].finish_reason, 'stop');
      const rec = upstream(kind, t3);
      assert.deepEqual(rec.toolResultsReceived.map((x) => x.text), ['22 C and sunny']);
      assert.deepEqual(rec.toolCallsReceived.map((x) => [x.name, x.args]), [['get_weather', TOOL_ARGS]]);
      const b = rec.body;
      if (kind === 'openai' || kind === 'deepseek') {
        assert.deepEqual(b.messages.at(-1), { role: 'tool', tool_call_id: call.id, content: '22 C and sunny' });
        assert.equal(b.messages.at(-2).role, 'assistant');
        assert.deepEqual(b.messages.at(-2).tool_calls, [{ id: call.id, type: 'function', function: call.function }]);
      } else if (kind === 'anthropic') {
        const [assistant, user] = b.messages.slice(-2);
        assert.equal(assistant.role, 'assistant');
        assert.deepEqual(assistant.content.filter((x) => x.type === 'tool_use'),
          [{ type: 'tool_use', id: call.id, name: 'get_weather', input: TOOL_ARGS }]);
        assert.equal(user.role, 'user');
        assert.equal(user.content[0].type, 'tool_result');
        assert.equal(user.content[0].tool_use_id, call.id);
        assert.deepEqual(rec.toolResultsReceived.map((x) => x.id), [call.id]);
      } else {
        const [modelTurn, user] = b.contents.slice(-2);
        assert.equal(modelTurn.role, 'model');
        assert.deepEqual(modelTurn.parts, [{ functionCall: { name: 'get_weather', args: TOOL_ARGS }, thoughtSignature: FUNCTION_CALL_SIGNATURE }]);
        assert.equal(user.role, 'user');
        assert.deepEqual(user.parts, [{ functionResponse: { name: 'get_weather', response: { result: '22 C and sunny' } } }]);
      }
      await checkRow(r2.id, { model, kind, u: reported(kind, rec), streamed: false });
    });

    test(`${kind}: parallel tool calls, plain and streamed, then both results`, async () => {
      const model = `${kind}/mock-parallel-tools`;
      const t1 = tag();
      const { r } = await create({ model, messages: [{ role: 'user', content: `Weather and time? ${t1}` }], tools: TOOLS });
      const m = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, 'tool_calls');
      const want = [['get_weather', TOOL_ARGS], ['get_time', TOOL_ARGS_2]];
      assert.deepEqual(m.tool_calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]), want);
      assert.notEqual(m.tool_calls[0].id, m.tool_calls[1].id);
      await checkRow(r.id, { model, kind, u: reported(kind, upstream(kind, t1)), streamed: false, finish: 'tool_calls' });

      const t2 = tag();
      const final = await client.chat.completions.stream({
        model, messages: [{ role: 'user', content: `Weather and time? ${t2}` }], tools: TOOLS, stream_options: { include_usage: true },
      }).finalChatCompletion();
      const sm = final.choices[0].message;
      assert.deepEqual(sm.tool_calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]), want);
      assert.equal(final.choices[0].finish_reason, 'tool_calls');
      await checkRow(final.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true, finish: 'tool_calls' });

      const t3 = tag();
      const { r: r2 } = await create({
        model, tools: TOOLS,
        messages: [
          { role: 'user', content: `Weather and time? ${t3}` }, m,
          { role: 'tool', tool_call_id: m.tool_calls[0].id, content: '22 C' },
          { role: 'tool', tool_call_id: m.tool_calls[1].id, content: '10:42' },
        ],
      });
      assert.equal(r2.choices[0].message.content, 'The weather is 22 C, 10:42');
      const rec = upstream(kind, t3);
      assert.deepEqual(rec.toolResultsReceived.map((x) => x.text), ['22 C', '10:42']);
      if (kind !== 'gemini') assert.deepEqual(rec.toolResultsReceived.map((x) => x.id), m.tool_calls.map((c) => c.id));
      else assert.deepEqual(rec.toolResultsReceived.map((x) => x.name), ['get_weather', 'get_time']);
      await checkRow(r2.id, { model, kind, u: reported(kind, rec), streamed: false });
    });

    test(`${kind}: tool call without arguments reads "{}", plain and streamed`, async () => {
      const model = `${kind}/mock-tool-no-args`;
      const t1 = tag();
      const { r } = await create({ model, messages: [{ role: 'user', content: `Weather? ${t1}` }], tools: TOOLS });
      assert.equal(r.choices[0].finish_reason, 'tool_calls');
      assert.deepEqual(r.choices[0].message.tool_calls.map((c) => [c.function.name, c.function.arguments]), [['get_weather', '{}']]);
      const t2 = tag();
      const final = await client.chat.completions.stream({
        model, messages: [{ role: 'user', content: `Weather? ${t2}` }], tools: TOOLS, stream_options: { include_usage: true },
      }).finalChatCompletion();
      assert.deepEqual(final.choices[0].message.tool_calls.map((c) => [c.function.name, c.function.arguments]), [['get_weather', '{}']],
        'streamed: the arguments the SDK assembles must be "{}", as in the non-streamed answer (JSON.parse("") throws)');
      await checkRow(r.id, { model, kind, u: reported(kind, upstream(kind, t1)), streamed: false, finish: 'tool_calls' });
      await checkRow(final.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true, finish: 'tool_calls' });
    });
  }

  // ------------------------------------------------------------------ reasoning

  const REASONING_DETAILS = {
    openai: [{ type: 'reasoning.text', text: REASONING_TEXT, signature: null, format: 'unknown', index: 0 }],
    deepseek: [{ type: 'reasoning.text', text: REASONING_TEXT, signature: null, format: 'unknown', index: 0 }],
    anthropic: [{ type: 'reasoning.text', text: REASONING_TEXT, signature: REASONING_SIGNATURE, format: 'anthropic-claude-v1', index: 0 }],
    gemini: [
      { type: 'reasoning.text', text: REASONING_TEXT, signature: null, format: 'google-gemini-v1', index: 0 },
      { type: 'reasoning.encrypted', data: REASONING_SIGNATURE, format: 'google-gemini-v1', index: 1 },
    ],
  };
  // What the upstream gets back when the answer is replayed on the next turn: Anthropic the
  // signed thinking block, Gemini the thought and its signature; OpenAI's Chat Completions takes
  // no reasoning back, and DeepSeek only on turns that called tools (tested below).
  const REPLAYED = {
    openai: null, deepseek: null,
    anthropic: { text: REASONING_TEXT, signatures: [REASONING_SIGNATURE] },
    gemini: { text: REASONING_TEXT, signatures: [REASONING_SIGNATURE] },
  };

  for (const kind of ALL_REMOTE) {
    test(`${kind}: reasoning on the message and the deltas, usage, and its replay on the next turn`, async () => {
      const model = `${kind}/mock-reasoning`;
      const t1 = tag();
      const question = { role: 'user', content: `Think first ${t1}` };
      const { r, headers } = await create({ model, messages: [question], reasoning_effort: 'medium', max_tokens: 2000 });
      const m = r.choices[0].message;
      assert.equal(m.content, REPLY_TEXT);
      assert.equal(m.reasoning, REASONING_TEXT);
      assert.deepEqual(m.reasoning_details, REASONING_DETAILS[kind]);
      const rec = upstream(kind, t1);
      const u = reported(kind, rec);
      assert.equal(u.reasoning, kind === 'anthropic' ? 0 : 8, 'reasoning tokens as the upstream reports them');
      assert.deepEqual(r.usage, usageJson(kind, u));
      // How each upstream was asked to reason.
      if (kind === 'openai') assert.equal(rec.body.reasoning_effort, 'medium');
      if (kind === 'deepseek') {
        assert.equal(headers.get('x-tollgate-unsupported-parameters'), 'reasoning');
        assert.ok(!('reasoning_effort' in rec.body) && !('reasoning' in rec.body), JSON.stringify(rec.body));
      }
      if (kind === 'anthropic') assert.deepEqual(rec.body.thinking, { type: 'enabled', budget_tokens: 1024 });
      if (kind === 'gemini') assert.deepEqual(rec.body.generationConfig.thinkingConfig, { thinkingBudget: 8192, includeThoughts: true });
      await checkRow(r.id, { model, kind, u, streamed: false });

      const t2 = tag();
      const s = await streamed({ model, messages: [{ role: 'user', content: `Think first ${t2}` }], reasoning_effort: 'medium', max_tokens: 2000 });
      assert.equal(s.reasoning, REASONING_TEXT, 'delta.reasoning adds up to the reasoning');
      assert.deepEqual(s.details, REASONING_DETAILS[kind], 'delta.reasoning_details add up to the message\'s');
      assert.equal(s.text, REPLY_TEXT);
      assert.deepEqual(s.usage, usageJson(kind, reported(kind, upstream(kind, t2))));
      await checkRow(s.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });

      // Replay: the assistant message exactly as the SDK returned it.
      const t3 = tag();
      const { r: r3 } = await create({ model, messages: [question, m, { role: 'user', content: `And again? ${t3}` }] });
      assert.equal(r3.choices[0].message.content, REPLY_TEXT);
      const replay = upstream(kind, t3);
      assert.deepEqual(replay.reasoningReceived, REPLAYED[kind], replay.rawBody);
    });
  }

  test('deepseek: reasoning of a tool-call turn goes back as reasoning_content; OpenAI never gets it', async () => {
    const history = (word) => [
      { role: 'user', content: `Weather in Paris? ${word}` },
      {
        role: 'assistant', content: null, reasoning: 'I should call the tool.',
        tool_calls: [{ id: 'call_hist_0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
      },
      { role: 'tool', tool_call_id: 'call_hist_0', content: '22 C' },
    ];
    for (const [kind, want] of [['deepseek', { text: 'I should call the tool.', signatures: [] }], ['openai', null]]) {
      const t = tag();
      const { r } = await create({ model: `${kind}/mock-tools`, messages: history(t), tools: TOOLS });
      assert.equal(r.choices[0].message.content, 'The weather is 22 C');
      const rec = upstream(kind, t);
      assert.deepEqual(rec.reasoningReceived, want, kind);
      if (kind === 'deepseek') assert.equal(rec.body.messages[1].reasoning_content, 'I should call the tool.');
    }
  });

  // ------------------------------------------------------------------ stop, max tokens

  test('local model: stop sequence and max_tokens cut exactly where the reference says', async () => {
    const base = { model: LOCAL_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0 };
    const stop = LOCAL.stopped(' named');
    const { r } = await create({ ...base, stop: [' named'], max_tokens: 64 });
    assert.equal(r.choices[0].message.content, stop.text);
    assert.equal(r.choices[0].finish_reason, 'stop');
    const su = { prompt: LOCAL.promptTokens, completion: stop.completionTokens };
    assert.deepEqual(r.usage, usageJson('local', su));
    const s = await streamed({ ...base, stop: [' named'], max_tokens: 64 });
    assert.equal(s.text, stop.text);
    assert.deepEqual(s.finishes, ['stop']);
    await checkRow(r.id, { model: LOCAL_MODEL, kind: 'local', u: su, streamed: false });
    await checkRow(s.id, { model: LOCAL_MODEL, kind: 'local', u: su, streamed: true });

    const cut = LOCAL.generated(8);
    const { r: r2 } = await create({ ...base, max_tokens: 8 });
    assert.equal(r2.choices[0].message.content, cut.text);
    assert.equal(r2.choices[0].finish_reason, 'length');
    const s2 = await streamed({ ...base, max_completion_tokens: 8 });
    assert.equal(s2.text, cut.text);
    assert.deepEqual(s2.finishes, ['length']);
    const cu = { prompt: LOCAL.promptTokens, completion: 8 };
    await checkRow(r2.id, { model: LOCAL_MODEL, kind: 'local', u: cu, streamed: false, finish: 'length' });
    await checkRow(s2.id, { model: LOCAL_MODEL, kind: 'local', u: cu, streamed: true, finish: 'length' });
  });

  for (const kind of ALL_REMOTE) {
    test(`${kind}: stop sequence and max tokens reach the upstream and end the answer`, async () => {
      let model = `${kind}/mock-stop`;
      const t1 = tag();
      const { r } = await create({ model, messages: [{ role: 'user', content: `Hello ${t1}` }], stop: [' mock'] });
      assert.equal(r.choices[0].message.content, 'Hello from the');
      assert.equal(r.choices[0].finish_reason, 'stop');
      let rec = upstream(kind, t1);
      if (kind === 'anthropic') assert.deepEqual(rec.body.stop_sequences, [' mock']);
      else if (kind === 'gemini') assert.deepEqual(rec.body.generationConfig.stopSequences, [' mock']);
      else assert.deepEqual(rec.body.stop, [' mock']);
      await checkRow(r.id, { model, kind, u: reported(kind, rec), streamed: false });
      const t2 = tag();
      const s = await streamed({ model, messages: [{ role: 'user', content: `Hello ${t2}` }], stop: [' mock'] });
      assert.equal(s.text, 'Hello from the');
      assert.deepEqual(s.finishes, ['stop']);
      await checkRow(s.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });

      model = `${kind}/mock-length`;
      const t3 = tag();
      const { r: r2 } = await create({ model, messages: [{ role: 'user', content: `Hello ${t3}` }], max_tokens: 3 });
      assert.equal(r2.choices[0].message.content, 'Hello from the');
      assert.equal(r2.choices[0].finish_reason, 'length');
      rec = upstream(kind, t3);
      assert.equal(reported(kind, rec).completion, 3);
      await checkRow(r2.id, { model, kind, u: reported(kind, rec), streamed: false, finish: 'length' });
      const t4 = tag();
      const s2 = await streamed({ model, messages: [{ role: 'user', content: `Hello ${t4}` }], max_completion_tokens: 3 });
      assert.equal(s2.text, 'Hello from the');
      assert.deepEqual(s2.finishes, ['length']);
      await checkRow(s2.id, { model, kind, u: reported(kind, upstream(kind, t4)), streamed: true, finish: 'length' });
    });
  }

  test('max_tokens and max_completion_tokens reach preset openai as max_completion_tokens, preset deepseek as max_tokens', async () => {
    for (const [kind, field, absent] of [['openai', 'max_completion_tokens', 'max_tokens'], ['deepseek', 'max_tokens', 'max_completion_tokens']]) {
      for (const given of ['max_tokens', 'max_completion_tokens']) {
        const t = tag();
        const { r } = await create({ model: `${kind}/mock-length`, messages: [{ role: 'user', content: `Hi ${t}` }], [given]: 5 });
        assert.equal(r.choices[0].message.content, REPLY_PIECES.slice(0, 5).join(''));
        const body = upstream(kind, t).body;
        assert.equal(body[field], 5, `${kind}, ${given} given: ${JSON.stringify(body)}`);
        assert.ok(!(absent in body), `${kind}, ${given} given: ${absent} must not reach the upstream: ${JSON.stringify(body)}`);
      }
    }
  });

  // ------------------------------------------------------------------ JSON, images, CJK, cache

  for (const kind of ALL_REMOTE) {
    test(`${kind}: JSON mode: json_schema and json_object reach the upstreams that take them, else are dropped and named`, async () => {
      const model = `${kind}/mock-json`;
      const takes = JSON_MODES[kind];
      for (const [mode, format, param] of [['schema', JSON_SCHEMA_FORMAT, 'structured_outputs'], ['object', { type: 'json_object' }, 'response_format']]) {
        const t1 = tag();
        const { r, headers } = await create({ model, messages: [{ role: 'user', content: `Answer in JSON ${t1}` }], response_format: format });
        assert.equal(r.choices[0].message.content, JSON_TEXT);
        assert.deepEqual(JSON.parse(r.choices[0].message.content), { answer: 42 });
        const rec = upstream(kind, t1);
        assert.equal(rec.jsonRequested, takes[mode], `${kind} asked for JSON (${mode}): ${rec.rawBody}`);
        assert.equal(headers.get('x-tollgate-unsupported-parameters'), takes[mode] ? null : param, mode);
        await checkRow(r.id, { model, kind, u: reported(kind, rec), streamed: false });
        const t2 = tag();
        const s = await streamed({ model, messages: [{ role: 'user', content: `Answer in JSON ${t2}` }], response_format: format });
        assert.equal(s.text, JSON_TEXT);
        assert.equal(upstream(kind, t2).jsonRequested, takes[mode]);
        assert.equal(s.headers.get('x-tollgate-unsupported-parameters'), takes[mode] ? null : param, mode);
        await checkRow(s.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });
      }
    });

    test(`${kind}: image input reaches the upstream in its format (DeepSeek has none: 400 naming messages)`, async () => {
      const model = `${kind}/mock-image`;
      const t1 = tag();
      const messages = [{ role: 'user', content: [{ type: 'text', text: `What is this? ${t1}` }, { type: 'image_url', image_url: { url: PNG } }] }];
      if (kind === 'deepseek') {
        const e = await rejects(() => create({ model, messages }), 'image to deepseek');
        assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.param, 'messages');
        assert.equal(e.code, 'unsupported_parameter');
        assert.equal(mockOf(kind).requests.filter((x) => x.rawBody.includes(t1)).length, 0, 'the upstream was never asked');
        return;
      }
      const { r } = await create({ model, messages });
      assert.equal(r.choices[0].message.content, 'I see an image');
      const rec = upstream(kind, t1);
      assert.equal(rec.imageReceived, true);
      const data = PNG.slice(PNG.indexOf(',') + 1);
      if (kind === 'anthropic') {
        assert.deepEqual(rec.body.messages[0].content.find((b) => b.type === 'image').source, { type: 'base64', media_type: 'image/png', data });
      } else if (kind === 'gemini') {
        assert.deepEqual(rec.body.contents[0].parts.find((p) => p.inlineData).inlineData, { mimeType: 'image/png', data });
      } else {
        assert.equal(rec.body.messages[0].content.find((p) => p.type === 'image_url').image_url.url, PNG);
      }
      await checkRow(r.id, { model, kind, u: reported(kind, rec), streamed: false });
      const t2 = tag();
      const s = await streamed({ model, messages: [{ role: 'user', content: [{ type: 'text', text: `What is this? ${t2}` }, { type: 'image_url', image_url: { url: PNG } }] }] });
      assert.equal(s.text, 'I see an image');
      await checkRow(s.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });
    });

    test(`${kind}: Chinese text and emoji, both ways, byte for byte`, async () => {
      const model = `${kind}/mock-cjk`;
      const t1 = tag();
      const prompt = `请用中文回答 🌍🚀 谢谢 ${t1}`;
      const { r } = await create({ model, messages: [{ role: 'user', content: prompt }] });
      assert.equal(r.choices[0].message.content, CJK_TEXT);
      const rec = upstream(kind, t1);
      const text = (c) => (typeof c === 'string' ? c : c.map((b) => b.text).join(''));
      const sent = kind === 'gemini' ? rec.body.contents[0].parts[0].text : text(rec.body.messages[0].content);
      assert.equal(sent, prompt, 'the prompt reached the upstream unchanged');
      assert.equal(reported(kind, rec).prompt, openaiPromptTokens({ messages: [{ role: 'user', content: prompt }] }));
      await checkRow(r.id, { model, kind, u: reported(kind, rec), streamed: false });
      const t2 = tag();
      const s = await streamed({ model, messages: [{ role: 'user', content: `请用中文回答 🌍🚀 谢谢 ${t2}` }] });
      assert.equal(s.text, CJK_TEXT, 'every multi-byte character arrives whole');
      await checkRow(s.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });
    });

    test(`${kind}: prompt cache reads (and Anthropic's writes) are billed at their prices`, async () => {
      const model = `${kind}/mock-cache`;
      const t1 = tag();
      const messages = [{ role: 'system', content: 'A long and stable system prompt that gets cached' }, { role: 'user', content: `Hello there ${t1}` }];
      const { r } = await create({ model, messages });
      const rec = upstream(kind, t1);
      const u = reported(kind, rec);
      const P = openaiPromptTokens({ messages });
      assert.equal(u.prompt, P, 'prompt_tokens include cache reads and writes');
      assert.equal(u.cached, Math.floor(P / 2));
      assert.equal(u.cacheWrite, kind === 'anthropic' ? Math.floor(P / 4) : 0);
      assert.deepEqual(r.usage, usageJson(kind, u));
      await checkRow(r.id, { model, kind, u, streamed: false });
      const t2 = tag();
      const s = await streamed({ model, messages: [messages[0], { role: 'user', content: `Hello there ${t2}` }] });
      const su = reported(kind, upstream(kind, t2));
      assert.deepEqual(s.usage, usageJson(kind, su));
      await checkRow(s.id, { model, kind, u: su, streamed: true });
    });
  }

  // ------------------------------------------------------------------ errors

  for (const kind of ALL_REMOTE) {
    test(`${kind}: upstream errors raise the SDK's typed errors with the right status; rows as billed`, async () => {
      const msg = () => [{ role: 'user', content: `Hi ${tag()}` }];
      // 400: the upstream's message; a refused request is never billed.
      let e = await rejects(() => create({ model: `${kind}/mock-error-400`, messages: msg() }), '400');
      assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, 400);
      assert.equal(e.type, 'invalid_request_error');
      assert.deepEqual(await usageRowsAfter(stack.db, e.requestID), [], 'no usage row for an upstream 400');

      // 429: Retry-After and a code are passed on.
      e = await rejects(() => create({ model: `${kind}/mock-error-429`, messages: msg() }), '429');
      assert.ok(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, 429);
      assert.equal(e.headers.get('retry-after'), String(RETRY_AFTER_SECONDS));
      assert.equal(e.code, { openai: 'rate_limit_exceeded', deepseek: 'rate_limit_exceeded', anthropic: 'rate_limit_error', gemini: 'RESOURCE_EXHAUSTED' }[kind]);
      assert.equal(e.type, 'rate_limit_error');
      assert.equal(e.error.metadata?.provider_name, MATRIX_PROVIDER_NAMES[kind]);
      await checkRow(e.requestID, {
        model: `${kind}/mock-error-429`, kind, u: { prompt: 0, completion: 0 }, streamed: false, status: 429, finish: 'error', errorCode: 'rate_limit_error',
      });
      // Within the Retry-After the endpoint cools down (routing): the next call, streamed, gets the
      // gateway's own 429 with the time left, the upstream is not asked again, and nothing is billed.
      const asked = mockOf(kind).requests.length;
      e = await rejects(() => create({ model: `${kind}/mock-error-429`, messages: msg(), stream: true }), '429 streamed');
      assert.ok(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
      const left = Number(e.headers.get('retry-after'));
      assert.ok(left >= 1 && left <= RETRY_AFTER_SECONDS, `retry-after ${left}`);
      assert.equal(e.code, 'rate_limited');
      assert.equal(mockOf(kind).requests.length, asked, 'the cooling endpoint is not called');
      assert.deepEqual(await usageRowsAfter(stack.db, e.requestID), [], 'nothing billed for a call no provider saw');

      // 500 -> 502, 529 / overloaded -> 503.
      for (const [scenario, status, type] of [['mock-error-500', 502, 'upstream_error'], ['mock-error-529', 503, 'service_unavailable']]) {
        e = await rejects(() => create({ model: `${kind}/${scenario}`, messages: msg() }), scenario);
        assert.ok(e instanceof OpenAI.InternalServerError, `${scenario}: ${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, status, scenario);
        assert.equal(e.type, type, scenario);
        await checkRow(e.requestID, {
          model: `${kind}/${scenario}`, kind, u: { prompt: 0, completion: 0 }, streamed: false, status, finish: 'error', errorCode: type,
        });
      }

      // Upstream 401: our credentials were refused. 502, and nothing of the key or the upstream's address.
      const mock = mockOf(kind);
      for (const stream of [false, true]) {
        const res = await post('/v1/chat/completions', { model: `${kind}/mock-error-401`, messages: msg(), stream });
        assert.equal(res.status, 502);
        const text = await res.text();
        const headers = JSON.stringify([...res.headers]);
        for (const secret of [mock.apiKey, '127.0.0.1', `localhost:${mock.port}`, `:${mock.port}/`]) {
          assert.ok(!text.includes(secret) && !headers.includes(secret), `the answer must not show ${secret}: ${text} ${headers}`);
        }
        const body = JSON.parse(text);
        assert.equal(body.error.type, 'upstream_error');
        assert.equal(body.error.metadata?.provider_name, MATRIX_PROVIDER_NAMES[kind]);
      }
      assert.ok(!fs.readFileSync(stack.gw.logFile, 'utf8').includes(mock.apiKey), 'the gateway log must not show the upstream key');
      e = await rejects(() => create({ model: `${kind}/mock-error-401`, messages: msg() }), '401');
      assert.ok(e instanceof OpenAI.InternalServerError && e.status === 502, `${e.constructor.name} ${e.status}`);
      await checkRow(e.requestID, {
        model: `${kind}/mock-error-401`, kind, u: { prompt: 0, completion: 0 }, streamed: false, status: 502, finish: 'error', errorCode: 'upstream_error',
      });
    });

    test(`${kind}: a stream that fails after its first byte ends with the error event; the SDK raises`, async () => {
      for (const [scenario, piecesBefore, status] of [
        ['mock-midstream-error', 2, kind === 'anthropic' || kind === 'gemini' ? 503 : 502],
        ['mock-truncated', 3, 502],
      ]) {
        const model = `${kind}/${scenario}`;
        const messages = [{ role: 'user', content: `Hello ${tag()}` }];
        const res = await post('/v1/chat/completions', { model, messages, stream: true, stream_options: { include_usage: true } });
        assert.equal(res.status, 200, scenario);
        const id = res.headers.get('x-request-id');
        const data = parseSse(await res.text());
        assert.ok(!data.includes('[DONE]'), `${scenario}: no [DONE] after a failure: ${data.slice(-2)}`);
        const last = JSON.parse(data.at(-1));
        assert.ok(last.error && typeof last.error.message === 'string', `${scenario}: the error event is last: ${data.at(-1)}`);
        assert.equal(last.error.metadata?.provider_name, MATRIX_PROVIDER_NAMES[kind]);
        assert.equal(last.error.type, status === 503 ? 'service_unavailable' : 'upstream_error', scenario);
        const text = data.slice(0, -1).map((d) => JSON.parse(d).choices[0]?.delta?.content ?? '').join('');
        assert.equal(text, REPLY_PIECES.slice(0, piecesBefore).join(''), scenario);
        // The row bills what went out, estimated (call_driver.cpp), keeping what the upstream reported.
        const est = estimate(messages, text);
        const u = { prompt: est.prompt, completion: est.completion };
        if (kind === 'anthropic') {
          const rep = anthropicAnswerFor(upstream(kind, messages[0].content.split(' ')[1]).body).usage;
          u.prompt = Math.max(u.prompt, rep.input_tokens);
          u.completion = Math.max(u.completion, 1); // message_start's output_tokens
        }
        await checkRow(id, {
          model, kind, u, streamed: true, status, finish: 'error', estimated: true,
          errorCode: status === 503 ? 'service_unavailable' : 'upstream_error',
        });

        // The SDK sees the text, then raises.
        const got = [];
        const e = await rejects(async () => {
          const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: `Hello ${tag()}` }], stream: true });
          for await (const c of stream) got.push(c.choices[0]?.delta?.content ?? '');
        }, scenario);
        assert.ok(e instanceof OpenAI.APIError, `${scenario}: ${e.constructor.name}: ${e.message}`);
        assert.equal(e.message, last.error.message, `${scenario}: the SDK raises the gateway's error`);
        assert.equal(got.join(''), text, `${scenario}: the SDK saw the text before the error`);
      }
    });
  }

  test('an upstream that fails before the first byte falls back to the next endpoint of the model', async () => {
    const t = tag();
    // `order` pins the failing endpoint first: the default weighted draw by
    // price could put Anthropic first now and then.
    const { r } = await create({
      model: 'multi/fallback', messages: [{ role: 'user', content: `Hello ${t}` }], provider: { order: ['openai', 'anthropic'] },
    });
    assert.equal(r.provider, 'Anthropic');
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    assert.equal(upstream('openai', t).status, 500, 'the first endpoint was tried');
    const rec = upstream('anthropic', t);
    const u = reported('anthropic', rec);
    const row = await usageRow(stack.db, r.id);
    assert.deepEqual([row.provider, row.upstream_model, row.prompt_tokens, row.completion_tokens, row.cost_nano_usd, row.status],
      ['Anthropic', 'anthropic-test-upstream', u.prompt, u.completion, costNano(MATRIX_PRICES.anthropic, u), 200]);
  });

  // ------------------------------------------------------------------ what the local model cannot do

  test('local model: tools or an image are a 400 naming the parameter; nothing is billed', async () => {
    let e = await rejects(() => create({ model: LOCAL_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], tools: TOOLS }), 'tools');
    assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.param, 'tools');
    assert.equal(e.code, 'unsupported_parameter');
    assert.deepEqual(await usageRowsAfter(stack.db, e.requestID ?? 'none'), []);
    e = await rejects(() => create({
      model: LOCAL_MODEL,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Once upon a time' }, { type: 'image_url', image_url: { url: PNG } }] }],
    }), 'image');
    assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.param, 'messages');
    assert.equal(e.code, 'unsupported_parameter');
    assert.match(e.message, /image/);
    // Streamed: the same 400 before any byte.
    e = await rejects(() => create({ model: LOCAL_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], tools: TOOLS, stream: true }), 'tools, streamed');
    assert.ok(e instanceof OpenAI.BadRequestError && e.param === 'tools', `${e.constructor.name} ${e.param}`);
  });

  test('unsupported parameters are dropped and named; provider.require_parameters makes them a 400', async () => {
    const t1 = tag();
    const { r, headers } = await create({ model: 'openai/default', messages: [{ role: 'user', content: `Hi ${t1}` }], top_k: 40, temperature: 0.5 });
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    assert.equal(headers.get('x-tollgate-unsupported-parameters'), 'top_k');
    const body = upstream('openai', t1).body;
    assert.ok(!('top_k' in body), `top_k must not reach preset openai: ${JSON.stringify(body)}`);
    assert.equal(body.temperature, 0.5);
    // Streamed answers name them too.
    const s = await streamed({ model: 'openai/default', messages: [{ role: 'user', content: `Hi ${tag()}` }], top_k: 40 });
    assert.equal(s.headers.get('x-tollgate-unsupported-parameters'), 'top_k');
    // The local model takes top_k but no reasoning setting (stories260K has no template with a thinking switch).
    const { headers: lh } = await create({
      model: LOCAL_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: 4, top_k: 5, reasoning_effort: 'low',
    });
    assert.equal(lh.get('x-tollgate-unsupported-parameters'), 'reasoning');

    const t2 = tag();
    const e = await rejects(() => create({
      model: 'openai/default', messages: [{ role: 'user', content: `Hi ${t2}` }], top_k: 40, provider: { require_parameters: true },
    }), 'require_parameters');
    assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.param, 'top_k');
    assert.match(e.message, /require_parameters/);
    assert.equal(mockOf('openai').requests.filter((x) => x.rawBody.includes(t2)).length, 0, 'the upstream was never asked');
  });
});
