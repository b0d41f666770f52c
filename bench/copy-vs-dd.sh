#!/usr/bin/env bash
# An emulated copy of a file into another against dd with O_DIRECT, in alternating pairs
# (blkcopy, dd, blkcopy, dd, ...) so both see the same disk, then the median of the per-pair
# ratios (dd's time over blkcopy's: > 1.0 means blkcopy was faster).
#
#   bench/copy-vs-dd.sh [DIR [SIZE_MIB [PAIRS]]]      (defaults: /var/tmp, 1024 MiB, 9 pairs)
#
# DIR should be on the file system to measure (ext4 by default here: blkcopy emulates there,
# reading into host memory and writing back with O_DIRECT); the files go in a new folder inside
# it, removed afterwards. SIZE_MIB is a multiple of 4 (dd's 4 MiB blocks). Both files are
# written in full first, so neither tool allocates blocks during the timed runs. A failed copy
# or a destination that differs from the source ends the run with an error. Each run starts
# after a sync and SETTLE_SECONDS (default 3) of quiet: on a virtual disk the write-back of one
# run otherwise slows the next, whichever tool that is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blkcopy=${BLKCOPY:-$root/build/blkcopy}
mib=${2:-1024}
pairs=${3:-9}
settle=${SETTLE_SECONDS:-3}
[[ "$mib" =~ ^[0-9]+$ && $((mib % 4)) -eq 0 && "$mib" -gt 0 ]] ||
  { echo "copy-vs-dd: SIZE_MIB '$mib' must be a positive multiple of 4" >&2; exit 2; }
[[ "$pairs" =~ ^[0-9]+$ && "$pairs" -gt 0 ]] ||
  { echo "copy-vs-dd: PAIRS '$pairs' must be a positive number" >&2; exit 2; }
dir=$(mktemp -d "${1:-/var/tmp}/copy-vs-dd.XXXXXX")
trap 'rm -rf "$dir"' EXIT
head -c "$((mib << 20))" /dev/urandom > "$dir/src"
dd if=/dev/zero of="$dir/dst" bs=4M count="$((mib / 4))" oflag=direct status=none
sync
echo "file system: $(findmnt -no FSTYPE -T "$dir"), $mib MiB, $pairs pairs"

now() { date +%s.%N; }
timed() {  # COMMAND...: its seconds; a failure ends the run
  sync; sleep "$settle"  # the disk's write-back of the run before is not charged to this one
  local t0; t0=$(now)
  "$@" > /dev/null || { echo "copy-vs-dd: failed: $*" >&2; exit 1; }
  awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }'
}
ratios=()
printf '%-5s %10s %10s %8s\n' pair blkcopy dd ratio
for i in $(seq "$pairs"); do
  b=$(timed "$blkcopy" copy "$dir/src" "$dir/dst" --length "${mib}M")
  d=$(timed dd if="$dir/src" of="$dir/dst" bs=4M iflag=direct oflag=direct conv=notrunc status=none)
  r=$(awk -v b="$b" -v d="$d" 'BEGIN { printf("%.3f", d / b) }')
  ratios+=("$r")
  printf '%-5s %9.3fs %9.3fs %7sx\n' "$i" "$b" "$d" "$r"
done
cmp "$dir/src" "$dir/dst" || { echo "copy-vs-dd: the destination differs from the source"; exit 1; }
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END {
  printf("median dd/blkcopy %.3fx (min %.3fx, max %.3fx): blkcopy %s\n", v[int((NR + 1) / 2)],
         v[1], v[NR], v[int((NR + 1) / 2)] >= 1.0 ? "as fast or faster" : "slower") }'
