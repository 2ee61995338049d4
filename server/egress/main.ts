import { ConfigError, loadConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { startProcess } from '../start-up.js';
import { TenantRegistry } from '../tenancy/tenant-registry.js';
import { Credentials } from './credential.js';
import { listen } from './egress-gateway.js';
import { createEgressProxy } from './egress-proxy.js';

/**
 * `node dist/server/egress/main.js`: the egress proxy as a process of its own (docker-compose.yml's
 * egress-proxy service), listening on EGRESS_PROXY_ADDRESS, the egress network's gateway. It
 * reads the same settings and tenants and limits files as the server (reloaded on SIGHUP and on
 * change), and checks the credentials the server signs with EGRESS_SECRET.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  if (!config.egressProxyAddress) throw new ConfigError('EGRESS_PROXY_ADDRESS: the address to listen on, on the egress network, is required');
  const logger = createLogger(config.logLevel);
  const registry = new TenantRegistry(config, logger);
  registry.watch();
  const server = createEgressProxy({
    credentials: new Credentials(Buffer.from(config.egressSecret)),
    limitsOf: (tenant) => {
      const limits = registry.find(tenant)?.limits;
      return limits ? { egress: limits.egress, egressBytes: limits.egress_bytes } : null;
    },
    ports: config.egressPorts,
    pinned: config.egressResolve,
    logger,
  });
  // The address is the egress network's gateway, there once the network is: tries for a minute.
  for (let attempt = 1; ; attempt++) {
    try {
      await listen(server, config.egressProxyAddress, config.egressProxyPort, 'is EGRESS_PROXY_ADDRESS the egress network\'s gateway on this host?');
      break;
    } catch (err) {
      if (attempt === 60) {
        logger.error('egress proxy cannot listen', { error: (err as Error).message });
        process.exit(1);
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  logger.info('egress proxy listening', { address: config.egressProxyAddress, port: config.egressProxyPort });
  process.on('SIGHUP', () => registry.reload('SIGHUP'));
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      logger.info('egress proxy stopping', { signal });
      registry.close();
      server.closeAllConnections();
      server.close(() => process.exit(0));
    });
  }
}

startProcess('run-python-code egress proxy', main);
