import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawnServer } from '../helpers/process.js';
import { containersOf, removeVolumes, startServer, type TestServer } from '../helpers/server.js';
import { asTenant, tenantsFile } from '../helpers/tenants.js';
import { until } from '../helpers/until.js';

type Body = Record<string, unknown>;

async function request(url: string, method: string, route: string, body?: unknown, key?: string) {
  const res = await fetch(url + route, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text ? JSON.parse(text) : {}) as Body };
}

describe('contexts: state kept between calls, ended honestly', () => {
  let server: TestServer;
  const create = async (body: Body = {}) => {
    const res = await server.post('/contexts', body);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body.context_id as string;
  };
  const run = (context_id: string, code: string, extra: Body = {}) => server.post('/execute', { code, context_id, ...extra });
  const remove = (id: string) => request(server.url, 'DELETE', `/contexts/${id}`);

  before(async () => {
    server = await startServer({ MAX_CONTEXTS: '3' });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await containersOf(server.config.instanceId), []);
  });

  it('keeps variables, imports and objects across three calls, with the same envelope as an execution', async () => {
    const id = await create();
    assert.match(id, /^ctx_[0-9a-f]{36}$/);
    const first = await run(id, 'import math\nclass Box:\n    pass\nb = Box()\nb.n = 1\nx = 40');
    assert.equal(first.body.success, true, JSON.stringify(first.body));
    const second = await run(id, 'x += 1\nb.n += 1\nprint(math.floor(math.pi))');
    assert.equal(second.body.result, '3');
    const third = await run(id, 'display({"n": b.n})\nx + b.n');
    assert.equal(third.status, 200);
    assert.equal(third.body.success, true);
    assert.equal(third.body.value, '43');
    assert.ok((third.body.outputs as Body[]).some((o) => o.source === 'display'), 'display() is an output in a context too');
    const figure = await run(id, 'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])');
    assert.deepEqual((figure.body.outputs as Body[]).map((o) => [o.mime, o.source]), [['image/png', 'figure']]);
    assert.deepEqual((await run(id, 'print(1)')).body.outputs, [], "a figure is its call's output, not every later one's");
    const info = await server.get(`/contexts/${id}`);
    assert.equal(info.body.state, 'active');
    assert.equal(info.body.calls, 5);
    assert.equal((await remove(id)).status, 204);
  });

  it('streams a call as Server-Sent Events, and variable_to_return works', async () => {
    const id = await create();
    await run(id, 'name = "ctx"');
    const res = await fetch(`${server.url}/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ code: 'print("hello", name)\nout = name * 2', context_id: id, variable_to_return: 'out' }),
    });
    const text = await res.text();
    assert.match(text, /event: stdout\ndata: \{"text":"hello ctx\\n"\}/);
    const result = JSON.parse(/event: result\ndata: (.*)\n/.exec(text)![1]!) as Body;
    assert.equal(result.result, 'ctxctx');
    await remove(id);
  });

  it('syncs the workspace after each call, and sees files written since', async () => {
    const id = await create();
    const wrote = await run(id, 'open("from-context.txt", "w").write("kept")');
    assert.equal(wrote.body.success, true);
    const file = await fetch(`${server.url}/files/from-context.txt`);
    assert.equal(await file.text(), 'kept');
    const put = await fetch(`${server.url}/files/later.txt`, { method: 'PUT', body: 'new' });
    assert.ok(put.ok);
    const read = await run(id, 'open("later.txt").read()');
    assert.equal(read.body.value, "'new'");
    const saved = await server.post('/save-and-execute', { file_name: 'step.py', code: 'y = 7\nprint(y * 6)', context_id: id });
    assert.equal(saved.body.result, '42');
    const ran = await server.post('/run-python-file', { file_name: 'step.py', context_id: id, variable_to_return: 'y' });
    assert.equal(ran.body.result, '7');
    await remove(id);
  });

  it('a deleted context answers 410 "deleted", and GET shows its state', async () => {
    const id = await create();
    assert.equal((await remove(id)).status, 204);
    const call = await run(id, 'print(1)');
    assert.equal(call.status, 410);
    assert.match(call.body.error as string, new RegExp(`Context ${id} was deleted`));
    const info = await server.get(`/contexts/${id}`);
    assert.equal(info.body.state, 'deleted');
    assert.match(info.body.error as string, /was deleted/);
    assert.equal((await remove(id)).status, 410);
  });

  it('deleting a context stops the call running in it, which says why', async () => {
    const id = await create();
    const running = run(id, 'import time\ntime.sleep(30)', { timeout: 60 });
    await until(async () => (await server.get(`/contexts/${id}`)).body.busy === true, 'the call to start');
    assert.equal((await remove(id)).status, 204);
    const stopped = await running;
    assert.equal(stopped.body.success, false);
    assert.match(stopped.body.error as string, new RegExp(`while it ran: Context ${id} was deleted`));
  });

  it('expires after idle_timeout_s and then answers 410 "expired"', async () => {
    const id = await create({ idle_timeout_s: 2 });
    await run(id, 'x = 1');
    await new Promise((r) => setTimeout(r, 3000));
    const call = await run(id, 'x');
    assert.equal(call.status, 410);
    assert.match(call.body.error as string, /expired after 2 s idle: its state is gone; create a new one/);
    assert.equal((await server.get(`/contexts/${id}`)).body.state, 'expired');
  });

  it('asking for more than the limits is a 400 naming them', async () => {
    const limits = (await server.get('/limits')).body.limits as Body;
    assert.equal(limits.max_contexts, 3);
    assert.equal(limits.context_idle_s, 600);
    assert.equal(limits.context_max_s, 3600);
    const idle = await server.post('/contexts', { idle_timeout_s: 601 });
    assert.equal(idle.status, 400);
    assert.match(idle.body.error as string, /context_idle_s/);
    const id = await create();
    const memory = await run(id, 'print(1)', { memory_mb: 64 });
    assert.equal(memory.status, 400);
    assert.match(memory.body.error as string, /memory_mb cannot be given with context_id/);
    await remove(id);
  });

  it('an OOM fails that call with the OOM error; the next call answers 410 "OOM-killed"', async () => {
    const id = await create({ memory_mb: 64 });
    await run(id, 'x = 1');
    const oom = await run(id, 'blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))');
    assert.equal(oom.body.success, false);
    assert.equal(oom.body.oom_killed, true);
    assert.match(oom.body.error as string, /OOM-killed \(limit 64 MiB\).*the context is lost/);
    const next = await run(id, 'x');
    assert.equal(next.status, 410);
    assert.match(next.body.error as string, new RegExp(`Context ${id} was OOM-killed \\(limit 64 MiB\\)`));
    assert.equal((await server.get(`/contexts/${id}`)).body.state, 'lost');
  });

  it('a timeout interrupts the call and keeps the context; code that will not stop loses it', async () => {
    const id = await create();
    await run(id, 'kept = "yes"');
    const slow = await run(id, 'import time\nwhile True:\n    time.sleep(0.05)', { timeout: 1 });
    assert.equal(slow.body.timed_out, true);
    assert.match(slow.body.traceback as string, /KeyboardInterrupt/);
    assert.match(slow.body.error as string, /the context keeps its state/);
    assert.equal((await run(id, 'kept')).body.value, "'yes'");
    const stubborn = await run(id, 'import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass', { timeout: 1 });
    assert.equal(stubborn.body.timed_out, true);
    assert.match(stubborn.body.error as string, /the context is lost/);
    const next = await run(id, 'kept');
    assert.equal(next.status, 410);
    assert.match(next.body.error as string, /did not stop within \d+ s of being interrupted/);
  });

  it('os._exit in a context: it died, and says so', async () => {
    const id = await create();
    const died = await run(id, 'import os\nos._exit(3)');
    assert.equal(died.body.success, false);
    const next = await run(id, 'print(1)');
    assert.equal(next.status, 410);
    assert.match(next.body.error as string, /died/);
  });

  it('runs two calls to one context one after the other', async () => {
    const id = await create();
    const code = 'import time\nstart = time.time()\ntime.sleep(1)\n(start, time.time())';
    const [a, b] = await Promise.all([run(id, code), run(id, code)]);
    const spans = [a, b].map((r) => JSON.parse((r.body.value as string).replace('(', '[').replace(')', ']')) as [number, number]);
    spans.sort((p, q) => p[0] - q[0]);
    assert.ok(spans[1]![0] >= spans[0]![1], `the second call started after the first ended: ${JSON.stringify(spans)}`);
    await remove(id);
  });

  it('max_contexts + 1 is a 429 that says which limit; unknown ids are 404', async () => {
    const ids = [await create(), await create(), await create()];
    const over = await server.post('/contexts', {});
    assert.equal(over.status, 429);
    assert.match(over.body.error as string, /max_contexts 3/);
    const listed = (await server.get('/contexts')).body.contexts as Body[];
    assert.equal(listed.filter((c) => c.state === 'active').length, 3);
    for (const id of ids) await remove(id);
    const unknown = await run('ctx_0000000000000000000000000000000000000', 'print(1)');
    assert.equal(unknown.status, 404);
    assert.equal((await server.get('/contexts/nope')).status, 404);
  });
});

describe('contexts across tenants and restarts', () => {
  it("tenant B gets 404 for A's context, live or ended", async () => {
    const tenants = tenantsFile({ alice: '', bob: '' });
    const server = await startServer({ TENANTS_FILE: tenants });
    try {
      const created = await asTenant(server.url, 'alice-key', '/contexts', {});
      const id = created.body.context_id as string;
      const asBob = await asTenant(server.url, 'bob-key', '/execute', { code: 'print(1)', context_id: id });
      assert.equal(asBob.status, 404);
      assert.equal((await request(server.url, 'GET', `/contexts/${id}`, undefined, 'bob-key')).status, 404);
      assert.equal((await request(server.url, 'DELETE', `/contexts/${id}`, undefined, 'bob-key')).status, 404);
      assert.equal((await request(server.url, 'DELETE', `/contexts/${id}`, undefined, 'alice-key')).status, 204);
      assert.equal((await asTenant(server.url, 'bob-key', '/execute', { code: 'print(1)', context_id: id })).status, 404);
      const listed = await asTenant(server.url, 'bob-key', '/contexts');
      assert.deepEqual(listed.body.contexts, []);
    } finally {
      await server.close();
      rmSync(path.dirname(tenants), { recursive: true, force: true });
    }
  });

  it('ends a context at context_max_s however busy it is kept, and says so', async () => {
    const server = await startServer({ CONTEXT_MAX_S: '3' });
    try {
      const id = (await server.post('/contexts', {})).body.context_id as string;
      for (let i = 0; i < 2; i += 1) {
        assert.equal((await server.post('/execute', { code: 'import time\ntime.sleep(1)', context_id: id })).body.success, true);
      }
      await new Promise((r) => setTimeout(r, 1500));
      const call = await server.post('/execute', { code: 'print(1)', context_id: id });
      assert.equal(call.status, 410);
      assert.match(call.body.error as string, /expired after 3 s, the longest a context lives \(context_max_s\)/);
    } finally {
      await server.close();
    }
  });

  it('a restart removes the contexts; their ids answer 410, not 404', async () => {
    const baseDir = mkdtempSync(path.join(os.tmpdir(), 'rpc-ctx-restart-'));
    const first = await startServer({ BASE_DIR: baseDir });
    const id = (await first.post('/contexts', {})).body.context_id as string;
    await first.close({ keepVolumes: true });
    const second = await startServer({ BASE_DIR: baseDir, PACKAGES_VOLUME_PREFIX: first.config.packagesVolumePrefix });
    try {
      const call = await second.post('/execute', { code: 'print(1)', context_id: id });
      assert.equal(call.status, 410);
      assert.match(call.body.error as string, /lost when the server restarted/);
    } finally {
      await second.close();
      rmSync(baseDir, { recursive: true, force: true });
    }
  });

  it('SIGTERM leaves no context container', async () => {
    const instance = `test-ctx-sigterm-${process.pid}`;
    const baseDir = mkdtempSync(path.join(os.tmpdir(), 'rpc-ctx-'));
    const server = await spawnServer({
      INSTANCE_ID: instance,
      BASE_DIR: baseDir,
      PACKAGES_VOLUME_PREFIX: `rpc-${instance}-`,
      POOL_SIZE: '0',
    });
    try {
      for (let i = 0; i < 2; i += 1) {
        const res = await request(server.url, 'POST', '/contexts', {});
        assert.equal(res.status, 201);
      }
      await until(async () => (await containersOf(instance)).length === 2, 'two context containers');
      assert.equal(await server.stop(), 0);
      assert.deepEqual(await containersOf(instance), []);
    } finally {
      await server.stop();
      await removeVolumes(`rpc-${instance}-`);
      rmSync(baseDir, { recursive: true, force: true });
    }
  });
});
