import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import tar from 'tar-stream';
import { ChangesReader, packJob } from '../../server/sandbox/files-tar.js';
import { ProtocolViolation } from '../../server/sandbox/protocol.js';

type Entry = Parameters<ReturnType<typeof tar.pack>['entry']>[0] & { data?: string };

async function archive(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const { data, ...header } of entries) pack.entry(header, data ?? '');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function read(entries: Entry[], caps = { maxBytes: 1000, maxFiles: 10 }) {
  const reader = new ChangesReader(caps);
  const bytes = await archive(entries);
  for (let i = 0; i < bytes.length; i += 700) reader.write(bytes.subarray(i, i + 700));
  return { changes: await reader.finish(), dropped: reader.dropped };
}

describe('ChangesReader: tar from a container is hostile input', () => {
  it('keeps regular files and directories under workspace/', async () => {
    const { changes, dropped } = await read([
      { name: 'workspace/out', type: 'directory' },
      { name: 'workspace/out/a.txt', data: 'hello' },
    ]);
    assert.deepEqual(changes.dirs, ['out']);
    assert.deepEqual(changes.files.map((f) => [f.path, f.data.toString()]), [['out/a.txt', 'hello']]);
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
    assert.deepEqual(changes.files.map((f) => f.path), ['ok.txt']);
    assert.equal(dropped.length, 9);
  });

  it('refuses an archive over the byte cap', async () => {
    await assert.rejects(read([{ name: 'workspace/big', data: 'x'.repeat(1001) }]), /over the workspace cap/);
  });

  it('refuses an archive over the file-count cap', async () => {
    const many = Array.from({ length: 11 }, (_, i) => ({ name: `workspace/f${i}`, data: 'x' }));
    await assert.rejects(read(many), /more than 10 changed files/);
  });

  it('refuses garbage', async () => {
    const reader = new ChangesReader({ maxBytes: 1000, maxFiles: 10 });
    reader.write(Buffer.alloc(512, 0x41));
    await assert.rejects(reader.finish(), (err: Error) => err instanceof ProtocolViolation && /^bad files archive: /.test(err.message));
  });
});

describe('packJob', () => {
  it('puts job.json first, then the workspace', async () => {
    const pack = packJob({ protocol: 1, mode: 'code', code: 'print(1)', timeout_s: 1, output_limit: 1024, result_limit: 1024 }, {
      dirs: ['d'],
      files: [{ path: 'd/x.py', data: Buffer.from('print(1)'), mtime: new Date(0) }],
    });
    const extract = tar.extract();
    const names: string[] = [];
    extract.on('entry', (header, stream, next) => {
      names.push(header.name);
      stream.on('end', next);
      stream.resume();
    });
    for await (const chunk of pack) extract.write(chunk as Buffer);
    extract.end(undefined);
    await new Promise<void>((resolve) => extract.on('finish', () => resolve()));
    assert.deepEqual(names, ['job.json', 'workspace/d', 'workspace/d/x.py']);
  });
});
