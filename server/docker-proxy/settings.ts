import path from 'node:path';
import { integer, settings, text, type Setting } from '../config.js';
import { parseHostList } from '../host-origin.js';

/**
 * The Docker API proxy's settings: where it listens and which socket it guards, plus the server's
 * own settings that say what a sandbox is (the same variables, so one environment serves both).
 */
export const proxySettings = {
  host: {
    env: 'DOCKER_PROXY_HOST',
    description: 'Address the Docker API proxy listens on (docker-compose.yml: its internal network only)',
    default: '127.0.0.1',
    parse: text,
  },
  port: { env: 'DOCKER_PROXY_PORT', description: 'TCP port of the Docker API proxy', default: 2375, parse: integer(0, 65535) },
  listenSocket: {
    env: 'DOCKER_PROXY_LISTEN_SOCKET',
    description: "A unix socket (made mode 0660) to listen on instead of TCP, so that only its owner and group reach the proxy; point the server's DOCKER_HOST at unix:// and this path",
    default: '',
    parse: (raw: string) => path.resolve(text(raw)),
    show: '(none: TCP)',
  },
  allowedHosts: {
    env: 'DOCKER_PROXY_ALLOWED_HOSTS',
    description: "Comma-separated host names the proxy answers (the Host header) beside loopback ones: docker-compose.yml's service name by default",
    default: ['docker-proxy'],
    parse: parseHostList,
  },
  socket: {
    env: 'DOCKER_PROXY_SOCKET',
    description: "The engine's socket, to which the proxy forwards the calls it allows",
    default: '/var/run/docker.sock',
    parse: text,
  },
  maxMemoryMb: {
    env: 'DOCKER_PROXY_MAX_MEMORY_MB',
    description: 'Largest memory cap (MiB) a sandbox may ask for; raise it with tenant limits above it',
    default: 16384,
    parse: integer(32, 1024 * 1024),
  },
  maxPids: {
    env: 'DOCKER_PROXY_MAX_PIDS',
    description: 'Largest pids cap a sandbox may ask for',
    default: 4096,
    parse: integer(8, 1 << 22),
  },
  sandboxImage: settings.sandboxImage,
  sandboxRuntime: settings.sandboxRuntime,
  sandboxRuntimes: settings.sandboxRuntimes,
  packagesVolumePrefix: settings.packagesVolumePrefix,
  installNetwork: settings.installNetwork,
  egressNetwork: settings.egressNetwork,
  logLevel: settings.logLevel,
} satisfies Record<string, Setting<unknown>>;
