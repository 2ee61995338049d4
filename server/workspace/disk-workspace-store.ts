import path from 'node:path';
import { isTenantId } from '../tenancy/tenant-id.js';
import { DiskWorkspace } from './disk-workspace.js';
import { clearStaging } from './staging.js';
import type { WorkspaceStore } from './workspace-store.js';

/** One workspace per tenant, under BASE_DIR/workspaces/<tenant>, opened once; staging under BASE_DIR/staging. */
export class DiskWorkspaceStore implements WorkspaceStore {
  private readonly open = new Map<string, Promise<DiskWorkspace>>();
  private readonly parent: string;

  constructor(private readonly baseDir: string) {
    this.parent = path.resolve(baseDir, 'workspaces');
  }

  private get staging(): string {
    return path.join(this.baseDir, 'staging');
  }

  clearStaging(): Promise<void> {
    return clearStaging(this.staging);
  }

  for(tenant: string): Promise<DiskWorkspace> {
    const root = path.resolve(this.parent, tenant);
    // The name is checked, and so is where it leads: a direct child of the workspaces folder.
    if (!isTenantId(tenant) || path.dirname(root) !== this.parent) throw new Error(`unsafe tenant id ${JSON.stringify(tenant)}`);
    let workspace = this.open.get(tenant);
    if (!workspace) {
      workspace = DiskWorkspace.open(root, this.staging);
      this.open.set(tenant, workspace);
      // A failed open (a full disk, say) is tried again by the next request, not remembered.
      workspace.catch(() => {
        if (this.open.get(tenant) === workspace) this.open.delete(tenant);
      });
    }
    return workspace;
  }
}
