import path from 'node:path';

/**
 * Limits in bytes of UTF-8, as filesystems count them: a segment over NAME_MAX (255) fails at the
 * rename with ENAMETOOLONG, so it is refused up front. runner.py declares the same two numbers.
 */
export const MAX_PATH_BYTES = 1024;
export const MAX_SEGMENT_BYTES = 255;

/** A lone UTF-16 surrogate: not Unicode text, and no filesystem name (it would turn into U+FFFD). */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Why `name` is not a plain relative path (absolute, `..` anywhere, NUL, backslashes, a lone
 * surrogate, empty or over-long segments), or its clean workspace-relative form. `strict` (for
 * names that come out of a container) also refuses anything not already in normal form, such as
 * `a//b` or `./a`. A leaf: the sandbox driver (names from containers) and the workspace (names
 * from clients) share it.
 */
export function checkRelativePath(name: string, strict = false): { path: string } | { problem: string } {
  if (name.length === 0) return { problem: 'it is empty' };
  if (LONE_SURROGATE.test(name)) return { problem: 'it contains a lone UTF-16 surrogate, which is not Unicode text' };
  if (Buffer.byteLength(name) > MAX_PATH_BYTES) return { problem: `it is longer than ${MAX_PATH_BYTES} bytes of UTF-8` };
  if (name.includes('\0') || name.includes('\\')) return { problem: 'it contains a backslash or NUL' };
  if (path.posix.isAbsolute(name)) return { problem: 'it is absolute' };
  if (name.split('/').includes('..')) return { problem: 'it contains ".."' };
  const normal = path.posix.normalize(name).replace(/\/+$/, '');
  if (strict && normal !== name) return { problem: 'it is not in normal form' };
  if (normal === '.' || normal === '' || normal.startsWith('../')) return { problem: 'it names no file inside the workspace' };
  const segments = normal.split('/');
  if (segments.includes('.')) return { problem: 'it contains "."' };
  if (segments.some((s) => Buffer.byteLength(s) > MAX_SEGMENT_BYTES)) {
    return { problem: `a part of it is longer than ${MAX_SEGMENT_BYTES} bytes of UTF-8` };
  }
  return { path: normal };
}

/** The clean form of `name`, or null when it is not a plain relative path (see checkRelativePath). */
export function cleanRelativePath(name: string, strict = false): string | null {
  const checked = checkRelativePath(name, strict);
  return 'path' in checked ? checked.path : null;
}
