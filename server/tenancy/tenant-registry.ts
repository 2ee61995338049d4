import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { ConfigError, type Config } from '../config.js';
import { ServiceError } from '../errors.js';
import type { Logger } from '../logger.js';
import { DEFAULT_TENANT, TENANT_ID_PATTERN } from './tenant-id.js';
import { defaultLimits, limitsSchema, type TenantLimits } from './limits.js';

export interface Tenant {
  id: string;
  keyHashes: Buffer[];
  limits: TenantLimits;
}

const KEY_HASH = '^(sha256:)?[0-9a-f]{64}$';

const tenantsFileSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    defaults: limitsSchema,
    tenants: {
      type: 'object',
      propertyNames: { pattern: TENANT_ID_PATTERN },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['keys'],
        properties: {
          keys: { type: 'array', minItems: 1, items: { type: 'string', pattern: KEY_HASH } },
          limits: limitsSchema,
        },
      },
    },
  },
};

const limitsFileSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    defaults: limitsSchema,
    tenants: { type: 'object', propertyNames: { pattern: TENANT_ID_PATTERN }, additionalProperties: limitsSchema },
  },
};

const ajv = new Ajv({ allErrors: false, strict: false });
const validateTenantsFile = ajv.compile(tenantsFileSchema);
const validateLimitsFile = ajv.compile(limitsFileSchema);

type Partial = Record<string, unknown>;
interface TenantsFile {
  defaults?: Partial;
  tenants?: Record<string, { keys: string[]; limits?: Partial }>;
}
interface LimitsFile {
  defaults?: Partial;
  tenants?: Record<string, Partial>;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest();

/** A tenants or limits file that cannot be used: a bad setting, like a bad environment variable. */
export class RegistryError extends ConfigError {}

/** Reads and validates one YAML/JSON file; the error names the file and the field. */
function readFile<T>(file: string, validate: typeof validateTenantsFile): T {
  let data: unknown;
  try {
    data = parse(readFileSync(file, 'utf8')) ?? {};
  } catch (err) {
    throw new RegistryError(`${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!validate(data)) {
    const e = validate.errors![0]!;
    const where = e.instancePath.replace(/^\//, '').replace(/\//g, '.') || '(top level)';
    const extra = e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : '';
    if (e.propertyName !== undefined) {
      throw new RegistryError(
        `${file}: ${where}: tenant name ${JSON.stringify(e.propertyName)} is not allowed: it must start with a letter or a ` +
          'digit and hold only A-Z a-z 0-9 _ . - (64 at most)',
      );
    }
    throw new RegistryError(`${file}: ${where}: ${e.message}${extra}`);
  }
  return data as T;
}

/** Builds the tenant table from the settings and the two files (pure but for reading them). */
export function loadTenants(config: Config): Map<string, Tenant> {
  const tenantsFile: TenantsFile = config.tenantsFile ? readFile(config.tenantsFile, validateTenantsFile) : {};
  const limitsFile: LimitsFile = config.limitsFile ? readFile(config.limitsFile, validateLimitsFile) : {};
  const defaults = { ...defaultLimits(config), ...tenantsFile.defaults, ...limitsFile.defaults } as TenantLimits;
  const tenants = new Map<string, Tenant>();
  const add = (id: string, keyHashes: Buffer[], own: Partial = {}) => {
    if (tenants.has(id)) throw new RegistryError(`tenant ${id} is defined twice`);
    tenants.set(id, { id, keyHashes, limits: { ...defaults, ...own, ...limitsFile.tenants?.[id] } as TenantLimits });
  };
  for (const key of config.apiKeys) {
    const hash = sha256(key);
    add(`key-${hash.toString('hex').slice(0, 12)}`, [hash]);
  }
  for (const [id, entry] of Object.entries(tenantsFile.tenants ?? {})) {
    add(id, entry.keys.map((k) => Buffer.from(k.replace(/^sha256:/, ''), 'hex')), entry.limits);
  }
  for (const tenant of tenants.values()) checkRuntime(config, tenant);
  if (tenants.size === 0) {
    // A tenants file that names nobody (emptied, or caught half-saved) must never open the server.
    if (config.tenantsFile) throw new RegistryError(`${config.tenantsFile}: no tenants with keys`);
    add(DEFAULT_TENANT, []);
  }
  return tenants;
}

/** A tenant's runtime must be one the settings name (the Docker proxy creates no other), and gVisor has no network. */
function checkRuntime(config: Config, { id, limits }: Tenant): void {
  if (!config.sandboxRuntimes.includes(limits.runtime)) {
    throw new RegistryError(`tenant ${id}: runtime ${limits.runtime} is not one of SANDBOX_RUNTIMES (${config.sandboxRuntimes.join(',')})`);
  }
  if (limits.runtime === 'runsc' && limits.egress.length > 0) {
    throw new RegistryError(
      `tenant ${id}: egress needs runtime runc: runsc is registered with --network=none, so a gVisor sandbox has no network to reach the egress proxy`,
    );
  }
}

function needsKeys(tenants: Map<string, Tenant>): boolean {
  return [...tenants.values()].some((t) => t.keyHashes.length > 0);
}

/**
 * The tenants and their limits, reloaded on SIGHUP (see index.ts) and when a file changes. A
 * reload that fails keeps what was loaded and logs why. Requests take their limits when they
 * start, so a reload never changes one already running.
 */
export class TenantRegistry {
  private tenants: Map<string, Tenant>;
  /** True when callers must present a key; derived once per load, read on every request. */
  keysRequired: boolean;
  private watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
  ) {
    this.tenants = loadTenants(config); // at start-up a bad file throws: the server does not start
    this.keysRequired = needsKeys(this.tenants);
  }

  /** The tenant whose key this is; every key of every tenant is compared, in constant time. */
  authenticate(key: string): Tenant | null {
    const presented = sha256(key);
    let found: Tenant | null = null;
    for (const tenant of this.tenants.values()) {
      for (const hash of tenant.keyHashes) {
        if (timingSafeEqual(presented, hash)) found ??= tenant;
      }
    }
    return found;
  }

  all(): Tenant[] {
    return [...this.tenants.values()];
  }

  /** The tenant as configured now, or undefined when it is not (any more). */
  find(id: string): Tenant | undefined {
    return this.tenants.get(id);
  }

  get(id: string): Tenant {
    const tenant = this.tenants.get(id);
    // A key authenticated just before a reload that removed its tenant.
    if (!tenant) throw new ServiceError('unauthorized', 'The tenant of this API key is no longer configured');
    return tenant;
  }

  reload(reason: string): boolean {
    try {
      const tenants = loadTenants(this.config);
      this.tenants = tenants;
      this.keysRequired = needsKeys(tenants);
      this.logger.info('tenants and limits reloaded', { reason, tenants: [...this.tenants.keys()] });
      return true;
    } catch (err) {
      this.logger.error('reload failed; keeping the limits in force', { reason, error: (err as Error).message });
      return false;
    }
  }

  /** Watches the files' directories (editors often replace a file rather than write it). */
  watch(): void {
    for (const file of [this.config.tenantsFile, this.config.limitsFile].filter(Boolean)) {
      const watcher = watch(path.dirname(file), (_event, name) => {
        if (name !== path.basename(file)) return;
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => this.reload(`${file} changed`), 150);
      });
      this.watchers.push(watcher);
    }
  }

  close(): void {
    clearTimeout(this.debounce);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }
}
