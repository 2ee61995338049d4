import path from 'node:path';
import type express from 'express';
import { createApp } from './app.js';
import type { Config } from './config.js';
import { ExecutionService } from './execution/execution-service.js';
import type { Logger } from './logger.js';
import { PackageService } from './packages/package-service.js';
import { loadContract } from './project.js';
import type { DockerSandboxOptions } from './sandbox/docker-sandbox.js';
import type { Sandbox } from './sandbox/sandbox.js';
import { Workspace } from './workspace/workspace.js';

/** What the Docker sandbox needs from the settings. */
export function sandboxOptions(config: Config): DockerSandboxOptions {
  return { image: config.sandboxImage, runtime: config.sandboxRuntime, instanceId: config.instanceId };
}

/** Wires the service graph behind the HTTP app: workspace -> execution service -> app. */
export async function assemble(config: Config, logger: Logger, sandbox: Sandbox): Promise<express.Express> {
  const workspace = await Workspace.open(
    path.join(config.baseDir, 'workspaces', 'default'),
    path.join(config.baseDir, 'staging'),
    { maxBytes: config.workspaceMb * 1024 * 1024, maxFiles: config.maxFiles },
  );
  const executions = new ExecutionService(config, sandbox, workspace, logger);
  const packages = new PackageService(config, sandbox, logger);
  return createApp({ config, logger, contract: loadContract(), sandbox, executions, packages });
}
