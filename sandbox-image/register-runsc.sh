#!/usr/bin/env bash
# Registers gVisor's runsc with the local Docker engine, as root: merges a `runsc` entry into the
# `runtimes` key of /etc/docker/daemon.json (every other key, and a runsc entry the operator already
# wrote, are kept as they are), then sends dockerd SIGHUP, which reloads runtimes without a restart
# (running containers, other helpers' included, are untouched).
#   --network=none: our sandboxes have no network, and without it runsc refuses a `--network none`
#   container ("cannot run with network enabled in root network namespace").
# Environment: DAEMON_JSON (default /etc/docker/daemon.json), RUNSC_PATH (default: `command -v runsc`).
set -euo pipefail
log() { echo "[register-runsc] $*" >&2; }

daemon_json="${DAEMON_JSON:-/etc/docker/daemon.json}"
runsc_path="${RUNSC_PATH:-$(command -v runsc || true)}"
[ -n "$runsc_path" ] || { log "runsc is not installed (apt-get install runsc)"; exit 1; }
[ "$(id -u)" = 0 ] || { log "must run as root to write $daemon_json and signal dockerd"; exit 1; }

mkdir -p "$(dirname "$daemon_json")"
python3 - "$daemon_json" "$runsc_path" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        text = f.read()
    config = json.loads(text) if text.strip() else {}
except FileNotFoundError:
    config = {}
if not isinstance(config, dict):
    sys.exit(f"{path} is not a JSON object; fix it by hand")
runtimes = config.setdefault("runtimes", {})
if "runsc" in runtimes:
    args = runtimes["runsc"].get("runtimeArgs", [])
    if "--network=none" not in args:
        print(f"[register-runsc] {path} already has a runsc runtime without --network=none; left as it is, "
              "but sandboxes with no network will not start under it", file=sys.stderr)
    sys.exit(0)
runtimes["runsc"] = {"path": runsc, "runtimeArgs": ["--network=none"]}
tmp = f"{path}.run-python-code.tmp"
with open(tmp, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
if os.path.exists(path):
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
os.replace(tmp, path)
PY

pid="$(pidof dockerd || true)"
[ -n "$pid" ] || { log "dockerd is not running here; $daemon_json is written, start dockerd to use it"; exit 0; }
kill -HUP $pid
for _ in $(seq 1 20); do
  docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"' && { log "runsc registered ($daemon_json, dockerd reloaded)"; exit 0; }
  sleep 0.5
done
log "dockerd did not pick up runsc after SIGHUP; see its log (is $daemon_json valid, and the one dockerd reads?)"
exit 1
