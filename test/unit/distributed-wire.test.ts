import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChangesCollector, readSource, secondTryRefusal, sourceOf } from '../../server/distributed/wire.js';
import type { FileSource } from '../../server/sandbox/sandbox.js';

const bytes = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => i % 256));

async function drain(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts);
}

describe('a job on the queue', () => {
  it('carries the workspace files byte for byte, and leaves out one gone since it was listed', async () => {
    const closed: string[] = [];
    const source: FileSource = {
      dirs: ['d'],
      files: [
        { path: 'd/a.bin', open: async () => ({ size: 300, mtime: new Date(5000), chunks: (async function* () { yield bytes(300); })(), close: async () => void closed.push('a') }) },
        { path: 'gone.txt', open: async () => null },
      ],
    };
    const wire = await readSource(source);
    assert.deepEqual(closed, ['a'], 'every opened file is closed');
    assert.deepEqual(wire.map((f) => f.path), ['d/a.bin']);
    const back = sourceOf({ dirs: ['d'], files: wire });
    assert.deepEqual(back.dirs, ['d']);
    const opened = await back.files[0]!.open();
    assert.equal(opened!.size, 300);
    assert.equal(opened!.mtime.getTime(), 5000);
    assert.deepEqual(await drain(opened!.chunks), bytes(300));
  });

  it("brings back the run's changed files as the outcome names them, the last copy of a path counting", async () => {
    const changes = new ChangesCollector();
    await changes.file('out.txt', (async function* () { yield Buffer.from('first'); })());
    await changes.file('out.txt', (async function* () { yield Buffer.from('sec'); yield Buffer.from('ond'); })());
    await changes.file('dropped.txt', (async function* () { yield Buffer.from('x'); })());
    const wire = changes.wire({ files: ['out.txt'], dirs: [], deleted: [] });
    assert.deepEqual(wire.map((f) => [f.path, Buffer.from(f.data, 'base64').toString()]), [['out.txt', 'second']]);
    assert.deepEqual(changes.wire(null), []);
  });
});

describe('a job that came back after its worker was lost', () => {
  const phase = { requirement: 'tiny==1.0', upgrade: false, pipArgs: [], packagesMaxBytes: 1 << 20, packagesMaxFiles: 100 };
  const install = { install: phase, packagesWritable: true };
  it('runs again when it is a run, or an install\'s resolve phase (nothing written yet)', () => {
    assert.equal(secondTryRefusal({}, 2), null);
    assert.equal(secondTryRefusal({ install: phase, packagesWritable: false }, 2), null);
  });
  it('runs at most once when it is the install phase, which writes the packages volume', () => {
    assert.equal(secondTryRefusal(install, 1), null);
    assert.match(String(secondTryRefusal(install, 2)), /an install runs at most once: see GET \/packages/);
  });
});
