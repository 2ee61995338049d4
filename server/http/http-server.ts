import http from 'node:http';
import type { Config } from '../config.js';

/**
 * The API's HTTP server with the listener's own caps: connections at once (MAX_CONNECTIONS; Node
 * closes any past it as it accepts them), and the time to send headers (HEADERS_TIMEOUT_S). The
 * body's deadline is kept by json-body.ts, with an envelope answer; Node's request deadline is only
 * the backstop for bodies the app never reads, so it is the two together.
 */
export function createHttpServer(
  app: http.RequestListener,
  config: Pick<Config, 'maxConnections' | 'headersTimeoutS' | 'bodyTimeoutS'>,
): http.Server {
  const server = http.createServer(
    {
      headersTimeout: config.headersTimeoutS * 1000,
      requestTimeout: (config.headersTimeoutS + config.bodyTimeoutS) * 1000,
      connectionsCheckingInterval: 1000, // Node's default (30 s) would stretch the timeouts by as much
    },
    app,
  );
  server.maxConnections = config.maxConnections;
  return server;
}
