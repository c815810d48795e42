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

# libtwine-http, when it was built: a consumer that asks for a name under
# .invalid, which the client refuses without a lookup (nothing leaves the
# machine), through pkg-config and through find_package's http component.
if [ -f "$libdir/twine-http.pc" ]; then
    cat >"$tmp/use-http.c" <<'C'
#include <twine.h>
#include <twine/http.h>
#include <stdio.h>
static int code;
static tw_result done(tw_result r, void *arg)
{
    code = tw_result_is_failure(r) ? tw_failure_code(tw_result_as_failure(r)) : 0;
    tw_result_drop(r);
    tw_reactor_stop(arg);
    return tw_result_none();
}
int main(void)
{
    tw_reactor *r;
    tw_http_client *c;
    tw_deferred *d;
    if (tw_reactor_create(&r) || tw_http_client_create(r, NULL, &c) ||
        tw_http_client_get(c, "http://twine.invalid/", &d))
        return 1;
    tw_deferred_add_both(d, done, r);
    tw_deferred_unref(d);
    tw_reactor_run(r);
    tw_http_client_destroy(c);
    tw_reactor_destroy(r);
    if (code != TW_ENOTFOUND)
        return 1;
    printf("twine-http %s: ok\n", tw_version());
    return 0;
}
C
    cc -o "$tmp/use-http-pc" "$tmp/use-http.c" \
        $(PKG_CONFIG_PATH="$libdir" pkg-config --define-prefix --cflags --libs twine-http) \
        -Wl,-rpath,"$(dirname "$libdir")"
    "$tmp/use-http-pc"
    mkdir "$tmp/cmh"
    cat >"$tmp/cmh/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.25)
project(use_http C)
find_package(twine REQUIRED COMPONENTS http)
add_executable(use_http ../use-http.c)
target_link_libraries(use_http PRIVATE twine::twine_http)
C
    cmake -S "$tmp/cmh" -B "$tmp/cmh/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
    cmake --build "$tmp/cmh/b" >/dev/null
    "$tmp/cmh/b/use_http"
    echo "install check: libtwine-http through pkg-config and find_package"
fi

# libtwine-redis, when it was built: a consumer that parses an address with
# it, through pkg-config and through find_package(twine COMPONENTS redis).
if [ -f "$libdir/twine-redis.pc" ]; then
    cat >"$tmp/use-redis.c" <<'C'
#include <twine.h>
#include <twine/redis.h>
#include <stdio.h>
int main(void)
{
    tw_redis_config cfg = TW_REDIS_CONFIG_INIT;
    char buf[64];
    if (tw_redis_parse_address("127.0.0.1:6390", buf, sizeof buf, &cfg) != 0 || cfg.port != 6390)
        return 1;
    if (tw_redis_parse_address("no port", buf, sizeof buf, &cfg) != TW_EINVAL)
        return 1;
    printf("twine-redis %s: ok\n", tw_version());
    return 0;
}
C
    cc -o "$tmp/use-redis-pc" "$tmp/use-redis.c" \
        $(PKG_CONFIG_PATH="$libdir" pkg-config --define-prefix --cflags --libs twine-redis) \
        -Wl,-rpath,"$(dirname "$libdir")"
    "$tmp/use-redis-pc"
    mkdir "$tmp/cmr"
    cat >"$tmp/cmr/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.25)
project(use_redis C)
find_package(twine REQUIRED COMPONENTS redis)
add_executable(use_redis ../use-redis.c)
target_link_libraries(use_redis PRIVATE twine::twine_redis)
C
    cmake -S "$tmp/cmr" -B "$tmp/cmr/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
    cmake --build "$tmp/cmr/b" >/dev/null
    "$tmp/cmr/b/use_redis"
    echo "install check: libtwine-redis through pkg-config and find_package"
fi
