import type { Config } from '../config.js';
import type { HealthResponse } from '../contract/contract.js';
import { serviceVersion } from '../project.js';
import type { Sandbox } from '../sandbox/sandbox.js';

/** Whether this server can run code now: the engine answers and the right sandbox image is there. */
export class HealthService {
  constructor(
    private readonly config: Config,
    private readonly sandbox: Sandbox,
  ) {}

  async check(): Promise<HealthResponse> {
    const health = await this.sandbox.health();
    return {
      status: health.reachable && health.imagePresent ? 'healthy' : 'unhealthy',
      version: serviceVersion,
      base_dir: this.config.baseDir,
      docker: { reachable: health.reachable, version: health.version },
      sandbox_image: { name: this.config.sandboxImage, present: health.imagePresent },
      ...(health.error ? { error: health.error } : {}),
    };
  }
}
