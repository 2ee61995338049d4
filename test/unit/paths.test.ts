import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cleanRelativePath } from '../../server/relative-path.js';
import { requireWorkspacePath } from '../../server/workspace/paths.js';

describe('workspace paths', () => {
  const good: [string, string][] = [
    ['script.py', 'script.py'],
    ['lib/util.py', 'lib/util.py'],
    ['a//b.py', 'a/b.py'],
    ['./a.py', 'a.py'],
    ['dir/', 'dir'],
  ];
  for (const [name, clean] of good) {
    it(`accepts ${JSON.stringify(name)} as ${clean}`, () => assert.equal(cleanRelativePath(name), clean));
  }

  const bad = ['', '/etc/passwd', '..', '../x', 'a/../../x', 'a/../b', 'a\\b', 'a\0b', '.', 'x'.repeat(1025), `${'y'.repeat(256)}/z`];
  for (const name of bad) {
    it(`refuses ${JSON.stringify(name.slice(0, 40))}`, () => {
      assert.equal(cleanRelativePath(name), null);
      assert.throws(() => requireWorkspacePath(name), /Invalid file_name/);
    });
  }

  it('strict mode (names from a container) also refuses non-normal forms', () => {
    assert.equal(cleanRelativePath('a//b', true), null);
    assert.equal(cleanRelativePath('./a', true), null);
    assert.equal(cleanRelativePath('a/b', true), 'a/b');
  });
});
