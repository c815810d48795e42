/* Unit tests for tw_rlock (twine/sync.h). */
#include "harness.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bounded poll (two seconds at most) until a waiter has marked the RLock's
 * inner lock as contended (word 2, per tw_lock's documented layout). Only
 * makes it likely that the waiter is parked; no verdict depends on it. */
static void wait_rlock_contended(tw_rlock *r)
{
    double until = tw_test_now() + 2.0;
    while (tw_test_now() < until) {
        if (__atomic_load_n(&r->lock.word, __ATOMIC_RELAXED) == 2)
            return;
        sched_yield();
    }
}

/* ---- one operation performed by another thread, synchronously --------------- */

enum peek_op { PEEK_OBSERVE, PEEK_TRY, PEEK_TIMEOUT, PEEK_RELEASE };

struct peek {
    tw_rlock *r;
    enum peek_op op;
    double timeout;
    int rc;          /* of the operation */
    int release_rc;  /* of the release after a successful try/timeout */
    uint32_t count;  /* tw_rlock_count as seen by the other thread (after op) */
    bool owned;      /* tw_rlock_is_owned as seen by the other thread (after op) */
    bool locked;     /* tw_rlock_locked as seen by the other thread (after op) */
    double elapsed;  /* of the operation */
};

static void *peek_main(void *arg)
{
    struct peek *p = arg;
    double t0 = tw_test_now();
    switch (p->op) {
    case PEEK_OBSERVE:
        p->rc = 0;
        break;
    case PEEK_TRY:
        p->rc = tw_rlock_try_acquire(p->r);
        break;
    case PEEK_TIMEOUT:
        p->rc = tw_rlock_acquire_timeout(p->r, p->timeout);
        break;
    case PEEK_RELEASE:
        p->rc = tw_rlock_release(p->r);
        break;
    }
    p->elapsed = tw_test_now() - t0;
    p->count = tw_rlock_count(p->r);
    p->owned = tw_rlock_is_owned(p->r);
    p->locked = tw_rlock_locked(p->r);
    if ((p->op == PEEK_TRY || p->op == PEEK_TIMEOUT) && p->rc == 0)
        p->release_rc = tw_rlock_release(p->r);
    return NULL;
}

static struct peek peek_from_other_thread(tw_rlock *r, enum peek_op op, double timeout)
{
    struct peek p = {.r = r, .op = op, .timeout = timeout, .rc = -100, .release_rc = -100};
    tw_test_join(tw_test_start(peek_main, &p));
    return p;
}

/* ---- basics -------------------------------------------------------------- */

static tw_rlock static_rlock = TW_RLOCK_INIT;

static void check_fresh_rlock(tw_rlock *r)
{
    assert_false(tw_rlock_locked(r));
    assert_false(tw_rlock_is_owned(r));
    assert_int_equal(tw_rlock_count(r), 0);
    assert_rc(tw_rlock_acquire(r), 0);
    assert_true(tw_rlock_locked(r));
    assert_true(tw_rlock_is_owned(r));
    assert_int_equal(tw_rlock_count(r), 1);
    assert_rc(tw_rlock_release(r), 0);
    assert_false(tw_rlock_locked(r));
    assert_false(tw_rlock_is_owned(r));
    assert_int_equal(tw_rlock_count(r), 0);
}

static void test_rlock_size_and_init(void **state)
{
    tw_rlock zeroed;
    tw_rlock braced = TW_RLOCK_INIT;
    tw_rlock inited;
    (void)state;
    assert_int_equal(sizeof(tw_rlock), 12);
    memset(&zeroed, 0, sizeof zeroed);
    check_fresh_rlock(&zeroed);
    check_fresh_rlock(&braced);
    check_fresh_rlock(&static_rlock);
    memset(&inited, 0xff, sizeof inited);
    tw_rlock_init(&inited);
    check_fresh_rlock(&inited);
    tw_rlock_init(NULL); /* must not crash */
}

static void test_rlock_nesting(void **state)
{
    enum { DEPTH = 6 };
    tw_rlock r = TW_RLOCK_INIT;
    struct peek p;
    (void)state;
    for (uint32_t i = 1; i <= DEPTH; i++) {
        assert_rc(tw_rlock_acquire(&r), 0);
        assert_int_equal(tw_rlock_count(&r), i);
        assert_true(tw_rlock_is_owned(&r));
        assert_true(tw_rlock_locked(&r));
    }
    for (uint32_t i = DEPTH; i > 1; i--) {
        assert_rc(tw_rlock_release(&r), 0);
        assert_int_equal(tw_rlock_count(&r), i - 1);
        assert_true(tw_rlock_is_owned(&r));
        assert_true(tw_rlock_locked(&r));
        /* Still owned: nobody else gets it. */
        p = peek_from_other_thread(&r, PEEK_TRY, 0.0);
        assert_rc(p.rc, TW_EBUSY);
    }
    assert_rc(tw_rlock_release(&r), 0);
    assert_int_equal(tw_rlock_count(&r), 0);
    assert_false(tw_rlock_is_owned(&r));
    assert_false(tw_rlock_locked(&r));

    /* Released N times: another thread may take it now. */
    p = peek_from_other_thread(&r, PEEK_TRY, 0.0);
    assert_rc(p.rc, 0);
    assert_int_equal(p.count, 1);
    assert_true(p.owned);
    assert_rc(p.release_rc, 0);
    assert_false(tw_rlock_locked(&r));
    /* One more release than acquires is refused. */
    assert_rc(tw_rlock_release(&r), TW_EPERM);
}

static void test_rlock_seen_from_other_thread(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    struct peek p;
    (void)state;
    p = peek_from_other_thread(&r, PEEK_OBSERVE, 0.0);
    assert_int_equal(p.count, 0);
    assert_false(p.owned);
    assert_false(p.locked);

    assert_rc(tw_rlock_acquire(&r), 0);
    assert_rc(tw_rlock_acquire(&r), 0);
    assert_rc(tw_rlock_acquire(&r), 0);
    p = peek_from_other_thread(&r, PEEK_OBSERVE, 0.0);
    assert_int_equal(p.count, 0);
    assert_false(p.owned);
    assert_true(p.locked);
    assert_int_equal(tw_rlock_count(&r), 3);
    assert_true(tw_rlock_is_owned(&r));
    for (int i = 0; i < 3; i++)
        assert_rc(tw_rlock_release(&r), 0);
    assert_false(tw_rlock_locked(&r));
}

static void test_rlock_release_by_non_owner(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    struct peek p;
    (void)state;
    assert_rc(tw_rlock_acquire(&r), 0);
    assert_rc(tw_rlock_acquire(&r), 0);
    p = peek_from_other_thread(&r, PEEK_RELEASE, 0.0);
    assert_rc(p.rc, TW_EPERM);
    assert_true(p.locked);
    assert_false(p.owned);
    /* Nothing changed. */
    assert_int_equal(tw_rlock_count(&r), 2);
    assert_true(tw_rlock_is_owned(&r));
    assert_true(tw_rlock_locked(&r));
    p = peek_from_other_thread(&r, PEEK_TRY, 0.0);
    assert_rc(p.rc, TW_EBUSY);
    assert_rc(tw_rlock_release(&r), 0);
    assert_rc(tw_rlock_release(&r), 0);
    assert_false(tw_rlock_locked(&r));
    assert_rc(tw_rlock_release(&r), TW_EPERM);
}

static void test_rlock_release_unowned(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    struct peek p;
    (void)state;
    assert_rc(tw_rlock_release(&r), TW_EPERM);
    assert_false(tw_rlock_locked(&r));
    assert_int_equal(tw_rlock_count(&r), 0);
    assert_false(tw_rlock_is_owned(&r));
    p = peek_from_other_thread(&r, PEEK_RELEASE, 0.0);
    assert_rc(p.rc, TW_EPERM);
    assert_false(p.locked);
    /* Still usable by anyone. */
    check_fresh_rlock(&r);
    p = peek_from_other_thread(&r, PEEK_TRY, 0.0);
    assert_rc(p.rc, 0);
    assert_rc(p.release_rc, 0);
}

static void test_rlock_other_thread_try_and_timeout(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    struct peek p;
    (void)state;
    assert_rc(tw_rlock_acquire(&r), 0);

    p = peek_from_other_thread(&r, PEEK_TRY, 0.0);
    assert_rc(p.rc, TW_EBUSY);
    assert_false(p.owned);
    assert_int_equal(p.count, 0);

    p = peek_from_other_thread(&r, PEEK_TIMEOUT, 0.0);
    assert_rc(p.rc, TW_ETIMEDOUT);
    assert_true(p.elapsed < 1.0);

    p = peek_from_other_thread(&r, PEEK_TIMEOUT, 0.05);
    assert_rc(p.rc, TW_ETIMEDOUT);
    tw_test_check_elapsed_at_least(0.0, p.elapsed, 0.05);
    assert_false(p.owned);

    p = peek_from_other_thread(&r, PEEK_TIMEOUT, NAN);
    assert_rc(p.rc, TW_EINVAL);
    assert_true(p.elapsed < 1.0);

    /* None of that disturbed the owner. */
    assert_int_equal(tw_rlock_count(&r), 1);
    assert_true(tw_rlock_is_owned(&r));
    assert_rc(tw_rlock_release(&r), 0);

    /* Free again: the timed form takes it at once. */
    p = peek_from_other_thread(&r, PEEK_TIMEOUT, 0.0);
    assert_rc(p.rc, 0);
    assert_int_equal(p.count, 1);
    assert_rc(p.release_rc, 0);
    p = peek_from_other_thread(&r, PEEK_TIMEOUT, 0.5);
    assert_rc(p.rc, 0);
    assert_rc(p.release_rc, 0);
    assert_false(tw_rlock_locked(&r));
}

/* The owner's try and timed acquires recurse at once instead of failing. */
static void test_rlock_owner_try_and_timeout_recurse(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    double t0;
    (void)state;
    assert_rc(tw_rlock_try_acquire(&r), 0);
    assert_int_equal(tw_rlock_count(&r), 1);
    assert_rc(tw_rlock_try_acquire(&r), 0);
    assert_int_equal(tw_rlock_count(&r), 2);
    t0 = tw_test_now();
    assert_rc(tw_rlock_acquire_timeout(&r, 0.0), 0);
    assert_rc(tw_rlock_acquire_timeout(&r, 0.05), 0);
    assert_rc(tw_rlock_acquire_timeout(&r, -1.0), 0);
    assert_rc(tw_rlock_acquire_timeout(&r, INFINITY), 0);
    assert_true(tw_test_now() - t0 < 1.0); /* none of them waited */
    assert_int_equal(tw_rlock_count(&r), 6);
    for (uint32_t i = 6; i > 0; i--) {
        assert_int_equal(tw_rlock_count(&r), i);
        assert_rc(tw_rlock_release(&r), 0);
    }
    assert_false(tw_rlock_locked(&r));
    assert_false(tw_rlock_is_owned(&r));
}

static void test_rlock_timeout_nan(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    (void)state;
    assert_rc(tw_rlock_acquire_timeout(&r, NAN), TW_EINVAL);
    assert_false(tw_rlock_locked(&r));
    assert_int_equal(tw_rlock_count(&r), 0);

    /* NaN is refused even when the call would only recurse. */
    assert_rc(tw_rlock_acquire(&r), 0);
    assert_rc(tw_rlock_acquire_timeout(&r, NAN), TW_EINVAL);
    assert_int_equal(tw_rlock_count(&r), 1);
    assert_rc(tw_rlock_release(&r), 0);
    assert_false(tw_rlock_locked(&r));
}

static int run_calls;

static int count_call(void *arg)
{
    (void)arg;
    run_calls++;
    return 0;
}

static void test_rlock_null(void **state)
{
    (void)state;
    run_calls = 0;
    assert_rc(tw_rlock_acquire(NULL), TW_EINVAL);
    assert_rc(tw_rlock_try_acquire(NULL), TW_EINVAL);
    assert_rc(tw_rlock_acquire_timeout(NULL, 0.0), TW_EINVAL);
    assert_rc(tw_rlock_acquire_timeout(NULL, 1.0), TW_EINVAL);
    assert_rc(tw_rlock_acquire_timeout(NULL, NAN), TW_EINVAL);
    assert_rc(tw_rlock_release(NULL), TW_EINVAL);
    assert_false(tw_rlock_is_owned(NULL));
    assert_int_equal(tw_rlock_count(NULL), 0);
    assert_false(tw_rlock_locked(NULL));
    assert_rc(tw_rlock_run(NULL, count_call, NULL), TW_EINVAL);
    assert_rc(tw_rlock_run(NULL, NULL, NULL), TW_EINVAL);
    assert_int_equal(run_calls, 0);
    tw_rlock_init(NULL);
}

/* At depth UINT32_MAX a further acquire is TW_EOVERFLOW. Reaching that depth
 * by looping would take minutes, so the owner sets its documented recursion
 * depth field (written by the owner only) directly. */
static void test_rlock_depth_overflow(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    (void)state;
    assert_rc(tw_rlock_acquire(&r), 0);
    assert_int_equal(r.count, tw_rlock_count(&r));
    r.count = UINT32_MAX;
    assert_int_equal(tw_rlock_count(&r), UINT32_MAX);
    assert_rc(tw_rlock_acquire(&r), TW_EOVERFLOW);
    assert_rc(tw_rlock_try_acquire(&r), TW_EOVERFLOW);
    assert_rc(tw_rlock_acquire_timeout(&r, 0.0), TW_EOVERFLOW);
    assert_rc(tw_rlock_acquire_timeout(&r, -1.0), TW_EOVERFLOW);
    assert_int_equal(tw_rlock_count(&r), UINT32_MAX);
    assert_true(tw_rlock_is_owned(&r));
    /* One step down, one more acquire fits again. */
    assert_rc(tw_rlock_release(&r), 0);
    assert_int_equal(tw_rlock_count(&r), UINT32_MAX - 1);
    assert_rc(tw_rlock_acquire(&r), 0);
    assert_int_equal(tw_rlock_count(&r), UINT32_MAX);
    r.count = 1;
    assert_rc(tw_rlock_release(&r), 0);
    assert_false(tw_rlock_locked(&r));
}

/* ---- threads --------------------------------------------------------------- */

struct waiter {
    tw_rlock *r;
    int mode; /* 0: acquire, 1: acquire_timeout(60), 2: acquire_timeout(-1) */
    tw_test_tally *started, *acquired;
    int rc, rc2, release_rc, release_rc2;
    uint32_t count_after_first, count_after_second;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    tw_test_tally_add(w->started);
    switch (w->mode) {
    case 0:
        w->rc = tw_rlock_acquire(w->r);
        break;
    case 1:
        w->rc = tw_rlock_acquire_timeout(w->r, 60.0);
        break;
    default:
        w->rc = tw_rlock_acquire_timeout(w->r, -1.0);
        break;
    }
    w->count_after_first = tw_rlock_count(w->r);
    w->rc2 = tw_rlock_acquire(w->r); /* recursion in the new owner */
    w->count_after_second = tw_rlock_count(w->r);
    tw_test_tally_add(w->acquired);
    w->release_rc2 = tw_rlock_release(w->r);
    w->release_rc = tw_rlock_release(w->r);
    return NULL;
}

/* A waiter held out by a nested owner proceeds only after the last release. */
static void run_blocked_waiter(int mode)
{
    tw_rlock r = TW_RLOCK_INIT;
    tw_test_tally started, acquired;
    struct waiter w = {.r = &r, .mode = mode, .rc = -100, .rc2 = -100, .release_rc = -100,
                       .release_rc2 = -100};
    pthread_t t;
    tw_test_tally_init(&started);
    tw_test_tally_init(&acquired);
    w.started = &started;
    w.acquired = &acquired;
    assert_rc(tw_rlock_acquire(&r), 0);
    assert_rc(tw_rlock_acquire(&r), 0);
    t = tw_test_start(waiter_main, &w);
    assert_true(tw_test_tally_wait(&started, 1, 30.0));
    wait_rlock_contended(&r);
    assert_int_equal(tw_test_tally_get(&acquired), 0);

    assert_rc(tw_rlock_release(&r), 0); /* depth 1: still owned */
    assert_true(tw_rlock_is_owned(&r));
    assert_int_equal(tw_test_tally_get(&acquired), 0);

    assert_rc(tw_rlock_release(&r), 0);
    tw_test_must_reach(&acquired, 1, 30.0, "waiter after the last release");
    assert_false(tw_rlock_is_owned(&r));
    tw_test_join(t);
    assert_rc(w.rc, 0);
    assert_rc(w.rc2, 0);
    assert_int_equal(w.count_after_first, 1);
    assert_int_equal(w.count_after_second, 2);
    assert_rc(w.release_rc2, 0);
    assert_rc(w.release_rc, 0);
    assert_false(tw_rlock_locked(&r));
    check_fresh_rlock(&r);
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&acquired);
}

static void test_rlock_blocked_waiter_proceeds(void **state)
{
    (void)state;
    run_blocked_waiter(0);
    run_blocked_waiter(1);
    run_blocked_waiter(2);
}

struct contender {
    tw_rlock *r;
    long *counter;
    int *inside;
    uint64_t iterations;
    int errors, overlaps;
};

static void *contender_main(void *arg)
{
    struct contender *c = arg;
    for (uint64_t i = 0; i < c->iterations; i++) {
        int rc = (i & 1) ? tw_rlock_acquire(c->r) : tw_rlock_acquire_timeout(c->r, 60.0);
        if (rc != 0) {
            c->errors++;
            continue;
        }
        if (tw_rlock_try_acquire(c->r) != 0) /* nested */
            c->errors++;
        if (tw_rlock_count(c->r) != 2)
            c->errors++;
        if (__atomic_add_fetch(c->inside, 1, __ATOMIC_RELAXED) != 1)
            c->overlaps++;
        (*c->counter)++;
        __atomic_sub_fetch(c->inside, 1, __ATOMIC_RELAXED);
        if (tw_rlock_release(c->r) != 0 || tw_rlock_release(c->r) != 0)
            c->errors++;
        if (tw_rlock_count(c->r) != 0)
            c->errors++;
    }
    return NULL;
}

static void test_rlock_mutual_exclusion(void **state)
{
    enum { N = 4 };
    tw_rlock r = TW_RLOCK_INIT;
    long counter = 0;
    int inside = 0;
    struct contender c[N];
    uint64_t iters = tw_test_scaled(10000, 500);
    (void)state;
    for (int i = 0; i < N; i++)
        c[i] = (struct contender){.r = &r, .counter = &counter, .inside = &inside,
                                  .iterations = iters};
    tw_test_run_threads_bounded(N, contender_main, c, sizeof c[0], "contender_main");
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].errors, 0);
        assert_int_equal(c[i].overlaps, 0);
    }
    assert_int_equal(counter, (long)(iters * N));
    assert_false(tw_rlock_locked(&r));
}

/* ---- tw_rlock_run ------------------------------------------------------------ */

struct run_probe {
    tw_rlock *r;
    int result;
    int calls;
    bool owned;
    uint32_t count;
};

static int probe_fn(void *arg)
{
    struct run_probe *p = arg;
    p->calls++;
    p->owned = tw_rlock_is_owned(p->r);
    p->count = tw_rlock_count(p->r);
    return p->result;
}

static void test_rlock_run(void **state)
{
    static const int results[] = {0, 9, TW_EBUSY, -1234, INT_MIN, INT_MAX};
    tw_rlock r = TW_RLOCK_INIT;
    (void)state;
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        struct run_probe p = {.r = &r, .result = results[i]};
        assert_int_equal(tw_rlock_run(&r, probe_fn, &p), results[i]);
        assert_int_equal(p.calls, 1);
        assert_true(p.owned);
        assert_int_equal(p.count, 1);
        assert_false(tw_rlock_locked(&r));
        assert_int_equal(tw_rlock_count(&r), 0);
    }
    /* Run by a thread that already owns it: one level deeper, then back. */
    assert_rc(tw_rlock_acquire(&r), 0);
    {
        struct run_probe p = {.r = &r, .result = TW_ECANCELED};
        assert_rc(tw_rlock_run(&r, probe_fn, &p), TW_ECANCELED);
        assert_int_equal(p.count, 2);
        assert_int_equal(tw_rlock_count(&r), 1);
        assert_true(tw_rlock_is_owned(&r));
    }
    /* NULL fn: nothing happens to the depth. */
    assert_rc(tw_rlock_run(&r, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_rlock_count(&r), 1);
    assert_rc(tw_rlock_release(&r), 0);
    assert_rc(tw_rlock_run(&r, NULL, NULL), TW_EINVAL);
    assert_false(tw_rlock_locked(&r));
}

struct null_runner {
    tw_rlock *r;
    tw_test_tally *done;
    int rc;
};

static void *null_runner_main(void *arg)
{
    struct null_runner *n = arg;
    n->rc = tw_rlock_run(n->r, NULL, NULL);
    tw_test_tally_add(n->done);
    return NULL;
}

/* run(NULL fn) on an RLock owned by another thread fails at once: it does not wait. */
static void test_rlock_run_null_fn_owned_elsewhere(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    tw_test_tally done;
    struct null_runner n = {.r = &r, .rc = -100};
    pthread_t t;
    bool returned;
    (void)state;
    tw_test_tally_init(&done);
    n.done = &done;
    assert_rc(tw_rlock_acquire(&r), 0);
    t = tw_test_start(null_runner_main, &n);
    returned = tw_test_tally_wait(&done, 1, 10.0);
    if (!returned)
        tw_rlock_release(&r); /* let a wrongly waiting thread finish */
    tw_test_must_reach(&done, 1, 30.0, "tw_rlock_run(NULL fn)");
    tw_test_join(t);
    assert_true(returned);
    assert_rc(n.rc, TW_EINVAL);
    assert_int_equal(tw_rlock_count(&r), 1);
    assert_rc(tw_rlock_release(&r), 0);
    tw_test_tally_destroy(&done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rlock_size_and_init),
        cmocka_unit_test(test_rlock_nesting),
        cmocka_unit_test(test_rlock_seen_from_other_thread),
        cmocka_unit_test(test_rlock_release_by_non_owner),
        cmocka_unit_test(test_rlock_release_unowned),
        cmocka_unit_test(test_rlock_other_thread_try_and_timeout),
        cmocka_unit_test(test_rlock_owner_try_and_timeout_recurse),
        cmocka_unit_test(test_rlock_timeout_nan),
        cmocka_unit_test(test_rlock_null),
        cmocka_unit_test(test_rlock_depth_overflow),
        cmocka_unit_test(test_rlock_blocked_waiter_proceeds),
        cmocka_unit_test(test_rlock_mutual_exclusion),
        cmocka_unit_test(test_rlock_run),
        cmocka_unit_test(test_rlock_run_null_fn_owned_elsewhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
