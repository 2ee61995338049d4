import type { Config } from '../config.js';
import type { ExecuteRequest, ExecutionResponse, RunPythonFileRequest, SaveAndExecuteRequest } from '../contract/contract.js';
import { badRequest, notFound } from '../errors.js';
import type { Logger } from '../logger.js';
import type { OutputSink, Sandbox, SandboxJob, SandboxLimits } from '../sandbox/sandbox.js';
import { requireWorkspacePath } from '../workspace/paths.js';
import type { WorkspaceStore } from '../workspace/workspace-store.js';
import { workspaceCaps } from '../workspace/tree.js';
import type { PackagesVolumes } from '../packages/volume.js';
import type { EgressGateway } from '../egress/egress-gateway.js';
import type { Admission } from '../tenancy/admission.js';
import type { TenantRegistry } from '../tenancy/tenant-registry.js';
import { toEnvelope } from './envelope.js';
import type { Recorder } from './recorder.js';
import { limitsFor, type RequestedLimits } from './limits.js';

/** The caps of one run, and how many of the tenant's may run at once. */
export interface Budget {
  limits: SandboxLimits;
  maxConcurrent: number;
  /** The tenant has an egress list: its container joins the egress network. */
  egress: boolean;
}

export interface ExecutionContext {
  executionId: string;
  endpoint: string;
  /** Whose workspace and packages this request uses. */
  tenant: string;
  /** Aborts when the caller went away: a run waiting for a slot leaves the queue, a running one is stopped. */
  signal?: AbortSignal;
  /** Gets the code's output while it runs, for callers that stream it (SSE, MCP progress). */
  onOutput?: OutputSink;
}

/**
 * `code` as Unicode text: a lone UTF-16 surrogate (JSON allows `"\ud800"`) has no UTF-8 form, so
 * Python could not even read the source. Refused with the field and where, never run as garbage.
 */
function requireText(value: string, field: string): string {
  const at = value.search(/\p{Cs}/u);
  if (at >= 0) {
    throw badRequest(
      `Invalid ${field}: it contains a lone UTF-16 surrogate (\\u${value.charCodeAt(at).toString(16)} at character ${at}), ` +
        'which is not Unicode text; send it as UTF-8, with \\u escapes only in surrogate pairs',
    );
  }
  return value;
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
  /** The egress network and proxy, for tenants with an egress list. */
  egressGateway: EgressGateway;
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
    return {
      limits: limitsFor(this.deps.config, tenant.limits, requested),
      maxConcurrent: tenant.limits.max_concurrent,
      egress: tenant.limits.egress.length > 0,
    };
  }

  execute(req: ExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const code = requireText(req.code, 'code');
    return this.run({ mode: 'code', code, variable: req.variable_to_return }, this.budget(ctx, req), ctx);
  }

  async saveAndExecute(req: SaveAndExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const code = requireText(req.code, 'code');
    const budget = this.budget(ctx, req);
    const workspace = await this.workspaces.for(ctx.tenant);
    const saved = await workspace.save(file, [Buffer.from(code, 'utf8')], req.overwrite ?? true, workspaceCaps(budget.limits));
    if (saved.over) throw badRequest(`Workspace is full: with ${file} it would hold ${saved.over}`);
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
    { limits, maxConcurrent, egress }: Budget,
    ctx: ExecutionContext,
  ): Promise<ExecutionResponse> {
    const { sandbox, admission, recorder, logger, volumes, egressGateway } = this.deps;
    const workspace = await this.workspaces.for(ctx.tenant);
    const caps = workspaceCaps(limits);
    const { outcome, refused } = await admission.run(ctx.tenant, maxConcurrent, async () => {
      logger.debug('execution starting', { execution_id: ctx.executionId, endpoint: ctx.endpoint, tenant: ctx.tenant, ...what });
      const door = egress ? await egressGateway.forExecution(ctx.tenant, ctx.executionId, limits.timeoutS) : undefined;
      const staged = await workspace.stage();
      try {
        const result = await sandbox.run({
          ...what,
          egress: door,
          executionId: ctx.executionId,
          workspace: await workspace.snapshot(caps),
          changes: staged,
          limits,
          packagesVolume: volumes.name(ctx.tenant),
          signal: ctx.signal,
          onOutput: ctx.onOutput,
        });
        return { outcome: result, refused: result.changes ? await workspace.merge(staged, result.changes, caps) : null };
      } finally {
        await staged.discard();
      }
    }, ctx.signal);
    let response = toEnvelope(ctx.executionId, outcome, limits);
    if (refused) {
      // Other runs of this tenant merged first: the caps hold for the sum, and this run's files are the ones left out.
      const why = `the files it changed were not kept, as the workspace would then hold ${refused}; it keeps its earlier state`;
      response = { ...response, success: false, result: null, error: response.success ? `The code ran, but ${why}` : `${response.error}; and ${why}` };
    }
    recorder.record(ctx, outcome, response);
    return response;
  }
}
