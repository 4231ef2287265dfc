// Graceful shutdown: usage rows still buffered when SIGTERM / SIGINT arrives are flushed before
// the process exits 0. The gateway runs with a one-minute flush interval, so only the shutdown
// flush can have written the rows. Calls still running when server.drain_timeout_ms passes are
// cancelled (upstream too), answered with 503 or a last error event, and metered before the exit.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  adminDatabaseUrl, createDatabase, loadDeps, makeWorkDir, modelDir, parseSse, requireBinary, runCliOk,
  sleep, startGateway, tail, writeConfig,
} from '../lib/harness.mjs';
import { REPLY_TEXT, startMockOpenAI } from '../mock_openai.mjs';

const { OpenAI, pg } = await loadDeps();
adminDatabaseUrl();
requireBinary();

describe('graceful shutdown flushes usage rows', { timeout: 120000 }, () => {
  let workDir;
  let database;
  let mock;
  let key;
  let config;
  const gateways = [];

  before(async () => {
    workDir = makeWorkDir('e2e-shutdown');
    mock = await startMockOpenAI();
    database = await createDatabase(pg, 'tollgate_e2e_shutdown');
    const env = { TOLLGATE_DATABASE_URL: database.url };
    await runCliOk(['migrate'], { env });
    key = (await runCliOk(['keys', 'create', '--name', 'shutdown'], { env })).stdout.trim();
    config = writeConfig(workDir, {
      databaseUrl: database.url, mockBaseURL: mock.baseURL, mockApiKey: mock.apiKey,
      modelPath: `${modelDir()}/stories260K.gguf`, flushIntervalMs: 60000, batchSize: 1000,
    });
  });

  after(async () => {
    for (const gw of gateways) {
      const r = await gw.stop('SIGKILL', 1000);
      console.error(`--- gateway log (${gw.logFile}), exit ${JSON.stringify(r)} ---\n${tail(gw.logFile, 40)}`);
    }
    if (mock) await mock.close();
    if (database) await database.drop().catch((e) => console.error(`e2e: could not drop ${database.name}: ${e.message}`));
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  test('calls still running after drain_timeout_ms are cancelled, answered, metered; exit 0', async () => {
    // The same config with a short drain: the slow mock answers for 10 s, far longer.
    const short = `${workDir}/short-drain.yaml`;
    const yaml = fs.readFileSync(config, 'utf8').replace(/^(\s*)request_timeout_ms: .*$/m, '$&\n$1drain_timeout_ms: 300');
    assert.match(yaml, /drain_timeout_ms: 300/);
    fs.writeFileSync(short, yaml);
    const gw = await startGateway({ configPath: short, workDir, env: { TOLLGATE_DATABASE_URL: database.url } });
    gateways.push(gw);
    const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const call = (stream) => fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST', headers,
      body: JSON.stringify({ model: 'mock/slow', messages: [{ role: 'user', content: `drain ${stream}` }], stream }),
    });
    const streamed = await call(true);
    assert.equal(streamed.status, 200);
    const reader = streamed.body.getReader();
    const first = await reader.read(); // the stream is under way
    assert.ok(!first.done);
    const plainPromise = call(false);
    await sleep(200); // both calls reached the mock
    const t0 = Date.now();
    const exitPromise = gw.stop('SIGTERM', 20000);

    let raw = new TextDecoder().decode(first.value);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      raw += new TextDecoder().decode(value);
    }
    const events = parseSse(raw);
    assert.notEqual(events.at(-1), '[DONE]', 'a cut stream never ends with [DONE]');
    const last = JSON.parse(events.at(-1));
    assert.ok(last.error, `the last event is the error: ${events.at(-1)}`);
    assert.match(last.error.message, /shutting down/);
    const plain = await plainPromise;
    assert.equal(plain.status, 503);
    assert.match((await plain.json()).error.message, /shutting down/);

    const exit = await exitPromise;
    const elapsed = Date.now() - t0;
    assert.deepEqual(exit, { code: 0, signal: null }, `exit; log:\n${tail(gw.logFile, 30)}`);
    assert.ok(elapsed < 8000, `stopped after ${elapsed} ms`);
    const slow = mock.requests.filter((r) => r.body?.model === 'mock-slow');
    assert.equal(slow.length, 2);
    assert.ok(slow.every((r) => r.closed), 'both upstream calls were cancelled');

    const db = new pg.Client({ connectionString: database.url });
    await db.connect();
    try {
      const r = await db.query(
        "SELECT streamed, status, cost_nano_usd, usage_estimated FROM usage_events WHERE model = 'mock/slow' ORDER BY streamed",
      );
      assert.equal(r.rows.length, 2, `both calls metered: ${JSON.stringify(r.rows)}`);
      assert.deepEqual(r.rows.map((x) => [x.streamed, x.status]), [[false, 503], [true, 503]]);
      assert.equal(Number(r.rows[0].cost_nano_usd), 0, 'the non-streamed call delivered nothing');
      assert.ok(Number(r.rows[1].cost_nano_usd) > 0 && r.rows[1].usage_estimated, 'the stream is billed for what it sent');
    } finally {
      await db.end();
    }
  });

  for (const signal of ['SIGTERM', 'SIGINT']) {
    test(`${signal}: exit 0, every answered call has its row`, async () => {
      const gw = await startGateway({ configPath: config, workDir, env: { TOLLGATE_DATABASE_URL: database.url } });
      gateways.push(gw);
      const client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
      const ids = [];
      const plain = await client.chat.completions.create({ model: 'mock/gpt-test', messages: [{ role: 'user', content: signal }] });
      assert.equal(plain.choices[0].message.content, REPLY_TEXT);
      ids.push(plain.id);
      const stream = await client.chat.completions.create({ model: 'mock/gpt-test', messages: [{ role: 'user', content: signal }], stream: true });
      for await (const c of stream) if (!ids.includes(c.id)) ids.push(c.id);
      const local = await client.chat.completions.create({ model: 'local/stories260k', messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: 8 });
      ids.push(local.id);
      assert.equal(ids.length, 3);

      const exit = await gw.stop(signal);
      assert.deepEqual(exit, { code: 0, signal: null }, `exit after ${signal}; log:\n${tail(gw.logFile, 30)}`);

      const db = new pg.Client({ connectionString: database.url });
      await db.connect();
      try {
        const r = await db.query('SELECT request_id, completion_tokens, cost_nano_usd FROM usage_events WHERE request_id = ANY($1)', [ids]);
        assert.equal(r.rows.length, 3, `rows flushed at shutdown: ${JSON.stringify(r.rows)}`);
        assert.ok(r.rows.every((x) => x.completion_tokens > 0 && Number(x.cost_nano_usd) > 0));
      } finally {
        await db.end();
      }
    });
  }
});
