import type { MigrationBuilder } from 'node-pg-migrate';

/**
 * The tenants' workspaces, so that any API node serves them: one row per file (with its bytes) and
 * per directory, every parent of a row a directory row of its own (the merge keeps it so).
 */
export async function up(pgm: MigrationBuilder): Promise<void> {
  pgm.createTable(
    'workspace_files',
    {
      tenant: { type: 'text', notNull: true },
      path: { type: 'text', notNull: true },
      kind: { type: 'text', notNull: true, check: "kind IN ('file', 'dir')" },
      bytes: { type: 'bytea' },
      size: { type: 'bigint', notNull: true, default: 0 },
      modified: { type: 'timestamptz', notNull: true, default: pgm.func('now()') },
    },
    { constraints: { primaryKey: ['tenant', 'path'], check: "(kind = 'file') = (bytes IS NOT NULL)" } },
  );
}

export async function down(pgm: MigrationBuilder): Promise<void> {
  pgm.dropTable('workspace_files');
}
