import type { Runtime } from './oci-runtime.js';
import type { JobMode, RunnerReport } from './protocol.js';

/** A file crossing the sandbox boundary (as tar), by its workspace-relative path, held in memory (small files only). */
export interface SandboxFile {
  path: string;
  data: Buffer;
  mtime: Date;
}

/** A file as it is when it is opened: exactly `size` bytes come out of `chunks`; `close` must follow. */
export interface OpenedFile {
  size: number;
  mtime: Date;
  chunks: AsyncIterable<Buffer>;
  close(): Promise<void>;
}

/** A file to stream into a container, opened only when the tar reaches it. */
export interface SourceFile {
  path: string;
  /** Null when the file is gone since it was listed (the run then does not get it). */
  open(): Promise<OpenedFile | null>;
}

/**
 * What goes into a container's /workspace: its directories, then its files, read one at a time
 * while the tar is written, so no workspace is ever held in memory. The service provides it.
 */
export interface FileSource {
  dirs: string[];
  files: SourceFile[];
}

/**
 * Where a run's changed files go as they come out of its container, names and sizes already
 * checked by the tar filter. The service provides it (staging files on disk); the same path may
 * come twice, and the last one counts.
 */
export interface ChangesSink {
  /** Stores one file; resolves once all its bytes are stored. */
  file(path: string, chunks: AsyncIterable<Buffer>): Promise<void>;
}

/** What a run did to the workspace, as read (and already filtered) from its container: paths only. */
export interface FileChanges {
  /** Files now in the sink, in the order they came. */
  files: string[];
  dirs: string[];
  deleted: string[];
}

/** The caps one execution runs under. */
export interface SandboxLimits {
  /** The OCI runtime: runc, or runsc (gVisor). */
  runtime: Runtime;
  timeoutS: number;
  memoryMb: number;
  cpus: number;
  pids: number;
  outputBytes: number;
  workspaceMb: number;
  tmpMb: number;
  nofile: number;
  maxFiles: number;
  /** Outputs (figures, displays, rich values) one run may return, and their bytes together. */
  maxOutputs: number;
  outputsBytes: number;
}

export interface SandboxJob {
  executionId: string;
  /** Whose job: a distributed worker first brings the tenant's recorded packages (and set) to its own engine. */
  tenant?: string;
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
    /** A set of declared dependencies, resolved together (instead of one `requirement`). */
    requirements?: string[];
    pins?: string[];
    upgrade: boolean;
    pipArgs: string[];
    packagesMaxBytes: number;
    packagesMaxFiles: number;
  };
  workspace: FileSource;
  /** Where changed workspace files go; without one, they are dropped. */
  changes?: ChangesSink;
  /** Files for /wheelhouse (an operator's local wheels, for installs without an index). */
  wheelhouse?: SandboxFile[];
  /** The tenant's packages volume, mounted at /opt/packages: read-only unless `packagesWritable`. */
  packagesVolume: string;
  packagesWritable?: boolean;
  /** The volume of the execution's declared dependencies (a set installed for it), mounted read-only at /opt/deps. */
  depsVolume?: string;
  /** Docker network for the container; executions get `none` unless they have `egress`. */
  network?: string;
  /** An execution of a tenant with an egress list: its container joins the internal egress network, the proxy URL is its only way out. */
  egress?: { network: string; proxy: string };
  /** A tmpfs at /scratch of this size and inode count, added on top of the memory cap. */
  scratch?: Scratch;
  limits: SandboxLimits;
  /** Aborted when nobody waits for the answer any more (the client went away): the run is stopped (not in a context). */
  signal?: AbortSignal;
  /**
   * Settles once the answer is out (or its caller gone): removing the container and refilling the
   * pool wait for it, so neither competes with the answer for the CPU. Absent: they start at once.
   */
  answered?: Promise<unknown>;
  /** Context calls: how long the kernel has, once interrupted at the timeout, to come back. */
  interruptGraceS?: number;
  /** Receives the code's output while it runs (see OutputSink). */
  onOutput?: OutputSink;
}

export interface Scratch {
  mb: number;
  inodes: number;
}

/**
 * Called with each piece of a run's stdout or stderr as its frame arrives, within the output caps
 * (so the pieces of a stream add up to the outcome's), decoded as UTF-8 with no character split.
 */
export type OutputSink = (stream: 'stdout' | 'stderr', text: string) => void;

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
  /** The run was stopped because its caller went away. */
  aborted: boolean;
  /** What could not be done for this run without failing it: entries of the workspace not kept. */
  warnings: string[];
  durationMs: number;
  phases: Record<string, number>;
  /** The worker node that ran it (its INSTANCE_ID), on a distributed deployment. */
  worker?: string;
  /** What the worker installed on its engine before the job (distributed): the answer's `phases`. */
  catchUps?: CatchUp[];
}

/**
 * A distributed worker's install of a volume's recorded pins into its own engine, before a job
 * that mounts it: the tenant's packages or the job's declared set.
 */
export interface CatchUp {
  target: 'packages' | 'dependencies';
  /** The recorded state the engine was brought to. */
  generation: number;
  installed: { name: string; version: string }[];
  durationMs: number;
  /** Why it failed; the job then did not run. */
  error?: string;
}

export interface SandboxHealth {
  reachable: boolean;
  version: string | null;
  imagePresent: boolean;
  error?: string;
}

/** What a context's container is made with: the caps of an execution's, for as long as it lives. */
export interface ContextSpec {
  contextId: string;
  limits: SandboxLimits;
  packagesVolume: string;
  /** The egress network, for a tenant with an egress list: each call then gets its own proxy credential. */
  egressNetwork?: string;
}

/** A context's container, its kernel started: calls run in it one at a time (the caller sees to that). */
export interface SandboxContext {
  /** One call in the kernel; a report with `lost` (or none) means the kernel is gone. */
  run(job: Omit<SandboxJob, 'packagesVolume' | 'packagesWritable' | 'depsVolume' | 'network' | 'scratch' | 'wheelhouse'>): Promise<SandboxOutcome>;
  /** Resolves when the container's output ended: it stopped, whatever stopped it. */
  readonly ended: Promise<void>;
  /** Whether the engine says it was OOM-killed (asked once it ended). */
  oomKilled(): Promise<boolean>;
  /** Removes the container (in the background, tracked for shutdown). */
  close(): void;
}

/** What the services ask of the sandbox driver. */
export interface Sandbox {
  run(job: SandboxJob): Promise<SandboxOutcome>;
  /** Removes a volume this server made (a set of declared dependencies no longer kept). */
  removeVolume(name: string): Promise<void>;
  /** The sandbox image's Python version (its label), for requires-python; null when the image does not say. */
  pythonVersion(): Promise<string | null>;
  /** Starts a context's container and its kernel. */
  openContext(spec: ContextSpec): Promise<SandboxContext>;
  health(): Promise<SandboxHealth>;
  /** Removes containers this server instance left behind (after a crash, say). */
  reapStale(): Promise<number>;
  /** Removes the containers of other instances that `isOrphan` says are gone (a crashed stdio bin's, say). */
  reapOrphans(isOrphan: (instance: string) => boolean): Promise<number>;
  /**
   * Refuses new runs, waits for those in flight (killing them when `force`) and for every removal,
   * then removes anything of this instance still there: it ends with no container of this instance.
   */
  shutdown(force: boolean): Promise<void>;
  /** Starts keeping containers ready for jobs like this one (no-op without a pool); an egress tenant's on its network. */
  warm(job: Pick<SandboxJob, 'limits' | 'packagesVolume'> & { egressNetwork?: string }): void;
  /** Containers ready and waiting for a job. */
  ready(): number;
}
