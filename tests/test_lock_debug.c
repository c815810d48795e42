/*
 * Lock in code compiled with TW_DEBUG=1: a thread that waits on a Lock it
 * acquired itself is reported as a probable self-deadlock (TW_DIAG_WARNING,
 * TW_EDEADLK) and goes on waiting, since another thread may release it; any
 * other wait is not reported.
 *
 * This file defines TW_DEBUG itself, so its Lock calls take the tracking
 * paths whatever the library's build. The report delay is lowered with
 * tw__lock_set_self_wait_report: to 0 where a test must see that a wait is
 * not reported (a wrong report would come at once), to 1 ms where the wait
 * must be reported and then released by another thread.
 */
#define TW_DEBUG 1
#include "harness.h"

#include <sched.h>
#include <string.h>

#include "sync/lock.h"

#define LIMIT 30.0 /* seconds: a condition that never comes fails the test */

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_QUIET);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(TW__LOCK_SELF_WAIT_REPORT);
    return tw_test_twine_teardown(TW_TEST_DIAGS_ANY); /* the tests count their own */
}

/* Spins (yielding) until *p == want or LIMIT passes; no sleeping. */
static void await_u32(const uint32_t *p, uint32_t want, const char *what)
{
    double t0 = tw_test_now();
    while (__atomic_load_n(p, __ATOMIC_ACQUIRE) != want) {
        if (tw_test_now() - t0 > LIMIT)
            fail_msg("%s never happened", what);
        sched_yield();
    }
}

static void await_warnings(int n)
{
    double t0 = tw_test_now();
    while (tw_test_diag_count_kind(TW_DIAG_WARNING) < n) {
        if (tw_test_now() - t0 > LIMIT)
            fail_msg("no self-deadlock report after %.0f s", LIMIT);
        sched_yield();
    }
}

static void expect_self_wait_report(const char *function)
{
    const tw_test_diag *d = tw_test_diag_find(TW_DIAG_WARNING);
    assert_non_null(d);
    assert_int_equal(d->code, TW_EDEADLK);
    assert_string_equal(d->function, function);
    assert_non_null(strstr(d->message, "probable self-deadlock"));
}

/* ---- a thread waiting for itself ------------------------------------------ */

typedef struct self_waiter {
    tw_lock lock;
    bool via_timeout;    /* the second acquire: tw_lock_acquire_timeout(-1), not tw_lock_acquire */
    uint32_t first_held; /* atomic */
    int second_rc;
    int release_rc;
} self_waiter;

static void *acquire_twice(void *arg)
{
    self_waiter *s = arg;
    assert_int_equal(tw_lock_acquire(&s->lock), 0);
    __atomic_store_n(&s->first_held, 1, __ATOMIC_RELEASE);
    /* waits for itself... */
    s->second_rc = s->via_timeout ? tw_lock_acquire_timeout(&s->lock, -1)
                                  : tw_lock_acquire(&s->lock);
    s->release_rc = tw_lock_release(&s->lock);
    return NULL;
}

/* Reported once, under the function called, and the wait goes on until
 * another thread releases the Lock, which a Lock allows: then the second
 * acquire succeeds. A negative timeout waits forever like an acquire. */
static void check_self_wait_released_by_another(bool via_timeout)
{
    tw__lock_set_self_wait_report(1000000);
    self_waiter s = {TW_LOCK_INIT, via_timeout, 0, -1, -1};
    pthread_t t = tw_test_start(acquire_twice, &s);
    await_u32(&s.first_held, 1, "the first acquire");
    await_warnings(1);
    expect_self_wait_report(via_timeout ? "tw_lock_acquire_timeout" : "tw_lock_acquire");
    assert_int_equal(tw_lock_release(&s.lock), 0); /* from this thread: allowed */
    tw_test_join(t);
    assert_int_equal(s.second_rc, 0);
    assert_int_equal(s.release_rc, 0);
    assert_false(tw_lock_locked(&s.lock));
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 1);
}

static void test_self_wait_reported_then_released_by_another(void **state)
{
    (void)state;
    check_self_wait_released_by_another(false);
}

static void test_self_wait_forever_with_timeout_call(void **state)
{
    (void)state;
    check_self_wait_released_by_another(true);
}

/* acquire_timeout on a Lock the thread holds: reported, then times out. */
static void test_self_wait_with_timeout(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(0);
    tw_lock l = TW_LOCK_INIT;
    assert_int_equal(tw_lock_acquire(&l), 0);
    assert_int_equal(tw_lock_acquire_timeout(&l, 0.001), TW_ETIMEDOUT);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 1);
    expect_self_wait_report("tw_lock_acquire_timeout");
    /* try_acquire never waits, so it is never reported. */
    assert_int_equal(tw_lock_try_acquire(&l), TW_EBUSY);
    /* Nor does a timeout of 0. */
    assert_int_equal(tw_lock_acquire_timeout(&l, 0), TW_ETIMEDOUT);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 1);
    assert_int_equal(tw_lock_release(&l), 0);
}

/* With the real delay (a second), a shorter timeout ends the wait before
 * any report. */
static void test_timeout_before_the_report(void **state)
{
    (void)state;
    tw_lock l = TW_LOCK_INIT;
    assert_int_equal(tw_lock_acquire(&l), 0);
    assert_int_equal(tw_lock_acquire_timeout(&l, 0.01), TW_ETIMEDOUT);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 0);
    assert_int_equal(tw_lock_release(&l), 0);
}

/* ---- waits that are not for oneself ---------------------------------------- */

typedef struct holder {
    tw_lock *lock;
    uint32_t held; /* atomic */
    int rc;
} holder;

/* Takes the Lock, and releases it once a waiter has parked behind it (the
 * word is 2 only then), so the waiter's wait is a real one. */
static void *hold_until_waited_for(void *arg)
{
    holder *h = arg;
    assert_int_equal(tw_lock_acquire(h->lock), 0);
    __atomic_store_n(&h->held, 1, __ATOMIC_RELEASE);
    await_u32(&h->lock->word, 2, "a waiter parking");
    h->rc = tw_lock_release(h->lock);
    return NULL;
}

/* Waits (parked) for a Lock another thread holds; no report may come, even
 * with the report due at once. */
static void wait_for_holder(tw_lock *l)
{
    holder h = {l, 0, -1};
    pthread_t t = tw_test_start(hold_until_waited_for, &h);
    await_u32(&h.held, 1, "the holder's acquire");
    assert_int_equal(tw_lock_acquire(l), 0);
    tw_test_join(t);
    assert_int_equal(h.rc, 0);
    assert_int_equal(tw_lock_release(l), 0);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 0);
}

static void test_wait_for_another_thread_not_reported(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(0);
    tw_lock l = TW_LOCK_INIT;
    wait_for_holder(&l);
}

typedef struct other_release {
    tw_lock *lock;
    int rc;
} other_release;

static void *release_it(void *arg)
{
    other_release *o = arg;
    o->rc = tw_lock_release(o->lock);
    return NULL;
}

/* Acquired here, released by another thread, acquired here again: held once
 * more, without a report. Released here, it is forgotten: a later wait for
 * it while another thread holds it is not reported. */
static void test_released_by_another_then_again(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(0);
    tw_lock l = TW_LOCK_INIT;
    other_release o = {&l, -1};
    assert_int_equal(tw_lock_acquire(&l), 0);
    tw_test_join(tw_test_start(release_it, &o));
    assert_int_equal(o.rc, 0);
    assert_int_equal(tw_lock_acquire(&l), 0);
    assert_int_equal(tw_lock_release(&l), 0);
    wait_for_holder(&l);
}

/* An RLock's own Lock is never remembered: taken and released through any
 * path, a later wait for the RLock held by another thread is not reported. */
typedef struct rholder {
    tw_rlock *r;
    uint32_t held; /* atomic */
} rholder;

static void *rhold_until_waited_for(void *arg)
{
    rholder *h = arg;
    assert_int_equal(tw_rlock_acquire(h->r), 0);
    __atomic_store_n(&h->held, 1, __ATOMIC_RELEASE);
    await_u32(&h->r->lock.word, 2, "a waiter parking");
    assert_int_equal(tw_rlock_release(h->r), 0);
    return NULL;
}

static void test_rlock_never_reported(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(0);
    tw_rlock r = TW_RLOCK_INIT;
    assert_int_equal(tw_rlock_try_acquire(&r), 0);
    assert_int_equal(tw_rlock_acquire_timeout(&r, 1.0), 0); /* nested */
    assert_int_equal(tw_rlock_release(&r), 0);
    assert_int_equal(tw_rlock_release(&r), 0);
    rholder h = {&r, 0};
    pthread_t t = tw_test_start(rhold_until_waited_for, &h);
    await_u32(&h.held, 1, "the holder's acquire");
    assert_int_equal(tw_rlock_acquire_timeout(&r, LIMIT), 0);
    tw_test_join(t);
    assert_int_equal(tw_rlock_release(&r), 0);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 0);
}

/* ---- a Condition gives the Lock back tracked -------------------------------- */

typedef struct cond_case {
    tw_lock lock;
    tw_cond cond;
    int ready;          /* under lock */
    uint32_t waiting;   /* atomic: the waiter is in its wait loop */
    int self_rc;
} cond_case;

static void *wait_then_self_acquire(void *arg)
{
    cond_case *c = arg;
    assert_int_equal(tw_lock_acquire(&c->lock), 0);
    __atomic_store_n(&c->waiting, 1, __ATOMIC_RELEASE);
    while (!c->ready)
        assert_int_equal(tw_cond_wait(&c->cond), 0);
    /* Holding the lock again: waiting on it is waiting for oneself. */
    c->self_rc = tw_lock_acquire_timeout(&c->lock, 0.001);
    assert_int_equal(tw_lock_release(&c->lock), 0);
    return NULL;
}

/* A Condition wait gives the Lock up and takes it back; the thread holds it
 * again afterwards, and the tracking says so. */
static void test_lock_held_again_after_condition_wait(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(0);
    cond_case c;
    memset(&c, 0, sizeof c);
    tw_cond_init_lock(&c.cond, &c.lock);
    pthread_t t = tw_test_start(wait_then_self_acquire, &c);
    await_u32(&c.waiting, 1, "the waiter's acquire");
    assert_int_equal(tw_lock_acquire(&c.lock), 0); /* the waiter is in its wait now */
    c.ready = 1;
    assert_int_equal(tw_cond_notify(&c.cond, 1), 0);
    assert_int_equal(tw_lock_release(&c.lock), 0);
    tw_test_join(t);
    assert_int_equal(c.self_rc, TW_ETIMEDOUT);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 1);
    expect_self_wait_report("tw_lock_acquire_timeout");
}

/* ---- many Locks ------------------------------------------------------------- */

/* Reports counted with this code. */
static int count_code(int code)
{
    int n = 0;
    for (int i = 0; i < TW_TEST_DIAG_CAP; i++) {
        const tw_test_diag *d = tw_test_diag_at(i);
        if (d && d->code == code)
            n++;
    }
    return n;
}

/* A thread holding more Locks than it can remember: every call still
 * works; the first ones are remembered (their self-wait is reported), the
 * others are not (never reported, rather than falsely), and the full stack
 * is reported once. The Locks have no init call (zeroed), so each is a class
 * of its own: nesting them is no misuse. */
static void test_many_locks_held(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(0);
    enum { N = 100 };
    tw_lock locks[N];
    memset(locks, 0, sizeof locks);
    for (int i = 0; i < N; i++)
        assert_int_equal(tw_lock_acquire(&locks[i]), 0);
    assert_int_equal(count_code(TW_EFULL), 1);
    assert_int_equal(tw_lock_acquire_timeout(&locks[0], 0.001), TW_ETIMEDOUT);
    assert_int_equal(count_code(TW_EDEADLK), 1);
    /* The last one is past what a thread remembers: not reported. */
    assert_int_equal(tw_lock_acquire_timeout(&locks[N - 1], 0.001), TW_ETIMEDOUT);
    assert_int_equal(count_code(TW_EDEADLK), 1);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 2);
    for (int i = N - 1; i >= 0; i--)
        assert_int_equal(tw_lock_release(&locks[i]), 0);
    /* All forgotten: a Lock released twice is TW_EPERM, as ever. */
    assert_int_equal(tw_lock_release(&locks[0]), TW_EPERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_self_wait_reported_then_released_by_another, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_self_wait_with_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_before_the_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_wait_forever_with_timeout_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rlock_never_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_for_another_thread_not_reported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_released_by_another_then_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_held_again_after_condition_wait, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_locks_held, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
