import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../helpers/server.js';

/** Every example of ../shared/seed/API-DOCUMENTATION.md, with its truthful value. */
describe('seed examples', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  const expectSuccess = (body: Record<string, unknown>, result: string) => {
    assert.equal(body.error, null, `unexpected error: ${String(body.error)}\nstderr: ${String(body.stderr)}`);
    assert.equal(body.success, true);
    assert.equal(body.result, result);
    assert.match(String(body.execution_id), /^[0-9a-f-]{36}$/);
  };

  it('GET /health: healthy, version, base_dir', async () => {
    const { status, body } = await server.get('/health');
    assert.equal(status, 200);
    assert.equal(body.status, 'healthy');
    assert.equal(body.version, '0.1.0');
    assert.equal(body.base_dir, server.config.baseDir);
  });

  it('POST /execute: print(z) gives "30"', async () => {
    const { status, body } = await server.post('/execute', { code: 'x = 10\ny = 20\nz = x + y\nprint(z)', timeout: 90 });
    assert.equal(status, 200);
    expectSuccess(body, '30');
  });

  it('POST /execute (curl example): print(result) gives "50"', async () => {
    const { body } = await server.post('/execute', { code: 'x = 5\ny = 10\nresult = x * y\nprint(result)' });
    expectSuccess(body, '50');
  });

  it('POST /save-and-execute: calculate_sum gives "15", then /run-python-file runs the same file', async () => {
    const code = 'def calculate_sum(a, b):\n return a + b\n\nresult = calculate_sum(5, 10)';
    const saved = await server.post('/save-and-execute', {
      file_name: 'script.py', code, variable_to_return: 'result', overwrite: true,
    });
    expectSuccess(saved.body, '15');
    const ran = await server.post('/run-python-file', { file_name: 'script.py', variable_to_return: 'result' });
    expectSuccess(ran.body, '15');
  });

  it('POST /save-and-execute: fibonacci(10) gives "55"', async () => {
    const { body } = await server.post('/save-and-execute', {
      file_name: 'fibonacci.py',
      code: 'def fibonacci(n):\n if n <= 1:\n  return n\n return fibonacci(n-1) + fibonacci(n-2)\n\nresult = fibonacci(10)',
      variable_to_return: 'result',
    });
    expectSuccess(body, '55');
  });

  it('POST /run-python-file: an existing script returns its variable ("42")', async () => {
    await server.post('/save-and-execute', { file_name: 'existing_script.py', code: 'output = 6 * 7' });
    const { body } = await server.post('/run-python-file', { file_name: 'existing_script.py', variable_to_return: 'output' });
    expectSuccess(body, '42');
  });

  it('Basic Code Execution: 2 ** 10 via variable_to_return gives "1024"', async () => {
    const { body } = await server.post('/execute', { code: 'result = 2 ** 10', variable_to_return: 'result' });
    expectSuccess(body, '1024');
  });

  it('Data Processing: json.dumps gives {"name": "Alice", "age": 25}', async () => {
    const code = "\nimport json\ndata = {'name': 'Alice', 'age': 25}\njson_str = json.dumps(data, ensure_ascii=False)\n";
    const { body } = await server.post('/execute', { code, variable_to_return: 'json_str' });
    expectSuccess(body, '{"name": "Alice", "age": 25}');
  });

  it('File Operations: the calculator gives "42"', async () => {
    const code = '\ndef add(a, b):\n    return a + b\ndef multiply(a, b):\n    return a * b\nresult = multiply(6, 7)\n';
    const { body } = await server.post('/save-and-execute', { file_name: 'calculator.py', code, variable_to_return: 'result' });
    expectSuccess(body, '42');
  });

  it('Testing: print("Hello, World!") gives "Hello, World!"', async () => {
    const { body } = await server.post('/execute', { code: 'print("Hello, World!")' });
    expectSuccess(body, 'Hello, World!');
  });

  it('Integration (Python): sum([1, 2, 3, 4, 5]) gives "15"', async () => {
    const { body } = await server.post('/execute', { code: 'r = sum([1, 2, 3, 4, 5]);print(r)' });
    expectSuccess(body, '15');
  });

  it('Integration (shell): os.getcwd() gives the workspace path inside the container', async () => {
    const { body } = await server.post('/execute', { code: 'import os; result = os.getcwd();print(result)' });
    expectSuccess(body, '/workspace');
  });

  it('the envelope carries stdout, stderr, exit_code, duration_ms, timed_out, truncated', async () => {
    const { body } = await server.post('/execute', { code: 'import sys\nprint("out")\nprint("err", file=sys.stderr)' });
    expectSuccess(body, 'out');
    assert.equal(body.stdout, 'out\n');
    assert.equal(body.stderr, 'err\n');
    assert.equal(body.exit_code, 0);
    assert.equal(typeof body.duration_ms, 'number');
    assert.equal(body.timed_out, false);
    assert.equal(body.truncated, false);
    assert.equal(body.oom_killed, false);
  });

  it('the image ships numpy, pandas and matplotlib', async () => {
    const code = [
      'import numpy, pandas, matplotlib',
      'matplotlib.use("Agg")',
      'import matplotlib.pyplot as plt',
      'plt.plot([1, 2], [3, 4]); plt.savefig("plot.png")',
      'import os',
      'result = f"{numpy.arange(4).sum()} {pandas.DataFrame({\'a\': [1, 2]}).a.sum()} {os.path.getsize(\'plot.png\') > 0}"',
    ].join('\n');
    const { body } = await server.post('/execute', { code, variable_to_return: 'result' });
    expectSuccess(body, '6 3 True');
    assert.doesNotMatch(String(body.stderr), /Matplotlib|font cache/i);
  });
});
