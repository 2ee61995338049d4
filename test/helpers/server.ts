import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Docker from 'dockerode';
import { createApp } from '../../server/app.js';
import { buildService, type Service } from '../../server/build-service.js';
import { loadConfig, type Config } from '../../server/config.js';
import { createHttpServer } from '../../server/http/http-server.js';
import { createLogger } from '../../server/logger.js';
import { Metrics } from '../../server/metrics.js';
import { DockerRuntime } from '../../server/sandbox/docker-runtime.js';
import type { DockerSandbox } from '../../server/sandbox/docker-sandbox.js';

export const docker = new Docker();

/** The containers of one server instance (by its label). */
export function containersOf(instance: string): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`run-python-code.instance=${instance}`] } });
}

/** Removes the package volumes a test server made (their names start with `prefix`). */
export async function removeVolumes(prefix: string): Promise<void> {
  const volumes = (await docker.listVolumes()).Volumes ?? [];
  await Promise.all(volumes.filter((v) => v.Name.startsWith(prefix)).map((v) => docker.getVolume(v.Name).remove()));
}

export interface TestServer {
  url: string;
  config: Config;
  sandbox: DockerSandbox;
  services: Service;
  /** How many jobs the sandbox was asked to run. */
  runs(): number;
  post(route: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  get(route: string): Promise<{ status: number; body: Record<string, unknown>; text: string; headers: Headers }>;
  /** Waits for background removals; resolves to the containers of this server still present. */
  settle(): Promise<Docker.ContainerInfo[]>;
  /** Stops the server and removes its packages volumes and the BASE_DIR it made, unless they are kept (for a restart on the same BASE_DIR). */
  close(options?: { keepVolumes?: boolean }): Promise<void>;
}

/** The real app on an ephemeral loopback port, with the real Docker engine behind it. */
export async function startServer(env: Record<string, string> = {}, engine: Docker = docker): Promise<TestServer> {
  const instanceId = `test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const config = loadConfig({
    ...process.env,
    // Made only when the test gives none: close() removes only the one made here.
    BASE_DIR: env.BASE_DIR ?? mkdtempSync(path.join(os.tmpdir(), 'rpc-test-')),
    INSTANCE_ID: instanceId,
    PACKAGES_VOLUME_PREFIX: `rpc-${instanceId}-`,
    EGRESS_NETWORK: `rpc-egress-${instanceId}`,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'error',
    PORT: '0',
    POOL_SIZE: '0',
    ...env,
  });
  const logger = createLogger(config.logLevel);
  const metrics = new Metrics();
  const services = buildService(config, { logger, metrics, engine: new DockerRuntime(engine) });
  const sandbox = services.sandbox as DockerSandbox; // the embedded server: no backend given
  let runs = 0;
  const run = sandbox.run.bind(sandbox);
  sandbox.run = (job) => {
    runs += 1;
    return run(job);
  };
  await services.start();
  const server = createHttpServer(createApp(services), config).listen(config.port, '127.0.0.1'); // 0 (any free port) unless the test names one
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const settle = async () => {
    await sandbox.shutdown(false);
    return containersOf(config.instanceId);
  };
  return {
    url,
    config,
    sandbox,
    services,
    runs: () => runs,
    async post(route, body) {
      const res = await fetch(url + route, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    async get(route) {
      const res = await fetch(url + route);
      const text = await res.text();
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // not JSON (docs pages)
      }
      return { status: res.status, body, text, headers: res.headers };
    },
    settle,
    async close({ keepVolumes = false } = {}) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await services.stop(false);
      await settle();
      if (!keepVolumes) await removeVolumes(config.packagesVolumePrefix);
      if (!keepVolumes && env.BASE_DIR === undefined) rmSync(config.baseDir, { recursive: true, force: true });
    },
  };
}
