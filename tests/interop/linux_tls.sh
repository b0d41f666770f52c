# Runs inside a Linux 6.12 guest with Debian 13's tlshd and nvme-cli
# (BLKCOPY_GUEST_KERNEL=backports BLKCOPY_GUEST_TRIXIE=1 tests/interop/guest.sh): NVMe/TCP over
# TLS 1.3 between blkcopy and Linux's own NVMe/TCP host and target, both ways. The key is made
# by nvme-cli and put into the kernel's .nvme keyring as Linux users do; tlshd does the kernel's
# handshakes. The Linux host reads and writes a namespace of `blkcopy serve`; blkcopy's host
# reads, writes and copies on Linux nvmet with a TLS-only port; the data is checked against the
# original each time. A wrong key is refused both ways.
. /lib.sh
HOST=$(cat /etc/nvme/hostnqn)
NQN=nqn.2024-01.io.blkcopy:linux-tls
LNQN=nqn.2024-01.io.blkcopy:nvmet-tls
KEY=$(nvme-trixie gen-tls-key --hmac=1) || fail "gen-tls-key"
WRONG=$(nvme-trixie gen-tls-key --hmac=1)
echo "key $KEY"
for sub in "$NQN" "$LNQN"; do
  nvme-trixie check-tls-key --keydata="$KEY" --hostnqn="$HOST" --subsysnqn="$sub" --identity=0 \
    --insert > /tmp/out 2>&1 || fail "insert the key into .nvme: $(cat /tmp/out)"
done
grep "NVMe0R01" /proc/keys | cut -c1-120
mkdir -p /etc && printf '[debug]\nloglevel=1\ntls=0\nnl=0\n[authenticate]\nkeyrings=.nvme\n' > /etc/tlshd.conf
tlshd -c /etc/tlshd.conf -s > /tmp/tlshd.log 2>&1 &
dd if=/dev/urandom of=/tmp/orig bs=1M count=4 2>/dev/null
stat_of() { awk -v k="$1" '$1 == k {print $2}' /proc/net/tls_stat; }

step "the Linux host against blkcopy's target over TLS"
truncate -s 32M /tmp/served; dd if=/tmp/orig of=/tmp/served conv=notrunc 2>/dev/null
blkcopy -v serve --listen 127.0.0.1:4420 --discovery-port 0 --nqn "$NQN" --ns /tmp/served \
  --tls-key "$HOST=$KEY" --tls-libnvme1 "$HOST" 2>/tmp/serve.log &
pid=$!; wait_serving
dev_of() { for d in /sys/class/nvme/nvme*; do grep -qx "$1" "$d/subsysnqn" 2>/dev/null && basename "$d"; done | head -n 1; }
tx0=$(stat_of TlsTxSw)
nvme-trixie connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" --tls > /tmp/out 2>&1 ||
  fail "the Linux host did not connect over TLS: $(cat /tmp/out; cat /tmp/tlshd.log)"
c=$(dev_of "$NQN"); [ -n "$c" ] || fail "no controller after connect"
for i in $(seq 100); do [ -b "/dev/${c}n1" ] && break; sleep 0.1; done
echo "Linux host: $(cat /sys/class/nvme/$c/address), tls_key $(cat /sys/class/nvme/$c/tls_key 2>/dev/null)"
same "/dev/${c}n1" 0 8192 0 "the Linux host's read over TLS"
dd if=/tmp/orig of="/dev/${c}n1" bs=1M seek=8 oflag=direct 2>/dev/null || fail "the Linux host's write"
nvme-trixie disconnect -n "$NQN" > /dev/null || fail "disconnect"
kill "$pid"; wait "$pid"
dd if=/tmp/served of=/tmp/got bs=1M skip=8 count=4 2>/dev/null
cmp /tmp/got /tmp/orig || fail "what the Linux host wrote over TLS differs from the original"
grep -q "serve: TLS with $HOST" /tmp/serve.log || fail "the target logged no TLS connection"
grep "serve: TLS with" /tmp/serve.log | head -n 2
[ "$(stat_of TlsTxSw)" -gt "$tx0" ] || fail "the kernel took no TLS records"

step "the Linux host with a key the target does not have is refused"
blkcopy serve --listen 127.0.0.1:4420 --discovery-port 0 --nqn "$NQN" --ns /tmp/served \
  --tls-key "$HOST=$WRONG" --tls-libnvme1 "$HOST" 2>/tmp/serve.log &
pid=$!; wait_serving
nvme-trixie connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" --tls > /tmp/out 2>&1 && fail "a wrong key connected"
[ -z "$(dev_of "$NQN")" ] || fail "a controller exists after a wrong key"
kill "$pid"; wait "$pid"
grep -q "refused" /tmp/serve.log || fail "the target did not log the refusal"
grep "refused" /tmp/serve.log | head -n 1

step "blkcopy's host against Linux nvmet with a TLS-only port"
truncate -s 32M /tmp/backing; dd if=/tmp/orig of=/tmp/backing conv=notrunc 2>/dev/null
nvmet_subsystem "$LNQN" "$HOST" /tmp/backing
nvmet_port 2 4421 "$LNQN" tls1.3 required
dev="nvme-tcp://127.0.0.1:4421/$LNQN?ns=1&tls_key=$KEY&tls_libnvme1"
truncate -s 4M /tmp/back
blkcopy -vv copy "$dev@0" /tmp/back@0 --length 4M > /tmp/out 2>/tmp/err || fail "read from nvmet over TLS"
cmp /tmp/back /tmp/orig || fail "read from nvmet over TLS: data differs from the original"
grep "records in" /tmp/err | head -n 1
blkcopy copy /tmp/orig@0 "$dev@8M" --length 4M > /tmp/out 2>/tmp/err || fail "write to nvmet over TLS"
blkcopy copy "$dev@8M" "$dev@16M" --length 4M --json > /tmp/out 2>/tmp/err || fail "copy on nvmet over TLS"
for at in 8 16; do
  dd if=/tmp/backing of=/tmp/got bs=1M skip=$at count=4 2>/dev/null
  cmp /tmp/got /tmp/orig || fail "nvmet's backing file at ${at}M differs from the original"
done

step "blkcopy's host with a wrong key is refused by nvmet"
blkcopy info "nvme-tcp://127.0.0.1:4421/$LNQN?ns=1&tls_key=$WRONG&tls_libnvme1" > /tmp/out 2>&1 && fail "a wrong key connected to nvmet"
grep -q "refused the TLS PSK\|TLS" /tmp/out || fail "unclear refusal: $(cat /tmp/out)"
cat /tmp/out | head -n 2
blkcopy info "nvme-tcp://127.0.0.1:4421/$LNQN?ns=1" > /tmp/out 2>&1 && fail "clear text connected to a TLS-only nvmet port"
cat /tmp/out | head -n 2
cat /proc/net/tls_stat | head -n 6
echo PASS
