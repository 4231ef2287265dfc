// OpenAI's Codex CLI (npm @openai/codex, pinned in package.json; its native binary is the optional
// dependency @openai/codex-linux-x64) completes one non-interactive task through Tollgate's
// Responses API. Codex is configured only through its documented config file, $CODEX_HOME/config.toml:
// a custom provider `[model_providers.tollgate]` with base_url = Tollgate's /v1 (Codex appends
// /responses), env_key naming the variable that holds a Tollgate API key, and wire_api = "responses";
// `model_provider = "tollgate"`. Update checks, analytics, feedback and the plugin marketplace (which
// resolves github.com and chatgpt.com at startup) are off, so Codex talks to loopback only.
//
// Twice, once per way the gateway reaches the mock OpenAI upstream (mock_openai.mjs): model mock/agent
// through chat completions (provider type openai_compatible), model mockresp/agent through OpenAI's
// own Responses API (type openai_responses). Upstream the magic model is mock-agent: its first answer is
// ONE call to Codex's shell tool
// (exec_command {"cmd": "echo tollgate > codex-proof.txt"}), its answer to the tool result is
// "Done: created codex-proof.txt". `codex exec --json` runs with approvals and sandbox off
// (approval_policy "never", sandbox_mode "danger-full-access": this runs as root in containers where
// Codex's bubblewrap sandbox cannot start), in a fresh working directory, with a timeout.
//
// Between Codex and Tollgate sits a recording pass-through proxy, so the test sees exactly which
// routes Codex called, Tollgate's status, headers (x-request-id: the usage row's id) and SSE events.
// Checked: Codex exits 0, the file exists with the right content (the tool ran), Codex printed the
// final message; Codex made exactly two calls, both POST /v1/responses, answered 200 with a
// well-formed Responses event stream ending in response.completed; the upstream got two calls
// (the tool call, then the conversation ending with its result), and the two usage rows
// in PostgreSQL match what the upstream reported, at the configured prices, and add up to the
// usage Codex itself reports for the turn.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  E2E_DIR, adminDatabaseUrl, costNano, createStack, loadDeps, makeWorkDir, parseSseEvents, reportedUsage,
  requireBinary, sleep, usageRow,
} from '../lib/harness.mjs';
import {
  AGENT_COMMAND, AGENT_FINAL_TEXT, AGENT_PROOF_FILE, AGENT_PROOF_TEXT, planAnswer, readResponsesRequest,
  responsesPromptTokens, responsesUsage, startMockOpenAI,
} from '../mock_openai.mjs';

const { pg } = await loadDeps();
adminDatabaseUrl(); // fail at once, clearly, without a database
requireBinary();

const CODEX_JS = path.join(E2E_DIR, 'node_modules', '@openai', 'codex', 'bin', 'codex.js');
const CODEX_NATIVE = path.join(E2E_DIR, 'node_modules', '@openai', 'codex-linux-x64');
if (!fs.existsSync(CODEX_JS)) {
  throw new Error(`e2e: ${CODEX_JS} is missing. Run \`npm ci\` in ${E2E_DIR} (scripts/test.sh does this for you).`);
}
if (process.platform === 'linux' && process.arch === 'x64' && !fs.existsSync(CODEX_NATIVE)) {
  throw new Error(`e2e: ${CODEX_NATIVE} (Codex's native binary, an optional dependency of @openai/codex) is missing. `
    + `Run \`npm ci\` in ${E2E_DIR} without --omit=optional.`);
}

const UPSTREAM_MODEL = 'mock-agent';
const PRICE = { prompt: '1.00', completion: '2.00' };
/** The two ways the gateway reaches the mock: chat completions, and OpenAI's own Responses API. */
const UPSTREAMS = {
  chat: { model: 'mock/agent', provider: 'mock', providerName: 'Mock Upstream', path: '/v1/chat/completions' },
  responses: { model: 'mockresp/agent', provider: 'mockresp', providerName: 'Mock Responses Upstream', path: '/v1/responses' },
};
const CODEX_TIMEOUT_MS = 120000;
const PROMPT = `Create the file ${AGENT_PROOF_FILE} containing the word ${AGENT_PROOF_TEXT}, then say what you did.`;

/**
 * A pass-through HTTP proxy to `target` that records every call: method, path, request headers,
 * response status and headers, and the whole response body (streams are forwarded as they arrive).
 */
function startRecordingProxy(target) {
  const calls = [];
  const server = http.createServer((req, res) => {
    const rec = { method: req.method, path: req.url, requestHeaders: req.headers, status: null, headers: null, chunks: [], done: false, error: null };
    calls.push(rec);
    const up = http.request(new URL(req.url, target), { method: req.method, headers: req.headers }, (ur) => {
      rec.status = ur.statusCode;
      rec.headers = ur.headers;
      res.writeHead(ur.statusCode, ur.rawHeaders);
      ur.on('data', (c) => { rec.chunks.push(c); res.write(c); });
      ur.on('end', () => { rec.done = true; res.end(); });
      ur.on('error', (e) => { rec.error = e.message; res.destroy(); });
    });
    up.on('error', (e) => { rec.error = e.message; res.destroy(); });
    req.pipe(up);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`, calls,
        body: (rec) => Buffer.concat(rec.chunks).toString('utf8'),
        close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

/** Codex's documented config file for a custom Responses provider at `baseUrl`. */
function codexConfig(baseUrl, model) {
  const q = (s) => JSON.stringify(String(s)); // a JSON string is a valid TOML basic string here
  return `# Written by tests/e2e/test/codex.test.mjs: Codex CLI through Tollgate's Responses API.
model = ${q(model)}
model_provider = "tollgate"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.tollgate]
name = "Tollgate"
base_url = ${q(baseUrl)}
env_key = "TOLLGATE_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
`;
}

/** Runs `codex exec` (stdin closed) in its own process group; resolves {code, signal, stdout, stderr, ms}. */
function runCodex(args, { cwd, env, timeoutMs }) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [CODEX_JS, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    running.add(child.pid);
    const out = [];
    const err = [];
    child.stdout.on('data', (c) => out.push(c));
    child.stderr.on('data', (c) => err.push(c));
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; killGroup(child.pid); }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      killGroup(child.pid); // whatever Codex left behind (its shell, the native binary)
      running.delete(child.pid);
      resolve({
        code, signal, timedOut, ms: Date.now() - started,
        stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

const running = new Set();
function killGroup(pid) {
  try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ }
}
process.on('exit', () => { for (const pid of running) killGroup(pid); });

const stack = createStack('e2e-codex');
let proxy = null;
const tempDirs = [];

/** Expected usage of upstream request `rec` as the gateway must bill it. */
function upstreamUsage(via, rec) {
  if (via === 'chat') return reportedUsage('openai', rec);
  const u = responsesUsage(responsesPromptTokens(rec.body), planAnswer(readResponsesRequest(rec.body)));
  return {
    prompt: u.input_tokens, completion: u.output_tokens, cached: u.input_tokens_details.cached_tokens,
    cacheWrite: 0, reasoning: u.output_tokens_details.reasoning_tokens,
  };
}

describe('Codex CLI through Tollgate (Responses API)', () => {
  before(async () => {
    await stack.start({
      pg,
      mocks: { openai: () => startMockOpenAI() },
      keys: ['codex'],
      config: (mocks) => ({
        providers: {
          [UPSTREAMS.chat.provider]: {
            type: 'openai_compatible', display_name: UPSTREAMS.chat.providerName, base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey,
          },
          [UPSTREAMS.responses.provider]: {
            type: 'openai_responses', display_name: UPSTREAMS.responses.providerName, base_url: mocks.openai.baseURL, api_key: mocks.openai.apiKey,
          },
        },
        models: Object.values(UPSTREAMS).map((u) => ({
          id: u.model, name: `Mock: coding agent (${u.provider})`, context_length: 200000,
          endpoints: [{ provider: u.provider, model: UPSTREAM_MODEL, pricing: PRICE }],
        })),
      }),
    });
    proxy = await startRecordingProxy(stack.gw.url);
  });

  after(async () => {
    for (const pid of running) killGroup(pid);
    if (proxy) await proxy.close();
    await stack.stop();
    for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  });

  for (const via of Object.keys(UPSTREAMS)) {
    const up = UPSTREAMS[via];
    test(`codex exec completes a tool-using task through POST /v1/responses (upstream: ${up.path})`, async () => {
      const codexHome = makeWorkDir('codex-home');
      const workDir = makeWorkDir('codex-work');
      tempDirs.push(codexHome, workDir);
      const callsBefore = proxy.calls.length;
      const upstreamBefore = stack.mocks.openai.requests.length;
      fs.writeFileSync(path.join(codexHome, 'config.toml'), codexConfig(`${proxy.url}/v1`, up.model));
      const env = { ...process.env, CODEX_HOME: codexHome, TOLLGATE_API_KEY: stack.keys.codex, NO_COLOR: '1' };
      for (const k of ['OPENAI_API_KEY', 'OPENAI_BASE_URL', 'CODEX_API_KEY', 'RUST_LOG']) delete env[k];

      const run = await runCodex(
        ['exec', '--json', '--skip-git-repo-check', '--strict-config', '--ephemeral', '--color', 'never', '-C', workDir, PROMPT],
        { cwd: workDir, env, timeoutMs: CODEX_TIMEOUT_MS },
      );
      const calls = proxy.calls.slice(callsBefore);
      const show = `\n--- codex stdout ---\n${run.stdout}\n--- codex stderr ---\n${run.stderr}\n--- calls ---\n`
        + calls.map((c) => `${c.method} ${c.path} -> ${c.status}\n${proxy.body(c).slice(0, 3000)}`).join('\n');
      console.error(`codex exec (upstream ${up.path}): exit ${run.code} in ${run.ms} ms`);
      assert.equal(run.timedOut, false, `codex exec ran past ${CODEX_TIMEOUT_MS} ms${show}`);
      assert.equal(run.code, 0, `codex exec exited ${run.code} (signal ${run.signal})${show}`);

      // The tool ran: the file is there with what the scripted call wrote.
      const proof = path.join(workDir, AGENT_PROOF_FILE);
      assert.ok(fs.existsSync(proof), `${proof} does not exist${show}`);
      assert.equal(fs.readFileSync(proof, 'utf8'), `${AGENT_PROOF_TEXT}\n`);

      // Codex's own account of the turn (--json: one JSON event per line).
      const events = run.stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
      const completed = events.filter((e) => e.type === 'item.completed').map((e) => e.item);
      const commands = completed.filter((i) => i.type === 'command_execution');
      assert.equal(commands.length, 1, `one command ran${show}`);
      assert.ok(commands[0].command.includes(AGENT_COMMAND), `the scripted command ran: ${commands[0].command}`);
      assert.equal(commands[0].exit_code, 0);
      const messages = completed.filter((i) => i.type === 'agent_message').map((i) => i.text);
      assert.deepEqual(messages, [AGENT_FINAL_TEXT], `Codex's final message${show}`);
      assert.equal(events.filter((e) => e.type === 'turn.failed' || e.type === 'error').length, 0, `no failure${show}`);
      const turn = events.find((e) => e.type === 'turn.completed');
      assert.ok(turn, `turn.completed${show}`);

      // Tollgate saw exactly two calls, both POST /v1/responses, each a complete Responses stream.
      assert.deepEqual(calls.map((c) => `${c.method} ${c.path}`), ['POST /v1/responses', 'POST /v1/responses'], show);
      const requestIds = [];
      for (const [i, c] of calls.entries()) {
        assert.equal(c.status, 200, `call ${i}${show}`);
        assert.ok(c.done && !c.error, `call ${i} finished cleanly (${c.error})`);
        assert.equal(c.requestHeaders.authorization, `Bearer ${stack.keys.codex}`, 'Codex sent the env_key as a Bearer key');
        assert.match(String(c.headers['content-type']), /^text\/event-stream/);
        assert.match(String(c.headers['x-request-id']), /^gen-/);
        requestIds.push(c.headers['x-request-id']);
        const sse = parseSseEvents(proxy.body(c));
        const types = sse.map((e) => e.event);
        const data = sse.map((e) => JSON.parse(e.data));
        assert.deepEqual(data.map((d) => d.type), types, `call ${i}: each event's name is its data's type`);
        const seq0 = data[0].sequence_number;
        assert.ok(Number.isInteger(seq0), `call ${i}: sequence_number on every event`);
        assert.deepEqual(data.map((d) => d.sequence_number), data.map((_, k) => seq0 + k), `call ${i}: consecutive sequence numbers`);
        assert.equal(types[0], 'response.created');
        assert.equal(types.at(-1), 'response.completed', `call ${i} ends with response.completed: ${types.join(', ')}`);
        assert.ok(!types.includes('error') && !types.includes('response.failed'), `call ${i}: ${types.join(', ')}`);
        const resp = data.at(-1).response;
        assert.match(resp.id, /^resp_[0-9A-Za-z]{32}$/);
        assert.equal(resp.status, 'completed');
        assert.equal(resp.model, up.model);
        const kinds = resp.output.map((o) => o.type).filter((t) => t !== 'reasoning');
        if (i === 0) {
          assert.deepEqual(kinds, ['function_call'], 'first answer: the tool call');
          const call = resp.output.find((o) => o.type === 'function_call');
          assert.equal(call.name, 'exec_command');
          assert.deepEqual(JSON.parse(call.arguments), { cmd: AGENT_COMMAND });
        } else {
          assert.deepEqual(kinds, ['message'], 'second answer: the final message');
          const text = resp.output.find((o) => o.type === 'message').content.map((p) => p.text).join('');
          assert.equal(text, AGENT_FINAL_TEXT);
        }
      }

      // The upstream got the tool call's round trip as two calls of its own API.
      const upstream = stack.mocks.openai.requests.slice(upstreamBefore);
      assert.deepEqual(upstream.map((r) => `${r.method} ${r.path} ${r.body?.model}`),
        [`POST ${up.path} ${UPSTREAM_MODEL}`, `POST ${up.path} ${UPSTREAM_MODEL}`]);
      const tools = upstream[0].body.tools ?? [];
      const toolNames = tools.map((t) => (via === 'chat' ? t.function?.name : t.name));
      assert.ok(toolNames.includes('exec_command'), `Codex's shell tool reached the model: ${toolNames}`);
      assert.ok(tools.every((t) => t.type === 'function'), `only function tools go upstream: ${tools.map((t) => t.type)}`);
      assert.deepEqual(upstream[0].toolResultsReceived, [], 'the first call has no tool result yet');
      assert.deepEqual(upstream[1].toolCallsReceived.map((c) => [c.name, c.args]), [['exec_command', { cmd: AGENT_COMMAND }]],
        'the second call carries the tool call back');
      assert.equal(upstream[1].toolResultsReceived.length, 1, 'and its result');
      assert.equal(upstream[1].toolResultsReceived[0].id, upstream[1].toolCallsReceived[0].id, 'the result answers that call');
      assert.match(upstream[1].toolResultsReceived[0].text, /exited with code 0/);
      if (via === 'chat') assert.equal(upstream[1].body.messages.at(-1).role, 'tool', 'the conversation ends with the tool result');
      else assert.equal(upstream[1].body.input.at(-1).type, 'function_call_output', 'the conversation ends with the tool result');

      // One usage row per call, as the upstream reported it, at the configured prices, on Codex's key.
      const { rows: keys } = await stack.db.query('SELECT id FROM api_keys');
      assert.equal(keys.length, 1);
      const sum = { prompt: 0, completion: 0 };
      for (const [i, id] of requestIds.entries()) {
        const row = await usageRow(stack.db, id);
        const u = upstreamUsage(via, upstream[i]);
        sum.prompt += u.prompt;
        sum.completion += u.completion;
        assert.deepEqual({
          api_key_id: row.api_key_id, model: row.model, provider: row.provider, upstream_model: row.upstream_model,
          prompt_tokens: row.prompt_tokens, completion_tokens: row.completion_tokens, cached_tokens: row.cached_tokens,
          reasoning_tokens: row.reasoning_tokens, cost_nano_usd: row.cost_nano_usd, status: row.status,
          streamed: row.streamed, finish_reason: row.finish_reason, usage_estimated: row.usage_estimated, error_code: row.error_code,
        }, {
          api_key_id: keys[0].id, model: up.model, provider: up.providerName, upstream_model: UPSTREAM_MODEL,
          prompt_tokens: u.prompt, completion_tokens: u.completion, cached_tokens: u.cached, reasoning_tokens: u.reasoning,
          cost_nano_usd: costNano(PRICE, u), status: 200, streamed: true, finish_reason: i === 0 ? 'tool_calls' : 'stop',
          usage_estimated: false, error_code: null,
        }, `usage row of call ${i} (${id})`);
      }
      await sleep(300); // a stray third row would have been flushed by now (flush interval 50 ms)
      const { rows: [{ n }] } = await stack.db.query('SELECT count(*)::int AS n FROM usage_events WHERE model = $1', [up.model]);
      assert.equal(n, 2, `exactly two usage rows for ${up.model}`);
      // What Codex counted for the turn is what Tollgate billed.
      assert.equal(turn.usage.input_tokens, sum.prompt, `Codex's input tokens ${JSON.stringify(turn.usage)}`);
      assert.equal(turn.usage.output_tokens, sum.completion, `Codex's output tokens ${JSON.stringify(turn.usage)}`);
    });
  }
});
