import type { Config } from '../config.js';

/** The Docker volume holding a tenant's packages. */
export function packagesVolume(config: Config, tenant: string): string {
  return `${config.packagesVolumePrefix}${tenant}`;
}
