import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { Queue, Worker, type Job } from 'bullmq';
import { buildService } from '../build-service.js';
import { ConfigError, loadConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { startProcess } from '../start-up.js';
import { Metrics } from '../metrics.js';
import { dockerClient } from '../sandbox/docker-client.js';
import { workerBackend } from './backend.js';
import { ContextHost } from './context-host.js';
import { untilReachable } from './reachable.js';
import { engineKey, PackageSync } from './package-sync.js';
import { CLOSE_WAIT_MS, QUEUE_NAME, redisConnection, workerQueue, WORKERS_KEY, type WorkerPresence } from './redis.js';
import {
  cancelChannel,
  cancelledKey,
  ChangesCollector,
  OUTPUT_END,
  outputChannel,
  sandboxFiles,
  secondTryRefusal,
  sourceOf,
  type WireContextCall,
  type WireContextCreate,
  type OutputMessage,
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
  const config = loadConfig();
  if (!config.redisUrl) throw new ConfigError('a worker needs REDIS_URL and DATABASE_URL');
  const logger = createLogger(config.logLevel);
  const backend = await workerBackend(config, logger);
  const service = buildService(config, { logger, metrics: new Metrics(), backend });
  const engine = await service.start(); // reaps this instance's containers before taking any job
  if (engine.error) logger.warn('the engine is not ready; jobs taken now fail', { error: engine.error });
  const sync = new PackageSync({
    pool: backend.database!,
    engine: () => engineKey(dockerClient(), config.instanceId),
    packages: service.packages,
    volumes: service.volumes,
    worker: config.instanceId,
    logger,
  });

  const publisher = redisConnection(config.redisUrl);
  const cancels = redisConnection(config.redisUrl);
  const running = new Map<string, AbortController>();
  cancels.on('message', (channel: string) => running.get(channel)?.abort());
  for (const c of [publisher, cancels]) c.on('error', (err: Error) => logger.debug('redis', { error: err.message }));
  const outputOf = (executionId: string) => (stream: 'stdout' | 'stderr', text: string) =>
    void publisher.publish(outputChannel(executionId), JSON.stringify({ stream, text } satisfies OutputMessage)).catch(() => undefined);
  // On the pieces' connection, so after the last of them; the job's answer waits until Redis has it.
  const withOutputEnd = async <T>(data: { executionId: string; streams: boolean }, work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } finally {
      if (data.streams) await publisher.publish(outputChannel(data.executionId), OUTPUT_END).catch(() => undefined);
    }
  };
  const host = new ContextHost(service.contexts, backend.flushed!, config.instanceId, outputOf, logger);

  const ended: (() => void)[] = [];
  const jobsEnded = () => new Promise<void>((resolve) => (running.size === 0 ? resolve() : ended.push(resolve)));
  const run = async (job: Job<WireJob, WireResult>): Promise<WireResult> => {
    const data = job.data;
    const channel = cancelChannel(data.executionId);
    // BullMQ counts the tries: a second one means the first worker was lost (stalled) and the job came back.
    logger.debug('job started', { execution_id: data.executionId, attempt: job.attemptsStarted });
    const refusal = secondTryRefusal(data, job.attemptsStarted);
    if (refusal) throw new Error(refusal); // the job fails: the API node answers 503 with this
    const controller = new AbortController();
    running.set(channel, controller);
    try {
      await cancels.subscribe(channel);
      // A cancel sent before the subscription is only in the key; one sent after it is heard.
      if (await publisher.exists(cancelledKey(data.executionId)).catch(() => 0)) {
        logger.debug('job cancelled before it ran', { execution_id: data.executionId });
        throw new Error('its client went away while it waited in the queue');
      }
      const changes = data.wantsChanges ? new ChangesCollector() : undefined;
      const outcome = await sync.around(data, controller.signal, () => service.sandbox.run({
        executionId: data.executionId,
        tenant: data.tenant,
        mode: data.mode,
        code: data.code,
        file: data.file,
        variable: data.variable,
        limits: data.limits,
        packagesVolume: data.packagesVolume,
        depsVolume: data.depsVolume,
        install: data.install,
        packagesWritable: data.packagesWritable,
        network: data.network,
        scratch: data.scratch,
        wheelhouse: data.wheelhouse && sandboxFiles(data.wheelhouse),
        workspace: sourceOf(data),
        changes,
        signal: controller.signal,
        onOutput: data.streams ? outputOf(data.executionId) : undefined,
      }));
      return { outcome: { ...outcome, worker: config.instanceId }, files: changes?.wire(outcome.changes) ?? [] };
    } finally {
      running.delete(channel);
      if (running.size === 0) for (const resolve of ended.splice(0)) resolve();
      void cancels.unsubscribe(channel).catch(() => undefined);
    }
  };

  // The shared queue: runs, and the creation of contexts (whichever worker takes one holds it).
  const take = (job: Job) => (job.name === 'context' ? host.create(job.data as WireContextCreate) : withOutputEnd(job.data as WireJob, () => run(job as Job<WireJob, WireResult>)));
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
  const ownConnection = redisConnection(config.redisUrl, { failFast: true });
  ownConnection.on('error', (err: Error) => logger.debug('redis', { error: err.message }));
  const ownQueue = new Queue(workerQueue(config.instanceId), { connection: ownConnection });
  ownQueue.on('error', (err) => logger.debug('redis', { error: err.message }));
  await untilReachable('Redis', () => ownConnection.ping(), logger);
  await ownQueue.obliterate({ force: true });
  const own = new Worker(
    workerQueue(config.instanceId),
    (job: Job) => (job.name === 'call' ? withOutputEnd(job.data as WireContextCall, () => host.call(job.data as WireContextCall)) : host.delete(job.data as WireContextDelete)),
    // A call is never run twice: the context it ran in went with a worker that stalled.
    { connection: redisConnection(config.redisUrl), concurrency: CONTEXT_JOBS, lockDuration: config.stalledS * 1000, maxStalledCount: 0 },
  );
  own.on('error', (err) => logger.warn('queue connection', { error: err.message }));

  const python = await service.sandbox.pythonVersion().catch(() => null);
  const report = () => {
    const presence: WorkerPresence = { slots: config.maxConcurrent, free: config.maxConcurrent - running.size, seen: Date.now(), python, epoch: backend.epoch! };
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
    // BullMQ's close waits for the jobs it holds, and for Redis, forever while it is away: the jobs are what count.
    const closing = Promise.all([worker.close(), own.close()]).then(() => ownQueue.close());
    await Promise.race([closing, jobsEnded().then(() => sleep(CLOSE_WAIT_MS))]);
    // Its contexts end (and say so in PostgreSQL) before its presence goes: API nodes then answer 410 for them.
    service.contexts.close();
    await backend.flushed!();
    // Its presence goes at once; with Redis away it expires from GET /health by itself.
    if (publisher.status === 'ready') await publisher.hdel(WORKERS_KEY, config.instanceId).catch(() => undefined);
    publisher.disconnect();
    cancels.disconnect();
    await service.stop(false);
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

startProcess('run-python-code worker', main);
