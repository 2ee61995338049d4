import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ExecutionResponse } from '../../server/contract/contract.js';
import { ExecutionHistory } from '../../server/execution/history.js';

const MiB = 1024 * 1024;
let n = 0;
/** An answer whose JSON is `bytes` long (what the history counts). */
function answer(bytes = 300): ExecutionResponse {
  n += 1;
  const response = {
    success: true, result: '', error: null, execution_id: `id-${String(n).padStart(6, '0')}`,
    stdout: '', stderr: '', exit_code: 0, duration_ms: 1, timed_out: false, truncated: false, oom_killed: false, traceback: null,
  } as ExecutionResponse;
  response.result = 'x'.repeat(bytes - JSON.stringify(response).length);
  return response;
}

describe('ExecutionHistory', () => {
  it("one tenant's 70 answers of 1 MB do not evict another tenant's recent one (EXECUTION_RETENTION_MB=128)", () => {
    const history = new ExecutionHistory(3600, 128 * MiB);
    const alice = answer();
    history.record('alice', alice);
    const mallory = Array.from({ length: 70 }, () => answer(2 * MiB)); // 1 MB of stdout is 2 MB of answer: stdout and result
    for (const a of mallory) history.record('mallory', a);
    assert.deepEqual(history.get('alice', alice.execution_id), alice);
    assert.equal(history.get('mallory', mallory[0]!.execution_id), null, 'the cap was reached: mallory lost its oldest');
    assert.deepEqual(history.get('mallory', mallory[69]!.execution_id), mallory[69]);
    const kept = mallory.filter((a) => history.get('mallory', a.execution_id)).length;
    assert.equal(kept, 63, "alice's answer and 63 of 2 MiB fit in 128 MiB");
  });

  it("past the cap, the tenant holding the most loses its oldest first, whoever recorded last", () => {
    const history = new ExecutionHistory(3600, 10_000);
    const a = [answer(3000), answer(3000)];
    const b = [answer(1000), answer(1000), answer(1000)];
    for (const x of a) history.record('a', x);
    for (const x of b) history.record('b', x);
    history.record('a', answer(2500)); // 11500 > 10000: a holds 8500, so a's oldest goes
    assert.equal(history.get('a', a[0]!.execution_id), null);
    assert.ok(history.get('a', a[1]!.execution_id));
    for (const x of b) assert.ok(history.get('b', x.execution_id));
    history.record('b', answer(4000)); // 12500: b holds 7000, so b loses its two oldest; then a (5500) holds more than b (5000)
    assert.equal(history.get('b', b[0]!.execution_id), null);
    assert.equal(history.get('b', b[1]!.execution_id), null);
    assert.equal(history.get('a', a[1]!.execution_id), null);
    assert.ok(history.get('b', b[2]!.execution_id));
    assert.ok(history.get('b', `id-${String(n).padStart(6, '0')}`));
  });

  it('forgets answers after the retention time, reads another tenant\'s id as absent, and keeps none bigger than the cap', () => {
    const clock = { t: 0 };
    const history = new ExecutionHistory(60, 10_000, () => clock.t);
    const old = answer();
    history.record('a', old);
    clock.t = 30_000;
    const recent = answer();
    history.record('a', recent);
    assert.equal(history.get('b', old.execution_id), null);
    clock.t = 60_000;
    assert.equal(history.get('a', old.execution_id), null);
    assert.deepEqual(history.get('a', recent.execution_id), recent);
    const huge = answer(20_000);
    history.record('a', huge);
    assert.equal(history.get('a', huge.execution_id), null);
    assert.deepEqual(history.get('a', recent.execution_id), recent);
  });
});
