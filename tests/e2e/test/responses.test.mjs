// The official `openai` client's Responses API (`client.responses.create`, POST /v1/responses) for
// every kind of model on one gateway: the local model, a mock OpenAI-compatible upstream (preset
// `openai`, Chat Completions), a mock Anthropic upstream, and a mock OpenAI upstream called through
// its own Responses API (provider type `openai_responses`). Plain, streamed (the typed events), a
// function tool round trip across two calls with previous_response_id, stateless replay of
// reasoning (store: false + include reasoning.encrypted_content), JSON schema output, stored
// responses (GET, DELETE, input_items, scoping to the key), built-in tools, errors. Every call's
// usage row is checked in PostgreSQL against what the answer reported.
//
// Each call carries a unique word ("zr17x") in its input, so the upstream request it caused is found
// in the mock's records.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  LOCAL_MODEL, MATRIX_PRICES, MATRIX_PROVIDER_NAMES, adminDatabaseUrl, costNano, createStack, loadDeps,
  localGeneration, matrixConfig, mockOf as sharedMockOf, parseSseEvents, reportedUsage, requireBinary, usageRow,
  usageRowsAfter,
} from '../lib/harness.mjs';
import {
  JSON_TEXT, REASONING_SIGNATURE, REASONING_TEXT, REPLY_TEXT, TOOL_ARGS, startMockOpenAI,
} from '../mock_openai.mjs';
import { startMockAnthropic } from '../mock_anthropic.mjs';
import { startMockGemini } from '../mock_gemini.mjs';

const { OpenAI, OpenRouter, pg } = await loadDeps();
adminDatabaseUrl();
requireBinary();

// The OpenAI upstream through its own Responses API: a kind of its own in this file.
const RESPONSES_KIND = 'oairesp';
MATRIX_PROVIDER_NAMES[RESPONSES_KIND] = 'OpenAI Responses';
MATRIX_PRICES[RESPONSES_KIND] = MATRIX_PRICES.openai;
const SCENARIOS = ['default', 'mock-tools', 'mock-reasoning', 'mock-json', 'mock-length', 'mock-error-400',
  'mock-midstream-error'];
const REMOTE = ['openai', 'anthropic', RESPONSES_KIND];

const LOCAL = localGeneration('Once upon a time');
const TOOLS = [
  {
    type: 'function', name: 'get_weather', description: 'Current weather', strict: false,
    parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string' } }, required: ['city'] },
  },
];
const JSON_FORMAT = {
  type: 'json_schema', name: 'answer', strict: true,
  schema: { type: 'object', properties: { answer: { type: 'number' } }, required: ['answer'], additionalProperties: false },
};

const stack = createStack('e2e-responses');
let client; // openai, base URL the gateway's /v1
let other; // a second key's client
let seq = 0;
const tag = () => `zr${++seq}x`;
const mockOf = (kind) => sharedMockOf(stack, kind === RESPONSES_KIND ? 'openai' : kind);
const upstreamAll = (kind, word) => mockOf(kind).requests.filter((r) => r.rawBody.includes(word));
const upstream = (kind, word) => {
  const hits = upstreamAll(kind, word);
  assert.equal(hits.length, 1, `${kind}: one upstream request carries ${word}`);
  return hits[0];
};

/** responses.create() with its x-request-id (the usage row's id). */
async function create(params, c = client) {
  const { data, response } = await c.responses.create(params).withResponse();
  return { r: data, requestId: response.headers.get('x-request-id'), headers: response.headers };
}

/** responses.create({stream: true}): every typed event, the final response and the x-request-id. */
async function stream(params) {
  const { data, response } = await client.responses.create({ ...params, stream: true }).withResponse();
  const events = [];
  for await (const e of data) events.push(e);
  return { events, requestId: response.headers.get('x-request-id') };
}

/** The row of `requestId` matches the answer's usage and cost, and the kind's prices. */
async function checkRow(requestId, r, { model, kind, streamed, finish = 'stop' }) {
  const row = await usageRow(stack.db, requestId);
  const u = {
    prompt: r.usage.input_tokens, completion: r.usage.output_tokens, cached: r.usage.input_tokens_details.cached_tokens,
    reasoning: r.usage.output_tokens_details.reasoning_tokens,
  };
  assert.deepStrictEqual({
    model: row.model, provider: row.provider, prompt: row.prompt_tokens, completion: row.completion_tokens,
    cached: row.cached_tokens, reasoning: row.reasoning_tokens, cost: row.cost_nano_usd, streamed: row.streamed,
    finish: row.finish_reason, status: row.status,
  }, {
    model, provider: MATRIX_PROVIDER_NAMES[kind], prompt: u.prompt, completion: u.completion, cached: u.cached,
    reasoning: u.reasoning, cost: costNano(MATRIX_PRICES[kind], { ...u, cacheWrite: row.cache_write_tokens }),
    streamed, finish, status: 200,
  }, `usage row of ${requestId} (${model})`);
  assert.equal(Math.round(r.usage.cost * 1e9), row.cost_nano_usd, 'usage.cost is the billed cost');
  assert.equal(r.usage.total_tokens, u.prompt + u.completion);
  return row;
}

/** Checks the typed event stream: sequence numbers, item lifecycles, one terminal event last. */
function checkEvents(events, { terminal = 'response.completed' } = {}) {
  events.forEach((e, i) => assert.equal(e.sequence_number, i, `sequence_number of event ${i} (${e.type})`));
  assert.equal(events[0].type, 'response.created');
  assert.equal(events[1].type, 'response.in_progress');
  assert.equal(events.at(-1).type, terminal);
  const terminals = events.filter((e) => ['response.completed', 'response.incomplete', 'response.failed'].includes(e.type));
  assert.equal(terminals.length, 1, 'exactly one terminal event');
  const open = new Map();
  for (const e of events) {
    if (e.type === 'response.output_item.added') open.set(e.output_index, e.item);
    if (e.type.endsWith('.delta')) assert.ok(open.has(e.output_index), `${e.type} for an open item`);
    if (e.type === 'response.output_item.done') {
      assert.ok(open.has(e.output_index));
      assert.equal(e.item.id, open.get(e.output_index).id);
      open.delete(e.output_index);
    }
  }
  if (terminal !== 'response.failed') assert.equal(open.size, 0, 'every item is done');
  return events.at(-1).response;
}

const modelOf = (kind, scenario) => (kind === 'local' ? LOCAL_MODEL : `${kind}/${scenario}`);

describe('openai client.responses against every kind of upstream', { timeout: 180000 }, () => {
  before(async () => {
    await stack.start({
      pg,
      keys: ['main', 'other'],
      mocks: {
        openai: () => startMockOpenAI({ writeDelayMs: 1 }),
        anthropic: () => startMockAnthropic({ writeDelayMs: 1 }),
        gemini: () => startMockGemini({ writeDelayMs: 1 }),
      },
      config: (mocks) => {
        const c = matrixConfig(mocks, {
          extraModels: SCENARIOS.map((s) => ({
            id: `${RESPONSES_KIND}/${s}`, name: `Responses: ${s}`, context_length: 65536,
            endpoints: [{ provider: RESPONSES_KIND, model: s === 'default' ? `${RESPONSES_KIND}-test-upstream` : s, pricing: MATRIX_PRICES.openai }],
          })),
        });
        c.providers[RESPONSES_KIND] = {
          type: 'openai_responses', display_name: MATRIX_PROVIDER_NAMES[RESPONSES_KIND], base_url: mocks.openai.baseURL,
          api_key: mocks.openai.apiKey,
        };
        return c;
      },
    });
    client = new OpenAI({ apiKey: stack.keys.main, baseURL: `${stack.gw.url}/v1`, maxRetries: 0, timeout: 30000 });
    other = new OpenAI({ apiKey: stack.keys.other, baseURL: `${stack.gw.url}/v1`, maxRetries: 0, timeout: 30000 });
  });

  after(() => stack.stop());

  // ------------------------------------------------------------------ the local model

  // The reference generation ends at its token count, so these answers are cut: status incomplete.
  test('local model: create, exact reference text, usage, row', async () => {
    const { r, requestId } = await create({
      model: LOCAL_MODEL, input: 'Once upon a time', max_output_tokens: LOCAL.pieces.length, temperature: 0,
    });
    assert.match(r.id, /^resp_[0-9A-Za-z]{32}$/);
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'incomplete');
    assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(r.output_text, LOCAL.text);
    assert.equal(r.output.length, 1);
    assert.equal(r.output[0].type, 'message');
    assert.equal(r.output[0].role, 'assistant');
    assert.deepEqual(r.output[0].content, [{ type: 'output_text', text: LOCAL.text, annotations: [], logprobs: [] }]);
    assert.equal(r.usage.input_tokens, LOCAL.promptTokens);
    assert.equal(r.usage.output_tokens, LOCAL.pieces.length);
    assert.equal(r.provider, 'Local');
    assert.match(requestId, /^gen-/);
    await checkRow(requestId, r, { model: LOCAL_MODEL, kind: 'local', streamed: false, finish: 'length' });
  });

  test('local model: stream, typed events in the documented order, same text and row', async () => {
    const { events, requestId } = await stream({
      model: LOCAL_MODEL, input: [{ role: 'user', content: [{ type: 'input_text', text: 'Once upon a time' }] }],
      max_output_tokens: LOCAL.pieces.length, temperature: 0,
    });
    const r = checkEvents(events, { terminal: 'response.incomplete' });
    const types = events.map((e) => e.type);
    assert.deepEqual(types.filter((t) => !t.endsWith('.delta')), [
      'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
      'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.incomplete',
    ]);
    const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(text, LOCAL.text);
    assert.equal(r.output_text ?? r.output[0].content[0].text, LOCAL.text);
    assert.equal(r.status, 'incomplete');
    await checkRow(requestId, r, { model: LOCAL_MODEL, kind: 'local', streamed: true, finish: 'length' });
  });

  test('local model: previous_response_id continues the stored conversation; GET, input_items, DELETE', async () => {
    const first = await create({ model: LOCAL_MODEL, input: 'Once upon a time', max_output_tokens: 4, temperature: 0 });
    const got = await client.responses.retrieve(first.r.id);
    assert.deepEqual(got.output, first.r.output);
    assert.equal(got.id, first.r.id);
    const second = await create({
      model: LOCAL_MODEL, previous_response_id: first.r.id, input: 'Then what?', max_output_tokens: 4, temperature: 0,
    });
    assert.equal(second.r.previous_response_id, first.r.id);
    // The second prompt holds the first turn (its input and its answer) and the new input.
    assert.ok(second.r.usage.input_tokens > first.r.usage.input_tokens + first.r.usage.output_tokens,
      `${second.r.usage.input_tokens} prompt tokens hold the first turn`);
    await checkRow(second.requestId, second.r, { model: LOCAL_MODEL, kind: 'local', streamed: false, finish: 'length' });
    const items = await client.responses.inputItems.list(second.r.id, { order: 'asc' });
    const texts = items.data.map((i) => i.content?.map((c) => c.text).join(''));
    assert.deepEqual(texts, ['Once upon a time', first.r.output_text, 'Then what?']);
    // Every item has an id, so the SDK pages through them one at a time; newest first by default.
    const paged = [];
    for await (const item of client.responses.inputItems.list(second.r.id, { limit: 1 })) paged.push(item);
    assert.deepEqual(paged.map((i) => i.id), items.data.map((i) => i.id).reverse());
    assert.ok(paged.every((i) => i.type === 'message' && /^msg_/.test(i.id)), JSON.stringify(paged));
    // Another key sees none of it.
    await assert.rejects(other.responses.retrieve(first.r.id), (e) => e.status === 404);
    await assert.rejects(create({ model: LOCAL_MODEL, previous_response_id: first.r.id, input: 'x' }, other),
      (e) => e.status === 404 && /not found/.test(e.message));
    const del = await other.responses.delete(first.r.id).then(() => 'deleted', (e) => e.status);
    assert.equal(del, 404);
    await client.responses.delete(first.r.id);
    await assert.rejects(client.responses.retrieve(first.r.id), (e) => e.status === 404);
    await assert.rejects(create({ model: LOCAL_MODEL, previous_response_id: first.r.id, input: 'x' }),
      (e) => e.status === 404 && e.param === 'previous_response_id');
  });

  test('store: false keeps nothing; unknown previous_response_id is 404 and bills nothing', async () => {
    const { r } = await create({ model: LOCAL_MODEL, input: 'Once upon a time', max_output_tokens: 2, store: false });
    assert.equal(r.store, false);
    await assert.rejects(client.responses.retrieve(r.id), (e) => e.status === 404);
    const res = await fetch(`${stack.gw.url}/v1/responses`, {
      method: 'POST', headers: { authorization: `Bearer ${stack.keys.main}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: LOCAL_MODEL, input: 'hi', previous_response_id: 'resp_doesnotexist' }),
    });
    assert.equal(res.status, 404);
    const body = await res.json();
    assert.equal(body.error.param, 'previous_response_id');
    assert.deepEqual(await usageRowsAfter(stack.db, res.headers.get('x-request-id')), []);
  });

  // ------------------------------------------------------------------ remote upstreams

  for (const kind of REMOTE) {
    test(`${kind}: plain create and stream, rows match the answers`, async () => {
      const model = modelOf(kind, 'default');
      const w1 = tag();
      const { r, requestId } = await create({ model, instructions: 'Be brief.', input: `Say hello ${w1}` });
      assert.equal(r.output_text, REPLY_TEXT);
      assert.equal(r.instructions, 'Be brief.');
      assert.equal(r.provider, MATRIX_PROVIDER_NAMES[kind]);
      const rec = upstream(kind, w1);
      if (kind !== RESPONSES_KIND) {
        const u = reportedUsage(kind, rec);
        assert.equal(r.usage.input_tokens, u.prompt);
        assert.equal(r.usage.output_tokens, u.completion);
      }
      await checkRow(requestId, r, { model, kind, streamed: false });

      const w2 = tag();
      const s = await stream({ model, input: `Say hello ${w2}` });
      const final = checkEvents(s.events);
      assert.equal(s.events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join(''), REPLY_TEXT);
      await checkRow(s.requestId, final, { model, kind, streamed: true });
    });

    test(`${kind}: function tool round trip across two calls with previous_response_id`, async () => {
      const model = modelOf(kind, 'mock-tools');
      const w = tag();
      const first = await create({ model, input: `Weather in Paris? ${w}`, tools: TOOLS });
      const calls = first.r.output.filter((i) => i.type === 'function_call');
      assert.equal(calls.length, 1);
      assert.equal(calls[0].name, 'get_weather');
      assert.deepEqual(JSON.parse(calls[0].arguments), TOOL_ARGS);
      assert.match(calls[0].id, /^fc_/);
      assert.ok(calls[0].call_id);
      await checkRow(first.requestId, first.r, { model, kind, streamed: false, finish: 'tool_calls' });

      const w2 = tag();
      const s = await stream({
        model, previous_response_id: first.r.id, tools: TOOLS,
        input: [{ type: 'function_call_output', call_id: calls[0].call_id, output: `sunny ${w2}` }],
      });
      const final = checkEvents(s.events);
      assert.equal(final.output_text ?? final.output.find((i) => i.type === 'message').content[0].text, `The weather is sunny ${w2}`);
      // The upstream saw the whole conversation: the question, the call and its result.
      const rec = upstream(kind, w2);
      assert.ok(rec.rawBody.includes(w), 'the first turn went upstream again');
      assert.ok(rec.rawBody.includes(calls[0].call_id) || kind === 'anthropic', 'the call id went upstream');
      await checkRow(s.requestId, final, { model, kind, streamed: true });
    });

    test(`${kind}: streamed tool call: function_call_arguments deltas add up`, async () => {
      const model = modelOf(kind, 'mock-tools');
      const s = await stream({ model, input: `Weather? ${tag()}`, tools: TOOLS, tool_choice: 'required' });
      const final = checkEvents(s.events);
      const args = s.events.filter((e) => e.type === 'response.function_call_arguments.delta').map((e) => e.delta).join('');
      assert.deepEqual(JSON.parse(args), TOOL_ARGS);
      const done = s.events.find((e) => e.type === 'response.function_call_arguments.done');
      assert.equal(done.arguments, args);
      assert.equal(final.output.find((i) => i.type === 'function_call').arguments, args);
    });

    test(`${kind}: JSON schema output`, async () => {
      const model = modelOf(kind, 'mock-json');
      const w = tag();
      const { r, requestId } = await create({ model, input: `The answer? ${w}`, text: { format: JSON_FORMAT } });
      assert.deepEqual(JSON.parse(r.output_text), JSON.parse(JSON_TEXT));
      assert.equal(r.text.format.type, 'json_schema');
      assert.equal(r.text.format.name, 'answer');
      const rec = upstream(kind, w);
      assert.ok(rec.rawBody.includes('"answer"') && rec.rawBody.includes('additionalProperties'), 'the schema went upstream');
      await checkRow(requestId, r, { model, kind, streamed: false });
    });

    test(`${kind}: max_output_tokens cut -> status incomplete, reason max_output_tokens`, async () => {
      const model = modelOf(kind, 'mock-length');
      const s = await stream({ model, input: `Long story ${tag()}` });
      const final = checkEvents(s.events, { terminal: 'response.incomplete' });
      assert.equal(final.status, 'incomplete');
      assert.deepEqual(final.incomplete_details, { reason: 'max_output_tokens' });
      await checkRow(s.requestId, final, { model, kind, streamed: true, finish: 'length' });
    });

    test(`${kind}: an upstream 400 is a 400 in OpenAI's shape; a mid-stream failure ends with response.failed`, async () => {
      await assert.rejects(create({ model: modelOf(kind, 'mock-error-400'), input: `x ${tag()}` }),
        (e) => e.status === 400 && typeof e.message === 'string');
      const s = await stream({ model: modelOf(kind, 'mock-midstream-error'), input: `x ${tag()}` });
      const failed = checkEvents(s.events, { terminal: 'response.failed' });
      assert.equal(failed.status, 'failed');
      assert.ok(failed.error?.message, 'response.error says why');
      const types = s.events.map((e) => e.type);
      assert.ok(!types.includes('response.completed'), 'never a success after a failure');
      assert.ok(types.indexOf('error') < types.indexOf('response.failed'), 'an error event before response.failed');
    });
  }

  // ------------------------------------------------------------------ reasoning

  test('anthropic: thinking comes back sealed and reaches Anthropic again, signature intact (store: false)', async () => {
    const model = modelOf('anthropic', 'mock-reasoning');
    const w = tag();
    const first = await create({
      model, input: `Think ${w}`, store: false, include: ['reasoning.encrypted_content'], reasoning: { effort: 'high' },
    });
    const reasoning = first.r.output.find((i) => i.type === 'reasoning');
    assert.ok(reasoning, 'a reasoning item');
    assert.equal(reasoning.content.map((c) => c.text).join(''), REASONING_TEXT);
    assert.match(reasoning.encrypted_content, /^tollgate\.v1\./);
    await assert.rejects(client.responses.retrieve(first.r.id), (e) => e.status === 404);
    // Stateless continuation (what Codex does): the output items go back as input.
    const w2 = tag();
    await create({
      model, store: false, include: ['reasoning.encrypted_content'], reasoning: { effort: 'high' },
      input: [{ role: 'user', content: `Think ${w}` }, ...first.r.output, { role: 'user', content: `More ${w2}` }],
    });
    const rec = upstream('anthropic', w2);
    const assistant = rec.body.messages.find((m) => m.role === 'assistant');
    const thinking = assistant.content.find((b) => b.type === 'thinking');
    assert.equal(thinking.thinking, REASONING_TEXT);
    assert.equal(thinking.signature, REASONING_SIGNATURE);
  });

  test('anthropic: with reasoning.summary asked, the thinking streams as a summary (what Codex shows)', async () => {
    const s = await stream({
      model: modelOf('anthropic', 'mock-reasoning'), input: `Think ${tag()}`, reasoning: { effort: 'high', summary: 'auto' },
    });
    const final = checkEvents(s.events);
    const deltas = s.events.filter((e) => e.type === 'response.reasoning_summary_text.delta').map((e) => e.delta).join('');
    assert.equal(deltas, REASONING_TEXT);
    assert.ok(!s.events.some((e) => e.type === 'response.reasoning_text.delta'));
    assert.deepEqual(final.output.find((i) => i.type === 'reasoning').summary, [{ type: 'summary_text', text: REASONING_TEXT }]);
  });

  test('OpenAI Responses upstream: encrypted reasoning round-trips untouched through previous_response_id', async () => {
    const model = modelOf(RESPONSES_KIND, 'mock-reasoning');
    const w = tag();
    const first = await create({ model, input: `Think ${w}`, reasoning: { effort: 'low', summary: 'auto' } });
    const reasoning = first.r.output.find((i) => i.type === 'reasoning');
    assert.ok(reasoning?.summary?.length > 0, 'the summary came through');
    assert.equal(reasoning.encrypted_content, undefined, 'no encrypted_content unless included');
    const rec1 = upstream(RESPONSES_KIND, w);
    const w2 = tag();
    await create({ model, previous_response_id: first.r.id, input: `More ${w2}` });
    const rec2 = upstream(RESPONSES_KIND, w2);
    const replayed = rec2.body.input.find((i) => i.type === 'reasoning');
    assert.ok(replayed, 'the reasoning item went back upstream');
    assert.equal(replayed.id, reasoning.id);
    assert.ok(typeof replayed.encrypted_content === 'string' && replayed.encrypted_content.length > 0);
    assert.equal(rec1.body.store, false, 'the upstream keeps nothing');
  });

  // ------------------------------------------------------------------ built-in tools and bad input

  test('@openrouter/sdk responses.send under /api/v1: plain and streamed, parsed by its schemas', async () => {
    const or = new OpenRouter({ apiKey: stack.keys.main, serverURL: `${stack.gw.url}/api/v1`, retryConfig: { strategy: 'none' } });
    const w = tag();
    const r = await or.responses.send({
      responsesRequest: { model: modelOf('anthropic', 'mock-tools'), input: `Weather? ${w}`, tools: TOOLS },
    });
    const call = r.output.find((i) => i.type === 'function_call');
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.arguments), TOOL_ARGS);
    assert.equal(r.status, 'completed');
    assert.ok(r.usage.inputTokens > 0 && r.usage.outputTokens > 0, JSON.stringify(r.usage));
    const events = [];
    const streamed = await or.responses.send({ responsesRequest: { model: modelOf('openai', 'default'), input: `Hi ${tag()}`, stream: true } });
    for await (const e of streamed) events.push(e);
    assert.equal(events.at(-1).type, 'response.completed');
    assert.equal(events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join(''), REPLY_TEXT);
  });

  test('a function_call_output without its call is a 400 that bills nothing', async () => {
    const res = await fetch(`${stack.gw.url}/v1/responses`, {
      method: 'POST', headers: { authorization: `Bearer ${stack.keys.main}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: modelOf('openai', 'mock-tools'), input: [{ type: 'function_call_output', call_id: 'call_zzz', output: '42' }] }),
    });
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.equal(body.error.param, 'input');
    assert.match(body.error.message, /call_zzz/);
    assert.deepEqual(await usageRowsAfter(stack.db, res.headers.get('x-request-id')), []);
  });

  test('built-in tools are left out and listed; forcing one is a 400 naming it', async () => {
    const w = tag();
    const { r } = await create({
      model: modelOf('openai', 'default'), input: `Hi ${w}`,
      tools: [{ type: 'web_search_preview' }, ...TOOLS],
    });
    assert.equal(r.metadata.tollgate_dropped_tools, 'web_search_preview');
    const rec = upstream('openai', w);
    assert.ok(!rec.rawBody.includes('web_search'), 'the model never saw the built-in tool');
    await assert.rejects(create({
      model: modelOf('openai', 'default'), input: 'Hi', tools: [{ type: 'web_search_preview' }],
      tool_choice: { type: 'web_search_preview' },
    }), (e) => e.status === 400 && /web_search_preview/.test(e.message));
  });

  test('bad input: a 400 in OpenAI\'s shape naming the field; /api/v1 answers in OpenRouter\'s shape', async () => {
    await assert.rejects(create({ model: LOCAL_MODEL, input: [{ type: 'message', role: 'user', content: [{ type: 'input_bogus' }] }] }),
      (e) => e.status === 400 && e.param === 'input[0].content[0].type');
    // The router's refusal names the caller's field (`input`), not the canonical `messages`.
    const PNG = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
    await assert.rejects(create({ model: LOCAL_MODEL, input: [{ role: 'user', content: [{ type: 'input_image', image_url: PNG }] }] }),
      (e) => e.status === 400 && e.param === 'input');
    // Ids no response could have are 404 without reaching the store (NUL, bad UTF-8, long).
    for (const id of ['resp_x%00junk', 'resp_%FF', `resp_${'a'.repeat(100)}`, 'nope']) {
      const r = await fetch(`${stack.gw.url}/v1/responses/${id}`, { headers: { authorization: `Bearer ${stack.keys.main}` } });
      assert.equal(r.status, 404, id);
      assert.equal((await r.json()).error.code, 'response_not_found');
    }
    const res = await fetch(`${stack.gw.url}/api/v1/responses`, {
      method: 'POST', headers: { authorization: `Bearer ${stack.keys.main}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: LOCAL_MODEL }),
    });
    assert.equal(res.status, 400);
    const body = await res.json();
    assert.equal(body.error.code, 400);
    const raw = await fetch(`${stack.gw.url}/v1/responses`, {
      method: 'POST', headers: { authorization: `Bearer ${stack.keys.main}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: LOCAL_MODEL, input: 'Once upon a time', stream: true, max_output_tokens: 3 }),
    });
    assert.equal(raw.headers.get('content-type'), 'text/event-stream');
    const events = parseSseEvents(await raw.text());
    for (const e of events) assert.equal(JSON.parse(e.data).type, e.event, 'event: names the data\'s type');
  });
});
