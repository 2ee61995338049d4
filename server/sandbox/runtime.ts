import type { Readable, Writable } from 'node:stream';
import type Docker from 'dockerode';
import { ServiceError } from '../errors.js';

/** A container's create options, as the Docker Engine API takes them (container-spec.ts builds them). */
export type ContainerSpec = Docker.ContainerCreateOptions;

/** A container's standard streams once attached, already demultiplexed. */
export interface Attachment {
  /** The container's stdin; ending it closes the container's stdin (StdinOnce). */
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves once the container's output has ended: it stopped, or the connection broke. */
  ended: Promise<void>;
  /** Drops the connection, for when the engine never ends it. */
  destroy(): void;
  /** Stops reading the container's output (stdout and stderr) until `resume`: a slow disk holds the container, not memory. */
  pause(): void;
  resume(): void;
}

export interface ContainerState {
  running: boolean;
  exitCode: number | null;
  oomKilled: boolean;
}

/**
 * The seam between the sandbox driver and a container engine: everything the driver asks of one,
 * and nothing else. docker-runtime.ts implements it on dockerode; the tests' recording fake plays
 * scripted containers through it. Failures are EngineErrors.
 */
export interface ContainerRuntime {
  /** Creates a container; resolves to its id. */
  create(spec: ContainerSpec): Promise<string>;
  attach(id: string): Promise<Attachment>;
  start(id: string): Promise<void>;
  /** SIGKILL; a container that is already gone or stopped is not an error. */
  kill(id: string): Promise<void>;
  /** Resolves when the container has stopped. */
  wait(id: string): Promise<void>;
  /** Forced removal, with its anonymous volumes. */
  remove(id: string): Promise<void>;
  inspect(id: string): Promise<ContainerState>;
  /** Every container (running or not) carrying `label` (`key` or `key=value`), with its labels. */
  listByLabel(label: string): Promise<{ id: string; labels: Record<string, string> }[]>;
  /** Creates a named volume; an existing one is left as it is. Resolves to the volume's labels (an existing one's own). */
  createVolume(name: string, labels: Record<string, string>): Promise<Record<string, string>>;
  /** Removes a named volume; one that is gone already is not an error (one in use is). */
  removeVolume(name: string): Promise<void>;
  /**
   * Makes (or finds) the internal network egress sandboxes join: no route out, no traffic between
   * its containers. Resolves to its gateway address, the host's end, where the egress proxy listens.
   */
  ensureInternalNetwork(name: string, labels: Record<string, string>): Promise<{ gateway: string; created: boolean }>;
  /** Removes a network; one that is gone is not an error. */
  removeNetwork(name: string): Promise<void>;
  /** The engine's version; the cheapest call that proves it answers. */
  version(): Promise<string>;
  /** The labels of an image. */
  imageLabels(image: string): Promise<Record<string, string>>;
}

/**
 * Why the engine failed a call. `unreachable`, `no_image` and `refused` are the operator's to fix,
 * so they are 503s whose message says what to do; `no_container` means the container is gone;
 * `busy` is a refusal worth retrying (Docker refuses a removal caught mid-exit).
 */
export type EngineFailure = 'unreachable' | 'no_image' | 'no_container' | 'busy' | 'refused';

export class EngineError extends ServiceError {
  constructor(
    readonly failure: EngineFailure,
    message: string,
  ) {
    super('unavailable', message);
  }
}
