import { createApp, createMetricsApp } from './app.js';
import { buildService } from './build-service.js';
import { loadConfig, type Config } from './config.js';
import { apiBackend } from './distributed/backend.js';
import { LOOPBACK_HOSTS, originsInForce } from './host-origin.js';
import { createHttpServer } from './http/http-server.js';
import { createLogger, type Logger } from './logger.js';
import { Metrics } from './metrics.js';
import { serviceVersion } from './project.js';
import { startProcess } from './start-up.js';

/** Start-up only: settings, Docker check, stale-container reaping, listen, graceful shutdown. */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const metrics = new Metrics();
  // With REDIS_URL and DATABASE_URL this is an API node: runs go to the workers through the queue.
  const backend = config.redisUrl ? await apiBackend(config, logger) : undefined;
  const service = buildService(config, { logger, metrics, backend });
  const health = await service.start();
  process.on('SIGHUP', () => service.registry.reload('SIGHUP'));
  const app = createApp(service);

  if (!service.registry.keysRequired) {
    logger.warn('no API keys configured (API_KEYS or TENANTS_FILE): every caller is the one default tenant; set keys before exposing this server', { host: config.host });
  }
  logAcceptedHosts(config, service.registry.keysRequired, logger);
  if (health.error) logger.warn('sandboxes are not ready; executions will answer 503 until this is fixed', { error: health.error });

  const server = createHttpServer(app, config).listen(config.port, config.host, () => {
    logger.info('listening', { url: `http://${config.host}:${config.port}`, version: serviceVersion, base_dir: config.baseDir });
  });
  server.on('error', (err) => {
    logger.error('cannot listen', { error: err.message });
    process.exit(1);
  });
  const metricsServer =
    config.metricsPort > 0
      ? createMetricsApp({ config, logger, registry: service.registry, metrics }).listen(config.metricsPort, config.host, () => {
          logger.info('metrics listening', { url: `http://${config.host}:${config.metricsPort}/metrics` });
        })
      : null;

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down: finishing requests in flight', { signal });
    const force = setTimeout(() => {
      logger.warn('requests still running after 30 s; stopping their containers');
      void service.stop(true);
    }, 30_000);
    force.unref();
    metricsServer?.close();
    server.close(async () => {
      await service.stop(false);
      logger.info('stopped');
      process.exit(0);
    });
    // Connections that go idle as their last request finishes are closed too, not left to time out.
    server.closeIdleConnections();
    setInterval(() => server.closeIdleConnections(), 100).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** Which Host names and Origins the server answers, and a warning where that lets web pages in. */
function logAcceptedHosts(config: Config, keysRequired: boolean, logger: Logger): void {
  const hosts = config.allowedHosts.includes('*') ? ['*'] : [...LOOPBACK_HOSTS, ...config.allowedHosts];
  const listed = originsInForce(config.corsOrigins, keysRequired);
  const origins = listed.includes('*') ? ['*'] : ['loopback', 'its own', ...listed];
  logger.info('answering these Host names (ALLOWED_HOSTS) and pages of these origins (CORS_ORIGINS)', { hosts, origins });
  if (!keysRequired && hosts.includes('*')) {
    logger.warn('ALLOWED_HOSTS=* without API keys: any web page a user of this machine opens can run code here through DNS rebinding');
  }
  if (!keysRequired && origins.includes('*')) {
    logger.warn('CORS_ORIGINS=* without API keys: any web page a user of this machine opens can run code here');
  }
  if (!/^(127\.|localhost$|::1$)/.test(config.host) && config.allowedHosts.length === 0) {
    logger.info('HOST listens beyond loopback: clients that use another name or address than a loopback one need it in ALLOWED_HOSTS', { host: config.host });
  }
}

startProcess('run-python-code', main);
