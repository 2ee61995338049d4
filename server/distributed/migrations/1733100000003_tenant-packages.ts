import type { MigrationBuilder } from 'node-pg-migrate';

/**
 * What tenants installed, so that every worker's engine can hold it (package-sync.ts): per
 * volume (a tenant's packages, or one set of declared dependencies), the exact pins its installs
 * installed and a generation counted up by each; per engine (its `docker info` ID, shared by the
 * workers on it), the generation its copy of each volume holds.
 */
export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable('tenant_packages', {
    volume: { type: 'text', primaryKey: true },
    tenant: { type: 'text', notNull: true },
    generation: { type: 'integer', notNull: true },
    pins: { type: 'jsonb', notNull: true },
    updated_at: { type: 'timestamptz', notNull: true, default: pgm.func('now()') },
  });
  pgm.createTable('engine_packages', {
    engine: { type: 'text', notNull: true, primaryKey: true },
    volume: { type: 'text', notNull: true, primaryKey: true, references: 'tenant_packages', onDelete: 'CASCADE' },
    generation: { type: 'integer', notNull: true },
  });
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable('engine_packages');
  pgm.dropTable('tenant_packages');
}
