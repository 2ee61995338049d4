import path from 'node:path';
import { isTenantId } from '../tenancy/tenant-id.js';
import { Workspace, type WorkspaceCaps } from './workspace.js';

/** One workspace per tenant, under BASE_DIR/workspaces/<tenant>, opened once. */
export class WorkspaceStore {
  private readonly open = new Map<string, Promise<Workspace>>();
  private readonly parent: string;

  constructor(
    private readonly baseDir: string,
    private readonly caps: WorkspaceCaps,
  ) {
    this.parent = path.resolve(baseDir, 'workspaces');
  }

  for(tenant: string): Promise<Workspace> {
    const root = path.resolve(this.parent, tenant);
    // The name is checked, and so is where it leads: a direct child of the workspaces folder.
    if (!isTenantId(tenant) || path.dirname(root) !== this.parent) throw new Error(`unsafe tenant id ${JSON.stringify(tenant)}`);
    let workspace = this.open.get(tenant);
    if (!workspace) {
      workspace = Workspace.open(root, path.join(this.baseDir, 'staging'), this.caps);
      this.open.set(tenant, workspace);
      // A failed open (a full disk, say) is tried again by the next request, not remembered.
      workspace.catch(() => {
        if (this.open.get(tenant) === workspace) this.open.delete(tenant);
      });
    }
    return workspace;
  }
}
