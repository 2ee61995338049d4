import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { freePort } from '../helpers/free-port.js';
import { spawnServer } from '../helpers/process.js';
import { READ_MEMORY_CAP } from '../helpers/snippets.js';
import { containersOf, docker, removeVolumes, startServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';


const ownContainers = (server: TestServer) => containersOf(server.config.instanceId);

describe('the warm pool', () => {
  it('hands each container to exactly one execution', async () => {
    const server = await startServer({ POOL_SIZE: '2' });
    try {
      for (let i = 0; i < 5; i++) {
        await until(() => server.sandbox.ready() === 2, 'the pool to fill');
        const { body } = await server.post('/execute', {
          code: 'import os\nseen = os.path.exists("/tmp/marker")\nopen("/tmp/marker", "w").write("x")\nprint(seen)',
        });
        assert.equal(body.result, 'False', `execution ${i} saw another execution's /tmp`);
      }
      assert.equal(server.sandbox.pool!.stats().hits, 5, 'every execution should have come from the pool');
      assert.equal(server.sandbox.pool!.stats().misses, 0);
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it('a pool container killed from outside is replaced and never handed out', async () => {
    const server = await startServer({ POOL_SIZE: '2' });
    try {
      await until(() => server.sandbox.ready() === 2, 'the pool to fill');
      const killed = (await ownContainers(server)).map((c) => c.Id);
      assert.equal(killed.length, 2);
      await Promise.all(killed.map((id) => docker.getContainer(id).kill()));
      await until(async () => {
        const ids = (await ownContainers(server)).filter((c) => c.State === 'running').map((c) => c.Id);
        return server.sandbox.ready() === 2 && ids.length === 2 && !ids.some((id) => killed.includes(id));
      }, 'two new pool containers');
      const hits = server.sandbox.pool!.stats().hits;
      const { body } = await server.post('/execute', { code: 'print("fresh")' });
      assert.equal(body.result, 'fresh', String(body.error));
      assert.equal(server.sandbox.pool!.stats().hits, hits + 1);
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it("with the pool on, each tenant still gets exactly its own memory limit", async () => {
    const files = mkdtempSync(path.join(os.tmpdir(), 'rpc-pool-'));
    const hash = (key: string) => createHash('sha256').update(key).digest('hex');
    writeFileSync(
      path.join(files, 'tenants.yaml'),
      `tenants:\n  small:\n    keys: ["${hash('small-key')}"]\n    limits:\n      memory_mb: 96\n  large:\n    keys: ["${hash('large-key')}"]\n`,
    );
    const server = await startServer({ POOL_SIZE: '1', TENANTS_FILE: path.join(files, 'tenants.yaml') });
    const ask = async (key: string, extra: Record<string, unknown> = {}) => {
      const res = await fetch(`${server.url}/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify({ code: READ_MEMORY_CAP, ...extra }),
      });
      return ((await res.json()) as { result: string }).result;
    };
    try {
      await until(() => server.sandbox.ready() === 2, 'both tenants\' pools to fill');
      assert.equal(await ask('small-key'), '96');
      assert.equal(await ask('large-key'), '512');
      assert.equal(await ask('large-key', { memory_mb: 64 }), '64');
      assert.equal(await ask('small-key'), '96');
      assert.ok(server.sandbox.pool!.stats().hits >= 2);
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it('SIGTERM finishes the work in flight, then removes the pool', async () => {
    const instance = `test-sigterm-${process.pid}`;
    const server = await spawnServer({
      POOL_SIZE: '2',
      INSTANCE_ID: instance,
      BASE_DIR: mkdtempSync(path.join(os.tmpdir(), 'rpc-pool-')),
      PACKAGES_VOLUME_PREFIX: `rpc-${instance}-`,
    });
    const own = () => containersOf(instance);
    try {
      await until(async () => (await own()).length >= 2, 'the pool to fill');
      const inFlight = fetch(`${server.url}/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code: 'import time\ntime.sleep(2)\nprint("finished")' }),
      }).then((r) => r.json() as Promise<Record<string, unknown>>);
      await new Promise((r) => setTimeout(r, 500));
      const code = server.stop();
      assert.equal((await inFlight).result, 'finished');
      assert.equal(await code, 0);
      assert.deepEqual(await own(), []);
    } finally {
      await server.stop();
      await removeVolumes(`rpc-${instance}-`);
    }
  });
});

describe('/metrics', () => {
  const SAMPLE = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$/;

  it('parses as Prometheus text and counts executions by endpoint and outcome', async () => {
    const server = await startServer({ POOL_SIZE: '1' });
    try {
      await server.post('/execute', { code: 'print(1)' });
      await server.post('/execute', { code: 'print(2)' });
      await server.post('/execute', { code: '1/0' });
      await server.post('/execute', { code: 'while True: pass', timeout: 1 });
      const res = await fetch(`${server.url}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
      const text = await res.text();
      for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        assert.match(line, SAMPLE, `not a Prometheus sample: ${line}`);
      }
      const value = (name: string) => Number(text.split('\n').find((l) => l.startsWith(name + ' '))?.split(' ')[1]);
      assert.equal(value('rpc_execution_duration_seconds_count{endpoint="/execute",outcome="success"}'), 2);
      assert.equal(value('rpc_execution_duration_seconds_count{endpoint="/execute",outcome="error"}'), 1);
      assert.equal(value('rpc_execution_duration_seconds_count{endpoint="/execute",outcome="timeout"}'), 1);
      assert.equal(value('rpc_http_request_duration_seconds_count{route="/execute",status="200"}'), 4);
      assert.equal(value('rpc_slot_wait_seconds_count'), 4);
      // A result that never happened has no sample: all four may miss while the warm container still preloads.
      const taken = (result: string) => value(`rpc_pool_takes_total{result="${result}"}`) || 0;
      assert.equal(taken('hit') + taken('miss'), 4);
      for (const name of ['rpc_pool_ready', 'rpc_executions_in_flight', 'rpc_queue_length', 'rpc_process_resident_memory_bytes']) {
        assert.ok(Number.isFinite(value(name)), `${name} missing`);
      }
      assert.ok(value('rpc_container_phase_seconds_count{phase="create"}') >= 1);
    } finally {
      await server.close();
    }
  });

  it('needs a key when keys are configured', async () => {
    const server = await startServer({ API_KEYS: 'metrics-key' });
    try {
      assert.equal((await fetch(`${server.url}/metrics`)).status, 401);
      assert.equal((await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer metrics-key' } })).status, 200);
    } finally {
      await server.close();
    }
  });

  it('moves to METRICS_PORT when that is set', async () => {
    const port = await freePort();
    const instance = `test-metrics-${process.pid}`;
    const server = await spawnServer({ METRICS_PORT: String(port), POOL_SIZE: '0', INSTANCE_ID: instance, BASE_DIR: mkdtempSync(path.join(os.tmpdir(), 'rpc-m-')) });
    try {
      await server.waitForLog(/metrics listening/);
      const moved = await fetch(`${server.url}/metrics`);
      assert.equal(moved.status, 404);
      assert.match(String(((await moved.json()) as Record<string, unknown>).error), /Not found: GET \/metrics/);
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(res.status, 200);
      assert.match(await res.text(), /rpc_executions_in_flight/);
    } finally {
      await server.stop();
    }
    assert.equal(server.child.exitCode, 0);
  });
});
