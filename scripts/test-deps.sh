#!/bin/sh
# Makes sure the Debian packages twine needs are installed.
#   scripts/test-deps.sh                what `make test` needs
#   scripts/test-deps.sh --demo         what `make demo` needs (no test framework)
#   scripts/test-deps.sh --sanitizers   the test set plus clang and its sanitizer runtimes
# As root: installs what is missing (apt-get). Otherwise: prints the exact
# command to run and fails.
set -eu
# The library, its HTTP client (libcurl) and Redis layer (hiredis), and the
# redis-server that the Redis examples and tests start for themselves.
base="cmake make gcc pkg-config libcurl4-openssl-dev libhiredis-dev libssl-dev redis-server"
case "${1:-}" in
    --demo) need="$base" ;;
    --sanitizers) need="$base libcmocka-dev clang libclang-rt-dev" ;;
    *) need="$base libcmocka-dev" ;;
esac
missing=""
for p in $need; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
else
    echo "twine needs these Debian packages:$missing" >&2
    echo "install them with:  sudo apt-get install$missing" >&2
    # The demo goes on without them: the examples that need a missing
    # package say so and are skipped.
    [ "${1:-}" = "--demo" ] && exit 0
    exit 1
fi
