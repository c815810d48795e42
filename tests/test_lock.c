/* Unit tests for tw_lock (twine/sync.h). */
#include "harness.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Polls, for at most two seconds, until a waiter has marked the lock as
 * contended (word 2, per the layout documented at tw_lock). Only used to make
 * it likely that the waiter is parked in the slow path; correctness of the
 * tests never depends on the answer. */
static bool wait_lock_contended(tw_lock *l)
{
    double until = tw_test_now() + 2.0;
    while (tw_test_now() < until) {
        if (__atomic_load_n(&l->word, __ATOMIC_RELAXED) == 2)
            return true;
        sched_yield();
    }
    return false;
}

/* ---- basics -------------------------------------------------------------- */

static tw_lock static_lock = TW_LOCK_INIT;

static void check_fresh_lock(tw_lock *l)
{
    assert_false(tw_lock_locked(l));
    assert_rc(tw_lock_try_acquire(l), 0);
    assert_true(tw_lock_locked(l));
    assert_rc(tw_lock_try_acquire(l), TW_EBUSY);
    assert_rc(tw_lock_release(l), 0);
    assert_false(tw_lock_locked(l));
    assert_rc(tw_lock_acquire(l), 0);
    assert_rc(tw_lock_release(l), 0);
}

static void test_lock_size_and_init(void **state)
{
    tw_lock zeroed;
    tw_lock braced = TW_LOCK_INIT;
    tw_lock inited;
    (void)state;
    assert_int_equal(sizeof(tw_lock), 4);

    memset(&zeroed, 0, sizeof zeroed);
    check_fresh_lock(&zeroed);
    check_fresh_lock(&braced);
    check_fresh_lock(&static_lock);

    memset(&inited, 0xff, sizeof inited);
    tw_lock_init(&inited);
    check_fresh_lock(&inited);
    tw_lock_init(NULL); /* must not crash */
}

static void test_lock_acquire_release_cycle(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    (void)state;
    assert_rc(tw_lock_acquire(&l), 0);
    assert_true(tw_lock_locked(&l));
    assert_rc(tw_lock_try_acquire(&l), TW_EBUSY);
    assert_true(tw_lock_locked(&l));
    assert_rc(tw_lock_acquire_timeout(&l, 0.0), TW_ETIMEDOUT);
    assert_true(tw_lock_locked(&l));
    assert_rc(tw_lock_release(&l), 0);
    assert_false(tw_lock_locked(&l));

    /* Every form of timeout takes a free lock at once. */
    assert_rc(tw_lock_acquire_timeout(&l, 0.0), 0);
    assert_true(tw_lock_locked(&l));
    assert_rc(tw_lock_release(&l), 0);
    assert_rc(tw_lock_acquire_timeout(&l, -1.0), 0);
    assert_rc(tw_lock_release(&l), 0);
    assert_rc(tw_lock_acquire_timeout(&l, INFINITY), 0);
    assert_rc(tw_lock_release(&l), 0);
    assert_rc(tw_lock_acquire_timeout(&l, 1.0), 0);
    assert_rc(tw_lock_release(&l), 0);
    assert_rc(tw_lock_acquire_timeout(&l, 1e300), 0);
    assert_rc(tw_lock_release(&l), 0);
    assert_false(tw_lock_locked(&l));
}

static void test_lock_release_unlocked_eperm(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    (void)state;
    assert_rc(tw_lock_release(&l), TW_EPERM);
    assert_int_equal(l.word, 0);
    assert_false(tw_lock_locked(&l));
    assert_rc(tw_lock_release(&l), TW_EPERM);
    assert_int_equal(l.word, 0);

    /* The refused release broke nothing. */
    assert_rc(tw_lock_acquire(&l), 0);
    assert_rc(tw_lock_try_acquire(&l), TW_EBUSY);
    assert_rc(tw_lock_release(&l), 0);
    assert_rc(tw_lock_release(&l), TW_EPERM);
    assert_false(tw_lock_locked(&l));
    assert_rc(tw_lock_try_acquire(&l), 0);
    assert_rc(tw_lock_release(&l), 0);
}

static int run_calls;

static int count_call(void *arg)
{
    (void)arg;
    run_calls++;
    return 0;
}

static void test_lock_null(void **state)
{
    (void)state;
    run_calls = 0;
    assert_rc(tw_lock_acquire(NULL), TW_EINVAL);
    assert_rc(tw_lock_try_acquire(NULL), TW_EINVAL);
    assert_rc(tw_lock_acquire_timeout(NULL, 0.0), TW_EINVAL);
    assert_rc(tw_lock_acquire_timeout(NULL, 1.0), TW_EINVAL);
    assert_rc(tw_lock_acquire_timeout(NULL, -1.0), TW_EINVAL);
    assert_rc(tw_lock_acquire_timeout(NULL, NAN), TW_EINVAL);
    assert_rc(tw_lock_release(NULL), TW_EINVAL);
    assert_false(tw_lock_locked(NULL));
    assert_rc(tw_lock_run(NULL, count_call, NULL), TW_EINVAL);
    assert_rc(tw_lock_run(NULL, NULL, NULL), TW_EINVAL);
    assert_int_equal(run_calls, 0);
    tw_lock_init(NULL);
}

static void test_lock_timeout_nan(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    double t0;
    (void)state;
    assert_rc(tw_lock_acquire_timeout(&l, NAN), TW_EINVAL);
    assert_false(tw_lock_locked(&l)); /* a free lock is not taken */
    assert_rc(tw_lock_acquire_timeout(&l, -NAN), TW_EINVAL);
    assert_false(tw_lock_locked(&l));

    assert_rc(tw_lock_acquire(&l), 0);
    t0 = tw_test_now();
    assert_rc(tw_lock_acquire_timeout(&l, NAN), TW_EINVAL); /* does not wait */
    assert_true(tw_test_now() - t0 < 1.0);
    assert_true(tw_lock_locked(&l));
    assert_rc(tw_lock_release(&l), 0);
    assert_false(tw_lock_locked(&l));
}

static void test_lock_timeout_zero_held_immediate(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    double t0;
    (void)state;
    assert_rc(tw_lock_acquire(&l), 0);
    /* 100 attempts that must not block take far less than two seconds in all. */
    t0 = tw_test_now();
    for (int i = 0; i < 100; i++)
        assert_rc(tw_lock_acquire_timeout(&l, 0.0), TW_ETIMEDOUT);
    assert_true(tw_test_now() - t0 < 2.0);
    assert_true(tw_lock_locked(&l));
    assert_rc(tw_lock_release(&l), 0);
}

static void test_lock_timeout_not_early_self_held(void **state)
{
    static const double asked[] = {0.001, 0.02, 0.05};
    tw_lock l = TW_LOCK_INIT;
    (void)state;
    assert_rc(tw_lock_acquire(&l), 0);
    for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++) {
        double t0 = tw_test_now(), t1;
        assert_rc(tw_lock_acquire_timeout(&l, asked[i]), TW_ETIMEDOUT);
        t1 = tw_test_now();
        tw_test_check_elapsed_at_least(t0, t1, asked[i]);
        assert_true(tw_lock_locked(&l));
    }
    assert_rc(tw_lock_release(&l), 0);
    assert_false(tw_lock_locked(&l));
}

/* ---- threads --------------------------------------------------------------- */

struct holder {
    tw_lock *lock;
    tw_test_tally holding; /* the holder has the lock */
    tw_test_tally go;      /* the holder may release it */
    int acquire_rc, release_rc;
};

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    h->acquire_rc = tw_lock_acquire(h->lock);
    tw_test_tally_add(&h->holding);
    tw_test_tally_wait(&h->go, 1, 60.0);
    h->release_rc = tw_lock_release(h->lock);
    return NULL;
}

static void test_lock_timeout_not_early_other_holder(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    struct holder h = {.lock = &l};
    pthread_t t;
    double t0, t1;
    (void)state;
    tw_test_tally_init(&h.holding);
    tw_test_tally_init(&h.go);
    t = tw_test_start(holder_main, &h);
    assert_true(tw_test_tally_wait(&h.holding, 1, 30.0));

    assert_rc(tw_lock_try_acquire(&l), TW_EBUSY);
    assert_rc(tw_lock_acquire_timeout(&l, 0.0), TW_ETIMEDOUT);
    t0 = tw_test_now();
    assert_rc(tw_lock_acquire_timeout(&l, 0.05), TW_ETIMEDOUT);
    t1 = tw_test_now();
    tw_test_check_elapsed_at_least(t0, t1, 0.05);
    assert_true(tw_lock_locked(&l));

    tw_test_tally_add(&h.go);
    tw_test_join(t);
    assert_rc(h.acquire_rc, 0);
    assert_rc(h.release_rc, 0);
    assert_false(tw_lock_locked(&l));
    tw_test_tally_destroy(&h.holding);
    tw_test_tally_destroy(&h.go);
}

struct releaser {
    tw_lock *lock;
    int rc;
    bool saw_locked;
};

static void *releaser_main(void *arg)
{
    struct releaser *r = arg;
    r->saw_locked = tw_lock_locked(r->lock);
    r->rc = tw_lock_release(r->lock);
    return NULL;
}

static void *acquirer_main(void *arg)
{
    struct releaser *r = arg;
    r->rc = tw_lock_acquire(r->lock);
    return NULL;
}

/* Like Python's Lock, any thread may release a Lock another thread took. */
static void test_lock_cross_thread_release(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    struct releaser r = {.lock = &l};
    (void)state;
    assert_rc(tw_lock_acquire(&l), 0);
    tw_test_join(tw_test_start(releaser_main, &r));
    assert_true(r.saw_locked);
    assert_rc(r.rc, 0);
    assert_false(tw_lock_locked(&l));

    /* And the other way round. */
    r.rc = -100;
    tw_test_join(tw_test_start(acquirer_main, &r));
    assert_rc(r.rc, 0);
    assert_true(tw_lock_locked(&l));
    assert_rc(tw_lock_release(&l), 0);
    assert_false(tw_lock_locked(&l));

    /* A second thread releasing an unlocked lock gets TW_EPERM. */
    tw_test_join(tw_test_start(releaser_main, &r));
    assert_false(r.saw_locked);
    assert_rc(r.rc, TW_EPERM);
    assert_false(tw_lock_locked(&l));
}

struct waiter {
    tw_lock *lock;
    int mode; /* 0: tw_lock_acquire, 1: tw_lock_acquire_timeout(timeout) */
    double timeout;
    tw_test_tally *started, *acquired;
    int rc, release_rc;
    bool saw_locked;
    long *counter; /* incremented under the lock when non-NULL */
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    tw_test_tally_add(w->started);
    w->rc = w->mode ? tw_lock_acquire_timeout(w->lock, w->timeout) : tw_lock_acquire(w->lock);
    if (w->rc == 0) {
        w->saw_locked = tw_lock_locked(w->lock);
        if (w->counter)
            (*w->counter)++;
        tw_test_tally_add(w->acquired);
        w->release_rc = tw_lock_release(w->lock);
    } else {
        tw_test_tally_add(w->acquired);
    }
    return NULL;
}

/* One waiter, held out by the main thread, proceeds once the lock is released. */
static void run_one_waiter(int mode, double timeout)
{
    tw_lock l = TW_LOCK_INIT;
    tw_test_tally started, acquired;
    struct waiter w = {.lock = &l, .mode = mode, .timeout = timeout};
    pthread_t t;
    tw_test_tally_init(&started);
    tw_test_tally_init(&acquired);
    w.started = &started;
    w.acquired = &acquired;
    w.rc = w.release_rc = -100;

    assert_rc(tw_lock_acquire(&l), 0);
    t = tw_test_start(waiter_main, &w);
    assert_true(tw_test_tally_wait(&started, 1, 30.0));
    wait_lock_contended(&l);
    assert_int_equal(tw_test_tally_get(&acquired), 0); /* still held out */
    assert_true(tw_lock_locked(&l));

    assert_rc(tw_lock_release(&l), 0);
    tw_test_must_reach(&acquired, 1, 30.0, "waiter after release");
    tw_test_join(t);
    assert_rc(w.rc, 0);
    assert_true(w.saw_locked);
    assert_rc(w.release_rc, 0);
    assert_false(tw_lock_locked(&l));
    /* Nothing is left parked or marked: the lock is plain free again. */
    assert_rc(tw_lock_try_acquire(&l), 0);
    assert_rc(tw_lock_release(&l), 0);
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&acquired);
}

static void test_lock_blocked_waiter_proceeds(void **state)
{
    (void)state;
    run_one_waiter(0, 0.0);
}

static void test_lock_timed_waiter_proceeds(void **state)
{
    (void)state;
    run_one_waiter(1, 60.0);
    run_one_waiter(1, -1.0);
    run_one_waiter(1, INFINITY);
}

#define N_WAITERS 4

static void test_lock_many_waiters_all_proceed(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    tw_test_tally started, acquired;
    struct waiter w[N_WAITERS];
    pthread_t t[N_WAITERS];
    long counter = 0;
    (void)state;
    tw_test_tally_init(&started);
    tw_test_tally_init(&acquired);
    assert_rc(tw_lock_acquire(&l), 0);
    for (int i = 0; i < N_WAITERS; i++) {
        w[i] = (struct waiter){.lock = &l, .mode = i % 2, .timeout = 60.0,
                               .started = &started, .acquired = &acquired,
                               .counter = &counter, .rc = -100, .release_rc = -100};
        t[i] = tw_test_start(waiter_main, &w[i]);
    }
    assert_true(tw_test_tally_wait(&started, N_WAITERS, 30.0));
    wait_lock_contended(&l);
    assert_int_equal(tw_test_tally_get(&acquired), 0);

    assert_rc(tw_lock_release(&l), 0);
    tw_test_must_reach(&acquired, N_WAITERS, 30.0, "waiters after release");
    for (int i = 0; i < N_WAITERS; i++) {
        tw_test_join(t[i]);
        assert_rc(w[i].rc, 0);
        assert_rc(w[i].release_rc, 0);
    }
    assert_int_equal(counter, N_WAITERS);
    assert_false(tw_lock_locked(&l));
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&acquired);
}

struct contender {
    tw_lock *lock;
    long *counter;
    int *inside;
    uint64_t iterations;
    int index;
    int errors;
    int overlaps;
};

static void *contender_main(void *arg)
{
    struct contender *c = arg;
    for (uint64_t i = 0; i < c->iterations; i++) {
        int rc;
        switch ((i + (uint64_t)c->index) % 3) {
        case 0:
            rc = tw_lock_acquire(c->lock);
            break;
        case 1:
            rc = tw_lock_acquire_timeout(c->lock, 60.0);
            break;
        default:
            while ((rc = tw_lock_try_acquire(c->lock)) == TW_EBUSY)
                sched_yield();
            break;
        }
        if (rc != 0) {
            c->errors++;
            continue;
        }
        if (__atomic_add_fetch(c->inside, 1, __ATOMIC_RELAXED) != 1)
            c->overlaps++;
        (*c->counter)++;
        __atomic_sub_fetch(c->inside, 1, __ATOMIC_RELAXED);
        if (tw_lock_release(c->lock) != 0)
            c->errors++;
    }
    return NULL;
}

static void test_lock_mutual_exclusion(void **state)
{
    enum { N = 4 };
    tw_lock l = TW_LOCK_INIT;
    long counter = 0;
    int inside = 0;
    struct contender c[N];
    uint64_t iters = tw_test_scaled(20000, 500);
    (void)state;
    for (int i = 0; i < N; i++)
        c[i] = (struct contender){.lock = &l, .counter = &counter, .inside = &inside,
                                  .iterations = iters, .index = i};
    tw_test_run_threads_bounded(N, contender_main, c, sizeof c[0], "contender_main");
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].errors, 0);
        assert_int_equal(c[i].overlaps, 0);
    }
    assert_int_equal(counter, (long)(iters * N));
    assert_false(tw_lock_locked(&l));
}

/* ---- tw_lock_run ------------------------------------------------------------ */

struct run_probe {
    tw_lock *lock;
    int result;
    int calls;
    bool saw_locked;
    int try_rc;
};

static int probe_fn(void *arg)
{
    struct run_probe *p = arg;
    p->calls++;
    p->saw_locked = tw_lock_locked(p->lock);
    p->try_rc = tw_lock_try_acquire(p->lock);
    return p->result;
}

static void test_lock_run_result_and_release(void **state)
{
    static const int results[] = {0, 1, 42, INT_MAX, TW_ETIMEDOUT, TW_EPERM, -77, INT_MIN};
    tw_lock l = TW_LOCK_INIT;
    (void)state;
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        struct run_probe p = {.lock = &l, .result = results[i], .try_rc = -100};
        assert_int_equal(tw_lock_run(&l, probe_fn, &p), results[i]);
        assert_int_equal(p.calls, 1);
        assert_true(p.saw_locked);
        assert_rc(p.try_rc, TW_EBUSY); /* fn ran with the lock held */
        assert_false(tw_lock_locked(&l)); /* released, whatever fn returned */
    }
    /* Still a working lock. */
    assert_rc(tw_lock_try_acquire(&l), 0);
    assert_rc(tw_lock_release(&l), 0);
}

static void test_lock_run_null_fn_free_lock(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    (void)state;
    assert_rc(tw_lock_run(&l, NULL, NULL), TW_EINVAL);
    assert_false(tw_lock_locked(&l));
    assert_int_equal(l.word, 0);
}

struct null_runner {
    tw_lock *lock;
    tw_test_tally *done;
    int rc;
};

static void *null_runner_main(void *arg)
{
    struct null_runner *n = arg;
    n->rc = tw_lock_run(n->lock, NULL, NULL);
    tw_test_tally_add(n->done);
    return NULL;
}

/* With the lock held elsewhere, run(NULL fn) must fail at once: it does not
 * wait for, take or release the lock. */
static void test_lock_run_null_fn_held_lock(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    tw_test_tally done;
    struct null_runner n = {.lock = &l, .rc = -100};
    pthread_t t;
    bool returned;
    (void)state;
    tw_test_tally_init(&done);
    n.done = &done;
    assert_rc(tw_lock_acquire(&l), 0);
    t = tw_test_start(null_runner_main, &n);
    returned = tw_test_tally_wait(&done, 1, 10.0);
    if (!returned)
        tw_lock_release(&l); /* let a wrongly waiting thread finish */
    tw_test_must_reach(&done, 1, 30.0, "tw_lock_run(NULL fn)");
    tw_test_join(t);
    assert_true(returned);
    assert_rc(n.rc, TW_EINVAL);
    assert_true(tw_lock_locked(&l)); /* still ours */
    assert_rc(tw_lock_release(&l), 0);
    assert_false(tw_lock_locked(&l));
    tw_test_tally_destroy(&done);
}

struct runner {
    tw_lock *lock;
    tw_test_tally *started, *ran;
    int rc;
};

static int runner_fn(void *arg)
{
    struct runner *r = arg;
    tw_test_tally_add(r->ran);
    return 5;
}

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    tw_test_tally_add(r->started);
    r->rc = tw_lock_run(r->lock, runner_fn, r);
    return NULL;
}

/* tw_lock_run waits for a held lock before calling fn. */
static void test_lock_run_waits_for_lock(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    tw_test_tally started, ran;
    struct runner r = {.lock = &l, .rc = -100};
    pthread_t t;
    (void)state;
    tw_test_tally_init(&started);
    tw_test_tally_init(&ran);
    r.started = &started;
    r.ran = &ran;
    assert_rc(tw_lock_acquire(&l), 0);
    t = tw_test_start(runner_main, &r);
    assert_true(tw_test_tally_wait(&started, 1, 30.0));
    wait_lock_contended(&l);
    assert_int_equal(tw_test_tally_get(&ran), 0);
    assert_rc(tw_lock_release(&l), 0);
    tw_test_must_reach(&ran, 1, 30.0, "tw_lock_run after release");
    tw_test_join(t);
    assert_int_equal(tw_test_tally_get(&ran), 1);
    assert_int_equal(r.rc, 5);
    assert_false(tw_lock_locked(&l));
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&ran);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_size_and_init),
        cmocka_unit_test(test_lock_acquire_release_cycle),
        cmocka_unit_test(test_lock_release_unlocked_eperm),
        cmocka_unit_test(test_lock_null),
        cmocka_unit_test(test_lock_timeout_nan),
        cmocka_unit_test(test_lock_timeout_zero_held_immediate),
        cmocka_unit_test(test_lock_timeout_not_early_self_held),
        cmocka_unit_test(test_lock_timeout_not_early_other_holder),
        cmocka_unit_test(test_lock_cross_thread_release),
        cmocka_unit_test(test_lock_blocked_waiter_proceeds),
        cmocka_unit_test(test_lock_timed_waiter_proceeds),
        cmocka_unit_test(test_lock_many_waiters_all_proceed),
        cmocka_unit_test(test_lock_mutual_exclusion),
        cmocka_unit_test(test_lock_run_result_and_release),
        cmocka_unit_test(test_lock_run_null_fn_free_lock),
        cmocka_unit_test(test_lock_run_null_fn_held_lock),
        cmocka_unit_test(test_lock_run_waits_for_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
