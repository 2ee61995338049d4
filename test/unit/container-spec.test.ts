import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { containerSpec, SECCOMP_PROFILE } from '../../server/sandbox/container-spec.js';

const limits = { runtime: 'runc' as const, timeoutS: 5, memoryMb: 256, cpus: 0.5, pids: 64, outputBytes: 1000, workspaceMb: 10, tmpMb: 8, nofile: 100, maxFiles: 10, maxOutputs: 16, outputsBytes: 1 << 20 };

describe('containerSpec: the caps of every sandbox container', () => {
  const spec = containerSpec({
    image: 'img:1',
    instanceId: 'host-8083',
    executionId: 'e1',
    limits,
    packagesVolume: 'pkgs-default',
  });
  const host = spec.HostConfig!;

  it('no network, non-root, read-only root, no capabilities, no new privileges', () => {
    assert.equal(host.NetworkMode, 'none');
    assert.equal(spec.NetworkDisabled, true);
    assert.equal(spec.User, '10001:10001');
    assert.equal(host.ReadonlyRootfs, true);
    assert.deepEqual(host.CapDrop, ['ALL']);
    assert.equal(host.CapAdd, undefined);
    assert.deepEqual(host.SecurityOpt, ['no-new-privileges', `seccomp=${SECCOMP_PROFILE}`]);
    const profile = JSON.parse(SECCOMP_PROFILE) as { defaultAction: string; syscalls: { names: string[]; action: string }[] };
    assert.equal(profile.defaultAction, 'SCMP_ACT_ERRNO', 'an allowlist: what is not named is refused');
    const allowed = profile.syscalls.filter((s) => s.action === 'SCMP_ACT_ALLOW').flatMap((s) => s.names);
    for (const name of ['io_uring_setup', 'io_uring_enter', 'io_uring_register', 'unshare', 'setns', 'mount', 'ptrace', 'bpf', 'keyctl', 'userfaultfd', 'perf_event_open']) {
      assert.ok(!allowed.includes(name), `${name} must not be allowed`);
    }
    assert.equal(host.Privileged, false);
    assert.equal(host.Binds, undefined);
    assert.deepEqual(host.Mounts, [{ Type: 'volume', Source: 'pkgs-default', Target: '/opt/packages', ReadOnly: true }]);
  });

  it('memory (no swap), CPU, pids, open files, disk', () => {
    assert.equal(host.Memory, 256 * 1024 * 1024);
    assert.equal(host.MemorySwap, 256 * 1024 * 1024);
    assert.equal(host.NanoCpus, 500_000_000);
    assert.equal(host.PidsLimit, 64);
    assert.deepEqual(host.Ulimits?.find((u) => u.Name === 'nofile'), { Name: 'nofile', Soft: 100, Hard: 100 });
    assert.match(host.Tmpfs?.['/workspace'] ?? '', /size=10m/);
    assert.match(host.Tmpfs?.['/tmp'] ?? '', /size=8m/);
    assert.match(host.Tmpfs?.['/workspace'] ?? '', /nosuid,nodev/);
  });

  it('labelled for clean-up, input on stdin, the runtime named (runc by default)', () => {
    assert.deepEqual(spec.Labels, {
      'run-python-code': '1',
      'run-python-code.instance': 'host-8083',
      'run-python-code.execution': 'e1',
    });
    assert.equal(spec.OpenStdin, true);
    assert.equal(spec.StdinOnce, true);
    assert.equal(spec.Tty, false);
    assert.equal(host.Runtime, 'runc');
  });

  it('no environment of its own, unless it is a warm container that preloads', () => {
    assert.equal(spec.Env, undefined);
    const warm = containerSpec({ image: 'i', instanceId: 'x', executionId: 'e', limits, packagesVolume: 'v', preload: ['numpy', 'matplotlib.pyplot'] });
    assert.deepEqual(warm.Env, ['RUNNER_PRELOAD=numpy,matplotlib.pyplot']);
    assert.equal(containerSpec({ image: 'i', instanceId: 'x', executionId: 'e', limits, packagesVolume: 'v', preload: [] }).Env, undefined);
  });

  it("under gVisor: runsc, gVisor's own syscall filter, host pids headroom, the code's cap as RLIMIT_NPROC", () => {
    const gvisor = containerSpec({ image: 'i', instanceId: 'x', executionId: 'e', limits: { ...limits, runtime: 'runsc' }, packagesVolume: 'v' });
    assert.equal(gvisor.HostConfig?.Runtime, 'runsc');
    assert.deepEqual(gvisor.HostConfig?.SecurityOpt, ['no-new-privileges']);
    assert.equal(gvisor.HostConfig?.PidsLimit, 6 * 64 + 256);
    assert.deepEqual(gvisor.HostConfig?.Ulimits?.find((u) => u.Name === 'nproc'), { Name: 'nproc', Soft: 64, Hard: 64 });
    assert.equal(host.PidsLimit, 64);
    assert.equal(host.Ulimits?.find((u) => u.Name === 'nproc'), undefined, 'under runc RLIMIT_NPROC would count the uid across containers');
    assert.match(host.SecurityOpt?.[1] ?? '', /^seccomp=/);
  });

  it('an install container: packages writable, the given network, a wheelhouse within the memory cap', () => {
    const install = containerSpec({
      image: 'i', instanceId: 'x', executionId: 'e', limits,
      packagesVolume: 'v', packagesWritable: true, network: 'none', wheelhouseMb: 3,
    });
    assert.equal(install.HostConfig?.Mounts?.[0]?.ReadOnly, false);
    assert.equal(install.HostConfig?.NetworkMode, 'none');
    assert.match(install.HostConfig?.Tmpfs?.['/wheelhouse'] ?? '', /size=3m/);
    assert.equal(install.HostConfig?.Memory, (256 + 3) * 1024 * 1024);
    assert.equal(install.HostConfig?.CapDrop?.[0], 'ALL');
    assert.equal(install.HostConfig?.ReadonlyRootfs, true);
    const scratch = containerSpec({
      image: 'i', instanceId: 'x', executionId: 'e', limits,
      packagesVolume: 'v', packagesWritable: true, wheelhouseMb: 3, scratch: { mb: 40, inodes: 500 },
    });
    assert.match(scratch.HostConfig?.Tmpfs?.['/scratch'] ?? '', /size=40m,.*nr_inodes=500/);
    assert.equal(scratch.HostConfig?.Memory, (256 + 3 + 40) * 1024 * 1024, 'tmpfs pages count against the memory cap');
    const online = containerSpec({ image: 'i', instanceId: 'x', executionId: 'e', limits, packagesVolume: 'v', packagesWritable: true, network: 'bridge' });
    assert.equal(online.HostConfig?.NetworkMode, 'bridge');
    assert.equal(online.NetworkDisabled, false);
  });
});
