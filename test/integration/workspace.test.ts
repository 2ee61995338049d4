import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../helpers/server.js';

describe('the workspace persists across executions', () => {
  let server: TestServer;
  let root: string;
  before(async () => {
    server = await startServer();
    root = path.join(server.config.baseDir, 'workspaces', 'default');
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  const run = async (code: string, variable?: string) => {
    const { body } = await server.post('/execute', { code, ...(variable ? { variable_to_return: variable } : {}) });
    assert.equal(body.success, true, `${String(body.error)}\n${String(body.stderr)}`);
    return body.result;
  };

  it('files the code creates are kept on the server and seen by the next execution', async () => {
    await run('import os\nos.makedirs("out/deep", exist_ok=True)\nopen("out/deep/data.txt", "w").write("hello")');
    assert.equal(readFileSync(path.join(root, 'out/deep/data.txt'), 'utf8'), 'hello');
    assert.equal(await run('print(open("out/deep/data.txt").read())'), 'hello');
  });

  it('changed files are updated, deleted files are deleted', async () => {
    await run('open("a.txt", "w").write("1")\nopen("b.txt", "w").write("2")');
    await run('open("a.txt", "a").write("1")\nimport os\nos.remove("b.txt")');
    assert.equal(readFileSync(path.join(root, 'a.txt'), 'utf8'), '11');
    assert.equal(existsSync(path.join(root, 'b.txt')), false);
    assert.equal(await run('import os\nprint(os.path.exists("b.txt"), open("a.txt").read())'), 'False 11');
  });

  it('what the code made unreadable is kept all the same; what cannot leave is named in warnings', async () => {
    const { body } = await server.post('/execute', {
      code: [
        'import os',
        'open("locked.txt", "w").write("secret bytes")',
        'os.makedirs("closed/inner", exist_ok=True)',
        'open("closed/inner/kept.txt", "w").write("inside")',
        'os.chmod("locked.txt", 0)',
        'os.chmod("closed/inner", 0)',
        'os.chmod("closed", 0)',
        'os.symlink("/etc/passwd", "passwd-link")',
        'os.mkfifo("a-fifo")',
      ].join('\n'),
    });
    assert.equal(body.success, true, String(body.error));
    assert.deepEqual(body.warnings, [
      'a-fifo: not a regular file or directory, so it was not kept (only regular files and directories are)',
      'passwd-link: a symbolic link, so it was not kept (only regular files and directories are)',
    ]);
    assert.equal(readFileSync(path.join(root, 'locked.txt'), 'utf8'), 'secret bytes');
    assert.equal(await run('print(open("locked.txt").read(), open("closed/inner/kept.txt").read())'), 'secret bytes inside');
    // A later run that changes nothing keeps them too: a 000 directory's files are never taken for deleted.
    await run('import os\nos.chmod("closed", 0)');
    assert.equal(readFileSync(path.join(root, 'closed/inner/kept.txt'), 'utf8'), 'inside');
  });

  it('a saved module can be imported by later code', async () => {
    const saved = await server.post('/save-and-execute', { file_name: 'lib/util.py', code: 'def triple(x):\n    return 3 * x\n' });
    assert.equal(saved.body.success, true);
    assert.equal(await run('import sys\nsys.path.insert(0, "lib")\nimport util\nprint(util.triple(14))'), '42');
  });

  it('links, fifos and other non-regular files never leave the sandbox', async () => {
    await run(
      'import os\nos.symlink("/etc/passwd", "link")\nos.mkfifo("fifo")\nos.link("a.txt", "hard")\nprint("made")',
    );
    const names = readdirSync(root);
    assert.ok(!names.includes('link'), 'symlink was copied out');
    assert.ok(!names.includes('fifo'), 'fifo was copied out');
    assert.equal(await run('import os\nprint(os.path.islink("link"), os.path.exists("fifo"))'), 'False False');
  });

  it('the code sees the workspace at /workspace, runs as a non-root user, on a read-only root', async () => {
    const result = await run(
      'import os\ntry:\n    open("/etc/x", "w")\n    ro = "writable"\nexcept OSError as e:\n    ro = e.errno\nprint(os.getcwd(), os.getuid(), ro)',
    );
    assert.equal(result, '/workspace 10001 30');
  });
});

describe('the workspace follows what the code did', () => {
  it('a file that becomes a directory and back, and deleted directories', async () => {
    const server = await startServer();
    const root = path.join(server.config.baseDir, 'workspaces', 'default');
    const run = async (code: string) => {
      const { body } = await server.post('/execute', { code });
      assert.equal(body.success, true, `${String(body.error)}\n${String(body.stderr)}`);
      return body.result;
    };
    try {
      await run('open("d", "w").write("file")\nimport os\nos.makedirs("gone/deep")\nopen("gone/deep/x", "w").write("x")');
      await run('import os, shutil\nos.remove("d")\nos.makedirs("d")\nopen("d/inside", "w").write("in")\nshutil.rmtree("gone")');
      assert.equal(readFileSync(path.join(root, 'd/inside'), 'utf8'), 'in');
      assert.equal(existsSync(path.join(root, 'gone')), false);
      await run('import shutil\nshutil.rmtree("d")\nopen("d", "w").write("file again")');
      assert.equal(readFileSync(path.join(root, 'd'), 'utf8'), 'file again');
      assert.equal(await run('import os\nprint(sorted(os.listdir(".")))'), "['d']");
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it('the file count is capped inside the container, not only on the server', async () => {
    const server = await startServer({ SANDBOX_MAX_FILES: '50' });
    try {
      const { body } = await server.post('/execute', { code: 'for i in range(100):\n    open(f"f{i}", "w").close()' });
      assert.equal(body.success, false);
      assert.match(String(body.error), /No space left on device/);
      const count = await server.post('/execute', { code: 'import os\nprint(len(os.listdir(".")))' });
      assert.ok(Number(count.body.result) <= 50, `the workspace holds ${String(count.body.result)} files`);
    } finally {
      await server.close();
    }
  });
});

/** Files, directories and bytes under `root`, as the server holds them. */
function usage(root: string): { files: number; dirs: number; bytes: number } {
  const total = { files: 0, dirs: 0, bytes: 0 };
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        total.dirs += 1;
        walk(full);
      } else {
        total.files += 1;
        total.bytes += statSync(full).size;
      }
    }
  };
  walk(root);
  return total;
}

describe('workspace totals across concurrent runs', () => {
  it('four concurrent runs of 9 MB against 10 MB: one is kept, the others say which cap, and the next run works', async () => {
    const server = await startServer({ SANDBOX_WORKSPACE_MB: '10' });
    const root = path.join(server.config.baseDir, 'workspaces', 'default');
    try {
      const answers = await Promise.all(
        [0, 1, 2, 3].map((i) => server.post('/execute', { code: `open("big${i}", "wb").write(b"x" * (9 << 20))\nprint("wrote")` })),
      );
      assert.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200]);
      const kept = answers.filter((a) => a.body.success === true);
      assert.equal(kept.length, 1, JSON.stringify(answers.map((a) => a.body.error)));
      for (const refused of answers.filter((a) => a.body.success === false)) {
        assert.match(String(refused.body.error), /^The code ran, but the files it changed were not kept, as the workspace would then hold 18\.0 MiB, over this tenant's workspace_mb \(10 MiB\); it keeps its earlier state$/);
        assert.equal(refused.body.result, null);
        assert.equal(refused.body.stdout, 'wrote\n');
      }
      assert.deepEqual(usage(root), { files: 1, dirs: 0, bytes: 9 << 20 });
      const next = await server.post('/execute', { code: 'import os\nprint(os.listdir("."))' });
      assert.equal(next.body.success, true, String(next.body.error));
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });

  it('two concurrent runs of 60 files against SANDBOX_MAX_FILES 100: directories count, the tenant is never wedged', async () => {
    const server = await startServer({ SANDBOX_MAX_FILES: '100' });
    const root = path.join(server.config.baseDir, 'workspaces', 'default');
    try {
      const answers = await Promise.all(
        [0, 1].map((i) => server.post('/execute', { code: `import os\nos.makedirs("d${i}")\nfor j in range(60):\n    open(f"d${i}/f{j}", "w").close()` })),
      );
      assert.deepEqual(answers.map((a) => a.body.success).sort(), [false, true]);
      const refused = answers.find((a) => a.body.success === false)!;
      assert.match(String(refused.body.error), /would then hold 122 files and directories, over SANDBOX_MAX_FILES \(100\); it keeps its earlier state$/);
      assert.deepEqual(usage(root), { files: 60, dirs: 1, bytes: 0 });
      const next = await server.post('/execute', { code: 'import os\nprint(len(os.listdir(".")))' });
      assert.equal(next.body.result, '1', String(next.body.error));
      // save() counts directories too: 61 entries + 39 new dirs + the file is one too many.
      const deep = `${Array.from({ length: 39 }, (_, i) => `s${i}`).join('/')}/x.py`;
      const saved = await server.post('/save-and-execute', { file_name: deep, code: 'x = 1' });
      assert.equal(saved.status, 400);
      assert.match(String(saved.body.error), /^Workspace is full: with .*x\.py it would hold 101 files and directories, over SANDBOX_MAX_FILES \(100\)$/);
    } finally {
      await server.close();
    }
  });

  it('50 rounds of 8 concurrent runs that create and delete nested directories never answer 5xx', async () => {
    const server = await startServer({ TENANT_MAX_CONCURRENT: '8', POOL_SIZE: '4' });
    const code = [
      'import os, random, shutil',
      'r = random.Random()',
      'for _ in range(4):',
      '    d = "/".join(r.choice("ab") for _ in range(r.randint(1, 4)))',
      '    try:',
      '        if r.random() < 0.4:',
      '            os.makedirs(d, exist_ok=True)',
      '            open(os.path.join(d, "f"), "w").write("x")',
      '        elif r.random() < 0.5:',
      '            shutil.rmtree(d, ignore_errors=True)',
      '        else:',
      '            shutil.rmtree(d, ignore_errors=True)',
      '            open(d, "w").write("now a file")',
      '    except OSError:',
      '        pass  # a parent is a file: what a concurrent run made',
      'print("ok")',
    ].join('\n');
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    try {
      for (let round = 0; round < 50; round++) {
        const answers = await Promise.all(Array.from({ length: 8 }, () => server.post('/execute', { code })));
        for (const { status, body } of answers) {
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          if (body.success !== true) failures.push(`${status}: ${String(body.error)}`);
        }
      }
      assert.deepEqual([...statuses], [[200, 400]]);
      assert.deepEqual(failures, []);
      assert.deepEqual(readdirSync(path.join(server.config.baseDir, 'staging')), []);
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });
});

describe('a way out for a full workspace: DELETE /files/{path} and DELETE /files', () => {
  const del = (server: TestServer, route: string, key?: string) =>
    fetch(server.url + route, { method: 'DELETE', headers: key ? { authorization: `Bearer ${key}` } : {} });

  it('a workspace over its caps answers 409 with the way out; deleting a directory makes room', async () => {
    const server = await startServer({ SANDBOX_MAX_FILES: '50' });
    const root = path.join(server.config.baseDir, 'workspaces', 'default');
    try {
      // As the old merge left it (or caps lowered since): more entries than a sandbox can take.
      mkdirSync(path.join(root, 'many/deep'), { recursive: true });
      for (let i = 0; i < 60; i++) writeFileSync(path.join(root, 'many/deep', `f${i}`), '');
      writeFileSync(path.join(root, 'keep.py'), 'x = 1');
      const wedged = await server.post('/execute', { code: 'print(1)' });
      assert.equal(wedged.status, 409);
      assert.match(String(wedged.body.error), /^The workspace holds 63 files and directories, over SANDBOX_MAX_FILES \(50\), so no sandbox can take it: delete files with DELETE \/files\/\{path\}, or clear the workspace with DELETE \/files$/);
      const runs = server.runs();
      assert.equal((await del(server, '/files/many/deep/f0')).status, 204); // slashes as they are
      assert.equal((await del(server, '/files/many%2Fdeep')).status, 204); // or encoded: a directory, recursively
      assert.equal(server.runs(), runs, 'a deletion started a sandbox');
      assert.deepEqual(readdirSync(path.join(root, 'many')), []);
      const ran = await server.post('/run-python-file', { file_name: 'keep.py', variable_to_return: 'x' });
      assert.equal(ran.body.result, '1', String(ran.body.error));
    } finally {
      await server.close();
    }
  });

  it('404 when missing, 400 for a bad path (same rules as file_name), 204 for DELETE /files', async () => {
    const server = await startServer();
    const root = path.join(server.config.baseDir, 'workspaces', 'default');
    try {
      mkdirSync(root, { recursive: true });
      writeFileSync(path.join(root, 'a.txt'), 'a');
      const missing = await del(server, '/files/nope.txt');
      assert.equal(missing.status, 404);
      assert.match(String(((await missing.json()) as Record<string, unknown>).error), /^File not found: nope\.txt$/);
      assert.equal((await del(server, '/files/a.txt/under')).status, 404);
      for (const bad of ['%2E%2E%2Fescape', 'a%00b', 'x%5Cy', `${'%E2%82%AC'.repeat(86)}`]) {
        const res = await del(server, `/files/${bad}`);
        assert.equal(res.status, 400, bad);
        assert.match(String(((await res.json()) as Record<string, unknown>).error), /^Invalid path /, bad);
      }
      assert.equal((await del(server, '/files/%ED%A0%80')).status, 400); // no UTF-8 (a surrogate's bytes)
      assert.ok(existsSync(path.join(root, 'a.txt')));
      mkdirSync(path.join(root, 'd/e'), { recursive: true });
      assert.equal((await del(server, '/files')).status, 204);
      assert.deepEqual(readdirSync(root), []);
      assert.equal((await del(server, '/files')).status, 204);
    } finally {
      await server.close();
    }
  });

  it("a tenant's deletions reach only its own workspace", async () => {
    const server = await startServer({ API_KEYS: 'key-one-secret,key-two-secret' });
    const post = (key: string, body: unknown) =>
      fetch(server.url + '/save-and-execute', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify(body),
      });
    try {
      for (const key of ['key-one-secret', 'key-two-secret']) {
        assert.equal((await post(key, { file_name: 'lib/mine.py', code: 'x = 1' })).status, 200);
      }
      assert.equal((await del(server, '/files')).status, 401);
      assert.equal((await del(server, '/files/lib', 'key-one-secret')).status, 204);
      assert.equal((await del(server, '/files', 'key-one-secret')).status, 204);
      const other = await fetch(server.url + '/run-python-file', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer key-two-secret' },
        body: JSON.stringify({ file_name: 'lib/mine.py', variable_to_return: 'x' }),
      });
      assert.equal(((await other.json()) as Record<string, unknown>).result, '1');
    } finally {
      await server.close();
    }
  });
});

describe('names and staging', () => {
  it('a name part of 200 "€" is a 400 at once; twenty of them leave nothing in staging', async () => {
    const server = await startServer();
    const staging = path.join(server.config.baseDir, 'staging');
    try {
      for (let i = 0; i < 20; i++) {
        const { status, body } = await server.post('/save-and-execute', { file_name: `${'€'.repeat(200)}${i}.py`, code: `x = "${'y'.repeat(1 << 16)}"` });
        assert.equal(status, 400);
        assert.match(String(body.error), /a part of it is longer than 255 bytes of UTF-8/);
      }
      assert.deepEqual(readdirSync(staging), []);
      const longest = `${'€'.repeat(85)}.py`.slice(1); // 84 "€" and ".py": 255 bytes
      const saved = await server.post('/save-and-execute', { file_name: longest, code: 'x = 42', variable_to_return: 'x' });
      assert.equal(saved.body.result, '42', String(saved.body.error));
      assert.deepEqual(readdirSync(staging), []);
    } finally {
      await server.close();
    }
  });

  it('staging is cleared at start: what a crashed server left is gone', async () => {
    const baseDir = mkdtempSync(path.join(os.tmpdir(), 'rpc-test-'));
    mkdirSync(path.join(baseDir, 'staging', 'stage-left'), { recursive: true });
    writeFileSync(path.join(baseDir, 'staging', 'stage-left', '1'), 'x'.repeat(1 << 20));
    const server = await startServer({ BASE_DIR: baseDir });
    try {
      assert.deepEqual(readdirSync(path.join(baseDir, 'staging')), []);
    } finally {
      await server.close();
    }
  });
});
