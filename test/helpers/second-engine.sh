#!/usr/bin/env bash
# A second Docker engine on this machine, for tests of two workers with engines of their own:
#   second-engine.sh start <dir> <image>   starts it (socket <dir>/docker.sock) and loads <image> into it
#   second-engine.sh stop <dir>            stops it and removes everything it made
# It runs in a network namespace of its own: a dockerd with --bridge none in the host's namespace
# deletes the host's docker0 (moby removes the default bridge when bridging is off), which cuts the
# first engine's bridge networking. Its socket is a file, so it answers from the host's namespace.
set -euo pipefail
cmd="$1"; dir="$2"; netns="rpc-engine2-$(basename "$dir")"
case "$cmd" in
  start)
    image="$3"
    mkdir -p "$dir"
    ip netns add "$netns"
    ip netns exec "$netns" ip link set lo up
    # nsenter, not ip netns exec: that one also mounts a fresh /sys, which hides the cgroup mounts dockerd needs.
    nsenter --net="/run/netns/$netns" nohup dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
      -H "unix://$dir/docker.sock" --bridge none --iptables=false --ip-masq=false --containerd-namespace "rpc-$(basename "$dir")" \
      >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do docker -H "unix://$dir/docker.sock" info >/dev/null 2>&1 && break; sleep 0.5; done
    docker -H "unix://$dir/docker.sock" info >/dev/null || { cat "$dir/dockerd.log" >&2; exit 1; }
    docker save "$image" | docker -H "unix://$dir/docker.sock" load -q >/dev/null
    ip link show docker0 >/dev/null || { echo "docker0 is gone after starting the second engine" >&2; exit 1; }
    ;;
  stop)
    if [ -f "$dir/docker.pid" ]; then
      pid="$(cat "$dir/docker.pid")"
      docker -H "unix://$dir/docker.sock" ps -aq | xargs -r docker -H "unix://$dir/docker.sock" rm -f >/dev/null 2>&1 || true
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    ip netns del "$netns" 2>/dev/null || true
    # Its mounts (overlay layers, netns files) go before its files.
    grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir"
    ;;
esac
