// The soak benchmark's load (bench/soak.sh): a bounded, mixed load against one Tollgate for
// --seconds, --concurrency calls at a time, over the three APIs it serves:
//   chat       POST /v1/chat/completions (tests/e2e/lib/outcomes.mjs callChat: raw fetch, and the
//              official `openai` client for a quarter of them when tests/e2e/node_modules has it)
//   messages   POST /v1/messages (Anthropic's Messages API), raw fetch
//   responses  POST /v1/responses (OpenAI's Responses API, store: false), raw fetch
// half streamed; about 5% of the calls are client errors on purpose (an unknown key: 401, an
// unknown model: 404, a body that is not JSON: 400), and about 5% of the streamed calls are left
// by their client after 30 to 300 ms (a disconnect mid-stream). The upstream (mock_faults.mjs,
// started by soak.sh) adds its own faults.
//
// Every second it rewrites --progress FILE (JSON, atomically): { calls, by: {ok, error,
// stream_error, aborted, bad}, api: {chat, messages, responses}, status: {HTTP status: calls},
// error_examples: {status: first message}, bad_examples: [...] }; at the end
// it writes the same once more and exits 0 (the counts say what happened; soak.sh judges).
//   node bench/soak/load.mjs --url http://127.0.0.1:PORT --key tg-... --model soak/m --seconds 300
//        --concurrency 16 --progress /tmp/x/progress.json
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const e2e = path.resolve(here, '..', '..', 'tests', 'e2e');
const { callChat } = await import(path.join(e2e, 'lib', 'outcomes.mjs'));

const args = process.argv.slice(2);
const opt = (flag, dflt) => {
  const i = args.indexOf(flag);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const url = opt('--url');
const key = opt('--key');
const model = opt('--model', 'soak/m');
const seconds = Number(opt('--seconds', '300'));
const concurrency = Number(opt('--concurrency', '16'));
const progressFile = opt('--progress');
if (!url || !key || !progressFile) {
  process.stderr.write('usage: load.mjs --url URL --key KEY --progress FILE [--model M] [--seconds S] [--concurrency N]\n');
  process.exit(2);
}

let OpenAI = null;
try {
  OpenAI = (await import(path.join(e2e, 'node_modules', 'openai', 'index.mjs'))).default;
} catch { /* the SDK share goes to raw fetch */ }

const state = { calls: 0, by: { ok: 0, error: 0, stream_error: 0, aborted: 0, bad: 0 }, api: { chat: 0, messages: 0, responses: 0 }, status: {}, error_examples: {}, bad_examples: [] };
const count = (kind, api, detail, status) => {
  state.calls++;
  if (status !== undefined) state.status[status ?? 'none'] = (state.status[status ?? 'none'] ?? 0) + 1;
  if (kind === 'error' && status && !state.error_examples[status]) state.error_examples[status] = `${api}: ${detail}`.slice(0, 200);
  state.by[kind]++;
  state.api[api]++;
  if (kind === 'bad' && state.bad_examples.length < 20) state.bad_examples.push(`${api}: ${detail}`);
};
function writeProgress() {
  const tmp = `${progressFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state));
  fs.renameSync(tmp, progressFile);
}

// A small deterministic PRNG (mulberry32), so two runs make the same mix.
let seed = 0x5eed;
function rand() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

/** Reads a whole SSE body into [{event, data}]. */
function sseEvents(text) {
  const out = [];
  for (const block of text.replaceAll('\r\n', '\n').split('\n\n')) {
    let event = null;
    const data = [];
    for (const l of block.split('\n')) {
      if (l.startsWith('event:')) event = l.slice(6).trim();
      else if (l.startsWith('data:')) data.push(l.slice(5).replace(/^ /, ''));
    }
    if (data.length) out.push({ event, data: data.join('\n') });
  }
  return out;
}

/** Messages or Responses through raw fetch: 'ok' | 'error' | 'stream_error' | 'aborted' | 'bad'. */
async function otherApi(api, { stream, abortAfterMs, n }) {
  const ctl = new AbortController();
  let left = false;
  const t1 = setTimeout(() => ctl.abort(), 60000);
  const t2 = abortAfterMs ? setTimeout(() => { left = true; ctl.abort(); }, abortAfterMs) : null;
  const text = `soak ${api} call ${n}`;
  const body = api === 'messages'
    ? { model, max_tokens: 64, messages: [{ role: 'user', content: text }], stream }
    : { model, input: text, max_output_tokens: 64, store: false, stream };
  try {
    const r = await fetch(`${url}/v1/${api}`, {
      method: 'POST', signal: ctl.signal,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify(body),
    });
    const raw = await r.text();
    if (r.status !== 200) {
      let j = null;
      try { j = JSON.parse(raw); } catch { return ['bad', `${r.status} body is not JSON`]; }
      const ok = api === 'messages' ? j?.type === 'error' && typeof j.error?.message === 'string' : typeof j?.error?.message === 'string';
      return ok ? ['error', (j?.error?.message ?? ''), r.status] : ['bad', `${r.status} error shape ${raw.slice(0, 100)}`, r.status];
    }
    if (!stream) {
      let j;
      try { j = JSON.parse(raw); } catch { return ['bad', '200 body is not JSON']; }
      if (api === 'messages') return j.type === 'message' && j.stop_reason ? ['ok'] : ['bad', `message ${raw.slice(0, 100)}`];
      return j.object === 'response' && ['completed', 'incomplete'].includes(j.status) ? ['ok'] : ['bad', `response ${raw.slice(0, 100)}`];
    }
    const evs = sseEvents(raw);
    const last = evs.at(-1);
    if (api === 'messages') {
      if (last?.event === 'message_stop') return evs.some((e) => e.event === 'error') ? ['bad', 'message_stop after an error'] : ['ok'];
      if (last?.event === 'error') return ['stream_error'];
      return ['bad', `stream ends with ${last?.event}`];
    }
    if (['response.completed', 'response.incomplete'].includes(last?.event)) return ['ok'];
    if (['response.failed', 'error'].includes(last?.event)) return ['stream_error'];
    return ['bad', `stream ends with ${last?.event}`];
  } catch (e) {
    if (left) return ['aborted'];
    return ['bad', `fetch failed: ${e.cause?.code ?? ''} ${e.message}`];
  } finally {
    clearTimeout(t1);
    if (t2) clearTimeout(t2);
  }
}

/** A call that must fail on the caller's side: 401, 404 or 400, always a well-formed error. */
async function clientError(n) {
  const which = n % 3;
  const headers = { authorization: `Bearer ${which === 0 ? `tg-${'z'.repeat(43)}` : key}`, 'content-type': 'application/json' };
  const body = which === 2 ? '{"model": "soak/m", "messages": [' : JSON.stringify({ model: which === 1 ? 'soak/no-such-model' : model, messages: [{ role: 'user', content: 'x' }] });
  try {
    const r = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers, body, signal: AbortSignal.timeout(30000) });
    const j = await r.json().catch(() => null);
    const want = [401, 404, 400][which];
    return r.status === want && typeof j?.error?.message === 'string' ? ['error', j.error.message, r.status] : ['bad', `client error ${which}: ${r.status} ${JSON.stringify(j)?.slice(0, 100)}`, r.status];
  } catch (e) {
    return ['bad', `fetch failed: ${e.message}`];
  }
}

const deadline = Date.now() + seconds * 1000;
const timer = setInterval(writeProgress, 1000);
let n = 0;
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (Date.now() < deadline) {
    const i = n++;
    const r = rand();
    const stream = rand() < 0.5;
    const abortAfterMs = stream && rand() < 0.05 ? 30 + Math.floor(rand() * 270) : 0;
    if (r < 0.05) {
      const [kind, detail, status] = await clientError(i);
      count(kind, 'chat', detail, status);
    } else if (r < 0.55) {
      const via = OpenAI && !abortAfterMs && rand() < 0.25 ? 'sdk' : 'fetch';
      const o = await callChat({
        baseUrl: url, key, OpenAI, via, model, stream, includeUsage: stream && rand() < 0.8, maxTokens: rand() < 0.3 ? 4 : 64,
        messages: [{ role: 'user', content: `soak chat call ${i}` }], timeoutMs: 60000, abortAfterMs,
      });
      const kind = { complete: 'ok', error: 'error', 'stream-error': 'stream_error', aborted: 'aborted', bad: 'bad' }[o.kind];
      count(kind, 'chat', o.kind === 'error' ? (o.error?.error?.message ?? '') : `${o.status} ${o.problems.join('; ')}`, o.status);
    } else {
      const api = r < 0.8 ? 'messages' : 'responses';
      const [kind, detail, status = 200] = await otherApi(api, { stream, abortAfterMs, n: i });
      count(kind, api, detail, kind === 'aborted' ? null : status);
    }
  }
}));
clearInterval(timer);
writeProgress();
