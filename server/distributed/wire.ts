import type { CreateContextRequest } from '../contract/contract.js';
import { ServiceError, type ErrorKind } from '../errors.js';
import type { FileChanges, FileSource, SandboxFile, SandboxJob, SandboxLimits, SandboxOutcome } from '../sandbox/sandbox.js';

/**
 * A sandbox job as it travels on the queue: plain JSON, the workspace's files inline (base64).
 * The workspace is bounded by the tenant's workspace_mb, and BullMQ keeps a job only until its
 * answer is read (removeOnComplete), so Redis holds at most the workspaces of the jobs in flight.
 */
export interface WireJob {
  executionId: string;
  /** Whose job: the worker brings the volumes it mounts to their recorded state first (package-sync.ts). */
  tenant?: string;
  mode: SandboxJob['mode'];
  code?: string;
  file?: string;
  variable?: string;
  limits: SandboxLimits;
  packagesVolume: string;
  depsVolume?: string;
  /** Installs: what to install, the volume writable, their network, /scratch, the wheelhouse. */
  install?: SandboxJob['install'];
  packagesWritable?: boolean;
  network?: string;
  scratch?: SandboxJob['scratch'];
  wheelhouse?: WireFile[];
  dirs: string[];
  files: WireFile[];
  /** The API node keeps the run's changes; without a sink it drops them, so the worker need not send them. */
  wantsChanges: boolean;
  /** The API node streams the output: the worker publishes each piece on the job's output channel. */
  streams: boolean;
}

export interface WireFile {
  path: string;
  data: string;
  mtime: number;
}

/** A finished job's answer: the outcome, and the changed files' bytes (the API node merges them). */
export interface WireResult {
  outcome: SandboxOutcome;
  files: WireFile[];
}

/**
 * Why a job that came back to the queue (its worker was lost mid-job: BullMQ's stalled-job check)
 * must not run again, or null. A run changes nothing until its answer is applied on the API node,
 * so it may run again; an install's second phase writes the packages volume, so it runs at most once.
 */
export function secondTryRefusal(job: Pick<WireJob, 'install' | 'packagesWritable'>, attempt: number): string | null {
  if (attempt <= 1 || !(job.install && job.packagesWritable)) return null;
  return 'the worker installing this stopped mid-install, and an install runs at most once: see GET /packages for what the volume holds, then install again';
}

/** The Redis channels of one job: its output pieces (worker to API node) and its cancellation (API node to worker). */
export const outputChannel = (executionId: string) => `rpc:output:${executionId}`;
/**
 * What an output channel carries: pieces, then one end once the job's work is done. The job's
 * answer comes over another connection and can overtake its last pieces; the end cannot.
 */
export type OutputMessage = { stream: 'stdout' | 'stderr'; text: string } | { end: true };
export const OUTPUT_END = JSON.stringify({ end: true } satisfies OutputMessage);
export const cancelChannel = (executionId: string) => `rpc:cancel:${executionId}`;
/** A cancellation kept for the job's lifetime: one sent while the job waited in the queue had no listener yet. */
export const cancelledKey = (executionId: string) => `rpc:cancelled:${executionId}`;

/** A file's bytes as the sinks and sources take them. */
export async function* bytesOf(file: WireFile): AsyncIterable<Buffer> {
  yield Buffer.from(file.data, 'base64');
}

/** Reads a FileSource whole (the files one at a time, as the tar would), for the queue. */
export async function readSource(source: FileSource): Promise<WireFile[]> {
  const files: WireFile[] = [];
  for (const file of source.files) {
    const opened = await file.open();
    if (!opened) continue; // gone since it was listed, as the tar would leave it out
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of opened.chunks) chunks.push(chunk);
      files.push({ path: file.path, data: Buffer.concat(chunks).toString('base64'), mtime: opened.mtime.getTime() });
    } finally {
      await opened.close();
    }
  }
  return files;
}

/** In-memory files (the wheelhouse) both ways. */
export const wireFiles = (files: SandboxFile[]): WireFile[] => files.map((f) => ({ path: f.path, data: f.data.toString('base64'), mtime: f.mtime.getTime() }));
export const sandboxFiles = (files: WireFile[]): SandboxFile[] => files.map((f) => ({ path: f.path, data: Buffer.from(f.data, 'base64'), mtime: new Date(f.mtime) }));

/** The worker's side: a FileSource over the files that came with the job. */
export function sourceOf(job: Pick<WireJob, 'dirs' | 'files'>): FileSource {
  return {
    dirs: job.dirs,
    files: job.files.map((f) => ({
      path: f.path,
      open: async () => ({ size: Buffer.byteLength(f.data, 'base64'), mtime: new Date(f.mtime), chunks: bytesOf(f), close: async () => undefined }),
    })),
  };
}

/** The worker's side: keeps each changed file's bytes (the last copy of a path counts, as in staging). */
export class ChangesCollector {
  private readonly files = new Map<string, Buffer>();

  async file(path: string, chunks: AsyncIterable<Buffer>): Promise<void> {
    const parts: Buffer[] = [];
    for await (const chunk of chunks) parts.push(chunk);
    this.files.set(path, Buffer.concat(parts));
  }

  /** The files the outcome's changes name, in its order. */
  wire(changes: FileChanges | null): WireFile[] {
    if (!changes) return [];
    return changes.files.map((path) => ({ path, data: (this.files.get(path) ?? Buffer.alloc(0)).toString('base64'), mtime: Date.now() }));
  }
}

/** A context's creation, on the shared queue: whichever worker takes it holds the context. */
export interface WireContextCreate {
  /** Its reservation in PostgreSQL (it counted against max_contexts while the context started). */
  reservation: string;
  tenant: string;
  request: CreateContextRequest;
}

/** A call in a context, on its home worker's own queue: the job and the turn's wait (the call's timeout). */
export interface WireContextCall extends Omit<WireJob, 'packagesVolume' | 'install' | 'packagesWritable' | 'network' | 'scratch' | 'wheelhouse'> {
  contextId: string;
  tenant: string;
  waitS: number;
  interruptGraceS: number;
}

/** A context's deletion, on its home worker's own queue. */
export interface WireContextDelete {
  contextId: string;
  tenant: string;
}

/** A call's answer: its outcome and files, and why the context ended if it ended while the call ran. */
export interface WireCallResult extends WireResult {
  endedWhy: string | null;
}

/** What a context job answers: its value, or the error the embedded server would have answered. */
export type WireAnswer<T> = { value: T } | { error: { kind: ErrorKind; message: string; retryAfterS?: number } };

/** The worker's side: a context operation's value, or its ServiceError as data (any other error fails the job). */
export async function answer<T>(work: () => Promise<T>): Promise<WireAnswer<T>> {
  try {
    return { value: await work() };
  } catch (err) {
    if (err instanceof ServiceError) return { error: { kind: err.kind, message: err.message, retryAfterS: err.retryAfterS } };
    throw err;
  }
}

/** The API node's side: the value, or the worker's error thrown again as it was. */
export function unwrap<T>(reply: WireAnswer<T>): T {
  if ('error' in reply) throw new ServiceError(reply.error.kind, reply.error.message, reply.error.retryAfterS);
  return reply.value;
}
