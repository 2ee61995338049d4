import http from 'node:http';
import https from 'node:https';
import Docker from 'dockerode';

/**
 * The Docker client of a server process: the engine named by DOCKER_HOST (a socket, or TCP such as
 * docker-compose's proxy), with one keep-alive connection pool for every API call (attach streams
 * get their own). The agent must match the protocol docker-modem picks, so TLS engines get an
 * https one.
 */
export function dockerClient(env: NodeJS.ProcessEnv = process.env): Docker {
  const tls = env.DOCKER_TLS_VERIFY === '1' || /:2376\/?$/.test(env.DOCKER_HOST ?? '');
  const options = { keepAlive: true, maxSockets: 64 };
  const agent = tls ? new https.Agent(options) : new http.Agent(options);
  return new Docker({ agent } as Docker.DockerOptions);
}
