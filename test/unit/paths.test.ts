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

  it('counts bytes of UTF-8, not UTF-16 units: a part of 200 "€" (600 bytes) is refused, saying why', () => {
    assert.equal(cleanRelativePath('€'.repeat(85)), '€'.repeat(85)); // 255 bytes
    assert.equal(cleanRelativePath('€'.repeat(86)), null); // 258 bytes in 86 units
    assert.throws(() => requireWorkspacePath(`${'€'.repeat(200)}.py`), /Invalid file_name .*longer than 255 bytes of UTF-8/);
    assert.equal(cleanRelativePath(Array(5).fill('€'.repeat(70)).join('/')), null); // 1054 bytes in 354 units
    assert.equal(cleanRelativePath(Array(5).fill('d'.repeat(200)).join('/'))?.length, 1004);
  });

  it('refuses lone surrogates (they have no UTF-8 form), and names the field', () => {
    assert.equal(cleanRelativePath('a\ud800.py'), null);
    assert.equal(cleanRelativePath('\udc00'), null);
    assert.equal(cleanRelativePath('ok-\ud83d\ude00.py'), 'ok-\ud83d\ude00.py'); // a pair is a character
    assert.throws(() => requireWorkspacePath('a\ud800.py', 'path'), /^Error: Invalid path "a\\ud800\.py": it contains a lone UTF-16 surrogate/);
  });

  it('strict mode (names from a container) also refuses non-normal forms', () => {
    assert.equal(cleanRelativePath('a//b', true), null);
    assert.equal(cleanRelativePath('./a', true), null);
    assert.equal(cleanRelativePath('a/b', true), 'a/b');
  });
});
