import { notFound } from '../errors.js';
import { requireWorkspacePath } from './paths.js';
import type { WorkspaceStore } from './workspace-store.js';

/**
 * The files API of a tenant's own workspace (DELETE /files/{path} and DELETE /files), with the
 * same path rules as `file_name`. It takes the workspace's lock like a run's merge, so it never
 * lands in the middle of one; a run still going may write files back afterwards.
 */
export class FileService {
  constructor(private readonly workspaces: WorkspaceStore) {}

  /** Deletes a file, or a directory with everything in it; 404 when there is nothing there. */
  async remove(tenant: string, name: string): Promise<void> {
    const rel = requireWorkspacePath(name, 'path');
    const workspace = await this.workspaces.for(tenant);
    if (!(await workspace.remove(rel))) throw notFound(`File not found: ${rel}`);
  }

  /** Deletes everything in the workspace. */
  async clear(tenant: string): Promise<void> {
    await (await this.workspaces.for(tenant)).clear();
  }
}
