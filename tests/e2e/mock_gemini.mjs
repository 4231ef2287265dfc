// A mock Gemini API (Google AI, v1beta) upstream for end-to-end tests. It answers the same magic
// model names as mock_openai.mjs (the scenario list and the token rules are there; planAnswer()
// decides, this file only renders), taken from the path's {model}, in Gemini's own wire format:
//
//   Request   POST {base}/models/{model}:generateContent and
//             {base}/models/{model}:streamGenerateContent?alt=sse, base ending in /v1beta
//             (https://ai.google.dev/api/generate-content ; ../../../shared/WIRE-FORMATS.md 3.3);
//             also :countTokens ({totalTokens}). The key travels in `x-goog-api-key`
//             (https://ai.google.dev/gemini-api/docs/api-key); a `key=` in the URL query is refused
//             with 400 (the gateway must never put it there, it ends up in logs).
//             Missing key: 403 PERMISSION_DENIED; wrong key: 400 INVALID_ARGUMENT with ErrorInfo
//             reason API_KEY_INVALID, which is what Google answers for a bad key.
//   Response  GenerateContentResponse {candidates: [{content: {role: "model", parts}, finishReason,
//             index}], usageMetadata, modelVersion, responseId}; finishReason STOP | MAX_TOKENS.
//   Streaming (alt=sse) each event a whole GenerateContentResponse chunk, framed `data: {...}\r\n\r\n`
//             (Google frames its SSE with CRLF); no terminator ever: the stream ends after the chunk
//             with finishReason, which also carries the only usageMetadata. Without alt=sse the
//             chunks come as one JSON array, as the REST endpoint does.
//   Errors    {"error": {"code", "message", "status", "details"?}}
//             (https://ai.google.dev/gemini-api/docs/troubleshooting): 400 INVALID_ARGUMENT,
//             401 UNAUTHENTICATED, 429 RESOURCE_EXHAUSTED (RetryInfo retryDelay "7s" and
//             Retry-After: 7), 500 INTERNAL, mock-error-529 -> 503 UNAVAILABLE ("The model is
//             overloaded"); in a stream an error object chunk (mock-midstream-error: 503, after 2 pieces).
//
// Scenario specifics here: function calls come whole (Gemini has no argument fragments): one
// functionCall part {name, args} per chunk, mock-parallel-tools sends its two calls in two chunks,
// and the first functionCall part of an answer carries thoughtSignature FUNCTION_CALL_SIGNATURE as
// Gemini 3 does; mock-tool-no-args a functionCall without args; mock-length-tool a functionCall with
// the args the cut fragments held (partialArgs()) and MAX_TOKENS. A tool result is a functionResponse
// part; its text is response's only string value when it has exactly one key, else its JSON.
// mock-reasoning streams `thought: true` text parts (REASONING_PIECES), then text whose first part
// carries thoughtSignature REASONING_SIGNATURE, with thoughtsTokenCount in usage. mock-json records
// generationConfig.responseMimeType "application/json" (or a response schema); mock-image records an
// inlineData image or a fileData part; mock-stop honours generationConfig.stopSequences[0] (STOP);
// mock-no-terminator is the normal stream; mock-no-finish sends no finishReason at all, then ends
// cleanly; mock-cache reports cachedContentTokenCount = floor(P / 2) (included in promptTokenCount).
//
// Usage: promptTokenCount = promptTokens(body) = 3 + (systemInstruction ? 3 + words(its text) : 0) +
//   sum over contents of (3 + words(text)), where a content's text is its non-thought text parts and
//   its functionResponse texts joined by spaces. candidatesTokenCount = text pieces + per function
//   call (1 + its argument fragments, 5 for the fixed args), thoughtsTokenCount = thought pieces
//   (NOT in candidatesTokenCount), totalTokenCount = prompt + candidates + thoughts: answerFor().
//
// Records (mock.requests, fields as in mock_openai.mjs, plus `model` from the path and `query`):
// reasoningReceived = {text of thought parts, signatures: every thoughtSignature} sent back in
// model turns; toolCallsReceived = functionCall parts [{id, name, arguments: args, args}];
// toolResultsReceived = functionResponse parts [{id, name, text, response}].
//
// Use from tests:   const mock = await startMockGemini();
//                   new GoogleGenAI({ apiKey: mock.apiKey, httpOptions: { baseUrl: mock.url } })
//                   (the SDK appends /v1beta; a gateway configured with mock.baseURL appends /models/...)
// Use by hand:      node mock_gemini.mjs [--port N] [--api-key KEY]
import { pathToFileURL } from 'node:url';

import {
  FUNCTION_CALL_SIGNATURE, REASONING_SIGNATURE, RETRY_AFTER_SECONDS, SLOW_PIECE_MS, planAnswer,
  runFromCommandLine, scenarioOf, slicedWriter, startRecordingServer, words,
} from './mock_openai.mjs';

export const DEFAULT_API_KEY = 'AIzaMockUpstreamKey0123456789abcdefghij';

/** The text a functionResponse stands for (see the header comment). */
export function functionResponseText(fr) {
  const r = fr?.response;
  if (typeof r === 'string') return r;
  if (r && typeof r === 'object') {
    const keys = Object.keys(r);
    if (keys.length === 1 && typeof r[keys[0]] === 'string') return r[keys[0]];
  }
  return JSON.stringify(r ?? {});
}

function partsText(parts) {
  if (!Array.isArray(parts)) return '';
  return parts.map((p) => {
    if (p?.thought === true) return '';
    if (typeof p?.text === 'string') return p.text;
    if (p?.functionResponse) return functionResponseText(p.functionResponse);
    return '';
  }).filter(Boolean).join(' ');
}

function systemText(si) {
  if (typeof si === 'string') return si;
  return partsText(si?.parts);
}

/** promptTokenCount the mock reports for a request body (see the header comment). */
export function promptTokens(body) {
  let n = 3;
  if (body.systemInstruction) n += 3 + words(systemText(body.systemInstruction));
  for (const c of Array.isArray(body.contents) ? body.contents : []) n += 3 + words(partsText(c?.parts));
  return n;
}

/** What a generateContent request (with the model from its path) says, for planAnswer() and the record. */
export function readGeminiRequest(body, model) {
  const contents = Array.isArray(body.contents) ? body.contents : [];
  const gc = body.generationConfig ?? {};
  const lastParts = Array.isArray(contents.at(-1)?.parts) ? contents.at(-1).parts : [];
  let reasoningText = '';
  let sawReasoning = false;
  const signatures = [];
  const toolCallsReceived = [];
  const toolResultsReceived = [];
  let imageReceived = false;
  for (const c of contents) {
    for (const p of Array.isArray(c?.parts) ? c.parts : []) {
      if ((p?.inlineData && String(p.inlineData.mimeType ?? '').startsWith('image/')) || p?.fileData) imageReceived = true;
      if (c.role === 'model') {
        if (p?.thought === true) { reasoningText += p.text ?? ''; sawReasoning = true; }
        if (typeof p?.thoughtSignature === 'string') { signatures.push(p.thoughtSignature); sawReasoning = true; }
        if (p?.functionCall) toolCallsReceived.push({ id: p.functionCall.id ?? null, name: p.functionCall.name ?? null, arguments: p.functionCall.args, args: p.functionCall.args ?? {} });
      }
      if (p?.functionResponse) {
        toolResultsReceived.push({ id: p.functionResponse.id ?? null, name: p.functionResponse.name ?? null, text: functionResponseText(p.functionResponse), response: p.functionResponse.response });
      }
    }
  }
  const tools = Array.isArray(body.tools) ? body.tools : [];
  return {
    scenario: scenarioOf(model),
    maxTokens: gc.maxOutputTokens ?? null,
    stop: Array.isArray(gc.stopSequences) ? gc.stopSequences : [],
    toolNames: tools.flatMap((t) => t?.functionDeclarations ?? t?.function_declarations ?? [])
      .map((d) => d?.name).filter((n) => typeof n === 'string'),
    toolResults: lastParts.filter((p) => p?.functionResponse).map((p) => functionResponseText(p.functionResponse)),
    imageReceived,
    jsonRequested: gc.responseMimeType === 'application/json' || !!(gc.responseSchema || gc.responseJsonSchema || gc.response_json_schema),
    reasoningReceived: sawReasoning ? { text: reasoningText, signatures } : null,
    toolCallsReceived,
    toolResultsReceived,
  };
}

const FINISH = { stop: 'STOP', stop_sequence: 'STOP', length: 'MAX_TOKENS', tool_calls: 'STOP' };

function usageObject(prompt, plan) {
  const u = { promptTokenCount: prompt };
  if (plan.outputTokens > 0) u.candidatesTokenCount = plan.outputTokens;
  u.totalTokenCount = prompt + plan.outputTokens + plan.reasoningTokens;
  if (plan.cacheRead) u.cachedContentTokenCount = Math.floor(prompt / 2);
  u.promptTokensDetails = [{ modality: 'TEXT', tokenCount: prompt }];
  if (plan.cacheRead) u.cacheTokensDetails = [{ modality: 'TEXT', tokenCount: Math.floor(prompt / 2) }];
  if (plan.reasoningTokens > 0) u.thoughtsTokenCount = plan.reasoningTokens;
  return u;
}

/**
 * What the mock answers to a generateContent body for `model`: { plan, text, thoughts,
 * functionCalls: [{name, args}], finishReason (undefined: none), usageMetadata } (usage exactly as
 * the mock sends it, in the non-streamed answer and in the stream's last chunk).
 */
export function answerFor(body, model) {
  const plan = planAnswer(readGeminiRequest(body, model));
  return {
    plan,
    text: plan.text.join(''),
    thoughts: plan.reasoning.join(''),
    functionCalls: plan.toolCalls.map((c) => (c.noArgs ? { name: c.name } : { name: c.name, args: c.args })),
    finishReason: plan.finish === null ? undefined : FINISH[plan.finish],
    usageMetadata: usageObject(promptTokens(body), plan),
  };
}

const ERRORS = {
  400: { status: 'INVALID_ARGUMENT', message: 'Request contains an invalid argument.' },
  401: { status: 'UNAUTHENTICATED', message: 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.' },
  403: { status: 'PERMISSION_DENIED', message: 'Method doesn\'t allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.' },
  404: { status: 'NOT_FOUND', message: 'Requested entity was not found.' },
  429: { status: 'RESOURCE_EXHAUSTED', message: 'You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. Please retry in 7s.' },
  500: { status: 'INTERNAL', message: 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting' },
  503: { status: 'UNAVAILABLE', message: 'The model is overloaded. Please try again later.' },
};
/** mock-error-N answers this status (529 is Anthropic's; Google says "overloaded" with 503). */
const ERROR_STATUS = { 400: 400, 401: 401, 429: 429, 500: 500, 529: 503 };

/** The Gemini error body the mock sends for a status (400, 401, 403, 404, 429, 500, 503). */
export function geminiErrorBody(status, { message, details } = {}) {
  const e = ERRORS[status] ?? ERRORS[500];
  const error = { code: status, message: message ?? e.message, status: e.status };
  if (details) error.details = details;
  else if (status === 429) {
    error.details = [
      {
        '@type': 'type.googleapis.com/google.rpc.QuotaFailure',
        violations: [{ quotaMetric: 'generativelanguage.googleapis.com/generate_content_free_tier_requests', quotaId: 'GenerateRequestsPerMinutePerProjectPerModel-FreeTier', quotaValue: '10' }],
      },
      { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${RETRY_AFTER_SECONDS}s` },
    ];
  }
  return { error };
}

const API_KEY_INVALID = [
  { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com', metadata: { service: 'generativelanguage.googleapis.com' } },
];

export async function startMockGemini({
  host = '127.0.0.1', port = 0, apiKey = DEFAULT_API_KEY, writeDelayMs = 2, slowPieceMs = SLOW_PIECE_MS, log = null,
} = {}) {
  const w = slicedWriter(writeDelayMs, slowPieceMs);
  let seq = 0;

  function sendError(rec, res, status, opts = {}) {
    const headers = status === 429 ? { 'retry-after': String(RETRY_AFTER_SECONDS) } : {};
    return w.sendJson(rec, res, status, { 'x-request-id': rec.upstreamId, ...headers }, geminiErrorBody(status, opts));
  }

  async function handleGenerate(rec, res, model, method, query) {
    const body = rec.body;
    const sse = method === 'streamGenerateContent' && query.get('alt') === 'sse';
    const view = readGeminiRequest(body, model);
    Object.assign(rec, {
      scenario: view.scenario, stream: method === 'streamGenerateContent', jsonRequested: view.jsonRequested,
      imageReceived: view.imageReceived, reasoningReceived: view.reasoningReceived,
      toolCallsReceived: view.toolCallsReceived, toolResultsReceived: view.toolResultsReceived,
    });
    const { plan, usageMetadata, finishReason } = answerFor(body, model);
    if (plan.error) return sendError(rec, res, ERROR_STATUS[plan.error] ?? 500);
    const everyChar = plan.scenario === 'mock-cjk';
    const n = ++seq;
    const responseId = `mockResp${n}`;
    const callPart = (c, i) => {
      const part = { functionCall: c.noArgs ? { name: c.name } : { name: c.name, args: c.args } };
      if (i === 0) part.thoughtSignature = FUNCTION_CALL_SIGNATURE;
      return part;
    };
    const response = (parts, { last = false } = {}) => {
      const cand = { content: { parts, role: 'model' } };
      if (last && finishReason) cand.finishReason = finishReason;
      cand.index = 0;
      const r = { candidates: [cand] };
      if (last) r.usageMetadata = usageMetadata;
      r.modelVersion = model;
      r.responseId = responseId;
      return r;
    };

    if (method === 'generateContent') {
      if (plan.slow && !(await w.holdSlow(rec))) return undefined;
      const parts = [];
      if (plan.reasoning.length) parts.push({ text: plan.reasoning.join(''), thought: true });
      if (plan.toolCalls.length) plan.toolCalls.forEach((c, i) => parts.push(callPart(c, i)));
      else {
        const t = { text: plan.text.join('') };
        if (plan.reasoning.length) t.thoughtSignature = REASONING_SIGNATURE;
        parts.push(t);
      }
      return w.sendJson(rec, res, 200, { 'x-request-id': rec.upstreamId }, response(parts, { last: true }), {
        everyChar, truncate: plan.truncateAfter !== null,
      });
    }

    // Streamed: one chunk per thought piece, text piece or function call.
    const chunks = [];
    for (const p of plan.reasoning) chunks.push([{ text: p, thought: true }]);
    let end = 'end';
    let errorChunk = null;
    if (plan.toolCalls.length) {
      plan.toolCalls.forEach((c, i) => chunks.push([callPart(c, i)]));
    } else {
      let pieces = plan.text;
      if (plan.truncateAfter !== null) { pieces = pieces.slice(0, plan.truncateAfter); end = 'destroy'; }
      if (plan.midstreamErrorAfter !== null) { pieces = pieces.slice(0, plan.midstreamErrorAfter); errorChunk = geminiErrorBody(503); }
      pieces.forEach((p, i) => {
        const part = { text: p };
        if (i === 0 && plan.reasoning.length) part.thoughtSignature = REASONING_SIGNATURE;
        chunks.push([part]);
      });
      if (plan.text.length === 0) chunks.push([{ text: '' }]);
    }
    const complete = end === 'end' && !errorChunk;
    const objs = chunks.map((parts, i) => response(parts, { last: complete && i === chunks.length - 1 }));
    if (errorChunk) objs.push(errorChunk);
    const headers = { 'x-request-id': rec.upstreamId };
    const pieceDelayMs = plan.slow ? w.slowPieceMs : 0;
    if (sse) {
      const texts = objs.map((o) => `data: ${JSON.stringify(o)}\r\n\r\n`);
      return w.sendEvents(rec, res, headers, texts, { pieceDelayMs, end, everyChar });
    }
    // Without alt=sse: a JSON array, elements separated by ",\r\n".
    const texts = objs.map((o, i) => `${i === 0 ? '[' : ',\r\n'}${JSON.stringify(o)}`);
    if (end === 'end') texts.push(']');
    res.writeHead(200, { 'content-type': 'application/json; charset=UTF-8', ...headers });
    rec.status = 200;
    return w.sendEvents(rec, res, headers, texts, { pieceDelayMs, end, everyChar });
  }

  async function route(rec, req, res) {
    const url = new URL(req.url ?? '/', 'http://mock');
    const m = /^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent|countTokens)$/.exec(url.pathname);
    rec.query = Object.fromEntries(url.searchParams);
    if (url.searchParams.has('key')) {
      return sendError(rec, res, 400, { message: 'mock: the API key must travel in the x-goog-api-key header, never in the URL (?key=)' });
    }
    if (req.method !== 'POST' || !m) {
      return sendError(rec, res, 404, { message: `The requested URL ${url.pathname} was not found on this server.` });
    }
    const model = decodeURIComponent(m[1]);
    rec.model = model;
    const key = req.headers['x-goog-api-key'];
    if (!key) return sendError(rec, res, 403);
    if (key !== apiKey) return sendError(rec, res, 400, { message: 'API key not valid. Please pass a valid API key.', details: API_KEY_INVALID });
    try {
      rec.body = JSON.parse(rec.rawBody);
    } catch {
      return sendError(rec, res, 400, { message: `Invalid JSON payload received. Unexpected token.\n${rec.rawBody.slice(0, 40)}` });
    }
    const b = rec.body;
    if (b === null || typeof b !== 'object' || Array.isArray(b)) return sendError(rec, res, 400, { message: 'Invalid JSON payload received. Expected an object.' });
    if (m[2] === 'countTokens') {
      rec.scenario = scenarioOf(model);
      const inner = b.generateContentRequest ?? b;
      return w.sendJson(rec, res, 200, { 'x-request-id': rec.upstreamId }, {
        totalTokens: promptTokens(inner), promptTokensDetails: [{ modality: 'TEXT', tokenCount: promptTokens(inner) }],
      });
    }
    if (!Array.isArray(b.contents) || b.contents.length === 0) {
      return sendError(rec, res, 400, { message: '* GenerateContentRequest.contents: contents is not specified\n' });
    }
    return handleGenerate(rec, res, model, m[2], url.searchParams);
  }

  const srv = await startRecordingServer({ host, port, log, idPrefix: 'req_mock', route });
  return {
    url: srv.url,
    baseURL: `${srv.url}/v1beta`,
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
  await runFromCommandLine(startMockGemini, 'mock-gemini', DEFAULT_API_KEY);
}
