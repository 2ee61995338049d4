import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/until.js';
import { makeWheel } from '../helpers/wheels.js';

interface Output { mime: string; data: string; source: string }

/** Width and height from a PNG's IHDR, after checking its signature. */
function pngSize(base64: string): { width: number; height: number } {
  const png = Buffer.from(base64, 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

const outputsOf = (body: Record<string, unknown>) => body.outputs as Output[];

describe('values, figures and tables (notebook style)', () => {
  let server: TestServer;
  let capped: TestServer;
  const ok = async (route: string, request: Record<string, unknown>, on = server) => {
    const { status, body } = await on.post(route, request);
    assert.equal(status, 200);
    assert.equal(body.error, null, `${String(body.error)}\n${String(body.stderr)}`);
    assert.equal(body.success, true);
    return body;
  };

  before(async () => {
    server = await startServer();
    capped = await startServer({ MAX_OUTPUTS: '3', MAX_OUTPUTS_BYTES: '2000' });
  });
  after(async () => {
    for (const s of [server, capped]) {
      await s.close();
      assert.deepEqual(await s.settle(), []);
    }
  });

  it('2 + 3: value "5", result keeps its meaning (the stripped stdout)', async () => {
    const body = await ok('/execute', { code: '2 + 3' });
    assert.equal(body.value, '5');
    assert.equal(body.result, '');
    assert.deepEqual(body.outputs, []);
    assert.equal(body.outputs_truncated, false);
    const printed = await ok('/execute', { code: 'print("hi")\n2 + 3' });
    assert.deepEqual([printed.result, printed.value], ['hi', '5']);
  });

  it('x = 5: value null', async () => {
    const body = await ok('/execute', { code: 'x = 5' });
    assert.equal(body.value, null);
    assert.deepEqual(body.outputs, []);
  });

  it('a file run by /save-and-execute and /run-python-file has its value too, beside variable_to_return', async () => {
    const saved = await ok('/save-and-execute', { file_name: 'cell.py', code: 'x = 6\nresult = x * 7\nx * 2', variable_to_return: 'result' });
    assert.deepEqual([saved.result, saved.value], ['42', '12']);
    const ran = await ok('/run-python-file', { file_name: 'cell.py' });
    assert.equal(ran.value, '12');
  });

  it('an error in the last expression names its line, and leaves no value', async () => {
    const { body } = await server.post('/execute', { code: 'x = 0\n\n1 / x' });
    assert.equal(body.success, false);
    assert.equal(body.error, 'ZeroDivisionError: division by zero (line 3)');
    assert.equal(body.value, null);
  });

  it("a figure: one output, a PNG whose IHDR is the figure's size times its dpi", async () => {
    const body = await ok('/execute', {
      code: 'import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 2, 3])\nprint("drawn")',
    });
    const outputs = outputsOf(body);
    assert.equal(outputs.length, 1);
    assert.equal(outputs[0]!.mime, 'image/png');
    assert.equal(outputs[0]!.source, 'figure');
    assert.deepEqual(pngSize(outputs[0]!.data), { width: 200, height: 150 });
    assert.equal(body.result, 'drawn');
    assert.equal(body.stderr, '', 'no backend warning');
  });

  it('plt.show() makes each open figure an output then and closes it; figures still open at the end follow', async () => {
    const code = [
      'import matplotlib.pyplot as plt',
      'plt.figure(figsize=(2, 1), dpi=100); plt.plot([1, 2])',
      'plt.show()',
      'display("between")',
      'plt.figure(figsize=(3, 2), dpi=80); plt.plot([2, 1])',
    ].join('\n');
    const outputs = outputsOf(await ok('/execute', { code }));
    assert.deepEqual(outputs.map((o) => [o.mime, o.source]), [['image/png', 'figure'], ['text/plain', 'display'], ['image/png', 'figure']]);
    assert.deepEqual(pngSize(outputs[0]!.data), { width: 200, height: 100 });
    assert.equal(outputs[1]!.data, "'between'");
    assert.deepEqual(pngSize(outputs[2]!.data), { width: 240, height: 160 });
  });

  it('a DataFrame as the last expression: text/html with its <table>, then text/plain', async () => {
    const body = await ok('/execute', { code: 'import pandas as pd\ndf = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})\ndf' });
    const outputs = outputsOf(body);
    assert.deepEqual(outputs.map((o) => [o.mime, o.source]), [['text/html', 'value'], ['text/plain', 'value']]);
    assert.match(outputs[0]!.data, /<table/);
    assert.equal(outputs[1]!.data, '   a  b\n0  1  x\n1  2  y');
    assert.equal(body.value, '   a  b\n0  1  x\n1  2  y');
  });

  it('display() twice: two outputs, in order', async () => {
    const body = await ok('/execute', { code: 'display("first")\ndisplay({"n": 2})' });
    assert.deepEqual(body.outputs, [
      { mime: 'text/plain', data: "'first'", source: 'display' },
      { mime: 'text/plain', data: "{'n': 2}", source: 'display' },
    ]);
  });

  it('IPython.display works as code written for IPython expects', async () => {
    const code = 'from IPython.display import display, HTML, Markdown\ndisplay(HTML("<b>bold</b>"), Markdown("# title"))';
    const outputs = outputsOf(await ok('/execute', { code }));
    assert.deepEqual(outputs.map((o) => [o.mime, o.data]), [
      ['text/html', '<b>bold</b>'], ['text/plain', '<IPython.core.display.HTML object>'],
      ['text/markdown', '# title'], ['text/plain', '<IPython.core.display.Markdown object>'],
    ]);
  });

  it('the output caps: past max_outputs the first ones and outputs_truncated; past the bytes the same', async () => {
    const many = await ok('/execute', { code: 'for i in range(5):\n    display(i)' }, capped);
    assert.deepEqual(outputsOf(many).map((o) => o.data), ['0', '1', '2']);
    assert.equal(many.outputs_truncated, true);
    const big = await ok('/execute', { code: 'display("a" * 1500)\ndisplay("b" * 1500)\nprint("done")' }, capped);
    assert.deepEqual(outputsOf(big).map((o) => o.data.length), [1502]);
    assert.equal(big.outputs_truncated, true);
    assert.equal(big.result, 'done', 'a cut output is not a failure');
    const within = await ok('/execute', { code: 'display(1)\ndisplay(2)\ndisplay(3)' }, capped);
    assert.equal(within.outputs_truncated, false, 'exactly at the cap is not past it');
    const { body: limits } = await capped.get('/limits');
    assert.deepEqual([(limits.limits as Record<string, unknown>).max_outputs, (limits.limits as Record<string, unknown>).max_outputs_bytes], [3, 2000]);
  });

  it('what the code showed before it failed is kept', async () => {
    const { body } = await server.post('/execute', { code: 'import matplotlib.pyplot as plt\nplt.plot([1, 2])\nraise ValueError("late")' });
    assert.equal(body.success, false);
    assert.equal(body.error, 'ValueError: late (line 3)');
    assert.deepEqual(outputsOf(body).map((o) => o.mime), ['image/png']);
  });

  it("outputs the code forges on the runner's report pipe are dropped by the runner, not passed on", async () => {
    const code = [
      'import json, os',
      'os.write(3, json.dumps({"status": "ok", "outputs": [',
      '    {"mime": "text/javascript", "data": "alert(1)", "source": "display"},',
      '    {"mime": "image/png", "data": "not base64!", "source": "figure"},',
      '    {"mime": "image/png", "data": "PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+", "source": "figure"},',
      '    {"mime": "text/html", "data": "<b>ok</b>", "source": "display", "extra": 1}]}).encode())',
      'os._exit(0)',
    ].join('\n');
    const body = await ok('/execute', { code });
    assert.deepEqual(body.outputs, [{ mime: 'text/html', data: '<b>ok</b>', source: 'display' }]);
  });

  it('MCP: a figure comes back as an image content block after the text; the envelope is the structured content', async () => {
    const client = new Client({ name: 'test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`)));
    try {
      const result = (await client.callTool({
        name: 'run_python_code',
        arguments: { code: 'import matplotlib.pyplot as plt\nplt.figure(figsize=(2, 2), dpi=60)\nplt.plot([3, 1, 2])\n6 * 7' },
      })) as CallToolResult;
      assert.equal(result.isError, false);
      assert.deepEqual(result.content.map((c) => c.type), ['text', 'image']);
      assert.equal((result.content[0] as { text: string }).text, '42');
      const image = result.content[1] as { data: string; mimeType: string };
      assert.equal(image.mimeType, 'image/png');
      assert.deepEqual(pngSize(image.data), { width: 120, height: 120 });
      assert.equal(result.structuredContent?.value, '42');
      assert.equal((result.structuredContent?.outputs as Output[])[0]!.data, image.data);
    } finally {
      await client.close();
    }
  });
});

describe('preloading: warm containers import numpy, pandas and matplotlib while they wait', () => {
  const servers: TestServer[] = [];
  after(async () => {
    for (const s of servers) {
      await s.close();
      assert.deepEqual(await s.settle(), []);
    }
  });
  const warmServer = async (env: Record<string, string>) => {
    const s = await startServer({ POOL_SIZE: '1', ...env });
    servers.push(s);
    return s;
  };
  const ready = (s: TestServer) => until(() => s.sandbox.ready() >= 1, 'a warm container', 60_000);
  const LOADED = 'import sys\nprint(sorted(m for m in ("numpy", "pandas", "matplotlib.pyplot") if m in sys.modules))';

  it('the job of a warm container finds them imported (a module that fails to import is left out), and a figure still works', async () => {
    const s = await warmServer({ PRELOAD_MODULES: 'numpy,zz_no_such_module,pandas,matplotlib.pyplot' });
    await ready(s);
    const { body } = await s.post('/execute', { code: LOADED });
    assert.equal(body.result, "['matplotlib.pyplot', 'numpy', 'pandas']");
    await ready(s);
    const { body: drawn } = await s.post('/execute', {
      code: 'import pandas as pd\nimport matplotlib.pyplot as plt\nax = pd.Series([1, 3, 2]).plot()\nplt.savefig("plot.png")\nprint(plt.get_backend())',
    });
    assert.equal(drawn.success, true, String(drawn.error));
    assert.equal(drawn.result, 'module://run_python_code_inline');
    assert.deepEqual(outputsOf(drawn).map((o) => [o.mime, o.source]), [['image/png', 'figure']]);
    assert.deepEqual(pngSize(outputsOf(drawn)[0]!.data), { width: 640, height: 480 });
  });

  it('PRELOAD_MODULES empty: nothing is preloaded', async () => {
    const s = await warmServer({ PRELOAD_MODULES: '' });
    await ready(s);
    const { body } = await s.post('/execute', { code: LOADED });
    assert.equal(body.result, '[]');
  });

  it("a tenant's package that shadows one of the image's is the one its code gets, warm container or not", async () => {
    const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-wheels-'));
    makeWheel(wheelhouse, 'cycler', '99.0'); // matplotlib's own dependency, in the image as 0.11
    const s = await warmServer({ WHEELHOUSE_DIR: wheelhouse });
    await ready(s);
    const { body: installed } = await s.post('/install-package', { package_name: 'cycler==99.0' });
    assert.equal(installed.success, true, String(installed.error));
    await ready(s);
    const { body } = await s.post('/execute', { code: 'import cycler\nprint(cycler.__version__)' });
    assert.equal(body.result, '99.0');
  });
});
