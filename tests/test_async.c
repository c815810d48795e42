/*
 * Unit tests for twine/async.h, the coroutine core: tw_async and tw_await on
 * ready and pending Deferreds, failures and the await trace, cancellation
 * (Twisted's inlineCallbacks semantics), abandonment, bounded stack for ready
 * results and for chains of coroutines, results that are Deferreds, misuse,
 * allocation failure, the floating-point modes and the signal mask across a
 * switch, and a coroutine's thread (TW_DEBUG).
 *
 * No loop is involved: Deferreds are fired by the test, as a producer would.
 * Every test checks (teardown) that twine's allocator has no block left live,
 * that no unexpected diagnostic came, and that no coroutine is left running.
 */
#include "harness.h"

#include <fenv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async/core.h"

#define IV(n) tw_result_value((void *)(intptr_t)(n), NULL)

static intptr_t ival(tw_result r)
{
    return (intptr_t)r.ptr;
}

/* ==== fixture =================================================================== */

static size_t running0;

static int setup(void **state)
{
    tw_async_stats st;
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    tw_test_trace_clear();
    tw_async_stats_get(&st);
    running0 = st.running;
    return 0;
}

static int teardown(void **state)
{
    tw_async_stats st;
    (void)state;
    tw_async_stats_get(&st);
    if (st.running != running0) {
        fprintf(stderr, "%zu coroutine(s) left running\n", st.running - running0);
        return -1;
    }
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

/* Tests that expect reports check them themselves. */
static int teardown_any(void **state)
{
    tw_async_stats st;
    (void)state;
    tw_async_stats_get(&st);
    if (st.running != running0)
        return -1;
    return tw_test_twine_teardown(TW_TEST_DIAGS_ANY);
}

/* A pending Deferred the test fires later (one reference, the test's). */
static tw_deferred *pending[64];

static tw_deferred *take_ref(int i)
{
    return tw_deferred_ref(pending[i]);
}

static void fire(int i, tw_result r)
{
    assert_rc(tw_deferred_callback(pending[i], r), 0);
}

static void drop(int i)
{
    tw_deferred_unref(pending[i]);
    pending[i] = NULL;
}

/* The value a fired Deferred holds (borrowed). */
static tw_result peek(tw_deferred *d)
{
    tw_result r;
    assert_true(tw_deferred_peek(d, &r));
    return r;
}

/* ==== ready and pending ============================================================ */

static tw_result co_ready(void *arg)
{
    tw_deferred *d;
    tw_result r;
    (void)arg;
    assert_true(tw_async_inside());
    assert_rc(tw_deferred_succeed(&d, (void *)(intptr_t)20, NULL), 0);
    r = tw_await(d);
    assert_true(tw_result_is_value(r));
    return IV(ival(r) + 1);
}

static void test_ready_result_fires_at_once(void **state)
{
    tw_deferred *out;
    (void)state;
    assert_false(tw_async_inside());
    assert_rc(tw_async(co_ready, NULL, &out), 0);
    assert_true(tw_deferred_called(out)); /* ran to its end inside tw_async */
    assert_int_equal(ival(peek(out)), 21);
    tw_deferred_unref(out);
}

static tw_result co_two_waits(void *arg)
{
    tw_result a, b;
    (void)arg;
    tw_test_tr("start");
    a = tw_await(take_ref(0));
    tw_test_tr("a=%ld", (long)ival(a));
    b = tw_await(take_ref(1));
    tw_test_tr("b=%ld", (long)ival(b));
    return IV(ival(a) * 10 + ival(b));
}

static void test_pending_results_resume_the_coroutine(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    pending[1] = tw_test_new_deferred();
    assert_rc(tw_async(co_two_waits, NULL, &out), 0);
    EXPECT_TRACE("start");
    assert_false(tw_deferred_called(out));
    fire(0, IV(4));
    EXPECT_TRACE("start a=4");
    assert_false(tw_deferred_called(out));
    fire(1, IV(2));
    EXPECT_TRACE("start a=4 b=2");
    assert_int_equal(ival(peek(out)), 42);
    drop(0);
    drop(1);
    tw_deferred_unref(out);
}

/* The result is the await's: the Deferred's chain goes on with none. */
static tw_result note_after(tw_result r, void *arg)
{
    (void)arg;
    tw_test_tr("after=%s", tw_result_is_value(r) && r.ptr == NULL ? "none" : "other");
    return r;
}

static tw_result co_await_first(void *arg)
{
    (void)arg;
    return tw_await(take_ref(0));
}

static void test_awaited_deferred_goes_on_with_none(void **state)
{
    tw_deferred *out;
    int *v = tw_test_int_new(7);
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_await_first, NULL, &out), 0);
    assert_rc(tw_deferred_add_both(pending[0], note_after, NULL), 0);
    fire(0, tw_result_value(v, free));
    EXPECT_TRACE("after=none");
    assert_ptr_equal(peek(out).ptr, v); /* moved, not copied: out frees it */
    drop(0);
    tw_deferred_unref(out);
}

/* A ready result is taken without a switch: the await returns on the same
 * stack, and the same frame depth, as the code around it. */
static __attribute__((noinline)) uintptr_t frame_here(void)
{
    return (uintptr_t)__builtin_frame_address(0);
}

static long n_ready;

static tw_result co_many_ready(void *arg)
{
    uintptr_t first = frame_here(), lo = first, hi = first;
    long sum = 0;
    (void)arg;
    for (long i = 0; i < n_ready; i++) {
        tw_deferred *d;
        assert_rc(tw_deferred_succeed(&d, (void *)(intptr_t)(i & 0xff), NULL), 0);
        tw_result r = tw_await(d);
        sum += ival(r);
        uintptr_t here = frame_here();
        lo = here < lo ? here : lo;
        hi = here > hi ? here : hi;
    }
    assert_int_equal(hi - lo, 0); /* the stack never grew */
    return IV(sum);
}

static void test_ready_results_never_grow_the_stack(void **state)
{
    tw_deferred *out;
    long want = 0;
    size_t old = tw_async_stack_size();
    (void)state;
    n_ready = (long)tw_test_scaled(1000000, 10000);
    for (long i = 0; i < n_ready; i++)
        want += i & 0xff;
    assert_rc(tw_async_set_stack_size(16 * 1024), 0); /* the smallest: no room to recurse */
    assert_rc(tw_async(co_many_ready, NULL, &out), 0);
    assert_int_equal(ival(peek(out)), want);
    tw_deferred_unref(out);
    assert_rc(tw_async_set_stack_size(old), 0);
}

/* A pending result, then a run of ready ones, then pending again: the
 * coroutine, resumed from the test's stack, takes the ready ones in place. */
static tw_result co_mixed(void *arg)
{
    long sum = 0;
    (void)arg;
    for (int round = 0; round < 3; round++) {
        tw_result r = tw_await(take_ref(round));
        sum += ival(r);
        uintptr_t at = frame_here();
        for (int i = 0; i < 1000; i++) {
            tw_deferred *d;
            assert_rc(tw_deferred_succeed(&d, (void *)(intptr_t)1, NULL), 0);
            sum += ival(tw_await(d));
            assert_int_equal(frame_here(), at);
        }
    }
    return IV(sum);
}

static void test_pending_then_ready_results(void **state)
{
    tw_deferred *out;
    (void)state;
    for (int i = 0; i < 3; i++)
        pending[i] = tw_test_new_deferred();
    assert_rc(tw_async(co_mixed, NULL, &out), 0);
    for (int i = 0; i < 3; i++) {
        assert_false(tw_deferred_called(out));
        fire(i, IV(100));
        drop(i);
    }
    assert_int_equal(ival(peek(out)), 3300);
    tw_deferred_unref(out);
}

/* ==== chains of coroutines ========================================================= */

/* N coroutines, each awaiting the one before; the first awaits pending[0].
 * Firing it finishes all N from the test's stack: results are delivered by
 * one loop, so the test's stack does not grow by a level per coroutine. */
static tw_deferred **chain_out;
static long chain_n;
static uintptr_t chain_lo, chain_hi;
static long chain_seen, chain_right;

static tw_result co_link(void *arg)
{
    long i = (long)(intptr_t)arg;
    tw_result r = tw_await(i == 0 ? take_ref(0) : tw_deferred_ref(chain_out[i - 1]));
    return tw_result_is_value(r) ? IV(ival(r) + 1) : r;
}

static tw_result note_depth(tw_result r, void *arg)
{
    uintptr_t here = frame_here();
    if (ival(r) == (intptr_t)arg + 1)
        chain_right++;
    chain_lo = here < chain_lo ? here : chain_lo;
    chain_hi = here > chain_hi ? here : chain_hi;
    chain_seen++;
    return r;
}

static void test_chain_of_coroutines_in_bounded_stack(void **state)
{
    (void)state;
    chain_n = (long)tw_test_scaled(10000, 1000);
    chain_out = calloc((size_t)chain_n, sizeof *chain_out);
    assert_non_null(chain_out);
    pending[0] = tw_test_new_deferred();
    for (long i = 0; i < chain_n; i++) {
        assert_rc(tw_async(co_link, (void *)(intptr_t)i, &chain_out[i]), 0);
        assert_rc(tw_deferred_add_both(chain_out[i], note_depth, (void *)(intptr_t)i), 0);
    }
    chain_lo = UINTPTR_MAX;
    chain_hi = 0;
    chain_seen = chain_right = 0;
    fire(0, IV(0));
    assert_int_equal(chain_seen, chain_n);
    /* A level per coroutine would be chain_n frames of ~100+ bytes each. */
    assert_true(chain_hi - chain_lo < 4096);
    assert_int_equal(chain_right, chain_n); /* each out fired with its index + 1 */
    /* each result but the last was taken by the next coroutine's await */
    assert_int_equal(ival(peek(chain_out[chain_n - 1])), chain_n);
    for (long i = 0; i < chain_n; i++)
        tw_deferred_unref(chain_out[i]);
    drop(0);
    free(chain_out);
}

/* A coroutine started by a coroutine, awaited by it. */
static tw_result co_inner(void *arg)
{
    (void)arg;
    return IV(ival(tw_await(take_ref(0))) * 2);
}

static tw_result co_outer(void *arg)
{
    tw_deferred *inner;
    (void)arg;
    assert_rc(tw_async(co_inner, NULL, &inner), 0);
    tw_test_tr("inner started");
    return IV(ival(tw_await(inner)) + 1);
}

static void test_coroutine_awaits_a_coroutine(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_outer, NULL, &out), 0);
    EXPECT_TRACE("inner started");
    fire(0, IV(20));
    assert_int_equal(ival(peek(out)), 41);
    drop(0);
    tw_deferred_unref(out);
}

/* ==== failures ===================================================================== */

static tw_result co_handles_failure(void *arg)
{
    (void)arg;
    tw_result r = tw_await(take_ref(0));
    assert_true(tw_result_is_failure(r));
    tw_failure *f = tw_result_as_failure(r);
    assert_int_equal(tw_failure_code(f), TW_ETIMEDOUT);
    assert_string_equal(tw_failure_message(f), "the record took too long");
    tw_result_drop(r);
    return IV(5); /* handled: the coroutine goes on */
}

static void test_failure_arrives_as_a_result(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_handles_failure, NULL, &out), 0);
    assert_rc(tw_deferred_errback(pending[0], tw_failure_new(TW_ETIMEDOUT,
                                                             "the record took too long")),
              0);
    assert_int_equal(ival(peek(out)), 5);
    drop(0);
    tw_deferred_unref(out);
}

static int line_inner_await, line_outer_await, line_inner_start, line_outer_start;

static tw_result co_passes_failure(void *arg)
{
    (void)arg;
    line_inner_await = __LINE__ + 1;
    tw_result r = tw_await(take_ref(0));
    return r; /* not handled: passed up */
}

static tw_result co_passes_it_again(void *arg)
{
    tw_deferred *inner;
    (void)arg;
    line_inner_start = __LINE__ + 1;
    assert_rc(tw_async(co_passes_failure, NULL, &inner), 0);
    line_outer_await = __LINE__ + 1;
    return tw_await(inner);
}

static void test_failure_carries_the_chain_of_awaits(void **state)
{
    tw_deferred *out;
    char text[1024], want[256];
    (void)state;
    pending[0] = tw_test_new_deferred();
    line_outer_start = __LINE__ + 1;
    assert_rc(tw_async(co_passes_it_again, NULL, &out), 0);
    tw_failure *orig = tw_failure_new(TW_ECONNRESET, "peer went away");
    assert_rc(tw_deferred_errback(pending[0], tw_failure_ref(orig)), 0);

    tw_failure *f = tw_result_as_failure(peek(out));
    assert_non_null(f);
    assert_int_equal(tw_failure_code(f), TW_ECONNRESET); /* the code stays */
    tw_failure_format(f, text, sizeof text);
    /* Outermost first, then each await it crossed, then the original. */
    snprintf(want, sizeof want,
             "TW_ECONNRESET: awaited at %s:%d in the coroutine started at %s:%d; caused by ",
             __FILE__, line_outer_await, __FILE__, line_outer_start);
    assert_memory_equal(text, want, strlen(want));
    snprintf(want, sizeof want,
             "TW_ECONNRESET: awaited at %s:%d in the coroutine started at %s:%d; caused by "
             "TW_ECONNRESET: peer went away",
             __FILE__, line_inner_await, __FILE__, line_inner_start);
    assert_non_null(strstr(text, want));
    assert_ptr_equal(tw_failure_cause(tw_failure_cause(f)), orig);
    tw_failure_unref(orig);

    /* Left unhandled, it is reported with the chain. */
    tw_test_diag_reset();
    tw_deferred_unref(out);
    const tw_test_diag *d = tw_test_diag_find(TW_DIAG_UNHANDLED);
    assert_non_null(d);
    assert_int_equal(d->code, TW_ECONNRESET);
    assert_non_null(strstr(d->message, "awaited at"));
    assert_non_null(strstr(d->message, "peer went away"));
    tw_test_diag_reset();
    drop(0);
}

/* A failure the coroutine makes itself is not wrapped. */
static tw_result co_own_failure(void *arg)
{
    (void)arg;
    tw_result r = tw_await(take_ref(0));
    tw_result_drop(r);
    return tw_result_fail(TW_EPROTO, "bad reply");
}

static void test_own_failure_is_not_wrapped(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_own_failure, NULL, &out), 0);
    assert_rc(tw_deferred_errback(pending[0], tw_failure_new(TW_EIO, "x")), 0);
    tw_failure *f = tw_result_as_failure(peek(out));
    assert_int_equal(tw_failure_code(f), TW_EPROTO);
    assert_string_equal(tw_failure_message(f), "bad reply");
    assert_null(tw_failure_cause(f));
    tw_test_diag_reset();
    tw_deferred_unref(out);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_UNHANDLED), 1);
    tw_test_diag_reset();
    drop(0);
}

/* ==== a Deferred as the coroutine's result ============================================== */

static tw_result co_returns_deferred(void *arg)
{
    (void)arg;
    return tw_result_deferred(take_ref(0));
}

static tw_result co_returns_null_deferred(void *arg)
{
    (void)arg;
    return tw_result_deferred(NULL);
}

static void test_returned_deferred_is_waited_for(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_returns_deferred, NULL, &out), 0);
    assert_ptr_equal(tw_deferred_waiting_on(out), pending[0]);
    fire(0, IV(9));
    assert_int_equal(ival(peek(out)), 9);
    drop(0);
    tw_deferred_unref(out);

    assert_rc(tw_async(co_returns_null_deferred, NULL, &out), 0);
    assert_int_equal(tw_failure_code(tw_result_as_failure(peek(out))), TW_EINVAL);
    tw_test_diag_reset();
    tw_deferred_unref(out); /* unhandled: reported */
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_UNHANDLED), 1);
    tw_test_diag_reset();
}

/* ==== cancellation ====================================================================== */

/* Cancelling out cancels the awaited Deferred; the coroutine sees
 * TW_ECANCELED at its await and goes on; out fires with what it returns. */
static tw_result co_goes_on(void *arg)
{
    (void)arg;
    tw_result r = tw_await(take_ref(0));
    tw_test_tr("first:%s", tw_result_is_failure(r) ? tw_err_name(tw_failure_code(
                                                         tw_result_as_failure(r)))
                                                   : "value");
    tw_result_drop(r);
    r = tw_await(take_ref(1));
    tw_test_tr("second:%s", tw_result_is_failure(r) ? tw_err_name(tw_failure_code(
                                                          tw_result_as_failure(r)))
                                                    : "value");
    tw_result_drop(r);
    return IV(42);
}

static void test_cancel_reaches_the_await_and_the_coroutine_goes_on(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    pending[1] = tw_test_new_deferred();
    assert_rc(tw_async(co_goes_on, NULL, &out), 0);
    assert_rc(tw_deferred_cancel(out), 0);
    EXPECT_TRACE("first:TW_ECANCELED");
    assert_false(tw_deferred_called(pending[1]) || tw_deferred_paused(out));
    /* out did not fail: it waits for the coroutine's result */
    tw_result r;
    assert_false(tw_deferred_peek(out, &r));
    /* the producer's late result is swallowed (a cancel without canceller) */
    assert_rc(tw_deferred_callback(pending[0], IV(1)), 0);
    /* a second cancel reaches the second await */
    assert_rc(tw_deferred_cancel(out), 0);
    EXPECT_TRACE("first:TW_ECANCELED second:TW_ECANCELED");
    assert_int_equal(ival(peek(out)), 42);
    drop(0);
    drop(1);
    tw_deferred_unref(out);
}

static void test_cancel_then_result_arrives(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    pending[1] = tw_test_new_deferred();
    assert_rc(tw_async(co_goes_on, NULL, &out), 0);
    assert_rc(tw_deferred_cancel(out), 0);
    fire(1, IV(3)); /* the second await's result comes normally */
    EXPECT_TRACE("first:TW_ECANCELED second:value");
    assert_int_equal(ival(peek(out)), 42);
    tw_deferred_cancel(out); /* fired: nothing happens */
    assert_int_equal(ival(peek(out)), 42);
    drop(0);
    drop(1);
    tw_deferred_unref(out);
}

/* A canceller that gives a result: the coroutine gets that result. */
static void cancel_with_value(tw_deferred *d, void *arg)
{
    (void)arg;
    tw_deferred_callback(d, IV(77));
}

static void test_cancel_uses_the_awaited_canceller(void **state)
{
    tw_deferred *out;
    (void)state;
    assert_rc(tw_deferred_create(&pending[0], cancel_with_value, NULL), 0);
    assert_rc(tw_async(co_await_first, NULL, &out), 0);
    assert_rc(tw_deferred_cancel(out), 0);
    assert_int_equal(ival(peek(out)), 77);
    drop(0);
    tw_deferred_unref(out);
}

/* Cancelled while running: the next await of an unfired Deferred is
 * cancelled; a ready one before it is not. */
static tw_deferred *self_out;

static tw_result co_cancelled_while_running(void *arg)
{
    tw_deferred *ready;
    (void)arg;
    tw_result r = tw_await(take_ref(0)); /* resumed by the test */
    tw_result_drop(r);
    assert_rc(tw_deferred_cancel(self_out), 0); /* we are running */
    tw_test_tr("cancelled");
    assert_rc(tw_deferred_succeed(&ready, (void *)(intptr_t)8, NULL), 0);
    r = tw_await(ready);
    tw_test_tr("ready:%ld", (long)ival(r));
    r = tw_await(take_ref(1));
    tw_test_tr("pending:%s", tw_result_is_failure(r) ? tw_err_name(tw_failure_code(
                                                           tw_result_as_failure(r)))
                                                     : "value");
    tw_result_drop(r);
    return IV(1);
}

static void test_cancel_while_running_cancels_the_next_wait(void **state)
{
    (void)state;
    pending[0] = tw_test_new_deferred();
    pending[1] = tw_test_new_deferred();
    assert_rc(tw_async(co_cancelled_while_running, NULL, &self_out), 0);
    fire(0, IV(0));
    EXPECT_TRACE("cancelled ready:8 pending:TW_ECANCELED");
    assert_int_equal(ival(peek(self_out)), 1);
    drop(0);
    drop(1);
    tw_deferred_unref(self_out);
}

/* A coroutine that finished while another's result was being delivered
 * waits in the queue; a cancel then delivers its result instead of failing. */
static tw_deferred *late_out;

static tw_result co_quick(void *arg)
{
    (void)arg;
    tw_result_drop(tw_await(take_ref(1)));
    return IV(11);
}

static tw_result cancel_late(tw_result r, void *arg)
{
    (void)arg;
    fire(1, IV(0));                  /* co_quick finishes: queued behind us */
    assert_false(tw_deferred_called(late_out));
    assert_rc(tw_deferred_cancel(late_out), 0); /* delivered now, not failed */
    assert_int_equal(ival(peek(late_out)), 11);
    return r;
}

static void test_cancel_of_a_finished_coroutine_delivers_its_result(void **state)
{
    tw_deferred *first;
    (void)state;
    pending[0] = tw_test_new_deferred();
    pending[1] = tw_test_new_deferred();
    assert_rc(tw_async(co_await_first, NULL, &first), 0);
    assert_rc(tw_async(co_quick, NULL, &late_out), 0);
    assert_rc(tw_deferred_add_callback(first, cancel_late, NULL), 0);
    fire(0, IV(5)); /* first finishes; its delivery runs cancel_late */
    assert_int_equal(ival(peek(first)), 5);
    assert_int_equal(ival(peek(late_out)), 11);
    drop(0);
    drop(1);
    tw_deferred_unref(first);
    tw_deferred_unref(late_out);
}

/* ==== abandonment ========================================================================= */

static tw_result co_abandoned(void *arg)
{
    (void)arg;
    tw_result r = tw_await(take_ref(0));
    tw_test_tr("woke:%s", tw_result_is_failure(r) ? tw_err_name(tw_failure_code(
                                                        tw_result_as_failure(r)))
                                                  : "value");
    tw_result_drop(r);
    return IV(3); /* cleaned up and ended */
}

static void test_abandoned_await_resumes_with_eabandoned(void **state)
{
    tw_deferred *out;
    tw_async_stats st;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_abandoned, NULL, &out), 0);
    tw_async_stats_get(&st);
    assert_int_equal(st.running, running0 + 1);
    drop(0); /* the producer lets go: nobody can fire it */
    EXPECT_TRACE("woke:TW_EABANDONED");
    assert_int_equal(ival(peek(out)), 3);
    tw_async_stats_get(&st);
    assert_int_equal(st.running, running0); /* its stack was freed (to the cache) */
    tw_deferred_unref(out);
}

/* Awaiting a Deferred nobody else holds: abandoned at once, no switch. */
static tw_result co_await_orphan(void *arg)
{
    tw_deferred *d;
    (void)arg;
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    tw_result r = tw_await(d);
    assert_int_equal(tw_failure_code(tw_result_as_failure(r)), TW_EABANDONED);
    tw_result_drop(r);
    return IV(1);
}

static void test_await_of_an_orphan_is_abandoned_at_once(void **state)
{
    tw_deferred *out;
    (void)state;
    assert_rc(tw_async(co_await_orphan, NULL, &out), 0);
    assert_int_equal(ival(peek(out)), 1);
    tw_deferred_unref(out);
}

/* The caller lets go of out while the coroutine waits: it still runs to its
 * end, and a failure it ends with is reported. */
static tw_result co_fails_late(void *arg)
{
    (void)arg;
    tw_result_drop(tw_await(take_ref(0)));
    return tw_result_fail(TW_EIO, "late failure");
}

static void test_coroutine_outlives_its_callers_reference(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_fails_late, NULL, &out), 0);
    tw_deferred_unref(out);
    fire(0, IV(0));
    const tw_test_diag *d = tw_test_diag_find(TW_DIAG_UNHANDLED);
    assert_non_null(d);
    assert_int_equal(d->code, TW_EIO);
    assert_non_null(strstr(d->message, __FILE__)); /* names tw_async's call site */
    drop(0);
}

/* ==== misuse ================================================================================ */

static tw_result co_awaits_itself(void *arg)
{
    (void)arg;
    tw_result r = tw_await(tw_deferred_ref(self_out));
    assert_int_equal(tw_failure_code(tw_result_as_failure(r)), TW_EDEADLK);
    tw_result_drop(r);
    r = tw_await(NULL);
    assert_int_equal(tw_failure_code(tw_result_as_failure(r)), TW_EINVAL);
    tw_result_drop(r);
    return IV(2);
}

static tw_result never(void *arg)
{
    (void)arg;
    fail_msg("must not run");
    return tw_result_none();
}

static void test_misuse(void **state)
{
    tw_deferred *d;
    (void)state;
    assert_rc(tw_async(NULL, NULL, &d), TW_EINVAL);
    assert_rc(tw_async(never, NULL, NULL), TW_EINVAL);

    assert_rc(tw_async(co_awaits_itself, NULL, &self_out), 0);
    assert_int_equal(ival(peek(self_out)), 2);
    tw_deferred_unref(self_out);

    /* outside a coroutine: TW_EPERM, reported, the reference taken */
    assert_rc(tw_deferred_succeed(&d, NULL, NULL), 0);
    tw_result r = tw_await(d);
    assert_int_equal(tw_failure_code(tw_result_as_failure(r)), TW_EPERM);
    tw_result_drop(r);
    const tw_test_diag *rep = tw_test_diag_find(TW_DIAG_MISUSE);
    assert_non_null(rep);
    assert_string_equal(rep->function, "tw_await");
    assert_int_equal(tw_test_diag_count(), 1);
    tw_test_diag_reset();
}

/* ==== allocation failure ====================================================================== */

static unsigned long fail_at, alloc_calls;

static void *f_alloc(void *ctx, size_t n)
{
    (void)ctx;
    if (++alloc_calls == fail_at)
        return NULL;
    return malloc(n);
}

static void *f_realloc(void *ctx, void *p, size_t o, size_t n)
{
    (void)ctx, (void)o;
    if (++alloc_calls == fail_at)
        return NULL;
    return realloc(p, n);
}

static void f_free(void *ctx, void *p, size_t n)
{
    (void)ctx, (void)n;
    free(p);
}

static tw_result co_allocates(void *arg)
{
    tw_deferred *ds[3];
    (void)arg;
    tw_result r = tw_await(take_ref(0));
    tw_result_drop(r);
    for (int i = 0; i < 3; i++)
        if (tw_deferred_succeed(&ds[i], (void *)(intptr_t)i, NULL) != 0) {
            while (i > 0)
                tw_deferred_unref(ds[--i]);
            return IV(0);
        }
    r = tw_await_all(ds, 3);
    tw_result_drop(r);
    return IV(1);
}

/* Failing each allocation in turn: tw_async either fails cleanly (fn never
 * ran) or the coroutine completes; nothing leaks, no coroutine is left. */
static void test_every_allocation_failing(void **state)
{
    static const tw_allocator fa = {f_alloc, f_realloc, f_free, NULL};
    tw_async_stats st;
    (void)state;
    for (fail_at = 1; fail_at < 40; fail_at++) {
        tw_deferred *out = NULL;
        assert_rc(tw_set_allocator(&fa), 0);
        alloc_calls = 0;
        int rc = tw_deferred_create(&pending[0], NULL, NULL);
        if (rc == 0) {
            rc = tw_async(co_allocates, NULL, &out);
            if (rc == 0) {
                tw_deferred_callback(pending[0], IV(0));
                assert_true(tw_deferred_called(out));
                tw_deferred_unref(out);
            } else {
                assert_int_equal(rc, TW_ENOMEM);
            }
            drop(0);
        }
        tw_test_diag_reset(); /* unhandled TW_ENOMEM failures are expected */
        tw_async_stats_get(&st);
        assert_int_equal(st.running, running0);
        assert_rc(tw_set_allocator(NULL), 0);
    }
}

/* ==== the switch: what belongs to each context, and what to the thread ========================== */

#ifdef FE_UPWARD
static tw_result co_rounds_up(void *arg)
{
    (void)arg;
    assert_int_equal(fesetround(FE_UPWARD), 0);
    tw_result_drop(tw_await(take_ref(0)));
    /* our rounding mode came back with us */
    int mode = fegetround();
#if defined(__x86_64__)
    /* both places that hold it on x86-64: the x87 control word (what
     * fegetround reads) and MXCSR (what SSE arithmetic uses) */
    assert_int_equal(__builtin_ia32_stmxcsr() & 0x6000, 0x4000);
#endif
    fesetround(FE_TONEAREST);
    return IV(mode == FE_UPWARD);
}

static void test_floating_point_modes_belong_to_the_context(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_int_equal(fegetround(), FE_TONEAREST);
    assert_rc(tw_async(co_rounds_up, NULL, &out), 0);
    assert_int_equal(fegetround(), FE_TONEAREST); /* not the coroutine's */
#if defined(__x86_64__)
    assert_int_equal(__builtin_ia32_stmxcsr() & 0x6000, 0);
#endif
    fire(0, IV(0));
    assert_int_equal(fegetround(), FE_TONEAREST);
    assert_int_equal(ival(peek(out)), 1);
    drop(0);
    tw_deferred_unref(out);
}
#endif

static tw_result co_blocks_a_signal(void *arg)
{
    sigset_t s;
    (void)arg;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &s, NULL), 0);
    tw_result_drop(tw_await(take_ref(0)));
    return IV(1);
}

/* The hand-written switches leave the signal mask alone: it is the thread's
 * (swapcontext, the fallback, switches it with the context). */
static void test_signal_mask_is_the_threads(void **state)
{
    tw_deferred *out;
    sigset_t before, after;
    (void)state;
    if (strcmp(tw__co_switch_name(), "ucontext") == 0) {
        print_message("ucontext switch: it saves the signal mask per context; skipped\n");
        skip();
    }
    pending[0] = tw_test_new_deferred();
    assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &before), 0);
    assert_false(sigismember(&before, SIGUSR2));
    assert_rc(tw_async(co_blocks_a_signal, NULL, &out), 0);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &after), 0);
    assert_true(sigismember(&after, SIGUSR2)); /* the switch back did not restore it */
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &before, NULL), 0);
    fire(0, IV(0));
    drop(0);
    tw_deferred_unref(out);
}

/* ==== threads ================================================================================= */

/* TW_DEBUG: a Deferred the coroutine awaits, fired on another thread, is
 * reported (the coroutine then resumes there). */
static tw_result co_waits_for_thread(void *arg)
{
    (void)arg;
    return tw_await(take_ref(0));
}

static void *fire_from_thread(void *arg)
{
    (void)arg;
    tw_deferred_callback(pending[0], IV(6));
    return NULL;
}

static void test_debug_reports_a_result_from_another_thread(void **state)
{
    tw_deferred *out;
    (void)state;
    pending[0] = tw_test_new_deferred();
    assert_rc(tw_async(co_waits_for_thread, NULL, &out), 0);
    tw_test_join(tw_test_start(fire_from_thread, NULL));
    assert_int_equal(ival(peek(out)), 6);
    int mine = 0;
    for (int i = 0; i < tw_test_diag_count() && i < TW_TEST_DIAG_CAP; i++) {
        const tw_test_diag *d = tw_test_diag_at(i);
        if (strcmp(d->function, "tw_await") == 0 && strstr(d->message, "fired on thread")) {
            assert_int_equal(d->code, TW_EPERM);
            assert_non_null(strstr(d->message, __FILE__));
            mine++;
        }
    }
    tw_test_diag_reset();
    drop(0);
    tw_deferred_unref(out);
    tw_test_require_debug_report(mine, "a Deferred awaited by a coroutine, fired");
}

/* Threads each running their own coroutines at once: every coroutine stays
 * on its thread, every result arrives, exact counts. */
struct worker_arg {
    long n;
    long done;
    bool moved;
};

static uint32_t my_thread(void)
{
    return tw__self();
}

static tw_result co_counts(void *arg)
{
    tw_deferred **d = arg;
    uint32_t t = my_thread();
    tw_result r = tw_await(tw_deferred_ref(*d));
    return IV(ival(r) + (my_thread() == t ? 0 : 1000000));
}

static void *worker(void *p)
{
    struct worker_arg *w = p;
    enum { BATCH = 32 };
    tw_deferred *src[BATCH], *out[BATCH];
    for (long done = 0; done < w->n; done += BATCH) {
        for (int i = 0; i < BATCH; i++) {
            if (tw_deferred_create(&src[i], NULL, NULL) != 0 ||
                tw_async(co_counts, &src[i], &out[i]) != 0)
                return NULL;
        }
        for (int i = BATCH - 1; i >= 0; i--)
            tw_deferred_callback(src[i], IV(1));
        for (int i = 0; i < BATCH; i++) {
            tw_result r;
            if (tw_deferred_peek(out[i], &r) && tw_result_is_value(r))
                w->done += ival(r);
            if (tw_result_is_value(r) && ival(r) != 1)
                w->moved = true;
            tw_deferred_unref(out[i]);
            tw_deferred_unref(src[i]);
        }
    }
    return NULL;
}

static void test_coroutines_on_several_threads(void **state)
{
    struct worker_arg w[4];
    tw_async_stats before, after;
    (void)state;
    tw_async_stats_get(&before);
    for (int i = 0; i < 4; i++)
        w[i] = (struct worker_arg){(long)tw_test_scaled(20000, 64), 0, false};
    tw_test_run_threads_bounded(4, worker, w, sizeof w[0], "coroutine workers");
    for (int i = 0; i < 4; i++) {
        assert_int_equal(w[i].done, w[i].n - w[i].n % 32 + (w[i].n % 32 ? 32 : 0));
        assert_false(w[i].moved);
    }
    /* the threads' caches went with them */
    tw_async_stats_get(&after);
    assert_int_equal(after.stacks_mapped, before.stacks_mapped);
}

/* The coroutine of the thread test finished on the other thread, which
 * counted it there. */
static int teardown_moved(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAGS_ANY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ready_result_fires_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_results_resume_the_coroutine, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_awaited_deferred_goes_on_with_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_results_never_grow_the_stack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_then_ready_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_of_coroutines_in_bounded_stack, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_coroutine_awaits_a_coroutine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_arrives_as_a_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_carries_the_chain_of_awaits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_own_failure_is_not_wrapped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_returned_deferred_is_waited_for, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_reaches_the_await_and_the_coroutine_goes_on,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_then_result_arrives, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_uses_the_awaited_canceller, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_running_cancels_the_next_wait, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_of_a_finished_coroutine_delivers_its_result,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_abandoned_await_resumes_with_eabandoned, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_await_of_an_orphan_is_abandoned_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_coroutine_outlives_its_callers_reference, setup,
                                        teardown_any),
        cmocka_unit_test_setup_teardown(test_misuse, setup, teardown_any),
        cmocka_unit_test_setup_teardown(test_every_allocation_failing, setup, teardown_any),
#ifdef FE_UPWARD
        cmocka_unit_test_setup_teardown(test_floating_point_modes_belong_to_the_context, setup,
                                        teardown),
#endif
        cmocka_unit_test_setup_teardown(test_signal_mask_is_the_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_debug_reports_a_result_from_another_thread, setup,
                                        teardown_moved),
        cmocka_unit_test_setup_teardown(test_coroutines_on_several_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
