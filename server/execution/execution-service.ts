import type { components } from '../api/openapi-types.js';
import type { Config } from '../config.js';
import { notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Sandbox, SandboxJob, SandboxLimits } from '../sandbox/sandbox.js';
import { requireWorkspacePath } from '../workspace/paths.js';
import type { WorkspaceStore } from '../workspace/workspace-store.js';
import { packagesVolume } from '../packages/volume.js';
import { logOutcome, toEnvelope, type ExecutionResponse } from './envelope.js';
import { limitsFor } from './limits.js';

type Schemas = components['schemas'];
export type ExecuteRequest = Schemas['ExecuteRequest'];
export type SaveAndExecuteRequest = Schemas['SaveAndExecuteRequest'];
export type RunPythonFileRequest = Schemas['RunPythonFileRequest'];

export interface ExecutionContext {
  executionId: string;
  endpoint: string;
  /** Whose workspace and packages this request uses. */
  tenant: string;
}

/**
 * The service behind every execution endpoint (REST today, MCP later): checks the request against
 * the limits, takes the workspace, runs one sandbox, keeps the files it changed, builds the answer.
 */
export class ExecutionService {
  constructor(
    private readonly config: Config,
    private readonly sandbox: Sandbox,
    private readonly workspaces: WorkspaceStore,
    private readonly logger: Logger,
  ) {}

  execute(req: ExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    return this.run({ mode: 'code', code: req.code, variable: req.variable_to_return }, limitsFor(this.config, req.timeout), ctx);
  }

  async saveAndExecute(req: SaveAndExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const limits = limitsFor(this.config, req.timeout);
    const workspace = await this.workspaces.for(ctx.tenant);
    await workspace.save(file, Buffer.from(req.code, 'utf8'), req.overwrite ?? true);
    return this.run({ mode: 'file', file, variable: req.variable_to_return }, limits, ctx);
  }

  async runFile(req: RunPythonFileRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const limits = limitsFor(this.config, req.timeout);
    const workspace = await this.workspaces.for(ctx.tenant);
    if (!(await workspace.isFile(file))) throw notFound(`File not found: ${file}`);
    return this.run({ mode: 'file', file, variable: req.variable_to_return }, limits, ctx);
  }

  private async run(
    what: Pick<SandboxJob, 'mode' | 'code' | 'file' | 'variable'>,
    limits: SandboxLimits,
    ctx: ExecutionContext,
  ): Promise<ExecutionResponse> {
    const workspace = await this.workspaces.for(ctx.tenant);
    const snapshot = await workspace.snapshot();
    this.logger.debug('execution starting', { execution_id: ctx.executionId, endpoint: ctx.endpoint, tenant: ctx.tenant, ...what });
    const outcome = await this.sandbox.run({
      ...what,
      executionId: ctx.executionId,
      workspace: snapshot,
      limits,
      packagesVolume: packagesVolume(this.config, ctx.tenant),
    });
    if (outcome.changes) await workspace.apply(outcome.changes);
    const response = toEnvelope(ctx.executionId, outcome, limits);
    logOutcome(this.logger, ctx, outcome, response.success);
    return response;
  }
}
