// Graceful shutdown: usage rows still buffered when SIGTERM / SIGINT arrives are flushed before
// the process exits 0. The gateway runs with a one-minute flush interval, so only the shutdown
// flush can have written the rows.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  adminDatabaseUrl, createDatabase, loadDeps, makeWorkDir, modelDir, requireBinary, runCliOk,
  startGateway, tail, writeConfig,
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
