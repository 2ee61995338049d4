import type Docker from 'dockerode';
import type pg from 'pg';
import { ServiceError, unavailable } from '../errors.js';
import { toEnvelope } from '../execution/envelope.js';
import type { Logger } from '../logger.js';
import { pipError, toList, type PackageService } from '../packages/package-service.js';
import type { PackagesVolumes } from '../packages/volume.js';
import type { CatchUp, SandboxOutcome } from '../sandbox/sandbox.js';
import type { WireJob } from './wire.js';

export interface PackageSyncDeps {
  pool: pg.Pool;
  /** This worker's engine (its `docker info` ID): workers on one engine share what it holds. */
  engine(): Promise<string>;
  packages: PackageService;
  volumes: PackagesVolumes;
  /** This worker's INSTANCE_ID, for the errors. */
  worker: string;
  logger: Logger;
}

/**
 * The key of what an engine holds, so that workers sharing an engine share it: its `docker info`
 * ID, with its host name and data root, because Docker 20.10 keeps the ID in /etc/docker/key.json,
 * which two dockerds of one host (and cloned machines) share. The Docker proxy does not forward
 * /info: behind it each worker counts as an engine of its own, which costs a worker sharing one a
 * catch-up whose resolve finds nothing to install.
 */
export async function engineKey(docker: Docker, instanceId: string): Promise<string> {
  try {
    const info = (await docker.info()) as { ID: string; Name: string; DockerRootDir: string };
    return `engine:${info.ID}:${info.Name}:${info.DockerRootDir}`;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 403) return `worker:${instanceId}`;
    throw err;
  }
}

/** A volume's record: its generation and pins, and the generation this engine's copy holds. */
interface Recorded {
  generation: number;
  pins: Record<string, string>;
  held: number;
}

/**
 * Packages follow the tenant across the workers' engines. PostgreSQL records, per volume (a
 * tenant's packages, or one set of declared dependencies), the pins every install into it
 * installed with a generation counted up by each, and per engine the generation its copy holds.
 * Before a job that mounts a volume its engine holds an older generation of, the worker installs
 * the recorded pins there (PackageService's two phases and caps, this worker's wheelhouse or
 * index), under a PostgreSQL advisory lock on (engine, volume): once per engine, and one at a
 * time per tenant on a worker. A job that installs into a volume holds the same lock, and its
 * pins are recorded when it succeeds. Nothing here is retried: a failed catch-up fails the job
 * with why, and the tenant's next job tries again.
 */
export class PackageSync {
  constructor(private readonly deps: PackageSyncDeps) {}

  /** Runs `run` (the job) once the volumes it mounts are up to date on this engine; its outcome carries the catch-ups. */
  async around(data: WireJob, signal: AbortSignal, run: () => Promise<SandboxOutcome>): Promise<SandboxOutcome> {
    const { tenant } = data;
    if (tenant === undefined) return run();
    const engine = await this.engine();
    const mounted = [data.packagesVolume, ...(data.depsVolume ? [data.depsVolume] : [])];
    const writes = data.mode === 'install' && data.packagesWritable === true ? data.packagesVolume : null;
    const behind = await this.behind(engine, mounted);
    if (behind.length === 0 && writes === null) return run(); // the usual case: one query
    const catchUps: CatchUp[] = [];
    for (const volume of behind.filter((v) => v !== writes)) {
      const done = await this.locked(engine, volume, (client) => this.catchUp(client, engine, volume, tenant, data.executionId, signal));
      if (done.catchUp) catchUps.push(done.catchUp);
      if (done.catchUp?.error !== undefined) return notRun(catchUps);
    }
    if (writes === null) return { ...(await run()), catchUps };
    return this.locked(engine, writes, async (client) => {
      const done = await this.catchUp(client, engine, writes, tenant, data.executionId, signal);
      if (done.catchUp) catchUps.push(done.catchUp);
      if (done.catchUp?.error !== undefined) return notRun(catchUps);
      const outcome = await run();
      if (toEnvelope(data.executionId, outcome, data.limits).success && data.install?.pins?.length) {
        // The install happened: a record lost here only leaves the other engines without it.
        await this.record(client, engine, writes, tenant, data.install.pins, done.held).catch((err: Error) =>
          this.deps.logger.error('an install was not recorded: other engines will not get it', { execution_id: data.executionId, volume: writes, error: err.message }),
        );
      }
      return { ...outcome, catchUps };
    });
  }

  /** The volumes among `volumes` with a recorded generation newer than this engine's copy. */
  private async behind(engine: string, volumes: string[]): Promise<string[]> {
    const rows = await query<{ volume: string }>(
      this.deps.pool,
      `SELECT t.volume FROM tenant_packages t LEFT JOIN engine_packages e ON e.volume = t.volume AND e.engine = $1
       WHERE t.volume = ANY($2) AND t.generation > COALESCE(e.generation, 0)`,
      [engine, volumes],
    );
    return rows.map((r) => r.volume);
  }

  /** Under the lock: installs the volume's recorded pins unless this engine holds them by now; `held`: its generation after. */
  private async catchUp(
    client: pg.PoolClient,
    engine: string,
    volume: string,
    tenant: string,
    executionId: string,
    signal: AbortSignal,
  ): Promise<{ catchUp: CatchUp | null; held: number }> {
    const recorded = await this.recorded(client, engine, volume);
    if (!recorded || recorded.held >= recorded.generation) return { catchUp: null, held: recorded?.held ?? 0 };
    const target = volume === this.deps.volumes.name(tenant) ? 'packages' : 'dependencies';
    const pins = Object.entries(recorded.pins).map(([name, version]) => `${name}==${version}`).sort();
    const started = Date.now();
    const ctx = { executionId: `${executionId}-${target}-catchup`, endpoint: 'catch-up', tenant, signal };
    let why: string | null;
    let installed: CatchUp['installed'] = [];
    try {
      const outcome = await this.deps.packages.catchUp(volume, pins, ctx);
      const envelope = toEnvelope(ctx.executionId, outcome, this.deps.packages.installLimits(tenant));
      why = envelope.success ? null : ((outcome.report?.status === 'exit' ? pipError(outcome.stderr) : null) ?? envelope.error);
      const changed = outcome.report?.changed ?? [];
      if (!why) installed = toList(outcome.report?.packages ?? {}).filter((p) => changed.includes(p.name));
    } catch (err) {
      if (!(err instanceof ServiceError)) throw err;
      why = err.message; // the lists refuse a pin here, say, or the tenant is unknown to this worker
    }
    const catchUp: CatchUp = { target, generation: recorded.generation, installed, durationMs: Date.now() - started };
    if (why) {
      const what = target === 'packages' ? "the tenant's installed packages" : 'this set of declared dependencies';
      this.deps.logger.warn('catch-up install failed', { execution_id: executionId, tenant, volume, error: why });
      return { catchUp: { ...catchUp, error: `The engine of worker ${this.deps.worker} did not hold ${what} yet, and installing them there failed, so nothing ran: ${why}` }, held: recorded.held };
    }
    await holds(client, engine, volume, recorded.generation);
    this.deps.logger.info('caught up a volume on this engine', { execution_id: executionId, tenant, volume, generation: recorded.generation, installed: installed.length });
    return { catchUp, held: recorded.generation };
  }

  private async recorded(client: pg.PoolClient, engine: string, volume: string): Promise<Recorded | null> {
    const rows = await query<Recorded>(
      client,
      `SELECT t.generation, t.pins, COALESCE(e.generation, 0) AS held FROM tenant_packages t
       LEFT JOIN engine_packages e ON e.volume = t.volume AND e.engine = $1 WHERE t.volume = $2`,
      [engine, volume],
    );
    return rows[0] ?? null;
  }

  /**
   * Records a successful install's pins as the volume's next generation. This engine holds that
   * generation only when no other install came between (its copy held the one before).
   */
  private async record(client: pg.PoolClient, engine: string, volume: string, tenant: string, pins: string[], held: number): Promise<void> {
    const byName = Object.fromEntries(pins.map((pin) => pin.split('==') as [string, string]));
    const rows = await query<{ generation: number }>(
      client,
      `INSERT INTO tenant_packages (volume, tenant, generation, pins) VALUES ($1, $2, 1, $3)
       ON CONFLICT (volume) DO UPDATE SET generation = tenant_packages.generation + 1, pins = tenant_packages.pins || EXCLUDED.pins, updated_at = now()
       RETURNING generation`,
      [volume, tenant, JSON.stringify(byName)],
    );
    const generation = rows[0]!.generation;
    if (generation === held + 1) await holds(client, engine, volume, generation);
  }

  /** Runs `task` on a connection of its own holding the advisory lock of (engine, volume). */
  private async locked<T>(engine: string, volume: string, task: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.deps.pool.connect().catch((err: Error) => Promise.reject(noDatabase(err)));
    let broken = false;
    try {
      await query(client, 'SELECT pg_advisory_lock(hashtext($1), hashtext($2))', [engine, volume]);
      try {
        return await task(client);
      } finally {
        // A lost connection drops its lock with it.
        await client.query('SELECT pg_advisory_unlock(hashtext($1), hashtext($2))', [engine, volume]).catch(() => {
          broken = true;
        });
      }
    } finally {
      client.release(broken);
    }
  }

  private engineId: Promise<string> | null = null;

  private engine(): Promise<string> {
    this.engineId ??= this.deps.engine().catch((err: Error) => {
      this.engineId = null; // asked again by the next job
      throw unavailable(`The worker's Docker engine does not answer (${err.message})`);
    });
    return this.engineId;
  }
}

const noDatabase = (err: Error) => unavailable(`PostgreSQL, which records the tenants' packages, does not answer (${err.message})`);

async function query<R extends pg.QueryResultRow>(on: pg.Pool | pg.PoolClient, sql: string, params: unknown[]): Promise<R[]> {
  try {
    return (await on.query<R>(sql, params)).rows;
  } catch (err) {
    throw noDatabase(err as Error);
  }
}

/** Notes that this engine's copy of `volume` holds `generation` (never going back). */
async function holds(client: pg.PoolClient, engine: string, volume: string, generation: number): Promise<void> {
  await query(
    client,
    `INSERT INTO engine_packages (engine, volume, generation) VALUES ($1, $2, $3)
     ON CONFLICT (engine, volume) DO UPDATE SET generation = GREATEST(engine_packages.generation, EXCLUDED.generation)`,
    [engine, volume, generation],
  );
}

/** The outcome of a job that did not run because a catch-up before it failed (the envelope says why). */
function notRun(catchUps: CatchUp[]): SandboxOutcome {
  return {
    stdout: '',
    stderr: '',
    report: null,
    changes: null,
    exitCode: null,
    timedOut: false,
    truncated: false,
    oomKilled: false,
    violation: null,
    aborted: false,
    warnings: [],
    durationMs: catchUps.reduce((ms, c) => ms + c.durationMs, 0),
    phases: {},
    catchUps,
  };
}
