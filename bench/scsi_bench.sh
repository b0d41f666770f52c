#!/usr/bin/env bash
# SCSI copy offload, structurally: a 256 MiB copy between two LIO LUNs (tcm_loop, fileio) in the
# TCG guest (tests/interop/guest.sh): blkcopy offloaded (EXTENDED COPY), blkcopy emulated
# (--emulate), and the same copy by ddpt's XCOPY mode (oflag=xcopy) and sg3-utils' sg_xcopy. Times in a TCG guest mean
# little; what it reports is what the host had to do: EXTENDED COPY commands (counted the same
# way for both programs: SG_IO calls whose CDB starts with 83h, under strace), bytes read
# through the initiator (/sys/block/sdX/stat), blkcopy's --json counters and CPU seconds (busybox
# time, whole process), and whether the destination equals the original (an md5 taken before
# the first copy; the source is checked too). Three rounds; medians.
#   bench/scsi_bench.sh [BLKCOPY_BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blkcopy=$(realpath "${1:-$root/build/blkcopy}")
for tool in ddpt sg_xcopy strace; do
  command -v $tool > /dev/null || { echo "scsi_bench: $tool not installed (scripts/setup installs it)"; exit 77; }
done
work=$(mktemp -d)
[ -n "${BLKCOPY_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
cat > "$work/bench.sh" <<'GUEST'
. /lib.sh
# The source's data goes straight into its backing file (writing it through the LUN in TCG
# takes minutes); the destination starts empty. The copy is compared with that file.
dd if=/dev/urandom of=/tmp/lun_a.img bs=1M count=256 2>/dev/null
orig=$(md5sum < /tmp/lun_a.img)  # what the destination must hold, and the source keep
backstore lun_a 268435456 0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a
backstore lun_b 268435456 0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b
target naa.5001405000000001 naa.5001405000000002 lun_a lun_b
A=$(disk naa.5001405000000001 0); B=$(disk naa.5001405000000001 1)
sg() { echo "/dev/$(basename "$(ls -d /sys/block/"$(basename "$1")"/device/scsi_generic/*)")"; }
xcopies() { grep -c 'cmdp="\\x83\\x00' /tmp/trace || true; }
verify() {
  [ "$(md5sum < /tmp/lun_a.img)" = "$orig" ] || { echo NO-source-changed; return; }
  [ "$(dd if="$B" bs=1M count=256 iflag=direct 2>/dev/null | md5sum)" = "$orig" ] && echo yes || echo NO
}
cpu() { awk '$1 == "user" || $1 == "sys" {t += $2} END {print t}' /tmp/time; }
for round in 1 2 3; do
  for how in offloaded emulated ddpt sg_xcopy; do
    dd if=/dev/zero of="$B" bs=1M count=256 oflag=direct 2>/dev/null
    r=$(sectors_read "$A")
    case $how in
      offloaded) set -- blkcopy copy "$A@0" "$B@0" --length 256M --json ;;
      emulated) set -- blkcopy copy "$A@0" "$B@0" --length 256M --json --emulate ;;
      ddpt) set -- ddpt if="$A" of="$B" bs=512 count=524288 oflag=xcopy ;;
      sg_xcopy) set -- sg_xcopy if="$(sg "$A")" of="$(sg "$B")" bs=512 count=524288 ;;  # sg nodes only
    esac
    busybox time -p "$@" > /tmp/out 2> /tmp/time || { cat /tmp/out /tmp/time; echo "BENCH-FAILED $how"; }
    read_mib=$(( ($(sectors_read "$A") - r) / 2048 ))
    ok=$(verify)
    dd if=/dev/zero of="$B" bs=1M count=256 oflag=direct 2>/dev/null
    strace -f -e trace=ioctl -e abbrev=none -s 4 -o /tmp/trace "$@" > /dev/null 2>&1 || true
    echo "BENCH $round $how $(xcopies) $read_mib $(cpu) $ok $(json offloaded_bytes) $(json host_written_bytes)"
  done
done
GUEST
BLKCOPY_GUEST_TOOLS="ddpt sg_xcopy strace" "$root/tests/interop/guest.sh" "$work/bench.sh" "$blkcopy" > "$work/console" || true
grep -a -o "BENCH.*" "$work/console" > "$work/rows" || { cat "$work/console"; exit 1; }
grep -a "BENCH-FAILED" "$work/rows" && exit 1
echo "| 256 MiB between two LIO LUNs (TCG guest) | EXTENDED COPY commands | read through the initiator (MiB) | CPU s, median (runs) | destination = original |"
echo "| --- | --- | --- | --- | --- |"
for how in offloaded emulated ddpt sg_xcopy; do
  grep -a "^BENCH [0-9] $how " "$work/rows" | sort -g -k6,6 | awk -v how="$how" '
    { rows[NR] = $0; cpus = cpus (NR > 1 ? ", " : "") $6; ok = ok (NR > 1 ? ", " : "") $7 }
    END { split(rows[int((NR + 1) / 2)], m, " ")
          name = how == "ddpt" ? "ddpt 0.97 oflag=xcopy" : how == "sg_xcopy" ? "sg_xcopy (sg3-utils 1.46)" : "blkcopy " how
          printf "| %s | %s | %s | %s (%s) | %s |\n", name, m[4], m[5], m[6], cpus, ok }'
done
