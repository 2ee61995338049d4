import { conflict } from '../errors.js';
import type { FileSource, OpenedFile } from '../sandbox/sandbox.js';
import type { StagedFiles } from './staging.js';
import type { WorkspaceCaps } from './tree.js';

/** The directories and changes of one run, as the merge takes them (the files are in its StagedFiles). */
export interface MergeChanges {
  dirs: string[];
  deleted: string[];
}

/** A regular file of a workspace, as GET /files lists it. */
export interface WorkspaceFile {
  path: string;
  size: number;
  modified: Date;
}

/** The order GET /files lists files in: by path, as JavaScript compares strings. */
export const byPath = (a: { path: string }, b: { path: string }) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);

/** How a save went: whether it replaced a file, or which cap it would have passed (then nothing changed). */
export type Saved = { replaced: boolean; over: null } | { replaced?: undefined; over: string };

/**
 * One tenant's workspace, as the services use it: on the server's disk (the embedded server,
 * DiskWorkspace) or in PostgreSQL (API nodes, PgWorkspace). Either way everything that changes it
 * runs alone, in order, and a merge or save is checked against the caps before anything changes:
 * it is kept whole or not at all. Paths are checked by both as a client's are (400).
 */
export interface Workspace {
  /**
   * The workspace for a run: its names, listed at once, and its files, each opened only when the
   * tar reaches it (one gone by then is left out). Over the caps: 409 with the way out.
   */
  snapshot(caps: WorkspaceCaps): Promise<FileSource>;
  /** The regular files, in every directory, sorted by path. */
  files(): Promise<WorkspaceFile[]>;
  /** The regular file at `rel` as it is now (null when there is none), whatever a merge puts in its place meanwhile. */
  read(rel: string): Promise<OpenedFile | null>;
  /** A fresh staging area for files on their way in (a run's changes, a save), on this server's disk. */
  stage(): Promise<StagedFiles>;
  /**
   * Applies what a run changed so that the workspace ends as the container's did, unless the result
   * would be over the caps: then nothing changes and the answer is which cap, to be said to the client.
   */
  merge(staged: StagedFiles, changes: MergeChanges, caps: WorkspaceCaps): Promise<string | null>;
  /**
   * Saves a client's file from its chunks, staged first, so the workspace changes only once all of
   * it is there. 409 if a part of its path is a file, if a directory is there, or if a file is there
   * and `overwrite` is false.
   */
  save(rel: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, overwrite: boolean, caps: WorkspaceCaps): Promise<Saved>;
  /** Deletes a file, or a directory with everything in it, at once; false when there is nothing at `rel`. */
  remove(rel: string): Promise<boolean>;
  /** Empties the workspace at once. */
  clear(): Promise<void>;
}

/** What is at a path, as a save sees it: nothing, a file, something else; or a parent that is no directory. */
export type Found = { kind: 'file' | 'other' | null; blockedBy?: undefined } | { kind: null; blockedBy: string };

/** The 409s of a save, the same for every workspace. */
export function refuseSave(rel: string, found: Found, overwrite: boolean): void {
  if (found.blockedBy) throw conflict(`${found.blockedBy} is not a directory`);
  if (found.kind === 'other') throw conflict(`${rel} exists and is not a regular file`);
  if (found.kind === 'file' && !overwrite) throw conflict(`File ${rel} already exists and overwrite is false`);
}

/** The 409 of a run's snapshot over the caps, the same for every workspace. */
export function overCapsConflict(over: string): Error {
  return conflict(
    `The workspace holds ${over}, so no sandbox can take it: delete files with DELETE /files/{path}, ` +
      'or clear the workspace with DELETE /files',
  );
}
