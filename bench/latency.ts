/**
 * Sequential latency of `/execute` with `print(1)`, end to end over HTTP against the real server
 * process, next to the baseline: `docker run --rm` of the sandbox image with the same caps running
 * `python3 -c 'print(1)'`. The two alternate request by request, so machine noise hits both alike;
 * the figure that matters is the ratio. Usage: npm run bench [-- --runs 40]
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { loadConfig } from '../server/config.js';

const run = promisify(execFile);
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1] ?? 0) || 40;
const config = loadConfig({ ...process.env, BASE_DIR: '/tmp' });
const port = 18000 + Math.floor(Math.random() * 1000);

const dockerRun = [
  'run', '--rm', '-i', '--network', 'none', '--read-only', '--cap-drop', 'ALL',
  '--security-opt', 'no-new-privileges', '--user', '10001:10001',
  '--memory', `${config.memoryMb}m`, '--memory-swap', `${config.memoryMb}m`, '--cpus', String(config.cpus),
  '--pids-limit', String(config.pids), '--ulimit', `nofile=${config.nofile}:${config.nofile}`,
  '--tmpfs', `/workspace:rw,nosuid,nodev,size=${config.workspaceMb}m,uid=10001,gid=10001`,
  '--tmpfs', `/tmp:rw,nosuid,nodev,size=${config.tmpMb}m`, '--log-driver', 'none',
  '--entrypoint', 'python3', config.sandboxImage, '-c', 'print(1)',
];

async function timeDockerRun(): Promise<number> {
  const start = performance.now();
  const { stdout } = await run('docker', dockerRun);
  if (stdout.trim() !== '1') throw new Error(`docker run printed ${stdout}`);
  return performance.now() - start;
}

async function timeExecute(): Promise<number> {
  const start = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code: 'print(1)' }),
  });
  const body = (await res.json()) as { result?: string };
  if (body.result !== '1') throw new Error(`/execute answered ${JSON.stringify(body)}`);
  return performance.now() - start;
}

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
};

async function main(): Promise<void> {
  const server = spawn(process.execPath, ['dist/server/index.js'], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', INSTANCE_ID: `bench-${port}` },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false);
      if (ok) break;
      if (i > 100) throw new Error('server did not become healthy');
      await new Promise((r) => setTimeout(r, 100));
    }
    for (let i = 0; i < 3; i++) await Promise.all([timeDockerRun(), timeExecute()]); // warm-up
    const baseline: number[] = [];
    const execute: number[] = [];
    for (let i = 0; i < runs; i++) {
      baseline.push(await timeDockerRun());
      execute.push(await timeExecute());
    }
    const row = (name: string, v: number[]) => {
      const p50 = quantile(v, 0.5);
      const p95 = quantile(v, 0.95);
      return `| ${name} | ${p50.toFixed(0)} | ${p95.toFixed(0)} | ${(p50 / quantile(baseline, 0.5)).toFixed(2)}x | ${(p95 / quantile(baseline, 0.95)).toFixed(2)}x |`;
    };
    console.log(`runs: ${runs} each, interleaved; image ${config.sandboxImage}`);
    console.log('| what | p50 ms | p95 ms | p50 / baseline | p95 / baseline |');
    console.log('|---|---|---|---|---|');
    console.log(row("docker run --rm <image> python3 -c 'print(1)' (baseline)", baseline));
    console.log(row('POST /execute print(1), end to end', execute));
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
