import type { Config } from '../config.js';

/** The tenant of a server without API keys. */
export const DEFAULT_TENANT = 'default';

/** The Docker volume holding a tenant's packages. */
export function packagesVolume(config: Config, tenant: string): string {
  return `${config.packagesVolumePrefix}${tenant}`;
}
