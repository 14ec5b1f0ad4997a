#!/usr/bin/env bash
# Install the built tree into a temporary prefix, then build a strict C11
# program against the installed header and library alone, three ways:
# pkg-config (shared), pkg-config --static, and CMake's find_package.
# usage: install_check.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(ls -d "$tmp"/prefix/lib*/ | head -n1)
export PKG_CONFIG_PATH=$libdir/pkgconfig
cflags="-std=c11 -pedantic-errors -Wall -Wextra -Werror"
# shellcheck disable=SC2046
cc $cflags "$src/tests/install/consumer.c" -o "$tmp/c_pc" $(pkg-config --cflags --libs xent)
LD_LIBRARY_PATH=$libdir "$tmp/c_pc"
# shellcheck disable=SC2046
cc $cflags "$src/tests/install/consumer.c" -o "$tmp/c_pc_static" \
  $(pkg-config --cflags xent) "$libdir/libxent.a" $(pkg-config --libs --static xent | sed 's/-lxent//')
"$tmp/c_pc_static"
cmake -S "$src/tests/install" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
"$tmp/cm/consumer_static"
LD_LIBRARY_PATH=$libdir "$tmp/cm/consumer_shared"
echo "install check: ok"
