import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capString, toEnvelope } from '../../server/execution/envelope.js';
import { classify } from '../../server/errors.js';
import { EngineError } from '../../server/sandbox/runtime.js';
import { PROTOCOL_VERSION, type RunnerReport } from '../../server/sandbox/protocol.js';
import type { SandboxOutcome } from '../../server/sandbox/sandbox.js';

const limits = { runtime: 'runc' as const, timeoutS: 5, memoryMb: 256, cpus: 1, pids: 64, outputBytes: 10, workspaceMb: 10, tmpMb: 8, nofile: 100, maxFiles: 10, maxOutputs: 16, outputsBytes: 1 << 20 };
const report = (over: Partial<RunnerReport> = {}): RunnerReport => ({
  protocol: PROTOCOL_VERSION, exit_code: 0, timed_out: false, truncated: false, oom_killed: false, status: 'ok',
  error: null, traceback: null, result: null, result_truncated: false,
    value: null, outputs: [], outputs_truncated: false, deleted: [], warnings: [], run_ms: 1, ...over,
});
const outcome = (over: Partial<SandboxOutcome> = {}): SandboxOutcome => ({
  stdout: ' 42\n', stderr: '', report: report(), changes: null, exitCode: 0, timedOut: false, truncated: false,
  oomKilled: false, violation: null, aborted: false, warnings: [], durationMs: 5, phases: {}, ...over,
});

describe('toEnvelope', () => {
  it('success: result is the stripped stdout', () => {
    const e = toEnvelope('id', outcome(), limits);
    assert.equal(e.success, true);
    assert.equal(e.result, '42');
    assert.equal(e.error, null);
  });

  it('success: result is the variable when one was returned', () => {
    assert.equal(toEnvelope('id', outcome({ report: report({ result: '7' }) }), limits).result, '7');
  });

  const failures: [string, Partial<SandboxOutcome>, RegExp][] = [
    ['a protocol violation first', { violation: 'bad frame', timedOut: true }, /broke the runner protocol \(bad frame\)/],
    ['the timeout before OOM', { timedOut: true, oomKilled: true }, /timed out after 5 s/],
    ['OOM before the output cap', { oomKilled: true, truncated: true }, /OOM-killed \(limit 256 MiB\)/],
    ['the output cap', { truncated: true }, /Output limit exceeded: Output went past 10 bytes/],
    ['no report', { report: null, exitCode: 2 }, /stopped without a result \(exit code 2\)/],
    ['an exception', { report: report({ status: 'exception', exit_code: 1, error: 'E: x' }) }, /^E: x$/],
    ['a signal', { report: report({ status: 'killed', exit_code: 137 }) }, /killed by signal 9/],
    ['a non-zero exit', { report: report({ status: 'exit', exit_code: 3 }) }, /exited with status 3/],
  ];
  for (const [name, over, error] of failures) {
    it(`failure: ${name}`, () => {
      const e = toEnvelope('id', outcome(over), limits);
      assert.equal(e.success, false);
      assert.equal(e.result, null);
      assert.match(String(e.error), error);
    });
  }

  it('value: the last expression on success, capped like the result; null on failure', () => {
    assert.equal(toEnvelope('id', outcome({ report: report({ value: '5' }) }), limits).value, '5');
    assert.equal(toEnvelope('id', outcome({ report: report({ value: 'v'.repeat(20) }) }), limits).value, 'v'.repeat(10));
    assert.equal(toEnvelope('id', outcome(), limits).value, null);
    const failed = toEnvelope('id', outcome({ report: report({ status: 'exception', exit_code: 1, error: 'E', value: '5' }) }), limits);
    assert.equal(failed.value, null);
  });

  it('outputs: as reported, also when the code failed after making them; none without a report', () => {
    const outputs = [{ mime: 'image/png' as const, data: 'iVBORw0KGgo=', source: 'figure' as const }];
    const ok = toEnvelope('id', outcome({ report: report({ outputs, outputs_truncated: true }) }), limits);
    assert.deepEqual([ok.outputs, ok.outputs_truncated], [outputs, true]);
    const failed = toEnvelope('id', outcome({ report: report({ status: 'exception', exit_code: 1, error: 'E', outputs }) }), limits);
    assert.deepEqual(failed.outputs, outputs);
    const refused = toEnvelope('id', outcome({ report: null, violation: 'bad' }), limits);
    assert.deepEqual([refused.outputs, refused.outputs_truncated, refused.value], [[], false, null]);
  });

  it('caps what the container said', () => {
    const e = toEnvelope('id', outcome({ report: report({ status: 'exception', exit_code: 1, error: 'E'.repeat(100), traceback: 'T'.repeat(100) }) }), limits);
    assert.equal(e.error, 'E'.repeat(10));
    assert.equal(e.traceback, 'T'.repeat(10));
  });

  it('capString never splits a character', () => {
    assert.deepEqual(capString('aé', 2), { text: 'a', cut: true });
    assert.deepEqual(capString('ab', 2), { text: 'ab', cut: false });
  });
});

describe('classify: every error to one status and message', () => {
  it('a fault of the machine is a 503 that names it, without the path', async () => {
    const full = await import('node:fs/promises').then((fs) => fs.writeFile('/dev/full', 'x').then(() => null, (e: unknown) => e));
    const { kind, status, message } = classify(full);
    assert.deepEqual({ kind, status }, { kind: 'unavailable', status: 503 });
    assert.match(message, /^The server's disk is full/);
    assert.doesNotMatch(message, /\/dev\/full/);
  });

  it('a plain Error is internal, with a message that says nothing of it', () => {
    assert.deepEqual(classify(new Error('/srv/secret/path exploded')), {
      kind: 'internal', status: 500, message: 'Internal error: see the server log for this execution_id',
    });
  });

  it('an engine failure keeps its message for the operator', () => {
    const err = new EngineError('unreachable', 'Docker engine is not reachable at /var/run/docker.sock (ECONNREFUSED): start it');
    assert.deepEqual(classify(err), { kind: 'unavailable', status: 503, message: err.message, retryAfterS: undefined });
  });
});
