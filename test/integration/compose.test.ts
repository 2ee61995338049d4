import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, it, type TestContext } from 'node:test';
import { createHash } from 'node:crypto';
import type Docker from 'dockerode';
import { loadConfig } from '../../server/config.js';
import { projectRoot } from '../../server/project.js';
import { containersOf, docker, removeVolumes } from '../helpers/server.js';
import { READ_MEMORY_CAP } from '../helpers/snippets.js';
import { until } from '../helpers/until.js';

const exec = promisify(execFile);
const run = (file: string, args: string[], env: NodeJS.ProcessEnv = process.env) =>
  exec(file, args, { cwd: projectRoot, env, maxBuffer: 64 * 1024 * 1024 });

/** `docker compose` (v2) when the plugin is there, else `docker-compose` (v1); null when neither. */
async function composeCommand(): Promise<string[] | null> {
  for (const command of [['docker', 'compose'], ['docker-compose']]) {
    try {
      await run(command[0]!, [...command.slice(1), 'version']);
      return command;
    } catch {
      // try the next
    }
  }
  return null;
}

/** Whether this engine can build an image at all (a rootless or remote engine may not). */
async function canBuild(): Promise<string | null> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-canbuild-'));
  writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\nLABEL run-python-code.canbuild=1\n');
  try {
    await run('docker', ['build', '-q', '-t', 'rpc-test-canbuild:latest', dir]);
    await run('docker', ['rmi', 'rpc-test-canbuild:latest']);
    return null;
  } catch (err) {
    return (err as { stderr?: string }).stderr?.trim() || String(err);
  }
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const KEY = 'compose-test-key';
const MiB = 1024 * 1024;

describe('docker-compose: the API, its Docker proxy and the sandbox image, built here from local bases', () => {
  it('builds, comes up healthy, runs the seed example in capped sandboxes, and goes away without a trace', { timeout: 20 * 60_000 }, async (t: TestContext) => {
    const cannotBuild = await canBuild();
    if (cannotBuild) {
      t.skip(`this Docker engine cannot build images, so the compose images cannot be made here: ${cannotBuild}`);
      return;
    }
    const compose = await composeCommand();
    assert.ok(compose, 'neither `docker compose` nor `docker-compose` is installed: apt-get install docker-compose (npm test does it as root)');

    // Local bases: a Node.js image from Debian's packages (or the public one when it can be pulled),
    // and the sandbox base the host's own sandbox image was built from.
    const nodeImage = (await run('bash', ['test/helpers/local-bases.sh'])).stdout.trim();
    const hostSandbox = await docker.getImage(loadConfig({ ...process.env, BASE_DIR: os.tmpdir() }).sandboxImage).inspect();
    const labels = hostSandbox.Config?.Labels ?? {};
    assert.ok(labels['run-python-code.base'], 'the host sandbox image does not name its base: rebuild it with npm run sandbox:build');

    const project = `rpctestcompose${process.pid}`;
    const instance = `test-compose-${process.pid}`;
    const volumePrefix = `rpc-test-compose-${process.pid}-`;
    const configDir = mkdtempSync(path.join(os.tmpdir(), 'rpc-compose-config-'));
    chmodSync(configDir, 0o755); // read by the API's own user
    writeFileSync(path.join(configDir, 'tenants.yaml'), `tenants:\n  acme:\n    keys: ["${createHash('sha256').update(KEY).digest('hex')}"]\n`, { mode: 0o644 });
    writeFileSync(path.join(configDir, 'limits.yaml'), 'tenants:\n  acme:\n    memory_mb: 160\n    cpus: 0.5\n    pids: 48\n', { mode: 0o644 });
    const port = await freePort();
    const env = {
      ...process.env,
      COMPOSE_PROJECT_NAME: project,
      NODE_IMAGE: nodeImage,
      SANDBOX_BASE_IMAGE: labels['run-python-code.base'],
      SANDBOX_INSTALL_PYPI_LIBS: labels['run-python-code.pypi'] ?? '0',
      API_IMAGE: 'rpc-test-compose-api:latest',
      SANDBOX_IMAGE: 'rpc-test-compose-sandbox:latest',
      INSTANCE_ID: instance,
      PACKAGES_VOLUME_PREFIX: volumePrefix,
      CONFIG_DIR: configDir,
      TENANTS_FILE: '/etc/run-python-code/tenants.yaml',
      LIMITS_FILE: '/etc/run-python-code/limits.yaml',
      POOL_SIZE: '1',
      PUBLISH_ADDRESS: '127.0.0.1',
      PUBLISH_PORT: String(port),
    };
    const composeRun = (...args: string[]) => run(compose[0]!, [...compose.slice(1), '-f', 'docker-compose.yml', ...args], env);
    const url = `http://127.0.0.1:${port}`;
    const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };

    try {
      await composeRun('up', '-d', '--build');
      // Healthy: the API answers through the proxy and sees the sandbox image compose built.
      let health: Record<string, unknown> = {};
      const healthy = async () => {
        const res = await fetch(`${url}/health`).catch(() => null); // null: not listening yet
        if (res) health = (await res.json().catch(() => health)) as Record<string, unknown>;
        return res?.status === 200;
      };
      await until(healthy, 'the API to be healthy', 120_000, 500);
      assert.equal(health.status, 'healthy', JSON.stringify(health));
      assert.deepEqual(health.sandbox_image, { name: 'rpc-test-compose-sandbox:latest', present: true });

      // The tenants file is in force: no key, no service.
      assert.equal((await fetch(`${url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"code":"print(1)"}' })).status, 401);

      // The seed's /execute example, with its exact answer.
      const seed = await fetch(`${url}/execute`, { method: 'POST', headers: auth, body: JSON.stringify({ code: 'x = 10\ny = 20\nz = x + y\nprint(z)' }) });
      const body = (await seed.json()) as Record<string, unknown>;
      assert.equal(seed.status, 200);
      assert.equal(body.success, true, JSON.stringify(body));
      assert.equal(body.result, '30');

      // The limits file is in force inside the sandbox...
      const cap = await fetch(`${url}/execute`, { method: 'POST', headers: auth, body: JSON.stringify({ code: READ_MEMORY_CAP }) });
      assert.equal(((await cap.json()) as Record<string, unknown>).result, '160');

      // ...and on the sandbox containers the API started (the warm one waiting for the next call).
      // A run's own container may be removed between the list and its inspection: only those still there count.
      let inspected: Docker.ContainerInspectInfo[] = [];
      await until(async () => {
        const found = await Promise.all((await containersOf(instance)).map((info) => docker.getContainer(info.Id).inspect().catch(() => null)));
        inspected = found.filter((c): c is Docker.ContainerInspectInfo => c !== null);
        return inspected.length > 0;
      }, 'a sandbox container of the compose API', 30_000, 250);
      for (const c of inspected) {
        assert.equal(c.Config.Image, 'rpc-test-compose-sandbox:latest');
        assert.equal(c.Config.User, '10001:10001');
        assert.equal(c.HostConfig.Memory, 160 * MiB);
        assert.equal(c.HostConfig.MemorySwap, 160 * MiB);
        assert.equal(c.HostConfig.NanoCpus, 500_000_000);
        assert.equal(c.HostConfig.PidsLimit, 48);
        assert.equal(c.HostConfig.NetworkMode, 'none');
        assert.equal(c.HostConfig.ReadonlyRootfs, true);
        assert.deepEqual(c.HostConfig.CapDrop, ['ALL']);
        assert.equal(c.HostConfig.Privileged, false);
      }

      // MCP through the same service.
      const mcp = await fetch(`${url}/mcp`, {
        method: 'POST',
        headers: { ...auth, accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      assert.equal(mcp.status, 200);
      assert.match(await mcp.text(), /"name":"run_python_code"/);

      // The docs need no internet: ReDoc's bundle is in the image.
      const redoc = await fetch(`${url}/redoc/redoc.standalone.js`);
      assert.equal(redoc.status, 200);
      assert.ok((await redoc.text()).length > 100_000, 'the whole of ReDoc');

      // The API holds no socket and has no way to one but the proxy.
      const api = (await composeRun('ps', '-q', 'fastapi-server')).stdout.trim();
      const apiInfo = await docker.getContainer(api).inspect();
      assert.deepEqual(apiInfo.Mounts.filter((m) => m.Destination.includes('docker.sock')), []);
      assert.equal(apiInfo.Config.User, '10002:10002');
    } catch (err) {
      const logs = await composeRun('logs', '--no-color', '--tail', '60').then((r) => r.stdout, (e: Error) => e.message);
      throw new Error(`${(err as Error).message}\n--- compose logs ---\n${logs}`, { cause: err });
    } finally {
      await composeRun('down', '-v', '--remove-orphans');
      await removeVolumes(volumePrefix);
    }

    // Nothing of the project is left: containers (its own and the sandboxes), networks, volumes.
    const ofProject = { label: [`com.docker.compose.project=${project}`] };
    assert.deepEqual(await docker.listContainers({ all: true, filters: ofProject }), []);
    assert.deepEqual(await containersOf(instance), []);
    assert.deepEqual(await docker.listNetworks({ filters: ofProject }), []);
    const volumes = (await docker.listVolumes()).Volumes ?? [];
    assert.deepEqual(volumes.filter((v) => v.Name.startsWith(project) || v.Name.startsWith(volumePrefix)).map((v) => v.Name), []);
  });
});
