import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ServiceError } from '../../server/errors.js';
import { Admission, type AdmissionOptions } from '../../server/tenancy/admission.js';

const gate = () => {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
};
const tick = () => new Promise((r) => setImmediate(r));

describe('Admission: the rate limit counts runs', () => {
  const limited = (perMinute: Record<string, number>, clock: { t: number }) =>
    new Admission({ globalCap: 100, queueMax: 100, queueTimeoutMs: 5000, perMinute: (t) => perMinute[t] ?? 0, now: () => clock.t });

  it('lets requests_per_minute runs start in a minute, refuses the next with 429 and the seconds left, then opens again', async () => {
    const clock = { t: 1_000_000 };
    const admission = limited({ a: 2 }, clock);
    assert.equal(await admission.run('a', 5, async () => 1), 1);
    clock.t += 20_000;
    assert.equal(await admission.run('a', 5, async () => 2), 2);
    clock.t += 15_500;
    await assert.rejects(admission.run('a', 5, async () => 3), (err: ServiceError) =>
      err.status === 429 && err.retryAfterS === 25 &&
      err.message === 'Rate limit reached: 2 executions per minute for this tenant (requests_per_minute); retry in 25 s');
    assert.equal(await admission.run('b', 5, async () => 'b'), 'b', 'another tenant has its own count');
    clock.t += 24_500;
    assert.equal(await admission.run('a', 5, async () => 4), 4, 'a new minute');
  });

  it('counts concurrent runs one by one (as a batch of 12 brings them), and 0 is no limit', async () => {
    const clock = { t: 0 };
    const admission = limited({ a: 2 }, clock);
    const ran: number[] = [];
    const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => admission.run('a', 20, async () => ran.push(i))));
    assert.equal(ran.length, 2);
    assert.equal(results.filter((r) => r.status === 'rejected').length, 10);
    const free = await Promise.all(Array.from({ length: 12 }, () => admission.run('open', 20, async () => 'ok')));
    assert.equal(free.length, 12);
  });
});

describe('Admission: each tenant has a share of the queue', () => {
  /** Fills the global cap with tenant `hold`'s runs; returns the gate that ends them. */
  async function full(options: Partial<AdmissionOptions> = {}) {
    const admission = new Admission({ globalCap: 2, queueMax: 4, queueTimeoutMs: 5000, ...options });
    const hold = gate();
    const running = [admission.run('a', 1, () => hold.promise), admission.run('b', 1, () => hold.promise)];
    await tick();
    assert.equal(admission.inFlight, 2);
    return { admission, hold, running };
  }

  it("alone, a tenant may fill the queue; past it that tenant is refused", async () => {
    const { admission, hold, running } = await full();
    const queued = Array.from({ length: 4 }, () => admission.run('a', 1, async () => 'a'));
    await tick();
    assert.equal(admission.queued, 4);
    await assert.rejects(admission.run('a', 1, async () => 'late'), /queue is full and this tenant holds its share of it, 4 places of QUEUE_MAX 4/);
    hold.open();
    assert.deepEqual(await Promise.all(queued), ['a', 'a', 'a', 'a']);
    await Promise.all(running);
  });

  it("when the queue is full, another tenant takes the place of the burst's newest waiter and runs first", async () => {
    const { admission, hold, running } = await full();
    const order: string[] = [];
    const burst = Array.from({ length: 4 }, (_, i) => admission.run('a', 1, async () => order.push(`a${i}`)));
    const refused = burst.map((p) => p.then(() => null, (err: ServiceError) => err));
    await tick();
    const c = admission.run('c', 1, async () => order.push('c'));
    await tick();
    assert.equal(admission.queued, 4);
    const displaced = await refused[3];
    assert.ok(displaced instanceof ServiceError && displaced.status === 429);
    assert.match(displaced.message, /another tenant took this place in the full queue: this tenant held more than its share, 2 places of QUEUE_MAX 4/);
    // c2 gets the second of c's two places; a third c is over its share and is refused itself.
    const c2 = admission.run('c', 1, async () => order.push('c2'));
    await tick();
    assert.ok((await refused[2]) instanceof ServiceError);
    await assert.rejects(admission.run('c', 1, async () => 'c3'), /this tenant holds its share of it, 2 places/);
    hold.open();
    await Promise.all([...running, c, c2, burst[0], burst[1]]);
    assert.deepEqual(await refused[0], null);
    assert.deepEqual(order.sort(), ['a0', 'a1', 'c', 'c2']);
    assert.equal(admission.inFlight, 0);
    assert.equal(admission.queued, 0);
  });

  it('with more tenants waiting than places, each keeps the one it has', async () => {
    const { admission, hold, running } = await full({ queueMax: 2 });
    const waiting = [admission.run('x', 1, async () => 'x'), admission.run('y', 1, async () => 'y')];
    await tick();
    await assert.rejects(admission.run('z', 1, async () => 'z'), /Too many executions in progress \(the queue is full\)/);
    hold.open();
    assert.deepEqual(await Promise.all(waiting), ['x', 'y']);
    await Promise.all(running);
  });
});
