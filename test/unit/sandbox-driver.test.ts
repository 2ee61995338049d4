import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import tar from 'tar-stream';
import type { ServiceError } from '../../server/errors.js';
import { toEnvelope } from '../../server/execution/envelope.js';
import { createLogger, type Logger } from '../../server/logger.js';
import { containerSpec } from '../../server/sandbox/container-spec.js';
import { DockerSandbox, type PoolOptions } from '../../server/sandbox/docker-sandbox.js';
import type { SandboxJob, SandboxLimits } from '../../server/sandbox/sandbox.js';
import { FakeRuntime, filesFrame, filesFrames, frame, reportFrames, type Script } from '../helpers/fake-runtime.js';
import { memorySource, MemorySink } from '../helpers/file-sets.js';
import { until } from '../helpers/until.js';

/**
 * The sandbox driver and one job's run (job-run.ts) on the recording fake: every lifecycle step,
 * without an engine. Each case plays a scripted container and asserts the outcome and the exact calls.
 */
const limits: SandboxLimits = {
  runtime: 'runc', timeoutS: 5, memoryMb: 64, cpus: 1, pids: 64, outputBytes: 1024, workspaceMb: 1, tmpMb: 1, nofile: 64, maxFiles: 10, maxOutputs: 16, outputsBytes: 1 << 20,
};
const OPTIONS = { image: 'sandbox:test', instanceId: 'unit', preload: [] as string[] };
const TIMINGS = { backstopGraceMs: 20, finalWaitMs: 50, removeBackoffMs: 1 };

function job(over: Partial<SandboxJob> = {}): SandboxJob {
  return {
    executionId: 'e1', mode: 'code', code: 'print("hi")', workspace: { files: [], dirs: [] }, packagesVolume: 'vol', limits, ...over,
  };
}

function driver(script: (name: string) => Script, pool: PoolOptions = { size: 0, maxProfiles: 0 }) {
  const engine = new FakeRuntime((spec) => script(spec.name ?? ''));
  const logger = createLogger('error');
  logger.silent = true;
  return { engine, logger, sandbox: new DockerSandbox(engine, OPTIONS, logger, pool, undefined, TIMINGS) };
}

/** The messages the driver logs as errors, from now on. */
function errorsOf(logger: Logger): string[] {
  const errors: string[] = [];
  logger.error = ((message: string) => (errors.push(message), logger)) as Logger['error'];
  return errors;
}

describe('sandbox driver on the recording fake', () => {
  it('a clean run: volume, create, attach, start, the job in, frames out until done, then removal', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: [frame('o', 'hi\n'), ...reportFrames()], then: 'hang' }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.stdout, 'hi\n');
    assert.equal(outcome.report?.status, 'ok');
    assert.deepEqual(outcome.changes, { files: [], dirs: [], deleted: [] });
    assert.deepEqual(engine.calls, [
      'volume vol', 'create run-python-code-e1', 'attach run-python-code-e1', 'start run-python-code-e1', 'remove run-python-code-e1',
      'list run-python-code.instance', // shutdown's last sweep: nothing of this instance may be left
    ]);
    assert.equal(toEnvelope('e1', outcome, limits).result, 'hi');
  });

  it('creates exactly the spec container-spec.ts makes: the caps, labels, user and network', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: reportFrames() }));
    await sandbox.run(job());
    await sandbox.shutdown(false);
    const created = [...engine.containers.values()][0]!.spec;
    assert.deepEqual(created, containerSpec({ ...OPTIONS, executionId: 'e1', limits, packagesVolume: 'vol' }));
    assert.equal(created.HostConfig?.NetworkMode, 'none');
    assert.equal(created.User, '10001:10001');
  });

  it('streams job.json first, with the protocol, the mode and the caps', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: reportFrames() }));
    await sandbox.run(job({ workspace: memorySource({ 'a.txt': 'A' }).source }));
    await sandbox.shutdown(false);
    const entries: { name: string; body: string }[] = [];
    const extract = tar.extract();
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c) => chunks.push(c as Buffer));
      stream.on('end', () => (entries.push({ name: header.name, body: Buffer.concat(chunks).toString() }), next()));
    });
    const done = new Promise<void>((resolve) => extract.on('finish', () => resolve()));
    extract.end([...engine.containers.values()][0]!.received);
    await done;
    assert.deepEqual(entries.map((e) => e.name), ['job.json', 'workspace/a.txt']);
    const sent = JSON.parse(entries[0]!.body) as Record<string, unknown>;
    assert.equal(sent.mode, 'code');
    assert.equal(sent.code, 'print("hi")');
    assert.equal(sent.timeout_s, 5);
    assert.equal(sent.output_limit, 1024);
  });

  it('the timeout backstop: a runner silent past its deadline is killed, and the run says timed out', async () => {
    const { engine, sandbox } = driver(() => ({ then: 'hang' }));
    const outcome = await sandbox.run(job({ limits: { ...limits, timeoutS: 0.01 } }));
    await sandbox.shutdown(false);
    assert.equal(outcome.timedOut, true);
    assert.equal(outcome.exitCode, null);
    assert.equal(outcome.report, null);
    assert.deepEqual(engine.callsOn('e1'), ['create', 'attach', 'start', 'kill', 'inspect', 'remove']);
    assert.match(toEnvelope('e1', outcome, limits).error ?? '', /timed out after 5 s/);
  });

  it('the backstop stops waiting even when the kill never ends the stream', async () => {
    const { engine, sandbox } = driver(() => ({ then: 'hang' }));
    engine.kill = async (id) => void engine.calls.push(`kill ${id} (ignored)`); // an engine that never answers the kill
    const outcome = await sandbox.run(job({ limits: { ...limits, timeoutS: 0.01 } }));
    assert.equal(outcome.timedOut, true);
    assert.ok(engine.calls.some((c) => c.endsWith('(ignored)')));
  });

  it('output past the cap: cut at the cap, the container killed, the run truncated', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: [frame('o', 'x'.repeat(2000))], then: 'hang' }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.truncated, true);
    assert.equal(outcome.stdout.length, 1024);
    assert.deepEqual(engine.callsOn('e1'), ['create', 'attach', 'start', 'kill', 'inspect', 'remove']);
    assert.match(toEnvelope('e1', outcome, limits).error ?? '', /^Output limit exceeded/);
  });

  it("the job's output sink hears each piece in order, characters whole across frames, within the caps", async () => {
    const euro = Buffer.from('€'); // three bytes, split between two frames
    const { sandbox } = driver(() => ({
      stdout: [
        frame('o', Buffer.concat([Buffer.from('a'), euro.subarray(0, 1)])),
        frame('e', 'oops\n'),
        frame('o', Buffer.concat([euro.subarray(1), Buffer.from('\n')])),
        frame('o', Buffer.concat([Buffer.from('x'.repeat(1018)), euro])), // the cap (1024) cuts the € in two
      ],
      then: 'hang',
    }));
    const heard: [string, string][] = [];
    const outcome = await sandbox.run(job({ onOutput: (stream, text) => heard.push([stream, text]) }));
    await sandbox.shutdown(false);
    assert.deepEqual(heard.slice(0, 3), [['stdout', 'a'], ['stderr', 'oops\n'], ['stdout', '€\n']]);
    assert.equal(heard.filter(([s]) => s === 'stdout').map(([, t]) => t).join(''), outcome.stdout); // the cut € included, as U+FFFD
    assert.ok(outcome.stdout.endsWith('x\uFFFD'));
    assert.equal(outcome.truncated, true);
  });

  it('an output sink that throws is logged, and the run goes on as if it had none', async () => {
    const { sandbox, logger } = driver(() => ({ stdout: [frame('o', 'hi\n'), ...reportFrames()], then: 'hang' }));
    const warned: string[] = [];
    logger.warn = ((message: string) => (warned.push(message), logger)) as Logger['warn'];
    const outcome = await sandbox.run(job({ onOutput: () => { throw new Error('sink broke'); } }));
    await sandbox.shutdown(false);
    assert.equal(outcome.violation, null);
    assert.equal(outcome.stdout, 'hi\n');
    assert.equal(outcome.report?.status, 'ok');
    assert.deepEqual(warned, ['output sink failed']);
  });

  it('a forged frame kind is a protocol violation: killed, output discarded', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: [frame('o', 'fine\n'), frame('X', 'forged')], then: 'hang' }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.violation, 'unknown frame kind 0x58');
    assert.equal(outcome.report, null);
    assert.equal(outcome.changes, null);
    assert.ok(engine.callsOn('e1').includes('kill'));
    assert.match(toEnvelope('e1', outcome, limits).error ?? '', /broke the runner protocol \(unknown frame kind 0x58\)/);
  });

  it('an oversize frame is a protocol violation, refused from its header alone', async () => {
    const header = Buffer.from([0x6f, 0, 1, 0x11, 0x70]); // 'o', 70000 bytes announced
    const { sandbox } = driver(() => ({ stdout: [header], then: 'hang' }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.violation, 'frame of 70000 bytes is over the 65536 limit');
  });

  it('done before exit: the answer comes from the report, without waiting for the container', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: [frame('o', '42\n'), ...reportFrames()], then: 'hang' }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.exitCode, 0);
    assert.equal(toEnvelope('e1', outcome, limits).result, '42');
    assert.deepEqual(engine.callsOn('e1'), ['create', 'attach', 'start', 'remove'], 'no inspect, no kill');
  });

  it('exit before done: without a report, the container is asked how it ended', async () => {
    const { engine, sandbox } = driver(() => ({ stderr: 'runner: bad job\n', then: { exit: 2 } }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.report, null);
    assert.equal(outcome.exitCode, 2);
    assert.deepEqual(engine.callsOn('e1'), ['create', 'attach', 'start', 'inspect', 'remove']);
    assert.equal(toEnvelope('e1', outcome, limits).error, 'The sandbox stopped without a result (exit code 2)');
  });

  it('an OOM kill of the whole container reads as OOM', async () => {
    const { sandbox } = driver(() => ({ stdout: [frame('o', 'allocating\n')], then: { exit: 137, oomKilled: true } }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.oomKilled, true);
    assert.equal(toEnvelope('e1', outcome, limits).error, 'Memory limit exceeded: the container was OOM-killed (limit 64 MiB)');
  });

  it('a crash mid-frame is a protocol violation', async () => {
    const { sandbox } = driver(() => ({ stdout: [frame('o', 'hello').subarray(0, 7)], then: { exit: 1 } }));
    const outcome = await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal(outcome.violation, 'stream ended inside a frame');
  });

  it('changed files come back through the tar filter', async () => {
    const files = await filesFrame({ 'out.txt': 'written', '../escape.txt': 'no' });
    const { sandbox } = driver(() => ({ stdout: [files, ...reportFrames({ deleted: ['old.txt'] })] }));
    const sink = new MemorySink();
    const outcome = await sandbox.run(job({ changes: sink }));
    await sandbox.shutdown(false);
    assert.deepEqual(outcome.changes?.files, ['out.txt']);
    assert.deepEqual([...sink.files], [['out.txt', 'written']]);
    assert.deepEqual(outcome.changes?.deleted, ['old.txt']);
  });

  it('while the sink is behind, the container\'s output is paused, and every byte still arrives', async () => {
    const files = await filesFrames({ 'big.bin': 'q'.repeat(600_000) });
    const { engine, sandbox } = driver(() => ({ stdout: [...files, ...reportFrames()] }));
    const sink = new MemorySink(1);
    const outcome = await sandbox.run(job({ changes: sink, limits: { ...limits, workspaceMb: 2 } }));
    await sandbox.shutdown(false);
    assert.equal(outcome.violation, null);
    assert.ok(engine.callsOn('e1').includes('pause'), `never paused: ${engine.callsOn('e1').join(', ')}`);
    assert.equal(sink.files.get('big.bin')?.length, 600_000);
  });

  it('a workspace file that cannot be read fails the run as a fault, and the container still goes', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: reportFrames(), then: 'hang' }));
    const workspace = { dirs: [], files: [{ path: 'x', open: () => Promise.reject(new Error('EIO: i/o error, read')) }] };
    await assert.rejects(sandbox.run(job({ workspace })), /EIO/);
    await sandbox.shutdown(false);
    assert.deepEqual(engine.callsOn('e1').slice(-2), ['kill', 'remove']);
  });

  it('a removal refused as "already in progress" is retried until it works', async () => {
    const { engine, sandbox, logger } = driver(() => ({ stdout: reportFrames(), removeFailures: 2 }));
    const errors = errorsOf(logger);
    await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.deepEqual(engine.callsOn('e1').filter((c) => c === 'remove'), ['remove', 'remove', 'remove']);
    assert.equal([...engine.containers.values()][0]!.removed, true);
    assert.deepEqual(errors, []);
  });

  it('a removal that never works is given up after its attempts, and logged', async () => {
    const { engine, sandbox, logger } = driver(() => ({ stdout: reportFrames(), removeFailures: 100 }));
    const errors = errorsOf(logger);
    await sandbox.run(job());
    await sandbox.shutdown(false);
    // Eight tries, then the one of shutdown's last sweep.
    assert.equal(engine.callsOn('e1').filter((c) => c === 'remove').length, 9);
    assert.deepEqual(errors, ['could not remove a sandbox container']);
  });

  it('shutdown with runs in flight kills them, and ends once they are removed', async () => {
    const { engine, sandbox } = driver(() => ({ then: 'hang' }));
    const running = sandbox.run(job({ limits: { ...limits, timeoutS: 60 } }));
    await until(() => engine.callsOn('e1').includes('start'), 'the run to start', 10_000, 2);
    await sandbox.shutdown(true);
    const outcome = await running;
    assert.equal(outcome.exitCode, 137);
    assert.equal(outcome.timedOut, false);
    assert.deepEqual(engine.callsOn('e1'), ['create', 'attach', 'start', 'kill', 'inspect', 'remove']);
    assert.equal([...engine.containers.values()][0]!.removed, true);
  });

  it('shutdown refuses new runs, and sweeps away what a run left that its removal did not', async () => {
    const { engine, sandbox } = driver(() => ({ stdout: reportFrames(), removeFailures: 8 }));
    await sandbox.run(job());
    await sandbox.shutdown(false);
    assert.equal([...engine.containers.values()][0]!.removed, true, 'the sweep removed it');
    await assert.rejects(sandbox.run(job({ executionId: 'late' })), /shutting down/);
    assert.deepEqual(engine.callsOn('late'), [], 'no container for a run after shutdown');
  });

  it('a container that dies while waiting in the pool is removed, replaced, and never handed out', async () => {
    let made = 0;
    const { engine, sandbox } = driver(
      (name) => (name.includes('pool-') && ++made === 1 ? { diesAfterMs: 5 } : { stdout: reportFrames() }),
      { size: 1, maxProfiles: 2, diedAtOnceMs: 0 },
    );
    sandbox.warm({ limits, packagesVolume: 'vol' });
    await until(() => made === 2 && sandbox.ready() === 1, 'the pool to replace its dead container', 10_000, 2);
    const first = [...engine.containers.values()][0]!;
    assert.equal(first.removed, true);
    const outcome = await sandbox.run(job());
    assert.deepEqual(outcome.phases.pool, 1, 'the run came from the pool');
    assert.equal(outcome.report?.status, 'ok');
    await sandbox.shutdown(false);
    assert.ok([...engine.containers.values()].every((c) => c.removed), 'nothing left behind');
  });

  it('reaps the containers of its own instance, and only those', async () => {
    const { engine, sandbox } = driver(() => ({ then: 'hang' }));
    await engine.create({ name: 'mine', Labels: { 'run-python-code.instance': 'unit' } });
    await engine.create({ name: 'theirs', Labels: { 'run-python-code.instance': 'other' } });
    assert.equal(await sandbox.reapStale(), 1);
    assert.deepEqual(engine.calls.filter((c) => c.startsWith('remove')), ['remove mine']);
  });

  it('labels the volumes it makes, and never mounts one that carries another\'s labels', async () => {
    const engine = new FakeRuntime(() => ({ stdout: reportFrames() }));
    const logger = createLogger('error');
    const owner = { 'run-python-code.deployment': 'mine' };
    const sandbox = new DockerSandbox(engine, { ...OPTIONS, volumeLabels: owner }, logger, undefined, undefined, TIMINGS);
    await sandbox.run(job({ packagesVolume: 'ours' }));
    assert.deepEqual(engine.volumes.get('ours'), { 'run-python-code': '1', ...owner });
    engine.volumes.set('theirs', { 'run-python-code': '1', 'run-python-code.deployment': 'another' });
    engine.volumes.set('unlabelled', {});
    for (const [volume, found] of [['theirs', 'another'], ['unlabelled', '(none)']]) {
      await assert.rejects(sandbox.run(job({ executionId: volume, packagesVolume: volume })), (err: ServiceError) =>
        err.status === 503 && err.message.includes(`Docker volume ${volume} is not this server's (label run-python-code`) &&
        err.message.includes(found!) && /another deployment on this engine made it, so it is not mounted/.test(err.message));
    }
    await sandbox.shutdown(false);
    assert.equal(engine.calls.filter((c) => c.startsWith('create')).length, 1, 'a container was made for a refused volume');
  });

  it('an engine failure on create is an EngineError that names the cause, and nothing is left', async () => {
    const { EngineError } = await import('../../server/sandbox/runtime.js');
    const { sandbox } = driver(() => ({ createError: new EngineError('no_image', 'Sandbox image sandbox:test is missing') }));
    await assert.rejects(sandbox.run(job()), (err: Error) => err instanceof EngineError && err.message === 'Sandbox image sandbox:test is missing');
  });
});

describe('outputs from the container, on the recording fake: decoded, checked and capped', () => {
  const png = Buffer.concat([Buffer.from('\x89PNG\r\n\x1a\n', 'latin1'), Buffer.alloc(16)]).toString('base64');
  const figure = { mime: 'image/png' as const, data: png, source: 'figure' as const };
  const play = async (report: Parameters<typeof reportFrames>[0], over: Partial<SandboxLimits> = {}) => {
    const { sandbox } = driver(() => ({ stdout: reportFrames(report), then: 'hang' }));
    const run = { ...limits, ...over };
    const outcome = await sandbox.run(job({ limits: run }));
    await sandbox.shutdown(false);
    return toEnvelope('e1', outcome, run);
  };

  it('a value and a figure reach the envelope as the runner sent them', async () => {
    const e = await play({ value: '5', outputs: [figure] });
    assert.deepEqual([e.success, e.value, e.outputs, e.outputs_truncated], [true, '5', [figure], false]);
  });

  it('the server cuts them to its own caps too, and says so', async () => {
    const e = await play({ outputs: [figure, figure, figure] }, { maxOutputs: 2 });
    assert.deepEqual([e.success, e.outputs.length, e.outputs_truncated], [true, 2, true]);
    const small = await play({ outputs: [figure, { mime: 'text/plain', data: 'x', source: 'display' }] }, { outputsBytes: png.length });
    assert.deepEqual([small.outputs, small.outputs_truncated], [[figure], true]);
  });

  const hostile: [string, Parameters<typeof reportFrames>[0], RegExp][] = [
    ['a forged mime', { outputs: [{ ...figure, mime: 'text/javascript' as never }] }, /^The sandbox broke the runner protocol \(report does not match the protocol: \/outputs\/0\/mime must be equal to one of the allowed values \(text\/plain, text\/html, text\/markdown, image\/png, image\/svg\+xml, application\/json\)\); its output was discarded$/],
    ['bad base64', { outputs: [{ ...figure, data: `${png}%` }] }, /^The sandbox broke the runner protocol \(output 0 \(image\/png\) is not base64\); its output was discarded$/],
    ['an output over the report cap', { outputs: [{ mime: 'text/plain', data: 'x'.repeat(56 * 1024), source: 'display' }] }, /^The sandbox broke the runner protocol \(report is over its size cap\)/],
  ];
  for (const [what, report, error] of hostile) {
    it(`${what}: refused with a clear error, nothing of the run kept`, async () => {
      const e = await play(report, { outputsBytes: 1024, maxOutputs: 4 });
      assert.equal(e.success, false);
      assert.match(e.error ?? '', error);
      assert.deepEqual([e.outputs, e.value, e.stdout], [[], null, '']);
    });
  }
});

describe('warm containers that preload, on the recording fake', () => {
  const PRELOAD = ['numpy', 'pandas', 'matplotlib.pyplot'];
  function preloading(script: (name: string) => Script, size = 1) {
    const engine = new FakeRuntime((spec) => script(spec.name ?? ''));
    const logger = createLogger('error');
    logger.silent = true;
    const sandbox = new DockerSandbox(engine, { ...OPTIONS, preload: PRELOAD }, logger, { size, maxProfiles: 4, retryAfterFailureMs: 10_000 }, undefined, { ...TIMINGS, readyTimeoutMs: 50 });
    return { engine, sandbox };
  }
  const specOf = (engine: FakeRuntime, part: string) => [...engine.containers.values()].find((c) => c.name.includes(part))!;

  it('a warm container is asked to preload, waits in the pool once its runner says ready, and runs its job', async () => {
    const { engine, sandbox } = preloading(() => ({ stdout: [frame('o', 'hi\n'), ...reportFrames()], then: 'hang' }));
    sandbox.warm({ limits, packagesVolume: 'vol' });
    await until(() => sandbox.ready() === 1, 'the pool to fill', 10_000, 2);
    assert.deepEqual(specOf(engine, 'pool-').spec.Env, ['RUNNER_PRELOAD=numpy,pandas,matplotlib.pyplot']);
    const outcome = await sandbox.run(job());
    assert.equal(outcome.phases.pool, 1);
    assert.equal(outcome.stdout, 'hi\n', 'the frames after the ready frame are the job\'s, and none is lost');
    assert.equal(outcome.violation, null);
    await sandbox.shutdown(false);
  });

  it('a cold container (a pool miss, an install) never preloads, so its job does not wait for imports', async () => {
    const { engine, sandbox } = preloading(() => ({ stdout: reportFrames() }), 0);
    await sandbox.run(job());
    await sandbox.run(job({ executionId: 'e2', mode: 'install', install: { requirement: 'x', upgrade: false, pipArgs: [], packagesMaxBytes: 1, packagesMaxFiles: 10 } }));
    await sandbox.shutdown(false);
    assert.equal(specOf(engine, 'e1').spec.Env, undefined);
    assert.equal(specOf(engine, 'e2').spec.Env, undefined);
  });

  const unready: [string, Script][] = [
    ['says nothing', { ready: null }],
    ['sends anything but the ready frame first', { ready: frame('o', 'forged') }],
    ['stops before it is ready', { ready: null, diesAfterMs: 1 }],
  ];
  for (const [what, script] of unready) {
    it(`a warm container that ${what} is removed and never handed out: the run goes cold`, async () => {
      const { engine, sandbox } = preloading((name) => (name.includes('pool-') ? script : { stdout: reportFrames() }));
      sandbox.warm({ limits, packagesVolume: 'vol' });
      await until(() => specOf(engine, 'pool-')?.removed === true, 'the unready container to be removed', 10_000, 2);
      assert.equal(sandbox.ready(), 0);
      const outcome = await sandbox.run(job());
      assert.equal(outcome.phases.pool, undefined, 'a cold start');
      assert.equal(outcome.report?.status, 'ok');
      await sandbox.shutdown(false);
    });
  }

  it("an install drops the warm containers of its packages volume, which preloaded the old packages, and only those", async () => {
    const { engine, sandbox } = preloading(() => ({ stdout: reportFrames() }));
    sandbox.warm({ limits, packagesVolume: 'vol' });
    await until(() => sandbox.ready() === 1, 'the first profile', 10_000, 2);
    sandbox.warm({ limits, packagesVolume: 'other' });
    await until(() => sandbox.ready() === 2, 'both profiles', 10_000, 2);
    const [mine, theirs] = [...engine.containers.values()];
    await sandbox.run(job({ mode: 'install', install: { requirement: 'x', upgrade: false, pipArgs: [], packagesMaxBytes: 1, packagesMaxFiles: 10 } }));
    await until(() => mine!.removed && sandbox.ready() === 2, 'a fresh warm container for vol', 10_000, 2);
    assert.equal(theirs!.removed, false);
    await sandbox.shutdown(false);
  });
});
