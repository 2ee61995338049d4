import type { components } from '../api/openapi-types.js';
import type { Config } from '../config.js';
import { badRequest, notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Sandbox, SandboxJob, SandboxLimits } from '../sandbox/sandbox.js';
import { requireWorkspacePath } from '../workspace/paths.js';
import type { Workspace } from '../workspace/workspace.js';
import { toEnvelope, type ExecutionResponse } from './envelope.js';

type Schemas = components['schemas'];
export type ExecuteRequest = Schemas['ExecuteRequest'];
export type SaveAndExecuteRequest = Schemas['SaveAndExecuteRequest'];
export type RunPythonFileRequest = Schemas['RunPythonFileRequest'];

export interface ExecutionContext {
  executionId: string;
  endpoint: string;
}

/**
 * The service behind every execution endpoint (REST today, MCP later): checks the request against
 * the limits, takes the workspace, runs one sandbox, keeps the files it changed, builds the answer.
 */
export class ExecutionService {
  constructor(
    private readonly config: Config,
    private readonly sandbox: Sandbox,
    private readonly workspace: Workspace,
    private readonly logger: Logger,
  ) {}

  execute(req: ExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    return this.run({ mode: 'code', code: req.code, variable: req.variable_to_return }, this.limits(req.timeout), ctx);
  }

  async saveAndExecute(req: SaveAndExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const limits = this.limits(req.timeout);
    await this.workspace.save(file, Buffer.from(req.code, 'utf8'), req.overwrite ?? true);
    return this.run({ mode: 'file', file, variable: req.variable_to_return }, limits, ctx);
  }

  async runFile(req: RunPythonFileRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const limits = this.limits(req.timeout);
    if (!(await this.workspace.isFile(file))) throw notFound(`File not found: ${file}`);
    return this.run({ mode: 'file', file, variable: req.variable_to_return }, limits, ctx);
  }

  /** The caps for one execution: the configured ones, with the timeout the request may lower. */
  private limits(timeout: number | undefined): SandboxLimits {
    const c = this.config;
    if (timeout !== undefined && timeout > c.maxTimeoutS) {
      throw badRequest(`timeout ${timeout} s is above the maximum of ${c.maxTimeoutS} s (MAX_TIMEOUT_S)`);
    }
    return {
      timeoutS: timeout ?? c.defaultTimeoutS,
      memoryMb: c.memoryMb,
      cpus: c.cpus,
      pids: c.pids,
      outputBytes: c.outputBytes,
      workspaceMb: c.workspaceMb,
      tmpMb: c.tmpMb,
      nofile: c.nofile,
      maxFiles: c.maxFiles,
    };
  }

  private async run(
    what: Pick<SandboxJob, 'mode' | 'code' | 'file' | 'variable'>,
    limits: SandboxLimits,
    ctx: ExecutionContext,
  ): Promise<ExecutionResponse> {
    const workspace = await this.workspace.snapshot();
    this.logger.debug('execution starting', { execution_id: ctx.executionId, endpoint: ctx.endpoint, ...what });
    const outcome = await this.sandbox.run({ ...what, executionId: ctx.executionId, workspace, limits });
    if (outcome.changes) await this.workspace.apply(outcome.changes);
    const response = toEnvelope(ctx.executionId, outcome, limits);
    this.logger.info('execution', {
      execution_id: ctx.executionId,
      endpoint: ctx.endpoint,
      success: response.success,
      duration_ms: outcome.durationMs,
      exit_code: outcome.exitCode,
      timed_out: outcome.timedOut,
      truncated: outcome.truncated,
      oom_killed: outcome.oomKilled,
      stdout_bytes: Buffer.byteLength(outcome.stdout),
      stderr_bytes: Buffer.byteLength(outcome.stderr),
      files_changed: outcome.changes ? outcome.changes.files.length + outcome.changes.deleted.length : 0,
      phases_ms: outcome.phases,
    });
    return response;
  }
}
