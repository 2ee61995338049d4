import { promises as fs } from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import type { FileSource, OpenedFile } from '../sandbox/sandbox.js';
import { isTenantId } from '../tenancy/tenant-id.js';
import { cleanWorkspacePath } from '../workspace/paths.js';
import { Serial } from '../workspace/serial.js';
import { clearStaging, StagedFiles } from '../workspace/staging.js';
import { overCaps, planMerge, Tree, type WorkspaceCaps } from '../workspace/tree.js';
import type { WorkspaceStore } from '../workspace/workspace-store.js';
import { byPath, overCapsConflict, refuseSave, type Found, type MergeChanges, type Saved, type Workspace, type WorkspaceFile } from '../workspace/workspace.js';

/** The class of the advisory locks that serialize one tenant's workspace changes across all API nodes. */
const LOCK_CLASS = 0x72706377; // 'rpcw'

/** About how many bytes of files one statement of a merge writes (a larger file goes alone). */
const BATCH_BYTES = 1 << 20;

type Kind = 'file' | 'dir';

interface Listing {
  files: { path: string; size: number }[];
  dirs: string[];
}

/** The rows' kinds by path. */
const kindsOf = (listing: Listing) => new Map<string, Kind>([...listing.dirs.map((d) => [d, 'dir'] as const), ...listing.files.map((f) => [f.path, 'file'] as const)]);

/**
 * What a merge does to the rows, from the workspace before it and its plan's tree after it: the
 * rows to delete (gone, or a file that became a directory or the other way), the directory rows
 * to add, and which staged files end up as files (one a later path turned into a directory does not).
 */
export function rowChanges(before: Listing, after: Tree, staged: string[]): { gone: string[]; dirs: string[]; files: string[] } {
  const was = kindsOf(before);
  const now = new Map(after.entries().map((e) => [e.path, e.kind]));
  return {
    gone: [...was].filter(([rel, kind]) => now.get(rel) !== kind).map(([rel]) => rel),
    dirs: [...now].filter(([rel, kind]) => kind === 'dir' && was.get(rel) !== 'dir').map(([rel]) => rel),
    files: staged.filter((rel) => now.get(rel) === 'file'),
  };
}

/** Every parent of `rel`, outermost first, then `rel`. */
const pathsTo = (rel: string) => rel.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));

/** What is at `rel` (every parent of a row is a directory row: the first file among them blocks it). */
export function foundAt(rel: string, kinds: Map<string, Kind>): Found {
  for (const at of pathsTo(rel)) {
    const kind = kinds.get(at);
    if (at === rel) return { kind: kind === undefined ? null : kind === 'file' ? 'file' : 'other' };
    if (kind === undefined) return { kind: null };
    if (kind === 'file') return { kind: null, blockedBy: at };
  }
  return { kind: null };
}

async function* once(bytes: Buffer): AsyncIterable<Buffer> {
  yield bytes;
}

/**
 * A tenant's workspace in PostgreSQL (table workspace_files), so that every API node serves the
 * same one. A change (a run's merge, a save, a deletion) is one transaction under an advisory lock
 * on the tenant, checked against the caps inside it: whole or not at all, one after another across
 * all nodes. A listing is one statement, so it sees every change whole or not at all without the
 * lock. Bytes still arrive in this node's staging area on disk, and a file is read when it is opened.
 */
export class PgWorkspace implements Workspace {
  /** This node's changes of the tenant queue here, not each on a pooled connection waiting for the lock. */
  private readonly local = new Serial();

  constructor(
    private readonly pool: pg.Pool,
    private readonly tenant: string,
    private readonly staging: string,
  ) {}

  private async list(db: pg.Pool | pg.PoolClient): Promise<Listing> {
    const { rows } = await db.query<{ path: string; kind: Kind; size: string }>('SELECT path, kind, size FROM workspace_files WHERE tenant = $1', [this.tenant]);
    const listing: Listing = { files: [], dirs: [] };
    for (const row of rows) {
      if (row.kind === 'dir') listing.dirs.push(row.path);
      else listing.files.push({ path: row.path, size: Number(row.size) });
    }
    listing.dirs.sort(); // each parent before what is in it, for the tar
    return listing;
  }

  async snapshot(caps: WorkspaceCaps): Promise<FileSource> {
    const listing = await this.list(this.pool);
    const over = overCaps(Tree.of(listing).usage(), caps);
    if (over) throw overCapsConflict(over);
    return { dirs: listing.dirs, files: listing.files.map((f) => ({ path: f.path, open: () => this.openFile(f.path) })) };
  }

  async files(): Promise<WorkspaceFile[]> {
    const { rows } = await this.pool.query<{ path: string; size: string; modified: Date }>(
      "SELECT path, size, modified FROM workspace_files WHERE tenant = $1 AND kind = 'file'",
      [this.tenant],
    );
    return rows.map((r) => ({ path: r.path, size: Number(r.size), modified: r.modified })).sort(byPath);
  }

  async read(rel: string): Promise<OpenedFile | null> {
    return this.openFile(cleanWorkspacePath(rel));
  }

  /**
   * The file's bytes as they are now, whole, in one statement: read in parts, a merge could replace
   * it half-way. So a read holds up to one file (at most workspace_mb) in memory, as the queue's job does.
   */
  private async openFile(rel: string): Promise<OpenedFile | null> {
    const { rows } = await this.pool.query<{ bytes: Buffer; modified: Date }>(
      "SELECT bytes, modified FROM workspace_files WHERE tenant = $1 AND path = $2 AND kind = 'file'",
      [this.tenant, rel],
    );
    const row = rows[0];
    if (!row) return null; // none, or deleted by a merge since the listing
    return { size: row.bytes.length, mtime: row.modified, chunks: once(row.bytes), close: async () => undefined };
  }

  stage(): Promise<StagedFiles> {
    return StagedFiles.create(this.staging);
  }

  merge(staged: StagedFiles, changes: MergeChanges, caps: WorkspaceCaps): Promise<string | null> {
    return this.change((db) => this.mergeNow(db, staged, changes, caps));
  }

  async save(rel: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, overwrite: boolean, caps: WorkspaceCaps): Promise<Saved> {
    const clean = cleanWorkspacePath(rel);
    const staged = await this.stage();
    try {
      await staged.file(clean, chunks);
      return await this.change(async (db): Promise<Saved> => {
        const { rows } = await db.query<{ path: string; kind: Kind }>('SELECT path, kind FROM workspace_files WHERE tenant = $1 AND path = ANY($2::text[])', [
          this.tenant,
          pathsTo(clean),
        ]);
        const found = foundAt(clean, new Map(rows.map((r) => [r.path, r.kind])));
        refuseSave(clean, found, overwrite);
        const over = await this.mergeNow(db, staged, { dirs: [], deleted: [] }, caps);
        return over ? { over } : { replaced: found.kind === 'file', over: null };
      });
    } finally {
      await staged.discard();
    }
  }

  async remove(rel: string): Promise<boolean> {
    const clean = cleanWorkspacePath(rel);
    return this.change(async (db) => {
      const { rowCount } = await db.query("DELETE FROM workspace_files WHERE tenant = $1 AND (path = $2 OR starts_with(path, $2 || '/'))", [this.tenant, clean]);
      return (rowCount ?? 0) > 0;
    });
  }

  async clear(): Promise<void> {
    await this.change((db) => db.query('DELETE FROM workspace_files WHERE tenant = $1', [this.tenant]));
  }

  /** Runs `task` in a transaction that holds the tenant's lock (then every change before it has committed). */
  private change<T>(task: (db: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.local.run(async () => {
      const db = await this.pool.connect();
      let broken: Error | undefined;
      try {
        await db.query('BEGIN');
        await db.query('SELECT pg_advisory_xact_lock($1::int, hashtext($2))', [LOCK_CLASS, this.tenant]);
        const result = await task(db);
        await db.query('COMMIT');
        return result;
      } catch (err) {
        await db.query('ROLLBACK').catch((e: Error) => (broken = e)); // a connection that cannot roll back is not reused
        throw err;
      } finally {
        db.release(broken);
      }
    });
  }

  private async mergeNow(db: pg.PoolClient, staged: StagedFiles, changes: MergeChanges, caps: WorkspaceCaps): Promise<string | null> {
    const before = await this.list(db);
    const files = staged.files();
    const plan = planMerge(before, changes, files, caps);
    if (plan.over !== null) return plan.over;
    const rows = rowChanges(before, plan.tree, files.map(([rel]) => rel));
    if (rows.gone.length > 0) await db.query('DELETE FROM workspace_files WHERE tenant = $1 AND path = ANY($2::text[])', [this.tenant, rows.gone]);
    if (rows.dirs.length > 0) {
      await db.query("INSERT INTO workspace_files (tenant, path, kind) SELECT $1, unnest($2::text[]), 'dir'", [this.tenant, rows.dirs]);
    }
    const temps = new Map(files.map(([rel, file]) => [rel, file.temp]));
    // Files go in batches of about BATCH_BYTES, one statement each: for many small files the round trips, not the bytes, take the time.
    let batch: { paths: string[]; bytes: Buffer[]; size: number } = { paths: [], bytes: [], size: 0 };
    const flush = async () => {
      if (batch.paths.length === 0) return;
      await db.query(
        `INSERT INTO workspace_files (tenant, path, kind, bytes, size)
         SELECT $1, p, 'file', b, octet_length(b) FROM unnest($2::text[], $3::bytea[]) AS u(p, b)
         ON CONFLICT (tenant, path) DO UPDATE SET bytes = EXCLUDED.bytes, size = EXCLUDED.size, modified = now()`,
        [this.tenant, batch.paths, batch.bytes],
      );
      batch = { paths: [], bytes: [], size: 0 };
    };
    for (const rel of rows.files) {
      const bytes = await fs.readFile(temps.get(rel)!); // a batch and one file at most in memory
      if (batch.size + bytes.length > BATCH_BYTES) await flush();
      batch.paths.push(rel);
      batch.bytes.push(bytes);
      batch.size += bytes.length;
    }
    await flush();
    return null;
  }
}

/** The tenants' workspaces in PostgreSQL; what arrives is staged under BASE_DIR/staging of this node. */
export class PgWorkspaceStore implements WorkspaceStore {
  private readonly open = new Map<string, PgWorkspace>();
  private readonly staging: string;

  constructor(
    private readonly pool: pg.Pool,
    baseDir: string,
  ) {
    this.staging = path.join(baseDir, 'staging');
  }

  clearStaging(): Promise<void> {
    return clearStaging(this.staging);
  }

  async for(tenant: string): Promise<PgWorkspace> {
    if (!isTenantId(tenant)) throw new Error(`unsafe tenant id ${JSON.stringify(tenant)}`);
    let workspace = this.open.get(tenant);
    if (!workspace) {
      workspace = new PgWorkspace(this.pool, tenant, this.staging);
      this.open.set(tenant, workspace);
    }
    return workspace;
  }
}
