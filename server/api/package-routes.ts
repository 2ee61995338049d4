import { Router } from 'express';
import { contextOf } from './context.js';
import type { InstallPackageRequest } from '../contract/contract.js';
import type { PackageService } from '../packages/package-service.js';

/** POST /install-package and GET /packages. */
export function packageRoutes(packages: PackageService): Router {
  const router = Router();
  router.post('/install-package', async (req, res) => {
    res.json(await packages.install(req.body as InstallPackageRequest, contextOf(res, '/install-package')));
  });
  router.get('/packages', async (_req, res) => {
    res.json(await packages.list(contextOf(res, '/packages')));
  });
  return router;
}
