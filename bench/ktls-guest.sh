#!/usr/bin/env bash
# NVMe/TCP over TLS with the records in user space (OpenSSL) against the kernel (kTLS), beside
# clear text: blkcopy's host (perf) against `blkcopy serve` on the loopback of a TCG guest
# (tests/interop/guest.sh; the build machine's kernel has no tls module). Rows: 4 KiB randread
# QD32 and 128 KiB read QD16 from a RAM namespace, BENCH_SECONDS each (default 5), two rounds
# in alternation, the better one kept. Besides IOPS and MiB/s it reports the CPU seconds per GiB
# of the target (its /proc/PID/stat) and of the host (perf's cpu_seconds_per_gib), which is where
# moving the records shows. TCG emulates every instruction, AES-NI included: compare the ratios,
# not the absolute figures, and only within one run.
#   bench/ktls-guest.sh [BLKCOPY_BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blkcopy=$(realpath "${1:-$root/build/blkcopy}")
work=$(mktemp -d)
[ -n "${BLKCOPY_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
cat > "$work/bench.sh" <<GUEST
T=${BENCH_SECONDS:-5}
GUEST
cat >> "$work/bench.sh" <<'GUEST'
HOST=$(cat /etc/nvme/hostnqn)
NQN=nqn.2024-01.io.blkcopy:bench
nvme gen-tls-key --hmac=1 | tr -d '\n' > /tmp/tls.key
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=100
run() {  # $1: mode (clear|user|kernel), $2: rw, $3: bs, $4: qd
  case $1 in
    clear) flags=""; opts="" ;;
    user) flags="--tls-key $HOST=@/tmp/tls.key --ktls off"; opts="&tls_key_file=/tmp/tls.key&ktls=off" ;;
    kernel) flags="--tls-key $HOST=@/tmp/tls.key --ktls on"; opts="&tls_key_file=/tmp/tls.key&ktls=on" ;;
  esac
  # shellcheck disable=SC2086
  blkcopy -v serve --listen 127.0.0.1:4420 --discovery-port 0 --nqn "$NQN" --ns mem:256M,seed=3 \
    $flags 2>/tmp/serve.log &
  pid=$!
  for i in $(seq 300); do grep -q "^blkcopy serve: .* on " /tmp/serve.log && break; sleep 0.1; done
  t0=$(ticks "$pid")
  blkcopy perf "nvme-tcp://127.0.0.1:4420/$NQN?ns=1$opts" --force --rw "$2" --bs "$3" --qd "$4" --time "$T" \
    --json > /tmp/out 2>/tmp/err || { cat /tmp/err /tmp/serve.log; echo "BENCH-FAILED $1 $2"; }
  t1=$(ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  j() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" /tmp/out | head -n 1; }
  echo "BENCH $1 $2 $(j iops) $(j mib_per_second) $(j bytes) $(j cpu_seconds_per_gib) $((t1 - t0)) $hz"
  echo "BENCH-RECORDS $1: $(grep -o "records in [a-z ]*" /tmp/serve.log | head -n 1)"
}
for round in 1 2; do
  for mode in clear user kernel; do
    run $mode randread 4k 32
    run $mode read 128k 16
  done
done
echo "BENCH-RECORDS sockets the kernel took: $(awk '$1 == "TlsTxSw" {print $2}' /proc/net/tls_stat)"
GUEST
"$root/tests/interop/guest.sh" "$work/bench.sh" "$blkcopy" > "$work/console.log" 2>&1 || true
grep -a "^BENCH-FAILED" "$work/console.log" && exit 1
grep -a "^BENCH-RECORDS" "$work/console.log" | tr -d '\r' | sort | uniq -c || true
grep -a "^BENCH " "$work/console.log" | awk '
  # best round per (mode, rw) by throughput
  { key = $2 " " $3; if (!(key in mib) || $5 > mib[key]) {
      iops[key] = $4; mib[key] = $5; host[key] = $7
      tgt[key] = ($6 > 0) ? ($8 / $9) / ($6 / 1073741824) : 0 } }
  END {
    print "| in the guest (TCG, loopback) | clear | TLS, user-space records | TLS, kTLS | kTLS / user space |"
    print "| --- | --- | --- | --- | --- |"
    split("randread read", rws, " ")
    for (i = 1; i <= 2; i++) {
      rw = rws[i]
      what = rw == "randread" ? "4 KiB randread QD32 (IOPS)" : "128 KiB read QD16 (MiB/s)"
      v["clear"] = rw == "randread" ? iops["clear " rw] : mib["clear " rw]
      v["user"] = rw == "randread" ? iops["user " rw] : mib["user " rw]
      v["kernel"] = rw == "randread" ? iops["kernel " rw] : mib["kernel " rw]
      printf "| %s | %.0f | %.0f | %.0f | %.2fx |\n", what, v["clear"], v["user"], v["kernel"], v["kernel"] / v["user"]
      printf "| %s: target CPU s/GiB | %.2f | %.2f | %.2f | %.2fx |\n", what, tgt["clear " rw], tgt["user " rw], tgt["kernel " rw], tgt["kernel " rw] / tgt["user " rw]
      printf "| %s: host CPU s/GiB | %.2f | %.2f | %.2f | %.2fx |\n", what, host["clear " rw], host["user " rw], host["kernel " rw], host["kernel " rw] / host["user " rw]
    }
  }'
