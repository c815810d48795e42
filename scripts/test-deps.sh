#!/bin/sh
# Makes sure the Debian packages the test suite needs are installed.
# As root: installs what is missing (apt-get). Otherwise: prints the exact
# command to run and fails.
set -eu
need="cmake make gcc pkg-config libcmocka-dev libcurl4-openssl-dev libhiredis-dev redis-server"
[ "${1:-}" = "--sanitizers" ] && need="$need clang libclang-rt-dev"
missing=""
for p in $need; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing test dependencies:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
else
    echo "twine's tests need these Debian packages:$missing" >&2
    echo "install them with:  sudo apt-get install$missing" >&2
    exit 1
fi
