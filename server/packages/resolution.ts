import type { ResolvedPackage } from '../sandbox/protocol.js';

/** The operator's lists: PEP 503 normalized names; an empty allow-list allows every name not denied. */
export interface PackageLists {
  allow: string[];
  deny: string[];
}

/** Why the lists refuse this name, or null. */
export function listRefusal(name: string, { allow, deny }: PackageLists): string | null {
  if (deny.includes(name)) return `Package ${name} may not be installed here (PACKAGE_DENYLIST)`;
  if (allow.length > 0 && !allow.includes(name)) return `Package ${name} is not on this server's PACKAGE_ALLOWLIST`;
  return null;
}

/**
 * Why a resolution may not be installed, or null: every distribution pip would install is held to
 * the lists, and none may come from a direct URL. The message names the distribution and who pulled
 * it in (the packages of the resolution that require it, and a chain from what was asked for).
 */
export function resolutionRefusal(plan: ResolvedPackage[], lists: PackageLists): string | null {
  for (const item of plan) {
    const refusal = item.direct
      ? `Package ${item.name} ${item.version} would come from a direct URL reference, which installs do not accept`
      : listRefusal(item.name, lists);
    if (refusal) return item.requested ? refusal : `${refusal}: ${pulledIn(plan, item)}; nothing was installed`;
  }
  return null;
}

/** The exact pins that phase two installs (with --no-deps): what was checked, nothing else. */
export function pinsOf(plan: ResolvedPackage[]): string[] {
  return plan.map((item) => `${item.name}==${item.version}`);
}

function pulledIn(plan: ResolvedPackage[], dependency: ResolvedPackage): string {
  const parents = plan.filter((p) => p !== dependency && p.requires.includes(dependency.name));
  if (parents.length === 0) return "pip's resolution pulled it in (a package already installed requires it)";
  const who = parents.map((p) => `${p.name} ${p.version}`);
  const chain = chainTo(plan, dependency.name);
  return `${who.join(' and ')} ${who.length > 1 ? 'require' : 'requires'} it${chain ? ` (${chain.join(' -> ')})` : ''}`;
}

/** The shortest chain of requirements from a requested package to `name`, if there is one. */
function chainTo(plan: ResolvedPackage[], name: string): string[] | null {
  const byName = new Map(plan.map((p) => [p.name, p]));
  const from = new Map<string, string | null>(plan.filter((p) => p.requested).map((p) => [p.name, null]));
  const queue = [...from.keys()];
  for (let i = 0; i < queue.length; i += 1) {
    const current = queue[i]!;
    if (current === name) {
      const chain: string[] = [];
      for (let at: string | null = current; at !== null; at = from.get(at) ?? null) chain.unshift(at);
      return chain;
    }
    for (const next of byName.get(current)?.requires ?? []) {
      if (byName.has(next) && !from.has(next)) {
        from.set(next, current);
        queue.push(next);
      }
    }
  }
  return null;
}
