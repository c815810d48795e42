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
reactor_counter   seed 000: NetworkCounter on a reactor, its record a blocking write in a thread
reactor_threads   seed 001: the threading howto on a reactor: to and from threads, pool, wedge, shutdown
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
# One example per line: name, then its description.
while read -r name what; do
    [ -n "$name" ] || continue
    count=$((count + 1))
    echo "== $name -- $what"
    if [ ! -x "$dir/$name" ]; then
        echo "   (missing: $dir/$name)"
        failed="$failed $name"
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

if [ -n "$failed" ]; then
    echo "demo: FAILED:$failed"
    exit 1
fi
echo "demo: all $count examples passed"
