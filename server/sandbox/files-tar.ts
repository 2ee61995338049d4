import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { cleanRelativePath } from '../relative-path.js';
import { ProtocolViolation, type RunnerJob } from './protocol.js';
import type { ChangesSink, FileSource, SandboxFile, SourceFile } from './sandbox.js';

/** The part of a streamx stream (tar-stream's) that waiting on it needs. */
interface Waitable {
  readonly destroying: boolean;
  once(event: 'drain' | 'close', listener: () => void): unknown;
  off(event: 'drain' | 'close', listener: () => void): unknown;
}

/** Resolves once `stream` takes writes again; rejects once it is destroyed (so no loop waits forever). */
function drained(stream: Waitable): Promise<void> {
  if (stream.destroying) return Promise.reject(new Error('tar stream destroyed'));
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      stream.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      stream.off('drain', onDrain);
      reject(new Error('tar stream destroyed'));
    };
    stream.once('drain', onDrain);
    stream.once('close', onClose);
  });
}

/** An in-memory file (a wheel) as a source. */
function bufferSource(file: SandboxFile): SourceFile {
  return {
    path: file.path,
    open: async () => ({
      size: file.data.length,
      mtime: file.mtime,
      chunks: (async function* () {
        yield file.data;
      })(),
      close: async () => undefined,
    }),
  };
}

/** Writes one file into the tar, reading it only as fast as the tar is read. */
async function packFile(pack: tar.Pack, name: string, file: SourceFile): Promise<void> {
  const opened = await file.open();
  if (!opened) return; // gone since it was listed
  try {
    let entry!: ReturnType<tar.Pack['entry']>;
    const written = new Promise<void>((resolve, reject) => {
      entry = pack.entry({ name, size: opened.size, mode: 0o644, mtime: opened.mtime }, (err) => (err ? reject(err) : resolve()));
    });
    written.catch(() => undefined); // awaited below, unless a write fails first
    for await (const chunk of opened.chunks) {
      if (!entry.write(chunk)) await drained(entry);
    }
    entry.end(undefined);
    await written;
  } finally {
    await opened.close();
  }
}

/**
 * The runner's input: `job.json` first, then the workspace under `workspace/` (directories, then
 * files, each opened only when the tar reaches it), then any wheelhouse. Destroying the stream
 * stops the packing and closes the file being read.
 */
export function packJob(job: RunnerJob, workspace: FileSource, wheelhouse: SandboxFile[] = []): Readable {
  const pack = tar.pack();
  pack.entry({ name: 'job.json', mode: 0o644 }, Buffer.from(JSON.stringify(job)));
  for (const dir of workspace.dirs) pack.entry({ name: `workspace/${dir}`, type: 'directory', mode: 0o755 });
  const files = [
    ...workspace.files.map((f) => ({ name: `workspace/${f.path}`, source: f })),
    ...wheelhouse.map((f) => ({ name: `wheelhouse/${f.path}`, source: bufferSource(f) })),
  ];
  void (async () => {
    for (const { name, source } of files) {
      if (pack.destroying) return;
      await packFile(pack, name, source);
    }
    pack.finalize();
  })().catch((err: Error) => pack.destroy(err));
  // tar-stream's streams are streamx: hand out a plain Node stream, whose destruction ends the pack.
  const out = Readable.from(pack);
  out.once('close', () => pack.destroy());
  return out;
}

/** tar-stream's entry stream (a streamx Readable). */
type EntryStream = tar.ExtractEvents['entry'][1];

/** An entry's bytes; the archive failing under them is the container's fault, not the sink's. */
async function* entryChunks(stream: EntryStream): AsyncIterable<Buffer> {
  try {
    for await (const chunk of stream) yield chunk as Buffer;
  } catch (err) {
    throw new ProtocolViolation(`bad files archive: ${(err as Error).message}`);
  }
}

export interface ChangesCaps {
  maxBytes: number;
  maxFiles: number;
}

/**
 * Reads the tar of changed files that a container sends back. It is hostile input: only regular
 * files and directories with clean names under `workspace/` are kept, within byte and count caps;
 * links, devices, fifos and odd names are dropped (and counted), never followed or created. Files
 * go to the sink as they come, never whole into memory: `write` says when to wait for `drained()`.
 */
export class ChangesReader {
  private readonly extract = tar.extract();
  private readonly files: string[] = [];
  private readonly dirs: string[] = [];
  private bytes = 0;
  private entries = 0;
  private failure: Error | null = null;
  readonly dropped: string[] = [];
  private readonly done: Promise<void>;

  constructor(
    private readonly caps: ChangesCaps,
    private readonly sink?: ChangesSink,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.extract.on('finish', resolve);
      this.extract.on('error', (err) => reject(this.failure ?? new ProtocolViolation(`bad files archive: ${err.message}`)));
    });
    this.done.catch(() => undefined); // observed in finish()
    this.extract.on('entry', (header, stream, next) => {
      try {
        this.accept(header, stream, next);
      } catch (err) {
        this.fail(err as Error);
      }
    });
  }

  /** Takes a chunk of the archive; false means wait for `drained()` before the next one. */
  write(chunk: Buffer): boolean {
    if (this.failure) return true;
    return this.extract.write(chunk);
  }

  /** Resolves once the reader takes more (or has failed, and takes nothing). */
  drained(): Promise<void> {
    return drained(this.extract).catch(() => undefined);
  }

  /** Stops reading: entries still being stored fail, so no sink waits for bytes that will never come. */
  abort(): void {
    if (!this.extract.destroying) this.extract.destroy();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.extract.destroy(err);
  }

  private accept(header: tar.Header, stream: EntryStream, next: () => void): void {
    stream.on('error', () => undefined); // a refused archive destroys its entries; finish() reports why
    this.entries += 1;
    if (this.entries > this.caps.maxFiles) throw new ProtocolViolation(`more than ${this.caps.maxFiles} changed files`);
    const rel = header.name.startsWith('workspace/') ? cleanRelativePath(header.name.slice(10).replace(/\/$/, ''), true) : null;
    const skip = () => {
      stream.on('end', next);
      stream.resume();
    };
    if (rel === null || (header.type !== 'file' && header.type !== 'directory') || (header.type === 'file' && !this.sink)) {
      this.dropped.push(JSON.stringify(header.name.slice(0, 200)) + ` (${header.type ?? 'unknown'})`);
      return skip();
    }
    if (header.type === 'directory') {
      this.dirs.push(rel);
      return skip();
    }
    const size = header.size ?? 0;
    if (this.bytes + size > this.caps.maxBytes) {
      throw new ProtocolViolation(`changed files are over the workspace cap of ${this.caps.maxBytes} bytes`);
    }
    this.bytes += size;
    this.sink!.file(rel, entryChunks(stream)).then(
      () => {
        this.files.push(rel);
        next();
      },
      (err: Error) => this.fail(err),
    );
  }

  /**
   * Ends the archive once every file is in the sink, and returns the paths accepted; throws
   * ProtocolViolation if the archive was refused, or the sink's own error if storing failed.
   */
  async finish(): Promise<{ files: string[]; dirs: string[] }> {
    if (this.failure) throw this.failure;
    this.extract.end(undefined);
    await this.done;
    if (this.failure) throw this.failure;
    return { files: this.files, dirs: this.dirs };
  }
}
