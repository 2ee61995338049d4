import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawnServer } from '../helpers/process.js';
import { rawRequest } from '../helpers/raw-http.js';
import { startServer, type TestServer } from '../helpers/server.js';

describe('HTTP surface: root, docs, contract, Host and Origin checks, CORS', () => {
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

  it('GET /docs serves Swagger UI and /redoc serves ReDoc, both on /openapi.json, every asset from here', async () => {
    const docs = await server.get('/docs/');
    assert.equal(docs.status, 200);
    assert.match(docs.text, /swagger-ui/i);
    const withoutNamespaces = (html: string) => html.replace(/http:\/\/www\.w3\.org\/[\w/]+/g, ''); // XML names, not requests
    assert.doesNotMatch(withoutNamespaces(docs.text), /https?:\/\//, 'the page loads nothing from elsewhere');
    const init = await server.get('/docs/swagger-ui-init.js');
    assert.match(init.text, /"validatorUrl": null/, 'no validator badge (it would send the contract to validator.swagger.io)');
    const redoc = await server.get('/redoc');
    assert.equal(redoc.status, 200);
    assert.match(redoc.text, /<redoc spec-url="\/openapi.json">/);
    assert.match(redoc.text, /<script src="\/redoc\/redoc.standalone.js">/);
    assert.doesNotMatch(withoutNamespaces(redoc.text), /https?:\/\//);
    const bundle = await server.get('/redoc/redoc.standalone.js');
    assert.equal(bundle.status, 200);
    assert.match(String(bundle.headers.get('content-type')), /javascript/);
    assert.ok(bundle.text.length > 100_000, 'the whole of ReDoc');
  });

  it('without keys, a page of another site gets 403 and no CORS headers, preflight included; nothing runs', async () => {
    const runs = server.runs();
    const preflight = await fetch(server.url + '/execute', {
      method: 'OPTIONS',
      headers: { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    assert.equal(preflight.status, 403);
    assert.equal(preflight.headers.get('access-control-allow-origin'), null);
    // A "simple" request needs no preflight: it is refused before anything reads its body.
    const simple = await fetch(server.url + '/execute', {
      method: 'POST',
      headers: { Origin: 'https://evil.example', 'content-type': 'application/json' },
      body: JSON.stringify({ code: 'print(1)' }),
    });
    assert.equal(simple.status, 403);
    assert.equal(simple.headers.get('access-control-allow-origin'), null);
    const body = (await simple.json()) as Record<string, unknown>;
    assert.equal(body.success, false);
    assert.match(String(body.error), /^Origin "https:\/\/evil\.example" is not allowed: .*CORS_ORIGINS/);
    const mcp = await fetch(server.url + '/mcp', {
      method: 'POST',
      headers: { Origin: 'null', 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'run_python_code', arguments: { code: 'print(1)' } } }),
    });
    assert.equal(mcp.status, 403);
    assert.equal(server.runs(), runs, 'a refused request reached the sandbox');
  });

  it('pages of loopback origins may call, and are answered with CORS headers', async () => {
    const preflight = await fetch(server.url + '/mcp', {
      method: 'OPTIONS',
      headers: { Origin: 'http://localhost:6274', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), 'http://localhost:6274');
    const health = await fetch(server.url + '/health', { headers: { Origin: 'http://127.0.0.1:3000' } });
    assert.equal(health.status, 200);
    assert.equal(health.headers.get('access-control-allow-origin'), 'http://127.0.0.1:3000');
  });

  it('a Host that is not a loopback name gets 403 naming it and ALLOWED_HOSTS, on REST and /mcp alike; nothing runs', async () => {
    const runs = server.runs();
    const { port } = new URL(server.url);
    for (const [route, body] of [
      ['/execute', { code: 'import os; print(os.listdir())' }],
      ['/mcp', { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'run_python_code', arguments: { code: 'print(1)' } } }],
    ] as const) {
      const res = await rawRequest(server.url + route, {
        method: 'POST',
        headers: { host: `evil.example:${port}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 403, `${route}: ${res.text}`);
      assert.equal(JSON.parse(res.text).error, `Host "evil.example:${port}" is not allowed: this server answers loopback names (localhost, 127.0.0.1, [::1]) and the names listed in ALLOWED_HOSTS`);
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
      assert.equal((await rawRequest(server.url + '/', { headers: { host } })).status, 200, host);
    }
    assert.equal(server.runs(), runs);
  });

  it('ALLOWED_HOSTS opens names (and their own pages), * all; CORS_ORIGINS opens origins', async () => {
    const opened = await startServer({ ALLOWED_HOSTS: 'api.internal', CORS_ORIGINS: 'https://app.example' });
    try {
      const { port } = new URL(opened.url);
      assert.equal((await rawRequest(opened.url + '/', { headers: { host: `api.internal:${port}` } })).status, 200);
      const own = await rawRequest(opened.url + '/', { headers: { host: `api.internal:${port}`, origin: `http://api.internal:${port}` } });
      assert.equal(own.status, 200, 'the server\'s own pages (/docs) may call it');
      assert.equal((await rawRequest(opened.url + '/', { headers: { host: `other.internal:${port}` } })).status, 403);
      const ok = await fetch(opened.url + '/', { headers: { Origin: 'https://app.example' } });
      assert.equal(ok.headers.get('access-control-allow-origin'), 'https://app.example');
      const other = await fetch(opened.url + '/', { headers: { Origin: 'https://evil.example' } });
      assert.equal(other.status, 403);
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    } finally {
      await opened.close();
    }
    const any = await startServer({ ALLOWED_HOSTS: '*' });
    try {
      assert.equal((await rawRequest(any.url + '/', { headers: { host: 'anything.example' } })).status, 200);
    } finally {
      await any.close();
    }
  });

  it('with keys, CORS_ORIGINS defaults to * (a browser never sends the key by itself), and the Host check stays', async () => {
    const keyed = await startServer({ API_KEYS: 'cors-key' });
    try {
      const preflight = await fetch(keyed.url + '/execute', {
        method: 'OPTIONS',
        headers: { Origin: 'https://agent.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' },
      });
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
      const noKey = await fetch(keyed.url + '/execute', { method: 'POST', headers: { Origin: 'https://agent.example', 'content-type': 'application/json' }, body: '{"code":"1"}' });
      assert.equal(noKey.status, 401);
      const { port } = new URL(keyed.url);
      assert.equal((await rawRequest(keyed.url + '/health', { headers: { host: `evil.example:${port}` } })).status, 403);
    } finally {
      await keyed.close();
    }
  });

  it('start-up logs the Host names and origins it answers', async () => {
    const spawned = await spawnServer({ ALLOWED_HOSTS: 'api.internal', POOL_SIZE: '0', BASE_DIR: mkdtempSync(path.join(os.tmpdir(), 'rpc-h-')) });
    try {
      const line = JSON.parse(await spawned.waitForLog(/answering these Host names/)) as Record<string, unknown>;
      assert.deepEqual(line.hosts, ['localhost', '127.0.0.1', '[::1]', 'api.internal']);
      assert.deepEqual(line.origins, ['loopback', 'its own']);
    } finally {
      assert.equal(await spawned.stop(), 0);
    }
  });
});
