import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, readSettings } from '../../server/config.js';
import { proxySettings } from '../../server/docker-proxy/settings.js';
import { hostAllowed, hostName, originAllowed, parseHostList, parseOriginList } from '../../server/host-origin.js';

describe('Host header check', () => {
  it('takes the name without its port, lowercased', () => {
    assert.equal(hostName('LocalHost:8083'), 'localhost');
    assert.equal(hostName('[::1]:8083'), '[::1]');
    assert.equal(hostName('[::1]'), '[::1]');
    assert.equal(hostName('127.0.0.1'), '127.0.0.1');
    for (const bad of [undefined, '', 'evil.test@localhost', 'localhost/x', '::1', 'a b', 'localhost:80:80', 'http://localhost']) {
      assert.equal(hostName(bad), null, String(bad));
    }
  });

  it('answers loopback names on any port, and only the names listed', () => {
    for (const ok of ['localhost', 'localhost:8083', '127.0.0.1:1', '[::1]:8083']) assert.ok(hostAllowed(ok, []), ok);
    for (const no of ['evil.test:8083', 'localhost.evil.test', '127.0.0.1.nip.io', '127.0.0.2', 'foo.localhost', undefined, 'evil.test@localhost']) {
      assert.ok(!hostAllowed(no, []), String(no));
    }
    assert.ok(hostAllowed('API.internal:8083', ['api.internal']));
    assert.ok(!hostAllowed('other.internal', ['api.internal']));
    assert.ok(hostAllowed('anything.example', ['*']));
  });

  it('ALLOWED_HOSTS takes host names only, * alone', () => {
    assert.deepEqual(parseHostList('API.internal, 10.0.0.5 ,[fd00::1]'), ['api.internal', '10.0.0.5', '[fd00::1]']);
    assert.deepEqual(parseHostList('*'), ['*']);
    assert.throws(() => parseHostList('*,api.internal'), /list nothing beside it/);
    assert.throws(() => parseHostList('http://api.internal'), /not a host name/);
    assert.throws(() => parseHostList('api.internal:8083'), /not a host name/);
    assert.throws(
      () => loadConfig({ BASE_DIR: '/tmp/x', ALLOWED_HOSTS: 'api.internal/x' }),
      (err: Error) => err instanceof ConfigError && /^ALLOWED_HOSTS="api.internal\/x": /.test(err.message),
    );
  });
});

describe('Origin header check', () => {
  it('lets loopback origins, the server\'s own and the listed ones call', () => {
    for (const o of ['http://localhost:5173', 'http://127.0.0.1:8083', 'https://[::1]', 'http://localhost']) {
      assert.ok(originAllowed(o, '127.0.0.1:8083', []), o);
    }
    assert.ok(originAllowed('http://api.internal:8083', 'api.internal:8083', []), 'same origin');
    assert.ok(!originAllowed('http://api.internal:9999', 'api.internal:8083', []), 'another port is another origin');
    assert.ok(originAllowed('https://app.example', '127.0.0.1:8083', ['https://app.example']));
    assert.ok(originAllowed('https://anything.example', '127.0.0.1:8083', ['*']));
  });

  it('refuses other sites, null and malformed origins', () => {
    for (const o of ['https://evil.example', 'http://evil.test:8083', 'null', 'file://', 'chrome-extension://abc', 'http://localhost.evil.test', '']) {
      assert.ok(!originAllowed(o, '127.0.0.1:8083', ['https://app.example']), o);
    }
  });

  it('CORS_ORIGINS takes origins (normalized) or * alone, and defaults to nothing until keys are set', () => {
    assert.deepEqual(parseOriginList('https://App.example/, http://localhost:3000'), ['https://app.example', 'http://localhost:3000']);
    assert.throws(() => parseOriginList('https://app.example/path'), /not an origin/);
    assert.throws(() => parseOriginList('app.example'), /not an origin/);
    assert.throws(() => parseOriginList('*,https://app.example'), /list nothing beside it/);
    assert.equal(loadConfig({ BASE_DIR: '/tmp/x' }).corsOrigins, null);
    assert.deepEqual(loadConfig({ BASE_DIR: '/tmp/x', CORS_ORIGINS: '*' }).corsOrigins, ['*']);
  });
});

describe('the Docker proxy answers', () => {
  it("loopback names and docker-compose.yml's service name by default", () => {
    const { allowedHosts } = readSettings(proxySettings, {});
    assert.deepEqual(allowedHosts, ['docker-proxy']);
    assert.ok(hostAllowed('docker-proxy:2375', allowedHosts));
    assert.ok(hostAllowed('localhost', allowedHosts));
    assert.ok(!hostAllowed('evil.test:2375', allowedHosts));
  });
});
