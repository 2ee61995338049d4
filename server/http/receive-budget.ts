/** Bytes held for one body being received; `release()` gives them back (once, however often called). */
export interface Reservation {
  release(): void;
}

/** Which cap a reservation would exceed. */
export type Refusal = 'tenant' | 'total';

/**
 * The request-body bytes the server is receiving at once, per tenant and in total. A body reserves
 * the most it can hold before a byte of it is read, so the sum of reservations bounds the memory
 * that bodies in flight can take, whatever the clients do.
 */
export class ReceiveBudget {
  private total = 0;
  private readonly perTenant = new Map<string, number>();

  constructor(
    readonly totalMax: number,
    readonly tenantMax: number,
  ) {}

  get receiving(): number {
    return this.total;
  }

  reserve(tenant: string, bytes: number): Reservation | Refusal {
    const own = this.perTenant.get(tenant) ?? 0;
    if (own + bytes > this.tenantMax) return 'tenant';
    if (this.total + bytes > this.totalMax) return 'total';
    this.total += bytes;
    this.perTenant.set(tenant, own + bytes);
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.total -= bytes;
        const left = (this.perTenant.get(tenant) ?? bytes) - bytes;
        if (left === 0) this.perTenant.delete(tenant);
        else this.perTenant.set(tenant, left);
      },
    };
  }
}
