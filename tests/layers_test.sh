#!/usr/bin/env bash
# The layer check (cmake/layers.cmake) passes on this tree and refuses a tree where a lower layer
# includes a higher one: core including the NVMe target, and the stack including a driver it does
# not link (a linear order of layers would allow it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cmake -D ROOT="$root" -P "$root/cmake/check_layers.cmake"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
refused() {  # $1: file to spoil, $2: include to add, $3: text the error must contain
  rm -rf "$tmp/tree" && mkdir "$tmp/tree"
  (cd "$root" && find core block copy drivers stack nvme registry capi include \
     \( -name '*.cc' -o -name '*.h' \) -exec cp --parents -t "$tmp/tree" {} +)
  echo "#include \"$2\"" >> "$tmp/tree/$1"
  if cmake -D ROOT="$tmp/tree" -P "$root/cmake/check_layers.cmake" > "$tmp/out" 2>&1; then
    echo "layers: the check accepted $1 including $2"; exit 1
  fi
  grep -qF "$3" "$tmp/out" || { echo "layers: unexpected message:"; cat "$tmp/out"; exit 1; }
}
refused core/net.cc nvme/target/internal.h "core/net.cc (layer core) includes nvme/target/internal.h (layer nvme_target)"
refused stack/table.cc drivers/mem/mem_device.h "(layer stack) includes drivers/mem/mem_device.h (layer drivers)"
refused block/device.cc nvme/nowhere/thing.h "includes nvme/nowhere/thing.h, which belongs to no layer"
echo "layers: the check refuses the three spoiled trees"
