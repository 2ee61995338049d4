import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { startPostgres, startRedis, type Daemon } from '../helpers/cluster.js';
import { freePort } from '../helpers/free-port.js';
import { spawnNode, type NodeProcess } from '../helpers/process.js';
import { containersOf, removeVolumes } from '../helpers/server.js';

/** Nodes of a distributed deployment may start before Redis (compose, a reboot): they wait for it, then serve. */
describe('distributed: nodes started before Redis, and stopped while it is away', () => {
  const tag = randomUUID().slice(0, 8);
  const started: (NodeProcess | Daemon)[] = [];

  after(async () => {
    for (const p of started.reverse()) await p.stop();
    const left = await containersOf(`rpc-test-start-w-${tag}`);
    await removeVolumes(`rpc-test-start-${tag}-`);
    assert.deepEqual(left, [], 'the stopped worker left no container');
  });

  it('an API node and a worker wait for Redis, answer an execution, and stop cleanly once it is gone', async () => {
    const postgres = await startPostgres();
    started.push(postgres);
    const redisPort = await freePort();
    const apiPort = await freePort();
    const common = { REDIS_URL: `redis://127.0.0.1:${redisPort}`, DATABASE_URL: postgres.url, HOST: '127.0.0.1', PACKAGES_VOLUME_PREFIX: `rpc-test-start-${tag}-` };
    const api = await spawnNode('dist/server/index.js', { ...common, PORT: String(apiPort), INSTANCE_ID: `rpc-test-start-api-${tag}` }, /waiting for Redis|listening|failed to start/);
    started.push(api);
    assert.match(api.logs(), /waiting for Redis/, 'the API node says what it waits for, and does not listen yet');
    const worker = await spawnNode('dist/server/distributed/worker-main.js', { ...common, PORT: String(apiPort + 1), INSTANCE_ID: `rpc-test-start-w-${tag}`, MAX_CONCURRENT: '1', POOL_SIZE: '0' }, /waiting for Redis|worker ready|failed to start/, 60_000);
    started.push(worker);
    assert.match(worker.logs(), /waiting for Redis/);

    const redis = await startRedis(redisPort);
    started.push(redis);
    await Promise.all([api.waitForLog(/"message":"listening"/, 30_000), worker.waitForLog(/worker ready/, 60_000)]);
    const res = await fetch(`http://127.0.0.1:${apiPort}/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 'print(6 * 7)' }) });
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.success, true);
    assert.equal(body.result, '42');

    // BullMQ's close waits for Redis forever; a node told to stop must stop all the same.
    await redis.stop();
    assert.deepEqual(await Promise.all([worker.stop(), api.stop()]), [0, 0]);
  });
});
