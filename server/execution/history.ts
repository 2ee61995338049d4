import type { ExecutionResponse } from '../contract/contract.js';

/** Where answers are kept for GET /executions/{id}: this process's memory, or PostgreSQL on a distributed deployment. */
export interface HistoryStore {
  /** Keeps the answer; never fails the execution (a store that cannot keep it logs why). */
  record(tenant: string, response: ExecutionResponse): void | Promise<void>;
  /** The tenant's own answer, or null (also for another tenant's id). */
  get(tenant: string, executionId: string): ExecutionResponse | null | Promise<ExecutionResponse | null>;
}

interface Entry {
  tenant: string;
  response: ExecutionResponse;
  bytes: number;
  expires: number;
}

/**
 * Recent answers, so GET /executions/{id} can return a caller's own past result. Bounded by age
 * and by total size. Past the size, the oldest answer of the tenant holding the most bytes goes
 * first, so a tenant within its share (maxBytes / tenants with answers kept) never loses one to
 * another tenant's answers. An id of another tenant reads as absent.
 */
export class ExecutionHistory implements HistoryStore {
  /** Every answer, oldest first (all have the same retention, so this is also expiry order). */
  private readonly entries = new Map<string, Entry>();
  /** Each tenant's answers, oldest first, and their bytes. */
  private readonly tenants = new Map<string, { ids: Set<string>; bytes: number }>();
  private bytes = 0;

  constructor(
    private readonly retentionS: number,
    private readonly maxBytes: number,
    private readonly now: () => number = Date.now,
  ) {}

  record(tenant: string, response: ExecutionResponse): void {
    const bytes = JSON.stringify(response).length;
    if (this.retentionS === 0 || bytes > this.maxBytes) return;
    const id = response.execution_id;
    this.entries.set(id, { tenant, response, bytes, expires: this.now() + this.retentionS * 1000 });
    const own = this.tenants.get(tenant) ?? { ids: new Set<string>(), bytes: 0 };
    own.ids.add(id);
    own.bytes += bytes;
    this.tenants.set(tenant, own);
    this.bytes += bytes;
    this.prune();
  }

  get(tenant: string, executionId: string): ExecutionResponse | null {
    this.prune();
    const entry = this.entries.get(executionId);
    return entry && entry.tenant === tenant ? entry.response : null;
  }

  private prune(): void {
    const now = this.now();
    for (const [id, entry] of this.entries) {
      if (entry.expires > now) break;
      this.remove(id, entry);
    }
    while (this.bytes > this.maxBytes) {
      let largest: { ids: Set<string>; bytes: number } | undefined;
      for (const own of this.tenants.values()) if (!largest || own.bytes > largest.bytes) largest = own;
      const id = largest!.ids.values().next().value!;
      this.remove(id, this.entries.get(id)!);
    }
  }

  private remove(id: string, entry: Entry): void {
    this.entries.delete(id);
    this.bytes -= entry.bytes;
    const own = this.tenants.get(entry.tenant)!;
    own.ids.delete(id);
    own.bytes -= entry.bytes;
    if (own.ids.size === 0) this.tenants.delete(entry.tenant);
  }
}
