/*
 * Deep nests of chained Deferreds: the cycle check of chaining and cancel's
 * way to the innermost Deferred take amortised constant time, whichever order
 * a nest fires in, and keep every guarantee: a callback returning a Deferred
 * that waits on its own gets TW_EDEADLK, a cancel reaches the innermost, the
 * stack stays flat, nothing leaks.
 *
 * Cost is checked structurally, not by timing: tw__deferred_hops counts the
 * steps taken along wait paths (src/deferred/deferred.h), and a nest of n
 * links must cost O(n) of them. Walking the links one by one, as a nest fired
 * from the inside out would without shortcuts, costs n^2 / 2.
 *
 * The shortcuts point past links that can later be cut (an innermost
 * Deferred hands its result on) and at Deferreds that can be freed
 * meanwhile; the stale-hint tests cut and free such targets and check that
 * the answers stay right (and, under AddressSanitizer, that nothing freed
 * is read).
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#include "deferred/deferred.h"

#define IV(n) tw_result_value((void *)(intptr_t)(n), NULL)

static int setup(void **state)
{
    (void)state;
    tw_test_trace_clear();
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

/* ---- callbacks -------------------------------------------------------------- */

/* Returns the Deferred at *arg (a new reference): chaining. */
static tw_result cb_link(tw_result r, void *arg)
{
    tw_result_drop(r);
    return tw_result_deferred(tw_deferred_ref(*(tw_deferred **)arg));
}

/* Adds one to a value (and counts, arg: size_t *); passes failures on. */
static tw_result cb_inc(tw_result r, void *counter)
{
    (*(size_t *)counter)++;
    return tw_result_value((void *)((intptr_t)r.ptr + 1), NULL);
}

/* Records a failure's code in the trace and handles it. */
static tw_result cb_catch(tw_result r, void *tag)
{
    tw_test_tr("%s:%s", (const char *)tag,
               tw_err_name(tw_failure_code(tw_result_as_failure(r))));
    tw_result_drop(r);
    return tw_result_none();
}

static int cancels;
static void count_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    (void)arg;
    cancels++;
}

/* ---- nests ------------------------------------------------------------------ */

typedef struct nest {
    size_t n;        /* links: ds[0] .. ds[n-1] each wait on the next */
    tw_deferred **ds; /* n + 1 */
    size_t incs;
} nest;

/* ds[i]'s chain: link to ds[i+1], then add one. ds[n] gets `canceller`. */
static void nest_make(nest *t, size_t n, tw_canceller_fn canceller)
{
    t->n = n;
    t->incs = 0;
    t->ds = calloc(n + 1, sizeof *t->ds);
    assert_non_null(t->ds);
    for (size_t i = 0; i < n; i++)
        assert_rc(tw_deferred_create(&t->ds[i], NULL, NULL), 0);
    assert_rc(tw_deferred_create(&t->ds[n], canceller, NULL), 0);
    for (size_t i = 0; i < n; i++) {
        assert_rc(tw_deferred_add_callback(t->ds[i], cb_link, &t->ds[i + 1]), 0);
        assert_rc(tw_deferred_add_callback(t->ds[i], cb_inc, &t->incs), 0);
    }
}

/* Fires ds[0 .. n-1] outermost or innermost first (not ds[n]); each must
 * then wait on the next. Returns the steps the firing took. */
static uint64_t nest_fire(nest *t, bool inner_first)
{
    uint64_t h0 = tw__deferred_hops;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = inner_first ? t->n - 1 - i : i;
        assert_rc(tw_deferred_callback(t->ds[k], tw_result_none()), 0);
        if (tw_deferred_waiting_on(t->ds[k]) != t->ds[k + 1])
            fail_msg("d[%zu] does not wait on d[%zu]", k, k + 1);
    }
    return tw__deferred_hops - h0;
}

static void nest_free(nest *t)
{
    for (size_t i = 0; i <= t->n; i++)
        tw_deferred_unref(t->ds[i]);
    free(t->ds);
}

/* Fires ds[n] with 7 and checks the whole nest unwound into ds[0]. */
static void nest_unwind(nest *t)
{
    assert_rc(tw_deferred_callback(t->ds[t->n], IV(7)), 0);
    assert_int_equal(t->incs, t->n);
    tw_result r;
    assert_true(tw_deferred_peek(t->ds[0], &r));
    assert_int_equal((intptr_t)r.ptr, 7 + (intptr_t)t->n);
    for (size_t i = 0; i < t->n; i++)
        if (tw_deferred_waiting_on(t->ds[i]))
            fail_msg("d[%zu] still waits", i);
}

/* ---- tests ------------------------------------------------------------------ */

/* The slow order: fired from the inside out, each new link's cycle check
 * starts at a Deferred that already waits through every link made so far. */
static void test_nest_inner_first_is_linear(void **state)
{
    (void)state;
    nest t;
    nest_make(&t, (size_t)tw_test_scaled(100000, 1000), NULL);
    uint64_t hops = nest_fire(&t, true);
    if (hops > 2 * (uint64_t)t.n)
        fail_msg("settling a nest of %zu fired innermost first took %llu steps along wait "
                 "paths (walking every link takes %zu)",
                 t.n, (unsigned long long)hops, t.n * (t.n - 1) / 2);
    /* Every link can now reach the innermost in one step. */
    uint64_t h0 = tw__deferred_hops;
    for (size_t i = 0; i < t.n; i++)
        assert_ptr_equal(tw__deferred_innermost(t.ds[i]), t.ds[t.n]);
    assert_true(tw__deferred_hops - h0 <= (uint64_t)t.n);
    nest_unwind(&t);
    nest_free(&t);
}

/* Fired from the outside in, each link is made on a Deferred that waits on
 * nothing: no steps at all. Then the first walk from the outermost takes n
 * steps and leaves shortcuts: every later one takes one. */
static void test_nest_outer_first_compresses(void **state)
{
    (void)state;
    nest t;
    nest_make(&t, (size_t)tw_test_scaled(100000, 1000), NULL);
    assert_int_equal(nest_fire(&t, false), 0);
    uint64_t h0 = tw__deferred_hops;
    assert_ptr_equal(tw__deferred_innermost(t.ds[0]), t.ds[t.n]);
    assert_int_equal(tw__deferred_hops - h0, t.n);
    h0 = tw__deferred_hops;
    for (size_t i = 0; i < t.n; i++)
        assert_ptr_equal(tw__deferred_innermost(t.ds[i]), t.ds[t.n]);
    assert_int_equal(tw__deferred_hops - h0, t.n);
    nest_unwind(&t);
    nest_free(&t);
}

/* A cancel of the outermost reaches the innermost (its canceller runs once),
 * in either order, and costs a bounded number of steps per cancel. */
static void test_nest_cancel_reaches_innermost(void **state)
{
    (void)state;
    for (int inner_first = 0; inner_first < 2; inner_first++) {
        nest t;
        cancels = 0;
        tw_test_trace_clear();
        nest_make(&t, (size_t)tw_test_scaled(100000, 1000), count_cancel);
        assert_rc(tw_deferred_add_errback(t.ds[0], cb_catch, "top"), 0);
        nest_fire(&t, inner_first);
        uint64_t h0 = tw__deferred_hops;
        assert_rc(tw_deferred_cancel(t.ds[0]), 0);
        assert_int_equal(cancels, 1);
        EXPECT_TRACE("top:TW_ECANCELED");
        if (tw__deferred_hops - h0 > (uint64_t)t.n)
            fail_msg("a cancel took %llu steps in a nest of %zu",
                     (unsigned long long)(tw__deferred_hops - h0), t.n);
        assert_int_equal(t.incs, 0); /* cb_inc is a callback: the failure passes it */
        nest_free(&t);
    }
}

/* The innermost Deferred's callback returns the outermost, which waits on it
 * through every link: a cycle, TW_EDEADLK, found in a bounded number of
 * steps once the nest has its shortcuts (inner first: at once; outer first:
 * after the walk the check itself makes). The failure unwinds the nest. */
static void test_nest_cycle_through_every_link(void **state)
{
    (void)state;
    for (int inner_first = 0; inner_first < 2; inner_first++) {
        nest t;
        tw_test_trace_clear();
        nest_make(&t, (size_t)tw_test_scaled(100000, 1000), NULL);
        assert_rc(tw_deferred_add_callback(t.ds[t.n], cb_link, &t.ds[0]), 0);
        assert_rc(tw_deferred_add_errback(t.ds[0], cb_catch, "top"), 0);
        uint64_t fired = nest_fire(&t, inner_first);
        uint64_t h0 = tw__deferred_hops;
        assert_rc(tw_deferred_callback(t.ds[t.n], IV(1)), 0);
        uint64_t check = tw__deferred_hops - h0;
        EXPECT_TRACE("top:TW_EDEADLK");
        if (fired + check > 2 * (uint64_t)t.n + 1)
            fail_msg("%s: firing took %llu steps and the cycle check %llu, nest of %zu",
                     inner_first ? "inner first" : "outer first", (unsigned long long)fired,
                     (unsigned long long)check, t.n);
        for (size_t i = 0; i <= t.n; i++)
            if (tw_deferred_waiting_on(t.ds[i]))
                fail_msg("d[%zu] still waits", i);
        nest_free(&t);
    }
}

/* Cut past shortcuts. A nest fired inner first points every link at ds[n].
 * ds[n] then hands its result on and the nest unwinds to ds[k], whose next
 * callback makes it wait on a new Deferred e: ds[0 .. k-1] now wait on e, and
 * their shortcuts to ds[n] no longer hold. ds[n] is freed meanwhile (the
 * shortcuts keep its block). The innermost of ds[0] is e, a cycle through it
 * is found, a cancel reaches it, and no block is left behind. */
static tw_deferred *late_e;

static tw_result cb_wait_on_e(tw_result r, void *arg)
{
    (void)arg;
    tw_result_drop(r);
    return tw_result_deferred(tw_deferred_ref(late_e));
}

static void stale_shortcuts(bool by_cancel)
{
    nest t;
    size_t n = (size_t)tw_test_scaled(10000, 100), k = n / 2;
    cancels = 0;
    tw_test_trace_clear();
    nest_make(&t, n, NULL);
    assert_rc(tw_deferred_create(&late_e, count_cancel, NULL), 0);
    if (!by_cancel) /* e's first callback returns ds[0], which will wait on e */
        assert_rc(tw_deferred_add_callback(late_e, cb_link, &t.ds[0]), 0);
    assert_rc(tw_deferred_add_callback(t.ds[k], cb_wait_on_e, NULL), 0);
    assert_rc(tw_deferred_add_errback(t.ds[0], cb_catch, "top"), 0);
    nest_fire(&t, true);

    assert_rc(tw_deferred_callback(t.ds[n], IV(0)), 0);
    assert_ptr_equal(tw_deferred_waiting_on(t.ds[k]), late_e);
    assert_null(tw_deferred_waiting_on(t.ds[k + 1]));
    tw_deferred_unref(t.ds[n]); /* done and unheld: freed, but still pointed at */
    t.ds[n] = NULL;

    for (size_t i = 0; i < k; i++)
        assert_ptr_equal(tw__deferred_innermost(t.ds[i]), late_e);
    if (by_cancel) {
        assert_rc(tw_deferred_cancel(t.ds[0]), 0);
        assert_int_equal(cancels, 1);
        EXPECT_TRACE("top:TW_ECANCELED");
    } else {
        /* ds[0] waits on e through k + 1 links: a cycle. */
        assert_rc(tw_deferred_callback(late_e, IV(0)), 0);
        EXPECT_TRACE("top:TW_EDEADLK");
    }
    for (size_t i = 0; i < n; i++)
        assert_null(tw_deferred_waiting_on(t.ds[i]));
    tw_deferred_unref(late_e);
    nest_free(&t); /* ds[n] is NULL: unref does nothing */
}

static void test_nest_stale_shortcuts_cycle(void **state)
{
    (void)state;
    stale_shortcuts(false);
}

static void test_nest_stale_shortcuts_cancel(void **state)
{
    (void)state;
    stale_shortcuts(true);
}

/* One inner Deferred r with two waiters, a and b, and a nest on a whose
 * shortcuts point at r. r hands its result to a, which then waits on e, and
 * pauses before b's turn: r has been cut from a but still holds b. The
 * nest's shortcuts to r no longer hold (they lead to e now); b's link to r
 * stands. */
static tw_deferred *late_r;

static tw_result cb_pause_r(tw_result r, void *arg)
{
    (void)arg;
    assert_rc(tw_deferred_pause(late_r), 0);
    return r;
}

static void test_nest_two_waiters_one_cut(void **state)
{
    (void)state;
    tw_deferred *r, *a, *b, *e, *top[3], *targets[3];
    size_t incs = 0;
    assert_rc(tw_deferred_create(&r, NULL, NULL), 0);
    assert_rc(tw_deferred_create(&a, NULL, NULL), 0);
    assert_rc(tw_deferred_create(&b, NULL, NULL), 0);
    assert_rc(tw_deferred_create(&e, NULL, NULL), 0);
    late_r = r;
    late_e = e;
    assert_rc(tw_deferred_add_callback(a, cb_link, &late_r), 0);
    assert_rc(tw_deferred_add_callback(a, cb_wait_on_e, NULL), 0);
    assert_rc(tw_deferred_add_callback(b, cb_link, &late_r), 0);
    /* r's chain: hand-off to a, pause, hand-off to b. */
    assert_rc(tw_deferred_callback(a, tw_result_none()), 0);
    assert_rc(tw_deferred_add_both(r, cb_pause_r, NULL), 0);
    assert_rc(tw_deferred_callback(b, tw_result_none()), 0);
    assert_ptr_equal(tw_deferred_waiting_on(a), r);
    assert_ptr_equal(tw_deferred_waiting_on(b), r);
    /* top[2] -> top[1] -> top[0] -> a -> r, fired inner first. */
    for (int i = 0; i < 3; i++) {
        assert_rc(tw_deferred_create(&top[i], NULL, NULL), 0);
        targets[i] = i ? top[i - 1] : a;
        assert_rc(tw_deferred_add_callback(top[i], cb_link, &targets[i]), 0);
        assert_rc(tw_deferred_add_callback(top[i], cb_inc, &incs), 0);
        assert_rc(tw_deferred_callback(top[i], tw_result_none()), 0);
        assert_ptr_equal(tw__deferred_innermost(top[i]), r);
    }

    assert_rc(tw_deferred_callback(r, IV(5)), 0);
    assert_int_equal(tw_deferred_paused(r), 1);
    assert_ptr_equal(tw_deferred_waiting_on(a), e);
    assert_ptr_equal(tw_deferred_waiting_on(b), r);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(tw__deferred_innermost(top[i]), e);
    assert_ptr_equal(tw__deferred_innermost(b), r);

    assert_rc(tw_deferred_callback(e, IV(40)), 0);
    tw_result res;
    assert_true(tw_deferred_peek(top[2], &res));
    assert_int_equal((intptr_t)res.ptr, 43);
    assert_int_equal(incs, 3);
    assert_rc(tw_deferred_unpause(r), 0); /* b gets what r has left: none */
    assert_null(tw_deferred_waiting_on(b));
    assert_true(tw_deferred_peek(b, &res));
    assert_true(tw_result_is_value(res) && res.ptr == NULL);
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(top[i]);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_deferred_unref(e);
    tw_deferred_unref(r);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_nest_inner_first_is_linear),
        T(test_nest_outer_first_compresses),
        T(test_nest_cancel_reaches_innermost),
        T(test_nest_cycle_through_every_link),
        T(test_nest_stale_shortcuts_cycle),
        T(test_nest_stale_shortcuts_cancel),
        T(test_nest_two_waiters_one_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
