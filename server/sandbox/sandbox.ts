import type { WorkspaceChanges, WorkspaceSnapshot } from '../workspace/workspace.js';
import type { RunnerReport } from './protocol.js';

/** The caps one execution runs under. */
export interface SandboxLimits {
  timeoutS: number;
  memoryMb: number;
  cpus: number;
  pids: number;
  outputBytes: number;
  workspaceMb: number;
  tmpMb: number;
  nofile: number;
  maxFiles: number;
}

export interface SandboxJob {
  executionId: string;
  /** `code` runs the given source; `file` runs a workspace file. */
  mode: 'code' | 'file';
  code?: string;
  file?: string;
  variable?: string;
  workspace: WorkspaceSnapshot;
  limits: SandboxLimits;
}

/** Everything that came out of one container, already capped and validated. */
export interface SandboxOutcome {
  stdout: string;
  stderr: string;
  /** The validated report of the runner; null when the container ended without one. */
  report: RunnerReport | null;
  /** Workspace changes; null when the run did not report them (killed, or they were refused). */
  changes: WorkspaceChanges | null;
  exitCode: number | null;
  timedOut: boolean;
  truncated: boolean;
  oomKilled: boolean;
  /** Why the container's output was refused (protocol violation, files over the caps), if it was. */
  violation: string | null;
  durationMs: number;
  phases: Record<string, number>;
}

export interface SandboxHealth {
  reachable: boolean;
  version: string | null;
  imagePresent: boolean;
  error?: string;
}

/** The seam between the execution service and the container runtime. */
export interface Sandbox {
  run(job: SandboxJob): Promise<SandboxOutcome>;
  health(): Promise<SandboxHealth>;
  /** Removes containers this server instance left behind (after a crash, say). */
  reapStale(): Promise<number>;
  /** Waits for background removals; kills and removes whatever still runs when `force`. */
  shutdown(force: boolean): Promise<void>;
}
