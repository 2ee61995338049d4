import cors from 'cors';
import express, { type NextFunction, type Request, type Response } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import { v4 as uuidv4 } from 'uuid';
import { docsRoutes } from './api/docs-routes.js';
import { executionRoutes } from './api/execution-routes.js';
import { fileRouteSlashes, fileRoutes } from './api/file-routes.js';
import { mcpRoutes } from './api/mcp-routes.js';
import { packageRoutes } from './api/package-routes.js';
import { serviceRoutes } from './api/service-routes.js';
import { rateLimit } from 'express-rate-limit';
import { metricsRoutes } from './api/metrics-routes.js';
import { tenantRoutes } from './api/tenant-routes.js';
import { authenticate } from './auth.js';
import type { Service } from './build-service.js';
import { loadContract, type ErrorResponse } from './contract/contract.js';
import { classify, notFound, ServiceError } from './errors.js';

/** The HTTP app: middleware in order, the routes, and the one error handler. No listen() here. */
export function createApp(service: Service, contract: Record<string, unknown> = loadContract()): express.Express {
  const { config, logger, metrics, registry, executions, packages, files, history, health } = service;
  const app = express();
  app.disable('x-powered-by');

  app.use((req, res, next) => {
    res.locals.requestId = uuidv4();
    res.setHeader('X-Request-Id', res.locals.requestId as string);
    if (metrics) {
      const end = metrics.requests.startTimer();
      // The route pattern, not the URL, so ids do not become label values.
      res.on('finish', () => end({ route: (req.route?.path as string | undefined) ?? 'unmatched', status: String(res.statusCode) }));
    }
    next();
  });
  app.use(cors({ origin: config.corsOrigins.includes('*') ? '*' : config.corsOrigins }));
  app.use(authenticate(registry));
  app.use(
    rateLimit({
      windowMs: 60_000,
      limit: (_req, res) => registry.get(res.locals.tenant as string).limits.requests_per_minute,
      skip: (_req, res) => !res.locals.tenant || registry.get(res.locals.tenant as string).limits.requests_per_minute === 0,
      keyGenerator: (_req, res) => res.locals.tenant as string,
      standardHeaders: 'draft-7',
      legacyHeaders: false,
      validate: false, // keyed by tenant, not by IP: the proxy checks do not apply
      handler: (req, res, next) => {
        const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime;
        const wait = reset ? Math.max(1, Math.ceil((reset.getTime() - Date.now()) / 1000)) : 60;
        const limit = registry.get(res.locals.tenant as string).limits.requests_per_minute;
        next(new ServiceError('busy', `Rate limit reached: ${limit} requests per minute for this tenant (requests_per_minute)`, wait));
      },
    }),
  );
  app.use(express.json({ limit: config.maxBodyBytes }));
  app.use(docsRoutes(contract, config.redocScriptUrl));
  app.use(fileRouteSlashes);
  app.use(
    OpenApiValidator.middleware({
      apiSpec: structuredClone(contract) as never,
      validateRequests: { allowUnknownQueryParameters: false, coerceTypes: false },
      validateResponses: { removeAdditional: false },
      validateFormats: true,
      validateSecurity: false, // auth.ts does it: keys are optional and per tenant
      useRequestUrl: true, // the URL as fileRouteSlashes left it, not as it came
      // The docs are not API operations; /mcp is JSON-RPC, validated by the MCP SDK.
      ignorePaths: /^\/(docs|redoc|openapi\.json|mcp|metrics)(\/|$)/,
    }),
  );
  app.use(serviceRoutes(health));
  app.use(executionRoutes(executions));
  app.use(packageRoutes(packages));
  app.use(fileRoutes(files));
  app.use(tenantRoutes(registry, history));
  if (metrics && config.metricsPort === 0) app.use(metricsRoutes(metrics));
  app.use(mcpRoutes({ executions, packages, logger }));
  app.use((req) => {
    throw notFound(`Not found: ${req.method} ${req.path}`); // paths the validator does not cover
  });

  // The one place where errors become responses: the seed's envelope with a clear message.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const { kind, status, message, retryAfterS } = classify(err);
    const executionId = (res.locals.requestId as string | undefined) ?? uuidv4();
    if (kind === 'internal') {
      logger.error('request failed', { execution_id: executionId, path: req.path, error: String((err as Error)?.stack ?? err) });
    } else {
      logger.info('request refused', { execution_id: executionId, path: req.path, status, error: message });
    }
    const body: ErrorResponse = { success: false, result: null, error: message, execution_id: executionId };
    if (res.headersSent) return;
    if (retryAfterS !== undefined) res.setHeader('Retry-After', String(retryAfterS));
    res.status(status).json(body);
  });
  return app;
}
