import { promises as fs } from 'node:fs';
import path from 'node:path';
import { isTenantId } from '../tenancy/tenant-id.js';
import { Workspace } from './workspace.js';

/** One workspace per tenant, under BASE_DIR/workspaces/<tenant>, opened once; staging under BASE_DIR/staging. */
export class WorkspaceStore {
  private readonly open = new Map<string, Promise<Workspace>>();
  private readonly parent: string;

  constructor(private readonly baseDir: string) {
    this.parent = path.resolve(baseDir, 'workspaces');
  }

  private get staging(): string {
    return path.join(this.baseDir, 'staging');
  }

  /**
   * Empties BASE_DIR/staging, at start: what a crashed or killed server left there was never
   * merged, and no cap counts it. A BASE_DIR belongs to one server process.
   */
  async clearStaging(): Promise<void> {
    await fs.rm(this.staging, { recursive: true, force: true });
    await fs.mkdir(this.staging, { recursive: true, mode: 0o700 });
  }

  for(tenant: string): Promise<Workspace> {
    const root = path.resolve(this.parent, tenant);
    // The name is checked, and so is where it leads: a direct child of the workspaces folder.
    if (!isTenantId(tenant) || path.dirname(root) !== this.parent) throw new Error(`unsafe tenant id ${JSON.stringify(tenant)}`);
    let workspace = this.open.get(tenant);
    if (!workspace) {
      workspace = Workspace.open(root, this.staging);
      this.open.set(tenant, workspace);
      // A failed open (a full disk, say) is tried again by the next request, not remembered.
      workspace.catch(() => {
        if (this.open.get(tenant) === workspace) this.open.delete(tenant);
      });
    }
    return workspace;
  }
}
