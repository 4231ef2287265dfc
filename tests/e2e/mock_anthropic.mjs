// A mock Anthropic Messages API upstream for end-to-end tests. It answers the same magic model
// names as mock_openai.mjs (the scenario list and the token rules are there; planAnswer() decides,
// this file only renders), in Anthropic's own wire format:
//
//   Request   POST {base}/messages, base ending in /v1, the key in `x-api-key` (as the API reference
//             documents, https://docs.anthropic.com/en/api/overview) or `Authorization: Bearer <key>`
//             (what the official SDKs send since API version 2026-10-21; with both, x-api-key counts);
//             a wrong or missing key: 401 authentication_error. `anthropic-version` required (missing:
//             400); recorded as rec.anthropicVersion, rec.authVia says 'x-api-key' or 'bearer'. With
//             version 2026-10-21 or later, temperature / top_p / top_k are a 400 ("temperature: Extra
//             inputs are not permitted"), as that version removed them
//             (https://platform.claude.com/docs/en/api/versioning). `max_tokens`, `model` and
//             `messages` required (400 otherwise). Messages API reference:
//             https://docs.anthropic.com/en/api/messages ; ../../../shared/WIRE-FORMATS.md section 3.2.
//             POST {base}/messages/count_tokens answers {input_tokens} with the same count.
//   Response  a Message {id, type: "message", role, model, content: [blocks], stop_reason,
//             stop_sequence, usage}; stop_reason end_turn | max_tokens | stop_sequence | tool_use.
//   Streaming named SSE events (https://docs.anthropic.com/en/docs/build-with-claude/streaming):
//             message_start (a Message with empty content; usage with input and cache counts and
//             output_tokens 1), then per block content_block_start / content_block_delta /
//             content_block_stop (a `ping` after the first block start), message_delta (stop_reason,
//             stop_sequence, CUMULATIVE usage), message_stop. Deltas: text_delta, input_json_delta
//             (tool input in 5 fragments), thinking_delta then one signature_delta.
//   Errors    {"type": "error", "error": {"type", "message"}, "request_id"} with
//             400 invalid_request_error, 401 authentication_error, 429 rate_limit_error (Retry-After:
//             7), 500 api_error, 529 overloaded_error (https://docs.anthropic.com/en/api/errors); in a
//             stream, `event: error` with overloaded_error (mock-midstream-error, after 2 pieces).
//
// Scenario specifics here: mock-reasoning sends a thinking block (REASONING_PIECES as
// thinking_delta, then signature_delta REASONING_SIGNATURE) before the text block; mock-tool-no-args
// a tool_use block with input {} and no input_json_delta; mock-stop stop_reason "stop_sequence" with
// stop_sequence set; mock-length / mock-length-tool stop_reason "max_tokens" (the cut tool_use input
// is what the fragments sent so far hold: partialArgs()); mock-json records `output_config.format`
// (or the older `output_format`); mock-image records an `image` block (also inside a tool_result);
// mock-cache reports cache_read_input_tokens = floor(P / 2), cache_creation_input_tokens = floor(P / 4)
// and input_tokens = P - both (input_tokens EXCLUDES cache, as Anthropic counts); mock-no-terminator
// ends cleanly after message_delta without message_stop; mock-no-finish sends no message_delta.
//
// Usage: input_tokens = promptTokens(body) (all scenarios but mock-cache):
//   3 + (system present ? 3 + words(system text) : 0) + sum over messages of (3 + words(text)), where a
//   message's text is its string content, or its text blocks and tool_result contents joined by spaces
//   (tool_use, thinking and image blocks add no words). The same number OpenAI's promptTokens gives
//   for the same plain conversation with the system prompt as a first message.
// output_tokens = thinking pieces + text pieces + per tool_use (1 + argument fragments): answerFor().
//
// Records (mock.requests, fields as in mock_openai.mjs): reasoningReceived = {text, signatures} of the
// thinking blocks sent back in assistant turns; toolCallsReceived = tool_use blocks
// [{id, name, arguments: input, args: input}]; toolResultsReceived = tool_result blocks
// [{id: tool_use_id, name: null, text, isError}].
//
// Use from tests:   const mock = await startMockAnthropic(); new Anthropic({ baseURL: mock.url, ... })
//                   (the SDK appends /v1; a gateway configured with mock.baseURL appends /messages)
// Use by hand:      node mock_anthropic.mjs [--port N] [--api-key KEY]
import { pathToFileURL } from 'node:url';

import {
  REASONING_SIGNATURE, RETRY_AFTER_SECONDS, SLOW_PIECE_MS, planAnswer, runFromCommandLine, scenarioOf,
  slicedWriter, startRecordingServer, words,
} from './mock_openai.mjs';

export const DEFAULT_API_KEY = 'sk-ant-mock-upstream-key';
export const ANTHROPIC_VERSION = '2023-06-01';

function blockText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => {
    if (b?.type === 'text' && typeof b.text === 'string') return b.text;
    if (b?.type === 'tool_result') return blockText(b.content);
    return '';
  }).filter(Boolean).join(' ');
}

/** Total prompt tokens of a Messages request (cache included; see the header comment). */
export function promptTokens(body) {
  let n = 3;
  if (body.system !== undefined && body.system !== null && body.system !== '') n += 3 + words(blockText(body.system));
  for (const m of Array.isArray(body.messages) ? body.messages : []) n += 3 + words(blockText(m?.content));
  return n;
}

function hasImage(content) {
  if (!Array.isArray(content)) return false;
  return content.some((b) => b?.type === 'image' || (b?.type === 'tool_result' && hasImage(b.content)));
}

/** What a Messages request says, for planAnswer() and the request record. */
export function readAnthropicRequest(body) {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const last = messages.at(-1);
  const lastResults = last?.role === 'user' && Array.isArray(last.content)
    ? last.content.filter((b) => b?.type === 'tool_result') : [];
  let reasoningText = '';
  let sawReasoning = false;
  const signatures = [];
  const toolCallsReceived = [];
  const toolResultsReceived = [];
  let imageReceived = false;
  for (const m of messages) {
    if (hasImage(m?.content)) imageReceived = true;
    if (!Array.isArray(m?.content)) continue;
    for (const b of m.content) {
      if (m.role === 'assistant' && b?.type === 'thinking') {
        reasoningText += b.thinking ?? '';
        sawReasoning = true;
        if (typeof b.signature === 'string') signatures.push(b.signature);
      }
      if (m.role === 'assistant' && b?.type === 'redacted_thinking') { sawReasoning = true; signatures.push(b.data); }
      if (m.role === 'assistant' && b?.type === 'tool_use') toolCallsReceived.push({ id: b.id ?? null, name: b.name ?? null, arguments: b.input, args: b.input });
      if (b?.type === 'tool_result') toolResultsReceived.push({ id: b.tool_use_id ?? null, name: null, text: blockText(b.content), isError: b.is_error === true });
    }
  }
  return {
    scenario: scenarioOf(body.model),
    maxTokens: body.max_tokens ?? null,
    stop: Array.isArray(body.stop_sequences) ? body.stop_sequences : [],
    toolNames: Array.isArray(body.tools) ? body.tools.map((t) => t?.name).filter((n) => typeof n === 'string') : [],
    toolResults: lastResults.map((b) => blockText(b.content)),
    imageReceived,
    jsonRequested: !!(body.output_config?.format || body.output_format),
    reasoningReceived: sawReasoning ? { text: reasoningText, signatures } : null,
    toolCallsReceived,
    toolResultsReceived,
  };
}

const STOP_REASON = { stop: 'end_turn', stop_sequence: 'stop_sequence', length: 'max_tokens', tool_calls: 'tool_use' };

function usageObject(prompt, plan) {
  const read = plan.cacheRead ? Math.floor(prompt / 2) : 0;
  const creation = plan.cacheRead ? Math.floor(prompt / 4) : 0;
  return {
    input_tokens: prompt - read - creation,
    cache_creation_input_tokens: creation,
    cache_read_input_tokens: read,
    cache_creation: { ephemeral_5m_input_tokens: creation, ephemeral_1h_input_tokens: 0 },
    output_tokens: plan.outputTokens + plan.reasoningTokens,
    service_tier: 'standard',
  };
}

/**
 * What the mock answers to a Messages request body: { plan, text, thinking, toolUses: [{name,
 * input}], stopReason, stopSequence, usage } (usage exactly as the non-streamed Message carries it;
 * the stream's message_delta.usage holds the same input/cache/output numbers).
 */
export function answerFor(body) {
  const plan = planAnswer(readAnthropicRequest(body));
  return {
    plan,
    text: plan.text.join(''),
    thinking: plan.reasoning.join(''),
    toolUses: plan.toolCalls.map((c) => ({ name: c.name, input: c.args })),
    stopReason: plan.finish === null ? null : STOP_REASON[plan.finish],
    stopSequence: plan.stopSequence,
    usage: usageObject(promptTokens(body), plan),
  };
}

const ERRORS = {
  400: { type: 'invalid_request_error', message: 'messages: at least one message is required' },
  401: { type: 'authentication_error', message: 'invalid x-api-key' },
  404: { type: 'not_found_error', message: 'Not found' },
  429: { type: 'rate_limit_error', message: 'This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.' },
  500: { type: 'api_error', message: 'Internal server error' },
  529: { type: 'overloaded_error', message: 'Overloaded' },
};
/** The Anthropic error body the mock sends for a status (400, 401, 404, 429, 500, 529). */
export function anthropicErrorBody(status, requestId = 'req_mock', message = undefined) {
  const e = ERRORS[status] ?? ERRORS[500];
  return { type: 'error', error: { type: e.type, message: message ?? e.message }, request_id: requestId };
}

export async function startMockAnthropic({
  host = '127.0.0.1', port = 0, apiKey = DEFAULT_API_KEY, writeDelayMs = 2, slowPieceMs = SLOW_PIECE_MS, log = null,
} = {}) {
  const w = slicedWriter(writeDelayMs, slowPieceMs);
  let seq = 0;

  function sendError(rec, res, status, { message, headers = {} } = {}) {
    return w.sendJson(rec, res, status, { 'request-id': rec.upstreamId, ...headers }, anthropicErrorBody(status, rec.upstreamId, message));
  }

  async function handleMessages(rec, res) {
    const body = rec.body;
    const view = readAnthropicRequest(body);
    Object.assign(rec, {
      scenario: view.scenario, stream: body.stream === true, jsonRequested: view.jsonRequested,
      imageReceived: view.imageReceived, reasoningReceived: view.reasoningReceived,
      toolCallsReceived: view.toolCallsReceived, toolResultsReceived: view.toolResultsReceived,
    });
    const { plan, usage, stopReason } = answerFor(body);
    if (plan.error) {
      const headers = plan.error === 429
        ? { 'retry-after': String(RETRY_AFTER_SECONDS), 'anthropic-ratelimit-requests-limit': '50', 'anthropic-ratelimit-requests-remaining': '0' }
        : {};
      return sendError(rec, res, plan.error, { headers });
    }
    const everyChar = plan.scenario === 'mock-cjk';
    const n = ++seq;
    const id = `msg_mock${n}`;
    const model = String(body.model);
    const toolIds = plan.toolCalls.map((_, i) => `toolu_mock${n}_${i}`);

    if (!body.stream) {
      if (plan.slow && !(await w.holdSlow(rec))) return undefined;
      const content = [];
      if (plan.reasoning.length) content.push({ type: 'thinking', thinking: plan.reasoning.join(''), signature: REASONING_SIGNATURE });
      if (plan.toolCalls.length) {
        plan.toolCalls.forEach((c, i) => content.push({ type: 'tool_use', id: toolIds[i], name: c.name, input: c.args }));
      } else {
        content.push({ type: 'text', text: plan.text.join('') });
      }
      return w.sendJson(rec, res, 200, { 'request-id': rec.upstreamId }, {
        id, type: 'message', role: 'assistant', model, content,
        stop_reason: stopReason, stop_sequence: plan.stopSequence, usage,
      }, { everyChar, truncate: plan.truncateAfter !== null });
    }

    const events = [];
    const ev = (type, data) => events.push([type, { type, ...data }]);
    ev('message_start', {
      message: {
        id, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null,
        usage: { ...usage, output_tokens: 1 },
      },
    });
    let index = 0;
    let pinged = false;
    const open = (block) => {
      ev('content_block_start', { index, content_block: block });
      if (!pinged) { ev('ping', {}); pinged = true; }
    };
    const close = () => { ev('content_block_stop', { index }); index += 1; };
    if (plan.reasoning.length) {
      open({ type: 'thinking', thinking: '', signature: '' });
      for (const p of plan.reasoning) ev('content_block_delta', { index, delta: { type: 'thinking_delta', thinking: p } });
      ev('content_block_delta', { index, delta: { type: 'signature_delta', signature: REASONING_SIGNATURE } });
      close();
    }
    let cut = null; // 'destroy' | 'error' once the scenario stops the stream early
    if (plan.toolCalls.length) {
      plan.toolCalls.forEach((c, i) => {
        open({ type: 'tool_use', id: toolIds[i], name: c.name, input: {} });
        for (const f of c.fragments) ev('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: f } });
        close();
      });
    } else {
      open({ type: 'text', text: '' });
      let pieces = plan.text;
      if (plan.truncateAfter !== null) { pieces = pieces.slice(0, plan.truncateAfter); cut = 'destroy'; }
      if (plan.midstreamErrorAfter !== null) { pieces = pieces.slice(0, plan.midstreamErrorAfter); cut = 'error'; }
      for (const p of pieces) ev('content_block_delta', { index, delta: { type: 'text_delta', text: p } });
      if (!cut) close();
    }
    if (cut === 'error') {
      events.push(['error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' }, request_id: rec.upstreamId }]);
    }
    if (!cut) {
      if (plan.finish !== null) {
        ev('message_delta', {
          delta: { stop_reason: stopReason, stop_sequence: plan.stopSequence },
          usage: {
            input_tokens: usage.input_tokens, cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens, output_tokens: usage.output_tokens,
          },
        });
      }
      if (plan.terminator) ev('message_stop', {});
    }
    const texts = events.map(([type, data]) => `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    return w.sendEvents(rec, res, { 'request-id': rec.upstreamId }, texts, {
      pieceDelayMs: plan.slow ? w.slowPieceMs : 0, end: cut === 'destroy' ? 'destroy' : 'end', everyChar,
    });
  }

  async function route(rec, req, res) {
    const path = (req.url ?? '').split('?')[0];
    const known = path === '/v1/messages' || path === '/v1/messages/count_tokens';
    if (req.method !== 'POST' || !known) return sendError(rec, res, 404);
    // The key: x-api-key (what the API reference documents), else `Authorization: Bearer` (what
    // the official SDKs send since API version 2026-10-21); with both, x-api-key counts, as upstream.
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    rec.authVia = req.headers['x-api-key'] !== undefined ? 'x-api-key' : bearer !== undefined ? 'bearer' : null;
    const key = req.headers['x-api-key'] ?? bearer;
    if (key !== apiKey) return sendError(rec, res, 401);
    rec.anthropicVersion = req.headers['anthropic-version'] ?? null;
    if (!rec.anthropicVersion) return sendError(rec, res, 400, { message: 'anthropic-version: header is required' });
    try {
      rec.body = JSON.parse(rec.rawBody);
    } catch {
      return sendError(rec, res, 400, { message: 'There was an issue with the format of your request: invalid JSON body' });
    }
    const b = rec.body;
    if (b === null || typeof b !== 'object' || Array.isArray(b)) return sendError(rec, res, 400, { message: 'The request body must be a JSON object' });
    if (typeof b.model !== 'string') return sendError(rec, res, 400, { message: 'model: Field required' });
    if (!Array.isArray(b.messages)) return sendError(rec, res, 400, { message: 'messages: Field required' });
    if (path === '/v1/messages/count_tokens') {
      rec.scenario = scenarioOf(b.model);
      return w.sendJson(rec, res, 200, { 'request-id': rec.upstreamId }, { input_tokens: promptTokens(b) });
    }
    if (!Number.isInteger(b.max_tokens)) return sendError(rec, res, 400, { message: 'max_tokens: Field required' });
    if (rec.anthropicVersion >= '2026-10-21') {
      // API version 2026-10-21 removed the sampling parameters: sending one is a 400.
      const removed = ['temperature', 'top_p', 'top_k'].find((f) => f in b);
      if (removed) return sendError(rec, res, 400, { message: `${removed}: Extra inputs are not permitted` });
    }
    return handleMessages(rec, res);
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
  await runFromCommandLine(startMockAnthropic, 'mock-anthropic', DEFAULT_API_KEY);
}
