import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Router, type Request, type RequestHandler } from 'express';
import { ServiceError } from '../errors.js';
import { rawBody } from '../http/raw-body.js';
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

/** PUT /files/{path}: its body is the file's bytes, whatever its type says, so no body parser may read it. */
export const isFileUpload = (req: Request) => req.method === 'PUT' && req.path.startsWith(PREFIX);

/**
 * A downloaded file is the sandbox's output, so hostile: the browser must save it, never render it
 * as a page of this origin (where the playground and the API live), whatever its name says.
 */
const DOWNLOAD_CSP = "default-src 'none'; sandbox";

/**
 * The caller's workspace: GET /files (the list), GET /files/{path} (download), PUT /files/{path}
 * (upload, streamed to disk), DELETE /files/{path} (a file, or a directory with all in it) and
 * DELETE /files.
 */
export function fileRoutes(files: FileService, { bodyTimeoutS }: { bodyTimeoutS: number }): Router {
  const router = Router();
  router.get('/files', async (_req, res) => {
    res.json({ files: await files.list(res.locals.tenant as string) });
  });
  router.get('/files/:path', async (req, res) => {
    const { path: rel, file } = await files.open(res.locals.tenant as string, req.params.path!);
    try {
      res.attachment(path.posix.basename(rel)); // Content-Type from the name, octet-stream when it says nothing
      res.setHeader('Content-Length', String(file.size));
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('Content-Security-Policy', DOWNLOAD_CSP);
      await pipeline(Readable.from(file.chunks), res);
    } catch (err) {
      // A client that left mid-download is nothing to report; anything else after the headers is logged.
      if ((err as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw err;
    } finally {
      await file.close();
    }
  });
  router.put('/files/:path', async (req, res) => {
    try {
      const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
      if (encoding !== 'identity') {
        throw new ServiceError('unsupported_media_type', 'Send the file as it is: a Content-Encoding (gzip, say) is not undone here');
      }
      const length = req.headers['content-length'];
      const saved = await files.put(res.locals.tenant as string, req.params.path!, rawBody(req, bodyTimeoutS), length === undefined ? undefined : Number(length));
      res.status(saved.created ? 201 : 200).json({ path: saved.path, size: saved.size });
    } catch (err) {
      if (!req.complete) res.setHeader('Connection', 'close'); // the rest of the body is never read
      throw err;
    }
  });
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
