#!/usr/bin/env bash
# blkcopy's NVMe/TCP target against SPDK's nvmf_tgt (malloc bdev), one target core each (core 0),
# measured by the same client (spdk_nvme_perf on core 1), alternately in one run; then blkcopy's
# own host (`blkcopy perf`) against spdk_nvme_perf on blkcopy's target, and copies against reads
# through it. A 1 GiB RAM namespace of 512-byte blocks on both targets, TCP over loopback.
#
#   SPDK_DIR=/path/to/spdk bench/target-vs-spdk.sh [BLKCOPY_BINARY]     (root: hugepages)
#
# SPDK_DIR is a tree built by ../shared/tools/spdk-build.sh (nothing of SPDK is in this
# repository); without it the script says so and exits 77. BENCH_SECONDS sets each row's time
# (default 10). POLL_US (default 1000) is blkcopy's --poll-us for its target and its host: SPDK's
# reactor and spdk_nvme_perf poll, so the like-for-like comparison polls too; POLL_US=0 measures
# blkcopy's sleeping loops. The RAM namespace is filled first (seed=1), as SPDK's malloc bdev sits
# in hugepages already touched: a first write to a fresh page would otherwise cost a page fault.
# Then the same over TLS 1.3 (TP 8011, a 32-byte PSK: TLS_AES_128_GCM_SHA256): both targets with
# a TLS-only listener, spdk_nvme_perf -S ssl as the client, against the clear-text rows above.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blkcopy=$(realpath "${1:-$root/build/blkcopy}")
[ -n "${SPDK_DIR:-}" ] && [ -x "$SPDK_DIR/build/bin/nvmf_tgt" ] ||
  { echo "target-vs-spdk: set SPDK_DIR to an SPDK build (../shared/tools/spdk-build.sh)"; exit 77; }
secs=${BENCH_SECONDS:-10}
poll=${POLL_US:-1000}
export LD_LIBRARY_PATH=$SPDK_DIR/build/lib
perf=$SPDK_DIR/build/bin/spdk_nvme_perf
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge 1024 ] || echo 1024 > /proc/sys/vm/nr_hugepages

BNQN=nqn.2024-01.io.blkcopy:bench SNQN=nqn.2016-06.io.spdk:cnode1
ROWS=("4096 32 randread" "4096 32 randwrite" "131072 16 read" "131072 16 write" "4096 1 randread")

HOST=nqn.2014-08.org.nvmexpress:uuid:6a1f2c3e-4b5d-4e6f-8a9b-0c1d2e3f4a5b
printf '%s' "$(nvme gen-tls-key --hmac=1)" > "$work/psk" && chmod 600 "$work/psk"
TLS_ROWS=("4096 32 randread" "131072 16 read")
# spdk_nvme_perf's Total line: IOPS, MiB/s, average latency (us). TLS=1: over TLS with the PSK.
spdk_row() {  # PORT NQN QD SIZE WORKLOAD -> "iops mibs avg_us"
  local tls=()
  [ "${TLS:-0}" = 1 ] && tls=(-S ssl)
  "$perf" -c 0x2 -q "$3" -o "$4" -w "$5" -t "$secs" "${tls[@]}" \
    -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$1 subnqn:$2 hostnqn:$HOST" \
    $([ "${TLS:-0}" = 1 ] && echo --psk-path "$work/psk") 2>/dev/null |
    awk '/^Total/ {print $3, $4, $5}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf("%.2fx", (b > 0) ? a / b : 0) }'; }
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# One target at a time on core 0 (SPDK's reactor spins on its core: never both at once).
D="nvme-tcp://127.0.0.1:4430/$BNQN?ns=1"
host_iops() {  # RW QD
  taskset -c 1 "$blkcopy" perf "$D" --force --rw "$1" --qd "$2" --time "$secs" --json |
    sed -n 's/^  "iops": *\([0-9.]*\).*/\1/p'
}
host_mibs() {  # 128 KiB reads at QD16, MiB/s
  taskset -c 1 "$blkcopy" perf "$D" --rw read --bs 128k --qd 16 --time "$secs" --json |
    sed -n 's/.*"mib_per_second": *\([0-9.]*\).*/\1/p'
}
taskset -c 0 "$blkcopy" serve --ns mem:1G,seed=1 --nqn $BNQN --listen 127.0.0.1:4430 --cores 1 \
  --poll-us "$poll" 2> "$work/blkcopy.log" & pids+=($!)
for _ in $(seq 100); do grep -q "listening\|4430" "$work/blkcopy.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
for i in "${!ROWS[@]}"; do set -- ${ROWS[$i]}; spdk_row 4430 $BNQN "$2" "$1" "$3" > "$work/b$i"; done
host_read=$(host_iops randread 32)
host_copy=$(host_iops randcopy 32)
host_read128=$(host_iops randread 128)
host_copy128=$(host_iops randcopy 128)
host_mibs_clear=$(host_mibs)
stop "${pids[-1]}"
# The same target, TLS only.
taskset -c 0 "$blkcopy" serve --ns mem:1G,seed=1 --nqn $BNQN --listen 127.0.0.1:4432 --cores 1 \
  --poll-us "$poll" --tls-key "$HOST=@$work/psk" --discovery-port 0 2> "$work/blkcopy-tls.log" & pids+=($!)
for _ in $(seq 100); do grep -q "4432" "$work/blkcopy-tls.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
for i in "${!TLS_ROWS[@]}"; do set -- ${TLS_ROWS[$i]}; TLS=1 spdk_row 4432 $BNQN "$2" "$1" "$3" > "$work/bt$i"; done
D="nvme-tcp://127.0.0.1:4432/$BNQN?ns=1&hostnqn=$HOST&tls_key_file=$work/psk"
host_read_tls=$(host_iops randread 32)
host_mibs_tls=$(host_mibs)
stop "${pids[-1]}"

"$SPDK_DIR/build/bin/nvmf_tgt" -m 0x1 -u -r "$work/spdk.sock" > "$work/spdk.log" 2>&1 & pids+=($!)
rpc() { /usr/bin/python3 "$SPDK_DIR/scripts/rpc.py" -s "$work/spdk.sock" "$@" > /dev/null; }
for _ in $(seq 50); do [ -S "$work/spdk.sock" ] && break; sleep 0.2; done
rpc nvmf_create_transport -t TCP
rpc bdev_malloc_create -b Malloc0 1024 512
rpc nvmf_create_subsystem $SNQN -a -s SPDK00000000000001
rpc nvmf_subsystem_add_ns $SNQN Malloc0
rpc nvmf_subsystem_add_listener $SNQN -t tcp -a 127.0.0.1 -s 4431
sleep 1
for i in "${!ROWS[@]}"; do set -- ${ROWS[$i]}; spdk_row 4431 $SNQN "$2" "$1" "$3" > "$work/s$i"; done
stop "${pids[-1]}"
# SPDK with a TLS-only (secure channel) listener: the ssl socket implementation, the host's PSK.
"$SPDK_DIR/build/bin/nvmf_tgt" -m 0x1 -u -r "$work/spdk.sock" --wait-for-rpc > "$work/spdk-tls.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do [ -S "$work/spdk.sock" ] && break; sleep 0.2; done
rpc sock_set_default_impl -i ssl
rpc sock_impl_set_options -i ssl --tls-version 13
rpc framework_start_init
rpc nvmf_create_transport -t TCP
rpc bdev_malloc_create -b Malloc0 1024 512
rpc nvmf_create_subsystem $SNQN -s SPDK00000000000001
rpc nvmf_subsystem_add_ns $SNQN Malloc0
rpc nvmf_subsystem_add_listener $SNQN -t tcp -a 127.0.0.1 -s 4433 -k
rpc keyring_file_add_key key0 "$work/psk"
rpc nvmf_subsystem_add_host $SNQN "$HOST" --psk key0
sleep 1
for i in "${!TLS_ROWS[@]}"; do set -- ${TLS_ROWS[$i]}; TLS=1 spdk_row 4433 $SNQN "$2" "$1" "$3" > "$work/st$i"; done
stop "${pids[-1]}"

echo "| workload (one target core each, spdk_nvme_perf on core 1, ${secs} s; blkcopy --poll-us $poll) | blkcopy target | SPDK nvmf_tgt | ratio |"
echo "| --- | --- | --- | --- |"
for i in "${!ROWS[@]}"; do
  set -- ${ROWS[$i]}
  read -r bi bm ba < "$work/b$i"
  read -r si sm sa < "$work/s$i"
  if [ "$1" = 4096 ]; then
    echo "| 4 KiB $3 QD$2 | $(printf '%.0f' "$bi") IOPS, ${ba} us | $(printf '%.0f' "$si") IOPS, ${sa} us | $(ratio "$bi" "$si") |"
  else
    echo "| 128 KiB $3 QD$2 | ${bm} MiB/s | ${sm} MiB/s | $(ratio "$bm" "$sm") |"
  fi
done
read -r b0 _ < "$work/b0"
echo
echo "| on blkcopy's target, 4 KiB, QD32 unless said (client on core 1) | IOPS | ratio |"
echo "| --- | --- | --- |"
echo "| spdk_nvme_perf randread | $(printf '%.0f' "$b0") | 1.00x |"
echo "| blkcopy perf randread (blkcopy's host) | $(printf '%.0f' "$host_read") | $(ratio "$host_read" "$b0") |"
echo "| blkcopy perf randcopy (offloaded copies/s) | $(printf '%.0f' "$host_copy") | $(ratio "$host_copy" "$host_read") of blkcopy's reads |"
echo "| blkcopy perf randread QD128 | $(printf '%.0f' "$host_read128") | $(ratio "$host_read128" "$b0") |"
echo "| blkcopy perf randcopy QD128 | $(printf '%.0f' "$host_copy128") | $(ratio "$host_copy128" "$host_read128") of blkcopy's QD128 reads |"
echo
echo "| over TLS 1.3 (user-space records on both targets; spdk_nvme_perf -S ssl on core 1) | blkcopy clear | blkcopy TLS | TLS/clear | SPDK TLS | blkcopy TLS / SPDK TLS |"
echo "| --- | --- | --- | --- | --- | --- |"
for i in "${!TLS_ROWS[@]}"; do
  set -- ${TLS_ROWS[$i]}
  j=$([ "$1" = 4096 ] && echo 0 || echo 2)  # the clear-text row of the same workload
  read -r ci cm _ < "$work/b$j"
  read -r bi bm _ < "$work/bt$i"
  read -r si sm _ < "$work/st$i"
  if [ "$1" = 4096 ]; then
    echo "| 4 KiB $3 QD$2 (IOPS) | $(printf '%.0f' "$ci") | $(printf '%.0f' "$bi") | $(ratio "$bi" "$ci") | $(printf '%.0f' "$si") | $(ratio "$bi" "$si") |"
  else
    echo "| 128 KiB $3 QD$2 (MiB/s) | $cm | $bm | $(ratio "$bm" "$cm") | $sm | $(ratio "$bm" "$sm") |"
  fi
done
echo "| blkcopy's host: 4 KiB randread QD32 (IOPS) | $(printf '%.0f' "$host_read") | $(printf '%.0f' "$host_read_tls") | $(ratio "$host_read_tls" "$host_read") | | |"
echo "| blkcopy's host: 128 KiB read QD16 (MiB/s) | $(printf '%.0f' "$host_mibs_clear") | $(printf '%.0f' "$host_mibs_tls") | $(ratio "$host_mibs_tls" "$host_mibs_clear") | | |"
