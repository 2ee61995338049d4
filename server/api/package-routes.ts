import { Router } from 'express';
import type { InstallPackageRequest, PackageService } from '../packages/package-service.js';

/** POST /install-package and GET /packages. */
export function packageRoutes(packages: PackageService): Router {
  const router = Router();
  router.post('/install-package', async (req, res) => {
    const ctx = { executionId: res.locals.requestId as string, endpoint: '/install-package' };
    res.json(await packages.install(req.body as InstallPackageRequest, ctx));
  });
  router.get('/packages', async (_req, res) => {
    const ctx = { executionId: res.locals.requestId as string, endpoint: '/packages' };
    res.json(await packages.list(ctx));
  });
  return router;
}
