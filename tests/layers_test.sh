#!/usr/bin/env bash
# No source file includes a header of a layer above its own. Layers, bottom up (ARCHITECTURE.md):
#   core < block < copy < drivers < stack < nvme (protocol, auth) < nvme/host < registry
#   < nvme/target < capi < tools
# Public headers count as the layer that implements them. Tests, benchmarks and fuzz targets
# may include anything.
set -euo pipefail
cd "$(dirname "$0")/.."

rank_of_path() {  # a source or header path -> its layer rank
  case "$1" in
    core/*) echo 0 ;;
    block/*) echo 1 ;;
    copy/*) echo 2 ;;
    drivers/*) echo 3 ;;
    stack/*) echo 4 ;;
    nvme/host/*) echo 6 ;;
    nvme/target/*) echo 8 ;;
    nvme/*) echo 5 ;;
    registry/*) echo 7 ;;
    capi/*) echo 9 ;;
    tools/*) echo 10 ;;
    include/blkcopy/status.h|include/blkcopy/event_loop.h|include/blkcopy/units.h|include/blkcopy/log.h) echo 0 ;;
    include/blkcopy/device.h) echo 1 ;;
    include/blkcopy/copy.h) echo 2 ;;
    include/blkcopy/open.h) echo 7 ;;
    include/blkcopy/target.h) echo 8 ;;
    include/blkcopy/blkcopy.h) echo 9 ;;
    *) echo "" ;;
  esac
}

bad=0
checked=0
while IFS= read -r file; do
  own=$(rank_of_path "$file")
  [ -n "$own" ] || continue
  checked=$((checked + 1))
  while IFS= read -r inc; do
    case "$inc" in
      blkcopy/*) target="include/$inc" ;;
      *) target="$inc" ;;
    esac
    r=$(rank_of_path "$target")
    if [ -z "$r" ]; then
      echo "layers: $file includes $inc, which belongs to no layer"
      bad=1
    elif [ "$r" -gt "$own" ]; then
      echo "layers: $file (layer $own) includes $inc (layer $r, above it)"
      bad=1
    fi
  done < <(sed -n 's/^#include [<"]\(\(blkcopy\|core\|block\|copy\|drivers\|stack\|nvme\|registry\|capi\|tools\)\/[^>"]*\)[>"].*/\1/p' "$file")
done < <(git ls-files '*.cc' '*.h' | grep -vE '^(tests|bench|fuzz|examples)/')
echo "layers: $checked files checked"
exit $bad
