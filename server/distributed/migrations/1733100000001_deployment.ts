import type { MigrationBuilder } from 'node-pg-migrate';

/**
 * The deployment's id, made once: every node of one database names the same packages volumes
 * (PackagesVolumes), whatever its BASE_DIR. It lives here, not in Redis, because it must outlive
 * a Redis restart.
 */
export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable('deployment', { id: { type: 'text', notNull: true } });
  pgm.sql("INSERT INTO deployment (id) VALUES (gen_random_uuid()::text)");
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable('deployment');
}
