# Runs under systemd in the guest (tests/interop/systemd_run.sh): blkcopy-serve@.service as
# `cmake --install` put it, started, reloaded and stopped by systemctl, with the Linux NVMe/TCP
# host reading through it. Data is checked against the ORIGINAL bytes kept in /tmp/orig*.
set -u
. /blkcopy-test/lib.sh
prefix=$(cat /blkcopy-test/prefix)
NQN=nqn.2024-01.io.blkcopy:svc
HOST=$(cat /etc/nvme/hostnqn)
unit=blkcopy-serve@vol1
fail() {
  echo "FAIL: $*"
  systemctl status "$unit" --no-pager 2>&1 | head -n 20
  journalctl -u "$unit" --no-pager -n 30
  exit 1
}
ctl() { "$prefix/bin/blkcopy" ctl --socket /run/blkcopy/vol1.sock "$@"; }
config() {  # the namespaces' files, as nvmetcli JSON
  ns=""; n=0
  for f in "$@"; do
    n=$((n + 1))
    ns="$ns${ns:+,}{\"nsid\": $n, \"enable\": 1, \"device\": {\"path\": \"file:$f\"}}"
  done
  cat > /etc/blkcopy/vol1.json <<JSON
{"hosts": [{"nqn": "$HOST"}],
 "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
            "trsvcid": "4420"}, "subsystems": ["$NQN"]}],
 "subsystems": [{"nqn": "$NQN", "allowed_hosts": ["$HOST"], "attr": {"allow_any_host": "0"},
                 "namespaces": [$ns]}]}
JSON
}

step "the unit cmake --install made, linked into systemd"
ln -s "$prefix/lib/systemd/system/blkcopy-serve@.service" /etc/systemd/system/ || fail "link the unit"
systemctl daemon-reload
grep -q "^ExecStart=$prefix/bin/blkcopy serve" "$prefix/lib/systemd/system/blkcopy-serve@.service" ||
  fail "the unit does not start the installed blkcopy"
mkdir -p /etc/blkcopy /var/lib/blkcopy
dd if=/dev/urandom of=/tmp/orig bs=1M count=8 2>/dev/null
dd if=/dev/urandom of=/tmp/orig2 bs=1M count=4 2>/dev/null
cp /tmp/orig /var/lib/blkcopy/vol1.img
cp /tmp/orig2 /var/lib/blkcopy/vol2.img
config /var/lib/blkcopy/vol1.img

step "systemctl start returns once serve is ready (Type=notify)"
systemctl start "$unit" || fail "systemctl start"
[ "$(systemctl is-active "$unit")" = active ] || fail "not active"
systemctl show -p StatusText --value "$unit" | grep -q "serving 1 subsystem" ||
  fail "status: $(systemctl show -p StatusText --value "$unit")"
ctl list > /tmp/out || fail "ctl on /run/blkcopy/vol1.sock"
grep -q "namespace 1: file:/var/lib/blkcopy/vol1.img" /tmp/out || fail "ctl list: $(cat /tmp/out)"

step "the Linux host reads through it"
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN || fail "nvme connect"
until_true '[ -n "$(ns_disk 1)" ]' "no block device for namespace 1"
readb "/dev/$(ns_disk 1)" 0 16384 /tmp/got
cmp /tmp/got /tmp/orig || fail "namespace 1 reads other data than its file"

step "systemctl reload applies the changed file: the host sees the new namespace"
config /var/lib/blkcopy/vol1.img /var/lib/blkcopy/vol2.img
systemctl reload "$unit" || fail "systemctl reload"
until_true '[ -n "$(ns_disk 2)" ]' "the host did not see namespace 2 after the reload"
readb "/dev/$(ns_disk 2)" 0 8192 /tmp/got
cmp /tmp/got /tmp/orig2 || fail "namespace 2 reads other data than its file"
ctl --json stats > /tmp/out
grep -q '"reloads": 1' /tmp/out || fail "reload not counted: $(cat /tmp/out)"
until_true 'systemctl show -p StatusText --value "$unit" | grep -q reloaded' "no reloaded status"

step "a file that does not validate changes nothing; the service stays up"
echo '{"subsystems": [{"nqn": "bad"}]}' > /etc/blkcopy/vol1.json
systemctl reload "$unit" || fail "systemctl reload of a bad file"
until_true 'ctl --json stats | grep -q "\"reload_failures\": 1"' "the failed reload is not counted"
[ "$(systemctl is-active "$unit")" = active ] || fail "a bad file stopped the service"
ctl list | grep -q "namespace 2" || fail "a bad file changed the namespaces"
readb "/dev/$(ns_disk 1)" 0 16384 /tmp/got
cmp /tmp/got /tmp/orig || fail "namespace 1 after the bad reload"

step "systemctl stop ends it cleanly"
nvme disconnect-all >/dev/null
systemctl stop "$unit" || fail "systemctl stop"
[ "$(systemctl is-active "$unit")" = inactive ] || fail "state: $(systemctl is-active "$unit")"
[ "$(systemctl show -p ExecMainStatus --value "$unit")" = 0 ] || fail "exit status $(systemctl show -p ExecMainStatus --value "$unit")"
[ -e /run/blkcopy/vol1.sock ] && fail "the control socket is left behind"
journalctl -u "$unit" --no-pager -n 8
echo "all systemd checks passed"
