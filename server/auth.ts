import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Config } from './config.js';
import { ServiceError } from './errors.js';
import { DEFAULT_TENANT } from './packages/volume.js';

/** Paths anyone may read: the service's name, its health and its documentation. */
const PUBLIC = /^\/(health|openapi\.json|redoc|docs(\/.*)?)?$/;

const sha256 = (text: string) => createHash('sha256').update(text).digest();

/** API_KEYS=k1,k2 makes one tenant per key, named from the key's hash so the name never leaks it. */
export function tenantsFromKeys(keys: string[]): { id: string; keyHash: Buffer }[] {
  return keys.map((key) => {
    const keyHash = sha256(key);
    return { id: `key-${keyHash.toString('hex').slice(0, 12)}`, keyHash };
  });
}

/**
 * Sets `res.locals.tenant`. With no keys configured everyone is the default tenant; with keys,
 * every path but the public ones needs `Authorization: Bearer <key>`. Keys are compared as
 * SHA-256 digests with timingSafeEqual, against every tenant, so timing tells nothing.
 */
export function authenticate(config: Config) {
  const tenants = tenantsFromKeys(config.apiKeys);
  return (req: Request, res: Response, next: NextFunction) => {
    if (tenants.length === 0) {
      res.locals.tenant = DEFAULT_TENANT;
      return next();
    }
    if (PUBLIC.test(req.path)) return next();
    const header = req.get('authorization') ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    res.setHeader('WWW-Authenticate', 'Bearer realm="run-python-code"');
    if (!match) return next(new ServiceError('unauthorized', 'Missing API key: send the header Authorization: Bearer <key>'));
    const presented = sha256(match[1]!);
    let found: string | undefined;
    for (const tenant of tenants) {
      if (timingSafeEqual(presented, tenant.keyHash)) found ??= tenant.id;
    }
    if (!found) return next(new ServiceError('unauthorized', 'Invalid API key'));
    res.removeHeader('WWW-Authenticate');
    res.locals.tenant = found;
    next();
  };
}
