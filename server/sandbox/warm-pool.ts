import type { Logger } from '../logger.js';
import type { SpecInput } from './container-spec.js';

/** A container created, attached and started, its runner waiting on stdin for one job. */
export interface Prepared {
  id: string;
  /** True once the container has stopped (killed from outside, say): never hand it out. */
  dead: boolean;
  /** Resolves when the container's output stream ends, i.e. it stopped. */
  ended: Promise<void>;
}

/** What makes two containers interchangeable: everything fixed at creation. Per-job values are not. */
export type Profile = Omit<SpecInput, 'executionId' | 'limits'> & {
  limits: Pick<SpecInput['limits'], 'runtime' | 'memoryMb' | 'cpus' | 'pids' | 'workspaceMb' | 'tmpMb' | 'nofile'>;
};

export function profileOf(spec: SpecInput): Profile {
  const { runtime, memoryMb, cpus, pids, workspaceMb, tmpMb, nofile } = spec.limits;
  const { image, instanceId, packagesVolume, packagesWritable, network, egress, wheelhouseMb, scratch, preload } = spec;
  return {
    image, instanceId, packagesVolume, packagesWritable, network, egress: egress ?? false, wheelhouseMb, scratch, preload,
    limits: { runtime, memoryMb, cpus, pids, workspaceMb, tmpMb, nofile },
  };
}

interface Slot<P extends Prepared> {
  spec: SpecInput;
  ready: P[];
  creating: number;
  retryAt: number;
  /** Bumped by `drop`: a container whose making began before is discarded when it is ready. */
  generation: number;
}

export interface WarmPoolOptions<P extends Prepared> {
  /** Containers kept ready per profile. */
  size: number;
  /** Profiles kept warm at once; the least recently used beyond it are drained. */
  maxProfiles: number;
  prepare(spec: SpecInput): Promise<P>;
  discard(prepared: P): void;
  logger: Logger;
  /** How long a profile waits after a failure before it tries again (default 5 s). */
  retryAfterFailureMs?: number;
  /** A container that stops this soon after it was ready is a sign of trouble, not of a kill (default 1 s). */
  diedAtOnceMs?: number;
}

export interface PoolStats {
  profiles: number;
  ready: number;
  creating: number;
  hits: number;
  misses: number;
}
/** Containers started at once per profile: more competes with the executions for the CPU (measured: p50 0.21x -> 0.31x of docker run on 2 cores). */
const PARALLEL_FILLS = 1;

/**
 * Containers started ahead of time, one pool per profile (a tenant whose limits or packages
 * differ gets a pool of its own, so nothing is adjusted after start). `take` is synchronous and
 * never waits: a miss means a cold start. Each container serves one job; refills run in the
 * background, one at a time per profile. A container that stops while waiting is dropped
 * and replaced.
 */
export class WarmPool<P extends Prepared> {
  private readonly slots = new Map<string, Slot<P>>();
  private closed = false;
  private pending = new Set<Promise<unknown>>();
  private hits = 0;
  private misses = 0;
  private readonly retryAfterFailureMs: number;
  private readonly diedAtOnceMs: number;

  constructor(private readonly options: WarmPoolOptions<P>) {
    this.retryAfterFailureMs = options.retryAfterFailureMs ?? 5000;
    this.diedAtOnceMs = options.diedAtOnceMs ?? 1000;
  }

  get size(): number {
    let n = 0;
    for (const slot of this.slots.values()) n += slot.ready.length;
    return n;
  }

  stats(): PoolStats {
    let creating = 0;
    for (const slot of this.slots.values()) creating += slot.creating;
    return { profiles: this.slots.size, ready: this.size, creating, hits: this.hits, misses: this.misses };
  }

  /**
   * A ready container for this spec's profile, or null. A miss refills the profile at once; a hit
   * leaves that to `refill`, once the run that took it is over: a container started meanwhile
   * competes with that run for the CPU (under gVisor its start costs a core for a second).
   */
  take(spec: SpecInput): P | null {
    const [key, slot] = this.slot(spec);
    let found: P | null = null;
    while (slot.ready.length > 0 && !found) {
      const candidate = slot.ready.shift()!;
      if (candidate.dead) this.options.discard(candidate);
      else found = candidate;
    }
    if (found) {
      this.hits += 1;
    } else {
      this.misses += 1;
      this.fill(key);
    }
    return found;
  }

  /**
   * Discards the containers of the profiles `matches` picks, ready or still being made, and makes
   * new ones: for when what they hold is out of date (a preloading container, after its packages changed).
   */
  drop(matches: (spec: SpecInput) => boolean): void {
    for (const [key, slot] of this.slots) {
      if (!matches(slot.spec)) continue;
      slot.generation += 1;
      for (const prepared of slot.ready.splice(0)) this.options.discard(prepared);
      this.fill(key);
    }
  }

  /** Fills a profile: before anyone asks (at start-up, for the known tenants), or after a run that took one of its containers. */
  refill(spec: SpecInput): void {
    this.fill(this.slot(spec)[0]);
  }

  /**
   * The profile's key and its slot (made on first use), marked as just used: moved to the end of
   * the map, whose order is the recency order (timestamps tie within a millisecond).
   */
  private slot(spec: SpecInput): [string, Slot<P>] {
    const key = JSON.stringify(profileOf(spec));
    const slot = this.slots.get(key) ?? { spec, ready: [], creating: 0, retryAt: 0, generation: 0 };
    this.slots.delete(key);
    this.slots.set(key, slot);
    this.evict();
    return [key, slot];
  }

  private evict(): void {
    if (this.slots.size <= this.options.maxProfiles) return;
    const [key, oldest] = this.slots.entries().next().value!;
    this.slots.delete(key);
    for (const prepared of oldest.ready.splice(0)) this.options.discard(prepared);
  }

  private fill(key: string): void {
    const slot = this.slots.get(key);
    while (slot && !this.closed && slot.creating < PARALLEL_FILLS && slot.ready.length + slot.creating < this.options.size) {
      if (Date.now() < slot.retryAt) return;
      this.startOne(key, slot);
    }
  }

  private startOne(key: string, slot: Slot<P>): void {
    slot.creating += 1;
    const { generation } = slot;
    const work = this.options
      .prepare({ ...slot.spec, executionId: `pool-${Math.random().toString(36).slice(2, 12)}` })
      .then(
        (prepared) => {
          slot.creating -= 1;
          if (this.closed || this.slots.get(key) !== slot || slot.generation !== generation) {
            this.options.discard(prepared);
            this.fill(key);
            return;
          }
          slot.ready.push(prepared);
          const readyAt = Date.now();
          void prepared.ended.then(() => {
            const at = slot.ready.indexOf(prepared);
            if (at >= 0) {
              // Stopped while waiting (killed from outside): drop it, make another; if containers die
              // as soon as they start (a broken runtime, say), wait before trying again.
              slot.ready.splice(at, 1);
              this.options.discard(prepared);
              if (Date.now() - readyAt < this.diedAtOnceMs) this.backOff(key, slot);
              this.fill(key);
            }
          });
          this.fill(key);
        },
        (err: Error) => {
          slot.creating -= 1;
          this.backOff(key, slot);
          this.options.logger.warn('warm pool: could not start a container; will retry', { error: err.message });
        },
      )
      .finally(() => this.pending.delete(work));
    this.pending.add(work);
  }

  /** Pauses a profile's refills for a while, then resumes them. */
  private backOff(key: string, slot: Slot<P>): void {
    slot.retryAt = Date.now() + this.retryAfterFailureMs;
    setTimeout(() => this.fill(key), this.retryAfterFailureMs + 10).unref();
  }

  /** Stops refilling and discards every waiting container. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    for (const slot of this.slots.values()) {
      for (const prepared of slot.ready) this.options.discard(prepared);
      slot.ready = [];
    }
    this.slots.clear();
  }
}
