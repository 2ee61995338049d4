import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface Origins {
  /** The TLS server's self-signed certificate (PEM): a sandbox trusts it with `ssl.create_default_context(cadata=cert)`. */
  cert: string;
  ports: { http: number; https: number };
  close(): Promise<void>;
}

/**
 * The servers egress sandboxes reach, both on 127.0.0.1 (the address EGRESS_RESOLVE pins their
 * name to): a plain HTTP one answering `plain`, and a TLS one answering `secret` with an openssl
 * self-signed certificate for `name`, whose files are written to `dir`.
 */
export async function startOrigins(dir: string, name: string, plain: http.RequestListener, secret: http.RequestListener): Promise<Origins> {
  const [keyFile, certFile] = [path.join(dir, 'key.pem'), path.join(dir, 'cert.pem')];
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${name}`,
    '-addext', `subjectAltName=DNS:${name}`, '-keyout', keyFile, '-out', certFile,
  ], { stdio: 'ignore' });
  const cert = readFileSync(certFile, 'utf8');
  const servers = [http.createServer(plain), https.createServer({ key: readFileSync(keyFile), cert }, secret)];
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))));
  const [httpPort, httpsPort] = servers.map((s) => (s.address() as AddressInfo).port);
  return {
    cert,
    ports: { http: httpPort!, https: httpsPort! },
    close: async () => {
      await Promise.all(servers.map((s) => new Promise((r) => (s.close(r), s.closeAllConnections()))));
    },
  };
}
