import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig, ConfigError } from '../../server/config.js';
import { ReceiveBudget, type Reservation } from '../../server/http/receive-budget.js';

const held = (r: Reservation | string): Reservation => {
  assert.equal(typeof r, 'object', `refused: ${String(r)}`);
  return r as Reservation;
};

describe('ReceiveBudget', () => {
  it('caps the bytes being received per tenant, then in total; another tenant goes on until the total', () => {
    const budget = new ReceiveBudget(10, 6);
    const a1 = held(budget.reserve('a', 4));
    assert.equal(budget.reserve('a', 3), 'tenant');
    const a2 = held(budget.reserve('a', 2));
    held(budget.reserve('b', 3));
    assert.equal(budget.reserve('b', 2), 'total', '6 + 3 + 2 is past 10');
    assert.equal(budget.receiving, 9);
    a1.release();
    held(budget.reserve('b', 2));
    assert.equal(budget.receiving, 7);
    a2.release();
  });

  it('gives bytes back once, however often release is called', () => {
    const budget = new ReceiveBudget(10, 10);
    const a = held(budget.reserve('a', 5));
    const b = held(budget.reserve('a', 5));
    a.release();
    a.release();
    assert.equal(budget.receiving, 5);
    assert.equal(budget.reserve('a', 6), 'tenant');
    b.release();
    assert.equal(budget.receiving, 0);
    held(budget.reserve('a', 10));
  });
});

describe('receive settings', () => {
  it('default to 8 and 32 bodies of MAX_BODY_BYTES, and follow it', () => {
    const defaults = loadConfig({ BASE_DIR: '/tmp/x' });
    assert.equal(defaults.tenantReceivingMaxBytes, 16 * 1024 * 1024);
    assert.equal(defaults.receivingMaxBytes, 64 * 1024 * 1024);
    assert.ok(defaults.bodyTimeoutS < defaults.headersTimeoutS, 'a body holds memory; headers hardly any');
    const small = loadConfig({ BASE_DIR: '/tmp/x', MAX_BODY_BYTES: '65536' });
    assert.equal(small.tenantReceivingMaxBytes, 8 * 65536);
    assert.equal(small.receivingMaxBytes, 32 * 65536);
  });

  const bad: [Record<string, string>, RegExp][] = [
    [{ TENANT_RECEIVING_MAX_BYTES: '1048576' }, /TENANT_RECEIVING_MAX_BYTES \(1048576\) is below MAX_BODY_BYTES \(2097152\)/],
    [{ RECEIVING_MAX_BYTES: '4194304', TENANT_RECEIVING_MAX_BYTES: '8388608' }, /RECEIVING_MAX_BYTES \(4194304\) is below TENANT_RECEIVING_MAX_BYTES \(8388608\)/],
    [{ MAX_CONNECTIONS: '0' }, /^MAX_CONNECTIONS="0": expected a whole number from 1/],
  ];
  for (const [env, message] of bad) {
    it(`refuse ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')}`, () => {
      assert.throws(() => loadConfig({ BASE_DIR: '/tmp/x', ...env }), (err: Error) => err instanceof ConfigError && message.test(err.message));
    });
  }
});
