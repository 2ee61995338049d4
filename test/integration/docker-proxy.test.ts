import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { loadConfig } from '../../server/config.js';
import { createDockerProxy } from '../../server/docker-proxy/proxy.js';
import { createLogger } from '../../server/logger.js';
import { PackagesVolumes } from '../../server/packages/volume.js';
import { containerSpec } from '../../server/sandbox/container-spec.js';
import { freePort } from '../helpers/free-port.js';
import { spawnNode, type NodeProcess } from '../helpers/process.js';
import { rawRequest } from '../helpers/raw-http.js';
import { docker, startServer } from '../helpers/server.js';
import { READ_MEMORY_CAP } from '../helpers/snippets.js';
import { makeWheel } from '../helpers/wheels.js';

const SANDBOX_IMAGE = loadConfig({ ...process.env, BASE_DIR: os.tmpdir() }).sandboxImage;
/** The packages volumes of every server and call here (the proxy allows this prefix only). */
const PREFIX = `rpc-test-proxy-${process.pid}-`;
const volume = new PackagesVolumes(PREFIX, `proxy-${process.pid}`);
const POLICY = { sandboxImage: SANDBOX_IMAGE, sandboxRuntime: 'runc' as const, sandboxRuntimes: [], packagesVolumePrefix: PREFIX, installNetwork: 'bridge', egressNetwork: 'run-python-code-egress', maxMemoryMb: 16384, maxPids: 4096 };

describe('the Docker API proxy, in front of the real engine', () => {
  let proxy: http.Server;
  let base: string;
  let port: number;
  let victim: Docker.Container;

  /** One raw call to the proxy, as a compromised API server could make it. */
  const call = async (method: string, route: string, body?: unknown) => {
    const res = await fetch(base + route, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, text: await res.text() };
  };

  before(async () => {
    proxy = createDockerProxy({
      upstream: '/var/run/docker.sock',
      policy: POLICY,
      allowedHosts: ['docker-proxy'],
      logger: createLogger('error'),
    });
    proxy.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => proxy.once('listening', () => resolve()));
    port = (proxy.address() as AddressInfo).port;
    base = `http://127.0.0.1:${port}`;
    // A container that is not a sandbox (no label): the proxy must not let anyone touch it.
    victim = await docker.createContainer({ Image: SANDBOX_IMAGE, name: `rpc-test-proxy-victim-${process.pid}`, Labels: {} });
  });
  after(async () => {
    await victim.remove({ force: true });
    proxy.close();
  });

  it('carries everything the server does: executions, timeouts, files, installs, the pool, clean-up', async () => {
    const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
    makeWheel(wheelhouse, 'rpc-tiny', '1.0');
    const server = await startServer({ POOL_SIZE: '1', SANDBOX_MEMORY_MB: '200', WHEELHOUSE_DIR: wheelhouse, PACKAGES_VOLUME_PREFIX: PREFIX }, new Docker({ host: '127.0.0.1', port }));
    try {
      const health = await server.get('/health');
      assert.equal(health.body.status, 'healthy', health.text);
      const seed = await server.post('/execute', { code: 'x = 10\ny = 20\nz = x + y\nprint(z)' });
      assert.equal(seed.body.result, '30', JSON.stringify(seed.body));
      assert.equal((await server.post('/execute', { code: READ_MEMORY_CAP })).body.result, '200');
      const slow = await server.post('/execute', { code: 'while True: pass', timeout: 1 });
      assert.equal(slow.body.timed_out, true);
      await server.post('/save-and-execute', { file_name: 'fib.py', code: 'result = 55' });
      assert.equal((await server.post('/run-python-file', { file_name: 'fib.py', variable_to_return: 'result' })).body.result, '55');
      const install = await server.post('/install-package', { package_name: 'rpc-tiny' });
      assert.equal(install.body.success, true, JSON.stringify(install.body));
      assert.equal((await server.post('/execute', { code: 'import rpc_tiny\nprint(rpc_tiny.__version__)' })).body.result, '1.0');
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it('refuses a privileged container, and none is created', async () => {
    const name = `run-python-code-proxy-test-${process.pid}`;
    const { status, text } = await call('POST', `/containers/create?name=${name}`, {
      Image: SANDBOX_IMAGE,
      User: '10001:10001',
      Labels: { 'run-python-code': '1' },
      HostConfig: { Privileged: true, Binds: ['/:/host'] },
    });
    assert.equal(status, 403);
    assert.match(JSON.parse(text).message, /docker proxy refused POST \/containers\/create: body\.HostConfig\.Privileged must be false/);
    assert.deepEqual(await docker.listContainers({ all: true, filters: { name: [name] } }), []);
  });

  it('sends the engine the body it checked: a duplicate key cannot slip a privileged HostConfig past it', async () => {
    const spec = sandboxSpec(`dup-${process.pid}`, volume.name('default'));
    // JSON.parse keeps the last "HostConfig"; Go's decoder would merge the first one into it.
    const { HostConfig, ...rest } = spec;
    const raw = JSON.stringify(rest).slice(0, -1) + `,"HostConfig":{"Privileged":true,"Binds":["/:/host"]},"HostConfig":${JSON.stringify(HostConfig)}}`;
    const res = await fetch(`${base}/containers/create?name=${spec.name}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw });
    assert.equal(res.status, 201, await res.clone().text());
    const { Id } = (await res.json()) as { Id: string };
    try {
      const info = await docker.getContainer(Id).inspect();
      assert.equal(info.HostConfig.Privileged, false);
      assert.equal(info.HostConfig.Binds, null);
    } finally {
      await docker.getContainer(Id).remove({ force: true, v: true });
      await docker.getVolume(volume.name('default')).remove();
    }
  });

  it('will not inspect, attach to, stop or remove a container that is not a sandbox', async () => {
    for (const [method, route] of [
      ['GET', `/containers/${victim.id}/json`],
      ['POST', `/containers/${victim.id}/kill`],
      ['POST', `/containers/${victim.id}/start`],
      ['DELETE', `/containers/${victim.id}?force=true`],
    ] as const) {
      const { status, text } = await call(method, route);
      assert.equal(status, 403, `${method} ${route}: ${text}`);
      assert.match(text, /is not a sandbox/);
    }
    // attach is an upgrade: refused before the engine sees it.
    const attach = await rawExchange(port, `POST /containers/${victim.id}/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n`);
    assert.match(attach, /^HTTP\/1\.1 403 /);
    const info = await victim.inspect();
    assert.equal(info.State.Status, 'created', 'the container was touched');
  });

  it('refuses calls the server never makes: exec, old API versions, id prefixes, listing everything, other images, volume driver options, engine info', async () => {
    const refused: [string, string, unknown?][] = [
      ['POST', `/containers/${victim.id}/exec`, { Cmd: ['id'] }],
      // Below API 1.24 a start body is a new HostConfig: refused, whatever the container.
      ['POST', `/v1.23/containers/${victim.id}/start`, { Privileged: true, Binds: ['/:/host'] }],
      ['GET', `/containers/${victim.id.slice(0, 12)}/json`],
      ['GET', '/containers/json?all=true'],
      ['GET', '/images/alpine:latest/json'],
      ['POST', '/images/create?fromImage=alpine'],
      ['GET', '/info'],
      ['POST', '/volumes/create', { Name: volume.name('x'), Labels: { 'run-python-code': '1', ...volume.labels }, DriverOpts: { type: 'none', o: 'bind', device: '/' } }],
      // Another deployment's volume name, under this one's label (or none): never what the server makes.
      ['POST', '/volumes/create', { Name: new PackagesVolumes(PREFIX, 'other').name('x'), Labels: { 'run-python-code': '1', ...volume.labels } }],
      ['POST', '/volumes/create', { Name: volume.name('x'), Labels: { 'run-python-code': '1' } }],
    ];
    for (const [method, route, body] of refused) {
      const { status, text } = await call(method, route, body);
      assert.equal(status, 403, `${method} ${route}: ${text}`);
    }
    const volumes = (await docker.listVolumes()).Volumes ?? [];
    assert.equal(volumes.find((v) => v.Name.startsWith(PREFIX)), undefined);
  });

  it('checks every request of a pipelined connection on its own', async () => {
    const answer = await rawExchange(
      port,
      'GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' + `DELETE /containers/${victim.id}?force=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`,
    );
    assert.match(answer, /^HTTP\/1\.1 403 /);
    await victim.inspect(); // still there
  });

  it('refuses what a web page can send: a body that is not JSON, an Origin, a foreign Host; nothing is created', async () => {
    const spec = sandboxSpec(`web-${process.pid}`, volume.name('web'));
    const webVolume = { Name: volume.name('web'), Labels: { 'run-python-code': '1', ...volume.labels } };
    const host = `127.0.0.1:${port}`;
    const cases: [string, Record<string, string>, number, RegExp][] = [
      // What a no-cors fetch or a form can send with no preflight.
      ['text/plain', { host, 'content-type': 'text/plain;charset=UTF-8' }, 415, /a body must be application\/json, not "text\/plain;charset=UTF-8"/],
      ['no content type', { host }, 415, /a body must be application\/json/],
      ['an Origin', { host, 'content-type': 'application/json', origin: 'https://evil.example' }, 403, /requests from web pages \(with an Origin header\) are refused/],
      // DNS rebinding: the page's own name as Host.
      ['a foreign Host', { host: `evil.example:${port}`, 'content-type': 'application/json' }, 403, /Host "evil\.example:\d+" is not a loopback name nor listed in DOCKER_PROXY_ALLOWED_HOSTS/],
    ];
    const created = async () => ({
      containers: await docker.listContainers({ all: true, filters: { name: [spec.name!] } }),
      volumes: ((await docker.listVolumes()).Volumes ?? []).filter((v) => v.Name === webVolume.Name),
    });
    try {
      for (const [what, headers, status, message] of cases) {
        for (const [route, body] of [[`/containers/create?name=${spec.name}`, spec], ['/volumes/create', webVolume]] as const) {
          const res = await rawRequest(base + route, { method: 'POST', headers, body: JSON.stringify(body) });
          assert.equal(res.status, status, `${what} ${route}: ${res.text}`);
          assert.match(JSON.parse(res.text).message, message);
        }
      }
      assert.deepEqual(await created(), { containers: [], volumes: [] });
    } finally {
      const left = await created(); // only if a refusal failed
      for (const c of left.containers) await docker.getContainer(c.Id).remove({ force: true });
      for (const v of left.volumes) await docker.getVolume(v.Name).remove();
    }

    // Nor can a rebound page list, stop or remove sandboxes, or attach to one.
    const list = `/containers/json?filters=${encodeURIComponent(JSON.stringify({ label: ['run-python-code=1'] }))}`;
    assert.equal((await rawRequest(base + list, { headers: { host: `evil.example:${port}` } })).status, 403);
    assert.equal((await rawRequest(base + list, { headers: { host, origin: 'http://evil.example' } })).status, 403);
    assert.equal((await rawRequest(base + `/containers/${victim.id}/kill`, { method: 'POST', headers: { host: 'evil.example' } })).status, 403);
    const attach = await rawExchange(port, `POST /containers/${victim.id}/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n`);
    assert.match(attach, /^HTTP\/1\.1 403 [\s\S]*with an Origin header/);
    // The names it does answer: loopback ones, and the compose service's (DOCKER_PROXY_ALLOWED_HOSTS).
    for (const name of ['localhost', `[::1]:${port}`, 'docker-proxy:2375']) {
      assert.equal((await rawRequest(base + list, { headers: { host: name } })).status, 200, name);
    }
  });

  it('listens on a unix socket of mode 0660 instead of TCP, and the server works through it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-proxy-sock-'));
    const socket = path.join(dir, 'docker-proxy.sock');
    const tcpPort = await freePort();
    let proxyProcess: NodeProcess | undefined;
    try {
      proxyProcess = await spawnNode(
        'dist/server/docker-proxy/main.js',
        { DOCKER_PROXY_LISTEN_SOCKET: socket, DOCKER_PROXY_HOST: '127.0.0.1', DOCKER_PROXY_PORT: String(tcpPort), PACKAGES_VOLUME_PREFIX: PREFIX },
        /docker proxy listening|cannot listen|bad setting/,
      );
      const info = statSync(socket);
      assert.ok(info.isSocket());
      assert.equal(info.mode & 0o777, 0o660);
      await assert.rejects(rawRequest(`http://127.0.0.1:${tcpPort}/_ping`), /ECONNREFUSED/, 'no TCP listener');
      const server = await startServer({ PACKAGES_VOLUME_PREFIX: PREFIX }, new Docker({ socketPath: socket }));
      try {
        const run = await server.post('/execute', { code: 'print(6 * 7)' });
        assert.equal(run.body.result, '42', JSON.stringify(run.body));
      } finally {
        await server.close();
      }
      assert.deepEqual(await server.settle(), []);
      assert.equal(await proxyProcess.stop(), 0);
      assert.equal(existsSync(socket), false, 'the socket file goes when the proxy stops');
    } finally {
      await proxyProcess?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes no body on attach beyond an empty one', async () => {
    const sandbox = await docker.createContainer({ Image: SANDBOX_IMAGE, name: `run-python-code-proxy-attach-${process.pid}`, Labels: { 'run-python-code': '1' } });
    try {
      const answer = await rawExchange(
        port,
        `POST /containers/${sandbox.id}/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nTransfer-Encoding: chunked\r\n\r\n` +
          `4\r\nabcd\r\n0\r\n\r\n`,
      );
      assert.match(answer, /^HTTP\/1\.1 400 .*\r\n[\s\S]*a chunked attach body must be empty/);
    } finally {
      await sandbox.remove({ force: true });
    }
  });
});

/** A create body exactly as the server would send it for a small sandbox. */
function sandboxSpec(executionId: string, packagesVolume: string) {
  return containerSpec({
    image: SANDBOX_IMAGE,
    instanceId: `test-proxy-${process.pid}`,
    executionId,
    limits: { runtime: 'runc' as const, timeoutS: 5, memoryMb: 64, cpus: 0.5, pids: 16, outputBytes: 1000, workspaceMb: 1, tmpMb: 1, nofile: 64, maxFiles: 10, maxOutputs: 16, outputsBytes: 1 << 20 },
    packagesVolume,
  });
}

/** Sends raw bytes on one connection; resolves to everything answered before the proxy closed it. */
function rawExchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request));
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => {
      socket.destroy();
      reject(new Error(`no close; answered so far: ${answer}`));
    });
  });
}
