import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '../../server/logger.js';
import type { SpecInput } from '../../server/sandbox/container-spec.js';
import { WarmPool, type Prepared } from '../../server/sandbox/warm-pool.js';
import { until } from '../helpers/until.js';

/** The warm pool with a fake `prepare`: containers are plain objects the test ends by hand. */
interface FakePrepared extends Prepared {
  profile: number;
  end(): void;
}

const logger = createLogger('error');
logger.silent = true;

function spec(memoryMb = 64): SpecInput {
  return {
    image: 'img', instanceId: 'unit', executionId: 'x', packagesVolume: 'vol',
    limits: { runtime: 'runc' as const, timeoutS: 5, memoryMb, cpus: 1, pids: 64, outputBytes: 1024, workspaceMb: 1, tmpMb: 1, nofile: 64, maxFiles: 10, maxOutputs: 16, outputsBytes: 1 << 20 },
  };
}

function pool(options: { size?: number; maxProfiles?: number; fail?: () => boolean; retryAfterFailureMs?: number; diedAtOnceMs?: number; hold?: () => Promise<void> } = {}) {
  const prepared: FakePrepared[] = [];
  const discarded: FakePrepared[] = [];
  let attempts = 0;
  const warm = new WarmPool<FakePrepared>({
    size: options.size ?? 2,
    maxProfiles: options.maxProfiles ?? 4,
    retryAfterFailureMs: options.retryAfterFailureMs ?? 30,
    diedAtOnceMs: options.diedAtOnceMs ?? 0,
    logger,
    async prepare(s) {
      attempts += 1;
      await new Promise((resolve) => setImmediate(resolve));
      await options.hold?.();
      if (options.fail?.()) throw new Error('engine says no');
      let end!: () => void;
      const p: FakePrepared = { id: `c${prepared.length}`, dead: false, profile: s.limits.memoryMb, end: () => end(), ended: Promise.resolve() };
      p.ended = new Promise<void>((resolve) => (end = () => ((p.dead = true), resolve())));
      prepared.push(p);
      return p;
    },
    discard: (p) => discarded.push(p),
  });
  return { warm, prepared, discarded, attempts: () => attempts };
}

const tick = (what: string, check: () => boolean) => until(check, what, 10_000, 1);

describe('warm pool', () => {
  it('a miss when empty, then fills one at a time to its size, then hits', async () => {
    const { warm, prepared } = pool({ size: 2 });
    assert.equal(warm.take(spec()), null);
    assert.equal(warm.stats().creating, 1, 'one container at a time per profile');
    await tick('the pool to fill', () => warm.size === 2);
    assert.equal(prepared.length, 2);
    const taken = warm.take(spec());
    assert.equal(taken, prepared[0]);
    assert.deepEqual({ ...warm.stats(), ready: undefined, creating: undefined }, { profiles: 1, ready: undefined, creating: undefined, hits: 1, misses: 1 });
    assert.equal(warm.stats().creating, 0, 'nothing starts while the run that took it goes on');
    warm.refill(spec()); // its run is over
    await tick('the refill', () => warm.size === 2);
    assert.equal(prepared.length, 3, 'the taken container is replaced, never handed out twice');
  });

  it('keeps a pool per profile: another profile does not get these containers', async () => {
    const { warm } = pool({ size: 1 });
    warm.refill(spec(64));
    await tick('the first profile', () => warm.size === 1);
    assert.equal(warm.take(spec(128)), null);
    const hit = warm.take(spec(64));
    assert.equal(hit?.profile, 64);
  });

  it('what a container preloads is part of its profile', async () => {
    const { warm } = pool({ size: 1 });
    warm.refill({ ...spec(), preload: ['numpy'] });
    await tick('the preloading profile', () => warm.size === 1);
    assert.equal(warm.take({ ...spec(), preload: [] }), null);
    assert.notEqual(warm.take({ ...spec(), preload: ['numpy'] }), null);
  });

  it('drop: the containers of the profiles it picks go, ready or still being made, and are made anew', async () => {
    let holding = false;
    let release = () => undefined as void;
    const hold = () => (holding ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve());
    const { warm, prepared, discarded } = pool({ size: 1, hold });
    const other = { ...spec(), packagesVolume: 'other' };
    warm.refill(spec());
    await tick('the first profile', () => warm.size === 1);
    warm.refill(other);
    await tick('both profiles', () => warm.size === 2);
    const [mine, theirs] = prepared;
    holding = true;
    warm.drop((s) => s.packagesVolume === 'vol');
    assert.deepEqual(discarded, [mine], 'the ready one goes at once');
    await tick('its replacement to be under way', () => warm.stats().creating === 1);
    warm.drop((s) => s.packagesVolume === 'vol'); // while that one is being made
    holding = false;
    release();
    await tick('a fresh one', () => warm.size === 2 && prepared.length === 4);
    assert.deepEqual(discarded, [mine, prepared[2]], 'the one begun before the second drop never served');
    assert.equal(warm.take(spec()), prepared[3]);
    assert.equal(warm.take(other), theirs, 'other profiles keep theirs');
  });

  it('a container that stops while waiting is dropped and replaced', async () => {
    const { warm, prepared, discarded } = pool({ size: 1 });
    warm.refill(spec());
    await tick('the pool to fill', () => warm.size === 1);
    prepared[0]!.end();
    await tick('the replacement', () => prepared.length === 2 && warm.size === 1);
    assert.deepEqual(discarded, [prepared[0]]);
    assert.equal(warm.take(spec()), prepared[1]);
  });

  it('a dead container found at take() is discarded, never handed out', async () => {
    const { warm, prepared, discarded } = pool({ size: 1 });
    warm.refill(spec());
    await tick('the pool to fill', () => warm.size === 1);
    prepared[0]!.dead = true; // stopped, and its end not yet seen
    assert.equal(warm.take(spec()), null);
    assert.deepEqual(discarded, [prepared[0]]);
  });

  it('backs off after a failure: no new attempt until the pause is over', async (t) => {
    let now = 0;
    t.mock.method(Date, 'now', () => now); // the pause on a clock of the test's: a slow machine cannot end it early
    let failing = true;
    const { warm, attempts } = pool({ size: 1, fail: () => failing, retryAfterFailureMs: 60_000 });
    warm.refill(spec());
    await tick('the failed attempt', () => attempts() === 1 && warm.stats().creating === 0);
    now += 59_999;
    warm.take(spec()); // a request in the pause does not trigger another attempt
    assert.equal(attempts(), 1);
    failing = false;
    now += 1;
    warm.take(spec()); // the pause is over: the next miss tries again
    await tick('the retry after the pause', () => warm.size === 1);
    assert.equal(attempts(), 2);
  });

  it('after the pause, its timer tries again by itself', async () => {
    let failing = true;
    const { warm, attempts } = pool({ size: 1, fail: () => failing });
    warm.refill(spec());
    await tick('the failed attempt', () => attempts() === 1 && warm.stats().creating === 0);
    failing = false;
    await tick('the retry after the pause', () => warm.size === 1);
    assert.equal(attempts(), 2);
  });

  it('backs off when containers die as soon as they are ready (a broken runtime, say)', async () => {
    const { warm, prepared } = pool({ size: 1, diedAtOnceMs: 10_000 });
    warm.refill(spec());
    await tick('the pool to fill', () => warm.size === 1);
    prepared[0]!.end();
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(prepared.length, 1, 'no replacement during the pause');
    await tick('the replacement after the pause', () => prepared.length === 2);
  });

  it('evicts the least recently used profile past maxProfiles, discarding its containers (uses within one millisecond too)', async (t) => {
    t.mock.method(Date, 'now', () => 0);
    const { warm, prepared, discarded } = pool({ size: 1, maxProfiles: 2 });
    warm.refill(spec(64));
    await tick('profile 64', () => warm.size === 1);
    warm.refill(spec(128));
    await tick('profile 128', () => warm.size === 2);
    warm.take(spec(64)); // 64 is now the most recent; 128 the least
    warm.refill(spec(256));
    assert.deepEqual(discarded.map((p) => p.profile), [128]);
    assert.equal(warm.stats().profiles, 2);
    assert.ok(prepared.some((p) => p.profile === 128));
  });

  it('close() discards every waiting container and any that finishes preparing afterwards', async () => {
    let release!: () => void;
    const second = new Promise<void>((resolve) => (release = resolve));
    const { warm, prepared, discarded, attempts } = pool({ size: 2, hold: () => (attempts() === 2 ? second : Promise.resolve()) });
    warm.refill(spec());
    await tick('one ready, one on the way', () => warm.size === 1 && warm.stats().creating === 1);
    const closing = warm.close();
    release();
    await closing;
    assert.equal(warm.size, 0);
    assert.deepEqual(new Set(discarded), new Set(prepared), 'every container prepared is discarded');
    assert.equal(warm.take(spec()), null);
  });
});
