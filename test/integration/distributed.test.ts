import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import Docker from 'dockerode';
import { QUEUE_NAME, redisConnection } from '../../server/distributed/redis.js';
import { startApiNode, startPostgres, startRedis, startSecondEngine, startWorker, type ClusterNode, type Daemon } from '../helpers/cluster.js';
import { makeWheel } from '../helpers/wheels.js';
import { removeVolumes } from '../helpers/server.js';
import { until } from '../helpers/until.js';

/**
 * The distributed shape as separate processes: Redis and PostgreSQL from Debian on loopback, two
 * API nodes, two workers each with an engine of its own (the host's and a second dockerd).
 */
describe('distributed: API nodes and workers on Redis and PostgreSQL', () => {
  const tag = randomUUID().slice(0, 8);
  const ids = { w1: `rpc-dist-w1-${tag}`, w2: `rpc-dist-w2-${tag}` };
  let redis: Daemon;
  let postgres: Daemon;
  let engine2: { host: string; stop(): Promise<void> };
  const api: ClusterNode[] = [];
  const workers: Record<'w1' | 'w2', ClusterNode | null> = { w1: null, w2: null };
  let common: Record<string, string>;
  let wheelhouse: string;

  const engines = () => ({ w1: new Docker(), w2: new Docker({ socketPath: engine2.host.replace('unix://', '') }) });
  const containersOf = (w: 'w1' | 'w2') => engines()[w].listContainers({ all: true, filters: { label: [`run-python-code.instance=${ids[w]}`] } });
  const worker = (w: 'w1' | 'w2', extra: Record<string, string> = {}) =>
    startWorker({ ...common, INSTANCE_ID: ids[w], MAX_CONCURRENT: '2', POOL_SIZE: '2', LOG_LEVEL: 'debug', ...(w === 'w2' ? { DOCKER_HOST: engine2.host } : {}), ...extra });

  const post = async (node: ClusterNode, route: string, body: unknown) => {
    const res = await fetch(`${node.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
  };
  const get = async (node: ClusterNode, route: string) => {
    const res = await fetch(`${node.url}${route}`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  /** DELETE's status; its body too when it is not 204, for the message of a failed check. */
  const remove = async (node: ClusterNode, route: string) => {
    const res = await fetch(`${node.url}${route}`, { method: 'DELETE' });
    return res.status === 204 ? 204 : `${res.status} ${await res.text()}`;
  };
  /** A context whose home is worker `w` (creations go to whichever worker takes them): its id. */
  const contextOn = async (w: 'w1' | 'w2') => {
    for (let tries = 0; tries < 10; tries++) {
      const created = await post(api[tries % 2]!, '/contexts', {});
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = String(created.body.context_id);
      const { body } = await post(api[0]!, '/execute', { code: 'x = 1', context_id: id });
      if (body.worker === ids[w]) return id;
      assert.equal(await remove(api[0]!, `/contexts/${id}`), 204);
    }
    return assert.fail(`no context went to ${w} in 10 tries`);
  };
  /** Waits for a log line of `node` that comes after what it logged so far. */
  const nextLog = (node: ClusterNode, pattern: RegExp) => {
    const from = node.logs().length;
    return until(() => pattern.test(node.logs().slice(from)), `${pattern} in the log`);
  };
  const healthWorkers = async () => ((await get(api[0]!, '/health')).body.workers as { id: string; seen_s_ago: number }[] | undefined) ?? [];
  const workersSeen = async () => (await healthWorkers()).map((w) => w.id).sort();
  const restartWorker = async (w: 'w1' | 'w2') => {
    workers[w] = await worker(w);
    await until(async () => (await workersSeen()).length === 2, 'the restarted worker in GET /health');
  };

  before(async () => {
    [redis, postgres, engine2] = await Promise.all([startRedis(), startPostgres(), startSecondEngine(process.env.SANDBOX_IMAGE ?? 'run-python-code-sandbox:latest')]);
    wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-dist-wheels-'));
    makeWheel(wheelhouse, 'rpc-dist-tiny', '1.0');
    common = { WHEELHOUSE_DIR: wheelhouse, REDIS_URL: redis.url, DATABASE_URL: postgres.url, WORKER_STALLED_S: '3', EXECUTION_RETENTION_S: '600', PACKAGES_VOLUME_PREFIX: `rpc-dist-${tag}-`, TENANT_MAX_CONCURRENT: '3', SANDBOX_WORKSPACE_MB: '4', MAX_CONTEXTS: '2', WORKER_LOST_S: '10' };
    // The first node migrates alone; the others start together on the migrated schema.
    api.push(await startApiNode({ ...common, INSTANCE_ID: `rpc-dist-api1-${tag}` }));
    [workers.w1, workers.w2, api[1]] = await Promise.all([worker('w1'), worker('w2'), startApiNode({ ...common, INSTANCE_ID: `rpc-dist-api2-${tag}` })]);
    await until(async () => (await workersSeen()).length === 2, 'both workers in GET /health').catch((err: Error) => {
      throw new Error(`${err.message}\n--- worker logs ---\n${[workers.w1, workers.w2].map((w) => w?.logs().slice(-3000)).join('\n---\n')}`);
    });
  });

  after(async () => {
    await Promise.all([...api, workers.w1, workers.w2].map((n) => n?.stop()));
    await Promise.all([redis?.stop(), postgres?.stop(), engine2?.stop()]);
    assert.deepEqual(await containersOf('w1'), [], 'a stopped worker leaves no container on its engine');
    await removeVolumes(`rpc-dist-${tag}-`); // the second engine went with all of its own
    rmSync(wheelhouse, { recursive: true, force: true });
  });

  it('answers 40 executions through two API nodes, correctly, on both workers', async () => {
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => post(api[i % 2]!, '/execute', { code: `print(${i} * ${i})` })),
    );
    const ran = new Set<string>();
    answers.forEach(({ status, body }, i) => {
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.success, true, String(body.error));
      assert.equal(body.result, String(i * i));
      ran.add(String(body.worker));
    });
    assert.deepEqual([...ran].sort(), [ids.w1, ids.w2].sort(), 'both workers should have run some');

    // Any API node answers GET /executions/{id}, naming the worker.
    const { body } = answers[0]!;
    const other = await get(api[1]!, `/executions/${String(body.execution_id)}`);
    assert.equal(other.status, 200);
    assert.equal(other.body.result, '0');
    assert.equal(other.body.worker, body.worker);
  });

  it("holds a tenant's max_concurrent across both API nodes (counted in Redis), below the workers' 4 slots", async () => {
    const code = 'import time\nstart = time.time()\ntime.sleep(1)\nprint(start, time.time())';
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => post(api[i % 2]!, '/execute', { code })));
    const spans = answers.map(({ body }) => String(body.result).split(' ').map(Number) as [number, number]);
    const overlap = Math.max(...spans.map(([start]) => spans.filter(([s, e]) => s <= start && start < e).length));
    assert.ok(overlap <= 3, `${overlap} runs of the tenant overlapped; max_concurrent is 3`);
  });

  it('streams the output through Redis (text/event-stream), and keeps the files a run wrote', async () => {
    const res = await fetch(`${api[0]!.url}/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ code: 'import time\nprint("first", flush=True)\ntime.sleep(0.5)\nprint("second")' }),
    });
    const text = await res.text();
    const events = [...text.matchAll(/^event: (\w+)\ndata: (.*)$/gm)].map((m) => ({ event: m[1], data: JSON.parse(m[2]!) as Record<string, unknown> }));
    assert.deepEqual(events.map((e) => e.event), ['stdout', 'stdout', 'result'], text);
    assert.equal(events.at(-1)!.data.result, 'first\nsecond');

    // The answer comes over another connection than the pieces, and must not overtake the last of them.
    for (let round = 0; round < 20; round++) {
      const burst = await fetch(`${api[round % 2]!.url}/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ code: 'for i in range(300): print(i, flush=True)' }),
      });
      const streamed = [...(await burst.text()).matchAll(/^event: (\w+)\ndata: (.*)$/gm)].map((m) => ({ event: m[1], data: JSON.parse(m[2]!) as Record<string, unknown> }));
      const pieces = streamed.filter((e) => e.event === 'stdout').map((e) => String(e.data.text)).join('');
      assert.equal(pieces, streamed.at(-1)!.data.stdout, `round ${round}: the streamed pieces are the whole stdout`);
    }

    const wrote = await post(api[0]!, '/execute', { code: 'open("made-on-a-worker.txt", "w").write("kept")' });
    assert.equal(wrote.body.success, true, String(wrote.body.error));
    const read = await post(api[0]!, '/execute', { code: 'print(open("made-on-a-worker.txt").read())' });
    assert.equal(read.body.result, 'kept', 'the API node merged the files the worker sent back');
  });

  it("keeps the workspace in PostgreSQL: a file written through one API node is read, run and changed through the other, within the caps", async () => {
    const put = (node: ClusterNode, rel: string, body: Buffer) => fetch(`${node.url}/files/${rel}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body });
    const download = async (node: ClusterNode, rel: string) => {
      const res = await fetch(`${node.url}/files/${rel}`);
      return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
    };
    const listed = async (node: ClusterNode) => ((await get(node, '/files')).body.files as { path: string; size: number }[]).map((f) => [f.path, f.size]);
    const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff, ...Buffer.from('\nnot UTF-8 \u00e9')]);

    const written = await put(api[0]!, 'shared/data.bin', bytes);
    assert.equal(written.status, 201, await written.clone().text());
    assert.deepEqual(await written.json(), { path: 'shared/data.bin', size: bytes.length });
    assert.ok((await listed(api[1]!)).some(([p, size]) => p === 'shared/data.bin' && size === bytes.length), 'listed through the other API node');
    assert.deepEqual((await download(api[1]!, 'shared/data.bin')).bytes, bytes);

    // A run through node 2 reads it; what the run writes is read through node 1.
    const ran = await post(api[1]!, '/execute', {
      code: 'data = open("shared/data.bin", "rb").read()\nopen("shared/out.bin", "wb").write(data[::-1])\nprint(data.hex())',
    });
    assert.equal(ran.body.success, true, String(ran.body.error));
    assert.equal(ran.body.result, bytes.toString('hex'));
    assert.deepEqual((await download(api[0]!, 'shared/out.bin')).bytes, Buffer.from(bytes).reverse());

    // workspace_mb (4 MiB here) counts what both nodes wrote: the second upload is refused whole.
    assert.equal((await put(api[0]!, 'shared/big-1', Buffer.alloc(3 << 20, 1))).status, 201);
    const refused = await put(api[1]!, 'shared/big-2', Buffer.alloc(2 << 20, 2));
    assert.equal(refused.status, 413);
    assert.match(String(((await refused.json()) as { error: string }).error), /workspace is full.*workspace_mb \(4 MiB\)/);
    assert.equal((await download(api[0]!, 'shared/big-2')).status, 404);

    // Deleted through one node, gone on the other (for runs too).
    assert.equal((await fetch(`${api[1]!.url}/files/shared/big-1`, { method: 'DELETE' })).status, 204);
    assert.equal((await download(api[0]!, 'shared/big-1')).status, 404);
    assert.equal((await fetch(`${api[0]!.url}/files/shared`, { method: 'DELETE' })).status, 204);
    assert.deepEqual((await listed(api[1]!)).filter(([p]) => String(p).startsWith('shared/')), []);
    const after = await post(api[0]!, '/execute', { code: 'import os\nprint(os.path.exists("shared"))' });
    assert.equal(after.body.result, 'False', String(after.body.error));
  });

  it("a package installed through one worker imports on the other, whose engine catches up once from its own wheelhouse (phases)", async () => {
    const installed = await post(api[1]!, '/install-package', { package_name: 'rpc-dist-tiny==1.0' });
    assert.equal(installed.status, 200, JSON.stringify(installed.body));
    assert.equal(installed.body.success, true, String(installed.body.error));
    assert.equal(installed.body.phases, undefined, 'nothing was recorded before the first install');
    const [here, there] = installed.body.worker === ids.w1 ? (['w1', 'w2'] as const) : (['w2', 'w1'] as const);
    assert.equal(installed.body.worker, ids[here]);
    const importIt = { code: 'import rpc_dist_tiny\nprint(rpc_dist_tiny.__version__)' };

    // While the worker that installed it is stopped, every job goes to the other one.
    await workers[here]!.stop();
    try {
      const wheel = path.join(wheelhouse, 'rpc_dist_tiny-1.0-py3-none-any.whl');
      renameSync(wheel, `${wheel}.away`);
      try {
        const failed = await post(api[0]!, '/execute', importIt);
        assert.equal(failed.status, 200, JSON.stringify(failed.body));
        assert.equal(failed.body.success, false);
        assert.equal(failed.body.worker, ids[there]);
        assert.match(String(failed.body.error), /did not hold the tenant's installed packages yet, and installing them there failed, so nothing ran: .*rpc-dist-tiny/s);
        assert.deepEqual((failed.body.phases as { packages_catch_up: { installed: unknown[] } }).packages_catch_up.installed, []);
      } finally {
        renameSync(`${wheel}.away`, wheel);
      }
      const first = await post(api[0]!, '/execute', importIt);
      assert.equal(first.body.result, '1.0', String(first.body.error));
      assert.equal(first.body.worker, ids[there]);
      const caughtUp = (first.body.phases as { packages_catch_up: Record<string, unknown> }).packages_catch_up;
      assert.deepEqual({ ...caughtUp, duration_ms: undefined }, { generation: 1, installed: [{ name: 'rpc-dist-tiny', version: '1.0' }], duration_ms: undefined });
      const next = await post(api[1]!, '/execute', importIt);
      assert.equal(next.body.result, '1.0', String(next.body.error));
      assert.equal(next.body.phases, undefined, 'the engine caught up once');
    } finally {
      await restartWorker(here);
    }
    // The engine that installed it holds it already: no catch-up there either.
    for (let tries = 0; ; tries++) {
      assert.ok(tries < 40, `no run went to ${ids[here]} in 40 tries`);
      const { body } = await post(api[0]!, '/execute', importIt);
      if (body.worker !== ids[here]) continue;
      assert.equal(body.result, '1.0', String(body.error));
      assert.equal(body.phases, undefined);
      break;
    }
  });

  it("keeps a context on its worker: state across API nodes, max_contexts across them, get/list on both, streamed calls, a delete seen by the other", async () => {
    // MAX_CONTEXTS is 2: three creations at once through both API nodes make two.
    const created = await Promise.all([0, 1, 0].map((n) => post(api[n]!, '/contexts', {})));
    assert.deepEqual(created.map((c) => c.status).sort(), [201, 201, 429], JSON.stringify(created.map((c) => c.body)));
    const [id, other] = created.filter((c) => c.status === 201).map((c) => String(c.body.context_id)) as [string, string];
    assert.equal(await remove(api[1]!, `/contexts/${other}`), 204);

    const set = await post(api[0]!, '/execute', { code: 'x = 41', context_id: id });
    assert.equal(set.body.success, true, String(set.body.error));
    const read = await post(api[1]!, '/execute', { code: 'print(x + 1)', context_id: id });
    assert.equal(read.body.result, '42', String(read.body.error));
    assert.equal(read.body.worker, set.body.worker, 'both calls ran on the context\'s worker');
    const streamed = await fetch(`${api[1]!.url}/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ code: 'import time\nprint("in", flush=True)\ntime.sleep(0.5)\nprint(x)', context_id: id }),
    });
    const events = [...(await streamed.text()).matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    assert.deepEqual(events, ['stdout', 'stdout', 'result']);

    for (const node of api) {
      const one = await get(node, `/contexts/${id}`);
      assert.equal(one.status, 200, JSON.stringify(one.body));
      assert.equal(one.body.state, 'active');
      assert.equal(one.body.calls, 3);
      const listed = (await get(node, '/contexts')).body.contexts as { context_id: string; state: string }[];
      assert.deepEqual(listed.filter((c) => c.state === 'active').map((c) => c.context_id), [id]);
      assert.equal(listed.find((c) => c.context_id === other)?.state, 'deleted');
    }
    assert.equal((await get(api[0]!, `/contexts/ctx_${'0'.repeat(36)}`)).status, 404);

    assert.equal(await remove(api[1]!, `/contexts/${id}`), 204);
    const after = await post(api[0]!, '/execute', { code: 'print(x)', context_id: id });
    assert.equal(after.status, 410, JSON.stringify(after.body));
    assert.match(String(after.body.error), /was deleted/);
    assert.equal((await get(api[0]!, `/contexts/${id}`)).body.state, 'deleted');
  });

  it('runs declared dependencies on every worker, the engine without the set installing it once', async () => {
    makeWheel(wheelhouse, 'rpc-dist-dep', '2.0');
    const block = (python: string) => `# /// script\n# dependencies = ["rpc-dist-dep==2.0"]\n# requires-python = "${python}"\n# ///\n`;
    const older = await post(api[0]!, '/execute', { code: `${block('<3')}print(1)` });
    assert.equal(older.status, 400, JSON.stringify(older.body));
    assert.match(String(older.body.error), /the sandbox runs Python 3\./, 'the workers report their Python');
    // One API node, so that the set is installed once (each API node keeps its own list of sets).
    const code = `${block('>=3')}import rpc_dist_dep\nprint(rpc_dist_dep.__version__)`;
    const answers: Record<string, unknown>[] = [];
    const ran = (id: string) => answers.filter((a) => a.worker === id).length;
    while (ran(ids.w1) < 2 || ran(ids.w2) < 2) {
      assert.ok(answers.length < 40, 'both workers should have run it twice in 40 tries');
      const { status, body } = await post(api[0]!, '/execute', { code });
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.result, '2.0', String(body.error));
      answers.push(body);
    }
    assert.equal((answers[0]!.dependencies as { cached: boolean }).cached, false);
    const caughtUp = answers.map((a) => (a.phases as { dependencies_catch_up?: { installed: unknown } } | undefined)?.dependencies_catch_up).filter((c) => c !== undefined);
    assert.deepEqual(caughtUp.map((c) => c.installed), [[{ name: 'rpc-dist-dep', version: '2.0' }]], 'the engine that did not install the set caught it up, once');
  });

  it('reports Redis, PostgreSQL and the workers on an API node, the engine and pool on a worker', async () => {
    const health = await get(api[1]!, '/health');
    assert.equal(health.status, 200, JSON.stringify(health.body));
    assert.equal(health.body.role, 'api');
    assert.deepEqual(health.body.redis, { reachable: true });
    assert.deepEqual(health.body.postgres, { reachable: true });
    const seen = health.body.workers as { id: string; slots: number; free: number }[];
    assert.deepEqual(seen.map((w) => w.id).sort(), [ids.w1, ids.w2].sort());
    assert.ok(seen.every((w) => w.slots === 2));
    const own = await get(workers.w2!, '/health');
    assert.equal(own.body.role, 'worker');
    assert.equal((own.body.docker as { reachable: boolean }).reachable, true);
    assert.equal((own.body.sandbox_image as { present: boolean }).present, true);
  });

  it('a client that leaves while its run waits in the queue: the run is cancelled before it starts, and changes nothing', async () => {
    await workers.w2!.stop();
    const connection = redisConnection(redis.url);
    const queue = new Queue(QUEUE_NAME, { connection });
    try {
      // w1's two slots taken: the tenant's third run waits in the queue, where no worker hears a cancel.
      const from = workers.w1!.logs().length;
      const busy = [0, 1].map((i) => post(api[i]!, '/execute', { code: 'import time\ntime.sleep(3)' }));
      await until(() => (workers.w1!.logs().slice(from).match(/"message":"job started"/g) ?? []).length === 2, "both of w1's slots taken");
      const client = new AbortController();
      const left = fetch(`${api[0]!.url}/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code: 'open("ran-after-its-client-left.txt", "w").write("x")' }),
        signal: client.signal,
      }).catch((err: Error) => err);
      await until(async () => (await queue.getWaitingCount()) === 1, 'the third run in the queue');
      client.abort();
      assert.equal(((await left) as Error).name, 'AbortError');
      for (const { body } of await Promise.all(busy)) assert.equal(body.success, true, String(body.error));
      await until(() => /"message":"job cancelled before it ran"/.test(workers.w1!.logs().slice(from)), 'w1 to drop the cancelled run');
      const files = (await get(api[1]!, '/files')).body.files as { path: string }[];
      assert.ok(!files.some((f) => f.path === 'ran-after-its-client-left.txt'), 'the cancelled run never ran');
    } finally {
      await queue.close();
      connection.disconnect(); // the queue leaves a connection it was given open
      await restartWorker('w2');
    }
  });

  it('a worker SIGKILLed mid-run: its jobs are retried on the other, later jobs go there, its contexts are lost (410), its restart reaps its containers', async () => {
    const context = await contextOn('w1');
    const code = 'import time\ntime.sleep(2)\nprint("slept")';
    const started = nextLog(workers.w1!, /"message":"job started"/);
    const inFlight = Array.from({ length: 4 }, (_, i) => post(api[i % 2]!, '/execute', { code, timeout: 20 }));
    await started;
    workers.w1!.child.kill('SIGKILL');
    await workers.w1!.stop();
    const left = (await containersOf('w1')).map((c) => c.Id);
    // Its context's call waits for the worker until Redis no longer sees it (WORKER_LOST_S), then answers 410.
    const lostCall = post(api[1]!, '/execute', { code: 'print(x)', context_id: context });

    for (const { status, body } of await Promise.all(inFlight)) {
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.success, true, String(body.error));
      assert.equal(body.result, 'slept');
      assert.equal(body.worker, ids.w2, 'a killed worker answers nothing: the other one ran it again');
    }
    const later = await Promise.all(Array.from({ length: 4 }, (_, i) => post(api[i % 2]!, '/execute', { code: 'print(1)' })));
    for (const { body } of later) assert.equal(body.worker, ids.w2);
    const lost = await lostCall;
    assert.equal(lost.status, 410, JSON.stringify(lost.body));
    assert.match(String(lost.body.error), /was lost: its worker .* has not been seen/);
    const shown = await get(api[0]!, `/contexts/${context}`);
    assert.equal(shown.body.state, 'lost');
    assert.match(String(shown.body.error), /was lost/);

    assert.ok(left.length > 0, 'the killed worker should have left containers behind');
    workers.w1 = await worker('w1');
    const now = (await containersOf('w1')).map((c) => c.Id);
    assert.deepEqual(now.filter((id) => left.includes(id)), [], 'the restarted worker removed what its killed predecessor left');
    await until(async () => (await workersSeen()).length === 2, 'the restarted worker in GET /health');
  });

  it('Redis restarted mid-load: requests in flight fail with 503, new ones succeed once it is back', async () => {
    const port = new URL(redis.url).port;
    const started = Promise.all([nextLog(workers.w1!, /"message":"job started"/), nextLog(workers.w2!, /"message":"job started"/)]);
    const inFlight = Array.from({ length: 4 }, (_, i) => post(api[i % 2]!, '/execute', { code: 'import time\ntime.sleep(3)\nprint(1)' }));
    await started;
    await redis.stop();
    for (const { status, body } of await Promise.all(inFlight)) {
      assert.equal(status, 503, JSON.stringify(body));
      assert.match(String(body.error), /Redis/);
    }
    redis = await startRedis(Number(port));
    await until(async () => (await workersSeen()).length === 2, 'both workers back in GET /health', 30_000);
    const answers = await Promise.all(Array.from({ length: 4 }, (_, i) => post(api[i % 2]!, '/execute', { code: `print(${i})` })));
    answers.forEach(({ status, body }, i) => {
      assert.equal(status, 200, JSON.stringify(body));
      assert.equal(body.result, String(i));
    });
  });

  it('a context whose worker restarted (within WORKER_LOST_S) is lost: 410 for the call that waited on it and for later ones', async () => {
    const context = await contextOn('w1');
    const started = nextLog(workers.w1!, /"message":"context call started"/);
    const waiting = post(api[0]!, '/execute', { code: 'import time\ntime.sleep(60)', context_id: context, timeout: 90 });
    await started;
    // Killed right after it reported: its restart has all of WORKER_LOST_S to report again, not what was left of it.
    await until(async () => ((await healthWorkers()).find((w) => w.id === ids.w1)?.seen_s_ago ?? Infinity) < 0.5, 'a fresh report of w1');
    workers.w1!.child.kill('SIGKILL');
    await workers.w1!.stop();
    workers.w1 = await worker('w1'); // its start removes its predecessor's containers, the context's with them
    const lost = await waiting;
    assert.equal(lost.status, 410, JSON.stringify(lost.body));
    assert.match(String(lost.body.error), /was lost: its worker .* restarted/);
    const later = await post(api[1]!, '/execute', { code: 'print(x)', context_id: context });
    assert.equal(later.status, 410, JSON.stringify(later.body));
    const listed = (await get(api[1]!, '/contexts')).body.contexts as { context_id: string; state: string }[];
    assert.equal(listed.find((c) => c.context_id === context)?.state, 'lost');
  });
});
