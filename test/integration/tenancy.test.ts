import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { failedStart, spawnServer, type ServerProcess } from '../helpers/process.js';
import { READ_MEMORY_CAP } from '../helpers/snippets.js';
import { containersOf, removeVolumes, startServer, type TestServer } from '../helpers/server.js';
import { makeWheel } from '../helpers/wheels.js';

const hash = (key: string) => `sha256:${createHash('sha256').update(key).digest('hex')}`;
const dir = () => mkdtempSync(path.join(os.tmpdir(), 'rpc-tenancy-'));


function call(url: string, key: string, route: string, body?: unknown) {
  return fetch(url + route, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then(async (res) => ({ status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> }));
}

describe('tenants from a tenants file: isolation and limits', () => {
  let server: TestServer;
  before(async () => {
    const files = dir();
    const wheelhouse = dir();
    makeWheel(wheelhouse, 'rpc-secret', '1.0');
    writeFileSync(
      path.join(files, 'tenants.yaml'),
      [
        'defaults:',
        '  max_timeout_s: 30',
        'tenants:',
        '  alice:',
        `    keys: ["${hash('alice-key')}"]`,
        '    limits:',
        '      memory_mb: 96',
        '  bob:',
        `    keys: ["${hash('bob-key')}", "${hash('bob-second-key')}"]`,
        '    limits:',
        '      may_install: false',
        '      max_code_bytes: 100',
      ].join('\n'),
    );
    server = await startServer({ TENANTS_FILE: path.join(files, 'tenants.yaml'), WHEELHOUSE_DIR: wheelhouse });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('GET /limits shows each caller its own tenant and effective limits', async () => {
    const alice = await call(server.url, 'alice-key', '/limits');
    assert.equal(alice.status, 200);
    assert.equal(alice.body.tenant, 'alice');
    const limits = alice.body.limits as Record<string, unknown>;
    assert.equal(limits.memory_mb, 96);
    assert.equal(limits.max_timeout_s, 30);
    assert.equal(limits.may_install, true);
    const bob = await call(server.url, 'bob-second-key', '/limits');
    assert.equal(bob.body.tenant, 'bob');
    assert.equal((bob.body.limits as Record<string, unknown>).may_install, false);
  });

  it('tenant memory is the memory its containers get (cgroup, from inside), and a request may ask for less', async () => {
    const own = await call(server.url, 'alice-key', '/execute', { code: READ_MEMORY_CAP });
    assert.equal(own.body.result, '96');
    const less = await call(server.url, 'alice-key', '/execute', { code: READ_MEMORY_CAP, memory_mb: 64 });
    assert.equal(less.body.result, '64');
  });

  it('asking for more than a limit is refused with the limit\'s name', async () => {
    const cases: [string, string, unknown, number, RegExp][] = [
      ['alice-key', '/execute', { code: '1', timeout: 31 }, 400, /above this tenant's limit of 30 s \(max_timeout_s\)/],
      ['alice-key', '/execute', { code: '1', memory_mb: 97 }, 400, /memory_mb 97 is above this tenant's limit of 96 MiB \(memory_mb\)/],
      ['bob-key', '/execute', { code: '#'.repeat(101) }, 413, /above this tenant's limit of 100 \(max_code_bytes\)/],
      ['bob-key', '/install-package', { package_name: 'rpc-secret' }, 403, /may not install packages \(may_install\)/],
    ];
    for (const [key, route, body, status, error] of cases) {
      const res = await call(server.url, key, route, body);
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.match(String(res.body.error), error);
    }
  });

  it("no endpoint lets one tenant reach another's files, packages or executions", async () => {
    const saved = await call(server.url, 'alice-key', '/save-and-execute', { file_name: 'private.py', code: 'secret = 42' });
    assert.equal(saved.body.success, true);
    const installed = await call(server.url, 'alice-key', '/install-package', { package_name: 'rpc-secret' });
    assert.equal(installed.body.success, true, String(installed.body.error));

    assert.equal((await call(server.url, 'bob-key', '/run-python-file', { file_name: 'private.py' })).status, 404);
    const listing = await call(server.url, 'bob-key', '/execute', { code: 'import os\nprint(os.listdir("."))' });
    assert.equal(listing.body.result, '[]');
    const overwrite = await call(server.url, 'bob-key', '/save-and-execute', { file_name: 'private.py', code: 'secret = 0', overwrite: false });
    assert.equal(overwrite.body.success, true, 'bob writes his own private.py, not alice\'s');
    const still = await call(server.url, 'alice-key', '/run-python-file', { file_name: 'private.py', variable_to_return: 'secret' });
    assert.equal(still.body.result, '42');

    const bobImports = await call(server.url, 'bob-key', '/execute', { code: 'import rpc_secret' });
    assert.match(String(bobImports.body.error), /ModuleNotFoundError/);
    assert.deepEqual((await call(server.url, 'bob-key', '/packages')).body, { packages: [] });
    assert.deepEqual((await call(server.url, 'alice-key', '/packages')).body, { packages: [{ name: 'rpc-secret', version: '1.0' }] });

    const id = String(saved.body.execution_id);
    const mine = await call(server.url, 'alice-key', `/executions/${id}`);
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.body, saved.body);
    const theirs = await call(server.url, 'bob-key', `/executions/${id}`);
    assert.equal(theirs.status, 404);
    assert.match(String(theirs.body.error), /Execution not found/);
  });
});

describe('back-pressure', () => {
  it('a burst past the concurrency caps and the queue gets 429s; every other request completes; nothing is left', async () => {
    const server = await startServer({ MAX_CONCURRENT: '2', QUEUE_MAX: '2', TENANT_MAX_CONCURRENT: '2' });
    try {
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) => server.post('/execute', { code: `import time\ntime.sleep(1)\nprint(${i})` })),
      );
      const done = answers.filter((a) => a.status === 200);
      const refused = answers.filter((a) => a.status === 429);
      assert.equal(done.length + refused.length, 10);
      assert.ok(done.length >= 4, `only ${done.length} ran`);
      assert.ok(refused.length >= 1, 'no request was refused');
      for (const a of done) assert.equal(a.body.success, true);
      for (const a of refused) assert.match(String(a.body.error), /Too many executions in progress/);
      assert.equal(server.services.admission.inFlight, 0);
      assert.equal(server.services.admission.queued, 0);
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });
});

describe('live limits: SIGHUP and file edits, on the real server process', () => {
  let files: string;
  let limitsFile: string;
  let server: ServerProcess;
  const instance = `test-live-${process.pid}`;
  const writeLimits = (maxTimeout: number, memory: number) =>
    writeFileSync(limitsFile, `defaults:\n  max_timeout_s: ${maxTimeout}\ntenants:\n  alice:\n    memory_mb: ${memory}\n`);

  before(async () => {
    files = dir();
    limitsFile = path.join(files, 'limits.yaml');
    writeFileSync(path.join(files, 'tenants.yaml'), `tenants:\n  alice:\n    keys: ["${hash('alice-key')}"]\n`);
    writeLimits(60, 128);
    server = await spawnServer({
      TENANTS_FILE: path.join(files, 'tenants.yaml'),
      LIMITS_FILE: limitsFile,
      BASE_DIR: dir(),
      INSTANCE_ID: instance,
      PACKAGES_VOLUME_PREFIX: `rpc-${instance}-`,
    });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
    assert.deepEqual(await containersOf(instance), []);
    await removeVolumes(`rpc-${instance}-`);
  });

  it('every execution log line carries the tenant', async () => {
    const res = await call(server.url, 'alice-key', '/execute', { code: 'print(1)' });
    assert.equal(res.body.result, '1');
    const line = await server.waitForLog(new RegExp(`"execution_id":"${String(res.body.execution_id)}"`));
    assert.equal(JSON.parse(line).tenant, 'alice');
    assert.doesNotMatch(line, /print\(1\)/, 'user code is not logged at info');
  });

  it('SIGHUP applies a new limit to the next request while one in flight finishes under the old', async () => {
    const inFlight = call(server.url, 'alice-key', '/execute', { code: `import time\ntime.sleep(2)\n${READ_MEMORY_CAP}`, timeout: 50 });
    await new Promise((r) => setTimeout(r, 700));
    writeLimits(20, 96);
    server.child.kill('SIGHUP');
    await server.waitForLog(/tenants and limits reloaded/);
    const old = await inFlight;
    assert.equal(old.body.success, true, String(old.body.error));
    assert.equal(old.body.result, '128');
    const next = await call(server.url, 'alice-key', '/execute', { code: READ_MEMORY_CAP });
    assert.equal(next.body.result, '96');
    const refused = await call(server.url, 'alice-key', '/execute', { code: '1', timeout: 50 });
    assert.match(String(refused.body.error), /limit of 20 s \(max_timeout_s\)/);
  });

  it('editing the file is enough, and a bad file on reload keeps the limits in force', async () => {
    writeLimits(25, 112);
    for (let i = 0; i < 50; i++) {
      const limits = (await call(server.url, 'alice-key', '/limits')).body.limits as Record<string, unknown>;
      if (limits.memory_mb === 112) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(((await call(server.url, 'alice-key', '/limits')).body.limits as Record<string, unknown>).memory_mb, 112);

    writeFileSync(limitsFile, 'defaults:\n  memory_mb: lots\n');
    server.child.kill('SIGHUP');
    const line = await server.waitForLog(/reload failed; keeping the limits in force/);
    assert.match(line, /defaults\.memory_mb: must be integer/);
    const limits = (await call(server.url, 'alice-key', '/limits')).body.limits as Record<string, unknown>;
    assert.equal(limits.memory_mb, 112);
    assert.equal(limits.max_timeout_s, 25);
  });

  it('a bad limits file at start-up stops the server with a message naming the field', async () => {
    const bad = path.join(dir(), 'limits.yaml');
    writeFileSync(bad, 'tenants:\n  alice:\n    memory_mb: 16\n');
    const { code, output } = await failedStart({ LIMITS_FILE: bad, BASE_DIR: dir() });
    assert.notEqual(code, 0);
    assert.match(output, /limits\.yaml: tenants\.alice\.memory_mb: must be >= 32/);
  });
});
