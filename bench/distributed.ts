/**
 * `npm run bench:distributed`: throughput of /execute print(1) at concurrency 16 through one API
 * node with 1 and then 2 workers (each worker with an engine of its own: the host's, and a second
 * dockerd in a network namespace), as ratios to the embedded single-process server measured in
 * the same run; and the CPU each worker process and the whole machine spent per execution.
 * Redis and PostgreSQL are Debian's, started on loopback for the run. Writes nothing.
 */
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import Docker from 'dockerode';
import { startApiNode, startPostgres, startRedis, startSecondEngine, startWorker, type ClusterNode } from '../test/helpers/cluster.js';
import { spawnServer } from '../test/helpers/process.js';

const CONCURRENCY = 16;
const TOTAL = Number(process.env.BENCH_TOTAL ?? 160);
const image = process.env.SANDBOX_IMAGE ?? 'run-python-code-sandbox:latest';
const tag = randomUUID().slice(0, 8);
const TICK_MS = 10; // USER_HZ 100

/** CPU time (user + system) of a process, in ms. */
const cpuOf = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
};
/** CPU time of the whole machine (all cores, not idle), in ms. */
const machineCpu = () => {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).map(Number);
  return (ticks.reduce((a, b) => a + b, 0) - ticks[3]! - ticks[4]!) * TICK_MS;
};

async function load(url: string): Promise<{ perSecond: number; failed: number }> {
  let next = 0;
  let failed = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < TOTAL) {
        next += 1;
        const res = await fetch(`${url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 'print(1)' }) });
        const body = (await res.json()) as { result?: string };
        if (body.result !== '1') failed += 1;
      }
    }),
  );
  return { perSecond: TOTAL / ((performance.now() - start) / 1000), failed };
}

async function measure(url: string, workers: ClusterNode[]) {
  await load(url); // warm-up: pools full, images in the page cache
  const before = workers.map((w) => cpuOf(w.child.pid!));
  const machine = machineCpu();
  const result = await load(url);
  const perExecution = workers.map((w, i) => (cpuOf(w.child.pid!) - before[i]!) / TOTAL);
  return { ...result, workerCpuMs: perExecution, machineCpuMs: (machineCpu() - machine) / TOTAL };
}

async function main(): Promise<void> {
  const rows: string[] = [];
  const embedded = await spawnServer({ INSTANCE_ID: `rpc-bench-embedded-${tag}`, PACKAGES_VOLUME_PREFIX: `rpc-bench-${tag}-` });
  const single = await measure(embedded.url, [{ ...embedded, env: {} }]);
  await embedded.stop();
  rows.push(`| embedded server (one process) | ${single.perSecond.toFixed(1)} req/s | 1.00x | ${single.workerCpuMs[0]!.toFixed(1)} ms (server process) | ${single.machineCpuMs.toFixed(0)} ms | ${single.failed} |`);

  const [redis, postgres, engine2] = await Promise.all([startRedis(), startPostgres(), startSecondEngine(image)]);
  const common = { REDIS_URL: redis.url, DATABASE_URL: postgres.url, PACKAGES_VOLUME_PREFIX: `rpc-bench-${tag}-` };
  const nodes: ClusterNode[] = [];
  try {
    const api = await startApiNode({ ...common, INSTANCE_ID: `rpc-bench-api-${tag}` });
    nodes.push(api);
    const w1 = await startWorker({ ...common, INSTANCE_ID: `rpc-bench-w1-${tag}` });
    nodes.push(w1);
    const one = await measure(api.url, [w1]);
    rows.push(`| API node + 1 worker | ${one.perSecond.toFixed(1)} req/s | ${(one.perSecond / single.perSecond).toFixed(2)}x | ${one.workerCpuMs[0]!.toFixed(1)} ms | ${one.machineCpuMs.toFixed(0)} ms | ${one.failed} |`);
    const w2 = await startWorker({ ...common, INSTANCE_ID: `rpc-bench-w2-${tag}`, DOCKER_HOST: engine2.host });
    nodes.push(w2);
    const two = await measure(api.url, [w1, w2]);
    rows.push(`| API node + 2 workers (own engines) | ${two.perSecond.toFixed(1)} req/s | ${(two.perSecond / single.perSecond).toFixed(2)}x | ${two.workerCpuMs.map((c) => c.toFixed(1)).join(' / ')} ms | ${two.machineCpuMs.toFixed(0)} ms | ${two.failed} |`);
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.all([redis.stop(), postgres.stop(), engine2.stop()]);
    const docker = new Docker();
    const volumes = (await docker.listVolumes()).Volumes ?? [];
    await Promise.all(volumes.filter((v) => v.Name.startsWith(`rpc-bench-${tag}-`)).map((v) => docker.getVolume(v.Name).remove()));
  }
  console.log(`/execute print(1), ${TOTAL} requests at concurrency ${CONCURRENCY}, after a warm-up round of as many:\n`);
  console.log('| setup | throughput | ratio to embedded | CPU per execution, worker process(es) | CPU per execution, whole machine | failed |');
  console.log('|---|---|---|---|---|---|');
  for (const row of rows) console.log(row);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
