import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../helpers/server.js';

describe('HTTP surface: root, docs, contract, CORS', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(() => server.close());

  it('GET / names the service and its version', async () => {
    const { status, body } = await server.get('/');
    assert.equal(status, 200);
    assert.deepEqual(body, { name: 'run-python-code', version: '0.1.0', docs: '/docs' });
  });

  it('GET /openapi.json is the contract', async () => {
    const { status, body } = await server.get('/openapi.json');
    assert.equal(status, 200);
    assert.equal(body.openapi, '3.0.3');
    assert.ok((body.paths as Record<string, unknown>)['/execute']);
  });

  it('GET /docs serves Swagger UI and /redoc serves ReDoc, both on /openapi.json', async () => {
    const docs = await server.get('/docs/');
    assert.equal(docs.status, 200);
    assert.match(docs.text, /swagger-ui/i);
    const redoc = await server.get('/redoc');
    assert.equal(redoc.status, 200);
    assert.match(redoc.text, /<redoc spec-url="\/openapi.json">/);
  });

  it('CORS allows all origins by default, preflight included', async () => {
    const res = await fetch(server.url + '/execute', {
      method: 'OPTIONS',
      headers: { Origin: 'https://agent.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    const health = await fetch(server.url + '/health', { headers: { Origin: 'https://agent.example' } });
    assert.equal(health.headers.get('access-control-allow-origin'), '*');
  });

  it('CORS can be limited to configured origins', async () => {
    const limited = await startServer({ CORS_ORIGINS: 'https://app.example' });
    try {
      const ok = await fetch(limited.url + '/', { headers: { Origin: 'https://app.example' } });
      assert.equal(ok.headers.get('access-control-allow-origin'), 'https://app.example');
      const other = await fetch(limited.url + '/', { headers: { Origin: 'https://evil.example' } });
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    } finally {
      await limited.close();
    }
  });
});
