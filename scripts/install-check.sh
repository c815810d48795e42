#!/bin/sh
# Installs the build in BUILD_DIR into a scratch prefix and builds a small
# consumer against it twice: through pkg-config and through find_package.
set -eu
build=${1:-build}
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(find "$tmp/prefix" -name twine.pc -printf '%h\n' | head -n1)
cat >"$tmp/use.c" <<'C'
#include <twine.h>
#include <stdio.h>
int main(void)
{
    tw_lock l = TW_LOCK_INIT;
    int rc = 1;
    TW_WITH(&l) rc = tw_lock_locked(&l) ? 0 : 1;
    if (rc == 0 && !tw_lock_locked(&l))
        printf("twine %s: ok\n", tw_version());
    return rc;
}
C
PKG_CONFIG_PATH="$libdir" cc -o "$tmp/use-pc" "$tmp/use.c" \
    $(PKG_CONFIG_PATH="$libdir" pkg-config --define-prefix --cflags --libs twine) -Wl,-rpath,"$tmp/prefix/lib" \
    -Wl,-rpath,"$(dirname "$libdir")"
"$tmp/use-pc"
mkdir "$tmp/cm"
cat >"$tmp/cm/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.25)
project(use C)
find_package(twine REQUIRED)
add_executable(use ../use.c)
target_link_libraries(use PRIVATE twine::twine_static)
C
cmake -S "$tmp/cm" -B "$tmp/cm/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm/b" >/dev/null
"$tmp/cm/b/use"
echo "install check: pkg-config and find_package both work"
