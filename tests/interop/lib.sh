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
