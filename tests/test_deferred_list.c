/* Unit tests for tw_deferred_list and tw_gather_results (twine/deferred.h),
 * against Twisted's DeferredList (docs: twisted-semantics §5.8) and the
 * header's stated differences: an empty list fires at once whatever the
 * flags, the list takes its inputs' values, and cancelling a list that has
 * fired but waits on a chained Deferred forwards the cancel (#7856 fixed).
 *
 * Single-threaded and deterministic. Every test checks that no unexpected
 * diagnostic was reported and that twine's allocator has no block left. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fixture: every report is recorded; an unhandled failure is expected
 * (the tests count them), any other kind of report fails the test, and so
 * does a twine block left behind. ------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_OTHER);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAG_BIT(TW_DIAG_UNHANDLED));
}

/* Unhandled-failure reports since setup, and the latest one. */
static int unhandled(void)
{
    return tw_test_diag_count_kind(TW_DIAG_UNHANDLED);
}

static const tw_test_diag *last_unhandled(void)
{
    return tw_test_diag_last(TW_DIAG_UNHANDLED);
}

/* ---- values and results ---------------------------------------------------
 * Values are malloc'd ints (tw_test_int_value); results are taken with
 * tw_test_capture (harness.h). */

static int int_of(tw_result r)
{
    assert_true(tw_result_is_value(r));
    assert_non_null(r.ptr);
    return *(int *)r.ptr;
}

static void fire_int(tw_deferred *d, int v)
{
    assert_rc(tw_deferred_callback(d, tw_test_int_value(v)), 0);
}

/* The list value a capture took (fails unless it is one). */
static tw_list_result *captured_list(tw_test_capture *c)
{
    assert_int_equal(c->calls, 1);
    assert_true(tw_result_is_value(c->r));
    assert_non_null(c->r.ptr);
    return c->r.ptr;
}

static tw_failure *captured_failure(tw_test_capture *c)
{
    assert_int_equal(c->calls, 1);
    assert_true(tw_result_is_failure(c->r));
    return tw_result_as_failure(c->r);
}

/* The current result of d is the empty value (its chain went on with none). */
static void assert_none_now(tw_deferred *d)
{
    tw_result r;
    assert_true(tw_deferred_peek(d, &r));
    assert_true(tw_result_is_value(r));
    assert_null(r.ptr);
    assert_null(r.drop);
}

/* The current result of d is exactly failure f. */
static void assert_failure_now(tw_deferred *d, tw_failure *f)
{
    tw_result r;
    assert_true(tw_deferred_peek(d, &r));
    assert_true(tw_result_is_failure(r));
    assert_ptr_equal(tw_result_as_failure(r), f);
}

static void assert_item_value(const tw_list_result *lr, size_t i, int v)
{
    assert_true(lr->items[i].done);
    assert_true(lr->items[i].ok);
    assert_int_equal(int_of(lr->items[i].result), v);
}

static void assert_item_failure(const tw_list_result *lr, size_t i, int code)
{
    assert_true(lr->items[i].done);
    assert_false(lr->items[i].ok);
    assert_true(tw_result_is_failure(lr->items[i].result));
    assert_int_equal(tw_failure_code(tw_result_as_failure(lr->items[i].result)), code);
}

/* An errback that handles whatever failure reaches it. */
static int handled;

static tw_result handle_eb(tw_result r, void *arg)
{
    (void)arg;
    handled++;
    tw_result_drop(r);
    return tw_result_none();
}

enum { APP_CODE = -1001, APP_CODE2 = -1002 };

/* ==== plain list ============================================================= */

/* Fires when every input is done, items in input order whatever the order of
 * arrival; the list takes the values and the inputs go on with none. */
static void test_list_plain_order(void **state)
{
    tw_deferred *in[3], *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    for (int i = 0; i < 3; i++)
        in[i] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 3, 0, &list), 0);
    tw_test_capture_add(list, &c);

    fire_int(in[2], 30);
    assert_false(tw_deferred_called(list));
    fire_int(in[0], 10);
    assert_false(tw_deferred_called(list));
    fire_int(in[1], 20);
    assert_true(tw_deferred_called(list));

    lr = captured_list(&c);
    assert_int_equal(lr->count, 3);
    assert_int_equal(lr->index, SIZE_MAX);
    assert_item_value(lr, 0, 10);
    assert_item_value(lr, 1, 20);
    assert_item_value(lr, 2, 30);
    for (int i = 0; i < 3; i++)
        assert_none_now(in[i]); /* the list took the value */

    tw_test_capture_release(&c);
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* The list owns the values it took: the exact pointer with its drop; dropping
 * the list's result frees them (ASan would see a leak or a double free). */
static void test_list_takes_value_pointer(void **state)
{
    tw_deferred *in[2], *list;
    tw_test_capture c;
    tw_list_result *lr;
    int *p0 = tw_test_int_new(7), *p1 = tw_test_int_new(8);
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, 0, &list), 0);
    tw_test_capture_add(list, &c);
    assert_rc(tw_deferred_callback(in[0], tw_result_value(p0, free)), 0);
    assert_rc(tw_deferred_callback(in[1], tw_result_value(p1, free)), 0);
    lr = captured_list(&c);
    assert_ptr_equal(lr->items[0].result.ptr, p0);
    assert_ptr_equal(lr->items[1].result.ptr, p1);
    tw_test_capture_release(&c);
    tw_deferred_unref(in[0]);
    tw_deferred_unref(in[1]);
    tw_deferred_unref(list);
}

/* Nobody takes the list's result: freeing the list frees it, values and failure refs. */
static void test_list_result_freed_with_list(void **state)
{
    tw_deferred *in[2], *list;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, TW_LIST_CONSUME_ERRORS, &list), 0);
    fire_int(in[0], 1);
    assert_rc(tw_deferred_errback(in[1], tw_failure_new(APP_CODE, "boom")), 0);
    assert_true(tw_deferred_called(list));
    tw_deferred_unref(list);
    tw_deferred_unref(in[0]);
    tw_deferred_unref(in[1]);
    assert_int_equal(unhandled(), 0);
}

/* A failed input appears as ok == false with the input's own failure (the
 * list holds its own reference); the input keeps the failure. */
static void test_list_plain_failure_kept_by_input(void **state)
{
    tw_deferred *in[2], *list;
    tw_failure *f;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, 0, &list), 0);
    tw_test_capture_add(list, &c);
    f = tw_failure_new(APP_CODE, "boom %d", 1);
    assert_rc(tw_deferred_errback(in[0], f), 0); /* f is borrowed from here on */
    assert_false(tw_deferred_called(list));
    fire_int(in[1], 5);

    lr = captured_list(&c);
    assert_int_equal(lr->index, SIZE_MAX);
    assert_item_failure(lr, 0, APP_CODE);
    assert_ptr_equal(tw_result_as_failure(lr->items[0].result), f);
    assert_item_value(lr, 1, 5);
    assert_failure_now(in[0], f); /* no CONSUME_ERRORS: the input keeps it */
    tw_test_capture_release(&c);

    /* Unhandled on the input: reported once when it is freed, with its code,
     * its message and where the input was created. */
    tw_deferred_unref(in[0]);
    assert_int_equal(unhandled(), 1);
    assert_int_equal(last_unhandled()->code, APP_CODE);
    assert_non_null(strstr(last_unhandled()->message, "boom 1"));
    assert_non_null(strstr(last_unhandled()->message, "test_deferred_list.c"));
    tw_deferred_unref(in[1]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 1);
}

/* CONSUME_ERRORS: the input's own chain continues with none (callbacks added
 * later run on the callback side) and nothing is reported. */
static tw_result count_cb(tw_result r, void *arg)
{
    int *n = arg;
    assert_true(tw_result_is_value(r));
    assert_null(r.ptr);
    (*n)++;
    return r;
}

static void test_list_consume_errors(void **state)
{
    tw_deferred *in[1], *list;
    tw_test_capture c;
    tw_list_result *lr;
    int later = 0;
    (void)state;
    in[0] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 1, TW_LIST_CONSUME_ERRORS, &list), 0);
    tw_test_capture_add(list, &c);
    assert_rc(tw_deferred_errback(in[0], tw_failure_new(APP_CODE, "eaten")), 0);
    lr = captured_list(&c);
    assert_item_failure(lr, 0, APP_CODE); /* the list still has its reference */
    assert_none_now(in[0]);
    assert_rc(tw_deferred_add_callbacks(in[0], count_cb, &later, handle_eb, NULL), 0);
    assert_int_equal(later, 1);
    tw_test_capture_release(&c);
    tw_deferred_unref(in[0]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* ==== every flag combination ================================================= */

/* Three inputs: 0 -> 10, 1 -> failure APP_CODE, 2 -> 30, in one of two
 * orders. early:  1 fails, 0 succeeds, 2 succeeds.
 *       late:     0 succeeds, 1 fails, 2 succeeds.
 * FIRE_ON_ONE_ERRBACK fires at the failure, FIRE_ON_ONE_CALLBACK at the first
 * value (whichever comes first when both are set), otherwise at the end. An
 * input arriving after the list fired keeps (or with CONSUME_ERRORS loses)
 * its failure as always. */
static void run_flags_case(unsigned flags, bool fail_first)
{
    tw_deferred *in[3], *list;
    tw_failure *f;
    tw_test_capture c;
    bool fooc = flags & TW_LIST_FIRE_ON_ONE_CALLBACK;
    bool fooe = flags & TW_LIST_FIRE_ON_ONE_ERRBACK;
    bool consume = flags & TW_LIST_CONSUME_ERRORS;
    int fired_at = -1; /* step after which the list fired: 0, 1 or 2 */
    int expect_at;
    bool expect_fail;
    size_t expect_index;

    for (int i = 0; i < 3; i++)
        in[i] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 3, flags, &list), 0);
    tw_test_capture_add(list, &c);
    f = tw_failure_new(APP_CODE, "input one");

    for (int step = 0; step < 3; step++) {
        int which = step == 2 ? 2 : ((step == 0) == fail_first ? 1 : 0);
        if (which == 1)
            assert_rc(tw_deferred_errback(in[1], f), 0);
        else
            fire_int(in[which], which == 0 ? 10 : 30);
        if (fired_at < 0 && tw_deferred_called(list))
            fired_at = step;
    }

    if (fail_first) {
        if (fooe) {
            expect_at = 0, expect_fail = true, expect_index = 1;
        } else if (fooc) {
            expect_at = 1, expect_fail = false, expect_index = 0;
        } else {
            expect_at = 2, expect_fail = false, expect_index = SIZE_MAX;
        }
    } else {
        if (fooc) {
            expect_at = 0, expect_fail = false, expect_index = 0;
        } else if (fooe) {
            expect_at = 1, expect_fail = true, expect_index = 1;
        } else {
            expect_at = 2, expect_fail = false, expect_index = SIZE_MAX;
        }
    }
    if (fired_at != expect_at)
        fail_msg("flags %u (%s first): list fired after step %d, expected %d", flags,
                 fail_first ? "failure" : "value", fired_at, expect_at);
    assert_int_equal(c.calls, 1);

    if (expect_fail) {
        tw_failure *lf = captured_failure(&c);
        assert_int_equal(tw_failure_index(lf), expect_index);
        assert_ptr_equal(tw_failure_cause(lf), f);
        assert_non_null(tw_failure_find(lf, APP_CODE));
    } else {
        tw_list_result *lr = captured_list(&c);
        assert_int_equal(lr->count, 3);
        assert_int_equal(lr->index, expect_index);
        if (expect_index != SIZE_MAX) {
            assert_item_value(lr, expect_index, 10);
        } else {
            assert_item_value(lr, 0, 10);
            assert_item_value(lr, 2, 30);
        }
        /* Item 1 reached the list before it fired iff the failure came first. */
        if (fail_first || expect_index == SIZE_MAX) {
            assert_item_failure(lr, 1, APP_CODE);
            assert_ptr_equal(tw_result_as_failure(lr->items[1].result), f);
        } else {
            assert_false(lr->items[1].done);
        }
        if (expect_index == 0)
            assert_false(lr->items[2].done); /* 2 came after the list fired */
    }
    tw_test_capture_release(&c);

    /* The failed input: none with CONSUME_ERRORS (also when it came after the
     * list fired), its own failure otherwise. */
    if (consume)
        assert_none_now(in[1]);
    else
        assert_failure_now(in[1], f);

    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    if (unhandled() != (consume ? 0 : 1))
        fail_msg("flags %u (%s first): %d unhandled reports, expected %d", flags,
                 fail_first ? "failure" : "value", unhandled(), consume ? 0 : 1);
    if (!consume)
        assert_int_equal(last_unhandled()->code, APP_CODE);
    tw_test_diag_reset_kind(TW_DIAG_UNHANDLED);
}

static void test_list_every_flag_combination(void **state)
{
    (void)state;
    for (unsigned flags = 0; flags < 8; flags++) {
        run_flags_case(flags, true);
        run_flags_case(flags, false);
    }
}

/* FIRE_ON_ONE_CALLBACK when every input fails: fires with all items at the end. */
static void test_list_fooc_all_fail(void **state)
{
    tw_deferred *in[2], *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, TW_LIST_FIRE_ON_ONE_CALLBACK | TW_LIST_CONSUME_ERRORS,
                               &list), 0);
    tw_test_capture_add(list, &c);
    assert_rc(tw_deferred_errback(in[1], tw_failure_new(APP_CODE2, NULL)), 0);
    assert_false(tw_deferred_called(list));
    assert_rc(tw_deferred_errback(in[0], tw_failure_new(APP_CODE, NULL)), 0);
    lr = captured_list(&c);
    assert_int_equal(lr->index, SIZE_MAX);
    assert_item_failure(lr, 0, APP_CODE);
    assert_item_failure(lr, 1, APP_CODE2);
    tw_test_capture_release(&c);
    tw_deferred_unref(in[0]);
    tw_deferred_unref(in[1]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* FIRE_ON_ONE_ERRBACK when every input succeeds: fires normally at the end. */
static void test_list_fooe_all_succeed(void **state)
{
    tw_deferred *in[2], *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, TW_LIST_FIRE_ON_ONE_ERRBACK, &list), 0);
    tw_test_capture_add(list, &c);
    fire_int(in[0], 1);
    assert_false(tw_deferred_called(list));
    fire_int(in[1], 2);
    lr = captured_list(&c);
    assert_int_equal(lr->index, SIZE_MAX);
    assert_item_value(lr, 0, 1);
    assert_item_value(lr, 1, 2);
    tw_test_capture_release(&c);
    tw_deferred_unref(in[0]);
    tw_deferred_unref(in[1]);
    tw_deferred_unref(list);
}

/* A list failure nobody handles is itself reported when the list is freed. */
static void test_list_failure_unhandled_reported(void **state)
{
    tw_deferred *in[1], *list;
    (void)state;
    in[0] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 1, TW_LIST_FIRE_ON_ONE_ERRBACK | TW_LIST_CONSUME_ERRORS,
                               &list), 0);
    assert_rc(tw_deferred_errback(in[0], tw_failure_new(APP_CODE, "first")), 0);
    assert_true(tw_deferred_called(list));
    tw_deferred_unref(in[0]);
    assert_int_equal(unhandled(), 0); /* consumed on the input */
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 1); /* but not on the list */
}

/* ==== inputs already fired, empty lists ======================================= */

static void test_list_inputs_already_fired(void **state)
{
    tw_deferred *in[3], *list;
    tw_failure *f = tw_failure_new(APP_CODE, "was failed");
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    assert_rc(tw_deferred_succeed(&in[0], tw_test_int_new(1), free), 0);
    assert_rc(tw_deferred_fail(&in[1], tw_failure_ref(f)), 0);
    assert_rc(tw_deferred_succeed(&in[2], tw_test_int_new(3), free), 0);
    assert_rc(tw_deferred_list(in, 3, 0, &list), 0);
    assert_true(tw_deferred_called(list)); /* at construction */
    tw_test_capture_add(list, &c);
    lr = captured_list(&c);
    assert_int_equal(lr->index, SIZE_MAX);
    assert_item_value(lr, 0, 1);
    assert_item_failure(lr, 1, APP_CODE);
    assert_ptr_equal(tw_result_as_failure(lr->items[1].result), f);
    assert_item_value(lr, 2, 3);
    assert_none_now(in[0]);
    assert_failure_now(in[1], f);
    tw_test_capture_release(&c);
    tw_failure_unref(f);
    assert_rc(tw_deferred_add_errback(in[1], handle_eb, NULL), 0);
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* Already-fired inputs are processed at construction, in input order. */
static void test_list_already_fired_fire_on_one(void **state)
{
    tw_deferred *in[3], *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;

    /* FIRE_ON_ONE_CALLBACK: input 0 pending, 1 and 2 fired: fires with #1. */
    in[0] = tw_test_new_deferred();
    assert_rc(tw_deferred_succeed(&in[1], tw_test_int_new(11), free), 0);
    assert_rc(tw_deferred_succeed(&in[2], tw_test_int_new(22), free), 0);
    assert_rc(tw_deferred_list(in, 3, TW_LIST_FIRE_ON_ONE_CALLBACK, &list), 0);
    assert_true(tw_deferred_called(list));
    tw_test_capture_add(list, &c);
    lr = captured_list(&c);
    assert_int_equal(lr->index, 1);
    assert_item_value(lr, 1, 11);
    assert_false(lr->items[0].done);
    tw_test_capture_release(&c);
    tw_deferred_unref(list);
    fire_int(in[0], 0); /* after the list fired and was freed: nothing breaks */
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);

    /* FIRE_ON_ONE_ERRBACK: #0 succeeded, #1 failed, #2 pending: fails with #1. */
    assert_rc(tw_deferred_succeed(&in[0], tw_test_int_new(1), free), 0);
    assert_rc(tw_deferred_fail(&in[1], tw_failure_new(APP_CODE, NULL)), 0);
    in[2] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 3, TW_LIST_FIRE_ON_ONE_ERRBACK | TW_LIST_CONSUME_ERRORS,
                               &list), 0);
    assert_true(tw_deferred_called(list));
    tw_test_capture_add(list, &c);
    assert_int_equal(tw_failure_index(captured_failure(&c)), 1);
    assert_int_equal(tw_failure_code(tw_failure_cause(captured_failure(&c))), APP_CODE);
    tw_test_capture_release(&c);
    tw_deferred_unref(list);
    assert_rc(tw_deferred_errback(in[2], tw_failure_new(APP_CODE2, NULL)), 0);
    assert_none_now(in[2]); /* consumed even though the list had fired */
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);
    assert_int_equal(unhandled(), 0);
}

/* An empty list fires at once, whatever the flags (Twisted never fires one
 * with fireOnOneCallback; twine does). */
static void test_list_empty(void **state)
{
    tw_deferred *none[1] = {NULL};
    (void)state;
    for (unsigned flags = 0; flags < 8; flags++) {
        tw_deferred *list = NULL;
        tw_test_capture c;
        tw_list_result *lr;
        assert_rc(tw_deferred_list(none, 0, flags, &list), 0);
        assert_non_null(list);
        if (!tw_deferred_called(list))
            fail_msg("empty list with flags %u did not fire at once", flags);
        tw_test_capture_add(list, &c);
        lr = captured_list(&c);
        assert_int_equal(lr->count, 0);
        assert_int_equal(lr->index, SIZE_MAX);
        tw_test_capture_release(&c);
        tw_deferred_unref(list);
    }
}

/* A longer list, inputs fired in reverse order. */
static void test_list_many_inputs(void **state)
{
    enum { N = 1000 };
    tw_deferred **in = calloc(N, sizeof *in);
    tw_deferred *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    assert_non_null(in);
    for (int i = 0; i < N; i++)
        in[i] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, N, 0, &list), 0);
    tw_test_capture_add(list, &c);
    for (int i = N - 1; i >= 0; i--) {
        assert_false(tw_deferred_called(list));
        fire_int(in[i], i * 3);
    }
    lr = captured_list(&c);
    assert_int_equal(lr->count, N);
    for (int i = 0; i < N; i++)
        assert_item_value(lr, (size_t)i, i * 3);
    tw_test_capture_release(&c);
    for (int i = 0; i < N; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    free(in);
}

/* ==== cancellation ============================================================ */

struct canceller_state {
    int calls;
    int fire_with; /* 0: do not fire; otherwise fire with this int */
};

static void canceller(tw_deferred *d, void *arg)
{
    struct canceller_state *s = arg;
    s->calls++;
    if (s->fire_with)
        assert_rc(tw_deferred_callback(d, tw_test_int_value(s->fire_with)), 0);
}

/* Cancelling the list cancels the inputs that have not reached it; with
 * inputs that fail on cancel, a plain list then fires normally with their
 * TW_ECANCELED failures. */
static void test_list_cancel_cancels_inputs(void **state)
{
    tw_deferred *in[3], *list;
    struct canceller_state cs[3] = {{0, 0}, {0, 0}, {0, 0}};
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    for (int i = 0; i < 3; i++)
        assert_rc(tw_deferred_create(&in[i], canceller, &cs[i]), 0);
    assert_rc(tw_deferred_list(in, 3, TW_LIST_CONSUME_ERRORS, &list), 0);
    tw_test_capture_add(list, &c);
    fire_int(in[1], 42); /* reached the list: not cancelled */

    assert_rc(tw_deferred_cancel(list), 0);
    assert_int_equal(cs[0].calls, 1);
    assert_int_equal(cs[1].calls, 0);
    assert_int_equal(cs[2].calls, 1);
    assert_true(tw_deferred_called(in[0]));
    assert_true(tw_deferred_called(in[2]));

    lr = captured_list(&c);
    assert_int_equal(lr->index, SIZE_MAX);
    assert_item_failure(lr, 0, TW_ECANCELED);
    assert_item_value(lr, 1, 42);
    assert_item_failure(lr, 2, TW_ECANCELED);
    tw_test_capture_release(&c);

    /* Cancelling again, now that the list has its result, does nothing. */
    assert_rc(tw_deferred_cancel(list), 0);
    assert_int_equal(cs[0].calls + cs[1].calls + cs[2].calls, 2);
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* Inputs without cancellers fail with TW_ECANCELED; their producers' one late
 * result is then swallowed. Without CONSUME_ERRORS each input keeps its
 * failure. */
static void test_list_cancel_no_canceller(void **state)
{
    tw_deferred *in[2], *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, 0, &list), 0);
    tw_test_capture_add(list, &c);
    assert_rc(tw_deferred_cancel(list), 0);
    lr = captured_list(&c);
    assert_item_failure(lr, 0, TW_ECANCELED);
    assert_item_failure(lr, 1, TW_ECANCELED);
    tw_test_capture_release(&c);
    assert_rc(tw_deferred_callback(in[0], tw_test_int_value(1)), 0); /* swallowed */
    for (int i = 0; i < 2; i++) {
        tw_result r;
        assert_true(tw_deferred_peek(in[i], &r));
        assert_true(tw_result_is_failure(r));
        assert_int_equal(tw_failure_code(tw_result_as_failure(r)), TW_ECANCELED);
        assert_rc(tw_deferred_add_errback(in[i], handle_eb, NULL), 0);
    }
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* Inputs whose cancellers fire them with a value make the list fire normally. */
static void test_list_cancel_inputs_fire_normally(void **state)
{
    tw_deferred *in[2], *list;
    struct canceller_state cs[2] = {{0, 100}, {0, 200}};
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    for (int i = 0; i < 2; i++)
        assert_rc(tw_deferred_create(&in[i], canceller, &cs[i]), 0);
    assert_rc(tw_deferred_list(in, 2, 0, &list), 0);
    tw_test_capture_add(list, &c);
    assert_rc(tw_deferred_cancel(list), 0);
    assert_int_equal(cs[0].calls, 1);
    assert_int_equal(cs[1].calls, 1);
    lr = captured_list(&c); /* a value, not TW_ECANCELED */
    assert_int_equal(lr->index, SIZE_MAX);
    assert_item_value(lr, 0, 100);
    assert_item_value(lr, 1, 200);
    tw_test_capture_release(&c);
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* FIRE_ON_ONE_ERRBACK + cancel: the first cancelled input fails the list. */
static void test_list_cancel_fooe(void **state)
{
    tw_deferred *in[2], *list;
    tw_test_capture c;
    tw_failure *lf;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, TW_LIST_FIRE_ON_ONE_ERRBACK | TW_LIST_CONSUME_ERRORS,
                               &list), 0);
    tw_test_capture_add(list, &c);
    assert_rc(tw_deferred_cancel(list), 0);
    lf = captured_failure(&c);
    assert_int_equal(tw_failure_index(lf), 0);
    assert_non_null(tw_failure_find(lf, TW_ECANCELED));
    tw_test_capture_release(&c);
    assert_true(tw_deferred_called(in[1]));
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* The list has fired and a callback on it returned a Deferred: cancelling the
 * list cancels the Deferred it waits on (Twisted #7856, fixed here). */
static tw_deferred *inner;

static tw_result return_inner(tw_result r, void *arg)
{
    int *seen = arg;
    tw_list_result *lr = r.ptr;
    *seen = (int)lr->count;
    tw_result_drop(r);
    return tw_result_deferred(tw_deferred_ref(inner));
}

static void test_list_cancel_forwards_when_waiting(void **state)
{
    tw_deferred *in[1], *list;
    struct canceller_state in_cs = {0, 0}, inner_cs = {0, 0};
    tw_test_capture c;
    int seen = -1;
    (void)state;
    assert_rc(tw_deferred_create(&in[0], canceller, &in_cs), 0);
    assert_rc(tw_deferred_create(&inner, canceller, &inner_cs), 0);
    assert_rc(tw_deferred_list(in, 1, 0, &list), 0);
    assert_rc(tw_deferred_add_callback(list, return_inner, &seen), 0);
    tw_test_capture_add(list, &c);
    fire_int(in[0], 1);
    assert_int_equal(seen, 1);
    assert_true(tw_deferred_called(list));
    assert_ptr_equal(tw_deferred_waiting_on(list), inner);
    assert_int_equal(c.calls, 0);

    assert_rc(tw_deferred_cancel(list), 0);
    assert_int_equal(inner_cs.calls, 1);
    assert_int_equal(in_cs.calls, 0); /* it had reached the list */
    assert_true(tw_deferred_called(inner));
    assert_null(tw_deferred_waiting_on(list));
    assert_int_equal(tw_failure_code(captured_failure(&c)), TW_ECANCELED);
    tw_test_capture_release(&c);

    tw_deferred_unref(inner);
    inner = NULL;
    tw_deferred_unref(in[0]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* An input that has fired but waits on a chained Deferred has not reached the
 * list. Even if the caller lets go of it meanwhile, cancelling the list
 * reaches it, and through it the Deferred it waits on. */
static tw_deferred *chained;

static tw_result return_chained(tw_result r, void *arg)
{
    (void)arg;
    tw_result_drop(r);
    return tw_result_deferred(tw_deferred_ref(chained));
}

static void test_list_cancel_input_waiting_on_chain(void **state)
{
    tw_deferred *in[2], *list;
    struct canceller_state cs = {0, 0};
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_create(&chained, canceller, &cs), 0);
    assert_rc(tw_deferred_add_callback(in[0], return_chained, NULL), 0);
    assert_rc(tw_deferred_list(in, 2, TW_LIST_CONSUME_ERRORS, &list), 0);
    tw_test_capture_add(list, &c);
    fire_int(in[0], 1);
    assert_ptr_equal(tw_deferred_waiting_on(in[0]), chained);
    tw_deferred_unref(in[0]); /* the caller lets go; the chain still needs it */
    in[0] = NULL;
    assert_false(tw_deferred_called(list));

    assert_rc(tw_deferred_cancel(list), 0);
    assert_int_equal(cs.calls, 1);
    lr = captured_list(&c);
    assert_item_failure(lr, 0, TW_ECANCELED);
    assert_item_failure(lr, 1, TW_ECANCELED);
    tw_test_capture_release(&c);
    tw_deferred_unref(chained);
    chained = NULL;
    tw_deferred_unref(in[1]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* A list that fired early (FIRE_ON_ONE_CALLBACK) and waits on nothing has its
 * result: cancelling it does nothing, and the inputs that never reached it
 * are not cancelled (Twisted: cancel of a fired DeferredList is a no-op). */
static void test_list_cancel_after_early_fire(void **state)
{
    tw_deferred *in[2], *list;
    struct canceller_state cs = {0, 0};
    tw_test_capture c;
    (void)state;
    in[0] = tw_test_new_deferred();
    assert_rc(tw_deferred_create(&in[1], canceller, &cs), 0);
    assert_rc(tw_deferred_list(in, 2, TW_LIST_FIRE_ON_ONE_CALLBACK, &list), 0);
    tw_test_capture_add(list, &c);
    fire_int(in[0], 1);
    assert_int_equal(captured_list(&c)->index, 0);
    assert_rc(tw_deferred_cancel(list), 0);
    assert_int_equal(cs.calls, 0);
    assert_false(tw_deferred_called(in[1]));
    tw_test_capture_release(&c);
    fire_int(in[1], 2);
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* Invalid arguments are TW_EINVAL and attach nothing: an input of a refused
 * list keeps its own value when it fires. */
static void test_list_invalid_arguments(void **state)
{
    tw_deferred *in[2], *list = NULL;
    tw_result r;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = NULL;
    assert_rc(tw_deferred_list(in, 1, 0, NULL), TW_EINVAL);
    assert_rc(tw_deferred_list(NULL, 1, 0, &list), TW_EINVAL);
    assert_rc(tw_deferred_list(in, 2, 0, &list), TW_EINVAL); /* a NULL input */
    assert_rc(tw_gather_results(in, 2, false, &list), TW_EINVAL);
    assert_null(list);
    fire_int(in[0], 5);
    assert_true(tw_deferred_peek(in[0], &r));
    assert_int_equal(int_of(r), 5);
    tw_deferred_unref(in[0]);
}

/* ==== abandoned inputs ========================================================= */

/* The caller drops its last reference to an input that never fired: the input
 * is fired with TW_EABANDONED and the list learns so. The list must not touch
 * the freed input afterwards (a later cancel of the list only reaches the
 * others). */
static void test_list_abandoned_input(void **state)
{
    tw_deferred *in[2], *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, TW_LIST_CONSUME_ERRORS, &list), 0);
    tw_test_capture_add(list, &c);
    tw_deferred_unref(in[0]);
    in[0] = NULL;
    assert_false(tw_deferred_called(list));
    assert_int_equal(unhandled(), 0); /* consumed */
    assert_rc(tw_deferred_cancel(list), 0); /* cancels in[1] only */
    lr = captured_list(&c);
    assert_item_failure(lr, 0, TW_EABANDONED);
    assert_item_failure(lr, 1, TW_ECANCELED);
    tw_test_capture_release(&c);
    tw_deferred_unref(in[1]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 0);
}

/* Without CONSUME_ERRORS the abandoned input keeps its failure, which is
 * reported when it is freed; the list still sees it. */
static void test_list_abandoned_input_reported(void **state)
{
    tw_deferred *in[2], *list;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_deferred_list(in, 2, 0, &list), 0);
    tw_test_capture_add(list, &c);
    tw_deferred_unref(in[1]);
    assert_int_equal(unhandled(), 1);
    assert_int_equal(last_unhandled()->code, TW_EABANDONED);
    fire_int(in[0], 9);
    lr = captured_list(&c);
    assert_item_value(lr, 0, 9);
    assert_item_failure(lr, 1, TW_EABANDONED);
    tw_test_capture_release(&c);
    tw_deferred_unref(in[0]);
    tw_deferred_unref(list);
    assert_int_equal(unhandled(), 1);
}

/* ==== gather_results ============================================================ */

static void test_gather_values_in_order(void **state)
{
    tw_deferred *in[3], *g;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    for (int i = 0; i < 3; i++)
        in[i] = tw_test_new_deferred();
    assert_rc(tw_gather_results(in, 3, false, &g), 0);
    tw_test_capture_add(g, &c);
    fire_int(in[1], 2);
    fire_int(in[2], 3);
    assert_false(tw_deferred_called(g));
    fire_int(in[0], 1);
    lr = captured_list(&c);
    assert_int_equal(lr->count, 3);
    for (int i = 0; i < 3; i++)
        assert_item_value(lr, (size_t)i, i + 1);
    for (int i = 0; i < 3; i++)
        assert_none_now(in[i]);
    tw_test_capture_release(&c);
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(g);
}

/* The first failure wins: that input's code, "input #i failed: ...", the
 * input's failure as cause, index i. Later failures change nothing. */
static void run_gather_failure(bool consume)
{
    tw_deferred *in[3], *g;
    tw_failure *f1, *f2, *gf;
    tw_test_capture c;
    (void)consume;
    for (int i = 0; i < 3; i++)
        in[i] = tw_test_new_deferred();
    assert_rc(tw_gather_results(in, 3, consume, &g), 0);
    tw_test_capture_add(g, &c);
    fire_int(in[0], 1);
    f1 = tw_failure_new(APP_CODE, "disk on fire");
    assert_rc(tw_deferred_errback(in[1], f1), 0);
    assert_true(tw_deferred_called(g));
    f2 = tw_failure_new(APP_CODE2, "second");
    assert_rc(tw_deferred_errback(in[2], f2), 0);

    gf = captured_failure(&c);
    assert_int_equal(tw_failure_code(gf), APP_CODE);
    assert_int_equal(tw_failure_index(gf), 1);
    assert_ptr_equal(tw_failure_cause(gf), f1);
    if (strncmp(tw_failure_message(gf), "input #1 failed: ", 17) != 0)
        fail_msg("gather failure message: \"%s\"", tw_failure_message(gf));
    assert_non_null(strstr(tw_failure_message(gf), "disk on fire"));
    assert_int_equal(tw_failure_index(f1), SIZE_MAX); /* only the list's failure has one */
    tw_test_capture_release(&c);

    if (consume) {
        assert_none_now(in[1]);
        assert_none_now(in[2]);
    } else {
        assert_failure_now(in[1], f1);
        assert_failure_now(in[2], f2);
        assert_rc(tw_deferred_add_errback(in[1], handle_eb, NULL), 0);
        assert_rc(tw_deferred_add_errback(in[2], handle_eb, NULL), 0);
    }
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(in[i]);
    tw_deferred_unref(g);
    assert_int_equal(unhandled(), 0);
}

static void test_gather_first_failure(void **state)
{
    (void)state;
    run_gather_failure(false);
}

static void test_gather_first_failure_consume(void **state)
{
    (void)state;
    run_gather_failure(true);
}

/* Not consumed and not handled: each failed input reports once. */
static void test_gather_unconsumed_reported(void **state)
{
    tw_deferred *in[2], *g;
    tw_test_capture c;
    (void)state;
    in[0] = tw_test_new_deferred();
    in[1] = tw_test_new_deferred();
    assert_rc(tw_gather_results(in, 2, false, &g), 0);
    tw_test_capture_add(g, &c);
    assert_rc(tw_deferred_errback(in[0], tw_failure_new(APP_CODE, NULL)), 0);
    tw_test_capture_release(&c);
    tw_deferred_unref(g);
    tw_deferred_unref(in[0]);
    assert_int_equal(unhandled(), 1);
    assert_int_equal(last_unhandled()->code, APP_CODE);
    fire_int(in[1], 5); /* after the gather was freed */
    tw_deferred_unref(in[1]);
    assert_int_equal(unhandled(), 1);
}

static void test_gather_already_fired_and_empty(void **state)
{
    tw_deferred *in[2], *g;
    tw_test_capture c;
    tw_list_result *lr;
    (void)state;
    assert_rc(tw_deferred_succeed(&in[0], tw_test_int_new(4), free), 0);
    assert_rc(tw_deferred_succeed(&in[1], tw_test_int_new(5), free), 0);
    assert_rc(tw_gather_results(in, 2, false, &g), 0);
    assert_true(tw_deferred_called(g));
    tw_test_capture_add(g, &c);
    lr = captured_list(&c);
    assert_item_value(lr, 0, 4);
    assert_item_value(lr, 1, 5);
    tw_test_capture_release(&c);
    tw_deferred_unref(g);
    tw_deferred_unref(in[0]);
    tw_deferred_unref(in[1]);

    assert_rc(tw_gather_results(in, 0, true, &g), 0);
    assert_true(tw_deferred_called(g));
    tw_test_capture_add(g, &c);
    assert_int_equal(captured_list(&c)->count, 0);
    tw_test_capture_release(&c);
    tw_deferred_unref(g);
}

/* Cancelling a gather cancels every input. */
static void test_gather_cancel(void **state)
{
    tw_deferred *in[2], *g;
    struct canceller_state cs[2] = {{0, 0}, {0, 0}};
    tw_test_capture c;
    (void)state;
    for (int i = 0; i < 2; i++)
        assert_rc(tw_deferred_create(&in[i], canceller, &cs[i]), 0);
    assert_rc(tw_gather_results(in, 2, true, &g), 0);
    tw_test_capture_add(g, &c);
    assert_rc(tw_deferred_cancel(g), 0);
    assert_int_equal(cs[0].calls, 1);
    assert_int_equal(cs[1].calls, 1);
    assert_int_equal(tw_failure_code(captured_failure(&c)), TW_ECANCELED);
    assert_int_equal(tw_failure_index(captured_failure(&c)), 0);
    tw_test_capture_release(&c);
    for (int i = 0; i < 2; i++) {
        assert_none_now(in[i]);
        tw_deferred_unref(in[i]);
    }
    tw_deferred_unref(g);
    assert_int_equal(unhandled(), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_list_plain_order),
        T(test_list_takes_value_pointer),
        T(test_list_result_freed_with_list),
        T(test_list_plain_failure_kept_by_input),
        T(test_list_consume_errors),
        T(test_list_every_flag_combination),
        T(test_list_fooc_all_fail),
        T(test_list_fooe_all_succeed),
        T(test_list_failure_unhandled_reported),
        T(test_list_inputs_already_fired),
        T(test_list_already_fired_fire_on_one),
        T(test_list_empty),
        T(test_list_many_inputs),
        T(test_list_cancel_cancels_inputs),
        T(test_list_cancel_no_canceller),
        T(test_list_cancel_inputs_fire_normally),
        T(test_list_cancel_fooe),
        T(test_list_cancel_forwards_when_waiting),
        T(test_list_cancel_input_waiting_on_chain),
        T(test_list_cancel_after_early_fire),
        T(test_list_invalid_arguments),
        T(test_list_abandoned_input),
        T(test_list_abandoned_input_reported),
        T(test_gather_values_in_order),
        T(test_gather_first_failure),
        T(test_gather_first_failure_consume),
        T(test_gather_unconsumed_reported),
        T(test_gather_already_fired_and_empty),
        T(test_gather_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
