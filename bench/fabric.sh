#!/usr/bin/env bash
# The 2023 fabric experiment, reproduced: host and target in two network namespaces joined by a
# veth pair shaped to 1 Gb/s at both ends (full duplex), plus an unshaped loopback run. 1 GiB
# copied as (a) 8 KiB copies of one range and (b) 2 MiB copies of 16 ranges, emulated by the
# host and offloaded to the target. Prints the table and draws bench/results/fabric.png.
#
#   sudo bench/fabric.sh [TOTAL]        (default 1G; needs root, iproute2, and gnuplot for the PNG)
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-1G}
bin=build
nqn=nqn.2024-01.io.blkcopy:fabric
out=bench/results
mkdir -p "$out"
results=$(mktemp)
pids=()  # the targets this script started: only these are stopped
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del bc-host 2>/dev/null || true
  ip netns del bc-target 2>/dev/null || true
  rm -f "$results"
}
trap cleanup EXIT
ip netns del bc-host 2>/dev/null || true   # left over from an interrupted run
ip netns del bc-target 2>/dev/null || true

# Two namespaces, a veth pair, 1 Gb/s each way (tbf on both ends), addresses only in there.
ip netns add bc-host
ip netns add bc-target
ip link add bc-h type veth peer name bc-t
ip link set bc-h netns bc-host
ip link set bc-t netns bc-target
ip -n bc-host addr add 10.213.0.1/30 dev bc-h
ip -n bc-target addr add 10.213.0.2/30 dev bc-t
for ns in bc-host bc-target; do ip -n $ns link set lo up; done
ip -n bc-host link set bc-h up
ip -n bc-target link set bc-t up
ip netns exec bc-host tc qdisc add dev bc-h root tbf rate 1gbit burst 512kb latency 50ms
ip netns exec bc-target tc qdisc add dev bc-t root tbf rate 1gbit burst 512kb latency 50ms

ns_size=2G
ip netns exec bc-target $bin/blkcopy serve --listen 10.213.0.2:4420 --nqn $nqn \
  --ns mem:$ns_size --discovery-port 0 2>/dev/null & pids+=($!)
$bin/blkcopy serve --listen 127.0.0.1:4590 --nqn $nqn --ns mem:$ns_size \
  --discovery-port 0 2>/dev/null & pids+=($!)
for i in $(seq 100); do  # until both targets accept connections
  ip netns exec bc-host bash -c 'exec 3<>/dev/tcp/10.213.0.2/4420' 2>/dev/null &&
    bash -c 'exec 3<>/dev/tcp/127.0.0.1/4590' 2>/dev/null && break
  sleep 0.2
done

run() {  # LINK DEVICE ARGS...
  local link=$1 dev=$2; shift 2
  local ex=""
  [ "$link" = "1gbit" ] && ex="ip netns exec bc-host"
  for mode in emulate offload; do
    line=$($ex $bin/blkcopy-fabric-bench "$dev" --total "$total" "$@" --mode $mode)
    echo "$link $* $line" >> "$results"
  done
}
R="nvme-tcp://10.213.0.2:4420/$nqn?ns=1${BLKCOPY_FABRIC_OPTS:-}"  # e.g. &queues=4
L="nvme-tcp://127.0.0.1:4590/$nqn?ns=1"
run 1gbit "$R" --copy 8k --ranges 1
run 1gbit "$R" --copy 2M --ranges 16
run loopback "$L" --copy 8k --ranges 1
run loopback "$L" --copy 2M --ranges 16

# The table: MiB/s and link use (the busier direction's bytes over what the link carries).
printf '\n%-9s %-14s %-9s %10s %10s %12s %12s\n' link copy mode MiB/s seconds "link use" speed-up
awk '
  function field(s, k,   m) { if (match(s, "\"" k "\": [0-9.]+")) { m = substr(s, RSTART, RLENGTH); sub(/.*: /, "", m); return m + 0 } return 0 }
  {
    link = $1; shape = ($3 == "8k") ? "8 KiB x 1" : "2 MiB x 16"
    mode = field($0, "mode"); rate = field($0, "mib_s"); secs = field($0, "seconds")
    sent = field($0, "sent"); recv = field($0, "received")
    m = ($0 ~ /"mode": "emulate"/) ? "emulated" : "offloaded"
    busy = (sent > recv) ? sent : recv
    use = (link == "1gbit") ? sprintf("%.2f%%", 100 * busy / (125000000 * secs)) : "-"
    key = link " " shape
    if (m == "emulated") base[key] = rate
    up = (m == "offloaded" && base[key] > 0) ? sprintf("%.1fx", rate / base[key]) : ""
    printf "%-9s %-14s %-9s %10.1f %10.3f %12s %12s\n", link, shape, m, rate, secs, use, up
    printf "%s|%s|%s|%.1f\n", link, shape, m, rate > "/dev/stderr"
  }' "$results" 2> "$out/fabric.dat"
echo
echo "2023 anchors (1 Gb/s): 8 KiB 107 -> 787 MiB/s, link 97% -> 14%; 2 MiB x 16: 100 -> 2655 MiB/s, 89% -> 0.62%"

if command -v gnuplot >/dev/null; then
  awk -F'|' '{ key = $1 " " $2; if ($3 == "emulated") e[key] = $4; else o[key] = $4; order[key] = NR }
             END { for (k in e) print order[k], "\"" k "\"", e[k], o[k] }' "$out/fabric.dat" |
    sort -n | cut -d' ' -f2- > "$out/fabric.bars"
  gnuplot <<GP
set terminal pngcairo size 900,500
set output "$out/fabric.png"
set title "blkcopy over NVMe/TCP: a copy emulated by the host vs offloaded to the target"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "MiB/s (log scale)"
set logscale y
set yrange [10:*]
set key top left
set xtics rotate by -15
plot "$out/fabric.bars" using 2:xtic(1) title "emulated", '' using 3 title "offloaded"
GP
  echo "chart: $out/fabric.png"
else
  echo "gnuplot not installed: no chart (apt-get install gnuplot-nox)"
fi
