import type express from 'express';
import { createApp } from './app.js';
import type { Config } from './config.js';
import { ExecutionService } from './execution/execution-service.js';
import type { Logger } from './logger.js';
import { PackageService } from './packages/package-service.js';
import { loadContract } from './project.js';
import type { DockerSandboxOptions } from './sandbox/docker-sandbox.js';
import type { Sandbox } from './sandbox/sandbox.js';
import { WorkspaceStore } from './workspace/workspace-store.js';

/** What the Docker sandbox needs from the settings. */
export function sandboxOptions(config: Config): DockerSandboxOptions {
  return { image: config.sandboxImage, runtime: config.sandboxRuntime, instanceId: config.instanceId };
}

/** The services every face of the server (REST, MCP over HTTP, MCP over stdio) calls. */
export function createServices(config: Config, logger: Logger, sandbox: Sandbox) {
  const workspaces = new WorkspaceStore(config.baseDir, {
    maxBytes: config.workspaceMb * 1024 * 1024,
    maxFiles: config.maxFiles,
  });
  return {
    executions: new ExecutionService(config, sandbox, workspaces, logger),
    packages: new PackageService(config, sandbox, logger),
  };
}

/** Wires the service graph behind the HTTP app. */
export async function assemble(config: Config, logger: Logger, sandbox: Sandbox): Promise<express.Express> {
  const services = createServices(config, logger, sandbox);
  return createApp({ config, logger, contract: loadContract(), sandbox, ...services });
}
