import client from 'prom-client';

/** What a finished execution counts as, in metrics. */
export type Outcome = 'success' | 'error' | 'timeout' | 'oom' | 'truncated';

const SECONDS = [0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 5, 10, 30, 90, 300];

/**
 * The Prometheus metrics (prom-client), on a registry of their own. Gauges that mirror live state
 * (pool size, executions in flight, queue length) read it when scraped, through `watch`.
 */
export class Metrics {
  readonly registry = new client.Registry();
  readonly requests = new client.Histogram({
    name: 'rpc_http_request_duration_seconds',
    help: 'HTTP requests by route and status',
    labelNames: ['route', 'status'],
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly executions = new client.Histogram({
    name: 'rpc_execution_duration_seconds',
    help: 'Sandbox runs by endpoint and outcome (success, error, timeout, oom, truncated)',
    labelNames: ['endpoint', 'outcome'],
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly slotWait = new client.Histogram({
    name: 'rpc_slot_wait_seconds',
    help: 'Time a request waited for an execution slot (admission queue)',
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly containerPhase = new client.Histogram({
    name: 'rpc_container_phase_seconds',
    help: 'Docker container create, start and remove durations',
    labelNames: ['phase'],
    buckets: SECONDS,
    registers: [this.registry],
  });
  readonly poolTakes = new client.Counter({
    name: 'rpc_pool_takes_total',
    help: 'Executions that found a warm container (hit) or started a cold one (miss)',
    labelNames: ['result'],
    registers: [this.registry],
  });

  readonly egressConnections = new client.Counter({
    name: 'rpc_egress_connections_total',
    help: 'Connections through the egress proxy, allowed or refused, by reason',
    labelNames: ['result', 'reason'],
    registers: [this.registry],
  });
  readonly egressBytes = new client.Counter({
    name: 'rpc_egress_bytes_total',
    help: 'Bytes carried through the egress proxy, both ways',
    registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'rpc_' });
  }

  /** Gauges read from live objects at scrape time. */
  watch(sources: { poolSize: () => number; inFlight: () => number; queued: () => number }): void {
    const gauge = (name: string, help: string, read: () => number) =>
      new client.Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read());
        },
      });
    gauge('rpc_pool_ready', 'Warm containers waiting for a job', sources.poolSize);
    gauge('rpc_executions_in_flight', 'Sandboxes running now', sources.inFlight);
    gauge('rpc_queue_length', 'Requests waiting for an execution slot', sources.queued);
  }
}
