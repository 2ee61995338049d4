import { settings, type Config, type Setting } from '../config.js';
import type { TenantLimits } from '../contract/contract.js';

export type { TenantLimits };

/** The settings that are tenant limits' defaults, by config key: the one declaration of the limits. */
const limitSettings = (Object.entries(settings) as [keyof Config, Setting<unknown>][]).flatMap(([key, s]) =>
  'limit' in s && 'bounds' in s ? [{ key, limit: s.limit, bounds: s.bounds }] : [],
);

/** JSON schema of a (partial) limits object in the tenants or limits file. */
export const limitsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: Object.fromEntries(limitSettings.map((s) => [s.limit, s.bounds])),
};

/** A tenant's limits before the files say anything: the settings' values. */
export function defaultLimits(config: Config): TenantLimits {
  return Object.fromEntries(limitSettings.map((s) => [s.limit, config[s.key]])) as unknown as TenantLimits;
}
