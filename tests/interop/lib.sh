# Helpers for the scripts that run inside the guest (guest.sh puts this file at /lib.sh).
# Data is checked in 512-byte blocks against the ORIGINAL bytes kept in /tmp/orig.
fail() {
  echo "FAIL: $*"
  for f in /tmp/out /tmp/err /tmp/serve.log; do [ -s "$f" ] && { echo "-- $f"; cat "$f"; }; done
  dmesg | tail -n 8
  exit 1
}
step() { echo "== $(cut -d" " -f1 /proc/uptime) $*"; }
# COUNT blocks from LBA of DEV into FILE: readb DEV LBA COUNT FILE
readb() { dd if="$1" of="$4" bs=512 skip="$2" count="$3" iflag=direct 2>/dev/null || fail "read $1"; }
# COUNT blocks of the original from LBA into FILE: origb LBA COUNT FILE
origb() { dd if=/tmp/orig of="$3" bs=512 skip="$1" count="$2" 2>/dev/null; }
# checks blocks [LBA, LBA+COUNT) of DEV against the original's from ORIG: same DEV LBA COUNT ORIG WHAT
same() { readb "$1" "$2" "$3" /tmp/got; origb "$4" "$3" /tmp/want; cmp -s /tmp/got /tmp/want || fail "$5: data differs"; }
# a number from the --json result in /tmp/out
json() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" /tmp/out | head -n 1; }
# A copy reaching 32 KiB past the end of DST is refused with a clear message before anything is
# sent, and the last 64 KiB of DST stay as they were: past_end SRC DST
past_end() {
  local size
  size=$(blockdev --getsize64 "$2")
  readb "$2" $((size / 512 - 128)) 128 /tmp/before
  if blkcopy copy "$1@0" "$2@$((size - 32768))" --length 64k > /tmp/out 2>&1; then fail "copy past the end ran"; fi
  grep -q "beyond the end" /tmp/out || fail "unclear error: $(cat /tmp/out)"
  readb "$2" $((size / 512 - 128)) 128 /tmp/after
  cmp -s /tmp/before /tmp/after || fail "the tail changed"
}
# Linux nvmet through configfs, as nvmetcli does it. nvmet_subsystem NQN HOST FILE: a subsystem
# admitting only HOST (whose configfs entry is made when missing: write its keys before or
# after), namespace 1 on FILE with buffered I/O. nvmet_port ID PORT NQN [TSAS TREQ]: a TCP port
# on 127.0.0.1 serving NQN, with TLS when TSAS is tls1.3.
cfg=/sys/kernel/config/nvmet
nvmet_subsystem() {
  [ -d "$cfg/hosts/$2" ] || mkdir "$cfg/hosts/$2" || fail "configfs host"
  mkdir "$cfg/subsystems/$1" || fail "subsystem $1"
  echo 0 > "$cfg/subsystems/$1/attr_allow_any_host"
  ln -s "$cfg/hosts/$2" "$cfg/subsystems/$1/allowed_hosts/" || fail "allowed host link"
  local ns="$cfg/subsystems/$1/namespaces/1"
  mkdir "$ns"; echo 1 > "$ns/buffered_io"; echo -n "$3" > "$ns/device_path"
  echo 1 > "$ns/enable" || fail "namespace enable"
}
nvmet_port() {
  local port="$cfg/ports/$1"
  mkdir "$port"
  echo tcp > "$port/addr_trtype"; echo ipv4 > "$port/addr_adrfam"
  echo 127.0.0.1 > "$port/addr_traddr"; echo "$2" > "$port/addr_trsvcid"
  if [ -n "${4:-}" ]; then
    echo "$4" > "$port/addr_tsas" || fail "addr_tsas $4"
    echo "$5" > "$port/addr_treq" || fail "addr_treq $5"
  fi
  ln -s "$cfg/subsystems/$3" "$port/subsystems/" || fail "port link"
}
# Waits (30 s at most) until `blkcopy serve` logging into LOG (default /tmp/serve.log) listens.
wait_serving() {
  local i
  for i in $(seq 300); do
    grep -q "^blkcopy serve: .* on " "${1:-/tmp/serve.log}" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "blkcopy serve did not start"
}
# Serves DEV as NQN on 127.0.0.1:4420 (blkcopy serve) and connects the Linux NVMe/TCP host;
# TCPNS is then its namespace: serve_and_connect DEV NQN; stop_serving NQN ends both.
serve_and_connect() {
  blkcopy serve --ns "$1" --nqn "$2" --listen 127.0.0.1:4420 2>/tmp/serve.log &
  sleep 1
  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$2" || fail "connect"
  sleep 1
  local c tcp=""
  for c in /sys/class/nvme/nvme*; do [ "$(cat "$c/transport")" = tcp ] && tcp=$(basename "$c"); done
  TCPNS=/dev/${tcp}n1
  [ -b "$TCPNS" ] || fail "no namespace over TCP"
}
stop_serving() { nvme disconnect -n "$1" > /dev/null; kill %1 2>/dev/null; wait 2>/dev/null; }

# A user without privileges, for permission checks: su -s /bin/sh nobody -c ...
add_nobody() {
  echo "root:x:0:0::/:/bin/sh" > /etc/passwd; echo "nobody:x:65534:65534::/:/bin/sh" >> /etc/passwd
  echo "root:x:0:" > /etc/group
}
# DEV made root-only (600): a copy on it by an unprivileged user is refused with the message
# naming the device and the access it needs: copy_denied DEV
copy_denied() {
  add_nobody
  chmod 600 "$1"
  su -s /bin/sh nobody -c "blkcopy copy $1@0 $1@1M --length 4k" > /tmp/out 2>&1 && fail "nobody copied"
  grep -q "permission denied on $1: needs read/write access (root or the disk group)" /tmp/out ||
    fail "unclear permission error: $(cat /tmp/out)"
}

# LIO (the Linux SCSI target) in configfs, with tcm_loop LUNs seen by this same guest: fileio
# backstores (a file each) and one tcm_loop target per session (SCSI.md has the order of steps).
T=/sys/kernel/config/target
backstore() {  # NAME SIZE SERIAL [3PC] [FOLDER]
  local d=$T/core/fileio_0/$1
  mkdir -p "$d" || fail "mkdir $d"
  echo "fd_dev_name=${5:-/tmp}/$1.img,fd_dev_size=$2" > "$d/control"
  echo "$3" > "$d/wwn/vpd_unit_serial"  # before export: VPD 0x83 gets its NAA designator
  echo 1 > "$d/enable" || fail "enable $1"
  echo "${4:-1}" > "$d/attrib/emulate_3pc"
}
target() {  # WWN NEXUS NAME... : one tcm_loop target, LUN i = backstore i
  local t=$T/loopback/$1/tpgt_1 i=0
  mkdir -p "$t" && echo "$2" > "$t/nexus" || fail "tcm_loop $1"
  shift 2
  for b in "$@"; do
    mkdir "$t/lun/lun_$i" && ln -s "$T/core/fileio_0/$b" "$t/lun/lun_$i/$b" || fail "lun $b"
    i=$((i + 1))
  done
}
disk() {  # WWN LUN: the block device of that LUN
  local addr n=0
  addr=$(cat "$T/loopback/$1/tpgt_1/address")
  while [ $n -lt 50 ]; do
    for b in /sys/class/scsi_device/"$addr:$2"/device/block/*; do
      [ -e "$b" ] && [ -b "/dev/$(basename "$b")" ] && { echo "/dev/$(basename "$b")"; return; }
    done
    sleep 0.1; n=$((n + 1))
  done
  fail "no block device for $1 LUN $2"
}
# sectors the initiator has read from a disk (/sys/block/X/stat)
sectors_read() { awk '{print $3}' "/sys/block/$(basename "$1")/stat"; }
# The block device of namespace NSID (the multipath head, not a path), or nothing: ns_disk NSID
ns_disk() {
  local d
  for d in /sys/block/nvme*n*; do
    case ${d##*/} in *c*) continue ;; esac
    [ "$(cat "$d/nsid" 2>/dev/null)" = "$1" ] && echo "${d##*/}"
  done
  return 0
}
# Waits up to 30 s for a shell condition, else fails with MESSAGE: until_true CONDITION MESSAGE
until_true() {
  local i=0
  until eval "$1"; do
    i=$((i + 1))
    [ $i -ge 150 ] && fail "$2"
    sleep 0.2
  done
}
