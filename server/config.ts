import { mkdtempSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseHostList, parseOriginList } from './host-origin.js';
import { MAX_PRELOAD, MODULE_NAME } from './sandbox/container-spec.js';
import { RUNTIMES, type Runtime } from './sandbox/oci-runtime.js';

/**
 * Every setting, declared once: environment variable, description, default and a parser that
 * validates. A bad value stops start-up with a message naming the variable. The README's
 * settings table lists the same entries (a test keeps them in step).
 */
export interface Setting<T> {
  env: string;
  description: string;
  default: T | (() => T);
  parse: (raw: string) => T;
  show?: string;
  /** The value when the variable is set but empty; without it, empty means the default (compose passes unset variables as empty). */
  whenEmpty?: T;
}

export class ConfigError extends Error {}

/** The range of a value, as JSON Schema says it: settings parse with it, limit files validate with it. */
export type Bounds =
  | { type: 'integer' | 'number'; minimum: number; maximum: number }
  | { type: 'boolean' }
  | { type: 'string'; enum: readonly string[] }
  | { type: 'array'; maxItems: number; items: { type: 'string'; pattern: string } };

/**
 * A setting that is the default of a tenant limit (`limit`: the limit's name in the tenants and
 * limits files and in GET /limits). Its bounds are declared here once: the setting's parser, the
 * files' schema (tenancy/limits.ts) and openapi.yaml's TenantLimits (held to them by a test).
 */
export interface LimitSetting<T> extends Setting<T> {
  limit: string;
  bounds: Bounds;
}

function limitSetting<T extends number | boolean | string | string[]>(
  limit: string,
  declared: Omit<Setting<T>, 'parse'>,
  bounds: Bounds,
): LimitSetting<T> {
  return { ...declared, parse: parserOf(bounds) as (raw: string) => T, limit, bounds };
}

function parserOf(bounds: Bounds): (raw: string) => unknown {
  switch (bounds.type) {
    case 'boolean':
      return boolean;
    case 'integer':
      return integer(bounds.minimum, bounds.maximum);
    case 'number':
      return decimal(bounds.minimum, bounds.maximum);
    case 'string':
      return oneOf(...bounds.enum);
    case 'array':
      return (raw: string) => {
        const items = list(raw);
        const pattern = new RegExp(bounds.items.pattern);
        const bad = items.find((item) => !pattern.test(item));
        if (bad !== undefined) throw new Error(`${JSON.stringify(bad)} is not a host name (a leading *. is allowed)`);
        if (items.length > bounds.maxItems) throw new Error(`expected at most ${bounds.maxItems} entries`);
        return items;
      };
  }
}

function boolean(raw: string): boolean {
  if (!['true', 'false'].includes(raw)) throw new Error('expected true or false');
  return raw === 'true';
}

export function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (raw: string): number => {
    const value = Number(raw);
    if (!/^\s*-?\d+\s*$/.test(raw) || value < min || value > max) {
      throw new Error(`expected a whole number from ${min} to ${max}`);
    }
    return value;
  };
}

function decimal(min: number, max: number) {
  return (raw: string): number => {
    const value = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(value) || value < min || value > max) {
      throw new Error(`expected a number from ${min} to ${max}`);
    }
    return value;
  };
}

function oneOf<T extends string>(...values: readonly T[]) {
  return (raw: string): T => {
    if (!(values as readonly string[]).includes(raw)) throw new Error(`expected one of ${values.join(', ')}`);
    return raw as T;
  };
}

export function text(raw: string): string {
  if (raw.trim() === '') throw new Error('must not be empty');
  return raw.trim();
}

function list(raw: string): string[] {
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

const MiB = 1024 * 1024;

/** A host name of an egress list: DNS labels, the last one starting with a letter (so no IP literal), maybe *. first. */
export const EGRESS_HOST_PATTERN = '^(\\*\\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$';

function parseResolve(raw: string): Record<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Error('expected a JSON object of names and addresses');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('expected a JSON object of names and addresses');
  const pins: Record<string, string> = {};
  for (const [name, address] of Object.entries(value)) {
    if (!new RegExp(EGRESS_HOST_PATTERN).test(name) || name.startsWith('*')) throw new Error(`${JSON.stringify(name)} is not a host name`);
    if (typeof address !== 'string' || isIP(address) === 0) throw new Error(`${name}: ${JSON.stringify(address)} is not an IP address`);
    pins[name] = address;
  }
  return pins;
}

/** PEP 503: lowercase, runs of -_. as one -. */
export function normalizePackageName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}

export const settings = {
  port: { env: 'PORT', description: 'TCP port of the HTTP API', default: 8083, parse: integer(0, 65535) },
  host: {
    env: 'HOST',
    description: 'Address to listen on. Loopback by default: the API runs code for whoever reaches it',
    default: '127.0.0.1',
    parse: text,
  },
  baseDir: {
    env: 'BASE_DIR',
    description: 'Server-side directory holding the workspaces (shown by /health)',
    default: () => mkdtempSync(path.join(os.tmpdir(), 'run-python-code-')),
    parse: (raw: string) => path.resolve(text(raw)),
    show: 'a new temporary directory',
  },
  apiKeys: {
    env: 'API_KEYS',
    description: 'Comma-separated API keys, one tenant each; when set, every endpoint but /, /health and the docs needs the header Authorization: Bearer followed by a key',
    default: [] as string[],
    parse: list,
    show: '(none: one open tenant)',
  },
  mcpApiKey: {
    env: 'MCP_API_KEY',
    description: 'For the stdio MCP server when keys are configured: the key of the tenant it acts as',
    default: '',
    parse: text,
    show: '(none)',
  },
  mcpResourceMaxBytes: {
    env: 'MCP_RESOURCE_MAX_BYTES',
    description: 'Largest workspace file an MCP client may read as a resource (resources/read); a larger one is refused, pointing to GET /files/{path}',
    default: 8 * MiB,
    parse: integer(1024, 1024 * MiB),
  },
  tenantsFile: {
    env: 'TENANTS_FILE',
    description: 'YAML or JSON file of tenants: their API key hashes and limits (reloaded on SIGHUP and on change)',
    default: '',
    parse: (raw: string) => path.resolve(text(raw)),
    show: '(none)',
  },
  limitsFile: {
    env: 'LIMITS_FILE',
    description: 'YAML or JSON file of default and per-tenant limits (reloaded on SIGHUP and on change)',
    default: '',
    parse: (raw: string) => path.resolve(text(raw)),
    show: '(none)',
  },
  maxConcurrent: {
    env: 'MAX_CONCURRENT',
    description: 'Sandboxes running at once, all tenants together; more wait in the queue',
    default: Math.max(2, 4 * os.availableParallelism()),
    parse: integer(1, 100000),
    show: '4 per core',
  },
  queueMax: {
    env: 'QUEUE_MAX',
    description: 'Requests that may wait for a slot, all tenants together, each tenant waiting sure of QUEUE_MAX / (tenants waiting) of them; beyond it: 429 with Retry-After',
    default: 64,
    parse: integer(0, 1000000),
  },
  queueTimeoutS: {
    env: 'QUEUE_TIMEOUT_S',
    description: 'Longest wait for a slot before a 429',
    default: 60,
    parse: integer(1, 86400),
  },
  poolSize: {
    env: 'POOL_SIZE',
    description: 'Warm containers kept ready per profile (tenant limits and packages); 0 turns the pool off',
    default: 2 * os.availableParallelism(),
    parse: integer(0, 1000),
    show: '2 per core',
  },
  poolProfiles: {
    env: 'POOL_PROFILES',
    description: 'Profiles kept warm at once (the least recently used beyond it are drained)',
    default: 4,
    parse: integer(1, 1000),
  },
  metricsPort: {
    env: 'METRICS_PORT',
    description: 'Serve /metrics on this port (on HOST) instead of the API port, outside API-key auth; 0 keeps it on the API port',
    default: 0,
    parse: integer(0, 65535),
    show: '0 (the API port)',
  },
  executionRetentionS: {
    env: 'EXECUTION_RETENTION_S',
    description: 'How long GET /executions/{id} can return a past result',
    default: 3600,
    parse: integer(0, 30 * 86400),
  },
  executionRetentionMb: {
    env: 'EXECUTION_RETENTION_MB',
    description: 'Memory kept for past results; when it is full, the oldest result of the tenant holding the most goes first, so each tenant keeps its share',
    default: 128,
    parse: integer(0, 1024 * 1024),
  },
  allowedHosts: {
    env: 'ALLOWED_HOSTS',
    description:
      'Comma-separated host names (the Host header, any port) answered beside localhost, 127.0.0.1 and [::1]; others get 403. * turns the check off, which without API keys lets any web page in through DNS rebinding',
    default: [] as string[],
    parse: parseHostList,
    show: '(none: loopback names only)',
  },
  corsOrigins: {
    env: 'CORS_ORIGINS',
    description:
      "Comma-separated origins (https://app.example) whose pages may call the API, beside loopback ones and the server's own; others get 403. * allows any, the default once API keys are configured",
    default: null as string[] | null,
    parse: parseOriginList,
    show: '(none without keys; * with keys)',
  },
  sandboxImage: {
    env: 'SANDBOX_IMAGE',
    description: 'Docker image the sandboxes run (built by npm run sandbox:build)',
    default: 'run-python-code-sandbox:latest',
    parse: text,
  },
  sandboxRuntime: limitSetting<Runtime>('runtime', {
    env: 'SANDBOX_RUNTIME',
    description: 'Default runtime: the OCI runtime of a tenant\'s sandboxes, runc (namespaces on the host\'s kernel) or runsc (gVisor: a kernel of its own in user space)',
    default: 'runc',
    whenEmpty: 'runc',
  }, { type: 'string', enum: RUNTIMES }),
  sandboxRuntimes: {
    env: 'SANDBOX_RUNTIMES',
    description: 'Comma-separated runtimes tenants may use (the Docker proxy creates no other); a tenant limit naming another stops the load',
    default: [] as Runtime[], // []: SANDBOX_RUNTIME alone, in loadConfig
    parse: (raw: string) => {
      const runtimes = list(raw).map(oneOf(...RUNTIMES));
      if (runtimes.length === 0) throw new Error(`expected some of ${RUNTIMES.join(', ')}`);
      return [...new Set(runtimes)];
    },
    show: 'SANDBOX_RUNTIME',
  },
  instanceId: {
    env: 'INSTANCE_ID',
    description: 'Names this server in container labels; stale containers with it are removed at start-up',
    default: '',
    parse: (raw: string) => {
      if (!/^[A-Za-z0-9_.-]{1,64}$/.test(raw)) throw new Error('expected 1-64 of A-Z a-z 0-9 _ . -');
      return raw;
    },
    show: '{hostname}-{port}',
  },
  defaultTimeoutS: {
    env: 'DEFAULT_TIMEOUT_S',
    description: "Timeout of an execution that does not ask for one (the seed's 90 s)",
    default: 90,
    parse: integer(1, 86400),
  },
  maxTimeoutS: limitSetting<number>('max_timeout_s', {
    env: 'MAX_TIMEOUT_S',
    description: 'Largest timeout a request may ask for; more is a 400 naming this limit',
    default: 300,
  }, { type: 'integer', minimum: 1, maximum: 86400 }),
  memoryMb: limitSetting<number>('memory_mb', {
    env: 'SANDBOX_MEMORY_MB',
    description: 'Memory cap per container in MiB (swap is capped to the same, so no swap)',
    default: 512,
  }, { type: 'integer', minimum: 32, maximum: 1024 * 1024 }),
  cpus: limitSetting<number>('cpus', { env: 'SANDBOX_CPUS', description: 'CPU cap per container, in cores', default: 1 }, { type: 'number', minimum: 0.01, maximum: 1024 }),
  pids: limitSetting<number>('pids', { env: 'SANDBOX_PIDS', description: 'Process/thread cap per container', default: 128 }, { type: 'integer', minimum: 8, maximum: 1 << 22 }),
  outputBytes: limitSetting<number>('output_bytes', {
    env: 'SANDBOX_OUTPUT_BYTES',
    description: 'Cap on stdout and on stderr (each) and on the returned value; beyond it the output is cut and the code stopped',
    default: MiB,
  }, { type: 'integer', minimum: 1024, maximum: 256 * MiB }),
  workspaceMb: limitSetting<number>('workspace_mb', {
    env: 'SANDBOX_WORKSPACE_MB',
    description: 'Size of the writable /workspace inside a container, and cap on the bytes (in 4 KiB pages) kept per workspace, all runs together',
    default: 100,
  }, { type: 'integer', minimum: 1, maximum: 64 * 1024 }),
  tmpMb: {
    env: 'SANDBOX_TMP_MB',
    description: 'Size of /tmp and of /dev/shm inside a container',
    default: 64,
    parse: integer(1, 64 * 1024),
  },
  maxFiles: {
    env: 'SANDBOX_MAX_FILES',
    description: 'Cap on the number of files and directories together in a workspace, inside a container and on the server',
    default: 10000,
    parse: integer(1, 1_000_000),
  },
  nofile: {
    env: 'SANDBOX_NOFILE',
    description: 'Open-file limit (RLIMIT_NOFILE) inside a container',
    default: 1024,
    parse: integer(16, 1 << 20),
  },
  maxBodyBytes: {
    env: 'MAX_BODY_BYTES',
    description: 'Largest request body accepted (a file upload, PUT /files/{path}, is bounded by workspace_mb instead); larger ones get 413',
    default: 2 * MiB,
    parse: integer(1024, 1024 * MiB),
  },
  receivingMaxBytes: {
    env: 'RECEIVING_MAX_BYTES',
    description: 'Request body bytes being received at once, all tenants together (a body counts its Content-Length, or MAX_BODY_BYTES without one); past it: 429 with Retry-After',
    default: 0, // 0: derived from MAX_BODY_BYTES in loadConfig
    parse: integer(1024, 1024 * 1024 * MiB),
    show: '32 × MAX_BODY_BYTES',
  },
  tenantReceivingMaxBytes: {
    env: 'TENANT_RECEIVING_MAX_BYTES',
    description: "Request body bytes being received at once for one tenant, counted like RECEIVING_MAX_BYTES; past it: 429 with Retry-After (other tenants' uploads go on)",
    default: 0, // 0: derived from MAX_BODY_BYTES in loadConfig
    parse: integer(1024, 1024 * 1024 * MiB),
    show: '8 × MAX_BODY_BYTES',
  },
  bodyTimeoutS: {
    env: 'BODY_TIMEOUT_S',
    description: 'Longest time a request body may take to arrive once its headers are in; then 408 and the connection is closed',
    default: 10,
    parse: integer(1, 3600),
  },
  headersTimeoutS: {
    env: 'HEADERS_TIMEOUT_S',
    description: "Longest time a client may take to send a request's headers; then 408 and the connection is closed",
    default: 30,
    parse: integer(1, 3600),
  },
  maxConnections: {
    env: 'MAX_CONNECTIONS',
    description: 'Open HTTP connections at once; past it a new connection is closed as soon as it is accepted (it has sent no request to answer yet)',
    default: 512,
    parse: integer(1, 1_000_000),
  },
  installTimeoutS: {
    env: 'INSTALL_TIMEOUT_S',
    description: 'Timeout of one package install',
    default: 300,
    parse: integer(1, 86400),
  },
  packagesMaxMb: {
    env: 'PACKAGES_MAX_MB',
    description: "Cap on the disk a tenant's installed packages use; an install that would pass it fails before its volume is written",
    default: 2048,
    parse: integer(1, 1024 * 1024),
  },
  packagesMaxFiles: {
    env: 'PACKAGES_MAX_FILES',
    description: "Cap on the files and directories of a tenant's installed packages, held like PACKAGES_MAX_MB",
    default: 200_000,
    parse: integer(100, 100_000_000),
  },
  packagesVolumePrefix: {
    env: 'PACKAGES_VOLUME_PREFIX',
    description: "Prefix of the Docker volumes that hold the tenants' packages (the deployment's key and the tenant's name follow)",
    default: 'run-python-code-packages-',
    parse: (raw: string) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$/.test(raw)) throw new Error('expected a Docker volume name prefix');
      return raw;
    },
  },
  pipIndexUrl: {
    env: 'PIP_INDEX_URL',
    description: "Package index for installs (pip's --index-url); empty uses pip's default (PyPI)",
    default: '',
    parse: text,
    show: "(pip's default)",
  },
  pipExtraIndexUrls: {
    env: 'PIP_EXTRA_INDEX_URL',
    description: "Comma-separated extra indexes (pip's --extra-index-url)",
    default: [] as string[],
    parse: list,
    show: '(none)',
  },
  pipTrustedHosts: {
    env: 'PIP_TRUSTED_HOST',
    description: "Comma-separated hosts pip may reach without valid HTTPS (pip's --trusted-host)",
    default: [] as string[],
    parse: list,
    show: '(none)',
  },
  wheelhouseDir: {
    env: 'WHEELHOUSE_DIR',
    description: 'A directory of wheels: when set, installs use only it (--no-index --find-links) and get no network',
    default: '',
    parse: (raw: string) => {
      const dir = path.resolve(text(raw));
      if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new Error('not a directory');
      return dir;
    },
    show: '(none)',
  },
  installNetwork: {
    env: 'INSTALL_NETWORK',
    description: 'Docker network of install containers when they use an index (executions always get none)',
    default: 'bridge',
    parse: text,
  },
  packageAllowlist: {
    env: 'PACKAGE_ALLOWLIST',
    description: 'Comma-separated package names that may be installed; empty allows all but the deny-list',
    default: [] as string[],
    parse: (raw: string) => list(raw).map(normalizePackageName),
    show: '(all)',
  },
  packageDenylist: {
    env: 'PACKAGE_DENYLIST',
    description: 'Comma-separated package names that may not be installed',
    default: [] as string[],
    parse: (raw: string) => list(raw).map(normalizePackageName),
    show: '(none)',
  },
  tenantMaxConcurrent: limitSetting<number>('max_concurrent', {
    env: 'TENANT_MAX_CONCURRENT',
    description: "Default max_concurrent: a tenant's sandboxes running at once",
    default: 4,
  }, { type: 'integer', minimum: 1, maximum: 10000 }),
  rateLimitPerMinute: limitSetting<number>('requests_per_minute', {
    env: 'RATE_LIMIT_PER_MINUTE',
    description: 'Default requests_per_minute of a tenant: sandbox runs it may start per minute, however they arrive (REST, MCP, batches); 0 turns the rate limit off',
    default: 0,
  }, { type: 'integer', minimum: 0, maximum: 1000000 }),
  maxCodeBytes: limitSetting<number>('max_code_bytes', {
    env: 'MAX_CODE_BYTES',
    description: 'Default max_code_bytes: the largest code a request may send',
    default: MiB,
  }, { type: 'integer', minimum: 1, maximum: 1024 * MiB }),
  maxOutputs: limitSetting<number>('max_outputs', {
    env: 'MAX_OUTPUTS',
    description: 'Default max_outputs: the outputs (figures, display() calls, rich values) one execution may return; past it outputs_truncated says so',
    default: 16,
  }, { type: 'integer', minimum: 0, maximum: 1000 }),
  maxOutputsBytes: limitSetting<number>('max_outputs_bytes', {
    env: 'MAX_OUTPUTS_BYTES',
    description: "Default max_outputs_bytes: cap on one execution's outputs together, counted as returned (base64 for images)",
    default: 8 * MiB,
  }, { type: 'integer', minimum: 0, maximum: 256 * MiB }),
  maxContexts: limitSetting<number>('max_contexts', {
    env: 'MAX_CONTEXTS',
    description: "Default max_contexts: a tenant's live contexts (POST /contexts) at once; past it a new one is a 429",
    default: 2,
  }, { type: 'integer', minimum: 0, maximum: 10000 }),
  contextIdleS: limitSetting<number>('context_idle_s', {
    env: 'CONTEXT_IDLE_S',
    description: 'Default context_idle_s: seconds without a call after which a context expires (a request may ask for less)',
    default: 600,
  }, { type: 'integer', minimum: 1, maximum: 604800 }),
  contextMaxS: limitSetting<number>('context_max_s', {
    env: 'CONTEXT_MAX_S',
    description: 'Default context_max_s: the longest a context lives at all, used or not',
    default: 3600,
  }, { type: 'integer', minimum: 1, maximum: 2592000 }),
  preloadModules: {
    env: 'PRELOAD_MODULES',
    description: "Comma-separated modules of the sandbox image that a warm container imports while it waits, so that code using them starts at once; empty turns preloading off",
    default: ['numpy', 'pandas', 'matplotlib.pyplot'],
    parse: (raw: string) => {
      const modules = list(raw);
      if (!modules.every((m) => MODULE_NAME.test(m)) || modules.length > MAX_PRELOAD) {
        throw new Error(`expected at most ${MAX_PRELOAD} comma-separated module names (numpy, matplotlib.pyplot)`);
      }
      return modules;
    },
    whenEmpty: [] as string[],
    show: 'numpy,pandas,matplotlib.pyplot',
  },
  egressAllow: limitSetting<string[]>('egress', {
    env: 'EGRESS_ALLOW',
    description: 'Default egress: comma-separated host names (a leading *. matches any subdomain) that executions may reach over HTTP(S) through the egress proxy; empty gives them no network at all',
    default: [] as string[],
    whenEmpty: [] as string[],
    show: '(none: no network)',
  }, { type: 'array', maxItems: 256, items: { type: 'string', pattern: EGRESS_HOST_PATTERN } }),
  egressBytes: limitSetting<number>('egress_bytes', {
    env: 'EGRESS_BYTES',
    description: "Default egress_bytes: cap on the bytes one execution's connections through the egress proxy carry, both ways together; past it they are cut",
    default: 64 * MiB,
  }, { type: 'integer', minimum: 1024, maximum: 1024 * 1024 * MiB }),
  egressPorts: {
    env: 'EGRESS_PORTS',
    description: 'Comma-separated TCP ports the egress proxy connects to',
    default: [80, 443],
    parse: (raw: string) => list(raw).map(integer(1, 65535)),
    show: '80,443',
  },
  egressResolve: {
    env: 'EGRESS_RESOLVE',
    description: 'JSON object {"name": "address"}: names the egress proxy resolves to these addresses instead of asking DNS, and may reach even when private or loopback',
    default: {} as Record<string, string>,
    parse: parseResolve,
    show: '{}',
  },
  egressNetwork: {
    env: 'EGRESS_NETWORK',
    description: 'Name of the internal Docker network (no way out but the egress proxy) that sandboxes with an egress list join; made at start when a known tenant has an egress list (its warm containers wait on it), else when first needed',
    default: 'run-python-code-egress',
    parse: (raw: string) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(raw)) throw new Error('expected a Docker network name');
      return raw;
    },
  },
  egressProxyAddress: {
    env: 'EGRESS_PROXY_ADDRESS',
    description: "Address of a separate egress proxy on the egress network (docker-compose.yml's egress-proxy service), which also listens there; empty runs the proxy in the server, on the network's gateway",
    default: '',
    parse: (raw: string) => {
      if (isIP(raw.trim()) !== 4) throw new Error('expected an IPv4 address');
      return raw.trim();
    },
    show: '(none: in the server)',
  },
  egressSecret: {
    env: 'EGRESS_SECRET',
    description: 'Key that signs the per-execution proxy credentials, shared by the server and a separate egress proxy (at least 32 characters); empty: a new random one at each start',
    default: '',
    parse: (raw: string) => {
      if (raw.length < 32) throw new Error('expected at least 32 characters');
      return raw;
    },
    show: '(random)',
  },
  egressProxyPort: {
    env: 'EGRESS_PROXY_PORT',
    description: "TCP port the egress proxy listens on, at the egress network's gateway address only",
    default: 3128,
    parse: integer(1, 65535),
  },
  allowInstall: limitSetting<boolean>('may_install', {
    env: 'ALLOW_INSTALL',
    description: 'Default may_install: whether tenants may install packages',
    default: true,
  }, { type: 'boolean' }),
  redisUrl: {
    env: 'REDIS_URL',
    description: 'With DATABASE_URL: this process is an API node (npm start) or a worker node (npm run worker) of a distributed deployment, its queue on this Redis (BullMQ); unset: the embedded single process',
    default: '',
    parse: text,
    show: '(none: embedded)',
  },
  databaseUrl: {
    env: 'DATABASE_URL',
    description: 'With REDIS_URL: the PostgreSQL that keeps the execution history of a distributed deployment (migrated at start)',
    default: '',
    parse: text,
    show: '(none: embedded)',
  },
  stalledS: {
    env: 'WORKER_STALLED_S',
    description: 'Distributed: a job whose worker has not renewed its lock for this long is stalled, and BullMQ gives it once to another worker',
    default: 30,
    parse: integer(2, 600),
  },
  workerLostS: {
    env: 'WORKER_LOST_S',
    description: 'Distributed: a worker not seen in Redis for this long is left out of GET /health, and the contexts it held answer 410 (lost)',
    default: 30,
    // Workers report every 5 s: at least two reports fit in the window, so one late report loses nothing.
    parse: integer(10, 3600),
  },
  logLevel: {
    env: 'LOG_LEVEL',
    description: 'error, warn, info or debug (user code appears in logs only at debug)',
    default: 'info' as const,
    parse: oneOf('error', 'warn', 'info', 'debug'),
  },
} satisfies Record<string, Setting<unknown>>;

type Declared = Record<string, Setting<unknown>>;
/** The parsed values of a set of declared settings. */
export type SettingsOf<S extends Declared> = { [K in keyof S]: ReturnType<S[K]['parse']> };
export type Config = SettingsOf<typeof settings> & {
  /** BASE_DIR is the new temporary directory of a start without one, not the operator's. */
  baseDirTemporary: boolean;
};

/** Reads declared settings from `env`; throws ConfigError naming the first bad variable. */
export function readSettings<S extends Declared>(declared: S, env: NodeJS.ProcessEnv = process.env): SettingsOf<S> {
  const values: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(declared)) {
    const raw = env[setting.env];
    if (raw === '' && setting.whenEmpty !== undefined) {
      values[key] = setting.whenEmpty;
      continue;
    }
    if (raw === undefined || raw === '') {
      values[key] = typeof setting.default === 'function' ? (setting.default as () => unknown)() : setting.default;
      continue;
    }
    try {
      values[key] = setting.parse(raw);
    } catch (err) {
      throw new ConfigError(`${setting.env}=${JSON.stringify(raw)}: ${(err as Error).message}`);
    }
  }
  return values as SettingsOf<S>;
}

/** The API server's settings, with the checks that span several of them. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const result = { ...readSettings(settings, env), baseDirTemporary: !env[settings.baseDir.env] };
  result.instanceId ||= `${os.hostname()}-${result.port}`.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64);
  // A body in flight holds up to its size in memory; these bound the sum, per tenant and in all.
  result.tenantReceivingMaxBytes ||= 8 * result.maxBodyBytes;
  result.receivingMaxBytes ||= Math.max(32 * result.maxBodyBytes, result.tenantReceivingMaxBytes);
  if (result.tenantReceivingMaxBytes < result.maxBodyBytes) {
    throw new ConfigError(`TENANT_RECEIVING_MAX_BYTES (${result.tenantReceivingMaxBytes}) is below MAX_BODY_BYTES (${result.maxBodyBytes}): a body of the largest size could never be received`);
  }
  if (result.receivingMaxBytes < result.tenantReceivingMaxBytes) {
    throw new ConfigError(`RECEIVING_MAX_BYTES (${result.receivingMaxBytes}) is below TENANT_RECEIVING_MAX_BYTES (${result.tenantReceivingMaxBytes})`);
  }
  if (result.sandboxRuntimes.length === 0) result.sandboxRuntimes = [result.sandboxRuntime];
  if (!result.sandboxRuntimes.includes(result.sandboxRuntime)) {
    throw new ConfigError(`SANDBOX_RUNTIME (${result.sandboxRuntime}) is not one of SANDBOX_RUNTIMES (${result.sandboxRuntimes.join(',')})`);
  }
  if (result.egressProxyAddress && !result.egressSecret) {
    throw new ConfigError('EGRESS_PROXY_ADDRESS names a separate egress proxy: set EGRESS_SECRET, the same in both, so that it can check the credentials');
  }
  if (!result.redisUrl !== !result.databaseUrl) {
    throw new ConfigError('REDIS_URL and DATABASE_URL go together: set both for a distributed node, neither for the embedded server');
  }
  if (result.defaultTimeoutS > result.maxTimeoutS) {
    throw new ConfigError(`DEFAULT_TIMEOUT_S (${result.defaultTimeoutS}) is above MAX_TIMEOUT_S (${result.maxTimeoutS})`);
  }
  return result;
}

/** The settings as documentation rows (the README's table is checked against these). */
export function settingsTable(declared: Declared = settings): { env: string; default: string; description: string }[] {
  return Object.values(declared).map((s) => ({
    env: s.env,
    default: s.show ?? String(typeof s.default === 'function' ? '' : s.default),
    description: s.description,
  }));
}
