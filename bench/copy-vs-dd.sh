#!/usr/bin/env bash
# An emulated copy of a file into another against dd with O_DIRECT, in alternating pairs
# (blkcopy, dd, blkcopy, dd, ...) so both see the same disk, then the median of the per-pair
# ratios (dd's time over blkcopy's: > 1.0 means blkcopy was faster).
#
#   bench/copy-vs-dd.sh [DIR [SIZE_MIB [PAIRS]]]      (defaults: a fresh directory under /var/tmp,
#                                                      1024 MiB, 9 pairs)
#
# DIR should be on the file system to measure (ext4 by default here: blkcopy emulates there,
# reading into host memory and writing back with O_DIRECT). Both files are written in full first,
# so neither tool allocates blocks during the timed runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blkcopy=${BLKCOPY:-$root/build/blkcopy}
dir=${1:-}
mib=${2:-1024}
pairs=${3:-9}
own=
if [ -z "$dir" ]; then dir=$(mktemp -d /var/tmp/copy-vs-dd.XXXXXX); own=$dir; fi
cleanup() { rm -f "$dir/src" "$dir/dst"; [ -z "$own" ] || rmdir "$own"; }
trap cleanup EXIT
head -c "$((mib << 20))" /dev/urandom > "$dir/src"
dd if=/dev/zero of="$dir/dst" bs=4M count="$((mib / 4))" oflag=direct status=none
sync
echo "file system: $(stat -f -c %T "$dir"), $mib MiB, $pairs pairs"

now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" > /dev/null; awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }'; }
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
