#!/usr/bin/env bash
# Builds the sandbox image. Two ways, one result (the same Dockerfile layer with the same runner):
#   online : FROM python:3.12-slim, numpy/pandas/matplotlib from PyPI (needs a registry and PyPI)
#   offline: a Debian root filesystem made by mmdebstrap from Debian's packages (python3 and
#            python3-numpy/-pandas/-matplotlib), `docker import`ed as the base; no registry needed.
# SANDBOX_BUILD_MODE=online|offline|auto (default auto: online when the registry answers).
# --if-stale: do nothing when the image exists and was built from the current sandbox-image/ files.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image="${SANDBOX_IMAGE:-run-python-code-sandbox:latest}"
mode="${SANDBOX_BUILD_MODE:-auto}"
online_base="${SANDBOX_ONLINE_BASE:-python:3.12-slim}"
suite="${SANDBOX_DEBIAN_SUITE:-bookworm}"
# Debian's packages in the offline base; its tag carries their hash, so a change here rebuilds it.
debian_packages="python3,python3-pip,python3-numpy,python3-pandas,python3-matplotlib,ca-certificates"
offline_base="${SANDBOX_OFFLINE_BASE:-run-python-code-sandbox-base:$suite-$(echo "$debian_packages" | sha256sum | cut -c1-8)}"
log() { echo "[sandbox-build] $*" >&2; }

# The image records which inputs built it, so a changed runner means a rebuild.
inputs_hash="$(cat "$here/Dockerfile" "$here/runner.py" "$here/build.sh" "$here/debian-base.sh" | sha256sum | cut -c1-16)"
if [ "${1:-}" = "--if-stale" ]; then
  have="$(docker image inspect --format '{{ index .Config.Labels "run-python-code.inputs" }}' "$image" 2>/dev/null || true)"
  if [ "$have" = "$inputs_hash" ]; then log "$image is up to date"; exit 0; fi
  if [ -n "$have" ]; then log "$image is stale (built from other sandbox-image/ files); rebuilding"; else log "$image is missing; building"; fi
fi

if [ "$mode" = auto ]; then
  if docker image inspect "$online_base" >/dev/null 2>&1 || timeout 60 docker pull -q "$online_base" >/dev/null 2>&1; then
    mode=online
  else
    mode=offline
  fi
fi
log "mode: $mode"

if [ "$mode" = online ]; then
  base="$online_base"; pypi=1
else
  if ! docker image inspect "$offline_base" >/dev/null 2>&1 || [ "${SANDBOX_REBUILD_BASE:-0}" = 1 ]; then
    bash "$here/debian-base.sh" "$offline_base" "$debian_packages" "$suite"
  fi
  base="$offline_base"; pypi=0
fi

# The sandbox's Python, for requires-python in the code's script blocks (the server reads the label).
python_version="$(docker run --rm --network none --entrypoint python3 "$base" -c 'import platform; print(platform.python_version())')"
docker build -q --build-arg "BASE_IMAGE=$base" --build-arg "INSTALL_PYPI_LIBS=$pypi" \
  --label "run-python-code.inputs=$inputs_hash" --label "run-python-code.python=$python_version" \
  --label "run-python-code.base=$base" --label "run-python-code.pypi=$pypi" -t "$image" "$here" >/dev/null
log "built $image from $base ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
