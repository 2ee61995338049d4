import type { components } from '../api/openapi-types.js';
import type { Config } from '../config.js';

/** A tenant's limits: the settings' defaults, then the files' defaults, then the tenant's own. */
export type TenantLimits = components['schemas']['TenantLimits'];

/** JSON schema of a (partial) limits object in the tenants or limits file. */
export const limitsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    max_timeout_s: { type: 'integer', minimum: 1, maximum: 86400 },
    memory_mb: { type: 'integer', minimum: 32, maximum: 1048576 },
    cpus: { type: 'number', minimum: 0.01, maximum: 1024 },
    pids: { type: 'integer', minimum: 8, maximum: 4194304 },
    output_bytes: { type: 'integer', minimum: 1024, maximum: 268435456 },
    workspace_mb: { type: 'integer', minimum: 1, maximum: 65536 },
    max_concurrent: { type: 'integer', minimum: 1, maximum: 10000 },
    requests_per_minute: { type: 'integer', minimum: 0, maximum: 1000000 },
    max_code_bytes: { type: 'integer', minimum: 1, maximum: 1073741824 },
    may_install: { type: 'boolean' },
  },
} as const;

export function defaultLimits(config: Config): TenantLimits {
  return {
    max_timeout_s: config.maxTimeoutS,
    memory_mb: config.memoryMb,
    cpus: config.cpus,
    pids: config.pids,
    output_bytes: config.outputBytes,
    workspace_mb: config.workspaceMb,
    max_concurrent: config.tenantMaxConcurrent,
    requests_per_minute: config.rateLimitPerMinute,
    max_code_bytes: config.maxCodeBytes,
    may_install: config.allowInstall,
  };
}
