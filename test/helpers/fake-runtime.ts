import { PassThrough } from 'node:stream';
import tar from 'tar-stream';
import { PRELOAD_ENV } from '../../server/sandbox/container-spec.js';
import { PROTOCOL_VERSION, READY_FRAME, type RunnerReport } from '../../server/sandbox/protocol.js';
import { EngineError, type Attachment, type ContainerRuntime, type ContainerSpec, type ContainerState } from '../../server/sandbox/runtime.js';

/** What one scripted container does once it has its whole job on stdin. */
export interface Script {
  /** Bytes it writes on stdout (frames; see `frame`, `reportFrames`), one chunk each. */
  stdout?: Buffer[];
  /** Text it writes on stderr (the runner's own diagnostics). */
  stderr?: string;
  /** Then it exits with this code (and maybe as OOM-killed), or hangs until killed. Default: exit 0. */
  then?: { exit: number; oomKilled?: boolean } | 'hang';
  /** It stops by itself this long after start, with no job (killed from outside, say). */
  diesAfterMs?: number;
  /** Its removal is refused ("removal already in progress") this many times before it works. */
  removeFailures?: number;
  /** Its creation fails with this. */
  createError?: EngineError;
  /**
   * What it sends at start when asked to preload (RUNNER_PRELOAD in its environment), as the runner
   * does once its modules are imported: the ready frame unless this says otherwise; null sends nothing.
   */
  ready?: Buffer | null;
}

class FakeContainer {
  running = false;
  removed = false;
  exitCode: number | null = null;
  oomKilled = false;
  readonly stdin = new PassThrough();
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  private readonly input: Buffer[] = [];
  private endedResolve!: () => void;
  readonly ended = new Promise<void>((resolve) => (this.endedResolve = resolve));

  constructor(
    readonly name: string,
    readonly spec: ContainerSpec,
    readonly script: Script,
  ) {
    this.stdin.on('data', (c: Buffer) => this.input.push(c));
    this.stdin.on('finish', () => setImmediate(() => this.play()));
  }

  /** Everything the driver wrote to stdin. */
  get received(): Buffer {
    return Buffer.concat(this.input);
  }

  start(): void {
    this.running = true;
    const preloads = this.spec.Env?.some((v) => v.startsWith(`${PRELOAD_ENV}=`)) ?? false;
    const ready = this.script.ready === undefined ? READY_FRAME : this.script.ready;
    if (preloads && ready) this.stdout.write(ready);
    if (this.script.diesAfterMs !== undefined) setTimeout(() => this.exit(137), this.script.diesAfterMs);
  }

  private async play(): Promise<void> {
    if (!this.running) return;
    for (const chunk of this.script.stdout ?? []) {
      if (!this.running) return;
      this.stdout.write(chunk);
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (this.script.stderr) this.stderr.write(this.script.stderr);
    const then = this.script.then ?? { exit: 0 };
    if (then !== 'hang') this.exit(then.exit, then.oomKilled);
  }

  /** The connection drops; the container itself may still run. */
  hangUp(): void {
    this.stdout.end();
    this.stderr.end();
    this.endedResolve();
  }

  exit(code: number, oomKilled = false): void {
    if (!this.running) return;
    this.running = false;
    this.exitCode = code;
    this.oomKilled = oomKilled;
    this.stdout.end();
    this.stderr.end();
    this.endedResolve();
  }
}

/**
 * A recording fake of the container runtime seam: it plays scripted containers (frames on
 * stdout, an exit code, an OOM, a hang, a crash mid-frame, a refused removal, a preloading runner's
 * ready frame or its absence) and records every
 * call as `op name`, so tests assert the exact lifecycle without an engine.
 */
export class FakeRuntime implements ContainerRuntime {
  readonly calls: string[] = [];
  readonly containers = new Map<string, FakeContainer>();
  private next = 0;

  constructor(private readonly script: (spec: ContainerSpec) => Script = () => ({})) {}

  /** The calls made on containers whose name contains `part`, without the name. */
  callsOn(part: string): string[] {
    return this.calls.filter((c) => c.includes(part)).map((c) => c.split(' ')[0]!);
  }

  private get(id: string): FakeContainer {
    const container = this.containers.get(id);
    if (!container || container.removed) throw new EngineError('no_container', `Docker: No such container: ${id}`);
    return container;
  }

  private record(op: string, id?: string): void {
    this.calls.push(id === undefined ? op : `${op} ${this.containers.get(id)?.name ?? id}`);
  }

  async create(spec: ContainerSpec): Promise<string> {
    const script = this.script(spec);
    this.calls.push(`create ${spec.name}`);
    if (script.createError) throw script.createError;
    const id = `fake-${++this.next}`;
    this.containers.set(id, new FakeContainer(spec.name ?? id, spec, script));
    return id;
  }

  async attach(id: string): Promise<Attachment> {
    this.record('attach', id);
    const c = this.get(id);
    return {
      stdin: c.stdin,
      stdout: c.stdout,
      stderr: c.stderr,
      ended: c.ended,
      destroy: () => c.hangUp(),
      pause: () => {
        this.record('pause', id);
        c.stdout.pause();
      },
      resume: () => c.stdout.resume(),
    };
  }

  async start(id: string): Promise<void> {
    this.record('start', id);
    this.get(id).start();
  }

  async kill(id: string): Promise<void> {
    this.record('kill', id);
    this.containers.get(id)?.exit(137);
  }

  async wait(id: string): Promise<void> {
    this.record('wait', id);
    await this.get(id).ended;
  }

  async remove(id: string): Promise<void> {
    this.record('remove', id);
    const c = this.get(id);
    if ((c.script.removeFailures ?? 0) > 0) {
      c.script.removeFailures! -= 1;
      throw new EngineError('busy', `Docker: removal of container ${id} is already in progress`);
    }
    c.exit(137);
    c.removed = true;
  }

  async inspect(id: string): Promise<ContainerState> {
    this.record('inspect', id);
    const c = this.get(id);
    return { running: c.running, exitCode: c.exitCode, oomKilled: c.oomKilled };
  }

  async listByLabel(label: string): Promise<{ id: string; labels: Record<string, string> }[]> {
    this.record(`list ${label}`);
    const [key, value] = label.split('=');
    return [...this.containers.entries()]
      .filter(([, c]) => !c.removed && c.spec.Labels?.[key!] !== undefined && (value === undefined || c.spec.Labels[key!] === value))
      .map(([id, c]) => ({ id, labels: c.spec.Labels ?? {} }));
  }

  /** Labels of volumes that exist already (made by another, say); others are made with the labels asked for. */
  readonly volumes = new Map<string, Record<string, string>>();

  async createVolume(name: string, labels: Record<string, string>): Promise<Record<string, string>> {
    this.record(`volume ${name}`);
    if (!this.volumes.has(name)) this.volumes.set(name, labels);
    return this.volumes.get(name)!;
  }

  async removeVolume(name: string): Promise<void> {
    this.record(`remove volume ${name}`);
    this.volumes.delete(name);
  }

  async ensureInternalNetwork(name: string): Promise<{ gateway: string; created: boolean }> {
    this.record(`network ${name}`);
    return { gateway: '127.0.0.1', created: true };
  }

  async removeNetwork(name: string): Promise<void> {
    this.record(`remove-network ${name}`);
  }

  async version(): Promise<string> {
    return '20.10.24-fake';
  }

  async imageLabels(): Promise<Record<string, string>> {
    return { 'run-python-code.protocol': String(PROTOCOL_VERSION) };
  }
}

/** One frame of the runner protocol. */
export function frame(kind: string, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = Buffer.from(payload);
  const header = Buffer.alloc(5);
  header.write(kind, 0, 'latin1');
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
}

/** A runner's report with these fields over a clean run's, as a report frame and the done frame. */
export function reportFrames(over: Partial<RunnerReport> = {}): Buffer[] {
  const report: RunnerReport = {
    protocol: PROTOCOL_VERSION, exit_code: 0, timed_out: false, truncated: false, oom_killed: false, status: 'ok',
    error: null, traceback: null, result: null, result_truncated: false,
    value: null, outputs: [], outputs_truncated: false, deleted: [], warnings: [], run_ms: 1, ...over,
  };
  return [frame('r', JSON.stringify(report)), frame('z')];
}

/** The changed-files tar of these files (path -> content), as f frames of at most 64 KiB, like the runner's. */
export async function filesFrames(files: Record<string, string>): Promise<Buffer[]> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name: `workspace/${name}` }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const tarBytes = Buffer.concat(chunks);
  const frames: Buffer[] = [];
  for (let i = 0; i < tarBytes.length; i += 64 * 1024) frames.push(frame('f', tarBytes.subarray(i, i + 64 * 1024)));
  return frames;
}

/** The same, as one chunk of output. */
export async function filesFrame(files: Record<string, string>): Promise<Buffer> {
  return Buffer.concat(await filesFrames(files));
}
