import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../server/config.js';
import { ServiceError } from '../../server/errors.js';
import { projectRoot } from '../../server/project.js';
import { Admission } from '../../server/tenancy/admission.js';
import { loadTenants, RegistryError } from '../../server/tenancy/tenant-registry.js';
import { DiskWorkspaceStore } from '../../server/workspace/disk-workspace-store.js';

const readme = readFileSync(path.join(projectRoot, 'README.md'), 'utf8');
const block = (name: string) => {
  const match = new RegExp('`' + name.replace('.', '\\.') + '`:\\n\\n```yaml\\n([\\s\\S]*?)```').exec(readme);
  assert.ok(match, `README has no ${name} example`);
  return match[1]!;
};

function files(tenants: string, limits?: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-tenants-'));
  writeFileSync(path.join(dir, 'tenants.yaml'), tenants);
  if (limits !== undefined) writeFileSync(path.join(dir, 'limits.yaml'), limits);
  return loadConfig({
    BASE_DIR: dir,
    TENANTS_FILE: path.join(dir, 'tenants.yaml'),
    ...(limits !== undefined ? { LIMITS_FILE: path.join(dir, 'limits.yaml') } : {}),
  });
}

describe('tenants and limits files', () => {
  it("the README's example works as written", () => {
    const tenants = loadTenants(files(block('tenants.yaml'), block('limits.yaml')));
    const shown = /curl -s localhost:8083\/limits -H 'Authorization: Bearer bob-secret-key'\n# (.*)\n/.exec(readme);
    assert.ok(shown);
    const bob = tenants.get('bob')!;
    assert.deepEqual({ tenant: bob.id, limits: bob.limits }, JSON.parse(shown[1]!));
    assert.equal(tenants.get('alice')!.limits.memory_mb, 1024);
    assert.equal(tenants.get('alice')!.limits.requests_per_minute, 600);
  });

  const bad: [string, string, string | undefined, RegExp][] = [
    ['a wrong type', 'tenants:\n  a:\n    keys: ["' + 'a'.repeat(64) + '"]\n    limits:\n      memory_mb: lots\n', undefined, /tenants\.yaml: tenants\.a\.limits\.memory_mb: must be integer/],
    ['an unknown limit', 'defaults:\n  memroy_mb: 5\n', undefined, /tenants\.yaml: defaults: must NOT have additional properties \(memroy_mb\)/],
    ['a key that is not a hash', 'tenants:\n  a:\n    keys: ["plain-text-key"]\n', undefined, /tenants\.a\.keys\.0: must match pattern/],
    ['a tenant without keys', 'tenants:\n  a: {}\n', undefined, /tenants\.a: must have required property 'keys'/],
    ['a limit out of range', 'tenants: {}\n', 'tenants:\n  a:\n    cpus: 0\n', /limits\.yaml: tenants\.a\.cpus: must be >= 0\.01/],
    ['broken YAML', 'tenants: [\n', undefined, /tenants\.yaml: /],
    ['an empty file (which must not open the server)', '', undefined, /tenants\.yaml: no tenants with keys/],
    ['a file whose tenants are all commented out', '# tenants:\n#   alice: ...\n', undefined, /no tenants with keys/],
    ...['.', '..', '-x', '_x', '.hidden'].map((name): [string, string, string | undefined, RegExp] => [
      `a tenant named ${name} (its folder would not be its own)`,
      `tenants:\n  '${name}':\n    keys: ["${'a'.repeat(64)}"]\n`, undefined, new RegExp(`tenants\\.yaml: tenants: tenant name "${name.replace(/\./g, '\\.')}" is not allowed: it must start with a letter or a digit`),
    ]),
    ['the same in the limits file', 'tenants: {}\n', "tenants:\n  '..':\n    cpus: 1\n", /limits\.yaml: tenants: tenant name "\.\." is not allowed/],
    ['a runtime the settings do not allow (SANDBOX_RUNTIMES is runc alone)', `tenants:\n  a:\n    keys: ["${'a'.repeat(64)}"]\n    limits:\n      runtime: runsc\n`, undefined, /tenant a: runtime runsc is not one of SANDBOX_RUNTIMES \(runc\)/],
    ['a runtime that does not exist', 'tenants: {}\n', 'tenants:\n  a:\n    runtime: crun\n', /limits\.yaml: tenants\.a\.runtime: must be equal to one of the allowed values/],
    ['an egress list entry that is an IP literal', 'tenants: {}\n', 'tenants:\n  a:\n    egress: ["10.0.0.1"]\n', /limits\.yaml: tenants\.a\.egress\.0: must match pattern/],
  ];
  for (const [name, tenants, limits, message] of bad) {
    it(`refuses ${name}, naming the field`, () => {
      assert.throws(() => loadTenants(files(tenants, limits)), (err: Error) => err instanceof RegistryError && message.test(err.message));
    });
  }
});

describe('DiskWorkspaceStore', () => {
  it('opens only direct children of the workspaces folder, and retries an open that failed', async () => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'rpc-ws-'));
    const store = new DiskWorkspaceStore(base);
    for (const name of ['.', '..', 'a/b', '']) assert.throws(() => store.for(name), /unsafe tenant id/);
    writeFileSync(path.join(base, 'workspaces'), 'a file where the folder should be');
    await assert.rejects(store.for('t1'), /EEXIST|ENOTDIR/);
    rmSync(path.join(base, 'workspaces'));
    assert.equal(path.basename((await store.for('t1')).root), 't1', 'the failure was not remembered');
  });
});

describe('Admission', () => {
  const gate = () => {
    let open!: () => void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    return { promise, open };
  };

  it('runs up to the global cap and queues the rest in order', async () => {
    const admission = new Admission({ globalCap: 2, queueMax: 10, queueTimeoutMs: 5000 });
    const gates = [gate(), gate(), gate()];
    const order: number[] = [];
    const runs = gates.map((g, i) => admission.run(`t${i}`, 5, async () => {
      order.push(i);
      await g.promise;
    }));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [0, 1]);
    assert.equal(admission.queued, 1);
    gates[0]!.open();
    await runs[0];
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [0, 1, 2]);
    gates[1]!.open();
    gates[2]!.open();
    await Promise.all(runs);
    assert.equal(admission.inFlight, 0);
  });

  it("a tenant at its own cap waits without holding up another tenant", async () => {
    const admission = new Admission({ globalCap: 10, queueMax: 10, queueTimeoutMs: 5000 });
    const hold = gate();
    const a1 = admission.run('a', 1, () => hold.promise);
    const a2 = admission.run('a', 1, async () => 'a2');
    const b = await admission.run('b', 1, async () => 'b');
    assert.equal(b, 'b');
    assert.equal(admission.queued, 1);
    hold.open();
    assert.equal(await a2, 'a2');
    await a1;
  });

  it('refuses with 429 and Retry-After past the queue, and after waiting too long', async () => {
    const admission = new Admission({ globalCap: 1, queueMax: 1, queueTimeoutMs: 100 });
    const hold = gate();
    const running = admission.run('a', 5, () => hold.promise);
    const waiting = admission.run('a', 5, async () => 'late');
    await assert.rejects(admission.run('a', 5, async () => 'never'), (err: ServiceError) => err.status === 429 && (err.retryAfterS ?? 0) >= 1 && /queue is full/.test(err.message));
    await assert.rejects(waiting, /no slot within 0.1 s/);
    hold.open();
    await running;
    assert.equal(admission.inFlight, 0);
  });

  it('releases the slot when the task throws', async () => {
    const admission = new Admission({ globalCap: 1, queueMax: 0, queueTimeoutMs: 100 });
    await assert.rejects(admission.run('a', 1, async () => {
      throw new Error('boom');
    }), /boom/);
    assert.equal(await admission.run('a', 1, async () => 'again'), 'again');
  });
});

describe('runtimes of tenants', () => {
  const dir = () => mkdtempSync(path.join(os.tmpdir(), 'rpc-runtimes-'));
  const tenant = (limits: string) => `tenants:\n  a:\n    keys: ["${'a'.repeat(64)}"]\n    limits:\n${limits}`;
  const load = (yaml: string, env: Record<string, string>) => {
    const d = dir();
    writeFileSync(path.join(d, 'tenants.yaml'), yaml);
    return loadTenants(loadConfig({ BASE_DIR: d, TENANTS_FILE: path.join(d, 'tenants.yaml'), ...env }));
  };

  it('a tenant may take any runtime SANDBOX_RUNTIMES names; the default is SANDBOX_RUNTIME', () => {
    const env = { SANDBOX_RUNTIMES: 'runc,runsc', SANDBOX_RUNTIME: 'runsc' };
    assert.equal(load(tenant('      runtime: runc\n'), env).get('a')!.limits.runtime, 'runc');
    assert.equal(load(tenant('      memory_mb: 64\n'), env).get('a')!.limits.runtime, 'runsc');
  });

  it('refuses gVisor with an egress list: runsc is registered without a network', () => {
    assert.throws(
      () => load(tenant('      runtime: runsc\n      egress: [pypi.org]\n'), { SANDBOX_RUNTIMES: 'runc,runsc' }),
      /tenant a: egress needs runtime runc/,
    );
  });

  it('refuses settings whose default runtime they do not allow', () => {
    assert.throws(() => loadConfig({ BASE_DIR: dir(), SANDBOX_RUNTIME: 'runsc', SANDBOX_RUNTIMES: 'runc' }), /SANDBOX_RUNTIME \(runsc\) is not one of SANDBOX_RUNTIMES \(runc\)/);
    assert.throws(() => loadConfig({ BASE_DIR: dir(), SANDBOX_RUNTIME: 'crun' }), /SANDBOX_RUNTIME="crun": expected one of runc, runsc/);
  });
});
