import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolResult, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import { v4 as uuidv4 } from 'uuid';
import { z } from 'zod';
import { classify } from '../errors.js';
import type { ExecutionResponse } from '../contract/contract.js';
import type { Contexts } from '../contexts/context-service.js';
import type { ExecutionService } from '../execution/execution-service.js';
import type { ExecutionContext } from '../execution/run-deps.js';
import type { Logger } from '../logger.js';
import type { PackageService } from '../packages/package-service.js';
import { serviceName, serviceVersion } from '../project.js';
import { registerWorkspaceResources, type ResourceServices } from './workspace-resources.js';

export interface McpServices extends ResourceServices {
  executions: ExecutionService;
  contexts: Contexts;
  packages: PackageService;
  logger: Logger;
}

type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/**
 * A call that carries a progressToken hears the output while it runs: each piece as it comes is a
 * progress notification with that text as its `message` (together they are the output so far) and
 * the output's bytes so far as its `progress`.
 */
function progressOf(extra: ToolExtra): ExecutionContext['onOutput'] {
  const progressToken = extra._meta?.progressToken;
  if (progressToken === undefined) return undefined;
  let bytes = 0;
  return (_stream, text) => {
    bytes += Buffer.byteLength(text);
    // A client that has gone misses it; the run's own signal says so.
    extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: bytes, message: text } }).catch(() => undefined);
  };
}

const SANDBOX = [
  'Each call runs in a fresh, short-lived sandbox container: Python 3 with numpy, pandas and matplotlib,',
  'no network, a non-root user, capped memory, CPU, processes, output and time.',
  'The working directory is /workspace; files written there persist to later calls (save_to_file_and_run,',
  'run_python_file). Packages installed with pip_install_package are importable in later calls.',
  'As in a notebook, the value of a last expression comes back too (structured content: `value`; rich',
  'forms and display(obj) calls in `outputs`), and matplotlib figures come back as PNG images.',
].join(' ');

const fileName = z
  .string()
  .min(1)
  .max(255)
  .describe('Path of a file inside the workspace, relative, e.g. "script.py" or "lib/util.py"');
const variable = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
  .describe('Name of a global variable whose str() is returned as the result (instead of stdout)');
const timeout = z
  .number()
  .int()
  .min(1)
  .describe('Wall-clock limit in seconds (default 90; the server caps it)');
const contextId = z
  .string()
  .min(1)
  .max(100)
  .describe('A context from create_context: the code runs in its live interpreter, where variables, imports and objects of earlier calls persist');
const dependencies = z
  .array(z.string().min(1).max(200))
  .max(32)
  .describe('Packages this run needs, each one requirement such as "tinypkg>=1" (or a PEP 723 `# /// script` block in the code); installed once per set and reused');

/**
 * A finished execution as a tool result: the answer (or error with traceback) as text, then the last
 * expression's value, as a notebook shows it (many clients give the model only the content); the
 * figures and other PNG outputs as image blocks; the envelope as structure.
 */
export function toToolResult(envelope: ExecutionResponse): CallToolResult {
  let text: string;
  if (envelope.success) {
    text = [envelope.result, envelope.value].filter(Boolean).join('\n\n');
    if (text === '') text = envelope.stdout === '' ? '(no output)' : envelope.stdout;
  } else {
    text = [envelope.error, envelope.traceback, envelope.traceback ? null : envelope.stderr.trim() || null]
      .filter(Boolean)
      .join('\n\n');
  }
  const images = envelope.outputs
    .filter((o) => o.mime === 'image/png')
    .map((o) => ({ type: 'image' as const, data: o.data, mimeType: o.mime }));
  return {
    content: [{ type: 'text', text }, ...images],
    structuredContent: envelope as unknown as Record<string, unknown>,
    isError: !envelope.success,
  };
}

/**
 * The MCP face of the service: the original server's four tools, calling the same services as
 * the REST routes. Cheap and free of side effects, so /mcp makes one per request and the stdio
 * bin one per process.
 */
export function createMcpServer(services: McpServices, tenant: string): McpServer {
  const server = new McpServer({ name: serviceName, version: serviceVersion });
  // The SDK aborts a tool call's signal when its client cancels it or goes away: the run stops too.
  const call = async (tool: string, extra: ToolExtra, run: (ctx: ExecutionContext) => Promise<ExecutionResponse | CallToolResult>): Promise<CallToolResult> => {
    const ctx: ExecutionContext = { executionId: uuidv4(), endpoint: `mcp:${tool}`, tenant, signal: extra.signal, onOutput: progressOf(extra) };
    try {
      const done = await run(ctx);
      return 'content' in done ? done : toToolResult(done);
    } catch (err) {
      // As on REST (errors.ts): a refusal (bad path, missing file, Docker down) is shown to the agent;
      // a fault of the service is logged in full and answered with a plain message and the id.
      const { kind, message } = classify(err);
      if (kind !== 'internal') return { content: [{ type: 'text', text: message }], isError: true };
      services.logger.error('tool call failed', {
        execution_id: ctx.executionId,
        endpoint: ctx.endpoint,
        tenant,
        error: String((err as Error)?.stack ?? err),
      });
      return { content: [{ type: 'text', text: `${message}: ${ctx.executionId}` }], isError: true };
    }
  };

  server.registerTool(
    'run_python_code',
    {
      title: 'Run Python code',
      description: `Execute Python code and return what it printed (stripped stdout). ${SANDBOX} On failure the result is an error with the exception and its traceback.`,
      inputSchema: {
        code: z.string().min(1).describe('The Python code to execute'),
        timeout: timeout.optional(),
        context_id: contextId.optional(),
        dependencies: dependencies.optional(),
      },
    },
    ({ code, timeout, context_id, dependencies }, extra) =>
      call('run_python_code', extra, (ctx) => services.executions.execute({ code, timeout, context_id, dependencies }, ctx)),
  );

  server.registerTool(
    'save_to_file_and_run',
    {
      title: 'Save Python code to a file and run it',
      description: `Save code to a workspace file, run it, and return the value of variable_to_return (or the stripped stdout). ${SANDBOX}`,
      inputSchema: {
        file_name: fileName,
        code: z.string().describe('Python code to save and run'),
        variable_to_return: variable.optional(),
        overwrite: z.boolean().optional().describe('Overwrite the file if it exists (default true)'),
        context_id: contextId.optional(),
      },
    },
    ({ file_name, code, variable_to_return, overwrite, context_id }, extra) =>
      call('save_to_file_and_run', extra, (ctx) =>
        services.executions.saveAndExecute({ file_name, code, variable_to_return, overwrite: overwrite ?? true, context_id }, ctx),
      ),
  );

  server.registerTool(
    'create_context',
    {
      title: 'Start a context (a Python interpreter kept between calls)',
      description:
        'Start a sandbox whose Python interpreter stays alive: pass its context_id to run_python_code or ' +
        'save_to_file_and_run and variables, imports and objects persist from call to call. It expires after ' +
        'idle_timeout_s without a call (and at the latest after the server\'s context_max_s); a call to a context ' +
        'that ended says why (expired, out of memory, deleted) and never silently starts over. Delete it when done.',
      inputSchema: {
        idle_timeout_s: z.number().int().min(1).optional().describe('Seconds without a call after which it expires (default and cap: the server\'s context_idle_s)'),
        memory_mb: z.number().int().min(32).optional().describe('Its memory cap in MiB (at most the server\'s memory_mb)'),
        cpus: z.number().min(0.01).optional().describe('Its CPU cap in cores (at most the server\'s cpus)'),
      },
    },
    (args, extra) =>
      call('create_context', extra, async (ctx) => {
        const created = await services.contexts.create(args, ctx);
        return {
          content: [{ type: 'text', text: `Context ${created.context_id} is ready: pass context_id "${created.context_id}" to run code in it (it expires at ${created.expires_at} if unused).` }],
          structuredContent: created as unknown as Record<string, unknown>,
        };
      }),
  );

  server.registerTool(
    'delete_context',
    {
      title: 'End a context',
      description: 'End a context from create_context and remove its sandbox; its state is gone.',
      inputSchema: { context_id: contextId },
    },
    ({ context_id }, extra) =>
      call('delete_context', extra, async () => {
        await services.contexts.delete(context_id, tenant);
        return { content: [{ type: 'text', text: `Context ${context_id} was deleted.` }] };
      }),
  );

  server.registerTool(
    'pip_install_package',
    {
      title: 'Install a Python package',
      description:
        'Install one package with pip so later calls can import it. package_name is one requirement: a name, ' +
        'optional [extras] and optional version specifiers, e.g. "requests" or "pandas[excel]>=2,<3". ' +
        'The image already has numpy, pandas and matplotlib.',
      inputSchema: {
        package_name: z.string().min(1).max(200).describe('One requirement, e.g. "requests" or "scipy>=1.11"'),
        upgrade: z.boolean().optional().describe('Upgrade the package if it is already installed (default false)'),
      },
    },
    ({ package_name, upgrade }, extra) =>
      call('pip_install_package', extra, (ctx) => services.packages.install({ package_name, upgrade: upgrade ?? false }, ctx)),
  );

  server.registerTool(
    'run_python_file',
    {
      title: 'Run a Python file from the workspace',
      description: `Run a Python file that exists in the workspace and return the value of variable_to_return (or the stripped stdout). ${SANDBOX}`,
      inputSchema: { file_name: fileName, variable_to_return: variable.optional() },
    },
    ({ file_name, variable_to_return }, extra) =>
      call('run_python_file', extra, (ctx) => services.executions.runFile({ file_name, variable_to_return }, ctx)),
  );

  registerWorkspaceResources(server, services, tenant);
  return server;
}
