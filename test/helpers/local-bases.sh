#!/usr/bin/env bash
# A local Node.js base image for Dockerfile.fastapi where no registry answers (as on our CI
# machines): a Debian root filesystem from Debian's packages (sandbox-image/debian-base.sh) with
# this host's own node and npm copied in, and this host's CA bundle, so that `npm ci` inside the
# build trusts whatever TLS-inspecting proxy the host trusts. Prints the image name.
# When the public NODE_IMAGE (node:20-bookworm-slim) is present or can be pulled, prints that instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
public="${NODE_IMAGE:-node:20-bookworm-slim}"
log() { echo "[local-bases] $*" >&2; }

if docker image inspect "$public" >/dev/null 2>&1 || timeout 60 docker pull -q "$public" >/dev/null 2>&1; then
  echo "$public"; exit 0
fi

node_bin="$(readlink -f "$(command -v node)")"
if ldd "$node_bin" 2>/dev/null | grep -q libnode; then
  log "this host's node links libnode (Debian's nodejs); a self-contained build (nodejs.org, NodeSource) is needed"; exit 1
fi
npm_dir="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"   # .../node_modules/npm
ca_bundle="/etc/ssl/certs/ca-certificates.crt"
debian="run-python-code-local/debian:bookworm"
tag="run-python-code-local/node:$(node -p process.versions.node)-$(cat "$node_bin" "$ca_bundle" | sha256sum | cut -c1-8)"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
log "$public cannot be pulled; building $tag from Debian's packages and this host's node"

docker image inspect "$debian" >/dev/null 2>&1 || bash "$root/sandbox-image/debian-base.sh" "$debian" ca-certificates,libstdc++6
ctx="$(mktemp -d)"; trap 'rm -rf "$ctx"' EXIT
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
