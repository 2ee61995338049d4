import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** ctx_, this server run's tag (8 hex), a random part (16 hex), and a MAC of both and the tenant (12 hex). */
const FORMAT = /^ctx_([0-9a-f]{8})([0-9a-f]{16})([0-9a-f]{12})$/;

/** Who issued an id, as its format shows: this run of the server, an earlier run of this deployment, or nobody known. */
export type IdOrigin = 'this-run' | 'earlier-run' | 'unknown';

/**
 * Context ids that say where they came from, so that an id whose context is gone can be answered
 * honestly even after a restart (410: "lost when the server restarted") while an id that was never
 * this tenant's stays a 404. The MAC is keyed by the deployment id (never sent to clients) and
 * covers the tenant, so one tenant cannot learn that another's id exists.
 */
export class ContextIds {
  /** This run's tag: random, so that two runs never share one. */
  private readonly run = randomBytes(4).toString('hex');

  constructor(private readonly key: string) {}

  issue(tenant: string): string {
    const random = randomBytes(8).toString('hex');
    return `ctx_${this.run}${random}${this.mac(tenant, this.run, random)}`;
  }

  origin(id: string, tenant: string): IdOrigin {
    const match = FORMAT.exec(id);
    if (!match) return 'unknown';
    const [, run, random, mac] = match as unknown as [string, string, string, string];
    if (!timingSafeEqual(Buffer.from(mac), Buffer.from(this.mac(tenant, run, random)))) return 'unknown';
    return run === this.run ? 'this-run' : 'earlier-run';
  }

  private mac(tenant: string, run: string, random: string): string {
    return createHmac('sha256', this.key).update(`${tenant}\0${run}${random}`).digest('hex').slice(0, 12);
  }
}
