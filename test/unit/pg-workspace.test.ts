import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { foundAt, rowChanges } from '../../server/distributed/pg-workspace.js';
import { planMerge } from '../../server/workspace/tree.js';

describe("PgWorkspace's row changes, from a merge's plan", () => {
  it('deletes what is gone or changed kind, adds the new directories, and writes only the staged paths that end as files', () => {
    const before = { dirs: ['d', 'd/e', 'keep'], files: [{ path: 'd/e/f', size: 1 }, { path: 'file', size: 1 }, { path: 'keep/k', size: 1 }] };
    const staged: [string, { size: number }][] = [['file/inside', { size: 1 }], ['d', { size: 1 }], ['a', { size: 1 }], ['a/b', { size: 1 }]];
    const plan = planMerge(before, { dirs: ['n/m'], deleted: ['keep/k'] }, staged, { maxBytes: 1 << 20, maxEntries: 100 });
    assert.equal(plan.over, null);
    const rows = rowChanges(before, plan.tree!, staged.map(([rel]) => rel));
    assert.deepEqual(rows.gone.sort(), ['d', 'd/e', 'd/e/f', 'file', 'keep/k']);
    assert.deepEqual(rows.dirs.sort(), ['a', 'file', 'n', 'n/m']);
    assert.deepEqual(rows.files.sort(), ['a/b', 'd', 'file/inside']);
  });

  it('finds what a save would replace, or the file in its way', () => {
    const kinds = new Map([['lib', 'dir'], ['lib/a.py', 'file'], ['f', 'file']] as const);
    assert.deepEqual(foundAt('lib/a.py', new Map(kinds)), { kind: 'file' });
    assert.deepEqual(foundAt('lib', new Map(kinds)), { kind: 'other' });
    assert.deepEqual(foundAt('lib/new.py', new Map(kinds)), { kind: null });
    assert.deepEqual(foundAt('f/x/y', new Map(kinds)), { kind: null, blockedBy: 'f' });
    assert.deepEqual(foundAt('none/x', new Map(kinds)), { kind: null });
  });
});
