import { unavailable } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { settledWithin } from '../settled-within.js';
import { containerSpec, INSTANCE_LABEL, LABEL, type SpecInput } from './container-spec.js';
import { JobRun, type JobRunTimings, type PreparedContainer } from './job-run.js';
import { PROTOCOL_VERSION, READY_FRAME } from './protocol.js';
import { EngineError, type Attachment, type ContainerRuntime } from './runtime.js';
import type { ContextSpec, Sandbox, SandboxContext, SandboxHealth, SandboxJob, SandboxOutcome } from './sandbox.js';
import { WarmPool } from './warm-pool.js';

export interface DockerSandboxOptions {
  image: string;
  instanceId: string;
  /**
   * Labels that say a volume is this server's: volumes it makes get them, and one that already
   * exists without them is never mounted (it is another's on the same engine).
   */
  volumeLabels?: Record<string, string>;
  /** Modules of the image a warm container imports while it waits for its job; empty: none. */
  preload: string[];
}

export interface PoolOptions {
  /** Containers kept ready per profile; 0 turns the pool off. */
  size: number;
  maxProfiles: number;
  retryAfterFailureMs?: number;
  diedAtOnceMs?: number;
}

/** The driver's clocks; tests shorten them. */
export interface DriverTimings extends JobRunTimings {
  /** Tries at removing one container before giving up (and logging it). */
  removeAttempts: number;
  /** The wait before removal attempt n is n times this. */
  removeBackoffMs: number;
  /** How long a preloading container may take to say it is ready before it is given up. */
  readyTimeoutMs: number;
  /**
   * How long a run's housekeeping (its container's removal, the pool's refill) waits for its answer
   * to be out: long enough for the answer's own work, short enough that a client slow to read a big
   * one does not keep containers past its admission slot for long.
   */
  answerWaitMs: number;
}

const TIMINGS: DriverTimings = {
  backstopGraceMs: 2000, finalWaitMs: 10_000, removeAttempts: 8, removeBackoffMs: 250, readyTimeoutMs: 60_000, answerWaitMs: 1000,
};

/**
 * Resolves once a preloading runner has sent its ready frame, the first and only bytes it sends
 * before its job; anything else, an end first, or silence past `ms` rejects. Reads in paused mode,
 * so the stream is left as it was for the job's run, with whatever came after the frame.
 */
function runnerReady(io: Attachment, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const finish = (problem: string | null) => {
      clearTimeout(timer);
      io.stdout.off('readable', onReadable);
      if (problem) reject(new EngineError('refused', `The sandbox runner did not get ready: ${problem}`));
      else resolve();
    };
    const onReadable = () => {
      const head = io.stdout.read(READY_FRAME.length) as Buffer | null;
      if (head !== null) finish(head.equals(READY_FRAME) ? null : 'it sent something else first');
    };
    const timer = setTimeout(() => finish(`no word within ${ms / 1000} s`), ms);
    io.stdout.on('readable', onReadable);
    void io.ended.then(() => finish('the container stopped first'));
  });
}

/**
 * The sandbox driver: one fresh container per job, through the container runtime seam. It
 * prepares containers (create -> attach -> start, ahead of time when the warm pool holds them),
 * hands each its one job (job-run.ts), and keeps house: removal after the answer (tracked, so
 * shutdown and tests can wait for it), reaping what a crashed server left, shutdown and health.
 */
export class DockerSandbox implements Sandbox {
  private readonly removals = new Set<Promise<void>>();
  /** Runs from the moment they are asked for (before their container exists) until they are answered. */
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Containers of the runs in flight, by execution id. */
  private readonly running = new Map<string, string>();
  private closing = false;
  private readonly volumes = new Set<string>();
  private python?: Promise<string | null>;
  private readonly timings: DriverTimings;

  readonly pool: WarmPool<PreparedContainer> | null;

  constructor(
    private readonly engine: ContainerRuntime,
    private readonly options: DockerSandboxOptions,
    private readonly logger: Logger,
    poolOptions: PoolOptions = { size: 0, maxProfiles: 0 },
    private readonly metrics?: Metrics,
    timings: Partial<DriverTimings> = {},
  ) {
    this.timings = { ...TIMINGS, ...timings };
    this.pool =
      poolOptions.size > 0
        ? new WarmPool<PreparedContainer>({
            ...poolOptions,
            prepare: (spec) => this.prepare(spec),
            discard: (prepared) => this.remove(prepared.id),
            logger,
          })
        : null;
  }

  /** Create, attach and start a container whose runner then waits for its job on stdin. */
  async prepare(spec: SpecInput): Promise<PreparedContainer> {
    const t0 = Date.now();
    await this.ensureVolume(spec.packagesVolume);
    if (spec.depsVolume) await this.ensureVolume(spec.depsVolume);
    const id = await this.engine.create(containerSpec(spec));
    const t1 = Date.now();
    try {
      const io = await this.engine.attach(id);
      const prepared: PreparedContainer = { id, io, dead: false, ended: io.ended, createMs: t1 - t0, startMs: 0 };
      void io.ended.then(() => (prepared.dead = true));
      await this.engine.start(id);
      prepared.startMs = Date.now() - t1;
      this.metrics?.containerPhase.observe({ phase: 'create' }, prepared.createMs / 1000);
      this.metrics?.containerPhase.observe({ phase: 'start' }, prepared.startMs / 1000);
      if (spec.preload?.length) {
        const t2 = Date.now();
        await runnerReady(io, this.timings.readyTimeoutMs);
        this.metrics?.containerPhase.observe({ phase: 'preload' }, (Date.now() - t2) / 1000);
      }
      return prepared;
    } catch (err) {
      this.remove(id);
      throw err;
    }
  }

  warm(job: Pick<SandboxJob, 'limits' | 'packagesVolume'> & { egressNetwork?: string }): void {
    const { limits, packagesVolume, egressNetwork } = job;
    // As runOnce makes an egress execution's spec: the same profile, or no execution would take these.
    const egress = egressNetwork ? { network: egressNetwork, egress: true } : {};
    this.pool?.refill({ ...this.options, executionId: 'warm', limits, packagesVolume, ...egress });
  }

  ready(): number {
    return this.pool?.size ?? 0;
  }

  run(job: SandboxJob): Promise<SandboxOutcome> {
    return this.track(() => this.runOnce(job));
  }

  /** Runs `task` unless the driver is closing, tracked until it settles (shutdown waits for it). */
  private track<T>(task: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(unavailable('The server is shutting down; retry on another instance or later'));
    const run = task();
    const tracked = run.catch(() => undefined).finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
    return run;
  }

  /**
   * A context: a cold container with an execution's caps (never from the pool: it is the context's
   * for its life), whose runner gets a first job of mode `context` to start its kernel; each call
   * after is a JobRun of origin `context` on the same attachment.
   */
  openContext(spec: ContextSpec): Promise<SandboxContext> {
    return this.track(async () => {
      const { contextId, limits, packagesVolume, egressNetwork } = spec;
      const prepared = await this.prepare({
        ...this.options, executionId: contextId, limits, packagesVolume, preload: [], network: egressNetwork, egress: egressNetwork !== undefined,
      });
      const call = (job: SandboxJob) =>
        this.track(async () => {
          this.running.set(job.executionId, prepared.id);
          try {
            return await new JobRun(this.engine, prepared, 'context', job, this.timings, this.logger).run();
          } finally {
            this.running.delete(job.executionId);
          }
        });
      try {
        const started = await call({ executionId: contextId, mode: 'context', workspace: { dirs: [], files: [] }, limits, packagesVolume });
        if (started.report?.status !== 'ok') {
          throw unavailable(`The context's sandbox did not start (${started.violation ?? `exit code ${started.exitCode ?? 'unknown'}`}): see the server log`);
        }
      } catch (err) {
        this.remove(prepared.id);
        throw err;
      }
      return {
        run: (job) => call({ ...job, packagesVolume }),
        ended: prepared.ended,
        oomKilled: async () => (await this.engine.inspect(prepared.id).catch(() => null))?.oomKilled ?? false,
        close: () => this.remove(prepared.id),
      };
    });
  }

  private async runOnce(job: SandboxJob): Promise<SandboxOutcome> {
    const spec: SpecInput = {
      ...this.options,
      executionId: job.executionId,
      limits: job.limits,
      packagesVolume: job.packagesVolume,
      packagesWritable: job.packagesWritable,
      depsVolume: job.depsVolume,
      network: job.egress?.network ?? job.network,
      egress: job.egress !== undefined,
      scratch: job.scratch,
      wheelhouseMb: job.wheelhouse?.length
        ? Math.ceil(job.wheelhouse.reduce((n, f) => n + f.data.length, 0) / 1024 / 1024) + 1
        : undefined,
    };
    // Only plain executions use the pool: installs need a writable volume and maybe a network.
    const poolable = this.pool !== null && (job.mode === 'code' || job.mode === 'file') && !job.depsVolume;
    const pooled = poolable ? this.pool!.take(spec) : null;
    if (poolable) this.metrics?.poolTakes.inc({ result: pooled ? 'hit' : 'miss' });
    // A cold container runs its job at once: preloading would only make the job wait.
    const prepared = pooled ?? (await this.prepare({ ...spec, preload: [] }));
    this.running.set(job.executionId, prepared.id);
    try {
      return await new JobRun(this.engine, prepared, pooled ? 'pool' : 'cold', job, this.timings, this.logger).run();
    } finally {
      this.running.delete(job.executionId);
      // The container's end and a new one's start cost CPU (tens of ms under gVisor): after the answer.
      const answered = settledWithin(job.answered, this.timings.answerWaitMs);
      this.remove(prepared.id, answered);
      if (pooled) void answered.then(() => this.pool!.refill(spec));
      // Warm containers of these packages preloaded them as they were before this install.
      if (job.mode === 'install' && this.options.preload.length > 0) {
        this.pool?.drop((s) => s.packagesVolume === job.packagesVolume);
      }
    }
  }

  /** Creates a volume (labelled) the first time it is used, and refuses one that carries another's labels. */
  private async ensureVolume(name: string): Promise<void> {
    if (this.volumes.has(name)) return;
    const wanted = { [LABEL]: '1', ...this.options.volumeLabels };
    const found = await this.engine.createVolume(name, wanted);
    const [label, value] = Object.entries(wanted).find(([k, v]) => found[k] !== v) ?? [];
    if (label) {
      throw unavailable(
        `Docker volume ${name} is not this server's (label ${label}=${found[label] ?? '(none)'}, expected ${value}): ` +
          'another deployment on this engine made it, so it is not mounted. Remove it if nothing uses it',
      );
    }
    this.volumes.add(name);
  }

  /**
   * Removes a container in the background, once `after` has settled, tracked for shutdown. Docker
   * can refuse a forced removal caught mid-exit ("is not running", "removal already in progress"),
   * so a refusal is retried, backing off, before it is logged as an error (the start-up reaper is
   * the last resort).
   */
  private remove(id: string, after: Promise<void> = Promise.resolve()): void {
    const { removeAttempts, removeBackoffMs } = this.timings;
    const removal = (async () => {
      await after;
      const started = Date.now();
      try {
        for (let attempt = 1; ; attempt += 1) {
          try {
            await this.engine.remove(id);
            return;
          } catch (err) {
            if (err instanceof EngineError && err.failure === 'no_container') return; // gone
            // Anything else is retried: seen on Docker 20.10, a refused removal can leave the
            // container flagged until someone asks again.
            if (attempt === removeAttempts) {
              this.logger.error('could not remove a sandbox container', { id, error: (err as Error).message });
              return;
            }
            await new Promise((resolve) => setTimeout(resolve, removeBackoffMs * attempt));
          }
        }
      } finally {
        this.metrics?.containerPhase.observe({ phase: 'remove' }, (Date.now() - started) / 1000);
      }
    })().finally(() => this.removals.delete(removal));
    this.removals.add(removal);
  }

  async removeVolume(name: string): Promise<void> {
    this.volumes.delete(name);
    await this.engine.removeVolume(name);
  }

  async pythonVersion(): Promise<string | null> {
    this.python ??= this.engine.imageLabels(this.options.image).then((labels) => labels['run-python-code.python'] ?? null);
    return this.python.catch((err: unknown) => {
      this.python = undefined; // asked again next time
      throw err;
    });
  }

  async health(): Promise<SandboxHealth> {
    let version: string;
    try {
      version = await this.engine.version();
    } catch (err) {
      return { reachable: false, version: null, imagePresent: false, error: (err as Error).message };
    }
    try {
      const protocol = (await this.engine.imageLabels(this.options.image))['run-python-code.protocol'];
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
      return { reachable: true, version, imagePresent: false, error: (err as Error).message };
    }
  }

  reapStale(): Promise<number> {
    return this.reapOrphans((instance) => instance === this.options.instanceId);
  }

  async reapOrphans(isOrphan: (instance: string) => boolean): Promise<number> {
    const ours = await this.engine.listByLabel(INSTANCE_LABEL);
    const stale = ours.filter((c) => isOrphan(c.labels[INSTANCE_LABEL] ?? ''));
    await Promise.all(stale.map((c) => this.engine.remove(c.id).catch(() => undefined)));
    if (stale.length > 0) this.logger.warn('removed stale sandbox containers', { count: stale.length });
    return stale.length;
  }

  async shutdown(force: boolean): Promise<void> {
    this.closing = true;
    await this.pool?.close();
    if (force) await Promise.all([...this.running.values()].map((id) => this.engine.kill(id)));
    while (this.inFlight.size > 0 || this.removals.size > 0) await Promise.allSettled([...this.inFlight, ...this.removals]);
    // A removal given up on, or a container whose create answered after its run failed: none is left.
    await this.reapStale().catch(() => 0);
  }
}
