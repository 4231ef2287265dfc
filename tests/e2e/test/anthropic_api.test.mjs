// The official `@anthropic-ai/sdk` client against POST /v1/messages (Anthropic's Messages API for
// ANY model) on one gateway serving every kind of model: the local model (text only), a mock
// OpenAI-compatible upstream through preset `openai` (and `deepseek`), a mock Anthropic upstream
// and a mock Gemini upstream (the upstream matrix of lib/harness.mjs). Clients as they really are:
// messages.create, messages.stream().finalMessage(), beta.messages.create (?beta=true and
// anthropic-beta), messages.countTokens, system as a string and as blocks, a role "system" entry
// in messages, unknown top-level fields, every `thinking` type. Every call's usage row is checked
// in PostgreSQL against what the upstream reported, with the exact cost in nano-USD.
//
// Each call carries a unique word ("zq17x") in its last user message, so the upstream request it
// caused is found in the mock's records.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  LOCAL_MODEL, adminDatabaseUrl, createStack, loadAnthropicSdk,
  loadDeps, localGeneration, matrixConfig, parseSseEvents, requireBinary, usageRowsAfter,
  checkUsageRow, mockOf as sharedMockOf, reportedUsage, upstreamRequest,
} from '../lib/harness.mjs';
import {
  CJK_TEXT, JSON_TEXT, REASONING_SIGNATURE, REASONING_TEXT, REPLY_PIECES, REPLY_TEXT, RETRY_AFTER_SECONDS, TOOL_ARGS,
  TOOL_ARGS_2, answerFor as openaiAnswerFor, promptTokens as openaiPromptTokens, startMockOpenAI,
} from '../mock_openai.mjs';
import { answerFor as anthropicAnswerFor, startMockAnthropic } from '../mock_anthropic.mjs';
import { startMockGemini } from '../mock_gemini.mjs';

const { pg } = await loadDeps();
const { Anthropic } = await loadAnthropicSdk();
adminDatabaseUrl(); // fail at once, clearly, without a database
requireBinary();

const ALL_REMOTE = ['openai', 'deepseek', 'anthropic', 'gemini'];
const LOCAL = localGeneration('Once upon a time');
const PNG_DATA = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const IMAGE_BLOCK = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG_DATA } };
const TOOLS = [
  {
    name: 'get_weather', description: 'Current weather',
    input_schema: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] },
  },
  { name: 'get_time', description: 'Local time', input_schema: { type: 'object', properties: { city: { type: 'string' } } } },
];
const JSON_OUTPUT = {
  format: { type: 'json_schema', schema: { type: 'object', properties: { answer: { type: 'number' } }, required: ['answer'], additionalProperties: false } },
};
const TOOL_ID = {
  openai: /^call_mock\d+_\d$/, deepseek: /^call_mock\d+_\d$/, anthropic: /^toolu_mock\d+_\d$/, gemini: /^call_[0-9A-Za-z]{24}$/,
};

const stack = createStack('e2e-anthropic-api');
let client; // @anthropic-ai/sdk, base URL the gateway (the SDK appends /v1/messages)
let seq = 0;
const tag = () => `zq${++seq}x`;
const mockOf = (kind) => sharedMockOf(stack, kind);

const upstream = (kind, word) => upstreamRequest(stack, kind, word);

const reported = reportedUsage;

/** Anthropic's `usage` for usage `u`: input_tokens exclude cache reads and writes. */
const anthropicUsage = (u) => ({
  input_tokens: u.prompt - (u.cached ?? 0) - (u.cacheWrite ?? 0), cache_creation_input_tokens: u.cacheWrite ?? 0,
  cache_read_input_tokens: u.cached ?? 0, output_tokens: u.completion,
});

const checkRow = (id, expected) => checkUsageRow(stack, id, expected);

/** messages.create() with its response headers. */
async function create(params, options) {
  const { data, response } = await client.messages.create(params, options).withResponse();
  assert.equal(response.headers.get('x-request-id'), data.id);
  return { m: data, headers: response.headers };
}

/** messages.stream(): the final message and every event the SDK saw. */
async function stream(params) {
  const s = client.messages.stream(params);
  const events = [];
  s.on('streamEvent', (e) => events.push(e));
  const m = await s.finalMessage();
  return { m, events };
}

/** Raw POST to the gateway with the main key (as a Bearer token unless `headers` say otherwise). */
function post(p, body, headers = { authorization: `Bearer ${stack.keys.main}` }) {
  return fetch(`${stack.gw.url}${p}`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers }, body: JSON.stringify(body),
  });
}

async function rejects(fn, what) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  assert.fail(`${what}: expected an error`);
}

/** The text blocks of a message's content joined. */
const textOf = (m) => m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
/** The text of Anthropic content (a string or blocks). */
const blocksText = (c) => (typeof c === 'string' ? c : c.filter((b) => b.type === 'text').map((b) => b.text).join(''));

/** The gateway's estimate (call_driver.cpp EstimateUsage) for text-only messages (system included). */
function estimate(texts, outputText = '') {
  let bytes = 0;
  for (const t of texts) bytes += 8 + Buffer.byteLength(t);
  return { prompt: Math.floor(bytes / 4) + 1, completion: Math.floor((Buffer.byteLength(outputText) + 3) / 4) };
}

/** Checks a raw /v1/messages event stream's framing and order; returns its events. */
function checkEventOrder(events, { last = 'message_stop' } = {}) {
  for (const e of events) assert.equal(JSON.parse(e.data).type, e.event, `event name and data.type agree: ${e.event}`);
  const names = events.map((e) => e.event);
  assert.equal(names[0], 'message_start');
  assert.equal(names.at(-1), last);
  let open = null;
  for (const [i, e] of events.entries()) {
    const d = JSON.parse(e.data);
    if (e.event === 'content_block_start') { assert.equal(open, null, `block ${d.index} opened inside another`); open = d.index; }
    if (e.event === 'content_block_delta') assert.equal(d.index, open, `delta at ${i} for the open block`);
    if (e.event === 'content_block_stop') { assert.equal(d.index, open); open = null; }
  }
  return names;
}

describe('@anthropic-ai/sdk (POST /v1/messages) against every kind of upstream', { timeout: 120000 }, () => {
  before(async () => {
    await stack.start({
      pg,
      mocks: {
        openai: () => startMockOpenAI({ writeDelayMs: 1 }),
        anthropic: () => startMockAnthropic({ writeDelayMs: 1 }),
        gemini: () => startMockGemini({ writeDelayMs: 1 }),
      },
      config: (mocks) => matrixConfig(mocks),
    });
    client = new Anthropic({ apiKey: stack.keys.main, baseURL: stack.gw.url, maxRetries: 0, timeout: 30000 });
  });

  after(() => stack.stop());

  // ------------------------------------------------------------------ plain text

  test('local model: create and stream().finalMessage(): exact reference text, usage, rows', async () => {
    const params = { model: LOCAL_MODEL, max_tokens: LOCAL.pieces.length, temperature: 0, messages: [{ role: 'user', content: 'Once upon a time' }] };
    const u = { prompt: LOCAL.promptTokens, completion: LOCAL.pieces.length };
    const { m } = await create(params);
    assert.deepEqual(m.content, [{ type: 'text', text: LOCAL.text }]);
    assert.equal(m.stop_reason, 'max_tokens');
    assert.deepEqual(m.usage, anthropicUsage(u));
    const { m: sm } = await stream(params);
    assert.deepEqual(sm.content, m.content, 'streamed text equals the non-streamed text');
    assert.equal(sm.stop_reason, 'max_tokens');
    assert.deepEqual(sm.usage, anthropicUsage(u));
    await checkRow(m.id, { model: LOCAL_MODEL, kind: 'local', u, streamed: false, finish: 'length' });
    await checkRow(sm.id, { model: LOCAL_MODEL, kind: 'local', u, streamed: true, finish: 'length' });
  });

  test('local model: 300 streams in a row each end with content_block_stop, message_delta and message_stop', async () => {
    // The local engine hands over its last tokens and the end of the call while the previous
    // event may still be being written; none of it may be lost. (A race: hence many streams, of
    // a few lengths.)
    const broken = [];
    for (let i = 0; i < 300; i++) {
      const n = [24, 48, 64][i % 3];
      const cut = LOCAL.generated(n);
      const res = await post('/v1/messages', {
        model: LOCAL_MODEL, max_tokens: n, temperature: 0, stream: true, messages: [{ role: 'user', content: 'Once upon a time' }],
      });
      const events = parseSseEvents(await res.text());
      const names = events.map((e) => e.event);
      const text = events.filter((e) => e.event === 'content_block_delta').map((e) => JSON.parse(e.data).delta.text).join('');
      const ok = text === cut.text && JSON.stringify(names.slice(-3)) === JSON.stringify(['content_block_stop', 'message_delta', 'message_stop']);
      if (!ok) broken.push(`#${i} ${res.headers.get('x-request-id')}: ${text.length} of ${cut.text.length} characters, ends ${names.slice(-3).join(', ')}`);
    }
    assert.deepEqual(broken, [], `${broken.length} of 300 streams lost their end`);
  });

  for (const kind of ALL_REMOTE) {
    test(`${kind}: create and stream().finalMessage(): exact text, usage, event order, rows`, async () => {
      const model = `${kind}/default`;
      const t1 = tag();
      const { m, headers } = await create({ model, max_tokens: 1024, system: 'You are terse.', messages: [{ role: 'user', content: `Say hello ${t1}` }] });
      const rec = upstream(kind, t1);
      const u = reported(kind, rec);
      assert.equal(u.prompt, openaiPromptTokens({ messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: `Say hello ${t1}` }] }));
      assert.match(m.id, /^gen-/);
      assert.equal(m.type, 'message');
      assert.equal(m.role, 'assistant');
      assert.equal(m.model, model);
      assert.deepEqual(m.content, [{ type: 'text', text: REPLY_TEXT }]);
      assert.equal(m.stop_reason, 'end_turn');
      assert.equal(m.stop_sequence, null);
      assert.deepEqual(m.usage, anthropicUsage(u));
      assert.equal(headers.get('x-tollgate-unsupported-parameters'), null);
      await checkRow(m.id, { model, kind, u, streamed: false });

      const t2 = tag();
      const { m: sm, events } = await stream({ model, max_tokens: 1024, system: 'You are terse.', messages: [{ role: 'user', content: `Say hello ${t2}` }] });
      assert.deepEqual(sm.content, m.content, 'streamed text equals the non-streamed text');
      assert.equal(sm.stop_reason, 'end_turn');
      const su = reported(kind, upstream(kind, t2));
      assert.deepEqual(sm.usage, anthropicUsage(su));
      assert.equal(events.filter((e) => e.type === 'message_stop').length, 1);
      await checkRow(sm.id, { model, kind, u: su, streamed: true });

      // The raw stream: named events, in order, each block opened and closed once.
      const t3 = tag();
      const res = await post('/v1/messages', { model, max_tokens: 1024, stream: true, messages: [{ role: 'user', content: `Say hello ${t3}` }] });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /^text\/event-stream/);
      const raw = parseSseEvents(await res.text());
      const names = checkEventOrder(raw);
      assert.deepEqual(names.filter((n) => n !== 'content_block_delta' && n !== 'ping'),
        ['message_start', 'content_block_start', 'content_block_stop', 'message_delta', 'message_stop']);
      const text = raw.filter((e) => e.event === 'content_block_delta').map((e) => JSON.parse(e.data).delta.text).join('');
      assert.equal(text, REPLY_TEXT);
      const delta = JSON.parse(raw.find((e) => e.event === 'message_delta').data);
      assert.deepEqual(delta.delta, { stop_reason: 'end_turn', stop_sequence: null });
      assert.deepEqual(delta.usage, anthropicUsage(reported(kind, upstream(kind, t3))));
    });
  }

  // ------------------------------------------------------------------ system prompts

  for (const kind of ALL_REMOTE) {
    test(`${kind}: system as a string, as blocks, and as a role "system" message reach the upstream's system slot`, async () => {
      const systemOf = (rec) => {
        if (kind === 'anthropic') return blocksText(rec.body.system ?? []);
        if (kind === 'gemini') return rec.body.systemInstruction.parts.map((p) => p.text).join('');
        const sys = rec.body.messages.filter((x) => x.role === 'system' || x.role === 'developer');
        return sys.map((x) => blocksText(x.content)).join('');
      };
      const variants = [
        (w) => ({ system: 'Answer briefly.', messages: [{ role: 'user', content: `Hi ${w}` }] }),
        (w) => ({ system: [{ type: 'text', text: 'Answer briefly.' }], messages: [{ role: 'user', content: `Hi ${w}` }] }),
        // Claude Code sends role "system" entries inside messages; the SDK lets it through.
        (w) => ({ messages: [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: `Hi ${w}` }] }),
      ];
      for (const [i, v] of variants.entries()) {
        const t = tag();
        const { m } = await create({ model: `${kind}/default`, max_tokens: 256, ...v(t) });
        assert.equal(textOf(m), REPLY_TEXT, `variant ${i}`);
        const rec = upstream(kind, t);
        assert.equal(systemOf(rec), 'Answer briefly.', `variant ${i}: ${rec.rawBody}`);
        const u = reported(kind, rec);
        assert.equal(u.prompt, openaiPromptTokens({ messages: [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: `Hi ${t}` }] }), `variant ${i}`);
        assert.deepEqual(m.usage, anthropicUsage(u), `variant ${i}`);
        await checkRow(m.id, { model: `${kind}/default`, kind, u, streamed: false });
      }
    });
  }

  // ------------------------------------------------------------------ tools

  for (const kind of ALL_REMOTE) {
    test(`${kind}: tool_use round trip: the streamed block equals the plain one; the tool_result reaches the upstream in its format`, async () => {
      const model = `${kind}/mock-tools`;
      const t1 = tag();
      const question = { role: 'user', content: `What is the weather in Paris? ${t1}` };
      const { m } = await create({ model, max_tokens: 1024, tools: TOOLS, messages: [question] });
      assert.equal(m.stop_reason, 'tool_use');
      const uses = m.content.filter((b) => b.type === 'tool_use');
      assert.equal(uses.length, 1);
      assert.deepEqual(m.content.filter((b) => b.type !== 'tool_use'), []);
      assert.match(uses[0].id, TOOL_ID[kind]);
      assert.equal(uses[0].name, 'get_weather');
      assert.deepEqual(uses[0].input, TOOL_ARGS);
      await checkRow(m.id, { model, kind, u: reported(kind, upstream(kind, t1)), streamed: false, finish: 'tool_calls' });

      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 1024, tools: TOOLS, messages: [{ role: 'user', content: `What is the weather in Paris? ${t2}` }] });
      assert.equal(sm.stop_reason, 'tool_use');
      assert.deepEqual(sm.content.map((b) => [b.type, b.name, b.input]), [['tool_use', 'get_weather', TOOL_ARGS]]);
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true, finish: 'tool_calls' });

      const t3 = tag();
      const { m: m2 } = await create({
        model, max_tokens: 1024, tools: TOOLS,
        messages: [
          { role: 'user', content: `What is the weather in Paris? ${t3}` },
          { role: 'assistant', content: m.content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: uses[0].id, content: '22 C and sunny' }] },
        ],
      });
      assert.deepEqual(m2.content, [{ type: 'text', text: 'The weather is 22 C and sunny' }]);
      assert.equal(m2.stop_reason, 'end_turn');
      const rec = upstream(kind, t3);
      assert.deepEqual(rec.toolResultsReceived.map((x) => x.text), ['22 C and sunny']);
      assert.deepEqual(rec.toolCallsReceived.map((x) => [x.name, x.args]), [['get_weather', TOOL_ARGS]]);
      const b = rec.body;
      if (kind === 'openai' || kind === 'deepseek') {
        assert.deepEqual(b.messages.at(-1), { role: 'tool', tool_call_id: uses[0].id, content: '22 C and sunny' });
        assert.deepEqual(b.messages.at(-2).tool_calls.map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
          [[uses[0].id, 'get_weather', TOOL_ARGS]]);
      } else if (kind === 'anthropic') {
        const [assistant, user] = b.messages.slice(-2);
        assert.deepEqual(assistant, { role: 'assistant', content: [{ type: 'tool_use', id: uses[0].id, name: 'get_weather', input: TOOL_ARGS }] });
        assert.equal(user.role, 'user');
        assert.equal(user.content[0].type, 'tool_result');
        assert.equal(user.content[0].tool_use_id, uses[0].id);
      } else {
        const [modelTurn, user] = b.contents.slice(-2);
        // The call came through a client that cannot carry Gemini's thought signature: the
        // gateway marks the foreign call as the thought-signatures guide says, or Gemini 3 refuses it.
        assert.deepEqual(modelTurn, {
          role: 'model', parts: [{ functionCall: { name: 'get_weather', args: TOOL_ARGS }, thoughtSignature: 'skip_thought_signature_validator' }],
        });
        assert.deepEqual(user, { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { result: '22 C and sunny' } } }] });
      }
      await checkRow(m2.id, { model, kind, u: reported(kind, rec), streamed: false });
    });

    test(`${kind}: parallel tool_use blocks, plain and streamed, then both results in one user turn`, async () => {
      const model = `${kind}/mock-parallel-tools`;
      const want = [['get_weather', TOOL_ARGS], ['get_time', TOOL_ARGS_2]];
      const t1 = tag();
      const { m } = await create({ model, max_tokens: 1024, tools: TOOLS, messages: [{ role: 'user', content: `Weather and time? ${t1}` }] });
      assert.equal(m.stop_reason, 'tool_use');
      assert.deepEqual(m.content.map((b) => [b.name, b.input]), want);
      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 1024, tools: TOOLS, messages: [{ role: 'user', content: `Weather and time? ${t2}` }] });
      assert.deepEqual(sm.content.map((b) => [b.name, b.input]), want);
      await checkRow(m.id, { model, kind, u: reported(kind, upstream(kind, t1)), streamed: false, finish: 'tool_calls' });
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true, finish: 'tool_calls' });

      const t3 = tag();
      const { m: m2 } = await create({
        model, max_tokens: 1024, tools: TOOLS,
        messages: [
          { role: 'user', content: `Weather and time? ${t3}` },
          { role: 'assistant', content: m.content },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: m.content[0].id, content: '22 C' },
              { type: 'tool_result', tool_use_id: m.content[1].id, content: [{ type: 'text', text: '10:42' }] },
            ],
          },
        ],
      });
      assert.equal(textOf(m2), 'The weather is 22 C, 10:42');
      const rec = upstream(kind, t3);
      assert.deepEqual(rec.toolResultsReceived.map((x) => x.text), ['22 C', '10:42']);
      if (kind !== 'gemini') assert.deepEqual(rec.toolResultsReceived.map((x) => x.id), [m.content[0].id, m.content[1].id]);
      else assert.deepEqual(rec.toolResultsReceived.map((x) => x.name), ['get_weather', 'get_time']);
      await checkRow(m2.id, { model, kind, u: reported(kind, rec), streamed: false });
    });

    test(`${kind}: tool_use without arguments has input {}, plain and streamed`, async () => {
      const model = `${kind}/mock-tool-no-args`;
      const t1 = tag();
      const { m } = await create({ model, max_tokens: 1024, tools: TOOLS, messages: [{ role: 'user', content: `Weather? ${t1}` }] });
      assert.deepEqual(m.content.map((b) => [b.type, b.name, b.input]), [['tool_use', 'get_weather', {}]]);
      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 1024, tools: TOOLS, messages: [{ role: 'user', content: `Weather? ${t2}` }] });
      assert.deepEqual(sm.content.map((b) => [b.type, b.name, b.input]), [['tool_use', 'get_weather', {}]]);
      assert.equal(sm.stop_reason, 'tool_use');
      await checkRow(m.id, { model, kind, u: reported(kind, upstream(kind, t1)), streamed: false, finish: 'tool_calls' });
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true, finish: 'tool_calls' });
    });
  }

  // ------------------------------------------------------------------ thinking

  // Anthropic's thinking comes back signed; reasoning of other providers comes as thinking blocks
  // with an empty signature (Anthropic would refuse a made-up one on replay).
  const SIGNATURE = { openai: '', deepseek: '', anthropic: REASONING_SIGNATURE, gemini: '' };
  // What the upstream gets back when the blocks are replayed: only Anthropic can verify them.
  const REPLAYED = { openai: null, deepseek: null, anthropic: { text: REASONING_TEXT, signatures: [REASONING_SIGNATURE] }, gemini: null };

  for (const kind of ALL_REMOTE) {
    test(`${kind}: thinking blocks with signatures, plain and streamed; replayed on the next turn`, async () => {
      const model = `${kind}/mock-reasoning`;
      const thinking = { type: 'enabled', budget_tokens: 1024 };
      const t1 = tag();
      const question = { role: 'user', content: `Think first ${t1}` };
      const { m } = await create({ model, max_tokens: 2048, thinking, messages: [question] });
      assert.deepEqual(m.content, [
        { type: 'thinking', thinking: REASONING_TEXT, signature: SIGNATURE[kind] },
        { type: 'text', text: REPLY_TEXT },
      ]);
      assert.equal(m.stop_reason, 'end_turn');
      const rec = upstream(kind, t1);
      const u = reported(kind, rec);
      assert.deepEqual(m.usage, anthropicUsage(u));
      await checkRow(m.id, { model, kind, u, streamed: false });

      const t2 = tag();
      const { m: sm, events } = await stream({ model, max_tokens: 2048, thinking, messages: [{ role: 'user', content: `Think first ${t2}` }] });
      assert.deepEqual(sm.content, m.content, 'the stream helper assembles the same blocks');
      const deltas = events.filter((e) => e.type === 'content_block_delta').map((e) => e.delta.type);
      assert.equal(deltas.filter((d) => d === 'signature_delta').length, 1, 'one signature_delta closes the thinking block');
      assert.ok(deltas.indexOf('signature_delta') < deltas.indexOf('text_delta'), 'thinking (and its signature) before the text');
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });

      // Replay, as clients do: the assistant content exactly as received.
      const t3 = tag();
      const { m: m3 } = await create({
        model, max_tokens: 2048, thinking,
        messages: [question, { role: 'assistant', content: m.content }, { role: 'user', content: `And again? ${t3}` }],
      });
      assert.equal(textOf(m3), REPLY_TEXT);
      const replay = upstream(kind, t3);
      assert.deepEqual(replay.reasoningReceived, REPLAYED[kind], replay.rawBody);
    });
  }

  // How each kind of upstream is asked to think, for every `thinking` type a client may send.
  const THINKING = [
    {
      thinking: { type: 'enabled', budget_tokens: 1024 },
      want: {
        local: { dropped: 'reasoning' }, openai: { body: { reasoning_effort: 'medium' } }, deepseek: { dropped: 'reasoning' },
        anthropic: { body: { thinking: { type: 'enabled', budget_tokens: 1024 } } },
        gemini: { config: { thinkingBudget: 1024, includeThoughts: true } },
      },
    },
    {
      thinking: { type: 'disabled' },
      want: {
        local: { dropped: 'reasoning' }, openai: { body: {} }, deepseek: { dropped: 'reasoning' },
        anthropic: { body: {} }, gemini: { config: { thinkingBudget: 0 } },
      },
    },
    {
      thinking: { type: 'adaptive' },
      want: {
        local: { dropped: 'reasoning' }, openai: { body: { reasoning_effort: 'medium' } }, deepseek: { dropped: 'reasoning' },
        anthropic: { body: { thinking: { type: 'adaptive' } } },
        gemini: { config: { thinkingBudget: -1, includeThoughts: true } },
      },
    },
  ];

  test('every thinking type (enabled with budget_tokens, disabled, adaptive) is accepted by every kind of model', async () => {
    for (const { thinking, want } of THINKING) {
      for (const kind of ['local', ...ALL_REMOTE]) {
        const what = `${kind}, thinking ${JSON.stringify(thinking)}`;
        const t = tag();
        const model = kind === 'local' ? LOCAL_MODEL : `${kind}/default`;
        const messages = [{ role: 'user', content: kind === 'local' ? 'Once upon a time' : `Hi ${t}` }];
        const { m, headers } = await create({ model, max_tokens: 2048, thinking, messages, ...(kind === 'local' ? { temperature: 0 } : {}) });
        assert.equal(m.type, 'message', what);
        const w = want[kind];
        assert.equal(headers.get('x-tollgate-unsupported-parameters'), w.dropped ?? null, what);
        if (kind === 'local') continue;
        const body = upstream(kind, t).body;
        if (kind === 'gemini') {
          assert.deepEqual(body.generationConfig?.thinkingConfig, w.config, `${what}: ${JSON.stringify(body)}`);
        } else if (w.body) {
          const got = Object.fromEntries(['reasoning_effort', 'reasoning', 'thinking'].filter((k) => k in body).map((k) => [k, body[k]]));
          assert.deepEqual(got, w.body, `${what}: ${JSON.stringify(body)}`);
        } else {
          assert.ok(!('reasoning_effort' in body) && !('thinking' in body), `${what}: ${JSON.stringify(body)}`);
        }
      }
    }
  });

  // ------------------------------------------------------------------ stop sequences, max_tokens

  test('local model: stop_sequences and max_tokens cut exactly where the reference says', async () => {
    const base = { model: LOCAL_MODEL, temperature: 0, messages: [{ role: 'user', content: 'Once upon a time' }] };
    const stop = LOCAL.stopped(' named');
    const { m } = await create({ ...base, max_tokens: 64, stop_sequences: [' named'] });
    assert.deepEqual(m.content, [{ type: 'text', text: stop.text }]);
    // The local engine knows which stop string matched, as Anthropic reports it.
    assert.equal(m.stop_reason, 'stop_sequence');
    assert.equal(m.stop_sequence, ' named');
    const su = { prompt: LOCAL.promptTokens, completion: stop.completionTokens };
    assert.deepEqual(m.usage, anthropicUsage(su));
    const { m: sm } = await stream({ ...base, max_tokens: 64, stop_sequences: [' named'] });
    assert.deepEqual(sm.content, m.content);
    assert.equal(sm.stop_reason, 'stop_sequence');
    assert.equal(sm.stop_sequence, ' named');
    await checkRow(m.id, { model: LOCAL_MODEL, kind: 'local', u: su, streamed: false });
    await checkRow(sm.id, { model: LOCAL_MODEL, kind: 'local', u: su, streamed: true });

    const cut = LOCAL.generated(8);
    const { m: m2 } = await create({ ...base, max_tokens: 8 });
    assert.deepEqual(m2.content, [{ type: 'text', text: cut.text }]);
    assert.equal(m2.stop_reason, 'max_tokens');
    const { m: sm2 } = await stream({ ...base, max_tokens: 8 });
    assert.deepEqual(sm2.content, m2.content);
    assert.equal(sm2.stop_reason, 'max_tokens');
    const cu = { prompt: LOCAL.promptTokens, completion: 8 };
    await checkRow(m2.id, { model: LOCAL_MODEL, kind: 'local', u: cu, streamed: false, finish: 'length' });
    await checkRow(sm2.id, { model: LOCAL_MODEL, kind: 'local', u: cu, streamed: true, finish: 'length' });
  });

  for (const kind of ALL_REMOTE) {
    test(`${kind}: stop_sequences and max_tokens reach the upstream and end the message`, async () => {
      // Only Anthropic says which stop sequence ended the answer; the others say "stop".
      const stopReason = kind === 'anthropic' ? 'stop_sequence' : 'end_turn';
      let model = `${kind}/mock-stop`;
      const t1 = tag();
      const { m } = await create({ model, max_tokens: 1024, stop_sequences: [' mock'], messages: [{ role: 'user', content: `Hello ${t1}` }] });
      assert.deepEqual(m.content, [{ type: 'text', text: 'Hello from the' }]);
      assert.equal(m.stop_reason, stopReason);
      let rec = upstream(kind, t1);
      if (kind === 'anthropic') assert.deepEqual(rec.body.stop_sequences, [' mock']);
      else if (kind === 'gemini') assert.deepEqual(rec.body.generationConfig.stopSequences, [' mock']);
      else assert.deepEqual(rec.body.stop, [' mock']);
      await checkRow(m.id, { model, kind, u: reported(kind, rec), streamed: false });
      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 1024, stop_sequences: [' mock'], messages: [{ role: 'user', content: `Hello ${t2}` }] });
      assert.deepEqual(sm.content, m.content);
      assert.equal(sm.stop_reason, stopReason);
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });

      model = `${kind}/mock-length`;
      const t3 = tag();
      const { m: m2 } = await create({ model, max_tokens: 3, messages: [{ role: 'user', content: `Hello ${t3}` }] });
      assert.deepEqual(m2.content, [{ type: 'text', text: 'Hello from the' }]);
      assert.equal(m2.stop_reason, 'max_tokens');
      rec = upstream(kind, t3);
      const limit = kind === 'anthropic' ? rec.body.max_tokens : kind === 'gemini' ? rec.body.generationConfig.maxOutputTokens
        : rec.body[kind === 'openai' ? 'max_completion_tokens' : 'max_tokens'];
      assert.equal(limit, 3);
      await checkRow(m2.id, { model, kind, u: reported(kind, rec), streamed: false, finish: 'length' });
      const t4 = tag();
      const { m: sm2 } = await stream({ model, max_tokens: 3, messages: [{ role: 'user', content: `Hello ${t4}` }] });
      assert.deepEqual(sm2.content, m2.content);
      assert.equal(sm2.stop_reason, 'max_tokens');
      await checkRow(sm2.id, { model, kind, u: reported(kind, upstream(kind, t4)), streamed: true, finish: 'length' });
    });
  }

  test('anthropic: stop_reason "stop_sequence" comes with the stop_sequence that matched, plain and streamed', async () => {
    // Messages API: stop_sequence is "a non-null string if one of your custom stop sequences was generated".
    const params = { model: 'anthropic/mock-stop', max_tokens: 1024, stop_sequences: [' mock', 'never'], messages: [{ role: 'user', content: `Hello ${tag()}` }] };
    const { m } = await create(params);
    assert.equal(m.stop_reason, 'stop_sequence');
    assert.equal(m.stop_sequence, ' mock', 'message.stop_sequence');
    const { m: sm } = await stream({ ...params, messages: [{ role: 'user', content: `Hello ${tag()}` }] });
    assert.equal(sm.stop_reason, 'stop_sequence');
    assert.equal(sm.stop_sequence, ' mock', 'message_delta.delta.stop_sequence');
  });

  // ------------------------------------------------------------------ JSON, images, CJK, cache

  for (const kind of ALL_REMOTE) {
    test(`${kind}: output_config.format (JSON schema) reaches the upstreams that take it, else is dropped and named`, async () => {
      const model = `${kind}/mock-json`;
      const takes = kind !== 'deepseek'; // DeepSeek has json_object only
      const t1 = tag();
      const { m, headers } = await create({ model, max_tokens: 1024, output_config: JSON_OUTPUT, messages: [{ role: 'user', content: `Answer in JSON ${t1}` }] });
      assert.deepEqual(m.content, [{ type: 'text', text: JSON_TEXT }]);
      assert.deepEqual(JSON.parse(textOf(m)), { answer: 42 });
      const rec = upstream(kind, t1);
      assert.equal(rec.jsonRequested, takes, rec.rawBody);
      assert.equal(headers.get('x-tollgate-unsupported-parameters'), takes ? null : 'structured_outputs');
      if (kind === 'anthropic') assert.deepEqual(rec.body.output_config, JSON_OUTPUT);
      await checkRow(m.id, { model, kind, u: reported(kind, rec), streamed: false });
      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 1024, output_config: JSON_OUTPUT, messages: [{ role: 'user', content: `Answer in JSON ${t2}` }] });
      assert.deepEqual(sm.content, m.content);
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });
    });

    test(`${kind}: image blocks reach the upstream in its format (DeepSeek has none: 400)`, async () => {
      const model = `${kind}/mock-image`;
      const t1 = tag();
      const messages = [{ role: 'user', content: [{ type: 'text', text: `What is this? ${t1}` }, IMAGE_BLOCK] }];
      if (kind === 'deepseek') {
        const e = await rejects(() => create({ model, max_tokens: 256, messages }), 'image to deepseek');
        assert.ok(e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.type, 'invalid_request_error');
        assert.match(e.apiMessage, /image/);
        assert.equal(mockOf(kind).requests.filter((x) => x.rawBody.includes(t1)).length, 0, 'the upstream was never asked');
        return;
      }
      const { m } = await create({ model, max_tokens: 256, messages });
      assert.deepEqual(m.content, [{ type: 'text', text: 'I see an image' }]);
      const rec = upstream(kind, t1);
      assert.equal(rec.imageReceived, true);
      if (kind === 'anthropic') assert.deepEqual(rec.body.messages[0].content.find((b) => b.type === 'image'), IMAGE_BLOCK);
      else if (kind === 'gemini') assert.deepEqual(rec.body.contents[0].parts.find((p) => p.inlineData).inlineData, { mimeType: 'image/png', data: PNG_DATA });
      else assert.equal(rec.body.messages[0].content.find((p) => p.type === 'image_url').image_url.url, `data:image/png;base64,${PNG_DATA}`);
      await checkRow(m.id, { model, kind, u: reported(kind, rec), streamed: false });
      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 256, messages: [{ role: 'user', content: [{ type: 'text', text: `What is this? ${t2}` }, IMAGE_BLOCK] }] });
      assert.deepEqual(sm.content, m.content);
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });
    });

    test(`${kind}: Chinese text and emoji, both ways, byte for byte`, async () => {
      const model = `${kind}/mock-cjk`;
      const t1 = tag();
      const prompt = `请用中文回答 🌍🚀 谢谢 ${t1}`;
      const { m } = await create({ model, max_tokens: 256, messages: [{ role: 'user', content: prompt }] });
      assert.deepEqual(m.content, [{ type: 'text', text: CJK_TEXT }]);
      const rec = upstream(kind, t1);
      const sent = kind === 'gemini' ? rec.body.contents[0].parts[0].text : blocksText(rec.body.messages[0].content);
      assert.equal(sent, prompt);
      await checkRow(m.id, { model, kind, u: reported(kind, rec), streamed: false });
      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 256, messages: [{ role: 'user', content: `请用中文回答 🌍🚀 谢谢 ${t2}` }] });
      assert.deepEqual(sm.content, m.content);
      await checkRow(sm.id, { model, kind, u: reported(kind, upstream(kind, t2)), streamed: true });
    });

    test(`${kind}: prompt cache: input_tokens exclude cache reads and writes; billed at their prices`, async () => {
      const model = `${kind}/mock-cache`;
      const system = [{ type: 'text', text: 'A long and stable system prompt that gets cached', cache_control: { type: 'ephemeral' } }];
      const t1 = tag();
      const { m } = await create({ model, max_tokens: 256, system, messages: [{ role: 'user', content: `Hello there ${t1}` }] });
      const rec = upstream(kind, t1);
      const u = reported(kind, rec);
      const P = openaiPromptTokens({ messages: [{ role: 'system', content: system[0].text }, { role: 'user', content: `Hello there ${t1}` }] });
      assert.equal(u.prompt, P);
      assert.equal(u.cached, Math.floor(P / 2));
      assert.equal(u.cacheWrite, kind === 'anthropic' ? Math.floor(P / 4) : 0);
      assert.deepEqual(m.usage, anthropicUsage(u));
      if (kind === 'anthropic') assert.deepEqual(rec.body.system, system, 'cache_control reaches Anthropic untouched');
      await checkRow(m.id, { model, kind, u, streamed: false });
      const t2 = tag();
      const { m: sm } = await stream({ model, max_tokens: 256, system, messages: [{ role: 'user', content: `Hello there ${t2}` }] });
      const su = reported(kind, upstream(kind, t2));
      assert.deepEqual(sm.usage, anthropicUsage(su));
      await checkRow(sm.id, { model, kind, u: su, streamed: true });
    });
  }

  // ------------------------------------------------------------------ errors

  for (const kind of ALL_REMOTE) {
    test(`${kind}: upstream errors raise the SDK's typed errors in Anthropic's shape; rows as billed`, async () => {
      const msg = () => [{ role: 'user', content: `Hi ${tag()}` }];
      let e = await rejects(() => create({ model: `${kind}/mock-error-400`, max_tokens: 64, messages: msg() }), '400');
      assert.ok(e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, 400);
      assert.equal(e.type, 'invalid_request_error');
      assert.equal(e.error.type, 'error');
      const id400 = e.headers.get('x-request-id');
      assert.match(id400, /^gen-/);
      assert.deepEqual(await usageRowsAfter(stack.db, id400), [], 'no usage row for an upstream 400');

      e = await rejects(() => create({ model: `${kind}/mock-error-429`, max_tokens: 64, messages: msg() }), '429');
      assert.ok(e instanceof Anthropic.RateLimitError, `${e.constructor.name}: ${e.message}`);
      assert.equal(e.status, 429);
      assert.equal(e.type, 'rate_limit_error');
      assert.equal(e.headers.get('retry-after'), String(RETRY_AFTER_SECONDS));
      await checkRow(e.headers.get('x-request-id'), {
        model: `${kind}/mock-error-429`, kind, u: { prompt: 0, completion: 0 }, streamed: false, status: 429, finish: 'error', errorCode: 'rate_limit_error',
      });

      for (const [scenario, status, cls, type, errorCode] of [
        ['mock-error-500', 502, Anthropic.InternalServerError, 'api_error', 'upstream_error'],
        ['mock-error-529', 503, Anthropic.ServiceUnavailableError, 'overloaded_error', 'service_unavailable'],
        ['mock-error-401', 502, Anthropic.InternalServerError, 'api_error', 'upstream_error'],
      ]) {
        e = await rejects(() => create({ model: `${kind}/${scenario}`, max_tokens: 64, messages: msg() }), scenario);
        assert.ok(e instanceof cls, `${scenario}: ${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, status, scenario);
        assert.equal(e.type, type, scenario);
        await checkRow(e.headers.get('x-request-id'), {
          model: `${kind}/${scenario}`, kind, u: { prompt: 0, completion: 0 }, streamed: false, status, finish: 'error', errorCode,
        });
      }

      // Upstream 401: nothing of the key or the upstream's address reaches the caller.
      const mock = mockOf(kind);
      for (const streamIt of [false, true]) {
        const res = await post('/v1/messages', { model: `${kind}/mock-error-401`, max_tokens: 64, messages: msg(), stream: streamIt });
        assert.equal(res.status, 502);
        const text = await res.text();
        const headers = JSON.stringify([...res.headers]);
        for (const secret of [mock.apiKey, '127.0.0.1', `localhost:${mock.port}`, `:${mock.port}/`]) {
          assert.ok(!text.includes(secret) && !headers.includes(secret), `the answer must not show ${secret}: ${text}`);
        }
        const body = JSON.parse(text);
        assert.deepEqual(Object.keys(body).sort(), ['error', 'type']);
        assert.equal(body.type, 'error');
        assert.equal(body.error.type, 'api_error');
      }
    });

    test(`${kind}: a stream that fails after its first byte ends with event: error (no message_stop); the SDK raises`, async () => {
      for (const [scenario, piecesBefore, status] of [
        ['mock-midstream-error', 2, kind === 'anthropic' || kind === 'gemini' ? 503 : 502],
        ['mock-truncated', 3, 502],
      ]) {
        const model = `${kind}/${scenario}`;
        const t = tag();
        const messages = [{ role: 'user', content: `Hello ${t}` }];
        const res = await post('/v1/messages', { model, max_tokens: 256, stream: true, messages });
        assert.equal(res.status, 200, scenario);
        const id = res.headers.get('x-request-id');
        const events = parseSseEvents(await res.text());
        const names = checkEventOrder(events, { last: 'error' });
        assert.ok(!names.includes('message_stop') && !names.includes('message_delta'), `${scenario}: ${names}`);
        const err = JSON.parse(events.at(-1).data);
        assert.deepEqual(Object.keys(err).sort(), ['error', 'type']);
        assert.equal(err.error.type, status === 503 ? 'overloaded_error' : 'api_error', scenario);
        const text = events.filter((e) => e.event === 'content_block_delta').map((e) => JSON.parse(e.data).delta.text).join('');
        assert.equal(text, REPLY_PIECES.slice(0, piecesBefore).join(''), scenario);
        const est = estimate([`Hello ${t}`], text);
        const u = { prompt: est.prompt, completion: est.completion };
        if (kind === 'anthropic') {
          u.prompt = Math.max(u.prompt, anthropicAnswerFor(upstream(kind, t).body).usage.input_tokens);
          u.completion = Math.max(u.completion, 1);
        }
        await checkRow(id, {
          model, kind, u, streamed: true, status, finish: 'error', estimated: true,
          errorCode: status === 503 ? 'service_unavailable' : 'upstream_error',
        });

        // The SDK: the stream helper rejects with the gateway's error, after the text it saw.
        const seen = [];
        const s = client.messages.stream({ model, max_tokens: 256, messages: [{ role: 'user', content: `Hello ${tag()}` }] });
        s.on('text', (d) => seen.push(d));
        const e = await rejects(() => s.finalMessage(), scenario);
        assert.ok(e instanceof Anthropic.APIError, `${scenario}: ${e.constructor.name}: ${e.message}`);
        assert.equal(e.type, err.error.type, scenario);
        assert.equal(e.apiMessage, err.error.message, scenario);
        assert.equal(seen.join(''), text, `${scenario}: the SDK saw the text before the error`);
      }
    });
  }

  // ------------------------------------------------------------------ Anthropic clients as they are

  test('beta.messages.create (anthropic-beta) and /v1/messages?beta=true work on every kind; only Anthropic gets the beta header', async () => {
    // Record what the SDK really sends.
    const sent = [];
    const beta = new Anthropic({
      apiKey: stack.keys.main, baseURL: stack.gw.url, maxRetries: 0, timeout: 30000,
      fetch: (url, init) => { sent.push({ url: String(url), headers: new Headers(init?.headers) }); return fetch(url, init); },
    });
    for (const kind of ['local', ...ALL_REMOTE]) {
      const local = kind === 'local';
      const model = local ? LOCAL_MODEL : `${kind}/default`;
      const content = (w) => (local ? 'Once upon a time' : `Hi ${w}`);
      const extra = local ? { temperature: 0 } : {};
      const t = tag();
      const m = await beta.beta.messages.create({
        model, max_tokens: local ? 8 : 256, betas: ['interleaved-thinking-2025-05-14'], messages: [{ role: 'user', content: content(t) }], ...extra,
      });
      assert.equal(new URL(sent.at(-1).url).pathname, '/v1/messages');
      assert.equal(sent.at(-1).headers.get('anthropic-beta'), 'interleaved-thinking-2025-05-14');
      assert.deepEqual(m.content, [{ type: 'text', text: local ? LOCAL.generated(8).text : REPLY_TEXT }], kind);

      // What other clients send (older SDKs, Claude Code): the ?beta=true query, several betas.
      const t2 = tag();
      const res = await post('/v1/messages?beta=true', { model, max_tokens: local ? 8 : 256, messages: [{ role: 'user', content: content(t2) }], ...extra }, {
        authorization: `Bearer ${stack.keys.main}`, 'anthropic-beta': 'interleaved-thinking-2025-05-14,context-management-2025-06-27',
      });
      assert.equal(res.status, 200, `${kind}: /v1/messages?beta=true`);
      const raw = await res.json();
      assert.equal(raw.type, 'message');
      const counted = await post('/v1/messages/count_tokens?beta=true', { model, messages: [{ role: 'user', content: content(t2) }] });
      assert.equal(counted.status, 200, `${kind}: count_tokens?beta=true`);
      await counted.arrayBuffer();
      if (local) continue;
      const rec = upstream(kind, t);
      assert.equal(rec.headers['anthropic-beta'], kind === 'anthropic' ? 'interleaved-thinking-2025-05-14' : undefined, kind);
      assert.equal(upstream(kind, t2).headers['anthropic-beta'],
        kind === 'anthropic' ? 'interleaved-thinking-2025-05-14,context-management-2025-06-27' : undefined, kind);
      await checkRow(m.id, { model, kind, u: reported(kind, rec), streamed: false });
    }
  });

  test('the Anthropic upstream gets API version 2023-06-01 and its own key, whatever the client sent', async () => {
    const t = tag();
    // This SDK sends anthropic-version 2026-10-21, which removed temperature; the gateway speaks
    // 2023-06-01 upstream, where temperature is valid.
    const { m } = await create({ model: 'anthropic/default', max_tokens: 64, temperature: 0.5, messages: [{ role: 'user', content: `Hi ${t}` }] });
    assert.equal(textOf(m), REPLY_TEXT);
    const rec = upstream('anthropic', t);
    assert.equal(rec.anthropicVersion, '2023-06-01');
    assert.equal(rec.authVia, 'x-api-key');
    assert.equal(rec.headers['x-api-key'], stack.mocks.anthropic.apiKey);
    assert.equal(rec.headers.authorization, undefined, 'the caller\'s key never goes upstream');
    assert.equal(rec.body.temperature, 0.5);
  });

  test('messages.countTokens: exact for the local model, the documented estimate for remote models', async () => {
    const r = await client.messages.countTokens({ model: LOCAL_MODEL, messages: [{ role: 'user', content: 'Once upon a time' }] });
    assert.deepEqual(r, { input_tokens: LOCAL.promptTokens });
    for (const kind of ALL_REMOTE) {
      const system = 'You are terse.';
      const user = 'How many tokens is this message, roughly?';
      const c = await client.messages.countTokens({ model: `${kind}/default`, system, messages: [{ role: 'user', content: user }] });
      assert.deepEqual(c, { input_tokens: estimate([system, user]).prompt }, kind);
    }
    const e = await rejects(() => client.messages.countTokens({ model: 'nobody/nothing', messages: [{ role: 'user', content: 'x' }] }), 'unknown model');
    assert.ok(e instanceof Anthropic.NotFoundError || e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.error.type, 'error');
    const bad = new Anthropic({ apiKey: 'tg-not-a-key', baseURL: stack.gw.url, maxRetries: 0 });
    const a = await rejects(() => bad.messages.countTokens({ model: LOCAL_MODEL, messages: [{ role: 'user', content: 'x' }] }), 'bad key');
    assert.ok(a instanceof Anthropic.AuthenticationError, `${a.constructor.name}`);
  });

  test('auth by x-api-key or Bearer; a bad key is a 401 authentication_error in Anthropic\'s shape', async () => {
    const body = { model: 'openai/default', max_tokens: 64, messages: [{ role: 'user', content: `Hi ${tag()}` }] };
    let res = await post('/v1/messages', body, { 'x-api-key': stack.keys.main });
    assert.equal(res.status, 200);
    assert.equal(textOf(await res.json()), REPLY_TEXT);
    res = await post('/v1/messages', { ...body, messages: [{ role: 'user', content: `Hi ${tag()}` }] });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    for (const headers of [{ 'x-api-key': 'tg-wrong' }, {}]) {
      res = await post('/v1/messages', body, headers);
      assert.equal(res.status, 401);
      const err = await res.json();
      assert.equal(err.type, 'error');
      assert.equal(err.error.type, 'authentication_error');
    }
    const bad = new Anthropic({ apiKey: 'tg-wrong', baseURL: stack.gw.url, maxRetries: 0 });
    const e = await rejects(() => bad.messages.create(body), 'bad key');
    assert.ok(e instanceof Anthropic.AuthenticationError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.type, 'authentication_error');
  });

  test('unknown top-level fields are never a 400; the Anthropic upstream gets them as they were', async () => {
    const extra = { service_tier: 'auto', context_management: { edits: [] }, tollgate_e2e_unknown: { nested: [1, 'two'] } };
    for (const kind of ['local', ...ALL_REMOTE]) {
      const t = tag();
      const model = kind === 'local' ? LOCAL_MODEL : `${kind}/default`;
      const messages = [{ role: 'user', content: kind === 'local' ? 'Once upon a time' : `Hi ${t}` }];
      const { m } = await create({ model, max_tokens: 8, messages, ...extra, ...(kind === 'local' ? { temperature: 0 } : {}) });
      assert.equal(m.type, 'message', kind);
      if (kind === 'local') continue;
      const body = upstream(kind, t).body;
      for (const [k, v] of Object.entries(extra)) {
        if (kind === 'anthropic') assert.deepEqual(body[k], v, `${k} reaches Anthropic`);
        else assert.ok(!(k in body), `${k} must not reach ${kind}: ${JSON.stringify(body)}`);
      }
    }
  });

  test('unsupported parameters are dropped and named (top_k to preset openai)', async () => {
    const t = tag();
    const { m, headers } = await create({ model: 'openai/default', max_tokens: 64, top_k: 40, messages: [{ role: 'user', content: `Hi ${t}` }] });
    assert.equal(textOf(m), REPLY_TEXT);
    assert.equal(headers.get('x-tollgate-unsupported-parameters'), 'top_k');
    assert.ok(!('top_k' in upstream('openai', t).body));
    const t2 = tag();
    const { m: am, headers: ah } = await create({ model: 'anthropic/default', max_tokens: 64, top_k: 40, messages: [{ role: 'user', content: `Hi ${t2}` }] });
    assert.equal(textOf(am), REPLY_TEXT);
    assert.equal(ah.get('x-tollgate-unsupported-parameters'), null);
    assert.equal(upstream('anthropic', t2).body.top_k, 40);
  });

  test('local model: tools or an image block are a 400 invalid_request_error naming them; nothing billed', async () => {
    let e = await rejects(() => create({ model: LOCAL_MODEL, max_tokens: 16, tools: TOOLS, messages: [{ role: 'user', content: 'Once upon a time' }] }), 'tools');
    assert.ok(e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.apiMessage, /\btools\b/);
    assert.deepEqual(await usageRowsAfter(stack.db, e.headers.get('x-request-id')), []);
    e = await rejects(() => create({
      model: LOCAL_MODEL, max_tokens: 16, messages: [{ role: 'user', content: [{ type: 'text', text: 'Once upon a time' }, IMAGE_BLOCK] }],
    }), 'image');
    assert.ok(e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.apiMessage, /image/);
    // The same through the stream helper.
    e = await rejects(() => stream({ model: LOCAL_MODEL, max_tokens: 16, tools: TOOLS, messages: [{ role: 'user', content: 'Once upon a time' }] }), 'tools, streamed');
    assert.ok(e instanceof Anthropic.BadRequestError, `${e.constructor.name}: ${e.message}`);
  });
});
