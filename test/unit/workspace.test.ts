import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ServiceError } from '../../server/errors.js';
import { Tree, type WorkspaceCaps } from '../../server/workspace/tree.js';
import { DiskWorkspace } from '../../server/workspace/disk-workspace.js';

describe('Tree: the caps counted as the container counts them', () => {
  it('counts directories as entries and file bytes in whole 4 KiB pages', () => {
    const tree = Tree.of({ dirs: ['a', 'a/b'], files: [{ path: 'a/b/x', size: 1 }, { path: 'y', size: 4097 }, { path: 'e', size: 0 }] });
    assert.deepEqual(tree.usage(), { entries: 5, bytes: 4096 + 8192 });
  });

  it('applies a merge like the disk does: deletions take subtrees, directories and files replace what is in their way', () => {
    const tree = Tree.of({ dirs: ['d', 'd/e'], files: [{ path: 'd/e/f', size: 10 }, { path: 'file', size: 10 }] });
    tree.remove('d');
    assert.deepEqual(tree.usage(), { entries: 1, bytes: 4096 });
    tree.putFile('file/inside', 5); // the file "file" becomes a directory
    assert.deepEqual(tree.usage(), { entries: 2, bytes: 4096 });
    tree.putFile('file', 3); // and back: the directory goes with what was in it
    assert.deepEqual(tree.usage(), { entries: 1, bytes: 4096 });
    tree.makeDir('x/y/z');
    assert.deepEqual(tree.usage(), { entries: 4, bytes: 4096 });
  });
});

const roots: string[] = [];
after(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

async function workspace(files: Record<string, string> = {}) {
  const base = mkdtempSync(path.join(os.tmpdir(), 'rpc-unit-ws-'));
  roots.push(base);
  const root = path.join(base, 'ws');
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), content);
  }
  const ws = await DiskWorkspace.open(root, path.join(base, 'staging'));
  return { ws, root, staging: path.join(base, 'staging') };
}

/** Every path under `root`, directories with a trailing slash, with file contents. */
function contents(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out[`${child}/`] = '';
        walk(child);
      } else out[child] = readFileSync(path.join(root, child), 'utf8');
    }
  };
  walk('');
  return out;
}

const roomy: WorkspaceCaps = { maxBytes: 1 << 20, maxEntries: 100 };

async function stagedRun(ws: DiskWorkspace, files: Record<string, string>) {
  const staged = await ws.stage();
  for (const [rel, content] of Object.entries(files)) await staged.file(rel, [Buffer.from(content)]);
  return staged;
}

describe('Workspace merges: under a lock, within the caps, all or nothing', () => {
  it('applies files, new directories and deletions, and leaves no staged file behind', async () => {
    const { ws, root, staging } = await workspace({ 'old.txt': 'old', 'keep.txt': 'k', 'gone/deep/x': 'x' });
    const staged = await stagedRun(ws, { 'new/a.txt': 'A', 'keep.txt': 'K2' });
    assert.equal(await ws.merge(staged, { dirs: ['empty'], deleted: ['old.txt', 'gone', 'gone/deep', 'gone/deep/x', '../escape'] }, roomy), null);
    await staged.discard();
    assert.deepEqual(contents(root), { 'empty/': '', 'keep.txt': 'K2', 'new/': '', 'new/a.txt': 'A' });
    assert.deepEqual(readdirSync(staging), []);
  });

  it('refuses a merge past the entry cap (directories count), and changes nothing', async () => {
    const { ws, root } = await workspace({ 'a.txt': 'a' });
    const before = contents(root);
    const staged = await stagedRun(ws, { 'd1/d2/f': 'x' }); // 3 new entries: 4 in all
    const refused = await ws.merge(staged, { dirs: [], deleted: [] }, { maxBytes: 1 << 20, maxEntries: 3 });
    await staged.discard();
    assert.equal(refused, '4 files and directories, over SANDBOX_MAX_FILES (3)');
    assert.deepEqual(contents(root), before);
  });

  it('refuses a merge past the byte cap, counted in pages, and changes nothing', async () => {
    const { ws, root } = await workspace({ 'a.txt': 'a' });
    const staged = await stagedRun(ws, { 'b.txt': 'b' }); // two pages
    const refused = await ws.merge(staged, { dirs: [], deleted: [] }, { maxBytes: 4096 * 2 - 1, maxEntries: 100 });
    await staged.discard();
    assert.match(String(refused), /^0\.0 MiB, over this tenant's workspace_mb \(0 MiB\)$/);
    assert.deepEqual(contents(root), { 'a.txt': 'a' });
  });

  it('concurrent merges that each fit but together do not: the first is kept, the second refused', async () => {
    const { ws, root } = await workspace();
    const caps = { maxBytes: 1 << 20, maxEntries: 3 };
    const [one, two] = await Promise.all([stagedRun(ws, { 'r1/a': '1', 'r1/b': '1' }), stagedRun(ws, { 'r2/a': '2', 'r2/b': '2' })]);
    const answers = await Promise.all([ws.merge(one, { dirs: [], deleted: [] }, caps), ws.merge(two, { dirs: [], deleted: [] }, caps)]);
    await Promise.all([one.discard(), two.discard()]);
    assert.deepEqual(answers, [null, '6 files and directories, over SANDBOX_MAX_FILES (3)']);
    assert.deepEqual(Object.keys(contents(root)).sort(), ['r1/', 'r1/a', 'r1/b']);
  });

  it('a merge that fails half-way on the disk is undone', async () => {
    const { ws, root } = await workspace({ 'x/old.txt': 'old', 'file': 'f' });
    const before = contents(root);
    const staged = await stagedRun(ws, { 'a.txt': 'A', 'file/inside': 'i', 'b.txt': 'B' });
    rmSync(staged.files()[2]![1].temp); // the last rename will fail with ENOENT
    await assert.rejects(ws.merge(staged, { dirs: ['n/m'], deleted: ['x'] }, roomy), /ENOENT/);
    await staged.discard();
    assert.deepEqual(contents(root), before);
  });

  it('a path that a container sends twice counts once, its last copy', async () => {
    const { ws, root } = await workspace();
    const staged = await ws.stage();
    await staged.file('a', [Buffer.from('first')]);
    await staged.file('a', [Buffer.from('second')]);
    assert.equal(await ws.merge(staged, { dirs: [], deleted: [] }, { maxBytes: 4096, maxEntries: 1 }), null);
    await staged.discard();
    assert.deepEqual(contents(root), { a: 'second' });
  });
});

describe('Workspace saves, deletions and snapshots', () => {
  it('save() counts the directories it makes, and says whether it replaced a file', async () => {
    const { ws, root, staging } = await workspace();
    const caps = { maxBytes: 1 << 20, maxEntries: 3 };
    assert.deepEqual(await ws.save('a/b/c.py', [Buffer.from('x')], true, caps), { replaced: false, over: null });
    assert.deepEqual(await ws.save('a/d.py', [Buffer.from('x')], true, caps), { over: '4 files and directories, over SANDBOX_MAX_FILES (3)' });
    assert.equal(existsSync(path.join(root, 'a/d.py')), false);
    // A replacement adds nothing; its chunks may come one by one, as an upload's do.
    const chunks = async function* () {
      yield Buffer.from('over');
      yield Buffer.from('written');
    };
    assert.deepEqual(await ws.save('a/b/c.py', chunks(), true, caps), { replaced: true, over: null });
    assert.equal(readFileSync(path.join(root, 'a/b/c.py'), 'utf8'), 'overwritten');
    assert.deepEqual(readdirSync(staging), []);
  });

  it('files() lists the regular files in every directory, sorted, with size and time; read() opens one', async () => {
    const { ws } = await workspace({ 'b.txt': '22', 'a/z.py': '1', 'a/b/c': '333' });
    const files = await ws.files();
    assert.deepEqual(files.map((f) => [f.path, f.size]), [['a/b/c', 3], ['a/z.py', 1], ['b.txt', 2]]);
    assert.ok(files.every((f) => f.modified instanceof Date && Math.abs(Date.now() - f.modified.getTime()) < 60_000));
    const opened = await ws.read('a/b/c');
    assert.ok(opened);
    const chunks: Buffer[] = [];
    for await (const chunk of opened.chunks) chunks.push(chunk);
    await opened.close();
    assert.equal(Buffer.concat(chunks).toString(), '333');
    assert.equal(await ws.read('a/b'), null); // a directory
    assert.equal(await ws.read('nope'), null);
  });

  it('save() keeps its 409s, and leaves no staged file on any failure', async () => {
    const { ws, staging } = await workspace({ 'f.py': 'x', 'lib/in.py': 'y' });
    await assert.rejects(ws.save('f.py', [Buffer.from('z')], false, roomy), (err: ServiceError) => err.status === 409);
    await assert.rejects(ws.save('lib', [Buffer.from('z')], true, roomy), (err: ServiceError) => err.status === 409);
    await assert.rejects(ws.save('f.py/x.py', [Buffer.from('z')], true, roomy), /f\.py is not a directory/);
    assert.deepEqual(readdirSync(staging), []);
  });

  it('remove() takes a file or a whole directory; false when nothing is there', async () => {
    const { ws, root, staging } = await workspace({ 'a/b/c': '1', 'd': '2' });
    assert.equal(await ws.remove('a'), true);
    assert.equal(await ws.remove('d'), true);
    assert.equal(await ws.remove('d'), false);
    assert.equal(await ws.remove('d/under-a-file'), false);
    assert.deepEqual(contents(root), {});
    assert.deepEqual(readdirSync(staging), []);
  });

  it('clear() empties the workspace', async () => {
    const { ws, root } = await workspace({ 'a/b/c': '1', 'd': '2' });
    await ws.clear();
    assert.deepEqual(contents(root), {});
    assert.equal(await ws.isFile('d'), false);
  });

  it('a snapshot opens each file only when asked; one deleted since the listing is left out', async () => {
    const { ws, root } = await workspace({ 'a.txt': 'A', 'b.txt': 'B' });
    const snapshot = await ws.snapshot(roomy);
    assert.deepEqual(snapshot.files.map((f) => f.path).sort(), ['a.txt', 'b.txt']);
    rmSync(path.join(root, 'b.txt'));
    const b = snapshot.files.find((f) => f.path === 'b.txt')!;
    assert.equal(await b.open(), null);
    const a = (await snapshot.files.find((f) => f.path === 'a.txt')!.open())!;
    const chunks: Buffer[] = [];
    for await (const chunk of a.chunks) chunks.push(chunk);
    await a.close();
    assert.equal(Buffer.concat(chunks).toString(), 'A');
  });

  it('a workspace over its caps (they were lowered, say) is refused with the way out', async () => {
    const { ws } = await workspace({ 'a': '1', 'b': '2', 'c/d': '3' });
    await assert.rejects(ws.snapshot({ maxBytes: 1 << 20, maxEntries: 3 }), (err: ServiceError) =>
      err.status === 409 && /holds 4 files and directories, over SANDBOX_MAX_FILES \(3\).*DELETE \/files/.test(err.message));
    assert.ok(existsSync(path.join(ws.root, 'c/d')));
  });
});
