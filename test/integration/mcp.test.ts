import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { projectRoot } from '../../server/project.js';
import { containersOf, removeVolumes, startServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';

const text = (result: CallToolResult) => (result.content[0] as { text: string }).text;

/** The same checks, whatever carries them. */
function toolSuite(name: string, connect: () => Promise<Client>, cleanup: () => Promise<void>) {
  describe(`MCP over ${name}`, () => {
    let client: Client;
    before(async () => {
      client = await connect();
    });
    after(async () => {
      await client.close();
      await cleanup();
    });
    const call = async (tool: string, args: Record<string, unknown>) =>
      (await client.callTool({ name: tool, arguments: args })) as CallToolResult;

    it('lists the six tools with descriptions and input schemas', async () => {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['create_context', 'delete_context', 'pip_install_package', 'run_python_code', 'run_python_file', 'save_to_file_and_run']);
      for (const tool of tools) {
        assert.ok((tool.description ?? '').length > 40, `${tool.name} has no real description`);
        assert.equal(tool.inputSchema.type, 'object');
      }
      const run = tools.find((t) => t.name === 'run_python_code')!;
      assert.deepEqual(run.inputSchema.required, ['code']);
    });

    it('create_context, then run_python_code and save_to_file_and_run with its context_id keep state; delete_context ends it', async () => {
      const created = await call('create_context', { idle_timeout_s: 60 });
      assert.equal(created.isError, undefined, text(created));
      const id = created.structuredContent?.context_id as string;
      assert.match(text(created), new RegExp(id));
      assert.equal((await call('run_python_code', { code: 'total = 40', context_id: id })).isError, false);
      const saved = await call('save_to_file_and_run', { file_name: 'step.py', code: 'total += 2', variable_to_return: 'total', context_id: id });
      assert.equal(text(saved), '42');
      assert.equal(text(await call('delete_context', { context_id: id })), `Context ${id} was deleted.`);
      const gone = await call('run_python_code', { code: 'total', context_id: id });
      assert.equal(gone.isError, true);
      assert.match(text(gone), /was deleted: its state is gone; create a new one/);
    });

    it('run_python_code: print(6*7) gives 42', async () => {
      const result = await call('run_python_code', { code: 'print(6*7)' });
      assert.equal(result.isError, false);
      assert.equal(text(result), '42');
      assert.equal(result.structuredContent?.result, '42');
      assert.equal(result.structuredContent?.success, true);
    });

    it('an exception comes back with isError and the traceback', async () => {
      const result = await call('run_python_code', { code: 'def f():\n    raise ValueError("nope")\nf()' });
      assert.equal(result.isError, true);
      assert.match(text(result), /^ValueError: nope \(line 2\)\n\nTraceback \(most recent call last\):/);
      assert.match(text(result), /line 2, in f/);
      assert.equal(result.structuredContent?.success, false);
    });

    it('save_to_file_and_run, then run_python_file', async () => {
      const saved = await call('save_to_file_and_run', {
        file_name: 'mcp_calc.py',
        code: 'def multiply(a, b):\n    return a * b\nresult = multiply(6, 7)',
        variable_to_return: 'result',
      });
      assert.equal(saved.isError, false, text(saved));
      assert.equal(text(saved), '42');
      const ran = await call('run_python_file', { file_name: 'mcp_calc.py', variable_to_return: 'result' });
      assert.equal(text(ran), '42');
      const missing = await call('run_python_file', { file_name: 'nope.py' });
      assert.equal(missing.isError, true);
      assert.equal(text(missing), 'File not found: nope.py');
    });

    it('a timeout', async () => {
      const result = await call('run_python_code', { code: 'while True: pass', timeout: 2 });
      assert.equal(result.isError, true);
      assert.match(text(result), /timed out after 2 s/);
      assert.equal(result.structuredContent?.timed_out, true);
    });

    it('a lone surrogate in code or file_name is refused, naming the field (as REST answers 400)', async () => {
      const code = await call('run_python_code', { code: 'print("\ud800")' });
      assert.equal(code.isError, true);
      assert.match(text(code), /^Invalid code: it contains a lone UTF-16 surrogate \(\\ud800 at character 7\)/);
      const file = await call('save_to_file_and_run', { file_name: 'x\udc00.py', code: 'x = 1' });
      assert.equal(file.isError, true);
      assert.match(text(file), /^Invalid file_name "x\\udc00\.py": it contains a lone UTF-16 surrogate/);
    });

    it('a call with a progressToken hears the output as it comes: the messages add up to it, progress counts its bytes', async () => {
      const heard: { progress: number; message?: string }[] = [];
      const order: string[] = [];
      const result = (await client.callTool(
        { name: 'run_python_code', arguments: { code: 'import time\nprint("tick", flush=True)\ntime.sleep(1)\nprint("tock")' } },
        undefined,
        { onprogress: (p) => (heard.push(p), order.push('progress')) },
      )) as CallToolResult;
      order.push('result');
      assert.equal(text(result), 'tick\ntock');
      assert.equal(heard.map((p) => p.message).join(''), 'tick\ntock\n');
      assert.deepEqual(heard.map((p) => p.progress), [5, 10]);
      assert.deepEqual(order, ['progress', 'progress', 'result']);
    });

    it('the workspace files are resources: list, then read as text or as a blob, exact', async () => {
      const made = await call('run_python_code', {
        code: 'import os\nos.makedirs("res", exist_ok=True)\nopen("res/note.txt", "w").write("héllo\\n")\nopen("res/data.bin", "wb").write(bytes(range(256)))',
      });
      assert.equal(made.isError, false, text(made));
      const { resources } = await client.listResources();
      const ours = resources.filter((r) => r.uri.startsWith('file:///workspace/res/'));
      assert.deepEqual(ours, [
        { uri: 'file:///workspace/res/data.bin', name: 'res/data.bin', mimeType: 'application/octet-stream', size: 256, title: 'Workspace files', description: ours[0]?.description },
        { uri: 'file:///workspace/res/note.txt', name: 'res/note.txt', mimeType: 'text/plain', size: 7, title: 'Workspace files', description: ours[1]?.description },
      ]);
      const note = await client.readResource({ uri: 'file:///workspace/res/note.txt' });
      assert.deepEqual(note.contents, [{ uri: 'file:///workspace/res/note.txt', mimeType: 'text/plain', text: 'héllo\n' }]);
      const data = await client.readResource({ uri: 'file:///workspace/res/data.bin' });
      assert.deepEqual(data.contents, [
        { uri: 'file:///workspace/res/data.bin', mimeType: 'application/octet-stream', blob: Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('base64') },
      ]);
      await assert.rejects(client.readResource({ uri: 'file:///workspace/res/nope.txt' }), (err: { code: number; message: string }) =>
        err.code === -32002 && /File not found: res\/nope\.txt/.test(err.message));
      await assert.rejects(client.readResource({ uri: 'file:///workspace/res%2F..%2F..%2Fetc%2Fpasswd' }), (err: { code: number; message: string }) =>
        err.code === -32602 && /Invalid path "res\/\.\.\/\.\.\/etc\/passwd"/.test(err.message));
      await assert.rejects(client.readResource({ uri: 'file:///workspace/../etc/passwd' }), (err: { code: number }) => err.code === -32602);
    });

    it('pip_install_package refuses what is not one requirement', async () => {
      const result = await call('pip_install_package', { package_name: '-r requirements.txt' });
      assert.equal(result.isError, true);
      assert.match(text(result), /pip options are not accepted/);
    });
  });
}

let http: TestServer;
toolSuite(
  'streamable HTTP (/mcp)',
  async () => {
    http = await startServer();
    const client = new Client({ name: 'test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${http.url}/mcp`)));
    return client;
  },
  async () => {
    await http.close();
    assert.deepEqual(await http.settle(), []);
  },
);

const stdioInstance = `test-stdio-${process.pid}`;
toolSuite(
  'stdio (the mcp-run-python-code bin)',
  async () => {
    const client = new Client({ name: 'test', version: '1.0.0' });
    const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [path.join(projectRoot, 'dist/server/mcp/stdio.js')],
        env: {
          ...env,
          BASE_DIR: mkdtempSync(path.join(os.tmpdir(), 'rpc-mcp-')),
          INSTANCE_ID: stdioInstance,
          PACKAGES_VOLUME_PREFIX: `rpc-${stdioInstance}-`,
          LOG_LEVEL: 'error',
        },
        stderr: 'inherit',
      }),
    );
    return client;
  },
  async () => {
    for (let i = 0; i < 50; i++) {
      if ((await containersOf(stdioInstance)).length === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(await containersOf(stdioInstance), []);
    await removeVolumes(`rpc-${stdioInstance}-`);
  },
);

describe('stdio: a process that was killed', () => {
  it('leaves containers that the next stdio process on this host removes', async () => {
    const prefix = `rpc-test-orphan-${process.pid}-`;
    const base = mkdtempSync(path.join(os.tmpdir(), 'rpc-mcp-'));
    const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
    delete env.INSTANCE_ID; // each stdio process names its own instance after its pid
    const stdio = () =>
      spawn(process.execPath, [path.join(projectRoot, 'dist/server/mcp/stdio.js')], {
        env: { ...env, POOL_SIZE: '1', BASE_DIR: base, PACKAGES_VOLUME_PREFIX: prefix, LOG_LEVEL: 'error' },
        stdio: ['pipe', 'ignore', 'inherit'],
      });
    const instanceOf = (pid: number | undefined) => `${os.hostname()}-stdio-${pid}`.slice(0, 64);
    const first = stdio();
    const orphaned = instanceOf(first.pid);
    await until(async () => (await containersOf(orphaned)).length >= 1, "the first process's pool");
    first.kill('SIGKILL');
    await once(first, 'exit');
    assert.ok((await containersOf(orphaned)).length >= 1, 'a killed process could not have removed its containers');
    const second = stdio();
    try {
      await until(async () => (await containersOf(orphaned)).length === 0, "the next process to remove the killed one's containers");
    } finally {
      second.stdin!.end(); // its client went away: it stops, and removes its own
      await once(second, 'exit');
    }
    await until(async () => (await containersOf(instanceOf(second.pid))).length === 0, "the second process's own containers");
    await removeVolumes(prefix);
  });
});

describe('a fault of the service: a plain message with the execution id, on MCP as on REST', () => {
  let server: TestServer;
  let staging: string;
  before(async () => {
    server = await startServer();
    // A staging area that is not a directory: every run fails on the server's own disk.
    staging = path.join(server.config.baseDir, 'staging');
    rmSync(staging, { recursive: true, force: true });
    writeFileSync(staging, 'not a directory');
  });
  after(async () => {
    rmSync(staging, { force: true });
    await server.close();
  });

  it('REST: 500, the generic message, no server path', async () => {
    const { status, body } = await server.post('/execute', { code: 'print(1)' });
    assert.equal(status, 500);
    assert.equal(body.error, 'Internal error: see the server log for this execution_id');
    assert.match(String(body.execution_id), /^[0-9a-f-]{36}$/);
  });

  it('MCP: isError, the same message with the id, no server path', async () => {
    const client = new Client({ name: 'test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`)));
    for (const [tool, args] of [
      ['run_python_code', { code: 'print(1)' }],
      ['save_to_file_and_run', { file_name: 'a.py', code: 'x = 1' }],
    ] as const) {
      const result = (await client.callTool({ name: tool, arguments: args })) as CallToolResult;
      assert.equal(result.isError, true);
      assert.match(text(result), /^Internal error: see the server log for this execution_id: [0-9a-f-]{36}$/);
      assert.doesNotMatch(JSON.stringify(result), new RegExp(server.config.baseDir));
    }
    await client.close();
  });
});

describe('API keys: REST and /mcp', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ API_KEYS: 'key-one-secret,key-two-secret' });
  });
  after(async () => {
    await server.close();
  });
  const request = (route: string, key?: string, body: unknown = { code: 'print(1)' }) =>
    fetch(server.url + route, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify(body),
    });

  it('401 with WWW-Authenticate without a key, and with a wrong one', async () => {
    for (const key of [undefined, 'wrong-key']) {
      const res = await request('/execute', key);
      assert.equal(res.status, 401);
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm="run-python-code"/);
      const body = (await res.json()) as Record<string, unknown>;
      assert.equal(body.success, false);
      assert.match(String(body.error), key ? /Invalid API key/ : /Missing API key: send the header Authorization: Bearer <key>/);
    }
  });

  it('200 with a right key; /health and the docs stay public', async () => {
    const res = await request('/execute', 'key-two-secret');
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as Record<string, unknown>).result, '1');
    assert.equal((await fetch(server.url + '/health')).status, 200);
    assert.equal((await fetch(server.url + '/openapi.json')).status, 200);
    assert.equal((await fetch(server.url + '/docs/')).status, 200);
  });

  it('each key is a tenant: one cannot run or overwrite the other\'s files', async () => {
    const saved = await request('/save-and-execute', 'key-one-secret', { file_name: 'mine.py', code: 'x = "one"' });
    assert.equal(((await saved.json()) as Record<string, unknown>).success, true);
    const other = await request('/run-python-file', 'key-two-secret', { file_name: 'mine.py', variable_to_return: 'x' });
    assert.equal(other.status, 404);
    const own = await request('/run-python-file', 'key-one-secret', { file_name: 'mine.py', variable_to_return: 'x' });
    assert.equal(((await own.json()) as Record<string, unknown>).result, 'one');
    const seen = await request('/execute', 'key-two-secret', { code: 'import os\nprint(sorted(os.listdir(".")))' });
    assert.equal(((await seen.json()) as Record<string, unknown>).result, '[]');
  });

  it("a tenant's resources are its own workspace's: another's files are neither listed nor read", async () => {
    const connect = async (key: string) => {
      const client = new Client({ name: 'test', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${key}` } } }));
      return client;
    };
    const one = await connect('key-one-secret');
    const two = await connect('key-two-secret');
    try {
      await request('/save-and-execute', 'key-one-secret', { file_name: 'only-one.py', code: 'x = 1' });
      assert.ok((await one.listResources()).resources.some((r) => r.uri === 'file:///workspace/only-one.py'));
      assert.ok(!(await two.listResources()).resources.some((r) => r.uri === 'file:///workspace/only-one.py'));
      await assert.rejects(two.readResource({ uri: 'file:///workspace/only-one.py' }), (err: { code: number }) => err.code === -32002);
      assert.deepEqual((await one.readResource({ uri: 'file:///workspace/only-one.py' })).contents, [
        { uri: 'file:///workspace/only-one.py', mimeType: 'application/octet-stream', text: 'x = 1' },
      ]);
    } finally {
      await one.close();
      await two.close();
    }
  });

  it('/mcp refuses a client without a key and serves one with a key', async () => {
    const anonymous = new Client({ name: 'test', version: '1.0.0' });
    await assert.rejects(anonymous.connect(new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`))), /401|Unauthorized|Missing API key/i);
    const keyed = new Client({ name: 'test', version: '1.0.0' });
    await keyed.connect(
      new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), { requestInit: { headers: { Authorization: 'Bearer key-one-secret' } } }),
    );
    const result = (await keyed.callTool({ name: 'run_python_file', arguments: { file_name: 'mine.py', variable_to_return: 'x' } })) as CallToolResult;
    assert.equal(text(result), 'one');
    await keyed.close();
  });
});

describe('MCP resources within MCP_RESOURCE_MAX_BYTES', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ MCP_RESOURCE_MAX_BYTES: '1024' });
  });
  after(async () => {
    await server.close();
  });

  it('a file over it is listed but not read, and the refusal names the way to download it', async () => {
    assert.equal((await fetch(`${server.url}/files/big.txt`, { method: 'PUT', body: 'x'.repeat(1025) })).status, 201);
    assert.equal((await fetch(`${server.url}/files/small.txt`, { method: 'PUT', body: 'x'.repeat(1024) })).status, 201);
    const client = new Client({ name: 'test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`)));
    try {
      assert.deepEqual((await client.listResources()).resources.map((r) => [r.name, r.size]), [['big.txt', 1025], ['small.txt', 1024]]);
      await assert.rejects(client.readResource({ uri: 'file:///workspace/big.txt' }), (err: { code: number; message: string }) =>
        err.code === -32602 && err.message.endsWith('big.txt is 1025 bytes, over MCP_RESOURCE_MAX_BYTES (1024): download it with GET /files/big.txt'));
      assert.deepEqual((await client.readResource({ uri: 'file:///workspace/small.txt' })).contents, [
        { uri: 'file:///workspace/small.txt', mimeType: 'text/plain', text: 'x'.repeat(1024) },
      ]);
    } finally {
      await client.close();
    }
  });
});
