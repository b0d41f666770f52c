#!/usr/bin/env bash
# Local NVMe copy offload, structurally: a 256 MiB copy on QEMU's emulated NVMe controller in
# the TCG guest (tests/interop/guest.sh), offloaded (NVMe Copy through io_uring passthrough)
# against emulated (--emulate: read into host memory, write back). Times in a TCG guest mean
# little; what it reports is what the host had to do: bytes read and written, Copy commands,
# submissions per MiB, and blkcopy's CPU seconds during the copy (its --json cpu_seconds) and
# for the whole process (start-up, Identify and the check included; busybox time). Three rounds,
# alternating; the median copy is reported (the first round also warms QEMU's caches).
#   bench/local_nvme_bench.sh [BLKCOPY_BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blkcopy=$(realpath "${1:-$root/build/blkcopy}")
work=$(mktemp -d)
[ -n "${BLKCOPY_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
truncate -s 800M "$work/a.img"
cat > "$work/bench.sh" <<'GUEST'
sleep 1
for c in /sys/class/nvme/nvme*; do [ "$(tr -d ' ' < "$c/serial")" = blkcopy-bench ] && N=/dev/$(basename "$c")n1; done
dd if=/dev/urandom of=/tmp/r bs=1M count=16 2>/dev/null
for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do dd if=/tmp/r of="$N" bs=1M seek=$((i * 16)) oflag=direct 2>/dev/null; done
run() {  # $1: label, $2: extra options, $3: destination offset
  busybox time -p blkcopy copy "$N@0" "$N@$3" --length 256M --json $2 > /tmp/out 2>/tmp/time
  j() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" /tmp/out | head -n 1; }
  cpu=$(awk '$1 == "user" || $1 == "sys" {t += $2} END {print t}' /tmp/time)
  echo "BENCH $1 $(j offloaded_bytes) $(j emulated_bytes) $(j host_read_bytes) $(j host_written_bytes) $(j commands) $(j cpu_seconds) $cpu $(j seconds)"
  dd if="$N" of=/tmp/a bs=1M skip=0 count=256 iflag=direct 2>/dev/null
  dd if="$N" of=/tmp/b bs=1M skip=$(($3 / 1048576)) count=256 iflag=direct 2>/dev/null
  cmp -s /tmp/a /tmp/b && echo "BENCH-VERIFIED $1" ; rm -f /tmp/a /tmp/b
}
for round in 1 2 3; do  # alternating; the first round also warms QEMU's side (its page cache)
  run offloaded "" 268435456
  run emulated --emulate 536870912
done
GUEST
BLKCOPY_GUEST_QEMU_ARGS="-drive file=$work/a.img,if=none,id=a,format=raw \
 -device nvme,id=c0,serial=blkcopy-bench \
 -device nvme-ns,drive=a,bus=c0,nsid=1,${BLKCOPY_BENCH_NS_LIMITS:-mssrl=2048,mcl=8192,msrc=127}" \
  "$root/tests/interop/guest.sh" "$work/bench.sh" "$blkcopy" > "$work/console" || true
grep -a -o "BENCH.*" "$work/console" > "$work/rows" || { cat "$work/console"; exit 1; }
echo "| 256 MiB copy on QEMU NVMe (TCG guest) | host read | host written | Copy commands | submissions/MiB | CPU s of the copy, median of 3 (each run; of the process) | verified |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for label in offloaded emulated; do
  grep -a "^BENCH $label " "$work/rows" | sort -g -k8,8 | awk -v label="$label" \
    -v verified="$(grep -c "BENCH-VERIFIED $label" "$work/rows")" '
    { rows[NR] = $0; cpus = cpus (NR > 1 ? ", " : "") sprintf("%.3f", $8); procs = procs (NR > 1 ? ", " : "") $9 }
    END {
      split(rows[int((NR + 1) / 2)], m, " ")
      cmds = label == "offloaded" ? m[7] : 0
      printf "| %s | %s | %s | %s | %.2f | %.3f (%s; process %s) | %d of %d |\n", label, m[5], m[6], cmds, m[7] / 256,
             m[8], cpus, procs, verified, NR
    }'
done
