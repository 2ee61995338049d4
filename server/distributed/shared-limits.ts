import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { RedisStore } from 'rate-limit-redis';
import { unavailable } from '../errors.js';
import type { SharedLimits } from '../tenancy/admission.js';

const WINDOW_MS = 60_000;
const POLL_MS = 100;

/**
 * Takes a slot of a tenant when it has fewer than `cap` live leases: a sorted set of lease ids
 * scored by when they expire, so a lease of an API node that died lapses instead of holding the
 * slot for ever.
 */
const TAKE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0`;

const redisAway = () => unavailable('Redis does not answer, so the tenant limits cannot be checked; retry once it is back');

/**
 * The tenant limits that must hold across API nodes, counted in Redis: requests_per_minute
 * (rate-limit-redis's fixed window, the same count express-rate-limit keeps) and max_concurrent
 * (leases that last at most `leaseMs`, the longest a run can take).
 */
export class RedisLimits implements SharedLimits {
  private readonly store: RedisStore;

  constructor(
    private readonly redis: Redis,
    private readonly leaseMs: number,
  ) {
    this.store = new RedisStore({ sendCommand: (command: string, ...args: string[]) => redis.call(command, ...args) as never, prefix: 'rpc:rate:' });
    void this.store.init({ windowMs: WINDOW_MS } as Parameters<RedisStore['init']>[0]);
  }

  async take(tenant: string, perMinute: number): Promise<number> {
    if (perMinute === 0) return 0;
    const { totalHits, resetTime } = await this.store.increment(tenant).catch(() => {
      throw redisAway();
    });
    if (totalHits <= perMinute) return 0;
    return Math.max(1, Math.ceil(((resetTime?.getTime() ?? Date.now() + WINDOW_MS) - Date.now()) / 1000));
  }

  async slot(tenant: string, cap: number, waitMs: number, signal?: AbortSignal): Promise<(() => Promise<void>) | null> {
    const key = `rpc:running:${tenant}`;
    const lease = randomUUID();
    const deadline = Date.now() + waitMs;
    for (;;) {
      const now = Date.now();
      const taken = await this.redis.eval(TAKE, 1, key, now, cap, now + this.leaseMs, lease, this.leaseMs).catch(() => {
        throw redisAway();
      });
      if (taken === 1) return async () => void (await this.redis.zrem(key, lease).catch(() => undefined)); // else it lapses
      if (now >= deadline || signal?.aborted) return null;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}
