import type { MigrationBuilder } from 'node-pg-migrate';

/**
 * The contexts of a distributed deployment: each one's tenant, the worker that holds it (and that
 * worker's start epoch: a restart removes its containers), its state as GET /contexts shows it,
 * and its caps. A `starting` row is a creation under way: it counts against max_contexts until
 * `kept_until`; an ended row (deleted, expired, lost) says why until `kept_until`.
 */
export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable('contexts', {
    id: { type: 'text', primaryKey: true },
    tenant: { type: 'text', notNull: true },
    worker: { type: 'text' },
    epoch: { type: 'bigint' },
    state: { type: 'text', notNull: true },
    info: { type: 'jsonb' },
    limits: { type: 'jsonb' },
    kept_until: { type: 'timestamptz' },
  });
  pgm.createIndex('contexts', ['tenant', 'state']);
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable('contexts');
}
