import { ResourceTemplate, type McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { ErrorCode, McpError, type ReadResourceResult } from '@modelcontextprotocol/sdk/types.js';
import mime from 'mime-types';
import { classify } from '../errors.js';
import type { Config } from '../config.js';
import type { FileService } from '../workspace/file-service.js';

/** What the workspace's resources need of the services (McpServices has them). */
export interface ResourceServices {
  files: FileService;
  config: Pick<Config, 'mcpResourceMaxBytes'>;
}

/** The workspace as the code sees it: file:///workspace/lib/util.py is lib/util.py. */
const ROOT = 'file:///workspace/';

/** MCP's code for a resource that does not exist (the SDK has no name for it). */
const RESOURCE_NOT_FOUND = -32002;

const uriOf = (rel: string) => ROOT + rel.split('/').map(encodeURIComponent).join('/');

/** The workspace path a resource URI names (the file service checks it like any client's path). */
function pathOf(uri: URL): string {
  if (!uri.href.startsWith(ROOT) || uri.search || uri.hash) {
    throw new McpError(ErrorCode.InvalidParams, `Not a workspace file: ${uri.href} (they are ${ROOT}<path>)`);
  }
  try {
    return uri.pathname.slice(ROOT.length - 'file://'.length).split('/').map(decodeURIComponent).join('/');
  } catch {
    throw new McpError(ErrorCode.InvalidParams, `Not a workspace file: ${uri.href} (bad percent-encoding)`);
  }
}

/** The file's type from its name, as GET /files/{path} sends it. */
const mimeOf = (rel: string) => mime.lookup(rel) || 'application/octet-stream';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Text when the bytes are UTF-8 (and no NUL), so an agent reads it as such; base64 otherwise. */
function contentOf(uri: string, mimeType: string, data: Buffer): ReadResourceResult['contents'][number] {
  if (!data.includes(0)) {
    try {
      return { uri, mimeType, text: utf8.decode(data) };
    } catch {
      // not UTF-8: a blob
    }
  }
  return { uri, mimeType, blob: data.toString('base64') };
}

/**
 * The tenant's workspace files as MCP resources: resources/list names every regular file (path,
 * type, size), resources/read returns one, within MCP_RESOURCE_MAX_BYTES. Same tenant, path rules
 * and lock as GET /files and GET /files/{path}.
 */
export function registerWorkspaceResources(server: McpServer, services: ResourceServices, tenant: string): void {
  const list = async () => ({
    resources: (await services.files.list(tenant)).map((f) => ({ uri: uriOf(f.path), name: f.path, mimeType: mimeOf(f.path), size: f.size })),
  });
  server.registerResource(
    'workspace',
    new ResourceTemplate(`${ROOT}{+path}`, { list }),
    {
      title: 'Workspace files',
      description: 'The files in /workspace, which every run of this tenant sees and which the code writes',
    },
    async (uri): Promise<ReadResourceResult> => {
      const rel = pathOf(uri);
      let opened;
      try {
        opened = await services.files.open(tenant, rel);
      } catch (err) {
        const { kind, message } = classify(err);
        if (kind === 'not_found') throw new McpError(RESOURCE_NOT_FOUND, message, { uri: uri.href });
        if (kind === 'bad_request') throw new McpError(ErrorCode.InvalidParams, message);
        throw err;
      }
      const { path, file } = opened;
      const maxBytes = services.config.mcpResourceMaxBytes;
      try {
        if (file.size > maxBytes) {
          throw new McpError(
            ErrorCode.InvalidParams,
            `${path} is ${file.size} bytes, over MCP_RESOURCE_MAX_BYTES (${maxBytes}): download it with GET /files/${path}`,
          );
        }
        const chunks: Buffer[] = [];
        for await (const chunk of file.chunks) chunks.push(chunk);
        return { contents: [contentOf(uriOf(path), mimeOf(path), Buffer.concat(chunks))] };
      } finally {
        await file.close();
      }
    },
  );
}
