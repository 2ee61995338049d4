import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../helpers/server.js';
import { makeWheel } from '../helpers/wheels.js';

const ENVELOPE_KEYS = ['error', 'execution_id', 'result', 'success'];

describe('/install-package from a wheelhouse, and /packages', () => {
  let server: TestServer;
  const run = async (code: string) => {
    const { body } = await server.post('/execute', { code });
    assert.equal(body.success, true, `${String(body.error)}\n${String(body.stderr)}`);
    return body.result;
  };

  before(async () => {
    const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
    makeWheel(wheelhouse, 'rpc-tiny', '1.0');
    makeWheel(wheelhouse, 'rpc-tiny', '2.0');
    makeWheel(wheelhouse, 'rpc-other', '0.3');
    server = await startServer({ WHEELHOUSE_DIR: wheelhouse });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('installs a pinned version that later executions import', async () => {
    const { status, body } = await server.post('/install-package', { package_name: 'rpc-tiny==1.0' });
    assert.equal(status, 200);
    assert.equal(body.error, null, String(body.stderr));
    assert.equal(body.success, true);
    assert.equal(body.result, 'successfully installed package rpc-tiny==1.0');
    assert.deepEqual(body.installed, [{ name: 'rpc-tiny', version: '1.0' }]);
    assert.deepEqual(body.package, { name: 'rpc-tiny', version: '1.0' });
    assert.equal(await run('import rpc_tiny\nprint(rpc_tiny.__version__)'), '1.0');
  });

  it('upgrade: false keeps the installed version', async () => {
    const { body } = await server.post('/install-package', { package_name: 'rpc-tiny', upgrade: false });
    assert.equal(body.success, true, String(body.error));
    assert.deepEqual(body.installed, []);
    assert.deepEqual(body.package, { name: 'rpc-tiny', version: '1.0' });
    assert.match(String(body.stdout), /Requirement already satisfied/);
    assert.equal(await run('import rpc_tiny\nprint(rpc_tiny.__version__)'), '1.0');
  });

  it('upgrade: true moves to the newest version', async () => {
    const { body } = await server.post('/install-package', { package_name: 'rpc-tiny', upgrade: true });
    assert.equal(body.success, true, String(body.error));
    assert.deepEqual(body.installed, [{ name: 'rpc-tiny', version: '2.0' }]);
    assert.equal(await run('import rpc_tiny\nprint(rpc_tiny.__version__)'), '2.0');
  });

  it('GET /packages lists what the tenant installed, with versions', async () => {
    const { status, body } = await server.get('/packages');
    assert.equal(status, 200);
    assert.deepEqual(body, { packages: [{ name: 'rpc-tiny', version: '2.0' }] });
  });

  it('an unknown name fails with pip\'s own message', async () => {
    const { status, body } = await server.post('/install-package', { package_name: 'no-such-package-here' });
    assert.equal(status, 200);
    assert.equal(body.success, false);
    assert.equal(body.result, null);
    assert.match(String(body.error), /^ERROR: .*no-such-package-here/m);
    assert.match(String(body.error), /No matching distribution found for no-such-package-here/);
    assert.equal(body.package, null);
  });

  it('concurrent installs of one tenant are serialized and both land', async () => {
    const [a, b] = await Promise.all([
      server.post('/install-package', { package_name: 'rpc-other' }),
      server.post('/install-package', { package_name: 'rpc-tiny==2.0' }),
    ]);
    assert.equal(a.body.success, true, String(a.body.error));
    assert.equal(b.body.success, true, String(b.body.error));
    assert.equal(await run('import rpc_other, rpc_tiny\nprint(rpc_other.__version__, rpc_tiny.__version__)'), '0.3 2.0');
  });

  it('after an install, executions still have no network and the image\'s numpy still imports', async () => {
    const result = await run(
      'import socket, numpy, rpc_tiny\nprint(sorted(n for _, n in socket.if_nameindex()), numpy.__version__ != "", rpc_tiny.__version__)',
    );
    assert.equal(result, "['lo'] True 2.0");
  });

  it('executions cannot change the installed packages (read-only)', async () => {
    const result = await run(
      'import glob, rpc_tiny\ntry:\n    open(rpc_tiny.__file__, "w")\n    print("writable")\nexcept OSError as e:\n    print(e.errno)',
    );
    assert.equal(result, '30');
  });

  const refused: [string, string | unknown, RegExp][] = [
    ['a pip option', '--index-url http://127.0.0.1:1/simple', /pip options are not accepted/],
    ['a requirements file', '-r requirements.txt', /pip options are not accepted/],
    ['an editable path', '-e .', /pip options are not accepted/],
    ['a URL', 'https://127.0.0.1/evil-1.0-py3-none-any.whl', /URLs and direct references/],
    ['a direct reference', 'evil @ https://127.0.0.1/evil.whl', /URLs and direct references/],
    ['a relative path', './evil', /paths are not accepted/],
    ['an absolute path', '/tmp/evil.whl', /paths are not accepted/],
    ['several names', 'numpy pandas', /expected one requirement/],
    ['a marker', 'numpy; python_version > "3"', /environment markers/],
    ['shell metacharacters', 'numpy && id', /expected one requirement/],
    ['a command substitution', 'x$(id)', /expected one requirement/],
    ['a pipe', 'numpy|sh', /expected one requirement/],
    ['backticks', '`id`', /expected one requirement/],
    ['a newline', 'numpy\nos', /expected one requirement/],
    ['an over-long string', 'a'.repeat(201), /package_name/],
    ['an unclosed extra', 'pandas[excel', /expected one requirement/],
    ['the wrong type', 42, /body\.package_name: must be string/],
  ];
  for (const [name, packageName, error] of refused) {
    it(`refuses ${name} with a 400 and starts no container`, async () => {
      const runs = server.runs();
      const { status, body } = await server.post('/install-package', { package_name: packageName });
      assert.equal(status, 400);
      assert.deepEqual(Object.keys(body).sort(), ENVELOPE_KEYS);
      assert.equal(body.success, false);
      assert.match(String(body.error), error);
      assert.equal(server.runs(), runs, 'a refused install started a container');
    });
  }
});

describe('operator allow-list and deny-list', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ PACKAGE_DENYLIST: 'Evil_Pkg', PACKAGE_ALLOWLIST: 'numpy,evil-pkg' });
  });
  after(() => server.close());

  it('a denied name is a 403 (names compared after PEP 503 normalization)', async () => {
    const { status, body } = await server.post('/install-package', { package_name: 'evil.pkg>=1' });
    assert.equal(status, 403);
    assert.match(String(body.error), /evil-pkg may not be installed here \(PACKAGE_DENYLIST\)/);
  });

  it('a name off the allow-list is a 403', async () => {
    const { status, body } = await server.post('/install-package', { package_name: 'requests' });
    assert.equal(status, 403);
    assert.match(String(body.error), /requests is not on this server's PACKAGE_ALLOWLIST/);
    assert.equal(server.runs(), 0);
  });
});

describe('the cap on a tenant\'s packages', () => {
  it('refuses installs once PACKAGES_MAX_MB is reached', async () => {
    const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
    makeWheel(wheelhouse, 'rpc-big', '1.0', 2 * 1024 * 1024);
    makeWheel(wheelhouse, 'rpc-tiny', '1.0');
    const server = await startServer({ WHEELHOUSE_DIR: wheelhouse, PACKAGES_MAX_MB: '1' });
    try {
      const big = await server.post('/install-package', { package_name: 'rpc-big' });
      assert.equal(big.body.success, true, String(big.body.error));
      const next = await server.post('/install-package', { package_name: 'rpc-tiny' });
      assert.equal(next.body.success, false);
      assert.match(String(next.body.error), /already use 2 MiB, over the cap of 1 MiB \(PACKAGES_MAX_MB\)/);
    } finally {
      await server.close();
    }
  });
});
