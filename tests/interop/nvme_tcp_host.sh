# Runs inside the guest (tests/interop/guest.sh): blkcopy's target against the Linux NVMe/TCP
# host and nvme-cli. Every copy is checked against the ORIGINAL data kept in /tmp/orig.
set -u
. /lib.sh  # ns_disk, until_true; fail and step as below
NQN=nqn.2024-01.io.blkcopy:interop
HOST=nqn.2014-08.io.blkcopy:guest-host
HOST2=nqn.2014-08.io.blkcopy:second-host
fail() { echo "FAIL: $*"; cat /tmp/serve.log; dmesg | tail -n 8; exit 1; }
step() { echo "== $(cut -d" " -f1 /proc/uptime) $*"; }
# blocks COUNT from LBA of DEV into FILE (512-byte blocks)
readb() { dd if="$1" of="$4" bs=512 skip="$2" count="$3" iflag=direct 2>/dev/null || fail "read $1"; }
readall() { dd if="$1" of="$2" bs=1M iflag=direct 2>/dev/null || fail "read $1"; }
origb() { dd if=/tmp/orig of="$3" bs=512 skip="$1" count="$2" 2>/dev/null; }

# nvmetcli's JSON: one subsystem on two ports, three namespaces, two allowed hosts.
cat > /tmp/target.json <<JSON
{
  "hosts": [{"nqn": "$HOST"}, {"nqn": "$HOST2"}],
  "ports": [
    {"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
     "trsvcid": "4420"}, "subsystems": ["$NQN"]},
    {"portid": 2, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
     "trsvcid": "4421"}, "subsystems": ["$NQN"]}
  ],
  "subsystems": [
    {"nqn": "$NQN", "allowed_hosts": ["$HOST", "$HOST2"], "attr": {"allow_any_host": "0"},
     "namespaces": [
       {"nsid": 1, "enable": 1, "device": {"path": "mem:64M"}},
       {"nsid": 2, "enable": 1, "device": {"path": "mem:64M"}},
       {"nsid": 3, "enable": 1, "device": {"path": "mem:16M,copy_max=32k,segment_max=16k,max_segments=4"}}
     ]}
  ]
}
JSON
blkcopy serve --config /tmp/target.json --cores 2 --rpc /tmp/serve.sock 2>/tmp/serve.log &
sleep 1

step discover
nvme discover -t tcp -a 127.0.0.1 -s 8009 > /tmp/disc || fail "discover"
grep -q "subnqn:  $NQN" /tmp/disc || fail "discovery log lacks $NQN"
grep -q "trsvcid: 4421" /tmp/disc || fail "discovery log lacks the second port"

step connect
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN || fail "connect"
sleep 1
for n in 1 2 3; do [ -b /dev/nvme0n$n ] || fail "no /dev/nvme0n$n"; done

step "id-ctrl and id-ns show Copy and its limits"
nvme id-ctrl /dev/nvme0 -H > /tmp/idc
grep -q "Copy Supported" /tmp/idc || fail "ONCS without Copy"
grep -q "Controller Copy Format 0h Supported" /tmp/idc || fail "OCFS format 0"
grep -q "^ocfs *: 0x5" /tmp/idc || fail "OCFS is not formats 0 and 2: $(grep ocfs /tmp/idc)"
nvme id-ns /dev/nvme0n3 > /tmp/idn
grep -q "mssrl *: 32$" /tmp/idn || fail "mssrl of ns 3: $(grep mssrl /tmp/idn)"
grep -q "mcl *: 64$" /tmp/idn || fail "mcl of ns 3: $(grep mcl /tmp/idn)"
grep -q "msrc *: 3$" /tmp/idn || fail "msrc of ns 3: $(grep msrc /tmp/idn)"

step "write known data"
dd if=/dev/urandom of=/tmp/orig bs=4096 count=256 2>/dev/null
dd if=/tmp/orig of=/dev/nvme0n1 bs=4096 oflag=direct 2>/dev/null || fail "write"
dd if=/tmp/orig of=/dev/nvme0n3 bs=4096 count=64 oflag=direct 2>/dev/null || fail "write ns3"
readb /dev/nvme0n1 0 2048 /tmp/back
cmp /tmp/orig /tmp/back || fail "read back differs"

step "copy, one range"
nvme copy /dev/nvme0n1 --sdlba=8192 --slbs=0 --blocks=255 || fail "nvme copy"
readb /dev/nvme0n1 8192 256 /tmp/got; origb 0 256 /tmp/want
cmp /tmp/got /tmp/want || fail "single-range copy data"

step "copy, 16 ranges"
slbs=""; blocks=""; : > /tmp/want
for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  s=$((i * 100 + 7)); slbs="$slbs,$s"; blocks="$blocks,7"
  dd if=/tmp/orig bs=512 skip=$s count=8 2>/dev/null >> /tmp/want
done
nvme copy /dev/nvme0n1 --sdlba=16384 --slbs=${slbs#,} --blocks=${blocks#,} || fail "16 ranges"
readb /dev/nvme0n1 16384 128 /tmp/got
cmp /tmp/got /tmp/want || fail "16-range copy data"
cp /tmp/want /tmp/want16

step "cross-namespace copy (format 2)"
{ printf '\000\000\000\000\004\000'; dd if=/dev/zero bs=1 count=506 2>/dev/null; } > /tmp/hbs
nvme set-feature /dev/nvme0 -f 0x16 --data-len=512 --data=/tmp/hbs >/dev/null || fail "host behavior"
# one format-2 entry: SNSID 1, SLBA 0, NLB 63 (0-based)
{ printf '\001\000\000\000\000\000\000\000'; printf '\000\000\000\000\000\000\000\000';
  printf '\077\000'; dd if=/dev/zero bs=1 count=14 2>/dev/null; } > /tmp/r2
nvme io-passthru /dev/nvme0n2 --opcode=0x19 --namespace-id=2 --data-len=32 --write \
  --input-file=/tmp/r2 --cdw10=100 --cdw12=$((2 << 8)) >/dev/null || fail "format 2 copy"
readb /dev/nvme0n2 100 64 /tmp/got; origb 0 64 /tmp/want
cmp /tmp/got /tmp/want || fail "cross-namespace copy data"

step "copies over each limit and out of range fail with the right status, change nothing"
readall /dev/nvme0n3 /tmp/ns3.before
expect_status() {  # WANT CMD...
  want=$1; shift
  if "$@" > /tmp/out 2>&1; then fail "expected '$want' from: $*"; fi
  grep -q "$want" /tmp/out || fail "expected '$want', got: $(cat /tmp/out)"
}
expect_status "COMMAND_SIZE_LIMIT_EXCEEDED\|Command Size Limit" \
  nvme copy /dev/nvme0n3 --sdlba=1000 --slbs=0 --blocks=32            # NLB 33 > MSSRL 32
expect_status "COMMAND_SIZE_LIMIT_EXCEEDED\|Command Size Limit" \
  nvme copy /dev/nvme0n3 --sdlba=1000 --slbs=0,8,16,24,32 --blocks=0,0,0,0,0  # 5 > MSRC+1
expect_status "COMMAND_SIZE_LIMIT_EXCEEDED\|Command Size Limit" \
  nvme copy /dev/nvme0n3 --sdlba=1000 --slbs=0,32,64 --blocks=31,31,31  # 96 > MCL 64
expect_status "LBA_RANGE\|LBA Out of Range" \
  nvme copy /dev/nvme0n3 --sdlba=1000 --slbs=32760 --blocks=15          # source beyond the end
expect_status "LBA_RANGE\|LBA Out of Range" \
  nvme copy /dev/nvme0n3 --sdlba=32760 --slbs=0 --blocks=15             # destination beyond
readall /dev/nvme0n3 /tmp/ns3.after
cmp /tmp/ns3.before /tmp/ns3.after || fail "a refused copy changed the namespace"

step "disconnect and reconnect"
nvme disconnect -n $NQN >/dev/null || fail "disconnect"
sleep 1
[ -b /dev/nvme0n1 ] && fail "still connected"
# Reconnect with header and data digests (CRC32C both ways).
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN -g -G || fail "reconnect with digests"
sleep 1
readb /dev/nvme0n1 8192 256 /tmp/got; origb 0 256 /tmp/want
cmp /tmp/got /tmp/want || fail "data after reconnect"
nvme copy /dev/nvme0n1 --sdlba=20000 --slbs=0 --blocks=127 >/dev/null || fail "copy with digests"
readb /dev/nvme0n1 20000 128 /tmp/got; origb 0 128 /tmp/want
cmp /tmp/got /tmp/want || fail "copy data with digests"

step "write zeroes, deallocate, flush"
nvme write-zeroes /dev/nvme0n1 --start-block=20000 --block-count=15 >/dev/null || fail "write zeroes"
nvme dsm /dev/nvme0n1 --ad --slbs=20016 --blocks=16 >/dev/null || fail "deallocate"
nvme flush /dev/nvme0n1 >/dev/null || fail "flush"
readb /dev/nvme0n1 20000 32 /tmp/got
dd if=/dev/zero of=/tmp/want bs=512 count=32 2>/dev/null
cmp /tmp/got /tmp/want || fail "zeroed and deallocated blocks do not read as zeroes"
readb /dev/nvme0n1 20032 96 /tmp/got; origb 32 96 /tmp/want
cmp /tmp/got /tmp/want || fail "write zeroes or deallocate went beyond its range"

step "an unknown host is refused"
if nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN --hostnqn=nqn.2014-08.io.blkcopy:stranger \
     --hostid=11111111-2222-3333-4444-555555555555 > /tmp/out 2>&1; then
  fail "a host not allowed could connect"
fi

step "two hosts at once"
nvme connect -t tcp -a 127.0.0.1 -s 4421 -n $NQN --hostnqn=$HOST2 \
  --hostid=22222222-3333-4444-5555-666666666666 || fail "second host"
sleep 1
[ -e /sys/class/nvme/nvme1 ] || fail "no controller for the second host"
# Both controllers are paths to the same shared namespaces (CMIC/NMIC); drop the first host's
# and read through the second one's.
nvme disconnect -d nvme0 >/dev/null || fail "disconnect the first host"
sleep 1
[ -e /sys/class/nvme/nvme0 ] && fail "first controller still there"
readb /dev/nvme0n1 16384 128 /tmp/got2
cmp /tmp/got2 /tmp/want16 || fail "the second host reads different data"
step "a namespace added, resized and removed while the host is connected (AEN, log 04h)"
ctl() { blkcopy ctl --socket /tmp/serve.sock "$@" || fail "ctl $*"; }
dd if=/dev/urandom of=/tmp/ns4.orig bs=1M count=4 2>/dev/null
cp /tmp/ns4.orig /tmp/ns4.img
ctl add-ns $NQN file:/tmp/ns4.img --nsid 4
until_true '[ -n "$(ns_disk 4)" ]' "the host did not see namespace 4 (no Namespace Attribute Changed event?)"
disk=$(ns_disk 4)
readall /dev/$disk /tmp/got
cmp /tmp/got /tmp/ns4.orig || fail "namespace 4 reads other data than its file"
nvme copy /dev/$disk --sdlba=4096 --slbs=0 --blocks=63 >/dev/null || fail "copy on namespace 4"
dd if=/tmp/ns4.img of=/tmp/got bs=512 skip=4096 count=64 2>/dev/null
dd if=/tmp/ns4.orig of=/tmp/want bs=512 count=64 2>/dev/null
cmp /tmp/got /tmp/want || fail "the copy on namespace 4 did not land in its file"
truncate -s 8M /tmp/ns4.img
ctl resize-ns $NQN 4
until_true '[ "$(cat /sys/block/$disk/size)" = 16384 ]' "the host did not see namespace 4 grow: $(cat /sys/block/$disk/size) sectors"
ctl remove-ns $NQN 4
until_true '[ -z "$(ns_disk 4)" ]' "namespace 4 is still on the host after its removal"
readb /dev/nvme0n1 16384 128 /tmp/got2
cmp /tmp/got2 /tmp/want16 || fail "namespace 1 reads differently after the changes"
dmesg | grep -i "nvme" | tail -n 5

nvme disconnect-all >/dev/null
kill -USR1 %1 2>/dev/null; sleep 1
cat /tmp/serve.log
echo "all interop checks passed"
