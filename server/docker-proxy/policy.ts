import type { Runtime } from '../sandbox/oci-runtime.js';
import { DEPLOYMENT_LABEL, deploymentKey, depsVolumePattern, packagesVolumePattern } from '../packages/volume.js';
import { DEPS_TARGET, hostPidsLimit, LABEL, MAX_PRELOAD, MODULE_NAME, NO_DNS, PRELOAD_ENV, SANDBOX_USER, securityOpt } from '../sandbox/container-spec.js';

/**
 * What the Docker API proxy lets through: exactly the calls the server makes, and for container
 * creation only a sandbox as container-spec.ts builds it. A create body is checked against an
 * allowlist of fields, so anything the server never sends (binds, devices, capabilities, host
 * namespaces, volume driver options, another image) is refused by name. Whoever holds the proxy
 * can start capped sandboxes of the sandbox image and manage containers labelled as ours; nothing
 * else of the engine is reachable.
 */
export interface ProxyPolicy {
  sandboxImage: string;
  /** The default runtime, and the runtimes sandboxes may use (empty: the default alone). */
  sandboxRuntime: Runtime;
  sandboxRuntimes: Runtime[];
  packagesVolumePrefix: string;
  /** The one network other than `none` a container may join (install containers). */
  installNetwork: string;
  /** The internal network of egress sandboxes: it may be made, inspected and removed, and joined with no DNS. */
  egressNetwork: string;
  /** Upper bounds of a sandbox's caps, so that a sandbox cannot be made to take the host. */
  maxMemoryMb: number;
  maxPids: number;
}

/** A call that may go on: `target` is the path with only the query parameters the call may carry. */
export type Route =
  | { kind: 'forward'; target: string }
  | { kind: 'create-container'; target: string }
  | { kind: 'create-volume'; target: string }
  | { kind: 'create-network'; target: string }
  /** A call on one container (by full id): allowed when that container is a sandbox (labelled as ours). */
  | { kind: 'container'; target: string; id: string; remove: boolean; attach: boolean }
  | { kind: 'refuse'; reason: string };

type Refusal = Extract<Route, { kind: 'refuse' }>;
export type Admitted = Exclude<Route, Refusal>;
/** An admitted route before its target is known (distributed over the union). */
type WithoutTarget<T> = T extends unknown ? Omit<T, 'target'> : never;
type Untargeted = WithoutTarget<Admitted>;
type Rule = {
  method: string;
  path: RegExp;
  /** Query parameters passed on; any other is dropped (the engine would honour some, e.g. start's checkpoint-dir). */
  query: string[];
  route: (match: RegExpMatchArray, query: URLSearchParams, policy: ProxyPolicy) => Untargeted | Refusal;
};

// No API version in the path: dockerode pins none, and an old one changes what the engine does
// (below 1.24 a start body is a whole new HostConfig). Containers are named by full id only, as
// the server does (from create and from the list), so that an id prefix or a name cannot come to
// mean another container later.
const ID = '([0-9a-f]{64})';
const rules: Rule[] = [
  { method: 'GET', path: /^\/_ping$/, query: [], route: forward },
  { method: 'HEAD', path: /^\/_ping$/, query: [], route: forward },
  { method: 'GET', path: /^\/version$/, query: [], route: forward },
  {
    method: 'GET',
    path: /^\/images\/(.+)\/json$/,
    query: [],
    route: (m, _q, p) => (safeDecode(m[1]!) === p.sandboxImage ? forward() : refuse(`only the sandbox image ${p.sandboxImage} may be inspected`)),
  },
  { method: 'GET', path: /^\/containers\/json$/, query: ['all', 'filters'], route: (_m, q) => listRoute(q) },
  { method: 'POST', path: /^\/containers\/create$/, query: ['name'], route: (_m, q) => createRoute(q) },
  { method: 'POST', path: new RegExp(`^/containers/${ID}/attach$`), query: ['stream', 'stdin', 'stdout', 'stderr'], route: (m) => container(m[1]!, { attach: true }) },
  { method: 'POST', path: new RegExp(`^/containers/${ID}/start$`), query: [], route: (m) => container(m[1]!) },
  { method: 'POST', path: new RegExp(`^/containers/${ID}/kill$`), query: ['signal'], route: (m) => container(m[1]!) },
  { method: 'POST', path: new RegExp(`^/containers/${ID}/wait$`), query: ['condition'], route: (m) => container(m[1]!) },
  { method: 'GET', path: new RegExp(`^/containers/${ID}/json$`), query: [], route: (m) => container(m[1]!) },
  { method: 'DELETE', path: new RegExp(`^/containers/${ID}$`), query: ['force', 'v'], route: (m) => container(m[1]!, { remove: true }) },
  { method: 'POST', path: /^\/volumes\/create$/, query: [], route: () => ({ kind: 'create-volume' }) },
  // Sets of declared dependencies are removed when they are not kept (least recently used); packages volumes never are.
  {
    method: 'DELETE',
    path: /^\/volumes\/([^/]+)$/,
    query: [],
    route: (m, _q, p) => (depsVolumePattern(p.packagesVolumePrefix).test(safeDecode(m[1]!) ?? '') ? forward() : refuse('only a set of dependencies may be removed')),
  },
  { method: 'POST', path: /^\/networks\/create$/, query: [], route: () => ({ kind: 'create-network' }) },
  { method: 'GET', path: /^\/networks\/([^/]+)$/, query: [], route: (m, _q, p) => egressNetworkRoute(m[1]!, p) },
  { method: 'DELETE', path: /^\/networks\/([^/]+)$/, query: [], route: (m, _q, p) => egressNetworkRoute(m[1]!, p) },
];

/** Where a request goes: on (to `target`), checked further, or refused with the reason. */
export function routeRequest(method: string, url: string, policy: ProxyPolicy): Route {
  let parsed: URL;
  try {
    parsed = new URL(url, 'http://docker');
  } catch {
    return refuse('malformed request target');
  }
  // Only a plain target: dot segments, encoded separators, `;` (once a query separator in Go) or
  // `#` (a fragment to URL, part of the query to Go) could mean something else to the engine.
  if (parsed.pathname !== url.split('?')[0] || /%2f|%5c|\/\.\.?(\/|$)/i.test(parsed.pathname) || /[;#]/.test(url)) {
    return refuse('the request target is not in plain form');
  }
  for (const rule of rules) {
    const match = parsed.pathname.match(rule.path);
    if (!match || rule.method !== method) continue;
    const route = rule.route(match, parsed.searchParams, policy);
    if (route.kind === 'refuse') return route;
    const kept = new URLSearchParams([...parsed.searchParams].filter(([key]) => rule.query.includes(key)));
    const query = kept.toString();
    return { ...route, target: parsed.pathname + (query ? `?${query}` : '') } as Admitted;
  }
  return refuse('this call is not one the server makes');
}

/** Reason a container-create body is refused, or null when it is a sandbox as the server makes them. */
export function checkContainerCreate(body: unknown, policy: ProxyPolicy): string | null {
  return containerCreate(policy)(body, 'body');
}

/**
 * Reason a volume-create body is refused, or null for a packages volume as the server makes it:
 * labelled with its deployment, whose key is the one in its name.
 */
export function checkVolumeCreate(body: unknown, policy: ProxyPolicy): string | null {
  const problem = object({ Name: sandboxVolume(policy, 'a name'), Labels: labels }, ['Name', 'Labels'])(body, 'body');
  if (problem) return problem;
  const { Name, Labels } = body as { Name: string; Labels: Record<string, string> };
  const deployment = Labels[DEPLOYMENT_LABEL];
  if (deployment === undefined) return `body.Labels must carry ${DEPLOYMENT_LABEL}`;
  const key = (packagesVolumePattern(policy.packagesVolumePrefix).exec(Name) ?? depsVolumePattern(policy.packagesVolumePrefix).exec(Name))?.[1];
  return key === deploymentKey(deployment)
    ? null
    : `body.Name must carry the key of its ${DEPLOYMENT_LABEL} label`;
}

/**
 * Reason a network-create body is refused, or null for the egress network as the server makes it:
 * internal (no route out), no traffic between its containers, labelled as ours, no driver options else.
 */
export function checkNetworkCreate(body: unknown, policy: ProxyPolicy): string | null {
  return object(
    {
      Name: is(policy.egressNetwork),
      CheckDuplicate: bool,
      Internal: is(true),
      Labels: labels,
      Options: object({ 'com.docker.network.bridge.enable_icc': is('false') }, ['com.docker.network.bridge.enable_icc']),
    },
    ['Name', 'Internal', 'Labels', 'Options'],
  )(body, 'body');
}

function egressNetworkRoute(name: string, policy: ProxyPolicy): Untargeted | Refusal {
  return safeDecode(name) === policy.egressNetwork ? forward() : refuse(`only the egress network ${policy.egressNetwork} may be inspected or removed`);
}

function forward(): Untargeted {
  return { kind: 'forward' };
}

function refuse(reason: string): Refusal {
  return { kind: 'refuse', reason };
}

function container(id: string, how: { remove?: boolean; attach?: boolean } = {}): Untargeted {
  return { kind: 'container', id, remove: how.remove ?? false, attach: how.attach ?? false };
}

/** Listing is allowed only when filtered to our labels (the server lists its own containers). */
function listRoute(query: URLSearchParams): Untargeted | Refusal {
  let filters: unknown;
  try {
    filters = JSON.parse(query.get('filters') ?? 'null');
  } catch {
    return refuse('filters must be JSON');
  }
  const problem = object({ label: list(text(new RegExp(`^${escape(LABEL)}(\\.[a-z]+)?(=|$)`), `a ${LABEL} label`), 1) }, ['label'])(
    filters,
    'filters',
  );
  return problem ? refuse(problem) : forward();
}

/**
 * Only `name` of this query goes on (docker-modem repeats the whole body there too, which the
 * engine ignores; `platform` it would honour); the body is what gets checked.
 */
function createRoute(query: URLSearchParams): Untargeted | Refusal {
  const name = query.getAll('name');
  if (name.length > 1 || (name[0] !== undefined && containerName(name[0], 'query.name'))) return refuse('query.name must start run-python-code-');
  return { kind: 'create-container' };
}

const containerName = (v: unknown, at: string) =>
  typeof v === 'string' && /^run-python-code-[A-Za-z0-9_.-]{1,100}$/.test(v) ? null : `${at} must start run-python-code-`;

function safeDecode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// --- the allowlist checks: each returns the reason a value is refused, or null ---

type Check = (value: unknown, at: string) => string | null;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function is(expected: unknown): Check {
  return (v, at) => (v === expected ? null : `${at} must be ${JSON.stringify(expected)}`);
}

function oneOf(...values: unknown[]): Check {
  return (v, at) => (values.includes(v) ? null : `${at} must be one of ${values.map((x) => JSON.stringify(x)).join(', ')}`);
}

const bool: Check = (v, at) => (typeof v === 'boolean' ? null : `${at} must be true or false`);

function whole(min: number, max = Number.MAX_SAFE_INTEGER, why = ''): Check {
  return (v, at) =>
    Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max
      ? null
      : `${at} must be a whole number from ${min} to ${max}${why}`;
}

function text(pattern: RegExp, what: string): Check {
  return (v, at) => (typeof v === 'string' && pattern.test(v) ? null : `${at} must be ${what}`);
}

/** Exactly these strings, in any order: the server always sends them all. */
function exactly(values: string[]): Check {
  return (v, at) =>
    Array.isArray(v) && v.length === values.length && values.every((x) => v.includes(x))
      ? null
      : `${at} must be ${JSON.stringify(values)}`;
}

function list(each: Check, min = 0, max = 16): Check {
  return (v, at) => {
    if (!Array.isArray(v) || v.length < min || v.length > max) return `${at} must be a list of ${min} to ${max} entries`;
    for (const [i, item] of v.entries()) {
      const problem = each(item, `${at}[${i}]`);
      if (problem) return problem;
    }
    return null;
  };
}

/** Only the named fields, each passing its check; `required` ones must be present. */
function object(fields: Record<string, Check>, required: string[] = []): Check {
  return (v, at) => {
    if (!isObject(v)) return `${at} must be an object`;
    for (const [key, value] of Object.entries(v)) {
      const check = Object.hasOwn(fields, key) ? fields[key] : undefined;
      if (!check) return `${at}.${key} is not allowed`;
      const problem = check(value, `${at}.${key}`);
      if (problem) return problem;
    }
    const missing = required.find((key) => !(key in v));
    return missing ? `${at}.${missing} is required` : null;
  };
}

/** A map whose keys match `key` and whose values pass `value`. */
function map(key: Check, value: Check, max = 16): Check {
  return (v, at) => {
    if (!isObject(v) || Object.keys(v).length > max) return `${at} must be an object of at most ${max} entries`;
    for (const [k, item] of Object.entries(v)) {
      const problem = key(k, `${at} key ${JSON.stringify(k)}`) ?? value(item, `${at}.${k}`);
      if (problem) return problem;
    }
    return null;
  };
}

function all(...checks: Check[]): Check {
  return (v, at) => {
    for (const check of checks) {
      const problem = check(v, at);
      if (problem) return problem;
    }
    return null;
  };
}

/** A tenant's packages volume (the configured prefix, a deployment's key, then a plain name) or a set of its dependencies. */
function sandboxVolume(policy: ProxyPolicy, what: string): Check {
  const packages = packagesVolumePattern(policy.packagesVolumePrefix);
  const deps = depsVolumePattern(policy.packagesVolumePrefix);
  return (v, at) =>
    typeof v === 'string' && (packages.test(v) || deps.test(v))
      ? null
      : `${at} must be ${what} of the form ${policy.packagesVolumePrefix}<deployment key>-<tenant> or ${policy.packagesVolumePrefix}deps-<deployment key>-<digest>`;
}

/** The mounts of a sandbox: the packages volume (a set's, in its install) at /opt/packages, a set's read-only at /opt/deps. */
function sandboxMount(policy: ProxyPolicy): Check {
  const deps = depsVolumePattern(policy.packagesVolumePrefix);
  return all(
    object({ Type: is('volume'), Source: sandboxVolume(policy, 'a volume'), Target: oneOf('/opt/packages', DEPS_TARGET), ReadOnly: bool }, ['Type', 'Source', 'Target', 'ReadOnly']),
    (v, at) => {
      const mount = v as { Source: string; Target: string; ReadOnly: boolean };
      return mount.Target !== DEPS_TARGET || (deps.test(mount.Source) && mount.ReadOnly) ? null : `${at} at ${DEPS_TARGET} must be a set of dependencies, read-only`;
    },
  );
}

const labels = all(
  map(text(new RegExp(`^${escape(LABEL)}(\\.[a-z]+)?$`), `a ${LABEL} label`), text(/^[A-Za-z0-9_.-]{0,128}$/, 'a plain label value')),
  (v, at) => ((v as Record<string, unknown>)[LABEL] === '1' ? null : `${at} must carry ${LABEL}=1`),
);

/** tmpfs mount options: a size is required; nothing but these plain flags. */
const tmpfsOptions = all(
  text(/^(?:rw|nosuid|nodev|noexec|(?:size|mode|uid|gid|nr_inodes)=[0-9a-z]{1,20})(?:,(?:rw|nosuid|nodev|noexec|(?:size|mode|uid|gid|nr_inodes)=[0-9a-z]{1,20}))*$/, 'plain tmpfs options'),
  text(/(?:^|,)size=[1-9]/, 'tmpfs options with a size'),
);

/** The one variable a sandbox may be given: the modules its runner preloads, by name only. */
const preloadVariable: Check = (v, at) => {
  const prefix = `${PRELOAD_ENV}=`;
  const modules = typeof v === 'string' && v.startsWith(prefix) ? v.slice(prefix.length).split(',') : [];
  return modules.length > 0 && modules.length <= MAX_PRELOAD && modules.every((m) => MODULE_NAME.test(m))
    ? null
    : `${at} must be ${prefix} and up to ${MAX_PRELOAD} comma-separated module names`;
};

/** The runtimes the settings name: SANDBOX_RUNTIMES, or SANDBOX_RUNTIME alone. */
export function allowedRuntimes(policy: Pick<ProxyPolicy, 'sandboxRuntime' | 'sandboxRuntimes'>): Runtime[] {
  return policy.sandboxRuntimes.length > 0 ? policy.sandboxRuntimes : [policy.sandboxRuntime];
}

/**
 * What depends on the runtime (container-spec.ts): the seccomp profile (runc: ours; gVisor: its
 * own filter), the pids cap (gVisor's headroom for the Sentry's threads) and, under gVisor, the
 * RLIMIT_NPROC that caps the code's processes, no higher than the proxy's maximum.
 */
function runtimeBound(policy: ProxyPolicy): Check {
  return (v, at) => {
    const h = v as { Runtime: Runtime; SecurityOpt: string[]; PidsLimit: number; Ulimits: { Name: string; Hard: number; Soft: number }[] };
    const problem = exactly(securityOpt(h.Runtime))(h.SecurityOpt, `${at}.SecurityOpt`);
    if (problem) return `${problem} under runtime ${h.Runtime}`;
    const pids = whole(1, hostPidsLimit(h.Runtime, policy.maxPids), ` under runtime ${h.Runtime} (DOCKER_PROXY_MAX_PIDS)`)(h.PidsLimit, `${at}.PidsLimit`);
    if (pids) return pids;
    const nproc = h.Ulimits.find((u) => u.Name === 'nproc');
    if (h.Runtime !== 'runsc') return nproc ? `${at}.Ulimits: nproc is for runsc only` : null;
    return nproc && nproc.Hard <= policy.maxPids && nproc.Soft === nproc.Hard
      ? null
      : `${at}.Ulimits must hold nproc (Soft = Hard, at most DOCKER_PROXY_MAX_PIDS) under runsc`;
  };
}

function containerCreate(policy: ProxyPolicy): Check {
  // tmpfs and shm pages are charged to the memory cap, so this one bound holds them too.
  const memory = whole(1, policy.maxMemoryMb * 1024 * 1024, ' (DOCKER_PROXY_MAX_MEMORY_MB)');
  const hostConfig = all(
    object(
      {
        NetworkMode: oneOf('none', policy.installNetwork, policy.egressNetwork),
        Dns: exactly([NO_DNS]),
        ReadonlyRootfs: is(true),
        CapDrop: exactly(['ALL']),
        SecurityOpt: list(text(/^(no-new-privileges|seccomp=.*)$/s, 'no-new-privileges or seccomp'), 1, 2),
        Privileged: is(false),
        Memory: memory,
        MemorySwap: memory,
        NanoCpus: whole(1),
        PidsLimit: whole(1),
        Ulimits: list(object({ Name: oneOf('nofile', 'core', 'nproc'), Soft: whole(0, 1 << 20), Hard: whole(0, 1 << 20) }, ['Name', 'Soft', 'Hard'])),
        Tmpfs: map(oneOf('/workspace', '/tmp', '/wheelhouse', '/scratch'), tmpfsOptions),
        Mounts: all(list(sandboxMount(policy), 0, 2), (v, at) => {
          const [first, second] = (v as { Target: string }[]).map((m) => m.Target);
          const ordered = first === undefined || (first === '/opt/packages' && (second === undefined || second === DEPS_TARGET));
          return ordered ? null : `${at} must be the packages volume, then maybe a set of dependencies`;
        }),
        ShmSize: memory,
        IpcMode: is('private'),
        LogConfig: object({ Type: is('none'), Config: object({}) }, ['Type']),
        AutoRemove: bool,
        Runtime: oneOf(...allowedRuntimes(policy)),
      },
      [
        ...['NetworkMode', 'ReadonlyRootfs', 'CapDrop', 'SecurityOpt', 'Memory', 'MemorySwap', 'NanoCpus', 'PidsLimit'],
        ...['Ulimits', 'Tmpfs', 'Mounts', 'ShmSize', 'IpcMode', 'LogConfig', 'Runtime'],
      ],
    ),
    (v, at) => {
      const h = v as Record<string, unknown>;
      return h.MemorySwap === h.Memory ? null : `${at}.MemorySwap must equal Memory (no swap)`;
    },
    runtimeBound(policy),
    (v, at) => {
      const h = v as { NetworkMode: string; Dns?: unknown };
      const egress = h.NetworkMode === policy.egressNetwork;
      if (egress && h.Dns === undefined) return `${at}.Dns is required on the egress network (the sandbox gets no DNS)`;
      return !egress && h.Dns !== undefined ? `${at}.Dns is for the egress network only` : null;
    },
  );
  return object(
    {
      name: containerName,
      Image: is(policy.sandboxImage),
      User: is(SANDBOX_USER),
      WorkingDir: is('/workspace'),
      Hostname: text(/^[a-z0-9-]{1,63}$/, 'a plain host name'),
      Labels: labels,
      AttachStdin: bool,
      AttachStdout: bool,
      AttachStderr: bool,
      OpenStdin: bool,
      StdinOnce: bool,
      Tty: is(false),
      NetworkDisabled: bool,
      Env: list(preloadVariable, 1, 1),
      HostConfig: hostConfig,
    },
    ['Image', 'User', 'Labels', 'HostConfig'],
  );
}
