import type { WorkspaceChanges, WorkspaceFile, WorkspaceSnapshot } from '../workspace/workspace.js';
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
  /**
   * `code` runs the given source; `file` runs a workspace file; `install` runs pip for one
   * requirement; `list-packages` reports what is installed.
   */
  mode: 'code' | 'file' | 'install' | 'list-packages';
  code?: string;
  file?: string;
  variable?: string;
  install?: { requirement: string; upgrade: boolean; pipArgs: string[]; packagesMaxBytes: number };
  workspace: WorkspaceSnapshot;
  /** Files for /wheelhouse (an operator's local wheels, for installs without an index). */
  wheelhouse?: WorkspaceFile[];
  /** The tenant's packages volume, mounted at /opt/packages: read-only unless `packagesWritable`. */
  packagesVolume: string;
  packagesWritable?: boolean;
  /** Docker network for the container; executions always get `none`. */
  network?: string;
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
  /** Starts keeping containers ready for jobs like this one (no-op without a pool). */
  warm(job: Pick<SandboxJob, 'limits' | 'packagesVolume'>): void;
  /** Containers ready and waiting for a job. */
  ready(): number;
}
