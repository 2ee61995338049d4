import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startServer, type TestServer } from '../helpers/server.js';

/** The MCP conformance suite's CLI (@modelcontextprotocol/conformance, a devDependency). */
const conformance = path.join(path.dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/conformance/package.json')), 'dist/index.js');

describe('MCP conformance suite, scenario dns-rebinding-protection, against /mcp', () => {
  let server: TestServer;
  let results: string;
  before(async () => {
    server = await startServer();
    results = mkdtempSync(path.join(os.tmpdir(), 'rpc-conformance-'));
  });
  after(async () => {
    await server.close();
    rmSync(results, { recursive: true, force: true });
  });

  it('a non-local Host and Origin get 4xx, local ones 2xx', async () => {
    const runs = server.runs();
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [conformance, 'server', '--url', `${server.url}/mcp`, '--scenario', 'dns-rebinding-protection', '--output-dir', results, '--verbose'],
      { cwd: results, timeout: 60_000 },
    ).catch((err: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`the conformance run failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
    });
    const checks = JSON.parse(stdout.slice(stdout.indexOf('['), stdout.lastIndexOf(']') + 1)) as { id: string; status: string; errorMessage?: string }[];
    assert.deepEqual(
      checks.map((c) => [c.id, c.status, c.errorMessage ?? '']),
      [
        ['localhost-host-rebinding-rejected', 'SUCCESS', ''],
        ['localhost-host-valid-accepted', 'SUCCESS', ''],
      ],
    );
    assert.equal(server.runs(), runs, 'initialize runs nothing');
  });
});
