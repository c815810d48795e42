#!/bin/sh
# Runs every example in order, one header line each, from a CMake build tree:
#     examples/run-demo.sh [build-dir]        (default: build)
# Exits non-zero if any example fails, is missing, or runs past its time limit.
set -u

build=${1:-build}
dir=$build/examples
limit=20 # seconds per example; each normally takes well under 2

examples="
counter_race      seed 003: a shared counter with and without a Lock
rlock_nesting     seed 003: RLock re-entry, plain Lock self-deadlock, owner-only release
connection_pool   seed 003: BoundedSemaphore as a connection pool, extra release caught
producer_consumer seed 003: bounded buffer over two Conditions sharing one Lock
event_gate        seed 003: workers held at an Event until setup is done
guards            seed 002: a failing critical section must still release its lock
thread_pool       seed 001: the pool, a dedicated worker, resizing, a wedged pool detected
network_counter   seed 000: an async critical section with and without a DeferredLock
network_counter_async seed 000: the same NetworkCounter as coroutines, tw_await and TW_AWAIT_WITH
reactor_counter   seed 000: NetworkCounter on a reactor, its record a blocking write in a thread
reactor_threads   seed 001: the threading howto on a reactor: to and from threads, pool, wedge, shutdown
socket_threads    seed 001 on sockets: replies computed in defer_to_thread, a pool thread writing the thread-safe way
echo_demo         echo_server on TCP, IPv6 and a Unix socket: every byte echoed, a clean stop on SIGTERM
http_counter      seed 000 made real: NetworkCounter records over HTTP (twine's client) to a server on twine's TCP layer
lock_order        two code paths taking two Locks in opposite orders, one after the other: reported, nothing hangs
"

if [ ! -d "$dir" ]; then
    echo "run-demo.sh: no $dir; build first: cmake -S . -B $build && cmake --build $build" >&2
    exit 2
fi

if command -v timeout >/dev/null 2>&1; then
    run() { timeout "$limit" "$@"; }
else
    run() { "$@"; }
fi

failed=""
count=0
skipped=0
# One example per line: name, then its description.
while read -r name what; do
    [ -n "$name" ] || continue
    count=$((count + 1))
    echo "== $name -- $what"
    if [ ! -x "$dir/$name" ]; then
        case $name in
            http_counter) # needs libtwine-http, built when libcurl's package is there
                echo "   skipped: not built (libtwine-http needs libcurl4-openssl-dev: apt-get install libcurl4-openssl-dev)"
                skipped=$((skipped + 1)) ;;
            *)
                echo "   (missing: $dir/$name)"
                failed="$failed $name" ;;
        esac
        echo
        continue
    fi
    run "$dir/$name" </dev/null
    rc=$?
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 124 ]; then
            echo "   ($name did not finish within ${limit} s)"
        else
            echo "   ($name exited with status $rc)"
        fi
        failed="$failed $name"
    fi
    echo
done <<LIST
$examples
LIST

# The Redis example needs a server: dist_counter_check.sh starts its own.
count=$((count + 1))
echo "== dist_counter     seed 000 across processes: four counters on one Redis lock, fenced writes"
if [ -x "$dir/dist_counter" ]; then
    sh "$(dirname "$0")/dist_counter_check.sh" "$dir/dist_counter"
    case $? in
        0) ;;
        77) skipped=$((skipped + 1)) ;; # skipped, and said why
        *) failed="$failed dist_counter" ;;
    esac
else
    echo "   skipped: not built (libtwine-redis needs libhiredis-dev: apt-get install libhiredis-dev)"
    skipped=$((skipped + 1))
fi
echo

if [ -n "$failed" ]; then
    echo "demo: FAILED:$failed"
    exit 1
fi
if [ "$skipped" -gt 0 ]; then
    echo "demo: $((count - skipped)) examples passed, $skipped skipped (see above)"
else
    echo "demo: all $count examples passed"
fi
