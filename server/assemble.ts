import type express from 'express';
import { createApp } from './app.js';
import type { Config } from './config.js';
import { ExecutionService } from './execution/execution-service.js';
import { ExecutionHistory } from './execution/history.js';
import type { Logger } from './logger.js';
import { PackageService } from './packages/package-service.js';
import { loadContract } from './project.js';
import type { DockerSandboxOptions } from './sandbox/docker-sandbox.js';
import type { Sandbox } from './sandbox/sandbox.js';
import { Admission } from './tenancy/admission.js';
import { TenantRegistry } from './tenancy/tenant-registry.js';
import { WorkspaceStore } from './workspace/workspace-store.js';

/** What the Docker sandbox needs from the settings. */
export function sandboxOptions(config: Config): DockerSandboxOptions {
  return { image: config.sandboxImage, runtime: config.sandboxRuntime, instanceId: config.instanceId };
}

export type Services = ReturnType<typeof createServices>;

/**
 * The services every face of the server (REST, MCP over HTTP, MCP over stdio) calls. Throws
 * (naming the file and field) when the tenants or limits file is bad: the server must not start.
 */
export function createServices(config: Config, logger: Logger, sandbox: Sandbox) {
  const registry = new TenantRegistry(config, logger);
  const admission = new Admission({
    globalCap: config.maxConcurrent,
    queueMax: config.queueMax,
    queueTimeoutMs: config.queueTimeoutS * 1000,
  });
  const history = new ExecutionHistory(config.executionRetentionS, config.executionRetentionMb * 1024 * 1024);
  const deps = { config, sandbox, registry, admission, history, logger };
  const workspaces = new WorkspaceStore(config.baseDir, { maxFiles: config.maxFiles });
  return {
    registry,
    admission,
    history,
    executions: new ExecutionService(deps, workspaces),
    packages: new PackageService(deps),
  };
}

/** Wires the service graph behind the HTTP app. */
export function assemble(config: Config, logger: Logger, sandbox: Sandbox): { app: express.Express; services: Services } {
  const services = createServices(config, logger, sandbox);
  return { app: createApp({ config, logger, contract: loadContract(), sandbox, ...services }), services };
}
