import { Router } from 'express';
import type { HistoryStore } from '../execution/history.js';
import { notFound } from '../errors.js';
import type { TenantRegistry } from '../tenancy/tenant-registry.js';

/** GET /limits (the caller's limits in force) and GET /executions/{id} (the caller's own past results). */
export function tenantRoutes(registry: TenantRegistry, history: HistoryStore): Router {
  const router = Router();
  router.get('/limits', (_req, res) => {
    const tenant = registry.get(res.locals.tenant as string);
    res.json({ tenant: tenant.id, limits: tenant.limits });
  });
  router.get('/executions/:execution_id', async (req, res) => {
    const found = await history.get(res.locals.tenant as string, req.params.execution_id!);
    if (!found) throw notFound(`Execution not found: ${req.params.execution_id}`);
    res.json(found);
  });
  return router;
}
