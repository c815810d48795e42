/*
 * Unit tests for what coroutines await besides a plain Deferred
 * (twine/async.h): TW_AWAIT_WITH over a DeferredLock or DeferredSemaphore
 * (released on every way out of the block, cancelled while queued), sleeping
 * on a clock, several Deferreds together (all, any), a producer's return
 * code, and, on a real reactor, thread work and the reactor's clock.
 */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IV(n) tw_result_value((void *)(intptr_t)(n), NULL)

static intptr_t ival(tw_result r)
{
    return (intptr_t)r.ptr;
}

static const char *what(tw_result r)
{
    static char buf[64];
    if (tw_result_is_failure(r))
        return tw_err_name(tw_failure_code(tw_result_as_failure(r)));
    snprintf(buf, sizeof buf, "%ld", (long)ival(r));
    return buf;
}

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    tw_test_trace_clear();
    return 0;
}

static int teardown(void **state)
{
    tw_async_stats st;
    (void)state;
    tw_async_stats_get(&st);
    if (st.running != 0) {
        fprintf(stderr, "%zu coroutine(s) left running\n", st.running);
        return -1;
    }
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

static int teardown_any(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAGS_ANY);
}

static tw_deferred *pending[16];

static void new_pending(int n)
{
    for (int i = 0; i < n; i++)
        pending[i] = tw_test_new_deferred();
}

static void drop_pending(int n)
{
    for (int i = 0; i < n; i++) {
        tw_deferred_unref(pending[i]);
        pending[i] = NULL;
    }
}

static tw_result peek(tw_deferred *d)
{
    tw_result r;
    assert_true(tw_deferred_peek(d, &r));
    return r;
}

/* ==== TW_AWAIT_WITH ================================================================== */

static tw_dlock lock = TW_DLOCK_INIT;

/* Holds the lock across an await of pending[i]. */
static tw_result co_section(void *arg)
{
    int i = (int)(intptr_t)arg, rc;
    TW_AWAIT_WITH(&lock, &rc) {
        tw_test_tr("in%d", i);
        tw_result r = tw_await(tw_deferred_ref(pending[i]));
        tw_test_tr("out%d:%s", i, what(r));
        tw_result_drop(r);
    }
    if (rc)
        tw_test_tr("no-lock%d:%s", i, tw_err_name(rc));
    return IV(rc);
}

static void test_await_with_serializes_the_section(void **state)
{
    tw_deferred *a, *b, *c;
    (void)state;
    new_pending(3);
    assert_rc(tw_async(co_section, (void *)0, &a), 0);
    assert_rc(tw_async(co_section, (void *)1, &b), 0);
    assert_rc(tw_async(co_section, (void *)2, &c), 0);
    EXPECT_TRACE("in0");
    assert_int_equal(tw_dlock_waiting(&lock), 2);
    assert_rc(tw_deferred_callback(pending[1], IV(11)), 0); /* not yet awaited: kept */
    assert_rc(tw_deferred_callback(pending[0], IV(10)), 0);
    /* 0 leaves, hands over to 1, whose result is ready: it leaves at once */
    EXPECT_TRACE("in0 out0:10 in1 out1:11 in2");
    assert_rc(tw_deferred_callback(pending[2], IV(12)), 0);
    EXPECT_TRACE("in0 out0:10 in1 out1:11 in2 out2:12");
    assert_false(tw_dlock_locked(&lock));
    assert_int_equal(tw_dlock_waiting(&lock), 0);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_deferred_unref(c);
    drop_pending(3);
}

/* Every way out of the block, taken after an await inside it (so the block
 * is left on a resumed coroutine): the lock must be free afterwards. */
enum exit_path { FALL_OFF, RETURN, BREAK, GOTO, CONTINUE, RETURN_FAILURE, N_PATHS };

static tw_result co_leaves(void *arg)
{
    enum exit_path how = (enum exit_path)(intptr_t)arg;
    int rc;
    for (int round = 0; round < 2; round++) {
        TW_AWAIT_WITH(&lock, &rc) {
            tw_result r = tw_await(tw_deferred_ref(pending[0]));
            bool failed = tw_result_is_failure(r);
            tw_result_drop(r);
            if (failed && how == RETURN_FAILURE)
                return tw_result_fail(TW_EIO, "gave up inside the section");
            if (how == RETURN)
                return IV(1);
            if (how == BREAK)
                break;
            if (how == GOTO)
                goto out;
            if (how == CONTINUE)
                continue;
            assert_true(tw_dlock_locked(&lock));
        }
        assert_int_equal(rc, 0);
        if (how != CONTINUE)
            break;
        if (round == 1)
            tw_test_tr("continued");
    }
out:
    return IV(2);
}

static void test_await_with_releases_on_every_way_out(void **state)
{
    (void)state;
    for (int how = 0; how < N_PATHS; how++) {
        tw_deferred *out;
        new_pending(1);
        assert_rc(tw_async(co_leaves, (void *)(intptr_t)how, &out), 0);
        assert_true(tw_dlock_locked(&lock));
        if (how == RETURN_FAILURE)
            tw_deferred_unref(pending[0]); /* abandoned: TW_EABANDONED inside the block */
        else
            assert_rc(tw_deferred_callback(pending[0], IV(0)), 0);
        assert_true(tw_deferred_called(out));
        assert_false(tw_dlock_locked(&lock)); /* released, whatever the way out */
        assert_int_equal(tw_dlock_waiting(&lock), 0);
        if (how == RETURN_FAILURE) {
            assert_int_equal(tw_failure_code(tw_result_as_failure(peek(out))), TW_EIO);
            tw_test_diag_reset();
            tw_deferred_unref(out); /* unhandled, reported */
            assert_int_equal(tw_test_diag_count_kind(TW_DIAG_UNHANDLED), 1);
            tw_test_diag_reset();
        } else {
            tw_deferred_unref(out);
            tw_deferred_unref(pending[0]);
        }
        pending[0] = NULL;
    }
    EXPECT_TRACE("continued");
}

static void test_await_with_cancelled_while_queued(void **state)
{
    tw_deferred *holder, *waiter;
    (void)state;
    new_pending(2);
    assert_rc(tw_async(co_section, (void *)0, &holder), 0);
    assert_rc(tw_async(co_section, (void *)1, &waiter), 0);
    assert_int_equal(tw_dlock_waiting(&lock), 1);
    assert_rc(tw_deferred_cancel(waiter), 0);
    /* the block did not run; the code says why; the coroutine went on */
    EXPECT_TRACE("in0 no-lock1:TW_ECANCELED");
    assert_int_equal(ival(peek(waiter)), TW_ECANCELED);
    assert_int_equal(tw_dlock_waiting(&lock), 0);
    assert_true(tw_dlock_locked(&lock)); /* still the holder's */
    assert_rc(tw_deferred_callback(pending[0], IV(1)), 0);
    assert_false(tw_dlock_locked(&lock));
    tw_deferred_unref(holder);
    tw_deferred_unref(waiter);
    drop_pending(2);
}

static tw_dsem sem;

static tw_result co_sem_section(void *arg)
{
    int i = (int)(intptr_t)arg, rc;
    TW_AWAIT_WITH(&sem, &rc) {
        tw_test_tr("in%d", i);
        tw_result_drop(tw_await(tw_deferred_ref(pending[i])));
        tw_test_tr("out%d", i);
    }
    return IV(rc);
}

static void test_await_with_semaphore(void **state)
{
    tw_deferred *outs[3];
    (void)state;
    assert_rc(tw_dsem_init(&sem, 2), 0);
    new_pending(3);
    for (int i = 0; i < 3; i++)
        assert_rc(tw_async(co_sem_section, (void *)(intptr_t)i, &outs[i]), 0);
    EXPECT_TRACE("in0 in1");
    assert_int_equal(tw_dsem_waiting(&sem), 1);
    assert_rc(tw_deferred_callback(pending[1], IV(0)), 0);
    EXPECT_TRACE("in0 in1 out1 in2");
    assert_rc(tw_deferred_callback(pending[0], IV(0)), 0);
    assert_rc(tw_deferred_callback(pending[2], IV(0)), 0);
    EXPECT_TRACE("in0 in1 out1 in2 out0 out2");
    assert_int_equal(tw_dsem_tokens(&sem), 2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ival(peek(outs[i])), 0);
        tw_deferred_unref(outs[i]);
    }
    drop_pending(3);
}

static tw_result co_null_lock(void *arg)
{
    int rc = -100;
    (void)arg;
    TW_AWAIT_WITH((tw_dlock *)NULL, &rc) {
        fail_msg("the block ran without a lock");
    }
    return IV(rc);
}

static void test_await_with_misuse(void **state)
{
    tw_deferred *out;
    int rc = -100;
    (void)state;
    assert_rc(tw_async(co_null_lock, NULL, &out), 0);
    assert_int_equal(ival(peek(out)), TW_EINVAL);
    tw_deferred_unref(out);

    TW_AWAIT_WITH(&lock, &rc) { /* not in a coroutine */
        fail_msg("the block ran outside a coroutine");
    }
    assert_int_equal(rc, TW_EPERM);
    assert_false(tw_dlock_locked(&lock));
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_MISUSE), 1);
    tw_test_diag_reset();
}

/* ==== sleeping ========================================================================= */

static tw_fake_clock *fclock;

static tw_result co_sleeps(void *arg)
{
    double s = *(double *)arg;
    tw_test_tr("sleep");
    int rc = tw_await_sleep(tw_fake_clock_clock(fclock), s);
    tw_test_tr("woke:%s", tw_err_name(rc));
    return IV(rc);
}

static void test_sleep_on_a_clock(void **state)
{
    tw_deferred *out;
    double s = 1.5, zero = 0;
    (void)state;
    assert_rc(tw_fake_clock_create(&fclock), 0);
    assert_rc(tw_async(co_sleeps, &s, &out), 0);
    assert_rc(tw_fake_clock_advance(fclock, 1.0), 0);
    EXPECT_TRACE("sleep");
    assert_rc(tw_fake_clock_advance(fclock, 0.5), 0);
    EXPECT_TRACE("sleep woke:TW_OK");
    assert_int_equal(ival(peek(out)), 0);
    tw_deferred_unref(out);

    tw_test_trace_clear();
    assert_rc(tw_async(co_sleeps, &zero, &out), 0);
    EXPECT_TRACE("sleep"); /* even 0 waits for the clock */
    assert_rc(tw_fake_clock_advance(fclock, 0), 0);
    EXPECT_TRACE("sleep woke:TW_OK");
    tw_deferred_unref(out);
    assert_rc(tw_fake_clock_destroy(fclock), 0);
}

static void test_sleep_cancelled(void **state)
{
    tw_deferred *out;
    double s = 10;
    (void)state;
    assert_rc(tw_fake_clock_create(&fclock), 0);
    assert_rc(tw_async(co_sleeps, &s, &out), 0);
    assert_int_equal(tw_fake_clock_pending(fclock), 1);
    assert_rc(tw_deferred_cancel(out), 0);
    EXPECT_TRACE("sleep woke:TW_ECANCELED");
    assert_int_equal(ival(peek(out)), TW_ECANCELED);
    assert_int_equal(tw_fake_clock_pending(fclock), 0); /* the clock call went too */
    tw_deferred_unref(out);
    assert_rc(tw_fake_clock_destroy(fclock), 0);
}

static tw_result co_sleep_misuse(void *arg)
{
    tw_clock *c = tw_fake_clock_clock(fclock);
    (void)arg;
    assert_rc(tw_await_sleep(NULL, 1), TW_EINVAL);
    assert_rc(tw_await_sleep(c, -1), TW_EINVAL);
    assert_rc(tw_await_sleep(c, NAN), TW_EINVAL);
    assert_rc(tw_await_sleep(c, INFINITY), TW_EINVAL);
    return IV(0);
}

static void test_sleep_misuse(void **state)
{
    tw_deferred *out;
    (void)state;
    assert_rc(tw_fake_clock_create(&fclock), 0);
    assert_rc(tw_async(co_sleep_misuse, NULL, &out), 0);
    tw_deferred_unref(out);
    assert_rc(tw_await_sleep(tw_fake_clock_clock(fclock), 1), TW_EPERM);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_MISUSE), 1);
    tw_test_diag_reset();
    assert_int_equal(tw_fake_clock_pending(fclock), 0);
    assert_rc(tw_fake_clock_destroy(fclock), 0);
}

/* ==== several Deferreds ======================================================================= */

static int cancels[16];

static void note_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    cancels[(intptr_t)arg]++;
}

static void new_cancellable(int n)
{
    memset(cancels, 0, sizeof cancels);
    for (int i = 0; i < n; i++)
        assert_rc(tw_deferred_create(&pending[i], note_cancel, (void *)(intptr_t)i), 0);
}

static tw_result co_all(void *arg)
{
    int n = (int)(intptr_t)arg;
    tw_deferred *ds[16];
    for (int i = 0; i < n; i++)
        ds[i] = tw_deferred_ref(pending[i]);
    tw_result r = tw_await_all(ds, (size_t)n);
    if (tw_result_is_failure(r)) {
        tw_failure *f = tw_result_as_failure(r);
        tw_test_tr("failed:%s@%zu", tw_err_name(tw_failure_code(f)), tw_failure_index(f));
        return r;
    }
    tw_list_result *l = r.ptr;
    for (size_t i = 0; i < l->count; i++)
        tw_test_tr("%ld", (long)ival(l->items[i].result));
    tw_result_drop(r);
    return IV(n);
}

static void test_await_all(void **state)
{
    tw_deferred *out;
    (void)state;
    new_pending(3);
    assert_rc(tw_async(co_all, (void *)3, &out), 0);
    assert_rc(tw_deferred_callback(pending[2], IV(30)), 0);
    assert_rc(tw_deferred_callback(pending[0], IV(10)), 0);
    EXPECT_TRACE("");
    assert_rc(tw_deferred_callback(pending[1], IV(20)), 0);
    EXPECT_TRACE("10 20 30"); /* in input order */
    assert_int_equal(ival(peek(out)), 3);
    tw_deferred_unref(out);
    drop_pending(3);

    tw_test_trace_clear();
    assert_rc(tw_async(co_all, (void *)0, &out), 0); /* nothing to wait for */
    assert_int_equal(ival(peek(out)), 0);
    tw_deferred_unref(out);
}

static void test_await_all_first_failure(void **state)
{
    tw_deferred *out;
    (void)state;
    new_pending(3);
    assert_rc(tw_async(co_all, (void *)3, &out), 0);
    assert_rc(tw_deferred_callback(pending[0], IV(10)), 0);
    assert_rc(tw_deferred_errback(pending[2], tw_failure_new(TW_ETIMEDOUT, "slow")), 0);
    EXPECT_TRACE("failed:TW_ETIMEDOUT@2");
    /* the other input's failure is consumed too: no report */
    assert_rc(tw_deferred_errback(pending[1], tw_failure_new(TW_EIO, "late")), 0);
    drop_pending(3);
    assert_int_equal(tw_failure_code(tw_result_as_failure(peek(out))), TW_ETIMEDOUT);
    tw_test_diag_reset();
    tw_deferred_unref(out);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_UNHANDLED), 1); /* only out's */
    tw_test_diag_reset();
}

static void test_await_all_cancelled(void **state)
{
    tw_deferred *out;
    (void)state;
    new_cancellable(3);
    assert_rc(tw_async(co_all, (void *)3, &out), 0);
    assert_rc(tw_deferred_callback(pending[1], IV(20)), 0);
    assert_rc(tw_deferred_cancel(out), 0);
    assert_int_equal(cancels[0], 1);
    assert_int_equal(cancels[1], 0); /* it had fired */
    assert_int_equal(cancels[2], 1);
    EXPECT_TRACE("failed:TW_ECANCELED@0");
    tw_test_diag_reset();
    tw_deferred_unref(out);
    tw_test_diag_reset();
    drop_pending(3);
}

static tw_result co_any(void *arg)
{
    int n = (int)(intptr_t)arg;
    tw_deferred *ds[16];
    size_t index = 99;
    for (int i = 0; i < n; i++)
        ds[i] = tw_deferred_ref(pending[i]);
    tw_result r = tw_await_any(ds, (size_t)n, &index);
    if (tw_result_is_failure(r)) {
        tw_test_tr("failed:%s:%s", tw_err_name(tw_failure_code(tw_result_as_failure(r))),
                   index == SIZE_MAX ? "none" : "?");
        return r;
    }
    tw_test_tr("won:%zu=%ld", index, (long)ival(r));
    return r;
}

static void test_await_any(void **state)
{
    tw_deferred *out;
    (void)state;
    new_cancellable(3);
    assert_rc(tw_async(co_any, (void *)3, &out), 0);
    assert_rc(tw_deferred_errback(pending[0], tw_failure_new(TW_EIO, "x")), 0);
    EXPECT_TRACE(""); /* a failure does not win */
    assert_rc(tw_deferred_callback(pending[2], IV(30)), 0);
    EXPECT_TRACE("won:2=30");
    assert_int_equal(cancels[1], 1); /* the loser still waiting was cancelled */
    assert_int_equal(cancels[0] + cancels[2], 0);
    assert_int_equal(ival(peek(out)), 30);
    tw_deferred_unref(out);
    drop_pending(3); /* no unhandled failure anywhere (teardown) */

    /* one already fired: taken at once, the others cancelled */
    tw_test_trace_clear();
    new_cancellable(3);
    assert_rc(tw_deferred_callback(pending[1], IV(7)), 0);
    assert_rc(tw_async(co_any, (void *)3, &out), 0);
    EXPECT_TRACE("won:1=7");
    assert_int_equal(cancels[0] + cancels[2], 2);
    tw_deferred_unref(out);
    drop_pending(3);
}

static void test_await_any_all_fail(void **state)
{
    tw_deferred *out;
    (void)state;
    new_cancellable(2);
    assert_rc(tw_async(co_any, (void *)2, &out), 0);
    assert_rc(tw_deferred_errback(pending[1], tw_failure_new(TW_EIO, "second")), 0);
    assert_rc(tw_deferred_errback(pending[0], tw_failure_new(TW_ETIMEDOUT, "first")), 0);
    EXPECT_TRACE("failed:TW_ETIMEDOUT:none"); /* the first input's failure leads */
    tw_failure *f = tw_result_as_failure(peek(out));
    f = tw_failure_cause(f); /* under the await trace the coroutine added */
    assert_non_null(strstr(tw_failure_message(f), "all 2 awaited Deferreds failed"));
    assert_string_equal(tw_failure_message(tw_failure_cause(f)), "first");
    tw_test_diag_reset();
    tw_deferred_unref(out);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_UNHANDLED), 1);
    tw_test_diag_reset();
    drop_pending(2);

    /* cancelling the coroutine cancels every input */
    tw_test_trace_clear();
    new_cancellable(2);
    assert_rc(tw_async(co_any, (void *)2, &out), 0);
    assert_rc(tw_deferred_cancel(out), 0);
    assert_int_equal(cancels[0] + cancels[1], 2);
    EXPECT_TRACE("failed:TW_ECANCELED:none");
    tw_deferred_unref(out);
    tw_test_diag_reset();
    drop_pending(2);

    tw_test_trace_clear();
    assert_rc(tw_async(co_any, (void *)0, &out), 0);
    EXPECT_TRACE("failed:TW_EINVAL:none");
    tw_deferred_unref(out);
    tw_test_diag_reset();
}

/* ==== a producer's code ============================================================= */

static tw_result co_call(void *arg)
{
    tw_deferred *d = NULL;
    (void)arg;
    tw_result r = tw_await_call(tw_dlock_release(&lock), &d); /* TW_EPERM: not held */
    tw_test_tr("%s", what(r));
    tw_result_drop(r);
    r = tw_await_call(tw_dlock_acquire(&lock, &d), &d);
    tw_test_tr("%s", tw_result_is_value(r) && r.ptr == &lock ? "granted" : "?");
    tw_result_drop(r);
    tw_dlock_release(&lock);
    return IV(0);
}

static void test_await_call(void **state)
{
    tw_deferred *out;
    (void)state;
    assert_rc(tw_async(co_call, NULL, &out), 0);
    EXPECT_TRACE("TW_EPERM granted");
    tw_deferred_unref(out);
}

/* ==== on a reactor: thread work, the reactor's clock, cancelling thread work ===== */

static tw_reactor *reactor;
static tw_deferred *main_out;
static tw_event task_cancelled;

static tw_result add_in_thread(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    return IV((intptr_t)arg + 1);
}

static tw_result wait_for_cancel(void *arg, tw_cancel *cancel)
{
    (void)arg;
    if (tw_cancel_wait(cancel, 30) == 0)
        tw_event_set(&task_cancelled);
    return IV(0); /* dropped: its Deferred failed already */
}

static void cancel_main(void *arg)
{
    (void)arg;
    tw_deferred_cancel(main_out);
}

static tw_result co_reactor(void *arg)
{
    tw_deferred *d;
    (void)arg;
    /* thread work */
    tw_result r = tw_await_call(tw_defer_to_thread(reactor, add_in_thread, (void *)41, &d), &d);
    tw_test_tr("thread:%s", what(r));
    tw_result_drop(r);
    assert_true(tw_async_inside());

    /* the reactor's clock */
    double t0 = tw_test_now();
    int rc = tw_await_sleep(tw_reactor_clock(reactor), 0.02);
    tw_test_check_elapsed_at_least(t0, tw_test_now(), 0.02);
    tw_test_tr("slept:%s", tw_err_name(rc));

    /* cancelling the coroutine cancels the thread work it waits on */
    assert_rc(tw_reactor_call_later(reactor, 0.01, cancel_main, NULL, NULL), 0);
    r = tw_await_call(tw_defer_to_thread(reactor, wait_for_cancel, NULL, &d), &d);
    tw_test_tr("cancelled:%s", what(r));
    tw_result_drop(r);

    tw_reactor_stop(reactor);
    return IV(7);
}

static void start_main(void *arg)
{
    (void)arg;
    assert_rc(tw_async(co_reactor, NULL, &main_out), 0);
}

static void test_thread_work_and_the_reactor_clock(void **state)
{
    (void)state;
    tw_event_init(&task_cancelled);
    assert_rc(tw_reactor_create(&reactor), 0);
    tw_test_arm_watchdog(reactor, 30);
    assert_rc(tw_reactor_call_when_running(reactor, start_main, NULL), 0);
    assert_rc(tw_reactor_run(reactor), 0);
    assert_false(tw_test_watchdog_fired());
    EXPECT_TRACE("thread:42 slept:TW_OK cancelled:TW_ECANCELED");
    tw_test_wait_event(&task_cancelled, 30); /* the task saw the request */
    assert_int_equal(ival(peek(main_out)), 7); /* the coroutine went on and ended */
    tw_deferred_unref(main_out);
    assert_rc(tw_reactor_destroy(reactor), 0);
}

/* A fake-clock reactor: the sleep ends when the test moves time. */
static tw_result co_fake_sleep(void *arg)
{
    (void)arg;
    return IV(tw_await_sleep(tw_reactor_clock(reactor), 5));
}

static void test_sleep_on_a_fake_reactor_clock(void **state)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    tw_deferred *out;
    (void)state;
    cfg.fake_clock = true;
    assert_rc(tw_reactor_create_with(&cfg, &reactor), 0);
    assert_rc(tw_async(co_fake_sleep, NULL, &out), 0);
    assert_rc(tw_reactor_advance(reactor, 4.9), 0);
    assert_false(tw_deferred_called(out));
    assert_rc(tw_reactor_advance(reactor, 0.1), 0);
    assert_int_equal(ival(peek(out)), 0);
    tw_deferred_unref(out);
    assert_rc(tw_reactor_destroy(reactor), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_await_with_serializes_the_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_await_with_releases_on_every_way_out, setup,
                                        teardown_any),
        cmocka_unit_test_setup_teardown(test_await_with_cancelled_while_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_await_with_semaphore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_await_with_misuse, setup, teardown_any),
        cmocka_unit_test_setup_teardown(test_sleep_on_a_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sleep_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sleep_misuse, setup, teardown_any),
        cmocka_unit_test_setup_teardown(test_await_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_await_all_first_failure, setup, teardown_any),
        cmocka_unit_test_setup_teardown(test_await_all_cancelled, setup, teardown_any),
        cmocka_unit_test_setup_teardown(test_await_any, setup, teardown),
        cmocka_unit_test_setup_teardown(test_await_any_all_fail, setup, teardown_any),
        cmocka_unit_test_setup_teardown(test_await_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_work_and_the_reactor_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sleep_on_a_fake_reactor_clock, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
