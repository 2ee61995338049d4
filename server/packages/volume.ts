import { createHash, randomUUID } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.js';
import { TENANT_ID_SOURCE } from '../tenancy/tenant-id.js';

/** The label that names the deployment a packages volume belongs to. */
export const DEPLOYMENT_LABEL = 'run-python-code.deployment';
/** Where an operator's BASE_DIR keeps its deployment id (beside `workspaces/`, so no tenant's name). */
export const DEPLOYMENT_FILE = 'deployment-id';
const DEPLOYMENT_ID = /^[A-Za-z0-9_.-]{1,64}$/;
/** Hex digits of the id's SHA-256 in a volume's name: fixed length, so prefix + key + '-' + tenant reads one way. */
const KEY_DIGITS = 12;

/**
 * Which deployment this server is, so that servers on one engine never share a packages volume:
 * with an operator's BASE_DIR, the id kept in it (made once, then read); with the temporary
 * BASE_DIR of an unconfigured start, INSTANCE_ID, so that restarts keep their packages and make no
 * new volumes. BASE_DIR wins because packages belong with the workspaces they serve, and because
 * INSTANCE_ID is fixed in docker-compose.yml for every project while each project's BASE_DIR is a
 * volume of its own.
 */
export function deploymentId(config: Config): string {
  if (config.baseDirTemporary) return config.instanceId;
  const file = path.join(config.baseDir, DEPLOYMENT_FILE);
  mkdirSync(config.baseDir, { recursive: true });
  // Written aside, then linked in place: a server starting at the same moment reads a whole id or none.
  const temp = `${file}.${randomUUID()}`;
  writeFileSync(temp, `${randomUUID()}\n`, { mode: 0o644 });
  try {
    linkSync(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    rmSync(temp, { force: true });
  }
  const id = readFileSync(file, 'utf8').trim();
  if (!DEPLOYMENT_ID.test(id)) throw new Error(`${file} does not hold a deployment id (1-64 of A-Z a-z 0-9 _ . -)`);
  return id;
}

/** The packages volumes of one deployment: their names and labels. */
export class PackagesVolumes {
  readonly labels: Record<string, string>;
  private readonly key: string;

  constructor(
    private readonly prefix: string,
    readonly deployment: string,
  ) {
    this.key = deploymentKey(deployment);
    this.labels = { [DEPLOYMENT_LABEL]: deployment };
  }

  /** The Docker volume holding a tenant's packages. */
  name(tenant: string): string {
    return `${this.prefix}${this.key}-${tenant}`;
  }

  /**
   * The Docker volume of one tenant's set of declared dependencies (`set`: the set's hash). Its
   * name cannot be a packages volume's (their key is hex, never `deps-`), nor tell whose it is.
   */
  depsName(tenant: string, set: string): string {
    return `${this.prefix}deps-${this.key}-${createHash('sha256').update(`${tenant}\0${set}`).digest('hex').slice(0, DEPS_DIGITS)}`;
  }
}

const DEPS_DIGITS = 24;

/** Every dependencies volume name with this prefix: the deployment's key (group 1), then the set's digest. */
export function depsVolumePattern(prefix: string): RegExp {
  return new RegExp(`^${escaped(prefix)}deps-([0-9a-f]{${KEY_DIGITS}})-[0-9a-f]{${DEPS_DIGITS}}$`);
}

export function deploymentKey(deployment: string): string {
  return createHash('sha256').update(deployment).digest('hex').slice(0, KEY_DIGITS);
}

/** Every packages volume name with this prefix: the deployment's key (group 1), then a tenant. */
export function packagesVolumePattern(prefix: string): RegExp {
  return new RegExp(`^${escaped(prefix)}([0-9a-f]{${KEY_DIGITS}})-${TENANT_ID_SOURCE}$`);
}

const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
