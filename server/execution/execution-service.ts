import type { Config } from '../config.js';
import type { ExecuteRequest, ExecutionResponse, RunPythonFileRequest, SaveAndExecuteRequest } from '../contract/contract.js';
import { notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Sandbox, SandboxJob, SandboxLimits } from '../sandbox/sandbox.js';
import { requireWorkspacePath } from '../workspace/paths.js';
import type { WorkspaceStore } from '../workspace/workspace-store.js';
import type { PackagesVolumes } from '../packages/volume.js';
import type { Admission } from '../tenancy/admission.js';
import type { TenantRegistry } from '../tenancy/tenant-registry.js';
import { toEnvelope } from './envelope.js';
import type { Recorder } from './recorder.js';
import { limitsFor, type RequestedLimits } from './limits.js';

/** The caps of one run, and how many of the tenant's may run at once. */
export interface Budget {
  limits: SandboxLimits;
  maxConcurrent: number;
}

export interface ExecutionContext {
  executionId: string;
  endpoint: string;
  /** Whose workspace and packages this request uses. */
  tenant: string;
}

/** What every sandbox-running service needs besides its own parts. */
export interface RunDeps {
  config: Config;
  sandbox: Sandbox;
  registry: TenantRegistry;
  admission: Admission;
  recorder: Recorder;
  logger: Logger;
  /** The names of this deployment's packages volumes. */
  volumes: PackagesVolumes;
}

/**
 * The service behind every execution endpoint (REST and MCP): checks the request against the
 * tenant's limits, waits for a slot, takes the workspace, runs one sandbox, keeps the files it
 * changed, builds the answer and remembers it.
 */
export class ExecutionService {
  constructor(
    private readonly deps: RunDeps,
    private readonly workspaces: WorkspaceStore,
  ) {}

  /** The tenant's limits as they are now (a reload later does not change this request's). */
  private budget(ctx: ExecutionContext, requested: RequestedLimits): Budget {
    const tenant = this.deps.registry.get(ctx.tenant);
    return { limits: limitsFor(this.deps.config, tenant.limits, requested), maxConcurrent: tenant.limits.max_concurrent };
  }

  execute(req: ExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    return this.run({ mode: 'code', code: req.code, variable: req.variable_to_return }, this.budget(ctx, req), ctx);
  }

  async saveAndExecute(req: SaveAndExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const budget = this.budget(ctx, req);
    const workspace = await this.workspaces.for(ctx.tenant);
    await workspace.save(file, Buffer.from(req.code, 'utf8'), req.overwrite ?? true, budget.limits.workspaceMb * 1024 * 1024);
    return this.run({ mode: 'file', file, variable: req.variable_to_return }, budget, ctx);
  }

  async runFile(req: RunPythonFileRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const budget = this.budget(ctx, req);
    const workspace = await this.workspaces.for(ctx.tenant);
    if (!(await workspace.isFile(file))) throw notFound(`File not found: ${file}`);
    return this.run({ mode: 'file', file, variable: req.variable_to_return }, budget, ctx);
  }

  private async run(
    what: Pick<SandboxJob, 'mode' | 'code' | 'file' | 'variable'>,
    { limits, maxConcurrent }: Budget,
    ctx: ExecutionContext,
  ): Promise<ExecutionResponse> {
    const { sandbox, admission, recorder, logger, volumes } = this.deps;
    const workspace = await this.workspaces.for(ctx.tenant);
    const outcome = await admission.run(ctx.tenant, maxConcurrent, async () => {
      logger.debug('execution starting', { execution_id: ctx.executionId, endpoint: ctx.endpoint, tenant: ctx.tenant, ...what });
      const result = await sandbox.run({
        ...what,
        executionId: ctx.executionId,
        workspace: await workspace.snapshot(),
        limits,
        packagesVolume: volumes.name(ctx.tenant),
      });
      if (result.changes) await workspace.apply(result.changes);
      return result;
    });
    const response = toEnvelope(ctx.executionId, outcome, limits);
    recorder.record(ctx, outcome, response);
    return response;
  }
}
