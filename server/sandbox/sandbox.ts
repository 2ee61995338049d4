import type { JobMode, RunnerReport } from './protocol.js';

/** A file crossing the sandbox boundary (as tar), by its workspace-relative path. */
export interface SandboxFile {
  path: string;
  data: Buffer;
  mtime: Date;
}

/** Regular files and directories, as streamed into a container. */
export interface FileSet {
  files: SandboxFile[];
  dirs: string[];
}

/** What a run did to the workspace, as read (and already filtered) from its container. */
export interface FileChanges extends FileSet {
  deleted: string[];
}

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
   * `code` runs the given source; `file` runs a workspace file; `resolve` asks pip what one
   * requirement would install; `install` installs exact pins; `list-packages` reports what is installed.
   */
  mode: JobMode;
  code?: string;
  file?: string;
  variable?: string;
  install?: {
    requirement?: string;
    pins?: string[];
    upgrade: boolean;
    pipArgs: string[];
    packagesMaxBytes: number;
    packagesMaxFiles: number;
  };
  workspace: FileSet;
  /** Files for /wheelhouse (an operator's local wheels, for installs without an index). */
  wheelhouse?: SandboxFile[];
  /** The tenant's packages volume, mounted at /opt/packages: read-only unless `packagesWritable`. */
  packagesVolume: string;
  packagesWritable?: boolean;
  /** Docker network for the container; executions always get `none`. */
  network?: string;
  /** A tmpfs at /scratch of this size and inode count, added on top of the memory cap. */
  scratch?: Scratch;
  limits: SandboxLimits;
}

export interface Scratch {
  mb: number;
  inodes: number;
}

/** Everything that came out of one container, already capped and validated. */
export interface SandboxOutcome {
  stdout: string;
  stderr: string;
  /** The validated report of the runner; null when the container ended without one. */
  report: RunnerReport | null;
  /** Workspace changes; null when the run did not report them (killed, or they were refused). */
  changes: FileChanges | null;
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

/** What the services ask of the sandbox driver. */
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
