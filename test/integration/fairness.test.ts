import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../helpers/server.js';
import { asTenant, tenantsFile } from '../helpers/tenants.js';
import { until } from '../helpers/until.js';

const client = (server: TestServer) => (tenant: string, route: string, body?: unknown) =>
  asTenant(server.url, `${tenant}-key`, route, body);

describe('fairness between tenants: execution history', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ TENANTS_FILE: tenantsFile({ alice: '', mallory: '' }), EXECUTION_RETENTION_MB: '8' });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it("one tenant's large answers do not evict another tenant's recent execution", async () => {
    const call = client(server);
    const mine = await call('alice', '/execute', { code: 'print(1)' });
    assert.equal(mine.body.result, '1');
    // 8 answers of 1 MB of output (2 MB each as kept: stdout and result) against 8 MiB for all.
    const large = await Promise.all(
      Array.from({ length: 8 }, () => call('mallory', '/execute', { code: "print('x' * 1_000_000)" })),
    );
    for (const a of large) assert.equal(a.body.success, true, String(a.body.error));
    const kept = await Promise.all(large.map((a) => call('mallory', `/executions/${String(a.body.execution_id)}`)));
    assert.ok(kept.some((k) => k.status === 404), 'the cap was reached: some of mallory\'s answers went');
    assert.ok(kept.some((k) => k.status === 200));
    const again = await call('alice', `/executions/${String(mine.body.execution_id)}`);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, mine.body);
  });
});

describe('fairness between tenants: the queue', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({
      TENANTS_FILE: tenantsFile({ a: '{ max_concurrent: 1 }', b: '{ max_concurrent: 1 }', c: '' }),
      MAX_CONCURRENT: '2',
      QUEUE_MAX: '4',
    });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it("a tenant's burst fills the queue and is refused first; another tenant still gets a place and runs", async () => {
    const call = client(server);
    const { admission } = server.services;
    const hold = (tag: string) => ({ code: `import time\ntime.sleep(4)\nprint("${tag}")` });
    // a and b take both slots (MAX_CONCURRENT=2) for a while.
    const running = [call('a', '/execute', hold('a0')), call('b', '/execute', hold('b0'))];
    await until(() => admission.inFlight === 2, 'both slots taken');

    // a's burst of 6: alone in the queue, a may take all 4 places; the other 2 are refused.
    const answered: { status: number; body: Record<string, unknown> }[] = [];
    const burst = Array.from({ length: 6 }, (_, i) => call('a', '/execute', { code: `print("a${i + 1}")` }).then((r) => (answered.push(r), r)));
    await until(() => admission.queued === 4 && answered.length === 2, "a's burst queued");
    for (const r of answered) {
      assert.equal(r.status, 429);
      assert.match(String(r.body.error), /the queue is full and this tenant holds its share of it, 4 places of QUEUE_MAX 4/);
    }

    // c arrives at the full queue: its share is 4 / 2 tenants = 2, so it takes a's newest place.
    const c = call('c', '/execute', { code: 'print("c")' });
    await until(() => answered.length === 3, "a's newest waiter refused");
    assert.equal(answered[2]!.status, 429);
    assert.match(String(answered[2]!.body.error), /another tenant took this place in the full queue: this tenant held more than its share, 2 places of QUEUE_MAX 4/);

    assert.deepEqual((await c).body.result, 'c');
    const results = await Promise.all([...running, ...burst]);
    assert.deepEqual(results.slice(0, 2).map((r) => r.body.result), ['a0', 'b0']);
    assert.equal(results.filter((r) => r.status === 200).length, 2 + 3);
    assert.equal(results.filter((r) => r.status === 429).length, 3);
    assert.equal(admission.inFlight, 0);
    assert.equal(admission.queued, 0);
  });
});
