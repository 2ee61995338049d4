import path from 'node:path';

const MAX_PATH = 1024;
const MAX_SEGMENT = 255;

/**
 * The clean workspace-relative form of `name`, or null when it is not a plain relative path:
 * absolute, `..` anywhere, NUL, backslashes, empty or over-long segments. `strict` (for names that
 * come out of a container) also refuses anything not already in normal form, such as `a//b` or `./a`.
 * A leaf: the sandbox driver (names from containers) and the workspace (names from clients) share it.
 */
export function cleanRelativePath(name: string, strict = false): string | null {
  if (name.length === 0 || name.length > MAX_PATH || name.includes('\0') || name.includes('\\')) return null;
  if (path.posix.isAbsolute(name)) return null;
  const segments = name.split('/');
  if (segments.includes('..')) return null;
  const normal = path.posix.normalize(name).replace(/\/+$/, '');
  if (strict && normal !== name) return null;
  if (normal === '.' || normal === '' || normal.startsWith('../')) return null;
  if (normal.split('/').some((s) => s === '.' || s.length > MAX_SEGMENT)) return null;
  return normal;
}
