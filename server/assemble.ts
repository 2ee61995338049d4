import type express from 'express';
import { createApp } from './app.js';
import type { Config } from './config.js';
import { ExecutionService } from './execution/execution-service.js';
import { ExecutionHistory } from './execution/history.js';
import { limitsFor } from './execution/limits.js';
import { Recorder } from './execution/recorder.js';
import type { Metrics } from './metrics.js';
import { packagesVolume } from './packages/volume.js';
import type { Logger } from './logger.js';
import { PackageService } from './packages/package-service.js';
import { loadContract } from './project.js';
import type { DockerSandboxOptions, PoolOptions } from './sandbox/docker-sandbox.js';
import type { Sandbox } from './sandbox/sandbox.js';
import { Admission } from './tenancy/admission.js';
import { TenantRegistry } from './tenancy/tenant-registry.js';
import { WorkspaceStore } from './workspace/workspace-store.js';

/** What the Docker sandbox needs from the settings. */
export function sandboxOptions(config: Config): DockerSandboxOptions {
  return { image: config.sandboxImage, runtime: config.sandboxRuntime, instanceId: config.instanceId };
}

export function poolOptions(config: Config): PoolOptions {
  return { size: config.poolSize, maxProfiles: config.poolProfiles };
}

export type Services = ReturnType<typeof createServices>;

/**
 * The services every face of the server (REST, MCP over HTTP, MCP over stdio) calls. Throws
 * (naming the file and field) when the tenants or limits file is bad: the server must not start.
 */
export function createServices(config: Config, logger: Logger, sandbox: Sandbox, metrics?: Metrics) {
  const registry = new TenantRegistry(config, logger);
  const admission = new Admission({
    globalCap: config.maxConcurrent,
    queueMax: config.queueMax,
    queueTimeoutMs: config.queueTimeoutS * 1000,
    onWait: (seconds) => metrics?.slotWait.observe(seconds),
    perMinute: (tenant) => registry.get(tenant).limits.requests_per_minute,
  });
  metrics?.watch({ poolSize: () => sandbox.ready(), inFlight: () => admission.inFlight, queued: () => admission.queued });
  const history = new ExecutionHistory(config.executionRetentionS, config.executionRetentionMb * 1024 * 1024);
  const recorder = new Recorder(logger, history, metrics);
  const deps = { config, sandbox, registry, admission, recorder, logger };
  const workspaces = new WorkspaceStore(config.baseDir, { maxFiles: config.maxFiles });
  // Warm the pool for the tenants known now (others warm on their first request).
  for (const tenant of registry.all().slice(0, config.poolProfiles)) {
    sandbox.warm({ limits: limitsFor(config, tenant.limits), packagesVolume: packagesVolume(config, tenant.id) });
  }
  return {
    registry,
    admission,
    history,
    metrics,
    executions: new ExecutionService(deps, workspaces),
    packages: new PackageService(deps),
  };
}

/** Wires the service graph behind the HTTP app. */
export function assemble(
  config: Config,
  logger: Logger,
  sandbox: Sandbox,
  metrics?: Metrics,
): { app: express.Express; services: Services } {
  const services = createServices(config, logger, sandbox, metrics);
  return { app: createApp({ config, logger, contract: loadContract(), sandbox, ...services }), services };
}
