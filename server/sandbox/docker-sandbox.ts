import type { Duplex } from 'node:stream';
import Docker from 'dockerode';
import { unavailable } from '../errors.js';
import type { Logger } from '../logger.js';
import { containerSpec, INSTANCE_LABEL, LABEL, type SpecInput } from './container-spec.js';
import { ChangesReader, packJob } from './files-tar.js';
import { FrameDecoder, PROTOCOL_VERSION, ProtocolViolation, type RunnerReport } from './protocol.js';
import type { Sandbox, SandboxHealth, SandboxJob, SandboxOutcome } from './sandbox.js';
import { WarmPool, type Prepared } from './warm-pool.js';
import type { Metrics } from '../metrics.js';

/** A prepared container with its attach stream; `out`/`err` are pointed at the job's decoder. */
export interface DockerPrepared extends Prepared {
  container: Docker.Container;
  stream: Duplex;
  out(chunk: Buffer): void;
  err(chunk: Buffer): void;
}

export interface DockerSandboxOptions {
  image: string;
  runtime: string;
  instanceId: string;
}

export interface PoolOptions {
  /** Containers kept ready per profile; 0 turns the pool off. */
  size: number;
  maxProfiles: number;
}

/** Past the runner's own deadline, how long the server waits before it kills the container itself. */
const BACKSTOP_GRACE_MS = 2000;
/** Tries at removing one container before giving up (and logging it). */
const REMOVE_ATTEMPTS = 8;
/** The runner's own stderr (its crash messages, not the user's) is kept for the log, this much. */
const DIAGNOSTICS_BYTES = 16 * 1024;

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH']);

/**
 * The only code that knows Docker. One fresh container per execution: create -> attach -> start
 * (ahead of time when it comes from the warm pool) -> stream the job in (tar on stdin) -> collect
 * frames until the runner says done -> answer. Removal happens after the answer, tracked so that
 * shutdown (and tests) can wait for it.
 */
export class DockerSandbox implements Sandbox {
  private readonly removals = new Set<Promise<void>>();
  private readonly running = new Map<string, Docker.Container>();
  private readonly volumes = new Set<string>();

  readonly pool: WarmPool<DockerPrepared> | null;

  constructor(
    private readonly docker: Docker,
    private readonly options: DockerSandboxOptions,
    private readonly logger: Logger,
    poolOptions: PoolOptions = { size: 0, maxProfiles: 0 },
    private readonly metrics?: Metrics,
  ) {
    this.pool =
      poolOptions.size > 0
        ? new WarmPool<DockerPrepared>({
            ...poolOptions,
            prepare: (spec) => this.prepare(spec),
            discard: (prepared) => this.remove(prepared.container),
            logger,
          })
        : null;
  }

  /** Create, attach and start a container whose runner then waits for its job on stdin. */
  async prepare(spec: SpecInput): Promise<DockerPrepared> {
    const t0 = Date.now();
    await this.ensureVolume(spec.packagesVolume);
    const container = await this.docker.createContainer(containerSpec(spec));
    const t1 = Date.now();
    try {
      const stream = (await container.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as Duplex;
      const prepared: DockerPrepared = {
        container,
        stream,
        dead: false,
        ended: Promise.resolve(),
        out: () => undefined,
        err: () => undefined,
        createMs: t1 - t0,
        startMs: 0,
      };
      prepared.ended = new Promise<void>((resolve) => {
        const end = () => {
          prepared.dead = true;
          resolve();
        };
        stream.once('end', end);
        stream.once('close', end);
        stream.once('error', end);
      });
      // Each job points out/err at its own decoder; the container's output is hostile input.
      this.docker.modem.demuxStream(
        stream,
        { write: (chunk: Buffer) => (prepared.out(chunk), true) } as unknown as NodeJS.WritableStream,
        { write: (chunk: Buffer) => (prepared.err(chunk), true) } as unknown as NodeJS.WritableStream,
      );
      await container.start();
      prepared.startMs = Date.now() - t1;
      this.metrics?.containerPhase.observe({ phase: 'create' }, prepared.createMs / 1000);
      this.metrics?.containerPhase.observe({ phase: 'start' }, prepared.startMs / 1000);
      return prepared;
    } catch (err) {
      this.remove(container);
      throw err;
    }
  }

  warm(job: Pick<SandboxJob, 'limits' | 'packagesVolume'>): void {
    this.pool?.warm({ ...this.options, executionId: 'warm', limits: job.limits, packagesVolume: job.packagesVolume });
  }

  ready(): number {
    return this.pool?.size ?? 0;
  }

  async run(job: SandboxJob): Promise<SandboxOutcome> {
    const spec: SpecInput = {
      ...this.options,
      executionId: job.executionId,
      limits: job.limits,
      packagesVolume: job.packagesVolume,
      packagesWritable: job.packagesWritable,
      network: job.network,
      wheelhouseMb: job.wheelhouse?.length
        ? Math.ceil(job.wheelhouse.reduce((n, f) => n + f.data.length, 0) / 1024 / 1024) + 1
        : undefined,
    };
    // Only plain executions use the pool: installs need a writable volume and maybe a network.
    const pooled = job.mode === 'code' || job.mode === 'file' ? (this.pool?.take(spec) ?? null) : null;
    if (this.pool && (job.mode === 'code' || job.mode === 'file')) {
      this.metrics?.poolTakes.inc({ result: pooled ? 'hit' : 'miss' });
    }
    let prepared: DockerPrepared;
    try {
      prepared = pooled ?? (await this.prepare(spec));
    } catch (err) {
      throw this.explain(err);
    }
    return this.execute(prepared, job, pooled !== null);
  }

  /** Hands a prepared container its one job, collects the answer, and has it removed. */
  private async execute(prepared: DockerPrepared, job: SandboxJob, pooled: boolean): Promise<SandboxOutcome> {
    const started = Date.now();
    const { container, stream } = prepared;
    const phases: Record<string, number> = pooled ? { pool: 1 } : { create: prepared.createMs, start: prepared.startMs };
    const { limits } = job;
    this.running.set(job.executionId, container);
    try {
      let violation: string | null = null;
      let killedForTimeout = false;
      let finish!: () => void;
      const doneFrame = new Promise<void>((resolve) => (finish = resolve));
      const kill = () => {
        container.kill({ signal: 'SIGKILL' }).catch(() => undefined); // already gone is fine
      };
      const workspaceBytes = limits.workspaceMb * 1024 * 1024;
      const changes = new ChangesReader({ maxBytes: workspaceBytes, maxFiles: limits.maxFiles });
      const decoder = new FrameDecoder(
        {
          outputBytes: limits.outputBytes,
          filesBytes: workspaceBytes + (limits.maxFiles + 16) * 3 * 512,
          reportBytes: 20 * limits.outputBytes + (limits.maxFiles + 1) * 1100,
        },
        { files: (chunk) => changes.write(chunk), overCap: kill, done: finish },
      );
      let diagnostics = '';
      prepared.out = (chunk) => {
        if (violation) return;
        try {
          decoder.push(chunk);
        } catch (err) {
          violation = (err as Error).message;
          kill();
          finish();
        }
      };
      prepared.err = (chunk) => {
        if (diagnostics.length < DIAGNOSTICS_BYTES) diagnostics += chunk.toString('utf8', 0, DIAGNOSTICS_BYTES);
      };

      let abandon: NodeJS.Timeout | undefined;
      const backstop = setTimeout(() => {
        killedForTimeout = true;
        kill();
        // Should the kill or the stream's end never come, stop waiting on either.
        abandon = setTimeout(() => stream.destroy(), BACKSTOP_GRACE_MS);
      }, limits.timeoutS * 1000 + BACKSTOP_GRACE_MS);
      const input = packJob(
        {
          protocol: PROTOCOL_VERSION,
          mode: job.mode,
          code: job.code,
          file: job.file,
          variable: job.variable,
          requirement: job.install?.requirement,
          upgrade: job.install?.upgrade,
          pip_args: job.install?.pipArgs,
          packages_max_bytes: job.install?.packagesMaxBytes,
          timeout_s: limits.timeoutS,
          output_limit: limits.outputBytes,
          result_limit: limits.outputBytes,
        },
        job.workspace,
        job.wheelhouse,
      );
      input.on('error', () => undefined);
      input.pipe(stream);
      await Promise.race([doneFrame, prepared.ended]);
      clearTimeout(backstop);
      clearTimeout(abandon);
      let t = Date.now();
      phases.run = t - started;

      let report: RunnerReport | null = null;
      let files: SandboxOutcome['changes'] = null;
      if (!violation) {
        try {
          report = decoder.finish();
          if (report) {
            const accepted = await changes.finish();
            files = { ...accepted, deleted: report.deleted };
            if (changes.dropped.length > 0) {
              this.logger.warn('sandbox sent entries that were dropped', {
                execution_id: job.executionId,
                dropped: changes.dropped.slice(0, 20),
              });
            }
          }
        } catch (err) {
          if (!(err instanceof ProtocolViolation)) throw err;
          violation = err.message;
          report = null;
        }
      }
      if (violation) {
        this.logger.warn('sandbox protocol violation', { execution_id: job.executionId, violation });
      }
      // With a report the runner has said all there is; only without one is the container's end worth asking about.
      const state = report ? { exitCode: report.exit_code, oomKilled: false } : await this.finalState(container);
      if (!report && diagnostics) {
        this.logger.warn('sandbox ended without a report', { execution_id: job.executionId, diagnostics });
      }
      phases.collect = Date.now() - t;
      t = Date.now();

      return {
        stdout: decoder.stdout(),
        stderr: decoder.stderr(),
        report: violation ? null : report,
        changes: violation ? null : files,
        exitCode: report ? report.exit_code : killedForTimeout || violation ? null : state.exitCode,
        timedOut: killedForTimeout || (report?.timed_out ?? false),
        truncated: decoder.truncated || (report?.truncated ?? false) || (report?.result_truncated ?? false),
        oomKilled: state.oomKilled || (report?.oom_killed ?? false),
        violation,
        durationMs: Date.now() - started,
        phases,
      };
    } catch (err) {
      throw this.explain(err);
    } finally {
      this.running.delete(job.executionId);
      this.remove(container);
    }
  }

  /** Creates a tenant's packages volume (labelled) the first time it is used. */
  private async ensureVolume(name: string): Promise<void> {
    if (this.volumes.has(name)) return;
    await this.docker.createVolume({ Name: name, Labels: { [LABEL]: '1' } });
    this.volumes.add(name);
  }

  /** Exit code and OOM flag of a container that has stopped (killing it first if it has not). */
  private async finalState(container: Docker.Container): Promise<{ exitCode: number | null; oomKilled: boolean }> {
    let info = await container.inspect();
    if (info.State.Running) {
      await container.kill({ signal: 'SIGKILL' }).catch(() => undefined);
      await Promise.race([container.wait(), new Promise((resolve) => setTimeout(resolve, 10_000))]);
      info = await container.inspect();
    }
    return { exitCode: info.State.ExitCode ?? null, oomKilled: info.State.OOMKilled === true };
  }

  /**
   * Removes a container in the background, tracked for shutdown. The answer is sent while the
   * runner exits, and Docker can refuse a forced removal caught mid-exit ("is not running"), so a
   * refusal is retried, backing off, before it is logged as an error (the start-up reaper is the
   * last resort).
   */
  private remove(container: Docker.Container): void {
    const started = Date.now();
    const removal = (async () => {
      for (let attempt = 1; ; attempt += 1) {
        try {
          await container.remove({ force: true, v: true });
          return;
        } catch (err) {
          const e = err as { statusCode?: number; message?: string };
          if (e.statusCode === 404) return; // gone
          // Anything else, "removal already in progress" included, is retried: seen on Docker 20.10,
          // a refused removal can leave the container flagged until someone asks again.
          if (attempt === REMOVE_ATTEMPTS) {
            this.logger.error('could not remove a sandbox container', { id: container.id, error: e.message });
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
        }
      }
    })().finally(() => {
      this.removals.delete(removal);
      this.metrics?.containerPhase.observe({ phase: 'remove' }, (Date.now() - started) / 1000);
    });
    this.removals.add(removal);
  }

  async health(): Promise<SandboxHealth> {
    let version: string;
    try {
      version = (await this.docker.version()).Version;
    } catch (err) {
      return { reachable: false, version: null, imagePresent: false, error: this.explain(err).message };
    }
    try {
      const image = await this.docker.getImage(this.options.image).inspect();
      const protocol = image.Config?.Labels?.['run-python-code.protocol'];
      if (protocol !== String(PROTOCOL_VERSION)) {
        return {
          reachable: true,
          version,
          imagePresent: false,
          error: `Sandbox image ${this.options.image} speaks runner protocol ${protocol ?? 'none'}, ` +
            `this server needs ${PROTOCOL_VERSION}: rebuild it with \`npm run sandbox:build\``,
        };
      }
      return { reachable: true, version, imagePresent: true };
    } catch (err) {
      return { reachable: true, version, imagePresent: false, error: this.explain(err).message };
    }
  }

  async reapStale(): Promise<number> {
    const stale = await this.listOwn();
    await Promise.all(stale.map((info) => this.docker.getContainer(info.Id).remove({ force: true, v: true }).catch(() => undefined)));
    if (stale.length > 0) this.logger.warn('removed stale sandbox containers', { count: stale.length });
    return stale.length;
  }

  async shutdown(force: boolean): Promise<void> {
    await this.pool?.close();
    if (force) {
      await Promise.all([...this.running.values()].map((c) => c.kill({ signal: 'SIGKILL' }).catch(() => undefined)));
    }
    while (this.removals.size > 0) await Promise.allSettled([...this.removals]);
  }

  private listOwn(): Promise<Docker.ContainerInfo[]> {
    return this.docker.listContainers({
      all: true,
      filters: { label: [`${INSTANCE_LABEL}=${this.options.instanceId}`] },
    });
  }

  /** Turns Docker's failures into what an operator can act on. */
  private explain(err: unknown): Error {
    const e = err as { statusCode?: number; code?: string; message?: string; json?: { message?: string } };
    const detail = e.json?.message ?? e.message ?? String(err);
    if (e.statusCode === 404 && /no such image/i.test(detail)) {
      return unavailable(`Sandbox image ${this.options.image} is missing: build it with \`npm run sandbox:build\``);
    }
    if (e.code && UNREACHABLE.has(e.code)) {
      const where = process.env.DOCKER_HOST ?? '/var/run/docker.sock';
      return unavailable(
        `Docker engine is not reachable at ${where} (${e.code}): start it (\`sudo systemctl start docker\` ` +
          'or `sudo dockerd &`) or point DOCKER_HOST at one',
      );
    }
    if (typeof e.statusCode === 'number' && e.statusCode >= 400) {
      // The engine refused (a runtime that is not registered, a daemon fault): the operator's to fix.
      return unavailable(`Docker could not run the sandbox: ${detail}`);
    }
    return err instanceof Error ? err : new Error(detail);
  }
}
