import { readFileSync } from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { projectRoot } from '../project.js';
import type { Runtime } from './oci-runtime.js';
import type { SandboxLimits, Scratch } from './sandbox.js';

/** uid:gid of the `sandbox` user baked into the image (sandbox-image/Dockerfile). */
export const SANDBOX_USER = '10001:10001';
export const LABEL = 'run-python-code';
export const INSTANCE_LABEL = 'run-python-code.instance';
export const EXECUTION_LABEL = 'run-python-code.execution';

/**
 * The seccomp profile of every sandbox (sandbox-image/seccomp.json): an allowlist that leaves out
 * what Docker 20.10's default allows but neither the runner nor the scientific stack needs (io_uring
 * first), and namespaces, mounts, tracing and the kernel's own controls. Sent inline, like the CLI does.
 */
export const SECCOMP_PROFILE = JSON.stringify(JSON.parse(readFileSync(path.join(projectRoot, 'sandbox-image', 'seccomp.json'), 'utf8')));
/**
 * Under gVisor the code's system calls never reach the host kernel: the Sentry implements them,
 * and runs itself under gVisor's own seccomp filter. runsc applies an OCI seccomp profile only with
 * --oci-seccomp, which in Debian's build breaks threads; so a gVisor sandbox is sent none.
 */
export function securityOpt(runtime: Runtime): string[] {
  return runtime === 'runsc' ? ['no-new-privileges'] : ['no-new-privileges', `seccomp=${SECCOMP_PROFILE}`];
}

/**
 * The host's pids cap of a sandbox. Under gVisor the code's processes are tasks of the Sentry, not
 * host processes, while the Sentry's own threads count: measured here, ~40 idle and ~530 with 127
 * processes; at the cap the Sentry dies without a word. So the host cap gets headroom, and the
 * code's cap is RLIMIT_NPROC, which gVisor holds per sandbox (under runc it would count the uid's
 * processes across all containers, so runc keeps the cgroup cap alone).
 */
export function hostPidsLimit(runtime: Runtime, pids: number): number {
  return runtime === 'runsc' ? 6 * pids + 256 : pids;
}

/**
 * The one variable a sandbox's environment may gain (the image sets the rest): the modules its
 * runner imports while it waits for its job (sandbox-image/runner.py, `preload`): module names only,
 * as the settings and the Docker proxy check them.
 */
export const PRELOAD_ENV = 'RUNNER_PRELOAD';
/** The one DNS server an egress sandbox is given: its own loopback, where nothing answers. */
export const NO_DNS = '127.0.0.1';
export const MODULE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,99}(\.[A-Za-z_][A-Za-z0-9_]{0,99}){0,9}$/;
export const MAX_PRELOAD = 32;
/** Where an execution's declared dependencies are mounted (sandbox-image/runner.py, DEPENDENCIES). */
export const DEPS_TARGET = '/opt/deps';

export interface SpecInput {
  image: string;
  instanceId: string;
  executionId: string;
  limits: SandboxLimits;
  packagesVolume: string;
  packagesWritable?: boolean;
  /** A set of declared dependencies, read-only at /opt/deps (executions that declare them). */
  depsVolume?: string;
  /** Only install containers and egress executions get a network other than `none`. */
  network?: string;
  /** On the egress network: no DNS (the embedded resolver's only upstream is the container's own loopback); the proxy resolves. */
  egress?: boolean;
  /** Size of a /wheelhouse tmpfs, for installs from an operator's wheels. */
  wheelhouseMb?: number;
  /** A size- and inode-capped /scratch tmpfs, for installs. */
  scratch?: Scratch;
  /** Modules of the image the runner imports before its job (warm containers); none when empty. */
  preload?: string[];
}

/**
 * The create options of every sandbox container: the caps in one place. The container gets no
 * network, a non-root user, a read-only root, no capabilities, no new privileges, capped memory
 * (swap equal to memory: none), CPU, pids, open files, and size-capped tmpfs for the only
 * writable paths. Input arrives on stdin; nothing of the host is mounted: the only mount is the
 * tenant's packages volume, read-only except in an install container.
 */
export function containerSpec(input: SpecInput): Docker.ContainerCreateOptions {
  const { limits } = input;
  // tmpfs pages count against the memory cgroup: a wheelhouse and a scratch area get room on top of the cap.
  const memory = (limits.memoryMb + (input.wheelhouseMb ?? 0) + (input.scratch?.mb ?? 0)) * 1024 * 1024;
  const network = input.network ?? 'none';
  const tmpfs = (size: number, mode: string, owner = '') =>
    `rw,nosuid,nodev,size=${size}m,mode=${mode}${owner}`;
  const preload = input.preload ?? [];
  return {
    name: `run-python-code-${input.executionId}`,
    Image: input.image,
    User: SANDBOX_USER,
    WorkingDir: '/workspace',
    Hostname: 'sandbox',
    Labels: { [LABEL]: '1', [INSTANCE_LABEL]: input.instanceId, [EXECUTION_LABEL]: input.executionId },
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    OpenStdin: true,
    StdinOnce: true,
    Tty: false,
    NetworkDisabled: network === 'none',
    ...(preload.length > 0 ? { Env: [`${PRELOAD_ENV}=${preload.join(',')}`] } : {}),
    HostConfig: {
      NetworkMode: network,
      ...(input.egress ? { Dns: [NO_DNS] } : {}),
      ReadonlyRootfs: true,
      CapDrop: ['ALL'],
      SecurityOpt: securityOpt(limits.runtime),
      Privileged: false,
      Memory: memory,
      MemorySwap: memory,
      NanoCpus: Math.round(limits.cpus * 1e9),
      PidsLimit: hostPidsLimit(limits.runtime, limits.pids),
      Ulimits: [
        { Name: 'nofile', Soft: limits.nofile, Hard: limits.nofile },
        { Name: 'core', Soft: 0, Hard: 0 },
        ...(limits.runtime === 'runsc' ? [{ Name: 'nproc', Soft: limits.pids, Hard: limits.pids }] : []),
      ],
      Tmpfs: {
        // nr_inodes (one is the root): the kernel holds the workspace to its file count, not only its size.
        '/workspace': tmpfs(limits.workspaceMb, '0755', `,uid=10001,gid=10001,nr_inodes=${limits.maxFiles + 1}`),
        '/tmp': tmpfs(limits.tmpMb, '1777'),
        ...(input.wheelhouseMb ? { '/wheelhouse': tmpfs(input.wheelhouseMb, '0755', ',uid=10001,gid=10001') } : {}),
        ...(input.scratch
          ? { '/scratch': tmpfs(input.scratch.mb, '0755', `,uid=10001,gid=10001,nr_inodes=${input.scratch.inodes}`) }
          : {}),
      },
      Mounts: [
        { Type: 'volume', Source: input.packagesVolume, Target: '/opt/packages', ReadOnly: !input.packagesWritable },
        ...(input.depsVolume ? [{ Type: 'volume' as const, Source: input.depsVolume, Target: DEPS_TARGET, ReadOnly: true }] : []),
      ],
      ShmSize: limits.tmpMb * 1024 * 1024,
      IpcMode: 'private',
      LogConfig: { Type: 'none', Config: {} },
      AutoRemove: false,
      Runtime: limits.runtime,
    },
  };
}
