import type Docker from 'dockerode';
import type { SandboxLimits } from './sandbox.js';

/** uid:gid of the `sandbox` user baked into the image (sandbox-image/Dockerfile). */
export const SANDBOX_USER = '10001:10001';
export const LABEL = 'run-python-code';
export const INSTANCE_LABEL = 'run-python-code.instance';
export const EXECUTION_LABEL = 'run-python-code.execution';

export interface SpecInput {
  image: string;
  runtime: string;
  instanceId: string;
  executionId: string;
  limits: SandboxLimits;
}

/**
 * The create options of every sandbox container: the caps in one place. The container gets no
 * network, a non-root user, a read-only root, no capabilities, no new privileges, capped memory
 * (swap equal to memory: none), CPU, pids, open files, and size-capped tmpfs for the only
 * writable paths. Input arrives on stdin; nothing on the host is mounted.
 */
export function containerSpec(input: SpecInput): Docker.ContainerCreateOptions {
  const { limits } = input;
  const memory = limits.memoryMb * 1024 * 1024;
  const tmpfs = (size: number, mode: string, owner = '') =>
    `rw,nosuid,nodev,size=${size}m,mode=${mode}${owner}`;
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
    NetworkDisabled: true,
    HostConfig: {
      NetworkMode: 'none',
      ReadonlyRootfs: true,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      Privileged: false,
      Memory: memory,
      MemorySwap: memory,
      NanoCpus: Math.round(limits.cpus * 1e9),
      PidsLimit: limits.pids,
      Ulimits: [
        { Name: 'nofile', Soft: limits.nofile, Hard: limits.nofile },
        { Name: 'core', Soft: 0, Hard: 0 },
      ],
      Tmpfs: {
        '/workspace': tmpfs(limits.workspaceMb, '0755', ',uid=10001,gid=10001'),
        '/tmp': tmpfs(limits.tmpMb, '1777'),
      },
      ShmSize: limits.tmpMb * 1024 * 1024,
      IpcMode: 'private',
      LogConfig: { Type: 'none', Config: {} },
      AutoRemove: false,
      ...(input.runtime ? { Runtime: input.runtime } : {}),
    },
  };
}
