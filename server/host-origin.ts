import type { NextFunction, Request, Response } from 'express';
import { forbidden } from './errors.js';

/**
 * Which Host and Origin headers may reach the server. A browser lets any web page send requests to
 * loopback: across origins (a form post, a no-cors fetch, a preflighted one if CORS says yes), or
 * as its own origin once the page's name resolves to 127.0.0.1 (DNS rebinding). The Host header
 * names what the browser thinks it is talking to, so refusing names that are not ours stops
 * rebinding; refusing foreign Origins stops the cross-origin requests, preflight or not.
 */

/** Names that only ever mean this machine: no DNS answer of an attacker's can produce them. */
export const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];

// A host name, an IPv4 address or a bracketed IPv6 address; the port is separate.
const NAME = /^(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)*\.?)$/;

/** The name in a Host header, lowercased, without its port; null when it is not a plain host[:port]. */
export function hostName(header: string | undefined): string | null {
  const match = /^(.+?)(?::(\d{1,5}))?$/.exec((header ?? '').trim().toLowerCase());
  return match && NAME.test(match[1]!) ? match[1]! : null;
}

/** Whether a Host header names this server: a loopback name, or one of `allowed` (`*`: any). */
export function hostAllowed(header: string | undefined, allowed: readonly string[]): boolean {
  if (allowed.includes('*')) return true;
  const name = hostName(header);
  return name !== null && (LOOPBACK_HOSTS.includes(name) || allowed.includes(name));
}

/** A setting's comma-separated host names (no ports), lowercased; `*` alone allows any. */
export function parseHostList(raw: string): string[] {
  const names = raw.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  if (names.includes('*')) {
    if (names.length > 1) throw new Error('* allows every host name: list nothing beside it');
    return names;
  }
  const bad = names.find((n) => !NAME.test(n));
  if (bad !== undefined) throw new Error(`${JSON.stringify(bad)} is not a host name (no scheme, port or path)`);
  return names;
}

/** A setting's comma-separated origins, as browsers send them (scheme://host[:port]); `*` alone allows any. */
export function parseOriginList(raw: string): string[] {
  const entries = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.includes('*')) {
    if (entries.length > 1) throw new Error('* allows every origin: list nothing beside it');
    return entries;
  }
  return entries.map((entry) => {
    const origin = originOf(entry);
    if (origin === null) throw new Error(`${JSON.stringify(entry)} is not an origin such as https://app.example`);
    return origin;
  });
}

/** The serialized origin of an http(s) URL that is nothing but an origin; null otherwise. */
function originOf(value: string): string | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  const bare = url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password;
  return (url.protocol === 'http:' || url.protocol === 'https:') && bare ? url.origin : null;
}

/**
 * Whether a request's Origin may call: a loopback origin (a page of this machine), the server's
 * own origin (its Host, already checked: /docs and the server's pages), or one of `listed`.
 */
export function originAllowed(origin: string, host: string | undefined, listed: readonly string[]): boolean {
  if (listed.includes('*')) return true;
  const own = originOf(origin);
  if (own === null) return false; // "null" (sandboxed frames, file:) or anything malformed
  const url = new URL(own);
  return LOOPBACK_HOSTS.includes(url.hostname) || url.host === (host ?? '').trim().toLowerCase() || listed.includes(own);
}

/** CORS_ORIGINS in force: as set, else none without keys and * with them (a browser never sends the key by itself). */
export function originsInForce(corsOrigins: readonly string[] | null, keysRequired: boolean): readonly string[] {
  return corsOrigins ?? (keysRequired ? ['*'] : []);
}

export interface HostOriginPolicy {
  /** ALLOWED_HOSTS: names accepted beside the loopback ones. */
  allowedHosts: readonly string[];
  /** CORS_ORIGINS as it is in force now (it may follow whether keys are configured). */
  origins: () => readonly string[];
}

/**
 * One middleware for every route (REST, /mcp, the docs, /metrics): a foreign Host or Origin is a
 * 403 before anything else looks at the request, and gets no CORS headers.
 */
export function guardHostAndOrigin(policy: HostOriginPolicy) {
  return (req: Request, _res: Response, next: NextFunction) => {
    const host = req.headers.host;
    if (!hostAllowed(host, policy.allowedHosts)) {
      return next(
        forbidden(
          `Host ${JSON.stringify(host ?? '')} is not allowed: this server answers loopback names (${LOOPBACK_HOSTS.join(', ')}) and the names listed in ALLOWED_HOSTS`,
        ),
      );
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !originAllowed(origin, host, policy.origins())) {
      return next(
        forbidden(
          `Origin ${JSON.stringify(origin)} is not allowed: this server answers pages of loopback origins, its own, and the origins listed in CORS_ORIGINS`,
        ),
      );
    }
    next();
  };
}
