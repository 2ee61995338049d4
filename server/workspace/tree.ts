import { cleanRelativePath } from '../relative-path.js';

/**
 * The workspace caps, counted the way a container's /workspace (a tmpfs) counts them: every file
 * and every directory takes an inode (`nr_inodes`, SANDBOX_MAX_FILES), and a file's bytes take whole
 * pages (`size`, workspace_mb). What the server keeps within these caps always fits the next container.
 */
export interface WorkspaceCaps {
  maxBytes: number;
  /** Files and directories together. */
  maxEntries: number;
}

/** The workspace caps of a tenant's limits: workspace_mb and SANDBOX_MAX_FILES. */
export function workspaceCaps(limits: { workspaceMb: number; maxFiles: number }): WorkspaceCaps {
  return { maxBytes: limits.workspaceMb * MIB, maxEntries: limits.maxFiles };
}

export interface Usage {
  /** Files and directories together. */
  entries: number;
  /** Bytes of the files, each rounded up to whole tmpfs pages. */
  bytes: number;
}

/** tmpfs allocates file data in pages; 4 KiB on the machines this runs on (x86-64, and arm64's default). */
export const PAGE_BYTES = 4096;

const MIB = 1024 * 1024;

/** Why `usage` is over `caps` ("10002 files and directories, over SANDBOX_MAX_FILES (10000)"), or null when it fits. */
export function overCaps(usage: Usage, caps: WorkspaceCaps): string | null {
  const over: string[] = [];
  if (usage.entries > caps.maxEntries) {
    over.push(`${usage.entries} files and directories, over SANDBOX_MAX_FILES (${caps.maxEntries})`);
  }
  if (usage.bytes > caps.maxBytes) {
    over.push(`${(usage.bytes / MIB).toFixed(1)} MiB, over this tenant's workspace_mb (${(caps.maxBytes / MIB).toFixed(0)} MiB)`);
  }
  return over.length > 0 ? over.join(' and ') : null;
}

type Node = { kind: 'dir'; children: Map<string, Node> } | { kind: 'file'; size: number };

/**
 * A workspace's names and sizes, to which a merge is applied first, with the same rules as on
 * disk: a deletion takes a whole subtree, a directory (and each missing parent) replaces a file in
 * its way, and a file replaces whatever is at its path. So a merge is checked against the caps
 * before anything on disk changes.
 */
export class Tree {
  private readonly root = new Map<string, Node>();

  static of(listing: { files: { path: string; size: number }[]; dirs: string[] }): Tree {
    const tree = new Tree();
    for (const dir of listing.dirs) tree.makeDir(dir);
    for (const file of listing.files) tree.putFile(file.path, file.size);
    return tree;
  }

  remove(rel: string): void {
    const parts = rel.split('/');
    const parent = this.find(parts.slice(0, -1));
    parent?.delete(parts.at(-1)!);
  }

  makeDir(rel: string): void {
    this.dirOf(rel.split('/'));
  }

  putFile(rel: string, size: number): void {
    const parts = rel.split('/');
    this.dirOf(parts.slice(0, -1)).set(parts.at(-1)!, { kind: 'file', size });
  }

  /** Every directory and file, each parent before what is in it. */
  entries(): { path: string; kind: 'dir' | 'file' }[] {
    const out: { path: string; kind: 'dir' | 'file' }[] = [];
    const walk = (children: Map<string, Node>, prefix: string) => {
      for (const [name, node] of children) {
        out.push({ path: prefix + name, kind: node.kind });
        if (node.kind === 'dir') walk(node.children, `${prefix}${name}/`);
      }
    };
    walk(this.root, '');
    return out;
  }

  usage(): Usage {
    const usage: Usage = { entries: 0, bytes: 0 };
    const walk = (children: Map<string, Node>) => {
      for (const node of children.values()) {
        usage.entries += 1;
        if (node.kind === 'dir') walk(node.children);
        else usage.bytes += Math.ceil(node.size / PAGE_BYTES) * PAGE_BYTES;
      }
    };
    walk(this.root);
    return usage;
  }

  /** The children of the directory at `parts`, or null when it is not a directory. */
  private find(parts: string[]): Map<string, Node> | null {
    let children = this.root;
    for (const part of parts) {
      const node = children.get(part);
      if (node?.kind !== 'dir') return null;
      children = node.children;
    }
    return children;
  }

  /** The children of the directory at `parts`, made (replacing files in the way) where missing. */
  private dirOf(parts: string[]): Map<string, Node> {
    let children = this.root;
    for (const part of parts) {
      let node = children.get(part);
      if (node?.kind !== 'dir') {
        node = { kind: 'dir', children: new Map() };
        children.set(part, node);
      }
      children = node.children;
    }
    return children;
  }
}

/** A run's merge as planned before anything changes: the workspace's tree after it, and its deletions (clean, sorted). */
export type MergePlan = { over: string; tree?: undefined; deleted?: undefined } | { over: null; tree: Tree; deleted: string[] };

/**
 * Applies a merge (its deletions, then its directories, then its files) to the tree of `listing`
 * and checks the result against the caps. Names from a container were checked by the tar filter;
 * the report's deletions are checked here (one that is no clean path is left out).
 */
export function planMerge(
  listing: { files: { path: string; size: number }[]; dirs: string[] },
  changes: { dirs: string[]; deleted: string[] },
  files: [string, { size: number }][],
  caps: WorkspaceCaps,
): MergePlan {
  const deleted = changes.deleted.map((d) => cleanRelativePath(d, true)).filter((d): d is string => d !== null).sort();
  const tree = Tree.of(listing);
  for (const rel of deleted) tree.remove(rel);
  for (const dir of changes.dirs) tree.makeDir(dir);
  for (const [rel, file] of files) tree.putFile(rel, file.size);
  const over = overCaps(tree.usage(), caps);
  return over ? { over } : { over: null, tree, deleted };
}
