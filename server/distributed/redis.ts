import { Redis } from 'ioredis';

/** The BullMQ queue every API node adds to and every worker takes from. */
export const QUEUE_NAME = 'rpc-executions';
/** The hash where each worker says, every few seconds, that it is alive and how many slots it has free. */
export const WORKERS_KEY = 'rpc:workers';
/** How long a stopping node waits for BullMQ to close its connections (forever while Redis is away). */
export const CLOSE_WAIT_MS = 5_000;
/** A worker's own queue: the calls and deletions of the contexts it holds. */
export const workerQueue = (instanceId: string) => `rpc-worker-${instanceId}`;

/**
 * A connection to REDIS_URL. BullMQ's blocking connections need `maxRetriesPerRequest: null`;
 * `failFast` ones (what an API node sends while serving a request) refuse commands at once while
 * Redis is away, instead of queueing them until it is back, so the request gets its 503 now.
 */
export function redisConnection(url: string, { failFast = false } = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: failFast ? 1 : null, enableOfflineQueue: !failFast, lazyConnect: false });
}

/** What a worker writes under its id in WORKERS_KEY. */
export interface WorkerPresence {
  slots: number;
  free: number;
  seen: number;
  /** Its sandbox image's Python (the image's label), for requires-python on the API nodes. */
  python?: string | null;
  /** When this run of the worker started: a restart (which removes its containers) shows as a new epoch. */
  epoch: number;
}
