import { randomUUID } from 'node:crypto';
import { constants as fsc, promises as fs } from 'node:fs';
import path from 'node:path';
import { badRequest, conflict } from '../errors.js';
import { cleanRelativePath } from '../relative-path.js';
import type { FileChanges, FileSet, SandboxFile } from '../sandbox/sandbox.js';

export interface WorkspaceCaps {
  maxFiles: number;
}

/**
 * A workspace on the server's disk. Only regular files and directories are ever created or read
 * here; nothing inside a sandbox is ever opened from the host (files cross as tar, in memory).
 * Writes go to a staging file and are renamed into place, so a reader never sees half a file.
 */
export class Workspace {
  private constructor(
    readonly root: string,
    private readonly staging: string,
    private readonly caps: WorkspaceCaps,
  ) {}

  static async open(root: string, staging: string, caps: WorkspaceCaps): Promise<Workspace> {
    await fs.mkdir(root, { recursive: true, mode: 0o700 });
    await fs.mkdir(staging, { recursive: true, mode: 0o700 });
    return new Workspace(await fs.realpath(root), await fs.realpath(staging), caps);
  }

  /** Every regular file and directory, for streaming into a container. */
  async snapshot(): Promise<FileSet> {
    const { files, dirs } = await this.list();
    const withData: SandboxFile[] = [];
    for (const f of files) {
      // One at a time: a workspace may hold thousands of files, and open descriptors are finite.
      withData.push({ path: f.path, data: await fs.readFile(path.join(this.root, f.path)), mtime: f.mtime });
    }
    return { files: withData, dirs };
  }

  /** Paths, sizes and times of the regular files and directories (links and the rest are skipped). */
  private async list(): Promise<{ files: { path: string; size: number; mtime: Date }[]; dirs: string[] }> {
    const files: { path: string; size: number; mtime: Date }[] = [];
    const dirs: string[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const entry of await fs.readdir(path.join(this.root, rel), { withFileTypes: true })) {
        const child = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isDirectory()) {
          dirs.push(child);
          await walk(child);
        } else if (entry.isFile()) {
          const stat = await fs.lstat(path.join(this.root, child));
          files.push({ path: child, size: stat.size, mtime: stat.mtime });
        }
      }
    };
    await walk('');
    return { files, dirs };
  }

  async isFile(rel: string): Promise<boolean> {
    const full = await this.resolve(rel);
    const stat = await fs.lstat(full).catch(() => null);
    return stat?.isFile() ?? false;
  }

  /** Saves a client's file (save-and-execute): 409 if it exists and overwrite is false. */
  async save(rel: string, data: Buffer, overwrite: boolean, maxBytes: number): Promise<void> {
    const full = await this.resolve(rel);
    const existing = await fs.lstat(full).catch(() => null);
    if (existing && !existing.isFile()) throw conflict(`${rel} exists and is not a regular file`);
    if (existing && !overwrite) throw conflict(`File ${rel} already exists and overwrite is false`);
    const used = await this.usage();
    if (used.bytes - (existing?.size ?? 0) + data.length > maxBytes) {
      throw badRequest(`Workspace is full: saving ${rel} would exceed this tenant's workspace_mb`);
    }
    if (!existing && used.files + 1 > this.caps.maxFiles) {
      throw badRequest(`Workspace is full: it already holds SANDBOX_MAX_FILES (${this.caps.maxFiles}) files`);
    }
    await fs.mkdir(path.dirname(full), { recursive: true, mode: 0o700 });
    await this.writeFile(full, data);
  }

  /**
   * Applies what an execution changed, so the workspace ends as the container's did: deletions
   * first (a path may have turned from file into directory or back), then new directories (parents
   * first), then files. Paths were checked when read; they are checked again here.
   */
  async apply(changes: FileChanges): Promise<void> {
    for (const rel of [...changes.deleted].sort()) {
      const full = await this.resolve(rel).catch(() => null); // a parent already gone: nothing left to delete
      const existing = full ? await fs.lstat(full).catch(() => null) : null;
      if (existing?.isDirectory()) await fs.rm(full!, { recursive: true });
      else if (existing) await fs.unlink(full!);
    }
    for (const dir of changes.dirs) {
      const full = await this.resolve(dir);
      const existing = await fs.lstat(full).catch(() => null);
      if (existing && !existing.isDirectory()) await fs.unlink(full);
      await fs.mkdir(full, { recursive: true, mode: 0o700 });
    }
    for (const file of changes.files) {
      const full = await this.resolve(file.path);
      await fs.mkdir(path.dirname(full), { recursive: true, mode: 0o700 });
      const existing = await fs.lstat(full).catch(() => null);
      if (existing?.isDirectory()) await fs.rm(full, { recursive: true });
      await this.writeFile(full, file.data);
    }
  }

  private async usage(): Promise<{ bytes: number; files: number }> {
    const { files } = await this.list();
    return { bytes: files.reduce((n, f) => n + f.size, 0), files: files.length };
  }

  private async writeFile(full: string, data: Buffer): Promise<void> {
    const temp = path.join(this.staging, randomUUID());
    const handle = await fs.open(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      await handle.writeFile(data);
    } finally {
      await handle.close();
    }
    await fs.rename(temp, full);
  }

  /** Absolute path of `rel`, refusing any path whose existing parents are not plain directories. */
  private async resolve(rel: string): Promise<string> {
    const clean = cleanRelativePath(rel);
    if (clean === null) throw badRequest(`Invalid workspace path ${JSON.stringify(rel.slice(0, 200))}`);
    let dir = this.root;
    const parts = clean.split('/');
    for (const part of parts.slice(0, -1)) {
      dir = path.join(dir, part);
      const stat = await fs.lstat(dir).catch(() => null);
      if (stat === null) break;
      if (!stat.isDirectory()) throw conflict(`${path.relative(this.root, dir)} is not a directory`);
    }
    return path.join(this.root, clean);
  }
}
