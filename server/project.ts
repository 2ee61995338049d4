import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (works from server/ and from the compiled dist/server/). */
function findRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'run-python-code') return dir;
    } catch {
      // not here; keep climbing
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('run-python-code: package.json not found above ' + import.meta.url);
    dir = parent;
  }
}

export const projectRoot = findRoot();

const pkg = JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string };
export const serviceName = 'run-python-code';
export const serviceVersion: string = pkg.version;
