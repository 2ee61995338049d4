import { PassThrough, type Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { EngineError, type Attachment, type ContainerRuntime, type ContainerSpec, type ContainerState } from './runtime.js';

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EACCES', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH']);

/**
 * The container runtime on a Docker engine, through dockerode: the only code that calls Docker.
 * Every failure comes out as an EngineError that says what the operator can do about it.
 */
export class DockerRuntime implements ContainerRuntime {
  constructor(
    private readonly docker: Docker,
    /** Where the engine is, for messages (DOCKER_HOST, else the default socket). */
    private readonly where: string = process.env.DOCKER_HOST ?? '/var/run/docker.sock',
  ) {}

  create(spec: ContainerSpec): Promise<string> {
    return this.call(async () => (await this.docker.createContainer(spec)).id, spec.Image);
  }

  attach(id: string): Promise<Attachment> {
    return this.call(async () => {
      const stream = (await this.docker
        .getContainer(id)
        .attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true })) as Duplex;
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      this.docker.modem.demuxStream(stream, stdout, stderr);
      stream.on('error', () => undefined); // an error ends the stream, and the end is what counts
      const ended = new Promise<void>((resolve) => {
        stream.once('end', resolve);
        stream.once('close', resolve);
        stream.once('error', resolve);
      }).then(() => {
        stdout.end();
        stderr.end();
      });
      return {
        stdin: stream,
        stdout,
        stderr,
        ended,
        destroy: () => stream.destroy(),
        // The socket itself: docker-modem's demuxer writes on, whatever its outputs buffer.
        pause: () => stream.pause(),
        resume: () => stream.resume(),
      };
    });
  }

  start(id: string): Promise<void> {
    return this.call(async () => {
      await this.docker.getContainer(id).start();
    });
  }

  async kill(id: string): Promise<void> {
    await this.docker
      .getContainer(id)
      .kill({ signal: 'SIGKILL' })
      .catch(() => undefined); // already stopped or gone is what we wanted
  }

  wait(id: string): Promise<void> {
    return this.call(async () => {
      await this.docker.getContainer(id).wait();
    });
  }

  remove(id: string): Promise<void> {
    return this.call(async () => {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    });
  }

  inspect(id: string): Promise<ContainerState> {
    return this.call(async () => {
      const { State } = await this.docker.getContainer(id).inspect();
      return { running: State.Running, exitCode: State.ExitCode ?? null, oomKilled: State.OOMKilled === true };
    });
  }

  listByLabel(label: string): Promise<{ id: string; labels: Record<string, string> }[]> {
    return this.call(async () => {
      const found = await this.docker.listContainers({ all: true, filters: { label: [label] } });
      return found.map((c) => ({ id: c.Id, labels: c.Labels ?? {} }));
    });
  }

  createVolume(name: string, labels: Record<string, string>): Promise<Record<string, string>> {
    // The engine's answer, which dockerode's createVolume drops: for an existing volume, its own labels.
    return this.call(
      () =>
        new Promise((resolve, reject) => {
          this.docker.modem.dial(
            { path: '/volumes/create?', method: 'POST', options: { Name: name, Labels: labels }, statusCodes: { 200: true, 201: true, 500: 'server error' } },
            (err, data) => (err ? reject(err) : resolve((data as { Labels?: Record<string, string> | null } | undefined)?.Labels ?? {})),
          );
        }),
    );
  }

  removeVolume(name: string): Promise<void> {
    return this.call(async () => {
      await this.docker
        .getVolume(name)
        .remove()
        .catch((err: { statusCode?: number }) => {
          if (err.statusCode !== 404) throw err;
        });
    });
  }

  ensureInternalNetwork(name: string, labels: Record<string, string>): Promise<{ gateway: string; created: boolean }> {
    return this.call(async () => {
      const network = this.docker.getNetwork(name);
      let created = false;
      let info = (await network.inspect().catch((err: { statusCode?: number }) => {
        if (err.statusCode !== 404) throw err;
        return null;
      })) as Docker.NetworkInspectInfo | null;
      if (!info) {
        await this.docker.createNetwork({
          Name: name,
          CheckDuplicate: true,
          Internal: true,
          Labels: labels,
          // No container of it may reach another (each tenant's executions share it).
          Options: { 'com.docker.network.bridge.enable_icc': 'false' },
        });
        created = true;
        info = (await network.inspect()) as Docker.NetworkInspectInfo;
      }
      const gateway = info.IPAM?.Config?.find((c) => c.Gateway && !c.Gateway.includes(':'))?.Gateway;
      if (!info.Internal || !gateway) {
        throw new EngineError('refused', `Docker network ${name} exists but is not an internal network with an IPv4 gateway: remove it or name another in EGRESS_NETWORK`);
      }
      return { gateway, created };
    });
  }

  removeNetwork(name: string): Promise<void> {
    return this.call(async () => {
      await this.docker.getNetwork(name).remove().catch((err: { statusCode?: number }) => {
        if (err.statusCode !== 404) throw err;
      });
    });
  }

  version(): Promise<string> {
    return this.call(async () => (await this.docker.version()).Version);
  }

  imageLabels(image: string): Promise<Record<string, string>> {
    return this.call(async () => (await this.docker.getImage(image).inspect()).Config?.Labels ?? {}, image);
  }

  /** Runs one engine call; `image` names the image it needs, for the message when it is missing. */
  private async call<T>(work: () => Promise<T>, image?: string): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof EngineError) throw err;
      throw this.explain(err, image);
    }
  }

  /** Turns Docker's failures into what an operator can act on. */
  private explain(err: unknown, image = 'the sandbox image'): EngineError {
    const e = err as { statusCode?: number; code?: string; message?: string; json?: { message?: string } };
    const detail = e.json?.message ?? e.message ?? String(err);
    if (e.statusCode === 404 && /no such image/i.test(detail)) {
      return new EngineError('no_image', `Sandbox image ${image} is missing: build it with \`npm run sandbox:build\``);
    }
    if (e.statusCode === 404) return new EngineError('no_container', `Docker: ${detail}`);
    if (e.statusCode === 409) return new EngineError('busy', `Docker: ${detail}`);
    if (e.code && UNREACHABLE.has(e.code)) {
      return new EngineError(
        'unreachable',
        `Docker engine is not reachable at ${this.where} (${e.code}): start it (\`sudo systemctl start docker\` ` +
          'or `sudo dockerd &`) or point DOCKER_HOST at one',
      );
    }
    // The engine refused (a runtime that is not registered, a daemon fault): the operator's to fix.
    return new EngineError('refused', `Docker could not run the sandbox: ${detail}`);
  }
}
