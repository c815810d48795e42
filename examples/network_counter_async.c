/*
 * network_counter_async — seed 000's NetworkCounter, written with tw_async
 * and tw_await: the same asynchronous critical section as network_counter.c,
 * which writes it as a chain of callbacks, but read top to bottom.
 *
 *     @inlineCallbacks
 *     def next(self):
 *         yield self._lock.acquire()
 *         try:
 *             self._count += 1
 *             yield self._record(self._count)
 *             return self._count
 *         finally:
 *             self._lock.release()
 *
 * In C the try/finally is TW_AWAIT_WITH: the DeferredLock is awaited, held
 * for the block, and released on every way out of it. Without the lock, two
 * overlapping calls both answer 2 (the second increments while the first
 * waits on the network); with it they answer 1 and 2; keeping the value in a
 * local before the wait (the closure version) needs no lock at all.
 *
 * The network is a tw_fake_clock, as in network_counter.c: a record is a
 * Deferred that the clock fires RECORD_DELAY seconds after it is sent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <twine.h>

#define RECORD_DELAY 0.5 /* seconds a record takes on the "network" */

typedef struct network_counter {
    int count;
    tw_dlock lock;   /* all-zero: unlocked */
    tw_clock *clock; /* the network's latency */
} network_counter;

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "network_counter_async: %s: %s\n", what, tw_strerror(rc));
        exit(1);
    }
}

static tw_result int_result(int v)
{
    int *p = malloc(sizeof *p);
    if (!p)
        return tw_result_fail(TW_ENOMEM, NULL);
    *p = v;
    return tw_result_value(p, free);
}

/* ---- the network: a record completes RECORD_DELAY seconds after it is sent ---- */

static void record_done(void *arg)
{
    tw_deferred *recording = arg;
    tw_deferred_callback(recording, tw_result_none());
    tw_deferred_unref(recording); /* the clock's reference */
}

static tw_deferred *record(network_counter *c, int value)
{
    tw_deferred *recording;
    tw_clock_call *call;
    (void)value; /* a real client would send it */
    check(tw_deferred_create(&recording, NULL, NULL), "create");
    check(tw_clock_call_later(c->clock, RECORD_DELAY, record_done, tw_deferred_ref(recording),
                              &call),
          "call_later");
    return recording;
}

/* ---- next(), as coroutines ------------------------------------------------------ */

/* As in the seed's first version: the count is read after the wait. */
static tw_result next_racy(void *arg)
{
    network_counter *c = arg;
    c->count += 1;
    tw_result r = tw_await(record(c, c->count));
    if (tw_result_is_failure(r))
        return r;
    tw_result_drop(r);
    return int_result(c->count);
}

/* The same, inside the lock: the next call starts when this one is done. */
static tw_result next_locked(void *arg)
{
    network_counter *c = arg;
    int rc;
    TW_AWAIT_WITH(&c->lock, &rc) {
        c->count += 1;
        tw_result r = tw_await(record(c, c->count));
        if (tw_result_is_failure(r))
            return r; /* the lock is released here too */
        tw_result_drop(r);
        return int_result(c->count);
    }
    return tw_result_fail(rc, "NetworkCounter.next: could not take the lock");
}

/* The closure version: the answer is kept before the wait. */
static tw_result next_closure(void *arg)
{
    network_counter *c = arg;
    c->count += 1;
    int result = c->count;
    tw_result r = tw_await(record(c, c->count));
    if (tw_result_is_failure(r))
        return r;
    tw_result_drop(r);
    return int_result(result);
}

/* ---- the driver ----------------------------------------------------------------- */

/* Stores the int a Deferred fired with (-1 for a failure). */
static tw_result store_int(tw_result r, void *arg)
{
    *(int *)arg = tw_result_is_value(r) && r.ptr ? *(int *)r.ptr : -1;
    tw_result_drop(r);
    return tw_result_none();
}

/* d1 = counter.next(); d2 = counter.next(); then let the network run. */
static void two_calls(tw_result_fn next, int *got1, int *got2)
{
    network_counter c = {0};
    tw_fake_clock *network;
    tw_deferred *d[2];
    int *got[2] = {got1, got2};

    check(tw_fake_clock_create(&network), "fake clock");
    c.clock = tw_fake_clock_clock(network);
    for (int i = 0; i < 2; i++) {
        check(tw_async(next, &c, &d[i]), "tw_async");
        *got[i] = 0;
        check(tw_deferred_add_both(d[i], store_int, got[i]), "add_both");
    }
    /* Two records at most, one after the other. */
    check(tw_fake_clock_advance(network, 2 * RECORD_DELAY), "advance");
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(d[i]);
    check(tw_fake_clock_destroy(network), "clock destroy");
}

int main(void)
{
    int racy[2], locked[2], closure[2];
    tw_async_stats st;
    bool ok;

    puts("two overlapping NetworkCounter.next() coroutines; the right answers are 1 and 2");

    two_calls(next_racy, &racy[0], &racy[1]);
    printf("  without a lock:   d1 = %d, d2 = %d -- corrupt: both read the count after both"
           " incremented it\n", racy[0], racy[1]);

    two_calls(next_locked, &locked[0], &locked[1]);
    printf("  TW_AWAIT_WITH:    d1 = %d, d2 = %d -- the second call waits for the lock at"
           " its await\n", locked[0], locked[1]);

    two_calls(next_closure, &closure[0], &closure[1]);
    printf("  closure, no lock: d1 = %d, d2 = %d -- each coroutine keeps its own value\n",
           closure[0], closure[1]);

    /* Every coroutine has finished: none is left suspended. */
    tw_async_stats_get(&st);
    ok = racy[0] == 2 && racy[1] == 2 && locked[0] == 1 && locked[1] == 2 && closure[0] == 1 &&
         closure[1] == 2 && st.running == 0;
    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
