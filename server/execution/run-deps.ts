import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { EgressDoors } from '../egress/egress-gateway.js';
import type { PackagesVolumes } from '../packages/volume.js';
import type { OutputSink, Sandbox } from '../sandbox/sandbox.js';
import type { Admission } from '../tenancy/admission.js';
import type { TenantRegistry } from '../tenancy/tenant-registry.js';
import type { Recorder } from './recorder.js';

/** Who asks for a run, and how they follow it. */
export interface ExecutionContext {
  executionId: string;
  endpoint: string;
  /** Whose workspace and packages this request uses. */
  tenant: string;
  /** Aborts when the caller went away: a run waiting for a slot leaves the queue, a running one is stopped. */
  signal?: AbortSignal;
  /** Settles once the answer has been sent (or the caller went away): the sandbox's housekeeping waits for it. */
  answered?: Promise<unknown>;
  /** Gets the code's output while it runs, for callers that stream it (SSE, MCP progress). */
  onOutput?: OutputSink;
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
  egressGateway: EgressDoors;
}
