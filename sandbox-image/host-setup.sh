#!/usr/bin/env bash
# Makes this host ready to run sandboxes: a Docker engine that answers, and the sandbox image.
# Installs docker.io and docker-compose (and mmdebstrap, for the offline image build) with apt when they are missing
# and we are root, starts dockerd when it is installed but not running, builds the image if it is
# missing or older than sandbox-image/. Idempotent: on a ready host it only checks.
# --test (npm test): also what the tests need beyond Docker, i.e. Debian's chromium for the browser checks.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "[host-setup] $*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing: $* (install it, or run this as root on Debian/Ubuntu)"; return 1
  fi
  log "installing $* with apt"
  if [ ! -f /var/lib/apt/.run-python-code-updated ]; then
    apt-get update -qq && touch /var/lib/apt/.run-python-code-updated
  fi
  # Waits for another apt run (a colleague's, an unattended upgrade) instead of failing at once.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null
}

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null && ! docker_answers; then
  apt_install docker.io containerd runc tini
fi
# For docker-compose.yml (and its test): Debian's v1 when the v2 plugin is not there.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  apt_install docker-compose || log "docker-compose is missing; the compose test will say so"
fi

if [ "${1:-}" = --test ] && ! command -v chromium >/dev/null; then
  apt_install chromium || log "chromium is missing; the browser test will say so"
fi
# The distributed suite starts its own Redis and PostgreSQL on loopback (never the system's services).
if [ "${1:-}" = --test ] && { ! command -v redis-server >/dev/null || [ ! -x /usr/lib/postgresql/15/bin/postgres ]; }; then
  apt_install redis-server postgresql-15 || log "redis-server or postgresql-15 is missing; the distributed test will say so"
fi

if ! docker_answers; then
  if [ -n "${DOCKER_HOST:-}" ]; then
    log "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine"; exit 1
  fi
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker || true
  fi
  if ! docker_answers; then
    [ "$(id -u)" = 0 ] || { log "dockerd is not running; start it (sudo dockerd &)"; exit 1; }
    log "starting dockerd (log: /var/log/run-python-code-dockerd.log)"
    nohup dockerd >/var/log/run-python-code-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do docker_answers && break; sleep 1; done
  fi
  docker_answers || { log "dockerd did not come up; see /var/log/run-python-code-dockerd.log"; exit 1; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers"

# gVisor, when a setting names it (SANDBOX_RUNTIME or SANDBOX_RUNTIMES) or for the tests (--test:
# the hostile corpus runs once more under it): Debian's runsc, registered with the engine.
wants_runsc() {
  [ "${1:-}" = --test ] && return 0
  case ",${SANDBOX_RUNTIME:-},${SANDBOX_RUNTIMES:-}," in *,runsc,*) return 0 ;; esac
  return 1
}
if wants_runsc "${1:-}"; then
  if ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
    command -v runsc >/dev/null || apt_install runsc || { log "runsc is missing; gVisor tenants cannot run"; exit 1; }
    bash "$here/register-runsc.sh"
  fi
  log "gVisor (runsc) is registered with the engine"
fi

if [ "${SKIP_SANDBOX_BUILD:-0}" != 1 ]; then
  bash "$here/build.sh" --if-stale
fi
