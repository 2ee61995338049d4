import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ContextIds } from '../../server/contexts/context-ids.js';
import { scriptBlock } from '../../server/packages/dependency-service.js';

describe('PEP 723 script blocks', () => {
  it('reads the script block as TOML, wherever the PEP allows it', () => {
    const code = '#!/usr/bin/env python3\n# /// script\n# requires-python = ">=3.10"\n# dependencies = [\n#   "tinypkg>=1",\n#   "other[x]",\n# ]\n# ///\nimport tinypkg\n';
    assert.deepEqual({ ...scriptBlock(code) }, { 'requires-python': '>=3.10', dependencies: ['tinypkg>=1', 'other[x]'] });
  });

  it('ignores other block types and code without a block', () => {
    assert.equal(scriptBlock('print(1)'), null);
    assert.equal(scriptBlock('# /// pyproject\n# x = 1\n# ///\n'), null);
    assert.equal(scriptBlock('# /// script\n# dependencies = []\nprint(1)\n'), null, 'an unclosed block is no block');
  });

  it('refuses two script blocks and bad TOML, saying so', () => {
    assert.throws(() => scriptBlock('# /// script\n# a = 1\n# ///\nprint(1)\n# /// script\n# b = 2\n# ///\n'), /more than one/);
    assert.throws(() => scriptBlock('# /// script\n# dependencies = [\n# ///\n'), /not valid TOML/);
  });
});

describe('context ids', () => {
  it("tell this run's ids, an earlier run's and ids never issued to this tenant apart", () => {
    const ids = new ContextIds('deployment-a');
    const id = ids.issue('alice');
    assert.match(id, /^ctx_[0-9a-f]{36}$/);
    assert.equal(ids.origin(id, 'alice'), 'this-run');
    assert.equal(ids.origin(id, 'bob'), 'unknown', "another tenant cannot learn that alice's id exists");
    assert.equal(new ContextIds('deployment-a').origin(id, 'alice'), 'earlier-run');
    assert.equal(new ContextIds('deployment-b').origin(id, 'alice'), 'unknown');
    assert.equal(ids.origin(`${id.slice(0, -1)}${id.endsWith('0') ? '1' : '0'}`, 'alice'), 'unknown');
    assert.equal(ids.origin('ctx_nope', 'alice'), 'unknown');
  });
});
