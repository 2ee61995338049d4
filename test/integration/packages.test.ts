import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { containersOf, docker, removeVolumes, startServer, type TestServer } from '../helpers/server.js';
import { makeSdist, makeWheel } from '../helpers/wheels.js';

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

/** Every entry of the tenant's packages volume, as an execution sees it: path, kind, size, mtime. */
async function volumeManifest(server: TestServer): Promise<string> {
  const { body } = await server.post('/execute', {
    code: [
      'import json, os',
      'entries = []',
      'for base, dirs, files in os.walk("/opt/packages"):',
      '    for name in sorted(dirs + files):',
      '        st = os.lstat(os.path.join(base, name))',
      '        entries.append([os.path.join(base, name), st.st_mode, st.st_size, st.st_mtime_ns])',
      'print(json.dumps(sorted(entries)))',
    ].join('\n'),
  });
  assert.equal(body.success, true, String(body.error));
  return String(body.result);
}

/** The disk a volume takes on the engine's host, as the engine measures it. */
async function hostBytes(volume: string): Promise<number> {
  const found = (await docker.df()).Volumes.find((v: { Name: string }) => v.Name === volume);
  assert.ok(found, `no volume ${volume}`);
  return found.UsageData.Size as number;
}

const imports = async (server: TestServer, module: string) =>
  (await server.post('/execute', { code: `import ${module}\nprint(${module}.__version__)` })).body;

describe('the caps on a tenant\'s packages hold during an install', () => {
  const MiB = 1024 * 1024;
  let server: TestServer;
  let wheelhouse: string;
  before(async () => {
    wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
    makeWheel(wheelhouse, 'rpc-tiny', '1.0');
    makeWheel(wheelhouse, 'rpc-bomb', '1.0', 0, { bombBytes: 512 * MiB });
    makeWheel(wheelhouse, 'rpc-big', '1.0', 20 * MiB);
    makeWheel(wheelhouse, 'rpc-empty', '1.0', 0, { emptyFiles: 5000 });
    server = await startServer({ WHEELHOUSE_DIR: wheelhouse, PACKAGES_MAX_MB: '16', PACKAGES_MAX_FILES: '1000' });
    const first = await server.post('/install-package', { package_name: 'rpc-tiny' });
    assert.equal(first.body.success, true, String(first.body.error));
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('a small wheel that unpacks past PACKAGES_MAX_MB fails, leaves the volume exactly as it was, and takes no host disk', async () => {
    assert.ok(statSync(path.join(wheelhouse, 'rpc_bomb-1.0-py3-none-any.whl')).size < 2 * MiB, 'the bomb is small');
    const volume = server.services.volumes.name('default');
    const [manifest, disk] = [await volumeManifest(server), await hostBytes(volume)];
    const { status, body } = await server.post('/install-package', { package_name: 'rpc-bomb' });
    assert.equal(status, 200);
    assert.equal(body.success, false);
    assert.match(String(body.error), /^The install needs more than the 1[0-9] MiB this tenant has left under PACKAGES_MAX_MB \(16 MiB\); nothing was installed$/);
    assert.deepEqual(body.installed, []);
    assert.equal(await volumeManifest(server), manifest, 'the volume changed');
    const grown = (await hostBytes(volume)) - disk;
    assert.ok(grown < 16 * MiB, `the volume grew by ${grown} bytes on the host`);
    assert.equal((await imports(server, 'rpc_tiny')).result, '1.0', 'the earlier install no longer imports');
    assert.match(String((await imports(server, 'rpc_bomb')).error), /ModuleNotFoundError/);
  });

  it('one that fits the scratch area but not the room left is refused before the volume is written', async () => {
    const manifest = await volumeManifest(server);
    const { body } = await server.post('/install-package', { package_name: 'rpc-big' });
    assert.equal(body.success, false);
    assert.match(String(body.error), /^This tenant's packages would come to 2[0-9] MiB, over the cap of 16 MiB \(PACKAGES_MAX_MB\); nothing was installed$/);
    assert.equal(await volumeManifest(server), manifest);
  });

  it('empty files cost inodes: PACKAGES_MAX_FILES holds them the same way', async () => {
    const manifest = await volumeManifest(server);
    const { body } = await server.post('/install-package', { package_name: 'rpc-empty' });
    assert.equal(body.success, false);
    assert.match(String(body.error), /^The install needs more than the \d+ files and directories this tenant has left under PACKAGES_MAX_FILES \(1000\); nothing was installed$/);
    assert.equal(await volumeManifest(server), manifest);
    assert.equal((await imports(server, 'rpc_tiny')).result, '1.0');
  });
});

describe('a source distribution builds where it can write nothing that lasts', () => {
  it('its build sees the packages volume read-only and a capped scratch area; the install gets only its wheel', async () => {
    const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
    makeSdist(wheelhouse, 'rpc-src', '1.0', [
      'import errno, os',
      'try:',
      '    open("/opt/packages/planted.pth", "w")',
      '    built["planted"] = "written"',
      'except OSError as e:',
      '    built["planted"] = errno.errorcode[e.errno]',
      'try:  # fill the scratch area: a build may write for as long as it runs, but only so much',
      '    with open("filler", "wb") as f:',
      '        while True:',
      '            f.write(bytes(1 << 20))',
      '            f.flush()',
      'except OSError as e:',
      '    built["filled"] = errno.errorcode[e.errno]',
      'os.remove("filler")',
    ].join('\n'));
    const server = await startServer({ WHEELHOUSE_DIR: wheelhouse, PACKAGES_MAX_MB: '32' });
    try {
      const { body } = await server.post('/install-package', { package_name: 'rpc-src' });
      assert.equal(body.success, true, `${String(body.error)}\n${String(body.stderr)}`);
      assert.deepEqual(body.installed, [{ name: 'rpc-src', version: '1.0' }]);
      const seen = await server.post('/execute', { code: 'import rpc_src\nprint(rpc_src.__version__, rpc_src.planted, rpc_src.filled)' });
      assert.equal(seen.body.result, '1.0 EROFS ENOSPC');
      const manifest = await volumeManifest(server);
      assert.doesNotMatch(manifest, /planted|filler/);
      assert.ok((await hostBytes(server.services.volumes.name('default'))) < 2 * 1024 * 1024);
    } finally {
      await server.close();
    }
  });
});

describe('packages volumes belong to one deployment', () => {
  const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
  makeWheel(wheelhouse, 'rpc-tiny', '1.0');
  makeWheel(wheelhouse, 'rpc-big', '1.0', 2 * 1024 * 1024);
  // The same prefix for every server here, as on an engine where all run with the default one.
  const shared = { WHEELHOUSE_DIR: wheelhouse, PACKAGES_VOLUME_PREFIX: `rpc-test-${process.pid}-shared-` };
  const servers: TestServer[] = [];
  const start = async (env: Record<string, string> = {}) => {
    const server = await startServer({ ...shared, ...env });
    servers.push(server);
    return server;
  };
  after(async () => {
    for (const server of servers) await server.close({ keepVolumes: true });
    await removeVolumes(shared.PACKAGES_VOLUME_PREFIX);
    for (const server of servers) assert.deepEqual(await server.settle(), []);
  });

  it('two servers on one engine with different deployments do not see each other\'s packages', async () => {
    const [a, b] = [await start(), await start()];
    const installed = await a.post('/install-package', { package_name: 'rpc-tiny' });
    assert.equal(installed.body.success, true, String(installed.body.error));
    assert.equal((await imports(a, 'rpc_tiny')).result, '1.0');
    assert.match(String((await imports(b, 'rpc_tiny')).error), /ModuleNotFoundError: No module named 'rpc_tiny'/);
    assert.deepEqual((await b.get('/packages')).body, { packages: [] });
    const [va, vb] = [a.services.volumes.name('default'), b.services.volumes.name('default')];
    assert.notEqual(va, vb);
    for (const [server, volume] of [[a, va], [b, vb]] as const) {
      const labels = (await docker.getVolume(volume).inspect()).Labels;
      assert.equal(labels['run-python-code.deployment'], server.services.volumes.deployment);
      assert.equal(readFileSync(path.join(server.config.baseDir, 'deployment-id'), 'utf8').trim(), server.services.volumes.deployment);
    }
  });

  it('a restart on the same BASE_DIR is the same deployment: its packages, and its caps over them', async () => {
    const first = await start({ PACKAGES_MAX_MB: '8' });
    const big = await first.post('/install-package', { package_name: 'rpc-big' });
    assert.equal(big.body.success, true, String(big.body.error));
    await first.close({ keepVolumes: true });
    const again = await start({ BASE_DIR: first.config.baseDir, PACKAGES_MAX_MB: '1' });
    assert.notEqual(again.config.instanceId, first.config.instanceId);
    assert.deepEqual((await again.get('/packages')).body, { packages: [{ name: 'rpc-big', version: '1.0' }] });
    const next = await again.post('/install-package', { package_name: 'rpc-tiny' });
    assert.equal(next.body.success, false);
    assert.match(String(next.body.error), /^This tenant's packages already use 2 MiB, over the cap of 1 MiB \(PACKAGES_MAX_MB\)$/);
  });

  it('a volume labelled for another deployment is never mounted: 503, and no container starts', async () => {
    const server = await start();
    const volume = server.services.volumes.name('default');
    await docker.createVolume({ Name: volume, Labels: { 'run-python-code': '1', 'run-python-code.deployment': 'someone-else' } });
    for (const [route, request] of [['/execute', { code: 'print(1)' }], ['/install-package', { package_name: 'rpc-tiny' }]] as const) {
      const { status, body } = await server.post(route, request);
      assert.equal(status, 503, route);
      assert.equal(body.success, false);
      assert.match(String(body.error), new RegExp(`^Docker volume ${volume} is not this server's \\(label run-python-code\\.deployment=someone-else, expected ${server.services.volumes.deployment}\\): another deployment on this engine made it, so it is not mounted`));
    }
    assert.equal((await server.get('/packages')).status, 503);
    assert.deepEqual(await containersOf(server.config.instanceId), []);
  });
});

describe('the operator\'s lists hold through dependencies', () => {
  const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
  makeWheel(wheelhouse, 'goodpkg', '1.0', 0, { requires: ['evilpkg>=0.1'] });
  makeWheel(wheelhouse, 'evilpkg', '0.1');

  const cases: [string, Record<string, string>, string][] = [
    ['PACKAGE_DENYLIST=evilpkg', { PACKAGE_DENYLIST: 'evilpkg' }, 'Package evilpkg may not be installed here (PACKAGE_DENYLIST): goodpkg 1.0 requires it (goodpkg -> evilpkg); nothing was installed'],
    ['PACKAGE_ALLOWLIST=goodpkg', { PACKAGE_ALLOWLIST: 'goodpkg' }, "Package evilpkg is not on this server's PACKAGE_ALLOWLIST: goodpkg 1.0 requires it (goodpkg -> evilpkg); nothing was installed"],
  ];
  for (const [lists, env, error] of cases) {
    it(`with ${lists}, installing goodpkg (which depends on evilpkg) is a 403 that names both, and writes nothing`, async () => {
      const server = await startServer({ WHEELHOUSE_DIR: wheelhouse, ...env });
      try {
        const manifest = await volumeManifest(server);
        const { status, body } = await server.post('/install-package', { package_name: 'goodpkg' });
        assert.equal(status, 403);
        assert.equal(body.error, error);
        assert.equal(await volumeManifest(server), manifest);
        assert.deepEqual((await server.get('/packages')).body, { packages: [] });
      } finally {
        await server.close();
      }
    });
  }

  it('with both on the allow-list, both install', async () => {
    const server = await startServer({ WHEELHOUSE_DIR: wheelhouse, PACKAGE_ALLOWLIST: 'goodpkg,evilpkg' });
    try {
      const { body } = await server.post('/install-package', { package_name: 'goodpkg' });
      assert.equal(body.success, true, String(body.error));
      assert.deepEqual(body.installed, [{ name: 'evilpkg', version: '0.1' }, { name: 'goodpkg', version: '1.0' }]);
    } finally {
      await server.close();
    }
  });
});
