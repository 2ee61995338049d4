import { constants as fsc, promises as fs, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { conflict } from '../errors.js';
import type { FileSource, OpenedFile } from '../sandbox/sandbox.js';
import { cleanWorkspacePath } from './paths.js';
import { Serial } from './serial.js';
import { StagedFiles } from './staging.js';
import { overCaps, planMerge, Tree, type WorkspaceCaps } from './tree.js';
import { byPath, overCapsConflict, refuseSave, type MergeChanges, type Saved, type Workspace, type WorkspaceFile } from './workspace.js';

interface Listing {
  files: WorkspaceFile[];
  dirs: string[];
}

/** What is at a workspace path: nothing, a file, a directory, something else; or a parent that is no directory. */
type Probe = { stat: Stats | null; blockedBy?: undefined } | { stat: null; blockedBy: string };

const READ_CHUNK = 64 * 1024;
const isGone = (err: unknown) => ['ENOENT', 'ENOTDIR', 'ELOOP'].includes((err as NodeJS.ErrnoException).code ?? '');

/** `size` bytes of an open file, a chunk at a time. */
async function* readChunks(handle: FileHandle, size: number): AsyncIterable<Buffer> {
  for (let position = 0; position < size; ) {
    const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK, size - position)); // fresh: the tar may hold on to it
    const { bytesRead } = await handle.read(chunk, 0, chunk.length, position);
    if (bytesRead === 0) throw new Error('a workspace file got shorter while it was read');
    position += bytesRead;
    yield chunk.subarray(0, bytesRead);
  }
}

/**
 * A workspace on the server's disk. Only regular files and directories are ever created or read
 * here, and nothing inside a sandbox is ever opened from the host: files cross as tar, streamed
 * from disk into the container and from the container to staging files. Everything that changes
 * the workspace (a run's merge, a save, a deletion) and every listing runs alone, in order, under
 * this workspace's lock, and a merge or save is checked against the caps before anything changes:
 * it is kept whole or not at all.
 */
export class DiskWorkspace implements Workspace {
  private readonly lock = new Serial();

  private constructor(
    readonly root: string,
    private readonly staging: string,
  ) {}

  static async open(root: string, staging: string): Promise<DiskWorkspace> {
    await fs.mkdir(root, { recursive: true, mode: 0o700 });
    await fs.mkdir(staging, { recursive: true, mode: 0o700 });
    return new DiskWorkspace(await fs.realpath(root), await fs.realpath(staging));
  }

  /** Runs `task` after every earlier one of this workspace has ended. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    return this.lock.run(task);
  }

  /**
   * The workspace for a run: its names, listed under the lock, and its files, each opened only
   * when the tar reaches it (one gone by then is left out). A workspace over the caps could not be
   * unpacked in a container, so it is refused with the way out.
   */
  async snapshot(caps: WorkspaceCaps): Promise<FileSource> {
    const listing = await this.exclusive(() => this.list());
    const over = overCaps(Tree.of(listing).usage(), caps);
    if (over) throw overCapsConflict(over);
    return {
      dirs: listing.dirs,
      files: listing.files.map((f) => ({ path: f.path, open: () => this.openFile(f.path) })),
    };
  }

  private async openFile(rel: string): Promise<OpenedFile | null> {
    let handle: FileHandle;
    try {
      handle = await fs.open(path.join(this.root, rel), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch (err) {
      if (isGone(err)) return null; // deleted by a merge since the listing
      throw err;
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw new Error('not a regular file');
      return { size: stat.size, mtime: stat.mtime, chunks: readChunks(handle, stat.size), close: () => handle.close() };
    } catch (err) {
      await handle.close();
      if ((err as Error).message === 'not a regular file') return null;
      throw err;
    }
  }

  /** Paths and sizes of the regular files, and the directories (links and the rest are skipped). */
  private async list(): Promise<Listing> {
    const listing: Listing = { files: [], dirs: [] };
    const walk = async (rel: string): Promise<void> => {
      for (const entry of await fs.readdir(path.join(this.root, rel), { withFileTypes: true })) {
        const child = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isDirectory()) {
          listing.dirs.push(child);
          await walk(child);
        } else if (entry.isFile()) {
          const stat = await fs.lstat(path.join(this.root, child));
          listing.files.push({ path: child, size: stat.size, modified: stat.mtime });
        }
      }
    };
    await walk('');
    return listing;
  }

  /** The regular files, in every directory, sorted by path (listed under the lock, like a run's snapshot). */
  async files(): Promise<WorkspaceFile[]> {
    const { files } = await this.exclusive(() => this.list());
    return files.sort(byPath);
  }

  /**
   * The regular file at `rel`, opened under the lock (null when there is none): what is read is
   * that file as it was then, whatever a merge puts in its place meanwhile.
   */
  read(rel: string): Promise<OpenedFile | null> {
    return this.exclusive(async () => ((await this.probe(rel)).stat?.isFile() ? this.openFile(rel) : null));
  }

  /** A fresh staging area for files on their way in (a run's changes, a save). */
  stage(): Promise<StagedFiles> {
    return StagedFiles.create(this.staging);
  }

  /**
   * Applies what a run changed (its staged files, its new directories, what it deleted) so that
   * the workspace ends as the container's did, unless the result would be over the caps: then
   * nothing changes and the answer is which cap, to be said to the client.
   */
  merge(staged: StagedFiles, changes: MergeChanges, caps: WorkspaceCaps): Promise<string | null> {
    return this.exclusive(() => this.mergeNow(staged, changes, caps));
  }

  /**
   * Saves a client's file (save-and-execute, PUT /files/{path}) from its chunks: staged on disk
   * first, so the workspace changes only once all of it is there. 409 if a part of its path is a
   * file, if a directory is there, or if a file is there and `overwrite` is false.
   */
  async save(rel: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, overwrite: boolean, caps: WorkspaceCaps): Promise<Saved> {
    const staged = await this.stage();
    try {
      await staged.file(rel, chunks);
      return await this.exclusive(async (): Promise<Saved> => {
        const { stat, blockedBy } = await this.probe(rel);
        refuseSave(rel, blockedBy ? { kind: null, blockedBy } : { kind: stat ? (stat.isFile() ? 'file' : 'other') : null }, overwrite);
        const over = await this.mergeNow(staged, { dirs: [], deleted: [] }, caps);
        return over ? { over } : { replaced: stat !== null, over: null };
      });
    } finally {
      await staged.discard();
    }
  }

  async isFile(rel: string): Promise<boolean> {
    return (await this.probe(rel)).stat?.isFile() ?? false;
  }

  /** Deletes a file, or a directory with everything in it, at once; false when there is nothing at `rel`. */
  async remove(rel: string): Promise<boolean> {
    const staged = await this.stage();
    try {
      return await this.exclusive(async () => {
        if (!(await this.probe(rel)).stat) return false;
        await fs.rename(path.join(this.root, rel), staged.place()); // atomic; the bytes go with the staging area
        return true;
      });
    } finally {
      await staged.discard();
    }
  }

  /** Empties the workspace at once. */
  async clear(): Promise<void> {
    const staged = await this.stage();
    try {
      await this.exclusive(async () => {
        await fs.rename(this.root, staged.place());
        await fs.mkdir(this.root, { mode: 0o700 });
      });
    } finally {
      await staged.discard();
    }
  }

  private async mergeNow(staged: StagedFiles, changes: MergeChanges, caps: WorkspaceCaps): Promise<string | null> {
    const files = staged.files();
    const { over, deleted } = planMerge(await this.list(), changes, files, caps);
    if (over !== null) return over;

    // The same steps on disk, each undone (in reverse) should a later one fail: all or nothing.
    const undo: (() => Promise<void>)[] = [];
    const displace = async (full: string) => {
      const aside = staged.place();
      await fs.rename(full, aside);
      undo.push(() => fs.rename(aside, full));
    };
    const makeDirs = async (rel: string) => {
      let full = this.root;
      for (const part of rel.split('/')) {
        full = path.join(full, part);
        const stat = await fs.lstat(full).catch(() => null);
        if (stat?.isDirectory()) continue;
        if (stat) await displace(this.ours(stat, full));
        await fs.mkdir(full, { mode: 0o700 });
        const made = full;
        undo.push(() => fs.rm(made, { recursive: true, force: true }));
      }
    };
    try {
      for (const rel of deleted) {
        if ((await this.probe(rel)).stat) await displace(path.join(this.root, rel));
      }
      for (const dir of changes.dirs) await makeDirs(dir);
      for (const [rel, file] of files) {
        const parent = path.posix.dirname(rel);
        if (parent !== '.') await makeDirs(parent);
        const full = path.join(this.root, rel);
        const stat = await fs.lstat(full).catch(() => null);
        if (stat) await displace(this.ours(stat, full));
        await fs.rename(file.temp, full);
        undo.push(() => fs.rename(full, file.temp));
      }
    } catch (err) {
      const failures: unknown[] = [];
      for (const step of undo.reverse()) await step().catch((e: unknown) => failures.push(e));
      if (failures.length > 0) throw new AggregateError([err, ...failures], 'a workspace merge failed and was not fully undone');
      throw err;
    }
    return null;
  }

  /** `full`, if what is there is what this server writes (a file or a directory), the only kinds a merge moves aside. */
  private ours(stat: Stats, full: string): string {
    if (!stat.isFile() && !stat.isDirectory()) throw conflict(`${path.relative(this.root, full)} is neither a file nor a directory`);
    return full;
  }

  /** What is at `rel`, walking its parents without following links. */
  private async probe(rel: string): Promise<Probe> {
    const clean = cleanWorkspacePath(rel);
    let full = this.root;
    const parts = clean.split('/');
    for (const [i, part] of parts.entries()) {
      full = path.join(full, part);
      const stat = await fs.lstat(full).catch((err: unknown) => {
        if (isGone(err)) return null;
        throw err;
      });
      if (i === parts.length - 1 || stat === null) return { stat };
      if (!stat.isDirectory()) return { stat: null, blockedBy: parts.slice(0, i + 1).join('/') };
    }
    return { stat: null };
  }
}
