import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { projectRoot } from '../../server/project.js';
import { freePort } from './free-port.js';

export interface NodeProcess {
  child: ChildProcess;
  /** Everything the process logged so far (JSON lines). */
  logs(): string;
  /** Resolves when a log line matches. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<number | null>;
}

export interface ServerProcess extends NodeProcess {
  url: string;
}

/** One of our programs (a path under the project root) run with `env`, once a log line matches `ready`. */
export async function spawnNode(script: string, env: Record<string, string>, ready: RegExp, readyTimeoutMs = 15000): Promise<NodeProcess> {
  const child = spawn(process.execPath, [path.join(projectRoot, script)], {
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const waitForLog = async (pattern: RegExp, timeoutMs = 15000) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const line = output.split('\n').find((l) => pattern.test(l));
      if (line) return line;
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no log line matching ${pattern}; output:\n${output.slice(-3000)}`);
  };
  const started: NodeProcess = {
    child,
    logs: () => output,
    waitForLog,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
  try {
    await waitForLog(ready, readyTimeoutMs);
  } catch (err) {
    child.kill('SIGKILL'); // never ready: not left running
    throw err;
  }
  return started;
}

/** The real server (`node dist/server/index.js`) on a free loopback port, for signals and files. */
export async function spawnServer(env: Record<string, string>): Promise<ServerProcess> {
  const port = await freePort();
  const started = await spawnNode('dist/server/index.js', { PORT: String(port), HOST: '127.0.0.1', ...env }, /"message":"listening"|failed to start|bad setting/);
  return { ...started, url: `http://127.0.0.1:${port}` };
}

/** Exit code and output of a server that is expected not to start. */
export async function failedStart(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [path.join(projectRoot, 'dist/server/index.js')], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  return { code, output };
}

/** Resident memory of a process now and at its peak (VmRSS, VmHWM), in bytes; Linux /proc. */
export async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}
