#!/usr/bin/env bash
# The entrypoint of the local PostgreSQL stand-in (local-bases.sh postgres): what the official
# image's docker-entrypoint.sh does for a compose service. As root it makes PGDATA the postgres
# user's and starts again as that user; on an empty PGDATA it creates the cluster with
# POSTGRES_USER (default postgres) and POSTGRES_PASSWORD, password logins from anywhere
# (POSTGRES_HOST_AUTH_METHOD, default scram-sha-256), and the database POSTGRES_DB (default the
# user's name); then it runs postgres. /docker-entrypoint-initdb.d is not supported.
set -euo pipefail
[ "${1#-}" = "${1:-}" ] || set -- postgres "$@"   # only options: they are postgres's
[ "${1:-}" = postgres ] || exec "$@"

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    echo "docker-entrypoint: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
  fi
  initdb --username="$user" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") --auth-local=trust --auth-host="$auth" >/dev/null
  printf 'host all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    # Single-user mode: no server to start and stop, nothing listening before the cluster is ready.
    postgres --single -D "$PGDATA" -j postgres >/dev/null <<<"CREATE DATABASE \"${db//\"/\"\"}\";"
  fi
fi
exec "$@"
