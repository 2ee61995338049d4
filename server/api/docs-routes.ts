import { createRequire } from 'node:module';
import { Router } from 'express';
import swaggerUi from 'swagger-ui-express';
import { unavailable } from '../errors.js';

/**
 * ReDoc's self-contained bundle (the redoc package), served from here so that /redoc works with
 * no internet. It is a devDependency: npm ci installs it, and Dockerfile.fastapi copies this one
 * file into the production image instead of redoc's dependencies (React and the rest).
 */
function redocBundle(): string | null {
  try {
    return createRequire(import.meta.url).resolve('redoc/bundles/redoc.standalone.js');
  } catch {
    return null;
  }
}

/**
 * What the docs pages may load: this server's own files, and nothing from elsewhere (ReDoc's footer
 * shows a logo from cdn.redoc.ly, for one). The libraries style themselves inline, draw icons as
 * data: URLs and run ReDoc's search in a blob: worker.
 */
const DOCS_CSP = [
  "default-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "worker-src 'self' blob:",
  "frame-ancestors 'self'",
  "base-uri 'self'",
  "form-action 'self'",
].join('; ');

/**
 * The contract as JSON, Swagger UI at /docs and ReDoc at /redoc, all from the same openapi.yaml and
 * every asset from this server: the pages make no request elsewhere.
 */
export function docsRoutes(contract: Record<string, unknown>): Router {
  const router = Router();
  const bundle = redocBundle();
  router.use(['/docs', '/redoc'], (_req, res, next) => {
    res.setHeader('Content-Security-Policy', DOCS_CSP);
    next();
  });
  router.get('/openapi.json', (_req, res) => {
    res.json(contract);
  });
  router.use(
    '/docs',
    swaggerUi.serve,
    // No validator badge: it would send the contract to validator.swagger.io.
    swaggerUi.setup(contract, { customSiteTitle: 'run-python-code API', swaggerOptions: { validatorUrl: null } }),
  );
  router.get('/redoc/redoc.standalone.js', (_req, res, next) => {
    if (!bundle) return next(unavailable('ReDoc is not installed here: run npm ci (the redoc package serves /redoc)'));
    res.sendFile(bundle, { maxAge: '1d' });
  });
  router.get('/redoc', (_req, res) => {
    res.type('html').send(`<!DOCTYPE html>
<html>
  <head>
    <title>run-python-code API - ReDoc</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>`);
  });
  return router;
}
