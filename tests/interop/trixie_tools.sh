#!/usr/bin/env bash
# Unpacks Debian 13 (trixie) programs that Debian 12 lacks, for the guest only: tlshd
# (ktls-utils: the TLS handshake daemon Linux's NVMe/TCP host and target ask for a handshake)
# and nvme-cli 2.13 (TLS keys in the kernel keyring, `nvme connect --tls`), with every library
# they need down to trixie's own C library and loader. apt downloads them from Debian's archive
# with its own lists and an empty package status (so it resolves the whole closure and checks
# the archive's signatures), into the cache; nothing is installed on this machine.
# Prints the unpacked tree. guest.sh puts it at /trixie in the guest with wrappers.
#
#   tests/interop/trixie_tools.sh CACHE_DIR
set -euo pipefail
cache=$1/trixie
tree=$cache/root
if [ ! -x "$tree/usr/sbin/tlshd" ]; then
  mkdir -p "$cache/state/lists/partial" "$cache/archives/partial"
  echo "deb http://deb.debian.org/debian trixie main" > "$cache/sources.list"
  : > "$cache/status"
  apt_opts=(-o Dir::Etc::SourceList="$cache/sources.list" -o Dir::Etc::SourceParts=/nonexistent
            -o Dir::State="$cache/state" -o Dir::State::status="$cache/status"
            -o Dir::Cache="$cache" -o Dir::Cache::archives="$cache/archives"
            -o APT::Architecture=amd64 -o Debug::NoLocking=1)
  apt-get "${apt_opts[@]}" update >/dev/null
  apt-get "${apt_opts[@]}" install --download-only -y --no-install-recommends \
    ktls-utils nvme-cli keyutils >/dev/null
  rm -rf "$tree.new" && mkdir -p "$tree.new"
  for deb in "$cache"/archives/*.deb; do dpkg -x "$deb" "$tree.new"; done
  rm -rf "$tree" && mv "$tree.new" "$tree"
fi
echo "$tree"
