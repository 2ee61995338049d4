import { ConfigError, readSettings } from '../config.js';
import { createLogger } from '../logger.js';
import { createDockerProxy } from './proxy.js';
import { proxySettings } from './settings.js';

/** `node dist/server/docker-proxy/main.js`: the Docker API proxy docker-compose.yml runs beside the API. */
function main(): void {
  let config;
  try {
    config = readSettings(proxySettings);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`run-python-code docker proxy: bad setting: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const server = createDockerProxy({ upstream: config.socket, policy: config, logger });
  server.listen(config.port, config.host, () => {
    logger.info('docker proxy listening', { url: `tcp://${config.host}:${config.port}`, socket: config.socket, sandbox_image: config.sandboxImage });
  });
  server.on('error', (err) => {
    logger.error('docker proxy cannot listen', { error: err.message });
    process.exit(1);
  });
  // Nothing to finish: the API server stops first (it depends on the proxy) and owns the clean-up.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      logger.info('docker proxy stopping', { signal });
      process.exit(0);
    });
  }
}

main();
