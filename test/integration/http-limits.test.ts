import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { memoryOf, spawnServer, type ServerProcess } from '../helpers/process.js';
import { containersOf, removeVolumes, startServer, type TestServer } from '../helpers/server.js';
import { slowBodies, type SlowBody } from '../helpers/slow-bodies.js';
import { asTenant as call, tenantsFile } from '../helpers/tenants.js';
import { until } from '../helpers/until.js';

const MiB = 1024 * 1024;
const dir = () => mkdtempSync(path.join(os.tmpdir(), 'rpc-http-limits-'));
const SEED = { code: 'x = 10\ny = 20\nz = x + y\nprint(z)' };

/** The envelope a raw socket got back. */
function envelopeOf(body: SlowBody): Record<string, unknown> {
  return JSON.parse(body.response.slice(body.response.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

describe('slow bodies against the real server process', () => {
  let server: ServerProcess;
  const instance = `test-slow-${process.pid}`;
  before(async () => {
    server = await spawnServer({
      TENANTS_FILE: tenantsFile({ mallory: '', alice: '' }),
      BASE_DIR: dir(),
      INSTANCE_ID: instance,
      PACKAGES_VOLUME_PREFIX: `rpc-${instance}-`,
      POOL_SIZE: '0',
      BODY_TIMEOUT_S: '15', // long enough for the checks made while the bodies are held
    });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
    assert.deepEqual(await containersOf(instance), []);
    await removeVolumes(`rpc-${instance}-`);
  });

  it("200 slow bodies of one tenant: the server stays within its memory budget, another tenant's seed answers 30, and every socket is closed", async (t) => {
    const pid = server.child.pid!;
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    const before = await memoryOf(pid);

    // Each declares 2 MiB (MAX_BODY_BYTES) and sends 1.9 MiB of it. mallory's share of bytes being
    // received is 8 x MAX_BODY_BYTES (TENANT_RECEIVING_MAX_BYTES): exactly 8 are taken in.
    const attack = slowBodies(server.url, { count: 200, declared: 2 * MiB, send: Math.floor(1.9 * MiB), key: 'mallory-key' });
    t.after(() => attack.destroy()); // only matters when an assertion fails: the server closes them all
    await attack.sent;
    await until(() => attack.bodies.filter((b) => b.status === 429).length === 192, '192 refusals', 30000);

    const more = await call(server.url, 'mallory-key', '/execute', { code: 'print(1)' });
    assert.equal(more.status, 429, 'mallory is at its share while its 8 bodies are held');
    assert.match(String(more.body.error), /Too many request bytes being received at once for this tenant \(TENANT_RECEIVING_MAX_BYTES, 16 MiB\); retry later/);
    assert.equal(more.headers.get('retry-after'), '15');

    const seed = await call(server.url, 'alice-key', '/execute', SEED);
    assert.equal(seed.status, 200);
    assert.equal(seed.body.result, '30');

    const during = await memoryOf(pid);
    // Bodies in flight are bounded by the receive budgets (64 MiB for all tenants, 16 of them
    // here); the same attack took the server from 124 to 548 MB before they existed.
    const budget = 96 * MiB;
    t.diagnostic(`server RSS ${(before.rss / MiB).toFixed(0)} MiB before, peak ${(during.peak / MiB).toFixed(0)} MiB during 200 slow bodies`);
    assert.ok(during.peak - before.rss < budget, `peak RSS ${during.peak / MiB} MiB from ${before.rss / MiB} MiB`);

    // The held bodies end at BODY_TIMEOUT_S with a 408, and the server closes every socket.
    await attack.allClosed();
    const statuses = attack.bodies.map((b) => b.status);
    assert.equal(statuses.filter((s) => s === 429).length, 192);
    assert.equal(statuses.filter((s) => s === 408).length, 8);
    for (const body of attack.bodies) {
      const envelope = envelopeOf(body);
      assert.equal(envelope.success, false);
      assert.match(String(envelope.execution_id), /^[0-9a-f-]{36}$/);
      if (body.status === 408) {
        assert.equal(envelope.error, 'The request body did not arrive within 15 s (BODY_TIMEOUT_S)');
      } else {
        assert.match(body.response, /\r\nRetry-After: 15\r\n/i);
      }
      assert.match(body.response, /\r\nConnection: close\r\n/i);
    }

    // Every reservation was given back: 8 uploads of 1.9 MiB at once fit mallory's share again
    // (they are read in full, then refused by the contract: code must be a string).
    const padded = `{"code": 1, "pad": "${'x'.repeat(Math.floor(1.9 * MiB))}"}`;
    const uploads = await Promise.all(Array.from({ length: 8 }, () => call(server.url, 'mallory-key', '/execute', padded)));
    assert.deepEqual(uploads.map((u) => u.status), Array(8).fill(400));
    assert.equal((await call(server.url, 'mallory-key', '/execute', SEED)).body.result, '30');
  });
});

describe('connections and header time on the real server process', () => {
  let server: ServerProcess;
  const instance = `test-conns-${process.pid}`;
  before(async () => {
    server = await spawnServer({
      BASE_DIR: dir(),
      INSTANCE_ID: instance,
      PACKAGES_VOLUME_PREFIX: `rpc-${instance}-`,
      POOL_SIZE: '0',
      MAX_CONNECTIONS: '20',
      HEADERS_TIMEOUT_S: '2',
      BODY_TIMEOUT_S: '1',
    });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
    assert.deepEqual(await containersOf(instance), []);
  });

  it('past MAX_CONNECTIONS a connection is closed at once; silent ones are answered 408 after HEADERS_TIMEOUT_S; then the server answers again', async (t) => {
    const { port } = new URL(server.url);
    const sockets: { socket: net.Socket; closed: Promise<void>; data: string }[] = [];
    t.after(() => sockets.forEach((s) => s.socket.destroy()));
    for (let i = 0; i < 30; i++) {
      const socket = net.connect(Number(port), '127.0.0.1');
      const entry = { socket, data: '', closed: new Promise<void>((resolve) => socket.once('close', () => resolve())) };
      socket.on('data', (c: Buffer) => (entry.data += c.toString()));
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      sockets.push(entry);
    }
    await Promise.all(sockets.slice(20).map((s) => s.closed));
    assert.ok(sockets.slice(20).every((s) => s.data === ''), 'the ones past the cap got no answer: they sent no request');
    await Promise.all(sockets.slice(0, 20).map((s) => s.closed));
    for (const s of sockets.slice(0, 20)) assert.match(s.data, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
  });
});

describe('body refusals are envelope errors (in-process server)', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({
      API_KEYS: 'key-one,key-two',
      MAX_BODY_BYTES: String(MiB),
      TENANT_RECEIVING_MAX_BYTES: String(2 * MiB),
      RECEIVING_MAX_BYTES: String(2 * MiB),
      BODY_TIMEOUT_S: '1',
    });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('a body that stops arriving gets 408 at BODY_TIMEOUT_S; one past the server-wide budget gets 429 naming RECEIVING_MAX_BYTES', async (t) => {
    const held = slowBodies(server.url, { count: 2, declared: MiB, send: 1000, key: 'key-one' });
    t.after(() => held.destroy());
    await held.sent;
    // Both bodies of key-one reserve 1 MiB each, which is all of RECEIVING_MAX_BYTES.
    const other = await call(server.url, 'key-two', '/execute', SEED);
    assert.equal(other.status, 429);
    assert.equal(other.body.error, 'Too many request bytes being received at once by this server (RECEIVING_MAX_BYTES, 2 MiB); retry later');
    assert.equal(other.headers.get('retry-after'), '1');
    assert.equal(other.headers.get('connection'), 'close');

    await held.allClosed();
    for (const body of held.bodies) {
      assert.equal(body.status, 408);
      assert.deepEqual(Object.keys(envelopeOf(body)).sort(), ['error', 'execution_id', 'result', 'success']);
      assert.equal(envelopeOf(body).error, 'The request body did not arrive within 1 s (BODY_TIMEOUT_S)');
    }
    assert.equal(server.runs(), 0);
    assert.equal((await call(server.url, 'key-two', '/execute', SEED)).body.result, '30');
  });

  it('a body declared over MAX_BODY_BYTES is still a 413, and closes the connection', async () => {
    const res = await call(server.url, 'key-one', '/execute', { code: `# ${'x'.repeat(MiB)}` });
    assert.equal(res.status, 413);
    assert.equal(res.body.error, 'Request body is larger than the limit (MAX_BODY_BYTES)');
    assert.equal(res.headers.get('connection'), 'close');
  });
});
