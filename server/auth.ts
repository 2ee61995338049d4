import type { NextFunction, Request, Response } from 'express';
import { ServiceError } from './errors.js';
import { DEFAULT_TENANT } from './tenancy/tenant-id.js';
import type { TenantRegistry } from './tenancy/tenant-registry.js';

/** Paths anyone may read: the service's name, its health, its documentation and the playground page (whose calls need a key). */
const PUBLIC = /^\/(health|openapi\.json|redoc(\/redoc\.standalone\.js)?|docs(\/.*)?|playground(\/playground\.(js|css))?)?$/;

/**
 * Sets `res.locals.tenant`. With no keys anywhere everyone is the default tenant; with keys,
 * every path but the public ones needs `Authorization: Bearer <key>` (401 otherwise).
 */
export function authenticate(registry: TenantRegistry) {
  return (req: Request, res: Response, next: NextFunction) => {
    if (!registry.keysRequired) {
      res.locals.tenant = DEFAULT_TENANT;
      return next();
    }
    if (PUBLIC.test(req.path)) return next();
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.get('authorization') ?? '');
    const tenant = match ? registry.authenticate(match[1]!) : null;
    if (!tenant) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="run-python-code"');
      return next(
        new ServiceError('unauthorized', match ? 'Invalid API key' : 'Missing API key: send the header Authorization: Bearer <key>'),
      );
    }
    res.locals.tenant = tenant.id;
    next();
  };
}
