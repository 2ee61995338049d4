import type { Response } from 'express';
import type { ExecutionContext } from '../execution/execution-service.js';

/** The request's id (also its execution_id) and tenant, as set by the first middlewares. */
export function contextOf(res: Response, endpoint: string): ExecutionContext {
  return { executionId: res.locals.requestId as string, endpoint, tenant: res.locals.tenant as string };
}
