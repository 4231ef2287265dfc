// Routing end to end (issue 6): one gateway, one database, one mock OpenAI-compatible upstream
// behind three providers (Alpha, Beta, Gamma) and the bundled local engine. A Tollgate model with
// several endpoints, each pointing at the mock with a different upstream model name, is how an
// endpoint fails on demand: the mock picks its scenario from the name it is sent ("r1a-mock-error-500"
// always answers 500, "...-mock-error-429" 429 with Retry-After: 7, "...-mock-truncated" resets the
// socket after 3 pieces; any other name answers normally; mock_openai.mjs scenarioOf). Every upstream
// name is unique to one endpoint, so what each endpoint was asked is counted in the mock's records.
//
// Covered: a 500 before the first byte falls back and is billed once; a 429 with Retry-After keeps
// calls away from its endpoint for that long, then lets them back; a reset after the first byte ends
// the stream with an error event, is not retried and bills what was sent; a busy local endpoint spills
// to a remote one, and a local-only model queues calls beyond its capacity (429 + Retry-After after
// routing.queue_timeout_ms); a client that leaves ends its attempt as cancelled; debug.routing explains
// the decision; OpenRouter's provider preferences, `models` fallbacks and the :floor / :nitro variants;
// the live endpoint listing and the provider list. Every call's usage_events row and call_attempts rows
// are checked in PostgreSQL. Tests run in file order: the listing test reads the 429 test's cooldown
// while it lasts, and the last test waits for it to end (about 7 s after the 429).
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  adminDatabaseUrl, assertErrorShape, costNano, createStack, loadDeps, modelDir, parseSse, requireBinary, sleep,
  usageRow, usageRowsAfter, usd, waitFor,
} from '../lib/harness.mjs';
import {
  REPLY_PIECES, REPLY_TEXT, RETRY_AFTER_SECONDS, TRUNCATE_AFTER_PIECES, answerFor, startMockOpenAI,
} from '../mock_openai.mjs';

const { OpenAI, OpenRouter, pg } = await loadDeps();
adminDatabaseUrl(); // fail at once, clearly, without a database
requireBinary();

const GGUF = path.join(modelDir(), 'stories260K.gguf');
// A large KV cache for the local engine: a call without max_tokens then generates for seconds
// (attention grows with the context), so it holds its endpoint's only slot while the test looks.
const LOCAL_CONTEXT = 8192;
const QUEUE_TIMEOUT_MS = 1500;

// Prices, USD per million tokens (whole nano-USD per token, so every cost is exact).
const PA = { prompt: '1.00', completion: '2.00' };
const PB = { prompt: '0.50', completion: '3.00' };
const PLOCAL = { prompt: '0.01', completion: '0.02' };
const P5 = {
  cheap: { prompt: '0.50', completion: '1.00' }, // blended (3:1) 0.625
  mid: { prompt: '0.80', completion: '1.60' }, //   blended 1.0: within 2x of the cheapest
  dear: { prompt: '4.00', completion: '8.00' }, //  blended 5.0: outside, exploration share only
};
const NAMES = { alpha: 'Alpha', beta: 'Beta', gamma: 'Gamma', local: 'Local' };
const ordered = { strategy: 'ordered' };

const MODELS = [
  {
    id: 'route/fallback-500', routing: ordered, endpoints: [
      { id: 'r1-a', provider: 'alpha', model: 'r1a-mock-error-500', pricing: PA },
      { id: 'r1-b', provider: 'beta', model: 'r1b-upstream', pricing: PB },
    ],
  },
  {
    id: 'route/cooldown-429', routing: ordered, endpoints: [
      { id: 'r2-a', provider: 'alpha', model: 'r2a-mock-error-429', pricing: PA },
      { id: 'r2-b', provider: 'beta', model: 'r2b-upstream', pricing: PB },
    ],
  },
  {
    id: 'route/reset', routing: ordered, endpoints: [
      { id: 'r3-a', provider: 'alpha', model: 'r3a-mock-truncated', pricing: PA },
      { id: 'r3-b', provider: 'beta', model: 'r3b-upstream', pricing: PB },
    ],
  },
  {
    // "Local first, cloud on overflow".
    id: 'route/spill', routing: ordered, endpoints: [
      { id: 'r4-local', provider: 'local', model: GGUF, pricing: PLOCAL, max_concurrency: 1 },
      { id: 'r4-remote', provider: 'beta', model: 'r4-remote-upstream', pricing: PB },
    ],
  },
  {
    id: 'route/local-queue', endpoints: [
      { id: 'r4q-local', provider: 'local', model: GGUF, pricing: PLOCAL, max_concurrency: 1 },
    ],
  },
  {
    id: 'route/shares', endpoints: [ // default strategy: shares
      { id: 'r5-cheap', provider: 'alpha', model: 'r5-cheap-upstream', pricing: P5.cheap },
      { id: 'r5-mid', provider: 'beta', model: 'r5-mid-upstream', pricing: P5.mid },
      { id: 'r5-dear', provider: 'gamma', model: 'r5-dear-upstream', pricing: P5.dear },
    ],
  },
  {
    id: 'route/prefs', endpoints: [
      {
        id: 'r6-a', provider: 'alpha', model: 'r6a-upstream', pricing: { prompt: '1.00', completion: '2.00' },
        quantization: 'fp8', data_policy: { trains_on_prompts: true, retains_prompts: true },
      },
      {
        id: 'r6-b', provider: 'beta', model: 'r6b-upstream', pricing: { prompt: '2.00', completion: '4.00' },
        quantization: 'int4', data_policy: { zero_data_retention: true },
      },
    ],
  },
  { id: 'route/slow', endpoints: [{ id: 'r8-slow', provider: 'alpha', model: 'r8-mock-slow', pricing: PA }] },
  { id: 'route/fb-first', endpoints: [{ id: 'r6-f1', provider: 'alpha', model: 'r6f-mock-error-500', pricing: PA }] },
  { id: 'route/fb-second', endpoints: [{ id: 'r6-s', provider: 'beta', model: 'r6s-upstream', pricing: PB }] },
];

const stack = createStack('e2e-routing');
let client; // openai SDK on /v1
let seq = 0;
/** A unique word for one call's prompt (no tag is a substring of another). */
const tag = () => `rt${++seq}q`;
const msgs = (t) => [{ role: 'user', content: `Hello ${t}` }];

/** The mock's records of upstream model `upstream` (and carrying word `t`, when given). */
const sent = (upstream, t) => stack.mocks.openai.requests
  .filter((r) => r.body?.model === upstream && (t === undefined || r.rawBody.includes(t)));

/** What the mock reported for its one request of `upstream` carrying `t`, as {prompt, completion, cached}. */
function reported(upstream, t) {
  const recs = sent(upstream, t);
  assert.equal(recs.length, 1, `exactly one request of ${upstream} carries ${t}`);
  const u = answerFor(recs[0].body).usage;
  return { prompt: u.prompt_tokens, completion: u.completion_tokens, cached: u.prompt_tokens_details?.cached_tokens ?? 0 };
}

/** A plain create() with its response headers. */
async function create(params) {
  const { data, response } = await client.chat.completions.create(params).withResponse();
  assert.equal(response.headers.get('x-request-id'), data.id);
  return { r: data, headers: response.headers };
}

/** A streamed create() with include_usage: every chunk, the text, the usage chunk, the headers. */
async function streamed(params) {
  const { data: stream, response } = await client.chat.completions
    .create({ ...params, stream: true, stream_options: { include_usage: true } }).withResponse();
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  const id = chunks[0].id;
  assert.equal(response.headers.get('x-request-id'), id);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, [], 'the usage chunk comes last, with no choices');
  return {
    id, chunks, headers: response.headers, usage: last.usage, provider: chunks[0].provider, model: chunks[0].model,
    text: chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''),
  };
}

/** Raw POST /v1/chat/completions with the main key. */
function post(body, headers = {}) {
  return fetch(`${stack.gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${stack.keys.main}`, ...headers },
    body: JSON.stringify(body),
  });
}

/** The call_attempts rows of a call, in attempt order (after its usage row was written). */
async function attemptsOf(requestId) {
  await usageRow(stack.db, requestId);
  return (await stack.db.query('SELECT * FROM call_attempts WHERE request_id = $1 ORDER BY attempt', [requestId])).rows;
}

/** The fields of call_attempts rows a test pins down exactly. */
const pinned = (rows) => rows.map((a) => ({
  attempt: a.attempt, endpoint_id: a.endpoint_id, provider: a.provider, upstream_model: a.upstream_model,
  outcome: a.outcome, status: a.status, error_code: a.error_code, prompt_tokens: a.prompt_tokens,
  completion_tokens: a.completion_tokens, cached_tokens: a.cached_tokens, cost_nano_usd: a.cost_nano_usd,
}));

/** A served attempt row for usage `u` at `pricing`. */
const servedAttempt = (attempt, endpoint, provider, upstream, pricing, u) => ({
  attempt, endpoint_id: endpoint, provider, upstream_model: upstream, outcome: 'served', status: 200, error_code: null,
  prompt_tokens: u.prompt, completion_tokens: u.completion, cached_tokens: u.cached ?? 0, cost_nano_usd: costNano(pricing, u),
});

/** Checks the timing columns every attempt row must have. */
function checkTimes(rows) {
  for (const a of rows) {
    assert.ok(Number.isInteger(a.started_ms) && a.started_ms >= 0, `attempt ${a.attempt} started_ms ${a.started_ms}`);
    assert.ok(Number.isInteger(a.latency_ms) && a.latency_ms >= 0, `attempt ${a.attempt} latency_ms ${a.latency_ms}`);
    if (a.outcome === 'served') assert.ok(Number.isInteger(a.ttft_ms) && a.ttft_ms >= 0, `served attempt ttft_ms ${a.ttft_ms}`);
  }
  for (let i = 1; i < rows.length; i++) {
    assert.ok(rows[i].started_ms >= rows[i - 1].started_ms + rows[i - 1].latency_ms - 2,
      `attempt ${rows[i].attempt} starts after attempt ${rows[i - 1].attempt} ended (no hedging configured)`);
  }
}

/** The one usage_events row of a call, checked to be the only one. */
async function onlyRow(requestId) {
  const row = await usageRow(stack.db, requestId);
  const n = (await stack.db.query('SELECT count(*)::int AS n FROM usage_events WHERE request_id = $1', [requestId])).rows[0].n;
  assert.equal(n, 1, `exactly one usage row for ${requestId}`);
  return row;
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

/**
 * Starts a streamed call over a raw socket and stops reading once the response head and the first
 * SSE event arrived: the call stays in flight (the local engine generating, then held back by the
 * full socket) until release() closes the connection. Resolves {status, headers, release}.
 */
async function holdStream(body) {
  const payload = JSON.stringify(body);
  const sock = net.connect(stack.gw.port, '127.0.0.1');
  sock.on('error', () => {}); // the gateway may reset it after release()
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${stack.gw.port}\r\n`
    + `Authorization: Bearer ${stack.keys.main}\r\nContent-Type: application/json\r\n`
    + `Content-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`);
  let got = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no first event within 10 s: ${JSON.stringify(got.slice(0, 400))}`)), 10000);
    const onData = (d) => {
      got += d.toString('latin1');
      const head = got.indexOf('\r\n\r\n');
      if (head >= 0 && (got.indexOf('data: ', head) >= 0 || !got.startsWith('HTTP/1.1 200'))) {
        sock.off('data', onData);
        sock.pause();
        clearTimeout(timer);
        resolve();
      }
    };
    sock.on('data', onData);
    sock.once('close', () => { clearTimeout(timer); reject(new Error(`connection closed: ${JSON.stringify(got.slice(0, 400))}`)); });
  });
  const headText = got.slice(0, got.indexOf('\r\n\r\n'));
  const [statusLine, ...lines] = headText.split('\r\n');
  const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(statusLine.split(' ')[1]), headers, release: () => sock.destroy() };
}

/** The candidates of a `routing` explanation, by endpoint id. */
const byEndpoint = (routing) => Object.fromEntries(routing.candidates.map((c) => [c.endpoint, c]));

describe('routing: fallbacks, cooldowns, capacity, preferences and the live endpoint figures', { timeout: 60000 }, () => {
  let cooledAt = 0; // when r2-a answered its 429 (ms since the epoch)

  before(async () => {
    await stack.start({
      pg,
      mocks: { openai: () => startMockOpenAI({ writeDelayMs: 1 }) },
      config: (mocks) => ({
        providers: {
          alpha: { type: 'openai_compatible', display_name: NAMES.alpha, base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey },
          beta: { type: 'openai_compatible', display_name: NAMES.beta, base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey },
          gamma: { type: 'openai_compatible', display_name: NAMES.gamma, base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey },
          local: { type: 'local', display_name: NAMES.local, context_length: LOCAL_CONTEXT },
        },
        models: MODELS,
        routing: { queue_timeout_ms: QUEUE_TIMEOUT_MS },
      }),
    });
    client = new OpenAI({ apiKey: stack.keys.main, baseURL: `${stack.gw.url}/v1`, maxRetries: 0, timeout: 30000 });
  });

  after(() => stack.stop());

  // ------------------------------------------------------------------ 1. 500 before the first byte

  test('a 500 before the first byte falls back to the next endpoint: one clean answer, billed once at its price', async () => {
    const M = 'route/fallback-500';
    const t1 = tag();
    const { r, headers } = await create({ model: M, messages: msgs(t1) });
    assert.equal(r.model, M);
    assert.equal(r.provider, 'Beta');
    assert.equal(headers.get('x-tollgate-endpoint'), 'r1-b');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    assert.equal(r.choices[0].finish_reason, 'stop');
    const u = reported('r1b-upstream', t1);
    assert.equal(r.usage.prompt_tokens, u.prompt);
    assert.equal(r.usage.completion_tokens, u.completion);
    assert.equal(r.usage.cost, usd(costNano(PB, u)), 'the answer states the served endpoint\'s cost');
    assert.equal(sent('r1a-mock-error-500', t1).length, 1, 'the failing endpoint was asked exactly once');
    assert.equal(sent('r1a-mock-error-500', t1)[0].status, 500);

    const row = await onlyRow(r.id);
    assert.deepEqual(
      [row.model, row.provider, row.upstream_model, row.endpoint_id, row.prompt_tokens, row.completion_tokens,
        row.cost_nano_usd, row.status, row.streamed, row.finish_reason, row.error_code, row.usage_estimated],
      [M, 'Beta', 'r1b-upstream', 'r1-b', u.prompt, u.completion, costNano(PB, u), 200, false, 'stop', null, false],
      'the usage row bills the served endpoint once');
    const att = await attemptsOf(r.id);
    assert.deepEqual(pinned(att), [
      {
        attempt: 1, endpoint_id: 'r1-a', provider: 'Alpha', upstream_model: 'r1a-mock-error-500', outcome: 'failed',
        status: 502, error_code: 'upstream_error', prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, cost_nano_usd: 0,
      },
      servedAttempt(2, 'r1-b', 'Beta', 'r1b-upstream', PB, u),
    ]);
    checkTimes(att);
    assert.equal(att[0].ttft_ms, null, 'the failed attempt produced nothing');

    // Streamed: the same, and the client sees nothing of the failed attempt.
    const t2 = tag();
    const s = await streamed({ model: M, messages: msgs(t2) });
    assert.equal(s.headers.get('x-tollgate-endpoint'), 'r1-b');
    assert.equal(s.provider, 'Beta');
    assert.ok(s.chunks.every((c) => c.id === s.id && c.provider === 'Beta' && c.model === M));
    assert.equal(s.text, REPLY_TEXT);
    assert.deepEqual(s.chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f != null), ['stop']);
    const su = reported('r1b-upstream', t2);
    assert.equal(s.usage.prompt_tokens, su.prompt);
    assert.equal(s.usage.completion_tokens, su.completion);
    assert.equal(s.usage.cost, usd(costNano(PB, su)));
    assert.equal(sent('r1a-mock-error-500', t2).length, 1, 'the failing endpoint was asked exactly once (streamed)');
    const srow = await onlyRow(s.id);
    assert.deepEqual([srow.endpoint_id, srow.provider, srow.cost_nano_usd, srow.status, srow.streamed],
      ['r1-b', 'Beta', costNano(PB, su), 200, true]);
    const satt = await attemptsOf(s.id);
    assert.deepEqual(pinned(satt).map((a) => [a.endpoint_id, a.outcome, a.status, a.cost_nano_usd]),
      [['r1-a', 'failed', 502, 0], ['r1-b', 'served', 200, costNano(PB, su)]]);
    checkTimes(satt);
  });

  // ------------------------------------------------------------------ 2. 429 + Retry-After

  test('a 429 with Retry-After keeps the next calls away from that endpoint', async () => {
    const M = 'route/cooldown-429';
    const A = 'r2a-mock-error-429';
    const t1 = tag();
    const { r, headers } = await create({ model: M, messages: msgs(t1) });
    assert.equal(headers.get('x-tollgate-endpoint'), 'r2-b');
    assert.equal(r.provider, 'Beta');
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    const first = sent(A);
    assert.equal(first.length, 1, 'the 429 endpoint was asked once');
    assert.equal(first[0].status, 429);
    cooledAt = first[0].receivedAt;
    const u = reported('r2b-upstream', t1);
    const row = await onlyRow(r.id);
    assert.deepEqual([row.endpoint_id, row.cost_nano_usd, row.status], ['r2-b', costNano(PB, u), 200]);
    const att = await attemptsOf(r.id);
    assert.deepEqual(pinned(att), [
      {
        attempt: 1, endpoint_id: 'r2-a', provider: 'Alpha', upstream_model: A, outcome: 'rate_limited', status: 429,
        // The upstream's own code (OpenAI's "rate_limit_exceeded"), as the caller would have seen it.
        error_code: 'rate_limit_exceeded', prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, cost_nano_usd: 0,
      },
      servedAttempt(2, 'r2-b', 'Beta', 'r2b-upstream', PB, u),
    ]);
    checkTimes(att);

    // Within the Retry-After: the endpoint is skipped as cooling down, and never asked.
    const dbg = await post({ model: M, messages: msgs(tag()), debug: { routing: true } });
    assert.equal(dbg.status, 200);
    assert.equal(dbg.headers.get('x-tollgate-endpoint'), 'r2-b');
    const body = await dbg.json();
    assert.equal(body.routing.strategy, 'ordered');
    assert.deepEqual(body.routing.order, ['r2-b']);
    assert.equal(byEndpoint(body.routing)['r2-a'].skipped, 'cooling_down');
    assert.equal(byEndpoint(body.routing)['r2-b'].skipped, undefined);
    for (let i = 0; i < 4; i++) {
      const t = tag();
      const got = i % 2 === 0 ? await create({ model: M, messages: msgs(t) }) : await streamed({ model: M, messages: msgs(t) });
      const id = got.r?.id ?? got.id;
      assert.equal(got.headers.get('x-tollgate-endpoint'), 'r2-b', `call ${i}`);
      assert.equal(got.r?.provider ?? got.provider, 'Beta', `call ${i}`);
      assert.deepEqual(pinned(await attemptsOf(id)).map((a) => [a.endpoint_id, a.outcome]), [['r2-b', 'served']],
        `call ${i}: one attempt, at the endpoint that is not cooling down`);
    }
    assert.equal(sent(A).length, 1, 'no call reached the cooling endpoint');
    assert.ok(Date.now() - cooledAt < RETRY_AFTER_SECONDS * 1000,
      `the calls above ran within the Retry-After (${Date.now() - cooledAt} ms)`);
  });

  // ------------------------------------------------------------------ 7. live endpoint figures

  test('GET /api/v1/models/{id}/endpoints shows live figures and the cooling endpoint; /api/v1/providers lists the providers', async () => {
    assert.ok(Date.now() - cooledAt < RETRY_AFTER_SECONDS * 1000, 'r2-a still cools down');
    const or = new OpenRouter({ apiKey: stack.keys.main, serverURL: `${stack.gw.url}/api/v1`, retryConfig: { strategy: 'none' } });
    // The SDK validates the whole answer with its schema (ListEndpointsResponse, PublicEndpoint).
    const sdk = await or.endpoints.list({ author: 'route', slug: 'cooldown-429' });
    assert.equal(sdk.data.id, 'route/cooldown-429');
    assert.deepEqual(sdk.data.endpoints.map((e) => e.providerName).sort(), ['Alpha', 'Beta']);

    const raw = await fetch(`${stack.gw.url}/api/v1/models/route/cooldown-429/endpoints`, {
      headers: { authorization: `Bearer ${stack.keys.main}` },
    });
    assert.equal(raw.status, 200);
    const { data } = await raw.json();
    const ep = Object.fromEntries(data.endpoints.map((e) => [e.tag, e]));
    assert.deepEqual(Object.keys(ep).sort(), ['r2-a', 'r2-b'], 'one entry per endpoint, tagged with its id');
    const b = ep['r2-b'];
    assert.equal(b.provider_name, 'Beta');
    assert.equal(Number(b.pricing.prompt), 5e-7);
    assert.equal(Number(b.pricing.completion), 3e-6);
    assert.ok(b.latency_last_30m && b.latency_last_30m.p50 > 0, `Beta latency_last_30m ${JSON.stringify(b.latency_last_30m)}`);
    assert.ok(b.throughput_last_30m && b.throughput_last_30m.p50 > 0,
      `Beta throughput_last_30m ${JSON.stringify(b.throughput_last_30m)}`);
    assert.equal(b.uptime_last_30m, 100, 'every call Beta took succeeded');
    assert.equal(b.status, 0, 'Beta is healthy');
    assert.equal(b.tollgate?.availability, 'available');
    const a = ep['r2-a'];
    assert.equal(a.provider_name, 'Alpha');
    assert.equal(a.uptime_last_30m, 0, 'Alpha\'s one attempt was a 429');
    assert.ok(Number.isInteger(a.status) && a.status < 0, `the cooling endpoint's status is degraded: ${a.status}`);
    assert.equal(a.tollgate?.availability, 'cooling_down', JSON.stringify(a.tollgate));
    assert.equal(a.latency_last_30m, null, 'no answer from Alpha, no latency');

    // The fallback model: the endpoint that answered 500 twice has no uptime; the one that served has.
    const fb = await or.endpoints.list({ author: 'route', slug: 'fallback-500' });
    const fbe = Object.fromEntries(fb.data.endpoints.map((e) => [e.tag, e]));
    assert.equal(fbe['r1-a'].uptimeLast30m, 0);
    assert.equal(fbe['r1-b'].uptimeLast30m, 100);
    assert.ok(fbe['r1-b'].latencyLast30m?.p50 > 0 && fbe['r1-b'].throughputLast30m?.p50 > 0);

    // Providers: the SDK validates; every configured provider is listed with its display name.
    const prov = await or.providers.list();
    const listed = Object.fromEntries(prov.data.map((p) => [p.slug, p.name]));
    for (const [slug, name] of Object.entries(NAMES)) assert.equal(listed[slug], name, `provider ${slug}`);
  });

  // ------------------------------------------------------------------ 3. reset after the first byte

  test('a reset after the first byte ends the stream with an error event, is not retried, and bills what was sent', async () => {
    const M = 'route/reset';
    const t = tag();
    const messages = msgs(t);
    const res = await post({ model: M, messages, stream: true, stream_options: { include_usage: true } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-tollgate-endpoint'), 'r3-a');
    const id = res.headers.get('x-request-id');
    const data = parseSse(await res.text());
    assert.ok(!data.includes('[DONE]'), `no [DONE] after a failure: ${data.slice(-2)}`);
    const last = JSON.parse(data.at(-1));
    assert.ok(last.error && typeof last.error.message === 'string', `the error event is last: ${data.at(-1)}`);
    assert.equal(last.error.type, 'upstream_error');
    assert.equal(last.error.metadata?.provider_name, 'Alpha');
    const text = data.slice(0, -1).map((d) => JSON.parse(d).choices[0]?.delta?.content ?? '').join('');
    assert.equal(text, REPLY_PIECES.slice(0, TRUNCATE_AFTER_PIECES).join(''));
    assert.equal(sent('r3a-mock-truncated', t).length, 1);
    assert.equal(sent('r3b-upstream', t).length, 0, 'not retried on the next endpoint');

    const est = estimate(messages, text);
    const cost = costNano(PA, est);
    assert.ok(est.prompt > 0 && est.completion > 0 && cost > 0);
    const row = await onlyRow(id);
    assert.deepEqual(
      [row.model, row.provider, row.endpoint_id, row.upstream_model, row.status, row.streamed, row.usage_estimated,
        row.prompt_tokens, row.completion_tokens, row.cost_nano_usd, row.finish_reason, row.error_code],
      [M, 'Alpha', 'r3-a', 'r3a-mock-truncated', 502, true, true, est.prompt, est.completion, cost, 'error', 'upstream_error']);
    const att = await attemptsOf(id);
    assert.deepEqual(pinned(att), [{
      attempt: 1, endpoint_id: 'r3-a', provider: 'Alpha', upstream_model: 'r3a-mock-truncated', outcome: 'broken',
      status: 502, error_code: 'upstream_error', prompt_tokens: est.prompt, completion_tokens: est.completion,
      cached_tokens: 0, cost_nano_usd: cost,
    }]);
    checkTimes(att);
    assert.ok(Number.isInteger(att[0].ttft_ms), 'the broken attempt had produced output');

    // The openai SDK sees the text, then raises the gateway's error.
    const got = [];
    const e = await rejects(async () => {
      const stream = await client.chat.completions.create({ model: M, messages: msgs(tag()), stream: true });
      for await (const c of stream) got.push(c.choices[0]?.delta?.content ?? '');
    }, 'SDK');
    assert.ok(e instanceof OpenAI.APIError, `${e.constructor.name}: ${e.message}`);
    assert.equal(got.join(''), text);
    assert.equal(sent('r3b-upstream').length, 0, 'the second endpoint was never asked');
  });

  // ------------------------------------------------------------------ 4. capacity

  test('local first, cloud on overflow: a busy local endpoint spills to the remote one', async () => {
    const M = 'route/spill';
    const hold = await holdStream({ model: M, messages: [{ role: 'user', content: 'Once upon a time' }], stream: true });
    assert.equal(hold.status, 200);
    assert.equal(hold.headers.get('x-tollgate-endpoint'), 'r4-local', 'the first call is served locally');
    const holdId = hold.headers.get('x-request-id');
    let released = false;
    try {
      // The local slot is taken: these go to the remote endpoint, all at once.
      const tags = [tag(), tag(), tag(), tag()];
      const calls = await Promise.all(tags.map((t, i) => (i === 3
        ? streamed({ model: M, messages: msgs(t) })
        : create({ model: M, messages: msgs(t) }))));
      for (const [i, c] of calls.entries()) {
        assert.equal(c.headers.get('x-tollgate-endpoint'), 'r4-remote', `spilled call ${i}`);
        assert.equal(c.r?.provider ?? c.provider, 'Beta', `spilled call ${i}`);
        assert.equal(c.r?.choices[0].message.content ?? c.text, REPLY_TEXT, `spilled call ${i}`);
        const id = c.r?.id ?? c.id;
        const u = reported('r4-remote-upstream', tags[i]);
        assert.deepEqual(pinned(await attemptsOf(id)), [servedAttempt(1, 'r4-remote', 'Beta', 'r4-remote-upstream', PB, u)],
          `spilled call ${i}: one attempt, at the remote endpoint (the full local one is passed over)`);
        const row = await onlyRow(id);
        assert.deepEqual([row.endpoint_id, row.cost_nano_usd, row.status], ['r4-remote', costNano(PB, u), 200]);
      }
      hold.release();
      released = true;
      // The held call ends as cancelled (its client left) and frees the slot.
      const row = await usageRow(stack.db, holdId, { timeoutMs: 10000 });
      assert.deepEqual([row.endpoint_id, row.provider, row.upstream_model, row.cancelled, row.status], ['r4-local', 'Local', GGUF, true, 499]);
      assert.ok(row.completion_tokens > 0, 'the held call generated before its client left');
      // Its one attempt: the client left, so it ends as the call did (499, cancelled), not as served.
      assert.deepEqual(pinned(await attemptsOf(holdId)).map((a) => [a.endpoint_id, a.outcome, a.status]),
        [['r4-local', 'cancelled', 499]]);
    } finally {
      if (!released) hold.release();
    }
    // With the slot free the local endpoint serves again.
    const { r, headers } = await create({ model: M, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 4, temperature: 0 });
    assert.equal(headers.get('x-tollgate-endpoint'), 'r4-local');
    assert.equal(r.provider, 'Local');
    assert.equal(r.usage.completion_tokens, 4);
    const row = await onlyRow(r.id);
    assert.deepEqual([row.endpoint_id, row.cost_nano_usd], ['r4-local', costNano(PLOCAL, { prompt: r.usage.prompt_tokens, completion: 4 })]);
  });

  test('local only: a call beyond capacity waits in the queue; past routing.queue_timeout_ms it gets 429 with Retry-After', async () => {
    const M = 'route/local-queue';
    const hold = await holdStream({ model: M, messages: [{ role: 'user', content: 'Once upon a time' }], stream: true });
    assert.equal(hold.status, 200);
    assert.equal(hold.headers.get('x-tollgate-endpoint'), 'r4q-local');
    let released = false;
    try {
      // Waits the whole queue timeout, then 429 + Retry-After; no upstream was asked, so no row.
      const t0 = Date.now();
      const latePromise = post({ model: M, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 4 });
      // While it waits, the listing shows the endpoint full and one call queued.
      const listing = await waitFor(async () => {
        const l = await (await fetch(`${stack.gw.url}/api/v1/models/route/local-queue/endpoints`, {
          headers: { authorization: `Bearer ${stack.keys.main}` },
        })).json();
        return l.data?.tollgate?.queued === 1 ? l.data : null;
      }, { timeoutMs: QUEUE_TIMEOUT_MS - 300, what: 'one queued call in the endpoints listing' });
      assert.deepEqual([listing.endpoints[0].tag, listing.endpoints[0].tollgate?.in_flight, listing.endpoints[0].tollgate?.max_concurrency],
        ['r4q-local', 1, 1]);
      const late = await latePromise;
      const waited = Date.now() - t0;
      const body = await late.json();
      assert.equal(late.status, 429, JSON.stringify(body));
      assertErrorShape(assert, body, 'queue timeout', { flavor: 'openai' });
      assert.equal(body.error.type, 'rate_limit_error');
      const retryAfter = late.headers.get('retry-after');
      assert.match(retryAfter ?? '', /^\d+$/, 'Retry-After in whole seconds');
      assert.ok(Number(retryAfter) >= 1);
      assert.ok(waited >= QUEUE_TIMEOUT_MS - 50, `it waited in the queue (${waited} ms)`);
      assert.ok(waited < QUEUE_TIMEOUT_MS + 3000, `then gave up (${waited} ms)`);
      assert.deepEqual(await usageRowsAfter(stack.db, late.headers.get('x-request-id') ?? 'none'), []);

      // Queued, then served when the slot frees.
      const t1 = Date.now();
      const waiting = post({ model: M, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 4, temperature: 0 });
      await sleep(400);
      hold.release();
      released = true;
      const res = await waiting;
      const queuedFor = Date.now() - t1;
      assert.equal(res.status, 200, await res.clone().text());
      assert.equal(res.headers.get('x-tollgate-endpoint'), 'r4q-local');
      const answer = await res.json();
      assert.equal(answer.provider, 'Local');
      assert.equal(answer.usage.completion_tokens, 4);
      assert.ok(queuedFor >= 350 && queuedFor < QUEUE_TIMEOUT_MS, `served after waiting for the slot (${queuedFor} ms)`);
    } finally {
      if (!released) hold.release();
    }
  });

  test('a client that leaves a remote stream: its one attempt is recorded as cancelled, like the call', async () => {
    const t = tag();
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'route/slow', messages: msgs(t), stream: true }).withResponse();
    assert.equal(response.headers.get('x-tollgate-endpoint'), 'r8-slow');
    let id;
    let n = 0;
    for await (const c of stream) {
      id = c.id;
      if (++n >= 3) break; // aborts the HTTP request
    }
    const up = await waitFor(() => sent('r8-mock-slow', t)[0]?.closed && sent('r8-mock-slow', t)[0],
      { timeoutMs: 5000, what: 'the gateway to close the upstream stream' });
    assert.equal(up.cutByMock, false);
    const row = await usageRow(stack.db, id);
    assert.deepEqual([row.endpoint_id, row.cancelled, row.status], ['r8-slow', true, 499]);
    assert.deepEqual(pinned(await attemptsOf(id)).map((a) => [a.endpoint_id, a.outcome, a.status, a.cost_nano_usd]),
      [['r8-slow', 'cancelled', 499, row.cost_nano_usd]]);
  });

  // ------------------------------------------------------------------ 5. debug.routing

  test('debug.routing explains the decision: shares from effective prices, and skipped endpoints with their reason', async () => {
    const M = 'route/shares';
    const res = await post({ model: M, messages: msgs(tag()), debug: { routing: true } });
    assert.equal(res.status, 200);
    const body = await res.json();
    const rt = body.routing;
    assert.ok(rt && typeof rt === 'object', `the answer carries routing: ${JSON.stringify(body).slice(0, 300)}`);
    assert.equal(rt.strategy, 'shares');
    assert.equal(rt.sticky, false);
    assert.deepEqual(rt.candidates.map((c) => c.endpoint), ['r5-cheap', 'r5-mid', 'r5-dear'], 'every endpoint, config order');
    for (const c of rt.candidates) {
      assert.equal(c.model, M);
      assert.equal(c.skipped, undefined);
      assert.ok(typeof c.share === 'number' && c.share > 0 && c.share < 1, `${c.endpoint} share ${c.share}`);
      assert.ok(typeof c.effective_price === 'number' && c.effective_price > 0, `${c.endpoint} effective_price ${c.effective_price}`);
    }
    const c = byEndpoint(rt);
    assert.deepEqual([c['r5-cheap'].provider, c['r5-mid'].provider, c['r5-dear'].provider], ['Alpha', 'Beta', 'Gamma']);
    const sum = rt.candidates.reduce((s, x) => s + x.share, 0);
    assert.ok(Math.abs(sum - 1) < 1e-9, `shares sum to 1: ${sum}`);
    assert.ok(c['r5-cheap'].effective_price < c['r5-mid'].effective_price && c['r5-mid'].effective_price < c['r5-dear'].effective_price,
      'effective prices follow list prices (no health penalties yet)');
    assert.ok(c['r5-cheap'].share > c['r5-mid'].share && c['r5-mid'].share > c['r5-dear'].share, 'the cheaper, the larger the share');
    // Inside the competitive set shares go by 1 / price^2 (docs/routing.md).
    const ratio = c['r5-cheap'].share / c['r5-mid'].share;
    const expected = (c['r5-mid'].effective_price / c['r5-cheap'].effective_price) ** 2;
    assert.ok(Math.abs(ratio / expected - 1) < 1e-6, `cheap/mid share ratio ${ratio}, expected ${expected}`);
    assert.deepEqual([...rt.order].sort(), ['r5-cheap', 'r5-dear', 'r5-mid'], 'the order is a draw of all three');
    assert.equal(res.headers.get('x-tollgate-endpoint'), rt.order[0], 'the first drawn endpoint served');
    assert.equal(body.provider, c[rt.order[0]].provider);

    // provider.ignore: the ignored endpoint is listed as skipped, with no share; the rest share 1.
    const ig = await post({ model: M, messages: msgs(tag()), provider: { ignore: ['alpha'] }, debug: { routing: true } });
    assert.equal(ig.status, 200);
    const igBody = await ig.json();
    const ic = byEndpoint(igBody.routing);
    assert.equal(ic['r5-cheap'].skipped, 'ignore');
    assert.equal(ic['r5-cheap'].share, undefined);
    assert.equal(ic['r5-cheap'].provider, 'Alpha');
    assert.ok(Math.abs(ic['r5-mid'].share + ic['r5-dear'].share - 1) < 1e-9);
    assert.deepEqual([...igBody.routing.order].sort(), ['r5-dear', 'r5-mid']);
    assert.notEqual(ig.headers.get('x-tollgate-endpoint'), 'r5-cheap');
    assert.notEqual(igBody.provider, 'Alpha');

    // Streamed: the explanation rides on the first chunk.
    const st = await post({ model: M, messages: msgs(tag()), stream: true, debug: { routing: true } });
    assert.equal(st.status, 200);
    const chunks = parseSse(await st.text());
    assert.equal(chunks.at(-1), '[DONE]');
    const firstChunk = JSON.parse(chunks[0]);
    assert.equal(firstChunk.routing?.strategy, 'shares', `first chunk: ${chunks[0].slice(0, 300)}`);
    assert.equal(firstChunk.routing.order[0], st.headers.get('x-tollgate-endpoint'));
    assert.ok(chunks.slice(1, -1).every((d) => !('routing' in JSON.parse(d))), 'only the first chunk carries it');

    // Without the flag there is no routing object.
    const plain = await (await post({ model: M, messages: msgs(tag()) })).json();
    assert.equal(plain.routing, undefined);
  });

  // ------------------------------------------------------------------ 6. preferences over HTTP

  test('a preference that leaves no endpoint is a 404 naming it; nothing reaches an upstream', async () => {
    const M = 'route/prefs';
    for (const [name, provider] of [
      ['only', { only: ['nosuch'] }],
      ['ignore', { ignore: ['alpha', 'beta'] }],
      ['order', { order: ['nosuch'], allow_fallbacks: false }],
      ['quantizations', { quantizations: ['bf16'] }],
      ['max_price', { max_price: { prompt: 0.1 } }],
      ['data_collection', { only: ['alpha'], data_collection: 'deny' }],
      ['zdr', { only: ['alpha'], zdr: true }],
    ]) {
      const t = tag();
      const res = await post({ model: M, messages: msgs(t), provider });
      const body = await res.json();
      assert.equal(res.status, 404, `${name}: ${JSON.stringify(body)}`);
      assertErrorShape(assert, body, name, { flavor: 'openai' });
      assert.equal(body.error.param, `provider.${name}`, `${name}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, 'no_endpoints', name);
      assert.ok(body.error.message.includes(`provider.${name}`), `${name}: the message names it: ${body.error.message}`);
      assert.equal(stack.mocks.openai.requests.filter((r) => r.rawBody.includes(t)).length, 0, `${name}: no upstream asked`);
    }
    // The openai SDK raises its typed 404.
    const e = await rejects(() => create({ model: M, messages: msgs(tag()), provider: { only: ['nosuch'] } }), 'SDK');
    assert.ok(e instanceof OpenAI.NotFoundError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.param, 'provider.only');
  });

  test('provider preferences choose the endpoint: order, quantizations, max_price, data_collection, zdr', async () => {
    const M = 'route/prefs';
    const served = async (provider) => {
      const { r, headers } = await create({ model: M, messages: msgs(tag()), provider });
      assert.equal(r.choices[0].message.content, REPLY_TEXT);
      return [headers.get('x-tollgate-endpoint'), r.provider];
    };
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await served({ order: ['beta'] }), ['r6-b', 'Beta'], 'order by provider slug');
      assert.deepEqual(await served({ order: ['r6-a'] }), ['r6-a', 'Alpha'], 'order by endpoint id');
      assert.deepEqual(await served({ order: ['Beta', 'Alpha'] }), ['r6-b', 'Beta'], 'order by display name');
    }
    assert.deepEqual(await served({ quantizations: ['int4'] }), ['r6-b', 'Beta']);
    assert.deepEqual(await served({ quantizations: ['fp8'] }), ['r6-a', 'Alpha']);
    assert.deepEqual(await served({ max_price: { prompt: 1.5, completion: 3 } }), ['r6-a', 'Alpha']);
    assert.deepEqual(await served({ data_collection: 'deny' }), ['r6-b', 'Beta']);
    assert.deepEqual(await served({ zdr: true }), ['r6-b', 'Beta']);
    assert.deepEqual(await served({ sort: 'price' }), ['r6-a', 'Alpha']);

    // With order, the named endpoint goes first and the other stays as a fallback.
    const dbg = await (await post({ model: M, messages: msgs(tag()), provider: { order: ['beta'] }, debug: { routing: true } })).json();
    assert.deepEqual(dbg.routing.order, ['r6-b', 'r6-a']);
  });

  test('models: [...] falls back to the next model when the first one fails', async () => {
    const t = tag();
    const { r, headers } = await create({ model: 'route/fb-first', models: ['route/fb-second'], messages: msgs(t) });
    assert.equal(r.model, 'route/fb-second', 'the answer names the model that served');
    assert.equal(r.provider, 'Beta');
    assert.equal(headers.get('x-tollgate-endpoint'), 'r6-s');
    assert.equal(r.choices[0].message.content, REPLY_TEXT);
    assert.equal(sent('r6f-mock-error-500', t).length, 1);
    const u = reported('r6s-upstream', t);
    const row = await onlyRow(r.id);
    assert.deepEqual([row.model, row.endpoint_id, row.provider, row.cost_nano_usd, row.status],
      ['route/fb-second', 'r6-s', 'Beta', costNano(PB, u), 200]);
    assert.deepEqual(pinned(await attemptsOf(r.id)).map((a) => [a.endpoint_id, a.outcome, a.cost_nano_usd]),
      [['r6-f1', 'failed', 0], ['r6-s', 'served', costNano(PB, u)]]);

    // An unknown fallback model is a 404 naming `models`.
    const bad = await post({ model: 'route/fb-first', models: ['route/nosuch'], messages: msgs(tag()) });
    const badBody = await bad.json();
    assert.equal(bad.status, 404, JSON.stringify(badBody));
    assertErrorShape(assert, badBody, 'unknown fallback', { flavor: 'openai' });
    assert.equal(badBody.error.param, 'models');
  });

  test(':floor sorts by price and :nitro by throughput', async () => {
    const floor = await post({ model: 'route/prefs:floor', messages: msgs(tag()), debug: { routing: true } });
    const fb = await floor.json();
    assert.equal(floor.status, 200, JSON.stringify(fb));
    assert.equal(fb.routing.strategy, 'price');
    assert.deepEqual(fb.routing.order, ['r6-a', 'r6-b'], 'cheapest first');
    assert.equal(floor.headers.get('x-tollgate-endpoint'), 'r6-a');
    assert.equal(fb.choices[0].message.content, REPLY_TEXT);
    const nitro = await post({ model: 'route/prefs:nitro', messages: msgs(tag()), debug: { routing: true } });
    const nb = await nitro.json();
    assert.equal(nitro.status, 200, JSON.stringify(nb));
    assert.equal(nb.routing.strategy, 'throughput');
    assert.deepEqual([...nb.routing.order].sort(), ['r6-a', 'r6-b']);
    assert.equal(nitro.headers.get('x-tollgate-endpoint'), nb.routing.order[0]);
    // The openai SDK takes the variants as any model id.
    const { headers } = await create({ model: 'route/prefs:floor', messages: msgs(tag()) });
    assert.equal(headers.get('x-tollgate-endpoint'), 'r6-a');
  });

  // ------------------------------------------------------------------ 2b. the cooldown ends

  test('after the Retry-After the cooled endpoint is tried again', async () => {
    assert.ok(cooledAt > 0, 'the 429 test ran');
    const wait = cooledAt + RETRY_AFTER_SECONDS * 1000 + 300 - Date.now();
    if (wait > 0) await sleep(wait);
    const t = tag();
    const { r, headers } = await create({ model: 'route/cooldown-429', messages: msgs(t) });
    assert.equal(sent('r2a-mock-error-429', t).length, 1, 'the endpoint was asked again once its cooldown ended');
    assert.equal(sent('r2a-mock-error-429').length, 2);
    assert.equal(headers.get('x-tollgate-endpoint'), 'r2-b', '(it answered 429 again: the next endpoint served)');
    assert.deepEqual(pinned(await attemptsOf(r.id)).map((a) => [a.endpoint_id, a.outcome, a.status]),
      [['r2-a', 'rate_limited', 429], ['r2-b', 'served', 200]]);
  });
});
