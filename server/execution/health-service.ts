import type { Config } from '../config.js';
import type { HealthResponse } from '../contract/contract.js';
import type { Backend } from '../distributed/backend.js';
import { serviceVersion } from '../project.js';
import type { Sandbox } from '../sandbox/sandbox.js';

/**
 * Whether this server can run code now: the engine answers and the right sandbox image is there;
 * on an API node, Redis and PostgreSQL answer and some worker is alive.
 */
export class HealthService {
  constructor(
    private readonly config: Config,
    private readonly sandbox: Sandbox,
    private readonly backend?: Backend,
  ) {}

  async check(): Promise<HealthResponse> {
    const base = { version: serviceVersion, base_dir: this.config.baseDir };
    if (this.backend?.health) return { ...base, role: 'api', ...(await this.backend.health()) };
    const health = await this.sandbox.health();
    return {
      status: health.reachable && health.imagePresent ? 'healthy' : 'unhealthy',
      ...base,
      ...(this.backend ? { role: 'worker', pool_ready: this.sandbox.ready() } : {}),
      docker: { reachable: health.reachable, version: health.version },
      sandbox_image: { name: this.config.sandboxImage, present: health.imagePresent },
      ...(health.error ? { error: health.error } : {}),
    };
  }
}
