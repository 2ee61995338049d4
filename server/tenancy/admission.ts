import { ServiceError } from '../errors.js';

const callerGone = () => new ServiceError('client_closed', 'The caller went away while the request waited for a slot');

interface Waiter {
  tenant: string;
  cap: number;
  start: () => void;
  refuse: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface AdmissionOptions {
  /** Sandboxes running at once, all tenants together. */
  globalCap: number;
  /** Requests waiting for a slot, all tenants together; past it: 429. */
  queueMax: number;
  /** Longest wait for a slot; past it: 429. */
  queueTimeoutMs: number;
  /** Told how long each admitted request waited, in seconds. */
  onWait?(seconds: number): void;
}

/**
 * Back-pressure: at most `globalCap` sandboxes at once and at most a tenant's own cap for each
 * tenant; the rest wait in one bounded FIFO queue (a waiter whose tenant is at its cap does not
 * hold up another tenant's); beyond the queue, or after waiting too long, a 429 with Retry-After.
 */
export class Admission {
  private running = 0;
  private readonly perTenant = new Map<string, number>();
  private readonly queue: Waiter[] = [];
  private averageMs = 500;

  constructor(private readonly options: AdmissionOptions) {}

  get inFlight(): number {
    return this.running;
  }

  get queued(): number {
    return this.queue.length;
  }

  /**
   * Runs `task` in a slot: take it (waiting if need be), run, release, whatever happens. A caller
   * whose `signal` aborts while it waits leaves the queue at once.
   */
  async run<T>(tenant: string, cap: number, task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const asked = Date.now();
    await this.acquire(tenant, cap, signal);
    const started = Date.now();
    this.options.onWait?.((started - asked) / 1000);
    try {
      return await task();
    } finally {
      this.averageMs = 0.8 * this.averageMs + 0.2 * (Date.now() - started);
      this.release(tenant);
    }
  }

  private canStart(tenant: string, cap: number): boolean {
    return this.running < this.options.globalCap && (this.perTenant.get(tenant) ?? 0) < cap;
  }

  private take(tenant: string): void {
    this.running += 1;
    this.perTenant.set(tenant, (this.perTenant.get(tenant) ?? 0) + 1);
  }

  private acquire(tenant: string, cap: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(callerGone());
    if (this.canStart(tenant, cap)) {
      this.take(tenant);
      return Promise.resolve();
    }
    if (this.queue.length >= this.options.queueMax) return Promise.reject(this.busy('the queue is full'));
    return new Promise((resolve, reject) => {
      const leave = (err: Error) => {
        this.queue.splice(this.queue.indexOf(waiter), 1);
        clearTimeout(waiter.timer);
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      const onAbort = () => leave(callerGone());
      const waiter: Waiter = {
        tenant,
        cap,
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        refuse: reject,
        timer: setTimeout(() => leave(this.busy(`no slot within ${+(this.options.queueTimeoutMs / 1000).toFixed(1)} s`)), this.options.queueTimeoutMs),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  private release(tenant: string): void {
    this.running -= 1;
    const left = (this.perTenant.get(tenant) ?? 1) - 1;
    if (left === 0) this.perTenant.delete(tenant);
    else this.perTenant.set(tenant, left);
    for (let i = 0; i < this.queue.length; ) {
      const waiter = this.queue[i]!;
      if (this.canStart(waiter.tenant, waiter.cap)) {
        this.queue.splice(i, 1);
        clearTimeout(waiter.timer);
        this.take(waiter.tenant);
        waiter.start();
      } else {
        i += 1;
      }
    }
  }

  private busy(why: string): ServiceError {
    const seconds = Math.ceil(((this.queue.length + 1) * this.averageMs) / 1000 / this.options.globalCap);
    return new ServiceError('busy', `Too many executions in progress (${why}); retry later`, Math.min(60, Math.max(1, seconds)));
  }
}
