/**
 * What a tenant may be called, declared once: a tenant's name becomes a workspace folder, part of a
 * Docker volume name and a log field, so it is a plain name of 1-64 characters that starts with a
 * letter or a digit (never `.` or `..`, which as folder names would be every tenant's).
 */
export const TENANT_ID_SOURCE = '[A-Za-z0-9][A-Za-z0-9_.-]{0,63}';
export const TENANT_ID_PATTERN = `^${TENANT_ID_SOURCE}$`;
const TENANT_ID = new RegExp(TENANT_ID_PATTERN);

/** The tenant of a server without API keys. */
export const DEFAULT_TENANT = 'default';

export function isTenantId(name: string): boolean {
  return TENANT_ID.test(name);
}
