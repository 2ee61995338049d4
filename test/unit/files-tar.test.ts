import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import tar from 'tar-stream';
import { ChangesReader, packJob } from '../../server/sandbox/files-tar.js';
import { ProtocolViolation, type RunnerJob } from '../../server/sandbox/protocol.js';
import type { FileSource } from '../../server/sandbox/sandbox.js';
import { memorySource, MemorySink } from '../helpers/file-sets.js';

type Entry = Parameters<ReturnType<typeof tar.pack>['entry']>[0] & { data?: string };

async function archive(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { data, ...header } of entries) pack.entry(header, data ?? '');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function read(entries: Entry[], caps = { maxBytes: 1000, maxFiles: 10 }, sink = new MemorySink()) {
  const reader = new ChangesReader(caps, sink);
  const bytes = await archive(entries);
  for (let i = 0; i < bytes.length; i += 700) {
    if (!reader.write(bytes.subarray(i, i + 700))) await reader.drained();
  }
  return { changes: await reader.finish(), dropped: reader.dropped, sink };
}

describe('ChangesReader: tar from a container is hostile input', () => {
  it('keeps regular files and directories under workspace/, the files in the sink', async () => {
    const { changes, dropped, sink } = await read([
      { name: 'workspace/out', type: 'directory' },
      { name: 'workspace/out/a.txt', data: 'hello' },
    ]);
    assert.deepEqual(changes, { dirs: ['out'], files: ['out/a.txt'] });
    assert.deepEqual([...sink.files], [['out/a.txt', 'hello']]);
    assert.deepEqual(dropped, []);
  });

  it('drops links, devices, fifos and names that leave the workspace', async () => {
    const { changes, dropped } = await read([
      { name: 'workspace/sym', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'workspace/hard', type: 'link', linkname: 'workspace/../../etc/passwd' },
      { name: 'workspace/dev', type: 'character-device', devmajor: 1, devminor: 3 },
      { name: 'workspace/pipe', type: 'fifo' },
      { name: 'workspace/../escape.txt', data: 'x' },
      { name: 'workspace/a/../../escape.txt', data: 'x' },
      { name: '/etc/cron.d/evil', data: 'x' },
      { name: 'elsewhere.txt', data: 'x' },
      { name: 'workspace/./dot.txt', data: 'x' },
      { name: 'workspace/ok.txt', data: 'fine' },
    ]);
    assert.deepEqual(changes.files, ['ok.txt']);
    assert.equal(dropped.length, 9);
  });

  it('counts names in bytes: a part of 86 "€" (258 bytes) is dropped, one of 85 kept', async () => {
    const { changes, dropped } = await read([
      { name: `workspace/${'€'.repeat(86)}`, data: 'x' },
      { name: `workspace/${'€'.repeat(85)}`, data: 'y' },
    ]);
    assert.deepEqual(changes.files, ['€'.repeat(85)]);
    assert.equal(dropped.length, 1);
  });

  it('refuses an archive over the byte cap', async () => {
    await assert.rejects(read([{ name: 'workspace/big', data: 'x'.repeat(1001) }]), /over the workspace cap/);
  });

  it('refuses an archive over the file-count cap', async () => {
    const many = Array.from({ length: 11 }, (_, i) => ({ name: `workspace/f${i}`, data: 'x' }));
    await assert.rejects(read(many), /more than 10 changed files/);
  });

  it('refuses garbage', async () => {
    const reader = new ChangesReader({ maxBytes: 1000, maxFiles: 10 }, new MemorySink());
    reader.write(Buffer.alloc(512, 0x41));
    await assert.rejects(reader.finish(), (err: Error) => err instanceof ProtocolViolation && /^bad files archive: /.test(err.message));
  });

  it('an archive cut inside a file is the container\'s fault (a violation), not the sink\'s', async () => {
    const reader = new ChangesReader({ maxBytes: 100_000, maxFiles: 10 }, new MemorySink());
    const bytes = await archive([{ name: 'workspace/a', data: 'x'.repeat(5000) }]);
    reader.write(bytes.subarray(0, 2000));
    await assert.rejects(reader.finish(), (err: Error) => err instanceof ProtocolViolation);
  });

  it('a sink that fails (the server\'s disk) is a fault, passed on as it is', async () => {
    const failing = { file: async () => Promise.reject(new Error('ENOSPC: no space left on device')) };
    await assert.rejects(
      read([{ name: 'workspace/a', data: 'x' }], undefined, failing as unknown as MemorySink),
      (err: Error) => !(err instanceof ProtocolViolation) && /ENOSPC/.test(err.message),
    );
  });

  it('a slow sink holds the writer back: write() says wait, and the files still arrive whole', async () => {
    const sink = new MemorySink(2);
    const reader = new ChangesReader({ maxBytes: 1 << 20, maxFiles: 10 }, sink);
    const bytes = await archive([{ name: 'workspace/big', data: 'z'.repeat(200_000) }]);
    let waits = 0;
    for (let i = 0; i < bytes.length; i += 16_384) {
      if (!reader.write(bytes.subarray(i, i + 16_384))) {
        waits += 1;
        await reader.drained();
      }
    }
    await reader.finish();
    assert.ok(waits > 0, 'the reader never asked the writer to wait');
    assert.equal(sink.files.get('big'), 'z'.repeat(200_000));
  });

  it('without a sink (installs), files are dropped', async () => {
    const reader = new ChangesReader({ maxBytes: 1000, maxFiles: 10 });
    reader.write(await archive([{ name: 'workspace/a', data: 'x' }]));
    assert.deepEqual(await reader.finish(), { files: [], dirs: [] });
    assert.equal(reader.dropped.length, 1);
  });

  it('abort() ends a sink still waiting for bytes, instead of leaving it hanging', async () => {
    let ended: unknown = null;
    const sink = {
      file: async (_path: string, chunks: AsyncIterable<Buffer>) => {
        try {
          for await (const chunk of chunks) void chunk;
        } catch (err) {
          ended = err;
          throw err;
        }
      },
    };
    const reader = new ChangesReader({ maxBytes: 100_000, maxFiles: 10 }, sink);
    reader.write((await archive([{ name: 'workspace/a', data: 'x'.repeat(5000) }])).subarray(0, 2000));
    await new Promise((resolve) => setImmediate(resolve));
    reader.abort();
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(ended instanceof ProtocolViolation, `the sink ended with ${String(ended)}`);
  });
});

const JOB: RunnerJob = { protocol: 1, mode: 'code', code: 'print(1)', timeout_s: 1, output_limit: 1024, result_limit: 1024, max_outputs: 16, outputs_limit: 1024, stream: false, hold_s: 0 };

async function unpack(stream: AsyncIterable<unknown>): Promise<{ name: string; body: string }[]> {
  const extract = tar.extract();
  const entries: { name: string; body: string }[] = [];
  extract.on('entry', (header, entry, next) => {
    const chunks: Buffer[] = [];
    entry.on('data', (c) => chunks.push(c as Buffer));
    entry.on('end', () => (entries.push({ name: header.name, body: Buffer.concat(chunks).toString() }), next()));
  });
  for await (const chunk of stream) extract.write(chunk as Buffer);
  extract.end(undefined);
  await new Promise<void>((resolve) => extract.on('finish', () => resolve()));
  return entries;
}

describe('packJob', () => {
  it('puts job.json first, then the directories, then the files, each opened and closed in turn', async () => {
    const { source, counts } = memorySource({ 'd/x.py': 'print(1)', 'big.bin': 'b'.repeat(50_000) }, ['d']);
    const entries = await unpack(packJob(JOB, source));
    assert.deepEqual(entries.map((e) => e.name), ['job.json', 'workspace/d', 'workspace/d/x.py', 'workspace/big.bin']);
    assert.equal(entries[3]!.body, 'b'.repeat(50_000));
    assert.deepEqual(counts, { open: 2, closed: 2 });
  });

  it('leaves out a file gone since the listing', async () => {
    const { source } = memorySource({ 'a.txt': 'A' });
    const gone: FileSource = { dirs: [], files: [{ path: 'gone.txt', open: async () => null }, ...source.files] };
    assert.deepEqual((await unpack(packJob(JOB, gone))).map((e) => e.name), ['job.json', 'workspace/a.txt']);
  });

  it('reads files only as fast as the tar is read, and closes the open one when the stream is destroyed', async () => {
    const { source, counts } = memorySource({ 'a.bin': 'a'.repeat(1 << 20), 'b.bin': 'b' });
    const stream = packJob(JOB, source);
    await new Promise((resolve) => setTimeout(resolve, 20)); // nobody reads: the packer must wait, not buffer
    assert.deepEqual(counts, { open: 1, closed: 0 });
    stream.destroy();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(counts, { open: 1, closed: 1 });
  });

  it('a file that cannot be read fails the stream', async () => {
    const broken: FileSource = { dirs: [], files: [{ path: 'x', open: async () => Promise.reject(new Error('EIO: i/o error')) }] };
    await assert.rejects(unpack(packJob(JOB, broken)), /EIO/);
  });
});
