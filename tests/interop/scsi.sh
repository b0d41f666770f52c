# Runs inside the guest (tests/interop/guest.sh): blkcopy's scsi driver against the Linux SCSI
# target (LIO) through tcm_loop, set up in configfs. One tcm_loop target with three LUNs on
# fileio backstores: A and B (EXTENDED COPY on), C (emulate_3pc=0), E (on a file system that
# fills up, for a copy failing part way); a second tcm_loop target
# with LUN D, which A's session cannot reach. Every copy is checked against the ORIGINAL data
# kept in /tmp/orig, and offloaded copies also against the initiator's own read counter for the
# source LUN (/sys/block/sdX/stat): an offloaded copy reads nothing through the initiator.
set -u
. /lib.sh
[ -d $T/core ] || fail "LIO is not loaded (target_core_mod)"

step "LIO: tcm_loop targets with fileio LUNs"
W1=naa.5001405000000001; W2=naa.5001405000000003
backstore lun_a 134217728 0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a
backstore lun_b 134217728 0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b
backstore lun_c 16777216 0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c 0
backstore lun_d 16777216 0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d
mkdir -p /tmp/small && mount -t tmpfs -o size=3m small /tmp/small  # E's file system fills up
backstore lun_e 16777216 0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e 1 /tmp/small
target $W1 naa.5001405000000002 lun_a lun_b lun_c lun_e
target $W2 naa.5001405000000004 lun_d
A=$(disk $W1 0); B=$(disk $W1 1); C=$(disk $W1 2); E=$(disk $W1 3); D=$(disk $W2 0)
echo "A=$A B=$B C=$C D=$D E=$E"

step "info: limits from RECEIVE COPY RESULTS, the raw values"
blkcopy info "$A" > /tmp/out 2>&1 || fail "info"
cat /tmp/out
for want in "kind  *scsi" "3pc  *1" "naa  *6001405" "max_segment_descriptors  *1" \
            "max_cscd_descriptors  *2" "EXTENDED COPY (LID1)" "token copy (ODX)  *not used" \
            "timeout  *60000 ms"; do
  grep -q "$want" /tmp/out || fail "info lacks '$want'"
done
blkcopy info "$A" --json > /tmp/out 2>&1 || fail "info --json"
[ "$(json copy_max_src_segments)" = 1 ] || fail "copy_max_src_segments is not LIO's 1 segment"
[ "$(json copy_segment_max_bytes)" = $((65535 * 512)) ] || fail "copy_segment_max_bytes is not 65535 blocks"
[ "$(json copy_max_hw_bytes)" = $((65535 * 512)) ] || fail "copy_max_hw_bytes is not one segment"

step "write known data"
dd if=/dev/urandom of=/tmp/orig bs=1M count=48 2>/dev/null
dd if=/tmp/orig of="$A" bs=1M oflag=direct 2>/dev/null || fail "write $A"
same "$A" 0 98304 0 "read back"

offloaded() {  # LENGTH COMMANDS SOURCE-DISK READS-BEFORE: the --json result in /tmp/out
  [ "$(json offloaded_bytes)" = "$1" ] || fail "offloaded_bytes is not $1"
  [ "$(json host_read_bytes)" = 0 ] || fail "host_read_bytes is not 0"
  [ "$(json commands)" = "$2" ] || fail "$(json commands) EXTENDED COPY commands, not $2"
  [ "$(sectors_read "$3")" = "$4" ] || fail "the initiator read $3 during an offloaded copy"
}

step "one range on one LUN"
r=$(sectors_read "$A")
blkcopy copy "$A@0" "$A@64M" --length 1M --json > /tmp/out || fail "copy"
offloaded 1048576 1 "$A" "$r"
same "$A" 131072 2048 0 "one range"

step "between LUNs of one copy manager"
r=$(sectors_read "$A")
blkcopy copy "$A@0" "$B@0" --length 8M --json > /tmp/out || fail "cross-LUN copy"
offloaded 8388608 1 "$A" "$r"
same "$B" 0 16384 0 "cross-LUN"

step "vectored: three ranges, one EXTENDED COPY each (LIO takes one segment)"
r=$(sectors_read "$A")
blkcopy copy "$A" "$B@16M" -r 1M:64k -r 5M:128k -r 9M:32k --json > /tmp/out || fail "vectored"
offloaded $((224 * 1024)) 3 "$A" "$r"
same "$B" 32768 128 2048 "vectored 1"; same "$B" 32896 256 10240 "vectored 2"
same "$B" 33152 64 18432 "vectored 3"

step "longer than one segment (65535 blocks): 40 MiB in two commands"
r=$(sectors_read "$A")
blkcopy copy "$A@0" "$B@64M" --length 40M --json > /tmp/out || fail "long copy"
offloaded 41943040 2 "$A" "$r"
same "$B" 131072 81920 0 "long copy"

step "overlapping on one LUN (memmove order, pieces within the overlap)"
blkcopy copy "$B@64M" "$B@65M" --length 8M --json > /tmp/out || fail "overlap"
[ "$(json offloaded_bytes)" = 8388608 ] || fail "overlap not offloaded"
same "$B" 133120 16384 0 "overlap"
same "$B" 131072 2048 0 "overlap: the bytes before the destination"

step "past the end: refused before anything is sent, nothing written"
past_end "$A" "$B"

step "a LUN with emulate_3pc=0: no copy manager, emulated, saying why"
blkcopy info "$C" > /tmp/out 2>&1 || fail "info C"
grep -q "3PC bit clear" /tmp/out || fail "info C does not say why: $(cat /tmp/out)"
blkcopy copy "$A@0" "$C@0" --length 2M --json > /tmp/out || fail "copy to C"
[ "$(json emulated_bytes)" = 2097152 ] && [ "$(json offloaded_bytes)" = 0 ] || fail "not emulated"
same "$C" 0 4096 0 "emulated into C"

step "a LUN the copy manager cannot reach (another tcm_loop target): refused, emulated"
blkcopy -v copy "$A@0" "$D@0" --length 2M --json > /tmp/out 2>/tmp/err || fail "copy to D"
grep -q "copy target device not reachable" /tmp/err || fail "no refusal from LIO: $(cat /tmp/err)"
[ "$(json emulated_bytes)" = 2097152 ] && [ "$(json offloaded_bytes)" = 0 ] || fail "not emulated"
same "$D" 0 4096 0 "emulated into D"

step "a copy that fails part way (E's file system fills up): exact progress"
if blkcopy copy "$A@0" "$E@0" --length 8M --copy-max-bytes 1M --copies-in-flight 1 --json \
     > /tmp/out 2>/tmp/err; then fail "a copy onto a full file system succeeded"; fi
done=$(json bytes)
grep -q '"status": "error"' /tmp/out || fail "no error status"
echo "copied $done bytes before the failure: $(head -n 1 /tmp/err)"
[ "$done" -gt 0 ] && [ "$done" -lt 8388608 ] && [ $((done % 1048576)) = 0 ] ||
  fail "progress $done is not a whole number of 1 MiB pieces between 0 and 8 MiB"
[ "$(json offloaded_bytes)" = "$done" ] || fail "the progress is not the offloaded pieces"
grep -q "copied $done bytes before the failure" /tmp/err || fail "the message lacks the progress"
same "$E" 0 $((done / 512)) 0 "the reported progress"
rm -f /tmp/err

step "the generic device /dev/sgN and scsi: work the same"
G=$(ls -d /sys/block/"$(basename "$A")"/device/scsi_generic/* | head -n 1)
G=/dev/$(basename "$G")
r=$(sectors_read "$A")
blkcopy copy "scsi:$G,timeout=30000@0" "$B@96M" --length 1M --json > /tmp/out || fail "copy from $G"
offloaded 1048576 1 "$A" "$r"
same "$B" 196608 2048 0 "from $G"

step "no read/write access to the LUN"
copy_denied "$A"
rm -f /tmp/out

step "the Linux NVMe/TCP host -> blkcopy's target -> EXTENDED COPY on the LUN"
serve_and_connect "$A" nqn.2024-01.io.blkcopy:scsi
nvme id-ns "$TCPNS" > /tmp/idn
grep -q "mssrl *: 65535$" /tmp/idn && grep -q "msrc *: 0$" /tmp/idn ||
  fail "the target does not advertise the LUN's limits: $(grep -E 'mssrl|mcl|msrc' /tmp/idn)"
r=$(sectors_read "$A")
nvme copy "$TCPNS" --sdlba=200000 --slbs=4096 --blocks=2047 || fail "nvme copy"
[ "$(sectors_read "$A")" = "$r" ] || fail "the target read the LUN through the initiator"
same "$A" 200000 2048 4096 "kernel copy"
stop_serving nqn.2024-01.io.blkcopy:scsi
echo "SCSI: all checks passed"
