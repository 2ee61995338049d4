import path from 'node:path';
import { isTenantId } from '../tenancy/tenant-id.js';
import { Workspace, type WorkspaceCaps } from './workspace.js';

/** One workspace per tenant, under BASE_DIR/workspaces/<tenant>, opened once. */
export class WorkspaceStore {
  private readonly open = new Map<string, Promise<Workspace>>();

  constructor(
    private readonly baseDir: string,
    private readonly caps: WorkspaceCaps,
  ) {}

  for(tenant: string): Promise<Workspace> {
    if (!isTenantId(tenant)) throw new Error(`unsafe tenant id ${JSON.stringify(tenant)}`);
    let workspace = this.open.get(tenant);
    if (!workspace) {
      workspace = Workspace.open(
        path.join(this.baseDir, 'workspaces', tenant),
        path.join(this.baseDir, 'staging'),
        this.caps,
      );
      this.open.set(tenant, workspace);
    }
    return workspace;
  }
}
