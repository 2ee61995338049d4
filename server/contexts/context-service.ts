import type { Config } from '../config.js';
import type { ContextInfo, CreateContextRequest } from '../contract/contract.js';
import { badRequest, gone, notFound, ServiceError, unavailable } from '../errors.js';
import { limitsFor } from '../execution/limits.js';
import type { Logger } from '../logger.js';
import type { EgressDoors } from '../egress/egress-gateway.js';
import type { PackagesVolumes } from '../packages/volume.js';
import type { LostReason } from '../sandbox/protocol.js';
import type { Sandbox, SandboxContext, SandboxLimits, SandboxOutcome } from '../sandbox/sandbox.js';
import type { Admission } from '../tenancy/admission.js';
import type { TenantRegistry } from '../tenancy/tenant-registry.js';
import { ContextIds } from './context-ids.js';

/** What the context service uses (the execution service's deps have them all). */
export interface ContextDeps {
  config: Config;
  sandbox: Sandbox;
  registry: TenantRegistry;
  admission: Admission;
  logger: Logger;
  volumes: PackagesVolumes;
  egressGateway: EgressDoors;
}

/** Who asks: the tenant, and a signal that aborts when the caller went away. */
export interface Caller {
  tenant: string;
  signal?: AbortSignal;
}

/** How long an ended context's state (and why it ended) is shown. */
export const ENDED_KEPT_MS = 3600_000;
/** How long a kernel has, once a call's timeout interrupted it, to come back with its report. */
export const INTERRUPT_GRACE_S = 3;

export type EndedState = 'deleted' | 'expired' | 'lost';

/** What a call in a context runs on: the context's kernel. */
export type ContextBox = Pick<SandboxContext, 'run'>;

/** A call's work, given the context's kernel, its caps, and why it ended if it ended while the call ran. */
export type ContextCall<T> = (box: ContextBox, limits: SandboxLimits, endedWhy: () => string | null) => Promise<T>;

/**
 * What the routes, the MCP tools and the execution service ask of contexts: the embedded
 * ContextService, or on an API node of a distributed deployment the contexts its workers hold.
 */
export interface Contexts {
  create(req: CreateContextRequest, ctx: Caller): Promise<ContextInfo>;
  list(tenant: string): ContextInfo[] | Promise<ContextInfo[]>;
  get(id: string, tenant: string): ContextInfo | Promise<ContextInfo>;
  delete(id: string, tenant: string): void | Promise<void>;
  call<T extends { outcome: SandboxOutcome }>(id: string, tenant: string, waitS: number, call: ContextCall<T>): Promise<T>;
  close(): void;
}

/** Told of every change of a context (created, a call begun or done, ended): a worker keeps them in PostgreSQL. */
export type ContextObserver = (tenant: string, info: ContextInfo, limits: SandboxLimits) => void;
/** Why a context was lost: its kernel's reasons, the runner protocol broken, or its container gone between calls. */
type Loss = LostReason | 'violation' | 'stopped';

interface Live {
  id: string;
  tenant: string;
  box: SandboxContext;
  limits: SandboxLimits;
  idleS: number;
  maxS: number;
  createdAt: number;
  lastUsedAt: number | null;
  calls: number;
  busy: boolean;
  /** Calls waiting for their turn, first first. */
  waiters: (() => void)[];
  idleTimer?: NodeJS.Timeout;
  maxTimer?: NodeJS.Timeout;
  /** Its lifetime ran out during a call: it ends when the call does. */
  expireAfterCall: boolean;
}

interface Ended {
  tenant: string;
  info: ContextInfo;
  until: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** The 429 of a tenant at its max_contexts; `soonestMs`: when one of its contexts expires at the earliest. */
export function tooManyContexts(count: number, max: number, soonestMs: number): ServiceError {
  return new ServiceError(
    'busy',
    `This tenant has ${count} live context${count === 1 ? '' : 's'}, its limit (max_contexts ${max}): ` +
      'delete one (DELETE /contexts/{context_id}) or wait until one expires',
    Math.max(1, Math.ceil((soonestMs - Date.now()) / 1000)),
  );
}
const unref = (timer: NodeJS.Timeout) => (timer.unref(), timer);

/**
 * Contexts: live interpreters a tenant asked for, one container each, kept between calls. This
 * service owns their life: creation within the tenant's limits, one call at a time, expiry (idle,
 * lifetime), and an honest end. A context that is gone is never recreated: every id it issued
 * answers 410 with why (deleted, expired, OOM-killed, died, lost to a timeout or a restart), and
 * ids that were never the caller's answer 404.
 */
export class ContextService implements Contexts {
  private readonly live = new Map<string, Live>();
  private readonly ended = new Map<string, Ended>();
  /** Creations under way, per tenant: they count against max_contexts already. */
  private readonly starting = new Map<string, number>();
  private readonly ids: ContextIds;
  private closed = false;

  constructor(
    private readonly deps: ContextDeps,
    /** The deployment's id: the key of the ids' MAC. */
    deployment: string,
    private readonly observer?: ContextObserver,
  ) {
    this.ids = new ContextIds(deployment);
  }

  async create(req: CreateContextRequest, ctx: Caller): Promise<ContextInfo> {
    const { config, registry, sandbox, admission, volumes, logger, egressGateway } = this.deps;
    if (this.closed) throw unavailable('The server is shutting down; retry on another instance or later');
    const { limits } = registry.get(ctx.tenant);
    const idleS = req.idle_timeout_s ?? limits.context_idle_s;
    if (idleS > limits.context_idle_s) {
      throw badRequest(`idle_timeout_s ${idleS} is above this tenant's limit of ${limits.context_idle_s} s (context_idle_s)`);
    }
    if (req.cpus !== undefined && req.cpus > limits.cpus) {
      throw badRequest(`cpus ${req.cpus} is above this tenant's limit of ${limits.cpus} (cpus)`);
    }
    const sandboxLimits = { ...limitsFor(config, limits, { memory_mb: req.memory_mb }), cpus: req.cpus ?? limits.cpus };
    this.purge();
    const mine = [...this.live.values()].filter((c) => c.tenant === ctx.tenant);
    const count = mine.length + (this.starting.get(ctx.tenant) ?? 0);
    if (count >= limits.max_contexts) {
      throw tooManyContexts(count, limits.max_contexts, Math.min(...mine.map((c) => this.expiresAt(c)), Date.now() + limits.context_idle_s * 1000));
    }
    this.starting.set(ctx.tenant, (this.starting.get(ctx.tenant) ?? 0) + 1);
    try {
      const id = this.ids.issue(ctx.tenant);
      // A tenant with an egress list: the container joins the egress network now (its calls get their credentials).
      const egressNetwork = limits.egress.length > 0 ? await egressGateway.network() : undefined;
      const box = await admission.run(
        ctx.tenant,
        limits.max_concurrent,
        () => sandbox.openContext({ contextId: id, limits: sandboxLimits, packagesVolume: volumes.name(ctx.tenant), egressNetwork }),
        ctx.signal,
      );
      if (this.closed || ctx.signal?.aborted) {
        box.close();
        throw unavailable('The context was not kept: the server is shutting down, or its caller went away');
      }
      const live: Live = {
        id, tenant: ctx.tenant, box, limits: sandboxLimits, idleS, maxS: limits.context_max_s, createdAt: Date.now(),
        lastUsedAt: null, calls: 0, busy: false, waiters: [], expireAfterCall: false,
      };
      this.live.set(id, live);
      live.maxTimer = unref(setTimeout(() => this.lifetimeOver(live), live.maxS * 1000));
      this.armIdle(live);
      this.changed(live);
      void box.ended.then(() => this.containerEnded(live));
      logger.info('context created', { context_id: id, tenant: ctx.tenant, idle_timeout_s: idleS, memory_mb: sandboxLimits.memoryMb });
      return this.info(live);
    } finally {
      this.starting.set(ctx.tenant, (this.starting.get(ctx.tenant) ?? 1) - 1);
    }
  }

  list(tenant: string): ContextInfo[] {
    this.purge();
    return [
      ...[...this.live.values()].filter((c) => c.tenant === tenant).map((c) => this.info(c)),
      ...[...this.ended.values()].filter((e) => e.tenant === tenant).map((e) => e.info),
    ];
  }

  get(id: string, tenant: string): ContextInfo {
    const live = this.live.get(id);
    if (live?.tenant === tenant) return this.info(live);
    const ended = this.endedOf(id, tenant);
    if (ended) return ended.info;
    throw this.missing(id, tenant);
  }

  delete(id: string, tenant: string): void {
    const live = this.live.get(id);
    if (live?.tenant !== tenant) throw this.lookupError(id, tenant);
    this.end(live, 'deleted', `Context ${id} was deleted: its state is gone; create a new one`);
  }

  /**
   * Runs `call` in the context when its turn comes (waiting at most `waitS`, the call's timeout),
   * then judges what the call left: a kernel lost ends the context, with why.
   */
  async call<T extends { outcome: SandboxOutcome }>(
    id: string,
    tenant: string,
    waitS: number,
    call: ContextCall<T>,
  ): Promise<T> {
    const live = this.lookup(id, tenant);
    await this.turn(live, waitS);
    if (this.live.get(id) !== live) {
      this.pass(live);
      throw this.lookupError(id, tenant);
    }
    clearTimeout(live.idleTimer);
    this.changed(live);
    try {
      // A context deleted (or the server shut down) while the call ran: the call's answer says so.
      const endedWhy = () => (this.live.get(id) === live ? null : (this.ended.get(id)?.info.error ?? null));
      const result = await call(live.box, live.limits, endedWhy);
      live.calls += 1;
      live.lastUsedAt = Date.now();
      const loss = await this.lossOf(live, result.outcome);
      if (loss && this.live.get(id) === live) this.end(live, 'lost', this.lostMessage(live, loss));
      return result;
    } finally {
      if (this.live.get(id) === live) {
        if (live.expireAfterCall) this.lifetimeOver(live);
        else this.armIdle(live);
      }
      this.pass(live);
      if (this.live.get(id) === live) this.changed(live);
    }
  }

  /** Ends every context (shutdown): their containers are removed; nothing is kept. */
  close(): void {
    this.closed = true;
    for (const live of this.live.values()) this.end(live, 'deleted', `Context ${live.id} was removed: the server shut down`);
  }

  /** Whether the call's outcome left the kernel gone, and why. */
  private async lossOf(live: Live, outcome: SandboxOutcome): Promise<Loss | null> {
    if (outcome.report?.lost) return outcome.report.lost;
    if (outcome.report) return null;
    if (outcome.violation) return 'violation';
    if (outcome.timedOut) return 'unresponsive';
    return (await live.box.oomKilled()) ? 'oom' : 'died';
  }

  private lostMessage(live: Live, loss: Loss): string {
    const tail = 'its state is gone; create a new one';
    const why: Record<Loss, string> = {
      oom: `was OOM-killed (limit ${live.limits.memoryMb} MiB)`,
      died: 'died (its interpreter exited or crashed)',
      unresponsive: `was lost: a call ran past its timeout and did not stop within ${INTERRUPT_GRACE_S} s of being interrupted`,
      violation: 'was lost: its sandbox broke the runner protocol',
      stopped: 'was lost: its container stopped',
    };
    return `Context ${live.id} ${why[loss]}: ${tail}`;
  }

  /** Waits for the context to be free (first come, first served); past `waitS`: 429. */
  private turn(live: Live, waitS: number): Promise<void> {
    if (!live.busy) {
      live.busy = true;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const go = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        live.waiters.splice(live.waiters.indexOf(go), 1);
        reject(new ServiceError('busy', `Context ${live.id} is busy with another call, for longer than this call's timeout (${waitS} s); calls to one context run one at a time`, 1));
      }, waitS * 1000);
      live.waiters.push(go);
    });
  }

  /** The turn goes to the next waiter, or the context is free. */
  private pass(live: Live): void {
    const next = live.waiters.shift();
    if (next) next();
    else live.busy = false;
  }

  private armIdle(live: Live): void {
    clearTimeout(live.idleTimer);
    live.idleTimer = unref(
      setTimeout(() => this.end(live, 'expired', `Context ${live.id} expired after ${live.idleS} s idle: its state is gone; create a new one`), live.idleS * 1000),
    );
  }

  private lifetimeOver(live: Live): void {
    if (this.live.get(live.id) !== live) return;
    if (live.busy) {
      live.expireAfterCall = true;
      return;
    }
    this.end(live, 'expired', `Context ${live.id} expired after ${live.maxS} s, the longest a context lives (context_max_s): its state is gone; create a new one`);
  }

  /** Its container stopped by itself: lost, unless a call is under way (which then says why). */
  private async containerEnded(live: Live): Promise<void> {
    if (this.live.get(live.id) !== live || live.busy) return;
    const oom = await live.box.oomKilled();
    if (this.live.get(live.id) === live && !live.busy) this.end(live, 'lost', this.lostMessage(live, oom ? 'oom' : 'stopped'));
  }

  private end(live: Live, state: EndedState, error: string): void {
    if (this.live.get(live.id) !== live) return;
    clearTimeout(live.idleTimer);
    clearTimeout(live.maxTimer);
    this.live.delete(live.id);
    live.box.close();
    const info: ContextInfo = { ...this.info(live), state, expires_at: null, busy: false, error };
    this.ended.set(live.id, { tenant: live.tenant, info, until: Date.now() + ENDED_KEPT_MS });
    this.observer?.(live.tenant, info, live.limits);
    this.deps.logger.info('context ended', { context_id: live.id, tenant: live.tenant, state, error });
    for (const waiter of live.waiters.splice(0)) waiter(); // each finds it gone and says why
  }

  private changed(live: Live): void {
    this.observer?.(live.tenant, this.info(live), live.limits);
  }

  private expiresAt(live: Live): number {
    const lifetime = live.createdAt + live.maxS * 1000;
    return live.busy ? lifetime : Math.min(lifetime, (live.lastUsedAt ?? live.createdAt) + live.idleS * 1000);
  }

  private info(live: Live): ContextInfo {
    return {
      context_id: live.id,
      state: 'active',
      created_at: iso(live.createdAt),
      expires_at: iso(this.expiresAt(live)),
      idle_timeout_s: live.idleS,
      last_used_at: live.lastUsedAt === null ? null : iso(live.lastUsedAt),
      calls: live.calls,
      busy: live.busy,
      limits: {
        memory_mb: live.limits.memoryMb,
        cpus: live.limits.cpus,
        pids: live.limits.pids,
        workspace_mb: live.limits.workspaceMb,
        max_lifetime_s: live.maxS,
      },
      error: null,
    };
  }

  private lookup(id: string, tenant: string): Live {
    const live = this.live.get(id);
    if (live?.tenant === tenant) return live;
    throw this.lookupError(id, tenant);
  }

  private lookupError(id: string, tenant: string): ServiceError {
    const ended = this.endedOf(id, tenant);
    return ended ? gone(ended.info.error!) : this.missing(id, tenant);
  }

  private endedOf(id: string, tenant: string): Ended | undefined {
    const ended = this.ended.get(id);
    return ended && ended.tenant === tenant && ended.until > Date.now() ? ended : undefined;
  }

  /** An id with no live or recently ended context: 410 when its format shows it was this tenant's, else 404. */
  private missing(id: string, tenant: string): ServiceError {
    const origin = this.ids.origin(id, tenant);
    if (origin === 'earlier-run') {
      return gone(`Context ${id} was lost when the server restarted (contexts do not survive a restart): its state is gone; create a new one`);
    }
    if (origin === 'this-run') return gone(`Context ${id} ended more than an hour ago: its state is gone; create a new one`);
    return notFound(`Context not found: ${id} (not one of this tenant's)`);
  }

  private purge(): void {
    const now = Date.now();
    for (const [id, ended] of this.ended) if (ended.until <= now) this.ended.delete(id);
  }
}
