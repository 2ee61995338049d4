import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Credentials } from '../../server/egress/credential.js';
import { startOrigins, type Origins } from '../helpers/egress-origins.js';
import { freePort } from '../helpers/free-port.js';
import { spawnNode } from '../helpers/process.js';
import { docker, startServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';

const hash = (key: string) => createHash('sha256').update(key).digest('hex');

/**
 * Egress allowlists against the real engine. Every server the sandboxes reach is on 127.0.0.1,
 * pinned by name through EGRESS_RESOLVE; the sandboxes reach only the proxy, at their internal
 * network's gateway on this host. No traffic goes to any other address, not even to show it fails.
 */
describe('egress allowlists', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-egress-'));
  let origins: Origins;
  let server: TestServer;
  let cert = '';
  let ports = { http: 0, https: 0 };
  const limitsFile = path.join(dir, 'limits.yaml');

  before(async () => {
    origins = await startOrigins(dir, 'allowed.test', (req, res) => res.end(`plain ${req.headers.host} ${req.url}`), (req, res) => res.end(`secret ${req.url}`));
    ({ cert, ports } = origins);
    writeFileSync(
      path.join(dir, 'tenants.yaml'),
      `tenants:\n  reach:\n    keys: ["${hash('reach-key')}"]\n  closed:\n    keys: ["${hash('closed-key')}"]\n`,
    );
    writeFileSync(limitsFile, 'tenants:\n  reach:\n    egress: [allowed.test]\n');
    server = await startServer({
      TENANTS_FILE: path.join(dir, 'tenants.yaml'),
      LIMITS_FILE: limitsFile,
      EGRESS_PORTS: `${ports.http},${ports.https}`,
      EGRESS_RESOLVE: JSON.stringify({ 'allowed.test': '127.0.0.1', 'pinned.test': '127.0.0.1' }),
      POOL_SIZE: '1',
      PRELOAD_MODULES: '',
    });
  });

  after(async () => {
    const network = server.config.egressNetwork;
    await server.close();
    assert.deepEqual(await server.settle(), [], 'containers left behind');
    await assert.rejects(docker.getNetwork(network).inspect(), /404|no such network/i, 'the egress network is removed');
    await origins.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const run = async (key: string, code: string, contextId?: string) => {
    const res = await fetch(`${server.url}/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ code, timeout: 30, context_id: contextId }),
    });
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.success, true, `${String(body.error)}\n${String(body.stderr)}`);
    return String(body.result);
  };
  /** Python that fetches `url` with urllib and prints the body, or the error's type and code. */
  const fetchIn = (url: string) => [
    'import ssl, urllib.request, urllib.error',
    `ctx = ssl.create_default_context(cadata=${JSON.stringify(cert)})`,
    'try:',
    `    print(urllib.request.urlopen(${JSON.stringify(url)}, timeout=10, context=ctx).read().decode())`,
    'except urllib.error.HTTPError as e:',
    '    print("HTTPError", e.code, e.headers.get("x-egress-refused"))',
    'except OSError as e:',
    '    print("OSError", e)',
  ].join('\n');

  it("an egress tenant's containers are warmed at start on its network: its first execution takes one", async () => {
    await until(() => server.sandbox.ready() === 2, 'both tenants warmed', 60_000);
    const { hits } = server.sandbox.pool!.stats();
    assert.equal(await run('reach-key', 'print(1)'), '1');
    assert.equal(server.sandbox.pool!.stats().hits, hits + 1, 'a hit, not a cold start beside a profile nothing takes');
  });

  it('a listed name is reached over HTTP through the proxy, and over HTTPS through CONNECT (the certificate checked)', async () => {
    assert.equal(await run('reach-key', fetchIn(`http://allowed.test:${ports.http}/page?q=1`)), `plain allowed.test:${ports.http} /page?q=1`);
    assert.equal(await run('reach-key', fetchIn(`https://allowed.test:${ports.https}/vault`)), 'secret /vault');
  });

  it('refuses a name not listed, an IP literal, and a name pinned to 127.0.0.1 that the tenant does not list', async () => {
    assert.equal(await run('reach-key', fetchIn(`http://denied.test:${ports.http}/`)), 'HTTPError 403 not_listed');
    assert.equal(await run('reach-key', fetchIn(`http://127.0.0.1:${ports.http}/`)), 'HTTPError 403 ip_literal');
    assert.equal(await run('reach-key', fetchIn(`http://pinned.test:${ports.http}/`)), 'HTTPError 403 not_listed');
    assert.match(await run('reach-key', fetchIn(`https://denied.test:${ports.https}/`)), /^OSError <urlopen error Tunnel connection failed: 403 Forbidden>$/);
  });

  it('inside: no DNS, and a raw socket to the proxy without the credential is refused', async () => {
    const code = [
      'import os, socket, urllib.parse',
      'try:',
      '    socket.getaddrinfo("allowed.test", 80)',
      '    dns = "resolved"',
      'except socket.gaierror:',
      '    dns = "no dns"',
      'proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])',
      's = socket.create_connection((proxy.hostname, proxy.port), timeout=10)',
      `s.sendall(b"GET http://allowed.test:${ports.http}/ HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n")`,
      'print(dns, s.recv(100).split(b"\\r\\n")[0].decode(), proxy.username == os.environ.get("X", proxy.username))',
    ].join('\n');
    assert.equal(await run('reach-key', code), 'no dns HTTP/1.1 407 Proxy Authentication Required True');
  });

  it('a tenant without a list has no network at all: no proxy, loopback only', async () => {
    const code = [
      'import os, socket',
      'names = sorted(n for _, n in socket.if_nameindex())',
      'print(names, os.environ.get("HTTP_PROXY"))',
    ].join('\n');
    assert.equal(await run('closed-key', code), "['lo'] None");
  });

  it("a context of a tenant with a list reaches it on every call, each call with its own credential; a closed tenant's has no network", async () => {
    const open = async (key: string) => {
      const res = await fetch(`${server.url}/contexts`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: '{}' });
      assert.equal(res.status, 201);
      return ((await res.json()) as { context_id: string }).context_id;
    };
    const reach = await open('reach-key');
    const closed = await open('closed-key');
    try {
      assert.equal(await run('reach-key', `seen = []\n${fetchIn(`http://allowed.test:${ports.http}/first`)}`, reach), `plain allowed.test:${ports.http} /first`);
      assert.equal(await run('reach-key', 'import os\nseen.append(os.environ["HTTP_PROXY"])', reach), '');
      assert.equal(await run('reach-key', fetchIn(`https://allowed.test:${ports.https}/second`), reach), 'secret /second');
      assert.equal(await run('reach-key', 'import os\nprint(seen[0] != os.environ["HTTP_PROXY"])', reach), 'True');
      assert.equal(await run('reach-key', fetchIn(`http://denied.test:${ports.http}/`), reach), 'HTTPError 403 not_listed');
      assert.equal(await run('closed-key', "import os, socket\nprint(sorted(n for _, n in socket.if_nameindex()), os.environ.get('HTTP_PROXY'))", closed), "['lo'] None");
    } finally {
      for (const [key, id] of [['reach-key', reach], ['closed-key', closed]] as const) {
        await fetch(`${server.url}/contexts/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
      }
    }
  });

  it('an edit of the limits file applies to the next execution', async () => {
    writeFileSync(limitsFile, 'tenants:\n  reach:\n    egress: [allowed.test, pinned.test]\n');
    await until(async () => {
      const res = await fetch(`${server.url}/limits`, { headers: { authorization: 'Bearer reach-key' } });
      return ((await res.json()) as { limits: { egress: string[] } }).limits.egress.includes('pinned.test');
    }, 'the reload');
    assert.equal(await run('reach-key', fetchIn(`http://pinned.test:${ports.http}/now`)), `plain pinned.test:${ports.http} /now`);
  });

  it('every connection is counted in /metrics, allowed and refused', async () => {
    const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: 'Bearer reach-key' } })).text();
    assert.match(text, /rpc_egress_connections_total\{result="allowed",reason="listed"\} [3-9]/);
    assert.match(text, /rpc_egress_connections_total\{result="refused",reason="not_listed"\} [3-9]/);
    assert.match(text, /rpc_egress_connections_total\{result="refused",reason="ip_literal"\} 1/);
    assert.match(text, /rpc_egress_connections_total\{result="refused",reason="credential"\} 1/);
  });
});

describe('the egress proxy as a process of its own (docker-compose.yml egress-proxy)', () => {
  it('checks the credentials the server signs with EGRESS_SECRET against the same files, and logs each decision with tenant and execution id', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-egress-main-'));
    const origin = http.createServer((_req, res) => res.end('reached'));
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
    const originPort = (origin.address() as AddressInfo).port;
    writeFileSync(path.join(dir, 'tenants.yaml'), `tenants:\n  reach:\n    keys: ["${hash('k')}"]\n    limits:\n      egress: [allowed.test]\n`);
    const secret = 'a-secret-shared-by-server-and-proxy-0123456789';
    const port = await freePort();
    const proxy = await spawnNode('dist/server/egress/main.js', {
      TENANTS_FILE: path.join(dir, 'tenants.yaml'),
      EGRESS_PROXY_ADDRESS: '127.0.0.1',
      EGRESS_PROXY_PORT: String(port),
      EGRESS_SECRET: secret,
      EGRESS_PORTS: String(originPort),
      EGRESS_RESOLVE: JSON.stringify({ 'allowed.test': '127.0.0.1' }),
      BASE_DIR: dir,
    }, /egress proxy listening/);
    const ask = async (credentials: Credentials, host: string) => {
      const { username, password } = credentials.issue({ tenant: 'reach', executionId: 'exec-42', expiresAt: Date.now() + 60_000 });
      const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
        http.get({ host: '127.0.0.1', port, path: `http://${host}:${originPort}/`, headers: { 'proxy-authorization': `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` } }, resolve).on('error', reject),
      );
      res.resume();
      return res.statusCode;
    };
    try {
      assert.equal(await ask(new Credentials(Buffer.from(secret)), 'allowed.test'), 200);
      assert.equal(await ask(new Credentials(Buffer.from(secret)), 'denied.test'), 403);
      assert.equal(await ask(new Credentials(Buffer.from('another-secret-of-at-least-32-characters')), 'allowed.test'), 407);
      const allowed = JSON.parse(await proxy.waitForLog(/egress allowed/)) as Record<string, unknown>;
      assert.equal(allowed.tenant, 'reach');
      assert.equal(allowed.execution_id, 'exec-42');
      assert.equal(allowed.host, 'allowed.test');
      const refused = JSON.parse(await proxy.waitForLog(/egress refused.*not_listed/)) as Record<string, unknown>;
      assert.deepEqual([refused.tenant, refused.execution_id, refused.host, refused.reason], ['reach', 'exec-42', 'denied.test', 'not_listed']);
    } finally {
      assert.equal(await proxy.stop(), 0);
      await new Promise((r) => origin.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
