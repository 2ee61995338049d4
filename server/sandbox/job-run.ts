import { StringDecoder } from 'node:string_decoder';
import type { Logger } from '../logger.js';
import { ChangesReader, packJob } from './files-tar.js';
import { FrameDecoder, jobFrames, PROTOCOL_VERSION, ProtocolViolation, type RunnerJob, type RunnerReport } from './protocol.js';
import { EngineError, type Attachment, type ContainerRuntime, type ContainerState } from './runtime.js';
import type { FileChanges, SandboxJob, SandboxOutcome } from './sandbox.js';
import type { Prepared } from './warm-pool.js';

/** A container created, attached and started (cold, or from the warm pool), waiting for its job. */
export interface PreparedContainer extends Prepared {
  io: Attachment;
  createMs: number;
  startMs: number;
}

/**
 * The states of one job's run, in order:
 * - `prepared`: the container waits for its job;
 * - `streaming`: the job (job.json, workspace, wheelhouse) is being written to its stdin;
 * - `collecting`: the whole job is in; frames are read until the runner says done, the container
 *   ends, or the run is stopped (deadline, protocol violation);
 * - `finishing`: the report and the changed files are checked, and, without a report, the
 *   container's own end is asked about;
 * - `finished`: the outcome is built. A run never goes back, and runs once.
 */
export type RunState = 'prepared' | 'streaming' | 'collecting' | 'finishing' | 'finished';

/** Why collecting stopped: the done frame, the container's end, the server's deadline, bad output, or the caller leaving. */
export type StopCause = 'done' | 'exited' | 'deadline' | 'violation' | 'aborted';

export interface JobRunTimings {
  /** Past the runner's own deadline, how long the server waits before it kills the container itself. */
  backstopGraceMs: number;
  /** How long to wait for a killed container to stop before reading its state anyway. */
  finalWaitMs: number;
}

/** The events that end a container's stdout. */
const OUTPUT_END = ['end', 'close', 'error'] as const;

/** The runner's own stderr (its crash messages, not the user's) is kept for the log, this much. */
const DIAGNOSTICS_BYTES = 16 * 1024;

/** How long a one-shot container waits to be removed after its answer (the driver removes it once the answer is out). */
const HOLD_S = 30;

/** job.json for a sandbox job. */
export function runnerJob(job: SandboxJob): RunnerJob {
  const { limits } = job;
  return {
    protocol: PROTOCOL_VERSION,
    mode: job.mode,
    code: job.code,
    file: job.file,
    variable: job.variable,
    requirement: job.install?.requirement,
    requirements: job.install?.requirements,
    pins: job.install?.pins,
    upgrade: job.install?.upgrade,
    pip_args: job.install?.pipArgs,
    packages_max_bytes: job.install?.packagesMaxBytes,
    packages_max_files: job.install?.packagesMaxFiles,
    timeout_s: limits.timeoutS,
    output_limit: limits.outputBytes,
    result_limit: limits.outputBytes,
    max_outputs: limits.maxOutputs,
    outputs_limit: limits.outputsBytes,
    interrupt_grace_s: job.interruptGraceS,
    proxy: job.egress?.proxy,
    stream: job.onOutput !== undefined,
    hold_s: HOLD_S,
  };
}

/**
 * Where a run's container came from: made for it, taken from the warm pool, or a context's
 * (whose container outlives the run: its job comes framed, its stdin stays open, and a caller
 * who leaves does not stop it, as the kernel's state would go with it).
 */
export type RunOrigin = 'cold' | 'pool' | 'context';

/**
 * One job's run in one prepared container, as a small state machine over the runtime seam:
 * stream the job in, collect frames (hostile input: decoded within caps, refused on any
 * violation), stop on done/exit/deadline/violation, and build the outcome. Removing the container
 * is the driver's, whatever happens here.
 */
export class JobRun {
  private state: RunState = 'prepared';
  private violation: string | null = null;
  private deadlinePassed = false;
  private killed = false;
  private diagnostics = '';
  /** Why the job could not be streamed in (the workspace could not be read): a fault of the service. */
  private inputError: Error | null = null;
  private outputPaused = false;
  private stop!: (cause: StopCause) => void;
  private readonly stopped = new Promise<StopCause>((resolve) => (this.stop = resolve));
  private readonly changes: ChangesReader;
  private readonly decoder: FrameDecoder;
  /** For the job's output sink: one decoder per stream, so a character split across frames arrives whole. */
  private readonly text = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };

  constructor(
    private readonly engine: ContainerRuntime,
    private readonly container: PreparedContainer,
    private readonly origin: RunOrigin,
    private readonly job: SandboxJob,
    private readonly timings: JobRunTimings,
    private readonly logger: Logger,
  ) {
    const { limits } = job;
    const workspaceBytes = limits.workspaceMb * 1024 * 1024;
    this.changes = new ChangesReader({ maxBytes: workspaceBytes, maxFiles: limits.maxFiles }, job.changes);
    this.decoder = new FrameDecoder(
      {
        outputBytes: limits.outputBytes,
        filesBytes: workspaceBytes + (limits.maxFiles + 16) * 3 * 512,
        // Four capped strings (the value among them), the outputs as JSON escapes them, the deleted paths.
        reportBytes: 32 * limits.outputBytes + 6 * limits.outputsBytes + 128 * limits.maxOutputs + (limits.maxFiles + 1) * 1100,
        maxOutputs: limits.maxOutputs,
        outputsBytes: limits.outputsBytes,
      },
      {
        files: (chunk) => this.takeFiles(chunk),
        overCap: () => this.kill(),
        done: () => this.stop('done'),
        output: job.onOutput ? (stream, chunk) => this.relay(stream, chunk) : undefined,
      },
    );
  }

  get current(): RunState {
    return this.state;
  }

  async run(): Promise<SandboxOutcome> {
    const started = Date.now();
    this.advance('prepared', 'streaming');
    const { io } = this.container;
    const onStdout = (chunk: Buffer) => this.receive(chunk);
    const onStderr = (chunk: Buffer) => {
      if (this.diagnostics.length < DIAGNOSTICS_BYTES) this.diagnostics += chunk.toString('utf8', 0, DIAGNOSTICS_BYTES);
    };
    io.stdout.on('data', onStdout);
    io.stderr.on('data', onStderr);
    // The end of stdout, not of the connection: only then has every byte been read.
    let onEnd!: () => void;
    const outputEnded = new Promise<void>((resolve) => (onEnd = resolve));
    for (const event of OUTPUT_END) io.stdout.once(event, onEnd);
    void outputEnded.then(() => this.stop('exited'));
    const context = this.origin === 'context';
    const abort = () => {
      this.kill();
      this.stop('aborted');
    };
    const signal = context ? undefined : this.job.signal;
    if (signal?.aborted) abort();
    signal?.addEventListener('abort', abort, { once: true });

    let abandon: NodeJS.Timeout | undefined;
    const backstop = setTimeout(() => {
      this.deadlinePassed = true;
      this.kill();
      this.resumeOutput(); // the killed container's output must be read to its end
      this.stop('deadline');
      // Should the kill or the stream's end never come, stop waiting on either.
      abandon = setTimeout(() => io.destroy(), this.timings.backstopGraceMs);
    }, (this.job.limits.timeoutS + (this.job.interruptGraceS ?? 0)) * 1000 + this.timings.backstopGraceMs);

    const input = packJob(runnerJob(this.job), this.job.workspace, this.job.wheelhouse);
    input.on('error', (err) => {
      this.inputError ??= err;
      this.kill(); // its job is cut short; the run ends when its output does
    });
    input.on('end', () => {
      if (this.state === 'streaming') this.advance('streaming', 'collecting');
    });
    if (context) input.pipe(jobFrames()).pipe(io.stdin, { end: false });
    else input.pipe(io.stdin);

    const cause = await this.stopped;
    clearTimeout(backstop);
    if (this.job.onOutput) this.relayRest();
    signal?.removeEventListener('abort', abort);
    // A killed container's last bytes, or the abandon timer; an abandoned run's kill is the same.
    if (cause === 'deadline' || cause === 'aborted') await outputEnded;
    clearTimeout(abandon);
    this.state = 'finishing';
    const runMs = Date.now() - started;

    try {
      if (this.inputError) throw this.inputError;
      return await this.finish(cause, started, runMs);
    } finally {
      input.destroy(); // stops reading the workspace, whatever the container took of it
      this.changes.abort(); // a sink still waiting for bytes gets an error, not a hang
      this.resumeOutput();
      io.stdout.off('data', onStdout);
      io.stderr.off('data', onStderr);
      for (const event of OUTPUT_END) io.stdout.off(event, onEnd); // a context's next run listens anew
      io.stdout.resume(); // whatever still comes is drained, never buffered
      io.stderr.resume();
      this.state = 'finished';
    }
  }

  private async finish(cause: StopCause, started: number, runMs: number): Promise<SandboxOutcome> {
    const t = Date.now();
    let report: RunnerReport | null = null;
    let files: FileChanges | null = null;
    const warnings: string[] = [];
    if (!this.violation && cause !== 'aborted') {
      try {
        report = this.decoder.finish();
        if (report) {
          files = { ...(await this.changes.finish()), deleted: report.deleted };
          warnings.push(...report.warnings);
          if (this.changes.dropped.length > 0) {
            // The runner sends only what may leave; anything else is a runner's fault, or a hostile one.
            this.logger.warn('sandbox sent entries that were dropped', {
              execution_id: this.job.executionId,
              dropped: this.changes.dropped.slice(0, 20),
            });
            warnings.push(`${this.changes.dropped.length} entries the sandbox sent were not kept (not plain files or directories with clean names)`);
          }
        }
      } catch (err) {
        if (!(err instanceof ProtocolViolation)) throw err;
        this.violation = err.message;
        report = null;
      }
    }
    const { violation } = this;
    if (violation) this.logger.warn('sandbox protocol violation', { execution_id: this.job.executionId, violation });
    // With a report the runner has said all there is; only without one is the container's end worth asking about.
    const state: ContainerState = report ? { running: false, exitCode: report.exit_code, oomKilled: false } : await this.finalState();
    if (!report && this.diagnostics) {
      this.logger.warn('sandbox ended without a report', { execution_id: this.job.executionId, cause, diagnostics: this.diagnostics });
    }
    const { createMs, startMs } = this.container;
    return {
      stdout: this.decoder.stdout(),
      stderr: this.decoder.stderr(),
      report: violation ? null : report,
      changes: violation ? null : files,
      exitCode: report ? report.exit_code : this.deadlinePassed || violation ? null : state.exitCode,
      timedOut: this.deadlinePassed || (report?.timed_out ?? false),
      truncated: this.decoder.truncated || (report?.truncated ?? false) || (report?.result_truncated ?? false),
      oomKilled: state.oomKilled || (report?.oom_killed ?? false),
      violation,
      aborted: cause === 'aborted',
      warnings: violation ? [] : warnings,
      durationMs: Date.now() - started,
      phases: { ...(this.origin === 'cold' ? { create: createMs, start: startMs } : { [this.origin]: 1 }), run: runMs, collect: Date.now() - t },
    };
  }

  /** A chunk of the changed-files tar; while the sink is behind, the container's output waits. */
  private takeFiles(chunk: Buffer): void {
    if (this.changes.write(chunk) || this.outputPaused) return;
    this.outputPaused = true;
    this.container.io.pause();
    void this.changes.drained().then(() => this.resumeOutput());
  }

  private resumeOutput(): void {
    if (!this.outputPaused) return;
    this.outputPaused = false;
    this.container.io.resume();
  }

  /** Output as it arrives, to the job's sink; a sink that throws is the caller's fault, not the container's. */
  private relay(stream: 'stdout' | 'stderr', chunk: Buffer, text = this.text[stream].write(chunk)): void {
    if (!text) return;
    try {
      this.job.onOutput?.(stream, text);
    } catch (err) {
      this.logger.warn('output sink failed', { execution_id: this.job.executionId, error: String(err) });
    }
  }

  /** What a decoder still holds (a character cut at the cap, say) goes out as the outcome will read it. */
  private relayRest(): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      const rest = this.text[stream].end();
      if (rest) this.relay(stream, Buffer.alloc(0), rest);
    }
  }

  /** Frames from the container; the first violation stops the run and kills it. */
  private receive(chunk: Buffer): void {
    if (this.violation) return;
    try {
      this.decoder.push(chunk);
    } catch (err) {
      this.violation = (err as Error).message;
      this.kill();
      this.stop('violation');
    }
  }

  /** Exit code and OOM flag of a container that has stopped (killing it first if it has not). */
  private async finalState(): Promise<ContainerState> {
    const { id } = this.container;
    let state: ContainerState;
    try {
      state = await this.engine.inspect(id);
    } catch (err) {
      // Removed already: a context deleted while its call ran.
      if (err instanceof EngineError && err.failure === 'no_container') return { running: false, exitCode: null, oomKilled: false };
      throw err;
    }
    if (state.running) {
      await this.engine.kill(id);
      await Promise.race([this.engine.wait(id), new Promise((resolve) => setTimeout(resolve, this.timings.finalWaitMs))]);
      state = await this.engine.inspect(id);
    }
    return state;
  }

  private kill(): void {
    if (this.killed) return;
    this.killed = true;
    void this.engine.kill(this.container.id);
  }

  private advance(from: RunState, to: RunState): void {
    if (this.state !== from) throw new Error(`job run: cannot go from ${this.state} to ${to}`);
    this.state = to;
  }
}
