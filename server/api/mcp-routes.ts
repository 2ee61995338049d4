import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { Router } from 'express';
import { ServiceError } from '../errors.js';
import { createMcpServer, type McpServices } from '../mcp/mcp-server.js';

/**
 * MCP over streamable HTTP at /mcp, stateless: every POST gets its own server and transport
 * (the tools keep no session state), behind the same auth and tenancy as the REST routes.
 */
export function mcpRoutes(services: McpServices): Router {
  const router = Router();
  router.post('/mcp', async (req, res) => {
    const server = createMcpServer(services, res.locals.tenant as string);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  });
  router.all('/mcp', () => {
    throw new ServiceError('method_not_allowed', 'Method not allowed on /mcp: this MCP endpoint is stateless, use POST');
  });
  return router;
}
