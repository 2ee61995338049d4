import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';
import { Ajv } from 'ajv';
import { projectRoot } from '../project.js';

/**
 * The runner's wire protocol (sandbox-image/runner.py), read as hostile input: every frame is
 * checked for kind and size, every stream is capped, and the final report must match a schema.
 * Frame: [kind: 1 byte][length: uint32 big-endian][payload <= 64 KiB]. Kinds: o (stdout), e (stderr),
 * f (changed-files tar), r (report), z (done: empty, last). Before its job, a container asked to
 * preload sends w (ready: empty), read by the driver (`READY_FRAME`), never by the decoder.
 * A context's container reads its jobs framed on stdin (`jobFrames`) and answers each as above.
 */
export const PROTOCOL_VERSION = declaredProtocol();
const MAX_FRAME = 64 * 1024;
const HEADER = 5;
/** The whole of what a preloading runner sends before its job: its modules are imported. */
export const READY_FRAME = Buffer.from([0x77, 0, 0, 0, 0]);

/** A context's job on stdin: its tar as frames of [length: uint32 big-endian][payload <= 64 KiB], then an empty frame. */
export function jobFrames(): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      for (let at = 0; at < chunk.length; at += MAX_FRAME) {
        const part = chunk.subarray(at, at + MAX_FRAME);
        const header = Buffer.alloc(4);
        header.writeUInt32BE(part.length);
        this.push(header);
        this.push(part);
      }
      done();
    },
    flush(done) {
      done(null, Buffer.alloc(4));
    },
  });
}

/** What the code may show (openapi.yaml's Output says the same), and where it came from. */
export const OUTPUT_MIMES = ['text/plain', 'text/html', 'text/markdown', 'image/png', 'image/svg+xml', 'application/json'] as const;
export const OUTPUT_SOURCES = ['figure', 'display', 'value'] as const;
const IMAGE_MIMES = new Set(['image/png', 'image/svg+xml']);
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * The protocol version is declared once, as `ARG RUNNER_PROTOCOL` in sandbox-image/Dockerfile: the
 * image's label and the runner's environment come from it there, and this server reads it here.
 */
function declaredProtocol(): number {
  const dockerfile = readFileSync(path.join(projectRoot, 'sandbox-image', 'Dockerfile'), 'utf8');
  const declared = /^ARG RUNNER_PROTOCOL=(\d+)$/m.exec(dockerfile);
  if (!declared) throw new Error('sandbox-image/Dockerfile declares no ARG RUNNER_PROTOCOL');
  return Number(declared[1]);
}

/** What a job asks the runner to do. */
export type JobMode = 'code' | 'file' | 'resolve' | 'install' | 'list-packages' | 'context';

/** Why a context's kernel is gone: OOM-killed, dead (os._exit, a crash), or not back from an interrupt in time. */
export const LOST_REASONS = ['oom', 'died', 'unresponsive'] as const;
export type LostReason = (typeof LOST_REASONS)[number];

/** job.json, the first entry of the tar a runner reads on stdin. */
export interface RunnerJob {
  protocol: number;
  mode: JobMode;
  code?: string;
  file?: string;
  variable?: string;
  /**
   * Resolve and install jobs: one PEP 508 requirement (resolve), the exact `name==version` pins to
   * install (install), pip's source arguments, and the caps on the tenant's packages.
   */
  requirement?: string;
  /** Resolve jobs of a set of declared dependencies: its requirements, resolved together. */
  requirements?: string[];
  pins?: string[];
  upgrade?: boolean;
  pip_args?: string[];
  packages_max_bytes?: number;
  packages_max_files?: number;
  timeout_s: number;
  output_limit: number;
  result_limit: number;
  /** Caps on the outputs: how many, and their data's bytes together. */
  max_outputs: number;
  outputs_limit: number;
  /** Context calls: how long the kernel has, once interrupted at the timeout, to come back with its report. */
  interrupt_grace_s?: number;
  /** The egress proxy's URL with this execution's credential, set as HTTP(S)_PROXY for the code; absent: no network at all. */
  proxy?: string;
  /** False: nobody reads the output as it comes, so the runner sends it with the report, in fewer writes. */
  stream: boolean;
  /**
   * One-shot jobs: after its answer the runner waits this long for the server to remove the
   * container instead of ending it (a sandbox's end costs CPU the answer would wait for, tens of
   * milliseconds under gVisor), then ends it itself.
   */
  hold_s: number;
}

/** One thing the code showed: data is base64 for images, text otherwise. */
export interface RunnerOutput {
  mime: (typeof OUTPUT_MIMES)[number];
  data: string;
  source: (typeof OUTPUT_SOURCES)[number];
}

export interface RunnerReport {
  protocol: number;
  exit_code: number;
  timed_out: boolean;
  truncated: boolean;
  oom_killed: boolean;
  status: 'ok' | 'exception' | 'exit' | 'killed';
  error: string | null;
  traceback: string | null;
  result: string | null;
  result_truncated: boolean;
  /** repr() of the last expression's value, when it was an expression whose value is not None. */
  value: string | null;
  outputs: RunnerOutput[];
  outputs_truncated: boolean;
  deleted: string[];
  /** What the runner could not do for this run without failing it (entries it could not keep). */
  warnings: string[];
  run_ms: number;
  /** Install and list jobs: the tenant's packages, {normalized name: version}. */
  packages?: Record<string, string>;
  /** Install jobs: the names whose version this install changed. */
  changed?: string[];
  /** Resolve jobs: what pip would install, in its order (read from a container where builds ran: hostile). */
  resolved?: ResolvedPackage[];
  /** Resolve jobs: the tenant's packages volume as found: bytes allocated on disk, files and directories. */
  usage?: { bytes: number; files: number };
  /** Context calls: the kernel is gone, and why; the container ends after this report. */
  lost?: LostReason;
}

export interface ResolvedPackage {
  /** PEP 503 normalized. */
  name: string;
  version: string;
  /** The requirement the user asked for (not a dependency). */
  requested: boolean;
  /** Normalized names of the distributions it requires (all of its Requires-Dist, extras included). */
  requires: string[];
  /** It comes as a source distribution (its wheel was built in the resolve container). */
  sdist: boolean;
  /** It comes from a direct URL reference, not an index or the wheelhouse. */
  direct: boolean;
}

/** A PEP 503 normalized distribution name. */
const PACKAGE_NAME = '^[a-z0-9](?:[a-z0-9-]{0,198}[a-z0-9])?$';

const reportSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['protocol', 'exit_code', 'timed_out', 'truncated', 'oom_killed', 'status', 'error', 'traceback',
    'result', 'result_truncated', 'value', 'outputs', 'outputs_truncated', 'deleted', 'warnings', 'run_ms'],
  properties: {
    protocol: { type: 'integer', const: PROTOCOL_VERSION },
    exit_code: { type: 'integer', minimum: 0, maximum: 255 },
    timed_out: { type: 'boolean' },
    truncated: { type: 'boolean' },
    oom_killed: { type: 'boolean' },
    status: { type: 'string', enum: ['ok', 'exception', 'exit', 'killed'] },
    error: { type: 'string', nullable: true },
    traceback: { type: 'string', nullable: true },
    result: { type: 'string', nullable: true },
    result_truncated: { type: 'boolean' },
    value: { type: 'string', nullable: true },
    outputs: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['mime', 'data', 'source'],
        properties: {
          mime: { type: 'string', enum: OUTPUT_MIMES },
          data: { type: 'string' },
          source: { type: 'string', enum: OUTPUT_SOURCES },
        },
      },
    },
    outputs_truncated: { type: 'boolean' },
    deleted: { type: 'array', items: { type: 'string', maxLength: 1024 }, maxItems: 1_000_000 },
    warnings: { type: 'array', items: { type: 'string', maxLength: 2048 }, maxItems: 21 },
    run_ms: { type: 'number', minimum: 0 },
    packages: {
      type: 'object',
      maxProperties: 100_000,
      propertyNames: { maxLength: 200 },
      additionalProperties: { type: 'string', maxLength: 200 },
    },
    changed: { type: 'array', items: { type: 'string', maxLength: 200 }, maxItems: 100_000 },
    resolved: {
      type: 'array',
      maxItems: 10_000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'version', 'requested', 'requires', 'sdist', 'direct'],
        properties: {
          name: { type: 'string', pattern: PACKAGE_NAME },
          version: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,99}$' },
          requested: { type: 'boolean' },
          requires: { type: 'array', items: { type: 'string', pattern: PACKAGE_NAME }, maxItems: 1000 },
          sdist: { type: 'boolean' },
          direct: { type: 'boolean' },
        },
      },
    },
    usage: {
      type: 'object',
      additionalProperties: false,
      required: ['bytes', 'files'],
      properties: { bytes: { type: 'integer', minimum: 0 }, files: { type: 'integer', minimum: 0 } },
    },
    lost: { type: 'string', enum: LOST_REASONS },
  },
};

const validateReport = new Ajv({ allErrors: false, strict: true }).compile<RunnerReport>(reportSchema);

export class ProtocolViolation extends Error {}

export interface DecoderCaps {
  /** Cap on user stdout and on user stderr, each. */
  outputBytes: number;
  /** Cap on the tar of changed files. */
  filesBytes: number;
  /** Cap on the JSON report. */
  reportBytes: number;
  /** Caps on the outputs in the report: how many, and their data's bytes together. */
  maxOutputs: number;
  outputsBytes: number;
}

export interface DecoderSinks {
  /** A chunk of the changed-files tar. */
  files(chunk: Buffer): void;
  /** Output went past a cap: the container should be stopped. */
  overCap(): void;
  /** The runner said it is done: the answer need not wait for the container to exit. */
  done(): void;
  /** The part of an o or e frame kept within the output cap, as it arrives (for output as it happens). */
  output?(stream: 'stdout' | 'stderr', chunk: Buffer): void;
}

/** Incremental decoder of the runner's stdout. `push` throws ProtocolViolation on bad input. */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);
  private readonly out: Record<'o' | 'e', { chunks: Buffer[]; bytes: number }> = {
    o: { chunks: [], bytes: 0 },
    e: { chunks: [], bytes: 0 },
  };
  private filesBytes = 0;
  private readonly report: Buffer[] = [];
  private reportBytes = 0;
  private finished = false;
  truncated = false;

  constructor(
    private readonly caps: DecoderCaps,
    private readonly sinks: DecoderSinks,
  ) {}

  push(chunk: Buffer): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let offset = 0;
    while (this.pending.length - offset >= HEADER) {
      const kind = String.fromCharCode(this.pending[offset]!);
      const length = this.pending.readUInt32BE(offset + 1);
      if (!'oefrz'.includes(kind)) throw new ProtocolViolation(`unknown frame kind 0x${this.pending[offset]!.toString(16)}`);
      if (length > MAX_FRAME) throw new ProtocolViolation(`frame of ${length} bytes is over the ${MAX_FRAME} limit`);
      if (this.pending.length - offset - HEADER < length) break;
      const payload = this.pending.subarray(offset + HEADER, offset + HEADER + length);
      offset += HEADER + length;
      this.frame(kind as 'o' | 'e' | 'f' | 'r' | 'z', payload);
    }
    this.pending = this.pending.subarray(offset);
  }

  private frame(kind: 'o' | 'e' | 'f' | 'r' | 'z', payload: Buffer): void {
    if (this.finished) throw new ProtocolViolation('output after the done frame');
    if (kind === 'z') {
      if (this.reportBytes === 0 || payload.length > 0) throw new ProtocolViolation('done frame without a report');
      this.finished = true;
      this.sinks.done();
      return;
    }
    if (kind !== 'r' && this.reportBytes > 0) throw new ProtocolViolation('output after the report');
    if (kind === 'o' || kind === 'e') {
      const stream = this.out[kind];
      const room = this.caps.outputBytes - stream.bytes;
      if (room > 0) {
        const kept = Buffer.from(payload.subarray(0, room));
        stream.chunks.push(kept);
        stream.bytes += kept.length;
        this.sinks.output?.(kind === 'o' ? 'stdout' : 'stderr', kept);
      }
      if (payload.length > room) {
        this.truncated = true;
        this.sinks.overCap();
      }
    } else if (kind === 'f') {
      this.filesBytes += payload.length;
      if (this.filesBytes > this.caps.filesBytes) {
        throw new ProtocolViolation(`changed files are over the workspace cap of ${this.caps.filesBytes} bytes`);
      }
      this.sinks.files(payload);
    } else {
      this.reportBytes += payload.length;
      if (this.reportBytes > this.caps.reportBytes) throw new ProtocolViolation('report is over its size cap');
      this.report.push(Buffer.from(payload));
    }
  }

  stdout(): string {
    return Buffer.concat(this.out.o.chunks).toString('utf8');
  }

  stderr(): string {
    return Buffer.concat(this.out.e.chunks).toString('utf8');
  }

  /** The validated report, or null when none came; throws ProtocolViolation when it is malformed. */
  finish(): RunnerReport | null {
    if (this.pending.length > 0) throw new ProtocolViolation('stream ended inside a frame');
    if (this.reportBytes === 0) return null;
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(this.report).toString('utf8'));
    } catch {
      throw new ProtocolViolation('report is not JSON');
    }
    if (!validateReport(parsed)) {
      const first = validateReport.errors?.[0];
      const allowed = (first?.params as { allowedValues?: unknown[] } | undefined)?.allowedValues;
      throw new ProtocolViolation(
        `report does not match the protocol: ${first?.instancePath || '/'} ${first?.message ?? ''}${allowed ? ` (${allowed.join(', ')})` : ''}`,
      );
    }
    return this.capOutputs(parsed);
  }

  /**
   * The outputs as the client may get them: every image decodes as base64 (a PNG is a PNG), or the
   * report is refused; then they are kept in order within the caps, and the rest left out.
   */
  private capOutputs(report: RunnerReport): RunnerReport {
    let bytes = 0;
    let kept = 0;
    for (const [i, output] of report.outputs.entries()) {
      if (IMAGE_MIMES.has(output.mime)) {
        if (!BASE64.test(output.data)) throw new ProtocolViolation(`output ${i} (${output.mime}) is not base64`);
        if (output.mime === 'image/png' && !Buffer.from(output.data.slice(0, 12), 'base64').subarray(0, PNG_MAGIC.length).equals(PNG_MAGIC)) {
          throw new ProtocolViolation(`output ${i} says image/png but is not a PNG`);
        }
      }
      bytes += Buffer.byteLength(output.data);
      if (kept === i && i < this.caps.maxOutputs && bytes <= this.caps.outputsBytes) kept += 1;
    }
    if (kept === report.outputs.length) return report;
    return { ...report, outputs: report.outputs.slice(0, kept), outputs_truncated: true };
  }
}
