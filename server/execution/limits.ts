import type { Config } from '../config.js';
import { badRequest } from '../errors.js';
import type { SandboxLimits } from '../sandbox/sandbox.js';

/** The caps of one sandbox: the configured ones, with a timeout the request may lower, never raise. */
export function limitsFor(config: Config, timeout?: number): SandboxLimits {
  if (timeout !== undefined && timeout > config.maxTimeoutS) {
    throw badRequest(`timeout ${timeout} s is above the maximum of ${config.maxTimeoutS} s (MAX_TIMEOUT_S)`);
  }
  return {
    timeoutS: timeout ?? config.defaultTimeoutS,
    memoryMb: config.memoryMb,
    cpus: config.cpus,
    pids: config.pids,
    outputBytes: config.outputBytes,
    workspaceMb: config.workspaceMb,
    tmpMb: config.tmpMb,
    nofile: config.nofile,
    maxFiles: config.maxFiles,
  };
}
