import { notFound, ServiceError, tooLarge } from '../errors.js';
import type { OpenedFile } from '../sandbox/sandbox.js';
import { requireWorkspacePath } from './paths.js';
import type { WorkspaceCaps } from './tree.js';
import type { WorkspaceStore } from './workspace-store.js';

export interface FileServiceOptions {
  /** The tenant's workspace caps as they are now (its workspace_mb, SANDBOX_MAX_FILES). */
  capsOf(tenant: string): WorkspaceCaps;
  /** Retry-After for an upload refused while the tenant's other uploads hold the room: the longest an upload may take. */
  uploadRetryS: number;
}

export interface WorkspaceFileInfo {
  path: string;
  size: number;
  modified: string;
}

const mib = (bytes: number) => `${Math.round(bytes / (1024 * 1024))} MiB`;

/**
 * The files API of a tenant's own workspace (GET /files, GET/PUT/DELETE /files/{path}, DELETE
 * /files, and the MCP resources), with the same path rules as `file_name` and the same caps as a
 * run. Everything that changes the workspace or lists it takes the workspace's lock like a run's
 * merge, so it never lands in the middle of one; a run still going may write files back afterwards.
 */
export class FileService {
  /** Bytes of each tenant's uploads in flight (declared or received, whichever is more): they wait on disk in staging. */
  private readonly uploading = new Map<string, number>();

  constructor(
    private readonly workspaces: WorkspaceStore,
    private readonly options: FileServiceOptions,
  ) {}

  /** Every regular file of the workspace, sorted by path. */
  async list(tenant: string): Promise<WorkspaceFileInfo[]> {
    const files = await (await this.workspaces.for(tenant)).files();
    return files.map((f) => ({ path: f.path, size: f.size, modified: f.modified.toISOString() }));
  }

  /** The file at `name`, open (the caller closes it); 404 when there is no regular file there. */
  async open(tenant: string, name: string): Promise<{ path: string; file: OpenedFile }> {
    const rel = requireWorkspacePath(name, 'path');
    const file = await (await this.workspaces.for(tenant)).read(rel);
    if (!file) throw notFound(`File not found: ${rel}`);
    return { path: rel, file };
  }

  /**
   * Writes `body` to the file at `name`, replacing one that is there. The bytes wait in staging
   * until all have come, so the caps hold for them too: one file never passes workspace_mb (413),
   * nor do a tenant's uploads in flight together (429: the room is taken until they end).
   */
  async put(tenant: string, name: string, body: AsyncIterable<Buffer>, declaredBytes?: number): Promise<{ path: string; size: number; created: boolean }> {
    const rel = requireWorkspacePath(name, 'path');
    const caps = this.options.capsOf(tenant);
    const tooBig = () => tooLarge(`The file is larger than this tenant's workspace_mb (${mib(caps.maxBytes)}), so it was not kept`);
    if (declaredBytes !== undefined && declaredBytes > caps.maxBytes) throw tooBig();
    const workspace = await this.workspaces.for(tenant);
    let reserved = 0;
    const reserve = (bytes: number) => {
      if (bytes <= reserved) return;
      const total = (this.uploading.get(tenant) ?? 0) + bytes - reserved;
      if (total > caps.maxBytes) {
        throw new ServiceError(
          'busy',
          `This tenant's uploads in flight would hold more than its workspace_mb (${mib(caps.maxBytes)}) at once; retry once they are done`,
          this.options.uploadRetryS,
        );
      }
      this.uploading.set(tenant, total);
      reserved = bytes;
    };
    let size = 0;
    const counted = async function* () {
      for await (const chunk of body) {
        size += chunk.length;
        if (size > caps.maxBytes) throw tooBig();
        reserve(size);
        yield chunk;
      }
    };
    try {
      reserve(declaredBytes ?? 0);
      const saved = await workspace.save(rel, counted(), true, caps);
      if (saved.over) throw tooLarge(`The workspace is full: with ${rel} it would hold ${saved.over}`);
      return { path: rel, size, created: !saved.replaced };
    } finally {
      const left = (this.uploading.get(tenant) ?? 0) - reserved;
      if (left > 0) this.uploading.set(tenant, left);
      else this.uploading.delete(tenant);
    }
  }

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
