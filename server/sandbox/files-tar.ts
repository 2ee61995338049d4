import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { cleanRelativePath } from '../relative-path.js';
import { ProtocolViolation, type RunnerJob } from './protocol.js';
import type { FileSet, SandboxFile } from './sandbox.js';

/** The runner's input: `job.json` first, then the workspace under `workspace/`, then any wheelhouse. */
export function packJob(job: RunnerJob, workspace: FileSet, wheelhouse: SandboxFile[] = []): Readable {
  const pack = tar.pack();
  pack.entry({ name: 'job.json', mode: 0o644 }, Buffer.from(JSON.stringify(job)));
  for (const dir of workspace.dirs) pack.entry({ name: `workspace/${dir}`, type: 'directory', mode: 0o755 });
  const files = [
    ...workspace.files.map((f) => ({ ...f, name: `workspace/${f.path}` })),
    ...wheelhouse.map((f) => ({ ...f, name: `wheelhouse/${f.path}` })),
  ];
  for (const file of files) pack.entry({ name: file.name, mode: 0o644, mtime: file.mtime }, file.data);
  pack.finalize();
  return Readable.from(pack); // tar-stream's streams are streamx: hand out a plain Node stream
}

/** tar-stream's entry stream (a streamx Readable). */
type EntryStream = tar.ExtractEvents['entry'][1];

export interface ChangesCaps {
  maxBytes: number;
  maxFiles: number;
}

/**
 * Reads the tar of changed files that a container sends back. It is hostile input: only regular
 * files and directories with clean names under `workspace/` are kept, within byte and count caps;
 * links, devices, fifos and odd names are dropped (and counted), never followed or created.
 */
export class ChangesReader {
  private readonly extract = tar.extract();
  private readonly files: SandboxFile[] = [];
  private readonly dirs: string[] = [];
  private bytes = 0;
  private entries = 0;
  private failure: Error | null = null;
  readonly dropped: string[] = [];
  private readonly done: Promise<void>;

  constructor(private readonly caps: ChangesCaps) {
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

  write(chunk: Buffer): void {
    if (!this.failure) this.extract.write(chunk);
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
    if (rel === null || (header.type !== 'file' && header.type !== 'directory')) {
      this.dropped.push(JSON.stringify(header.name.slice(0, 200)) + ` (${header.type ?? 'unknown'})`);
      stream.on('end', next);
      stream.resume();
      return;
    }
    if (header.type === 'directory') {
      this.dirs.push(rel);
      stream.on('end', next);
      stream.resume();
      return;
    }
    const size = header.size ?? 0;
    if (this.bytes + size > this.caps.maxBytes) {
      throw new ProtocolViolation(`changed files are over the workspace cap of ${this.caps.maxBytes} bytes`);
    }
    this.bytes += size;
    const chunks: Buffer[] = [];
    stream.on('data', (c) => chunks.push(c as Buffer));
    stream.on('end', () => {
      this.files.push({ path: rel, data: Buffer.concat(chunks), mtime: header.mtime ?? new Date() });
      next();
    });
  }

  /** Ends the archive and returns what was accepted; throws ProtocolViolation if it was refused. */
  async finish(): Promise<FileSet> {
    if (this.failure) throw this.failure;
    this.extract.end(undefined);
    await this.done;
    if (this.failure) throw this.failure;
    return { files: this.files, dirs: this.dirs };
  }
}
