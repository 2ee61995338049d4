import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, settingsTable } from '../../server/config.js';
import { proxySettings } from '../../server/docker-proxy/settings.js';
import { loadContract } from '../../server/contract/contract.js';
import { projectRoot, serviceVersion } from '../../server/project.js';

describe('settings', () => {
  it('have documented defaults', () => {
    const config = loadConfig({ BASE_DIR: '/tmp/x' });
    assert.equal(config.port, 8083);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.defaultTimeoutS, 90);
    assert.equal(config.memoryMb, 512);
    assert.equal(config.corsOrigins, null); // none without keys, * with keys (app.ts)
    assert.deepEqual(config.allowedHosts, []);
  });

  it('read values from the environment', () => {
    const config = loadConfig({ BASE_DIR: '/tmp/x', SANDBOX_CPUS: '0.5', CORS_ORIGINS: 'https://a.example, https://b.example' });
    assert.equal(config.cpus, 0.5);
    assert.deepEqual(config.corsOrigins, ['https://a.example', 'https://b.example']);
  });

  const bad: [Record<string, string>, RegExp][] = [
    [{ PORT: 'eighty' }, /^PORT="eighty": expected a whole number/],
    [{ SANDBOX_MEMORY_MB: '8' }, /^SANDBOX_MEMORY_MB="8": expected a whole number from 32/],
    [{ SANDBOX_CPUS: '0' }, /^SANDBOX_CPUS="0"/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL="loud": expected one of error, warn, info, debug/],
    [{ INSTANCE_ID: 'has space' }, /^INSTANCE_ID=/],
    [{ DEFAULT_TIMEOUT_S: '100', MAX_TIMEOUT_S: '50' }, /DEFAULT_TIMEOUT_S \(100\) is above MAX_TIMEOUT_S \(50\)/],
    [{ PRELOAD_MODULES: 'numpy, os;import sys' }, /^PRELOAD_MODULES="numpy, os;import sys": expected at most 32 comma-separated module names/],
    [{ MAX_OUTPUTS: '1001' }, /^MAX_OUTPUTS="1001": expected a whole number from 0 to 1000/],
  ];
  for (const [env, message] of bad) {
    it(`a bad ${Object.keys(env)[0]} names the setting`, () => {
      assert.throws(() => loadConfig({ BASE_DIR: '/tmp/x', ...env }), (err: Error) => err instanceof ConfigError && message.test(err.message));
    });
  }

  it('PRELOAD_MODULES: the three libraries of the image by default, a list of names, and set but empty: off', () => {
    assert.deepEqual(loadConfig({ BASE_DIR: '/tmp/x' }).preloadModules, ['numpy', 'pandas', 'matplotlib.pyplot']);
    assert.deepEqual(loadConfig({ BASE_DIR: '/tmp/x', PRELOAD_MODULES: 'numpy, scipy.stats' }).preloadModules, ['numpy', 'scipy.stats']);
    assert.deepEqual(loadConfig({ BASE_DIR: '/tmp/x', PRELOAD_MODULES: '' }).preloadModules, []);
    assert.equal(loadConfig({ BASE_DIR: '/tmp/x', POOL_SIZE: '' }).poolSize > 0, true, 'elsewhere empty still means the default');
  });

  it('every setting, the Docker proxy ones too, is documented in the README with its default and description', () => {
    const readme = readFileSync(path.join(projectRoot, 'README.md'), 'utf8');
    for (const row of [...settingsTable(), ...settingsTable(proxySettings)]) {
      const line = `| \`${row.env}\` | ${row.default} | ${row.description} |`;
      assert.ok(readme.includes(line), `README lacks the row for ${row.env} as config.ts declares it:\n${line}`);
    }
  });

  it('the contract carries the package version', () => {
    assert.equal((loadContract().info as { version: string }).version, serviceVersion);
  });
});

describe('the contract', () => {
  it('is a valid OpenAPI document for express-openapi-validator', async () => {
    const { default: express } = await import('express');
    const OpenApiValidator = await import('express-openapi-validator');
    const app = express();
    app.use(OpenApiValidator.middleware({ apiSpec: loadContract() as never, validateResponses: true }));
    app.get('/', (_req, res) => {
      res.json({ name: 'run-python-code', version: serviceVersion, docs: '/docs' });
    });
    const errors: string[] = [];
    app.use((err: Error, _req: unknown, res: { status(n: number): { end(): void } }, _next: unknown) => {
      errors.push(err.message);
      res.status(500).end();
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/`);
      assert.equal(res.status, 200, errors.join('; '));
    } finally {
      server.close();
    }
  });
});
