#!/bin/sh
# Runs the benchmark suites and writes their results to bench/results/:
#   sync      sync.csv (+ sync.md, the same table in Markdown)
#   pool      pool.csv (+ pool.md)
#   deferred  deferred.csv (+ deferred.md)
#   reactor   reactor.csv (+ reactor.md)
#   async     async.csv (+ async.md)
#   http      http.csv (+ http.md): libtwine-http, libcurl's multi interface on libuv
#   redis     redis.csv (+ redis.md): libtwine-redis, hiredis, redis-py
#   net       net.csv (+ net.md): servers driven over loopback by one client
# and machine.txt for all of them. A suite whose component library was not
# built (no libcurl or hiredis) is skipped with a message.
#
# usage: bench/run.sh BUILD_DIR [--suite NAME|all] [--scale F] [--only WORKLOAD[,...]]
#   BUILD_DIR is a tree configured with -DTW_BUILD_BENCH=ON and built
#   (make bench does both). --suite picks the suites (default all). The other
#   options go to every C and Python benchmark program: --scale 0.05 gives a
#   quick smoke run with the same checks. A suite whose run selected no
#   workload leaves its previous results in place.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [--suite NAME|all] [--scale F] [--only WORKLOAD[,...]]" >&2
    exit 2
fi
build=$1
shift

# --suite is this script's own option; everything else is passed on.
all_suites="sync pool deferred reactor async http redis net"
suites=$all_suites
n=$#
i=0
while [ "$i" -lt "$n" ]; do
    a=$1
    shift
    i=$((i + 1))
    if [ "$a" = "--suite" ] && [ "$i" -lt "$n" ]; then
        s=$1
        shift
        i=$((i + 1))
        case "$s" in
            all) suites=$all_suites ;;
            *)
                if ! echo " $all_suites " | grep -q " $s "; then
                    echo "run.sh: --suite takes one of: $all_suites, or all; not '$s'" >&2
                    exit 2
                fi
                suites=$s
                ;;
        esac
    else
        set -- "$@" "$a"
    fi
done

here=$(cd "$(dirname "$0")" && pwd)
results=$here/results
for s in $suites; do
    case $s in
        http | redis)
            if [ ! -x "$build/bench/twine_bench_$s" ]; then
                echo "run.sh: no $build/bench/twine_bench_$s (libtwine-$s was not built: its Debian package is missing); the $s suite is skipped" >&2
                suites=$(echo "$suites" | sed "s/ *$s//")
                continue
            fi
            ;;
    esac
    if [ ! -x "$build/bench/twine_bench_$s" ]; then
        echo "run.sh: $build/bench/twine_bench_$s not found; configure with -DTW_BUILD_BENCH=ON and build first" >&2
        exit 1
    fi
done
mkdir -p "$results"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The Python sides of the pool, deferred, reactor and async suites need Twisted; Debian's
# python3-twisted is installed for /usr/bin/python3, which may not be the
# first python3 on PATH.
twisted_python=""
for py in python3 /usr/bin/python3; do
    if "$py" -c 'import twisted' 2>/dev/null; then
        twisted_python=$py
        break
    fi
done

# Share of CPU time idle over one second (from /proc/stat): benchmarks on a
# machine that is busy with something else measure that something else too.
idle_pct() {
    read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ </proc/stat
    sleep 1
    read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ </proc/stat
    busy=$(((u2 - u1) + (n2 - n1) + (s2 - s1) + (q2 - q1) + (sq2 - sq1) + (st2 - st1)))
    idle=$(((i2 - i1) + (w2 - w1)))
    echo $((100 * idle / (busy + idle + 1)))
}

idle=$(idle_pct)
{
    echo "date:    $(date)"
    echo "cpus:    $(nproc)"
    echo "model:   $(lscpu | sed -n 's/^Model name:[[:space:]]*//p')"
    echo "kernel:  $(uname -r)"
    echo "python:  $(python3 --version 2>&1)"
    if [ -n "$twisted_python" ]; then
        echo "twisted: $("$twisted_python" -c 'import sys, twisted; print(f"Twisted {twisted.__version__} on Python {sys.version.split()[0]}")') ($twisted_python)"
    fi
    echo "peers:   libuv $(pkg-config --modversion libuv 2>/dev/null || echo '?'), GLib $(pkg-config --modversion glib-2.0 2>/dev/null || echo '?'), libevent $(pkg-config --modversion libevent 2>/dev/null || echo '?')"
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min), ${idle}% idle in the second before the run"
    if [ "$idle" -lt 90 ]; then
        echo "WARNING: the machine was busy before the run; expect noisy figures"
    fi
} >"$tmp/machine.txt"
cat "$tmp/machine.txt"
echo

# Merges the C and Python CSVs of suite $1 into results/$1.csv and $1.md,
# unless the run measured nothing (all of --only was in the other suite).
rows() {
    if [ -f "$1" ]; then tail -n +2 "$1" | wc -l; else echo 0; fi
}
publish() {
    if [ $(($(rows "$tmp/$1-c.csv") + $(rows "$tmp/$1-py.csv"))) -eq 0 ]; then
        echo "== $1: no workload selected; $results/$1.csv left as it was =="
        echo
        return
    fi
    {
        cat "$tmp/$1-c.csv"
        if [ -f "$tmp/$1-py.csv" ]; then
            tail -n +2 "$tmp/$1-py.csv"
        fi
    } >"$results/$1.csv"
    python3 "$here/table.py" "$results/$1.csv" --markdown >"$results/$1.md"
    echo "== results ($results/$1.csv) =="
    python3 "$here/table.py" "$results/$1.csv"
    echo
}

# A suite of a C program and a Twisted script: name, the C side's title, the
# Python side's, the script; the rest goes to both.
c_and_twisted() {
    local name=$1 ctitle=$2 pytitle=$3 script=$4
    shift 4
    echo "== C: $ctitle =="
    "$build/bench/twine_bench_$name" --csv "$tmp/$name-c.csv" "$@"
    echo
    if [ -n "$twisted_python" ]; then
        echo "== Python: $pytitle ($twisted_python) =="
        "$twisted_python" "$here/$script" --csv "$tmp/$name-py.csv" "$@"
    else
        echo "== Python: no interpreter here has Twisted (python3-twisted); Twisted rows skipped =="
    fi
    echo
}

for s in $suites; do
    case $s in
        sync)
            echo "== C: twine vs pthread, sem_t, nsync, GLib =="
            "$build/bench/twine_bench_sync" --csv "$tmp/sync-c.csv" "$@"
            echo
            echo "== Python: threading =="
            python3 "$here/py_sync.py" --csv "$tmp/sync-py.csv" "$@"
            echo
            ;;
        pool)
            c_and_twisted pool "twine pool vs libuv, GLib" "Twisted ThreadPool, deferToThread" py_pool.py "$@"
            ;;
        deferred)
            c_and_twisted deferred "twine Deferred, DeferredLock" "Twisted Deferred, DeferredLock" py_deferred.py "$@"
            ;;
        redis)
            echo "== C: twine Redis layer vs hiredis, redis-benchmark =="
            "$build/bench/twine_bench_redis" --csv "$tmp/redis-c.csv" "$@"
            echo
            redis_python=""
            for py in python3 /usr/bin/python3; do
                if "$py" -c 'import redis' 2>/dev/null; then
                    redis_python=$py
                    break
                fi
            done
            if [ -n "$redis_python" ]; then
                echo "== Python: redis-py ($redis_python) =="
                "$redis_python" "$here/py_redis.py" --csv "$tmp/redis-py.csv" "$@"
            else
                echo "== Python: no interpreter here has redis-py (python3-redis); redis-py rows skipped =="
            fi
            echo
            ;;
        reactor)
            c_and_twisted reactor "twine reactor vs libuv, GLib" "Twisted callFromThread, deferToThread" py_reactor.py "$@"
            ;;
        async)
            c_and_twisted async "twine coroutines vs swapcontext, twine callbacks" "Twisted inlineCallbacks" py_async.py "$@"
            ;;
        http)
            echo "== C: twine HTTP client vs libcurl multi on libuv =="
            "$build/bench/twine_bench_http" --csv "$tmp/http-c.csv" "$@"
            echo
            ;;
        net)
            # One client drives every server; Twisted's is a server like the
            # others, run by the interpreter itself (not a wrapper such as a
            # pyenv shim, whose process would not be the one doing the work).
            echo "== C client: epoll floor, libuv, libevent, twine and Twisted servers over loopback =="
            if [ -n "$twisted_python" ]; then
                py=$("$twisted_python" -c 'import sys; print(sys.executable)')
                "$build/bench/twine_bench_net" --csv "$tmp/net-c.csv" \
                    --server "python Twisted=$py $here/py_net_server.py" "$@"
            else
                echo "== (no interpreter here has Twisted (python3-twisted); Twisted rows skipped) =="
                "$build/bench/twine_bench_net" --csv "$tmp/net-c.csv" "$@"
            fi
            echo
            ;;
        *)
            echo "run.sh: suite '$s' is listed but has no runner here" >&2
            exit 1
            ;;
    esac
done

cp "$tmp/machine.txt" "$results/machine.txt"
for s in $suites; do
    publish "$s"
done
