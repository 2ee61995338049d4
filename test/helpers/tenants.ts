import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** How a tenants file names a key: its SHA-256. */
export const keyHash = (key: string) => `sha256:${createHash('sha256').update(key).digest('hex')}`;

/** A tenants file in a new directory: each tenant's key is `<name>-key`; its limits a YAML flow map, or ''. */
export function tenantsFile(tenants: Record<string, string>): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'rpc-tenants-')), 'tenants.yaml');
  const entries = Object.entries(tenants).map(
    ([name, limits]) => `  ${name}:\n    keys: ["${keyHash(`${name}-key`)}"]\n${limits ? `    limits: ${limits}\n` : ''}`,
  );
  writeFileSync(file, `tenants:\n${entries.join('')}`);
  return file;
}

/** A request with the API key `key`: GET without a body, else POST of JSON (a string is sent as it is). */
export async function asTenant(url: string, key: string, route: string, body?: unknown) {
  const res = await fetch(url + route, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}
