import type { Response } from 'express';
import type { ExecutionContext } from '../execution/run-deps.js';

/**
 * The request's id (also its execution_id) and tenant, as set by the first middlewares, and a
 * signal that aborts when the client goes away before its answer: its run is then stopped. The
 * response's close (its end, sent or not) is when the answer is out.
 */
export function contextOf(res: Response, endpoint: string): ExecutionContext {
  const gone = new AbortController();
  const answered = new Promise<void>((resolve) =>
    res.once('close', () => {
      if (!res.writableFinished) gone.abort();
      resolve();
    }),
  );
  return { executionId: res.locals.requestId as string, endpoint, tenant: res.locals.tenant as string, signal: gone.signal, answered };
}
