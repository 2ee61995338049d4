import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { PgWorkspaceStore } from '../../server/distributed/pg-workspace.js';
import { openDatabase } from '../../server/distributed/postgres.js';
import { ServiceError } from '../../server/errors.js';
import { createLogger } from '../../server/logger.js';
import { DiskWorkspaceStore } from '../../server/workspace/disk-workspace-store.js';
import type { WorkspaceCaps } from '../../server/workspace/tree.js';
import type { MergeChanges, Workspace } from '../../server/workspace/workspace.js';
import { startPostgres, type Daemon } from '../helpers/cluster.js';

const roomy: WorkspaceCaps = { maxBytes: 1 << 20, maxEntries: 100 };

/** Everything a workspace holds, through the interface only: directories with a trailing slash, files with their text. */
async function contents(ws: Workspace): Promise<Record<string, string>> {
  const snapshot = await ws.snapshot(roomy);
  const out: Record<string, string> = Object.fromEntries(snapshot.dirs.map((d) => [`${d}/`, '']));
  for (const file of snapshot.files) {
    const opened = (await file.open())!;
    const chunks: Buffer[] = [];
    for await (const chunk of opened.chunks) chunks.push(chunk);
    await opened.close();
    out[file.path] = Buffer.concat(chunks).toString();
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

async function merged(ws: Workspace, files: [string, string][], changes: MergeChanges, caps = roomy) {
  const staged = await ws.stage();
  try {
    for (const [rel, text] of files) await staged.file(rel, [Buffer.from(text)]);
    return await ws.merge(staged, changes, caps);
  } finally {
    await staged.discard();
  }
}

/**
 * The PostgreSQL workspace of API nodes against a real PostgreSQL: two pools stand for two API
 * nodes, and the disk workspace is the reference its merges must match.
 */
describe('PgWorkspace: the workspaces of API nodes in PostgreSQL', () => {
  let postgres: Daemon;
  const pools: pg.Pool[] = [];
  const bases: string[] = [];
  let nodes: PgWorkspaceStore[];
  let disk: DiskWorkspaceStore;
  let tenant = 0;
  const fresh = () => `t${++tenant}`;
  const store = (make: (base: string) => PgWorkspaceStore | DiskWorkspaceStore) => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'rpc-pgws-'));
    bases.push(base);
    return make(base);
  };

  before(async () => {
    postgres = await startPostgres();
    const logger = createLogger('error');
    pools.push(await openDatabase(postgres.url, logger), await openDatabase(postgres.url, logger));
    nodes = pools.map((pool) => store((base) => new PgWorkspaceStore(pool, base)) as PgWorkspaceStore);
    disk = store((base) => new DiskWorkspaceStore(base)) as DiskWorkspaceStore;
    await Promise.all([...nodes, disk].map((s) => s.clearStaging()));
  });

  after(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await postgres?.stop();
    for (const base of bases) rmSync(base, { recursive: true, force: true });
  });

  const scenarios: { name: string; start: Record<string, string>; files: [string, string][]; changes: MergeChanges }[] = [
    {
      name: 'files, new directories and deletions (subtrees, repeated, unsafe ones left out)',
      start: { 'old.txt': 'old', 'keep.txt': 'k', 'gone/deep/x': 'x' },
      files: [['new/a.txt', 'A'], ['keep.txt', 'K2']],
      changes: { dirs: ['empty'], deleted: ['old.txt', 'gone', 'gone/deep', 'gone/deep/x', '../escape', 'keep.txt/under'] },
    },
    {
      name: 'a file becomes a directory and a directory a file',
      start: { file: 'f', 'd/e/f': '1', 'd/g': '2' },
      files: [['file/inside', 'i'], ['d', 'D']],
      changes: { dirs: ['n/m'], deleted: [] },
    },
    {
      name: 'later paths of one run replace earlier ones, either way',
      start: { x: 'x' },
      files: [['a', 'first'], ['a/b', 'under'], ['c/d', 'deep'], ['c', 'flat'], ['x', 'again'], ['x', 'last']],
      changes: { dirs: ['x/y'], deleted: ['x'] },
    },
  ];
  for (const { name, start, files, changes } of scenarios) {
    it(`merges as the disk does: ${name}`, async () => {
      const t = fresh();
      const [pgWs, diskWs] = await Promise.all([nodes[0]!.for(t), disk.for(t)]);
      for (const ws of [pgWs, diskWs]) {
        for (const [rel, text] of Object.entries(start)) await ws.save(rel, [Buffer.from(text)], true, roomy);
        assert.equal(await merged(ws, files, changes), null);
      }
      assert.deepEqual(await contents(pgWs), await contents(diskWs));
      assert.deepEqual(await contents(await nodes[1]!.for(t)), await contents(pgWs), 'the other node sees the same');
    });
  }

  it('a file saved through one node is listed and read through the other; deleted there, gone on the first', async () => {
    const t = fresh();
    const [one, two] = await Promise.all([nodes[0]!.for(t), nodes[1]!.for(t)]);
    const bytes = Buffer.from([0, 0xff, 0x80, 10, 0]);
    assert.deepEqual(await one.save('lib/util.bin', [bytes.subarray(0, 2), bytes.subarray(2)], true, roomy), { replaced: false, over: null });
    assert.deepEqual((await two.files()).map((f) => [f.path, f.size]), [['lib/util.bin', 5]]);
    const opened = (await two.read('lib/util.bin'))!;
    assert.equal(opened.size, 5);
    const chunks: Buffer[] = [];
    for await (const chunk of opened.chunks) chunks.push(chunk);
    assert.deepEqual(Buffer.concat(chunks), bytes);
    assert.equal(await two.read('lib'), null, 'a directory is no file');
    assert.deepEqual(await two.save('lib/util.bin', [Buffer.from('new')], true, roomy), { replaced: true, over: null });
    assert.equal(await two.remove('lib'), true);
    assert.equal(await two.remove('lib'), false);
    assert.deepEqual(await one.files(), []);
    assert.deepEqual(await contents(one), {});
    for (const n of bases) assert.deepEqual(readdirSync(path.join(n, 'staging')), [], 'no staged file left');
  });

  it('merges on two nodes that each fit but together do not: one is kept whole, the other refused whole', async () => {
    const t = fresh();
    const caps = { maxBytes: 1 << 20, maxEntries: 3 };
    const [one, two] = await Promise.all([nodes[0]!.for(t), nodes[1]!.for(t)]);
    const answers = await Promise.all([
      merged(one, [['r1/a', '1'], ['r1/b', '1']], { dirs: [], deleted: [] }, caps),
      merged(two, [['r2/a', '2'], ['r2/b', '2']], { dirs: [], deleted: [] }, caps),
    ]);
    assert.deepEqual([...answers].sort(), ['6 files and directories, over SANDBOX_MAX_FILES (3)', null]);
    const kept = answers[0] === null ? 'r1' : 'r2';
    assert.deepEqual(Object.keys(await contents(one)), [`${kept}/`, `${kept}/a`, `${kept}/b`]);
  });

  it('the byte cap counts pages; a refused save changes nothing, and a save keeps its 409s and 400s', async () => {
    const t = fresh();
    const ws = await nodes[0]!.for(t);
    await ws.save('f.py', [Buffer.from('x')], true, roomy);
    await ws.save('lib/in.py', [Buffer.from('y')], true, roomy);
    const before = await contents(ws);
    assert.match(String((await ws.save('b.txt', [Buffer.from('b')], true, { maxBytes: 4096 * 3 - 1, maxEntries: 100 })).over), /over this tenant's workspace_mb/);
    await assert.rejects(ws.save('f.py', [Buffer.from('z')], false, roomy), (err: ServiceError) => err.status === 409 && /overwrite is false/.test(err.message));
    await assert.rejects(ws.save('lib', [Buffer.from('z')], true, roomy), (err: ServiceError) => err.status === 409 && /not a regular file/.test(err.message));
    await assert.rejects(ws.save('f.py/x.py', [Buffer.from('z')], true, roomy), /f\.py is not a directory/);
    await assert.rejects(ws.read('../etc/passwd'), (err: ServiceError) => err.status === 400);
    await assert.rejects(ws.remove('/abs'), (err: ServiceError) => err.status === 400);
    assert.deepEqual(await contents(ws), before);
  });

  it('a merge writes each file byte for byte, small ones together and large ones alone', async () => {
    const t = fresh();
    const ws = await nodes[0]!.for(t);
    const files: [string, Buffer][] = [700, 1, 2048, 0, 1500, 3].map((kib, i) => [`f${i}`, Buffer.alloc(kib * 1024, i + 1)]);
    const staged = await ws.stage();
    try {
      for (const [rel, bytes] of files) await staged.file(rel, [bytes]);
      assert.equal(await ws.merge(staged, { dirs: [], deleted: [] }, { maxBytes: 8 << 20, maxEntries: 10 }), null);
    } finally {
      await staged.discard();
    }
    for (const [rel, bytes] of files) {
      const opened = (await (await nodes[1]!.for(t)).read(rel))!;
      const chunks: Buffer[] = [];
      for await (const chunk of opened.chunks) chunks.push(chunk);
      assert.ok(Buffer.concat(chunks).equals(bytes), rel);
    }
    assert.deepEqual((await ws.files()).map((f) => f.size), files.map(([, b]) => b.length));
  });

  it('a merge that fails half-way is rolled back: nothing of it is kept', async () => {
    const t = fresh();
    const ws = await nodes[0]!.for(t);
    await ws.save('x/old.txt', [Buffer.from('old')], true, roomy);
    const before = await contents(ws);
    const staged = await ws.stage();
    try {
      for (const rel of ['a.txt', 'x', 'b.txt']) await staged.file(rel, [Buffer.from(rel)]);
      rmSync(staged.files()[2]![1].temp); // its bytes cannot be read: the last step fails
      await assert.rejects(ws.merge(staged, { dirs: ['n/m'], deleted: ['x/old.txt'] }, roomy), /ENOENT/);
    } finally {
      await staged.discard();
    }
    assert.deepEqual(await contents(ws), before);
  });

  it('a workspace over its caps (they were lowered) is refused for a run with the way out; clear() empties it on every node', async () => {
    const t = fresh();
    const ws = await nodes[0]!.for(t);
    for (const rel of ['a', 'b', 'c/d']) await ws.save(rel, [Buffer.from('1')], true, roomy);
    await assert.rejects(ws.snapshot({ maxBytes: 1 << 20, maxEntries: 3 }), (err: ServiceError) =>
      err.status === 409 && /holds 4 files and directories, over SANDBOX_MAX_FILES \(3\).*DELETE \/files/.test(err.message));
    await (await nodes[1]!.for(t)).clear();
    assert.deepEqual(await contents(ws), {});
  });
});
