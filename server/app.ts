import cors from 'cors';
import express, { type NextFunction, type Request, type Response } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import { v4 as uuidv4 } from 'uuid';
import { contextRoutes } from './api/context-routes.js';
import { docsRoutes } from './api/docs-routes.js';
import { EventStream } from './api/event-stream.js';
import { executionRoutes } from './api/execution-routes.js';
import { fileRouteSlashes, fileRoutes, isFileUpload } from './api/file-routes.js';
import { mcpRoutes } from './api/mcp-routes.js';
import { packageRoutes } from './api/package-routes.js';
import { playgroundRoutes } from './api/playground-routes.js';
import { serviceRoutes } from './api/service-routes.js';
import { guardHostAndOrigin, originsInForce, type HostOriginPolicy } from './host-origin.js';
import { metricsRoutes } from './api/metrics-routes.js';
import { tenantRoutes } from './api/tenant-routes.js';
import { authenticate } from './auth.js';
import type { Service } from './build-service.js';
import type { Config } from './config.js';
import { loadContract, type ErrorResponse } from './contract/contract.js';
import { classify, notFound } from './errors.js';
import { jsonBody } from './http/json-body.js';
import { ReceiveBudget } from './http/receive-budget.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { TenantRegistry } from './tenancy/tenant-registry.js';

/** The HTTP app: middleware in order, the routes, and the one error handler. No listen() here. */
export function createApp(service: Service, contract: Record<string, unknown> = loadContract()): express.Express {
  const { config, logger, metrics, registry, executions, packages, files, history, health, contexts } = service;
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
  const policy = hostOriginPolicy(config, registry);
  app.use(guardHostAndOrigin(policy));
  // Only origins the guard let through get here: each is answered as itself (or * when all are).
  app.use(cors({ origin: (_origin, done) => done(null, policy.origins().includes('*') ? '*' : true) }));
  app.use(authenticate(registry));
  const json = jsonBody(config, new ReceiveBudget(config.receivingMaxBytes, config.tenantReceivingMaxBytes));
  app.use((req, res, next) => (isFileUpload(req) ? next() : json(req, res, next))); // an upload is streamed to disk
  app.use(docsRoutes(contract));
  app.use(playgroundRoutes(() => registry.keysRequired));
  app.use(fileRouteSlashes);
  app.use(
    OpenApiValidator.middleware({
      apiSpec: structuredClone(contract) as never,
      validateRequests: { allowUnknownQueryParameters: false, coerceTypes: false },
      validateResponses: { removeAdditional: false },
      validateFormats: true,
      validateSecurity: false, // auth.ts does it: keys are optional and per tenant
      useRequestUrl: true, // the URL as fileRouteSlashes left it, not as it came
      // The docs and the playground are not API operations; /mcp is JSON-RPC, validated by the MCP SDK.
      ignorePaths: /^\/(docs|redoc|playground|openapi\.json|mcp|metrics)(\/|$)/,
    }),
  );
  app.use(serviceRoutes(health));
  app.use(executionRoutes(executions));
  app.use(contextRoutes(contexts));
  app.use(packageRoutes(packages));
  app.use(fileRoutes(files, config));
  app.use(tenantRoutes(registry, history));
  if (metrics && config.metricsPort === 0) app.use(metricsRoutes(metrics));
  app.use(mcpRoutes({ config, executions, packages, files, logger, contexts }));
  app.use((req) => {
    throw notFound(`Not found: ${req.method} ${req.path}`); // paths the validator does not cover
  });

  app.use(errorHandler(logger));
  return app;
}

/** /metrics on a port of its own (METRICS_PORT): no keys, but the same Host and Origin checks. */
export function createMetricsApp({ config, logger, registry, metrics }: Pick<Service, 'config' | 'logger' | 'registry'> & { metrics: Metrics }): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(guardHostAndOrigin(hostOriginPolicy(config, registry)));
  app.use(metricsRoutes(metrics));
  app.use(errorHandler(logger));
  return app;
}

/** ALLOWED_HOSTS, and CORS_ORIGINS as in force now (a reload may add or drop the keys). */
function hostOriginPolicy(config: Config, registry: TenantRegistry): HostOriginPolicy {
  return { allowedHosts: config.allowedHosts, origins: () => originsInForce(config.corsOrigins, registry.keysRequired) };
}

/** The one place where errors become responses: the seed's envelope with a clear message. */
function errorHandler(logger: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const { kind, status, message, retryAfterS } = classify(err);
    const executionId = (res.locals.requestId as string | undefined) ?? uuidv4();
    if (kind === 'internal' || status >= 500) {
      logger.error('request failed', { execution_id: executionId, path: req.path, status, error: String((err as Error)?.stack ?? err) });
    } else {
      logger.info('request refused', { execution_id: executionId, path: req.path, status, error: message });
    }
    const body: ErrorResponse = { success: false, result: null, error: message, execution_id: executionId };
    if (res.headersSent) {
      // A stream of events already open says it in its last event; any other answer under way is cut.
      const events = EventStream.of(res);
      if (events) events.close('result', body);
      else if (!res.writableEnded) res.destroy();
      return;
    }
    if (retryAfterS !== undefined) res.setHeader('Retry-After', String(retryAfterS));
    res.status(status).json(body);
  };
}
