import { Router } from 'express';
import type { RootResponse } from '../contract/contract.js';
import type { HealthService } from '../execution/health-service.js';
import { serviceName, serviceVersion } from '../project.js';

/** GET / and GET /health. */
export function serviceRoutes(health: HealthService): Router {
  const router = Router();
  router.get('/', (_req, res) => {
    const body: RootResponse = { name: serviceName, version: serviceVersion, docs: '/docs' };
    res.json(body);
  });
  router.get('/health', async (_req, res) => {
    const body = await health.check();
    res.status(body.status === 'healthy' ? 200 : 503).json(body);
  });
  return router;
}
