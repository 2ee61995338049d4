import type { Config } from '../config.js';
import { badRequest, tooLarge } from '../errors.js';
import type { SandboxLimits } from '../sandbox/sandbox.js';
import type { TenantLimits } from '../tenancy/limits.js';

export interface RequestedLimits {
  timeout?: number;
  memory_mb?: number;
  code?: string;
}

/**
 * The caps of one sandbox: the tenant's limits, lowered where the request asks. Asking for more
 * than a limit is refused with the limit's name, never quietly cut.
 */
export function limitsFor(config: Config, tenant: TenantLimits, requested: RequestedLimits = {}): SandboxLimits {
  const { timeout, memory_mb: memoryMb, code } = requested;
  if (timeout !== undefined && timeout > tenant.max_timeout_s) {
    throw badRequest(`timeout ${timeout} s is above this tenant's limit of ${tenant.max_timeout_s} s (max_timeout_s)`);
  }
  if (memoryMb !== undefined && memoryMb > tenant.memory_mb) {
    throw badRequest(`memory_mb ${memoryMb} is above this tenant's limit of ${tenant.memory_mb} MiB (memory_mb)`);
  }
  if (code !== undefined && Buffer.byteLength(code) > tenant.max_code_bytes) {
    throw tooLarge(`code is ${Buffer.byteLength(code)} bytes, above this tenant's limit of ${tenant.max_code_bytes} (max_code_bytes)`);
  }
  return {
    runtime: tenant.runtime,
    timeoutS: timeout ?? Math.min(config.defaultTimeoutS, tenant.max_timeout_s),
    memoryMb: memoryMb ?? tenant.memory_mb,
    cpus: tenant.cpus,
    pids: tenant.pids,
    outputBytes: tenant.output_bytes,
    workspaceMb: tenant.workspace_mb,
    tmpMb: config.tmpMb,
    nofile: config.nofile,
    maxFiles: config.maxFiles,
    maxOutputs: tenant.max_outputs,
    outputsBytes: tenant.max_outputs_bytes,
  };
}
