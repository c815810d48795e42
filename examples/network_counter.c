/*
 * network_counter — seed 000: an asynchronous critical section.
 *
 * NetworkCounter.next() adds 1 to a shared count, records the new value over
 * the network, and when the record is done returns the count:
 *
 *     def next(self):
 *         self._count += 1
 *         recording = self._record(self._count)
 *         recording.addCallback(lambda ignored: self._count)
 *         return recording
 *
 * Nothing here is threaded: all of it runs on one thread, one step at a time.
 * Yet two overlapping calls both answer 2, because the second call increments
 * the count while the first is still waiting on the network, and the first
 * reads the count only when its record completes. The critical section spans
 * an asynchronous step, so it must be serialized with a DeferredLock: run()
 * starts the next call only when the previous one's Deferred has fired. Or
 * the shared state can be avoided: capture the value before the async step.
 *
 * The network is a tw_fake_clock (the reactor comes later): a record is a
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
        fprintf(stderr, "network_counter: %s: %s\n", what, tw_strerror(rc));
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

/* ---- next(), as in the seed ---------------------------------------------------- */

/* recorded(ignored): return self._count -- read now, after the wait. */
static tw_result recorded(tw_result ignored, void *arg)
{
    network_counter *c = arg;
    tw_result_drop(ignored);
    return int_result(c->count);
}

/* The critical section: increment, record, answer the count. */
static tw_result next_body(void *arg)
{
    network_counter *c = arg;
    tw_deferred *recording;
    c->count += 1;
    recording = record(c, c->count);
    check(tw_deferred_add_callback(recording, recorded, c), "add_callback");
    return tw_result_deferred(recording);
}

/* The closure version: the answer is captured before the async step. */
static tw_result recorded_captured(tw_result ignored, void *arg)
{
    tw_result_drop(ignored);
    return int_result((int)(intptr_t)arg);
}

static tw_result next_closure_body(void *arg)
{
    network_counter *c = arg;
    tw_deferred *recording;
    int result;
    c->count += 1;
    result = c->count;
    recording = record(c, c->count);
    check(tw_deferred_add_callback(recording, recorded_captured, (void *)(intptr_t)result),
          "add_callback");
    return tw_result_deferred(recording);
}

/* ---- the driver ----------------------------------------------------------------- */

enum { RACY, LOCKED, CLOSURE };

/* Stores the int a Deferred fired with (-1 for a failure). */
static tw_result store_int(tw_result r, void *arg)
{
    *(int *)arg = tw_result_is_value(r) && r.ptr ? *(int *)r.ptr : -1;
    tw_result_drop(r);
    return tw_result_none();
}

/* d1 = counter.next(); d2 = counter.next(); then let the network run. */
static void two_calls(int how, int *got1, int *got2)
{
    network_counter c = {0};
    tw_fake_clock *network;
    tw_deferred *d[2];
    int *got[2] = {got1, got2};

    check(tw_fake_clock_create(&network), "fake clock");
    c.clock = tw_fake_clock_clock(network);
    for (int i = 0; i < 2; i++) {
        if (how == LOCKED)
            check(tw_dlock_run(&c.lock, next_body, &c, &d[i]), "dlock_run");
        else
            check(tw_maybe_deferred(how == RACY ? next_body : next_closure_body, &c, &d[i]),
                  "maybe_deferred");
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
    bool ok;

    puts("two overlapping NetworkCounter.next() calls; the right answers are 1 and 2");

    two_calls(RACY, &racy[0], &racy[1]);
    printf("  without a lock:   d1 = %d, d2 = %d -- corrupt: both read the count after both"
           " incremented it\n", racy[0], racy[1]);

    two_calls(LOCKED, &locked[0], &locked[1]);
    printf("  tw_dlock_run:     d1 = %d, d2 = %d -- the second call starts when the first"
           " has finished\n", locked[0], locked[1]);

    two_calls(CLOSURE, &closure[0], &closure[1]);
    printf("  closure, no lock: d1 = %d, d2 = %d -- each call keeps its own value\n",
           closure[0], closure[1]);

    /* The fake clock makes all three deterministic, so all three are checked. */
    ok = racy[0] == 2 && racy[1] == 2 && locked[0] == 1 && locked[1] == 2 && closure[0] == 1 &&
         closure[1] == 2;
    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
