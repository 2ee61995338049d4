import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import type http from 'node:http';
import { readSettings } from '../config.js';
import { createLogger } from '../logger.js';
import { startProcess } from '../start-up.js';
import { createDockerProxy } from './proxy.js';
import { proxySettings } from './settings.js';

/** `node dist/server/docker-proxy/main.js`: the Docker API proxy docker-compose.yml runs beside the API. */
function main(): void {
  const config = readSettings(proxySettings);
  const logger = createLogger(config.logLevel);
  const server = createDockerProxy({ upstream: config.socket, policy: config, allowedHosts: config.allowedHosts, logger });
  const where = config.listenSocket ? `unix://${config.listenSocket}` : `tcp://${config.host}:${config.port}`;
  server.on('error', (err) => {
    logger.error('docker proxy cannot listen', { url: where, error: err.message });
    process.exit(1);
  });
  server.on('listening', () => {
    if (config.listenSocket) chmodSync(config.listenSocket, 0o660);
    logger.info('docker proxy listening', { url: where, socket: config.socket, sandbox_image: config.sandboxImage, allowed_hosts: config.allowedHosts });
  });
  if (config.listenSocket) listenOnSocket(server, config.listenSocket);
  else server.listen(config.port, config.host);
  // Nothing to finish: the API server stops first (it depends on the proxy) and owns the clean-up.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      logger.info('docker proxy stopping', { signal });
      server.close(); // a unix socket's file goes with it
      process.exit(0);
    });
  }
}

/**
 * Listens on a unix socket only its owner and group may connect to. The socket is made under a
 * umask that leaves it 0660 from the start (chmod afterwards would leave a moment when it is not);
 * a socket file left by an earlier run is replaced, anything else at the path is not.
 */
function listenOnSocket(server: http.Server, socketPath: string): void {
  const existing = lstatSync(socketPath, { throwIfNoEntry: false });
  if (existing && !existing.isSocket()) {
    server.emit('error', new Error(`${socketPath} exists and is not a socket`));
    return;
  }
  if (existing) unlinkSync(socketPath);
  const umask = process.umask(0o117);
  try {
    server.listen(socketPath);
  } finally {
    process.umask(umask);
  }
}

startProcess('run-python-code docker proxy', main);
