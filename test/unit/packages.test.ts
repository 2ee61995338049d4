import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../server/config.js';
import { DEPLOYMENT_FILE, deploymentId, PackagesVolumes } from '../../server/packages/volume.js';

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
