/**
 * The benchmark harness: `npm run bench` (full run, writes docs/benchmarks.md), `-- --quick`
 * (tiny counts: checks the harness works, asserts nothing about time, writes nothing),
 * `-- --data-science` (only the pandas + matplotlib rows, full counts, writes nothing),
 * `-- --workspaces` (the baseline and the workspace rows only, full counts, writes nothing),
 * `-- --contexts` (the baseline, a context's calls and runs with declared dependencies; writes nothing),
 * `-- --gvisor` (only the gVisor rows, runsc against runc, full counts, writes nothing),
 * `-- --egress` (only the egress allowlist rows, a proxied tenant against one without, full counts, writes nothing) and
 * `-- --soak` (2000 mixed requests at concurrency 16, checks failures, leftovers and RSS growth).
 *
 * Every figure is printed as a ratio to the baseline measured in the same run on the same machine:
 * `docker run --rm` of the sandbox image with the same caps running `print(1)` (or, for the data
 * science rows, the same pandas + matplotlib code).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { loadConfig } from '../server/config.js';
import { projectRoot } from '../server/project.js';
import { DEPLOYMENT_FILE, DEPLOYMENT_LABEL } from '../server/packages/volume.js';
import { startOrigins } from '../test/helpers/egress-origins.js';
import { freePort } from '../test/helpers/free-port.js';
import { tenantsFile } from '../test/helpers/tenants.js';
import { makeWheel } from '../test/helpers/wheels.js';
import { hostPidsLimit } from '../server/sandbox/container-spec.js';
import type { Runtime } from '../server/sandbox/oci-runtime.js';

const run = promisify(execFile);
const args = new Set(process.argv.slice(2));
const only = ['soak', 'quick', 'data-science', 'workspaces', 'contexts', 'gvisor', 'egress'].find((m) => args.has(`--${m}`));
const mode = only ?? 'full';
const config = loadConfig({ ...process.env, BASE_DIR: os.tmpdir() });
const counts = mode === 'quick'
  ? { sequential: 3, parallelRuns: 8, perConnection: 1, numpy: 2, pairs: 2, dataScience: 2, workspaceMb: 8, workspaceRounds: 1 }
  : { sequential: 40, parallelRuns: 48, perConnection: 6, numpy: 10, pairs: 10, dataScience: 12, workspaceMb: 100, workspaceRounds: 5 };
const gvisorRounds = mode === 'quick' ? 2 : 20;
const egressRounds = gvisorRounds;

// ---------- statistics ----------
const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]! : NaN;
};
interface Sample { p50: number; p95: number; p99: number; throughput?: number; rssMb?: number }
const summarize = (ms: number[], seconds?: number): Sample => ({
  p50: quantile(ms, 0.5),
  p95: quantile(ms, 0.95),
  p99: quantile(ms, 0.99),
  throughput: seconds ? ms.length / seconds : undefined,
});

// ---------- the baseline: docker run --rm with the same caps ----------
const dockerRun = (code: string, runtime: Runtime = 'runc') => [
  'run', '--rm', '-i', '--network', 'none', '--read-only', '--cap-drop', 'ALL', '--runtime', runtime,
  '--security-opt', 'no-new-privileges', '--user', '10001:10001',
  '--memory', `${config.memoryMb}m`, '--memory-swap', `${config.memoryMb}m`, '--cpus', String(config.cpus),
  '--pids-limit', String(hostPidsLimit(runtime, config.pids)), '--ulimit', `nofile=${config.nofile}:${config.nofile}`,
  ...(runtime === 'runsc' ? ['--ulimit', `nproc=${config.pids}:${config.pids}`] : []),
  '--tmpfs', `/workspace:rw,nosuid,nodev,size=${config.workspaceMb}m,uid=10001,gid=10001`,
  '--tmpfs', `/tmp:rw,nosuid,nodev,size=${config.tmpMb}m`, '--log-driver', 'none',
  '--label', 'run-python-code.bench=1', '--entrypoint', 'python3', config.sandboxImage, '-c', code,
];

/** One `docker run` of `code`, which must print 1. */
async function timeDockerRun(code = 'print(1)', runtime: Runtime = 'runc'): Promise<number> {
  const start = performance.now();
  const { stdout } = await run('docker', dockerRun(code, runtime));
  if (stdout.trim() !== '1') throw new Error(`docker run printed ${stdout}`);
  return performance.now() - start;
}

async function baselineParallel(parallelism: number, total: number): Promise<Sample> {
  const times: number[] = [];
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: parallelism }, async () => {
      while (next < total) {
        next += 1;
        times.push(await timeDockerRun());
      }
    }),
  );
  return summarize(times, (performance.now() - start) / 1000);
}

// ---------- the server under test, as its own process ----------
/** `key`: the API key the harness reads /metrics with, on a server with a tenants file. */
interface Server { url: string; child: ChildProcess; instance: string; baseDir: string; key?: string }
let serversStarted = 0;
const BENCH_VOLUME_PREFIX = 'rpc-bench-';

async function startServer(poolSize: number, dockerHost?: string, env: Record<string, string> = {}): Promise<Server> {
  const port = await freePort();
  // Each server an instance of its own: a server removes its instance's containers as it starts.
  const instance = `bench-${process.pid}-${++serversStarted}-${poolSize}${dockerHost ? '-proxy' : ''}`;
  const baseDir = mkdtempSync(path.join(os.tmpdir(), 'rpc-bench-'));
  const child = spawn(process.execPath, [path.join(projectRoot, 'dist/server/index.js')], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      POOL_SIZE: String(poolSize),
      INSTANCE_ID: instance,
      BASE_DIR: baseDir,
      // The prefix the Docker proxy below admits; each server's volumes are told apart by their deployment label.
      PACKAGES_VOLUME_PREFIX: BENCH_VOLUME_PREFIX,
      ...(dockerHost ? { DOCKER_HOST: dockerHost } : {}),
      ...env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) break;
    if (i > 200) throw new Error('server did not become healthy');
    await new Promise((r) => setTimeout(r, 100));
  }
  // Let the pool fill before measuring it.
  if (poolSize > 0) await new Promise((r) => setTimeout(r, 1500));
  return { url, child, instance, baseDir };
}

async function stopServer(server: Server): Promise<number> {
  server.child.kill('SIGTERM');
  await new Promise((r) => server.child.once('exit', r));
  const { stdout } = await run('docker', ['ps', '-aq', '--filter', `label=run-python-code.instance=${server.instance}`]);
  const deployment = readFileSync(path.join(server.baseDir, DEPLOYMENT_FILE), 'utf8').trim();
  await run('sh', ['-c', `docker volume ls -q --filter label=${DEPLOYMENT_LABEL}=${deployment} | xargs -r docker volume rm`]);
  rmSync(server.baseDir, { recursive: true, force: true });
  return stdout.trim() ? stdout.trim().split('\n').length : 0;
}

/** The Docker API proxy of docker-compose.yml, on loopback, in front of this engine's socket. */
async function startProxy(): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(projectRoot, 'dist/server/docker-proxy/main.js')], {
    env: { ...process.env, DOCKER_PROXY_PORT: String(port), PACKAGES_VOLUME_PREFIX: BENCH_VOLUME_PREFIX, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; !(await fetch(`${url}/_ping`).then((r) => r.ok, () => false)); i++) {
    if (i > 100) throw new Error('the Docker proxy did not answer');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, child };
}

function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : NaN;
}

interface Load { connections: number; amount: number; bodies: string[]; expect?: (status: number) => boolean }

/** autocannon against POST /execute; latencies from each response, RSS sampled along the way. */
async function load(server: Server, route: string, { connections, amount, bodies }: Load): Promise<Sample & { failed: number; rssSeries: number[] }> {
  const latencies: number[] = [];
  const rssSeries: number[] = [];
  const sampler = setInterval(() => rssSeries.push(rssMb(server.child.pid!)), 250);
  let failed = 0;
  let pick = 0;
  const start = performance.now();
  const result = await autocannon({
    url: server.url + route,
    connections,
    amount,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: bodies[0],
    timeout: 120,
    setupClient: (client) => {
      client.on('response', (status: number, _bytes: number, ms: number) => {
        latencies.push(ms);
        if (status !== 200) failed += 1;
        if (bodies.length > 1) client.setBody(bodies[pick++ % bodies.length]!);
      });
    },
  });
  clearInterval(sampler);
  rssSeries.push(rssMb(server.child.pid!));
  failed += result.errors + result.timeouts;
  return { ...summarize(latencies, (performance.now() - start) / 1000), failed, rssSeries, rssMb: Math.max(...rssSeries) };
}

async function sequentialPairs(server: Server, pairs: number): Promise<Sample> {
  const times: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const start = performance.now();
    for (const [route, body] of [
      ['/save-and-execute', { file_name: `bench_${i}.py`, code: 'result = sum(range(100))', variable_to_return: 'result' }],
      ['/run-python-file', { file_name: `bench_${i}.py`, variable_to_return: 'result' }],
    ] as const) {
      const res = await fetch(server.url + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const answer = (await res.json()) as { result?: string };
      if (answer.result !== '4950') throw new Error(`${route} answered ${JSON.stringify(answer)}`);
    }
    times.push(performance.now() - start);
  }
  return summarize(times);
}

const print1 = JSON.stringify({ code: 'print(1)' });

async function measureServer(poolSize: number, rows: Row[], baseline: Sample, parallel8: Sample, dockerHost?: string): Promise<void> {
  const label = `${poolSize > 0 ? `pool on (${poolSize})` : 'pool off'}${dockerHost ? ', through the Docker proxy' : ''}`;
  const server = await startServer(poolSize, dockerHost);
  let failure: unknown = null;
  try {
    const seq = await load(server, '/execute', { connections: 1, amount: counts.sequential, bodies: [print1] });
    rows.push(latencyRow(`/execute print(1), ${label}, sequential`, seq, baseline));
    for (const connections of dockerHost ? [8] : [1, 4, 8, 16]) {
      const result = await load(server, '/execute', { connections, amount: connections * counts.perConnection, bodies: [print1] });
      if (result.failed > 0) throw new Error(`${result.failed} failed requests at concurrency ${connections}`);
      rows.push(throughputRow(`/execute print(1), ${label}, concurrency ${connections}`, result, parallel8));
      if (connections === 16) rows.push({ what: `server RSS at concurrency 16, ${label}`, value: `${result.rssMb!.toFixed(0)} MB`, ratio: '(target < 150 MB)' });
    }
    if (poolSize > 0) {
      const numpy = await load(server, '/execute', { connections: 1, amount: counts.numpy, bodies: [JSON.stringify({ code: 'import numpy; print(numpy.arange(3).sum())' })] });
      rows.push(latencyRow(`/execute import numpy, ${label}`, numpy, baseline));
      rows.push(latencyRow(`/save-and-execute + /run-python-file pair, ${label}`, await sequentialPairs(server, counts.pairs), baseline));
    }
  } catch (err) {
    failure = err;
  }
  const left = await stopServer(server);
  if (failure) throw failure;
  if (left > 0) throw new Error(`${left} containers left after stopping the server (${label})`);
}

/**
 * gVisor against runc, interleaved in one run: cold, `docker run --runtime runsc` against
 * `docker run` (runc) and the server's pool-off runsc execution against the former; warm, a
 * runsc server's pooled print(1) and import numpy against a runc server's, each request taken
 * when both pools are full (the pools refill between requests, so no refill overlaps a request).
 */
async function measureGvisor(rows: Row[]): Promise<void> {
  await timeDockerRun('print(1)', 'runsc');
  const cold: Record<Runtime, number[]> = { runc: [], runsc: [] };
  for (let i = 0; i < gvisorRounds; i++) {
    cold.runc.push(await timeDockerRun('print(1)', 'runc'));
    cold.runsc.push(await timeDockerRun('print(1)', 'runsc'));
  }
  const coldRunc = summarize(cold.runc);
  const coldRunsc = summarize(cold.runsc);
  rows.push(latencyRow('gVisor: docker run --rm (runc), print(1), interleaved with the next row', coldRunc, coldRunc));
  rows.push(latencyRow('gVisor: docker run --rm --runtime runsc, print(1) (ratio: to docker run with runc)', coldRunsc, coldRunc));
  const runtimes = { SANDBOX_RUNTIMES: 'runc,runsc' };
  const coldServer = await startServer(0, undefined, { ...runtimes, SANDBOX_RUNTIME: 'runsc' });
  const servers: Record<Runtime, Server> = {
    runc: await startServer(config.poolSize, undefined, { ...runtimes, SANDBOX_RUNTIME: 'runc' }),
    runsc: await startServer(config.poolSize, undefined, { ...runtimes, SANDBOX_RUNTIME: 'runsc' }),
  };
  let failure: unknown = null;
  try {
    const viaServer: number[] = [];
    for (let i = 0; i < gvisorRounds; i++) viaServer.push(await timeExecute(coldServer, { code: 'print(1)' }));
    rows.push(latencyRow('gVisor: /execute print(1), pool off, runsc (ratio: to docker run --runtime runsc)', summarize(viaServer), coldRunsc));
    for (const [what, code, expect] of [['print(1)', 'print(1)', '1'], ['import numpy', 'import numpy; print(numpy.arange(3).sum())', '3']] as const) {
      const warm: Record<Runtime, number[]> = { runc: [], runsc: [] };
      for (let i = 0; i < gvisorRounds; i++) {
        for (const runtime of ['runc', 'runsc'] as const) {
          // Both pools full: neither server is making a container while the other is measured.
          await Promise.all([poolFull(servers.runc), poolFull(servers.runsc)]);
          warm[runtime].push(await timeExecute(servers[runtime], { code }, expect));
        }
      }
      const runc = summarize(warm.runc);
      rows.push(latencyRow(`gVisor: /execute ${what}, pool on (${config.poolSize}), runc, interleaved with the next row`, runc, runc));
      rows.push(latencyRow(`gVisor: /execute ${what}, pool on (${config.poolSize}), runsc (ratio: to runc; goal <= 1.5x)`, summarize(warm.runsc), runc));
    }
  } catch (err) {
    failure = err;
  }
  const left = (await Promise.all([coldServer, servers.runc, servers.runsc].map(stopServer))).reduce((a, b) => a + b, 0);
  if (failure) throw failure;
  if (left > 0) throw new Error(`${left} containers left after the gVisor rows`);
}

// ---------- egress allowlists: a tenant whose containers reach allowed.test through the proxy ----------
const SMALL_BODY = 1024;
const DOWNLOAD = 10 * 2 ** 20;
/** Python that GETs `url` with urllib (through the proxy its environment names), trusting `cert` for HTTPS, and prints how many bytes came. */
const urllibGet = (url: string, cert: string) => [
  'import ssl, urllib.request',
  `ctx = ssl.create_default_context(cadata=${JSON.stringify(cert)}) if ${JSON.stringify(url)}.startswith("https:") else None`,
  `print(len(urllib.request.urlopen(${JSON.stringify(url)}, timeout=30, context=ctx).read()))`,
].join('\n');
/** Python that downloads `url` and prints the bytes and the seconds the download took, timed around urlopen and the read. */
const timedDownload = (url: string) => [
  'import time, urllib.request',
  'start = time.monotonic()',
  `n = len(urllib.request.urlopen(${JSON.stringify(url)}, timeout=60).read())`,
  'print(n, time.monotonic() - start)',
].join('\n');

/** The host's own GET of `url`, straight from the server: seconds to the body's end. */
function hostDownload(url: string): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => (bytes += chunk.length));
      res.on('end', () => (bytes === DOWNLOAD ? resolve((performance.now() - start) / 1000) : reject(new Error(`the host got ${bytes} bytes`))));
      res.on('error', reject);
    }).on('error', reject);
  });
}

/** A throughput row from download times in seconds: the rate at the p50 and the p95 time, and its ratio to `base`'s. */
const rateRow = (what: string, seconds: number[], base: number[]): Row => {
  const [s, b] = [summarize(seconds), summarize(base)];
  return {
    what,
    value: `${(DOWNLOAD / s.p50 / 1e6).toFixed(0)} MB/s at the p50 time (${ms(s.p50 * 1000)} ms), ${(DOWNLOAD / s.p95 / 1e6).toFixed(0)} at the p95 (${ms(s.p95 * 1000)} ms)`,
    ratio: `${(b.p50 / s.p50).toFixed(2)}x / ${(b.p95 / s.p95).toFixed(2)}x`,
  };
};

/**
 * Egress allowlists, interleaved in one run on one server with two tenants: `closed` (no list, no
 * network) and `reach` (allowed.test, on the internal egress network, the proxy in the server).
 * allowed.test is pinned to servers on 127.0.0.1, so no traffic leaves this host. Each request is
 * sent when the pools are full: egress executions take warm containers too (a profile of their
 * own, on the egress network). Then 10 MiB through the proxy, timed inside the code, against the
 * host's own download of it from the same server.
 */
async function measureEgress(rows: Row[]): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-bench-egress-'));
  const bodies = new Map([SMALL_BODY, DOWNLOAD].map((n) => [`/${n}`, Buffer.alloc(n, 'x')]));
  const serve: http.RequestListener = (req, res) => res.end(bodies.get(req.url ?? '') ?? '');
  const origins = await startOrigins(dir, 'allowed.test', serve, serve);
  // The limits of the tenants file: egress_bytes keeps its default (64 MiB), above the download.
  const tenants = tenantsFile({ closed: '', reach: '{egress: [allowed.test]}' });
  const network = `rpc-bench-egress-${process.pid}`;
  const server = {
    ...(await startServer(config.poolSize, undefined, {
      TENANTS_FILE: tenants,
      EGRESS_NETWORK: network,
      EGRESS_PORTS: `${origins.ports.http},${origins.ports.https}`,
      EGRESS_RESOLVE: JSON.stringify({ 'allowed.test': '127.0.0.1' }),
    })),
    key: 'reach-key',
  };
  // Full: both tenants' profiles, warmed at start (reach's on the egress network).
  const full = () => poolFull(server, 2 * config.poolSize);
  const pool = `pool on (${config.poolSize})`;
  let failure: unknown = null;
  try {
    const runs = [
      ['closed', 'print(1)', '1'],
      ['reach', 'print(1)', '1'],
      ['reach', urllibGet(`http://allowed.test:${origins.ports.http}/${SMALL_BODY}`, origins.cert), String(SMALL_BODY)],
      ['reach', urllibGet(`https://allowed.test:${origins.ports.https}/${SMALL_BODY}`, origins.cert), String(SMALL_BODY)],
    ] as const;
    for (const [tenant, code, expect] of runs) await timeExecute(server, { code }, expect, `${tenant}-key`); // the egress profile made, the proxy up
    const missesBefore = await metric(server, 'rpc_pool_takes_total{result="miss"}');
    const times: number[][] = runs.map(() => []);
    for (let i = 0; i < egressRounds; i++) {
      for (const [at, [tenant, code, expect]] of runs.entries()) {
        await full();
        times[at]!.push(await timeExecute(server, { code, timeout: 30 }, expect, `${tenant}-key`));
      }
    }
    const download = timedDownload(`http://allowed.test:${origins.ports.http}/${DOWNLOAD}`);
    const host: number[] = [];
    const proxied: number[] = [];
    for (let i = 0; i < egressRounds; i++) {
      await full();
      host.push(await hostDownload(`http://127.0.0.1:${origins.ports.http}/${DOWNLOAD}`));
      await full();
      const [bytes, seconds] = (await execute(server, { code: download, timeout: 60 }, 'reach-key')).result.split(' ');
      if (Number(bytes) !== DOWNLOAD) throw new Error(`the sandbox got ${bytes} bytes`);
      proxied.push(Number(seconds));
    }
    // Every measured request took a warm container, as the rows say.
    const misses = (await metric(server, 'rpc_pool_takes_total{result="miss"}')) - missesBefore;
    if (misses > 0) throw new Error(`${misses} egress bench requests found no warm container`);
    const [closed, reach, viaHttp, viaHttps] = times.map(summarize) as [Sample, Sample, Sample, Sample];
    rows.push(latencyRow(`egress: /execute print(1), ${pool}, a tenant without egress (no network), interleaved with the next rows`, closed, closed));
    rows.push(latencyRow(`egress: /execute print(1), ${pool}, the egress tenant (on the egress network; ratio: to the tenant without)`, reach, closed));
    rows.push(latencyRow(`egress: /execute urllib GET of 1 KiB over HTTP through the proxy, ${pool} (ratio: to the egress tenant's print(1))`, viaHttp, reach));
    rows.push(latencyRow(`egress: /execute urllib GET of 1 KiB over HTTPS (CONNECT) through the proxy, ${pool} (ratio: to the egress tenant's print(1))`, viaHttps, reach));
    rows.push(rateRow('egress: 10 MiB over HTTP, the host straight from the server (node http.get), interleaved with the next row', host, host));
    rows.push(rateRow('egress: 10 MiB over HTTP through the proxy inside one execution, timed in the code (ratio: to the host\'s)', proxied, host));
  } catch (err) {
    failure = err;
  }
  const left = await stopServer(server);
  await origins.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(path.dirname(tenants), { recursive: true, force: true });
  // The server removes the egress network it made as it stops; one still there is removed and reported.
  const networkLeft = await run('docker', ['network', 'inspect', network]).then(() => true, () => false);
  if (networkLeft) await run('docker', ['network', 'rm', network]);
  if (failure) throw failure;
  if (left > 0) throw new Error(`${left} containers left after the egress rows`);
  if (networkLeft) throw new Error(`the egress network ${network} was left after the server stopped`);
}

/**
 * Workspaces stream: 4 concurrent runs of one tenant, each taking the whole workspace in and
 * sending a sixth of it back changed. The server's peak RSS is set against the bytes in flight
 * (what the old code held in memory at once); the runs' latency against the baseline.
 */
async function measureWorkspaces(rows: Row[], baseline: Sample): Promise<void> {
  const mb = counts.workspaceMb;
  const changedMb = Math.max(1, Math.floor(mb / 6));
  // Room above the workspace itself: the fill run writes it whole inside one container's tmpfs.
  const server = await startServer(0, undefined, { SANDBOX_WORKSPACE_MB: String(mb + 28) });
  let failure: unknown = null;
  try {
    const post = async (code: string) => {
      const res = await fetch(`${server.url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
      const body = (await res.json()) as { success?: boolean; error?: string };
      if (!body.success) throw new Error(`workspace run failed: ${body.error}`);
    };
    await post(`import os\nfor i in range(${mb}):\n    open(f"f{i:03}", "wb").write(os.urandom(1 << 20))`);
    await new Promise((r) => setTimeout(r, 1000));
    const idle = rssMb(server.child.pid!);
    let peak = idle;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(server.child.pid!))), 50);
    const times: number[] = [];
    for (let round = 0; round < counts.workspaceRounds; round++) {
      await Promise.all(
        [0, 1, 2, 3].map(async (run) => {
          const first = ((round * 4 + run) * changedMb) % (mb - changedMb + 1);
          const start = performance.now();
          await post(`import os\nfor i in range(${first}, ${first + changedMb}):\n    open(f"f{i:03}", "wb").write(os.urandom(1 << 20))`);
          times.push(performance.now() - start);
        }),
      );
    }
    clearInterval(sampler);
    peak = Math.max(peak, rssMb(server.child.pid!));
    const inFlight = 4 * (mb + changedMb);
    rows.push(latencyRow(`4 concurrent runs of a ${mb} MiB workspace, each sending ${changedMb} MiB back changed`, summarize(times), baseline));
    rows.push({
      what: `server RSS, 4 concurrent runs of a ${mb} MiB workspace`,
      value: `peak ${peak.toFixed(0)} MB (idle ${idle.toFixed(0)} MB)`,
      ratio: `${(peak / inFlight).toFixed(2)}x the ${inFlight} MiB in flight; +${(peak - idle).toFixed(0)} MB over idle (target < 200 MB)`,
    });
  } catch (err) {
    failure = err;
  }
  const left = await stopServer(server);
  if (failure) throw failure;
  if (left > 0) throw new Error(`${left} containers left after stopping the server (workspaces)`);
}

// ---------- data science: pandas and matplotlib, one figure saved ----------
const DATA_SCIENCE = [
  'import pandas as pd',
  'import matplotlib.pyplot as plt',
  'fig, ax = plt.subplots()',
  'pd.Series([1, 3, 2]).plot(ax=ax)',
  'fig.savefig("plot.png")',
  'print(1)',
].join('\n');
// What the runner does before any code (prepare_matplotlib): the image's font cache, so that the
// baseline does not rebuild it on every run.
const MPL_CACHE = 'import shutil; shutil.copytree("/opt/run-python-code/mpl-cache", "/tmp/matplotlib")\n';

const bearer = (key?: string): Record<string, string> => (key ? { authorization: `Bearer ${key}` } : {});

/** A sample's value; `name` may carry labels (`rpc_pool_takes_total{result="miss"}`). */
async function metric(server: Server, name: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`, { headers: bearer(server.key) })).text();
  const match = new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
  return match ? Number(match[1]) : NaN;
}

/**
 * Waits until the pool is full again and nothing is being made: a warm container waits, the machine is idle.
 * `ready`: the warm containers of all its profiles together when full.
 */
async function poolFull(server: Server, ready = config.poolSize): Promise<void> {
  for (let i = 0; (await metric(server, 'rpc_pool_ready')) < ready; i++) {
    if (i > 1200) throw new Error('the pool did not refill within 2 minutes');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** POST `body` to /execute, as the tenant of `key` if given: its answer's result (it must be a success), and how long it took. */
async function execute(server: Server, body: Record<string, unknown>, key?: string): Promise<{ ms: number; result: string }> {
  const start = performance.now();
  const res = await fetch(`${server.url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(key) }, body: JSON.stringify(body) });
  const answer = (await res.json()) as { success?: boolean; result?: string };
  if (!answer.success || answer.result === undefined) throw new Error(`/execute answered ${JSON.stringify(answer).slice(0, 500)}`);
  return { ms: performance.now() - start, result: answer.result };
}

/** The time of an /execute whose result must be `expected`. */
async function timeExecute(server: Server, body: Record<string, unknown>, expected = '1', key?: string): Promise<number> {
  const { ms, result } = await execute(server, body, key);
  if (result !== expected) throw new Error(`/execute gave ${JSON.stringify(result.slice(0, 500))}, not ${expected}`);
  return ms;
}

/**
 * A context's calls against fresh warm-pool executions (each with a warm container waiting), and
 * runs whose declared dependencies are installed already against the same runs without them.
 */
async function measureContexts(rows: Row[], baseline: Sample): Promise<void> {
  const wheelhouse = mkdtempSync(path.join(os.tmpdir(), 'rpc-bench-wheels-'));
  makeWheel(wheelhouse, 'rpc-bench-tiny', '1.0');
  const server = await startServer(config.poolSize, undefined, { WHEELHOUSE_DIR: wheelhouse });
  try {
    const pooled: number[] = [];
    for (let i = 0; i < counts.sequential; i++) {
      await poolFull(server);
      pooled.push(await timeExecute(server, { code: 'print(1)' }));
    }
    const created = await fetch(`${server.url}/contexts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    const { context_id } = (await created.json()) as { context_id: string };
    await timeExecute(server, { code: 'print(1)', context_id }); // its first call
    const inContext: number[] = [];
    for (let i = 0; i < counts.sequential; i++) inContext.push(await timeExecute(server, { code: 'print(1)', context_id }));
    await fetch(`${server.url}/contexts/${context_id}`, { method: 'DELETE' });
    const warm = summarize(pooled);
    rows.push(latencyRow('/execute print(1), pool on, a warm container waiting', warm, baseline));
    rows.push(comparedRow('/execute print(1) in a context (its later calls)', summarize(inContext), baseline, warm, 'the warm-pool row'));

    const code = 'import rpc_bench_tiny\nprint(1)';
    await timeExecute(server, { code, dependencies: ['rpc-bench-tiny'] }); // installs the set
    const plain: number[] = [];
    const cached: number[] = [];
    for (let i = 0; i < counts.numpy; i++) {
      plain.push(await timeExecute(server, { code: 'print(1)' }));
      cached.push(await timeExecute(server, { code, dependencies: ['rpc-bench-tiny'] }));
    }
    const without = summarize(plain);
    rows.push(latencyRow('/execute print(1), no dependencies, pool on, back to back', without, baseline));
    rows.push(comparedRow('/execute with declared dependencies already installed (cached: true; a cold container)', summarize(cached), baseline, without, 'the row without'));
  } finally {
    await stopServer(server);
    rmSync(wheelhouse, { recursive: true, force: true });
  }
}

/**
 * What a container's memory cgroup says it holds, as [usage, anon] in MiB, read on this host:
 * cgroup v2 (memory.current, memory.stat anon) or v1 (memory.usage_in_bytes, memory.stat rss).
 */
async function containerMemoryMb(id: string): Promise<[number, number]> {
  const { stdout } = await run('docker', ['inspect', '-f', '{{.State.Pid}}', id]);
  const cgroups = readFileSync(`/proc/${stdout.trim()}/cgroup`, 'utf8').split('\n');
  const v1 = cgroups.map((l) => /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(.*)$/.exec(l)?.[1]).find((p) => p !== undefined);
  const v2 = cgroups.map((l) => /^0::(.*)$/.exec(l)?.[1]).find((p) => p !== undefined);
  const dir = v1 !== undefined ? `/sys/fs/cgroup/memory${v1}` : `/sys/fs/cgroup${v2}`;
  const stat = Object.fromEntries(readFileSync(`${dir}/memory.stat`, 'utf8').trim().split('\n').map((l) => l.split(' ')));
  const usage = Number(readFileSync(`${dir}/${v1 !== undefined ? 'memory.usage_in_bytes' : 'memory.current'}`, 'utf8'));
  const anon = Number(v1 !== undefined ? stat.rss : stat.anon);
  return [usage / 2 ** 20, anon / 2 ** 20];
}

async function warmMemory(server: Server): Promise<string> {
  const { stdout } = await run('docker', ['ps', '-q', '--no-trunc', '--filter', `label=run-python-code.instance=${server.instance}`]);
  const ids = stdout.trim().split('\n').filter(Boolean);
  try {
    const each = await Promise.all(ids.map(containerMemoryMb));
    const mean = (i: 0 | 1) => each.reduce((n, m) => n + m[i], 0) / each.length;
    return `${mean(0).toFixed(0)} MiB (anon ${mean(1).toFixed(0)} MiB), mean of ${each.length}`;
  } catch (err) {
    return `n/a (${(err as Error).message.split('\n')[0]}: the cgroup is not readable from here)`;
  }
}

async function executeDataScience(server: Server): Promise<number> {
  const start = performance.now();
  const res = await fetch(`${server.url}/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: DATA_SCIENCE }) });
  const answer = (await res.json()) as { result?: string; outputs?: { source: string }[]; error?: string };
  if (answer.result !== '1' || answer.outputs?.length !== 1) throw new Error(`the data science run answered ${JSON.stringify(answer).slice(0, 300)}`);
  return performance.now() - start;
}

/**
 * The issue's target: an execution that imports pandas and matplotlib and saves one figure, pool
 * on, against `docker run` of the same code; with preloading off (as before) and on. The three are
 * interleaved, one of each in turn, so that a shared machine's load weighs on them alike; each
 * server's request waits until its pool is full again (a warm container waiting). Then each
 * server back to back (when the pool cannot keep up), and the memory a warm container holds.
 */
async function measureDataScience(rows: Row[]): Promise<void> {
  const variants = [['preload off (as before)', ''], ['preload on', config.preloadModules.join(',')]] as const;
  const servers: Server[] = [];
  let failure: unknown = null;
  try {
    for (const [, preload] of variants) servers.push(await startServer(config.poolSize, undefined, { PRELOAD_MODULES: preload }));
    await timeDockerRun(MPL_CACHE + DATA_SCIENCE);
    const memory = await Promise.all(servers.map(async (server) => (await poolFull(server), warmMemory(server))));
    const times: number[][] = [[], [], []];
    for (let i = 0; i < counts.dataScience; i++) {
      times[0]!.push(await timeDockerRun(MPL_CACHE + DATA_SCIENCE));
      for (const [at, server] of servers.entries()) {
        await poolFull(server);
        times[at + 1]!.push(await executeDataScience(server));
      }
    }
    const base = summarize(times[0]!);
    rows.push(latencyRow('baseline: docker run --rm, the same caps: pandas + matplotlib, one figure saved', base, base));
    for (const [at, [label]] of variants.entries()) {
      rows.push(latencyRow(`/execute pandas + matplotlib + one figure, pool on, ${label}, a warm container waiting`, summarize(times[at + 1]!), base));
    }
    for (const [at, [label]] of variants.entries()) {
      await poolFull(servers[at]!);
      const burst = await load(servers[at]!, '/execute', { connections: 1, amount: counts.dataScience, bodies: [JSON.stringify({ code: DATA_SCIENCE })] });
      if (burst.failed > 0) throw new Error(`${burst.failed} failed data science requests`);
      rows.push(latencyRow(`/execute pandas + matplotlib + one figure, pool on, ${label}, back to back`, burst, base));
    }
    for (const [at, [label]] of variants.entries()) {
      rows.push({ what: `memory of a warm container (its cgroup), ${label}`, value: memory[at]!, ratio: '' });
    }
  } catch (err) {
    failure = err;
  }
  const left = await Promise.all(servers.map(stopServer));
  if (failure) throw failure;
  if (left.some((n) => n > 0)) throw new Error(`${left.join(' + ')} containers left after stopping the data science servers`);
}

// ---------- the table ----------
interface Row { what: string; value: string; ratio: string }
const ms = (v: number) => `${v.toFixed(0)}`;
const ratios = (s: Sample, base: Sample) => `${(s.p50 / base.p50).toFixed(2)}x / ${(s.p95 / base.p95).toFixed(2)}x / ${(s.p99 / base.p99).toFixed(2)}x`;
const latencyRow = (what: string, s: Sample, base: Sample): Row => ({
  what,
  value: `p50 ${ms(s.p50)} / p95 ${ms(s.p95)} / p99 ${ms(s.p99)} ms`,
  ratio: ratios(s, base),
});
/** A latency row with a second ratio: to another row of the same run (`other`, named `which`). */
const comparedRow = (what: string, s: Sample, base: Sample, other: Sample, which: string): Row => ({
  ...latencyRow(what, s, base),
  ratio: `${ratios(s, base)}; ${ratios(s, other)} of ${which}`,
});
const throughputRow = (what: string, s: Sample, base: Sample): Row => ({
  what,
  value: `${s.throughput!.toFixed(1)} req/s, p95 ${ms(s.p95)} ms`,
  ratio: `${(s.throughput! / base.throughput!).toFixed(2)}x throughput / ${(s.p95 / base.p95).toFixed(2)}x p95`,
});
/** `ratio`: the last column's head; the gVisor and egress rows name the row each ratio is to. */
const table = (rows: Row[], ratio = 'ratio to baseline') =>
  [`| what | measured | ${ratio} |`, '|---|---|---|', ...rows.map((r) => `| ${r.what} | ${r.value} | ${r.ratio} |`)].join('\n');

/** The print(1) baseline: `docker run --rm` sequential, and at parallelism 8. */
async function print1Baseline(rows: Row[]): Promise<[Sample, Sample]> {
  await timeDockerRun(); // warm the image's page cache
  const seq: number[] = [];
  for (let i = 0; i < counts.sequential; i++) seq.push(await timeDockerRun());
  const baseline = summarize(seq);
  const parallel8 = await baselineParallel(8, counts.parallelRuns);
  rows.push(
    latencyRow("baseline: docker run --rm <image> python3 -c 'print(1)', sequential", baseline, baseline),
    throughputRow('baseline: docker run --rm, parallelism 8', parallel8, parallel8),
  );
  return [baseline, parallel8];
}

async function benchmark(): Promise<void> {
  const started = new Date();
  const rows: Row[] = [];
  // `--data-science`: only the rows of the pandas + matplotlib path, for tuning preloading;
  // `--workspaces`: only the print(1) baseline and the workspace rows.
  const baselines = mode === 'data-science' || mode === 'gvisor' || mode === 'egress' ? null : await print1Baseline(rows);
  if (mode === 'gvisor') await measureGvisor(rows);
  if (mode === 'egress') await measureEgress(rows);
  if (baselines && (mode === 'contexts' || mode === 'full' || mode === 'quick')) await measureContexts(rows, baselines[0]);
  if (mode === 'contexts') {
    console.log(`\n${table(rows)}\n`);
    return;
  }
  if (baselines && mode !== 'workspaces') {
    await measureServer(0, rows, ...baselines);
    await measureServer(config.poolSize, rows, ...baselines);
  }
  if (mode === 'data-science' || mode === 'full' || mode === 'quick') await measureDataScience(rows);
  if (baselines && mode !== 'workspaces') {
    // What docker-compose's proxy costs: the pool-off rows again, with every Docker call through it.
    const proxy = await startProxy();
    try {
      await measureServer(0, rows, ...baselines, proxy.url.replace('http:', 'tcp:'));
    } finally {
      proxy.child.kill('SIGTERM');
    }
  }
  if (baselines) await measureWorkspaces(rows, baselines[0]);
  if (baselines && mode !== 'workspaces') {
    // Only where runsc is registered (host-setup.sh does it when a setting or --test asks); --gvisor insists.
    const { stdout: runtimes } = await run('docker', ['info', '--format', '{{json .Runtimes}}']);
    if (runtimes.includes('"runsc"')) await measureGvisor(rows);
    else console.log('gVisor rows skipped: runsc is not registered with the engine (bash sandbox-image/host-setup.sh --test registers it)');
    await measureEgress(rows);
  }
  const { stdout: dockerVersion } = await run('docker', ['version', '--format', '{{.Server.Version}}']);
  const machine = `${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Docker ${dockerVersion.trim()}, Node ${process.version}, ${os.release()}`;
  const text = table(rows, mode === 'gvisor' || mode === 'egress' ? 'ratio' : undefined);
  console.log(`\n${machine}\n\n${text}\n`);
  if (mode === 'full') {
    mkdirSync(path.join(projectRoot, 'docs'), { recursive: true });
    writeFileSync(
      path.join(projectRoot, 'docs', 'benchmarks.md'),
      [
        '# Benchmarks',
        '',
        `Produced by \`npm run bench\` on ${started.toISOString().slice(0, 10)}: ${machine}.`,
        '',
        'Every figure is measured in the same run and shown as a ratio to the baseline, `docker run --rm`',
        'of the sandbox image with the same caps running `print(1)`: latencies against its sequential',
        'p50/p95/p99, throughput against its throughput at parallelism 8. Sequential rows use',
        `${counts.sequential} requests; each concurrency row ${counts.perConnection} requests per connection.`,
        'The data science rows (pandas and matplotlib imported, one figure saved) have a baseline of',
        `their own, \`docker run\` of that code, and ${counts.dataScience} requests each: "a warm container`,
        'waiting" waits before each request until the pool is full again; "back to back" does not.',
        '',
        text,
        '',
      ].join('\n'),
    );
    console.log('written to docs/benchmarks.md');
  }
}

async function soak(): Promise<void> {
  const server = await startServer(config.poolSize);
  const bodies = [
    ...Array.from({ length: 16 }, (_, i) => JSON.stringify({ code: `print(${i} * 7)` })),
    ...Array.from({ length: 3 }, () => JSON.stringify({ code: 'raise ValueError("soak")' })),
    JSON.stringify({ code: 'while True: pass', timeout: 1 }),
  ];
  let left = -1;
  try {
    const result = await load(server, '/execute', { connections: 16, amount: 2000, bodies });
    const quarter = Math.max(1, Math.floor(result.rssSeries.length / 4));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(result.rssSeries.slice(0, quarter));
    const last = mean(result.rssSeries.slice(-quarter));
    const growth = (last - first) / first;
    console.log(`soak: 2000 requests at concurrency 16 in ${(2000 / result.throughput!).toFixed(0)} s: ${result.failed} failed, p95 ${ms(result.p95)} ms, RSS ${first.toFixed(0)} -> ${last.toFixed(0)} MB (${(growth * 100).toFixed(1)} %)`);
    left = await stopServer(server);
    console.log(`containers left: ${left}`);
    if (result.failed > 0 || left > 0 || growth >= 0.2) process.exitCode = 1;
  } finally {
    if (left < 0) await stopServer(server);
  }
}

(mode === 'soak' ? soak() : benchmark()).catch((err) => {
  console.error(err);
  process.exit(1);
});
