import type { ExecutionResponse } from '../contract/contract.js';

interface Entry {
  tenant: string;
  response: ExecutionResponse;
  bytes: number;
  expires: number;
}

/**
 * Recent answers, so GET /executions/{id} can return a caller's own past result. Bounded by age
 * and by total size (the oldest go first); an id of another tenant reads as absent.
 */
export class ExecutionHistory {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(
    private readonly retentionS: number,
    private readonly maxBytes: number,
  ) {}

  record(tenant: string, response: ExecutionResponse): void {
    const bytes = JSON.stringify(response).length;
    if (this.retentionS === 0 || bytes > this.maxBytes) return;
    this.entries.set(response.execution_id, { tenant, response, bytes, expires: Date.now() + this.retentionS * 1000 });
    this.bytes += bytes;
    this.prune();
  }

  get(tenant: string, executionId: string): ExecutionResponse | null {
    this.prune();
    const entry = this.entries.get(executionId);
    return entry && entry.tenant === tenant ? entry.response : null;
  }

  private prune(): void {
    const now = Date.now();
    for (const [id, entry] of this.entries) {
      if (entry.expires > now && this.bytes <= this.maxBytes) break; // Map order is insertion order: oldest first
      this.entries.delete(id);
      this.bytes -= entry.bytes;
    }
  }
}
