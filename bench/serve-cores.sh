#!/usr/bin/env bash
# `blkcopy serve --cores 1` against `--cores 2`: two namespaces of mem:1G,nodata (no data is
# stored, so the figure is the target's per-command work, not memcpy), loaded by `blkcopy perf`
# with two jobs (two connections, one per target loop) and 32 reads or copies in flight each.
# The target's statistics line (SIGUSR1) gives the requests handed to another loop ("hops"):
# with a device channel per loop that is 0.
#
#   bench/serve-cores.sh [BLKCOPY_BINARY]      BENCH_SECONDS (default 10) sets each row's time
#
# On a 2-core machine the client has no core of its own: with --cores 1 the target is pinned to
# core 1 and the client to core 0; with --cores 2 the target's loops take both cores and the
# client shares core 0 with one of them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blkcopy=$(realpath "${1:-$root/build/blkcopy}")
secs=${BENCH_SECONDS:-10}
work=$(mktemp -d)
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
NQN=nqn.2024-01.io.blkcopy:cores PORT=4437

iops() {  # NS RW
  taskset -c 0 "$blkcopy" perf "nvme-tcp://127.0.0.1:$PORT/$NQN?ns=$1" --force --rw "$2" --qd 32 \
    --jobs 2 --time "$secs" --json | sed -n 's/^  "iops": *\([0-9.]*\).*/\1/p'
}

printf '%-8s %14s %14s %8s\n' cores "reads/s" "copies/s" hops
for cores in 1 2; do
  cpus=1; [ "$cores" = 1 ] || cpus=0,1
  taskset -c "$cpus" "$blkcopy" serve --ns mem:1G,nodata --ns mem:1G,nodata --nqn $NQN \
    --listen 127.0.0.1:$PORT --discovery-port 0 --cores "$cores" 2> "$work/serve.log" & pid=$!
  for _ in $(seq 100); do "$blkcopy" info "nvme-tcp://127.0.0.1:$PORT/$NQN?ns=1" \
    > /dev/null 2>&1 && break; sleep 0.1; done
  r=$(iops 1 randread)
  c=$(iops 2 randcopy)
  kill -USR1 "$pid"
  for _ in $(seq 50); do grep -q "hops" "$work/serve.log" && break; sleep 0.1; done
  hops=$(sed -n 's/.*; \([0-9]*\) cross-loop hops.*/\1/p' "$work/serve.log" | tail -1)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  printf '%-8s %14.0f %14.0f %8s\n' "$cores" "$r" "$c" "${hops:-?}"
done
