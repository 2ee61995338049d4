import { ServiceError } from '../errors.js';
import { RateLimit } from './rate-limit.js';

const callerGone = () => new ServiceError('client_closed', 'The caller went away while the request waited for a slot');

interface Waiter {
  tenant: string;
  cap: number;
  start: () => void;
  refuse: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Tenant limits that hold across several API nodes (counted in Redis on a distributed deployment);
 * without them, this process's own counts are the whole truth.
 */
export interface SharedLimits {
  /** Counts one run against `perMinute` (0: no limit): 0 when it may go ahead, else the seconds until it may. */
  take(tenant: string, perMinute: number): Promise<number>;
  /** One of the tenant's `cap` slots across all nodes, waiting up to `waitMs`: its release, or null when none came. */
  slot(tenant: string, cap: number, waitMs: number, signal?: AbortSignal): Promise<(() => Promise<void>) | null>;
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
  /** A tenant's runs per minute as it is now (requests_per_minute; 0: no limit). */
  perMinute?(tenant: string): number;
  /** requests_per_minute and max_concurrent across nodes, where there are several. */
  shared?: SharedLimits;
  /** The clock of the rate limit (tests set it). */
  now?(): number;
}

/**
 * The one gate every sandbox run passes, whatever brought it (REST, MCP, a batch of either):
 * first the tenant's rate limit, which counts runs, not HTTP requests; then back-pressure: at
 * most `globalCap` sandboxes at once and at most a tenant's own cap for each tenant; the rest
 * wait in one bounded FIFO queue (a waiter whose tenant is at its cap does not hold up another
 * tenant's). Each tenant waiting is sure of queueMax / (tenants waiting) places: when the queue
 * is full, a newcomer under that share takes the place of the newest waiter of the tenant most
 * over it. Refusals are 429s with Retry-After.
 */
export class Admission {
  private running = 0;
  private readonly perTenant = new Map<string, number>();
  private readonly queue: Waiter[] = [];
  private averageMs = 500;
  private readonly rate: RateLimit;

  constructor(private readonly options: AdmissionOptions) {
    this.rate = new RateLimit(options.now);
  }

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
    const perMinute = this.options.perMinute?.(tenant) ?? 0;
    const { shared } = this.options;
    const wait = shared ? await shared.take(tenant, perMinute) : this.rate.take(tenant, perMinute);
    if (wait > 0) {
      const runs = `${perMinute} execution${perMinute === 1 ? '' : 's'}`;
      throw new ServiceError('busy', `Rate limit reached: ${runs} per minute for this tenant (requests_per_minute); retry in ${wait} s`, wait);
    }
    const asked = Date.now();
    await this.acquire(tenant, cap, signal);
    let releaseShared: (() => Promise<void>) | null = null;
    try {
      releaseShared = shared ? await shared.slot(tenant, cap, Math.max(0, asked + this.options.queueTimeoutMs - Date.now()), signal) : null;
    } catch (err) {
      this.release(tenant);
      throw err;
    }
    if (shared && !releaseShared) {
      this.release(tenant);
      if (signal?.aborted) throw callerGone();
      throw this.busy(`this tenant has max_concurrent ${cap} running on all API nodes together, and no slot came within ${+(this.options.queueTimeoutMs / 1000).toFixed(1)} s`);
    }
    const started = Date.now();
    this.options.onWait?.((started - asked) / 1000);
    try {
      return await task();
    } finally {
      this.averageMs = 0.8 * this.averageMs + 0.2 * (Date.now() - started);
      this.release(tenant);
      await releaseShared?.();
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
    if (this.queue.length >= this.options.queueMax) {
      const refusal = this.makeRoom(tenant);
      if (refusal) return Promise.reject(this.busy(refusal));
    }
    return new Promise((resolve, reject) => {
      // Whichever way a waiter leaves (a slot, a refusal, its timer, its caller going), it leaves once.
      const settle = () => {
        clearTimeout(waiter.timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const leave = (err: Error) => {
        const at = this.queue.indexOf(waiter);
        if (at >= 0) this.queue.splice(at, 1);
        waiter.refuse(err);
      };
      const onAbort = () => leave(callerGone());
      const waiter: Waiter = {
        tenant,
        cap,
        start: () => {
          settle();
          resolve();
        },
        refuse: (err) => {
          settle();
          reject(err);
        },
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
        this.take(waiter.tenant);
        waiter.start();
      } else {
        i += 1;
      }
    }
  }

  /**
   * The queue is full: refuses the newest waiter of the tenant most over its share, if `tenant`
   * is under its own. Returns why `tenant` must be refused instead, or null once there is room.
   */
  private makeRoom(tenant: string): string | null {
    const waiting = new Map<string, number>([[tenant, 0]]);
    for (const w of this.queue) waiting.set(w.tenant, (waiting.get(w.tenant) ?? 0) + 1);
    const share = Math.max(1, Math.floor(this.options.queueMax / waiting.size));
    const places = (n: number) => `${n} place${n === 1 ? '' : 's'}`;
    if (waiting.get(tenant)! >= share) {
      return `the queue is full and this tenant holds its share of it, ${places(share)} of QUEUE_MAX ${this.options.queueMax}`;
    }
    const [most, count] = [...waiting].reduce((a, b) => (b[1] > a[1] ? b : a));
    if (count <= share) return 'the queue is full';
    const index = this.queue.findLastIndex((w) => w.tenant === most);
    const [victim] = this.queue.splice(index, 1);
    victim!.refuse(this.busy(`another tenant took this place in the full queue: this tenant held more than its share, ${places(share)} of QUEUE_MAX ${this.options.queueMax}`));
    return null;
  }

  private busy(why: string): ServiceError {
    const seconds = Math.ceil(((this.queue.length + 1) * this.averageMs) / 1000 / this.options.globalCap);
    return new ServiceError('busy', `Too many executions in progress (${why}); retry later`, Math.min(60, Math.max(1, seconds)));
  }
}
