import net from 'node:net';

export interface SlowBody {
  /** The HTTP status the server answered, once it has (null while it has not). */
  status: number | null;
  /** Everything the server sent back. */
  response: string;
  /** True once the server (or the network) closed the socket. */
  closed: boolean;
}

export interface SlowBodyAttack {
  bodies: SlowBody[];
  /** Resolves once every socket has either handed its bytes to the kernel or been answered or closed. */
  sent: Promise<void>;
  /** Resolves once every socket has been closed by the server. */
  allClosed(): Promise<void>;
  /** Destroys every socket still open (the client giving up). */
  destroy(): void;
}

/**
 * `count` raw connections that each send a POST's headers declaring `declared` bytes of JSON body,
 * then `send` of them, and then nothing: the client that never finishes its upload.
 */
export function slowBodies(
  url: string,
  { count, declared, send, path = '/execute', key }: { count: number; declared: number; send: number; path?: string; key?: string },
): SlowBodyAttack {
  const { hostname, port } = new URL(url);
  const payload = Buffer.alloc(send, 'x');
  payload.write('{"code": "', 0);
  const head = [
    `POST ${path} HTTP/1.1`,
    `Host: ${hostname}:${port}`,
    'Content-Type: application/json',
    `Content-Length: ${declared}`,
    ...(key ? [`Authorization: Bearer ${key}`] : []),
    '',
    '',
  ].join('\r\n');
  const sockets: net.Socket[] = [];
  const bodies: SlowBody[] = [];
  const closes: Promise<void>[] = [];
  const sends: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const body: SlowBody = { status: null, response: '', closed: false };
    const socket = net.connect(Number(port), hostname);
    socket.on('data', (chunk: Buffer) => {
      body.response += chunk.toString('latin1');
      body.status ??= Number(/^HTTP\/1\.1 (\d{3})/.exec(body.response)?.[1] ?? NaN) || null;
    });
    socket.on('error', () => undefined); // writes after the server's answer fail: expected
    closes.push(new Promise((resolve) => socket.once('close', () => {
      body.closed = true;
      resolve();
    })));
    sends.push(new Promise((resolve) => {
      socket.once('close', () => resolve());
      socket.once('connect', () => socket.write(head, () => socket.write(payload, () => resolve())));
    }));
    sockets.push(socket);
    bodies.push(body);
  }
  return {
    bodies,
    sent: Promise.all(sends).then(() => undefined),
    allClosed: () => Promise.all(closes).then(() => undefined),
    destroy: () => sockets.forEach((s) => s.destroy()),
  };
}
