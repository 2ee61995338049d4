import { createHmac, timingSafeEqual } from 'node:crypto';

/** What a proxy credential names: the execution, its tenant, and when it stops being good. */
export interface Grant {
  tenant: string;
  executionId: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

/**
 * Per-execution proxy credentials, signed (HMAC-SHA256) rather than stored, so that a proxy in
 * another process (docker-compose's egress-proxy service) checks them with the shared secret
 * alone. The user name is the execution id; the password carries the grant and its signature.
 */
export class Credentials {
  constructor(private readonly secret: Buffer) {}

  issue(grant: Grant): { username: string; password: string } {
    const payload = Buffer.from(JSON.stringify([grant.tenant, grant.executionId, grant.expiresAt])).toString('base64url');
    return { username: grant.executionId, password: `${payload}.${this.sign(payload)}` };
  }

  /** The grant of a Proxy-Authorization header's Basic credential, or null when it is not one of ours (or has expired). */
  check(header: string | undefined, now = Date.now()): Grant | null {
    const basic = /^Basic ([A-Za-z0-9+/=]+)$/.exec(header?.trim() ?? '');
    if (!basic) return null;
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const [payload, signature] = decoded.slice(colon + 1).split('.');
    if (colon < 0 || !payload || !signature) return null;
    const expected = Buffer.from(this.sign(payload));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    let fields: unknown;
    try {
      fields = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    } catch {
      return null;
    }
    if (!Array.isArray(fields) || fields.length !== 3) return null;
    const [tenant, executionId, expiresAt] = fields as [unknown, unknown, unknown];
    if (typeof tenant !== 'string' || typeof executionId !== 'string' || typeof expiresAt !== 'number') return null;
    if (decoded.slice(0, colon) !== executionId || expiresAt < now) return null;
    return { tenant, executionId, expiresAt };
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.secret).update(payload).digest('base64url');
  }
}
