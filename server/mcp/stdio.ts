#!/usr/bin/env node
import os from 'node:os';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { buildService } from '../build-service.js';
import { ConfigError, loadConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { startProcess } from '../start-up.js';
import { DEFAULT_TENANT } from '../tenancy/tenant-id.js';
import { createMcpServer } from './mcp-server.js';

/** The instance id of the stdio bin with process id `pid` on this host. */
const stdioInstance = (pid: number) => `${os.hostname()}-stdio-${pid}`.slice(0, 64);

/** Whether `instance` is the id of a stdio bin of this host whose process is gone (killed, say). */
function deadStdio(instance: string): boolean {
  const pid = Number(/-stdio-(\d+)$/.exec(instance)?.[1]);
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || stdioInstance(pid) !== instance) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * `mcp-run-python-code`: the MCP tools over stdio, for a local client (Claude Desktop, Cursor).
 * stdout is the protocol, so logs go to stderr. Same settings and sandboxes as the HTTP server.
 */
async function main(): Promise<void> {
  // Its own instance id, so an HTTP server on this host never reaps this process's containers.
  const config = loadConfig({ INSTANCE_ID: stdioInstance(process.pid), ...process.env });
  const logger = createLogger(config.logLevel, 'stderr');
  const service = buildService(config, { logger });
  // Every setting is checked before any container starts.
  let tenant = DEFAULT_TENANT;
  if (service.registry.keysRequired) {
    const found = config.mcpApiKey ? service.registry.authenticate(config.mcpApiKey) : null;
    if (!found) throw new ConfigError('MCP_API_KEY: API keys are configured; set MCP_API_KEY to the key of the tenant to act as');
    tenant = found.id;
  }
  const health = await service.start();
  if (health.error) logger.warn('sandboxes are not ready; tools will report the problem', { error: health.error });
  // Each stdio process has an instance of its own, so no restart would reap a killed one's containers: this does.
  else await service.sandbox.reapOrphans(deadStdio);
  const server = createMcpServer(service, tenant);
  const stop = async () => {
    await server.close();
    await service.stop(true);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  process.stdin.on('close', () => void stop());
  await server.connect(new StdioServerTransport());
}

startProcess('mcp-run-python-code', main);
