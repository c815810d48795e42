#!/bin/sh
# Cross-compiles twine for aarch64 with Debian's cross compiler and runs the
# coroutine tests under qemu-user, so that the hand-written aarch64 context
# switch (src/async/switch_aarch64.c) is built and exercised on an x86-64
# machine. The whole library, the tests and the examples are compiled.
#
#   scripts/cross-check.sh [BUILD_DIR] [--all]
#       BUILD_DIR  default build-aarch64
#       --all      run the whole suite under qemu, not only the async tests
#
# Needs the Debian packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and
# qemu-user (or qemu-user-static); as root it installs what is missing,
# otherwise it prints the command and fails. cmocka for arm64 is downloaded
# with apt-get into BUILD_DIR (arm64 is not added to dpkg's architectures)
# and unpacked there as a sysroot for the tests to link against.
set -eu
cd "$(dirname "$0")/.."

build=build-aarch64
all=0
for a in "$@"; do
    case $a in
        --all) all=1 ;;
        -*) echo "usage: $0 [BUILD_DIR] [--all]" >&2; exit 2 ;;
        *) build=$a ;;
    esac
done

# ---- the cross compiler and the emulator --------------------------------------
need="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
command -v qemu-aarch64 >/dev/null 2>&1 || command -v qemu-aarch64-static >/dev/null 2>&1 ||
    need="$need qemu-user"
missing=""
for p in $need cmake make pkg-config; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "cross-check needs these Debian packages:$missing" >&2
        echo "install them with:  sudo apt-get install$missing" >&2
        exit 1
    fi
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)

# ---- cmocka for arm64, unpacked into a sysroot in the build tree --------------
mkdir -p "$build"
build=$(cd "$build" && pwd)
sysroot=$build/sysroot
if [ ! -f "$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/cmocka.pc" ]; then
    apt=$build/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$sysroot"
    aptopt="-o APT::Architecture=arm64 -o APT::Architectures::=arm64
            -o Dir::State::Lists=$apt/lists -o Dir::Cache=$apt/cache -o Debug::NoLocking=1"
    # shellcheck disable=SC2086
    apt-get -qq $aptopt update
    # shellcheck disable=SC2086
    (cd "$apt" && apt-get -qq $aptopt download libcmocka0:arm64 libcmocka-dev:arm64)
    for deb in "$apt"/libcmocka*_arm64.deb; do
        dpkg-deb -x "$deb" "$sysroot"
    done
fi

# ---- configure, build, test ------------------------------------------------------
export PKG_CONFIG_LIBDIR=$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$sysroot
cmake -S . -B "$build" \
    -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
    -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc \
    -DCMAKE_CROSSCOMPILING_EMULATOR="$qemu;-L;/usr/aarch64-linux-gnu" \
    -DTW_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" -j "$(nproc)"

# Under emulation everything is slower: stress sizes scale down (checks do not).
export TW_TEST_SCALE=${TW_TEST_SCALE:-0.1}
if [ "$all" = 1 ]; then
    (cd "$build" && ctest --output-on-failure -j "$(nproc)")
else
    (cd "$build" && ctest --output-on-failure -R 'async')
fi
# The hand-written switch defines tw__ctx_start; the ucontext fallback does not.
if aarch64-linux-gnu-nm "$build/src/libtwine.a" 2>/dev/null | grep -q ' tw__ctx_start$'; then
    echo "cross-check: aarch64 build and tests passed, with the hand-written aarch64 switch"
else
    echo "cross-check: the aarch64 build did not use the hand-written switch" >&2
    exit 1
fi
