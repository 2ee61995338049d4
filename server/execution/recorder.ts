import type { Logger } from '../logger.js';
import type { Metrics, Outcome } from '../metrics.js';
import type { SandboxOutcome } from '../sandbox/sandbox.js';
import type { ExecutionResponse } from '../contract/contract.js';
import type { HistoryStore } from './history.js';

export function outcomeOf(response: ExecutionResponse): Outcome {
  if (response.success) return 'success';
  if (response.timed_out) return 'timeout';
  if (response.oom_killed) return 'oom';
  if (response.truncated) return 'truncated';
  return 'error';
}

/**
 * Everything kept of a finished sandbox run, in one place: the log line (what happened, never the
 * user's code or output), the metrics, and the answer for GET /executions/{id}.
 */
export class Recorder {
  constructor(
    private readonly logger: Logger,
    private readonly history: HistoryStore,
    private readonly metrics?: Metrics,
  ) {}

  /** Resolves once the answer is kept, so that GET /executions/{id} finds it as soon as the caller has it. */
  async record(
    ctx: { executionId: string; endpoint: string; tenant: string },
    outcome: SandboxOutcome,
    response: ExecutionResponse,
    extra: Record<string, unknown> = {},
  ): Promise<void> {
    await this.history.record(ctx.tenant, response);
    // The log line and the metrics wait until the answer has gone out.
    setImmediate(() => this.emit(ctx, outcome, response, extra));
  }

  private emit(
    ctx: { executionId: string; endpoint: string; tenant: string },
    outcome: SandboxOutcome,
    response: ExecutionResponse,
    extra: Record<string, unknown>,
  ): void {
    this.metrics?.executions.observe({ endpoint: ctx.endpoint, outcome: outcomeOf(response) }, outcome.durationMs / 1000);
    this.logger.info('execution', {
      execution_id: ctx.executionId,
      endpoint: ctx.endpoint,
      tenant: ctx.tenant,
      success: response.success,
      duration_ms: outcome.durationMs,
      exit_code: outcome.exitCode,
      timed_out: outcome.timedOut,
      truncated: outcome.truncated,
      oom_killed: outcome.oomKilled,
      stdout_bytes: Buffer.byteLength(outcome.stdout),
      stderr_bytes: Buffer.byteLength(outcome.stderr),
      files_changed: outcome.changes ? outcome.changes.files.length + outcome.changes.deleted.length : 0,
      outputs: response.outputs.length,
      phases_ms: outcome.phases,
      ...extra,
    });
  }
}
