#!/usr/bin/env bash
# ctest's interop.nvmetcli: tests/interop/nvmetcli.sh in a Linux 6.12 guest with nvmetcli's code
# from NVMETCLI_DIR (a work tree of nvmetcli's public sources: it has no Debian package). Skips
# (77) without one, as the SPDK tests do without SPDK_DIR.
#   NVMETCLI_DIR=/path/to/nvmetcli tests/interop/nvmetcli_run.sh BLKCOPY_BINARY
set -euo pipefail
[ -n "${NVMETCLI_DIR:-}" ] || { echo "nvmetcli: SKIP: NVMETCLI_DIR is not set"; exit 77; }
here=$(cd "$(dirname "$0")" && pwd)
BLKCOPY_GUEST_KERNEL=backports BLKCOPY_GUEST_NVMETCLI="$NVMETCLI_DIR" \
  exec "$here/guest.sh" "$here/nvmetcli.sh" "$1"
