import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { ContextInfo } from '../contract/contract.js';
import { ENDED_KEPT_MS } from '../contexts/context-service.js';
import type { Logger } from '../logger.js';
import type { SandboxLimits } from '../sandbox/sandbox.js';

/** A context as PostgreSQL keeps it: where it lives, and what GET /contexts/{id} shows. */
export interface ContextRow {
  id: string;
  tenant: string;
  worker: string;
  epoch: number;
  /** As ContextInfo says, or `starting`: a reservation. */
  state: ContextInfo['state'] | 'starting';
  info: ContextInfo;
  limits: SandboxLimits;
}

/** Why a live row's worker no longer holds it (null: it does), asked of Redis's presence. */
export type LostCheck = (row: ContextRow) => Promise<string | null>;

const COLUMNS = 'id, tenant, worker, epoch, state, info, limits';
const rowOf = (raw: Record<string, unknown>): ContextRow => ({ ...(raw as unknown as ContextRow), epoch: Number(raw.epoch) });
const endedFor = `now() + make_interval(secs => ${ENDED_KEPT_MS / 1000})`;

/** The info of a live context that is lost with its worker. */
export const lostInfo = (info: ContextInfo, why: string): ContextInfo => ({ ...info, state: 'lost', expires_at: null, busy: false, error: why });

/**
 * The contexts table (migration 1733100000004). A worker writes its own contexts' changes, in
 * order; an API node reads them, reserves a creation within max_contexts (one tenant's
 * reservations one at a time: an advisory lock), and marks lost the contexts of a lost worker.
 */
export class PgContexts {
  /** The worker's writes, one after the other, so that a context's last change is the one kept. */
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly pool: pg.Pool,
    private readonly logger: Logger,
  ) {}

  /** The worker's side: a change of one of its contexts. An ended row is never made live again. */
  write(worker: string, epoch: number, tenant: string, info: ContextInfo, limits: SandboxLimits): void {
    this.tail = this.tail.then(() =>
      this.pool
        .query(
          `INSERT INTO contexts (${COLUMNS}, kept_until) VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $5 = 'active' THEN NULL ELSE ${endedFor} END)
           ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, info = EXCLUDED.info, kept_until = EXCLUDED.kept_until WHERE contexts.state = 'active'`,
          [info.context_id, tenant, worker, epoch, info.state, JSON.stringify(info), JSON.stringify(limits)],
        )
        .then(
          () => undefined,
          // GET /contexts then shows an older state; the worker still holds the context as it is.
          (err: Error) => {
            this.logger.warn('context state not kept in PostgreSQL', { context_id: info.context_id, error: err.message });
          },
        ),
    );
  }

  /** Resolves once every change written so far is in PostgreSQL (before a worker answers a job). */
  flushed(): Promise<void> {
    return this.tail;
  }

  /**
   * An API node's side: a reservation for one more live context of `tenant`, held `ttlMs` at most,
   * or the live contexts that fill its max_contexts. Contexts of lost workers are marked lost first.
   */
  async reserve(tenant: string, max: number, ttlMs: number, lost: LostCheck): Promise<{ reservation: string } | { count: number; active: ContextRow[] }> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query("SELECT pg_advisory_xact_lock(hashtext('rpc-contexts:' || $1))", [tenant]);
      await client.query("DELETE FROM contexts WHERE tenant = $1 AND state <> 'active' AND kept_until <= now()", [tenant]);
      const { rows } = await client.query(`SELECT ${COLUMNS} FROM contexts WHERE tenant = $1 AND state IN ('active', 'starting')`, [tenant]);
      const live: ContextRow[] = [];
      for (const row of rows.map(rowOf)) {
        if (row.state === 'starting') {
          live.push(row);
          continue;
        }
        const why = await lost(row);
        if (why === null) live.push(row);
        else await this.markLost(row, why, client);
      }
      if (live.length >= max) {
        await client.query('COMMIT');
        return { count: live.length, active: live.filter((r) => r.state === 'active') };
      }
      const reservation = `pending_${randomUUID()}`;
      await client.query(
        "INSERT INTO contexts (id, tenant, state, kept_until) VALUES ($1, $2, 'starting', now() + make_interval(secs => $3))",
        [reservation, tenant, ttlMs / 1000],
      );
      await client.query('COMMIT');
      return { reservation };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** The reservation is over: its context is live (the worker wrote its row) or was not made. */
  async release(reservation: string): Promise<void> {
    await this.pool.query("DELETE FROM contexts WHERE id = $1 AND state = 'starting'", [reservation]);
  }

  async find(id: string, tenant: string): Promise<ContextRow | null> {
    const { rows } = await this.pool.query(
      `SELECT ${COLUMNS} FROM contexts WHERE id = $1 AND tenant = $2 AND state <> 'starting' AND (kept_until IS NULL OR kept_until > now())`,
      [id, tenant],
    );
    return rows[0] ? rowOf(rows[0]) : null;
  }

  /** The tenant's contexts, the live ones first. */
  async list(tenant: string): Promise<ContextRow[]> {
    const { rows } = await this.pool.query(
      `SELECT ${COLUMNS} FROM contexts WHERE tenant = $1 AND state <> 'starting' AND (kept_until IS NULL OR kept_until > now())
       ORDER BY state <> 'active', info->>'created_at'`,
      [tenant],
    );
    return rows.map(rowOf);
  }

  /** A live context whose worker is lost: lost for every API node from now on (unless it ended first). */
  async markLost(row: ContextRow, why: string, client: pg.Pool | pg.PoolClient = this.pool): Promise<ContextInfo> {
    const info = lostInfo(row.info, why);
    await client.query(`UPDATE contexts SET state = 'lost', info = $2, kept_until = ${endedFor} WHERE id = $1 AND state = 'active'`, [row.id, JSON.stringify(info)]);
    return info;
  }
}
