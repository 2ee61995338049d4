import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { rawRequest } from '../helpers/raw-http.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { tenantsFile } from '../helpers/tenants.js';

/** GET/PUT/DELETE on /files, with a key when given; the answer's bytes as they came. */
async function files(server: TestServer, method: string, route: string, { body, key, type }: { body?: Buffer | string; key?: string; type?: string } = {}) {
  const res = await fetch(server.url + route, {
    method,
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(type ? { 'content-type': type } : {}) },
    body,
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(bytes.toString()) as Record<string, unknown>;
  } catch {
    // a file's bytes
  }
  return { status: res.status, headers: res.headers, bytes, json };
}

/** A PUT whose body is sent in chunks with no Content-Length (chunked), as a streaming client does. */
function chunkedPut(url: string, chunks: Buffer[]): Promise<{ status: number; connection?: string; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', agent: false, headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    const send = (i: number) => {
      if (i === chunks.length) return req.end();
      if (req.destroyed) return undefined;
      req.write(chunks[i], () => send(i + 1));
    };
    send(0);
  });
}

/** A PUT that declares `declared` bytes and sends only `sent` of them; resolves to the answer that comes anyway. */
function partialPut(url: string, declared: number, sent: number): Promise<{ status: number; connection?: string; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', agent: false, headers: { 'content-length': String(declared) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: JSON.parse(text) as Record<string, unknown> });
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    req.write(Buffer.alloc(sent, 7));
  });
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('files in and out by path', () => {
  let server: TestServer;
  let staging: string;
  before(async () => {
    server = await startServer();
    staging = path.join(server.config.baseDir, 'staging');
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  const run = async (code: string) => {
    const { body } = await server.post('/execute', { code });
    assert.equal(body.success, true, `${String(body.error)}\n${String(body.stderr)}`);
    return body.result;
  };

  it('upload, then a run reads the exact bytes: 201 for a new file, 200 when it replaces one', async () => {
    const data = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(200_000)]);
    const created = await files(server, 'PUT', '/files/data/in.bin', { body: data, type: 'application/octet-stream' });
    assert.equal(created.status, 201);
    assert.deepEqual(created.json, { path: 'data/in.bin', size: data.length });
    const code = 'import hashlib\nprint(hashlib.sha256(open("data/in.bin", "rb").read()).hexdigest())';
    assert.equal(await run(code), sha256(data));

    // Any content type is the file's bytes as they are: JSON that is not JSON, sent to the %2F form.
    const again = Buffer.from('{not json');
    const replaced = await files(server, 'PUT', '/files/data%2Fin.bin', { body: again, type: 'application/json' });
    assert.equal(replaced.status, 200);
    assert.deepEqual(replaced.json, { path: 'data/in.bin', size: again.length });
    assert.equal(await run(code), sha256(again));
    assert.deepEqual(readdirSync(staging), []);
  });

  it('the code writes files: GET /files/{path} gives their exact bytes, a Content-Type from the name and Content-Disposition', async () => {
    await run('import os\nos.makedirs("out", exist_ok=True)\nopen("out/report.csv", "w").write("a,b\\n1,2\\n")\nopen("out/blob.weird", "wb").write(bytes(range(256)) * 4)');
    const csv = await files(server, 'GET', '/files/out/report.csv');
    assert.equal(csv.status, 200);
    assert.equal(csv.bytes.toString(), 'a,b\n1,2\n');
    assert.equal(csv.headers.get('content-type'), 'text/csv; charset=utf-8');
    assert.equal(csv.headers.get('content-disposition'), 'attachment; filename=report.csv');
    assert.equal(csv.headers.get('content-length'), '8');
    const blob = await files(server, 'GET', '/files/out%2Fblob.weird');
    assert.equal(blob.status, 200);
    assert.deepEqual(blob.bytes, Buffer.concat(Array.from({ length: 4 }, () => Buffer.from(Array.from({ length: 256 }, (_, i) => i)))));
    assert.equal(blob.headers.get('content-type'), 'application/octet-stream');
    assert.equal(blob.headers.get('content-disposition'), 'attachment; filename=blob.weird');

    const listed = await files(server, 'GET', '/files');
    assert.equal(listed.status, 200);
    const entries = listed.json.files as { path: string; size: number; modified: string }[];
    assert.deepEqual(entries.filter((f) => f.path.startsWith('out/')).map((f) => [f.path, f.size]), [['out/blob.weird', 1024], ['out/report.csv', 8]]);
    for (const f of entries) assert.ok(Math.abs(Date.parse(f.modified) - Date.now()) < 10 * 60_000, f.modified);
    assert.deepEqual(entries.map((f) => f.path), [...entries.map((f) => f.path)].sort());

    const missing = await files(server, 'GET', '/files/out/nope.txt');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error, 'File not found: out/nope.txt');
    assert.equal((await files(server, 'GET', '/files/out')).status, 404); // a directory is not a file to download
  });

  it('a downloaded file is never a page of this origin, whatever its name says', async () => {
    await run('open("page.html", "w").write("<script>parent.pwned = 1</script>")');
    const page = await files(server, 'GET', '/files/page.html');
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(page.headers.get('content-disposition'), 'attachment; filename=page.html');
    assert.equal(page.headers.get('content-security-policy'), "default-src 'none'; sandbox");
    assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
  });

  it('traversal and absolute paths are refused on every /files route, and nothing is written outside', async () => {
    const bad = ['%2E%2E%2Fescape', 'a%2F..%2F..%2Fescape', '%2Fetc%2Fpasswd', '..%5C..%5Cescape', 'a%00b'];
    for (const method of ['GET', 'PUT', 'DELETE']) {
      for (const name of bad) {
        const res = await files(server, method, `/files/${name}`, method === 'PUT' ? { body: 'x' } : {});
        assert.equal(res.status, 400, `${method} ${name}`);
        assert.match(String(res.json.error), /^Invalid path /, `${method} ${name}`);
      }
      // Sent as they are, with no client to clean them up first.
      for (const raw of ['/files/../../escape', '/files/a/../../escape', '/files//etc/passwd', '/files/.', '/files/%2E%2E']) {
        const res = await rawRequest(server.url, { method, path: raw, ...(method === 'PUT' ? { body: 'x' } : {}) });
        assert.equal(res.status, 400, `${method} ${raw}: ${res.text}`);
        assert.match(String((JSON.parse(res.text) as Record<string, unknown>).error), /^Invalid path /);
      }
    }
    assert.equal(existsSync(path.join(server.config.baseDir, 'escape')), false);
    assert.equal(existsSync(path.join(server.config.baseDir, 'workspaces', 'escape')), false);
    assert.deepEqual(readdirSync(staging), []);
  });

  it('odd names: quotes, spaces, accents and a newline are kept, and their Content-Disposition is safe', async () => {
    const names = ['naïve résumé "q";.txt', 'a\nb.txt', 'tab\there.txt'];
    for (const name of names) {
      const put = await files(server, 'PUT', `/files/odd/${encodeURIComponent(name)}`, { body: name });
      assert.equal(put.status, 201, name);
      const got = await files(server, 'GET', `/files/odd/${encodeURIComponent(name)}`);
      assert.equal(got.bytes.toString(), name);
      // An ASCII fallback, and the exact name in RFC 8187's encoding, which a browser saves it as.
      const disposition = got.headers.get('content-disposition') ?? '';
      assert.match(disposition, /^attachment; filename="[\x20-\x7e]+"; filename\*=UTF-8''[!-~]+$/, disposition);
      assert.equal(decodeURIComponent(disposition.split("filename*=UTF-8''")[1]!), name);
    }
    assert.equal(await run('import os\nprint(sorted(os.listdir("odd")))'), "['a\\nb.txt', 'naïve résumé \"q\";.txt', 'tab\\there.txt']");
    assert.equal((await files(server, 'PUT', `/files/${'é'.repeat(128)}`, { body: 'x' })).status, 400); // 256 bytes in one part
    assert.equal((await files(server, 'PUT', '/files/odd/a%0Ab.txt/under', { body: 'x' })).status, 409); // its parent is a file
    assert.equal((await files(server, 'PUT', '/files/odd', { body: 'x' })).status, 409); // a directory is there
    const gzip = await files(server, 'PUT', '/files/z.gz.txt', { body: 'x', type: 'text/plain' });
    assert.equal(gzip.status, 201); // a name that says gzip is just a name
    const encoded = await fetch(`${server.url}/files/enc.txt`, { method: 'PUT', headers: { 'content-encoding': 'gzip' }, body: 'x' });
    assert.equal(encoded.status, 415);
    assert.deepEqual(readdirSync(staging), []);
  });
});

describe('uploads within the caps', () => {
  let server: TestServer;
  let staging: string;
  before(async () => {
    server = await startServer({ SANDBOX_WORKSPACE_MB: '1', BODY_TIMEOUT_S: '1' });
    staging = path.join(server.config.baseDir, 'staging');
  });
  after(async () => {
    await server.close();
  });

  it('413 past workspace_mb: by its Content-Length at once, by the bytes that came, and with the rest of the workspace', async () => {
    const MiB = 1024 * 1024;
    const declared = await partialPut(`${server.url}/files/big.bin`, MiB + 1, 1000);
    assert.equal(declared.status, 413);
    assert.equal(declared.connection, 'close'); // the rest of it is never read
    assert.equal(declared.body.error, "The file is larger than this tenant's workspace_mb (1 MiB), so it was not kept");

    const streamed = await chunkedPut(`${server.url}/files/big.bin`, Array.from({ length: 24 }, () => Buffer.alloc(64 * 1024, 1)));
    assert.equal(streamed.status, 413);
    assert.equal(streamed.body.error, "The file is larger than this tenant's workspace_mb (1 MiB), so it was not kept");

    assert.equal((await files(server, 'PUT', '/files/a.bin', { body: Buffer.alloc(600 * 1024) })).status, 201);
    const full = await files(server, 'PUT', '/files/b.bin', { body: Buffer.alloc(600 * 1024) });
    assert.equal(full.status, 413);
    assert.equal(full.json.error, "The workspace is full: with b.bin it would hold 1.2 MiB, over this tenant's workspace_mb (1 MiB)");
    assert.deepEqual(((await files(server, 'GET', '/files')).json.files as { path: string }[]).map((f) => f.path), ['a.bin']);
    assert.deepEqual(readdirSync(staging), []);
  });

  it('a huge declared body is refused before it is read; a body that stalls is a 408; neither leaves anything', async () => {
    const huge = await partialPut(`${server.url}/files/huge.bin`, 10 * 1024 ** 3, 64 * 1024);
    assert.equal(huge.status, 413);
    assert.equal(huge.connection, 'close');
    const stalled = await partialPut(`${server.url}/files/slow.bin`, 1000, 10);
    assert.equal(stalled.status, 408);
    assert.equal(stalled.connection, 'close');
    assert.equal(stalled.body.error, 'The request body did not arrive within 1 s (BODY_TIMEOUT_S)');
    assert.equal(existsSync(path.join(server.config.baseDir, 'workspaces', 'default', 'slow.bin')), false);
    assert.deepEqual(readdirSync(staging), []);
    // The server still serves.
    assert.equal((await files(server, 'GET', '/files')).status, 200);
  });

  it("two uploads in flight cannot hold more than workspace_mb together: the second waits (429)", async () => {
    const first = partialPut(`${server.url}/files/one.bin`, 700 * 1024, 1000); // stalls, holding its room until its 408
    await new Promise((resolve) => setTimeout(resolve, 200));
    const second = await files(server, 'PUT', '/files/two.bin', { body: Buffer.alloc(700 * 1024) });
    assert.equal(second.status, 429);
    assert.match(String(second.json.error), /^This tenant's uploads in flight would hold more than its workspace_mb \(1 MiB\) at once/);
    assert.ok(Number(second.headers.get('retry-after')) > 0);
    assert.equal((await first).status, 408);
    assert.deepEqual(readdirSync(staging), []);
  });
});

describe("tenants' files", () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ TENANTS_FILE: tenantsFile({ alice: '', bob: '' }) });
  });
  after(async () => {
    await server.close();
  });

  it("tenant B cannot list, get, put or delete A's files", async () => {
    const alice = 'alice-key';
    const bob = 'bob-key';
    assert.equal((await files(server, 'PUT', '/files/secret.txt', { body: 'alice only', key: alice })).status, 201);
    assert.deepEqual((await files(server, 'GET', '/files', { key: bob })).json, { files: [] });
    assert.equal((await files(server, 'GET', '/files/secret.txt', { key: bob })).status, 404);
    assert.equal((await files(server, 'DELETE', '/files/secret.txt', { key: bob })).status, 404);
    assert.equal((await files(server, 'DELETE', '/files', { key: bob })).status, 204);
    const put = await files(server, 'PUT', '/files/secret.txt', { body: 'bob', key: bob });
    assert.equal(put.status, 201); // new: bob's own workspace had no such file
    assert.equal((await files(server, 'GET', '/files/secret.txt', { key: alice })).bytes.toString(), 'alice only');
    assert.equal((await files(server, 'GET', '/files/secret.txt', { key: bob })).bytes.toString(), 'bob');
    const listed = (await files(server, 'GET', '/files', { key: alice })).json.files as { path: string; size: number }[];
    assert.deepEqual(listed.map((f) => [f.path, f.size]), [['secret.txt', 10]]);
    for (const [method, route] of [['GET', '/files'], ['GET', '/files/secret.txt'], ['PUT', '/files/secret.txt'], ['DELETE', '/files/secret.txt']] as const) {
      assert.equal((await files(server, method, route, method === 'PUT' ? { body: 'x' } : {})).status, 401, `${method} ${route}`);
    }
    assert.equal(readFileSync(path.join(server.config.baseDir, 'workspaces', 'alice', 'secret.txt'), 'utf8'), 'alice only');
  });
});
