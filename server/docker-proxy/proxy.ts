import http from 'node:http';
import { pipeline, type Duplex } from 'node:stream';
import type { Logger } from '../logger.js';
import { hostAllowed } from '../host-origin.js';
import { LABEL } from '../sandbox/container-spec.js';
import { checkContainerCreate, checkNetworkCreate, checkVolumeCreate, routeRequest, type Admitted, type ProxyPolicy } from './policy.js';

export interface DockerProxyOptions {
  /** The engine's socket, the only way to it. */
  upstream: string;
  policy: ProxyPolicy;
  /** Host names answered beside the loopback ones (DOCKER_PROXY_ALLOWED_HOSTS). */
  allowedHosts: readonly string[];
  logger: Logger;
}

/** Create bodies are small JSON; anything bigger is not the server's. */
const MAX_BODY_BYTES = 256 * 1024;
/** How long the engine may take to answer an attach (it answers at once when the container exists). */
const UPGRADE_TIMEOUT_MS = 30_000;
const EMPTY = Buffer.alloc(0);
/** Container ids known to be sandboxes; past this many the oldest are looked up again when used. */
const MAX_KNOWN = 10_000;

class Refused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * An HTTP server that speaks the Docker Engine API to the API server and forwards to the engine's
 * socket only what policy.ts allows. Responses stream through untouched, attach streams included
 * (the connection is hijacked after a 101, and bytes are relayed both ways, half-closes too).
 */
export function createDockerProxy(options: DockerProxyOptions): http.Server {
  const { upstream, policy, allowedHosts, logger } = options;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const sandboxes = new SandboxIds(upstream, agent);

  /**
   * Checks a request; resolves to the body the engine gets, or throws Refused. The client's body is
   * never passed on as it came: create bodies are checked and written anew, all others dropped
   * (the engine ignores them on these calls, except on old API versions, which are refused).
   */
  const admit = async (req: http.IncomingMessage, route: Admitted): Promise<Buffer> => {
    const body = await readBody(req);
    if (body.length > 0 && !isJson(req)) throw notJson(req);
    switch (route.kind) {
      case 'container':
        await sandboxes.mustBeSandbox(route.id);
        return EMPTY;
      case 'create-container':
      case 'create-network':
      case 'create-volume': {
        let parsed: unknown;
        try {
          parsed = JSON.parse(body.toString('utf8'));
        } catch {
          throw new Refused(400, 'the body must be JSON');
        }
        const check = { 'create-container': checkContainerCreate, 'create-network': checkNetworkCreate, 'create-volume': checkVolumeCreate }[route.kind];
        const problem = check(parsed, policy);
        if (problem) throw new Refused(403, problem);
        // Written anew: Go's decoder reads duplicate keys differently from JSON.parse (a second
        // "HostConfig" would be merged into the first, not replace it).
        return Buffer.from(JSON.stringify(parsed));
      }
      case 'forward':
        return EMPTY;
    }
  };

  const refuse = (req: http.IncomingMessage, err: unknown): { status: number; body: string } => {
    const status = err instanceof Refused ? err.status : 502;
    const reason = err instanceof Error ? err.message : String(err);
    if (status === 502) logger.error('docker proxy: the engine did not answer', { method: req.method, path: req.url, error: reason });
    else logger.warn('docker proxy refused a call', { method: req.method, path: req.url, reason });
    const message = status === 502 ? `docker proxy: the engine did not answer: ${reason}` : `docker proxy refused ${req.method} ${pathOf(req)}: ${reason}`;
    return { status, body: JSON.stringify({ message }) };
  };

  const server = http.createServer((req, res) => {
    const route = routeRequest(req.method ?? '', req.url ?? '', policy);
    void (async () => {
      fromTheServer(req, allowedHosts);
      if (route.kind === 'refuse') throw new Refused(403, route.reason);
      // The server attaches only by upgrading; a plain attach would hijack a pooled connection.
      if (route.kind === 'container' && route.attach) throw new Refused(403, 'attach must be an upgrade');
      const body = await admit(req, route);
      const upstreamReq = http.request({ socketPath: upstream, agent, method: req.method, path: route.target, headers: bodyHeaders(req.headers, body) });
      upstreamReq.on('response', (upstreamRes) => {
        const status = upstreamRes.statusCode ?? 502;
        if (route.kind === 'container' && route.remove && (status < 300 || status === 404)) sandboxes.forget(route.id);
        if (route.kind === 'create-container' && status === 201) {
          // The new container's id, remembered so that its later calls need no lookup.
          void collect(upstreamRes).then((created) => {
            try {
              const id = (JSON.parse(created.toString('utf8')) as { Id?: unknown }).Id;
              if (typeof id === 'string') sandboxes.remember(id);
            } catch {
              // not JSON: relayed as it is, and the id is looked up when used
            }
            res.writeHead(status, upstreamRes.headers).end(created);
          }, (err: Error) => res.destroy(err));
          return;
        }
        res.writeHead(status, upstreamRes.headers);
        // A client that goes away (a wait it gave up on) ends the engine's side too.
        pipeline(upstreamRes, res, () => undefined);
      });
      upstreamReq.on('error', (err) => {
        if (res.headersSent) res.destroy(err);
        else {
          const { status, body: message } = refuse(req, err);
          res.writeHead(status, { 'content-type': 'application/json' }).end(message);
        }
      });
      res.on('close', () => {
        if (!res.writableFinished) upstreamReq.destroy();
      });
      upstreamReq.end(body);
    })().catch((err: unknown) => {
      const { status, body } = refuse(req, err);
      res.writeHead(status, { 'content-type': 'application/json', connection: 'close' }).end(body);
    });
  });

  // Attach: the client asks to upgrade; once the engine answers 101, the two sockets are spliced.
  // Until then no byte of the client's passes but the request itself, so a refused or failed
  // attach can never carry a second, unchecked request to the engine.
  server.on('upgrade', (req: http.IncomingMessage, client: Duplex, head: Buffer) => {
    client.on('error', () => client.destroy());
    const route = routeRequest(req.method ?? '', req.url ?? '', policy);
    void (async () => {
      fromTheServer(req, allowedHosts);
      if (route.kind === 'refuse') throw new Refused(403, route.reason);
      if (route.kind !== 'container' || !route.attach) throw new Refused(403, 'only attach is upgraded');
      await sandboxes.mustBeSandbox(route.id);
      const early = await afterBody(req, client, head);
      // The body was consumed above, so the engine is sent none.
      const headers = { ...without(req.headers, 'transfer-encoding'), 'content-length': '0' };
      const upstreamReq = http.request({ socketPath: upstream, agent: false, method: req.method, path: route.target, headers });
      upstreamReq.setTimeout(UPGRADE_TIMEOUT_MS, () => upstreamReq.destroy(new Error('the engine did not answer the attach')));
      upstreamReq.on('upgrade', (upstreamRes, engine, engineHead) => {
        upstreamReq.setTimeout(0);
        client.write(statusBlock(upstreamRes));
        if (engineHead.length > 0) client.write(engineHead);
        if (early.length > 0) engine.write(early);
        // Bytes flow both ways, half-closes included; when either side is gone, so is the other.
        engine.on('error', () => client.destroy());
        client.on('error', () => engine.destroy());
        engine.on('close', () => client.destroy());
        client.on('close', () => engine.destroy());
        engine.pipe(client);
        client.pipe(engine);
      });
      upstreamReq.on('response', (upstreamRes) => {
        // Not upgraded (an error answer): relay it and close.
        void collect(upstreamRes).then(
          (body) => client.end(rawResponse(upstreamRes.statusCode ?? 502, body.toString('utf8'))),
          () => client.destroy(),
        );
      });
      upstreamReq.on('error', (err) => {
        const { status, body } = refuse(req, err);
        client.end(rawResponse(status, body));
      });
      upstreamReq.end();
    })().catch((err: unknown) => {
      const { status, body } = refuse(req, err);
      client.end(rawResponse(status, body));
    });
  });

  // The API keeps its connections to us alive between calls; closing them first (Node's default
  // is 5 s) would race its next request on the same socket.
  server.keepAliveTimeout = 10 * 60_000;
  server.headersTimeout = server.keepAliveTimeout + 1000;
  server.on('close', () => agent.destroy());
  return server;
}

/** Which container ids are sandboxes: those created through the proxy, or found labelled as ours. */
class SandboxIds {
  private readonly known = new Set<string>();

  constructor(
    private readonly upstream: string,
    private readonly agent: http.Agent,
  ) {}

  remember(id: string): void {
    this.known.add(id);
    if (this.known.size > MAX_KNOWN) this.known.delete(this.known.values().next().value!);
  }

  forget(id: string): void {
    this.known.delete(id);
  }

  /** Throws Refused unless the container is a sandbox (404 when there is no such container). */
  async mustBeSandbox(id: string): Promise<void> {
    if (this.known.has(id)) return;
    const { status, body } = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
      http
        .get({ socketPath: this.upstream, agent: this.agent, path: `/containers/${encodeURIComponent(id)}/json` }, (res) => {
          collect(res).then((body) => resolve({ status: res.statusCode ?? 502, body }), reject);
        })
        .on('error', reject);
    });
    if (status === 404) throw new Refused(404, `No such container: ${id}`);
    if (status !== 200) throw new Error(`inspecting ${id} answered ${status}`);
    const info = JSON.parse(body.toString('utf8')) as { Id?: string; Config?: { Labels?: Record<string, string> | null } };
    // The full id must be the container's own (routes take nothing else), and only it is cached.
    if (info.Config?.Labels?.[LABEL] !== '1' || info.Id !== id) throw new Refused(403, `container ${id} is not a sandbox`);
    this.remember(id);
  }
}

/**
 * What a web page could not have sent: a page's request carries an Origin (any cross-origin
 * request but a simple GET does), and after DNS rebinding its Host is the page's own name.
 */
function fromTheServer(req: http.IncomingMessage, allowedHosts: readonly string[]): void {
  if (req.headers.origin !== undefined) throw new Refused(403, 'requests from web pages (with an Origin header) are refused');
  if (!hostAllowed(req.headers.host, allowedHosts)) {
    throw new Refused(403, `Host ${JSON.stringify(req.headers.host ?? '')} is not a loopback name nor listed in DOCKER_PROXY_ALLOWED_HOSTS`);
  }
}

/** Bodies must be JSON, as the server sends them: a page can send text/plain or a form without a preflight, never JSON. */
function isJson(req: http.IncomingMessage): boolean {
  return /^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '');
}

function notJson(req: http.IncomingMessage): Refused {
  return new Refused(415, `a body must be application/json, not ${JSON.stringify(req.headers['content-type'] ?? '')}`);
}

function pathOf(req: http.IncomingMessage): string {
  return (req.url ?? '').split('?')[0]!;
}

const CHUNKED_END = Buffer.from('0\r\n\r\n');

/**
 * Consumes an attach request's body, which the engine ignores and is not sent: docker-modem sends
 * its options as JSON (with a length), or nothing, chunked (the closing chunk alone). Resolves to
 * the bytes the client sent after it, which belong to the stream and wait for the upgrade; the
 * client is left paused.
 */
function afterBody(req: http.IncomingMessage, client: Duplex, head: Buffer): Promise<Buffer> {
  const chunked = /chunked/i.test(String(req.headers['transfer-encoding'] ?? ''));
  const length = chunked ? CHUNKED_END.length : Number(req.headers['content-length'] ?? 0);
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_BODY_BYTES) {
    return Promise.reject(new Refused(400, 'the attach body must be small'));
  }
  if (!chunked && length > 0 && !isJson(req)) return Promise.reject(notJson(req));
  return new Promise((resolve, reject) => {
    let got = head;
    const settle = () => {
      if (got.length < length) return false;
      client.off('data', onData).off('end', onEnd).off('close', onEnd).pause();
      if (chunked && !got.subarray(0, length).equals(CHUNKED_END)) reject(new Refused(400, 'a chunked attach body must be empty'));
      else resolve(got.subarray(length));
      return true;
    };
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      settle();
    };
    const onEnd = () => reject(new Refused(400, 'the request ended early'));
    if (!settle()) client.on('data', onData).on('end', onEnd).on('close', onEnd);
  });
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Refused(413, `the body is over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

/** The client's headers, describing the body the proxy sends instead of the client's. */
function bodyHeaders(headers: http.IncomingHttpHeaders, body: Buffer): http.OutgoingHttpHeaders {
  const rest = without(headers, 'transfer-encoding');
  return body.length > 0 ? { ...rest, 'content-type': 'application/json', 'content-length': body.length } : { ...without(rest, 'content-type'), 'content-length': 0 };
}

function without(headers: http.IncomingHttpHeaders, name: string): http.IncomingHttpHeaders {
  const copy = { ...headers };
  delete copy[name];
  return copy;
}

function statusBlock(res: http.IncomingMessage): string {
  const lines = [`HTTP/1.1 ${res.statusCode ?? 502} ${res.statusMessage ?? ''}`];
  for (let i = 0; i < res.rawHeaders.length; i += 2) lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
  return lines.join('\r\n') + '\r\n\r\n';
}

function rawResponse(status: number, body: string): string {
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}
