// A mock OpenAI-compatible upstream for end-to-end tests.
//
// It speaks OpenAI's real wire format (../../../shared/WIRE-FORMATS.md section 3.1): POST
// /v1/chat/completions and POST /v1/completions, non-streaming JSON and Server-Sent Events
// (`data: {chunk}\n\n` ... `data: [DONE]\n\n`, with the usage chunk whose `choices` is `[]` only when
// the request has stream_options.include_usage, and `"usage": null` on every other chunk then).
// Everything it says is deterministic, so tests can assert exact text, tokens and cost:
//
//   completion text   REPLY_PIECES joined (multi-byte UTF-8 on purpose); one piece = one token;
//                     max_tokens / max_completion_tokens cut it short with finish_reason "length".
//   prompt_tokens     chat: sum over messages of (3 + words(content)) + 3; completions: words(prompt).
//                     words(s) = number of whitespace-separated words. See promptTokens().
//
// Every response body is written in several TCP writes with small delays between them, cut inside
// "data: ", inside the JSON, inside a multi-byte UTF-8 character, and across event boundaries, so
// the gateway's SSE and JSON readers see what a real network delivers. `writes` in each recorded
// request keeps the exact slices.
//
// Magic upstream model names (the `model` field the gateway sends) trigger other behaviour:
//   mock-error-401 / mock-error-429 / mock-error-500   OpenAI-shaped error with that status
//   mock-midstream-error   streams two pieces, then an SSE `data: {"error": ...}` event and closes
//   mock-no-usage          ignores stream_options.include_usage (some compatible servers do)
//   mock-slow              200 pieces, 50 ms apart (for cancellation and timeout tests); not
//                          streamed: nothing at all for 10 s (200 x 50 ms), then the JSON answer
// Any other model name answers normally. The API key must be `Bearer <apiKey>` or the mock answers
// 401 as OpenAI does.
//
// Each recorded request (mock.requests) has `closed`: true when the connection closed before the
// mock had written its whole response (the gateway gave up on the call), with `closedAt` (ms since
// the epoch) and `receivedAt`; `aborted` is the same flag under its older name.
//
// Use from tests:   const mock = await startMockOpenAI(); mock.baseURL; mock.requests; mock.close()
// Use by hand:      node mock_openai.mjs [--port N] [--api-key KEY]
import http from 'node:http';
import { pathToFileURL } from 'node:url';

export const DEFAULT_API_KEY = 'sk-mock-upstream-key';
export const REPLY_PIECES = [
  'Hello', ' from', ' the', ' mock', ' upstream', ':', ' héllo', ' wörld', ' 🚀', ' 日本語', ' ✓', '.',
];
export const REPLY_TEXT = REPLY_PIECES.join('');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function words(s) {
  return String(s ?? '').split(/\s+/).filter(Boolean).length;
}

function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((p) => (p && typeof p.text === 'string' ? p.text : '')).join(' ');
  }
  return '';
}

/** Prompt tokens the mock reports for a request body (see the header comment). */
export function promptTokens(body, kind = 'chat') {
  if (kind === 'completions') {
    const p = Array.isArray(body.prompt) ? body.prompt.join(' ') : body.prompt;
    return words(p);
  }
  let n = 3;
  for (const m of body.messages ?? []) n += 3 + words(contentText(m.content));
  return n;
}

/** Completion pieces, token count and finish reason the mock produces for a request body. */
export function completionFor(body, pieces = REPLY_PIECES) {
  const limit = body.max_completion_tokens ?? body.max_tokens;
  const n = Number.isInteger(limit) && limit >= 0 ? Math.min(limit, pieces.length) : pieces.length;
  return {
    pieces: pieces.slice(0, n),
    text: pieces.slice(0, n).join(''),
    completionTokens: n,
    finishReason: n < pieces.length ? 'length' : 'stop',
  };
}

function usageObject(prompt, completion, kind) {
  const u = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  if (kind === 'chat') {
    u.prompt_tokens_details = { cached_tokens: 0, audio_tokens: 0 };
    u.completion_tokens_details = {
      reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0,
    };
  }
  return u;
}

const ERRORS = {
  400: { message: 'We could not parse the JSON body of your request. (HINT: This likely means you aren\'t using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)', type: 'invalid_request_error', param: null, code: null },
  401: { message: 'Incorrect API key provided. You can find your API key in your account settings.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' },
  429: { message: 'Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.', type: 'requests', param: null, code: 'rate_limit_exceeded' },
  500: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null },
};

/** Cut points for one body: inside "data: ", inside each multi-byte character, mid-JSON, before
 * the final newline, for every event; never exactly on an event boundary. */
function cutPoints(buf, eventStarts) {
  const cuts = new Set();
  const starts = eventStarts.length ? eventStarts : [0];
  for (let i = 0; i < starts.length; i++) {
    const o = starts[i];
    const end = i + 1 < starts.length ? starts[i + 1] : buf.length;
    const len = end - o;
    if (len < 8) continue;
    cuts.add(o + 3);
    cuts.add(o + Math.floor(len / 2));
    cuts.add(end - 1);
    // Inside the first and the last multi-byte UTF-8 sequence of the event.
    let first = -1;
    let last = -1;
    for (let j = o; j < end; j++) {
      if (buf[j] >= 0xc0) { if (first < 0) first = j; last = j; }
    }
    if (first >= 0) cuts.add(first + 1);
    if (last >= 0 && last !== first) cuts.add(last + 1);
  }
  return [...cuts].filter((c) => c > 0 && c < buf.length).sort((a, b) => a - b);
}

export async function startMockOpenAI({
  host = '127.0.0.1', port = 0, apiKey = DEFAULT_API_KEY, writeDelayMs = 2, log = null,
} = {}) {
  const requests = [];
  let seq = 0;

  async function writeSlices(rec, res, buf, eventStarts) {
    const cuts = cutPoints(buf, eventStarts);
    let prev = 0;
    for (const c of [...cuts, buf.length]) {
      if (res.destroyed) return false;
      const slice = buf.subarray(prev, c);
      rec.writes.push(Buffer.from(slice));
      res.write(slice);
      prev = c;
      if (c < buf.length) await sleep(writeDelayMs);
    }
    return true;
  }

  function sendError(rec, res, status, headers = {}) {
    const body = Buffer.from(JSON.stringify({ error: ERRORS[status] }));
    res.writeHead(status, {
      'content-type': 'application/json', 'content-length': body.length, 'x-request-id': rec.upstreamId, ...headers,
    });
    rec.status = status;
    res.end(body);
  }

  async function sendJson(rec, res, obj) {
    const buf = Buffer.from(JSON.stringify(obj));
    res.writeHead(200, {
      'content-type': 'application/json', 'content-length': buf.length,
      'x-request-id': rec.upstreamId, 'openai-processing-ms': '12',
    });
    rec.status = 200;
    if (await writeSlices(rec, res, buf, [0])) res.end();
  }

  async function sendEvents(rec, res, events, { pieceDelayMs = 0, done = true } = {}) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache',
      'x-request-id': rec.upstreamId, 'openai-processing-ms': '8',
    });
    res.flushHeaders();
    rec.status = 200;
    const texts = events.map((e) => `data: ${typeof e === 'string' ? e : JSON.stringify(e)}\n\n`);
    if (done) texts.push('data: [DONE]\n\n');
    if (pieceDelayMs > 0) {
      // Slow mode: one event at a time, each still split.
      for (const t of texts) {
        const b = Buffer.from(t);
        if (!(await writeSlices(rec, res, b, [0]))) return;
        await sleep(pieceDelayMs);
      }
    } else {
      const parts = texts.map((t) => Buffer.from(t));
      const starts = [];
      let off = 0;
      for (const p of parts) { starts.push(off); off += p.length; }
      if (!(await writeSlices(rec, res, Buffer.concat(parts), starts))) return;
    }
    if (!res.destroyed) res.end();
  }

  async function handleCompletion(rec, res, kind) {
    const body = rec.body;
    const model = String(body.model ?? '');
    const err = /mock-error-(\d{3})/.exec(model);
    if (err && ERRORS[err[1]]) {
      return sendError(rec, res, Number(err[1]), err[1] === '429' ? { 'retry-after': '1' } : {});
    }
    const slow = model.includes('mock-slow');
    const pieces = slow ? Array.from({ length: 200 }, (_, i) => ` w${i}`) : REPLY_PIECES;
    const { pieces: used, text, completionTokens, finishReason } = completionFor(body, pieces);
    const pTokens = promptTokens(body, kind);
    const usage = usageObject(pTokens, completionTokens, kind);
    const n = ++seq;
    const id = kind === 'chat' ? `chatcmpl-mock${n}` : `cmpl-mock${n}`;
    const created = 1700000000 + n;

    if (!body.stream) {
      if (slow) {
        // Think for 10 s before answering; stop at once if the caller hangs up meanwhile.
        for (let i = 0; i < pieces.length && !rec.closed; i++) await sleep(50);
        if (rec.closed) return undefined;
      }
      if (kind === 'chat') {
        return sendJson(rec, res, {
          id, object: 'chat.completion', created, model,
          choices: [{
            index: 0,
            message: { role: 'assistant', content: text, refusal: null, annotations: [] },
            logprobs: null, finish_reason: finishReason,
          }],
          usage, service_tier: 'default', system_fingerprint: 'fp_mock',
        });
      }
      return sendJson(rec, res, {
        id, object: 'text_completion', created, model,
        choices: [{ text, index: 0, logprobs: null, finish_reason: finishReason }],
        usage,
      });
    }

    const includeUsage = body.stream_options?.include_usage === true && !model.includes('mock-no-usage');
    const midstreamError = model.includes('mock-midstream-error');
    const events = [];
    const chunk = (choice) => {
      const c = kind === 'chat'
        ? { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_mock', choices: [choice] }
        : { id, object: 'text_completion', created, choices: [choice], model };
      if (includeUsage) c.usage = null;
      if (kind === 'chat') c.obfuscation = 'x'.repeat((events.length % 5) + 1); // OpenAI pads chunks; clients ignore it
      return c;
    };
    if (kind === 'chat') {
      events.push(chunk({ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }));
    }
    const streamPieces = midstreamError ? used.slice(0, 2) : used;
    for (const p of streamPieces) {
      events.push(kind === 'chat'
        ? chunk({ index: 0, delta: { content: p }, logprobs: null, finish_reason: null })
        : chunk({ text: p, index: 0, logprobs: null, finish_reason: null }));
    }
    if (midstreamError) {
      events.push({ error: ERRORS[500] });
      return sendEvents(rec, res, events, { done: false });
    }
    events.push(kind === 'chat'
      ? chunk({ index: 0, delta: {}, logprobs: null, finish_reason: finishReason })
      : chunk({ text: '', index: 0, logprobs: null, finish_reason: finishReason }));
    if (includeUsage) {
      events.push(kind === 'chat'
        ? { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_mock', choices: [], usage }
        : { id, object: 'text_completion', created, choices: [], model, usage });
    }
    return sendEvents(rec, res, events, { pieceDelayMs: slow ? 50 : 0 });
  }

  const server = http.createServer({ noDelay: true, keepAlive: true }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const rec = {
        method: req.method, path: req.url, headers: { ...req.headers }, rawBody: raw, body: null,
        upstreamId: `req_mock${requests.length + 1}`, status: null, writes: [],
        receivedAt: Date.now(), finished: false, closed: false, closedAt: null, aborted: false,
      };
      requests.push(rec);
      res.socket?.setNoDelay(true);
      // 'close' fires when the response is done or when the connection goes away first.
      res.on('close', () => {
        if (!res.writableFinished) {
          rec.closed = true;
          rec.closedAt = Date.now();
          rec.aborted = true;
        }
        rec.finished = true;
      });
      if (log) log(`${req.method} ${req.url} ${raw.slice(0, 200)}`);
      try {
        const path = (req.url ?? '').split('?')[0];
        const kind = path === '/v1/chat/completions' ? 'chat' : path === '/v1/completions' ? 'completions' : null;
        if (req.method === 'GET' && path === '/v1/models') {
          return sendJson(rec, res, { object: 'list', data: [{ id: 'gpt-test-upstream', object: 'model', created: 1700000000, owned_by: 'mock' }] });
        }
        if (req.method !== 'POST' || !kind) {
          const body = Buffer.from(JSON.stringify({
            error: { message: `Invalid URL (${req.method} ${path})`, type: 'invalid_request_error', param: null, code: null },
          }));
          res.writeHead(404, { 'content-type': 'application/json', 'content-length': body.length });
          rec.status = 404;
          return res.end(body);
        }
        if (req.headers.authorization !== `Bearer ${apiKey}`) return sendError(rec, res, 401);
        try {
          rec.body = JSON.parse(raw);
        } catch {
          return sendError(rec, res, 400);
        }
        if (rec.body === null || typeof rec.body !== 'object') return sendError(rec, res, 400);
        await handleCompletion(rec, res, kind);
      } catch (e) {
        if (log) log(`mock error: ${e.stack}`);
        if (!res.headersSent) sendError(rec, res, 500);
        else res.destroy();
      }
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const boundPort = server.address().port;
  const url = `http://${host}:${boundPort}`;
  return {
    url,
    baseURL: `${url}/v1`,
    port: boundPort,
    apiKey,
    requests,
    /** The last recorded request, optionally only among those whose path starts with `prefix`. */
    last(prefix = '') {
      for (let i = requests.length - 1; i >= 0; i--) if (requests[i].path.startsWith(prefix)) return requests[i];
      return undefined;
    },
    reset() { requests.length = 0; },
    close() {
      return new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      });
    },
  };
}

// Command line: run the mock by itself (for curl by hand).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
  };
  const mock = await startMockOpenAI({
    port: Number(opt('--port', '0')),
    apiKey: opt('--api-key', DEFAULT_API_KEY),
    writeDelayMs: Number(opt('--write-delay-ms', '2')),
    log: (line) => process.stderr.write(`mock-openai: ${line}\n`),
  });
  process.stderr.write(`mock-openai: listening on ${mock.baseURL} (api key ${mock.apiKey})\n`);
  process.stdout.write(`${mock.port}\n`);
  const stop = () => mock.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
