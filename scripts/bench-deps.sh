#!/bin/sh
# Makes sure the peer libraries the benchmarks compare twine with are installed
# (Debian packages). As root, installs what is missing; otherwise prints the
# command that would and fails.
set -eu

PACKAGES="libnsync-dev libglib2.0-dev libuv1-dev python3-twisted pkg-config libcurl4-openssl-dev libevent-dev"
PACKAGES="$PACKAGES libhiredis-dev redis-server redis-tools python3-redis"
PACKAGES="$PACKAGES strace"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "bench-deps: all present ($PACKAGES)"
    exit 0
fi

echo "bench-deps: missing:$missing"
if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y --no-install-recommends $missing
else
    echo "bench-deps: not root; as root, run apt-get update, then:" >&2
    echo "apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi
