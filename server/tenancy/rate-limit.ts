const WINDOW_MS = 60_000;

/**
 * Runs per tenant per minute, in fixed windows that start at the tenant's first run in them
 * (express-rate-limit's memory store counts the same way, but per HTTP request).
 */
export class RateLimit {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Counts one run against `perMinute` (0: no limit). 0 when it may go ahead, else the seconds until it may. */
  take(tenant: string, perMinute: number): number {
    if (perMinute === 0) return 0;
    const now = this.now();
    let window = this.windows.get(tenant);
    if (!window || now - window.start >= WINDOW_MS) {
      window = { start: now, count: 0 };
      this.windows.set(tenant, window);
    }
    if (window.count >= perMinute) return Math.max(1, Math.ceil((window.start + WINDOW_MS - now) / 1000));
    window.count += 1;
    return 0;
  }
}
