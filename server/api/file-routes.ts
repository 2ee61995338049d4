import { Router, type RequestHandler } from 'express';
import type { FileService } from '../workspace/file-service.js';

const PREFIX = '/files/';

/**
 * Before the validator: `/files/lib/util.py` becomes `/files/lib%2Futil.py`, the one form of a
 * path parameter OpenAPI knows (its clients send that one), so both reach the same route.
 */
export const fileRouteSlashes: RequestHandler = (req, _res, next) => {
  if (req.path.startsWith(PREFIX) && req.path.indexOf('/', PREFIX.length) >= 0) {
    const query = req.url.slice(req.path.length);
    req.url = PREFIX + req.path.slice(PREFIX.length).replaceAll('/', '%2F') + query;
  }
  next();
};

/** The caller's workspace: DELETE /files/{path} (a file, or a directory with all in it) and DELETE /files. */
export function fileRoutes(files: FileService): Router {
  const router = Router();
  router.delete('/files', async (_req, res) => {
    await files.clear(res.locals.tenant as string);
    res.status(204).end();
  });
  router.delete('/files/:path', async (req, res) => {
    await files.remove(res.locals.tenant as string, req.params.path!);
    res.status(204).end();
  });
  return router;
}
