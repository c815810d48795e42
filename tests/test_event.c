/*
 * Event: layout, static and zeroed state, set / clear / is_set, the three wait
 * forms, argument errors, set waking every waiter, and Python's rule that a
 * waiter parked while the event was set returns 0 even if it was cleared again
 * before the waiter ran.
 *
 * To know that a waiter is parked (not merely about to call wait), a test
 * polls the thread's scheduler state in /proc: a waiter announces itself, then
 * makes no blocking call but the wait under test, so once it is seen sleeping
 * in the kernel it is parked inside that wait. Where that cannot be seen (an
 * implementation that spins in user space for long), the tests fall back to a
 * form that is correct whether or not the waiter is parked yet.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Exactly representable in binary, so the nanosecond deadline is exact. */
#define SHORT_TIMEOUT 0.0625
/* Bound used only to turn a hang into a failure message. */
#define HANG_LIMIT 10.0

/* ---- thread helpers ------------------------------------------------------ */

static int current_tid(void)
{
    return (int)syscall(SYS_gettid);
}

/* The scheduler state letter of thread `tid` of this process, or 0. */
static char thread_state(int tid)
{
    char path[64], buf[256];
    const char *p;
    size_t n;
    FILE *f;

    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p || p[1] != ' ')
        return 0;
    return p[2];
}

/* Polls until thread `tid` sleeps in the kernel ('S'); false if that is not
 * seen within `limit` seconds. */
static bool wait_parked(int tid, double limit)
{
    double end = tw_test_now() + limit;
    while (tw_test_now() < end) {
        if (thread_state(tid) == 'S')
            return true;
        sched_yield();
    }
    return false;
}

/* Written by the main thread before set, read by waiters after their wait:
 * set's release must make it visible. */
static int payload;

typedef struct waiter {
    tw_event *e;
    double timeout; /* < 0: tw_event_wait; otherwise tw_event_wait_timeout */
    int cpu;        /* >= 0: run on this CPU only */
    atomic_int tid;
    atomic_int started;
    atomic_int done;
    int rc;
    int seen_payload;
    pthread_t thread;
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    atomic_store(&w->tid, current_tid());
    atomic_store(&w->started, 1);
    w->rc = w->timeout < 0 ? tw_event_wait(w->e) : tw_event_wait_timeout(w->e, w->timeout);
    w->seen_payload = payload;
    atomic_store(&w->done, 1);
    return NULL;
}

/* Starts k waiters on e (every odd one with a long timeout; on CPU `cpu` if
 * it is >= 0), waits until each has announced itself, and returns whether
 * every one was then seen parked. */
static bool start_waiters_on(waiter *ws, int k, tw_event *e, int cpu)
{
    bool all_parked = true;
    for (int i = 0; i < k; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].e = e;
        ws[i].cpu = cpu;
        ws[i].timeout = (i % 2) ? 60.0 : -1.0;
        ws[i].thread = tw_test_start(waiter_main, &ws[i]);
    }
    for (int i = 0; i < k; i++) {
        while (!atomic_load(&ws[i].started))
            sched_yield();
        if (!wait_parked(atomic_load(&ws[i].tid), 2.0))
            all_parked = false;
    }
    return all_parked;
}

static bool start_waiters(waiter *ws, int k, tw_event *e)
{
    return start_waiters_on(ws, k, e, -1);
}

static int count_done(waiter *ws, int k)
{
    int n = 0;
    for (int i = 0; i < k; i++)
        n += atomic_load(&ws[i].done);
    return n;
}

/* Polls until all k waiters have returned; false after `limit` seconds. */
static bool wait_all_done(waiter *ws, int k, double limit)
{
    double end = tw_test_now() + limit;
    while (count_done(ws, k) < k) {
        if (tw_test_now() >= end)
            return false;
        sched_yield();
    }
    return true;
}

static void join_waiters(waiter *ws, int k)
{
    for (int i = 0; i < k; i++)
        tw_test_join(ws[i].thread);
}

/* After a failure: sets e again and again for a while so that stuck waiters
 * leave, and joins them if they did (else leaves them: ws and e are static). */
static void release_stuck(tw_event *e, waiter *ws, int k)
{
    double end = tw_test_now() + 2.0;
    while (count_done(ws, k) < k && tw_test_now() < end) {
        tw_event_set(e);
        sched_yield();
    }
    if (count_done(ws, k) == k)
        join_waiters(ws, k);
}

/* Two distinct CPUs this thread may run on, or false. */
static bool two_cpus(int *a, int *b)
{
    cpu_set_t set;
    int found = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return false;
    for (int cpu = 0; cpu < CPU_SETSIZE && found < 2; cpu++) {
        if (!CPU_ISSET(cpu, &set))
            continue;
        if (found++ == 0)
            *a = cpu;
        else
            *b = cpu;
    }
    return found == 2;
}

/* ---- tests --------------------------------------------------------------- */

static void test_event_layout_and_initial_state(void **state)
{
    static tw_event static_event = TW_EVENT_INIT;
    tw_event zeroed;
    tw_event e = TW_EVENT_INIT;
    (void)state;

    assert_true(sizeof(tw_event) <= 4);

    memset(&zeroed, 0, sizeof zeroed);
    assert_false(tw_event_is_set(&zeroed));
    assert_int_equal(tw_event_try_wait(&zeroed), TW_EBUSY);
    assert_int_equal(tw_event_set(&zeroed), 0);
    assert_true(tw_event_is_set(&zeroed));
    assert_int_equal(tw_event_wait(&zeroed), 0);

    assert_false(tw_event_is_set(&static_event));
    assert_int_equal(tw_event_try_wait(&static_event), TW_EBUSY);
    assert_int_equal(tw_event_set(&static_event), 0);
    assert_int_equal(tw_event_try_wait(&static_event), 0);

    assert_false(tw_event_is_set(&e));
    assert_int_equal(tw_event_set(&e), 0);
    assert_true(tw_event_is_set(&e));
    tw_event_init(&e); /* back to the clear state */
    assert_false(tw_event_is_set(&e));
    assert_int_equal(tw_event_try_wait(&e), TW_EBUSY);
    assert_int_equal(tw_event_wait_timeout(&e, 0.0), TW_ETIMEDOUT);
}

static void test_event_set_clear_is_set(void **state)
{
    tw_event e = TW_EVENT_INIT;
    (void)state;

    assert_int_equal(tw_event_clear(&e), 0); /* clearing a clear event is fine */
    assert_false(tw_event_is_set(&e));

    assert_int_equal(tw_event_set(&e), 0);
    assert_true(tw_event_is_set(&e));
    assert_int_equal(tw_event_set(&e), 0); /* idempotent */
    assert_true(tw_event_is_set(&e));

    assert_int_equal(tw_event_clear(&e), 0);
    assert_false(tw_event_is_set(&e));
    assert_int_equal(tw_event_clear(&e), 0);
    assert_false(tw_event_is_set(&e));

    /* Many transitions: the set counter wrapping must never show through. */
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(tw_event_set(&e), 0);
        if (!tw_event_is_set(&e))
            fail_msg("not set after set, round %d", i);
        assert_int_equal(tw_event_clear(&e), 0);
        if (tw_event_is_set(&e))
            fail_msg("still set after clear, round %d", i);
    }
    assert_int_equal(tw_event_try_wait(&e), TW_EBUSY);
}

static void test_event_wait_returns_at_once_when_set(void **state)
{
    tw_event e = TW_EVENT_INIT;
    (void)state;

    assert_int_equal(tw_event_set(&e), 0);
    /* Single thread: if any of these blocked, nobody would ever wake it. */
    assert_int_equal(tw_event_wait(&e), 0);
    assert_int_equal(tw_event_wait(&e), 0); /* waiting does not consume the flag */
    assert_int_equal(tw_event_wait_timeout(&e, -1.0), 0);
    assert_int_equal(tw_event_wait_timeout(&e, 0.0), 0);
    assert_int_equal(tw_event_wait_timeout(&e, 3600.0), 0);
    assert_int_equal(tw_event_wait_timeout(&e, INFINITY), 0);
    assert_int_equal(tw_event_wait_timeout(&e, 1e300), 0);
    assert_int_equal(tw_event_try_wait(&e), 0);
    assert_true(tw_event_is_set(&e));
}

static void test_event_try_wait(void **state)
{
    tw_event e = TW_EVENT_INIT;
    (void)state;

    assert_int_equal(tw_event_try_wait(&e), TW_EBUSY);
    assert_int_equal(tw_event_try_wait(&e), TW_EBUSY);
    assert_int_equal(tw_event_set(&e), 0);
    assert_int_equal(tw_event_try_wait(&e), 0);
    assert_int_equal(tw_event_try_wait(&e), 0);
    assert_int_equal(tw_event_clear(&e), 0);
    assert_int_equal(tw_event_try_wait(&e), TW_EBUSY);
    /* A set followed by a clear leaves nothing behind for a later waiter. */
    assert_int_equal(tw_event_set(&e), 0);
    assert_int_equal(tw_event_clear(&e), 0);
    assert_int_equal(tw_event_try_wait(&e), TW_EBUSY);
}

static void test_event_wait_timeout_expires(void **state)
{
    tw_event e = TW_EVENT_INIT;
    double t0, elapsed;
    (void)state;

    /* timeout 0 on a clear event: do not block. */
    assert_int_equal(tw_event_wait_timeout(&e, 0.0), TW_ETIMEDOUT);
    assert_int_equal(tw_event_wait_timeout(&e, 1e-9), TW_ETIMEDOUT);

    for (int i = 0; i < 3; i++) {
        t0 = tw_test_now();
        assert_int_equal(tw_event_wait_timeout(&e, SHORT_TIMEOUT), TW_ETIMEDOUT);
        elapsed = tw_test_now() - t0;
        if (elapsed < SHORT_TIMEOUT)
            fail_msg("timed out after %.9f s, asked for %.9f s", elapsed, SHORT_TIMEOUT);
        assert_true(elapsed < 5.0);
    }

    /* A set and clear before the wait started does not satisfy it. */
    assert_int_equal(tw_event_set(&e), 0);
    assert_int_equal(tw_event_clear(&e), 0);
    t0 = tw_test_now();
    assert_int_equal(tw_event_wait_timeout(&e, SHORT_TIMEOUT), TW_ETIMEDOUT);
    assert_true(tw_test_now() - t0 >= SHORT_TIMEOUT);
    assert_false(tw_event_is_set(&e));
}

static void test_event_invalid_arguments(void **state)
{
    tw_event e = TW_EVENT_INIT;
    double t0;
    (void)state;

    assert_int_equal(tw_event_set(NULL), TW_EINVAL);
    assert_int_equal(tw_event_clear(NULL), TW_EINVAL);
    assert_int_equal(tw_event_wait(NULL), TW_EINVAL);
    assert_int_equal(tw_event_try_wait(NULL), TW_EINVAL);
    assert_int_equal(tw_event_wait_timeout(NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_event_wait_timeout(NULL, -1.0), TW_EINVAL);
    assert_int_equal(tw_event_wait_timeout(NULL, NAN), TW_EINVAL);
    assert_false(tw_event_is_set(NULL));
    tw_event_init(NULL); /* must not crash */

    /* NaN is refused at once, and changes nothing. */
    t0 = tw_test_now();
    assert_int_equal(tw_event_wait_timeout(&e, NAN), TW_EINVAL);
    assert_int_equal(tw_event_wait_timeout(&e, -NAN), TW_EINVAL);
    assert_true(tw_test_now() - t0 < 1.0);
    assert_false(tw_event_is_set(&e));
    assert_int_equal(tw_event_set(&e), 0);
    assert_true(tw_event_is_set(&e));
}

/* set wakes every waiter, and what was written before set is visible to each. */
static void test_event_set_wakes_all_waiters(void **state)
{
    enum { K = 8 };
    static waiter ws[K];
    static tw_event e; /* outlives the test if waiters are left stuck */
    (void)state;

    tw_event_init(&e);
    payload = 0;
    (void)start_waiters(ws, K, &e);
    /* The event was never set: nobody may have returned. */
    assert_int_equal(count_done(ws, K), 0);

    payload = 42;
    assert_int_equal(tw_event_set(&e), 0);
    if (!wait_all_done(ws, K, HANG_LIMIT)) {
        int n = count_done(ws, K);
        release_stuck(&e, ws, K);
        fail_msg("only %d of %d waiters returned after set", n, K);
    }
    join_waiters(ws, K);
    for (int i = 0; i < K; i++) {
        assert_int_equal(ws[i].rc, 0);
        assert_int_equal(ws[i].seen_payload, 42);
    }
    assert_true(tw_event_is_set(&e));

    /* A second round on the same event after clear. */
    assert_int_equal(tw_event_clear(&e), 0);
    payload = 7;
    (void)start_waiters(ws, K, &e);
    assert_int_equal(count_done(ws, K), 0);
    payload = 43;
    assert_int_equal(tw_event_set(&e), 0);
    join_waiters(ws, K);
    for (int i = 0; i < K; i++) {
        assert_int_equal(ws[i].rc, 0);
        assert_int_equal(ws[i].seen_payload, 43);
    }
}

/* A waiter parked while the event is set and cleared again returns 0.
 *
 * The main thread sets and at once clears. Were the waiters allowed on its
 * CPU, the kernel would often let a woken waiter preempt it between the two
 * calls, and the waiter would simply find the flag set; so, where two CPUs are
 * available, the waiters run on the other one, and find the flag already
 * cleared when they get to look: only the set counter can release them. */
static void test_event_set_then_clear_wakes_parked_waiters(void **state)
{
    enum { K = 3, ROUNDS = 20 };
    static waiter ws[K];
    static tw_event e; /* outlives the test if waiters are left stuck */
    cpu_set_t saved;
    int main_cpu = -1, waiter_cpu = -1;
    bool pinned = false;
    (void)state;

    tw_event_init(&e);
    if (sched_getaffinity(0, sizeof saved, &saved) == 0 && two_cpus(&main_cpu, &waiter_cpu)) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(main_cpu, &one);
        pinned = pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0;
    }
    if (!pinned)
        waiter_cpu = -1;

    for (int round = 0; round < ROUNDS; round++) {
        bool parked = start_waiters_on(ws, K, &e, waiter_cpu);
        assert_int_equal(count_done(ws, K), 0);
        payload = round;
        if (parked) {
            /* Every waiter is asleep inside the wait: one set and one clear. */
            assert_int_equal(tw_event_set(&e), 0);
            assert_int_equal(tw_event_clear(&e), 0);
            assert_false(tw_event_is_set(&e));
            if (!wait_all_done(ws, K, HANG_LIMIT)) {
                int n = count_done(ws, K);
                release_stuck(&e, ws, K);
                if (pinned)
                    pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
                fail_msg("round %d: %d of %d parked waiters missed a set followed by a "
                         "clear",
                         round, K - n, K);
            }
        } else {
            /* Could not see them parked: keep setting and clearing until each
             * has returned; a waiter inside its wait sees one of these. */
            print_message("round %d: waiters not seen parked; set/clear until they return\n",
                          round);
            while (count_done(ws, K) < K) {
                assert_int_equal(tw_event_set(&e), 0);
                assert_int_equal(tw_event_clear(&e), 0);
                sched_yield();
            }
        }
        join_waiters(ws, K);
        for (int i = 0; i < K; i++) {
            assert_int_equal(ws[i].rc, 0); /* not TW_ETIMEDOUT for the timed ones */
            assert_int_equal(ws[i].seen_payload, round);
        }
        assert_false(tw_event_is_set(&e));
        /* The earlier set must not satisfy a wait that starts after it. */
        assert_int_equal(tw_event_try_wait(&e), TW_EBUSY);
        assert_int_equal(tw_event_wait_timeout(&e, 0.0), TW_ETIMEDOUT);
    }
    if (pinned)
        assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof saved, &saved), 0);
}

/* A timed waiter woken by set returns 0 long before its timeout. */
static void test_event_timed_waiter_woken_by_set(void **state)
{
    waiter w;
    tw_event e = TW_EVENT_INIT;
    double t0;
    (void)state;

    memset(&w, 0, sizeof w);
    w.e = &e;
    w.cpu = -1;
    w.timeout = 60.0;
    t0 = tw_test_now();
    w.thread = tw_test_start(waiter_main, &w);
    while (!atomic_load(&w.started))
        sched_yield();
    (void)wait_parked(atomic_load(&w.tid), 2.0);
    assert_int_equal(atomic_load(&w.done), 0);
    assert_int_equal(tw_event_set(&e), 0);
    tw_test_join(w.thread);
    assert_int_equal(w.rc, 0);
    assert_true(tw_test_now() - t0 < 30.0);
}

/* A waiter that times out leaves the event usable: later sets still wake
 * later waiters, and the timed-out wait did not mark the event set. */
static void test_event_usable_after_timeouts(void **state)
{
    enum { K = 4 };
    static waiter ws[K];
    tw_event e = TW_EVENT_INIT;
    (void)state;

    for (int i = 0; i < K; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].e = &e;
        ws[i].cpu = -1;
        ws[i].timeout = SHORT_TIMEOUT;
        ws[i].thread = tw_test_start(waiter_main, &ws[i]);
    }
    join_waiters(ws, K);
    for (int i = 0; i < K; i++)
        assert_int_equal(ws[i].rc, TW_ETIMEDOUT);
    assert_false(tw_event_is_set(&e));

    payload = 99;
    (void)start_waiters(ws, K, &e);
    assert_int_equal(tw_event_set(&e), 0);
    join_waiters(ws, K);
    for (int i = 0; i < K; i++) {
        assert_int_equal(ws[i].rc, 0);
        assert_int_equal(ws[i].seen_payload, 99);
    }
}

/* Two threads hand a turn back and forth through two events: no wake-up is
 * lost, and each side sees the other's writes. */
typedef struct relay {
    tw_event *mine, *theirs;
    long *counter;
    long rounds;
    long bad;
} relay;

static void *relay_main(void *arg)
{
    relay *r = arg;
    for (long i = 0; i < r->rounds; i++) {
        if (tw_event_wait(r->mine) != 0 || tw_event_clear(r->mine) != 0)
            r->bad++;
        ++*r->counter; /* ordered by the events */
        if (tw_event_set(r->theirs) != 0)
            r->bad++;
    }
    return NULL;
}

static void test_event_ping_pong(void **state)
{
    enum { ROUNDS = 20000 };
    tw_event a = TW_EVENT_INIT, b = TW_EVENT_INIT;
    long counter = 0;
    relay ra = {&a, &b, &counter, ROUNDS, 0};
    relay rb = {&b, &a, &counter, ROUNDS, 0};
    pthread_t ta, tb;
    (void)state;

    ta = tw_test_start(relay_main, &ra);
    tb = tw_test_start(relay_main, &rb);
    assert_int_equal(tw_event_set(&a), 0);
    tw_test_join(ta);
    tw_test_join(tb);
    assert_int_equal(ra.bad, 0);
    assert_int_equal(rb.bad, 0);
    assert_int_equal(counter, 2 * ROUNDS);
    /* b's last set of a is still pending: a is set, b was cleared. */
    assert_true(tw_event_is_set(&a));
    assert_false(tw_event_is_set(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_layout_and_initial_state),
        cmocka_unit_test(test_event_set_clear_is_set),
        cmocka_unit_test(test_event_wait_returns_at_once_when_set),
        cmocka_unit_test(test_event_try_wait),
        cmocka_unit_test(test_event_wait_timeout_expires),
        cmocka_unit_test(test_event_invalid_arguments),
        cmocka_unit_test(test_event_set_wakes_all_waiters),
        cmocka_unit_test(test_event_set_then_clear_wakes_parked_waiters),
        cmocka_unit_test(test_event_timed_waiter_woken_by_set),
        cmocka_unit_test(test_event_usable_after_timeouts),
        cmocka_unit_test(test_event_ping_pong),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
