import { badRequest } from '../errors.js';
import { checkRelativePath, cleanRelativePath } from '../relative-path.js';

/** checkRelativePath for a client's path (`file_name`, or a /files path): a 400 that names the field and says why. */
export function requireWorkspacePath(name: string, field = 'file_name'): string {
  const checked = checkRelativePath(name);
  if ('problem' in checked) {
    throw badRequest(
      `Invalid ${field} ${JSON.stringify(name.slice(0, 200))}: ${checked.problem}; it must be a relative path inside ` +
        'the workspace (no absolute paths, no "..", no backslashes or NUL; each part at most 255 bytes of UTF-8)',
    );
  }
  return checked.path;
}

/** The clean form of a workspace path the services pass on (already checked, or a 400 here). */
export function cleanWorkspacePath(rel: string): string {
  const clean = cleanRelativePath(rel);
  if (clean === null) throw badRequest(`Invalid workspace path ${JSON.stringify(rel.slice(0, 200))}`);
  return clean;
}
