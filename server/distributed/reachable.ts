import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../logger.js';

/** How long a starting node waits for Redis or PostgreSQL: they may start after it (compose, a reboot). */
const START_WAIT_MS = 120_000;
/** PostgreSQL's answers that waiting does not change: a bad password, a missing role or database. */
const PERMANENT = new Set(['28P01', '28000', '3D000']);

/** `attempt`'s result, tried every second while the service it reaches is not there yet, for up to two minutes. */
export async function untilReachable<T>(what: string, attempt: () => Promise<T>, logger: Logger): Promise<T> {
  const deadline = Date.now() + START_WAIT_MS;
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (err) {
      if (PERMANENT.has((err as { code?: string }).code ?? '') || Date.now() > deadline) throw err;
      if (tries === 1) logger.warn(`waiting for ${what} (for up to ${START_WAIT_MS / 1000} s)`, { error: (err as Error).message });
      await sleep(1000);
    }
  }
}
