import { lookup as dnsLookup } from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';
import { pipeline, type Duplex } from 'node:stream';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Credentials, Grant } from './credential.js';
import { isInternalAddress, isIpLiteral, listed, normalizeHost } from './destination.js';

/** What the proxy needs to know of a tenant, read at each connection (so a limits edit applies to the next one). */
export interface EgressLimits {
  egress: string[];
  egressBytes: number;
}

export interface EgressProxyOptions {
  credentials: Credentials;
  /** The tenant's limits in force, or null when it is no longer configured. */
  limitsOf(tenant: string): EgressLimits | null;
  /** Ports the proxy connects to (EGRESS_PORTS). */
  ports: number[];
  /** Names resolved to these addresses instead of through DNS, internal ones allowed (EGRESS_RESOLVE). */
  pinned: Record<string, string>;
  logger: Logger;
  metrics?: Metrics;
  /** Resolves a name to all its addresses; DNS by default, a fake in unit tests. */
  lookup?: (host: string) => Promise<string[]>;
  /** A connection idle this long is closed. */
  idleMs?: number;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** An execution's traffic: bytes both ways so far, and its open sockets (all cut once the cap is passed). */
interface Usage {
  bytes: number;
  sockets: Set<Duplex>;
  expiresAt: number;
}

const systemLookup = async (host: string) => (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address);

/**
 * The egress proxy: an HTTP forward proxy (absolute-form requests for http://, CONNECT for
 * anything else, HTTPS above all) for sandboxes on the internal egress network, written on node's
 * own http and net rather than a proxy library, so that every step is ours to check: the
 * credential names an execution (credential.ts); the host must be on its tenant's egress list
 * (now, not when it started) and the port in EGRESS_PORTS; IP literals are refused; the proxy
 * resolves the name itself (the sandbox has no DNS) and connects to the very address it checked,
 * refusing loopback, private, link-local and metadata addresses unless EGRESS_RESOLVE pins the
 * name; bytes are counted both ways per execution and its connections cut at egress_bytes. Every
 * connection allowed or refused is logged with tenant and execution id, and counted.
 */
export function createEgressProxy(options: EgressProxyOptions): http.Server {
  const { credentials, logger, metrics } = options;
  const lookup = options.lookup ?? systemLookup;
  const idleMs = options.idleMs ?? 60_000;
  const usage = new Map<string, Usage>();

  const usageOf = (grant: Grant): Usage => {
    const now = Date.now();
    for (const [id, u] of usage) if (u.expiresAt < now && u.sockets.size === 0) usage.delete(id);
    let u = usage.get(grant.executionId);
    if (!u) usage.set(grant.executionId, (u = { bytes: 0, sockets: new Set(), expiresAt: grant.expiresAt }));
    return u;
  };

  const record = (result: 'allowed' | 'refused', reason: string, fields: Record<string, unknown>) => {
    metrics?.egressConnections.inc({ result, reason });
    logger.info(`egress ${result}`, { reason, ...fields });
  };

  /** Checks one connection; resolves to where to connect, or throws the Refusal to answer with. */
  async function admit(authorization: string | undefined, host: string, port: number) {
    const grant = credentials.check(authorization);
    if (!grant) throw new Refusal(407, 'credential', 'This proxy serves sandbox executions only: a valid credential of one is required');
    const limits = options.limitsOf(grant.tenant);
    const who = { tenant: grant.tenant, execution_id: grant.executionId, host, port };
    const refuse = (status: number, reason: string, message: string) => {
      record('refused', reason, who);
      return new Refusal(status, reason, message);
    };
    if (!limits) throw refuse(403, 'tenant', 'The tenant of this execution is no longer configured');
    if (isIpLiteral(host)) throw refuse(403, 'ip_literal', `${host} is an IP address: egress is by host name only`);
    if (!options.ports.includes(port)) throw refuse(403, 'port', `Port ${port} is not one the egress proxy connects to (EGRESS_PORTS: ${options.ports.join(',')})`);
    const name = normalizeHost(host);
    if (!listed(name, limits.egress)) throw refuse(403, 'not_listed', `${name} is not on this tenant's egress list`);
    const u = usageOf(grant);
    if (u.bytes >= limits.egressBytes) throw refuse(403, 'egress_bytes', `This execution has used its ${limits.egressBytes} bytes of egress (egress_bytes)`);
    let address = options.pinned[name];
    if (address === undefined) {
      let addresses: string[];
      try {
        addresses = await lookup(name);
      } catch {
        throw refuse(502, 'unresolved', `${name} does not resolve`);
      }
      // Every address, not only the one used: a name that can mean an internal address is refused.
      if (addresses.length === 0 || addresses.some(isInternalAddress)) {
        throw refuse(403, 'internal_address', `${name} resolves to an internal address (loopback, private, link-local or metadata); EGRESS_RESOLVE can pin it`);
      }
      address = addresses[0]!;
    }
    record('allowed', 'listed', { ...who, address });
    return { grant, u, limits, address, who };
  }

  type Admitted = Awaited<ReturnType<typeof admit>>;
  /** Counts bytes against the execution's cap; past it, every socket of the execution is cut. */
  const count = ({ u, limits, who }: Admitted, bytes: number) => {
    u.bytes += bytes;
    metrics?.egressBytes.inc(bytes);
    if (u.bytes > limits.egressBytes) {
      record('refused', 'egress_bytes', { ...who, bytes: u.bytes });
      for (const s of u.sockets) s.destroy();
    }
  };
  /** A socket of the execution: cut with the others, closed when idle. */
  const hold = ({ u }: Admitted, socket: net.Socket) => {
    if (u.sockets.has(socket)) return; // a kept-alive client connection's next request
    u.sockets.add(socket);
    socket.setTimeout(idleMs, () => socket.destroy());
    socket.once('close', () => u.sockets.delete(socket));
    socket.on('error', () => undefined);
  };
  /** Counts what each socket receives. */
  const meter = (admitted: Admitted, ...sockets: net.Socket[]) => {
    for (const socket of sockets) {
      hold(admitted, socket);
      socket.on('data', (chunk: Buffer) => count(admitted, chunk.length));
    }
  };

  const server = http.createServer(async (req, res) => {
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      target = new URL('invalid:');
    }
    if (target.protocol !== 'http:' || !target.hostname) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('Only proxy requests for http:// URLs (and CONNECT) are served\n');
      return;
    }
    const port = Number(target.port || 80);
    let admitted: Admitted;
    try {
      admitted = await admit(req.headers['proxy-authorization'], target.hostname, port);
    } catch (err) {
      return answerRefusal(err, (status, headers, text) => res.writeHead(status, headers).end(text));
    }
    const headers = { ...req.headers };
    for (const h of ['proxy-authorization', 'proxy-connection', 'connection', 'keep-alive']) delete headers[h];
    const upstream = http.request({
      host: admitted.address,
      port,
      method: req.method,
      path: target.pathname + target.search,
      headers: { ...headers, host: target.host },
      agent: false,
    });
    // The client's connection is cut with the others, and what it sends (a request body) counts.
    hold(admitted, req.socket);
    req.on('data', (chunk: Buffer) => count(admitted, chunk.length));
    upstream.on('socket', (socket) => meter(admitted, socket));
    upstream.on('response', (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      pipeline(answer, res, () => undefined); // an answer cut short (the cap, the host) ends the client's too
    });
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end('The egress proxy could not reach the host\n');
      else res.destroy();
    });
    req.pipe(upstream);
  });

  server.on('connect', async (req: http.IncomingMessage, client: Duplex, head: Buffer) => {
    client.on('error', () => undefined);
    const authority = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(req.url ?? '');
    if (!authority) {
      client.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nCONNECT needs host:port\n');
      return;
    }
    let admitted: Admitted;
    try {
      admitted = await admit(req.headers['proxy-authorization'], authority[1]!, Number(authority[2]));
    } catch (err) {
      return answerRefusal(err, (status, headers, text) => {
        const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
        client.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n${lines}Connection: close\r\n\r\n${text}`);
      });
    }
    const upstream = net.connect({ host: admitted.address, port: Number(authority[2]) });
    meter(admitted, client as net.Socket, upstream);
    upstream.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.once('error', () => client.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n'));
    client.once('close', () => upstream.destroy());
  });

  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  function answerRefusal(err: unknown, send: (status: number, headers: Record<string, string>, text: string) => void): void {
    if (!(err instanceof Refusal)) {
      logger.error('egress proxy failure', { error: (err as Error).message });
      send(500, { 'content-type': 'text/plain' }, 'The egress proxy failed\n');
      return;
    }
    if (err.status === 407) record('refused', 'credential', {});
    const headers: Record<string, string> = { 'content-type': 'text/plain', 'x-egress-refused': err.reason };
    if (err.status === 407) headers['proxy-authenticate'] = 'Basic realm="run-python-code egress"';
    send(err.status, headers, `${err.message}\n`);
  }

  return server;
}
