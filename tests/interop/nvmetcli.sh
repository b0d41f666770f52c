# Runs inside a Linux 6.12 guest with nvmetcli's code (BLKCOPY_GUEST_KERNEL=backports
# BLKCOPY_GUEST_NVMETCLI=DIR tests/interop/guest.sh): a target made with Linux nvmet and saved
# by `nvmetcli save` is served by `blkcopy serve --config` unchanged, and what `blkcopy ctl save`
# writes is restored into Linux nvmet by `nvmetcli restore`; each time the Linux host reads the
# original data back. The saved file is printed between NVMETCLI markers (the fixtures in
# tests/data/nvmetcli/ were made so).
. /lib.sh
HOST=$(cat /etc/nvme/hostnqn)
NQN=nqn.2024-01.io.blkcopy:from-nvmet
dd if=/dev/urandom of=/tmp/orig bs=1M count=4 2>/dev/null
truncate -s 64M /tmp/backing; dd if=/tmp/orig of=/tmp/backing conv=notrunc 2>/dev/null

step "a target made with Linux nvmet, saved by nvmetcli"
nvmet_subsystem "$NQN" "$HOST" /tmp/backing
nvmet_port 1 4420 "$NQN"
nvmetcli-json save /tmp/nvmet.json || fail "nvmetcli save"
echo "-----BEGIN NVMETCLI-----"; cat /tmp/nvmet.json; echo "-----END NVMETCLI-----"
nvmetcli-json clear || fail "nvmetcli clear"

dev_of() { for d in /sys/class/nvme/nvme*; do grep -qx "$NQN" "$d/subsysnqn" 2>/dev/null && basename "$d"; done | head -n 1; }
read_back() {  # the Linux host connects, reads 4 MiB, compares with the original: read_back WHAT
  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" > /tmp/out 2>&1 || fail "$1: connect: $(cat /tmp/out)"
  c=$(dev_of); [ -n "$c" ] || fail "$1: no controller"
  for i in $(seq 100); do [ -b "/dev/${c}n1" ] && break; sleep 0.1; done
  same "/dev/${c}n1" 0 8192 0 "$1"
  nvme disconnect -n "$NQN" > /dev/null || fail "$1: disconnect"
}

step "blkcopy serve --config with nvmetcli's file, unchanged"
blkcopy serve --config /tmp/nvmet.json --rpc /tmp/ctl.sock 2>/tmp/serve.log &
pid=$!; wait_serving
grep "noted only\|taken as" /tmp/serve.log
grep -q "attr.qid_max: '128' taken as 8" /tmp/serve.log || fail "no note for qid_max"
read_back "the Linux host on blkcopy"
blkcopy ctl --socket /tmp/ctl.sock save /tmp/back.json > /tmp/out 2>&1 || fail "ctl save: $(cat /tmp/out)"
kill "$pid"; wait "$pid"

step "nvmetcli restore of blkcopy ctl save's file into Linux nvmet"
cat /tmp/back.json
nvmetcli-json restore /tmp/back.json || fail "nvmetcli restore"
[ "$(cat $cfg/subsystems/$NQN/namespaces/1/device_path)" = /tmp/backing ] || fail "the namespace was not restored"
[ -e "$cfg/subsystems/$NQN/allowed_hosts/$HOST" ] || fail "the allowed host was not restored"
read_back "the Linux host on the restored nvmet"
echo PASS
