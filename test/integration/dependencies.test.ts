import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { containersOf, docker, startServer, type TestServer } from '../helpers/server.js';
import { asTenant, tenantsFile } from '../helpers/tenants.js';
import { makeWheel } from '../helpers/wheels.js';

type Body = Record<string, unknown>;
const block = (...lines: string[]) => ['# /// script', ...lines.map((l) => `# ${l}`), '# ///', ''].join('\n');

describe('dependencies declared in the code or the request', () => {
  let server: TestServer;
  let wheelhouse: string;
  let tenants: string;
  const depsVolumes = async () =>
    ((await docker.listVolumes()).Volumes ?? []).filter((v) => v.Name.startsWith(`${server.config.packagesVolumePrefix}deps-`)).map((v) => v.Name);

  before(async () => {
    wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-deps-wheels-'));
    makeWheel(wheelhouse, 'rpc-tiny', '1.0');
    makeWheel(wheelhouse, 'rpc-tiny', '2.0');
    makeWheel(wheelhouse, 'rpc-leaf', '0.5');
    makeWheel(wheelhouse, 'rpc-needs', '1.0', 0, { requires: ['rpc-leaf>=0.5'] });
    makeWheel(wheelhouse, 'rpc-own', '3.0');
    tenants = tenantsFile({ alice: '', bob: '' });
    server = await startServer({ WHEELHOUSE_DIR: wheelhouse, TENANTS_FILE: tenants });
  });
  after(async () => {
    await server.close();
    rmSync(wheelhouse, { recursive: true, force: true });
    rmSync(path.dirname(tenants), { recursive: true, force: true });
    assert.deepEqual(await containersOf(server.config.instanceId), []);
    assert.deepEqual(await depsVolumes(), [], 'the test removes what it made');
  });

  it('a PEP 723 block makes the run see its packages; the second run installs nothing', async () => {
    const code = `${block('dependencies = ["rpc-needs>=1"]', 'requires-python = ">=3.8"')}import rpc_needs, rpc_leaf\nprint(rpc_needs.__version__, rpc_leaf.__version__)`;
    const first = await asTenant(server.url, 'alice-key', '/execute', { code });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.success, true, JSON.stringify(first.body));
    assert.equal(first.body.result, '1.0 0.5');
    assert.deepEqual(first.body.dependencies, {
      requested: ['rpc-needs>=1'],
      installed: [{ name: 'rpc-leaf', version: '0.5' }, { name: 'rpc-needs', version: '1.0' }],
      cached: false,
    });
    const second = await asTenant(server.url, 'alice-key', '/execute', { code });
    assert.equal(second.body.result, '1.0 0.5');
    assert.deepEqual(second.body.dependencies, { requested: ['rpc-needs>=1'], installed: [], cached: true });
  });

  it('the same set in another tenant is installed for it, apart', async () => {
    const code = `${block('dependencies = ["rpc-needs>=1"]')}import rpc_needs\nprint(rpc_needs.__version__)`;
    const asBob = await asTenant(server.url, 'bob-key', '/execute', { code });
    assert.equal(asBob.body.result, '1.0');
    assert.equal((asBob.body.dependencies as Body).cached, false);
    assert.equal((await depsVolumes()).length, 2, "one volume for alice's set, one for bob's");
  });

  it('the request field works too, and the tenant’s own packages stay visible underneath', async () => {
    const own = await asTenant(server.url, 'alice-key', '/install-package', { package_name: 'rpc-own' });
    assert.equal(own.body.success, true, JSON.stringify(own.body));
    const run = await asTenant(server.url, 'alice-key', '/execute', {
      code: 'import rpc_tiny, rpc_own\nprint(rpc_tiny.__version__, rpc_own.__version__)',
      dependencies: ['rpc-tiny==1.0'],
    });
    assert.equal(run.body.result, '1.0 3.0', JSON.stringify(run.body));
    const saved = await asTenant(server.url, 'alice-key', '/save-and-execute', {
      file_name: 'dep.py',
      code: `${block('dependencies = ["rpc-tiny==2.0"]')}import rpc_tiny\nprint(rpc_tiny.__version__)`,
    });
    assert.equal(saved.body.result, '2.0', 'each set sees its own version');
    const put = await fetch(`${server.url}/files/pinned.py`, {
      method: 'PUT',
      headers: { authorization: 'Bearer alice-key' },
      body: `${block('dependencies = ["rpc-tiny==2.0"]')}import rpc_tiny\nprint(rpc_tiny.__version__)`,
    });
    assert.ok(put.ok);
    const file = await asTenant(server.url, 'alice-key', '/run-python-file', { file_name: 'pinned.py' });
    assert.equal(file.body.result, '2.0');
    assert.equal((file.body.dependencies as Body).cached, true, 'the set of the file is the one saved before');
  });

  it('refuses options, too many entries, a Python that does not fit, and a context', async () => {
    const option = await asTenant(server.url, 'alice-key', '/execute', { code: 'print(1)', dependencies: ['--index-url x'] });
    assert.equal(option.status, 400);
    assert.match(option.body.error as string, /Invalid dependencies\[0\] "--index-url x": pip options are not accepted/);
    const url = await asTenant(server.url, 'alice-key', '/execute', { code: `${block('dependencies = ["x @ https://example.invalid/x.whl"]')}print(1)` });
    assert.equal(url.status, 400);
    assert.match(url.body.error as string, /script block dependencies\[0\].*URLs and direct references/);
    const many = await asTenant(server.url, 'alice-key', '/execute', { code: 'print(1)', dependencies: Array.from({ length: 33 }, (_, i) => `p${i}`) });
    assert.equal(many.status, 400);
    const python = await asTenant(server.url, 'alice-key', '/execute', { code: `${block('requires-python = ">=3.99"')}print(1)` });
    assert.equal(python.status, 400);
    assert.match(python.body.error as string, /requires Python >=3\.99 .*the sandbox runs Python 3\.\d+\.\d+/);
    const ctx = await asTenant(server.url, 'alice-key', '/contexts', {});
    const inContext = await asTenant(server.url, 'alice-key', '/execute', { code: 'print(1)', dependencies: ['rpc-tiny'], context_id: ctx.body.context_id });
    assert.equal(inContext.status, 400);
    await fetch(`${server.url}/contexts/${ctx.body.context_id as string}`, { method: 'DELETE', headers: { authorization: 'Bearer alice-key' } });
  });

  it("a set pip cannot resolve answers success: false with pip's ERROR lines, and runs nothing", async () => {
    const failed = await asTenant(server.url, 'alice-key', '/execute', {
      code: 'open("ran.txt", "w").write("it ran")\nprint("it ran")',
      dependencies: ['rpc-missing>=1'],
    });
    assert.equal(failed.status, 200);
    assert.equal(failed.body.success, false);
    assert.match(failed.body.error as string, /could not be installed, so the code did not run: ERROR: /);
    assert.deepEqual(failed.body.dependencies, { requested: ['rpc-missing>=1'], installed: [], cached: false });
    assert.equal((await fetch(`${server.url}/files/ran.txt`, { headers: { authorization: 'Bearer alice-key' } })).status, 404);
  });
});

describe('sets of dependencies kept within PACKAGES_MAX_MB', () => {
  it('removes the least recently used set past the cap; a later run installs it again', async () => {
    const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-deps-lru-'));
    makeWheel(wheelhouse, 'rpc-big-a', '1.0', 1200 * 1024);
    makeWheel(wheelhouse, 'rpc-big-b', '1.0', 1200 * 1024);
    const server = await startServer({ WHEELHOUSE_DIR: wheelhouse, PACKAGES_MAX_MB: '2' });
    const sets = async () => ((await docker.listVolumes()).Volumes ?? []).filter((v) => v.Name.startsWith(`${server.config.packagesVolumePrefix}deps-`)).length;
    try {
      const run = async (name: string) => (await server.post('/execute', { code: `import ${name.replace(/-/g, '_')}\nprint(1)`, dependencies: [name] })).body;
      assert.equal((await run('rpc-big-a')).result, '1');
      assert.equal(((await run('rpc-big-a')).dependencies as Body).cached, true);
      assert.equal(((await run('rpc-big-b')).dependencies as Body).cached, false);
      assert.equal(await sets(), 1, 'the two sets together are past 2 MiB: the older one was removed');
      const again = await run('rpc-big-a');
      assert.equal(again.result, '1');
      assert.equal((again.dependencies as Body).cached, false, 'removed, so installed again');
    } finally {
      await server.close();
      rmSync(wheelhouse, { recursive: true, force: true });
    }
  });
});
