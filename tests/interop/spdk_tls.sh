#!/usr/bin/env bash
# NVMe/TCP over TLS 1.3 against SPDK, both ways (root: hugepages). Skips (77) without an SPDK
# build at SPDK_DIR (../shared/tools/spdk-build.sh builds one).
#   1. SPDK's host (spdk_dd through bdev_nvme with a PSK, spdk_nvme_perf -S ssl) against
#      `blkcopy serve --tls-key`: data written by SPDK, read back by SPDK and by blkcopy's own
#      host, compared with the ORIGINAL bytes; a wrong key, another host NQN and a clear-text
#      host are refused.
#   2. blkcopy's host against SPDK's nvmf_tgt with a secure-channel listener (-k): a pattern
#      written, a Copy offloaded on SPDK, the destination compared with the ORIGINAL bytes; a
#      wrong key and no key are refused with clear errors.
# usage: spdk_tls.sh BLKCOPY_BINARY
set -euo pipefail
blkcopy=${1:?usage: $0 BLKCOPY_BINARY}
[ -n "${SPDK_DIR:-}" ] && [ -x "$SPDK_DIR/build/bin/nvmf_tgt" ] && [ -x "$SPDK_DIR/build/bin/spdk_dd" ] ||
  { echo "spdk_tls: SKIP: set SPDK_DIR to an SPDK build (../shared/tools/spdk-build.sh)"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "spdk_tls: SKIP: needs root (hugepages)"; exit 77; }
command -v nvme > /dev/null || { echo "spdk_tls: SKIP: nvme-cli (gen-tls-key) missing"; exit 77; }
export LD_LIBRARY_PATH=$SPDK_DIR/build/lib
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge 1024 ] || echo 1024 > /proc/sys/vm/nr_hugepages

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"; cat "$work/serve.log"
  for f in "$work"/*.log "$work/out"; do [ -s "$f" ] && { echo "-- $f"; tail -n 20 "$f"; }; done
  exit 1
}
step() { echo "== $*"; }
# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# SPDK reads keys from files of mode 0600 that hold exactly the key (no line end).
key_file() { printf '%s' "$(nvme gen-tls-key --hmac="$2")" > "$work/$1"; chmod 600 "$work/$1"; }
# Waits (up to 30 s) until something listens on PORT.
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  fail "nothing listens on port $1"
}

host=nqn.2014-08.org.nvmexpress:uuid:0f3c3a52-7c67-4a6f-9f0c-0e2f6a1e2b11
other=nqn.2014-08.org.nvmexpress:uuid:9b1f0c1e-2d2a-4d35-8c7e-3f6e8d0a4c22
sub=nqn.2024-01.io.blkcopy:tls
key_file key 1
key_file wrong 1
key_file long 2
head -c 4M /dev/urandom > "$work/orig"

# ---------------------------------------------------------------- 1. SPDK host, blkcopy target
port=$(free_port)
"$blkcopy" serve --listen "127.0.0.1:$port" --nqn "$sub" --ns mem:16M --discovery-port 0 \
  --tls-key "$host=@$work/key" --tls-key "$other=@$work/long" > "$work/serve.log" 2>&1 &
pids+=($!)
wait_port "$port"
# spdk_dd through bdev_nvme with the PSK from SPDK's keyring: 4 MiB in, then read back.
dd_config() {  # dd_config HOSTNQN KEYFILE
  cat << EOF
{"subsystems": [
  {"subsystem": "keyring", "config": [{"method": "keyring_file_add_key", "params": {"name": "key0", "path": "$2"}}]},
  {"subsystem": "bdev", "config": [{"method": "bdev_nvme_attach_controller", "params": {
    "name": "tls", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "$port",
    "subnqn": "$sub", "hostnqn": "$1", "psk": "key0"}}]}
]}
EOF
}
dd_config "$host" "$work/key" > "$work/dd.json"
step "SPDK's host writes 4 MiB over TLS into blkcopy serve"
"$SPDK_DIR/build/bin/spdk_dd" --if="$work/orig" --ob=tlsn1 --bs=65536 --json "$work/dd.json" \
  > "$work/spdk_dd.log" 2>&1 || fail "spdk_dd write"
step "SPDK's host reads it back"
"$SPDK_DIR/build/bin/spdk_dd" --ib=tlsn1 --of="$work/back" --bs=65536 --count=64 --json "$work/dd.json" \
  > "$work/spdk_dd.log" 2>&1 || fail "spdk_dd read"
cmp -s "$work/orig" "$work/back" || fail "SPDK read back other bytes than it wrote"
step "blkcopy's host reads it back over TLS"
dev="nvme-tcp://127.0.0.1:$port/$sub?ns=1&hostnqn=$host&tls_key_file=$work/key"
rm -f "$work/back"
truncate -s 4M "$work/back"
"$blkcopy" copy "$dev@0" "$work/back@0" --length 4M > "$work/out" 2>&1 || fail "blkcopy read"
cmp -s "$work/orig" "$work/back" || fail "blkcopy's host read other bytes than SPDK wrote"
step "spdk_nvme_perf -S ssl, 48-byte key (TLS_AES_256_GCM_SHA384), randrw"
"$SPDK_DIR/build/bin/spdk_nvme_perf" -S ssl -q 32 -o 4096 -w randrw -M 50 -t 2 -c 0x2 \
  -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$sub hostnqn:$other" \
  --psk-path "$work/long" > "$work/perf.log" 2>&1 || fail "spdk_nvme_perf over TLS"
grep -q "^Total" "$work/perf.log" || fail "spdk_nvme_perf did no I/O"
step "refused: a wrong key, a key of another host, clear text"
# spdk_nvme_perf may exit 0 having found no controller: did it do I/O (its Total line)? Its
# --psk-path comes after the -r it applies to.
perf_ran() {
  "$SPDK_DIR/build/bin/spdk_nvme_perf" -q 1 -o 4096 -w read -t 1 -c 0x2 "$@" > "$work/perf.log" 2>&1 || true
  grep -q "^Total" "$work/perf.log"
}
for bad in "$host|$work/wrong" "$other|$work/key"; do
  if perf_ran -S ssl -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$sub hostnqn:${bad%%|*}" \
    --psk-path "${bad#*|}"; then
    fail "SPDK connected with $bad"
  fi
done
if perf_ran -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$sub hostnqn:$host"; then
  fail "a clear-text host connected to a TLS-only port"
fi
grep -q "clear text on a port that requires TLS" "$work/serve.log" ||
  fail "the target did not say why it refused the clear-text host"
grep -q "TLS handshake failed" "$work/serve.log" || fail "the target did not log the failed handshakes"
kill "${pids[-1]}"

# ---------------------------------------------------------------- 2. blkcopy host, SPDK target
sock=$work/spdk.sock
sport=$(free_port)
"$SPDK_DIR/build/bin/nvmf_tgt" -m 0x1 -u -r "$sock" --wait-for-rpc > "$work/nvmf_tgt.log" 2>&1 &
pids+=($!)
rpc() { /usr/bin/python3 "$SPDK_DIR/scripts/rpc.py" -s "$sock" "$@" > /dev/null; }
for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
rpc sock_set_default_impl -i ssl
rpc sock_impl_set_options -i ssl --tls-version 13
rpc framework_start_init
rpc nvmf_create_transport -t TCP
rpc bdev_malloc_create -b Malloc0 32 512
rpc nvmf_create_subsystem "$sub" -s SPDK00000000000001
rpc nvmf_subsystem_add_ns "$sub" Malloc0
rpc nvmf_subsystem_add_listener "$sub" -t tcp -a 127.0.0.1 -s "$sport" -k
rpc keyring_file_add_key key0 "$work/key"
rpc nvmf_subsystem_add_host "$sub" "$host" --psk key0
wait_port "$sport"
dev="nvme-tcp://127.0.0.1:$sport/$sub?ns=1&hostnqn=$host"
step "blkcopy's host writes 4 MiB to SPDK over TLS"
"$blkcopy" copy "$work/orig@0" "$dev&tls_key_file=$work/key@0" --length 4M > "$work/out" 2>&1 ||
  fail "blkcopy write over TLS"
step "a Copy of 1 MiB offloaded on SPDK, over TLS"
"$blkcopy" copy "$dev&tls_key_file=$work/key@1M" "$dev&tls_key_file=$work/key@8M" --length 1M \
  --no-emulation --json > "$work/out" 2>&1 || fail "Copy over TLS"
grep -q '"offloaded_bytes": *1048576' "$work/out" || fail "the Copy was not offloaded: $(cat "$work/out")"
# SPDK keeps no blkcopy copy report (log page C0h): the copy says so, and does not fail for it.
grep -q '"error": "[^"]*keeps no copy report' "$work/out" ||
  fail "no word of SPDK's missing copy report: $(cat "$work/out")"
truncate -s 1M "$work/got"
"$blkcopy" copy "$dev&tls_key_file=$work/key@8M" "$work/got@0" --length 1M > "$work/out" 2>&1 ||
  fail "read back over TLS"
cmp -s "$work/got" <(head -c 2M "$work/orig" | tail -c 1M) || fail "the copied range differs from the original"
step "refused: a wrong key, no key"
if "$blkcopy" info "$dev&tls_key_file=$work/wrong" > "$work/out" 2>&1; then fail "connected with a wrong key"; fi
grep -q "TLS" "$work/out" || fail "unclear error for a wrong key: $(cat "$work/out")"
if "$blkcopy" info "$dev" > "$work/out" 2>&1; then fail "connected in clear text to a TLS listener"; fi
echo "spdk_tls: all checks passed"
