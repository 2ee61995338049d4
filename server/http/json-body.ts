import express, { type RequestHandler } from 'express';
import { ServiceError } from '../errors.js';
import type { ReceiveBudget } from './receive-budget.js';

const JSON_TYPE = 'application/json';

export interface JsonBodyOptions {
  maxBodyBytes: number;
  bodyTimeoutS: number;
}

const size = (bytes: number) => (bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${bytes} bytes`);

/**
 * express.json inside two bounds. Before a byte is read, the body reserves the most it can hold
 * (its Content-Length; MAX_BODY_BYTES when it has none or is compressed) from the tenant's and the
 * server's receive budgets: 429 when either is used up. It must then arrive within BODY_TIMEOUT_S:
 * 408. A body that fails either way closes its connection, so the rest of it is never read.
 */
export function jsonBody({ maxBodyBytes, bodyTimeoutS }: JsonBodyOptions, budget: ReceiveBudget): RequestHandler {
  const parse = express.json({ limit: maxBodyBytes, type: JSON_TYPE });
  return (req, res, next) => {
    if (!req.is(JSON_TYPE)) return next(); // no body, or one this app does not read (the validator answers 415)
    const declared = Number(req.headers['content-length'] ?? NaN);
    const identity = (req.headers['content-encoding'] ?? 'identity').toLowerCase() === 'identity';
    // Over MAX_BODY_BYTES, express.json answers 413 before reading anything: nothing to reserve.
    const bytes = declared > maxBodyBytes ? 0 : identity && Number.isInteger(declared) ? declared : maxBodyBytes;
    const reservation = budget.reserve((res.locals.tenant as string | undefined) ?? '', bytes);
    if (typeof reservation === 'string') {
      res.setHeader('Connection', 'close');
      const what = reservation === 'tenant'
        ? `for this tenant (TENANT_RECEIVING_MAX_BYTES, ${size(budget.tenantMax)})`
        : `by this server (RECEIVING_MAX_BYTES, ${size(budget.totalMax)})`;
      return next(new ServiceError('busy', `Too many request bytes being received at once ${what}; retry later`, bodyTimeoutS));
    }
    res.once('close', reservation.release);
    let done = false;
    const finish = (err?: unknown) => {
      if (done) return; // express.json calls back once more after a timeout, when the socket closes
      done = true;
      clearTimeout(timer);
      reservation.release();
      if (err) res.setHeader('Connection', 'close');
      next(err);
    };
    const timer = setTimeout(
      () => finish(new ServiceError('request_timeout', `The request body did not arrive within ${bodyTimeoutS} s (BODY_TIMEOUT_S)`)),
      bodyTimeoutS * 1000,
    );
    parse(req, res, finish);
  };
}
