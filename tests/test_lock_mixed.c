/*
 * Lock tracking across builds: this file is compiled WITHOUT TW_DEBUG, so
 * its inline Lock calls do not track, while the library may be built with
 * -DTW_DEBUG=ON (the Debug, TSan and ASan builds of the suite are). The
 * library's functions that take or give back a Lock for their caller must
 * then leave nothing remembered that this code's untracked release cannot
 * forget, or a later wait for the Lock through a tracking path (the
 * library's tw_lock_run and TW_WITH are such paths in a TW_DEBUG library),
 * while another thread holds it, would be reported as a probable
 * self-deadlock. Each test takes a Lock through such a function, releases it
 * inline, then waits for it that way, with the report due at once: there
 * must be no report. (Against
 * a library built without TW_DEBUG nothing is tracked and they pass as
 * they should.)
 */
#include "harness.h"

#include <sched.h>
#include <string.h>

#include "sync/lock.h"

#define LIMIT 30.0

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    tw__lock_set_self_wait_report(0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tw__lock_set_self_wait_report(TW__LOCK_SELF_WAIT_REPORT);
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE); /* any report fails */
}

static void await_word(const uint32_t *p, uint32_t want)
{
    double t0 = tw_test_now();
    while (__atomic_load_n(p, __ATOMIC_ACQUIRE) != want) {
        if (tw_test_now() - t0 > LIMIT)
            fail_msg("the lock word never became %u", want);
        sched_yield();
    }
}

typedef struct holder {
    tw_lock *lock; /* the word a waiter parks on */
    tw_rlock *rlock; /* or NULL: take lock */
    uint32_t held;   /* atomic */
} holder;

/* Holds the (R)Lock until a waiter has parked behind it. */
static void *hold_until_waited_for(void *arg)
{
    holder *h = arg;
    if (h->rlock)
        assert_int_equal(tw_rlock_acquire(h->rlock), 0);
    else
        assert_int_equal(tw_lock_acquire(h->lock), 0);
    __atomic_store_n(&h->held, 1, __ATOMIC_RELEASE);
    await_word(&h->lock->word, 2);
    if (h->rlock)
        assert_int_equal(tw_rlock_release(h->rlock), 0);
    else
        assert_int_equal(tw_lock_release(h->lock), 0);
    return NULL;
}

static pthread_t start_holder(holder *h)
{
    pthread_t t = tw_test_start(hold_until_waited_for, h);
    double t0 = tw_test_now();
    while (!__atomic_load_n(&h->held, __ATOMIC_ACQUIRE)) {
        if (tw_test_now() - t0 > LIMIT)
            fail_msg("the holder never took the lock");
        sched_yield();
    }
    return t;
}

/* RLock taken by the library (try, timeout), released inline, many times:
 * nothing may be left remembered. Seen through the tracking entry points,
 * called here as code compiled with TW_DEBUG=1 would: a self-wait on a fresh
 * Lock must still be reported, which it would not be were the thread's
 * table full of stale entries. (Against a library without TW_DEBUG too: the
 * tracking entry points exist in every build.) */
static void test_rlock_library_acquire_inline_release(void **state)
{
    (void)state;
    tw_rlock r[40];
    for (int i = 0; i < 40; i++) {
        tw_rlock_init(&r[i]);
        assert_int_equal(tw_rlock_try_acquire(&r[i]), 0);
        assert_int_equal(tw_rlock_release(&r[i]), 0);
        assert_int_equal(tw_rlock_acquire_timeout(&r[i], 1.0), 0);
        assert_int_equal(tw_rlock_release(&r[i]), 0);
    }
    tw_lock l = TW_LOCK_INIT;
    assert_int_equal(tw__lock_try_acquire_tracked(&l, __FILE__, __LINE__), 0);
    assert_int_equal(tw__lock_acquire_timeout_tracked(&l, 0.001, __FILE__, __LINE__), TW_ETIMEDOUT);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_WARNING), 1);
    assert_int_equal(tw__lock_release_tracked(&l), 0);
    tw_test_diag_reset(); /* the one report expected */
    /* And a wait for an RLock another thread holds is not reported. */
    holder h = {&r[0].lock, &r[0], 0};
    pthread_t t = start_holder(&h);
    assert_int_equal(tw_rlock_acquire_timeout(&r[0], LIMIT), 0);
    tw_test_join(t);
    assert_int_equal(tw_rlock_release(&r[0]), 0);
}

/* tw_lock_run and TW_WITH take the Lock through the library's own calls,
 * which track in a TW_DEBUG library: the waits below go through them. */
static int nothing(void *arg)
{
    (void)arg;
    return 0;
}

/* A Condition wait gives the Lock back to this thread; released inline; then
 * waited for through the library (tw_cond_acquire, the exported timeout). */
static void test_condition_wait_then_inline_release(void **state)
{
    (void)state;
    tw_lock l = TW_LOCK_INIT;
    tw_cond c;
    tw_cond_init_lock(&c, &l);
    assert_int_equal(tw_lock_acquire(&l), 0);
    assert_int_equal(tw_cond_wait_timeout(&c, 0.001), TW_ETIMEDOUT);
    assert_int_equal(tw_lock_release(&l), 0);
    holder h = {&l, NULL, 0};
    pthread_t t = start_holder(&h);
    assert_int_equal(tw_lock_run(&l, nothing, NULL), 0);
    tw_test_join(t);
}

/* tw_cond_acquire / try / timeout and the exported timeout take the Lock,
 * an inline release gives it back. */
static void test_library_takes_inline_releases(void **state)
{
    (void)state;
    tw_lock l = TW_LOCK_INIT;
    tw_cond c;
    tw_cond_init_lock(&c, &l);
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_int_equal(tw_lock_release(&l), 0);
    assert_int_equal(tw_cond_try_acquire(&c), 0);
    assert_int_equal(tw_lock_release(&l), 0);
    assert_int_equal(tw_cond_acquire_timeout(&c, 1.0), 0);
    assert_int_equal(tw_lock_release(&l), 0);
    assert_int_equal(tw_lock_acquire_timeout(&l, 1.0), 0);
    assert_int_equal(tw_lock_release(&l), 0);
    assert_int_equal(tw_lock_run(&l, nothing, NULL), 0);
    TW_WITH(&l)
    {
        assert_true(tw_lock_locked(&l));
    }
    holder h = {&l, NULL, 0};
    pthread_t t = start_holder(&h);
    TW_WITH(&l)
    {
        assert_true(tw_lock_locked(&l));
    }
    tw_test_join(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rlock_library_acquire_inline_release, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_condition_wait_then_inline_release, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_library_takes_inline_releases, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
