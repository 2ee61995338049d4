import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { hostileCorpus } from '../helpers/hostile.js';
import { docker, startServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';
import { makeWheel } from '../helpers/wheels.js';

const hash = (key: string) => createHash('sha256').update(key).digest('hex');

/** The hostile corpus once more, for a tenant whose runtime is runsc (gVisor), and what shows it is gVisor. */
describe('gVisor (runsc) tenants', () => {
  it('runsc is registered with the engine (sandbox-image/host-setup.sh --test registers it)', async () => {
    const info = (await docker.info()) as { Runtimes?: Record<string, { runtimeArgs?: string[] }> };
    assert.ok(info.Runtimes?.runsc, 'runsc is not registered: run bash sandbox-image/host-setup.sh --test');
    assert.ok(info.Runtimes.runsc.runtimeArgs?.includes('--network=none'), 'runsc must be registered with --network=none');
  });

  it("runs under gVisor's kernel, with no capabilities, as the sandbox user, nothing left behind", async () => {
    const server = await startServer({ SANDBOX_RUNTIMES: 'runc,runsc', SANDBOX_RUNTIME: 'runsc' });
    try {
      const code = [
        'import os, platform, subprocess',
        'status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)',
        'boot = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()[0]',
        'print(platform.release(), os.getuid(), status["CapEff"].strip(), status["CapBnd"].strip(), boot.split("] ", 1)[1])',
      ].join('\n');
      const { body } = await server.post('/execute', { code });
      assert.equal(body.success, true, String(body.error));
      assert.equal(body.result, '4.4.0 10001 0000000000000000 0000000000000000 Starting gVisor...');
      const limits = await server.get('/limits');
      assert.equal((limits.body.limits as Record<string, unknown>).runtime, 'runsc');
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it('per tenant, warm: a runsc and a runc tenant on one server each get their kernel from the pool, and a limits edit moves one to gVisor', async () => {
    const files = mkdtempSync(path.join(os.tmpdir(), 'rpc-gvisor-'));
    writeFileSync(path.join(files, 'tenants.yaml'), `tenants:\n  walled:\n    keys: ["${hash('walled-key')}"]\n    limits:\n      runtime: runsc\n  plain:\n    keys: ["${hash('plain-key')}"]\n`);
    const limitsFile = path.join(files, 'limits.yaml');
    writeFileSync(limitsFile, 'tenants: {}\n');
    const server = await startServer({
      SANDBOX_RUNTIMES: 'runc,runsc', POOL_SIZE: '1', PRELOAD_MODULES: '',
      TENANTS_FILE: path.join(files, 'tenants.yaml'), LIMITS_FILE: limitsFile,
    });
    const call = async (key: string, route: string, body?: unknown) => {
      const res = await fetch(server.url + route, {
        method: body ? 'POST' : 'GET',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return (await res.json()) as Record<string, unknown>;
    };
    const release = (key: string) => call(key, '/execute', { code: 'import platform\nprint(platform.release())' }).then((b) => String(b.result));
    try {
      await until(() => server.sandbox.ready() === 2, "both tenants' pools to fill");
      assert.equal(await release('walled-key'), '4.4.0');
      assert.notEqual(await release('plain-key'), '4.4.0');
      assert.equal(server.sandbox.pool!.stats().hits, 2, 'both came warm');
      writeFileSync(limitsFile, 'tenants:\n  plain:\n    runtime: runsc\n');
      await until(async () => ((await call('plain-key', '/limits')).limits as Record<string, unknown>).runtime === 'runsc', 'the reload');
      assert.equal(await release('plain-key'), '4.4.0');
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it("a gVisor tenant's installs from a wheelhouse (no network) run under gVisor too, and its code then imports the package", async () => {
    const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-gvisor-wheels-'));
    makeWheel(wheelhouse, 'rpc-walled', '1.0');
    const server = await startServer({ SANDBOX_RUNTIMES: 'runc,runsc', SANDBOX_RUNTIME: 'runsc', WHEELHOUSE_DIR: wheelhouse });
    const runtimes: string[] = [];
    const run = server.sandbox.run.bind(server.sandbox);
    server.sandbox.run = (job) => {
      runtimes.push(`${job.mode}:${job.limits.runtime}`);
      return run(job);
    };
    try {
      const installed = await server.post('/install-package', { package_name: 'rpc-walled' });
      assert.equal(installed.body.success, true, String(installed.body.error));
      const { body } = await server.post('/execute', { code: 'import rpc_walled, platform\nprint(platform.release())' });
      assert.equal(body.result, '4.4.0', String(body.error));
      assert.deepEqual(runtimes, ['resolve:runsc', 'install:runsc', 'code:runsc']);
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });
});

hostileCorpus('runsc');
