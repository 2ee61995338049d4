import express from 'express';
import { Queue, Worker, type Job } from 'bullmq';
import { buildService } from '../build-service.js';
import { ConfigError, loadConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { Metrics } from '../metrics.js';
import { workerBackend } from './backend.js';
import { ContextHost } from './context-host.js';
import { QUEUE_NAME, redisConnection, workerQueue, WORKERS_KEY, type WorkerPresence } from './redis.js';
import {
  cancelChannel,
  ChangesCollector,
  outputChannel,
  sandboxFiles,
  sourceOf,
  type WireContextCall,
  type WireContextCreate,
  type WireContextDelete,
  type WireJob,
  type WireResult,
} from './wire.js';

const PRESENCE_EVERY_MS = 5_000;
/** Calls in this worker's contexts at once (most wait for their context's turn; none starts a container). */
const CONTEXT_JOBS = 64;

/**
 * A worker node (`npm run worker`): owns the engine DOCKER_HOST names and its warm pool, takes up
 * to MAX_CONCURRENT jobs at once from the queue and runs each through the sandbox driver, exactly
 * as the embedded server would. Its INSTANCE_ID labels its containers, so its start removes what
 * a killed predecessor of the same id left. It holds the contexts whose creation it took, and takes
 * their calls and deletions from a queue of its own. GET /health on PORT reports its engine and pool.
 */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`run-python-code worker: bad setting: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  if (!config.redisUrl) {
    console.error('run-python-code worker: bad setting: a worker needs REDIS_URL and DATABASE_URL');
    process.exit(2);
  }
  const logger = createLogger(config.logLevel);
  const backend = await workerBackend(config, logger);
  const service = buildService(config, { logger, metrics: new Metrics(), backend });
  const engine = await service.start(); // reaps this instance's containers before taking any job
  if (engine.error) logger.warn('the engine is not ready; jobs taken now fail', { error: engine.error });

  const publisher = redisConnection(config.redisUrl);
  const cancels = redisConnection(config.redisUrl);
  const running = new Map<string, AbortController>();
  cancels.on('message', (channel: string) => running.get(channel)?.abort());
  for (const c of [publisher, cancels]) c.on('error', (err: Error) => logger.debug('redis', { error: err.message }));
  const outputOf = (executionId: string) => (stream: 'stdout' | 'stderr', text: string) =>
    void publisher.publish(outputChannel(executionId), JSON.stringify({ stream, text })).catch(() => undefined);
  const host = new ContextHost(service.contexts, backend.flushed!, config.instanceId, outputOf, logger);

  const run = async (job: Job<WireJob, WireResult>): Promise<WireResult> => {
    const data = job.data;
    const channel = cancelChannel(data.executionId);
    const controller = new AbortController();
    running.set(channel, controller);
    // BullMQ counts the tries: a second one means the first worker was lost (stalled) and the job came back.
    logger.debug('job started', { execution_id: data.executionId, attempt: job.attemptsStarted });
    await cancels.subscribe(channel);
    try {
      const changes = data.wantsChanges ? new ChangesCollector() : undefined;
      const outcome = await service.sandbox.run({
        executionId: data.executionId,
        mode: data.mode,
        code: data.code,
        file: data.file,
        variable: data.variable,
        limits: data.limits,
        packagesVolume: data.packagesVolume,
        install: data.install,
        packagesWritable: data.packagesWritable,
        network: data.network,
        scratch: data.scratch,
        wheelhouse: data.wheelhouse && sandboxFiles(data.wheelhouse),
        workspace: sourceOf(data),
        changes,
        signal: controller.signal,
        onOutput: data.streams ? outputOf(data.executionId) : undefined,
      });
      return { outcome: { ...outcome, worker: config.instanceId }, files: changes?.wire(outcome.changes) ?? [] };
    } finally {
      running.delete(channel);
      void cancels.unsubscribe(channel).catch(() => undefined);
    }
  };

  // The shared queue: runs, and the creation of contexts (whichever worker takes one holds it).
  const take = (job: Job) => (job.name === 'context' ? host.create(job.data as WireContextCreate) : run(job as Job<WireJob, WireResult>));
  const worker = new Worker(QUEUE_NAME, take, {
    connection: redisConnection(config.redisUrl),
    concurrency: config.maxConcurrent,
    // BullMQ's stalled-job detection: a killed worker's lock expires, its job goes back to the queue once, then fails.
    lockDuration: config.stalledS * 1000,
    stalledInterval: config.stalledS * 1000,
    maxStalledCount: 1,
  });
  worker.on('error', (err) => logger.warn('queue connection', { error: err.message }));
  // Its own queue: what its predecessor of this id left there was for contexts that went with it.
  const ownQueue = new Queue(workerQueue(config.instanceId), { connection: redisConnection(config.redisUrl) });
  await ownQueue.obliterate({ force: true });
  const own = new Worker(
    workerQueue(config.instanceId),
    (job: Job) => (job.name === 'call' ? host.call(job.data as WireContextCall) : host.delete(job.data as WireContextDelete)),
    // A call is never run twice: the context it ran in went with a worker that stalled.
    { connection: redisConnection(config.redisUrl), concurrency: CONTEXT_JOBS, lockDuration: config.stalledS * 1000, maxStalledCount: 0 },
  );
  own.on('error', (err) => logger.warn('queue connection', { error: err.message }));

  const report = () => {
    const presence: WorkerPresence = { slots: config.maxConcurrent, free: config.maxConcurrent - running.size, seen: Date.now(), epoch: backend.epoch! };
    void publisher.hset(WORKERS_KEY, config.instanceId, JSON.stringify(presence)).catch(() => undefined);
  };
  report();
  const presence = setInterval(report, PRESENCE_EVERY_MS);

  const app = express();
  app.get('/health', async (_req, res) => {
    const body = await service.health.check();
    res.status(body.status === 'healthy' ? 200 : 503).json(body);
  });
  const server = app.listen(config.port, config.host, () => {
    logger.info('worker ready', { instance_id: config.instanceId, slots: config.maxConcurrent, health: `http://${config.host}:${config.port}/health` });
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('worker shutting down: finishing jobs in flight', { signal });
    clearInterval(presence);
    server.close();
    await Promise.all([worker.close(), own.close()]); // waits for the jobs it holds
    await ownQueue.close();
    // Its contexts end (and say so in PostgreSQL) before its presence goes: API nodes then answer 410 for them.
    service.contexts.close();
    await backend.flushed!();
    await publisher.hdel(WORKERS_KEY, config.instanceId).catch(() => undefined);
    publisher.disconnect();
    cancels.disconnect();
    await service.stop(false);
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  console.error('run-python-code worker: failed to start:', err);
  process.exit(1);
});
