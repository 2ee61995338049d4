import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import type { Config } from '../config.js';
import { ServiceError, unavailable } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { INSTANCE_LABEL, LABEL } from '../sandbox/container-spec.js';
import type { ContainerRuntime } from '../sandbox/runtime.js';
import { Credentials } from './credential.js';
import { createEgressProxy, type EgressLimits } from './egress-proxy.js';

export interface EgressGatewayDeps {
  config: Config;
  engine: Pick<ContainerRuntime, 'ensureInternalNetwork' | 'removeNetwork'>;
  limitsOf(tenant: string): EgressLimits | null;
  logger: Logger;
  metrics?: Metrics;
}

/** Past the execution's own timeout, how long its credential stays good (a run also waits for its container). */
const GRACE_MS = 60_000;

/**
 * The door of the egress network, made when first needed (at start, for a known egress tenant's
 * warm containers): the internal Docker network (EGRESS_NETWORK, no route out) and the egress
 * proxy listening on its gateway address
 * only, the host's end of that network, so that nothing else reaches the proxy and the sandboxes
 * reach nothing else. Each execution gets a credential of its own, good until a minute past its
 * timeout, in the proxy URL its code is handed.
 */
/** What a run asks of the egress side: its door, and a close at shutdown. */
export interface EgressDoors {
  forExecution(tenant: string, executionId: string, timeoutS: number): Promise<{ network: string; proxy: string }>;
  /** The network to join, made (with its proxy) when first needed: a context's container joins it for its life, warm containers wait on it. */
  network(): Promise<string>;
  close(): Promise<void>;
}

export class EgressGateway implements EgressDoors {
  private readonly credentials: Credentials;
  private opening: Promise<{ address: string; created: boolean; server: http.Server | null }> | null = null;

  constructor(private readonly deps: EgressGatewayDeps) {
    this.credentials = new Credentials(deps.config.egressSecret ? Buffer.from(deps.config.egressSecret) : randomBytes(32));
  }

  /** The network to join and the proxy URL (with a credential naming this execution) for one execution. */
  async forExecution(tenant: string, executionId: string, timeoutS: number): Promise<{ network: string; proxy: string }> {
    const { address } = await this.open();
    const { username, password } = this.credentials.issue({ tenant, executionId, expiresAt: Date.now() + timeoutS * 1000 + GRACE_MS });
    return {
      network: this.deps.config.egressNetwork,
      proxy: `http://${encodeURIComponent(username)}:${encodeURIComponent(password)}@${address}:${this.deps.config.egressProxyPort}`,
    };
  }

  async network(): Promise<string> {
    await this.open();
    return this.deps.config.egressNetwork;
  }

  private open() {
    this.opening ??= this.start().catch((err: Error) => {
      this.opening = null; // the next execution tries again
      throw err instanceof ServiceError ? err : unavailable(`The egress proxy could not start: ${err.message}`);
    });
    return this.opening;
  }

  private async start() {
    const { config, engine, logger, metrics } = this.deps;
    const labels = { [LABEL]: '1', [INSTANCE_LABEL]: config.instanceId };
    const { gateway, created } = await engine.ensureInternalNetwork(config.egressNetwork, labels);
    // A separate proxy (docker-compose's egress-proxy) already listens on its own address there.
    if (config.egressProxyAddress) return { address: config.egressProxyAddress, created, server: null };
    const server = createEgressProxy({
      credentials: this.credentials,
      limitsOf: this.deps.limitsOf,
      ports: config.egressPorts,
      pinned: config.egressResolve,
      logger,
      metrics,
    });
    await listen(server, gateway, config.egressProxyPort, `is another server using EGRESS_NETWORK ${config.egressNetwork}?`);
    logger.info('egress proxy listening', { address: gateway, port: config.egressProxyPort, network: config.egressNetwork });
    return { address: gateway, created, server };
  }

  /** Stops the proxy and removes the network if this server made it (its sandboxes are gone by then). */
  async close(): Promise<void> {
    const opened = await this.opening?.catch(() => null);
    this.opening = null;
    if (!opened) return;
    const { server } = opened;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    if (opened.created) await this.deps.engine.removeNetwork(this.deps.config.egressNetwork).catch(() => undefined);
  }
}

/** Listens, or rejects with the address and a hint. */
export function listen(server: http.Server, address: string, port: number, hint: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${address}:${port} (${err.code ?? err.message}): ${hint}`)));
    server.listen(port, address, () => resolve());
  });
}
