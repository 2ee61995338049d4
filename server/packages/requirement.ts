import { normalizePackageName } from '../config.js';
import { badRequest } from '../errors.js';

/**
 * One PEP 508 requirement, restricted to what a package install needs: a name, optional extras,
 * optional version specifiers. No markers, URLs, paths or options: nothing that pip could read as
 * anything but a requirement. It still reaches pip after `--`, as one argument.
 */
export interface Requirement {
  /** PEP 503 normalized name (lowercase, runs of -_. as one -), for allow/deny lists and lookups. */
  name: string;
  /** The requirement as handed to pip, re-assembled from its parsed parts. */
  text: string;
}

const MAX_LENGTH = 200;
const NAME = '[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?';
const VERSION = '[A-Za-z0-9][A-Za-z0-9.*+!_-]*';
const SPEC = `(?:~=|===|==|!=|<=|>=|<|>)\\s*${VERSION}`;
const GRAMMAR = new RegExp(
  `^(${NAME})\\s*(?:\\[\\s*(${NAME}(?:\\s*,\\s*${NAME})*)?\\s*\\])?\\s*(${SPEC}(?:\\s*,\\s*${SPEC})*)?$`,
);

/** Parses one requirement; `field` names where it came from in the refusal (package_name, dependencies[2]). */
export function parseRequirement(raw: string, field = 'package_name'): Requirement {
  const refuse = (why: string) =>
    badRequest(`Invalid ${field} ${JSON.stringify(raw.slice(0, 80))}: ${why}`);
  if (raw.length > MAX_LENGTH) throw refuse(`longer than ${MAX_LENGTH} characters`);
  const value = raw.trim();
  if (value.startsWith('-')) throw refuse('pip options are not accepted, only a requirement');
  if (/:\/\/|@/.test(value)) throw refuse('URLs and direct references are not accepted');
  if (/[/\\]/.test(value)) throw refuse('paths are not accepted');
  if (value.includes(';')) throw refuse('environment markers are not accepted');
  const match = GRAMMAR.exec(value);
  if (!match) {
    throw refuse(
      'expected one requirement: a name, optional [extras] and optional version specifiers, such as "pandas[excel]>=2,<3"',
    );
  }
  const [, name, extras, specs] = match;
  const extrasList = extras ? extras.split(',').map((e) => e.trim()) : [];
  const specList = specs ? specs.split(',').map((s) => s.replace(/\s+/g, '')) : [];
  return {
    name: normalizePackageName(name!),
    text: `${name}${extrasList.length ? `[${extrasList.join(',')}]` : ''}${specList.join(',')}`,
  };
}
