import type { ChangesSink, FileSource } from '../../server/sandbox/sandbox.js';

/** Files in memory as a FileSource; `open` and `closed` count what the tar opened and closed. */
export function memorySource(files: Record<string, string | Buffer>, dirs: string[] = []) {
  const counts = { open: 0, closed: 0 };
  const source: FileSource = {
    dirs,
    files: Object.entries(files).map(([path, content]) => ({
      path,
      open: async () => {
        counts.open += 1;
        const data = Buffer.from(content);
        return {
          size: data.length,
          mtime: new Date(0),
          chunks: (async function* () {
            for (let i = 0; i < data.length; i += 1000) yield data.subarray(i, i + 1000);
          })(),
          close: async () => {
            counts.closed += 1;
          },
        };
      },
    })),
  };
  return { source, counts };
}

/** A ChangesSink that keeps what it gets, taking `delayMs` for each chunk (a slow disk). */
export class MemorySink implements ChangesSink {
  readonly files = new Map<string, string>();
  constructor(private readonly delayMs = 0) {}

  async file(path: string, chunks: AsyncIterable<Buffer>): Promise<void> {
    const parts: Buffer[] = [];
    for await (const chunk of chunks) {
      parts.push(Buffer.from(chunk));
      if (this.delayMs) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    }
    this.files.set(path, Buffer.concat(parts).toString());
  }
}
