/* Unit tests for tw_sem (Semaphore) and tw_bsem (BoundedSemaphore), twine/sync.h. */
#include "harness.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bounded poll (two seconds at most) until n threads are inside the slow
 * path, per the documented `waiters` field. Only makes it likely that the
 * waiters are parked before a release; no verdict depends on it. */
static void wait_sem_waiters(tw_sem *s, uint32_t n)
{
    double until = tw_test_now() + 2.0;
    while (tw_test_now() < until) {
        if (__atomic_load_n(&s->waiters, __ATOMIC_RELAXED) >= n)
            return;
        sched_yield();
    }
}

static int run_calls;

static int count_call(void *arg)
{
    (void)arg;
    run_calls++;
    return 0;
}

/* ==== Semaphore ============================================================= */

static tw_sem static_sem = TW_SEM_INIT(2);

static void test_sem_size_and_init(void **state)
{
    tw_sem zeroed;
    tw_sem s;
    (void)state;
    assert_true(sizeof(tw_sem) <= 8);

    memset(&zeroed, 0, sizeof zeroed);
    assert_int_equal(tw_sem_value(&zeroed), 0);
    assert_rc(tw_sem_try_acquire(&zeroed), TW_EBUSY);
    assert_rc(tw_sem_release(&zeroed, 1), 0);
    assert_int_equal(tw_sem_value(&zeroed), 1);
    assert_rc(tw_sem_try_acquire(&zeroed), 0);

    assert_int_equal(tw_sem_value(&static_sem), 2);
    {
        tw_sem braced = TW_SEM_INIT(3);
        assert_int_equal(tw_sem_value(&braced), 3);
    }

    memset(&s, 0xff, sizeof s);
    assert_rc(tw_sem_init(&s, 5), 0);
    assert_int_equal(tw_sem_value(&s), 5);
    assert_rc(tw_sem_init(&s, 0), 0);
    assert_int_equal(tw_sem_value(&s), 0);
    assert_rc(tw_sem_try_acquire(&s), TW_EBUSY);
    assert_rc(tw_sem_init(&s, TW_SEM_VALUE_MAX), 0);
    assert_int_equal(tw_sem_value(&s), TW_SEM_VALUE_MAX);

    assert_rc(tw_sem_init(&s, TW_SEM_VALUE_MAX + 1u), TW_EINVAL);
    assert_rc(tw_sem_init(&s, UINT32_MAX), TW_EINVAL);
    assert_rc(tw_sem_init(NULL, 1), TW_EINVAL);
}

static void test_sem_acquire_decrements(void **state)
{
    tw_sem s = TW_SEM_INIT(4);
    (void)state;
    assert_rc(tw_sem_acquire(&s), 0);
    assert_int_equal(tw_sem_value(&s), 3);
    assert_rc(tw_sem_try_acquire(&s), 0);
    assert_int_equal(tw_sem_value(&s), 2);
    assert_rc(tw_sem_acquire_timeout(&s, 0.0), 0);
    assert_int_equal(tw_sem_value(&s), 1);
    assert_rc(tw_sem_acquire_timeout(&s, 5.0), 0);
    assert_int_equal(tw_sem_value(&s), 0);

    assert_rc(tw_sem_try_acquire(&s), TW_EBUSY);
    assert_int_equal(tw_sem_value(&s), 0);
    assert_rc(tw_sem_acquire_timeout(&s, 0.0), TW_ETIMEDOUT);
    assert_int_equal(tw_sem_value(&s), 0);

    assert_rc(tw_sem_release(&s, 3), 0);
    assert_rc(tw_sem_acquire_timeout(&s, -1.0), 0);
    assert_rc(tw_sem_acquire_timeout(&s, INFINITY), 0);
    assert_rc(tw_sem_acquire_timeout(&s, 1e300), 0);
    assert_int_equal(tw_sem_value(&s), 0);
}

static void test_sem_release_adds(void **state)
{
    tw_sem s = TW_SEM_INIT(0);
    (void)state;
    assert_rc(tw_sem_release(&s, 1), 0);
    assert_int_equal(tw_sem_value(&s), 1);
    assert_rc(tw_sem_release(&s, 5), 0);
    assert_int_equal(tw_sem_value(&s), 6);
    assert_rc(tw_sem_release(&s, 0), TW_EINVAL);
    assert_int_equal(tw_sem_value(&s), 6);
    for (int i = 0; i < 6; i++)
        assert_rc(tw_sem_try_acquire(&s), 0);
    assert_rc(tw_sem_try_acquire(&s), TW_EBUSY);
    assert_rc(tw_sem_release(&s, 0), TW_EINVAL);
    assert_int_equal(tw_sem_value(&s), 0);
}

static void test_sem_release_overflow(void **state)
{
    tw_sem s;
    (void)state;
    assert_rc(tw_sem_init(&s, TW_SEM_VALUE_MAX - 2), 0);
    assert_rc(tw_sem_release(&s, 3), TW_EOVERFLOW); /* would pass the max: nothing changes */
    assert_int_equal(tw_sem_value(&s), TW_SEM_VALUE_MAX - 2);
    assert_rc(tw_sem_release(&s, 2), 0);
    assert_int_equal(tw_sem_value(&s), TW_SEM_VALUE_MAX);
    assert_rc(tw_sem_release(&s, 1), TW_EOVERFLOW);
    assert_int_equal(tw_sem_value(&s), TW_SEM_VALUE_MAX);
    assert_rc(tw_sem_release(&s, UINT32_MAX), TW_EOVERFLOW);
    assert_int_equal(tw_sem_value(&s), TW_SEM_VALUE_MAX);
    assert_rc(tw_sem_try_acquire(&s), 0);
    assert_int_equal(tw_sem_value(&s), TW_SEM_VALUE_MAX - 1);

    assert_rc(tw_sem_init(&s, 0), 0);
    assert_rc(tw_sem_release(&s, UINT32_MAX), TW_EOVERFLOW);
    assert_int_equal(tw_sem_value(&s), 0);
    assert_rc(tw_sem_release(&s, TW_SEM_VALUE_MAX + 1u), TW_EOVERFLOW);
    assert_int_equal(tw_sem_value(&s), 0);
    assert_rc(tw_sem_release(&s, 1), 0);
    assert_rc(tw_sem_release(&s, TW_SEM_VALUE_MAX), TW_EOVERFLOW);
    assert_int_equal(tw_sem_value(&s), 1);
    assert_rc(tw_sem_release(&s, TW_SEM_VALUE_MAX - 1), 0);
    assert_int_equal(tw_sem_value(&s), TW_SEM_VALUE_MAX);
}

static void test_sem_timeout_not_early(void **state)
{
    static const double asked[] = {0.001, 0.02, 0.05};
    tw_sem s = TW_SEM_INIT(0);
    double t0, t1;
    (void)state;
    /* 100 attempts that must not block take far less than two seconds in all. */
    t0 = tw_test_now();
    for (int i = 0; i < 100; i++)
        assert_rc(tw_sem_acquire_timeout(&s, 0.0), TW_ETIMEDOUT);
    assert_true(tw_test_now() - t0 < 2.0);
    for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++) {
        t0 = tw_test_now();
        assert_rc(tw_sem_acquire_timeout(&s, asked[i]), TW_ETIMEDOUT);
        t1 = tw_test_now();
        tw_test_check_elapsed_at_least(t0, t1, asked[i]);
        assert_int_equal(tw_sem_value(&s), 0);
    }
    /* The timed-out waiters left nothing behind. */
    assert_rc(tw_sem_release(&s, 1), 0);
    assert_rc(tw_sem_try_acquire(&s), 0);
    assert_rc(tw_sem_try_acquire(&s), TW_EBUSY);
}

static void test_sem_timeout_nan(void **state)
{
    tw_sem s = TW_SEM_INIT(2);
    double t0;
    (void)state;
    assert_rc(tw_sem_acquire_timeout(&s, NAN), TW_EINVAL);
    assert_int_equal(tw_sem_value(&s), 2); /* no token taken */
    assert_rc(tw_sem_init(&s, 0), 0);
    t0 = tw_test_now();
    assert_rc(tw_sem_acquire_timeout(&s, NAN), TW_EINVAL);
    assert_true(tw_test_now() - t0 < 1.0);
    assert_int_equal(tw_sem_value(&s), 0);
}

static void test_sem_null(void **state)
{
    (void)state;
    run_calls = 0;
    assert_rc(tw_sem_init(NULL, 0), TW_EINVAL);
    assert_rc(tw_sem_acquire(NULL), TW_EINVAL);
    assert_rc(tw_sem_try_acquire(NULL), TW_EINVAL);
    assert_rc(tw_sem_acquire_timeout(NULL, 0.0), TW_EINVAL);
    assert_rc(tw_sem_acquire_timeout(NULL, 1.0), TW_EINVAL);
    assert_rc(tw_sem_acquire_timeout(NULL, NAN), TW_EINVAL);
    assert_rc(tw_sem_release(NULL, 1), TW_EINVAL);
    assert_rc(tw_sem_release(NULL, 0), TW_EINVAL);
    assert_rc(tw_sem_run(NULL, count_call, NULL), TW_EINVAL);
    assert_rc(tw_sem_run(NULL, NULL, NULL), TW_EINVAL);
    assert_int_equal(run_calls, 0);
    (void)tw_sem_value(NULL); /* must not crash */
}

/* ---- Semaphore with threads ------------------------------------------------ */

struct sem_waiter {
    tw_sem *sem;
    tw_bsem *bsem; /* when set, waits on this instead */
    int mode;      /* 0: acquire, 1: acquire_timeout(60), 2: acquire_timeout(-1) */
    tw_test_tally *started, *done;
    int rc;
};

static void *sem_waiter_main(void *arg)
{
    struct sem_waiter *w = arg;
    tw_test_tally_add(w->started);
    if (w->bsem) {
        w->rc = w->mode ? tw_bsem_acquire_timeout(w->bsem, w->mode == 1 ? 60.0 : -1.0)
                        : tw_bsem_acquire(w->bsem);
    } else {
        switch (w->mode) {
        case 0:
            w->rc = tw_sem_acquire(w->sem);
            break;
        case 1:
            w->rc = tw_sem_acquire_timeout(w->sem, 60.0);
            break;
        default:
            w->rc = tw_sem_acquire_timeout(w->sem, -1.0);
            break;
        }
    }
    tw_test_tally_add(w->done);
    return NULL;
}

#define K_WAITERS 4

/* k parked waiters, one release(k): every one of them proceeds. */
static void test_sem_release_wakes_k_waiters(void **state)
{
    tw_sem s = TW_SEM_INIT(0);
    tw_test_tally started, done;
    struct sem_waiter w[K_WAITERS];
    pthread_t t[K_WAITERS];
    bool all;
    (void)state;
    tw_test_tally_init(&started);
    tw_test_tally_init(&done);
    for (int i = 0; i < K_WAITERS; i++) {
        w[i] = (struct sem_waiter){.sem = &s, .mode = i % 3, .started = &started,
                                   .done = &done, .rc = -100};
        t[i] = tw_test_start(sem_waiter_main, &w[i]);
    }
    assert_true(tw_test_tally_wait(&started, K_WAITERS, 30.0));
    wait_sem_waiters(&s, K_WAITERS);
    assert_int_equal(tw_test_tally_get(&done), 0);

    assert_rc(tw_sem_release(&s, K_WAITERS), 0);
    all = tw_test_tally_wait(&done, K_WAITERS, 10.0);
    if (!all) /* free the stragglers one by one so that the joins below return */
        for (int i = 0; i < K_WAITERS; i++)
            tw_sem_release(&s, 1);
    tw_test_must_reach(&done, K_WAITERS, 30.0, "semaphore waiters");
    for (int i = 0; i < K_WAITERS; i++)
        tw_test_join(t[i]);
    assert_true(all);
    for (int i = 0; i < K_WAITERS; i++)
        assert_rc(w[i].rc, 0);
    assert_int_equal(tw_sem_value(&s), 0);
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&done);
}

/* release(n) lets exactly n of more waiters through; the others keep waiting. */
static void test_sem_release_n_wakes_up_to_n(void **state)
{
    tw_sem s = TW_SEM_INIT(0);
    tw_test_tally started, done;
    struct sem_waiter w[K_WAITERS];
    pthread_t t[K_WAITERS];
    bool two, all;
    (void)state;
    tw_test_tally_init(&started);
    tw_test_tally_init(&done);
    for (int i = 0; i < K_WAITERS; i++) {
        w[i] = (struct sem_waiter){.sem = &s, .mode = i % 3, .started = &started,
                                   .done = &done, .rc = -100};
        t[i] = tw_test_start(sem_waiter_main, &w[i]);
    }
    assert_true(tw_test_tally_wait(&started, K_WAITERS, 30.0));
    wait_sem_waiters(&s, K_WAITERS);

    assert_rc(tw_sem_release(&s, 2), 0);
    two = tw_test_tally_wait(&done, 2, 10.0);
    /* No token is left, so the other two cannot have passed. */
    assert_int_equal(tw_sem_value(&s), 0);
    if (two)
        assert_int_equal(tw_test_tally_get(&done), 2);

    assert_rc(tw_sem_release(&s, 1), 0);
    assert_rc(tw_sem_release(&s, 1), 0);
    all = tw_test_tally_wait(&done, K_WAITERS, 10.0);
    if (!all)
        for (int i = 0; i < K_WAITERS; i++)
            tw_sem_release(&s, 1);
    tw_test_must_reach(&done, K_WAITERS, 30.0, "semaphore waiters");
    for (int i = 0; i < K_WAITERS; i++)
        tw_test_join(t[i]);
    assert_true(two);
    assert_true(all);
    for (int i = 0; i < K_WAITERS; i++)
        assert_rc(w[i].rc, 0);
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&done);
}

struct sem_holder {
    tw_sem *sem;
    tw_test_tally *waiting;
    int rc;
    double elapsed;
};

static void *timed_waiter_main(void *arg)
{
    struct sem_holder *h = arg;
    double t0 = tw_test_now();
    tw_test_tally_add(h->waiting);
    h->rc = tw_sem_acquire_timeout(h->sem, 60.0);
    h->elapsed = tw_test_now() - t0;
    return NULL;
}

/* A timed waiter is woken by a release long before its timeout. */
static void test_sem_timed_waiter_woken(void **state)
{
    tw_sem s = TW_SEM_INIT(0);
    tw_test_tally waiting;
    struct sem_holder h = {.sem = &s, .rc = -100};
    pthread_t t;
    (void)state;
    tw_test_tally_init(&waiting);
    h.waiting = &waiting;
    t = tw_test_start(timed_waiter_main, &h);
    assert_true(tw_test_tally_wait(&waiting, 1, 30.0));
    wait_sem_waiters(&s, 1);
    assert_rc(tw_sem_release(&s, 1), 0);
    tw_test_join(t);
    assert_rc(h.rc, 0);
    assert_true(h.elapsed < 30.0);
    assert_int_equal(tw_sem_value(&s), 0);
    tw_test_tally_destroy(&waiting);
}

struct pc {
    tw_sem *sem;
    uint64_t n;
    int producer;
    int errors;
};

static void *pc_main(void *arg)
{
    struct pc *p = arg;
    for (uint64_t i = 0; i < p->n; i++) {
        int rc;
        if (p->producer)
            rc = tw_sem_release(p->sem, 1);
        else if (i % 2)
            rc = tw_sem_acquire(p->sem);
        else
            rc = tw_sem_acquire_timeout(p->sem, 60.0);
        if (rc != 0)
            p->errors++;
    }
    return NULL;
}

/* Every token released is acquired exactly once: no token lost, none invented. */
static void test_sem_producers_consumers(void **state)
{
    enum { N = 4 };
    tw_sem s = TW_SEM_INIT(0);
    struct pc p[N];
    uint64_t n = tw_test_scaled(20000, 500);
    (void)state;
    for (int i = 0; i < N; i++)
        p[i] = (struct pc){.sem = &s, .n = n, .producer = i % 2};
    tw_test_run_threads_bounded(N, pc_main, p, sizeof p[0], "pc_main");
    for (int i = 0; i < N; i++)
        assert_int_equal(p[i].errors, 0);
    assert_int_equal(tw_sem_value(&s), 0);
    assert_rc(tw_sem_try_acquire(&s), TW_EBUSY);
}

/* ---- tw_sem_run ---------------------------------------------------------------- */

struct sem_probe {
    tw_sem *sem;
    int result;
    int calls;
    uint32_t value_inside;
};

static int sem_probe_fn(void *arg)
{
    struct sem_probe *p = arg;
    p->calls++;
    p->value_inside = tw_sem_value(p->sem);
    return p->result;
}

static void test_sem_run(void **state)
{
    static const int results[] = {0, 3, TW_EOVERFLOW, -500, INT_MIN, INT_MAX};
    tw_sem s = TW_SEM_INIT(2);
    (void)state;
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        struct sem_probe p = {.sem = &s, .result = results[i]};
        assert_int_equal(tw_sem_run(&s, sem_probe_fn, &p), results[i]);
        assert_int_equal(p.calls, 1);
        assert_int_equal(p.value_inside, 1); /* fn held one token */
        assert_int_equal(tw_sem_value(&s), 2); /* given back however fn returned */
    }
    assert_rc(tw_sem_run(&s, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_sem_value(&s), 2);
}

struct sem_null_runner {
    tw_sem *sem;
    tw_bsem *bsem;
    tw_test_tally *done;
    int rc;
};

static void *sem_null_runner_main(void *arg)
{
    struct sem_null_runner *n = arg;
    n->rc = n->bsem ? tw_bsem_run(n->bsem, NULL, NULL) : tw_sem_run(n->sem, NULL, NULL);
    tw_test_tally_add(n->done);
    return NULL;
}

/* run(NULL fn) on an empty semaphore fails at once instead of waiting for a token. */
static void test_sem_run_null_fn_empty(void **state)
{
    tw_sem s = TW_SEM_INIT(0);
    tw_test_tally done;
    struct sem_null_runner n = {.sem = &s, .rc = -100};
    pthread_t t;
    bool returned;
    (void)state;
    tw_test_tally_init(&done);
    n.done = &done;
    t = tw_test_start(sem_null_runner_main, &n);
    returned = tw_test_tally_wait(&done, 1, 10.0);
    if (!returned)
        tw_sem_release(&s, 1);
    tw_test_must_reach(&done, 1, 30.0, "tw_sem_run(NULL fn)");
    tw_test_join(t);
    assert_true(returned);
    assert_rc(n.rc, TW_EINVAL);
    assert_int_equal(tw_sem_value(&s), 0);
    tw_test_tally_destroy(&done);
}

struct sem_runner {
    tw_sem *sem;
    tw_test_tally *started, *ran;
    int rc;
};

static int sem_runner_fn(void *arg)
{
    struct sem_runner *r = arg;
    tw_test_tally_add(r->ran);
    return 17;
}

static void *sem_runner_main(void *arg)
{
    struct sem_runner *r = arg;
    tw_test_tally_add(r->started);
    r->rc = tw_sem_run(r->sem, sem_runner_fn, r);
    return NULL;
}

/* tw_sem_run waits for a token before calling fn. */
static void test_sem_run_waits_for_token(void **state)
{
    tw_sem s = TW_SEM_INIT(0);
    tw_test_tally started, ran;
    struct sem_runner r = {.sem = &s, .rc = -100};
    pthread_t t;
    (void)state;
    tw_test_tally_init(&started);
    tw_test_tally_init(&ran);
    r.started = &started;
    r.ran = &ran;
    t = tw_test_start(sem_runner_main, &r);
    assert_true(tw_test_tally_wait(&started, 1, 30.0));
    wait_sem_waiters(&s, 1);
    assert_int_equal(tw_test_tally_get(&ran), 0);
    assert_rc(tw_sem_release(&s, 1), 0);
    tw_test_must_reach(&ran, 1, 30.0, "tw_sem_run after release");
    tw_test_join(t);
    assert_int_equal(tw_test_tally_get(&ran), 1);
    assert_int_equal(r.rc, 17);
    assert_int_equal(tw_sem_value(&s), 1);
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&ran);
}

/* ==== BoundedSemaphore ======================================================= */

static tw_bsem static_bsem = TW_BSEM_INIT(3);

static void test_bsem_init_and_limit(void **state)
{
    tw_bsem zeroed;
    tw_bsem b;
    (void)state;
    assert_int_equal(tw_bsem_value(&static_bsem), 3);
    assert_int_equal(tw_bsem_limit(&static_bsem), 3);
    {
        tw_bsem braced = TW_BSEM_INIT(7);
        assert_int_equal(tw_bsem_value(&braced), 7);
        assert_int_equal(tw_bsem_limit(&braced), 7);
    }

    memset(&zeroed, 0, sizeof zeroed);
    assert_int_equal(tw_bsem_value(&zeroed), 0);
    assert_int_equal(tw_bsem_limit(&zeroed), 0);
    assert_rc(tw_bsem_try_acquire(&zeroed), TW_EBUSY);
    assert_rc(tw_bsem_release(&zeroed, 1), TW_EOVERFLOW); /* limit 0 */
    assert_int_equal(tw_bsem_value(&zeroed), 0);

    memset(&b, 0xff, sizeof b);
    assert_rc(tw_bsem_init(&b, 5), 0);
    assert_int_equal(tw_bsem_value(&b), 5);
    assert_int_equal(tw_bsem_limit(&b), 5);
    assert_rc(tw_bsem_init(&b, TW_SEM_VALUE_MAX), 0);
    assert_int_equal(tw_bsem_value(&b), TW_SEM_VALUE_MAX);
    assert_int_equal(tw_bsem_limit(&b), TW_SEM_VALUE_MAX);
    assert_rc(tw_bsem_release(&b, 1), TW_EOVERFLOW);
    assert_int_equal(tw_bsem_value(&b), TW_SEM_VALUE_MAX);
    assert_rc(tw_bsem_init(&b, 1), 0);
    assert_int_equal(tw_bsem_limit(&b), 1);

    assert_rc(tw_bsem_init(&b, TW_SEM_VALUE_MAX + 1u), TW_EINVAL);
    assert_rc(tw_bsem_init(&b, UINT32_MAX), TW_EINVAL);
    assert_rc(tw_bsem_init(NULL, 1), TW_EINVAL);
}

static void test_bsem_overflow(void **state)
{
    tw_bsem b = TW_BSEM_INIT(3);
    (void)state;
    assert_rc(tw_bsem_release(&b, 1), TW_EOVERFLOW); /* already at the initial value */
    assert_int_equal(tw_bsem_value(&b), 3);
    assert_int_equal(tw_bsem_limit(&b), 3);

    assert_rc(tw_bsem_acquire(&b), 0);
    assert_rc(tw_bsem_acquire(&b), 0);
    assert_int_equal(tw_bsem_value(&b), 1);
    /* Partial overshoot: 1 + 3 > 3, so nothing at all is added. */
    assert_rc(tw_bsem_release(&b, 3), TW_EOVERFLOW);
    assert_int_equal(tw_bsem_value(&b), 1);
    assert_rc(tw_bsem_release(&b, UINT32_MAX), TW_EOVERFLOW);
    assert_int_equal(tw_bsem_value(&b), 1);
    assert_rc(tw_bsem_release(&b, 0), TW_EINVAL);
    assert_int_equal(tw_bsem_value(&b), 1);

    assert_rc(tw_bsem_release(&b, 2), 0); /* exactly back to the limit */
    assert_int_equal(tw_bsem_value(&b), 3);
    assert_rc(tw_bsem_release(&b, 1), TW_EOVERFLOW);
    assert_int_equal(tw_bsem_value(&b), 3);
    assert_int_equal(tw_bsem_limit(&b), 3);
}

static void test_bsem_cycle(void **state)
{
    tw_bsem b;
    double t0, t1;
    (void)state;
    assert_rc(tw_bsem_init(&b, 2), 0);
    assert_rc(tw_bsem_acquire(&b), 0);
    assert_int_equal(tw_bsem_value(&b), 1);
    assert_rc(tw_bsem_try_acquire(&b), 0);
    assert_int_equal(tw_bsem_value(&b), 0);
    assert_rc(tw_bsem_try_acquire(&b), TW_EBUSY);
    assert_rc(tw_bsem_acquire_timeout(&b, 0.0), TW_ETIMEDOUT);
    t0 = tw_test_now();
    assert_rc(tw_bsem_acquire_timeout(&b, 0.05), TW_ETIMEDOUT);
    t1 = tw_test_now();
    tw_test_check_elapsed_at_least(t0, t1, 0.05);
    assert_rc(tw_bsem_acquire_timeout(&b, NAN), TW_EINVAL);
    assert_int_equal(tw_bsem_value(&b), 0);

    assert_rc(tw_bsem_release(&b, 1), 0);
    assert_int_equal(tw_bsem_value(&b), 1);
    assert_rc(tw_bsem_acquire_timeout(&b, NAN), TW_EINVAL);
    assert_int_equal(tw_bsem_value(&b), 1); /* NaN took nothing */
    assert_rc(tw_bsem_acquire_timeout(&b, 0.0), 0);
    assert_rc(tw_bsem_release(&b, 2), 0);
    assert_rc(tw_bsem_acquire_timeout(&b, -1.0), 0);
    assert_rc(tw_bsem_acquire_timeout(&b, 5.0), 0);
    assert_int_equal(tw_bsem_value(&b), 0);
    assert_rc(tw_bsem_release(&b, 1), 0);
    assert_rc(tw_bsem_release(&b, 1), 0);
    assert_rc(tw_bsem_release(&b, 1), TW_EOVERFLOW);
    assert_int_equal(tw_bsem_value(&b), 2);
    assert_int_equal(tw_bsem_limit(&b), 2);
}

static void test_bsem_null(void **state)
{
    (void)state;
    run_calls = 0;
    assert_rc(tw_bsem_init(NULL, 0), TW_EINVAL);
    assert_rc(tw_bsem_acquire(NULL), TW_EINVAL);
    assert_rc(tw_bsem_try_acquire(NULL), TW_EINVAL);
    assert_rc(tw_bsem_acquire_timeout(NULL, 0.0), TW_EINVAL);
    assert_rc(tw_bsem_acquire_timeout(NULL, 1.0), TW_EINVAL);
    assert_rc(tw_bsem_acquire_timeout(NULL, NAN), TW_EINVAL);
    assert_rc(tw_bsem_release(NULL, 1), TW_EINVAL);
    assert_rc(tw_bsem_run(NULL, count_call, NULL), TW_EINVAL);
    assert_rc(tw_bsem_run(NULL, NULL, NULL), TW_EINVAL);
    assert_int_equal(run_calls, 0);
    (void)tw_bsem_value(NULL); /* must not crash */
    (void)tw_bsem_limit(NULL);
}

/* A waiter on an exhausted bounded semaphore proceeds on release. */
static void test_bsem_blocked_waiter_proceeds(void **state)
{
    tw_bsem b = TW_BSEM_INIT(1);
    tw_test_tally started, done;
    struct sem_waiter w[2];
    pthread_t t[2];
    bool all;
    (void)state;
    tw_test_tally_init(&started);
    tw_test_tally_init(&done);
    assert_rc(tw_bsem_acquire(&b), 0);
    for (int i = 0; i < 2; i++) {
        w[i] = (struct sem_waiter){.bsem = &b, .mode = i, .started = &started, .done = &done,
                                   .rc = -100};
        t[i] = tw_test_start(sem_waiter_main, &w[i]);
    }
    assert_true(tw_test_tally_wait(&started, 2, 30.0));
    wait_sem_waiters(&b.sem, 2);
    assert_int_equal(tw_test_tally_get(&done), 0);

    assert_rc(tw_bsem_release(&b, 1), 0);
    tw_test_must_reach(&done, 1, 30.0, "bounded semaphore waiter after release");
    assert_int_equal(tw_bsem_value(&b), 0);
    /* The first waiter to pass holds the only token; hand it back. */
    assert_rc(tw_bsem_release(&b, 1), 0);
    all = tw_test_tally_wait(&done, 2, 30.0);
    if (!all)
        tw_sem_release(&b.sem, 1);
    tw_test_must_reach(&done, 2, 30.0, "bounded semaphore waiters");
    for (int i = 0; i < 2; i++)
        tw_test_join(t[i]);
    assert_true(all);
    assert_rc(w[0].rc, 0);
    assert_rc(w[1].rc, 0);
    assert_int_equal(tw_bsem_value(&b), 0);
    assert_rc(tw_bsem_release(&b, 1), 0);
    assert_rc(tw_bsem_release(&b, 1), TW_EOVERFLOW);
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&done);
}

struct bsem_user {
    tw_bsem *b;
    int *inside;
    uint64_t n;
    int errors;
    int too_many;
};

static void *bsem_user_main(void *arg)
{
    struct bsem_user *u = arg;
    for (uint64_t i = 0; i < u->n; i++) {
        int rc = (i % 2) ? tw_bsem_acquire(u->b) : tw_bsem_acquire_timeout(u->b, 60.0);
        if (rc != 0) {
            u->errors++;
            continue;
        }
        if (__atomic_add_fetch(u->inside, 1, __ATOMIC_RELAXED) > 2)
            u->too_many++;
        __atomic_sub_fetch(u->inside, 1, __ATOMIC_RELAXED);
        if (tw_bsem_release(u->b, 1) != 0)
            u->errors++;
    }
    return NULL;
}

/* Under contention at most `limit` threads are inside, and no balanced
 * release is ever refused as an overflow. */
static void test_bsem_concurrent(void **state)
{
    enum { N = 4 };
    tw_bsem b = TW_BSEM_INIT(2);
    int inside = 0;
    struct bsem_user u[N];
    uint64_t n = tw_test_scaled(10000, 500);
    (void)state;
    for (int i = 0; i < N; i++)
        u[i] = (struct bsem_user){.b = &b, .inside = &inside, .n = n};
    tw_test_run_threads_bounded(N, bsem_user_main, u, sizeof u[0], "bsem_user_main");
    for (int i = 0; i < N; i++) {
        assert_int_equal(u[i].errors, 0);
        assert_int_equal(u[i].too_many, 0);
    }
    assert_int_equal(tw_bsem_value(&b), 2);
    assert_int_equal(tw_bsem_limit(&b), 2);
}

struct bsem_probe {
    tw_bsem *b;
    int result;
    int calls;
    uint32_t value_inside;
};

static int bsem_probe_fn(void *arg)
{
    struct bsem_probe *p = arg;
    p->calls++;
    p->value_inside = tw_bsem_value(p->b);
    return p->result;
}

static void test_bsem_run(void **state)
{
    static const int results[] = {0, 8, TW_EPERM, -9999, INT_MIN, INT_MAX};
    tw_bsem b = TW_BSEM_INIT(1);
    (void)state;
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        struct bsem_probe p = {.b = &b, .result = results[i]};
        assert_int_equal(tw_bsem_run(&b, bsem_probe_fn, &p), results[i]);
        assert_int_equal(p.calls, 1);
        assert_int_equal(p.value_inside, 0);
        assert_int_equal(tw_bsem_value(&b), 1);
    }
    assert_rc(tw_bsem_run(&b, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_bsem_value(&b), 1);
    assert_rc(tw_bsem_release(&b, 1), TW_EOVERFLOW); /* run gave back exactly one */
}

static void test_bsem_run_null_fn_empty(void **state)
{
    tw_bsem b = TW_BSEM_INIT(1);
    tw_test_tally done;
    struct sem_null_runner n = {.bsem = &b, .rc = -100};
    pthread_t t;
    bool returned;
    (void)state;
    tw_test_tally_init(&done);
    n.done = &done;
    assert_rc(tw_bsem_acquire(&b), 0);
    t = tw_test_start(sem_null_runner_main, &n);
    returned = tw_test_tally_wait(&done, 1, 10.0);
    if (!returned)
        tw_bsem_release(&b, 1);
    tw_test_must_reach(&done, 1, 30.0, "tw_bsem_run(NULL fn)");
    tw_test_join(t);
    assert_true(returned);
    assert_rc(n.rc, TW_EINVAL);
    assert_int_equal(tw_bsem_value(&b), 0);
    assert_rc(tw_bsem_release(&b, 1), 0);
    tw_test_tally_destroy(&done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sem_size_and_init),
        cmocka_unit_test(test_sem_acquire_decrements),
        cmocka_unit_test(test_sem_release_adds),
        cmocka_unit_test(test_sem_release_overflow),
        cmocka_unit_test(test_sem_timeout_not_early),
        cmocka_unit_test(test_sem_timeout_nan),
        cmocka_unit_test(test_sem_null),
        cmocka_unit_test(test_sem_release_wakes_k_waiters),
        cmocka_unit_test(test_sem_release_n_wakes_up_to_n),
        cmocka_unit_test(test_sem_timed_waiter_woken),
        cmocka_unit_test(test_sem_producers_consumers),
        cmocka_unit_test(test_sem_run),
        cmocka_unit_test(test_sem_run_null_fn_empty),
        cmocka_unit_test(test_sem_run_waits_for_token),
        cmocka_unit_test(test_bsem_init_and_limit),
        cmocka_unit_test(test_bsem_overflow),
        cmocka_unit_test(test_bsem_cycle),
        cmocka_unit_test(test_bsem_null),
        cmocka_unit_test(test_bsem_blocked_waiter_proceeds),
        cmocka_unit_test(test_bsem_concurrent),
        cmocka_unit_test(test_bsem_run),
        cmocka_unit_test(test_bsem_run_null_fn_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
