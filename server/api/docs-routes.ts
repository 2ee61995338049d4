import { Router } from 'express';
import swaggerUi from 'swagger-ui-express';

/** The contract as JSON, Swagger UI at /docs and ReDoc at /redoc, all from the same openapi.yaml. */
export function docsRoutes(contract: Record<string, unknown>, redocScriptUrl: string): Router {
  const router = Router();
  router.get('/openapi.json', (_req, res) => {
    res.json(contract);
  });
  router.use('/docs', swaggerUi.serve, swaggerUi.setup(contract, { customSiteTitle: 'run-python-code API' }));
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
    <script src="${encodeURI(redocScriptUrl)}"></script>
  </body>
</html>`);
  });
  return router;
}
