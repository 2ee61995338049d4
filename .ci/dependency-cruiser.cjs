/**
 * The folders' dependency rules (npm run lint): the request path reads one way, route -> service ->
 * sandbox driver, and nothing below a layer reaches back up into it.
 */
module.exports = {
  forbidden: [
    { name: 'no-cycles', severity: 'error', from: {}, to: { circular: true } },
    {
      name: 'faces-not-driver',
      comment: 'REST routes and MCP tools call services; only the services talk to the sandbox driver.',
      severity: 'error',
      from: { path: '^server/(api|mcp)/' },
      to: { path: '^server/sandbox/' },
    },
    {
      name: 'driver-knows-no-service',
      comment: 'The sandbox driver runs jobs; what a job means (executions, packages, tenants, workspaces) is above it.',
      severity: 'error',
      from: { path: '^server/sandbox/' },
      to: { path: '^server/(execution|packages|tenancy|workspace|api|mcp)/' },
    },
    {
      name: 'services-not-faces',
      comment: 'Services do not know how they are called.',
      severity: 'error',
      from: { path: '^server/(execution|packages|tenancy|workspace)/' },
      to: { path: '^server/(api|mcp)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
