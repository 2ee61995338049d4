import { badRequest } from '../errors.js';
import { cleanRelativePath } from '../relative-path.js';

/** cleanRelativePath for a client's `file_name`: a 400 that says why, instead of null. */
export function requireWorkspacePath(name: string, field = 'file_name'): string {
  const clean = cleanRelativePath(name);
  if (clean === null) {
    throw badRequest(
      `Invalid ${field} ${JSON.stringify(name.slice(0, 200))}: it must be a relative path inside the workspace ` +
        '(no absolute paths, no "..", no backslashes or NUL)',
    );
  }
  return clean;
}
