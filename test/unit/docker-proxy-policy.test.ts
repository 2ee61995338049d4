import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkContainerCreate, checkVolumeCreate, routeRequest, type ProxyPolicy } from '../../server/docker-proxy/policy.js';
import { containerSpec, type SpecInput } from '../../server/sandbox/container-spec.js';

const policy: ProxyPolicy = {
  sandboxImage: 'run-python-code-sandbox:latest',
  sandboxRuntime: '',
  packagesVolumePrefix: 'run-python-code-packages-',
  installNetwork: 'bridge',
};
const limits = { timeoutS: 5, memoryMb: 256, cpus: 0.5, pids: 64, outputBytes: 1000, workspaceMb: 10, tmpMb: 8, nofile: 100, maxFiles: 10 };
const input: SpecInput = {
  image: policy.sandboxImage,
  runtime: '',
  instanceId: 'host-8083',
  executionId: '5f0c3a52-8f3e-4c57-9d0b-1b2c3d4e5f60',
  limits,
  packagesVolume: 'run-python-code-packages-default',
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
    const gvisor = { ...policy, sandboxRuntime: 'runsc' };
    assert.equal(checkContainerCreate(body(containerSpec({ ...input, runtime: 'runsc' })), gvisor), null);
  });

  const refusals: [string, (b: Record<string, unknown>, h: Record<string, unknown>) => void, RegExp][] = [
    ['privileged', (_b, h) => (h.Privileged = true), /Privileged must be false/],
    ['a bind of the host', (_b, h) => (h.Binds = ['/:/host']), /HostConfig\.Binds is not allowed/],
    ['a bind mount', (_b, h) => (h.Mounts = [{ Type: 'bind', Source: '/', Target: '/opt/packages', ReadOnly: false }]), /Type must be "volume"/],
    ['a volume with driver options (a bind in disguise)', (_b, h) => ((h.Mounts as Record<string, unknown>[])[0]!.VolumeOptions = { DriverConfig: { Name: 'local', Options: { o: 'bind', device: '/' } } }), /VolumeOptions is not allowed/],
    ['another volume', (_b, h) => ((h.Mounts as Record<string, unknown>[])[0]!.Source = 'postgres-data'), /Source must be a volume starting/],
    ['a capability', (_b, h) => (h.CapAdd = ['SYS_ADMIN']), /CapAdd is not allowed/],
    ['capabilities kept', (_b, h) => (h.CapDrop = ['NET_RAW']), /CapDrop must be \["ALL"\]/],
    ['the host network', (_b, h) => (h.NetworkMode = 'host'), /NetworkMode must be one of "none", "bridge"/],
    ['the host pid namespace', (_b, h) => (h.PidMode = 'host'), /PidMode is not allowed/],
    ['the host ipc namespace', (_b, h) => (h.IpcMode = 'host'), /IpcMode must be "private"/],
    ['a device', (_b, h) => (h.Devices = [{ PathOnHost: '/dev/sda', PathInContainer: '/dev/sda', CgroupPermissions: 'rwm' }]), /Devices is not allowed/],
    ['seccomp off', (_b, h) => (h.SecurityOpt = ['no-new-privileges', 'seccomp=unconfined']), /SecurityOpt must be/],
    ['a writable root', (_b, h) => (h.ReadonlyRootfs = false), /ReadonlyRootfs must be true/],
    ['no memory cap', (_b, h) => delete h.Memory, /HostConfig\.Memory is required/],
    ['swap', (_b, h) => (h.MemorySwap = -1), /MemorySwap must be a whole number/],
    ['swap above memory', (_b, h) => (h.MemorySwap = (h.Memory as number) * 2), /MemorySwap must equal Memory/],
    ['no pids cap', (_b, h) => (h.PidsLimit = 0), /PidsLimit must be a whole number >= 1/],
    ['a tmpfs over /etc', (_b, h) => ((h.Tmpfs as Record<string, string>)['/etc'] = 'size=1m'), /Tmpfs key "\/etc"/],
    ['a tmpfs without a size', (_b, h) => ((h.Tmpfs as Record<string, string>)['/tmp'] = 'rw,nosuid'), /with a size/],
    ['another runtime', (_b, h) => (h.Runtime = 'runc-debug'), /Runtime is not allowed/],
    ['another image', (b) => (b.Image = 'alpine:latest'), /Image must be "run-python-code-sandbox:latest"/],
    ['root', (b) => (b.User = '0:0'), /User must be "10001:10001"/],
    ['no user', (b) => delete b.User, /body\.User is required/],
    ['a command of its own', (b) => (b.Cmd = ['sh', '-c', 'id']), /body\.Cmd is not allowed/],
    ['an entrypoint of its own', (b) => (b.Entrypoint = ['sh']), /body\.Entrypoint is not allowed/],
    ['environment', (b) => (b.Env = ['LD_PRELOAD=/x']), /body\.Env is not allowed/],
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

  it('holds gVisor: with SANDBOX_RUNTIME=runsc a container without it is refused', () => {
    assert.match(checkContainerCreate(body(), { ...policy, sandboxRuntime: 'runsc' }) ?? '', /HostConfig\.Runtime is required/);
  });

  it('refuses bodies that are not objects', () => {
    for (const b of [null, [], 'x', 1]) assert.match(checkContainerCreate(b, policy) ?? '', /body must be an object/);
  });
});

describe('docker proxy policy: volumes', () => {
  it('allows a labelled packages volume, nothing else', () => {
    assert.equal(checkVolumeCreate({ Name: 'run-python-code-packages-default', Labels: { 'run-python-code': '1' } }, policy), null);
    assert.match(checkVolumeCreate({ Name: 'etc' }, policy) ?? '', /Name must be a name starting run-python-code-packages-/);
    assert.match(
      checkVolumeCreate({ Name: 'run-python-code-packages-x', DriverOpts: { type: 'none', o: 'bind', device: '/' } }, policy) ?? '',
      /DriverOpts is not allowed/,
    );
    assert.match(checkVolumeCreate({ Name: 'run-python-code-packages-x', Driver: 'local' }, policy) ?? '', /Driver is not allowed/);
  });
});

describe('docker proxy policy: routes', () => {
  const kind = (method: string, url: string) => routeRequest(method, url, policy);

  it('routes the calls the server makes', () => {
    assert.deepEqual(kind('GET', '/version'), { kind: 'forward' });
    assert.deepEqual(kind('GET', '/v1.41/_ping'), { kind: 'forward' });
    assert.deepEqual(kind('GET', '/images/run-python-code-sandbox:latest/json'), { kind: 'forward' });
    assert.deepEqual(kind('GET', '/containers/json?all=true&filters=%7B%22label%22%3A%5B%22run-python-code.instance%3Dh-1%22%5D%7D'), { kind: 'forward' });
    assert.deepEqual(kind('POST', '/containers/create?name=run-python-code-e1&Image=whatever'), { kind: 'create-container' });
    assert.deepEqual(kind('POST', '/containers/abc123/attach?stream=true&stdin=true'), { kind: 'container', id: 'abc123', remove: false });
    for (const action of ['start', 'kill', 'wait']) {
      assert.deepEqual(kind('POST', `/containers/abc123/${action}`), { kind: 'container', id: 'abc123', remove: false });
    }
    assert.deepEqual(kind('GET', '/containers/abc123/json'), { kind: 'container', id: 'abc123', remove: false });
    assert.deepEqual(kind('DELETE', '/containers/abc123?force=true&v=true'), { kind: 'container', id: 'abc123', remove: true });
    assert.deepEqual(kind('POST', '/volumes/create'), { kind: 'create-volume' });
  });

  it('refuses everything else', () => {
    const refused: [string, string][] = [
      ['POST', '/containers/abc123/exec'],
      ['POST', '/exec/abc/start'],
      ['POST', '/build'],
      ['POST', '/images/create?fromImage=alpine'],
      ['GET', '/images/alpine:latest/json'],
      ['GET', '/containers/json'],
      ['GET', '/containers/json?filters=%7B%22name%22%3A%5B%22x%22%5D%7D'],
      ['GET', '/info'],
      ['GET', '/events'],
      ['POST', '/containers/abc123/update'],
      ['POST', '/containers/abc123/archive'],
      ['PUT', '/containers/abc123/archive?path=/'],
      ['GET', '/containers/abc123/logs'],
      ['DELETE', '/volumes/run-python-code-packages-default'],
      ['POST', '/swarm/init'],
      ['GET', '/containers/abc123/../../info'],
      ['GET', '/containers/abc%2F..%2F..%2Finfo/json'],
      ['POST', '/containers/create?name=postgres'],
      ['POST', '/containers/create?name=run-python-code-x&platform=linux/arm64'],
      ['POST', '/containers/create?x=1;name=postgres'],
    ];
    for (const [method, url] of refused) {
      const route = kind(method, url);
      assert.equal(route.kind, 'refuse', `${method} ${url} was let through: ${JSON.stringify(route)}`);
    }
  });
});
