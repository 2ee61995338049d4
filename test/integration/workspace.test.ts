import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
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
