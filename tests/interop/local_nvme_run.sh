#!/usr/bin/env bash
# blkcopy's nvme driver against QEMU's emulated NVMe controller, in the guest: makes the drives,
# runs tests/interop/local_nvme.sh there with QEMU tracing the Copy commands, then checks the
# trace: as many Copy commands as blkcopy said it sent (and as many in range format 2), none
# over MCL (QEMU 7.2 does not check MCL itself), no range over MSSRL, no more ranges than MSRC + 1. The guest sends one Copy at a
# time, so each command's ranges follow it in the trace.
#   tests/interop/local_nvme_run.sh BLKCOPY_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
blkcopy=$(realpath "$1")
work=$(mktemp -d)
[ -n "${BLKCOPY_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
MSSRL=32 MCL=64 MSRC=3
truncate -s 128M "$work/a.img" "$work/b.img"
truncate -s 16M "$work/pi.img"
export BLKCOPY_GUEST_QEMU_ARGS="\
 -drive file=$work/a.img,if=none,id=a,format=raw -drive file=$work/b.img,if=none,id=b,format=raw\
 -drive file=$work/pi.img,if=none,id=p,format=raw\
 -device nvme,id=c0,serial=blkcopy-copy -device nvme,id=c1,serial=blkcopy-pi\
 -device nvme-ns,drive=a,bus=c0,nsid=1,mssrl=$MSSRL,mcl=$MCL,msrc=$MSRC\
 -device nvme-ns,drive=b,bus=c0,nsid=2,mssrl=$MSSRL,mcl=$MCL,msrc=$MSRC\
 -device nvme-ns,drive=p,bus=c1,nsid=1,ms=8,pi=1\
 -trace pci_nvme_copy,file=$work/trace -trace pci_nvme_copy_source_range,file=$work/trace -trace pci_nvme_copy_out,file=$work/trace"
"$here/guest.sh" "$here/local_nvme.sh" "$blkcopy" | tee "$work/console" || exit "${PIPESTATUS[0]}"

expected=$(grep -a -o 'EXPECT-COPIES [0-9]*' "$work/console" | awk '{n += $2} END {print n + 0}')
format2=$({ grep -a -o 'EXPECT-FORMAT2 [0-9]*' "$work/console" || true; } | awk '{n += $2} END {print n + 0}')
traced2=$(grep -c 'pci_nvme_copy .*format 0x2' "$work/trace" || true)
echo "== QEMU's trace: $(grep -c 'pci_nvme_copy ' "$work/trace" || true) Copy commands," \
     "$expected expected; $traced2 in range format 2, $format2 expected"
[ "$traced2" = "$format2" ] || { echo "trace: $traced2 format-2 Copy commands, blkcopy sent $format2"; exit 1; }
awk -v mssrl=$MSSRL -v mcl=$MCL -v ranges=$((MSRC + 1)) -v expected="$expected" '
  function close_cmd() {
    if (n && total > mcl) { print "trace: a Copy of " total " blocks, over MCL " mcl; bad = 1 }
    if (n > ranges) { print "trace: a Copy of " n " ranges, over MSRC+1 " ranges; bad = 1 }
  }
  /pci_nvme_copy / { close_cmd(); cmds++; n = 0; total = 0 }
  /pci_nvme_copy_source_range / {
    for (i = 1; i < NF; i++) if ($i == "nlb") nlb = $(i + 1) + 0
    n++; total += nlb
    if (nlb > mssrl) { print "trace: a range of " nlb " blocks, over MSSRL " mssrl; bad = 1 }
  }
  END {
    close_cmd()
    if (cmds != expected) { print "trace: " cmds " Copy commands, blkcopy reported " expected; bad = 1 }
    if (cmds == 0) { print "trace: no Copy command reached the controller"; bad = 1 }
    exit bad
  }' "$work/trace" || { echo "== the trace begins:"; head -n 5 "$work/trace"; exit 1; }
echo "local NVMe: QEMU's trace agrees"
