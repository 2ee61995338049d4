import http from 'node:http';

export interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/**
 * One request with exactly the headers given, Host included (fetch always sends the URL's own
 * Host), as a browser after DNS rebinding or a web page would send it; `path`, when given, is sent
 * as it is (a URL would lose its `..`).
 */
export function rawRequest(
  url: string,
  { method = 'GET', headers = {}, body, socketPath, path }: { method?: string; headers?: Record<string, string>; body?: string; socketPath?: string; path?: string } = {},
): Promise<RawAnswer> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        ...(socketPath ? { socketPath } : { host: target.hostname, port: target.port }),
        method,
        path: path ?? target.pathname + target.search,
        headers: { ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }), ...headers },
        agent: false,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
