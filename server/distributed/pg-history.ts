import type pg from 'pg';
import type { ExecutionResponse } from '../contract/contract.js';
import type { HistoryStore } from '../execution/history.js';
import type { Logger } from '../logger.js';

const PRUNE_EVERY_MS = 60_000;

/**
 * The execution history in PostgreSQL, so that any API node answers GET /executions/{id}.
 * Bounded by age (EXECUTION_RETENTION_S); the table is pruned of expired rows once a minute.
 */
export class PgHistory implements HistoryStore {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pool: pg.Pool,
    private readonly retentionS: number,
    private readonly logger: Logger,
  ) {
    this.timer = setInterval(() => void this.prune(), PRUNE_EVERY_MS);
    this.timer.unref();
  }

  async record(tenant: string, response: ExecutionResponse): Promise<void> {
    if (this.retentionS === 0) return;
    try {
      await this.pool.query(
        `INSERT INTO executions (id, tenant, worker, response, expires_at) VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         ON CONFLICT (id) DO NOTHING`,
        [response.execution_id, tenant, response.worker ?? null, JSON.stringify(response), this.retentionS],
      );
    } catch (err) {
      // The answer still goes out; only GET /executions/{id} will not find it.
      this.logger.warn('execution not kept in the history', { execution_id: response.execution_id, error: (err as Error).message });
    }
  }

  async get(tenant: string, executionId: string): Promise<ExecutionResponse | null> {
    const { rows } = await this.pool.query<{ response: ExecutionResponse }>(
      'SELECT response FROM executions WHERE id = $1 AND tenant = $2 AND expires_at > now()',
      [executionId, tenant],
    );
    return rows[0]?.response ?? null;
  }

  private async prune(): Promise<void> {
    await this.pool.query('DELETE FROM executions WHERE expires_at <= now()').catch((err: Error) => this.logger.warn('history prune failed', { error: err.message }));
  }

  close(): void {
    clearInterval(this.timer);
  }
}
