# Runs inside the guest (tests/interop/guest.sh): blkcopy's host driver against the Linux
# kernel's NVMe/TCP target (nvmet-tcp, which has no Copy: the engine emulates), and against
# blkcopy's own target in the same guest (offloaded). Data checked against /tmp/orig.
set -u
fail() { echo "FAIL: $*"; dmesg | tail -n 5; exit 1; }
step() { echo "== $(cut -d" " -f1 /proc/uptime) $*"; }

dd if=/dev/urandom of=/tmp/orig bs=1M count=8 2>/dev/null
truncate -s 64M /tmp/backing
dd if=/tmp/orig of=/tmp/backing conv=notrunc 2>/dev/null

step "the Linux target: a file namespace on 127.0.0.1:4420"
cfg=/sys/kernel/config/nvmet
[ -d $cfg ] || fail "no nvmet configfs"
mkdir $cfg/subsystems/nqn.2024-01.io.blkcopy:linux || fail "subsystem"
echo 1 > $cfg/subsystems/nqn.2024-01.io.blkcopy:linux/attr_allow_any_host
ns=$cfg/subsystems/nqn.2024-01.io.blkcopy:linux/namespaces/1
mkdir $ns
echo 1 > $ns/buffered_io   # tmpfs in this kernel has no O_DIRECT
echo -n /tmp/backing > $ns/device_path
echo 1 > $ns/enable || fail "namespace enable"
mkdir $cfg/ports/1
echo tcp > $cfg/ports/1/addr_trtype; echo ipv4 > $cfg/ports/1/addr_adrfam
echo 127.0.0.1 > $cfg/ports/1/addr_traddr; echo 4420 > $cfg/ports/1/addr_trsvcid
ln -s $cfg/subsystems/nqn.2024-01.io.blkcopy:linux $cfg/ports/1/subsystems/ || fail "port link"

L="nvme-tcp://127.0.0.1:4420/nqn.2024-01.io.blkcopy:linux?ns=1"
step "connect, Identify: no Copy"
blkcopy info "$L" > /tmp/info || fail "info: $(cat /tmp/info)"
grep -q "copy offload *no" /tmp/info || fail "nvmet should offer no Copy: $(cat /tmp/info)"

step "a copy on the Linux target is emulated, data verified"
blkcopy copy "$L" "$L@32M" --length 8M --json > /tmp/out || fail "copy: $(cat /tmp/out)"
grep -q '"emulated_bytes": 8388608' /tmp/out || fail "not emulated: $(cat /tmp/out)"
truncate -s 8M /tmp/check
blkcopy copy "$L@32M" /tmp/check --length 8M > /dev/null || fail "read back"
cmp /tmp/check /tmp/orig || fail "the copy on the Linux target differs from the original"
dd if=/tmp/backing of=/tmp/check bs=1M skip=32 count=8 2>/dev/null
cmp /tmp/check /tmp/orig || fail "the backing file differs from the original"

step "blkcopy's target in the same guest: the same copy offloaded"
dd if=/tmp/orig of=/tmp/served bs=1M 2>/dev/null; truncate -s 64M /tmp/served
blkcopy serve --listen 127.0.0.1:4421 --nqn nqn.2024-01.io.blkcopy:own --ns /tmp/served \
  --discovery-port 0 2>/tmp/serve.log &
sleep 1
B="nvme-tcp://127.0.0.1:4421/nqn.2024-01.io.blkcopy:own?ns=1"
blkcopy copy "$B" "$B@32M" --length 8M --json > /tmp/out || fail "copy: $(cat /tmp/out)"
grep -q '"offloaded_bytes": 8388608' /tmp/out || fail "not offloaded: $(cat /tmp/out)"
sent=$(sed -n 's/.*"wire_bytes_sent": \([0-9]*\).*/\1/p' /tmp/out)
[ "$sent" -lt 65536 ] || fail "an offloaded copy sent $sent bytes"
dd if=/tmp/served of=/tmp/check bs=1M skip=32 count=8 2>/dev/null
cmp /tmp/check /tmp/orig || fail "the offloaded copy differs from the original"
echo "all nvmet interop checks passed"
