#!/usr/bin/env bash
# Executions per second of the controller fuzzer (the controller through the in-process
# transport) against the connection fuzzer (the same controller through a socket and NVMe/TCP
# framing), in alternating rounds that share one corpus per fuzzer, as repeated scripts/fuzz
# runs do. The first round also imports the seed corpus (every seed once, large ones included),
# so the steady rounds after it are the figure to read; the median of those is printed last.
#
#   bench/fuzz-ratio.sh [ROUNDS] [SECONDS]      (default 4 rounds of 30 s per fuzzer)
#
# Builds build-fuzz with scripts/fuzz (clang 16, libFuzzer, ASan, UBSan) first.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
secs=${2:-30}
[ "$rounds" -ge 2 ] || { echo "fuzz-ratio: at least 2 rounds" >&2; exit 2; }
scripts/fuzz --seconds 1 controller connection > /dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {  # TARGET: executions per second of one round
  mkdir -p "$work/$1"
  "build-fuzz/fuzz/fuzz_$1" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 "$work/$1" "fuzz/corpus/$1" > "$work/$1.log" 2>&1
  local n
  n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$1.log")
  echo $((n / secs))
}
printf '%-6s %16s %16s %8s\n' round "controller/s" "connection/s" ratio
ratios=()
for i in $(seq "$rounds"); do
  c=$(run controller)
  s=$(run connection)
  r=$(awk -v c="$c" -v s="$s" 'BEGIN { printf "%.1f", c / s }')
  [ "$i" -eq 1 ] || ratios+=("$r")
  printf '%-6s %16s %16s %7sx\n' "$i" "$c" "$s" "$r"
done
printf '%s\n' "${ratios[@]}" | sort -n |
  awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "median of rounds 2-%d: %.1fx\n", NR + 1, m }'
