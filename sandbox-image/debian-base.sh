#!/usr/bin/env bash
# Builds a base image from Debian's packages alone, no registry: mmdebstrap makes a root filesystem
# of the given packages and `docker import` turns it into IMAGE. Used for the offline sandbox base
# (build.sh) and for local bases of Dockerfile.fastapi (test/helpers/local-bases.sh).
#   debian-base.sh IMAGE PACKAGES [SUITE]      PACKAGES: comma-separated Debian package names
set -euo pipefail
image="$1"; packages="$2"; suite="${3:-bookworm}"
log() { echo "[debian-base] $*" >&2; }

command -v mmdebstrap >/dev/null || {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { log "mmdebstrap is missing: apt-get install mmdebstrap"; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
}
mirror=()
# Use the host's own Debian sources (mirrors, snapshots, proxies) when it has them.
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
  if [ -s "$f" ] && grep -q '^[^#]*deb' "$f"; then mirror=("$f"); break; fi
done
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
log "mmdebstrap $suite -> $image ($packages, from Debian)"
mmdebstrap --variant=essential --quiet \
  --include="$packages" \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$suite" "$tmp/rootfs.tar" "${mirror[@]}"
docker import --change 'ENV LANG=C.UTF-8' "$tmp/rootfs.tar" "$image" >/dev/null
