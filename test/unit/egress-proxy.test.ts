import assert from 'node:assert/strict';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Credentials } from '../../server/egress/credential.js';
import { isInternalAddress, listed } from '../../server/egress/destination.js';
import { createEgressProxy, type EgressLimits } from '../../server/egress/egress-proxy.js';
import { createLogger } from '../../server/logger.js';
import { Metrics } from '../../server/metrics.js';

/** The proxy on loopback, against an origin on loopback pinned as allowed.test: no other address is ever reached. */
describe('egress proxy', () => {
  const credentials = new Credentials(Buffer.alloc(32, 7));
  const metrics = new Metrics();
  const limits = new Map<string, EgressLimits>();
  const looked: string[] = [];
  let origin: http.Server;
  let proxy: http.Server;
  let originPort = 0;
  let proxyPort = 0;

  before(async () => {
    origin = http.createServer((req, res) => {
      const size = Number(new URL(req.url!, 'http://x').searchParams.get('bytes') ?? 0);
      res.end(size ? Buffer.alloc(size, 120) : `origin saw ${req.method} ${req.url} host=${req.headers.host} auth=${req.headers['proxy-authorization'] ?? 'none'}`);
    });
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
    originPort = (origin.address() as AddressInfo).port;
    proxy = createEgressProxy({
      credentials,
      limitsOf: (tenant) => limits.get(tenant) ?? null,
      ports: [originPort],
      pinned: { 'allowed.test': '127.0.0.1', 'a.wild.test': '127.0.0.1', 'pinned-not-listed.test': '127.0.0.1' },
      logger: createLogger('error'),
      metrics,
      lookup: async (host) => {
        looked.push(host);
        return host === 'private.example' ? ['10.1.2.3'] : ['::ffff:127.0.0.1'];
      },
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    proxyPort = (proxy.address() as AddressInfo).port;
    limits.set('alice', { egress: ['allowed.test', '*.wild.test', 'private.example', 'sneaky.example'], egressBytes: 64 * 1024 });
  });
  after(async () => {
    proxy.closeAllConnections();
    await new Promise((r) => proxy.close(r));
    await new Promise((r) => origin.close(r));
  });

  const auth = (tenant = 'alice', executionId = 'e-1', expiresAt = Date.now() + 60_000) => {
    const { username, password } = credentials.issue({ tenant, executionId, expiresAt });
    return `Proxy-Authorization: Basic ${Buffer.from(`${username}:${password}`).toString('base64')}\r\n`;
  };
  /** Sends raw bytes to the proxy: all it answered, and whether it closed the connection (else this did, after `ms`). */
  const exchange = (text: string | Buffer, ms = 5000) =>
    new Promise<{ answer: string; closedByProxy: boolean }>((resolve) => {
      const socket = net.connect(proxyPort, '127.0.0.1', () => socket.write(text));
      let got = '';
      let closedByProxy = true;
      socket.on('data', (d) => (got += d.toString('latin1')));
      socket.on('error', () => undefined);
      const timer = setTimeout(() => ((closedByProxy = false), socket.destroy()), ms);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve({ answer: got, closedByProxy });
      });
    });
  const raw = async (text: string) => (await exchange(text)).answer;
  const getRequest = (host: string, headers = auth(), path = '/hello') =>
    `GET http://${host}:${originPort}${path} HTTP/1.1\r\nHost: ${host}:${originPort}\r\n${headers}Connection: close\r\n\r\n`;
  const get = (host: string, headers = auth(), path = '/hello') => raw(getRequest(host, headers, path));

  it('forwards a listed, pinned name to its address, without the credential', async () => {
    const answer = await get('allowed.test');
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.match(answer, new RegExp(`origin saw GET /hello host=allowed.test:${originPort} auth=none`));
  });

  it('tunnels CONNECT to a listed name, and matches *. wildcards on subdomains only', async () => {
    const answer = await raw(`CONNECT a.wild.test:${originPort} HTTP/1.1\r\n${auth()}\r\nGET /tunnelled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 200 OK/);
    assert.match(answer, /origin saw GET \/tunnelled/);
    assert.equal(listed('wild.test', ['*.wild.test']), false);
    assert.equal(listed('A.Wild.Test.', ['*.wild.test']), true);
    assert.equal(listed('evilwild.test', ['*.wild.test']), false);
  });

  const refusals: [string, () => Promise<string>, RegExp][] = [
    ['no credential (a raw socket)', () => get('allowed.test', ''), /^HTTP\/1\.1 407 .*\r\n[\s\S]*proxy-authenticate: Basic/i],
    ['a forged credential', () => get('allowed.test', `Proxy-Authorization: Basic ${Buffer.from('e-1:eyJ4Ijp9.forged').toString('base64')}\r\n`), /^HTTP\/1\.1 407/],
    // The signature's last character changed to another (a fixed '0' left one signature in 64 as it was).
    ['another signature', () => get('allowed.test', auth().replace(/Basic (\S+)/, (_m, b: string) => `Basic ${Buffer.from(Buffer.from(b, 'base64').toString().replace(/.$/, (c) => (c === '0' ? '1' : '0'))).toString('base64')}`)), /^HTTP\/1\.1 407/],
    ['an expired credential', () => get('allowed.test', auth('alice', 'e-1', Date.now() - 1)), /^HTTP\/1\.1 407/],
    ['a tenant no longer configured', () => get('allowed.test', auth('gone')), /^HTTP\/1\.1 403[\s\S]*no longer configured/],
    ['a name not listed', () => get('denied.test'), /^HTTP\/1\.1 403[\s\S]*x-egress-refused: not_listed[\s\S]*denied\.test is not on this tenant's egress list/],
    ['a pinned name not listed', () => get('pinned-not-listed.test'), /^HTTP\/1\.1 403[\s\S]*not_listed/],
    ['an IP literal', () => get('127.0.0.1'), /^HTTP\/1\.1 403[\s\S]*ip_literal/],
    ['an IPv6 literal over CONNECT', () => raw(`CONNECT [::1]:${originPort} HTTP/1.1\r\n${auth()}\r\n`), /^HTTP\/1\.1 403[\s\S]*ip_literal/],
    ['a port not in EGRESS_PORTS', () => raw(`CONNECT allowed.test:22 HTTP/1.1\r\n${auth()}\r\n`), /^HTTP\/1\.1 403[\s\S]*Port 22 is not one/],
    ['a listed name that resolves to a private address', () => get('private.example'), /^HTTP\/1\.1 403[\s\S]*internal_address/],
    ['a listed name that resolves to loopback (IPv4 in IPv6)', () => get('sneaky.example'), /^HTTP\/1\.1 403[\s\S]*internal_address/],
    ['a request that is not a proxy request', () => raw(`GET /x HTTP/1.1\r\nHost: a\r\n${auth()}Connection: close\r\n\r\n`), /^HTTP\/1\.1 400/],
    ['garbage', () => raw('\x16\x03\x01 not http\r\n\r\n'), /^HTTP\/1\.1 400/],
  ];
  for (const [what, send, answer] of refusals) it(`refuses ${what}`, async () => assert.match(await send(), answer));

  it('resolves only names it would reach, never ones refused before', () => {
    assert.deepEqual(looked.sort(), ['private.example', 'sneaky.example']);
  });

  it('cuts an execution at egress_bytes, counting both ways, and refuses its next connection', async () => {
    const first = await exchange(getRequest('allowed.test', auth('alice', 'e-big'), '/?bytes=1000000'));
    assert.ok(first.answer.length < 200_000, `got ${first.answer.length} bytes`);
    assert.ok(first.closedByProxy, 'the cut closes the connection of the client too');
    assert.match(await get('allowed.test', auth('alice', 'e-big')), /^HTTP\/1\.1 403[\s\S]*egress_bytes/);
    assert.match(await get('allowed.test', auth('alice', 'e-other')), /^HTTP\/1\.1 200/, 'another execution has its own budget');
    const body = Buffer.alloc(1_000_000, 120);
    const head = `POST http://allowed.test:${originPort}/upload HTTP/1.1\r\nHost: allowed.test:${originPort}\r\n${auth('alice', 'e-upload')}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    const upload = await exchange(Buffer.concat([Buffer.from(head), body]));
    assert.ok(upload.closedByProxy, 'an upload past the cap is cut as well');
    assert.doesNotMatch(upload.answer, /^HTTP\/1\.1 200/);
    assert.match(await get('allowed.test', auth('alice', 'e-upload')), /^HTTP\/1\.1 403[\s\S]*egress_bytes/, 'what it sent counted');
  });

  it('counts allowed and refused connections, and bytes, in /metrics', async () => {
    const text = await metrics.registry.metrics();
    assert.match(text, /rpc_egress_connections_total\{result="allowed",reason="listed"\} [1-9]/);
    assert.match(text, /rpc_egress_connections_total\{result="refused",reason="not_listed"\} 2/);
    assert.match(text, /rpc_egress_connections_total\{result="refused",reason="credential"\} [1-9]/);
    assert.match(text, /rpc_egress_bytes_total [1-9]/);
  });

  it('knows internal addresses: loopback, private, link-local and metadata, shared, v6 and v4-in-v6', () => {
    for (const a of ['127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', 'not-an-ip']) {
      assert.equal(isInternalAddress(a), true, a);
    }
    for (const a of ['93.184.216.34', '2606:4700::1111', '::ffff:93.184.216.34']) assert.equal(isInternalAddress(a), false, a);
  });
});
