# Runs inside the guest (tests/interop/local_nvme_run.sh starts it): blkcopy's nvme driver on
# QEMU's emulated NVMe controller through io_uring passthrough. Controller "blkcopy-copy" has two
# namespaces (MSSRL 32, MCL 64, MSRC 3, 512-byte blocks: four full ranges would exceed MCL); controller "blkcopy-pi" one namespace
# with protection information. Every copy is checked against the ORIGINAL data kept in /tmp/orig.
# Lines "EXPECT-COPIES N" tell the runner how many Copy commands QEMU's trace must show, and
# "EXPECT-FORMAT2 N" how many of them cross namespaces (range format 2, QEMU 10 only); copies
# run one command at a time (--copies-in-flight 1) so that the trace shows each command's ranges
# together.
set -u
. /lib.sh

sleep 1
ctrl=""; pi=""
for c in /sys/class/nvme/nvme*; do
  case "$(cat "$c/serial" 2>/dev/null | tr -d ' ')" in
    blkcopy-copy) ctrl=$(basename "$c") ;;
    blkcopy-pi) pi=$(basename "$c") ;;
  esac
done
[ -n "$ctrl" ] && [ -n "$pi" ] || fail "QEMU's controllers not found: $(ls /sys/class/nvme)"
N1=/dev/${ctrl}n1; N2=/dev/${ctrl}n2; G1=/dev/ng${ctrl#nvme}n1
[ -b "$N1" ] && [ -b "$N2" ] && [ -c "$G1" ] || fail "no $N1, $N2 or $G1"

step "info shows the limits and the Identify values"
blkcopy info "$N1" > /tmp/out 2>&1 || fail "info"
cat /tmp/out
for want in "mssrl.*32" "mcl.*64" "msrc.*3" "oncs" "ocfs.*0x000[3f]" "NVMe Copy on the controller"; do
  grep -q "$want" /tmp/out || fail "info lacks '$want'"
done
blkcopy info "$N1" --json > /tmp/out 2>&1 || fail "info --json"
[ "$(json copy_max_hw_bytes)" = 32768 ] || fail "copy_max_hw_bytes is not MCL 64 x 512"
[ "$(json copy_segment_max_bytes)" = 16384 ] || fail "copy_segment_max_bytes is not MSSRL 32 x 512"
[ "$(json copy_max_src_segments)" = 4 ] || fail "copy_max_src_segments is not MSRC + 1"

step "write known data"
dd if=/dev/urandom of=/tmp/orig bs=1M count=8 2>/dev/null
dd if=/tmp/orig of="$N1" bs=1M oflag=direct 2>/dev/null || fail "write $N1"
same "$N1" 0 16384 0 "read back"

offloaded() {  # $1: length; checks the --json result in /tmp/out
  [ "$(json offloaded_bytes)" = "$1" ] || fail "offloaded_bytes is not $1"
  [ "$(json host_read_bytes)" = 0 ] || fail "host_read_bytes is not 0"
  echo "EXPECT-COPIES $(json commands)"
}

step "one range (16 KiB, MSSRL)"
C="--copies-in-flight 1"
blkcopy copy $C "$N1@0" "$N1@16M" --length 16k --json > /tmp/out || fail "copy"
offloaded 16384
[ "$(json commands)" = 1 ] || fail "a 16 KiB copy took $(json commands) Copy commands"
same "$N1" 32768 32 0 "one range"

step "vectored: MSRC + 1 = 4 ranges into one destination, 112 blocks: two Copy commands (MCL 64)"
blkcopy copy $C "$G1" "$N1@20M" -r 0:16k -r 1M:16k -r 2M:8k -r 3M:16k --json > /tmp/out || fail "vectored"
offloaded 57344
[ "$(json commands)" = 2 ] || fail "4 ranges over MCL took $(json commands) Copy commands"
same "$N1" 40960 32 0 "vectored range 1"; same "$N1" 40992 32 2048 "vectored range 2"
same "$N1" 41024 16 4096 "vectored range 3"; same "$N1" 41040 32 6144 "vectored range 4"

step "longer than MCL: 4 MiB in Copy commands of at most 32 KiB"
blkcopy copy $C "$N1@0" "$N1@24M" --length 4M --json > /tmp/out || fail "long copy"
offloaded 4194304
[ "$(json commands)" -ge 128 ] || fail "4 MiB in $(json commands) commands: more than MCL each"
same "$N1" 49152 8192 0 "long copy"

step "overlapping: 1 MiB from 0 to 256 KiB on the same namespace (memmove)"
dd if=/tmp/orig of="$N1" bs=1M count=2 seek=32 oflag=direct 2>/dev/null
blkcopy copy $C "$N1@32M" "$N1@33024k" --length 1M --json > /tmp/out || fail "overlap"
offloaded 1048576
same "$N1" 66048 2048 0 "overlap"
same "$N1" 65536 512 0 "overlap: the bytes before the destination"

step "past the end: refused before anything is sent, nothing written"
past_end "$N1" "$N1"

step "copy offload off (copy_max_bytes 0): emulated, same data"
blkcopy copy "$N1@0" "$N1@40M" --length 1M --copy-max-bytes 0 --json > /tmp/out || fail "emulated"
[ "$(json offloaded_bytes)" = 0 ] && [ "$(json emulated_bytes)" = 1048576 ] || fail "not emulated"
same "$N1" 81920 2048 0 "emulated"

ocfs=$(blkcopy info "$N1" --json | sed -n 's/.*"ocfs": *\([0-9]*\).*/\1/p')  # a number in JSON
echo "QEMU's controller: OCFS $ocfs"
case "$ocfs" in
  3)  # formats 0 and 1
    step "between namespaces: QEMU 7.2 offers no format 2, so emulated"
    blkcopy copy $C "$N1@0" "$N2@0" --length 1M --json > /tmp/out || fail "cross-namespace"
    [ "$(json emulated_bytes)" = 1048576 ] || fail "cross-namespace copy not emulated"
    same "$N2" 0 2048 0 "cross-namespace" ;;
  15)  # formats 0 to 3
    step "between namespaces: format 2 (Host Behavior Support CDFE set by blkcopy), offloaded"
    blkcopy copy $C "$N1@0" "$N2@0" --length 1M --json > /tmp/out || fail "cross-namespace"
    offloaded 1048576; echo "EXPECT-FORMAT2 $(json commands)"
    same "$N2" 0 2048 0 "cross-namespace"
    step "between namespaces, vectored: 4 ranges of n1 into n2"
    blkcopy copy $C "$N1" "$N2@4M" -r 1M:16k -r 3M:8k -r 5M:16k -r 7M:4k --json > /tmp/out ||
      fail "cross-namespace vectored"
    offloaded 45056; echo "EXPECT-FORMAT2 $(json commands)"
    same "$N2" 8192 32 2048 "cross vectored 1"; same "$N2" 8224 16 6144 "cross vectored 2"
    same "$N2" 8240 32 10240 "cross vectored 3"; same "$N2" 8272 8 14336 "cross vectored 4"
    step "between namespaces, the other way: n2 back into n1"
    blkcopy copy $C "$N2@0" "$N1@52M" --length 64k --json > /tmp/out || fail "n2 -> n1"
    offloaded 65536; echo "EXPECT-FORMAT2 $(json commands)"
    same "$N1" 106496 128 0 "n2 -> n1" ;;
  *) fail "unexpected OCFS $ocfs" ;;
esac

step "a namespace with protection information is refused, saying why"
if blkcopy info "/dev/${pi}n1" > /tmp/out 2>&1; then fail "PI namespace opened"; fi
grep -q "protection information" /tmp/out || fail "unclear PI refusal: $(cat /tmp/out)"

step "no read/write access to the generic device"
copy_denied "$G1"
su -s /bin/sh nobody -c "blkcopy info $G1" > /tmp/out 2>&1 && fail "nobody opened $G1"
grep -q "permission denied on $G1: needs read access" /tmp/out || fail "info: $(cat /tmp/out)"

step "io_uring without passthrough: the block device, copies emulated, with a notice"
BLKCOPY_PLAIN_RING=1 blkcopy copy "$N1@0" "$N1@44M" --length 1M --json > /tmp/out 2>/tmp/err || fail "plain ring"
grep -q "opening $N1 as a block device, copies emulated" /tmp/err || fail "no notice: $(cat /tmp/err)"
[ "$(json emulated_bytes)" = 1048576 ] || fail "plain ring: not emulated"
same "$N1" 90112 2048 0 "plain ring"

step "the Linux NVMe/TCP host -> blkcopy's target -> this controller"
serve_and_connect "$N1" nqn.2024-01.io.blkcopy:local
nvme id-ns "$TCPNS" > /tmp/idn
grep -q "mssrl *: 32$" /tmp/idn && grep -q "mcl *: 64$" /tmp/idn && grep -q "msrc *: 3$" /tmp/idn ||
  fail "the target does not advertise the drive's limits: $(grep -E 'mssrl|mcl|msrc' /tmp/idn)"
nvme copy "$TCPNS" --sdlba=98304 --slbs=0,4096 --blocks=31,31 || fail "nvme copy"
echo "EXPECT-COPIES 1"
same "$N1" 98304 32 0 "kernel copy range 1"; same "$N1" 98336 32 4096 "kernel copy range 2"
stop_serving nqn.2024-01.io.blkcopy:local
echo "local NVMe: all checks passed"
