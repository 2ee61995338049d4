import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../server/config.js';
import { pipArgs, pipError } from '../../server/packages/package-service.js';
import { parseRequirement } from '../../server/packages/requirement.js';

describe('parseRequirement', () => {
  const good: [string, string, string][] = [
    ['requests', 'requests', 'requests'],
    ['Flask_Login', 'flask-login', 'Flask_Login'],
    ['pandas[excel]>=2,<3', 'pandas', 'pandas[excel]>=2,<3'],
    ['pandas [excel, plot] >= 2 , < 3', 'pandas', 'pandas[excel,plot]>=2,<3'],
    ['numpy==1.26.*', 'numpy', 'numpy==1.26.*'],
    ['torch~=2.1', 'torch', 'torch~=2.1'],
    ['pkg!=1.0rc1', 'pkg', 'pkg!=1.0rc1'],
    ['  zope.interface  ', 'zope-interface', 'zope.interface'],
  ];
  for (const [raw, name, text] of good) {
    it(`accepts ${JSON.stringify(raw)}`, () => assert.deepEqual(parseRequirement(raw), { name, text }));
  }
  const bad = ['', '-U numpy', '--pre', 'git+https://x/y', 'a b', 'a;b', 'a>=', '[x]', 'a==1 b', 'a,b', 'x'.repeat(201), 'ñandú'];
  for (const raw of bad) {
    it(`refuses ${JSON.stringify(raw.slice(0, 30))}`, () => assert.throws(() => parseRequirement(raw), /Invalid package_name/));
  }
});

describe('pipError', () => {
  it("keeps pip's ERROR lines", () => {
    const stderr = 'Looking in links: /wheelhouse\nERROR: Could not find a version that satisfies the requirement x\nERROR: No matching distribution found for x\n';
    assert.equal(pipError(stderr), 'ERROR: Could not find a version that satisfies the requirement x\nERROR: No matching distribution found for x');
  });
  it('falls back to the last lines', () => {
    assert.equal(pipError('a\nb\nc\nd\ne\nf\n'), 'b\nc\nd\ne\nf');
    assert.equal(pipError(''), null);
  });
});

describe('pipArgs', () => {
  it("uses pip's default index when nothing is configured", () => {
    assert.deepEqual(pipArgs(loadConfig({ BASE_DIR: '/tmp/x' })), []);
  });
  it('passes the configured index, extra indexes and trusted hosts', () => {
    const config = loadConfig({
      BASE_DIR: '/tmp/x',
      PIP_INDEX_URL: 'https://pypi.internal/simple',
      PIP_EXTRA_INDEX_URL: 'https://a.internal/simple,https://b.internal/simple',
      PIP_TRUSTED_HOST: 'a.internal',
    });
    assert.deepEqual(pipArgs(config), [
      '--index-url', 'https://pypi.internal/simple',
      '--extra-index-url', 'https://a.internal/simple', '--extra-index-url', 'https://b.internal/simple',
      '--trusted-host', 'a.internal',
    ]);
  });
  it('a wheelhouse replaces any index', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-wh-'));
    const config = loadConfig({ BASE_DIR: '/tmp/x', WHEELHOUSE_DIR: dir, PIP_INDEX_URL: 'https://pypi.internal/simple' });
    assert.deepEqual(pipArgs(config), ['--no-index', '--find-links', '/wheelhouse']);
  });
  it('a WHEELHOUSE_DIR that does not exist stops start-up', () => {
    assert.throws(() => loadConfig({ BASE_DIR: '/tmp/x', WHEELHOUSE_DIR: '/nonexistent/wheels' }), /^Error: WHEELHOUSE_DIR=.*not a directory/);
  });
});
