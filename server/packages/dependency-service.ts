import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { satisfies } from '@renovatebot/pep440';
import { parse as parseToml } from 'smol-toml';
import type { ExecutionResponse } from '../contract/contract.js';
import { badRequest, forbidden } from '../errors.js';
import { toEnvelope } from '../execution/envelope.js';
import type { ExecutionContext, RunDeps } from '../execution/run-deps.js';
import type { SandboxOutcome } from '../sandbox/sandbox.js';
import { pipError, toList, type PackageService } from './package-service.js';
import { parseRequirement } from './requirement.js';
import { listRefusal } from './resolution.js';

/** The most requirements one run may declare (the request's and the script block's together). */
export const MAX_DEPENDENCIES = 32;
const MiB = 1024 * 1024;
/** PEP 723's own expression for a metadata block (`# /// script` ... `# ///`). */
const BLOCK = /^# \/\/\/ ([a-zA-Z0-9-]+)$\n((?:^#(?:| .*)$\n)+)^# \/\/\/$/gm;

/** What a run asked for, checked: requirements as pip gets them (sorted, one each), and the set's hash. */
export interface DeclaredSet {
  requested: string[];
  hash: string;
}

/** What the answer says about a run's declared dependencies (ExecutionResponse.dependencies). */
export type DependenciesInfo = NonNullable<ExecutionResponse['dependencies']>;

/** A set installed and kept: whose, what, how big, when last used (for least-recently-used removal). */
interface KeptSet {
  tenant: string;
  requested: string[];
  packages: { name: string; version: string }[];
  bytes: number;
  lastUsed: number;
}

/** The `script` block of PEP 723 in `code`, parsed as TOML; null when there is none. */
export function scriptBlock(code: string): Record<string, unknown> | null {
  const blocks = [...code.matchAll(BLOCK)].filter((m) => m[1] === 'script');
  if (blocks.length === 0) return null;
  if (blocks.length > 1) throw badRequest('The code has more than one `# /// script` block (PEP 723 allows one)');
  const toml = blocks[0]![2]!
    .split('\n')
    .map((line) => (line.startsWith('# ') ? line.slice(2) : line.slice(1)))
    .join('\n');
  try {
    return parseToml(toml) as Record<string, unknown>;
  } catch (err) {
    throw badRequest(`The code's \`# /// script\` block is not valid TOML: ${(err as Error).message.split('\n')[0]}`);
  }
}

/**
 * Dependencies declared in the code (a PEP 723 block) or in the request (`dependencies`): each
 * entry held to the rules of `package_name` and the operator's lists, `requires-python` to the
 * sandbox's Python; installed by the sandboxed installer, once, into a volume of their own per
 * tenant and per set (named from the set's hash), which the run mounts read-only over the image's
 * libraries and the tenant's packages. Sets are kept within PACKAGES_MAX_MB per tenant, the least
 * recently used removed first; what is kept is written to BASE_DIR, so a restart keeps the cache.
 */
export class DependencyService {
  private readonly file: string;
  /** In the order of their last use, the least recent first (timestamps tie within a millisecond). */
  private readonly kept: Map<string, KeptSet>;
  /** Runs using each set now: such a set is never removed. */
  private readonly inUse = new Map<string, number>();

  constructor(
    private readonly deps: RunDeps,
    private readonly packages: PackageService,
  ) {
    this.file = path.join(deps.config.baseDir, 'dependency-sets.json');
    this.kept = new Map(Object.entries(readKept(this.file)).sort(([, a], [, b]) => a.lastUsed - b.lastUsed));
  }

  /** The set a run declares, checked; null when it declares none. */
  async declared(code: string | undefined, field: string[] | undefined, tenant: string): Promise<DeclaredSet | null> {
    const block = code === undefined ? null : scriptBlock(code);
    const fromBlock = block?.dependencies ?? [];
    if (!Array.isArray(fromBlock) || !fromBlock.every((d) => typeof d === 'string')) {
      throw badRequest("The `# /// script` block's dependencies must be an array of strings");
    }
    const entries = [...(field ?? []).map((raw, i) => ({ raw, at: `dependencies[${i}]` })), ...fromBlock.map((raw, i) => ({ raw, at: `script block dependencies[${i}]` }))];
    if (block && block['requires-python'] !== undefined) await this.checkPython(block['requires-python']);
    if (entries.length === 0) return null;
    if (entries.length > MAX_DEPENDENCIES) throw badRequest(`${entries.length} dependencies declared; at most ${MAX_DEPENDENCIES} are accepted`);
    const requirements = entries.map(({ raw, at }) => parseRequirement(raw, at));
    for (const { name } of requirements) {
      const refusal = listRefusal(name, { allow: this.deps.config.packageAllowlist, deny: this.deps.config.packageDenylist });
      if (refusal) throw forbidden(refusal);
    }
    if (!this.deps.registry.get(tenant).limits.may_install) {
      throw forbidden('This tenant may not install packages (may_install), so its code may not declare dependencies');
    }
    const requested = [...new Set(requirements.map((r) => r.text))].sort();
    return { requested, hash: createHash('sha256').update(requested.join('\n')).digest('hex') };
  }

  /**
   * Makes the set's volume ready (installing it unless it is kept) and runs `run` with it, held in
   * use meanwhile. A failed install answers `success: false` with pip's errors, and runs nothing.
   */
  async withSet(
    set: DeclaredSet,
    ctx: ExecutionContext,
    run: (volume: string) => Promise<ExecutionResponse>,
  ): Promise<ExecutionResponse> {
    const volume = this.deps.volumes.depsName(ctx.tenant, set.hash);
    this.inUse.set(volume, (this.inUse.get(volume) ?? 0) + 1);
    try {
      let info: DependenciesInfo = { requested: set.requested, installed: [], cached: true };
      if (!this.kept.has(volume)) {
        const outcome = await this.packages.installSet(volume, set.requested, ctx);
        const failed = this.failure(ctx, outcome, set);
        if (failed) {
          await this.deps.recorder.record(ctx, outcome, failed, { dependencies: set.requested });
          await this.deps.sandbox.removeVolume(volume).catch(() => undefined);
          return failed;
        }
        const changed = outcome.report?.changed ?? [];
        const packages = toList(outcome.report?.packages ?? {});
        info = { requested: set.requested, installed: packages.filter((p) => changed.includes(p.name)), cached: changed.length === 0 };
        this.kept.set(volume, { tenant: ctx.tenant, requested: set.requested, packages, bytes: outcome.report?.usage?.bytes ?? 0, lastUsed: Date.now() });
        await this.evict(ctx.tenant, volume);
      }
      const used = this.kept.get(volume)!;
      used.lastUsed = Date.now();
      this.kept.delete(volume);
      this.kept.set(volume, used); // now the most recent
      this.save();
      return { ...(await run(volume)), dependencies: info };
    } finally {
      this.inUse.set(volume, this.inUse.get(volume)! - 1);
      if (this.inUse.get(volume) === 0) this.inUse.delete(volume);
    }
  }

  /** The answer when the set could not be installed: pip's ERROR lines, nothing run. */
  private failure(ctx: ExecutionContext, outcome: SandboxOutcome, set: DeclaredSet): ExecutionResponse | null {
    const envelope = toEnvelope(ctx.executionId, outcome, this.packages.installLimits(ctx.tenant));
    if (envelope.success) return null;
    const why = (outcome.report?.status === 'exit' ? pipError(outcome.stderr) : null) ?? envelope.error;
    return {
      ...envelope,
      error: `The declared dependencies could not be installed, so the code did not run: ${why}`,
      value: null,
      outputs: [],
      outputs_truncated: false,
      dependencies: { requested: set.requested, installed: [], cached: false },
    };
  }

  private async checkPython(spec: unknown): Promise<void> {
    if (typeof spec !== 'string') throw badRequest("The `# /// script` block's requires-python must be a string");
    const python = await this.deps.sandbox.pythonVersion();
    if (python === null) {
      this.deps.logger.warn('the sandbox image does not say its Python version (label run-python-code.python): requires-python is not checked');
      return;
    }
    let fits: boolean;
    try {
      fits = satisfies(python, spec);
    } catch {
      throw badRequest(`requires-python ${JSON.stringify(spec)} in the \`# /// script\` block is not a version specifier (PEP 440)`);
    }
    if (!fits) {
      throw badRequest(`The code requires Python ${spec} (requires-python in its \`# /// script\` block); the sandbox runs Python ${python}`);
    }
  }

  /** Removes the tenant's least recently used sets, past PACKAGES_MAX_MB together (never one in use, nor `keep`). */
  private async evict(tenant: string, keep: string): Promise<void> {
    const cap = this.deps.config.packagesMaxMb * MiB;
    const mine = [...this.kept.entries()].filter(([, s]) => s.tenant === tenant);
    let total = mine.reduce((n, [, s]) => n + s.bytes, 0);
    for (const [volume, kept] of mine) {
      if (total <= cap) break;
      if (volume === keep || this.inUse.has(volume)) continue;
      try {
        await this.deps.sandbox.removeVolume(volume);
      } catch (err) {
        this.deps.logger.warn('could not remove a set of dependencies', { volume, error: (err as Error).message });
        continue;
      }
      this.kept.delete(volume);
      total -= kept.bytes;
      this.deps.logger.info('removed a set of dependencies (least recently used, past PACKAGES_MAX_MB)', { tenant, requested: kept.requested });
    }
  }

  private save(): void {
    const temp = `${this.file}.tmp`;
    writeFileSync(temp, JSON.stringify(Object.fromEntries(this.kept)));
    renameSync(temp, this.file);
  }
}

/** The sets kept, as a previous run of the server wrote them; none when the file is missing or unreadable. */
function readKept(file: string): Record<string, KeptSet> {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, KeptSet>) : {};
  } catch {
    return {};
  }
}
