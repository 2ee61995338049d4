import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, QueueEvents, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { ServiceError, unavailable } from '../errors.js';
import type { Logger } from '../logger.js';
import { settledWithin } from '../settled-within.js';
import type { OutputSink, Sandbox, SandboxContext, SandboxHealth, SandboxJob, SandboxOutcome } from '../sandbox/sandbox.js';
import { CLOSE_WAIT_MS, QUEUE_NAME, redisConnection, WORKERS_KEY, type WorkerPresence } from './redis.js';
import { bytesOf, cancelChannel, cancelledKey, outputChannel, readSource, wireFiles, type OutputMessage, type WireJob, type WireResult } from './wire.js';

/** What goes with a job: its id, how long its answer may take, and the execution it is (for its output and its cancellation). */
export interface SendOptions {
  jobId: string;
  ttlMs: number;
  executionId?: string;
  onOutput?: OutputSink;
  signal?: AbortSignal;
}

interface Lane {
  queue: Queue;
  events: QueueEvents;
  /** The events' own connection (blocking reads), closed with them. */
  connection: Redis;
}

export interface QueueSandboxOptions {
  redisUrl: string;
  /** Jobs waiting on the queue, all API nodes together; past it: 429 (QUEUE_MAX). */
  queueMax: number;
  /** How long a job may wait for a worker and run (QUEUE_TIMEOUT_S plus the run's own timeout). */
  queueTimeoutS: number;
  /** BullMQ's stalled-job check: a dead worker's job is noticed within about twice this. */
  stalledS: number;
  /** A worker not seen for this long is gone (WORKER_LOST_S). */
  workerLostS: number;
}

/** What API and worker nodes do not do yet: each needs state on one worker's engine that the queue cannot route to. */
export const notDistributed = (what: string) =>
  unavailable(`${what} are not offered by a distributed deployment (API and worker nodes) yet; use the embedded server (npm start without REDIS_URL) for them`);

/** How long an answer waits for its output's end when the pieces' connection lost it. */
const OUTPUT_END_WAIT_MS = 1000;

/** Finished jobs kept for their waiters (the last 100 of a queue, for at most a minute): Redis holds no more answers than that. */
const KEEP_FINISHED = { age: 60, count: 100 };

const notQueued = () => unavailable('Redis does not answer, so no execution can be queued; retry once it is back');

const lostRedis = () =>
  unavailable('The connection to Redis was lost while this execution was queued or running, so its answer is unknown; retry once Redis is back');

/**
 * The API node's sandbox: every run becomes a BullMQ job that one worker node takes and runs
 * through its own sandbox driver. The request path in front of it (validation, limits, the
 * workspace, the answer, the history) is the embedded server's, unchanged; this only carries the
 * job and its outcome, the output pieces as they come (Redis pub/sub), and a cancellation.
 */
export class QueueSandbox implements Sandbox {
  /** The shared queue, and the workers' own queues this node sent to, each with its events. */
  private readonly lanes = new Map<string, Lane>();
  /** Commands of requests in flight; refused at once while Redis is away. */
  private readonly commands: Redis;
  private readonly subscriber: Redis;
  private readonly waiting = new Set<(err: Error) => void>();
  private readonly sinks = new Map<string, (piece: string) => void>();

  constructor(
    private readonly options: QueueSandboxOptions,
    private readonly logger: Logger,
  ) {
    this.commands = redisConnection(options.redisUrl, { failFast: true });
    this.subscriber = redisConnection(options.redisUrl);
    this.subscriber.on('message', (channel: string, message: string) => this.sinks.get(channel)?.(message));
    // A request waiting for a result learns of a lost connection now, not at its deadline: events sent while
    // Redis was away (or lost with it) would never reach it.
    this.commands.on('close', () => this.dropAll());
    this.lane(QUEUE_NAME);
    for (const c of [this.commands, this.subscriber]) c.on('error', (err: Error) => logger.debug('redis', { error: err.message }));
  }

  async run(job: SandboxJob): Promise<SandboxOutcome> {
    const data: WireJob = {
      executionId: job.executionId,
      tenant: job.tenant,
      mode: job.mode,
      code: job.code,
      file: job.file,
      variable: job.variable,
      limits: job.limits,
      packagesVolume: job.packagesVolume,
      depsVolume: job.depsVolume,
      install: job.install,
      packagesWritable: job.packagesWritable,
      network: job.network,
      scratch: job.scratch,
      wheelhouse: job.wheelhouse && wireFiles(job.wheelhouse),
      dirs: job.workspace.dirs,
      files: await readSource(job.workspace),
      wantsChanges: job.changes !== undefined,
      streams: job.onOutput !== undefined,
    };
    const result = await this.send<WireResult>(QUEUE_NAME, 'run', data, {
      // The execution id is the job id: an id is queued once.
      jobId: job.executionId,
      ttlMs: this.ttlMs(job.limits.timeoutS),
      executionId: job.executionId,
      onOutput: job.onOutput,
      signal: job.signal,
    });
    for (const file of result.files) await job.changes?.file(file.path, bytesOf(file));
    return result.outcome;
  }

  /** How long a job of this timeout may wait for its answer: the queue wait, the run, a stalled retry. */
  ttlMs(timeoutS: number): number {
    return (timeoutS + this.options.queueTimeoutS + 2 * this.options.stalledS) * 1000;
  }

  /**
   * Adds a job to `queueName` (the shared queue, bounded by QUEUE_MAX, or one worker's own) and
   * waits for its answer; the execution's output pieces go to `onOutput`, an abort to the worker.
   */
  async send<T>(queueName: string, name: string, data: unknown, { jobId, ttlMs, executionId, onOutput, signal }: SendOptions): Promise<T> {
    if (queueName === QUEUE_NAME) await this.refuseWhenFull();
    else if (this.commands.status !== 'ready') throw notQueued();
    const { queue, events } = this.lane(queueName);
    const channel = executionId === undefined ? undefined : outputChannel(executionId);
    // Kept as a key too, for a worker that has not taken the job yet; published for one running it.
    const onAbort = () =>
      void this.commands.multi().set(cancelledKey(executionId!), '1', 'PX', ttlMs).publish(cancelChannel(executionId!), 'cancel').exec().catch(() => undefined);
    if (executionId !== undefined) signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) throw unavailable('the client went away before its run was queued');
      let outputEnded: Promise<void> | undefined;
      if (onOutput && channel) {
        let ended!: () => void;
        outputEnded = new Promise((resolve) => (ended = resolve));
        this.sinks.set(channel, (piece) => {
          const message = JSON.parse(piece) as OutputMessage;
          if ('end' in message) ended();
          else onOutput(message.stream, message.text);
        });
        await this.subscriber.subscribe(channel);
      }
      const added = await this.add(queue, name, data, jobId);
      const value = await this.result<T>(added, events, ttlMs);
      // The last pieces, whose end Redis had before the answer; bounded, as pub/sub may lose them with its connection.
      await settledWithin(outputEnded, OUTPUT_END_WAIT_MS);
      return value;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (channel && this.sinks.delete(channel)) void this.subscriber.unsubscribe(channel).catch(() => undefined);
    }
  }

  /** A queue and its events, made on first use (a worker's own queue: when a context is first called there). */
  private lane(name: string): Lane {
    let lane = this.lanes.get(name);
    if (!lane) {
      const connection = redisConnection(this.options.redisUrl);
      connection.on('error', (err: Error) => this.logger.debug('redis', { error: err.message }));
      // From a minute back, not from when its first read reaches Redis: a job added right after
      // this (a context's call on a worker's queue this node has not used yet) may end before then.
      const events = new QueueEvents(name, { connection, lastEventId: `${Date.now() - 60_000}-0` });
      events.on('error', () => this.dropAll());
      lane = { queue: new Queue(name, { connection: this.commands }), events, connection };
      this.lanes.set(name, lane);
    }
    return lane;
  }

  private async refuseWhenFull(): Promise<void> {
    let waiting: number;
    try {
      waiting = await this.lane(QUEUE_NAME).queue.getWaitingCount();
    } catch {
      throw notQueued();
    }
    if (waiting >= this.options.queueMax) {
      throw new ServiceError('busy', `Too many executions in progress (the queue holds QUEUE_MAX ${this.options.queueMax} jobs waiting for a worker); retry later`, 5);
    }
  }

  private async add(queue: Queue, name: string, data: unknown, jobId: string): Promise<Job> {
    try {
      // A stalled job goes back to the queue once (maxStalledCount on the workers) and is never
      // retried for failing, since a failure is an answer. A finished job is kept a little: a
      // queue's events, made on its first use, may not be listening yet when a quick job ends, and
      // BullMQ then reads the answer from the job, which must still be there.
      return await queue.add(name, data, { jobId, attempts: 1, removeOnComplete: KEEP_FINISHED, removeOnFail: KEEP_FINISHED });
    } catch {
      throw notQueued();
    }
  }

  /** The job's answer, or a clear error: its worker lost twice, Redis lost, or no answer within `ttlMs`. */
  private result<T>(job: Job, events: QueueEvents, ttlMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = (err: Error | null, value?: T) => {
        this.waiting.delete(fail);
        if (err) reject(err);
        else resolve(value!);
      };
      const fail = (err: Error) => done(err);
      this.waiting.add(fail);
      job.waitUntilFinished(events, ttlMs).then(
        (value: T) => done(null, value),
        (err: Error) => done(this.failure(err)),
      );
    });
  }

  private dropAll(): void {
    for (const reject of this.waiting) reject(lostRedis());
  }

  private failure(err: Error): Error {
    const message = err.message ?? String(err);
    if (/stalled more than allowable limit/.test(message)) {
      return unavailable('The worker running this execution stopped (it was lost twice: its first worker, then the one that took it again), so it has no answer; retry');
    }
    if (/timed out before finishing/.test(message)) {
      return unavailable('No worker answered within the queue timeout and the run\'s own timeout (are workers running? see GET /health)');
    }
    this.logger.warn('queued execution failed on its worker', { error: message });
    return unavailable(`The worker failed to run this execution: ${message}`);
  }

  /** The Python of the workers' sandbox image, as a live worker reports it; null when none says. */
  async pythonVersion(): Promise<string | null> {
    const seen = await this.commands.hgetall(WORKERS_KEY).catch(() => ({}));
    const now = Date.now();
    const live = Object.values(seen).map((raw) => JSON.parse(raw as string) as WorkerPresence).filter((w) => now - w.seen < this.options.workerLostS * 1000);
    return live.find((w) => w.python)?.python ?? null;
  }

  async removeVolume(): Promise<void> {
    // The set's copies are on the workers' engines, which an API node does not reach.
    throw unavailable('Sets of declared dependencies are not removed on a distributed deployment: each worker\'s engine keeps its copy');
  }

  async openContext(): Promise<SandboxContext> {
    // An API node's contexts go through RemoteContexts to the worker that holds each one.
    throw new Error('an API node opens no context container: its workers hold the contexts');
  }

  async health(): Promise<SandboxHealth> {
    return { reachable: true, version: null, imagePresent: true };
  }

  async reapStale(): Promise<number> {
    return 0; // an API node has no engine: each worker reaps its own containers at its start
  }

  async reapOrphans(): Promise<number> {
    return 0;
  }

  async shutdown(): Promise<void> {
    for (const reject of this.waiting) reject(unavailable('The server is shutting down'));
    // BullMQ's close waits for Redis, which may be away: a stopping node does not wait for it past a few seconds.
    const lanes = [...this.lanes.values()];
    await Promise.race([Promise.allSettled(lanes.flatMap((lane) => [lane.events.close(), lane.queue.close()])), sleep(CLOSE_WAIT_MS)]);
    for (const c of [this.subscriber, this.commands, ...lanes.map((lane) => lane.connection)]) c.disconnect();
  }

  warm(): void {} // the workers keep the warm pools

  ready(): number {
    return 0;
  }

  /** The Redis connection requests use, for health and for counters. */
  get redis(): Redis {
    return this.commands;
  }
}
