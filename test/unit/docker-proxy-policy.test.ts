import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkContainerCreate, checkNetworkCreate, checkVolumeCreate, routeRequest, type ProxyPolicy } from '../../server/docker-proxy/policy.js';
import { PackagesVolumes } from '../../server/packages/volume.js';
import { containerSpec, type SpecInput } from '../../server/sandbox/container-spec.js';

const policy: ProxyPolicy = {
  sandboxImage: 'run-python-code-sandbox:latest',
  sandboxRuntime: 'runc',
  sandboxRuntimes: [],
  packagesVolumePrefix: 'run-python-code-packages-',
  installNetwork: 'bridge',
  egressNetwork: 'run-python-code-egress',
  maxMemoryMb: 16384,
  maxPids: 4096,
};
const volumes = new PackagesVolumes(policy.packagesVolumePrefix, 'host-8083');
const limits = { runtime: 'runc' as const, timeoutS: 5, memoryMb: 256, cpus: 0.5, pids: 64, outputBytes: 1000, workspaceMb: 10, tmpMb: 8, nofile: 100, maxFiles: 10, maxOutputs: 16, outputsBytes: 1 << 20 };
const input: SpecInput = {
  image: policy.sandboxImage,
  instanceId: 'host-8083',
  executionId: '5f0c3a52-8f3e-4c57-9d0b-1b2c3d4e5f60',
  limits,
  packagesVolume: volumes.name('default'),
};

/** The body docker-modem sends: the create options as JSON (with `name`, which it also puts in the query). */
function body(spec = containerSpec(input)): Record<string, unknown> {
  return JSON.parse(JSON.stringify(spec)) as Record<string, unknown>;
}

/** A sandbox body with one change made to it. */
function changed(change: (b: Record<string, unknown>, host: Record<string, unknown>) => void): Record<string, unknown> {
  const b = body();
  change(b, b.HostConfig as Record<string, unknown>);
  return b;
}

describe('docker proxy policy: container bodies', () => {
  it('allows every container the server makes: executions, installs, wheelhouse installs, gVisor', () => {
    assert.equal(checkContainerCreate(body(), policy), null);
    assert.equal(checkContainerCreate(body(containerSpec({ ...input, packagesWritable: true, network: 'bridge' })), policy), null);
    assert.equal(checkContainerCreate(body(containerSpec({ ...input, packagesWritable: true, wheelhouseMb: 64 })), policy), null);
    const scratch = { mb: 4160, inodes: 210_000 };
    assert.equal(checkContainerCreate(body(containerSpec({ ...input, packagesWritable: true, wheelhouseMb: 64, scratch })), policy), null);
    const gvisor: ProxyPolicy = { ...policy, sandboxRuntimes: ['runc', 'runsc'] };
    assert.equal(checkContainerCreate(body(containerSpec({ ...input, limits: { ...limits, runtime: 'runsc' } })), gvisor), null);
  });

  it('allows a run with a set of dependencies read-only at /opt/deps, and nothing else there', () => {
    const set = volumes.depsName('default', 'f'.repeat(64));
    const run = body(containerSpec({ ...input, depsVolume: set }));
    assert.equal(checkContainerCreate(run, policy), null);
    assert.equal(checkContainerCreate(body(containerSpec({ ...input, packagesVolume: set, packagesWritable: true })), policy), null, 'its install');
    const mounts = (run.HostConfig as { Mounts: Record<string, unknown>[] }).Mounts;
    mounts[1]!.ReadOnly = false;
    assert.match(checkContainerCreate(run, policy) ?? '', /at \/opt\/deps must be a set of dependencies, read-only/);
    mounts[1]!.ReadOnly = true;
    mounts[1]!.Source = volumes.name('other');
    assert.match(checkContainerCreate(run, policy) ?? '', /at \/opt\/deps must be a set of dependencies/);
    mounts[1]!.Source = set;
    mounts.reverse();
    assert.match(checkContainerCreate(run, policy) ?? '', /must be the packages volume, then maybe a set of dependencies/);
  });

  it('allows a warm container that preloads: its one variable, module names only', () => {
    const warm = body(containerSpec({ ...input, preload: ['numpy', 'pandas', 'matplotlib.pyplot'] }));
    assert.deepEqual(warm.Env, ['RUNNER_PRELOAD=numpy,pandas,matplotlib.pyplot']);
    assert.equal(checkContainerCreate(warm, policy), null);
  });

  const refusals: [string, (b: Record<string, unknown>, h: Record<string, unknown>) => void, RegExp][] = [
    ['privileged', (_b, h) => (h.Privileged = true), /Privileged must be false/],
    ['a bind of the host', (_b, h) => (h.Binds = ['/:/host']), /HostConfig\.Binds is not allowed/],
    ['a bind mount', (_b, h) => (h.Mounts = [{ Type: 'bind', Source: '/', Target: '/opt/packages', ReadOnly: false }]), /Type must be "volume"/],
    ['a volume with driver options (a bind in disguise)', (_b, h) => ((h.Mounts as Record<string, unknown>[])[0]!.VolumeOptions = { DriverConfig: { Name: 'local', Options: { o: 'bind', device: '/' } } }), /VolumeOptions is not allowed/],
    ['another volume', (_b, h) => ((h.Mounts as Record<string, unknown>[])[0]!.Source = 'postgres-data'), /Source must be a volume of the form run-python-code-packages-<deployment key>-<tenant>/],
    ['a packages volume without its deployment key', (_b, h) => ((h.Mounts as Record<string, unknown>[])[0]!.Source = 'run-python-code-packages-default'), /Source must be a volume of the form/],
    ['a capability', (_b, h) => (h.CapAdd = ['SYS_ADMIN']), /CapAdd is not allowed/],
    ['capabilities kept', (_b, h) => (h.CapDrop = ['NET_RAW']), /CapDrop must be \["ALL"\]/],
    ['the host network', (_b, h) => (h.NetworkMode = 'host'), /NetworkMode must be one of "none", "bridge"/],
    ['the host pid namespace', (_b, h) => (h.PidMode = 'host'), /PidMode is not allowed/],
    ['the host ipc namespace', (_b, h) => (h.IpcMode = 'host'), /IpcMode must be "private"/],
    ['a device', (_b, h) => (h.Devices = [{ PathOnHost: '/dev/sda', PathInContainer: '/dev/sda', CgroupPermissions: 'rwm' }]), /Devices is not allowed/],
    ['seccomp off', (_b, h) => (h.SecurityOpt = ['no-new-privileges', 'seccomp=unconfined']), /SecurityOpt must be/],
    ['another security option', (_b, h) => (h.SecurityOpt = ['apparmor=unconfined']), /SecurityOpt\[0\] must be no-new-privileges or seccomp/],
    ['a writable root', (_b, h) => (h.ReadonlyRootfs = false), /ReadonlyRootfs must be true/],
    ['no memory cap', (_b, h) => delete h.Memory, /HostConfig\.Memory is required/],
    ['swap', (_b, h) => (h.MemorySwap = -1), /MemorySwap must be a whole number/],
    ['swap above memory', (_b, h) => (h.MemorySwap = (h.Memory as number) * 2), /MemorySwap must equal Memory/],
    ['no pids cap', (_b, h) => (h.PidsLimit = 0), /PidsLimit must be a whole number from 1/],
    ['a tmpfs over /etc', (_b, h) => ((h.Tmpfs as Record<string, string>)['/etc'] = 'size=1m'), /Tmpfs key "\/etc"/],
    ['a tmpfs without a size', (_b, h) => ((h.Tmpfs as Record<string, string>)['/tmp'] = 'rw,nosuid'), /with a size/],
    ['another runtime', (_b, h) => (h.Runtime = 'runc-debug'), /Runtime must be one of "runc"/],
    ['no runtime', (_b, h) => delete h.Runtime, /HostConfig\.Runtime is required/],
    ['an RLIMIT_NPROC under runc (it counts the uid across containers)', (_b, h) => (h.Ulimits as unknown[]).push({ Name: 'nproc', Soft: 10, Hard: 10 }), /nproc is for runsc only/],
    ['another image', (b) => (b.Image = 'alpine:latest'), /Image must be "run-python-code-sandbox:latest"/],
    ['root', (b) => (b.User = '0:0'), /User must be "10001:10001"/],
    ['no user', (b) => delete b.User, /body\.User is required/],
    ['a command of its own', (b) => (b.Cmd = ['sh', '-c', 'id']), /body\.Cmd is not allowed/],
    ['an entrypoint of its own', (b) => (b.Entrypoint = ['sh']), /body\.Entrypoint is not allowed/],
    ['any other variable', (b) => (b.Env = ['LD_PRELOAD=/x']), /body\.Env\[0\] must be RUNNER_PRELOAD= and up to 32 comma-separated module names/],
    ['another variable beside the preload one', (b) => (b.Env = ['RUNNER_PRELOAD=numpy', 'PYTHONPATH=/tmp']), /body\.Env must be a list of 1 to 1 entries/],
    ['an empty environment list', (b) => (b.Env = []), /body\.Env must be a list of 1 to 1 entries/],
    ['a preload of a path', (b) => (b.Env = ['RUNNER_PRELOAD=../../tmp/x']), /body\.Env\[0\] must be RUNNER_PRELOAD=/],
    ['a preload that is code', (b) => (b.Env = ['RUNNER_PRELOAD=os;os.system("id")']), /body\.Env\[0\] must be RUNNER_PRELOAD=/],
    ['an empty preload', (b) => (b.Env = ['RUNNER_PRELOAD=']), /body\.Env\[0\] must be RUNNER_PRELOAD=/],
    ['a preload with an empty name', (b) => (b.Env = ['RUNNER_PRELOAD=numpy,,pandas']), /body\.Env\[0\] must be RUNNER_PRELOAD=/],
    ['too many preloads', (b) => (b.Env = [`RUNNER_PRELOAD=${Array.from({ length: 33 }, (_, i) => `m${i}`).join(',')}`]), /body\.Env\[0\] must be RUNNER_PRELOAD=/],
    ['a variable that is not a string', (b) => (b.Env = [{ RUNNER_PRELOAD: 'numpy' }]), /body\.Env\[0\] must be RUNNER_PRELOAD=/],
    ['no run-python-code label', (b) => (b.Labels = { other: '1' }), /Labels/],
    ['a name that is not ours', (b) => (b.name = 'postgres'), /name must start run-python-code-/],
    ['a prototype key', (b) => Object.defineProperty(b, '__proto__', { value: { Privileged: true }, enumerable: true }), /__proto__ is not allowed/],
  ];
  for (const [what, change, reason] of refusals) {
    it(`refuses ${what}`, () => {
      const problem = checkContainerCreate(changed(change), policy);
      assert.ok(problem, 'allowed');
      assert.match(problem, reason);
    });
  }

  it('bounds the caps: memory, swap, shm and pids above the proxy maximum are refused', () => {
    const small = { ...policy, maxMemoryMb: 128, maxPids: 32 };
    assert.match(checkContainerCreate(body(), small) ?? '', /Memory must be a whole number from 1 to 134217728 \(DOCKER_PROXY_MAX_MEMORY_MB\)/);
    assert.match(checkContainerCreate(body(), { ...policy, maxPids: 32 }) ?? '', /PidsLimit must be a whole number from 1 to 32 under runtime runc \(DOCKER_PROXY_MAX_PIDS\)/);
    assert.match(checkContainerCreate(changed((_b, h) => (h.ShmSize = 2 ** 40)), policy) ?? '', /ShmSize must be a whole number/);
  });

  it('requires what every sandbox has: no logs kept, ulimits, tmpfs sizes, the packages mount', () => {
    for (const key of ['LogConfig', 'Ulimits', 'Tmpfs', 'Mounts', 'ShmSize']) {
      assert.match(checkContainerCreate(changed((_b, h) => delete h[key]), policy) ?? '', new RegExp(`HostConfig\\.${key} is required`));
    }
    assert.match(checkContainerCreate(changed((_b, h) => (h.LogConfig = { Type: 'json-file' })), policy) ?? '', /LogConfig\.Type must be "none"/);
  });

  it('holds gVisor: with SANDBOX_RUNTIME=runsc alone a runc container is refused', () => {
    assert.match(checkContainerCreate(body(), { ...policy, sandboxRuntime: 'runsc' }) ?? '', /HostConfig\.Runtime must be one of "runsc"/);
  });

  it('under runsc: no seccomp profile of ours, host pids within the headroom of the maximum, nproc required', () => {
    const gvisor: ProxyPolicy = { ...policy, sandboxRuntime: 'runsc', maxPids: 64 };
    const spec = body(containerSpec({ ...input, limits: { ...limits, runtime: 'runsc' } }));
    assert.equal(checkContainerCreate(spec, gvisor), null);
    const host = spec.HostConfig as Record<string, unknown>;
    const withOurs = { ...spec, HostConfig: { ...host, SecurityOpt: body().HostConfig && (body().HostConfig as Record<string, unknown>).SecurityOpt } };
    assert.match(checkContainerCreate(withOurs, gvisor) ?? '', /SecurityOpt must be \["no-new-privileges"\] under runtime runsc/);
    const noNproc = { ...spec, HostConfig: { ...host, Ulimits: (host.Ulimits as { Name: string }[]).filter((u) => u.Name !== 'nproc') } };
    assert.match(checkContainerCreate(noNproc, gvisor) ?? '', /must hold nproc/);
    const tooMany = { ...spec, HostConfig: { ...host, PidsLimit: 6 * 64 + 257 } };
    assert.match(checkContainerCreate(tooMany, gvisor) ?? '', /PidsLimit must be a whole number from 1 to 640 under runtime runsc/);
    const runcSeccomp = changed((_b, h) => (h.SecurityOpt = ['no-new-privileges']));
    assert.match(checkContainerCreate(runcSeccomp, policy) ?? '', /SecurityOpt must be .*seccomp.* under runtime runc/);
  });

  it('an egress sandbox: the egress network, with no DNS; Dns nowhere else, no other network', () => {
    const egress = body(containerSpec({ ...input, network: policy.egressNetwork, egress: true }));
    assert.deepEqual((egress.HostConfig as Record<string, unknown>).Dns, ['127.0.0.1']);
    assert.equal(checkContainerCreate(egress, policy), null);
    const host = egress.HostConfig as Record<string, unknown>;
    const withoutDns = { ...host };
    delete withoutDns.Dns;
    assert.match(checkContainerCreate({ ...egress, HostConfig: withoutDns }, policy) ?? '', /Dns is required on the egress network/);
    assert.match(checkContainerCreate({ ...egress, HostConfig: { ...host, Dns: ['10.0.0.53'] } }, policy) ?? '', /Dns must be \["127\.0\.0\.1"\]/);
    assert.match(checkContainerCreate(changed((_b, h) => (h.Dns = ['127.0.0.1'])), policy) ?? '', /Dns is for the egress network only/);
    assert.match(checkContainerCreate(changed((_b, h) => (h.NetworkMode = 'other-internal')), policy) ?? '', /NetworkMode must be one of "none", "bridge", "run-python-code-egress"/);
  });

  it('the egress network alone may be made (internal, no traffic between containers, ours), inspected and removed', () => {
    const network = { Name: policy.egressNetwork, CheckDuplicate: true, Internal: true, Labels: { 'run-python-code': '1' }, Options: { 'com.docker.network.bridge.enable_icc': 'false' } };
    assert.equal(checkNetworkCreate(network, policy), null);
    assert.match(checkNetworkCreate({ ...network, Internal: false }, policy) ?? '', /Internal must be true/);
    assert.match(checkNetworkCreate({ ...network, Name: 'bridge2' }, policy) ?? '', /Name must be "run-python-code-egress"/);
    assert.match(checkNetworkCreate({ ...network, Options: { 'com.docker.network.bridge.enable_icc': 'true' } }, policy) ?? '', /enable_icc must be "false"/);
    assert.match(checkNetworkCreate({ ...network, Driver: 'macvlan' }, policy) ?? '', /Driver is not allowed/);
    assert.match(checkNetworkCreate({ ...network, Labels: {} }, policy) ?? '', /Labels must carry run-python-code=1/);
    assert.equal(routeRequest('GET', `/networks/${policy.egressNetwork}`, policy).kind, 'forward');
    assert.equal(routeRequest('DELETE', `/networks/${policy.egressNetwork}`, policy).kind, 'forward');
    assert.equal(routeRequest('POST', '/networks/create', policy).kind, 'create-network');
    assert.match(JSON.stringify(routeRequest('DELETE', '/networks/bridge', policy)), /only the egress network/);
    assert.match(JSON.stringify(routeRequest('POST', `/networks/${policy.egressNetwork}/connect`, policy)), /not one the server makes/);
  });

  it('refuses bodies that are not objects', () => {
    for (const b of [null, [], 'x', 1]) assert.match(checkContainerCreate(b, policy) ?? '', /body must be an object/);
  });
});

describe('docker proxy policy: volumes', () => {
  const labels = { 'run-python-code': '1', ...volumes.labels };

  it('allows a packages volume as the server makes it: its deployment\'s key in the name, the deployment in a label', () => {
    assert.match(volumes.name('default'), /^run-python-code-packages-[0-9a-f]{12}-default$/);
    assert.equal(checkVolumeCreate({ Name: volumes.name('default'), Labels: labels }, policy), null);
    assert.equal(checkVolumeCreate({ Name: volumes.name('a.b_c-9'), Labels: labels }, policy), null);
    assert.equal(checkVolumeCreate({ Name: volumes.depsName('default', 'a'.repeat(64)), Labels: labels }, policy), null, 'a set of dependencies');
    const other = new PackagesVolumes(policy.packagesVolumePrefix, 'elsewhere');
    assert.match(checkVolumeCreate({ Name: other.depsName('default', 'a'.repeat(64)), Labels: labels }, policy) ?? '', /must carry the key of its/);
  });

  it('refuses any other volume', () => {
    const other = new PackagesVolumes(policy.packagesVolumePrefix, 'another-deployment');
    const refusals: [string, unknown, RegExp][] = [
      ['another name', { Name: 'etc', Labels: labels }, /Name must be a name of the form run-python-code-packages-<deployment key>-<tenant>/],
      ['a name without a deployment key', { Name: 'run-python-code-packages-default', Labels: labels }, /Name must be a name of the form/],
      ['no labels', { Name: volumes.name('x') }, /body\.Labels is required/],
      ['no deployment label', { Name: volumes.name('x'), Labels: { 'run-python-code': '1' } }, /must carry run-python-code\.deployment/],
      ['another deployment\'s key', { Name: other.name('x'), Labels: labels }, /Name must carry the key of its run-python-code\.deployment label/],
      ['driver options', { Name: volumes.name('x'), Labels: labels, DriverOpts: { type: 'none', o: 'bind', device: '/' } }, /DriverOpts is not allowed/],
      ['a driver', { Name: volumes.name('x'), Labels: labels, Driver: 'local' }, /Driver is not allowed/],
    ];
    for (const [what, volume, reason] of refusals) assert.match(checkVolumeCreate(volume, policy) ?? '', reason, what);
  });
});

describe('docker proxy policy: routes', () => {
  const kind = (method: string, url: string) => routeRequest(method, url, policy);
  const id = '0123456789abcdef'.repeat(4);

  it('routes the calls the server makes, with only the query parameters each may carry', () => {
    assert.deepEqual(kind('GET', '/version'), { kind: 'forward', target: '/version' });
    assert.deepEqual(kind('HEAD', '/_ping'), { kind: 'forward', target: '/_ping' });
    assert.deepEqual(kind('GET', '/images/run-python-code-sandbox:latest/json'), { kind: 'forward', target: '/images/run-python-code-sandbox:latest/json' });
    const list = '/containers/json?all=true&filters=%7B%22label%22%3A%5B%22run-python-code.instance%3Dh-1%22%5D%7D';
    assert.deepEqual(kind('GET', list), { kind: 'forward', target: list });
    // docker-modem repeats the body in the query; only the name goes on (platform would be honoured).
    assert.deepEqual(kind('POST', '/containers/create?name=run-python-code-e1&Image=whatever&platform=linux%2Farm64'), {
      kind: 'create-container',
      target: '/containers/create?name=run-python-code-e1',
    });
    assert.deepEqual(kind('POST', `/containers/${id}/attach?stream=true&stdin=true&logs=true&hijack=true`), {
      kind: 'container', id, remove: false, attach: true, target: `/containers/${id}/attach?stream=true&stdin=true`,
    });
    // start's checkpoint-dir names a host path: dropped.
    assert.deepEqual(kind('POST', `/containers/${id}/start?checkpoint-dir=/var/lib/docker/volumes/x/_data`), {
      kind: 'container', id, remove: false, attach: false, target: `/containers/${id}/start`,
    });
    assert.deepEqual(kind('POST', `/containers/${id}/kill?signal=SIGKILL`), { kind: 'container', id, remove: false, attach: false, target: `/containers/${id}/kill?signal=SIGKILL` });
    assert.deepEqual(kind('POST', `/containers/${id}/wait`), { kind: 'container', id, remove: false, attach: false, target: `/containers/${id}/wait` });
    assert.deepEqual(kind('GET', `/containers/${id}/json`), { kind: 'container', id, remove: false, attach: false, target: `/containers/${id}/json` });
    assert.deepEqual(kind('DELETE', `/containers/${id}?force=true&v=true&link=true`), { kind: 'container', id, remove: true, attach: false, target: `/containers/${id}?force=true&v=true` });
    assert.deepEqual(kind('POST', '/volumes/create?Name=x'), { kind: 'create-volume', target: '/volumes/create' });
    const set = volumes.depsName('default', 'b'.repeat(64));
    assert.deepEqual(kind('DELETE', `/volumes/${set}`), { kind: 'forward', target: `/volumes/${set}` });
    assert.deepEqual(kind('DELETE', `/volumes/${volumes.name('default')}`), { kind: 'refuse', reason: 'only a set of dependencies may be removed' });
  });

  it('refuses everything else', () => {
    const refused: [string, string][] = [
      ['POST', `/v1.23/containers/${id}/start`], // old API: a start body becomes a new HostConfig
      ['GET', '/v1.41/version'],
      ['GET', '/containers/01234567/json'], // an id prefix could come to mean another container
      ['GET', '/containers/run-python-code-e1/json'], // so could a name
      ['POST', `/containers/${id}/exec`],
      ['POST', '/exec/abc/start'],
      ['POST', '/build'],
      ['POST', '/images/create?fromImage=alpine'],
      ['GET', '/images/alpine:latest/json'],
      ['GET', '/containers/json'],
      ['GET', '/containers/json?filters=%7B%22name%22%3A%5B%22x%22%5D%7D'],
      ['GET', '/info'],
      ['GET', '/events'],
      ['POST', `/containers/${id}/update`],
      ['POST', `/containers/${id}/archive`],
      ['PUT', `/containers/${id}/archive?path=/`],
      ['GET', `/containers/${id}/logs`],
      ['DELETE', '/volumes/run-python-code-packages-default'],
      ['POST', '/swarm/init'],
      ['GET', `/containers/${id}/../../info`],
      ['GET', '//containers/json'],
      ['GET', `/containers/${id}%2F..%2F..%2Finfo/json`],
      ['POST', '/containers/create?name=postgres'],
      ['POST', '/containers/create?x=1;name=postgres'],
      ['POST', '/containers/create?#&platform=linux/arm64'], // Go reads past a '#', URL does not
      ['GET', '/Containers/json?all=true'],
    ];
    for (const [method, url] of refused) {
      const route = kind(method, url);
      assert.equal(route.kind, 'refuse', `${method} ${url} was let through: ${JSON.stringify(route)}`);
    }
  });
});
