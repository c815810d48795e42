/*
 * sync_bench_tracked.c — the Lock workloads of sync_bench.c compiled with
 * TW_DEBUG, so that every call takes the tracking paths (the held stack,
 * the classes, the order graph's chain cache: docs/deadlocks.md), as an
 * application built with TW_DEBUG does. sync_bench.c runs them beside the
 * untracked Lock and the C peers:
 *
 *   lock_uncontended   acquire + release of one Lock: nothing held, so no
 *                      order to check (the entry pushed, the owner noted)
 *   lock_nested        A then B, released in reverse: B's held stack [A] was
 *                      seen before (its chain key is in the cache), so the
 *                      acquire checks nothing more
 *
 * Each Lock is initialised here (its class is its init call's line).
 */
#define TW_DEBUG 1
#include "bench_util.h"

#include <string.h>
#include <twine/sync.h>

double bench_tracked_lock_uncontended(long n);
double bench_tracked_lock_nested(long n);

static _Alignas(64) struct {
    tw_lock a;
    char pad[60];
    tw_lock b;
    long count;
} t;

double bench_tracked_lock_uncontended(long n)
{
    double t0, t1;
    tw_lock_init(&t.a);
    t.count = 0;
    t0 = bench_now();
    for (long i = 0; i < n; i++) {
        tw_lock_acquire(&t.a);
        t.count++;
        tw_lock_release(&t.a);
    }
    t1 = bench_now();
    bench_check_count("lock_uncontended", "twine Lock tracked", t.count, n);
    return (t1 - t0) * 1e9 / (double)n;
}

double bench_tracked_lock_nested(long n)
{
    double t0, t1;
    tw_lock_init(&t.a);
    tw_lock_init(&t.b);
    t.count = 0;
    t0 = bench_now();
    for (long i = 0; i < n; i++) {
        tw_lock_acquire(&t.a);
        tw_lock_acquire(&t.b);
        t.count++;
        tw_lock_release(&t.b);
        tw_lock_release(&t.a);
    }
    t1 = bench_now();
    bench_check_count("lock_nested", "twine Lock tracked", t.count, n);
    return (t1 - t0) * 1e9 / (double)n;
}
