import type { ExecuteRequest, ExecutionResponse, RunPythonFileRequest, SaveAndExecuteRequest } from '../contract/contract.js';
import { INTERRUPT_GRACE_S, type ContextBox, type Contexts } from '../contexts/context-service.js';
import { badRequest, notFound } from '../errors.js';
import type { DependencyService } from '../packages/dependency-service.js';
import type { SandboxJob, SandboxLimits, SandboxOutcome } from '../sandbox/sandbox.js';
import { requireWorkspacePath } from '../workspace/paths.js';
import type { Workspace } from '../workspace/workspace.js';
import type { WorkspaceStore } from '../workspace/workspace-store.js';
import { workspaceCaps } from '../workspace/tree.js';
import { toEnvelope } from './envelope.js';
import { limitsFor, type RequestedLimits } from './limits.js';
import type { ExecutionContext, RunDeps } from './run-deps.js';

/** The caps of one run, and how many of the tenant's may run at once. */
export interface Budget {
  limits: SandboxLimits;
  maxConcurrent: number;
  /** The tenant has an egress list: its container joins the egress network. */
  egress: boolean;
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

/** How much of a workspace file is read for its PEP 723 block (which belongs at its top). */
const SCRIPT_HEAD_BYTES = 256 * 1024;

/** The start of a workspace file as text, where its script block would be; null when there is no such file. */
async function scriptHead(workspace: Workspace, file: string): Promise<string | null> {
  const opened = await workspace.read(file);
  if (!opened) return null;
  const parts: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of opened.chunks) {
      parts.push(chunk);
      bytes += chunk.length;
      if (bytes >= SCRIPT_HEAD_BYTES) break;
    }
  } finally {
    await opened.close();
  }
  return Buffer.concat(parts).subarray(0, SCRIPT_HEAD_BYTES).toString('utf8');
}

/** What a run does: code, or a workspace file, and maybe a variable to return. */
type Work = Pick<SandboxJob, 'mode' | 'code' | 'file' | 'variable'>;
/** Where a run goes and what it needs, as every run endpoint takes them. */
type RunOptions = Pick<ExecuteRequest, 'context_id' | 'dependencies'>;

/** What a failed call in a context did to the context: kept after an interrupt, or lost. */
function contextNote(outcome: SandboxOutcome, endedWhy: string | null): string {
  if (endedWhy) return `; while it ran: ${endedWhy}`;
  if (outcome.report && !outcome.report.lost) {
    return outcome.timedOut ? '; it was interrupted (KeyboardInterrupt) and the context keeps its state' : '';
  }
  return '; the context is lost with it (its state is gone): later calls to it answer 410';
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
    private readonly contexts: Contexts,
    private readonly dependencies: DependencyService,
  ) {}

  /** The tenant's limits as they are now (a reload later does not change this request's). */
  private budget(ctx: ExecutionContext, requested: RequestedLimits & { context_id?: string }): Budget {
    if (requested.context_id !== undefined && requested.memory_mb !== undefined) {
      throw badRequest('memory_mb cannot be given with context_id: a context keeps the memory cap it was created with (POST /contexts)');
    }
    const tenant = this.deps.registry.get(ctx.tenant);
    return {
      limits: limitsFor(this.deps.config, tenant.limits, requested),
      maxConcurrent: tenant.limits.max_concurrent,
      egress: tenant.limits.egress.length > 0,
    };
  }

  execute(req: ExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const code = requireText(req.code, 'code');
    return this.dispatch({ mode: 'code', code, variable: req.variable_to_return }, this.budget(ctx, req), ctx, req, code);
  }

  async saveAndExecute(req: SaveAndExecuteRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const code = requireText(req.code, 'code');
    const budget = this.budget(ctx, req);
    const workspace = await this.workspaces.for(ctx.tenant);
    const saved = await workspace.save(file, [Buffer.from(code, 'utf8')], req.overwrite ?? true, workspaceCaps(budget.limits));
    if (saved.over) throw badRequest(`Workspace is full: with ${file} it would hold ${saved.over}`);
    return this.dispatch({ mode: 'file', file, variable: req.variable_to_return }, budget, ctx, req, code);
  }

  async runFile(req: RunPythonFileRequest, ctx: ExecutionContext): Promise<ExecutionResponse> {
    const file = requireWorkspacePath(req.file_name);
    const budget = this.budget(ctx, req);
    const workspace = await this.workspaces.for(ctx.tenant);
    const head = await scriptHead(workspace, file);
    if (head === null) throw notFound(`File not found: ${file}`);
    return this.dispatch({ mode: 'file', file, variable: req.variable_to_return }, budget, ctx, req, head);
  }

  /**
   * In a fresh sandbox (with the dependencies the code or the request declares), or in the
   * context named: there with the context's caps and this call's timeout.
   */
  private async dispatch(what: Work, budget: Budget, ctx: ExecutionContext, req: RunOptions, code?: string): Promise<ExecutionResponse> {
    const contextId = req.context_id;
    const declared = await this.dependencies.declared(code, req.dependencies, ctx.tenant);
    if (declared && contextId !== undefined) {
      throw badRequest('Dependencies cannot be declared for a call in a context (context_id): declare them in an execution of its own');
    }
    if (declared) {
      return this.dependencies.withSet(declared, ctx, async (depsVolume) => (await this.run(what, budget, ctx, undefined, depsVolume)).response);
    }
    if (contextId === undefined) return (await this.run(what, budget, ctx)).response;
    const { timeoutS } = budget.limits;
    const { response } = await this.contexts.call(contextId, ctx.tenant, timeoutS, (box, limits, endedWhy) =>
      this.run(what, { ...budget, limits: { ...limits, timeoutS } }, ctx, { box, endedWhy }),
    );
    return response;
  }

  private async run(
    what: Work,
    { limits, maxConcurrent, egress }: Budget,
    ctx: ExecutionContext,
    context?: { box: ContextBox; endedWhy: () => string | null },
    depsVolume?: string,
  ): Promise<{ response: ExecutionResponse; outcome: SandboxOutcome }> {
    const box = context?.box;
    const { sandbox, admission, recorder, logger, volumes, egressGateway } = this.deps;
    const workspace = await this.workspaces.for(ctx.tenant);
    const caps = workspaceCaps(limits);
    const { outcome, refused } = await admission.run(ctx.tenant, maxConcurrent, async () => {
      logger.debug('execution starting', { execution_id: ctx.executionId, endpoint: ctx.endpoint, tenant: ctx.tenant, ...what });
      const door = egress ? await egressGateway.forExecution(ctx.tenant, ctx.executionId, limits.timeoutS) : undefined;
      const staged = await workspace.stage();
      try {
        const job = {
          ...what,
          egress: door,
          executionId: ctx.executionId,
          workspace: await workspace.snapshot(caps),
          changes: staged,
          limits,
          signal: ctx.signal,
          answered: ctx.answered,
          onOutput: ctx.onOutput,
        };
        const result = box
          ? await box.run({ ...job, interruptGraceS: INTERRUPT_GRACE_S })
          : await sandbox.run({ ...job, tenant: ctx.tenant, packagesVolume: volumes.name(ctx.tenant), depsVolume });
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
    if (context && !response.success) response = { ...response, error: `${response.error}${contextNote(outcome, context.endedWhy())}` };
    await recorder.record(ctx, outcome, response);
    return { response, outcome };
  }
}
