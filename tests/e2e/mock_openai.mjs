// A mock OpenAI-compatible upstream for end-to-end tests, and the scenario engine and sliced-write
// HTTP plumbing that mock_anthropic.mjs and mock_gemini.mjs share with it.
//
// It speaks OpenAI's real wire format (../../../shared/WIRE-FORMATS.md section 3.1; OpenAI API
// reference, https://platform.openai.com/docs/api-reference/chat/create and
// .../chat/streaming, errors https://platform.openai.com/docs/guides/error-codes): POST
// /v1/chat/completions and POST /v1/completions (and POST /v1/responses, OpenAI's Responses API: see
// the section above startMockOpenAI), non-streaming JSON and Server-Sent Events
// (`data: {chunk}\n\n` ... `data: [DONE]\n\n`, with the usage chunk whose `choices` is `[]` only when
// the request has stream_options.include_usage, and `"usage": null` on every other chunk then).
// Reasoning follows DeepSeek's OpenAI-compatible extension (https://api-docs.deepseek.com/guides/reasoning_model):
// `reasoning_content` next to `content`, and usage.completion_tokens_details.reasoning_tokens.
// Everything it says is deterministic, so tests can assert exact text, tokens and cost:
//
//   completion text   REPLY_PIECES joined (multi-byte UTF-8 on purpose); one piece = one token;
//                     max_tokens / max_completion_tokens cut it short with finish_reason "length".
//   prompt_tokens     chat: sum over messages of (3 + words(content)) + 3; completions: words(prompt).
//                     words(s) = number of whitespace-separated words. See promptTokens().
//   completion_tokens one per text piece, one per reasoning piece (reasoning_tokens, included in
//                     completion_tokens as OpenAI and DeepSeek count them), and per tool call one for
//                     its name plus one per argument fragment. See answerFor() / planAnswer().
//
// Every response body (errors included) is written in several TCP writes with small delays between
// them, cut inside "data: ", inside the JSON, inside a multi-byte UTF-8 character, and across event
// boundaries, so the gateway's SSE and JSON readers see what a real network delivers. `writes` in
// each recorded request keeps the exact slices.
//
// Magic upstream model names (the `model` field the gateway sends) select a scenario; the same names
// work in all three mocks (MAGIC_MODELS, planAnswer() below, each mock renders the plan in its own
// provider's format):
//   (any other name)      REPLY_PIECES, cut by the request's max tokens
//   mock-tools            with tools declared and a last message that is not a tool result: ONE call
//                         to the first declared tool with {"city":"Paris","unit":"celsius"}, streamed
//                         in 5 argument fragments; when the conversation ends with tool results:
//                         "The weather is " + their texts joined by ", " (all tool scenarios but
//                         mock-length-tool), split in word pieces
//   mock-parallel-tools   two calls in one answer: first and second tool (or the first twice), Paris
//                         then {"city":"Tokyo","unit":"celsius"}
//   mock-tool-no-args     one call with no arguments (OpenAI: arguments "" and no fragment after it)
//   mock-length-tool      one call cut inside its arguments, finish "length" (the cut: max tokens,
//                         counted as 1 for the name + 1 per fragment, kept between 2 and 5; 3 if unset)
//   mock-reasoning        REASONING_PIECES first (`reasoning_content`), then the reply
//   mock-json             '{"answer": 42}'; records whether response_format asked for JSON
//   mock-stop             stops before the request's FIRST stop sequence, finish "stop"
//   mock-length           the reply cut at max tokens (4 when unset, always short of the whole reply),
//                         finish "length"
//   mock-image            "I see an image" when an image_url part came in, else "no image"
//   mock-cjk              CJK_PIECES ("你好，世界 🌍🚀 数据"), every multi-byte character split across
//                         TCP writes
//   mock-cache            the reply, with prompt_tokens_details.cached_tokens = floor(prompt / 2)
//   mock-error-400 / -401 / -429 (Retry-After: 7) / -500 / -529 (answered 503, OpenAI's "overloaded")
//   mock-truncated        streams the role chunk and 3 pieces, then destroys the socket (no [DONE],
//                         no chunked-encoding terminator); not streamed: half the JSON, then destroys it
//   mock-no-terminator    the whole stream with finish_reason (and usage), then a clean end without
//                         `data: [DONE]`
//   mock-no-finish        the whole text, no finish_reason anywhere, then [DONE]
//   mock-midstream-error  streams two pieces, then an SSE `data: {"error": ...}` event and closes
//   mock-no-usage         ignores stream_options.include_usage (some compatible servers do)
//   mock-slow             200 pieces, 50 ms apart (for cancellation and timeout tests); not
//                         streamed: nothing at all for 10 s (200 x 50 ms), then the JSON answer
//                         (start option slowPieceMs changes the 50 ms, for tests that must be fast)
//   mock-agent            a coding agent's turn (the Codex CLI test): with tools declared and no tool
//                         result yet, ONE call to the shell tool that writes AGENT_PROOF_TEXT into
//                         AGENT_PROOF_FILE in the agent's working directory: Codex's `exec_command`
//                         with {"cmd":"echo tollgate > codex-proof.txt"} when declared, else a `shell`
//                         tool with {"command":["bash","-lc","echo tollgate > codex-proof.txt"]}, else
//                         the first declared tool with the exec_command arguments (3 argument
//                         fragments); when the conversation ends with tool results: AGENT_FINAL_TEXT
//                         ("Done: created codex-proof.txt"), split in word pieces
// mock-stop without any stop sequence answers the whole reply; mock-tools / -parallel-tools /
// -tool-no-args / mock-agent without tools answer the default reply. One scenario per name, no combinations.
// The API key must be `Bearer <apiKey>` or the mock answers 401 as OpenAI does.
//
// Exports for tests: startMockOpenAI({port, apiKey, writeDelayMs, slowPieceMs, log}) ->
// {url, baseURL (url + /v1), port, apiKey, requests, last(prefix), reset(), close()};
// promptTokens(body, kind), answerFor(body, kind) (text, tool calls, finish_reason and the exact
// usage object the mock sends), completionFor(body) (the default reply only), openaiErrorBody();
// and for the other mocks the shared engine: MAGIC_MODELS, scenarioOf(), planAnswer(), the fixed
// texts (REPLY_PIECES, REASONING_PIECES, CJK_PIECES, JSON_PIECES, TOOL_ARGS...), slicedWriter(),
// startRecordingServer().
//
// Each recorded request (mock.requests) has method, path, headers, rawBody, body (parsed), status,
// writes, scenario, stream, and what the scenarios check: jsonRequested, imageReceived,
// reasoningReceived ({text, signatures} sent back in assistant messages, or null),
// toolCallsReceived ([{id, name, arguments, args}] from assistant messages), toolResultsReceived
// ([{id, name, text}]). `closed` is true when the connection closed before the mock had written its
// whole response (the gateway gave up on the call, or the mock cut it on purpose: `cutByMock`), with
// `closedAt` (ms since the epoch) and `receivedAt`; `aborted` is the same flag under its older name.
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

// ------------------------------------------------------------------ the scenario engine (shared)

/** Every magic model name the three mocks understand (mock-no-usage: OpenAI only). */
export const MAGIC_MODELS = [
  'mock-tools', 'mock-parallel-tools', 'mock-tool-no-args', 'mock-length-tool', 'mock-reasoning',
  'mock-json', 'mock-stop', 'mock-length', 'mock-image', 'mock-cjk', 'mock-cache',
  'mock-error-400', 'mock-error-401', 'mock-error-429', 'mock-error-500', 'mock-error-529',
  'mock-truncated', 'mock-no-terminator', 'mock-no-finish', 'mock-midstream-error', 'mock-no-usage',
  'mock-slow', 'mock-agent',
];
export const CJK_PIECES = ['你好', '，世', '界 🌍', '🚀 数', '据'];
export const CJK_TEXT = CJK_PIECES.join(''); // "你好，世界 🌍🚀 数据"
export const JSON_PIECES = ['{"answer"', ': 4', '2}'];
export const JSON_TEXT = JSON_PIECES.join(''); // '{"answer": 42}'
export const IMAGE_YES_PIECES = ['I', ' see', ' an', ' image'];
export const IMAGE_NO_PIECES = ['no', ' image'];
export const REASONING_PIECES = ['Let', ' me', ' think', ' about', ' thé', ' answer', ' 🤔', '.'];
export const REASONING_TEXT = REASONING_PIECES.join('');
/** The fixed signature of the mocks' reasoning (Anthropic signature_delta, Gemini thoughtSignature). */
export const REASONING_SIGNATURE = 'bW9jay1yZWFzb25pbmctc2lnbmF0dXJlOnYx';
/** Gemini 3 puts a thoughtSignature on the first functionCall part of each answer; so does the mock. */
export const FUNCTION_CALL_SIGNATURE = 'bW9jay1mdW5jdGlvbi1jYWxsLXNpZ25hdHVyZQ==';
export const TOOL_ARGS = { city: 'Paris', unit: 'celsius' };
export const TOOL_ARGS_2 = { city: 'Tokyo', unit: 'celsius' };
export const TOOL_ARG_FRAGMENTS = ['{"city":', '"Par', 'is",', '"unit":"cel', 'sius"}'];
export const TOOL_ARG_FRAGMENTS_2 = ['{"city":', '"Tok', 'yo",', '"unit":"cel', 'sius"}'];
export const DEFAULT_TOOL_NAME = 'get_weather';
export const SLOW_PIECES = Array.from({ length: 200 }, (_, i) => ` w${i}`);
export const SLOW_PIECE_MS = 50;
/** mock-agent: the file its shell call creates in the agent's working directory, and what it holds. */
export const AGENT_PROOF_FILE = 'codex-proof.txt';
export const AGENT_PROOF_TEXT = 'tollgate';
export const AGENT_COMMAND = `echo ${AGENT_PROOF_TEXT} > ${AGENT_PROOF_FILE}`;
export const AGENT_FINAL_TEXT = `Done: created ${AGENT_PROOF_FILE}`;

/** mock-agent's one call: Codex's exec_command ({"cmd": string}), else `shell` ({"command": argv}),
 * else the first declared tool with exec_command's arguments. Returns {name, fragments}. */
export function agentCall(toolNames) {
  const cmd = JSON.stringify(AGENT_COMMAND);
  if (!toolNames.includes('exec_command') && toolNames.includes('shell')) {
    return { name: 'shell', fragments: ['{"command":["bash","-lc",', cmd, ']}'] };
  }
  const name = toolNames.includes('exec_command') ? 'exec_command' : toolNames[0];
  return { name, fragments: ['{"cmd":', cmd.slice(0, 10), `${cmd.slice(10)}}`] };
}
export const RETRY_AFTER_SECONDS = 7;
export const TRUNCATE_AFTER_PIECES = 3;
export const MIDSTREAM_ERROR_AFTER_PIECES = 2;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function words(s) {
  return String(s ?? '').split(/\s+/).filter(Boolean).length;
}

/** Splits free text into pieces (tokens) the way the mocks stream it: one word with its leading space each. */
export function splitPieces(text) {
  return String(text).match(/\s*\S+\s*$|\s*\S+/g) ?? (text ? [text] : []);
}

/** The scenario a model name selects: a name from MAGIC_MODELS (exact, else the longest contained), or 'default'. */
export function scenarioOf(model) {
  const m = String(model ?? '');
  if (MAGIC_MODELS.includes(m)) return m;
  const hits = MAGIC_MODELS.filter((n) => m.includes(n)).sort((a, b) => b.length - a.length);
  return hits[0] ?? 'default';
}

/** The complete "key":"value" pairs of a cut JSON object text (what a lenient parser recovers). */
export function partialArgs(prefix) {
  try { return JSON.parse(prefix); } catch { /* cut: recover the complete pairs */ }
  const out = {};
  for (const m of prefix.matchAll(/"([^"\\]+)"\s*:\s*"([^"\\]*)"/g)) out[m[1]] = m[2];
  return out;
}

function cutAtStop(pieces, stops) {
  const stop = stops.find((s) => typeof s === 'string' && s.length > 0); // only the first one counts
  if (!stop) return { pieces, hit: null };
  const idx = pieces.join('').indexOf(stop);
  if (idx < 0) return { pieces, hit: null };
  const out = [];
  let pos = 0;
  for (const p of pieces) {
    if (pos >= idx) break;
    const take = p.slice(0, idx - pos);
    if (take) out.push(take);
    pos += p.length;
  }
  return { pieces: out, hit: stop };
}

/**
 * The provider-neutral answer to a request. `view` is what a mock read from its request:
 *   { scenario, maxTokens (int|null), stop: [string], toolNames: [string],
 *     toolResults: [string] (the trailing tool results when the conversation ends with them, else []),
 *     imageReceived: bool }
 * Returns { scenario, error (HTTP status the scenario asks for, or null), reasoning: [pieces],
 *   text: [pieces], toolCalls: [{name, fragments (those sent), argsJson, args (object, partial when
 *   cut), complete, noArgs}], finish: 'stop'|'stop_sequence'|'length'|'tool_calls'|null,
 *   stopSequence, outputTokens (text + tool calls), reasoningTokens, cacheRead, and the stream
 *   behaviours truncateAfter, midstreamErrorAfter (piece counts or null), terminator, slow }.
 * Token rule: one per piece; a tool call is 1 (its name) + 1 per argument fragment; max tokens cut
 * text and tool calls, never the reasoning.
 */
export function planAnswer(view) {
  const s = view.scenario;
  const plan = {
    scenario: s, error: null, reasoning: [], text: [], toolCalls: [], finish: 'stop', stopSequence: null,
    outputTokens: 0, reasoningTokens: 0, cacheRead: false,
    truncateAfter: null, midstreamErrorAfter: null, terminator: true, slow: false,
  };
  const err = /^mock-error-(\d{3})$/.exec(s);
  if (err) {
    plan.error = Number(err[1]);
    return plan;
  }
  const limit = Number.isInteger(view.maxTokens) && view.maxTokens >= 0 ? view.maxTokens : null;
  const toolNames = view.toolNames ?? [];
  const toolResults = view.toolResults ?? [];
  const toolScenario = ['mock-tools', 'mock-parallel-tools', 'mock-tool-no-args', 'mock-length-tool', 'mock-agent'].includes(s);
  let pieces = REPLY_PIECES;
  let calls = null; // [{name, fragments, argsJson}]
  let cap = limit;
  if (s === 'mock-agent' && toolResults.length > 0) {
    pieces = splitPieces(AGENT_FINAL_TEXT);
  } else if (toolScenario && toolResults.length > 0 && s !== 'mock-length-tool') {
    pieces = splitPieces(`The weather is ${toolResults.join(', ')}`);
  } else if (s === 'mock-length-tool') {
    calls = [{ name: toolNames[0] ?? DEFAULT_TOOL_NAME, fragments: TOOL_ARG_FRAGMENTS }];
    cap = Math.max(2, Math.min(limit ?? 3, TOOL_ARG_FRAGMENTS.length));
  } else if (toolScenario && toolNames.length > 0) {
    if (s === 'mock-tools') calls = [{ name: toolNames[0], fragments: TOOL_ARG_FRAGMENTS }];
    if (s === 'mock-parallel-tools') {
      calls = [
        { name: toolNames[0], fragments: TOOL_ARG_FRAGMENTS },
        { name: toolNames[1] ?? toolNames[0], fragments: TOOL_ARG_FRAGMENTS_2 },
      ];
    }
    if (s === 'mock-tool-no-args') calls = [{ name: toolNames[0], fragments: [], noArgs: true }];
    if (s === 'mock-agent') calls = [agentCall(toolNames)];
  } else if (s === 'mock-json') {
    pieces = JSON_PIECES;
  } else if (s === 'mock-image') {
    pieces = view.imageReceived ? IMAGE_YES_PIECES : IMAGE_NO_PIECES;
  } else if (s === 'mock-cjk') {
    pieces = CJK_PIECES;
  } else if (s === 'mock-slow') {
    pieces = SLOW_PIECES;
    plan.slow = true;
  }
  if (s === 'mock-reasoning') plan.reasoning = REASONING_PIECES;
  if (s === 'mock-cache') plan.cacheRead = true;
  if (s === 'mock-truncated') plan.truncateAfter = TRUNCATE_AFTER_PIECES;
  if (s === 'mock-midstream-error') plan.midstreamErrorAfter = MIDSTREAM_ERROR_AFTER_PIECES;
  if (s === 'mock-no-terminator') plan.terminator = false;

  if (calls) {
    let budget = cap ?? Infinity;
    let cut = false;
    for (const c of calls) {
      if (budget <= 0) { cut = true; break; }
      budget -= 1; // the name
      const sent = c.fragments.slice(0, Math.max(0, Math.min(c.fragments.length, budget)));
      budget -= sent.length;
      const argsJson = sent.join('');
      const complete = sent.length === c.fragments.length;
      if (!complete) cut = true;
      plan.toolCalls.push({
        name: c.name, fragments: sent, argsJson, complete, noArgs: !!c.noArgs,
        args: c.noArgs ? {} : partialArgs(argsJson),
      });
      plan.outputTokens += 1 + sent.length;
    }
    plan.finish = cut ? 'length' : 'tool_calls';
  } else {
    let finish = 'stop';
    if (s === 'mock-stop') {
      const r = cutAtStop(pieces, view.stop ?? []);
      pieces = r.pieces;
      if (r.hit !== null) { finish = 'stop_sequence'; plan.stopSequence = r.hit; }
    }
    let n = pieces.length;
    if (s === 'mock-length') n = Math.max(1, Math.min(limit ?? 4, pieces.length - 1));
    else if (cap !== null) n = Math.min(cap, pieces.length);
    if (n < pieces.length) { finish = 'length'; plan.stopSequence = null; }
    plan.text = pieces.slice(0, n);
    plan.outputTokens = n;
    plan.finish = finish;
  }
  plan.reasoningTokens = plan.reasoning.length;
  if (s === 'mock-no-finish') plan.finish = null;
  return plan;
}

// ------------------------------------------------------------------ sliced writes (shared)

/** Cut points for one body: inside "data: ", inside each multi-byte character, mid-JSON, before
 * the final newline, for every event; never exactly on an event boundary. With everyChar, also
 * inside every multi-byte UTF-8 sequence of the body, at varying depths. */
export function cutPoints(buf, eventStarts, { everyChar = false } = {}) {
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
  if (everyChar) {
    let k = 0;
    for (let j = 0; j < buf.length; j++) {
      if (buf[j] >= 0xc0) {
        const seqLen = buf[j] >= 0xf0 ? 4 : buf[j] >= 0xe0 ? 3 : 2;
        cuts.add(j + 1 + (k++ % (seqLen - 1)));
      }
    }
  }
  return [...cuts].filter((c) => c > 0 && c < buf.length).sort((a, b) => a - b);
}

/** Writers bound to one mock's write delay. Every body goes out through writeSlices. */
export function slicedWriter(writeDelayMs, slowPieceMs = SLOW_PIECE_MS) {
  async function writeSlices(rec, res, buf, eventStarts, opts = {}) {
    const cuts = cutPoints(buf, eventStarts, opts);
    let prev = 0;
    let flushed = Promise.resolve();
    for (const c of [...cuts, buf.length]) {
      if (res.destroyed) return false;
      const slice = buf.subarray(prev, c);
      rec.writes.push(Buffer.from(slice));
      flushed = new Promise((resolve) => res.write(slice, () => resolve()));
      prev = c;
      if (c < buf.length) await sleep(writeDelayMs);
    }
    await flushed; // handed to the kernel: a cut that follows loses nothing written before it
    return !res.destroyed;
  }

  /** Cuts the connection on purpose (no terminator of any kind), after what was written went out. */
  function cut(rec, res) {
    rec.cutByMock = true;
    res.destroy();
  }

  /** A JSON body (any status), content-length set; `truncate` sends half of it, then cuts. */
  async function sendJson(rec, res, status, headers, obj, { everyChar = false, truncate = false } = {}) {
    const buf = Buffer.from(JSON.stringify(obj));
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': buf.length, ...headers });
    rec.status = status;
    const body = truncate ? buf.subarray(0, Math.floor(buf.length / 2)) : buf;
    if (!(await writeSlices(rec, res, body, [0], { everyChar }))) return;
    if (truncate) return cut(rec, res);
    res.end();
  }

  /** Already-framed SSE events; end 'end' (clean), 'destroy' (cut); pieceDelayMs: one event at a time. */
  async function sendEvents(rec, res, headers, texts, { pieceDelayMs = 0, end = 'end', everyChar = false } = {}) {
    if (!res.headersSent) {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers });
      res.flushHeaders();
      rec.status = 200;
    }
    if (pieceDelayMs > 0) {
      // Slow mode: one event at a time, each still split.
      for (const t of texts) {
        if (!(await writeSlices(rec, res, Buffer.from(t), [0], { everyChar }))) return;
        await sleep(pieceDelayMs);
      }
    } else {
      const parts = texts.map((t) => Buffer.from(t));
      const starts = [];
      let off = 0;
      for (const p of parts) { starts.push(off); off += p.length; }
      if (!(await writeSlices(rec, res, Buffer.concat(parts), starts, { everyChar }))) return;
    }
    if (res.destroyed) return;
    if (end === 'destroy') cut(rec, res);
    else res.end();
  }

  /** mock-slow, not streamed: nothing for 200 x slowPieceMs; false when the caller hung up meanwhile. */
  async function holdSlow(rec) {
    for (let i = 0; i < SLOW_PIECES.length && !rec.closed; i++) await sleep(slowPieceMs);
    return !rec.closed;
  }

  return { writeSlices, sendJson, sendEvents, holdSlow, cut, slowPieceMs };
}

/**
 * An HTTP server that records every request and hands it to `route(rec, req, res)`. Returns
 * { server, url, port, requests, last(prefix), reset(), close() }.
 */
export async function startRecordingServer({ host = '127.0.0.1', port = 0, log = null, idPrefix = 'req_mock', route }) {
  const requests = [];
  const server = http.createServer({ noDelay: true, keepAlive: true }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const rec = {
        method: req.method, path: req.url, headers: { ...req.headers }, rawBody: raw, body: null,
        upstreamId: `${idPrefix}${requests.length + 1}`, status: null, writes: [],
        receivedAt: Date.now(), finished: false, closed: false, closedAt: null, aborted: false, cutByMock: false,
        scenario: null, stream: false, jsonRequested: false, imageReceived: false, reasoningReceived: null,
        toolCallsReceived: [], toolResultsReceived: [],
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
        await route(rec, req, res);
      } catch (e) {
        if (log) log(`mock error: ${e.stack}`);
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end('mock failure');
        } else {
          res.destroy();
        }
      }
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const boundPort = server.address().port;
  return {
    server,
    url: `http://${host}:${boundPort}`,
    port: boundPort,
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

/** Command-line runner shared by the three mocks. */
export async function runFromCommandLine(start, name, defaultKey) {
  const args = process.argv.slice(2);
  const opt = (flag, dflt) => {
    const i = args.indexOf(flag);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
  };
  const mock = await start({
    port: Number(opt('--port', '0')),
    apiKey: opt('--api-key', defaultKey),
    writeDelayMs: Number(opt('--write-delay-ms', '2')),
    log: (line) => process.stderr.write(`${name}: ${line}\n`),
  });
  process.stderr.write(`${name}: listening on ${mock.baseURL} (api key ${mock.apiKey})\n`);
  process.stdout.write(`${mock.port}\n`);
  const stop = () => mock.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  return mock;
}

// ------------------------------------------------------------------ OpenAI: reading requests

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

/** Completion pieces, token count and finish reason of the default reply (the historical helper). */
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

function parseMaybe(s) {
  if (typeof s !== 'string') return s;
  try { return JSON.parse(s); } catch { return s; }
}

/** What an OpenAI request says, for planAnswer() and the request record. */
export function readOpenAIRequest(body, kind = 'chat') {
  const messages = kind === 'chat' && Array.isArray(body.messages) ? body.messages : [];
  const stop = typeof body.stop === 'string' ? [body.stop] : Array.isArray(body.stop) ? body.stop : [];
  const toolNames = kind === 'chat' && Array.isArray(body.tools)
    ? body.tools.map((t) => t?.function?.name ?? t?.name).filter((n) => typeof n === 'string')
    : [];
  const toolResults = [];
  for (let i = messages.length - 1; i >= 0 && (messages[i]?.role === 'tool' || messages[i]?.role === 'function'); i--) {
    toolResults.unshift(contentText(messages[i].content));
  }
  let imageReceived = false;
  let reasoningText = '';
  let sawReasoning = false;
  const signatures = [];
  const toolCallsReceived = [];
  const toolResultsReceived = [];
  for (const m of messages) {
    if (Array.isArray(m?.content) && m.content.some((p) => p?.type === 'image_url')) imageReceived = true;
    if (m?.role === 'assistant') {
      for (const field of ['reasoning_content', 'reasoning']) {
        if (typeof m[field] === 'string') { reasoningText += m[field]; sawReasoning = true; }
      }
      for (const d of Array.isArray(m.reasoning_details) ? m.reasoning_details : []) {
        if (typeof d?.text === 'string') { reasoningText += d.text; sawReasoning = true; }
        if (typeof d?.signature === 'string') signatures.push(d.signature);
      }
      for (const tc of Array.isArray(m.tool_calls) ? m.tool_calls : []) {
        toolCallsReceived.push({ id: tc.id ?? null, name: tc.function?.name ?? null, arguments: tc.function?.arguments, args: parseMaybe(tc.function?.arguments) });
      }
    }
    if (m?.role === 'tool') toolResultsReceived.push({ id: m.tool_call_id ?? null, name: m.name ?? null, text: contentText(m.content) });
  }
  const rf = body.response_format?.type;
  return {
    scenario: scenarioOf(body.model),
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? null,
    stop,
    toolNames,
    toolResults,
    imageReceived,
    jsonRequested: rf === 'json_object' || rf === 'json_schema',
    reasoningReceived: sawReasoning || signatures.length ? { text: reasoningText, signatures } : null,
    toolCallsReceived,
    toolResultsReceived,
  };
}

// ------------------------------------------------------------------ OpenAI: answers

const FINISH = { stop: 'stop', stop_sequence: 'stop', length: 'length', tool_calls: 'tool_calls' };

function usageObject(prompt, plan, kind) {
  const completion = plan.outputTokens + plan.reasoningTokens;
  const u = { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  if (kind === 'chat') {
    u.prompt_tokens_details = { cached_tokens: plan.cacheRead ? Math.floor(prompt / 2) : 0, audio_tokens: 0 };
    u.completion_tokens_details = {
      reasoning_tokens: plan.reasoningTokens, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0,
    };
  }
  return u;
}

/**
 * What the mock answers to an OpenAI request body: { plan, text, reasoning, toolCalls: [{name,
 * arguments}], finishReason, usage } (usage exactly as the mock sends it; completions kind: tools
 * and reasoning do not apply).
 */
export function answerFor(body, kind = 'chat') {
  const view = readOpenAIRequest(body, kind);
  const plan = planAnswer(view);
  if (kind !== 'chat') { plan.reasoning = []; plan.reasoningTokens = 0; }
  return {
    plan,
    text: plan.text.join(''),
    reasoning: plan.reasoning.join(''),
    toolCalls: plan.toolCalls.map((c) => ({ name: c.name, arguments: c.argsJson })),
    finishReason: plan.finish === null ? null : FINISH[plan.finish],
    usage: usageObject(promptTokens(body, kind), plan, kind),
  };
}

const ERRORS = {
  400: { message: 'We could not parse the JSON body of your request. (HINT: This likely means you aren\'t using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)', type: 'invalid_request_error', param: null, code: null },
  401: { message: 'Incorrect API key provided. You can find your API key in your account settings.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' },
  429: { message: 'Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 7s.', type: 'requests', param: null, code: 'rate_limit_exceeded' },
  500: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null },
  503: { message: 'The engine is currently overloaded, please try again later.', type: 'server_error', param: null, code: null },
};
/** mock-error-N answers this status (529 is Anthropic's; OpenAI says "overloaded" with 503). */
const ERROR_STATUS = { 400: 400, 401: 401, 429: 429, 500: 500, 529: 503 };
/** The OpenAI error body the mock sends for a status (400, 401, 429, 500, 503). */
export function openaiErrorBody(status) {
  return { error: ERRORS[status] };
}

// ------------------------------------------------------------------ OpenAI Responses API (POST /v1/responses)
//
// The same scenario plans rendered in OpenAI's Responses wire format (API reference "Create a model
// response", "The response object", "Streaming events"; the `openai` npm package's
// resources/responses/responses.d.ts): `input` items in, a Response object out (stream: false), or
// `event: TYPE` + `data: {type, sequence_number, ...}` events: response.created, response.in_progress,
// per output item response.output_item.added ... response.output_item.done (reasoning: summary part
// and summary text deltas; message: content part and output_text deltas; function_call: argument
// deltas), then response.completed, or response.incomplete (max tokens: incomplete_details.reason
// "max_output_tokens"); mid-stream errors are an `error` event then response.failed. No terminator.
// mock-reasoning answers a reasoning item with one summary (REASONING_TEXT) and an encrypted_content
// the mock can recognise (responsesEncryptedReasoning(id)) before the reply. Each recorded request
// also has reasoningItemsReceived: [{id, encrypted_content, summary, intact}] (intact: the
// encrypted_content is the one this mock issued for that id, i.e. replayed unchanged).

/** The encrypted_content the mock issues for reasoning item `id` (opaque to clients, checkable here). */
export function responsesEncryptedReasoning(id) {
  return `gAAAAAB${Buffer.from(JSON.stringify({ mock: 'reasoning', id })).toString('base64')}`;
}

function responsesContentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p?.text === 'string' ? p.text : typeof p?.refusal === 'string' ? p.refusal : '')).join(' ');
  return '';
}

/** `input` as an item list (a string is one user message). */
export function responsesInputItems(body) {
  if (typeof body.input === 'string') return [{ type: 'message', role: 'user', content: body.input }];
  return Array.isArray(body.input) ? body.input : [];
}

/** Prompt tokens for a Responses request: 3 + per item (and instructions) 3 + words of its text. */
export function responsesPromptTokens(body) {
  let n = 3;
  if (typeof body.instructions === 'string' && body.instructions) n += 3 + words(body.instructions);
  for (const it of responsesInputItems(body)) {
    const type = it?.type ?? 'message';
    if (type === 'message') n += 3 + words(responsesContentText(it.content));
    else if (type === 'function_call') n += 3 + words(String(it.arguments ?? ''));
    else if (type === 'function_call_output') n += 3 + words(responsesContentText(it.output));
  }
  return n;
}

/** What a Responses request says, for planAnswer() and the request record. */
export function readResponsesRequest(body) {
  const items = responsesInputItems(body);
  const toolNames = (Array.isArray(body.tools) ? body.tools : [])
    .filter((t) => t?.type === 'function' && typeof t.name === 'string').map((t) => t.name);
  const toolResults = [];
  for (let i = items.length - 1; i >= 0 && items[i]?.type === 'function_call_output'; i--) {
    toolResults.unshift(responsesContentText(items[i].output));
  }
  let imageReceived = false;
  let reasoningText = '';
  const reasoningItemsReceived = [];
  const toolCallsReceived = [];
  const toolResultsReceived = [];
  for (const it of items) {
    const type = it?.type ?? 'message';
    if (type === 'message' && Array.isArray(it.content) && it.content.some((p) => p?.type === 'input_image')) imageReceived = true;
    if (type === 'reasoning') {
      const summary = (Array.isArray(it.summary) ? it.summary : []).map((s) => s?.text ?? '').join('');
      reasoningText += summary;
      reasoningItemsReceived.push({
        id: it.id ?? null, encrypted_content: it.encrypted_content ?? null, summary,
        intact: typeof it.id === 'string' && it.encrypted_content === responsesEncryptedReasoning(it.id),
      });
    }
    if (type === 'function_call') {
      toolCallsReceived.push({ id: it.call_id ?? null, name: it.name ?? null, arguments: it.arguments, args: parseMaybe(it.arguments) });
    }
    if (type === 'function_call_output') toolResultsReceived.push({ id: it.call_id ?? null, name: null, text: responsesContentText(it.output) });
  }
  const rf = body.text?.format?.type;
  return {
    scenario: scenarioOf(body.model),
    maxTokens: body.max_output_tokens ?? null,
    stop: [],
    toolNames,
    toolResults,
    imageReceived,
    jsonRequested: rf === 'json_object' || rf === 'json_schema',
    reasoningReceived: reasoningItemsReceived.length ? { text: reasoningText, signatures: [] } : null,
    reasoningItemsReceived,
    toolCallsReceived,
    toolResultsReceived,
  };
}

/** The Responses usage object for a plan (OpenAI semantics: cached within input, reasoning within output). */
export function responsesUsage(prompt, plan) {
  const output = plan.outputTokens + plan.reasoningTokens;
  return {
    input_tokens: prompt,
    input_tokens_details: { cached_tokens: plan.cacheRead ? Math.floor(prompt / 2) : 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: plan.reasoningTokens },
    total_tokens: prompt + output,
  };
}

export async function startMockOpenAI({
  host = '127.0.0.1', port = 0, apiKey = DEFAULT_API_KEY, writeDelayMs = 2, slowPieceMs = SLOW_PIECE_MS, log = null,
} = {}) {
  const w = slicedWriter(writeDelayMs, slowPieceMs);
  let seq = 0;

  function sendError(rec, res, status, headers = {}) {
    return w.sendJson(rec, res, status, { 'x-request-id': rec.upstreamId, ...headers }, openaiErrorBody(status));
  }

  async function handleCompletion(rec, res, kind) {
    const body = rec.body;
    const model = String(body.model ?? '');
    const view = readOpenAIRequest(body, kind);
    Object.assign(rec, {
      scenario: view.scenario, stream: body.stream === true, jsonRequested: view.jsonRequested,
      imageReceived: view.imageReceived, reasoningReceived: view.reasoningReceived,
      toolCallsReceived: view.toolCallsReceived, toolResultsReceived: view.toolResultsReceived,
    });
    const { plan, usage } = answerFor(body, kind);
    if (plan.error) {
      const status = ERROR_STATUS[plan.error] ?? 500;
      const headers = status === 429
        ? { 'retry-after': String(RETRY_AFTER_SECONDS), 'x-ratelimit-limit-requests': '3', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': `${RETRY_AFTER_SECONDS}s` }
        : {};
      return sendError(rec, res, status, headers);
    }
    const everyChar = plan.scenario === 'mock-cjk';
    const n = ++seq;
    const id = kind === 'chat' ? `chatcmpl-mock${n}` : `cmpl-mock${n}`;
    const created = 1700000000 + n;
    const text = plan.text.join('');
    const finishReason = plan.finish === null ? null : FINISH[plan.finish];
    const toolCalls = plan.toolCalls.map((c, i) => ({ id: `call_mock${n}_${i}`, type: 'function', function: { name: c.name, arguments: c.argsJson } }));

    if (!body.stream) {
      if (plan.slow && !(await w.holdSlow(rec))) return undefined;
      const headers = { 'x-request-id': rec.upstreamId, 'openai-processing-ms': '12' };
      const opts = { everyChar, truncate: plan.truncateAfter !== null };
      if (kind === 'chat') {
        const message = { role: 'assistant', content: toolCalls.length ? null : text, refusal: null, annotations: [] };
        if (plan.reasoning.length) message.reasoning_content = plan.reasoning.join('');
        if (toolCalls.length) message.tool_calls = toolCalls;
        return w.sendJson(rec, res, 200, headers, {
          id, object: 'chat.completion', created, model,
          choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason }],
          usage, service_tier: 'default', system_fingerprint: 'fp_mock',
        }, opts);
      }
      return w.sendJson(rec, res, 200, headers, {
        id, object: 'text_completion', created, model,
        choices: [{ text, index: 0, logprobs: null, finish_reason: finishReason }],
        usage,
      }, opts);
    }

    const includeUsage = body.stream_options?.include_usage === true && plan.scenario !== 'mock-no-usage';
    const events = [];
    const chunk = (choice) => {
      const c = kind === 'chat'
        ? { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_mock', choices: [choice] }
        : { id, object: 'text_completion', created, choices: [choice], model };
      if (includeUsage) c.usage = null;
      if (kind === 'chat') c.obfuscation = 'x'.repeat((events.length % 5) + 1); // OpenAI pads chunks; clients ignore it
      return c;
    };
    const delta = (d) => chunk({ index: 0, delta: d, logprobs: null, finish_reason: null });
    let textPieces = plan.text;
    if (plan.truncateAfter !== null) textPieces = textPieces.slice(0, plan.truncateAfter);
    if (plan.midstreamErrorAfter !== null) textPieces = textPieces.slice(0, plan.midstreamErrorAfter);

    if (kind === 'chat') {
      if (toolCalls.length) {
        // OpenAI opens a tool call with its id, type, name and arguments "", then sends argument
        // fragments under the same index; parallel calls get the next index.
        plan.toolCalls.forEach((c, i) => {
          const open = { index: i, id: toolCalls[i].id, type: 'function', function: { name: c.name, arguments: '' } };
          events.push(i === 0
            ? delta({ role: 'assistant', content: null, tool_calls: [open], refusal: null })
            : delta({ tool_calls: [open] }));
          for (const f of c.fragments) events.push(delta({ tool_calls: [{ index: i, function: { arguments: f } }] }));
        });
      } else if (plan.reasoning.length) {
        events.push(delta({ role: 'assistant', content: null, reasoning_content: '' }));
        for (const p of plan.reasoning) events.push(delta({ content: null, reasoning_content: p }));
      } else {
        events.push(delta({ role: 'assistant', content: '', refusal: null }));
      }
    }
    for (const p of textPieces) {
      events.push(kind === 'chat'
        ? delta(plan.reasoning.length ? { content: p, reasoning_content: null } : { content: p })
        : chunk({ text: p, index: 0, logprobs: null, finish_reason: null }));
    }
    const frame = (e) => `data: ${typeof e === 'string' ? e : JSON.stringify(e)}\n\n`;
    const headers = { 'x-request-id': rec.upstreamId, 'openai-processing-ms': '8' };
    if (plan.truncateAfter !== null) return w.sendEvents(rec, res, headers, events.map(frame), { end: 'destroy', everyChar });
    if (plan.midstreamErrorAfter !== null) {
      events.push(openaiErrorBody(500));
      return w.sendEvents(rec, res, headers, events.map(frame), { everyChar });
    }
    if (finishReason !== null) {
      events.push(kind === 'chat'
        ? chunk({ index: 0, delta: {}, logprobs: null, finish_reason: finishReason })
        : chunk({ text: '', index: 0, logprobs: null, finish_reason: finishReason }));
    }
    if (includeUsage) {
      events.push(kind === 'chat'
        ? { id, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_mock', choices: [], usage }
        : { id, object: 'text_completion', created, choices: [], model, usage });
    }
    const texts = events.map(frame);
    if (plan.terminator) texts.push('data: [DONE]\n\n');
    return w.sendEvents(rec, res, headers, texts, { pieceDelayMs: plan.slow ? w.slowPieceMs : 0, everyChar });
  }

  // POST /v1/responses: the plan as Response items and events (section above startMockOpenAI).
  async function handleResponses(rec, res) {
    const body = rec.body;
    const view = readResponsesRequest(body);
    Object.assign(rec, {
      scenario: view.scenario, stream: body.stream === true, jsonRequested: view.jsonRequested,
      imageReceived: view.imageReceived, reasoningReceived: view.reasoningReceived,
      reasoningItemsReceived: view.reasoningItemsReceived,
      toolCallsReceived: view.toolCallsReceived, toolResultsReceived: view.toolResultsReceived,
    });
    const plan = planAnswer(view);
    if (plan.error) {
      const status = ERROR_STATUS[plan.error] ?? 500;
      const headers = status === 429
        ? { 'retry-after': String(RETRY_AFTER_SECONDS), 'x-ratelimit-limit-requests': '3', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': `${RETRY_AFTER_SECONDS}s` }
        : {};
      return sendError(rec, res, status, headers);
    }
    const everyChar = plan.scenario === 'mock-cjk';
    const n = ++seq;
    const usage = responsesUsage(responsesPromptTokens(body), plan);
    const withEncrypted = body.store === false || (Array.isArray(body.include) && body.include.includes('reasoning.encrypted_content'));
    const incomplete = plan.finish === 'length';
    const rsId = `rs_mock${n}`;
    const msgId = `msg_mock${n}`;
    const reasoningItem = plan.reasoning.length
      ? { id: rsId, type: 'reasoning', summary: [{ type: 'summary_text', text: plan.reasoning.join('') }], encrypted_content: withEncrypted ? responsesEncryptedReasoning(rsId) : null }
      : null;
    const textStatus = incomplete ? 'incomplete' : 'completed';
    const messageItem = plan.text.length || !plan.toolCalls.length
      ? { id: msgId, type: 'message', status: textStatus, role: 'assistant', content: [{ type: 'output_text', annotations: [], logprobs: [], text: plan.text.join('') }] }
      : null;
    const callItems = plan.toolCalls.map((c, i) => ({
      id: `fc_mock${n}_${i}`, type: 'function_call', status: c.complete ? 'completed' : 'incomplete',
      arguments: c.argsJson, call_id: `call_mock${n}_${i}`, name: c.name,
    }));
    const output = [reasoningItem, messageItem, ...callItems].filter(Boolean);
    const response = (status, out, extra = {}) => ({
      id: `resp_mock${n}`, object: 'response', created_at: 1700000000 + n, status, background: false, error: null,
      incomplete_details: null, instructions: body.instructions ?? null, max_output_tokens: body.max_output_tokens ?? null,
      model: String(body.model ?? ''), output: out, parallel_tool_calls: body.parallel_tool_calls ?? true,
      previous_response_id: body.previous_response_id ?? null,
      reasoning: { effort: body.reasoning?.effort ?? null, summary: body.reasoning?.summary ?? null },
      service_tier: 'default', store: body.store ?? true, temperature: body.temperature ?? 1, text: { format: body.text?.format ?? { type: 'text' } },
      tool_choice: body.tool_choice ?? 'auto', tools: body.tools ?? [], top_p: body.top_p ?? 1, truncation: 'disabled',
      usage: null, user: body.user ?? null, metadata: body.metadata ?? {}, ...extra,
    });
    const final = response(incomplete ? 'incomplete' : 'completed', output, {
      usage, incomplete_details: incomplete ? { reason: 'max_output_tokens' } : null,
    });
    const headers = { 'x-request-id': rec.upstreamId, 'openai-processing-ms': '9' };

    if (!body.stream) {
      if (plan.slow && !(await w.holdSlow(rec))) return undefined;
      return w.sendJson(rec, res, 200, headers, final, { everyChar, truncate: plan.truncateAfter !== null });
    }

    let sn = 0;
    const events = [];
    const ev = (type, fields) => events.push(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sn++, ...fields })}\n\n`);
    ev('response.created', { response: response('in_progress', []) });
    ev('response.in_progress', { response: response('in_progress', []) });
    let index = 0;
    if (reasoningItem) {
      const at = { item_id: rsId, output_index: index };
      const summary = reasoningItem.summary[0].text;
      ev('response.output_item.added', { output_index: index, item: { ...reasoningItem, summary: [] } });
      ev('response.reasoning_summary_part.added', { ...at, summary_index: 0, part: { type: 'summary_text', text: '' } });
      for (const p of plan.reasoning) ev('response.reasoning_summary_text.delta', { ...at, summary_index: 0, delta: p, obfuscation: 'mock' });
      ev('response.reasoning_summary_text.done', { ...at, summary_index: 0, text: summary });
      ev('response.reasoning_summary_part.done', { ...at, summary_index: 0, part: { type: 'summary_text', text: summary } });
      ev('response.output_item.done', { output_index: index, item: reasoningItem });
      index++;
    }
    let textPieces = plan.text;
    let cutAfterText = null; // 'destroy' | 'error'
    if (plan.truncateAfter !== null) { textPieces = textPieces.slice(0, plan.truncateAfter); cutAfterText = 'destroy'; }
    if (plan.midstreamErrorAfter !== null) { textPieces = textPieces.slice(0, plan.midstreamErrorAfter); cutAfterText = 'error'; }
    if (messageItem) {
      const at = { item_id: msgId, output_index: index, content_index: 0 };
      ev('response.output_item.added', { output_index: index, item: { ...messageItem, status: 'in_progress', content: [] } });
      ev('response.content_part.added', { ...at, part: { type: 'output_text', annotations: [], logprobs: [], text: '' } });
      for (const p of textPieces) ev('response.output_text.delta', { ...at, delta: p, logprobs: [], obfuscation: 'mock' });
      if (cutAfterText === 'destroy') return w.sendEvents(rec, res, headers, events, { end: 'destroy', everyChar });
      if (cutAfterText === 'error') {
        const e = ERRORS[500];
        ev('error', { code: 'server_error', message: e.message, param: null });
        ev('response.failed', { response: response('failed', [], { error: { code: 'server_error', message: e.message } }) });
        return w.sendEvents(rec, res, headers, events, { everyChar });
      }
      const text = plan.text.join('');
      ev('response.output_text.done', { ...at, text, logprobs: [] });
      ev('response.content_part.done', { ...at, part: messageItem.content[0] });
      ev('response.output_item.done', { output_index: index, item: messageItem });
      index++;
    }
    for (const item of callItems) {
      const c = plan.toolCalls[callItems.indexOf(item)];
      const at = { item_id: item.id, output_index: index };
      ev('response.output_item.added', { output_index: index, item: { ...item, status: 'in_progress', arguments: '' } });
      for (const f of c.fragments) ev('response.function_call_arguments.delta', { ...at, delta: f, obfuscation: 'mock' });
      ev('response.function_call_arguments.done', { ...at, name: item.name, arguments: item.arguments });
      ev('response.output_item.done', { output_index: index, item });
      index++;
    }
    // mock-no-finish: the stream ends without its final event.
    if (plan.finish !== null) ev(incomplete ? 'response.incomplete' : 'response.completed', { response: final });
    return w.sendEvents(rec, res, headers, events, { pieceDelayMs: plan.slow ? w.slowPieceMs : 0, everyChar });
  }

  async function route(rec, req, res) {
    const path = (req.url ?? '').split('?')[0];
    const kind = path === '/v1/chat/completions' ? 'chat' : path === '/v1/completions' ? 'completions'
      : path === '/v1/responses' ? 'responses' : null;
    if (req.method === 'GET' && path === '/v1/models') {
      return w.sendJson(rec, res, 200, { 'x-request-id': rec.upstreamId }, { object: 'list', data: [{ id: 'gpt-test-upstream', object: 'model', created: 1700000000, owned_by: 'mock' }] });
    }
    if (req.method !== 'POST' || !kind) {
      return w.sendJson(rec, res, 404, {}, {
        error: { message: `Invalid URL (${req.method} ${path})`, type: 'invalid_request_error', param: null, code: null },
      });
    }
    if (req.headers.authorization !== `Bearer ${apiKey}`) return sendError(rec, res, 401);
    try {
      rec.body = JSON.parse(rec.rawBody);
    } catch {
      return sendError(rec, res, 400);
    }
    if (rec.body === null || typeof rec.body !== 'object') return sendError(rec, res, 400);
    if (kind === 'responses') return handleResponses(rec, res);
    return handleCompletion(rec, res, kind);
  }

  const srv = await startRecordingServer({ host, port, log, idPrefix: 'req_mock', route });
  return {
    url: srv.url,
    baseURL: `${srv.url}/v1`,
    port: srv.port,
    apiKey,
    requests: srv.requests,
    last: srv.last,
    reset: srv.reset,
    close: srv.close,
  };
}

// Command line: run the mock by itself (for curl by hand).
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runFromCommandLine(startMockOpenAI, 'mock-openai', DEFAULT_API_KEY);
}
