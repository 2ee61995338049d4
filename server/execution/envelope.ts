import type { ExecutionResponse } from '../contract/contract.js';
import type { SandboxLimits, SandboxOutcome } from '../sandbox/sandbox.js';

/** Cuts a string (from the container) to at most `max` UTF-8 bytes without splitting a character. */
export function capString(value: string, max: number): { text: string; cut: boolean } {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length <= max) return { text: value, cut: false };
  return { text: bytes.subarray(0, max).toString('utf8').replace(/\uFFFD$/, ''), cut: true };
}

/**
 * What the client gets for a finished execution. The decision is made here, once, in order of
 * precedence: a distributed worker could not install the tenant's packages first (nothing ran); the
 * service refused the container's output; the deadline; memory; the output cap;
 * then the code's own outcome. Only a clean exit with every requested value is `success: true`.
 */
export function toEnvelope(executionId: string, outcome: SandboxOutcome, limits: SandboxLimits): ExecutionResponse {
  const { report } = outcome;
  const cap = (s: string | null | undefined) => (s == null ? null : capString(s, limits.outputBytes).text);
  const failure = (error: string): ExecutionResponse => ({
    success: false,
    result: null,
    error,
    execution_id: executionId,
    stdout: outcome.stdout,
    stderr: outcome.stderr,
    exit_code: outcome.exitCode,
    duration_ms: outcome.durationMs,
    timed_out: outcome.timedOut,
    truncated: outcome.truncated,
    oom_killed: outcome.oomKilled,
    traceback: cap(report?.traceback),
    warnings: outcome.warnings,
    value: null,
    // What the code showed before it failed (a figure, say) is worth as much as the error.
    outputs: report?.outputs ?? [],
    outputs_truncated: report?.outputs_truncated ?? false,
    ...(outcome.worker ? { worker: outcome.worker } : {}),
    ...phasesOf(outcome),
  });

  const caughtUp = outcome.catchUps?.find((c) => c.error !== undefined);
  if (caughtUp) return failure(caughtUp.error!); // nothing ran

  if (outcome.violation) {
    return failure(`The sandbox broke the runner protocol (${outcome.violation}); its output was discarded`);
  }
  if (outcome.aborted) return failure('The caller went away before the answer, so the execution was stopped');
  if (outcome.timedOut) return failure(`Execution timed out after ${limits.timeoutS} s and was stopped`);
  if (outcome.oomKilled) {
    return failure(`Memory limit exceeded: the container was OOM-killed (limit ${limits.memoryMb} MiB)`);
  }
  if (outcome.truncated) {
    const what = report?.result_truncated ? 'The returned value' : 'Output';
    return failure(
      `Output limit exceeded: ${what} went past ${limits.outputBytes} bytes; it was cut and the execution stopped`,
    );
  }
  if (!report) {
    return failure(`The sandbox stopped without a result (exit code ${outcome.exitCode ?? 'unknown'})`);
  }
  if (report.status === 'exception') return failure(cap(report.error) ?? 'The code raised an exception');
  if (report.status === 'killed') {
    const signal = report.exit_code > 128 ? ` by signal ${report.exit_code - 128}` : '';
    return failure(`The code was killed${signal} before it finished`);
  }
  if (report.exit_code !== 0) {
    return failure(`The code exited with status ${report.exit_code}`);
  }

  const result = report.result !== null ? capString(report.result, limits.outputBytes) : null;
  return {
    ...failure(''),
    success: true,
    error: null,
    result: result ? result.text : outcome.stdout.trim(),
    traceback: null,
    value: cap(report.value),
  };
}


/** The worker's catch-up installs before the run, as the answer's `phases` (only when there were any). */
function phasesOf(outcome: SandboxOutcome): Pick<ExecutionResponse, 'phases'> {
  if (!outcome.catchUps?.length) return {};
  return {
    phases: Object.fromEntries(
      outcome.catchUps.map((c) => [`${c.target}_catch_up`, { generation: c.generation, installed: c.installed, duration_ms: c.durationMs }]),
    ),
  };
}
