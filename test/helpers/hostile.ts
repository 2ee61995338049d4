import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Runtime } from '../../server/sandbox/oci-runtime.js';
import { startServer, type TestServer } from './server.js';

/**
 * The hostile corpus, run once per runtime (hostile.test.ts: runc; hostile-gvisor.test.ts: runsc,
 * as a tenant's runtime limit). Where the two kernels answer differently the case says so.
 */
export function hostileCorpus(runtime: Runtime): void {
  const gvisor = runtime === 'runsc';
  const RUNTIME_ENV: Record<string, string> = { SANDBOX_RUNTIMES: 'runc,runsc', SANDBOX_RUNTIME: runtime };
  const startServer_ = (env: Record<string, string> = {}) => startServer({ ...RUNTIME_ENV, ...env });
  const assertRunnerEnded = (body: Record<string, unknown>) => {
    assert.equal(body.success, false);
    assert.equal(body.result, null);
    assert.match(String(body.error), /./);
  };

  /**
   * The hostile corpus. Each case runs on a server of its own and must end with the answer it
   * expects, the server still healthy, and no container of that server left behind.
   */
  async function hostile(
    code: string,
    check: (body: Record<string, unknown>, server: TestServer, elapsedMs: number) => void | Promise<void>,
    options: { timeout?: number; env?: Record<string, string> } = {},
  ): Promise<void> {
    const server = await startServer_(options.env);
    try {
      const started = Date.now();
      const { status, body } = await server.post('/execute', { code, timeout: options.timeout ?? 20 });
      assert.equal(status, 200, JSON.stringify(body));
      await check(body, server, Date.now() - started);
      const health = await server.get('/health');
      assert.equal(health.status, 200);
      assert.equal(health.body.status, 'healthy');
    } finally {
      await server.close();
    }
    assert.deepEqual(await server.settle(), [], 'containers left behind');
  }

  describe(`hostile code (${runtime})`, () => {
    it('while True: pass with timeout 2 answers within 2 s + 3 s', () =>
      hostile('while True: pass', (body, _s, elapsed) => {
        assert.equal(body.success, false);
        assert.equal(body.timed_out, true);
        assert.match(String(body.error), /timed out after 2 s/);
        assert.ok(elapsed < 5000, `answered after ${elapsed} ms`);
      }, { timeout: 2 }));

    it('a memory bomb is OOM-killed', () =>
      hostile('x = []\nwhile True:\n    x.append(b"a" * 2**24)', (body) => {
        assert.equal(body.success, false);
        assert.equal(body.oom_killed, true);
        assert.match(String(body.error), /OOM-killed/);
      }, { env: { SANDBOX_MEMORY_MB: '128' } }));

    it('a fork bomb hits the pids cap', () =>
      hostile('import os\nwhile True:\n    os.fork()', (body) => {
        assert.equal(body.success, false);
        assert.equal(body.timed_out, false, 'a cap must stop it, not the deadline');
        // Under gVisor each process costs the Sentry more memory than under runc: the memory cap
        // can come before RLIMIT_NPROC (the pids cap there); either is a cap that held.
        const stopped = gvisor ? /^BlockingIOError: \[Errno 11\]|OOM-killed/ : /^BlockingIOError: \[Errno 11\] Resource temporarily unavailable/;
        assert.match(String(body.error), stopped);
      }, { timeout: 10 }));

    it("print('x' * 10**9) fails clearly (memory or output cap)", () =>
      hostile("print('x' * 10**9)", (body) => {
        assert.equal(body.success, false);
        assert.ok(body.oom_killed === true || body.truncated === true, JSON.stringify(body).slice(0, 300));
        assert.match(String(body.error), /OOM-killed|Output limit exceeded/);
        assert.ok(Buffer.byteLength(String(body.stdout)) <= 1024 * 1024);
      }));

    it('a flood of output is cut at the cap and stopped', () =>
      hostile('import sys\nwhile True:\n    sys.stdout.write("x" * 65536)', (body) => {
        assert.equal(body.success, false);
        assert.equal(body.truncated, true);
        assert.equal(Buffer.byteLength(String(body.stdout)), 1024 * 1024);
      }));

    it('a file far larger than the workspace cap fails with ENOSPC', () =>
      hostile(
        'with open("big.bin", "wb") as f:\n    for _ in range(64):\n        f.write(b"0" * 2**20)',
        (body) => {
          assert.equal(body.success, false);
          assert.match(String(body.error), /OSError: \[Errno 28\] No space left on device/);
        },
        { env: { SANDBOX_WORKSPACE_MB: '8' } },
      ));

    it('no network: only loopback, and the server port is unreachable', async () => {
      const server = await startServer_();
      try {
        const port = new URL(server.url).port;
        const code = [
          'import socket',
          'names = sorted(n for _, n in socket.if_nameindex())',
          's = socket.socket()',
          's.settimeout(2)',
          'try:',
          `    s.connect(("127.0.0.1", ${port}))`,
          '    outcome = "connected"',
          'except OSError as e:',
          '    outcome = type(e).__name__',
          'print(names, outcome)',
        ].join('\n');
        const { body } = await server.post('/execute', { code });
        assert.equal(body.result, "['lo'] ConnectionRefusedError");
      } finally {
        await server.close();
      }
      assert.deepEqual(await server.settle(), []);
    });

    it(gvisor ? "gVisor's kernel takes io_uring and new namespaces (none reach the host's); threads and processes work" : 'the seccomp profile refuses io_uring and new namespaces with EPERM; threads and processes still work', () =>
      hostile(
        [
          'import ctypes, multiprocessing, threading',
          'libc = ctypes.CDLL(None, use_errno=True)',
          'def errno_of(r): return ctypes.get_errno() if r == -1 else 0',
          'uring = errno_of(libc.syscall(425, 1, 0))  # io_uring_setup',
          'userns = errno_of(libc.unshare(0x10000000))  # CLONE_NEWUSER, which needs no capability',
          't = threading.Thread(target=lambda: None); t.start(); t.join()',
          'with multiprocessing.Pool(2) as pool: squares = pool.map(abs, [-1, -2])',
          'print(uring, userns, squares)',
        ].join('\n'),
        (body) => {
          assert.equal(body.success, true, String(body.error));
          // runc: EPERM twice (Docker's default profile lets io_uring_setup reach the kernel: EFAULT).
          // gVisor: no profile of ours; both calls reach the Sentry, gVisor's kernel, not the host's
          // (io_uring_setup fails on the bad pointer, a user namespace exists inside gVisor only).
          assert.equal(body.result, gvisor ? '14 0 [1, 2]' : '1 1 [1, 2]');
        },
      ));

    it("a report forged on the runner's pipe cannot undo the exit status", () =>
      hostile('import os\nos.write(3, b\'{"status": "ok", "result": "forged"}\')\nos._exit(3)', (body) => {
        assert.equal(body.success, false);
        assert.equal(body.exit_code, 3);
        assert.equal(body.result, null);
        assert.equal(body.error, 'The code exited with status 3');
      }));

    it('sys.exit(3) is a failure with exit code 3', () =>
      hostile('import sys\nprint("bye")\nsys.exit(3)', (body) => {
        assert.equal(body.success, false);
        assert.equal(body.exit_code, 3);
        assert.equal(body.stdout, 'bye\n');
        assert.match(String(body.error), /exited with status 3/);
      }));

    it('os._exit(0) before the requested variable is read is a clear failure', async () => {
      const server = await startServer_();
      try {
        const { body } = await server.post('/execute', { code: 'import os\nx = 1\nos._exit(0)', variable_to_return: 'x' });
        assert.equal(body.success, false);
        assert.equal(body.error, "The code exited before variable 'x' could be read");
      } finally {
        await server.close();
      }
    });

    it('os._exit(3) is a failure with exit code 3', () =>
      hostile('import os\nos._exit(3)', (body) => {
        assert.equal(body.success, false);
        assert.equal(body.exit_code, 3);
        assert.match(String(body.error), /exited with status 3/);
      }));

    // gVisor (Debian's 2022 runsc) neither spares a namespace's init the signals it has no handler
    // for nor hides a non-dumpable process's /proc/<pid>/fd: the code can end or write past its
    // runner, which fails or forges only its own execution's answer (the server checks everything
    // that comes out, as always). Pinned here, so that a runsc that closes the gap is noticed.
    it(gvisor ? 'os.kill(1, 9) ends the runner under gVisor: a clear failure, nothing left' : 'os.kill(1, 9) cannot kill the runner (PID 1 of the container)', () =>
      hostile('import os\nos.kill(1, 9)\nprint("still here")', (body) => {
        if (gvisor) return assertRunnerEnded(body);
        assert.equal(body.success, true, String(body.error));
        assert.equal(body.result, 'still here');
      }));

    it(gvisor ? 'SIGINT to PID 1 ends the runner under gVisor: a clear failure, nothing left' : 'SIGINT to PID 1 is dropped (the runner installs no handler for it)', () =>
      hostile('import os, signal\nos.kill(1, signal.SIGINT)\nimport time\ntime.sleep(0.2)\nprint("still here")', (body) => {
        if (gvisor) return assertRunnerEnded(body);
        assert.equal(body.success, true, String(body.error));
        assert.equal(body.result, 'still here');
      }));

    it('garbage on its own report pipe does not crash the runner', () =>
      hostile('import os\nos.write(3, b"[" * 100000)\nprint("ok")', (body) => {
        assert.equal(body.result, 'ok');
        assert.equal(body.exit_code, 0);
      }));

    it('a long non-ASCII value comes back whole', async () => {
      const server = await startServer_();
      try {
        const { body } = await server.post('/execute', { code: 'x = "é" * 400000', variable_to_return: 'x' });
        assert.equal(body.success, true, String(body.error));
        assert.equal(String(body.result).length, 400000);
      } finally {
        await server.close();
      }
    });

    it(gvisor ? "under gVisor user code can open the runner's /proc/1/fd (a known gap, see above)" : 'user code cannot reach the runner through /proc/1', () =>
      hostile(
        'try:\n    open("/proc/1/fd/1", "wb")\n    print("opened")\nexcept OSError as e:\n    print(type(e).__name__)',
        (body) => {
          assert.equal(body.result, gvisor ? 'opened' : 'PermissionError');
        },
      ));

    it('a background process does not keep the execution (or the container) alive', () =>
      hostile(
        'import subprocess\np = subprocess.Popen(["sleep", "1000"])\nprint("started", p.pid > 0)',
        (body, _s, elapsed) => {
          assert.equal(body.success, true, String(body.error));
          assert.equal(body.result, 'started True');
          assert.ok(elapsed < 10000, `took ${elapsed} ms`);
        },
      ));

    // Having reported, the user's process stops itself and, alone, is left stopped while the
    // workspace is read and the container waits for its removal. Here a POSIX timer continues it
    // every 0.2 ms, its os._exit no longer exits, and a thread rewrites a file all along: the
    // runner must notice, kill it, read the workspace anew, and answer as usual.
    it('a process continued by a POSIX timer after its report is killed, and the answer stands', () =>
      hostile(
        [
          'import ctypes, os, signal, threading, time',
          'class sigevent(ctypes.Structure):',
          '    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int), ("pad", ctypes.c_byte * 48)]',
          'class timespec(ctypes.Structure):',
          '    _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]',
          'class itimerspec(ctypes.Structure):',
          '    _fields_ = [("interval", timespec), ("value", timespec)]',
          'libc = ctypes.CDLL(None, use_errno=True)',
          'timer = ctypes.c_void_p()',
          'assert libc.timer_create(1, ctypes.byref(sigevent(None, signal.SIGCONT, 0)), ctypes.byref(timer)) == 0, ctypes.get_errno()',
          'tick = timespec(0, 200000)',
          'assert libc.timer_settime(timer, 0, ctypes.byref(itimerspec(tick, tick)), None) == 0, ctypes.get_errno()',
          'def scribble():',
          '    n = 0',
          '    while True:',
          '        n += 1',
          '        with open("scribble.txt", "w") as f:',
          '            f.write(str(n))',
          'threading.Thread(target=scribble, daemon=True).start()',
          'time.sleep(0.05)',
          'os._exit = lambda code: time.sleep(3600)',
          'print("armed")',
        ].join('\n'),
        (body, _s, elapsed) => {
          assert.equal(body.success, true, String(body.error));
          assert.equal(body.result, 'armed');
          assert.ok(elapsed < 10000, `took ${elapsed} ms`);
        },
      ));

    // A write lease is broken by another process's open: the walk's open of the file fails at once
    // (it never waits the 45 s the kernel gives the holder) and the holder gets the lease's signal.
    // With SIGCONT that continues it mid-walk; with the default signal it stays stopped, the file
    // unreadable. Either way the runner kills it and reads the workspace anew: the file is kept.
    // gVisor's kernel has no leases (EINVAL): there the file is simply kept.
    for (const signal of ['SIGCONT', 'the default signal']) {
      it(`a file its stopped process holds a lease on (breaking with ${signal}) is kept, never waited for`, () =>
        hostile(
          [
            'import fcntl, os, signal',
            'with open("held.txt", "w") as f:',
            '    f.write("kept")',
            'fd = os.open("held.txt", os.O_WRONLY)',
            signal === 'SIGCONT' ? 'fcntl.fcntl(fd, 10, signal.SIGCONT)  # F_SETSIG' : 'signal.signal(signal.SIGIO, signal.SIG_IGN)',
            'try:',
            '    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)',
            '    print("leased")',
            'except OSError as e:',
            '    print("no lease:", e.strerror)',
          ].join('\n'),
          async (body, server, elapsed) => {
            assert.equal(body.success, true, String(body.error));
            assert.equal(body.result, gvisor ? 'no lease: Invalid argument' : 'leased');
            assert.deepEqual(body.warnings ?? [], []);
            assert.equal((await server.get('/files/held.txt')).text, 'kept');
            assert.ok(elapsed < 10000, `took ${elapsed} ms`);
          },
        ));
    }

    it('forged runner output cannot change result, success or error', () =>
      hostile(
        [
          'import json, struct, sys',
          'fake = json.dumps({"protocol": 3, "exit_code": 0, "timed_out": False, "truncated": False,',
          '    "oom_killed": False, "status": "ok", "error": None, "traceback": None, "result": "forged",',
          '    "result_truncated": False, "deleted": [], "run_ms": 1}).encode()',
          'sys.stdout.buffer.write(b"r" + struct.pack(">I", len(fake)) + fake)',
          'sys.stdout.flush()',
          'print(\'{"success": true, "result": "forged", "error": null}\')',
          'raise RuntimeError("the real error")',
        ].join('\n'),
        (body) => {
          assert.equal(body.success, false);
          assert.equal(body.result, null);
          assert.equal(body.error, 'RuntimeError: the real error (line 8)');
          assert.match(String(body.stdout), /"result": "forged"/);
        },
      ));
  });

  describe(`isolation between concurrent executions (${runtime})`, () => {
    it('20 concurrent executions each get only their own output', async () => {
      const server = await startServer_();
      try {
        const tokens = Array.from({ length: 20 }, (_, i) => `token-${i}-${Math.random().toString(36).slice(2)}`);
        const answers = await Promise.all(
          tokens.map((token) =>
            server.post('/execute', { code: `for _ in range(2000):\n    print(${JSON.stringify(token)})` }),
          ),
        );
        answers.forEach(({ body }, i) => {
          assert.equal(body.success, true, String(body.error));
          const lines = String(body.result).split('\n');
          assert.equal(lines.length, 2000);
          assert.ok(lines.every((line) => line === tokens[i]), `answer ${i} holds another token`);
        });
        assert.equal(new Set(answers.map((a) => a.body.execution_id)).size, 20);
      } finally {
        await server.close();
      }
      assert.deepEqual(await server.settle(), []);
    });
  });
}
