import type { Config } from './config.js';
import type { Backend } from './distributed/backend.js';
import { ContextService } from './contexts/context-service.js';
import { ExecutionService } from './execution/execution-service.js';
import type { RunDeps } from './execution/run-deps.js';
import { HealthService } from './execution/health-service.js';
import { ExecutionHistory } from './execution/history.js';
import { limitsFor } from './execution/limits.js';
import { Recorder } from './execution/recorder.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { DependencyService } from './packages/dependency-service.js';
import { PackageService } from './packages/package-service.js';
import { deploymentId, PackagesVolumes } from './packages/volume.js';
import { dockerClient } from './sandbox/docker-client.js';
import { DockerRuntime } from './sandbox/docker-runtime.js';
import { DockerSandbox } from './sandbox/docker-sandbox.js';
import { EgressGateway } from './egress/egress-gateway.js';
import type { ContainerRuntime } from './sandbox/runtime.js';
import type { SandboxHealth } from './sandbox/sandbox.js';
import { Admission } from './tenancy/admission.js';
import { TenantRegistry } from './tenancy/tenant-registry.js';
import { FileService } from './workspace/file-service.js';
import { DiskWorkspaceStore } from './workspace/disk-workspace-store.js';
import { workspaceCaps } from './workspace/tree.js';

export interface BuildOptions {
  logger: Logger;
  metrics?: Metrics;
  /** The container engine; unless given, the Docker engine that DOCKER_HOST names. */
  engine?: ContainerRuntime;
  /**
   * A distributed node's parts (REDIS_URL and DATABASE_URL): on an API node, the queue to the
   * workers in place of the sandbox driver, PostgreSQL in place of the in-memory history and of
   * the workspaces on disk; on both, the deployment id kept in PostgreSQL. Absent: the embedded
   * server, exactly as it was.
   */
  backend?: Backend;
}

export type Service = ReturnType<typeof buildService>;

/**
 * The one place the service graph is built: the HTTP server, the stdio MCP bin and the tests all
 * call it, and every face (REST routes, MCP) gets its services from here. Building has no side
 * effects beyond reading the tenants and limits files (a bad one throws, naming the file and field:
 * the server must not start) and the deployment id in BASE_DIR (made the first time); nothing
 * touches the engine until `start()`.
 */
export function buildService(config: Config, { logger, metrics, engine = new DockerRuntime(dockerClient()), backend }: BuildOptions) {
  const volumes = new PackagesVolumes(config.packagesVolumePrefix, backend?.deployment ?? deploymentId(config));
  const sandbox = backend?.sandbox ?? new DockerSandbox(
    engine,
    { image: config.sandboxImage, instanceId: config.instanceId, volumeLabels: volumes.labels, preload: config.preloadModules },
    logger,
    { size: config.poolSize, maxProfiles: config.poolProfiles },
    metrics,
  );
  const registry = new TenantRegistry(config, logger);
  const admission = new Admission({
    // An API node's runs wait on the workers' slots (and QUEUE_MAX bounds the queue there), not on this process.
    globalCap: backend?.sandbox ? Number.MAX_SAFE_INTEGER : config.maxConcurrent,
    queueMax: config.queueMax,
    queueTimeoutMs: config.queueTimeoutS * 1000,
    onWait: (seconds) => metrics?.slotWait.observe(seconds),
    perMinute: (tenant) => registry.get(tenant).limits.requests_per_minute,
    shared: backend?.limits,
  });
  metrics?.watch({ poolSize: () => sandbox.ready(), inFlight: () => admission.inFlight, queued: () => admission.queued });
  const history = backend?.history ?? new ExecutionHistory(config.executionRetentionS, config.executionRetentionMb * 1024 * 1024);
  const egressGateway = backend?.egress ?? new EgressGateway({
    config,
    engine,
    logger,
    metrics,
    limitsOf: (tenant) => {
      const limits = registry.find(tenant)?.limits;
      return limits ? { egress: limits.egress, egressBytes: limits.egress_bytes } : null;
    },
  });
  const deps: RunDeps = { config, sandbox, registry, admission, recorder: new Recorder(logger, history, metrics), logger, volumes, egressGateway };
  const workspaces = backend?.workspaces ?? new DiskWorkspaceStore(config.baseDir);
  const contexts = backend?.contexts?.(deps) ?? new ContextService(deps, volumes.deployment, backend?.contextObserver);
  const packages = new PackageService(deps);
  return {
    config,
    logger,
    metrics,
    sandbox,
    registry,
    admission,
    history,
    health: new HealthService(config, sandbox, backend),
    executions: new ExecutionService(deps, workspaces, contexts, new DependencyService(deps, packages)),
    contexts,
    files: new FileService(workspaces, {
      capsOf: (tenant) => workspaceCaps(limitsFor(config, registry.get(tenant).limits)),
      uploadRetryS: config.headersTimeoutS + config.bodyTimeoutS,
    }),
    packages,
    volumes,

    /**
     * Goes live: empties the staging area, removes the containers a crashed predecessor of this instance left, warms the
     * pool for the tenants known now (others warm on their first request), and watches the
     * tenants and limits files. Resolves to the engine's health, which the caller reports.
     */
    async start(): Promise<SandboxHealth> {
      await workspaces.clearStaging(); // before any run stages a file
      const health = await sandbox.health();
      if (health.reachable) await sandbox.reapStale(); // before the pool starts filling
      for (const tenant of registry.all().slice(0, config.poolProfiles)) {
        // An egress tenant's executions join the egress network (made now): warm containers without it would go unused.
        const egressNetwork = tenant.limits.egress.length > 0 ? await egressGateway.network().catch(() => null) : undefined;
        if (egressNetwork === null) continue; // the door did not open: its first execution says why
        sandbox.warm({ limits: limitsFor(config, tenant.limits), packagesVolume: volumes.name(tenant.id), egressNetwork });
      }
      registry.watch();
      return health;
    },

    /** Stops watching and refilling, and waits for removals; `force` kills runs still in flight. */
    async stop(force: boolean): Promise<void> {
      registry.close();
      contexts.close();
      await sandbox.shutdown(force);
      await egressGateway.close();
      await backend?.close();
    },
  };
}
