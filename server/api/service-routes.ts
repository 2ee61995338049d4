import { Router } from 'express';
import type { Config } from '../config.js';
import type { Sandbox } from '../sandbox/sandbox.js';
import { serviceName, serviceVersion } from '../project.js';
import type { components } from './openapi-types.js';

type HealthResponse = components['schemas']['HealthResponse'];

/** GET / and GET /health. */
export function serviceRoutes(config: Config, sandbox: Sandbox): Router {
  const router = Router();
  router.get('/', (_req, res) => {
    res.json({ name: serviceName, version: serviceVersion, docs: '/docs' });
  });
  router.get('/health', async (_req, res) => {
    const health = await sandbox.health();
    const healthy = health.reachable && health.imagePresent;
    const body: HealthResponse = {
      status: healthy ? 'healthy' : 'unhealthy',
      version: serviceVersion,
      base_dir: config.baseDir,
      docker: { reachable: health.reachable, version: health.version },
      sandbox_image: { name: config.sandboxImage, present: health.imagePresent },
      ...(health.error ? { error: health.error } : {}),
    };
    res.status(healthy ? 200 : 503).json(body);
  });
  return router;
}
