import type { MigrationBuilder } from 'node-pg-migrate';

/** The execution history of a distributed deployment: one row per answer, kept until it expires. */
export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable('executions', {
    id: { type: 'uuid', primaryKey: true },
    tenant: { type: 'text', notNull: true },
    worker: { type: 'text' },
    response: { type: 'jsonb', notNull: true },
    expires_at: { type: 'timestamptz', notNull: true },
  });
  pgm.createIndex('executions', 'expires_at');
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable('executions');
}
