import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config.js';
import type { InstallPackageRequest, InstallPackageResponse, PackagesResponse } from '../contract/contract.js';
import { forbidden, unavailable } from '../errors.js';
import { toEnvelope } from '../execution/envelope.js';
import { limitsFor } from '../execution/limits.js';
import type { ExecutionContext, RunDeps } from '../execution/execution-service.js';
import type { SandboxFile } from '../sandbox/sandbox.js';
import { parseRequirement, type Requirement } from './requirement.js';
import { packagesVolume } from './volume.js';

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

/**
 * Installs and lists a tenant's packages. pip runs in its own short-lived sandbox with the
 * tenant's packages volume writable (executions mount it read-only), one install per tenant at a
 * time. With a wheelhouse the install container gets no network either.
 */
export class PackageService {
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: RunDeps) {}

  async install(req: InstallPackageRequest, ctx: ExecutionContext): Promise<InstallPackageResponse> {
    const requirement = parseRequirement(req.package_name);
    this.checkLists(requirement);
    if (!this.deps.registry.get(ctx.tenant).limits.may_install) {
      throw forbidden('This tenant may not install packages (may_install)');
    }
    return this.serialized(ctx.tenant, () => this.runInstall(requirement, req, ctx));
  }

  async list(ctx: ExecutionContext): Promise<PackagesResponse> {
    const { config, registry, admission, sandbox } = this.deps;
    const tenant = registry.get(ctx.tenant).limits;
    const limits = { ...limitsFor(config, tenant), timeoutS: LIST_TIMEOUT_S };
    const outcome = await admission.run(ctx.tenant, tenant.max_concurrent, () =>
      sandbox.run({
        executionId: ctx.executionId,
        mode: 'list-packages',
        workspace: { files: [], dirs: [] },
        packagesVolume: packagesVolume(config, ctx.tenant),
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

  private async runInstall(
    requirement: Requirement,
    req: InstallPackageRequest,
    ctx: ExecutionContext,
  ): Promise<InstallPackageResponse> {
    const { config: c, registry, admission, sandbox, recorder } = this.deps;
    const tenant = registry.get(ctx.tenant).limits;
    const wheelhouse = c.wheelhouseDir ? await readWheelhouse(c.wheelhouseDir) : undefined;
    const limits = { ...limitsFor(c, tenant), timeoutS: c.installTimeoutS };
    // A caller that leaves takes its install out of the queue, but one that started runs to its end:
    // a finished install is worth more than a half-written one.
    const outcome = await admission.run(ctx.tenant, tenant.max_concurrent, () => sandbox.run({
      executionId: ctx.executionId,
      mode: 'install',
      install: {
        requirement: requirement.text,
        upgrade: req.upgrade ?? false,
        pipArgs: pipArgs(c),
        packagesMaxBytes: c.packagesMaxMb * 1024 * 1024,
      },
      workspace: { files: [], dirs: [] },
      wheelhouse,
      packagesVolume: packagesVolume(c, ctx.tenant),
      packagesWritable: true,
      network: wheelhouse ? 'none' : c.installNetwork,
      limits,
      onOutput: ctx.onOutput, // pip's output as it goes (MCP progress)
    }), ctx.signal);
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
    recorder.record(ctx, outcome, response, { package: requirement.text, upgrade: req.upgrade ?? false });
    return response;
  }

  private checkLists(requirement: Requirement): void {
    const { packageAllowlist: allow, packageDenylist: deny } = this.deps.config;
    if (deny.includes(requirement.name)) {
      throw forbidden(`Package ${requirement.name} may not be installed here (PACKAGE_DENYLIST)`);
    }
    if (allow.length > 0 && !allow.includes(requirement.name)) {
      throw forbidden(`Package ${requirement.name} is not on this server's PACKAGE_ALLOWLIST`);
    }
  }

  /** Runs `task` after every earlier install of the same tenant has finished. */
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

function toList(packages: Record<string, string>): { name: string; version: string }[] {
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
