import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.js';
import type { InstallPackageRequest, InstallPackageResponse, PackagesResponse } from '../contract/contract.js';
import { forbidden, unavailable } from '../errors.js';
import { toEnvelope } from '../execution/envelope.js';
import { limitsFor } from '../execution/limits.js';
import type { ExecutionContext, RunDeps } from '../execution/run-deps.js';
import type { Runtime } from '../sandbox/oci-runtime.js';
import type { ChangesSink, SandboxFile, SandboxJob, SandboxLimits, SandboxOutcome } from '../sandbox/sandbox.js';
import { parseRequirement, type Requirement } from './requirement.js';
import { listRefusal, pinsOf, resolutionRefusal, type PackageLists } from './resolution.js';

const LIST_TIMEOUT_S = 60;
const PIP_ERROR_CHARS = 2000;

/** pip's own error, trimmed to what a person needs: its `ERROR:` lines, else its last lines. */
export function pipError(stderr: string): string | null {
  const lines = stderr.split('\n').map((l) => l.trimEnd()).filter(Boolean);
  const errors = lines.filter((l) => l.startsWith('ERROR: '));
  const chosen = (errors.length > 0 ? errors : lines.slice(-5)).join('\n');
  return chosen ? chosen.slice(0, PIP_ERROR_CHARS) : null;
}

/** pip's source of packages: the operator's wheelhouse alone (no network), or the configured indexes. */
export function pipArgs(config: Config): string[] {
  if (config.wheelhouseDir) return ['--no-index', '--find-links', '/wheelhouse'];
  return [
    ...(config.pipIndexUrl ? ['--index-url', config.pipIndexUrl] : []),
    ...config.pipExtraIndexUrls.flatMap((u) => ['--extra-index-url', u]),
    ...config.pipTrustedHosts.flatMap((h) => ['--trusted-host', h]),
  ];
}

const MiB = 1024 * 1024;
/** Room in /scratch for pip's own files (temporary copies, metadata), over what the packages may add. */
const SCRATCH_SLACK = { mb: 64, inodes: 1000 };

/**
 * Installs and lists a tenant's packages, one install per tenant at a time, in two sandboxes:
 * - resolve, with the packages volume read-only: pip says what it would install (a dry run), and
 *   builds wheels of any source distributions among them; the server then checks every name
 *   against the operator's lists (here, where nothing from the container decides);
 * - install, with the volume writable: exactly those pins, wheels only and --no-deps, so no build
 *   runs there; unpacked first in a /scratch tmpfs capped at the room the tenant has left, and
 *   installed into the volume only when they fit PACKAGES_MAX_MB and PACKAGES_MAX_FILES.
 * With a wheelhouse neither container gets a network.
 */
/**
 * The runtime of a tenant's install containers. gVisor is registered with --network=none (its
 * network stack off), so an install that downloads from an index runs under runc, the tenant's
 * executions staying under gVisor; with a wheelhouse (no network) installs run under gVisor too.
 */
/** Installs from a wheelhouse need no network; from an index they get INSTALL_NETWORK. */
function installNetwork(config: Config): string {
  return config.wheelhouseDir ? 'none' : config.installNetwork;
}

function installRuntime(config: Config, runtime: Runtime, network: string): Runtime {
  if (runtime !== 'runsc' || network === 'none') return runtime;
  if (!config.sandboxRuntimes.includes('runc')) {
    throw unavailable(
      'Installs from a package index need a network, which gVisor sandboxes (runsc, registered with --network=none) do not have, ' +
        'and SANDBOX_RUNTIMES does not allow runc for them: set WHEELHOUSE_DIR (installs without a network run under gVisor) or add runc to SANDBOX_RUNTIMES',
    );
  }
  return 'runc';
}

/** What the two phases install: one requirement, or a set resolved together. */
interface Installing {
  requirement?: string;
  requirements?: string[];
  upgrade: boolean;
}

export class PackageService {
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: RunDeps) {}

  private get lists(): PackageLists {
    return { allow: this.deps.config.packageAllowlist, deny: this.deps.config.packageDenylist };
  }

  async install(req: InstallPackageRequest, ctx: ExecutionContext): Promise<InstallPackageResponse> {
    const requirement = parseRequirement(req.package_name);
    const refusal = listRefusal(requirement.name, this.lists);
    if (refusal) throw forbidden(refusal);
    if (!this.deps.registry.get(ctx.tenant).limits.may_install) {
      throw forbidden('This tenant may not install packages (may_install)');
    }
    return this.serialized(ctx.tenant, () => this.runInstall(requirement, req, ctx));
  }

  async list(ctx: ExecutionContext): Promise<PackagesResponse> {
    const { config, registry, admission, sandbox, volumes } = this.deps;
    const tenant = registry.get(ctx.tenant).limits;
    const limits = { ...limitsFor(config, tenant), timeoutS: LIST_TIMEOUT_S };
    const outcome = await admission.run(ctx.tenant, tenant.max_concurrent, () =>
      sandbox.run({
        executionId: ctx.executionId,
        tenant: ctx.tenant,
        mode: 'list-packages',
        workspace: { files: [], dirs: [] },
        packagesVolume: volumes.name(ctx.tenant),
        limits,
        signal: ctx.signal,
      }),
      ctx.signal,
    );
    if (!outcome.report?.packages) {
      this.deps.logger.error('listing packages failed', { execution_id: ctx.executionId, violation: outcome.violation, stderr: outcome.stderr.slice(0, 500) });
      throw unavailable('Listing the packages failed: the sandbox gave no list (details in the server log under this execution_id)');
    }
    return { packages: toList(outcome.report.packages) };
  }

  /**
   * Installs a set of declared dependencies into its own volume, as /install-package installs one
   * package into the tenant's (one install per volume at a time). Resolves to both phases' outcome.
   */
  installSet(volume: string, requirements: string[], ctx: ExecutionContext): Promise<SandboxOutcome> {
    // Its containers are named apart from the run's own, which follows at once under the request's id.
    const install = { ...ctx, executionId: `${ctx.executionId}-deps` };
    return this.serialized(volume, () => this.twoPhases(volume, { requirements, upgrade: false }, install));
  }

  /**
   * A distributed worker's catch-up: a volume's recorded pins installed into this engine's copy of
   * it, through both phases and their caps. No admission: the job it comes before holds the
   * tenant's slot already.
   */
  catchUp(volume: string, pins: string[], ctx: ExecutionContext): Promise<SandboxOutcome> {
    return this.serialized(volume, () => this.phases(volume, { requirements: pins, upgrade: false }, ctx));
  }

  /** The caps of an install container: the tenant's, with the install timeout. */
  installLimits(tenant: string): SandboxLimits {
    const { config: c, registry } = this.deps;
    const limits = registry.get(tenant).limits;
    return { ...limitsFor(c, limits), timeoutS: c.installTimeoutS, runtime: installRuntime(c, limits.runtime, installNetwork(c)) };
  }

  private async runInstall(
    requirement: Requirement,
    req: InstallPackageRequest,
    ctx: ExecutionContext,
  ): Promise<InstallPackageResponse> {
    const { recorder, volumes } = this.deps;
    const limits = this.installLimits(ctx.tenant);
    const outcome = await this.twoPhases(volumes.name(ctx.tenant), { requirement: requirement.text, upgrade: req.upgrade ?? false }, ctx);
    const envelope = toEnvelope(ctx.executionId, outcome, limits);
    const packages = outcome.report?.packages ?? {};
    const version = packages[requirement.name];
    const response: InstallPackageResponse = {
      ...envelope,
      installed: toList(packages).filter((p) => outcome.report?.changed?.includes(p.name)),
      package: version ? { name: requirement.name, version } : null,
    };
    if (envelope.success) {
      response.result = `successfully installed package ${req.package_name.trim()}`;
    } else if (outcome.report?.status === 'exit') {
      response.error = pipError(outcome.stderr) ?? envelope.error; // pip's words beat "exited with status 1"
    }
    await recorder.record(ctx, outcome, response, { package: requirement.text, upgrade: req.upgrade ?? false });
    return response;
  }

  /**
   * The two phases into `volume`: resolve `what` (one requirement, or a set) with the volume
   * read-only, check every name pip would install, then install exactly those pins.
   */
  private twoPhases(volume: string, what: Installing, ctx: ExecutionContext): Promise<SandboxOutcome> {
    const tenant = this.deps.registry.get(ctx.tenant).limits;
    return this.deps.admission.run(ctx.tenant, tenant.max_concurrent, () => this.phases(volume, what, ctx), ctx.signal);
  }

  private async phases(volume: string, what: Installing, ctx: ExecutionContext): Promise<SandboxOutcome> {
    const { config: c, sandbox } = this.deps;
    const wheelhouse = c.wheelhouseDir ? await readWheelhouse(c.wheelhouseDir) : [];
    const network = installNetwork(c);
    const limits = this.installLimits(ctx.tenant);
    const install = {
      upgrade: what.upgrade,
      pipArgs: pipArgs(c),
      packagesMaxBytes: c.packagesMaxMb * MiB,
      packagesMaxFiles: c.packagesMaxFiles,
    };
    const job = (executionId: string, over: Pick<SandboxJob, 'mode' | 'install' | 'scratch'> & Partial<SandboxJob>): SandboxJob => ({
      executionId,
      tenant: ctx.tenant,
      workspace: { files: [], dirs: [] },
      wheelhouse,
      packagesVolume: volume,
      network,
      limits,
      ...over,
    });
    const built = new WheelsBuilt();
    const resolved = await sandbox.run(job(`${ctx.executionId}-resolve`, {
      mode: 'resolve',
      changes: built,
      install: { ...install, requirement: what.requirement, requirements: what.requirements },
      // Downloads and builds of the dry run: at most what the packages may take, in memory.
      scratch: { mb: c.packagesMaxMb + SCRATCH_SLACK.mb, inodes: c.packagesMaxFiles + SCRATCH_SLACK.inodes },
    }));
    const { report } = resolved;
    const plan = toEnvelope(ctx.executionId, resolved, limits).success ? (report?.resolved ?? []) : [];
    if (plan.length === 0) return resolved; // it failed, or there is nothing to install
    const refusal = resolutionRefusal(plan, this.lists);
    if (refusal) throw forbidden(refusal);
    const used = report!.usage ?? { bytes: 0, files: 0 };
    const room = { mb: Math.max(0, Math.ceil((install.packagesMaxBytes - used.bytes) / MiB)), files: Math.max(0, c.packagesMaxFiles - used.files) };
    const installed = await sandbox.run(job(ctx.executionId, {
      mode: 'install',
      install: { ...install, pins: pinsOf(plan) },
      onOutput: ctx.onOutput, // pip's output as it goes (MCP progress)
      wheelhouse: [...wheelhouse, ...built.wheels()],
      packagesWritable: true,
      // The downloaded wheels and their unpacked trees, each within the room left.
      scratch: { mb: 2 * room.mb + SCRATCH_SLACK.mb, inodes: room.files + SCRATCH_SLACK.inodes },
    }));
    return bothPhases(resolved, installed);
  }

  /** Runs `task` after every earlier install into the same volume (a tenant's, or a set's) has finished. */
  private serialized<T>(tenant: string, task: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(tenant) ?? Promise.resolve();
    const next = previous.then(task, task);
    const settled = next.catch(() => undefined);
    this.queues.set(tenant, settled);
    void settled.then(() => {
      if (this.queues.get(tenant) === settled) this.queues.delete(tenant);
    });
    return next;
  }
}

/** The wheels a resolve built from source distributions, as its container sends them back (workspace `built/`). */
class WheelsBuilt implements ChangesSink {
  private readonly files = new Map<string, SandboxFile>();

  async file(path: string, chunks: AsyncIterable<Buffer>): Promise<void> {
    const parts: Buffer[] = [];
    for await (const chunk of chunks) parts.push(chunk);
    this.files.set(path, { path, data: Buffer.concat(parts), mtime: new Date() });
  }

  wheels(): SandboxFile[] {
    return [...this.files.values()].filter((f) => /^built\/[^/]+\.whl$/.test(f.path));
  }
}

/** One answer for both phases: the install's outcome, with what the resolve printed and took first. */
function bothPhases(resolve: SandboxOutcome, install: SandboxOutcome): SandboxOutcome {
  const phases = Object.fromEntries(Object.entries(resolve.phases).map(([k, v]) => [`resolve_${k}`, v]));
  return {
    ...install,
    stdout: resolve.stdout + install.stdout,
    stderr: resolve.stderr + install.stderr,
    durationMs: resolve.durationMs + install.durationMs,
    phases: { ...phases, ...install.phases },
    // A worker may have caught the volume up before either phase (each is a job of its own).
    catchUps: [...(resolve.catchUps ?? []), ...(install.catchUps ?? [])],
  };
}

export function toList(packages: Record<string, string>): { name: string; version: string }[] {
  return Object.entries(packages)
    .map(([name, version]) => ({ name, version }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The operator's wheels (regular files at the top of the directory). */
async function readWheelhouse(dir: string): Promise<SandboxFile[]> {
  const files: SandboxFile[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(dir, entry.name);
    const [data, stat] = await Promise.all([fs.readFile(full), fs.stat(full)]);
    files.push({ path: entry.name, data, mtime: stat.mtime });
  }
  return files;
}
