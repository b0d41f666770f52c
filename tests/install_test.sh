#!/usr/bin/env bash
# Installs libblkcopy from the build folder into a temporary prefix and builds and runs the
# examples against the installed files only: the C program with pkg-config and with CMake's
# find_package, and the Python script with ctypes.
#   tests/install_test.sh BUILD_DIR
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir="$prefix/lib"
[ -d "$libdir" ] || libdir=$(dirname "$(find "$prefix" -name libblkcopy.so | head -n 1)")
for f in include/blkcopy/blkcopy.h include/blkcopy/copy.h bin/blkcopy share/man/man1/blkcopy.1 \
         share/bash-completion/completions/blkcopy lib/systemd/system/blkcopy-serve@.service; do
  [ -e "$prefix/$f" ] || { echo "install_test: $prefix/$f is missing"; exit 1; }
done
for f in libblkcopy.so libblkcopy.a cmake/blkcopy/blkcopyConfig.cmake pkgconfig/blkcopy.pc; do
  [ -e "$libdir/$f" ] || { echo "install_test: $libdir/$f is missing"; exit 1; }
done
"$prefix/bin/blkcopy" --version
# The unit starts the installed binary, and waits for it to say it is ready.
unit="$prefix/lib/systemd/system/blkcopy-serve@.service"
grep -q "^ExecStart=$prefix/bin/blkcopy serve --config /etc/blkcopy/%i.json" "$unit" ||
  { echo "install_test: the unit's ExecStart is not the installed binary"; exit 1; }
grep -q "^Type=notify" "$unit" || { echo "install_test: the unit does not wait for READY=1"; exit 1; }
bash -n "$prefix/share/bash-completion/completions/blkcopy"
echo "== public headers, each on its own, with only the installed include folder"
for h in "$prefix"/include/blkcopy/*.h; do
  echo "#include <blkcopy/$(basename "$h")>" |
    c++ -std=c++23 -Wall -Wextra -Werror -I"$prefix/include" -x c++ -fsyntax-only - ||
    { echo "install_test: $h does not compile on its own"; exit 1; }
done
echo "#include <blkcopy/blkcopy.h>" | cc -std=c11 -Wall -Werror -I"$prefix/include" -x c -fsyntax-only -
echo "== pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc "$src/examples/copy_range.c" $(pkg-config --cflags --libs blkcopy) -o "$work/copy_range"
LD_LIBRARY_PATH="$libdir" "$work/copy_range" "$work/c.img"
echo "== pkg-config in the build tree (the sources' headers, the libraries built there)"
PKG_CONFIG_PATH="$build" cc "$src/examples/copy_range.c" $(PKG_CONFIG_PATH="$build" pkg-config --cflags --libs blkcopy) \
  -o "$work/copy_range_build"
LD_LIBRARY_PATH="$build" "$work/copy_range_build" "$work/b.img"
echo "== find_package"
cmake -S "$src/examples/cmake" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
LD_LIBRARY_PATH="$libdir" "$work/consumer/copy_range" "$work/cmake.img"
echo "== Python (ctypes)"
LD_LIBRARY_PATH="$libdir" python3 "$src/examples/copy_range.py" "$work/py.img"
echo "install_test: the installed library builds and runs the examples"
