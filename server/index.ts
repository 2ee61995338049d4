import path from 'node:path';
import Docker from 'dockerode';
import { createApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { ExecutionService } from './execution/execution-service.js';
import { createLogger } from './logger.js';
import { loadContract, serviceVersion } from './project.js';
import { DockerSandbox } from './sandbox/docker-sandbox.js';
import { Workspace } from './workspace/workspace.js';

/** Start-up only: settings, Docker check, stale-container reaping, listen, graceful shutdown. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`run-python-code: bad setting: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const sandbox = new DockerSandbox(new Docker(), {
    image: config.sandboxImage,
    runtime: config.sandboxRuntime,
    instanceId: config.instanceId,
  }, logger);
  const workspace = await Workspace.open(
    path.join(config.baseDir, 'workspaces', 'default'),
    path.join(config.baseDir, 'staging'),
    { maxBytes: config.workspaceMb * 1024 * 1024, maxFiles: config.maxFiles },
  );
  const executions = new ExecutionService(config, sandbox, workspace, logger);
  const app = createApp({ config, logger, contract: loadContract(), sandbox, executions });

  const health = await sandbox.health();
  if (health.reachable) await sandbox.reapStale();
  if (health.error) logger.warn('sandboxes are not ready; executions will answer 503 until this is fixed', { error: health.error });

  const server = app.listen(config.port, config.host, () => {
    logger.info('listening', { url: `http://${config.host}:${config.port}`, version: serviceVersion, base_dir: config.baseDir });
  });
  server.on('error', (err) => {
    logger.error('cannot listen', { error: err.message });
    process.exit(1);
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down: finishing requests in flight', { signal });
    const force = setTimeout(() => {
      logger.warn('requests still running after 30 s; stopping their containers');
      void sandbox.shutdown(true);
    }, 30_000);
    force.unref();
    server.close(async () => {
      await sandbox.shutdown(false);
      logger.info('stopped');
      process.exit(0);
    });
    server.closeIdleConnections();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  console.error('run-python-code: failed to start:', err);
  process.exit(1);
});
