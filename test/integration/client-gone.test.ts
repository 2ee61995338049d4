import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { spawnServer } from '../helpers/process.js';
import { containersOf, removeVolumes, startServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';

/** Starts a run that would take a minute, and resolves once its container exists; `leave()` drops the client. */
async function longRun(url: string, instance: string) {
  const client = new AbortController();
  const answer = fetch(`${url}/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code: 'import time\nprint("started", flush=True)\ntime.sleep(60)' }),
    signal: client.signal,
  }).catch((err: Error) => err);
  await until(async () => (await containersOf(instance)).some((c) => c.State === 'running'), 'the long run to start');
  await new Promise((resolve) => setTimeout(resolve, 500)); // its job is in, its code sleeping
  return { leave: () => client.abort(), answer };
}

describe('a client that goes away', () => {
  it('has its run stopped and its slot freed at once', async () => {
    const server = await startServer({ TENANT_MAX_CONCURRENT: '1', QUEUE_TIMEOUT_S: '10' });
    try {
      const long = await longRun(server.url, server.config.instanceId);
      long.leave();
      assert.equal(((await long.answer) as Error).name, 'AbortError');
      // With the slot still held, this would wait out the queue and get a 429.
      const next = await server.post('/execute', { code: 'print(2)' });
      assert.equal(next.status, 200);
      assert.equal(next.body.result, '2');
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it('leaves no container behind when the server is stopped right after', async () => {
    const instance = `test-gone-${process.pid}`;
    const server = await spawnServer({
      POOL_SIZE: '0',
      INSTANCE_ID: instance,
      BASE_DIR: mkdtempSync(path.join(os.tmpdir(), 'rpc-gone-')),
      PACKAGES_VOLUME_PREFIX: `rpc-${instance}-`,
    });
    try {
      const long = await longRun(server.url, instance);
      long.leave();
      assert.equal(await server.stop(), 0);
      assert.deepEqual(await containersOf(instance), [], 'every container of the instance is removed before it exits');
    } finally {
      await server.stop();
      await removeVolumes(`rpc-${instance}-`);
    }
  });
});
