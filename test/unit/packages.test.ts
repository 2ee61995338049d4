import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../server/config.js';
import { listRefusal, pinsOf, resolutionRefusal } from '../../server/packages/resolution.js';
import { DEPLOYMENT_FILE, deploymentId, PackagesVolumes } from '../../server/packages/volume.js';
import type { ResolvedPackage } from '../../server/sandbox/protocol.js';

const item = (name: string, version: string, requires: string[] = [], over: Partial<ResolvedPackage> = {}): ResolvedPackage => ({
  name, version, requested: false, requires, sdist: false, direct: false, ...over,
});

describe('package lists through dependencies', () => {
  const goodpkg = item('goodpkg', '1.0', ['mid'], { requested: true });
  const mid = item('mid', '2.0', ['evilpkg', 'numpy']);
  const evilpkg = item('evilpkg', '0.1');
  const plan = [evilpkg, mid, goodpkg]; // pip's install order: dependencies first

  it('a denied dependency is named, with who requires it and the chain from what was asked for', () => {
    assert.equal(
      resolutionRefusal(plan, { allow: [], deny: ['evilpkg'] }),
      'Package evilpkg may not be installed here (PACKAGE_DENYLIST): mid 2.0 requires it (goodpkg -> mid -> evilpkg); nothing was installed',
    );
  });

  it('under an allow-list every dependency must be on it too', () => {
    assert.equal(
      resolutionRefusal(plan, { allow: ['goodpkg', 'mid'], deny: [] }),
      "Package evilpkg is not on this server's PACKAGE_ALLOWLIST: mid 2.0 requires it (goodpkg -> mid -> evilpkg); nothing was installed",
    );
    assert.equal(resolutionRefusal(plan, { allow: ['goodpkg', 'mid', 'evilpkg'], deny: [] }), null);
  });

  it('names every package that requires it', () => {
    const other = item('other', '3', ['evilpkg'], { requested: true });
    assert.match(resolutionRefusal([...plan, other], { allow: [], deny: ['evilpkg'] }) ?? '', /: mid 2\.0 and other 3 require it \(other -> evilpkg\)/);
  });

  it('says so when no package of the resolution requires it (one already installed does)', () => {
    assert.match(resolutionRefusal([goodpkg, evilpkg], { allow: [], deny: ['evilpkg'] }) ?? '', /pip's resolution pulled it in/);
  });

  it('refuses a dependency from a direct URL reference', () => {
    const direct = item('sneaky', '1.0', [], { direct: true });
    assert.match(resolutionRefusal([direct, goodpkg], { allow: [], deny: [] }) ?? '', /^Package sneaky 1\.0 would come from a direct URL reference/);
  });

  it('a clean resolution passes, and phase two gets exactly its pins', () => {
    assert.equal(resolutionRefusal(plan, { allow: [], deny: ['numpy-not-here'] }), null);
    assert.deepEqual(pinsOf(plan), ['evilpkg==0.1', 'mid==2.0', 'goodpkg==1.0']);
  });

  it('the names compared are PEP 503 normalized on both sides', () => {
    const config = loadConfig({ BASE_DIR: '/tmp/x', PACKAGE_DENYLIST: 'Evil_Pkg' });
    assert.match(listRefusal('evil-pkg', { allow: config.packageAllowlist, deny: config.packageDenylist }) ?? '', /PACKAGE_DENYLIST/);
  });
});

describe('deployments and their packages volumes', () => {
  it("an operator's BASE_DIR keeps the id made the first time; another BASE_DIR is another deployment", () => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'rpc-test-deploy-'));
    const config = loadConfig({ BASE_DIR: base, INSTANCE_ID: 'same' });
    assert.equal(config.baseDirTemporary, false);
    const id = deploymentId(config);
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(readFileSync(path.join(base, DEPLOYMENT_FILE), 'utf8'), `${id}\n`);
    assert.equal(deploymentId(loadConfig({ BASE_DIR: base, INSTANCE_ID: 'other' })), id, 'BASE_DIR wins over INSTANCE_ID');
    const second = loadConfig({ BASE_DIR: mkdtempSync(path.join(os.tmpdir(), 'rpc-test-deploy-')), INSTANCE_ID: 'same' });
    assert.notEqual(deploymentId(second), id);
  });

  it('without BASE_DIR (a new temporary one each start) the deployment is INSTANCE_ID', () => {
    const config = loadConfig({ INSTANCE_ID: 'host-8083' });
    assert.equal(config.baseDirTemporary, true);
    assert.equal(deploymentId(config), 'host-8083');
  });

  it('refuses a BASE_DIR whose id file holds something else', () => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'rpc-test-deploy-'));
    writeFileSync(path.join(base, DEPLOYMENT_FILE), '../../etc\n');
    assert.throws(() => deploymentId(loadConfig({ BASE_DIR: base })), /does not hold a deployment id/);
  });

  it('volume names carry a fixed-length key of the deployment, so prefix, deployment and tenant read one way', () => {
    const a = new PackagesVolumes('p-', 'a-b');
    const b = new PackagesVolumes('p-', 'a');
    assert.match(a.name('c'), /^p-[0-9a-f]{12}-c$/);
    assert.notEqual(a.name('c'), b.name('b-c'));
    assert.notEqual(a.name('default'), b.name('default'));
    assert.deepEqual(a.labels, { 'run-python-code.deployment': 'a-b' });
  });
});
