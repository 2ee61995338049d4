import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, it, type TestContext } from 'node:test';
import { createHash } from 'node:crypto';
import type Docker from 'dockerode';
import { loadConfig } from '../../server/config.js';
import { projectRoot } from '../../server/project.js';
import { freePort } from '../helpers/free-port.js';
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
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const KEY = 'compose-test-key';
/** The seed's /execute example; its answer is '30'. */
const SEED = JSON.stringify({ code: 'x = 10\ny = 20\nz = x + y\nprint(z)' });
const MiB = 1024 * 1024;

/** The sandbox containers of an instance, once there is one; a run's own container may be removed between the list and its inspection: only those still there count. */
async function sandboxesOf(instance: string): Promise<Docker.ContainerInspectInfo[]> {
  let inspected: Docker.ContainerInspectInfo[] = [];
  await until(async () => {
    const found = await Promise.all((await containersOf(instance)).map((info) => docker.getContainer(info.Id).inspect().catch(() => null)));
    inspected = found.filter((c): c is Docker.ContainerInspectInfo => c !== null);
    return inspected.length > 0;
  }, `a sandbox container of ${instance}`, 30_000, 250);
  return inspected;
}

/** What the Docker proxy makes of every sandbox, whoever asked for it. */
function assertSandboxCaps(c: Docker.ContainerInspectInfo, image: string): void {
  assert.equal(c.Config.Image, image);
  assert.equal(c.Config.User, '10001:10001');
  assert.equal(c.HostConfig.NetworkMode, 'none');
  assert.equal(c.HostConfig.ReadonlyRootfs, true);
  assert.deepEqual(c.HostConfig.CapDrop, ['ALL']);
  assert.equal(c.HostConfig.Privileged, false);
}

/** A compose service's container (API, worker): locked down, no Docker socket, Docker only through the proxy. */
function assertServiceLockedDown(c: Docker.ContainerInspectInfo): void {
  assert.equal(c.Config.User, '10002:10002');
  assert.equal(c.HostConfig.ReadonlyRootfs, true);
  assert.deepEqual(c.HostConfig.CapDrop, ['ALL']);
  assert.deepEqual(c.HostConfig.SecurityOpt, ['no-new-privileges:true']);
  assert.deepEqual(c.Mounts.filter((m) => m.Destination.includes('docker.sock')), []);
  assert.ok(c.Config.Env.includes('DOCKER_HOST=tcp://docker-proxy:2375'), c.Config.Env.join(' '));
}

describe('docker-compose: the API, its Docker proxy and the sandbox image, built here from local bases', () => {
  it('builds, comes up healthy, runs the seed example in capped sandboxes, does it again as an API node with two workers (the scale overlay), and goes away without a trace', { timeout: 20 * 60_000 }, async (t: TestContext) => {
    const cannotBuild = await canBuild();
    if (cannotBuild) {
      t.skip(`this Docker engine cannot build images, so the compose images cannot be made here: ${cannotBuild}`);
      return;
    }
    const compose = await composeCommand();
    assert.ok(compose, 'neither `docker compose` nor `docker-compose` is installed: apt-get install docker-compose (npm test does it as root)');

    // Local bases: a Node.js image from Debian's packages (or the public one when it can be pulled),
    // and the sandbox base the host's own sandbox image was built from. Redis and PostgreSQL for the
    // scale overlay (stand-ins from Debian's packages too, where needed) are built meanwhile: the
    // embedded phase does not need them.
    const servicesBuild = run('bash', ['test/helpers/local-bases.sh', 'redis', 'postgres']);
    servicesBuild.catch(() => undefined); // awaited below; a failure is reported there
    const nodeImage = (await run('bash', ['test/helpers/local-bases.sh'])).stdout.trim();
    const hostSandbox = await docker.getImage(loadConfig({ ...process.env, BASE_DIR: os.tmpdir() }).sandboxImage).inspect();
    const labels = hostSandbox.Config?.Labels ?? {};
    assert.ok(labels['run-python-code.base'], 'the host sandbox image does not name its base: rebuild it with npm run sandbox:build');

    const project = `rpctestcompose${process.pid}`;
    const instance = `test-compose-${process.pid}`;
    const workers = [`${instance}-worker-1`, `${instance}-worker-2`];
    const volumePrefix = `rpc-test-compose-${process.pid}-`;
    const configDir = mkdtempSync(path.join(os.tmpdir(), 'rpc-compose-config-'));
    chmodSync(configDir, 0o755); // read by the API's own user
    writeFileSync(path.join(configDir, 'tenants.yaml'), `tenants:\n  acme:\n    keys: ["${createHash('sha256').update(KEY).digest('hex')}"]\n`, { mode: 0o644 });
    writeFileSync(path.join(configDir, 'limits.yaml'), 'tenants:\n  acme:\n    memory_mb: 160\n    cpus: 0.5\n    pids: 48\n', { mode: 0o644 });
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {
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
      WORKER_ID_PREFIX: `${instance}-worker`,
    };
    const composeRun = (...args: string[]) => run(compose[0]!, [...compose.slice(1), '-f', 'docker-compose.yml', ...args], env);
    // The whole project, scale overlay included: down -v needs it for the postgres volume.
    const scaleRun = (...args: string[]) => run(compose[0]!, [...compose.slice(1), '-f', 'docker-compose.yml', '-f', 'docker-compose.scale.yml', ...args], env);
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
      const seed = await fetch(`${url}/execute`, { method: 'POST', headers: auth, body: SEED });
      const body = (await seed.json()) as Record<string, unknown>;
      assert.equal(seed.status, 200);
      assert.equal(body.success, true, JSON.stringify(body));
      assert.equal(body.result, '30');

      // The limits file is in force inside the sandbox...
      const cap = await fetch(`${url}/execute`, { method: 'POST', headers: auth, body: JSON.stringify({ code: READ_MEMORY_CAP }) });
      assert.equal(((await cap.json()) as Record<string, unknown>).result, '160');

      // ...and on the sandbox containers the API started (the warm one waiting for the next call).
      for (const c of await sandboxesOf(instance)) {
        assertSandboxCaps(c, 'rpc-test-compose-sandbox:latest');
        assert.equal(c.HostConfig.Memory, 160 * MiB);
        assert.equal(c.HostConfig.MemorySwap, 160 * MiB);
        assert.equal(c.HostConfig.NanoCpus, 500_000_000);
        assert.equal(c.HostConfig.PidsLimit, 48);
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
      const containerOf = async (service: string) => docker.getContainer((await scaleRun('ps', '-q', service)).stdout.trim()).inspect();
      assertServiceLockedDown(await containerOf('fastapi-server'));

      // The scale overlay on the same project, with the images built above: Redis, PostgreSQL, two
      // workers, and fastapi-server recreated as an API node that queues every run.
      const services = (await servicesBuild).stdout.trim().split('\n');
      env.REDIS_IMAGE = services[0]!;
      env.POSTGRES_IMAGE = services[1]!;
      await scaleRun('up', '-d');
      await until(async () => (await healthy()) && Array.isArray(health.workers) && health.workers.length === 2, 'the API node to be healthy with 2 workers', 120_000, 500);
      assert.equal(health.role, 'api', JSON.stringify(health));
      assert.deepEqual((health.workers as { id: string }[]).map((w) => w.id).sort(), workers);

      const queued = await fetch(`${url}/execute`, { method: 'POST', headers: auth, body: SEED });
      const answer = (await queued.json()) as Record<string, unknown>;
      assert.equal(queued.status, 200);
      assert.equal(answer.result, '30', JSON.stringify(answer));
      // The history is PostgreSQL's, and names the worker that ran it.
      const recorded = await fetch(`${url}/executions/${String(answer.execution_id)}`, { headers: auth });
      const record = (await recorded.json()) as Record<string, unknown>;
      assert.equal(recorded.status, 200);
      assert.equal(record.result, '30');
      assert.ok(workers.includes(record.worker as string), JSON.stringify(record));

      // The API node kept its caps through the overlay; the workers have theirs, and reach Docker
      // only through the proxy, which capped the sandboxes they started.
      assertServiceLockedDown(await containerOf('fastapi-server'));
      for (const worker of ['worker-1', 'worker-2']) assertServiceLockedDown(await containerOf(worker));
      for (const c of await sandboxesOf(record.worker as string)) assertSandboxCaps(c, 'rpc-test-compose-sandbox:latest');
    } catch (err) {
      const logs = await scaleRun('logs', '--no-color', '--tail', '60').then((r) => r.stdout, (e: Error) => e.message);
      throw new Error(`${(err as Error).message}\n--- compose logs ---\n${logs}`, { cause: err });
    } finally {
      await servicesBuild.catch(() => undefined);
      await scaleRun('down', '-v', '--remove-orphans');
      await removeVolumes(volumePrefix);
      rmSync(configDir, { recursive: true, force: true });
    }

    // Nothing of the project is left: containers (its own and the sandboxes), networks, volumes.
    const ofProject = { label: [`com.docker.compose.project=${project}`] };
    assert.deepEqual(await docker.listContainers({ all: true, filters: ofProject }), []);
    for (const id of [instance, ...workers]) assert.deepEqual(await containersOf(id), []);
    assert.deepEqual(await docker.listNetworks({ filters: ofProject }), []);
    const volumes = (await docker.listVolumes()).Volumes ?? [];
    assert.deepEqual(volumes.filter((v) => v.Name.startsWith(project) || v.Name.startsWith(volumePrefix)).map((v) => v.Name), []);
  });
});
