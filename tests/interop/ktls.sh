# Runs inside a QEMU guest (tests/interop/guest.sh): NVMe/TCP over TLS between blkcopy's host
# and blkcopy's target with the records in the guest kernel (kTLS, the tls module, which the
# build machine's kernel lacks). Data written and read over the wire and an offloaded Copy are
# checked against the original bytes; /proc/net/tls_stat shows the kernel took both directions
# of every socket; with ktls=off / --ktls off the same runs stay in user space.
. /lib.sh
[ -r /proc/net/tls_stat ] || fail "no tls module in the guest"

HOST=$(cat /etc/nvme/hostnqn)
NQN=nqn.2024-01.io.blkcopy:ktls
nvme gen-tls-key --hmac=1 | tr -d '\n' > /tmp/tls.key || fail "gen-tls-key"
nvme gen-tls-key --hmac=2 | tr -d '\n' > /tmp/tls48.key || fail "gen-tls-key --hmac=2"
dd if=/dev/urandom of=/tmp/orig bs=1M count=4 2>/dev/null
stat_of() { awk -v k="$1" '$1 == k {print $2}' /proc/net/tls_stat; }

# One run: serve /tmp/served with KTLS (on|off) on the target and the host and the key in
# KEYFILE; write the original at 0 over the wire, Copy it to 8M on the target, read the copy
# back; check the file: run KTLS KEYFILE
run() {
  truncate -s 0 /tmp/served; truncate -s 32M /tmp/served
  blkcopy -v serve --listen 127.0.0.1:4420 --discovery-port 0 --nqn "$NQN" --ns /tmp/served \
    --tls-key "$HOST=@$2" --ktls "$1" 2>/tmp/serve.log &
  pid=$!
  wait_serving
  dev="nvme-tcp://127.0.0.1:4420/$NQN?ns=1&tls_key_file=$2&ktls=$1"
  blkcopy -vv copy /tmp/orig@0 "$dev@0" --length 4M > /tmp/out 2>/tmp/err || fail "write over TLS"
  blkcopy copy "$dev@0" "$dev@8M" --length 4M --json > /tmp/out 2>>/tmp/err || fail "Copy over TLS"
  grep -q '"offloaded_bytes": *4194304' /tmp/out || fail "the Copy was not offloaded: $(cat /tmp/out)"
  truncate -s 0 /tmp/back; truncate -s 4M /tmp/back
  blkcopy copy "$dev@8M" /tmp/back@0 --length 4M > /tmp/out 2>>/tmp/err || fail "read over TLS"
  kill "$pid"; wait "$pid"
  cmp /tmp/back /tmp/orig || fail "ktls=$1: data read back differs from the original"
  dd if=/tmp/served of=/tmp/got bs=1M count=4 2>/dev/null
  cmp /tmp/got /tmp/orig || fail "ktls=$1: data written differs from the original"
  dd if=/tmp/served of=/tmp/got bs=1M skip=8 count=4 2>/dev/null
  cmp /tmp/got /tmp/orig || fail "ktls=$1: the copied range differs from the original"
}

step "records in the kernel"
tx0=$(stat_of TlsTxSw); rx0=$(stat_of TlsRxSw)
run on /tmp/tls.key
tx1=$(stat_of TlsTxSw); rx1=$(stat_of TlsRxSw)
echo "TlsTxSw $tx0 -> $tx1, TlsRxSw $rx0 -> $rx1"
grep "records in" /tmp/serve.log | head -n 2
grep "records in" /tmp/err | head -n 2
# Three host runs, each with an admin and an I/O queue: 6 sockets on each side, 12 in all.
[ $((tx1 - tx0)) -ge 12 ] && [ $((rx1 - rx0)) -ge 12 ] || fail "the kernel did not take the records"
grep -q "records in kernel)" /tmp/serve.log || fail "the target did not say the kernel has its records"
grep -q "TLS records in the kernel (kTLS) after each handshake" /tmp/serve.log || fail "serve did not say kTLS at start"
grep -q "records in kernel$" /tmp/err || fail "the host did not say the kernel has its records"
[ "$(stat_of TlsDecryptError)" = 0 ] || fail "the kernel failed to open records"

step "records in the kernel with a 48-byte key (TLS_AES_256_GCM_SHA384)"
run on /tmp/tls48.key
grep -q "TLS_AES_256_GCM_SHA384, records in kernel)" /tmp/serve.log || fail "AES-256-GCM not in the kernel"
tx1=$(stat_of TlsTxSw); rx1=$(stat_of TlsRxSw)

step "a KeyUpdate ends a kernel-TLS session, named as such (openssl s_client as the peer)"
# The specification's example key; its TLS PSK for this host and subsystem from Python's hmac.
SPEC_KEY=NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:
PSK=0bce7d1d34feb1ad24851c3d5135a0e4d5e331a29a0ccd0595653ff96ca9012a
command -v openssl > /dev/null || fail "no openssl in the guest (BLKCOPY_GUEST_TOOLS=openssl)"
blkcopy -v serve --listen 127.0.0.1:4420 --discovery-port 0 --nqn "$NQN" --ns mem:16M \
  --tls-key "$HOST=$SPEC_KEY" 2>/tmp/serve.log &
pid=$!; wait_serving
# "K" on a line of its own: s_client sends a KeyUpdate (update requested) once connected.
(sleep 2; echo K; sleep 4) | timeout 20 openssl s_client -connect 127.0.0.1:4420 -tls1_3 \
  -ciphersuites TLS_AES_128_GCM_SHA256 -psk "$PSK" -psk_identity "NVMe0R01 $HOST $NQN" \
  > /tmp/sc.out 2>&1 || true  # it fails once the target ends the session
kill "$pid"; wait "$pid"
grep -q "records in kernel" /tmp/serve.log || fail "s_client's session was not in the kernel: $(cat /tmp/sc.out)"
grep -q "a record that is not data (an alert, a KeyUpdate or close_notify) ended the session" \
  /tmp/serve.log || fail "the KeyUpdate's end was not named"
grep "not data" /tmp/serve.log | head -n 1
tx1=$(stat_of TlsTxSw); rx1=$(stat_of TlsRxSw)

step "records in user space (--ktls off, ktls=off)"
run off /tmp/tls.key
[ "$(stat_of TlsTxSw)" = "$tx1" ] && [ "$(stat_of TlsRxSw)" = "$rx1" ] || fail "ktls off still used the kernel"
grep -q "records in user space)" /tmp/serve.log || fail "the target did not say its records stay in user space"
grep -q "TLS records in user space (--ktls off)" /tmp/serve.log || fail "serve did not say --ktls off at start"

step "a host in the kernel against a target in user space, and the other way round"
blkcopy serve --listen 127.0.0.1:4420 --discovery-port 0 --nqn "$NQN" --ns /tmp/served \
  --tls-key "$HOST=@/tmp/tls.key" --ktls off 2>/tmp/serve.log &
pid=$!; wait_serving
truncate -s 0 /tmp/back; truncate -s 4M /tmp/back
blkcopy copy "nvme-tcp://127.0.0.1:4420/$NQN?ns=1&tls_key_file=/tmp/tls.key@8M" /tmp/back@0 --length 4M \
  > /tmp/out 2>/tmp/err || fail "kernel host, user-space target"
kill "$pid"; wait "$pid"
cmp /tmp/back /tmp/orig || fail "kernel host, user-space target: data differs"
blkcopy serve --listen 127.0.0.1:4420 --discovery-port 0 --nqn "$NQN" --ns /tmp/served \
  --tls-key "$HOST=@/tmp/tls.key" 2>/tmp/serve.log &
pid=$!; wait_serving
truncate -s 0 /tmp/back; truncate -s 4M /tmp/back
blkcopy copy "nvme-tcp://127.0.0.1:4420/$NQN?ns=1&tls_key_file=/tmp/tls.key&ktls=off@8M" /tmp/back@0 \
  --length 4M > /tmp/out 2>/tmp/err || fail "user-space host, kernel target"
kill "$pid"; wait "$pid"
cmp /tmp/back /tmp/orig || fail "user-space host, kernel target: data differs"
cat /proc/net/tls_stat
echo "PASS"
