import type { Config } from '../config.js';

/** Until tenancy lands, everyone is this tenant. */
export const DEFAULT_TENANT = 'default';

/** The Docker volume holding a tenant's packages. */
export function packagesVolume(config: Config, tenant: string): string {
  return `${config.packagesVolumePrefix}${tenant}`;
}
