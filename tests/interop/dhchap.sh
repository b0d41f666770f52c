# Runs inside a Linux 6.12 guest (BLKCOPY_GUEST_KERNEL=backports tests/interop/guest.sh):
# DH-HMAC-CHAP between blkcopy and the Linux kernel, both ways, with keys from nvme-cli's
# gen-dhchap-key. The right key connects and reads the original data; a wrong key and no key
# are refused; bidirectional authentication with the right and a wrong controller key.
set -u
. /lib.sh

HOST=$(cat /etc/nvme/hostnqn)
NQN=nqn.2024-01.io.blkcopy:auth
LNQN=nqn.2024-01.io.blkcopy:linux-auth
KEY=$(nvme gen-dhchap-key -n "$HOST") || fail "gen-dhchap-key"
WRONG=$(nvme gen-dhchap-key -n "$HOST")
CKEY=$(nvme gen-dhchap-key -m 1 -n "$NQN")
CWRONG=$(nvme gen-dhchap-key -m 1 -n "$NQN")
echo "host key $KEY"
dd if=/dev/urandom of=/tmp/orig bs=1M count=4 2>/dev/null
dd if=/tmp/orig of=/tmp/served bs=1M 2>/dev/null; truncate -s 64M /tmp/served

step "the Linux host against blkcopy's target (ffdhe2048, SHA-384 preferred)"
blkcopy serve --listen 127.0.0.1:4420 --nqn "$NQN" --ns /tmp/served --allow-host "$HOST" \
  --host-key "$HOST=$KEY" --host-ctrl-key "$HOST=$CKEY" --dhchap-hash 'hmac(sha384)' \
  --dhchap-dhgroup ffdhe2048 --discovery-port 0 2>/tmp/serve.log &
sleep 1
dev_of() { for d in /sys/class/nvme/nvme*; do grep -qx "$NQN" "$d/subsysnqn" 2>/dev/null && basename "$d"; done | head -n 1; }
connect() { nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" "$@" > /tmp/connect.log 2>&1; }
check_data() {
  c=$(dev_of); [ -n "$c" ] || fail "no controller after connect"
  sleep 1
  dd if=/dev/${c}n1 of=/tmp/check bs=1M count=4 iflag=direct 2>/dev/null || fail "read /dev/${c}n1"
  cmp /tmp/check /tmp/orig || fail "data read through the authenticated connection differs"
  nvme disconnect -n "$NQN" > /dev/null || fail "disconnect"
}
connect --dhchap-secret="$KEY" || fail "the right key was refused: $(cat /tmp/connect.log)"
check_data
connect --dhchap-secret="$KEY" --dhchap-ctrl-secret="$CKEY" || fail "bidirectional: $(cat /tmp/connect.log)"
check_data
connect --dhchap-secret="$WRONG" && fail "a wrong key connected"
[ -z "$(dev_of)" ] || fail "a controller exists after a wrong key"
connect && fail "no key connected"
connect --dhchap-secret="$KEY" --dhchap-ctrl-secret="$CWRONG" && fail "a wrong controller key was accepted"
[ -z "$(dev_of)" ] || fail "a controller exists after a wrong controller key"
grep -q "failed DH-HMAC-CHAP authentication" /tmp/serve.log || fail "the target logged no failure: $(cat /tmp/serve.log)"
grep "failed DH-HMAC-CHAP" /tmp/serve.log | head -n 2

step "blkcopy's host against the Linux target with DH-HMAC-CHAP in configfs"
truncate -s 64M /tmp/backing; dd if=/tmp/orig of=/tmp/backing conv=notrunc 2>/dev/null
mkdir $cfg/hosts/"$HOST" || fail "configfs host"
echo "$KEY" > $cfg/hosts/"$HOST"/dhchap_key || fail "dhchap_key"
echo "$CKEY" > $cfg/hosts/"$HOST"/dhchap_ctrl_key || fail "dhchap_ctrl_key"
echo "hmac(sha256)" > $cfg/hosts/"$HOST"/dhchap_hash
echo ffdhe3072 > $cfg/hosts/"$HOST"/dhchap_dhgroup
nvmet_subsystem "$LNQN" "$HOST" /tmp/backing
nvmet_port 2 4421 "$LNQN"
L="nvme-tcp://127.0.0.1:4421/$LNQN?ns=1&hostnqn=$HOST"
echo "$KEY" > /tmp/key
truncate -s 4M /tmp/check
blkcopy copy "$L&dhchap_secret_file=/tmp/key" /tmp/check --length 4M > /tmp/out 2>&1 || fail "the right key: $(cat /tmp/out)"
cmp /tmp/check /tmp/orig || fail "data read from the Linux target differs"
blkcopy copy "$L&dhchap_secret=$KEY&dhchap_ctrl_secret=$CKEY" "$L&dhchap_secret=$KEY&dhchap_ctrl_secret=$CKEY@32M" \
  --length 4M > /tmp/out 2>&1 || fail "bidirectional: $(cat /tmp/out)"
dd if=/tmp/backing of=/tmp/check bs=1M skip=32 count=4 2>/dev/null
cmp /tmp/check /tmp/orig || fail "the copy on the Linux target differs from the original"
blkcopy info "$L&dhchap_secret=$WRONG" > /tmp/out 2>&1 && fail "a wrong key was accepted by Linux"
# Linux answers a wrong response with a Failure1 message or (a fatal controller error) by
# closing the connection at Success1: refused either way.
grep -qE "refused host|DH-HMAC-CHAP Success1: .*closed the connection" /tmp/out || fail "wrong key: $(cat /tmp/out)"
blkcopy info "$L" > /tmp/out 2>&1 && fail "no key was accepted by Linux"
grep -q "requires DH-HMAC-CHAP" /tmp/out || fail "no key: $(cat /tmp/out)"
blkcopy info "$L&dhchap_secret=$KEY&dhchap_ctrl_secret=$CWRONG" > /tmp/out 2>&1 && fail "a controller with another key was accepted"
grep -qE "failed to prove|DH-HMAC-CHAP Success2: .*closed the connection" /tmp/out || fail "wrong controller key: $(cat /tmp/out)"
echo "all DH-HMAC-CHAP interop checks passed"
