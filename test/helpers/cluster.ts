import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from '../../server/project.js';
import { freePort } from './free-port.js';
import { spawnNode, type NodeProcess } from './process.js';
import { until } from './until.js';

const run = promisify(execFile);
const PG_BIN = '/usr/lib/postgresql/15/bin';

/** A process of ours that ends with the test (redis-server, postgres). */
export interface Daemon {
  url: string;
  stop(): Promise<void>;
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/** Debian's redis-server on a loopback port, keeping nothing on disk (a restart starts empty, as after a crash). */
export async function startRedis(port?: number): Promise<Daemon> {
  port ??= await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  await until(async () => (await run('redis-cli', ['-p', String(port), 'ping']).catch(() => ({ stdout: '' }))).stdout.trim() === 'PONG', 'redis-server to answer');
  return { url, stop: () => stopChild(child) };
}

/** Debian's PostgreSQL 15 in a fresh cluster of its own, on a loopback port, as the postgres user (it refuses root). */
export async function startPostgres(): Promise<Daemon> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-pg-'));
  chmodSync(dir, 0o777);
  const data = path.join(dir, 'data');
  const port = await freePort();
  const asPostgres = (bin: string, args: string[]) => ['-u', 'postgres', '--', path.join(PG_BIN, bin), ...args];
  await run('runuser', asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']));
  const child = spawn('runuser', asPostgres('postgres', ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off']), { stdio: 'ignore' });
  await until(async () => (await run(path.join(PG_BIN, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port)]).then(() => true, () => false)), 'postgres to answer');
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      // runuser passes no signal on: pg_ctl stops the server (fast: sessions are cut).
      await run('runuser', asPostgres('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop'])).catch(() => undefined);
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A second Docker engine (test/helpers/second-engine.sh) with the sandbox image loaded. */
export async function startSecondEngine(image: string): Promise<{ host: string; stop(): Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-e2-'));
  const script = path.join(projectRoot, 'test/helpers/second-engine.sh');
  const stop = async () => void (await run('bash', [script, 'stop', dir]));
  try {
    await run('bash', [script, 'start', dir, image], { maxBuffer: 1 << 24 });
  } catch (err) {
    await stop();
    throw err;
  }
  return { host: `unix://${dir}/docker.sock`, stop };
}

export interface ClusterNode extends NodeProcess {
  url: string;
  env: Record<string, string>;
}

/** An API node (`node dist/server/index.js` with REDIS_URL and DATABASE_URL). */
export async function startApiNode(env: Record<string, string>): Promise<ClusterNode> {
  const port = await freePort();
  const all = { PORT: String(port), HOST: '127.0.0.1', ...env };
  const node = await spawnNode('dist/server/index.js', all, /"message":"listening"|failed to start|bad setting/);
  return { ...node, url: `http://127.0.0.1:${port}`, env: all };
}

/** A worker node (`node dist/server/distributed/worker-main.js`). */
export async function startWorker(env: Record<string, string>): Promise<ClusterNode> {
  const port = await freePort();
  const all = { PORT: String(port), HOST: '127.0.0.1', ...env };
  const node = await spawnNode('dist/server/distributed/worker-main.js', all, /"message":"worker ready"|failed to start|bad setting/, 60_000);
  return { ...node, url: `http://127.0.0.1:${port}`, env: all };
}
