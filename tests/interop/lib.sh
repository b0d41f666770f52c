# Helpers for the scripts that run inside the guest (guest.sh puts this file at /lib.sh).
# Data is checked in 512-byte blocks against the ORIGINAL bytes kept in /tmp/orig.
fail() {
  echo "FAIL: $*"
  for f in /tmp/out /tmp/err /tmp/serve.log; do [ -s "$f" ] && { echo "-- $f"; cat "$f"; }; done
  dmesg | tail -n 8
  exit 1
}
step() { echo "== $(cut -d" " -f1 /proc/uptime) $*"; }
# COUNT blocks from LBA of DEV into FILE: readb DEV LBA COUNT FILE
readb() { dd if="$1" of="$4" bs=512 skip="$2" count="$3" iflag=direct 2>/dev/null || fail "read $1"; }
# COUNT blocks of the original from LBA into FILE: origb LBA COUNT FILE
origb() { dd if=/tmp/orig of="$3" bs=512 skip="$1" count="$2" 2>/dev/null; }
# checks blocks [LBA, LBA+COUNT) of DEV against the original's from ORIG: same DEV LBA COUNT ORIG WHAT
same() { readb "$1" "$2" "$3" /tmp/got; origb "$4" "$3" /tmp/want; cmp -s /tmp/got /tmp/want || fail "$5: data differs"; }
# a number from the --json result in /tmp/out
json() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" /tmp/out | head -n 1; }

# LIO (the Linux SCSI target) in configfs, with tcm_loop LUNs seen by this same guest: fileio
# backstores (a file each) and one tcm_loop target per session (SCSI.md has the order of steps).
T=/sys/kernel/config/target
backstore() {  # NAME SIZE SERIAL [3PC] [FOLDER]
  local d=$T/core/fileio_0/$1
  mkdir -p "$d" || fail "mkdir $d"
  echo "fd_dev_name=${5:-/tmp}/$1.img,fd_dev_size=$2" > "$d/control"
  echo "$3" > "$d/wwn/vpd_unit_serial"  # before export: VPD 0x83 gets its NAA designator
  echo 1 > "$d/enable" || fail "enable $1"
  echo "${4:-1}" > "$d/attrib/emulate_3pc"
}
target() {  # WWN NEXUS NAME... : one tcm_loop target, LUN i = backstore i
  local t=$T/loopback/$1/tpgt_1 i=0
  mkdir -p "$t" && echo "$2" > "$t/nexus" || fail "tcm_loop $1"
  shift 2
  for b in "$@"; do
    mkdir "$t/lun/lun_$i" && ln -s "$T/core/fileio_0/$b" "$t/lun/lun_$i/$b" || fail "lun $b"
    i=$((i + 1))
  done
}
disk() {  # WWN LUN: the block device of that LUN
  local addr n=0
  addr=$(cat "$T/loopback/$1/tpgt_1/address")
  while [ $n -lt 50 ]; do
    for b in /sys/class/scsi_device/"$addr:$2"/device/block/*; do
      [ -e "$b" ] && [ -b "/dev/$(basename "$b")" ] && { echo "/dev/$(basename "$b")"; return; }
    done
    sleep 0.1; n=$((n + 1))
  done
  fail "no block device for $1 LUN $2"
}
# sectors the initiator has read from a disk (/sys/block/X/stat)
sectors_read() { awk '{print $3}' "/sys/block/$(basename "$1")/stat"; }
