import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import { docker, startServer, type TestServer } from '../helpers/server.js';

const ENVELOPE_KEYS = ['error', 'execution_id', 'result', 'success'];

function assertFailure(body: Record<string, unknown>, error: RegExp) {
  assert.equal(body.success, false);
  assert.equal(body.result, null);
  assert.match(String(body.error), error);
  assert.match(String(body.execution_id), /^[0-9a-f-]{36}$/);
}

describe('errors of user code: HTTP 200, success false, a clear error', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ SANDBOX_MEMORY_MB: '128', SANDBOX_OUTPUT_BYTES: '65536' });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('syntax error: the error names its line', async () => {
    const { status, body } = await server.post('/execute', { code: 'x = 1\nif x\n    y = (1,\n' });
    assert.equal(status, 200);
    assertFailure(body, /^SyntaxError: expected ':' \(line 2\)$/);
    assert.equal(body.exit_code, 1);
    assert.match(String(body.traceback), /File "<code>", line 2\n/);
  });

  it('the error names the line of the user\'s code: NameError on line 3 (the issue\'s example)', async () => {
    const { body } = await server.post('/execute', { code: 'x = 1\ny = 2\nz = undefined_name + 1\n' });
    assertFailure(body, /^NameError: name 'undefined_name' is not defined \(line 3\)$/);
    assert.equal(body.error, "NameError: name 'undefined_name' is not defined (line 3)");
    assert.match(String(body.traceback), /^Traceback \(most recent call last\):\n {2}File "<code>", line 3, in <module>\n/);
  });

  it('a workspace file: the error names the file and the line; a library\'s frames do not count', async () => {
    const saved = await server.post('/save-and-execute', {
      file_name: 'fibonacci.py',
      code: 'def fibonacci(n):\n    if n <= 1:\n        return undefined_name\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\nresult = fibonacci(3)\n',
      variable_to_return: 'result',
    });
    assert.equal(saved.body.error, "NameError: name 'undefined_name' is not defined (fibonacci.py, line 3)");
    const ran = await server.post('/run-python-file', { file_name: 'fibonacci.py', variable_to_return: 'result' });
    assert.equal(ran.body.error, "NameError: name 'undefined_name' is not defined (fibonacci.py, line 3)");
    const library = await server.post('/execute', { code: 'import json\n\njson.loads("{")\n' });
    assert.match(String(library.body.error), /^json\.decoder\.JSONDecodeError: .* \(line 3\)$/);
    const syntax = await server.post('/save-and-execute', { file_name: 'lib/broken.py', code: 'def f():\n    x = 1\n      y = 2\n' });
    assert.equal(syntax.body.error, 'IndentationError: unexpected indent (lib/broken.py, line 3)');
  });

  it('exception: Type: message, and a traceback with the user\'s lines only', async () => {
    const { status, body } = await server.post('/execute', { code: 'def f():\n    return 1 / 0\n\nf()' });
    assert.equal(status, 200);
    assertFailure(body, /^ZeroDivisionError: division by zero \(line 2\)$/);
    const tb = String(body.traceback);
    assert.match(tb, /File "<code>", line 4, in <module>/);
    assert.match(tb, /File "<code>", line 2, in f\n\s+return 1 \/ 0/);
    assert.doesNotMatch(tb, /runner\.py/);
    assert.match(String(body.stderr), /ZeroDivisionError: division by zero/);
  });

  it('exception in a saved file shows the file and its lines', async () => {
    const { body } = await server.post('/save-and-execute', {
      file_name: 'boom.py',
      code: 'def g():\n    raise ValueError("boom")\ng()\n',
    });
    assertFailure(body, /^ValueError: boom \(boom\.py, line 2\)$/);
    assert.match(String(body.traceback), /boom\.py", line 2, in g\n\s+raise ValueError\("boom"\)/);
    assert.doesNotMatch(String(body.traceback), /runner\.py/);
  });

  it('import error', async () => {
    const { body } = await server.post('/execute', { code: 'import no_such_module_here' });
    assertFailure(body, /^ModuleNotFoundError: No module named 'no_such_module_here' \(line 1\)$/);
  });

  it('variable not found', async () => {
    const { body } = await server.post('/execute', { code: 'x = 1', variable_to_return: 'nope' });
    assertFailure(body, /^Variable 'nope' not found after execution$/);
  });

  it('timeout: stopped, timed_out true', async () => {
    const { body } = await server.post('/execute', { code: 'while True: pass', timeout: 2 });
    assertFailure(body, /^Execution timed out after 2 s and was stopped$/);
    assert.equal(body.timed_out, true);
  });

  it('memory exhausted: says the container was OOM-killed', async () => {
    const { body } = await server.post('/execute', {
      code: 'chunks = []\nwhile True:\n    chunks.append(b" " * 10**7)',
      timeout: 30,
    });
    assertFailure(body, /^Memory limit exceeded: the container was OOM-killed \(limit 128 MiB\)$/);
    assert.equal(body.oom_killed, true);
  });

  it('output cap: cut at the cap, truncated true, stopped', async () => {
    const { body } = await server.post('/execute', { code: 'while True:\n    print("x" * 1000)', timeout: 30 });
    assertFailure(body, /^Output limit exceeded: Output went past 65536 bytes/);
    assert.equal(body.truncated, true);
    assert.equal(Buffer.byteLength(String(body.stdout)), 65536);
  });

  it('a returned value over the cap is cut and reported', async () => {
    const { body } = await server.post('/execute', { code: 'v = "y" * 100000', variable_to_return: 'v' });
    assertFailure(body, /^Output limit exceeded: The returned value went past 65536 bytes/);
    assert.equal(body.truncated, true);
  });

  it('file not found: 404 with the envelope', async () => {
    const { status, body } = await server.post('/run-python-file', { file_name: 'missing.py' });
    assert.equal(status, 404);
    assert.deepEqual(Object.keys(body).sort(), ENVELOPE_KEYS);
    assertFailure(body, /^File not found: missing\.py$/);
  });
});

describe('malformed requests: 4xx naming the field, no container started', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ MAX_TIMEOUT_S: '60', DEFAULT_TIMEOUT_S: '30', MAX_BODY_BYTES: '4096' });
  });
  after(async () => {
    await server.close();
  });

  const cases: [string, string, unknown, number, RegExp][] = [
    ['missing code', '/execute', { timeout: 5 }, 400, /body\.code/],
    ['code of the wrong type', '/execute', { code: 42 }, 400, /body\.code: must be string/],
    ['timeout not an integer', '/execute', { code: '1', timeout: 'x' }, 400, /body\.timeout/],
    ['timeout below 1', '/execute', { code: '1', timeout: 0 }, 400, /body\.timeout/],
    ['timeout above the maximum', '/execute', { code: '1', timeout: 61 }, 400, /timeout 61 s is above this tenant's limit of 60 s \(max_timeout_s\)/],
    ['unknown field', '/execute', { code: '1', varible_to_return: 'x' }, 400, /body\.varible_to_return: must NOT have additional properties/],
    ['bad variable name', '/execute', { code: '1', variable_to_return: 'a b' }, 400, /body\.variable_to_return/],
    ['absolute file_name', '/save-and-execute', { file_name: '/etc/passwd', code: '1' }, 400, /Invalid file_name "\/etc\/passwd"/],
    ['.. in file_name', '/save-and-execute', { file_name: '../escape.py', code: '1' }, 400, /Invalid file_name/],
    ['.. inside file_name', '/run-python-file', { file_name: 'a/../../escape.py' }, 400, /Invalid file_name/],
    ['backslash in file_name', '/run-python-file', { file_name: '..\\x.py' }, 400, /Invalid file_name/],
    ['empty file_name', '/run-python-file', { file_name: '' }, 400, /body\.file_name/],
    ['a lone surrogate in code', '/execute', { code: 'print("\ud800")' }, 400, /^Invalid code: it contains a lone UTF-16 surrogate \(\\ud800 at character 7\)/],
    ['a lone surrogate in saved code', '/save-and-execute', { file_name: 'a.py', code: 'x = "\udfff"' }, 400, /^Invalid code: .*lone UTF-16 surrogate/],
    ['a lone surrogate in file_name', '/run-python-file', { file_name: 'a\ud800.py' }, 400, /^Invalid file_name "a\\ud800\.py": it contains a lone UTF-16 surrogate/],
    ['a file_name part over 255 bytes (200 "€" are 600)', '/save-and-execute', { file_name: `${'€'.repeat(200)}.py`, code: '1' }, 400,
      /^Invalid file_name "€+": a part of it is longer than 255 bytes of UTF-8/],
    ['body over MAX_BODY_BYTES', '/execute', { code: 'x' .repeat(5000) }, 413, /MAX_BODY_BYTES/],
  ];
  for (const [name, route, body, status, error] of cases) {
    it(name, async () => {
      const runs = server.runs();
      const res = await server.post(route, body);
      assert.equal(server.runs(), runs, 'a refused request started a sandbox');
      assert.equal(res.status, status);
      assert.deepEqual(Object.keys(res.body).sort(), ENVELOPE_KEYS);
      assertFailure(res.body, error);
    });
  }

  it('invalid JSON', async () => {
    const res = await fetch(server.url + '/execute', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{bad' });
    assert.equal(res.status, 400);
    assertFailure((await res.json()) as Record<string, unknown>, /not valid JSON/);
  });

  it('not JSON at all', async () => {
    const res = await fetch(server.url + '/execute', { method: 'POST', body: 'code=1' });
    assert.equal(res.status, 415);
    assertFailure((await res.json()) as Record<string, unknown>, /application\/json/);
  });

  it('unknown path', async () => {
    const res = await server.post('/nope', {});
    assert.equal(res.status, 404);
    assertFailure(res.body, /Not found: \/nope/);
  });

  it('overwrite: false on an existing file is 409', async () => {
    const first = await server.post('/save-and-execute', { file_name: 'keep.py', code: 'x = 1' });
    assert.equal(first.body.success, true);
    const again = await server.post('/save-and-execute', { file_name: 'keep.py', code: 'x = 2', overwrite: false });
    assert.equal(again.status, 409);
    assertFailure(again.body, /already exists and overwrite is false/);
    const ran = await server.post('/run-python-file', { file_name: 'keep.py', variable_to_return: 'x' });
    assert.equal(ran.body.result, '1');
  });
});

describe('the sandbox cannot run: HTTP 503 telling the operator what to do', () => {
  it('Docker engine unreachable', async () => {
    const server = await startServer({}, new Docker({ socketPath: '/nonexistent/docker.sock' }));
    try {
      const run = await server.post('/execute', { code: 'print(1)' });
      assert.equal(run.status, 503);
      assertFailure(run.body, /Docker engine is not reachable .*start it/);
      const health = await server.get('/health');
      assert.equal(health.status, 503);
      assert.equal(health.body.status, 'unhealthy');
      assert.deepEqual(health.body.docker, { reachable: false, version: null });
    } finally {
      await server.close();
    }
  });

  it('sandbox image missing', async () => {
    const server = await startServer({ SANDBOX_IMAGE: 'run-python-code-sandbox:does-not-exist' });
    try {
      const run = await server.post('/execute', { code: 'print(1)' });
      assert.equal(run.status, 503);
      assertFailure(run.body, /Sandbox image run-python-code-sandbox:does-not-exist is missing: build it with `npm run sandbox:build`/);
      const health = await server.get('/health');
      assert.equal(health.status, 503);
      assert.equal(health.body.status, 'unhealthy');
      assert.deepEqual(health.body.sandbox_image, { name: 'run-python-code-sandbox:does-not-exist', present: false });
      assert.match(String(health.body.error), /npm run sandbox:build/);
    } finally {
      await server.close();
    }
  });
});

describe('an engine that refuses the sandbox', () => {
  it('caps the engine cannot give (more CPUs than the host has) are a 503 that quotes Docker, with nothing left behind', async () => {
    const server = await startServer({ SANDBOX_CPUS: '1024' });
    try {
      const run = await server.post('/execute', { code: 'print(1)' });
      assert.equal(run.status, 503);
      assertFailure(run.body, /^Docker could not run the sandbox: .*CPUs/);
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), []);
  });
});

describe('clean-up after a crash', () => {
  it('at start-up the server removes containers its instance left behind', async () => {
    const server = await startServer();
    const instance = server.config.instanceId;
    const stale = await docker.createContainer({
      Image: server.config.sandboxImage,
      Labels: { 'run-python-code': '1', 'run-python-code.instance': instance },
      HostConfig: { NetworkMode: 'none' },
    });
    const other = await docker.createContainer({
      Image: server.config.sandboxImage,
      Labels: { 'run-python-code': '1', 'run-python-code.instance': `${instance}-other` },
      HostConfig: { NetworkMode: 'none' },
    });
    try {
      assert.equal(await server.sandbox.reapStale(), 1);
      await assert.rejects(stale.inspect(), /no such container/i);
      assert.ok((await other.inspect()).Id, "another instance's container is not touched");
    } finally {
      await other.remove({ force: true });
      await server.close();
    }
  });
});
