// A fault-injecting mock OpenAI-compatible upstream (issue 13, "Faults"), for the chaos test
// (test/chaos.test.mjs), the PostgreSQL restart test (test/pg_restart.test.mjs) and the soak bench
// (bench/soak.sh).
//
// Wire format: OpenAI Chat Completions exactly as mock_openai.mjs speaks it (../../../shared/WIRE-FORMATS.md
// section 3.1; https://platform.openai.com/docs/api-reference/chat/create and .../chat/streaming;
// errors https://platform.openai.com/docs/guides/error-codes): POST /v1/chat/completions, a JSON
// `chat.completion`, or Server-Sent Events `data: {chunk}\n\n` ... `data: [DONE]\n\n` whose last chunk
// before [DONE] carries `usage` (and `choices: []`) when the request has stream_options.include_usage,
// with `"usage": null` on every other chunk then. The API key must be `Bearer <apiKey>` (else 401).
//
// The answer: REPLY pieces (DRIP_PIECES for `drip`, a HUGE piece for `huge`), one piece = one
// completion token, cut by max_tokens / max_completion_tokens with finish_reason "length";
// prompt_tokens as mock_openai.mjs counts them (promptTokens()).
//
// Faults (FAULTS), one per request:
//   ok                 a healthy answer
//   delay              nothing for delayMs (a [min, max] range, drawn per request), then a healthy answer
//   429                429 rate_limit_exceeded with Retry-After: retryAfterS (default 1) and x-ratelimit-*
//   500, 502, 503      OpenAI's error JSON with that status
//   reset-before       the connection is reset (TCP RST) once the request is read: no status line
//   reset-after-first  stream: headers and the first content chunk, then RST; not streamed: the
//                      headers and half of the JSON, then RST
//   truncated          stream: every content chunk, then a clean end of the HTTP body (the chunked
//                      terminator) with no finish_reason, no usage and no [DONE]; not streamed: half
//                      the JSON under a content-length that promises all of it, then a FIN
//   cut                stream: two content chunks, then a FIN in the middle of the chunked body (no
//                      chunked terminator); not streamed: as truncated
//   malformed-first    stream: the first chunk is invalid JSON (`data: {"id": ...` cut), then the rest
//                      and [DONE]; not streamed: a 200 whose body is invalid JSON
//   malformed          stream: two good content chunks, then an invalid JSON chunk, then the rest and
//                      [DONE]; not streamed: as malformed-first
//   drip               stream: DRIP_PIECES, one chunk every dripMs; not streamed: the whole answer
//                      after dripMs x pieces
//   gzip               the healthy answer gzip-encoded with `Content-Encoding: gzip`, whatever the
//                      request's Accept-Encoding said (some proxies do this)
//   huge               one content delta of hugeBytes (default 1 MiB less 4 KiB, multi-byte UTF-8
//                      inside) among the normal pieces: the event stays just under 1 MiB, the bound
//                      the gateway's SSE parser puts on one event (wire/sse_parser.hpp), so it must be
//                      relayed whole; not streamed: the same content in one JSON body
//   huge-event         the same with hugeEventBytes (default 2 MiB): one event beyond that bound
//
// Which fault a request gets, first match wins:
//   1. `[fault:NAME]` in the text of any message: NAME (for single, deterministic checks); every
//      endpoint on a fault mock then fails the same way
//   2. `fault-NAME` inside the upstream model name (an endpoint that always fails one way)
//   3. a draw from `weights` ({fault: weight}) by a hash of (seed, mock name, the request's last
//      message text, how many earlier requests with that text this mock saw): the same seed and the
//      same prompts give the same faults in any arrival order, so a failing run is reproduced by its
//      seed (`chooseFault()` tells what a request gets).
//
// Each recorded request (mock.requests) has: n, receivedAt, doneAt, model, tag (the last message's
// text), fault, stream, includeUsage, status (null when reset before a status line), text (the
// content sent, complete pieces only), pieces, usage (the usage object sent, or null), planUsage (the
// usage of the whole answer, sent or not; null for error faults), complete (the
// whole answer went out: JSON body, or [DONE] after finish_reason and usage), cutByMock (the mock
// reset or closed the connection on purpose), closedEarly (the connection closed before the mock had
// written what it meant to: the gateway went away), bytes (body bytes written, before gzip).
// mock.counts() gives {fault: number of requests}.
//
// Use from tests:   const mock = await startFaultMock({seed: 7, weights: {...}}); mock.baseURL; mock.close()
// Use by hand:      node mock_faults.mjs [--port N] [--api-key KEY] [--seed N] [--weights ok=4,500=1,...]
import http from 'node:http';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';

import { openaiErrorBody, promptTokens, sleep } from './mock_openai.mjs';

export const DEFAULT_API_KEY = 'sk-mock-faults-key';
export const FAULTS = [
  'ok', 'delay', '429', '500', '502', '503', 'reset-before', 'reset-after-first', 'truncated', 'cut',
  'malformed-first', 'malformed', 'drip', 'gzip', 'huge', 'huge-event',
];
/** Faults that produce a complete, healthy answer when the gateway handles them (gzip: when it decodes). */
export const ANSWERING_FAULTS = ['ok', 'delay', 'drip', 'huge'];
/** Every fault once, healthy answers four times as often as each fault. */
export const DEFAULT_WEIGHTS = Object.fromEntries(FAULTS.map((f) => [f, f === 'ok' ? 4 * (FAULTS.length - 1) / 3 : 1]));

export const REPLY_PIECES = ['Chaos', ' says', ':', ' héllo', ' wörld', ' 🚀', ' 日本語', ' done', '.'];
export const DRIP_PIECE_COUNT = 20;
export const DRIP_PIECES = Array.from({ length: DRIP_PIECE_COUNT }, (_, i) => ` d${i}`);

/** A string of exactly `bytes` UTF-8 bytes (ASCII with 2-, 3- and 4-byte characters among them). */
export function hugeText(bytes) {
  const unit = 'abcdefghij héllo 日本 🚀 '; // 32 bytes
  const unitBytes = Buffer.byteLength(unit);
  let s = unit.repeat(Math.floor(bytes / unitBytes));
  s += 'x'.repeat(bytes - Buffer.byteLength(s));
  return s;
}

const ERROR_BODIES = {
  ...Object.fromEntries([400, 401, 429, 500, 503].map((s) => [s, openaiErrorBody(s)])),
  502: { error: { message: 'Bad gateway.', type: 'server_error', param: null, code: null } },
};

/** A deterministic number in [0, 1) from a string. */
function unitHash(s) {
  return createHash('sha256').update(s).digest().readUInt32BE(0) / 2 ** 32;
}

function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p?.text === 'string' ? p.text : '')).join(' ');
  return '';
}

/** Parses "ok=4,500=1" into {ok: 4, 500: 1}. */
export function parseWeights(text) {
  const out = {};
  for (const part of String(text).split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    if (!FAULTS.includes(k) || !(Number(v) >= 0)) throw new Error(`mock_faults: bad weight ${part} (faults: ${FAULTS.join(', ')})`);
    out[k] = Number(v);
  }
  return out;
}

export async function startFaultMock({
  host = '127.0.0.1', port = 0, apiKey = DEFAULT_API_KEY, name = 'faults', seed = 1, weights = DEFAULT_WEIGHTS,
  delayMs = [200, 1200], dripMs = 25, hugeBytes = (1 << 20) - 4096, hugeEventBytes = 2 << 20, retryAfterS = 1,
  log = null,
} = {}) {
  const table = Object.entries(weights).filter(([, w]) => w > 0);
  for (const [f] of table) if (!FAULTS.includes(f)) throw new Error(`mock_faults: unknown fault ${f}`);
  const total = table.reduce((a, [, w]) => a + w, 0);
  if (total <= 0) throw new Error('mock_faults: the weights add up to nothing');
  const requests = [];
  const seen = new Map(); // tag -> requests so far
  const sockets = new Set();
  let seq = 0;

  /** The fault of a request body (see the header); `nth`: earlier requests with the same text. */
  function chooseFault(body, nth = 0) {
    const messages = Array.isArray(body?.messages) ? body.messages : [];
    for (const m of messages) {
      const hit = /\[fault:([a-z0-9-]+)\]/.exec(contentText(m?.content));
      if (hit && FAULTS.includes(hit[1])) return hit[1];
    }
    const byModel = /fault-([a-z0-9-]+)$/.exec(String(body?.model ?? ''));
    if (byModel && FAULTS.includes(byModel[1])) return byModel[1];
    const tag = contentText(messages[messages.length - 1]?.content);
    let x = unitHash(`${seed}|${name}|${tag}|${nth}`) * total;
    for (const [f, w] of table) {
      if (x < w) return f;
      x -= w;
    }
    return table[table.length - 1][0];
  }

  function plan(body, fault) {
    const limit = body.max_completion_tokens ?? body.max_tokens;
    let pieces = REPLY_PIECES;
    if (fault === 'drip') pieces = DRIP_PIECES;
    if (fault === 'huge' || fault === 'huge-event') {
      pieces = [REPLY_PIECES[0], ` ${hugeText((fault === 'huge' ? hugeBytes : hugeEventBytes) - 1)}`, ...REPLY_PIECES.slice(1)];
    }
    let finish = 'stop';
    if (Number.isInteger(limit) && limit >= 0 && limit < pieces.length) {
      pieces = pieces.slice(0, limit);
      finish = 'length';
    }
    const prompt = promptTokens(body);
    const usage = {
      prompt_tokens: prompt, completion_tokens: pieces.length, total_tokens: prompt + pieces.length,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
    return { pieces, finish, usage };
  }

  async function handle(rec, req, res) {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'POST' || path !== '/v1/chat/completions') {
      return sendJson(rec, res, 404, { error: { message: `Invalid URL (${req.method} ${path})`, type: 'invalid_request_error', param: null, code: null } });
    }
    if (req.headers.authorization !== `Bearer ${apiKey}`) return sendJson(rec, res, 401, ERROR_BODIES[401]);
    let body;
    try {
      body = JSON.parse(rec.rawBody);
    } catch {
      return sendJson(rec, res, 400, ERROR_BODIES[400]);
    }
    if (body === null || typeof body !== 'object' || !Array.isArray(body.messages)) return sendJson(rec, res, 400, ERROR_BODIES[400]);
    const messages = body.messages;
    rec.model = String(body.model ?? '');
    rec.tag = contentText(messages[messages.length - 1]?.content);
    rec.stream = body.stream === true;
    rec.includeUsage = rec.stream && body.stream_options?.include_usage === true;
    const nth = seen.get(rec.tag) ?? 0;
    seen.set(rec.tag, nth + 1);
    const fault = chooseFault(body, nth);
    rec.fault = fault;

    if (fault === 'reset-before') return reset(rec, res);
    if (fault === '429') {
      return sendJson(rec, res, 429, ERROR_BODIES[429], {
        'retry-after': String(retryAfterS), 'x-ratelimit-limit-requests': '3', 'x-ratelimit-remaining-requests': '0',
        'x-ratelimit-reset-requests': `${retryAfterS}s`,
      });
    }
    if (['500', '502', '503'].includes(fault)) return sendJson(rec, res, Number(fault), ERROR_BODIES[fault]);
    if (fault === 'delay') {
      const [lo, hi] = Array.isArray(delayMs) ? delayMs : [delayMs, delayMs];
      await sleepUnlessClosed(rec, lo + Math.floor(unitHash(`${seed}|delay|${rec.n}`) * (hi - lo + 1)));
      if (rec.closedEarly) return undefined;
    }

    const { pieces, finish, usage } = plan(body, fault);
    rec.planUsage = usage;
    const n = ++seq;
    const id = `chatcmpl-fault${n}`;
    const created = 1700000000 + n;
    const model = rec.model;
    const headers = { 'x-request-id': `req_fault${rec.n}`, 'openai-processing-ms': '7' };

    if (!rec.stream) {
      if (fault === 'drip') await sleepUnlessClosed(rec, dripMs * pieces.length);
      if (rec.closedEarly) return undefined;
      const text = pieces.join('');
      const obj = {
        id, object: 'chat.completion', created, model,
        choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null, annotations: [] }, logprobs: null, finish_reason: finish }],
        usage, service_tier: 'default', system_fingerprint: 'fp_faults',
      };
      if (fault === 'malformed' || fault === 'malformed-first') {
        const json = JSON.stringify(obj);
        return sendRaw(rec, res, 200, Buffer.from(json.slice(0, Math.floor(json.length / 2)) + '}}'), headers);
      }
      if (['reset-after-first', 'truncated', 'cut'].includes(fault)) {
        const buf = Buffer.from(JSON.stringify(obj));
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': buf.length, ...headers });
        rec.status = 200;
        await write(rec, res, buf.subarray(0, Math.floor(buf.length / 2)));
        return fault === 'reset-after-first' ? reset(rec, res) : fin(rec, res);
      }
      rec.text = text;
      rec.pieces = pieces.length;
      rec.usage = usage;
      const buf = Buffer.from(JSON.stringify(obj));
      if (fault === 'gzip') {
        return sendRaw(rec, res, 200, zlib.gzipSync(buf), { ...headers, 'content-encoding': 'gzip' }, 'application/json', buf.length);
      }
      await sendRaw(rec, res, 200, buf, headers);
      rec.complete = !rec.closedEarly;
      return undefined;
    }

    // Streamed.
    const chunk = (choices, extra = {}) => {
      const c = { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_faults', choices, ...extra };
      if (rec.includeUsage && !('usage' in extra)) c.usage = null;
      return `data: ${JSON.stringify(c)}\n\n`;
    };
    const delta = (d) => chunk([{ index: 0, delta: d, logprobs: null, finish_reason: null }]);
    const events = [delta({ role: 'assistant', content: '', refusal: null })];
    for (const p of pieces) events.push(delta({ content: p }));
    const contentEvents = pieces.length;
    events.push(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }]));
    if (rec.includeUsage) events.push(chunk([], { usage }));
    events.push('data: [DONE]\n\n');
    const badChunk = `data: {"id":"${id}","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"oops\n\n`;

    const sseHeaders = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers };
    if (fault === 'gzip') {
      rec.text = pieces.join('');
      rec.pieces = pieces.length;
      rec.usage = rec.includeUsage ? usage : null;
      const plain = Buffer.from(events.join(''));
      rec.bytes = plain.length;
      const gz = zlib.gzipSync(plain);
      res.writeHead(200, { ...sseHeaders, 'content-encoding': 'gzip' });
      rec.status = 200;
      const half = Math.floor(gz.length / 2);
      await write(rec, res, gz.subarray(0, half), false);
      await write(rec, res, gz.subarray(half), false);
      if (!rec.closedEarly) res.end();
      rec.complete = !rec.closedEarly;
      return undefined;
    }
    res.writeHead(200, sseHeaders);
    res.flushHeaders();
    rec.status = 200;
    const sent = [];
    const sendEvent = async (i) => {
      await write(rec, res, Buffer.from(events[i]));
      if (i >= 1 && i <= contentEvents) sent.push(pieces[i - 1]);
      rec.text = sent.join('');
      rec.pieces = sent.length;
    };
    // events: [role, piece 1..n, finish, usage?, [DONE]]
    if (fault === 'malformed-first') {
      await write(rec, res, Buffer.from(badChunk));
      for (let i = 0; i < events.length && !rec.closedEarly; i++) await sendEvent(i);
      return finishStream(rec, res, usage);
    }
    if (fault === 'reset-after-first') {
      await sendEvent(0);
      if (contentEvents > 0) await sendEvent(1);
      return reset(rec, res);
    }
    if (fault === 'cut') {
      for (let i = 0; i <= Math.min(2, contentEvents) && !rec.closedEarly; i++) await sendEvent(i);
      return fin(rec, res);
    }
    if (fault === 'truncated') {
      for (let i = 0; i <= contentEvents && !rec.closedEarly; i++) await sendEvent(i);
      if (!rec.closedEarly) res.end(); // a clean end of the HTTP body, the SSE stream unfinished
      return undefined;
    }
    for (let i = 0; i < events.length && !rec.closedEarly; i++) {
      if (fault === 'malformed' && i === Math.min(3, contentEvents)) await write(rec, res, Buffer.from(badChunk));
      await sendEvent(i);
      if (fault === 'drip' && i >= 1 && i <= contentEvents) await sleepUnlessClosed(rec, dripMs);
    }
    return finishStream(rec, res, usage);
  }

  function finishStream(rec, res, usage) {
    if (rec.closedEarly) return;
    res.end();
    rec.usage = rec.includeUsage ? usage : null;
    rec.complete = true;
  }

  /** Writes and waits until the kernel has it (so a cut after it loses nothing written before). */
  function write(rec, res, buf, count = true) {
    if (rec.closedEarly || res.destroyed) return Promise.resolve();
    if (count) rec.bytes += buf.length;
    return new Promise((resolve) => res.write(buf, () => resolve()));
  }

  async function sendJson(rec, res, status, obj, headers = {}) {
    return sendRaw(rec, res, status, Buffer.from(JSON.stringify(obj)), headers);
  }

  async function sendRaw(rec, res, status, buf, headers = {}, type = 'application/json', plainBytes = null) {
    if (rec.closedEarly) return;
    res.writeHead(status, { 'content-type': type, 'content-length': buf.length, ...headers });
    rec.status = status;
    await write(rec, res, buf, plainBytes === null);
    if (plainBytes !== null) rec.bytes += plainBytes;
    if (!rec.closedEarly) res.end();
  }

  /** TCP RST (SO_LINGER 0), after what was written went out. */
  function reset(rec, res) {
    rec.cutByMock = true;
    const s = res.socket;
    if (s && !s.destroyed) s.resetAndDestroy();
  }

  /** A FIN in the middle of the response (no chunked terminator, or fewer bytes than content-length). */
  function fin(rec, res) {
    rec.cutByMock = true;
    const s = res.socket;
    if (s && !s.destroyed) s.end();
  }

  async function sleepUnlessClosed(rec, ms) {
    const until = Date.now() + ms;
    while (!rec.closedEarly && Date.now() < until) await sleep(Math.min(20, until - Date.now()));
  }

  const server = http.createServer({ noDelay: true, keepAlive: true }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const rec = {
        n: requests.length + 1, receivedAt: Date.now(), doneAt: null, method: req.method, path: req.url,
        rawBody: Buffer.concat(chunks).toString('utf8'), model: null, tag: null, fault: null, stream: false,
        includeUsage: false, status: null, text: '', pieces: 0, usage: null, planUsage: null, complete: false, cutByMock: false,
        closedEarly: false, bytes: 0, acceptEncoding: req.headers['accept-encoding'] ?? null,
      };
      requests.push(rec);
      res.on('close', () => {
        if (!res.writableFinished && !rec.cutByMock) rec.closedEarly = true;
        rec.doneAt = Date.now();
      });
      if (log) log(`${req.method} ${req.url} ${rec.rawBody.slice(0, 160)}`);
      try {
        await handle(rec, req, res);
      } catch (e) {
        if (log) log(`mock_faults error: ${e.stack}`);
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end('mock failure');
        } else {
          res.destroy();
        }
      }
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const boundPort = server.address().port;
  return {
    url: `http://${host}:${boundPort}`,
    baseURL: `http://${host}:${boundPort}/v1`,
    port: boundPort,
    apiKey,
    name,
    seed,
    requests,
    chooseFault,
    /** Requests per fault. */
    counts() {
      const out = {};
      for (const r of requests) if (r.fault) out[r.fault] = (out[r.fault] ?? 0) + 1;
      return out;
    },
    /** Records whose tag (last message text) is `tag`. */
    byTag(tag) { return requests.filter((r) => r.tag === tag); },
    reset() { requests.length = 0; seen.clear(); },
    /** Forgets the per-text request counts once there are more than `max` (long runs by hand). */
    forgetTags(max) { if (seen.size > max) seen.clear(); },
    close() {
      return new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      });
    },
  };
}

// Command line: run the mock by itself (bench/soak.sh, or curl by hand). Prints the port on stdout.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const opt = (flag, dflt) => {
    const i = args.indexOf(flag);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
  };
  const mock = await startFaultMock({
    port: Number(opt('--port', '0')),
    apiKey: opt('--api-key', DEFAULT_API_KEY),
    name: opt('--name', 'faults'),
    seed: Number(opt('--seed', '1')),
    weights: opt('--weights', null) ? parseWeights(opt('--weights')) : DEFAULT_WEIGHTS,
    dripMs: Number(opt('--drip-ms', '25')),
    hugeBytes: Number(opt('--huge-bytes', String((1 << 20) - 4096))),
    log: args.includes('--verbose') ? (line) => process.stderr.write(`mock_faults: ${line}\n`) : null,
  });
  // Bounded memory in long runs: keep the last 1,000 records only.
  setInterval(() => {
    if (mock.requests.length > 1000) mock.requests.splice(0, mock.requests.length - 1000);
    mock.forgetTags(100000);
  }, 1000).unref();
  process.stderr.write(`mock_faults: listening on ${mock.baseURL} (api key ${mock.apiKey}, seed ${mock.seed})\n`);
  process.stdout.write(`${mock.port}\n`);
  const stop = () => mock.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
