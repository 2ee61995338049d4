/**
 * What a tenant may be called, declared once: a tenant's name becomes a workspace folder, part of a
 * Docker volume name and a log field, so it is a plain name of 1-64 characters.
 */
export const TENANT_ID_SOURCE = '[A-Za-z0-9_.-]{1,64}';
export const TENANT_ID_PATTERN = `^${TENANT_ID_SOURCE}$`;
const TENANT_ID = new RegExp(TENANT_ID_PATTERN);

/** The tenant of a server without API keys. */
export const DEFAULT_TENANT = 'default';

export function isTenantId(name: string): boolean {
  return TENANT_ID.test(name);
}
