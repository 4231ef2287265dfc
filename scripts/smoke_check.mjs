// Checks the two responses scripts/run.sh --smoke saved with curl, using nothing but Node's
// standard library. Prints shell assignments on stdout (for run.sh to eval) and a human-readable
// report on stderr; exits 1 if any check failed.
//
//   node scripts/smoke_check.mjs PLAIN.json STREAM.sse MAX_TOKENS [REFERENCE.json PROMPT]
import fs from 'node:fs';

const [plainFile, streamFile, maxTokensArg, refFile, prompt] = process.argv.slice(2);
const maxTokens = Number(maxTokensArg);
let failed = 0;
const check = (ok, what, detail = '') => {
  process.stderr.write(`  ${ok ? 'ok  ' : 'FAIL'}  ${what}${detail ? `: ${detail}` : ''}\n`);
  if (!ok) failed++;
  return ok;
};
const out = {};

// Greedy reference text, when the reference file sits beside the model.
let refText = null;
if (refFile && fs.existsSync(refFile)) {
  try {
    const entry = JSON.parse(fs.readFileSync(refFile, 'utf8')).prompts.find((p) => p.prompt === prompt);
    if (entry) refText = entry.llama_cpp_f32.text.slice(prompt.length);
  } catch { /* no reference: skip that check */ }
}

function checkUsage(u, label) {
  check(u && Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0, `${label} usage.prompt_tokens`, String(u?.prompt_tokens));
  check(u && Number.isInteger(u.completion_tokens) && u.completion_tokens > 0 && u.completion_tokens <= maxTokens,
    `${label} usage.completion_tokens`, String(u?.completion_tokens));
  check(u && u.total_tokens === u.prompt_tokens + u.completion_tokens, `${label} usage.total_tokens`, String(u?.total_tokens));
  check(u && typeof u.cost === 'number' && u.cost > 0, `${label} usage.cost (USD)`, String(u?.cost));
}

// Plain response.
process.stderr.write('plain completion:\n');
let plain = null;
try {
  plain = JSON.parse(fs.readFileSync(plainFile, 'utf8'));
} catch (e) {
  check(false, 'plain response is JSON', e.message);
}
let plainText = '';
if (plain) {
  check(/^gen-/.test(plain.id ?? ''), 'id is gen-...', plain.id);
  plainText = plain.choices?.[0]?.message?.content ?? '';
  check(plainText.length > 0, 'message content is not empty');
  check(['length', 'stop'].includes(plain.choices?.[0]?.finish_reason), 'finish_reason', plain.choices?.[0]?.finish_reason);
  checkUsage(plain.usage, 'plain');
  if (refText !== null) check(refText.startsWith(plainText), 'text matches the greedy reference (stories260K-reference.json)');
  out.PLAIN_ID = plain.id;
  out.PLAIN_PROMPT = plain.usage?.prompt_tokens;
  out.PLAIN_COMPLETION = plain.usage?.completion_tokens;
}

// Streamed response.
process.stderr.write('streamed completion:\n');
const raw = fs.existsSync(streamFile) ? fs.readFileSync(streamFile, 'utf8') : '';
const events = raw.split('\n\n').map((e) => e.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n')).filter(Boolean);
check(events.length > 2, 'several SSE events', String(events.length));
check(events.at(-1) === '[DONE]', 'stream ends with data: [DONE]');
const chunks = [];
for (const e of events.slice(0, -1)) {
  try {
    chunks.push(JSON.parse(e));
  } catch {
    check(false, 'event is JSON', e.slice(0, 80));
  }
}
if (chunks.length) {
  const id = chunks[0].id;
  check(/^gen-/.test(id ?? ''), 'id is gen-...', id);
  check(chunks.every((c) => c.id === id), 'same id on every chunk');
  const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
  check(text.length > 0, 'streamed content is not empty');
  if (plain) check(text === plainText, 'streamed text equals the plain text (greedy)');
  const usageChunk = chunks.at(-1);
  check(Array.isArray(usageChunk.choices) && usageChunk.choices.length === 0 && usageChunk.usage, 'last chunk carries usage with empty choices');
  checkUsage(usageChunk.usage, 'stream');
  out.STREAM_ID = id;
  out.STREAM_PROMPT = usageChunk.usage?.prompt_tokens;
  out.STREAM_COMPLETION = usageChunk.usage?.completion_tokens;
  out.STREAM_TEXT_CHARS = text.length;
}

for (const [k, v] of Object.entries(out)) {
  // Values are ids (gen-[A-Za-z0-9_-]) and integers; quote anyway.
  process.stdout.write(`${k}='${String(v ?? '').replace(/'/g, '')}'\n`);
}
process.exit(failed ? 1 : 0);
