#!/usr/bin/env bash
# Local stand-ins for the public images compose uses, where no registry answers (as on our CI
# machines), built from Debian's packages (sandbox-image/debian-base.sh). Prints one image name a line:
#   local-bases.sh [node] [redis] [postgres]     (no argument: node)
# node      NODE_IMAGE (node:20-bookworm-slim) for Dockerfile.fastapi: a Debian root filesystem with
#           this host's own node and npm copied in, and this host's CA bundle, so that `npm ci` inside
#           the build trusts whatever TLS-inspecting proxy the host trusts.
# redis     REDIS_IMAGE (redis:7-bookworm) for docker-compose.scale.yml: Debian's redis-server.
# postgres  POSTGRES_IMAGE (postgres:15-bookworm): Debian's postgresql-15 behind an entrypoint that
#           does what the official image's does (local-postgres-entrypoint.sh).
# Whichever public image is present or can be pulled is printed instead of its stand-in.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "[local-bases] $*" >&2; }
contexts=()
trap 'rm -rf "${contexts[@]}"' EXIT
new_context() { ctx="$(mktemp -d)"; contexts+=("$ctx"); }   # sets ctx
available() { docker image inspect "$1" >/dev/null 2>&1 || timeout 60 docker pull -q "$1" >/dev/null 2>&1; }

node_base() {
  local public="${NODE_IMAGE:-node:20-bookworm-slim}"
  if available "$public"; then echo "$public"; return; fi
  local node_bin npm_dir ca_bundle debian tag ctx
  node_bin="$(readlink -f "$(command -v node)")"
  if ldd "$node_bin" 2>/dev/null | grep -q libnode; then
    log "this host's node links libnode (Debian's nodejs); a self-contained build (nodejs.org, NodeSource) is needed"; return 1
  fi
  npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"   # .../node_modules/npm
  ca_bundle="/etc/ssl/certs/ca-certificates.crt"
  debian="run-python-code-local/debian:bookworm"
  tag="run-python-code-local/node:$(node -p process.versions.node)-$(cat "$node_bin" "$ca_bundle" | sha256sum | cut -c1-8)"
  if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; return; fi
  log "$public cannot be pulled; building $tag from Debian's packages and this host's node"
  docker image inspect "$debian" >/dev/null 2>&1 || bash "$root/sandbox-image/debian-base.sh" "$debian" ca-certificates,libstdc++6
  new_context
  cp "$node_bin" "$ctx/node"
  cp -r "$npm_dir" "$ctx/npm"
  cp "$ca_bundle" "$ctx/ca-certificates.crt"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $debian
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY ca-certificates.crt /etc/ssl/certs/site-ca-certificates.crt
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version >/dev/null
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/site-ca-certificates.crt
DOCKERFILE
  docker build -q -t "$tag" "$ctx" >/dev/null
  echo "$tag"
}

# One root filesystem for both services (one mmdebstrap run, one shared layer).
services_root() {
  local image="run-python-code-local/debian-services:bookworm"
  docker image inspect "$image" >/dev/null 2>&1 || bash "$root/sandbox-image/debian-base.sh" "$image" redis-server,postgresql-15
  echo "$image"
}

# `docker build` of a stand-in: cheap when nothing changed (its layers are cached), so always run.
stand_in() {
  local public="$1" tag="$2" ctx="$3"
  log "$public cannot be pulled; using $tag, built from Debian's packages"
  docker build -q -t "$tag" "$ctx" >/dev/null
  echo "$tag"
}

redis_base() {
  local public="${REDIS_IMAGE:-redis:7-bookworm}" ctx base
  if available "$public"; then echo "$public"; return; fi
  base="$(services_root)"
  new_context
  # The official image's Redis is built with protected mode off (it is reached over a network, not
  # on loopback); Debian's answers only loopback unless told. A configuration file stays the first argument.
  cat > "$ctx/redis-server" <<'SCRIPT'
#!/bin/sh
case "${1:-}" in
  ""|-*) exec /usr/bin/redis-server --protected-mode no "$@" ;;
  *) conf="$1"; shift; exec /usr/bin/redis-server "$conf" --protected-mode no "$@" ;;
esac
SCRIPT
  chmod 755 "$ctx/redis-server"
  # Its user is uid 999 and it runs in /data, as the official image's.
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
RUN usermod -u 999 redis && groupmod -g 999 redis && mkdir /data && chown redis:redis /data
COPY redis-server /usr/local/bin/redis-server
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
DOCKERFILE
  stand_in "$public" "run-python-code-local/redis:7-bookworm" "$ctx"
}

postgres_base() {
  local public="${POSTGRES_IMAGE:-postgres:15-bookworm}" ctx base
  if available "$public"; then echo "$public"; return; fi
  base="$(services_root)"
  new_context
  install -m 755 "$here/local-postgres-entrypoint.sh" "$ctx/docker-entrypoint.sh"
  # The official image's layout: postgres is uid 999, its data in /var/lib/postgresql/data, its
  # binaries on PATH, the socket in /var/run/postgresql. The package's own cluster is not used.
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
RUN rm -rf /var/lib/postgresql/15 /etc/postgresql/15 \
 && usermod -u 999 postgres && groupmod -g 999 postgres \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 /var/lib/postgresql/data && chmod 2777 /var/run/postgresql
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
DOCKERFILE
  stand_in "$public" "run-python-code-local/postgres:15-bookworm" "$ctx"
}

[ "$#" -gt 0 ] || set -- node
for kind in "$@"; do
  case "$kind" in
    node) node_base ;;
    redis) redis_base ;;
    postgres) postgres_base ;;
    *) log "unknown image $kind (node, redis or postgres)"; exit 2 ;;
  esac
done
