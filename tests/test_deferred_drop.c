/*
 * Arguments of calls that may never be made: the _full forms of the deferred
 * and reactor layers take a drop function for them, and drop the argument
 * exactly once, once the call can no longer come, on every path: the call
 * made, the call known never to come (the result first, a cancel, an
 * abandoned Deferred, a reactor that never ran or shut down first), and an
 * error return.
 *
 * Arguments are heap blocks (malloc) freed by their drop function, so under
 * AddressSanitizer the leak check at exit fails the run if any path forgets
 * one, and a drop made too early turns the call's later use of its argument
 * into a use after free. Each drop is also counted, and the order of calls
 * and drops traced, so an ordinary build checks "exactly once, after the
 * last use" as well.
 */
#include "harness.h"

#include <twine/reactor.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IV(n) tw_result_value((void *)(intptr_t)(n), NULL)

/* ==== arguments ===================================================================== */

static int drops; /* atomic: pool threads drop too */

typedef struct arg {
    int id;
} arg;

static arg *arg_new(int id)
{
    arg *a = malloc(sizeof *a);
    assert_non_null(a);
    a->id = id;
    return a;
}

/* Loop thread: counted and traced. */
static void arg_drop(void *p)
{
    arg *a = p;
    tw_test_tr("drop%d", a->id);
    __atomic_fetch_add(&drops, 1, __ATOMIC_RELAXED);
    free(a);
}

/* Any thread: counted only. */
static void arg_drop_quiet(void *p)
{
    __atomic_fetch_add(&drops, 1, __ATOMIC_RELAXED);
    free(p);
}

static int ndrops(void)
{
    return __atomic_load_n(&drops, __ATOMIC_RELAXED);
}

static int setup(void **state)
{
    (void)state;
    drops = 0;
    tw_test_trace_clear();
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

/* An allocator that refuses every allocation while `refusing`, to reach the
 * TW_ENOMEM paths; otherwise malloc's. */
static bool refusing;

static void *t_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return refusing ? NULL : malloc(size);
}
static void *t_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)ctx;
    (void)old_size;
    return refusing ? NULL : realloc(ptr, new_size);
}
static void t_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}
static const tw_allocator testing_allocator = {t_alloc, t_realloc, t_free, NULL};

/* Installs the allocator (no twine block may be live), refusing or not. */
static void use_allocator(bool refuse)
{
    assert_int_equal(tw_allocator_live(), 0);
    assert_rc(tw_set_allocator(&testing_allocator), 0);
    refusing = refuse;
}

static void default_allocator(void)
{
    refusing = false;
    assert_rc(tw_set_allocator(NULL), 0);
}

/* ==== callbacks ===================================================================== */

static tw_result cb_note(tw_result r, void *tag)
{
    if (tw_result_is_failure(r))
        tw_test_tr("%s:%s", (const char *)tag,
                   tw_err_name(tw_failure_code(tw_result_as_failure(r))));
    else
        tw_test_tr("%s:%ld", (const char *)tag, (long)(intptr_t)r.ptr);
    tw_result_drop(r);
    return tw_result_none();
}

/* ==== canceller arguments =========================================================== */

enum { C_NOTHING, C_FIRE, C_CANCEL_AGAIN };
static int canceller_mode;
static int canceller_drops_seen; /* drops counted when the canceller returned */

static void canceller(tw_deferred *d, void *p)
{
    arg *a = p; /* read: it must still be there */
    tw_test_tr("cancel%d", a->id);
    if (canceller_mode == C_FIRE)
        assert_rc(tw_deferred_callback(d, IV(9)), 0);
    else if (canceller_mode == C_CANCEL_AGAIN)
        assert_rc(tw_deferred_cancel(d), 0);
    tw_test_tr("cancel%d-end", a->id);
    canceller_drops_seen = ndrops();
}

/* Fired by its producer: the canceller will never run. The argument goes as
 * the firing call finishes, after the callbacks it ran; a later cancel runs
 * nothing. */
static void test_canceller_arg_fired_first(void **state)
{
    (void)state;
    tw_deferred *d;
    assert_rc(tw_deferred_create_full(&d, canceller, arg_new(1), arg_drop), 0);
    assert_rc(tw_deferred_add_both(d, cb_note, "cb"), 0);
    assert_int_equal(ndrops(), 0);
    assert_rc(tw_deferred_callback(d, IV(4)), 0);
    assert_int_equal(ndrops(), 1);
    assert_rc(tw_deferred_cancel(d), 0);
    tw_deferred_unref(d);
    EXPECT_TRACE("cb:4 drop1");
    assert_int_equal(ndrops(), 1);

    /* By errback, with the chain paused: the same. */
    tw_test_trace_clear();
    assert_rc(tw_deferred_create_full(&d, canceller, arg_new(2), arg_drop), 0);
    assert_rc(tw_deferred_pause(d), 0);
    assert_rc(tw_deferred_errback(d, tw_failure_new(TW_EBUSY, NULL)), 0);
    assert_int_equal(ndrops(), 2);
    assert_rc(tw_deferred_add_both(d, cb_note, "eb"), 0);
    assert_rc(tw_deferred_unpause(d), 0);
    tw_deferred_unref(d);
    EXPECT_TRACE("drop2 eb:TW_EBUSY");
}

/* Cancelled: the canceller runs with its argument, which goes only after it
 * has returned, also when the canceller fires the Deferred itself or
 * cancels it again from inside. */
static void test_canceller_arg_cancelled(void **state)
{
    (void)state;
    static const char *want[] = {
        "cancel1 cancel1-end eb:TW_ECANCELED drop1",
        "cancel2 cb:9 cancel2-end drop2",
        "cancel3 eb:TW_ECANCELED cancel3-end drop3",
    };
    const int modes[] = {C_NOTHING, C_FIRE, C_CANCEL_AGAIN};
    for (int i = 0; i < 3; i++) {
        tw_deferred *d;
        tw_test_trace_clear();
        canceller_mode = modes[i];
        assert_rc(tw_deferred_create_full(&d, canceller, arg_new(i + 1), arg_drop), 0);
        assert_rc(tw_deferred_add_callbacks(d, cb_note, "cb", cb_note, "eb"), 0);
        assert_rc(tw_deferred_cancel(d), 0);
        assert_int_equal(canceller_drops_seen, i);
        assert_int_equal(ndrops(), i + 1);
        assert_rc(tw_deferred_cancel(d), 0); /* fired: nothing more */
        tw_deferred_unref(d);
        EXPECT_TRACE(want[i]);
    }
}

/* Abandoned (the last reference goes before it fires): fired with
 * TW_EABANDONED, and the argument goes. */
static void test_canceller_arg_abandoned(void **state)
{
    (void)state;
    tw_deferred *d;
    assert_rc(tw_deferred_create_full(&d, canceller, arg_new(1), arg_drop), 0);
    assert_rc(tw_deferred_add_errback(d, cb_note, "eb"), 0);
    tw_deferred_unref(d);
    EXPECT_TRACE("eb:TW_EABANDONED drop1");
}

/* The drop may release the very reference the producer fires through: a
 * producer context that owns the Deferred, freed by the drop. */
typedef struct producer {
    tw_deferred *d;
} producer;

static void producer_drop(void *p)
{
    producer *pr = p;
    tw_test_tr("producer-drop");
    __atomic_fetch_add(&drops, 1, __ATOMIC_RELAXED);
    tw_deferred_unref(pr->d);
    free(pr);
}

static void test_canceller_arg_drop_releases_the_deferred(void **state)
{
    (void)state;
    producer *pr = malloc(sizeof *pr);
    assert_non_null(pr);
    assert_rc(tw_deferred_create_full(&pr->d, canceller, pr, producer_drop), 0);
    assert_rc(tw_deferred_add_both(pr->d, cb_note, "cb"), 0);
    /* The producer fires through its own (and only) reference. */
    assert_rc(tw_deferred_callback(pr->d, IV(5)), 0);
    EXPECT_TRACE("cb:5 producer-drop");
    assert_int_equal(tw_test_diag_count(), 0);
}

/* Errors: the argument is consumed all the same. */
static void test_canceller_arg_errors(void **state)
{
    (void)state;
    tw_deferred *d = NULL;
    assert_rc(tw_deferred_create_full(NULL, canceller, arg_new(1), arg_drop), TW_EINVAL);
    assert_int_equal(ndrops(), 1);
    use_allocator(true);
    assert_rc(tw_deferred_create_full(&d, canceller, arg_new(2), arg_drop), TW_ENOMEM);
    default_allocator();
    assert_int_equal(ndrops(), 2);
    assert_null(d);
    /* No drop function: nothing is called (the argument stays the caller's). */
    arg *a = arg_new(3);
    assert_rc(tw_deferred_create_full(&d, canceller, a, NULL), 0);
    assert_rc(tw_deferred_callback(d, IV(1)), 0);
    tw_deferred_unref(d);
    assert_int_equal(ndrops(), 2);
    free(a);
    EXPECT_TRACE("drop1 drop2");
}

/* ==== timeout arguments ============================================================= */

static int timeouts; /* on_timeout calls */

static tw_result on_timeout(tw_result r, double seconds, void *p)
{
    arg *a = p;
    timeouts++;
    tw_test_tr("timeout%d@%g", a->id, seconds);
    return r;
}

/* The result comes first: on_timeout can never run, and its argument goes
 * at once (not at some later tick of the clock). */
static void test_timeout_arg_result_first(void **state)
{
    (void)state;
    tw_fake_clock *fc;
    tw_deferred *d;
    assert_rc(tw_fake_clock_create(&fc), 0);
    tw_clock *clk = tw_fake_clock_clock(fc);
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    assert_rc(tw_deferred_add_timeout_full(d, 1.0, clk, on_timeout, arg_new(1), arg_drop), 0);
    assert_rc(tw_deferred_add_both(d, cb_note, "cb"), 0);
    assert_rc(tw_deferred_callback(d, IV(3)), 0);
    assert_int_equal(ndrops(), 1);
    assert_int_equal(tw_fake_clock_pending(fc), 0);
    assert_rc(tw_fake_clock_advance(fc, 2.0), 0);
    assert_int_equal(timeouts, 0);
    tw_deferred_unref(d);
    EXPECT_TRACE("drop1 cb:3");
    assert_rc(tw_fake_clock_destroy(fc), 0);
}

/* The timeout comes first: on_timeout runs with its argument, which goes
 * right after. */
static void test_timeout_arg_timeout_first(void **state)
{
    (void)state;
    tw_fake_clock *fc;
    tw_deferred *d;
    timeouts = 0;
    assert_rc(tw_fake_clock_create(&fc), 0);
    tw_clock *clk = tw_fake_clock_clock(fc);
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    assert_rc(tw_deferred_add_timeout_full(d, 1.0, clk, on_timeout, arg_new(1), arg_drop), 0);
    assert_rc(tw_deferred_add_both(d, cb_note, "eb"), 0);
    assert_rc(tw_fake_clock_advance(fc, 1.0), 0);
    assert_int_equal(timeouts, 1);
    assert_int_equal(ndrops(), 1);
    assert_rc(tw_deferred_callback(d, IV(3)), 0); /* the late result, swallowed */
    tw_deferred_unref(d);
    EXPECT_TRACE("timeout1@1 drop1 eb:TW_ECANCELED");
    assert_rc(tw_fake_clock_destroy(fc), 0);
}

/* Abandoned with the timer pending: the chain runs (TW_EABANDONED), the
 * timer is cancelled, the argument goes. */
static void test_timeout_arg_abandoned(void **state)
{
    (void)state;
    tw_fake_clock *fc;
    tw_deferred *d;
    timeouts = 0;
    assert_rc(tw_fake_clock_create(&fc), 0);
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    assert_rc(tw_deferred_add_timeout_full(d, 1.0, tw_fake_clock_clock(fc), on_timeout,
                                           arg_new(1), arg_drop),
              0);
    assert_rc(tw_deferred_add_errback(d, cb_note, "eb"), 0);
    tw_deferred_unref(d);
    assert_int_equal(tw_fake_clock_pending(fc), 0);
    assert_int_equal(timeouts, 0);
    EXPECT_TRACE("drop1 eb:TW_EABANDONED");
    assert_rc(tw_fake_clock_destroy(fc), 0);
}

static void test_timeout_arg_errors(void **state)
{
    (void)state;
    tw_fake_clock *fc;
    tw_deferred *d;
    assert_rc(tw_fake_clock_create(&fc), 0);
    tw_clock *clk = tw_fake_clock_clock(fc);
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    assert_rc(tw_deferred_add_timeout_full(NULL, 1.0, clk, on_timeout, arg_new(1), arg_drop),
              TW_EINVAL);
    assert_rc(tw_deferred_add_timeout_full(d, NAN, clk, on_timeout, arg_new(2), arg_drop),
              TW_EINVAL);
    assert_rc(tw_deferred_add_timeout_full(d, -1.0, clk, on_timeout, arg_new(3), arg_drop),
              TW_EINVAL);
    assert_rc(tw_deferred_add_timeout_full(d, 1.0, NULL, on_timeout, arg_new(4), arg_drop),
              TW_EINVAL);
    assert_int_equal(ndrops(), 4);
    tw_deferred_unref(d);
    assert_rc(tw_fake_clock_destroy(fc), 0);

    /* Out of memory for the timeout's context. */
    use_allocator(false);
    assert_rc(tw_fake_clock_create(&fc), 0);
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    refusing = true;
    assert_rc(tw_deferred_add_timeout_full(d, 1.0, tw_fake_clock_clock(fc), on_timeout,
                                           arg_new(5), arg_drop),
              TW_ENOMEM);
    refusing = false;
    assert_int_equal(ndrops(), 5);
    assert_int_equal(tw_fake_clock_pending(fc), 0);
    assert_rc(tw_deferred_callback(d, IV(1)), 0);
    tw_deferred_unref(d);
    assert_rc(tw_fake_clock_destroy(fc), 0);
    default_allocator();
    EXPECT_TRACE("drop1 drop2 drop3 drop4 drop5");
}

/* ==== run arguments ================================================================= */

static tw_deferred *pending_result; /* what slow_fn returns, when set */

static tw_result quick_fn(void *p)
{
    arg *a = p;
    tw_test_tr("fn%d", a->id);
    return IV(a->id * 10);
}

static tw_result slow_fn(void *p)
{
    arg *a = p;
    tw_test_tr("fn%d", a->id);
    return tw_result_deferred(tw_deferred_ref(pending_result));
}

/* A synchronous function: the argument goes after it ran and the lock was
 * released, before the run's Deferred reaches its own callbacks. */
static void test_run_arg_sync(void **state)
{
    (void)state;
    tw_dlock l = TW_DLOCK_INIT;
    tw_deferred *d;
    assert_rc(tw_dlock_run_full(&l, quick_fn, arg_new(1), arg_drop, &d), 0);
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(ndrops(), 1);
    assert_rc(tw_deferred_add_both(d, cb_note, "cb"), 0);
    tw_deferred_unref(d);
    /* out NULL: the same. */
    assert_rc(tw_dlock_run_full(&l, quick_fn, arg_new(2), arg_drop, NULL), 0);
    EXPECT_TRACE("fn1 drop1 cb:10 fn2 drop2");
}

/* A function that returns a Deferred: the argument stays until that
 * Deferred has fired and the lock is back. */
static void test_run_arg_async(void **state)
{
    (void)state;
    tw_dlock l = TW_DLOCK_INIT;
    tw_deferred *d;
    assert_rc(tw_deferred_create(&pending_result, NULL, NULL), 0);
    assert_rc(tw_dlock_run_full(&l, slow_fn, arg_new(1), arg_drop, &d), 0);
    assert_rc(tw_deferred_add_both(d, cb_note, "cb"), 0);
    assert_true(tw_dlock_locked(&l));
    assert_int_equal(ndrops(), 0);
    assert_rc(tw_deferred_callback(pending_result, IV(77)), 0);
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(ndrops(), 1);
    tw_deferred_unref(pending_result);
    tw_deferred_unref(d);
    EXPECT_TRACE("fn1 drop1 cb:77");
}

/* A pending acquire cancelled: the function never runs; its argument goes
 * when the acquire fails. Lock and semaphore alike. */
static void test_run_arg_cancelled(void **state)
{
    (void)state;
    tw_dlock l = TW_DLOCK_INIT;
    tw_dsem s;
    tw_deferred *held, *d;
    assert_rc(tw_dlock_acquire(&l, &held), 0);
    assert_rc(tw_dlock_run_full(&l, quick_fn, arg_new(1), arg_drop, &d), 0);
    assert_rc(tw_deferred_add_both(d, cb_note, "eb"), 0);
    assert_int_equal(tw_dlock_waiting(&l), 1);
    assert_rc(tw_deferred_cancel(d), 0);
    assert_int_equal(tw_dlock_waiting(&l), 0);
    assert_int_equal(ndrops(), 1);
    assert_rc(tw_dlock_release(&l), 0);
    tw_deferred_unref(d);
    tw_deferred_unref(held);

    assert_rc(tw_dsem_init(&s, 1), 0);
    assert_rc(tw_dsem_acquire(&s, &held), 0);
    assert_rc(tw_dsem_run_full(&s, quick_fn, arg_new(2), arg_drop, &d), 0);
    assert_rc(tw_deferred_add_both(d, cb_note, "eb"), 0);
    assert_rc(tw_deferred_cancel(d), 0);
    assert_rc(tw_dsem_release(&s), 0);
    assert_int_equal(tw_dsem_tokens(&s), 1);
    tw_deferred_unref(d);
    tw_deferred_unref(held);

    /* Granted later instead: runs, then drops. */
    assert_rc(tw_dsem_acquire(&s, &held), 0);
    assert_rc(tw_dsem_run_full(&s, quick_fn, arg_new(3), arg_drop, NULL), 0);
    assert_int_equal(ndrops(), 2);
    assert_rc(tw_dsem_release(&s), 0);
    tw_deferred_unref(held);
    EXPECT_TRACE("drop1 eb:TW_ECANCELED drop2 eb:TW_ECANCELED fn3 drop3");
}

static void test_run_arg_errors(void **state)
{
    (void)state;
    tw_dlock l = TW_DLOCK_INIT;
    tw_dsem zeroed, s;
    tw_deferred *d;
    memset(&zeroed, 0, sizeof zeroed);
    assert_rc(tw_dlock_run_full(NULL, quick_fn, arg_new(1), arg_drop, &d), TW_EINVAL);
    assert_rc(tw_dlock_run_full(&l, NULL, arg_new(2), arg_drop, &d), TW_EINVAL);
    assert_rc(tw_dsem_run_full(&zeroed, quick_fn, arg_new(3), arg_drop, &d), TW_EINVAL);
    assert_rc(tw_dsem_run_full(NULL, quick_fn, arg_new(4), arg_drop, &d), TW_EINVAL);
    assert_int_equal(ndrops(), 4);
    /* Out of memory for the acquire's Deferred. */
    assert_rc(tw_dsem_init(&s, 1), 0);
    use_allocator(true);
    assert_rc(tw_dsem_run_full(&s, quick_fn, arg_new(5), arg_drop, &d), TW_ENOMEM);
    assert_rc(tw_dlock_run_full(&l, quick_fn, arg_new(6), arg_drop, &d), TW_ENOMEM);
    default_allocator();
    assert_int_equal(ndrops(), 6);
    assert_int_equal(tw_dsem_tokens(&s), 1);
    assert_false(tw_dlock_locked(&l));
    EXPECT_TRACE("drop1 drop2 drop3 drop4 drop5 drop6");
}

/* ==== reactor: call_later =========================================================== */

static void call_fn(void *p)
{
    arg *a = p;
    tw_test_tr("call%d", a->id);
}

static tw_reactor *fake_reactor(void)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    tw_reactor *r;
    cfg.fake_clock = true;
    assert_rc(tw_reactor_create_with(&cfg, &r), 0);
    return r;
}

static void test_call_later_arg(void **state)
{
    (void)state;
    tw_reactor *r = fake_reactor();
    tw_delayed_call *c;
    /* Runs: dropped after the call. */
    assert_rc(tw_reactor_call_later_full(r, 1.0, call_fn, arg_new(1), arg_drop, NULL), 0);
    /* Cancelled: dropped by the cancel, never called. */
    assert_rc(tw_reactor_call_later_full(r, 1.0, call_fn, arg_new(2), arg_drop, &c), 0);
    assert_rc(tw_delayed_call_cancel(c), 0);
    assert_int_equal(ndrops(), 1);
    assert_rc(tw_delayed_call_cancel(c), TW_EALREADY);
    tw_delayed_call_unref(c);
    /* Moved, then run: one drop. */
    assert_rc(tw_reactor_call_later_full(r, 5.0, call_fn, arg_new(3), arg_drop, &c), 0);
    assert_rc(tw_delayed_call_reset(c, 2.0), 0);
    assert_rc(tw_reactor_advance(r, 2.0), 0);
    tw_delayed_call_unref(c);
    /* Still pending when the reactor goes: dropped, never called. */
    assert_rc(tw_reactor_call_later_full(r, 100.0, call_fn, arg_new(4), arg_drop, NULL), 0);
    assert_int_equal(ndrops(), 3);
    assert_rc(tw_reactor_destroy(r), 0);
    assert_int_equal(ndrops(), 4);
    EXPECT_TRACE("drop2 call1 drop1 call3 drop3 drop4");
}

static void test_call_later_arg_errors(void **state)
{
    (void)state;
    tw_reactor *r = fake_reactor();
    assert_rc(tw_reactor_call_later_full(NULL, 1.0, call_fn, arg_new(1), arg_drop, NULL),
              TW_EINVAL);
    assert_rc(tw_reactor_call_later_full(r, NAN, call_fn, arg_new(2), arg_drop, NULL), TW_EINVAL);
    assert_rc(tw_reactor_call_later_full(r, 1.0, NULL, arg_new(3), arg_drop, NULL), TW_EINVAL);
    assert_rc(tw_reactor_stop(r), 0);
    assert_rc(tw_reactor_run(r), 0); /* stopped before it ran: shuts down at once */
    assert_rc(tw_reactor_call_later_full(r, 1.0, call_fn, arg_new(4), arg_drop, NULL),
              TW_ESHUTDOWN);
    assert_int_equal(ndrops(), 4);
    assert_rc(tw_reactor_destroy(r), 0);
    EXPECT_TRACE("drop1 drop2 drop3 drop4");
}

/* ==== reactor: call_when_running ==================================================== */

static tw_reactor *running_r;

static void add_while_running(void *p)
{
    (void)p;
    assert_rc(tw_reactor_call_when_running_full(running_r, call_fn, arg_new(3), arg_drop), 0);
    tw_test_tr("added");
    tw_reactor_stop(running_r);
}

static void test_call_when_running_arg(void **state)
{
    (void)state;
    /* Never runs: the reactor is destroyed without running. */
    tw_reactor *r = fake_reactor();
    assert_rc(tw_reactor_call_when_running_full(r, call_fn, arg_new(1), arg_drop), 0);
    assert_rc(tw_reactor_destroy(r), 0);
    assert_int_equal(ndrops(), 1);

    /* Runs when the loop starts, then goes; one added while running runs
     * (and goes) at once. */
    r = running_r = fake_reactor();
    assert_rc(tw_reactor_call_when_running_full(r, call_fn, arg_new(2), arg_drop), 0);
    assert_rc(tw_reactor_call_when_running(r, add_while_running, NULL), 0);
    assert_rc(tw_reactor_run(r), 0);
    assert_int_equal(ndrops(), 3);

    /* Shut down: refused, and dropped. */
    assert_rc(tw_reactor_call_when_running_full(r, call_fn, arg_new(4), arg_drop), TW_ESHUTDOWN);
    assert_rc(tw_reactor_call_when_running_full(r, NULL, arg_new(5), arg_drop), TW_EINVAL);
    assert_rc(tw_reactor_destroy(r), 0);
    assert_int_equal(ndrops(), 5);
    EXPECT_TRACE("drop1 call2 drop2 call3 drop3 added drop4 drop5");
}

/* ==== reactor: defer_to_thread ====================================================== */

typedef struct dthread_case {
    tw_reactor *r;
    tw_event gate;       /* holds the pool's one thread */
    int fn_calls;        /* atomic */
    int drops_in_fn;     /* drops counted while fn ran (atomic) */
    int drops_at_result; /* drops counted when the result reached the loop */
    int eb_code;
} dthread_case;

static dthread_case dt;

static tw_result thread_fn(void *p, tw_cancel *cancel)
{
    arg *a = p;
    (void)cancel;
    __atomic_fetch_add(&dt.fn_calls, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&dt.drops_in_fn, ndrops(), __ATOMIC_RELAXED);
    return IV(a->id * 2);
}

static int blocker(void *p)
{
    (void)p;
    tw_event_wait(&dt.gate);
    return 0;
}

static tw_result on_result(tw_result res, void *p)
{
    (void)p;
    dt.drops_at_result = ndrops();
    if (tw_result_is_failure(res))
        dt.eb_code = tw_failure_code(tw_result_as_failure(res));
    else
        tw_test_tr("result:%ld", (long)(intptr_t)res.ptr);
    tw_result_drop(res);
    return tw_result_none();
}

static void back_on_loop(void *p)
{
    tw_reactor_stop(p);
}

/* Runs after the earlier tasks (one thread, FIFO): everything before it has
 * run, or been skipped, and dropped its argument. */
static int marker(void *p)
{
    (void)p;
    return tw_reactor_call_from_thread(dt.r, back_on_loop, dt.r);
}

static void start_ran(void *p)
{
    (void)p;
    tw_deferred *d;
    assert_rc(tw_defer_to_thread_full(dt.r, NULL, thread_fn, arg_new(21), arg_drop_quiet, &d), 0);
    assert_rc(tw_deferred_add_both(d, on_result, NULL), 0);
    tw_deferred_unref(d);
    assert_rc(tw_reactor_call_in_thread(dt.r, marker, NULL), 0);
}

/* The function runs on a pool thread; its argument goes there, after it
 * returned and before the result is posted back. */
static void test_defer_to_thread_arg_ran(void **state)
{
    (void)state;
    memset(&dt, 0, sizeof dt);
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.pool_max = 1;
    assert_rc(tw_reactor_create_with(&cfg, &dt.r), 0);
    tw_test_arm_watchdog(dt.r, 60.0);
    assert_rc(tw_reactor_call_when_running(dt.r, start_ran, NULL), 0);
    assert_rc(tw_reactor_run(dt.r), 0);
    assert_false(tw_test_watchdog_fired());
    assert_int_equal(dt.fn_calls, 1);
    assert_int_equal(dt.drops_in_fn, 0);
    assert_int_equal(dt.drops_at_result, 1);
    assert_int_equal(ndrops(), 1);
    EXPECT_TRACE("result:42");
    assert_rc(tw_reactor_destroy(dt.r), 0);
}

static void start_cancelled(void *p)
{
    (void)p;
    tw_deferred *d;
    /* The one thread is held: the task waits behind the blocker. */
    assert_rc(tw_reactor_call_in_thread(dt.r, blocker, NULL), 0);
    assert_rc(tw_defer_to_thread_full(dt.r, NULL, thread_fn, arg_new(1), arg_drop_quiet, &d), 0);
    assert_rc(tw_deferred_add_both(d, on_result, NULL), 0);
    assert_rc(tw_deferred_cancel(d), 0);
    tw_deferred_unref(d);
    assert_int_equal(ndrops(), 0); /* the task still holds it: it goes when it is skipped */
    tw_event_set(&dt.gate);
    assert_rc(tw_reactor_call_in_thread(dt.r, marker, NULL), 0);
}

/* Cancelled before it started: the function never runs, and the argument
 * goes when the pool thread skips the task. */
static void test_defer_to_thread_arg_cancelled(void **state)
{
    (void)state;
    memset(&dt, 0, sizeof dt);
    dt.gate = (tw_event)TW_EVENT_INIT;
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.pool_max = 1;
    assert_rc(tw_reactor_create_with(&cfg, &dt.r), 0);
    tw_test_arm_watchdog(dt.r, 60.0);
    assert_rc(tw_reactor_call_when_running(dt.r, start_cancelled, NULL), 0);
    assert_rc(tw_reactor_run(dt.r), 0);
    assert_false(tw_test_watchdog_fired());
    assert_int_equal(dt.fn_calls, 0);
    assert_rc(dt.eb_code, TW_ECANCELED);
    assert_int_equal(ndrops(), 1);
    assert_rc(tw_reactor_destroy(dt.r), 0);
}

static void test_defer_to_thread_arg_errors(void **state)
{
    (void)state;
    tw_reactor *r = fake_reactor();
    tw_deferred *d;
    assert_rc(tw_defer_to_thread_full(NULL, NULL, thread_fn, arg_new(1), arg_drop, &d), TW_EINVAL);
    assert_rc(tw_defer_to_thread_full(r, NULL, NULL, arg_new(2), arg_drop, &d), TW_EINVAL);
    assert_rc(tw_defer_to_thread_full(r, NULL, thread_fn, arg_new(3), arg_drop, NULL), TW_EINVAL);
    assert_rc(tw_reactor_stop(r), 0);
    assert_rc(tw_reactor_run(r), 0);
    assert_rc(tw_defer_to_thread_full(r, NULL, thread_fn, arg_new(4), arg_drop, &d),
              TW_ESHUTDOWN);
    assert_int_equal(ndrops(), 4);
    assert_rc(tw_reactor_destroy(r), 0);
    EXPECT_TRACE("drop1 drop2 drop3 drop4");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_canceller_arg_fired_first),
        T(test_canceller_arg_cancelled),
        T(test_canceller_arg_abandoned),
        T(test_canceller_arg_drop_releases_the_deferred),
        T(test_canceller_arg_errors),
        T(test_timeout_arg_result_first),
        T(test_timeout_arg_timeout_first),
        T(test_timeout_arg_abandoned),
        T(test_timeout_arg_errors),
        T(test_run_arg_sync),
        T(test_run_arg_async),
        T(test_run_arg_cancelled),
        T(test_run_arg_errors),
        T(test_call_later_arg),
        T(test_call_later_arg_errors),
        T(test_call_when_running_arg),
        T(test_defer_to_thread_arg_ran),
        T(test_defer_to_thread_arg_cancelled),
        T(test_defer_to_thread_arg_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
