/*
 * reactor_counter — seed 000 on a real reactor: an async critical section
 * whose async step is a blocking write done in a thread.
 *
 * NetworkCounter.next() adds 1 to a shared count, records the new value, and
 * when the record is done answers the count:
 *
 *     def next(self):
 *         self._count += 1
 *         recording = self._record(self._count)
 *         recording.addCallback(lambda ignored: self._count)
 *         return recording
 *
 * Here _record is a slow, blocking write (the value goes down a pipe after
 * RECORD_MS of "device" time), so it runs on the reactor's pool through
 * tw_defer_to_thread, and its Deferred fires back on the loop thread. The
 * count is touched only on the loop thread, so no thread lock is needed; yet
 * two overlapping calls both answer 2, because the second one increments the
 * count while the first waits for its record, and the first reads the count
 * only when its record is done. A DeferredLock (tw_dlock_run) starts the
 * second call when the first has finished; or the closure version captures
 * the value before the async step.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <twine.h>

#define RECORD_MS 20 /* how long one record takes */

typedef struct network_counter {
    int count;          /* the loop thread's */
    tw_dlock lock;      /* all-zero: unlocked */
    tw_reactor *reactor;
} network_counter;

static int wire[2]; /* the records go down this pipe */

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "reactor_counter: %s: %s\n", what, tw_strerror(rc));
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

/* ---- _record: a slow blocking write, on a pool thread ---------------------------- */

static tw_result slow_write(void *arg, tw_cancel *cancel)
{
    int value = (int)(intptr_t)arg;
    struct timespec device_time = {0, RECORD_MS * 1000000L};
    (void)cancel;
    nanosleep(&device_time, NULL); /* the slow work itself, not a wait for a result */
    if (write(wire[1], &value, sizeof value) != (ssize_t)sizeof value)
        return tw_result_fail(TW_ESYS, "cannot record %d", value);
    return tw_result_none();
}

static tw_deferred *record(network_counter *c, int value)
{
    tw_deferred *recording;
    check(tw_defer_to_thread(c->reactor, slow_write, (void *)(intptr_t)value, &recording),
          "defer_to_thread");
    return recording;
}

/* ---- next(), as in the seed (the loop thread) --------------------------------------- */

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

/* ---- the driver ----------------------------------------------------------------------- */

enum { RACY, LOCKED, CLOSURE };

/* Stores the int a Deferred fired with (-1 for a failure). */
static tw_result store_int(tw_result r, void *arg)
{
    *(int *)arg = tw_result_is_value(r) && r.ptr ? *(int *)r.ptr : -1;
    tw_result_drop(r);
    return tw_result_none();
}

static tw_result stop_reactor(tw_result r, void *arg)
{
    tw_result_drop(r);
    tw_reactor_stop(arg);
    return tw_result_none();
}

/* d1 = counter.next(); d2 = counter.next()
 * DeferredList([d1, d2]).addBoth(lambda _: reactor.stop()); reactor.run()
 * Then reads back what the records wrote, in value order (the two writes of
 * the unlocked versions run in parallel: either may land first). */
static void two_calls(int how, int got[2], int written[2])
{
    network_counter c = {0};
    tw_deferred *d[2], *both;

    check(tw_reactor_create(&c.reactor), "reactor");
    for (int i = 0; i < 2; i++) {
        if (how == LOCKED)
            check(tw_dlock_run(&c.lock, next_body, &c, &d[i]), "dlock_run");
        else
            check(tw_maybe_deferred(how == RACY ? next_body : next_closure_body, &c, &d[i]),
                  "maybe_deferred");
        got[i] = 0;
        check(tw_deferred_add_both(d[i], store_int, &got[i]), "add_both");
    }
    check(tw_deferred_list(d, 2, 0, &both), "deferred_list");
    check(tw_deferred_add_both(both, stop_reactor, c.reactor), "add_both");
    check(tw_reactor_run(c.reactor), "run");
    tw_deferred_unref(both);
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(d[i]);
    check(tw_reactor_destroy(c.reactor), "destroy");

    for (int i = 0; i < 2; i++)
        if (read(wire[0], &written[i], sizeof written[i]) != (ssize_t)sizeof written[i])
            written[i] = -1; /* the pipe's read end does not block */
    if (written[0] > written[1]) {
        int t = written[0];
        written[0] = written[1];
        written[1] = t;
    }
}

int main(void)
{
    int racy[2], locked[2], closure[2], w[3][2];
    bool ok;

    if (pipe(wire) != 0 || fcntl(wire[0], F_SETFL, O_NONBLOCK) != 0) {
        perror("reactor_counter: pipe");
        return 1;
    }
    printf("two overlapping NetworkCounter.next() calls on a reactor, each recording its value\n"
           "with a %d ms blocking write on a pool thread; the right answers are 1 and 2\n",
           RECORD_MS);

    two_calls(RACY, racy, w[0]);
    printf("  without a lock:   d1 = %d, d2 = %d (recorded %d, %d) -- wrong: both read the count"
           " after both incremented it\n", racy[0], racy[1], w[0][0], w[0][1]);

    two_calls(LOCKED, locked, w[1]);
    printf("  tw_dlock_run:     d1 = %d, d2 = %d (recorded %d, %d) -- the second call starts"
           " when the first has finished\n", locked[0], locked[1], w[1][0], w[1][1]);

    two_calls(CLOSURE, closure, w[2]);
    printf("  closure, no lock: d1 = %d, d2 = %d (recorded %d, %d) -- each call keeps its own"
           " value\n", closure[0], closure[1], w[2][0], w[2][1]);

    close(wire[0]);
    close(wire[1]);

    /* Both increments of each run happen before either record can finish, so
     * all three outcomes are deterministic; all three are checked. */
    ok = racy[0] == 2 && racy[1] == 2 && locked[0] == 1 && locked[1] == 2 && closure[0] == 1 &&
         closure[1] == 2;
    for (int i = 0; i < 3; i++)
        ok = ok && w[i][0] == 1 && w[i][1] == 2;
    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
