// One chat-completions call through the gateway, classified strictly by what its client saw, for the
// fault tests (test/chaos.test.mjs, test/pg_restart.test.mjs) and the soak bench (bench/soak/load.mjs).
//
// callChat(spec) never throws; it resolves an outcome:
//   { kind, status, requestId, stream, text, finish, usage, error, problems, ms, chunks }
// kind:
//   'complete'      non-streamed: 200 with a chat.completion (choices[0].message.content, finish_reason,
//                   usage); streamed: chunks, a finish_reason, the usage chunk when it was asked for,
//                   then `data: [DONE]` as the very last event (raw fetch; the SDK ends its loop)
//   'error'         a non-2xx answer whose body is the caller's error shape ({"error": {message,
//                   type, code, param}}; code an integer HTTP status under /api/v1, else a string
//                   or null), with x-request-id when the call got one
//   'stream-error'  a 200 stream that ended with an error event (`data: {"error": {...}}`) as its
//                   last event and no [DONE] anywhere: a failure after the first byte
//   'bad'           anything else: a connection the gateway reset or closed early, invalid JSON, a
//                   success terminator after an error, a stream without [DONE] or finish_reason, a
//                   missing usage chunk, chunk ids that differ from x-request-id ... (`problems` says)
// spec: { baseUrl (http://host:port), key, model, messages, stream, includeUsage, maxTokens,
//         via: 'fetch' | 'sdk', apiPrefix: '/v1' | '/api/v1' (fetch only), OpenAI (the SDK class,
//         for via 'sdk'), timeoutMs, abortAfterMs (fetch only: the client leaves after that long;
//         kind 'aborted' then) }
function errorShapeProblems(body, flavor, status) {
  const p = [];
  if (!body || typeof body !== 'object' || !body.error || typeof body.error !== 'object') return [`error body is not {"error": {...}}: ${JSON.stringify(body)?.slice(0, 200)}`];
  const e = body.error;
  for (const k of ['message', 'type', 'code', 'param']) if (!(k in e)) p.push(`error.${k} missing`);
  if (typeof e.message !== 'string' || !e.message) p.push('error.message is not a non-empty string');
  if (typeof e.type !== 'string') p.push('error.type is not a string');
  if (!(e.param === null || typeof e.param === 'string')) p.push('error.param is not a string or null');
  if (flavor === 'openrouter' && status !== null && e.code !== status) p.push(`error.code ${JSON.stringify(e.code)} is not the status ${status}`);
  if (flavor === 'openai' && !(e.code === null || typeof e.code === 'string')) p.push(`error.code ${JSON.stringify(e.code)} is not a string or null`);
  return p;
}

/** Strict SSE reading of a whole chat-completions stream body; fills `out` (kind, text, finish, usage, error). */
export function classifyStreamBody(raw, { includeUsage, requestId, flavor }, out) {
  const problems = out.problems;
  const body = raw.replaceAll('\r\n', '\n');
  if (!body.endsWith('\n\n')) problems.push(`the stream does not end with a blank line: ${JSON.stringify(body.slice(-60))}`);
  const payloads = [];
  for (const block of body.split('\n\n')) {
    const lines = block.split('\n').filter((l) => l && !l.startsWith(':'));
    if (lines.length === 0) continue;
    const data = [];
    for (const l of lines) {
      if (l.startsWith('data:')) data.push(l.slice(5).replace(/^ /, ''));
      else if (!l.startsWith('event:') && !l.startsWith('id:') && !l.startsWith('retry:')) problems.push(`unexpected SSE line ${JSON.stringify(l.slice(0, 80))}`);
    }
    if (data.length) payloads.push(data.join('\n'));
  }
  let text = '';
  let finish = null;
  let usage = null;
  let done = -1;
  let errorAt = -1;
  payloads.forEach((d, i) => {
    if (d === '[DONE]') {
      if (done < 0) done = i;
      else problems.push('[DONE] twice');
      return;
    }
    let obj;
    try {
      obj = JSON.parse(d);
    } catch {
      problems.push(`invalid JSON in event ${i}: ${d.slice(0, 80)}`);
      return;
    }
    if (obj && obj.error) {
      if (errorAt < 0) errorAt = i;
      out.error = obj;
      problems.push(...errorShapeProblems(obj, flavor === 'openrouter' ? null : flavor, null));
      return;
    }
    if (done >= 0) problems.push(`an event after [DONE]: ${d.slice(0, 80)}`);
    if (requestId && obj.id !== requestId) problems.push(`chunk id ${obj.id} is not x-request-id ${requestId}`);
    for (const c of obj.choices ?? []) {
      if (typeof c.delta?.content === 'string') text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (obj.usage) usage = obj.usage;
  });
  out.text = text;
  out.finish = finish;
  out.usage = usage;
  out.events = payloads.length;
  if (errorAt >= 0) {
    if (done >= 0) problems.push('a success terminator ([DONE]) in a stream that has an error event');
    if (errorAt !== payloads.length - 1) problems.push('the error event is not the last event');
    out.kind = 'stream-error';
  } else {
    if (done !== payloads.length - 1 || done < 0) problems.push('the stream does not end with data: [DONE]');
    if (!finish) problems.push('no finish_reason before [DONE]');
    if (includeUsage && !usage) problems.push('no usage chunk although stream_options.include_usage');
    out.kind = 'complete';
  }
  if (problems.length) out.kind = 'bad';
}

function requestBody(spec) {
  const b = { model: spec.model, messages: spec.messages };
  if (spec.maxTokens !== undefined && spec.maxTokens !== null) b.max_tokens = spec.maxTokens;
  if (spec.stream) {
    b.stream = true;
    if (spec.includeUsage) b.stream_options = { include_usage: true };
  }
  return b;
}

async function viaFetch(spec, out) {
  const prefix = spec.apiPrefix ?? '/v1';
  const flavor = prefix.startsWith('/api/') ? 'openrouter' : 'openai';
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error('client timeout')), spec.timeoutMs ?? 60000);
  let aborted = false;
  const abortTimer = spec.abortAfterMs ? setTimeout(() => { aborted = true; ctl.abort(new Error('client left')); }, spec.abortAfterMs) : null;
  try {
    const r = await fetch(`${spec.baseUrl}${prefix}/chat/completions`, {
      method: 'POST', signal: ctl.signal,
      headers: { authorization: `Bearer ${spec.key}`, 'content-type': 'application/json' },
      body: JSON.stringify(requestBody(spec)),
    });
    out.status = r.status;
    out.requestId = r.headers.get('x-request-id');
    out.retryAfter = r.headers.get('retry-after');
    const raw = await r.text();
    out.bytes = raw.length;
    if (r.status !== 200) {
      let body = null;
      try { body = JSON.parse(raw); } catch { out.problems.push(`non-JSON ${r.status} body: ${raw.slice(0, 120)}`); }
      if (body) out.problems.push(...errorShapeProblems(body, flavor, r.status));
      if (!(r.headers.get('content-type') ?? '').includes('application/json')) out.problems.push(`error content-type ${r.headers.get('content-type')}`);
      out.error = body;
      out.kind = out.problems.length ? 'bad' : 'error';
      return;
    }
    if (!out.requestId) out.problems.push('no x-request-id on a 200');
    if (spec.stream) {
      classifyStreamBody(raw, { includeUsage: spec.includeUsage, requestId: out.requestId, flavor }, out);
      return;
    }
    let body;
    try { body = JSON.parse(raw); } catch { out.problems.push(`a 200 whose body is not JSON: ${raw.slice(0, 120)}`); out.kind = 'bad'; return; }
    const c = body.choices?.[0];
    if (body.id !== out.requestId) out.problems.push(`id ${body.id} is not x-request-id ${out.requestId}`);
    if (typeof c?.message?.content !== 'string') out.problems.push('choices[0].message.content is not a string');
    if (!c?.finish_reason) out.problems.push('no finish_reason');
    if (!body.usage || !Number.isInteger(body.usage.prompt_tokens) || !Number.isInteger(body.usage.completion_tokens)) out.problems.push('no usage');
    out.text = c?.message?.content ?? '';
    out.finish = c?.finish_reason ?? null;
    out.usage = body.usage ?? null;
    out.kind = out.problems.length ? 'bad' : 'complete';
  } catch (e) {
    if (aborted) { out.kind = 'aborted'; return; }
    out.problems.push(`fetch failed: ${e.cause?.code ?? ''} ${e.message}`);
    out.kind = 'bad';
  } finally {
    clearTimeout(timer);
    if (abortTimer) clearTimeout(abortTimer);
  }
}

async function viaSdk(spec, out) {
  const { OpenAI } = spec;
  const client = new OpenAI({ apiKey: spec.key, baseURL: `${spec.baseUrl}/v1`, maxRetries: 0, timeout: spec.timeoutMs ?? 60000 });
  const params = requestBody(spec);
  try {
    if (!spec.stream) {
      const { data, response } = await client.chat.completions.create(params).withResponse();
      out.status = response.status;
      out.requestId = response.headers.get('x-request-id');
      const c = data.choices?.[0];
      if (data.id !== out.requestId) out.problems.push(`id ${data.id} is not x-request-id ${out.requestId}`);
      if (typeof c?.message?.content !== 'string') out.problems.push('choices[0].message.content is not a string');
      if (!c?.finish_reason) out.problems.push('no finish_reason');
      if (!data.usage) out.problems.push('no usage');
      out.text = c?.message?.content ?? '';
      out.finish = c?.finish_reason ?? null;
      out.usage = data.usage ?? null;
      out.kind = out.problems.length ? 'bad' : 'complete';
      return;
    }
    const { data: stream, response } = await client.chat.completions.create(params).withResponse();
    out.status = response.status;
    out.requestId = response.headers.get('x-request-id');
    let text = '';
    let finish = null;
    let usage = null;
    try {
      for await (const chunk of stream) {
        if (chunk.id !== out.requestId) out.problems.push(`chunk id ${chunk.id} is not x-request-id ${out.requestId}`);
        for (const c of chunk.choices ?? []) {
          if (typeof c.delta?.content === 'string') text += c.delta.content;
          if (c.finish_reason) finish = c.finish_reason;
        }
        if (chunk.usage) usage = chunk.usage;
      }
    } catch (e) {
      out.text = text;
      // The SDK throws an APIError without a status for a `data: {"error": ...}` event.
      if (e?.constructor?.name?.endsWith('Error') && e.status === undefined && e.error && typeof e.error.message === 'string') {
        out.error = { error: e.error };
        out.kind = out.problems.length ? 'bad' : 'stream-error';
        return;
      }
      out.problems.push(`stream failed: ${e?.constructor?.name} ${e?.message}`);
      out.kind = 'bad';
      return;
    }
    out.text = text;
    out.finish = finish;
    out.usage = usage;
    if (!finish) out.problems.push('the stream ended without finish_reason');
    if (spec.includeUsage && !usage) out.problems.push('no usage chunk although stream_options.include_usage');
    out.kind = out.problems.length ? 'bad' : 'complete';
  } catch (e) {
    if (typeof e?.status === 'number') {
      out.status = e.status;
      out.requestId = e.headers?.get?.('x-request-id') ?? null;
      out.retryAfter = e.headers?.get?.('retry-after') ?? null;
      out.error = { error: e.error };
      out.problems.push(...errorShapeProblems({ error: e.error }, 'openai', e.status));
      out.kind = out.problems.length ? 'bad' : 'error';
      return;
    }
    out.problems.push(`SDK call failed: ${e?.constructor?.name} ${e?.message} ${e?.cause?.code ?? ''}`);
    out.kind = 'bad';
  }
}

/** One call; see the header. Never throws. */
export async function callChat(spec) {
  const out = {
    kind: null, status: null, requestId: null, stream: !!spec.stream, via: spec.via ?? 'fetch', text: '', finish: null,
    usage: null, error: null, problems: [], ms: 0, tag: spec.tag ?? null, model: spec.model,
  };
  const t0 = Date.now();
  if ((spec.via ?? 'fetch') === 'sdk') await viaSdk(spec, out);
  else await viaFetch(spec, out);
  out.ms = Date.now() - t0;
  return out;
}

/** Runs `n` jobs with at most `concurrency` at once; job(i) resolves a value; resolves the values in order. */
export async function pool(n, concurrency, job, { stop = () => false } = {}) {
  const results = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, async () => {
    while (next < n && !stop()) {
      const i = next++;
      results[i] = await job(i);
    }
  }));
  return results;
}
