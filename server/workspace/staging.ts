import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ChangesSink } from '../sandbox/sandbox.js';

/**
 * Empties a server's staging area (BASE_DIR/staging), at start: what a crashed or killed server
 * left there was never merged, and no cap counts it. A BASE_DIR belongs to one server process.
 */
export async function clearStaging(root: string): Promise<void> {
  await fs.rm(root, { recursive: true, force: true });
  await fs.mkdir(root, { recursive: true, mode: 0o700 });
}

export interface StagedFile {
  /** Where its bytes wait, in this staging directory. */
  temp: string;
  size: number;
}

/**
 * One run's (or one save's) files on their way into a workspace: each is written to its own file
 * in a fresh directory under BASE_DIR/staging as it arrives, never held in memory, and renamed
 * into the workspace by the merge. Whatever happens, `discard()` removes the directory with every
 * staged file left in it, and what the merge moved out of the way.
 */
export class StagedFiles implements ChangesSink {
  private readonly staged = new Map<string, StagedFile>();
  private readonly writing = new Set<Promise<void>>();
  private discarded = false;
  private next = 0;

  private constructor(private readonly dir: string) {}

  static async create(stagingRoot: string): Promise<StagedFiles> {
    return new StagedFiles(await fs.mkdtemp(path.join(stagingRoot, 'stage-')));
  }

  file(rel: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<void> {
    const write = this.write(rel, chunks);
    const tracked = write.catch(() => undefined);
    this.writing.add(tracked);
    void tracked.then(() => this.writing.delete(tracked));
    return write;
  }

  private async write(rel: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<void> {
    if (this.discarded) throw new Error('staging: already discarded');
    const temp = this.place();
    let size = 0;
    const counted = async function* () {
      for await (const chunk of chunks) {
        size += chunk.length;
        yield chunk;
      }
    };
    try {
      await pipeline(counted, createWriteStream(temp, { flags: 'wx', mode: 0o600 }));
    } catch (err) {
      await fs.rm(temp, { force: true });
      throw err;
    }
    const previous = this.staged.get(rel);
    if (previous) await fs.rm(previous.temp, { force: true });
    this.staged.delete(rel); // the last copy of a path counts, in the order it came
    this.staged.set(rel, { temp, size });
  }

  /** The staged files by workspace path, in the order they came. */
  files(): [string, StagedFile][] {
    return [...this.staged];
  }

  /** A fresh path in this staging directory (same filesystem as the workspaces: renames are atomic). */
  place(): string {
    this.next += 1;
    return path.join(this.dir, String(this.next));
  }

  /** Removes every staged file and the directory, once no write is under way. */
  async discard(): Promise<void> {
    this.discarded = true;
    while (this.writing.size > 0) await Promise.all([...this.writing]);
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}
