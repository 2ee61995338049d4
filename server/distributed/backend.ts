import type pg from 'pg';
import type { Config } from '../config.js';
import type { HealthResponse } from '../contract/contract.js';
import type { Logger } from '../logger.js';
import { PgHistory } from './pg-history.js';
import { PgWorkspaceStore } from './pg-workspace.js';
import { untilReachable } from './reachable.js';
import { openDatabase } from './postgres.js';
import { notDistributed, QueueSandbox } from './queue-sandbox.js';
import type { EgressDoors } from '../egress/egress-gateway.js';
import { RedisLimits } from './shared-limits.js';
import { PgContexts } from './pg-contexts.js';
import { RemoteContexts } from './remote-contexts.js';
import type { ContextDeps, ContextObserver, Contexts } from '../contexts/context-service.js';
import type { SharedLimits } from '../tenancy/admission.js';
import { WORKERS_KEY, type WorkerPresence } from './redis.js';
import type { WorkspaceStore } from '../workspace/workspace-store.js';

/** What a distributed node plugs into buildService's seams. */
export interface Backend {
  /** The deployment's id, the same on every node of one database. */
  deployment: string;
  /** API node: the queue to the workers, and the history in PostgreSQL. */
  sandbox?: QueueSandbox;
  /** API node: requests_per_minute and max_concurrent counted in Redis, for all API nodes together. */
  limits?: SharedLimits;
  history?: PgHistory;
  /** API node: the tenants' workspaces in PostgreSQL, so that every API node serves the same files. */
  workspaces?: WorkspaceStore;
  /** API node: Redis, PostgreSQL and the workers, for GET /health. */
  health?(): Promise<Pick<HealthResponse, 'status' | 'redis' | 'postgres' | 'workers' | 'error'>>;
  /** API node: egress lists refused (the network and proxy would belong with a worker's engine). */
  egress?: EgressDoors;
  /** Worker node: PostgreSQL, where the tenants' installed packages are recorded (package-sync.ts). */
  database?: pg.Pool;
  /** API node: the contexts the workers hold, in place of its own ContextService. */
  contexts?(deps: ContextDeps): Contexts;
  /** Worker: its contexts' changes, kept in PostgreSQL for the API nodes. */
  contextObserver?: ContextObserver;
  /** Worker: resolves once the changes told to contextObserver so far are in PostgreSQL. */
  flushed?(): Promise<void>;
  /** Worker: when this run of it started (its presence says it; its contexts' rows name it). */
  epoch?: number;
  close(): Promise<void>;
}

async function deploymentOf(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ id: string }>('SELECT id FROM deployment LIMIT 1');
  return rows[0]!.id;
}

const reach = async (probe: () => Promise<unknown>) => {
  try {
    await probe();
    return { reachable: true };
  } catch (err) {
    return { reachable: false, error: (err as Error).message };
  }
};

/** An API node's backend: PostgreSQL migrated and open, the queue on Redis. */
export async function apiBackend(config: Config, logger: Logger): Promise<Backend> {
  const pool = await openDatabase(config.databaseUrl, logger);
  const sandbox = new QueueSandbox(
    { redisUrl: config.redisUrl, queueMax: config.queueMax, queueTimeoutS: config.queueTimeoutS, stalledS: config.stalledS, workerLostS: config.workerLostS },
    logger,
  );
  const history = new PgHistory(pool, config.executionRetentionS, logger);
  // Its connection refuses commands until it is up, and the rate limit loads its script at once.
  await untilReachable('Redis', () => sandbox.redis.ping(), logger);
  const deployment = await deploymentOf(pool);
  return {
    deployment,
    sandbox,
    history,
    workspaces: new PgWorkspaceStore(pool, config.baseDir),
    egress: {
      forExecution: () => Promise.reject(notDistributed('Egress allowlists')),
      network: () => Promise.reject(notDistributed('Egress allowlists')),
      close: async () => undefined,
    },
    contexts: (deps) =>
      new RemoteContexts({ store: new PgContexts(pool, logger), sandbox, registry: deps.registry, logger, deployment, lostS: config.workerLostS }),
    // A lease outlives the longest run (its queue wait, its timeout, a stalled retry) and no more.
    limits: new RedisLimits(sandbox.redis, (config.queueTimeoutS + config.maxTimeoutS + 2 * config.stalledS + 10) * 1000),
    async health() {
      const redis = await reach(() => sandbox.redis.ping());
      const postgres = await reach(() => pool.query('SELECT 1'));
      const now = Date.now();
      const seen = redis.reachable ? await sandbox.redis.hgetall(WORKERS_KEY).catch(() => ({})) : {};
      const workers = Object.entries(seen)
        .map(([id, raw]) => ({ id, ...(JSON.parse(raw as string) as WorkerPresence) }))
        .filter((w) => now - w.seen < config.workerLostS * 1000)
        .map((w) => ({ id: w.id, slots: w.slots, free: w.free, seen_s_ago: Math.round((now - w.seen) / 100) / 10 }));
      const problems = [
        redis.reachable ? null : `Redis does not answer (${redis.error})`,
        postgres.reachable ? null : `PostgreSQL does not answer (${postgres.error})`,
        workers.length > 0 || !redis.reachable ? null : `no worker has reported in the last ${config.workerLostS} s: start one (npm run worker)`,
      ].filter((p): p is string => p !== null);
      return { status: problems.length === 0 ? 'healthy' : 'unhealthy', redis, postgres, workers, ...(problems.length ? { error: problems.join('; ') } : {}) };
    },
    async close() {
      history.close();
      await sandbox.shutdown();
      await pool.end();
    },
  };
}

/** A worker node's backend: the deployment id, the record of packages, and its contexts' rows, in PostgreSQL (it keeps no answers). */
export async function workerBackend(config: Config, logger: Logger): Promise<Backend> {
  const pool = await openDatabase(config.databaseUrl, logger);
  const store = new PgContexts(pool, logger);
  const epoch = Date.now();
  return {
    deployment: await deploymentOf(pool),
    database: pool,
    contextObserver: (tenant, info, limits) => store.write(config.instanceId, epoch, tenant, info, limits),
    flushed: () => store.flushed(),
    epoch,
    async close() {
      await store.flushed(); // its contexts' ends (it is stopping) reach the API nodes
      await pool.end();
    },
  };
}
