import type { Workspace } from './workspace.js';

/** The tenants' workspaces: on the server's disk (DiskWorkspaceStore) or in PostgreSQL (an API node's, PgWorkspaceStore). */
export interface WorkspaceStore {
  /** Empties this server's staging area, at start: what a crashed or killed server left there was never merged. */
  clearStaging(): Promise<void>;
  /** The tenant's workspace (its id is checked: it names a folder or rows). */
  for(tenant: string): Promise<Workspace>;
}
