import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import pg from 'pg';
import type { Logger } from '../logger.js';
import { untilReachable } from './reachable.js';

/**
 * A pool on DATABASE_URL, its schema brought up to date first. node-pg-migrate takes an advisory
 * lock, so nodes starting together migrate once, one after the other.
 */
export async function openDatabase(url: string, logger: Logger): Promise<pg.Pool> {
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations');
  const migrate = () =>
    runner({
      databaseUrl: url,
      dir,
      direction: 'up',
      migrationsTable: 'rpc_migrations',
      // Its default ('fail') makes a node that starts while another migrates exit; waiting is what nodes starting together need.
      advisoryLockMode: 'wait',
      ignorePattern: '.*\\.(d\\.ts|map)$',
      log: () => undefined,
      logger: { debug: () => undefined, info: () => undefined, warn: (m: string) => logger.warn(m), error: (m: string) => logger.error(m) },
    });
  const applied = await untilReachable('PostgreSQL', migrate, logger);
  if (applied.length > 0) logger.info('database schema migrated', { applied: applied.map((m) => m.name) });
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', (err) => logger.warn('postgres connection lost', { error: err.message }));
  return pool;
}
