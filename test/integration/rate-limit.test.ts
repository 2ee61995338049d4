import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { asTenant, tenantsFile } from '../helpers/tenants.js';

const TENANTS = ['rest', 'batch', 'single', 'mixed'];
const REFUSED = /^Rate limit reached: 2 executions per minute for this tenant \(requests_per_minute\); retry in (\d+) s$/;
const text = (result: CallToolResult) => (result.content[0] as { text: string }).text;

describe('requests_per_minute counts executions, over REST and MCP alike', () => {
  let server: TestServer;
  before(async () => {
    const tenants = tenantsFile(Object.fromEntries(TENANTS.map((t) => [t, ''])));
    server = await startServer({ TENANTS_FILE: tenants, RATE_LIMIT_PER_MINUTE: '2' });
  });
  after(async () => {
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  const rest = (tenant: string, route: string, body?: unknown) => asTenant(server.url, `${tenant}-key`, route, body);

  async function mcpClient(tenant: string): Promise<Client> {
    const client = new Client({ name: 'test', version: '1.0.0' });
    const headers = { Authorization: `Bearer ${tenant}-key` };
    await client.connect(new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), { requestInit: { headers } }));
    return client;
  }

  it('REST: two executions run, the third is a 429 with Retry-After; requests that run nothing are not counted', async () => {
    const runs = server.runs();
    const first = await rest('rest', '/execute', { code: 'print(1)' });
    assert.equal(first.body.result, '1');
    assert.equal((await rest('rest', '/execute', { code: 'print(2)' })).body.result, '2');
    const third = await rest('rest', '/execute', { code: 'print(3)' });
    assert.equal(third.status, 429);
    assert.equal(third.body.success, false);
    const wait = Number(REFUSED.exec(String(third.body.error))?.[1]);
    assert.ok(wait >= 1 && wait <= 60, String(third.body.error));
    assert.equal(third.headers.get('retry-after'), String(wait));
    const listing = await rest('rest', '/packages');
    assert.equal(listing.status, 429, 'listing packages runs a sandbox: it counts');
    assert.match(String(listing.body.error), REFUSED);
    assert.equal(server.runs() - runs, 2);
    for (let i = 0; i < 5; i++) assert.equal((await rest('rest', '/limits')).status, 200);
    assert.equal((await rest('rest', `/executions/${String(first.body.execution_id)}`)).body.result, '1');
  });

  it('MCP: a JSON-RPC batch of 12 tools/call runs 2 and answers the other 10 with a tool error', async () => {
    const runs = server.runs();
    const batch = Array.from({ length: 12 }, (_, i) => ({
      jsonrpc: '2.0',
      id: i,
      method: 'tools/call',
      params: { name: 'run_python_code', arguments: { code: `print(${i})` } },
    }));
    const res = await fetch(`${server.url}/mcp`, {
      method: 'POST',
      headers: {
        authorization: 'Bearer batch-key',
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': '2025-03-26', // the last revision with batches
      },
      body: JSON.stringify(batch),
    });
    assert.equal(res.status, 200);
    const answers = (await res.text())
      .split('\n')
      .filter((line) => line.startsWith('data: '))
      .map((line) => JSON.parse(line.slice(6)) as { id: number; result: CallToolResult });
    assert.deepEqual(answers.map((a) => a.id).sort((a, b) => a - b), batch.map((m) => m.id));
    const ran = answers.filter((a) => !a.result.isError);
    const refused = answers.filter((a) => a.result.isError);
    assert.equal(ran.length, 2);
    for (const a of ran) assert.equal(text(a.result), String(a.id));
    assert.equal(refused.length, 10);
    for (const a of refused) assert.match(text(a.result), REFUSED);
    assert.equal(server.runs() - runs, 2);
  });

  it('MCP: single calls past the limit are tool errors that say when to retry', async () => {
    const client = await mcpClient('single');
    try {
      const runs = server.runs();
      const call = () => client.callTool({ name: 'run_python_code', arguments: { code: 'print(6*7)' } }) as Promise<CallToolResult>;
      assert.equal(text(await call()), '42');
      assert.equal(text(await call()), '42');
      const third = await call();
      assert.equal(third.isError, true);
      assert.match(text(third), REFUSED);
      assert.equal(server.runs() - runs, 2);
    } finally {
      await client.close();
    }
  });

  it('REST and MCP share one count per tenant', async () => {
    const client = await mcpClient('mixed');
    try {
      assert.equal((await rest('mixed', '/execute', { code: 'print(1)' })).body.result, '1');
      const viaMcp = (await client.callTool({ name: 'run_python_code', arguments: { code: 'print(2)' } })) as CallToolResult;
      assert.equal(text(viaMcp), '2');
      assert.equal((await rest('mixed', '/execute', { code: 'print(3)' })).status, 429);
      const refused = (await client.callTool({ name: 'run_python_code', arguments: { code: 'print(4)' } })) as CallToolResult;
      assert.match(text(refused), REFUSED);
    } finally {
      await client.close();
    }
  });
});
