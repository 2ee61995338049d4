import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { loadContract } from '../../server/contract/contract.js';
import { createMcpServer, type McpServices } from '../../server/mcp/mcp-server.js';
import { projectRoot } from '../../server/project.js';
import { OUTPUT_MIMES, OUTPUT_SOURCES, PROTOCOL_VERSION } from '../../server/sandbox/protocol.js';
import { limitsSchema } from '../../server/tenancy/limits.js';

/** Rules declared once, and what other places must say the same: held together here. */
type Schema = Record<string, unknown> & { properties?: Record<string, Schema>; required?: string[]; $ref?: string };

const contract = loadContract() as { components: { schemas: Record<string, Schema> } };
const schemas = contract.components.schemas;
const resolve = (s: Schema): Schema => (s.$ref ? resolve(schemas[s.$ref.split('/').pop()!]!) : s);
const CONSTRAINTS = ['type', 'minimum', 'maximum', 'minLength', 'maxLength', 'pattern', 'enum', 'maxItems', 'items'];
const constraints = (s: Schema) => Object.fromEntries(CONSTRAINTS.filter((k) => s[k] !== undefined).map((k) => [k, s[k]]));

describe('declared once, said the same everywhere', () => {
  it("openapi.yaml's TenantLimits has exactly the limits config.ts declares, with their bounds", () => {
    const contractLimits = schemas.TenantLimits!;
    const declared = limitsSchema.properties as Record<string, Schema>;
    assert.deepEqual(Object.keys(contractLimits.properties!).sort(), Object.keys(declared).sort());
    assert.deepEqual([...contractLimits.required!].sort(), Object.keys(declared).sort());
    for (const [name, bounds] of Object.entries(declared)) {
      assert.deepEqual(constraints(contractLimits.properties![name]!), constraints(bounds), name);
    }
  });

  it("every MCP tool's arguments are its REST request's fields, with the same constraints", async () => {
    const [client, server] = InMemoryTransport.createLinkedPair();
    const mcp = createMcpServer({} as McpServices, 'default'); // listing tools calls no service
    await mcp.connect(server);
    const mcpClient = new Client({ name: 'contract-test', version: '1' });
    await mcpClient.connect(client);
    const { tools } = await mcpClient.listTools();
    await mcpClient.close();
    const requestOf: Record<string, string> = {
      run_python_code: 'ExecuteRequest',
      save_to_file_and_run: 'SaveAndExecuteRequest',
      pip_install_package: 'InstallPackageRequest',
      run_python_file: 'RunPythonFileRequest',
      create_context: 'CreateContextRequest',
      delete_context: 'ContextIdArguments',
    };
    // delete_context's one argument is the path parameter of DELETE /contexts/{context_id}.
    const all: Record<string, Schema> = { ...schemas, ContextIdArguments: { properties: { context_id: { $ref: '#/components/schemas/ContextId' } }, required: ['context_id'] } };
    assert.deepEqual(tools.map((t) => t.name).sort(), Object.keys(requestOf).sort());
    for (const tool of tools) {
      const request = all[requestOf[tool.name]!]!;
      for (const [field, schema] of Object.entries(tool.inputSchema.properties ?? {})) {
        const rest = request.properties?.[field];
        assert.ok(rest, `${tool.name}.${field} is not a field of ${requestOf[tool.name]}`);
        assert.deepEqual(constraints(schema as Schema), constraints(resolve(rest)), `${tool.name}.${field}`);
      }
      for (const field of tool.inputSchema.required ?? []) {
        assert.ok(request.required?.includes(field), `${tool.name}.${field} is required over MCP but not over REST`);
      }
    }
  });

  it('every operation answers an unforeseen status in the error envelope, so response validation never turns it into a 500', () => {
    const paths = (loadContract() as { paths: Record<string, Record<string, { responses: Record<string, { $ref?: string }> }>> }).paths;
    for (const [route, operations] of Object.entries(paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        assert.equal(operation.responses.default?.$ref, '#/components/responses/Error', `${method.toUpperCase()} ${route}`);
      }
    }
  });

  it("openapi.yaml's Output takes exactly the mimes and sources the protocol decoder lets through", () => {
    const output = schemas.Output!.properties!;
    assert.deepEqual(output.mime!.enum, [...OUTPUT_MIMES]);
    assert.deepEqual(output.source!.enum, [...OUTPUT_SOURCES]);
    const runner = readFileSync(path.join(projectRoot, 'sandbox-image', 'runner.py'), 'utf8');
    const tuple = (name: string) => [...(new RegExp(`^${name} = \\(([^)]*)\\)`, 'm').exec(runner)?.[1] ?? '').matchAll(/"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(tuple('MIMES').sort(), [...OUTPUT_MIMES].sort(), "runner.py's MIMES");
    assert.deepEqual(tuple('SOURCES'), [...OUTPUT_SOURCES], "runner.py's SOURCES");
  });

  it('the runner protocol is declared once, in the sandbox Dockerfile, and labelled and handed to the runner from there', () => {
    const dockerfile = readFileSync(path.join(projectRoot, 'sandbox-image', 'Dockerfile'), 'utf8');
    assert.match(dockerfile, new RegExp(`^ARG RUNNER_PROTOCOL=${PROTOCOL_VERSION}$`, 'm'));
    assert.match(dockerfile, /^LABEL run-python-code\.protocol="\$\{RUNNER_PROTOCOL\}"$/m);
    assert.match(dockerfile, /^ENV RUNNER_PROTOCOL=\$\{RUNNER_PROTOCOL\}/m);
    const runner = readFileSync(path.join(projectRoot, 'sandbox-image', 'runner.py'), 'utf8');
    assert.match(runner, /^PROTOCOL = int\(os\.environ\.pop\("RUNNER_PROTOCOL"/m);
    assert.equal((dockerfile.match(/RUNNER_PROTOCOL=\d/g) ?? []).length, 1, 'one number, once');
  });
});
