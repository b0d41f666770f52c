#!/usr/bin/env bash
# ctest's interop.systemd: installs blkcopy (cmake --install) into a fresh prefix under /var/tmp,
# which the guest reaches at the same path, and runs tests/interop/systemd.sh in a guest booted
# with systemd as PID 1 (guest.sh's BLKCOPY_GUEST_SYSTEMD).
#   tests/interop/systemd_run.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(realpath "$1")
prefix=$(mktemp -d /var/tmp/blkcopy-systemd.XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
BLKCOPY_GUEST_SYSTEMD="$prefix" "$here/guest.sh" "$here/systemd.sh" "$prefix/bin/blkcopy"
