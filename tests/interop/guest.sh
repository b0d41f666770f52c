#!/usr/bin/env bash
# Runs a test script inside a QEMU guest (software emulation: -accel tcg) booted from Debian's
# kernel package with a busybox initramfs carrying blkcopy and nvme-cli, the NVMe host and target
# drivers, SCSI with LIO (tcm_loop, fileio backstores) and kernel TLS (the tls module).
# Everything in the guest stays on its loopback. Prints the guest's console and exits with the script's exit code.
#
#   tests/interop/guest.sh SCRIPT [BLKCOPY_BINARY]
#
# BLKCOPY_GUEST_KERNEL=backports boots Linux 6.12 from bookworm-backports instead of Debian 12's
# 6.1 (DH-HMAC-CHAP on the NVMe host and target; scripts/setup adds the backports source).
# BLKCOPY_GUEST_QEMU_ARGS adds QEMU arguments (split at spaces: NVMe controllers and their
# namespaces, tracing), BLKCOPY_GUEST_QEMU picks another QEMU binary; BLKCOPY_GUEST_QEMU=backports
# runs QEMU 10 from bookworm-backports (downloaded and unpacked beside the system's 7.2, never
# installed): its NVMe controller offers Copy formats 2 and 3. BLKCOPY_GUEST_TRIXIE=1 adds
# Debian 13's tlshd, nvme-cli (as nvme-trixie) and keyctl. BLKCOPY_GUEST_TOOLS="strace ..."
# puts more of this machine's programs into the guest (for looking into a run).
# BLKCOPY_GUEST_SYSTEMD=PREFIX boots this machine's Debian with systemd as PID 1 instead of the
# busybox shell: its root read-only over 9p under a tmpfs overlay, the script run by a unit
# once basic.target is reached (at /blkcopy-test/test.sh, PREFIX in /blkcopy-test/prefix: an
# installed blkcopy whose files the guest reaches at the same paths).
#
# Needs: qemu-system-x86, busybox-static, cpio, nvme-cli (scripts/setup installs them) and
# Debian's archive for the kernel package (cached in /var/cache/blkcopy-interop).
set -euo pipefail
for tool in qemu-system-x86_64 busybox cpio nvme; do
  command -v "$tool" >/dev/null || { echo "guest.sh: $tool not installed (scripts/setup installs it)"; exit 77; }
done
script=$(realpath "$1")
blkcopy=$(realpath "${2:-build/blkcopy}")
cache=/var/cache/blkcopy-interop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The kernel: the package linux-image-amd64 points at (Debian 12's, or bookworm-backports'
# with BLKCOPY_GUEST_KERNEL=backports), unpacked once.
mkdir -p "$cache"
unpacked="$cache/root"
meta=linux-image-amd64
if [ "${BLKCOPY_GUEST_KERNEL:-}" = backports ]; then
  ver=$(apt-cache madison linux-image-amd64 | awk '/bookworm-backports/{print $3; exit}')
  [ -n "$ver" ] || { echo "guest.sh: no bookworm-backports kernel (scripts/setup adds the source)"; exit 77; }
  meta="linux-image-amd64=$ver"
  unpacked="$cache/root-backports"
fi
if [ ! -d "$unpacked/boot" ]; then
  pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  (cd "$cache" && apt-get download "$pkg" >/dev/null 2>&1 && dpkg -x "$pkg"_*.deb "$unpacked")
fi
kernel=$(ls "$unpacked"/boot/vmlinuz-* | head -n 1)
mods=$(ls -d "$unpacked"/lib/modules/* | head -n 1)/kernel

qemu=${BLKCOPY_GUEST_QEMU:-qemu-system-x86_64}
if [ "$qemu" = backports ]; then
  if [ ! -x "$cache/qemu-backports/usr/bin/qemu-system-x86_64" ]; then
    ver=$(apt-cache madison qemu-system-x86 | awk '/bookworm-backports/{print $3; exit}')
    [ -n "$ver" ] || { echo "guest.sh: no bookworm-backports QEMU (scripts/setup adds the source)"; exit 77; }
    (cd "$cache" && apt-get download "qemu-system-x86=$ver" >/dev/null 2>&1 &&
       dpkg -x qemu-system-x86_*bpo*.deb "$cache/qemu-backports")
  fi
  qemu="$cache/qemu-backports/usr/bin/qemu-system-x86_64"
fi
"$qemu" --version | head -n 1

root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,etc/nvme,lib/modules,usr/sbin,usr/bin}
cp /bin/busybox "$root/bin/busybox"
for m in fs/configfs/configfs lib/crc64 lib/crc64-rocksoft crypto/crc64_rocksoft_generic crypto/crct10dif_common \
         crypto/crct10dif_generic lib/crc-t10dif block/t10-pi crypto/crc32c_generic lib/libcrc32c \
         drivers/nvme/common/nvme-keyring drivers/nvme/common/nvme-auth \
         drivers/nvme/host/nvme-core drivers/nvme/host/nvme drivers/nvme/host/nvme-fabrics \
         drivers/nvme/host/nvme-tcp \
         drivers/nvme/target/nvmet drivers/nvme/target/nvmet-tcp \
         drivers/scsi/scsi_common drivers/scsi/scsi_mod drivers/scsi/sd_mod drivers/scsi/sg \
         drivers/target/target_core_mod drivers/target/target_core_file drivers/target/loopback/tcm_loop \
         lib/crypto/gf128mul crypto/gf128mul crypto/ghash-generic crypto/ctr crypto/gcm crypto/cryptd \
         crypto/crypto_simd arch/x86/crypto/aesni-intel arch/x86/crypto/ghash-clmulni-intel net/tls/tls \
         ${BLKCOPY_GUEST_SYSTEMD:+drivers/virtio/virtio drivers/virtio/virtio_ring \
           drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev \
           drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache net/9p/9pnet \
           net/9p/9pnet_virtio fs/9p/9p fs/overlayfs/overlay}; do
  f=$(ls "$mods/$m".ko* 2>/dev/null | head -n 1) || true
  [ -n "$f" ] || continue
  case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$(basename "${f%.xz}")" ;;  # busybox insmod wants .ko
    *) cp "$f" "$root/lib/modules/" ;;
  esac
done
# Binaries with their shared libraries and the loader.
copy_bin() {
  cp "$1" "$root/$2"
  ldd "$1" | awk '/=>/{print $3} /ld-linux/{print $1}' | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_bin "$blkcopy" bin/blkcopy
copy_bin "$(command -v nvme)" usr/sbin/nvme
for tool in ${BLKCOPY_GUEST_TOOLS:-}; do copy_bin "$(command -v "$tool")" "usr/bin/$tool"; done
mkdir -p "$root/lib64" && cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
# BLKCOPY_GUEST_TRIXIE=1: Debian 13's tlshd, nvme-cli 2.13 and keyctl with their own libraries
# and loader under /trixie (tests/interop/trixie_tools.sh), run through wrappers.
if [ -n "${BLKCOPY_GUEST_TRIXIE:-}" ]; then
  trixie=$("$(dirname "$0")/trixie_tools.sh" "$cache") || { echo "guest.sh: cannot fetch Debian 13's tools"; exit 77; }
  mkdir -p "$root/trixie/usr/sbin" "$root/trixie/usr/bin" "$root/trixie/usr/lib"
  cp -a "$trixie/usr/lib/x86_64-linux-gnu" "$root/trixie/usr/lib/"
  cp "$trixie/usr/sbin/tlshd" "$trixie/usr/sbin/nvme" "$root/trixie/usr/sbin/"
  cp "$trixie/usr/bin/keyctl" "$root/trixie/usr/bin/"
  for tool in sbin/tlshd:tlshd sbin/nvme:nvme-trixie bin/keyctl:keyctl; do
    printf '#!/bin/sh\nexec /trixie/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /trixie/usr/lib/x86_64-linux-gnu /trixie/usr/%s "$@"\n' \
      "${tool%%:*}" > "$root/usr/bin/${tool#*:}"
    chmod +x "$root/usr/bin/${tool#*:}"
  done
fi
# BLKCOPY_GUEST_NVMETCLI=DIR: nvmetcli's work tree (its nvmet package, which `nvmetcli save`
# and `nvmetcli restore` are) with this machine's python3 and its standard library, run as
# `nvmetcli-json save|restore FILE`. nvmetcli has no Debian package; its sources are public.
if [ -n "${BLKCOPY_GUEST_NVMETCLI:-}" ]; then
  [ -f "$BLKCOPY_GUEST_NVMETCLI/nvmet/nvme.py" ] || { echo "guest.sh: no nvmetcli at $BLKCOPY_GUEST_NVMETCLI"; exit 77; }
  py=$(readlink -f /usr/bin/python3)
  copy_bin "$py" usr/bin/python3
  lib=/usr/lib/$(basename "$py")
  mkdir -p "$root$lib"
  tar -C "$lib" --exclude=test --exclude=__pycache__ --exclude=idlelib --exclude=tkinter \
      --exclude=ensurepip --exclude=lib2to3 --exclude=config-* -cf - . | tar -C "$root$lib" -xf -
  ldd "$lib"/lib-dynload/*.so 2>/dev/null | awk '/=>/{print $3}' | sort -u | while read -r l; do
    [ -f "$l" ] && { mkdir -p "$root$(dirname "$l")"; cp -L "$l" "$root$l"; }
  done
  mkdir -p "$root/nvmetcli" && cp -r "$BLKCOPY_GUEST_NVMETCLI/nvmet" "$root/nvmetcli/"
  cat > "$root/usr/bin/nvmetcli-json" <<'NVMETCLI'
#!/bin/sh
# nvmetcli-json save FILE | restore FILE | clear: what `nvmetcli save`, `nvmetcli restore`
# and `nvmetcli clear` do
exec python3 -c 'import sys; sys.path.insert(0, "/nvmetcli"); import nvmet
root = nvmet.Root()
if sys.argv[1] == "save":
    root.save_to_file(sys.argv[2])
elif sys.argv[1] == "clear":
    root.clear_existing()
else:
    errors = root.restore_from_file(sys.argv[2])
    for e in errors: print("nvmetcli restore:", e)
    sys.exit(1 if errors else 0)' "$@"
NVMETCLI
  chmod +x "$root/usr/bin/nvmetcli-json"
fi
cp "$script" "$root/test.sh"
qemu_systemd=()
append=""
if [ -n "${BLKCOPY_GUEST_SYSTEMD:-}" ]; then
  [ -x /lib/systemd/systemd ] || { echo "guest.sh: no systemd here"; exit 77; }
  mkdir -p "$root/systemd-boot"
  echo "$BLKCOPY_GUEST_SYSTEMD" > "$root/systemd-boot/prefix"
  cat > "$root/systemd-boot/blkcopy-test.target" <<'UNIT'
[Unit]
Description=blkcopy guest test
Requires=basic.target blkcopy-guest-test.service
After=basic.target
AllowIsolate=yes
UNIT
  cat > "$root/systemd-boot/blkcopy-guest-test.service" <<'UNIT'
[Unit]
Description=blkcopy guest test script
After=basic.target
[Service]
Type=oneshot
WorkingDirectory=/tmp
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c 'echo BLKCOPY-GUEST-START; sh -e /blkcopy-test/test.sh; echo "BLKCOPY-GUEST-EXIT=$?"; sync; systemctl poweroff --force --force'
UNIT
  qemu_systemd=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
  append=" systemd.unit=blkcopy-test.target"
fi
cp "$(dirname "$0")/lib.sh" "$root/lib.sh"
echo "nqn.2014-08.io.blkcopy:guest-host" > "$root/etc/nvme/hostnqn"
echo "5b1f6f5e-9d1c-4c4e-9a55-3a6c2f0e7d11" > "$root/etc/nvme/hostid"  # one ID for that NQN
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in configfs crc64 crc64-rocksoft crc64_rocksoft_generic crct10dif_common crct10dif_generic \
         crc-t10dif t10-pi crc32c_generic libcrc32c nvme-keyring nvme-auth nvme-core nvme nvme-fabrics \
         nvme-tcp nvmet nvmet-tcp scsi_common scsi_mod sd_mod sg target_core_mod target_core_file tcm_loop \
         gf128mul ghash-generic ctr gcm cryptd crypto_simd aesni-intel ghash-clmulni-intel tls \
         virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache \
         9pnet 9pnet_virtio 9p overlay; do
  f=$(ls /lib/modules/$m.ko* 2>/dev/null | head -n 1); [ -n "$f" ] && insmod "$f" 2>/dev/null
done
mount -t configfs none /sys/kernel/config 2>/dev/null
ip link set lo up
if [ -d /systemd-boot ]; then  # this machine's root under a tmpfs overlay, systemd as PID 1
  mkdir -p /lower /upper /newroot
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 hostroot /lower ||
    { echo "guest: cannot mount the root over 9p"; dmesg | tail -n 5; echo "BLKCOPY-GUEST-EXIT=77"; poweroff -f; }
  mount -t tmpfs -o size=768m upper /upper && mkdir -p /upper/u /upper/w
  mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w root /newroot ||
    { echo "guest: cannot make the overlay"; echo "BLKCOPY-GUEST-EXIT=77"; poweroff -f; }
  mkdir -p /newroot/blkcopy-test /newroot/etc/nvme
  cp /test.sh /lib.sh /systemd-boot/prefix /newroot/blkcopy-test/
  cp /systemd-boot/*.target /systemd-boot/*.service /newroot/etc/systemd/system/
  cp /etc/nvme/hostnqn /etc/nvme/hostid /newroot/etc/nvme/
  umount /sys/kernel/config /tmp /proc /sys 2>/dev/null
  mount --move /dev /newroot/dev
  exec switch_root /newroot /lib/systemd/systemd --unit=blkcopy-test.target --show-status=false
fi
cd /tmp
echo BLKCOPY-GUEST-START
sh -e /test.sh
echo "BLKCOPY-GUEST-EXIT=$?"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")

boot() {
  # shellcheck disable=SC2086  # the extra arguments are split on purpose
  timeout 600 "$qemu" -accel tcg -cpu max -m 1536 -smp 2 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$work/initrd.gz" "${qemu_systemd[@]}" \
    -append "console=ttyS0 quiet panic=-1 loglevel=3$append" ${BLKCOPY_GUEST_QEMU_ARGS:-} | tee "$work/console.log"
}
boot
# A guest kernel that died before the test began (under TCG, 6.12 once oopsed in its own text
# patching at 2 s) ran nothing of blkcopy's: it is booted once more. A test that began is never
# run again.
if ! grep -a -q -e BLKCOPY-GUEST-START -e BLKCOPY-GUEST-EXIT= "$work/console.log"; then
  echo "guest.sh: the guest did not get to the test (its kernel died while booting); booting it again" >&2
  boot
fi
rc=$(grep -a -o 'BLKCOPY-GUEST-EXIT=[0-9]*' "$work/console.log" | tail -n 1 | cut -d= -f2)
[ -n "$rc" ] || { echo "guest.sh: the guest did not report an exit code" >&2; exit 99; }
exit "$rc"
