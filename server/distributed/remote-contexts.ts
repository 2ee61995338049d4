import { randomUUID } from 'node:crypto';
import type { ContextInfo, CreateContextRequest } from '../contract/contract.js';
import { ContextIds } from '../contexts/context-ids.js';
import { INTERRUPT_GRACE_S, tooManyContexts, type Caller, type ContextBox, type ContextCall, type Contexts } from '../contexts/context-service.js';
import { gone, notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import type { SandboxOutcome } from '../sandbox/sandbox.js';
import type { TenantRegistry } from '../tenancy/tenant-registry.js';
import type { ContextRow, PgContexts } from './pg-contexts.js';
import { notDistributed, type QueueSandbox } from './queue-sandbox.js';
import { QUEUE_NAME, workerQueue, WORKERS_KEY, type WorkerPresence } from './redis.js';
import { bytesOf, readSource, unwrap, type WireAnswer, type WireCallResult, type WireContextCall, type WireContextCreate, type WireContextDelete } from './wire.js';

/** How often a request waiting on a context's worker asks Redis whether that worker is still there. */
const WATCH_EVERY_MS = 1_000;

export interface RemoteContextsDeps {
  store: PgContexts;
  sandbox: QueueSandbox;
  registry: TenantRegistry;
  logger: Logger;
  /** The deployment's id: the key of the ids' MAC (the workers issue them with it). */
  deployment: string;
  /** A worker not seen in Redis for this long has lost its contexts (WORKER_LOST_S). */
  lostS: number;
}

/**
 * An API node's contexts: each lives on the worker that took its creation (off the shared queue),
 * held there by that worker's own ContextService (one call at a time, expiry, an honest end). Its
 * calls and its deletion go to that worker's own queue; GET and list answer from PostgreSQL, where
 * the worker keeps each change. A worker gone from Redis's presence for WORKER_LOST_S, or started
 * again (a new epoch: its start removed its containers), has lost its contexts: 410, not a hang.
 */
export class RemoteContexts implements Contexts {
  private readonly ids: ContextIds;

  constructor(private readonly deps: RemoteContextsDeps) {
    this.ids = new ContextIds(deps.deployment);
  }

  async create(req: CreateContextRequest, ctx: Caller): Promise<ContextInfo> {
    const { store, sandbox, registry, logger } = this.deps;
    const { limits } = registry.get(ctx.tenant);
    // Its calls would need the egress doors an API node does not open (backend.ts): refused now, not at its first call.
    if (limits.egress.length > 0) throw notDistributed('Egress allowlists');
    // A reservation counts against max_contexts on every API node until the worker has written the context's row.
    const ttlMs = sandbox.ttlMs(0);
    const reserved = await store.reserve(ctx.tenant, limits.max_contexts, ttlMs, (row) => this.lostWhy(row));
    if ('count' in reserved) {
      const expiries = reserved.active.map((r) => Date.parse(r.info.expires_at ?? '') || Infinity);
      throw tooManyContexts(reserved.count, limits.max_contexts, Math.min(...expiries, Date.now() + limits.context_idle_s * 1000));
    }
    const data: WireContextCreate = { reservation: reserved.reservation, tenant: ctx.tenant, request: req };
    try {
      return unwrap(await sandbox.send<WireAnswer<ContextInfo>>(QUEUE_NAME, 'context', data, { jobId: reserved.reservation, ttlMs }));
    } finally {
      await store.release(reserved.reservation).catch((err: Error) => logger.warn('context reservation not released', { error: err.message }));
    }
  }

  async list(tenant: string): Promise<ContextInfo[]> {
    const rows = await this.deps.store.list(tenant);
    return Promise.all(rows.map(async (row) => (await this.current(row)).info));
  }

  async get(id: string, tenant: string): Promise<ContextInfo> {
    const row = await this.deps.store.find(id, tenant);
    if (!row) throw this.missing(id, tenant);
    return (await this.current(row)).info;
  }

  async delete(id: string, tenant: string): Promise<void> {
    const row = await this.live(id, tenant);
    const data: WireContextDelete = { contextId: id, tenant };
    const ttlMs = this.deps.sandbox.ttlMs(0);
    unwrap(await this.watched(row, this.deps.sandbox.send<WireAnswer<null>>(workerQueue(row.worker), 'delete', data, { jobId: `delete-${id}-${randomUUID()}`, ttlMs })));
  }

  async call<T extends { outcome: SandboxOutcome }>(id: string, tenant: string, waitS: number, call: ContextCall<T>): Promise<T> {
    const row = await this.live(id, tenant);
    let endedWhy: string | null = null;
    const box: ContextBox = {
      run: async (job) => {
        const data: WireContextCall = {
          contextId: id,
          tenant,
          waitS,
          interruptGraceS: job.interruptGraceS ?? INTERRUPT_GRACE_S,
          executionId: job.executionId,
          mode: job.mode,
          code: job.code,
          file: job.file,
          variable: job.variable,
          limits: job.limits,
          dirs: job.workspace.dirs,
          files: await readSource(job.workspace),
          wantsChanges: job.changes !== undefined,
          streams: job.onOutput !== undefined,
        };
        // Its turn may wait for the call before it (up to waitS), then it runs and may be interrupted.
        const ttlMs = this.deps.sandbox.ttlMs(waitS + job.limits.timeoutS + data.interruptGraceS);
        const sent = this.deps.sandbox.send<WireAnswer<WireCallResult>>(workerQueue(row.worker), 'call', data, {
          jobId: job.executionId,
          ttlMs,
          executionId: job.executionId,
          onOutput: job.onOutput,
        });
        const result = unwrap(await this.watched(row, sent));
        endedWhy = result.endedWhy;
        for (const file of result.files) await job.changes?.file(file.path, bytesOf(file));
        return result.outcome;
      },
    };
    return call(box, row.limits, () => endedWhy);
  }

  close(): void {} // the workers hold the contexts; each ends its own when it stops

  /** A live context's row, or the 410/404 the embedded server would answer. */
  private async live(id: string, tenant: string): Promise<ContextRow> {
    const row = await this.deps.store.find(id, tenant);
    if (!row) throw this.missing(id, tenant);
    const now = await this.current(row);
    if (now.state !== 'active') throw gone(now.info.error ?? `Context ${id} has ended`);
    return row;
  }

  /** The row as it is now: a live one whose worker is lost becomes lost (for every API node). */
  private async current(row: ContextRow): Promise<ContextRow> {
    if (row.state !== 'active') return row;
    const why = await this.lostWhy(row);
    return why === null ? row : { ...row, state: 'lost', info: await this.deps.store.markLost(row, why) };
  }

  /**
   * `work` (a job on the context's worker), or 410 as soon as that worker is lost, or as soon as
   * it stopped cleanly (its presence gone) with the context ended: its job will not be taken.
   */
  private watched<T>(row: ContextRow, work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const check = async (): Promise<string | null> => {
      const presence = await this.presenceOf(row.worker);
      const why = presence ? this.judge(row, presence) : (await this.deps.store.find(row.id, row.tenant))?.info.error ?? null;
      if (why !== null && presence) await this.deps.store.markLost(row, why).catch(() => undefined);
      return why;
    };
    const lost = new Promise<never>((_, reject) => {
      timer = setInterval(() => {
        void check().then(
          (why) => {
            if (why === null) return;
            clearInterval(timer);
            reject(gone(why));
          },
          () => undefined, // PostgreSQL away: the job's own deadline still holds
        );
      }, WATCH_EVERY_MS);
    });
    return Promise.race([work, lost]).finally(() => clearInterval(timer));
  }

  /**
   * Why the row's worker no longer holds it, from the worker's presence in Redis; null while it
   * does. No presence at all (Redis restarted and forgot it) is not a loss: the worker reports
   * again within seconds, and a worker that stopped cleanly ended its contexts first.
   */
  private async lostWhy(row: ContextRow): Promise<string | null> {
    const presence = await this.presenceOf(row.worker);
    return presence ? this.judge(row, presence) : null;
  }

  /** What the worker last said in Redis; null when it says nothing (or Redis does not answer). */
  private async presenceOf(worker: string): Promise<WorkerPresence | null> {
    const raw = await this.deps.sandbox.redis.hget(WORKERS_KEY, worker).catch(() => null);
    return raw === null ? null : (JSON.parse(raw) as WorkerPresence);
  }

  private judge(row: ContextRow, presence: WorkerPresence): string | null {
    const tail = 'its state is gone; create a new one';
    if (presence.epoch !== row.epoch) return `Context ${row.id} was lost: its worker ${row.worker} restarted (a restart removes its containers): ${tail}`;
    if (Date.now() - presence.seen > this.deps.lostS * 1000) {
      return `Context ${row.id} was lost: its worker ${row.worker} has not been seen for ${this.deps.lostS} s (WORKER_LOST_S): ${tail}`;
    }
    return null;
  }

  /** An id with no row: 410 when the id shows it was this tenant's (its row expired), else 404. */
  private missing(id: string, tenant: string) {
    if (this.ids.origin(id, tenant) === 'unknown') return notFound(`Context not found: ${id} (not one of this tenant's)`);
    return gone(`Context ${id} ended more than an hour ago: its state is gone; create a new one`);
  }
}
