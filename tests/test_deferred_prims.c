/* Unit tests for the async primitives of twine/deferred.h: DeferredLock
 * (tw_dlock), DeferredSemaphore (tw_dsem) and DeferredQueue (tw_dqueue),
 * against Twisted's (twisted-semantics §6) and the header's stated
 * differences (iterative hand-off, over-release is TW_EOVERFLOW), plus the
 * seed 000 scenario: NetworkCounter with and without a DeferredLock.
 *
 * Single-threaded and deterministic: time is a tw_fake_clock. Every test
 * checks that no diagnostic was reported and no twine block is left. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fixture: any diagnostic report fails the test, and so does a twine
 * block left behind -------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

/* ---- helpers ---------------------------------------------------------------------- */

static int captured_int(tw_test_capture *c)
{
    assert_int_equal(c->calls, 1);
    assert_true(tw_result_is_value(c->r));
    assert_non_null(c->r.ptr);
    return *(int *)c->r.ptr;
}

static int captured_code(tw_test_capture *c)
{
    assert_int_equal(c->calls, 1);
    assert_true(tw_result_is_failure(c->r));
    return tw_failure_code(tw_result_as_failure(c->r));
}

/* An append-only log of events; a waiter logs its id when granted, 1000 + id
 * when it fails. */
#define LOG_CAP 64
static int logv[LOG_CAP];
static size_t logn;

static void log_reset(void)
{
    logn = 0;
}

static void log_add(int v)
{
    if (logn < LOG_CAP)
        logv[logn] = v;
    logn++;
}

#define EXPECT_LOG(...)                                                                 \
    do {                                                                                \
        static const int want_[] = {__VA_ARGS__};                                       \
        tw_test_expect_log(logv, logn, want_, sizeof want_ / sizeof want_[0]);          \
    } while (0)

/* A waiter on a lock or semaphore. */
struct waiter {
    int id;
    void *prim;      /* the value the grant must carry: the lock's (or semaphore's) address */
    bool is_sem;
    bool release;    /* release at once from inside the callback */
    bool reacquire;  /* acquire again from inside the callback */
    int release_rc;
    int fail_code;
    bool again_fired_at_once;
    tw_deferred *again;
    struct waiter *again_waiter;
};

static tw_result waiter_eb(tw_result r, void *arg);

static tw_result waiter_cb(tw_result r, void *arg)
{
    struct waiter *w = arg;
    bool ok = tw_result_is_value(r) && r.ptr == w->prim;
    tw_result_drop(r);
    log_add(ok ? w->id : -1 - w->id);
    if (w->reacquire) {
        w->again = NULL;
        if (w->is_sem)
            w->release_rc = tw_dsem_acquire(w->prim, &w->again);
        else
            w->release_rc = tw_dlock_acquire(w->prim, &w->again);
        if (w->again) {
            w->again_fired_at_once = tw_deferred_called(w->again);
            tw_deferred_add_callbacks(w->again, waiter_cb, w->again_waiter, waiter_eb,
                                      w->again_waiter);
        }
    }
    if (w->release) {
        w->release_rc = w->is_sem ? tw_dsem_release(w->prim) : tw_dlock_release(w->prim);
        log_add(100 + w->id);
    }
    return tw_result_none();
}

static tw_result waiter_eb(tw_result r, void *arg)
{
    struct waiter *w = arg;
    w->fail_code = tw_failure_code(tw_result_as_failure(r));
    tw_result_drop(r);
    log_add(1000 + w->id);
    return tw_result_none();
}

static tw_deferred *lock_waiter(tw_dlock *l, struct waiter *w)
{
    tw_deferred *d = NULL;
    w->prim = l;
    w->is_sem = false;
    assert_rc(tw_dlock_acquire(l, &d), 0);
    assert_non_null(d);
    assert_rc(tw_deferred_add_callbacks(d, waiter_cb, w, waiter_eb, w), 0);
    return d;
}

static tw_deferred *sem_waiter(tw_dsem *s, struct waiter *w)
{
    tw_deferred *d = NULL;
    w->prim = s;
    w->is_sem = true;
    assert_rc(tw_dsem_acquire(s, &d), 0);
    assert_non_null(d);
    assert_rc(tw_deferred_add_callbacks(d, waiter_cb, w, waiter_eb, w), 0);
    return d;
}

/* The grant's value is the primitive's address. */
static void assert_granted(tw_deferred *d, void *prim)
{
    tw_result r;
    assert_true(tw_deferred_called(d));
    assert_true(tw_deferred_peek(d, &r));
    assert_true(tw_result_is_value(r));
    assert_ptr_equal(r.ptr, prim);
}

/* A function for run(): counts calls, notes whether the lock was held, and
 * returns the result prepared for it. */
struct job {
    tw_dlock *lock;
    tw_dsem *sem;
    int calls;
    bool held_inside;
    uint32_t tokens_inside;
    tw_result ret;
};

static tw_result job_fn(void *arg)
{
    struct job *j = arg;
    tw_result r = j->ret;
    j->calls++;
    if (j->lock)
        j->held_inside = tw_dlock_locked(j->lock);
    if (j->sem)
        j->tokens_inside = tw_dsem_tokens(j->sem);
    j->ret = tw_result_none();
    return r;
}

/* Stack extent seen by callbacks, to check that hand-offs do not nest. */
static uintptr_t stack_lo, stack_hi;

static void stack_reset(void)
{
    stack_lo = UINTPTR_MAX;
    stack_hi = 0;
}

static void stack_note(uintptr_t sp)
{
    if (sp < stack_lo)
        stack_lo = sp;
    if (sp > stack_hi)
        stack_hi = sp;
}

/* A flat hand-off runs every callback at the same depth; 1000 nested ones
 * spread over ~100 KB (more under ASan). */
#define STACK_SPREAD_LIMIT (16u * 1024u)

enum { APP_CODE = -2001 };

/* ==== DeferredLock ================================================================== */

static void test_dlock_acquire_release(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    tw_dlock z;
    tw_deferred *d1, *d2, *d3;
    (void)state;
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(tw_dlock_waiting(&l), 0);
    assert_rc(tw_dlock_release(&l), TW_EPERM);

    assert_rc(tw_dlock_acquire(&l, &d1), 0); /* free: fires at once with &l */
    assert_granted(d1, &l);
    assert_true(tw_dlock_locked(&l));
    assert_rc(tw_dlock_acquire(&l, &d2), 0); /* held: waits */
    assert_false(tw_deferred_called(d2));
    assert_int_equal(tw_dlock_waiting(&l), 1);

    assert_rc(tw_dlock_release(&l), 0); /* hands off to d2 */
    assert_granted(d2, &l);
    assert_true(tw_dlock_locked(&l));
    assert_int_equal(tw_dlock_waiting(&l), 0);
    assert_rc(tw_dlock_release(&l), 0);
    assert_false(tw_dlock_locked(&l));
    assert_rc(tw_dlock_release(&l), TW_EPERM);
    assert_false(tw_dlock_locked(&l));

    /* An all-zero lock is an unlocked lock. */
    memset(&z, 0, sizeof z);
    assert_false(tw_dlock_locked(&z));
    assert_rc(tw_dlock_release(&z), TW_EPERM);
    assert_rc(tw_dlock_acquire(&z, &d3), 0);
    assert_granted(d3, &z);
    assert_rc(tw_dlock_release(&z), 0);
    assert_rc(tw_dlock_release(&z), TW_EPERM);

    tw_deferred_unref(d1);
    tw_deferred_unref(d2);
    tw_deferred_unref(d3);
}

/* Release passes the lock to the oldest waiter, one at a time. */
static void test_dlock_fifo(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct waiter w[4];
    tw_deferred *holder, *d[4];
    (void)state;
    log_reset();
    assert_rc(tw_dlock_acquire(&l, &holder), 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct waiter){.id = i};
        d[i] = lock_waiter(&l, &w[i]);
    }
    assert_int_equal(tw_dlock_waiting(&l), 4);
    assert_int_equal(logn, 0);
    for (int i = 0; i < 4; i++) {
        assert_rc(tw_dlock_release(&l), 0);
        assert_int_equal(logn, (size_t)i + 1);
        assert_int_equal(logv[i], i);
        assert_true(tw_dlock_locked(&l));
        assert_int_equal(tw_dlock_waiting(&l), (size_t)(3 - i));
    }
    assert_rc(tw_dlock_release(&l), 0);
    assert_false(tw_dlock_locked(&l));
    tw_deferred_unref(holder);
    for (int i = 0; i < 4; i++)
        tw_deferred_unref(d[i]);
}

/* Cancelling a pending acquire removes that waiter only: the others keep
 * their order (0, 2, 3 after cancelling #1). */
static void test_dlock_cancel_pending(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct waiter w[4];
    tw_deferred *holder, *d[4];
    (void)state;
    log_reset();
    assert_rc(tw_dlock_acquire(&l, &holder), 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct waiter){.id = i};
        d[i] = lock_waiter(&l, &w[i]);
    }
    assert_rc(tw_deferred_cancel(d[1]), 0);
    EXPECT_LOG(1001);
    assert_int_equal(w[1].fail_code, TW_ECANCELED);
    assert_int_equal(tw_dlock_waiting(&l), 3);
    assert_true(tw_dlock_locked(&l)); /* the holder still holds it */
    assert_rc(tw_deferred_cancel(d[1]), 0); /* again: nothing */
    assert_int_equal(tw_dlock_waiting(&l), 3);

    for (int i = 0; i < 4; i++)
        assert_rc(tw_dlock_release(&l), 0);
    EXPECT_LOG(1001, 0, 2, 3);
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(tw_dlock_waiting(&l), 0);
    tw_deferred_unref(holder);
    for (int i = 0; i < 4; i++)
        tw_deferred_unref(d[i]);
}

/* Cancelling an acquire that has been granted does nothing: the holder still
 * holds the lock and must release it; the other waiters are untouched. */
static void test_dlock_cancel_after_grant(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct waiter w = {.id = 7};
    tw_deferred *d1, *d2;
    (void)state;
    log_reset();
    assert_rc(tw_dlock_acquire(&l, &d1), 0);
    d2 = lock_waiter(&l, &w);
    assert_rc(tw_deferred_cancel(d1), 0);
    assert_granted(d1, &l);
    assert_true(tw_dlock_locked(&l));
    assert_int_equal(tw_dlock_waiting(&l), 1);

    assert_rc(tw_dlock_release(&l), 0); /* to d2 */
    EXPECT_LOG(7);
    assert_rc(tw_deferred_cancel(d2), 0); /* granted: nothing */
    assert_int_equal(w.fail_code, 0);
    assert_true(tw_dlock_locked(&l));
    assert_rc(tw_dlock_release(&l), 0);
    assert_false(tw_dlock_locked(&l));
    tw_deferred_unref(d1);
    tw_deferred_unref(d2);
}

/* run(): the lock is held while fn runs and released when its result is
 * ready: a value, a failure. */
static void test_dlock_run_value_and_failure(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct job j = {.lock = &l};
    tw_test_capture c;
    tw_deferred *out;
    (void)state;

    j.ret = tw_test_int_value(5);
    assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
    assert_int_equal(j.calls, 1);
    assert_true(j.held_inside);
    assert_false(tw_dlock_locked(&l));
    tw_test_capture_add(out, &c);
    assert_int_equal(captured_int(&c), 5);
    tw_test_capture_release(&c);
    tw_deferred_unref(out);

    j.ret = tw_result_fail(APP_CODE, "critical section failed");
    assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
    assert_int_equal(j.calls, 2);
    assert_true(j.held_inside);
    assert_false(tw_dlock_locked(&l)); /* released on failure too */
    tw_test_capture_add(out, &c);
    assert_int_equal(captured_code(&c), APP_CODE);
    tw_test_capture_release(&c);
    tw_deferred_unref(out);
}

/* run() with fn returning a Deferred: the lock stays held until it fires or
 * fails, and the run's Deferred gets that result. */
static void test_dlock_run_deferred(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct job j = {.lock = &l};
    tw_test_capture c;
    tw_deferred *inner, *out, *other;
    struct waiter w = {.id = 3};
    (void)state;
    log_reset();

    for (int fails = 0; fails < 2; fails++) {
        inner = tw_test_new_deferred();
        j.ret = tw_result_deferred(tw_deferred_ref(inner));
        assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
        tw_test_capture_add(out, &c);
        assert_true(tw_dlock_locked(&l));
        assert_int_equal(c.calls, 0);
        other = lock_waiter(&l, &w); /* must wait for the inner Deferred */
        assert_int_equal(logn, 0);
        if (fails)
            assert_rc(tw_deferred_errback(inner, tw_failure_new(APP_CODE, NULL)), 0);
        else
            assert_rc(tw_deferred_callback(inner, tw_test_int_value(9)), 0);
        if (fails)
            assert_int_equal(captured_code(&c), APP_CODE);
        else
            assert_int_equal(captured_int(&c), 9);
        EXPECT_LOG(3); /* released: handed to the waiter */
        assert_rc(tw_dlock_release(&l), 0);
        assert_false(tw_dlock_locked(&l));
        tw_test_capture_release(&c);
        tw_deferred_unref(inner);
        tw_deferred_unref(out);
        tw_deferred_unref(other);
        log_reset();
    }
}

/* run() while the lock is held: fn is called only when the lock is handed
 * over; out may be NULL. */
static void test_dlock_run_waits_and_null_out(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct job j = {.lock = &l};
    struct job k = {.lock = &l};
    tw_deferred *holder, *out, *inner;
    tw_test_capture c;
    (void)state;
    assert_rc(tw_dlock_acquire(&l, &holder), 0);
    j.ret = tw_test_int_value(1);
    assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
    assert_rc(tw_dlock_run(&l, job_fn, &k, NULL), 0); /* out == NULL */
    inner = tw_test_new_deferred();
    k.ret = tw_result_deferred(tw_deferred_ref(inner));
    assert_int_equal(j.calls, 0);
    assert_int_equal(k.calls, 0);
    assert_int_equal(tw_dlock_waiting(&l), 2);
    tw_test_capture_add(out, &c);

    assert_rc(tw_dlock_release(&l), 0); /* j runs, releases, k runs and waits on inner */
    assert_int_equal(j.calls, 1);
    assert_true(j.held_inside);
    assert_int_equal(captured_int(&c), 1);
    assert_int_equal(k.calls, 1);
    assert_true(k.held_inside);
    assert_true(tw_dlock_locked(&l));
    assert_rc(tw_deferred_callback(inner, tw_test_int_value(2)), 0); /* dropped: nobody wanted it */
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(tw_dlock_waiting(&l), 0);

    /* out == NULL on a free lock, with a plain value. */
    j.ret = tw_test_int_value(3);
    assert_rc(tw_dlock_run(&l, job_fn, &j, NULL), 0);
    assert_int_equal(j.calls, 2);
    assert_false(tw_dlock_locked(&l));

    tw_test_capture_release(&c);
    tw_deferred_unref(holder);
    tw_deferred_unref(out);
    tw_deferred_unref(inner);
}

/* Cancelling a run() that waits for the lock: it leaves the queue and fn
 * never runs. Cancelling a run() whose fn returned a pending Deferred: the
 * cancel reaches that Deferred, and its failure releases the lock. */
struct counting_canceller {
    int calls;
};

static void count_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    ((struct counting_canceller *)arg)->calls++;
}

static void test_dlock_run_cancel(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct job j = {.lock = &l};
    struct counting_canceller cc = {0};
    tw_test_capture c;
    tw_deferred *holder, *out, *inner;
    (void)state;

    assert_rc(tw_dlock_acquire(&l, &holder), 0);
    j.ret = tw_test_int_value(1);
    assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
    tw_test_capture_add(out, &c);
    assert_int_equal(tw_dlock_waiting(&l), 1);
    assert_rc(tw_deferred_cancel(out), 0);
    assert_int_equal(captured_code(&c), TW_ECANCELED);
    assert_int_equal(tw_dlock_waiting(&l), 0);
    assert_rc(tw_dlock_release(&l), 0); /* the holder's: nobody left to hand to */
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(j.calls, 0);
    tw_result_drop(j.ret);
    tw_test_capture_release(&c);
    tw_deferred_unref(out);
    tw_deferred_unref(holder);

    assert_rc(tw_deferred_create(&inner, count_cancel, &cc), 0);
    j.ret = tw_result_deferred(tw_deferred_ref(inner));
    assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
    tw_test_capture_add(out, &c);
    assert_int_equal(j.calls, 1);
    assert_true(tw_dlock_locked(&l));
    assert_rc(tw_deferred_cancel(out), 0);
    assert_int_equal(cc.calls, 1);
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(captured_code(&c), TW_ECANCELED);
    tw_test_capture_release(&c);
    tw_deferred_unref(out);
    tw_deferred_unref(inner);
}

/* fn returns a Deferred that has already fired (succeed / fail): the run
 * finishes at once with its result, and the lock is released. */
static void test_dlock_run_already_fired_deferred(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct job j = {.lock = &l};
    tw_test_capture c;
    tw_deferred *d, *out;
    (void)state;

    assert_rc(tw_deferred_succeed(&d, tw_test_int_new(12), free), 0);
    j.ret = tw_result_deferred(d); /* our reference goes with it */
    assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
    assert_false(tw_dlock_locked(&l));
    tw_test_capture_add(out, &c);
    assert_int_equal(captured_int(&c), 12);
    tw_test_capture_release(&c);
    tw_deferred_unref(out);

    assert_rc(tw_deferred_fail(&d, tw_failure_new(APP_CODE, "already failed")), 0);
    j.ret = tw_result_deferred(d);
    assert_rc(tw_dlock_run(&l, job_fn, &j, &out), 0);
    assert_false(tw_dlock_locked(&l));
    tw_test_capture_add(out, &c);
    assert_int_equal(captured_code(&c), APP_CODE);
    tw_test_capture_release(&c);
    tw_deferred_unref(out); /* handled here, so no unhandled report anywhere */
    assert_int_equal(j.calls, 2);
}

/* No barging: a waiter's callback that acquires again queues behind the
 * waiters already there. */
static void test_dlock_no_barging(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct waiter again = {.id = 2};
    struct waiter a = {.id = 0, .reacquire = true, .again_waiter = &again};
    struct waiter b = {.id = 1};
    tw_deferred *holder, *da, *db;
    (void)state;
    log_reset();
    again.prim = &l;
    assert_rc(tw_dlock_acquire(&l, &holder), 0);
    da = lock_waiter(&l, &a);
    db = lock_waiter(&l, &b);
    assert_rc(tw_dlock_release(&l), 0); /* to a, whose callback acquires again */
    EXPECT_LOG(0);
    assert_rc(a.release_rc, 0);
    assert_non_null(a.again);
    assert_false(a.again_fired_at_once);
    assert_false(tw_deferred_called(a.again));
    assert_int_equal(tw_dlock_waiting(&l), 2);

    assert_rc(tw_dlock_release(&l), 0);
    EXPECT_LOG(0, 1);
    assert_rc(tw_dlock_release(&l), 0);
    EXPECT_LOG(0, 1, 2);
    assert_rc(tw_dlock_release(&l), 0);
    assert_false(tw_dlock_locked(&l));
    tw_deferred_unref(holder);
    tw_deferred_unref(da);
    tw_deferred_unref(db);
    tw_deferred_unref(a.again);
}

/* Waiters that release from inside their callback: the nested release
 * returns at once and the outer hand-off continues, so each waiter's code
 * after its release runs before the next waiter (unlike Twisted). */
static void test_dlock_release_inside_callback_order(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    struct waiter w[3];
    tw_deferred *holder, *d[3];
    (void)state;
    log_reset();
    assert_rc(tw_dlock_acquire(&l, &holder), 0);
    for (int i = 0; i < 3; i++) {
        w[i] = (struct waiter){.id = i, .release = true, .release_rc = -100};
        d[i] = lock_waiter(&l, &w[i]);
    }
    assert_rc(tw_dlock_release(&l), 0);
    EXPECT_LOG(0, 100, 1, 101, 2, 102);
    for (int i = 0; i < 3; i++)
        assert_rc(w[i].release_rc, 0);
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(tw_dlock_waiting(&l), 0);
    tw_deferred_unref(holder);
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(d[i]);
}

/* 10^5 waiters that each release at once: FIFO, bounded stack. */
static struct {
    tw_dlock *lock;
    tw_dsem *sem;
    size_t next;
    size_t out_of_order;
    size_t bad_rc;
} many;

static tw_result many_cb(tw_result r, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    int rc;
    stack_note((uintptr_t)__builtin_frame_address(0));
    tw_result_drop(r);
    if (i != many.next)
        many.out_of_order++;
    many.next++;
    rc = many.lock ? tw_dlock_release(many.lock) : tw_dsem_release(many.sem);
    if (rc != 0)
        many.bad_rc++;
    return tw_result_none();
}

static void run_many_waiters(tw_dlock *l, tw_dsem *s)
{
    size_t n = (size_t)tw_test_scaled(100000, 1000);
    tw_deferred **d = calloc(n, sizeof *d);
    tw_deferred *holder;
    assert_non_null(d);
    memset(&many, 0, sizeof many);
    many.lock = l;
    many.sem = s;
    stack_reset();
    assert_rc(l ? tw_dlock_acquire(l, &holder) : tw_dsem_acquire(s, &holder), 0);
    for (size_t i = 0; i < n; i++) {
        assert_rc(l ? tw_dlock_acquire(l, &d[i]) : tw_dsem_acquire(s, &d[i]), 0);
        assert_rc(tw_deferred_add_callback(d[i], many_cb, (void *)(uintptr_t)i), 0);
    }
    assert_int_equal(l ? tw_dlock_waiting(l) : tw_dsem_waiting(s), n);
    assert_rc(l ? tw_dlock_release(l) : tw_dsem_release(s), 0);
    assert_int_equal(many.next, n);
    assert_int_equal(many.out_of_order, 0);
    assert_int_equal(many.bad_rc, 0);
    if (stack_hi - stack_lo > STACK_SPREAD_LIMIT)
        fail_msg("hand-off nested: callbacks spread over %zu bytes of stack",
                 (size_t)(stack_hi - stack_lo));
    if (l)
        assert_false(tw_dlock_locked(l));
    else
        assert_int_equal(tw_dsem_tokens(s), tw_dsem_limit(s));
    assert_int_equal(l ? tw_dlock_waiting(l) : tw_dsem_waiting(s), 0);
    tw_deferred_unref(holder);
    for (size_t i = 0; i < n; i++)
        tw_deferred_unref(d[i]);
    free(d);
}

static void test_dlock_many_waiters_bounded_stack(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    (void)state;
    run_many_waiters(&l, NULL);
}

/* ==== DeferredSemaphore ============================================================== */

static void test_dsem_init(void **state)
{
    tw_dsem s;
    (void)state;
    memset(&s, 0, sizeof s);
    assert_rc(tw_dsem_init(&s, 0), TW_EINVAL);
    assert_rc(tw_dsem_init(&s, 3), 0);
    assert_int_equal(tw_dsem_tokens(&s), 3);
    assert_int_equal(tw_dsem_limit(&s), 3);
    assert_int_equal(tw_dsem_waiting(&s), 0);
    assert_rc(tw_dsem_init(&s, 1), 0);
    assert_int_equal(tw_dsem_tokens(&s), 1);
    assert_int_equal(tw_dsem_limit(&s), 1);
    assert_rc(tw_dsem_release(&s), TW_EOVERFLOW);
}

/* A count a Semaphore could not hold is refused as tw_sem_init refuses it:
 * above TW_SEM_VALUE_MAX, and above all a -1 passed by mistake, which
 * arrives as 4294967295. A refused init leaves the semaphore as it was. */
static void test_dsem_init_bounds(void **state)
{
    tw_dsem s;
    tw_sem sem;
    int minus_one = -1;
    (void)state;
    assert_int_equal(TW_DSEM_TOKENS_MAX, TW_SEM_VALUE_MAX);
    assert_rc(tw_dsem_init(&s, 2), 0);
    assert_rc(tw_dsem_init(&s, (uint32_t)minus_one), TW_EINVAL);
    assert_rc(tw_dsem_init(&s, UINT32_MAX), TW_EINVAL);
    assert_rc(tw_dsem_init(&s, TW_DSEM_TOKENS_MAX + 1u), TW_EINVAL);
    assert_rc(tw_dsem_init(&s, 0), TW_EINVAL);
    assert_int_equal(tw_dsem_limit(&s), 2);
    assert_int_equal(tw_dsem_tokens(&s), 2);

    /* The same verdicts as the Semaphore's. */
    assert_rc(tw_sem_init(&sem, TW_SEM_VALUE_MAX + 1u), TW_EINVAL);
    assert_rc(tw_sem_init(&sem, TW_SEM_VALUE_MAX), 0);

    assert_rc(tw_dsem_init(&s, TW_DSEM_TOKENS_MAX), 0);
    assert_int_equal(tw_dsem_limit(&s), TW_DSEM_TOKENS_MAX);
    assert_int_equal(tw_dsem_tokens(&s), TW_DSEM_TOKENS_MAX);
    tw_deferred *d;
    assert_rc(tw_dsem_acquire(&s, &d), 0);
    assert_true(tw_deferred_called(d));
    assert_int_equal(tw_dsem_tokens(&s), TW_DSEM_TOKENS_MAX - 1);
    tw_deferred_unref(d);
    assert_rc(tw_dsem_release(&s), 0);
    assert_rc(tw_dsem_release(&s), TW_EOVERFLOW);
}

static void test_dsem_acquire_release_overflow(void **state)
{
    tw_dsem s;
    tw_deferred *d[3];
    (void)state;
    assert_rc(tw_dsem_init(&s, 2), 0);
    assert_rc(tw_dsem_release(&s), TW_EOVERFLOW); /* every token is back */
    assert_int_equal(tw_dsem_tokens(&s), 2);

    assert_rc(tw_dsem_acquire(&s, &d[0]), 0);
    assert_granted(d[0], &s);
    assert_int_equal(tw_dsem_tokens(&s), 1);
    assert_rc(tw_dsem_acquire(&s, &d[1]), 0);
    assert_granted(d[1], &s);
    assert_int_equal(tw_dsem_tokens(&s), 0);
    assert_rc(tw_dsem_acquire(&s, &d[2]), 0);
    assert_false(tw_deferred_called(d[2]));
    assert_int_equal(tw_dsem_waiting(&s), 1);

    assert_rc(tw_dsem_release(&s), 0); /* the token goes straight to d[2] */
    assert_granted(d[2], &s);
    assert_int_equal(tw_dsem_tokens(&s), 0);
    assert_int_equal(tw_dsem_waiting(&s), 0);
    assert_rc(tw_dsem_release(&s), 0);
    assert_int_equal(tw_dsem_tokens(&s), 1);
    assert_rc(tw_dsem_release(&s), 0);
    assert_int_equal(tw_dsem_tokens(&s), 2);
    assert_rc(tw_dsem_release(&s), TW_EOVERFLOW);
    assert_int_equal(tw_dsem_tokens(&s), 2);
    assert_int_equal(tw_dsem_limit(&s), 2);
    for (int i = 0; i < 3; i++)
        tw_deferred_unref(d[i]);
}

static void test_dsem_fifo_and_cancel(void **state)
{
    tw_dsem s;
    struct waiter w[4];
    tw_deferred *holder[2], *d[4];
    (void)state;
    log_reset();
    assert_rc(tw_dsem_init(&s, 2), 0);
    assert_rc(tw_dsem_acquire(&s, &holder[0]), 0);
    assert_rc(tw_dsem_acquire(&s, &holder[1]), 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct waiter){.id = i};
        d[i] = sem_waiter(&s, &w[i]);
    }
    assert_int_equal(tw_dsem_waiting(&s), 4);
    assert_rc(tw_deferred_cancel(d[1]), 0);
    EXPECT_LOG(1001);
    assert_int_equal(w[1].fail_code, TW_ECANCELED);
    assert_int_equal(tw_dsem_waiting(&s), 3);
    assert_int_equal(tw_dsem_tokens(&s), 0);

    assert_rc(tw_dsem_release(&s), 0);
    EXPECT_LOG(1001, 0);
    assert_rc(tw_dsem_release(&s), 0);
    EXPECT_LOG(1001, 0, 2);
    assert_rc(tw_deferred_cancel(d[0]), 0); /* granted: nothing */
    assert_rc(tw_dsem_release(&s), 0);
    EXPECT_LOG(1001, 0, 2, 3);
    assert_int_equal(tw_dsem_tokens(&s), 0);
    assert_rc(tw_dsem_release(&s), 0);
    assert_rc(tw_dsem_release(&s), 0);
    assert_int_equal(tw_dsem_tokens(&s), 2);
    assert_rc(tw_dsem_release(&s), TW_EOVERFLOW);
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(holder[i]);
    for (int i = 0; i < 4; i++)
        tw_deferred_unref(d[i]);
}

static void test_dsem_run(void **state)
{
    tw_dsem s;
    struct job j, k;
    tw_deferred *inner, *out1, *out2, *out3;
    tw_test_capture c1, c2, c3;
    (void)state;
    assert_rc(tw_dsem_init(&s, 2), 0);
    j = (struct job){.sem = &s};
    k = (struct job){.sem = &s};

    inner = tw_test_new_deferred();
    j.ret = tw_result_deferred(tw_deferred_ref(inner));
    assert_rc(tw_dsem_run(&s, job_fn, &j, &out1), 0); /* holds a token until inner fires */
    assert_int_equal(j.tokens_inside, 1);
    assert_int_equal(tw_dsem_tokens(&s), 1);
    tw_test_capture_add(out1, &c1);

    k.ret = tw_result_fail(APP_CODE, NULL);
    assert_rc(tw_dsem_run(&s, job_fn, &k, &out2), 0);
    assert_int_equal(k.tokens_inside, 0);
    assert_int_equal(tw_dsem_tokens(&s), 1); /* given back on failure */
    tw_test_capture_add(out2, &c2);
    assert_int_equal(captured_code(&c2), APP_CODE);

    /* Both tokens taken: a run waits. */
    {
        tw_deferred *extra;
        assert_rc(tw_dsem_acquire(&s, &extra), 0);
        k.ret = tw_test_int_value(6);
        assert_rc(tw_dsem_run(&s, job_fn, &k, &out3), 0);
        tw_test_capture_add(out3, &c3);
        assert_int_equal(k.calls, 1);
        assert_int_equal(tw_dsem_waiting(&s), 1);
        assert_rc(tw_deferred_callback(inner, tw_test_int_value(8)), 0); /* frees a token: k runs */
        assert_int_equal(captured_int(&c1), 8);
        assert_int_equal(k.calls, 2);
        assert_int_equal(captured_int(&c3), 6);
        assert_int_equal(tw_dsem_tokens(&s), 1);
        assert_rc(tw_dsem_release(&s), 0); /* extra's token */
        tw_deferred_unref(extra);
    }
    assert_int_equal(tw_dsem_tokens(&s), 2);
    assert_rc(tw_dsem_release(&s), TW_EOVERFLOW);
    tw_test_capture_release(&c1);
    tw_test_capture_release(&c2);
    tw_test_capture_release(&c3);
    tw_deferred_unref(inner);
    tw_deferred_unref(out1);
    tw_deferred_unref(out2);
    tw_deferred_unref(out3);
}

static void test_dsem_many_waiters_bounded_stack(void **state)
{
    tw_dsem s;
    (void)state;
    assert_rc(tw_dsem_init(&s, 1), 0);
    run_many_waiters(NULL, &s);
}

/* ==== DeferredQueue =================================================================== */

static int drops;

static void counted_free(void *p)
{
    drops++;
    free(p);
}

static void put_int(tw_dqueue *q, int v)
{
    assert_rc(tw_dqueue_put(q, tw_test_int_new(v), counted_free), 0);
}

static tw_deferred *get(tw_dqueue *q, tw_test_capture *c)
{
    tw_deferred *d = NULL;
    assert_rc(tw_dqueue_get(q, &d), 0);
    assert_non_null(d);
    tw_test_capture_add(d, c);
    return d;
}

static void test_dqueue_put_then_get(void **state)
{
    tw_dqueue *q;
    tw_test_capture c[3];
    tw_deferred *d[3];
    int *p = tw_test_int_new(41);
    (void)state;
    drops = 0;
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, TW_UNBOUNDED, &q), 0);
    assert_rc(tw_dqueue_put(q, p, counted_free), 0);
    assert_int_equal(tw_dqueue_pending(q), 1);
    d[0] = get(q, &c[0]); /* fires at once with the same item */
    assert_int_equal(c[0].calls, 1);
    assert_ptr_equal(c[0].r.ptr, p);
    assert_true(c[0].r.drop == counted_free);
    assert_int_equal(tw_dqueue_pending(q), 0);
    tw_test_capture_release(&c[0]);
    assert_int_equal(drops, 1);
    tw_deferred_unref(d[0]);

    put_int(q, 1);
    put_int(q, 2);
    put_int(q, 3);
    assert_int_equal(tw_dqueue_pending(q), 3);
    for (int i = 0; i < 3; i++) {
        d[i] = get(q, &c[i]);
        assert_int_equal(captured_int(&c[i]), i + 1);
    }
    assert_int_equal(tw_dqueue_pending(q), 0);
    assert_int_equal(tw_dqueue_waiting(q), 0);
    for (int i = 0; i < 3; i++) {
        tw_test_capture_release(&c[i]);
        tw_deferred_unref(d[i]);
    }
    tw_dqueue_destroy(q);
    assert_int_equal(drops, 4);
}

static void test_dqueue_get_then_put(void **state)
{
    tw_dqueue *q;
    tw_test_capture c[3];
    tw_deferred *d[3];
    (void)state;
    drops = 0;
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, TW_UNBOUNDED, &q), 0);
    for (int i = 0; i < 3; i++)
        d[i] = get(q, &c[i]);
    assert_int_equal(tw_dqueue_waiting(q), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c[i].calls, 0);
    for (int i = 0; i < 3; i++) {
        put_int(q, 10 + i); /* to the oldest getter, chain run before put returns */
        assert_int_equal(captured_int(&c[i]), 10 + i);
        assert_int_equal(tw_dqueue_waiting(q), (size_t)(2 - i));
        assert_int_equal(tw_dqueue_pending(q), 0);
    }
    for (int i = 0; i < 3; i++) {
        tw_test_capture_release(&c[i]);
        tw_deferred_unref(d[i]);
    }
    tw_dqueue_destroy(q);
    assert_int_equal(drops, 3);
}

/* size bounds the items kept: TW_EOVERFLOW, and the item stays the caller's. */
static void test_dqueue_size_bound(void **state)
{
    tw_dqueue *q;
    tw_test_capture c;
    tw_deferred *d;
    int *extra = tw_test_int_new(3);
    (void)state;
    drops = 0;
    assert_rc(tw_dqueue_create(2, TW_UNBOUNDED, &q), 0);
    put_int(q, 1);
    put_int(q, 2);
    assert_rc(tw_dqueue_put(q, extra, counted_free), TW_EOVERFLOW);
    assert_int_equal(drops, 0); /* not dropped: still ours */
    assert_int_equal(*extra, 3);
    assert_int_equal(tw_dqueue_pending(q), 2);
    d = get(q, &c);
    assert_int_equal(captured_int(&c), 1);
    tw_test_capture_release(&c);
    tw_deferred_unref(d);
    assert_rc(tw_dqueue_put(q, extra, counted_free), 0); /* room again */
    assert_int_equal(tw_dqueue_pending(q), 2);
    drops = 0;
    tw_dqueue_destroy(q); /* drops the two kept */
    assert_int_equal(drops, 2);
}

/* size 0: a put is accepted only when a get waits. */
static void test_dqueue_size_zero(void **state)
{
    tw_dqueue *q;
    tw_test_capture c;
    tw_deferred *d;
    int *p = tw_test_int_new(5);
    (void)state;
    drops = 0;
    assert_rc(tw_dqueue_create(0, TW_UNBOUNDED, &q), 0);
    assert_rc(tw_dqueue_put(q, p, counted_free), TW_EOVERFLOW);
    assert_int_equal(drops, 0);
    d = get(q, &c);
    assert_int_equal(c.calls, 0);
    assert_rc(tw_dqueue_put(q, p, counted_free), 0);
    assert_int_equal(captured_int(&c), 5);
    assert_int_equal(tw_dqueue_pending(q), 0);
    p = tw_test_int_new(6);
    assert_rc(tw_dqueue_put(q, p, counted_free), TW_EOVERFLOW);
    free(p);
    tw_test_capture_release(&c);
    tw_deferred_unref(d);
    tw_dqueue_destroy(q);
    assert_int_equal(drops, 1);
}

/* backlog bounds the gets waiting: TW_EUNDERFLOW; a kept item bypasses it. */
static void test_dqueue_backlog(void **state)
{
    tw_dqueue *q;
    tw_test_capture c[3];
    tw_deferred *d[3], *refused;
    (void)state;
    drops = 0;
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, 1, &q), 0);
    d[0] = get(q, &c[0]);
    assert_int_equal(tw_dqueue_waiting(q), 1);
    assert_rc(tw_dqueue_get(q, &refused), TW_EUNDERFLOW);
    assert_int_equal(tw_dqueue_waiting(q), 1);
    put_int(q, 1);
    assert_int_equal(captured_int(&c[0]), 1);
    d[1] = get(q, &c[1]); /* room again */
    put_int(q, 2);
    assert_int_equal(captured_int(&c[1]), 2);
    for (int i = 0; i < 2; i++) {
        tw_test_capture_release(&c[i]);
        tw_deferred_unref(d[i]);
    }
    tw_dqueue_destroy(q);

    /* backlog 0: a get only succeeds when an item is kept. */
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, 0, &q), 0);
    assert_rc(tw_dqueue_get(q, &refused), TW_EUNDERFLOW);
    assert_int_equal(tw_dqueue_waiting(q), 0);
    put_int(q, 7);
    d[2] = get(q, &c[2]);
    assert_int_equal(captured_int(&c[2]), 7);
    assert_rc(tw_dqueue_get(q, &refused), TW_EUNDERFLOW);
    tw_test_capture_release(&c[2]);
    tw_deferred_unref(d[2]);
    tw_dqueue_destroy(q);
    assert_int_equal(drops, 3);
}

/* Cancelling a pending get removes it (TW_ECANCELED); later puts go to the
 * next getter or are kept. Cancelling a get that has its item does nothing. */
static void test_dqueue_cancel_get(void **state)
{
    tw_dqueue *q;
    tw_test_capture c[3];
    tw_deferred *d[3];
    (void)state;
    drops = 0;
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, TW_UNBOUNDED, &q), 0);
    for (int i = 0; i < 3; i++)
        d[i] = get(q, &c[i]);
    assert_rc(tw_deferred_cancel(d[1]), 0);
    assert_int_equal(captured_code(&c[1]), TW_ECANCELED);
    assert_int_equal(tw_dqueue_waiting(q), 2);
    put_int(q, 1);
    put_int(q, 2);
    assert_int_equal(captured_int(&c[0]), 1);
    assert_int_equal(captured_int(&c[2]), 2);
    assert_int_equal(tw_dqueue_waiting(q), 0);
    assert_rc(tw_deferred_cancel(d[0]), 0); /* has its item: nothing */
    assert_int_equal(captured_int(&c[0]), 1);
    put_int(q, 3);
    assert_int_equal(tw_dqueue_pending(q), 1);
    for (int i = 0; i < 3; i++) {
        tw_test_capture_release(&c[i]);
        tw_deferred_unref(d[i]);
    }
    tw_dqueue_destroy(q);
    assert_int_equal(drops, 3);
}

/* Destroy drops the items kept, and fails the gets waiting with TW_ESHUTDOWN. */
static void test_dqueue_destroy(void **state)
{
    tw_dqueue *q;
    tw_test_capture c[2];
    tw_deferred *d[2];
    (void)state;
    drops = 0;
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, TW_UNBOUNDED, &q), 0);
    for (int i = 0; i < 5; i++)
        put_int(q, i);
    tw_dqueue_destroy(q);
    assert_int_equal(drops, 5);

    assert_rc(tw_dqueue_create(TW_UNBOUNDED, TW_UNBOUNDED, &q), 0);
    for (int i = 0; i < 2; i++)
        d[i] = get(q, &c[i]);
    tw_dqueue_destroy(q);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(captured_code(&c[i]), TW_ESHUTDOWN);
        tw_test_capture_release(&c[i]);
        tw_deferred_unref(d[i]);
    }

    assert_rc(tw_dqueue_create(3, 3, &q), 0); /* an empty one */
    tw_dqueue_destroy(q);
    assert_int_equal(drops, 5);
}

/* A deterministic random walk of puts, gets and cancels on a bounded queue:
 * pending and waiting are never both non-empty, items arrive in order, and
 * every item is received or dropped exactly once. */
static size_t walk_received;
static int walk_last;
static int walk_bad;

static tw_result walk_cb(tw_result r, void *arg)
{
    (void)arg;
    if (tw_result_is_value(r)) {
        int v = *(int *)r.ptr;
        if (v <= walk_last)
            walk_bad++;
        walk_last = v;
        walk_received++;
    }
    tw_result_drop(r);
    return tw_result_none();
}

static void test_dqueue_invariant_walk(void **state)
{
    enum { STEPS = 4000, MAXGETS = 4000 };
    tw_dqueue *q;
    tw_deferred **gets = calloc(MAXGETS, sizeof *gets);
    size_t ngets = 0, put_ok = 0;
    uint32_t rng = 12345;
    int next_item = 1;
    (void)state;
    assert_non_null(gets);
    drops = 0;
    walk_received = 0;
    walk_last = 0;
    walk_bad = 0;
    assert_rc(tw_dqueue_create(3, 4, &q), 0);
    for (int step = 0; step < STEPS; step++) {
        uint32_t op;
        rng = rng * 1103515245u + 12345u;
        op = (rng >> 16) % 5;
        if (op < 2) {
            int *p = tw_test_int_new(next_item);
            int rc = tw_dqueue_put(q, p, counted_free);
            if (rc == 0) {
                put_ok++;
                next_item++;
            } else {
                assert_rc(rc, TW_EOVERFLOW);
                assert_int_equal(tw_dqueue_pending(q), 3);
                assert_int_equal(tw_dqueue_waiting(q), 0);
                free(p);
            }
        } else if (op < 4) {
            tw_deferred *d = NULL;
            int rc = tw_dqueue_get(q, &d);
            if (rc == 0) {
                assert_true(ngets < MAXGETS);
                gets[ngets++] = d;
                assert_rc(tw_deferred_add_both(d, walk_cb, NULL), 0);
            } else {
                assert_rc(rc, TW_EUNDERFLOW);
                assert_int_equal(tw_dqueue_waiting(q), 4);
                assert_int_equal(tw_dqueue_pending(q), 0);
            }
        } else if (ngets > 0) {
            assert_rc(tw_deferred_cancel(gets[(rng >> 8) % ngets]), 0);
        }
        if (tw_dqueue_pending(q) > 0 && tw_dqueue_waiting(q) > 0)
            fail_msg("step %d: %zu items kept while %zu gets wait", step, tw_dqueue_pending(q),
                     tw_dqueue_waiting(q));
        assert_true(tw_dqueue_pending(q) <= 3);
        assert_true(tw_dqueue_waiting(q) <= 4);
    }
    assert_int_equal(walk_bad, 0);
    {
        size_t kept = tw_dqueue_pending(q);
        tw_dqueue_destroy(q);
        assert_int_equal(walk_received + kept, put_ok);
        assert_int_equal((size_t)drops, put_ok);
    }
    for (size_t i = 0; i < ngets; i++)
        tw_deferred_unref(gets[i]);
    free(gets);
}

/* No barging on the queue: while a put's hand-off runs a getter's chain, a
 * put made there goes to the next waiting get and a get made there queues
 * behind it, as in Twisted (where the inner put fires the next getter at
 * once). With size 0 an inner put that no get waits for is refused. */
static struct {
    tw_dqueue *q;
    int rc_put[2];
    int rc_get;
    tw_deferred *again;
    tw_test_capture again_c;
    int got;
} nb;

static tw_result nb_cb(tw_result r, void *arg)
{
    (void)arg;
    nb.got = tw_result_is_value(r) && r.ptr ? *(int *)r.ptr : -1;
    tw_result_drop(r);
    nb.rc_put[0] = tw_dqueue_put(nb.q, tw_test_int_new(2), counted_free);
    {
        int *three = tw_test_int_new(3);
        nb.rc_put[1] = tw_dqueue_put(nb.q, three, counted_free);
        if (nb.rc_put[1] != 0)
            free(three); /* refused: still ours */
    }
    nb.again = NULL;
    nb.rc_get = tw_dqueue_get(nb.q, &nb.again);
    if (nb.again)
        tw_test_capture_add(nb.again, &nb.again_c);
    return tw_result_none();
}

static void test_dqueue_no_barging_inside_hand_off(void **state)
{
    tw_test_capture c1;
    tw_deferred *g0, *g1;
    (void)state;

    for (int bounded = 0; bounded < 2; bounded++) {
        drops = 0;
        memset(&nb, 0, sizeof nb);
        assert_rc(tw_dqueue_create(bounded ? 0 : TW_UNBOUNDED, TW_UNBOUNDED, &nb.q), 0);
        assert_rc(tw_dqueue_get(nb.q, &g0), 0);
        assert_rc(tw_deferred_add_callback(g0, nb_cb, NULL), 0);
        g1 = get(nb.q, &c1);
        put_int(nb.q, 1);
        assert_int_equal(nb.got, 1);
        assert_rc(nb.rc_put[0], 0);
        assert_int_equal(captured_int(&c1), 2); /* the inner put went to g1 */
        assert_rc(nb.rc_get, 0);
        assert_non_null(nb.again);
        if (bounded) {
            assert_rc(nb.rc_put[1], TW_EOVERFLOW); /* nobody was waiting for it */
            assert_int_equal(nb.again_c.calls, 0);
            assert_int_equal(tw_dqueue_waiting(nb.q), 1);
            assert_int_equal(tw_dqueue_pending(nb.q), 0);
        } else {
            assert_rc(nb.rc_put[1], 0);
            assert_int_equal(captured_int(&nb.again_c), 3); /* after g1, not before */
            assert_int_equal(tw_dqueue_waiting(nb.q), 0);
            assert_int_equal(tw_dqueue_pending(nb.q), 0);
        }
        tw_dqueue_destroy(nb.q);
        if (bounded)
            assert_int_equal(captured_code(&nb.again_c), TW_ESHUTDOWN);
        tw_test_capture_release(&c1);
        tw_test_capture_release(&nb.again_c);
        assert_int_equal(drops, bounded ? 2 : 3);
        tw_deferred_unref(g0);
        tw_deferred_unref(g1);
        tw_deferred_unref(nb.again);
    }
}

/* A getter's callback puts the next item, which goes to the next getter: with
 * 10^5 getters the chain must not nest (bounded stack), and order is FIFO. */
static struct {
    tw_dqueue *q;
    size_t n;
    size_t next;
    size_t out_of_order;
    size_t bad_rc;
} chain;

static tw_result chain_cb(tw_result r, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    stack_note((uintptr_t)__builtin_frame_address(0));
    if (!tw_result_is_value(r) || *(size_t *)r.ptr != i || i != chain.next)
        chain.out_of_order++;
    tw_result_drop(r);
    chain.next++;
    if (i + 1 < chain.n) {
        size_t *p = malloc(sizeof *p);
        *p = i + 1;
        if (tw_dqueue_put(chain.q, p, free) != 0) {
            chain.bad_rc++;
            free(p);
        }
    }
    return tw_result_none();
}

static void test_dqueue_put_from_getter_bounded_stack(void **state)
{
    size_t n = (size_t)tw_test_scaled(100000, 1000);
    tw_deferred **d = calloc(n, sizeof *d);
    size_t *first = malloc(sizeof *first);
    (void)state;
    assert_non_null(d);
    assert_non_null(first);
    memset(&chain, 0, sizeof chain);
    chain.n = n;
    stack_reset();
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, TW_UNBOUNDED, &chain.q), 0);
    for (size_t i = 0; i < n; i++) {
        assert_rc(tw_dqueue_get(chain.q, &d[i]), 0);
        assert_rc(tw_deferred_add_callback(d[i], chain_cb, (void *)(uintptr_t)i), 0);
    }
    assert_int_equal(tw_dqueue_waiting(chain.q), n);
    *first = 0;
    assert_rc(tw_dqueue_put(chain.q, first, free), 0);
    assert_int_equal(chain.next, n);
    assert_int_equal(chain.out_of_order, 0);
    assert_int_equal(chain.bad_rc, 0);
    assert_int_equal(tw_dqueue_waiting(chain.q), 0);
    assert_int_equal(tw_dqueue_pending(chain.q), 0);
    if (stack_hi - stack_lo > STACK_SPREAD_LIMIT)
        fail_msg("put from a getter nested: callbacks spread over %zu bytes of stack",
                 (size_t)(stack_hi - stack_lo));
    tw_dqueue_destroy(chain.q);
    for (size_t i = 0; i < n; i++)
        tw_deferred_unref(d[i]);
    free(d);
}

/* NULL arguments are TW_EINVAL and change nothing: an acquire with no place
 * for its Deferred does not take the lock. */
static void test_prims_invalid_arguments(void **state)
{
    tw_dlock l = TW_DLOCK_INIT;
    tw_dsem s;
    tw_dqueue *q = NULL;
    tw_deferred *d = NULL;
    struct job j = {0};
    (void)state;
    assert_rc(tw_dlock_acquire(NULL, &d), TW_EINVAL);
    assert_rc(tw_dlock_acquire(&l, NULL), TW_EINVAL);
    assert_false(tw_dlock_locked(&l));
    assert_rc(tw_dlock_release(NULL), TW_EINVAL);
    assert_rc(tw_dlock_run(NULL, job_fn, &j, &d), TW_EINVAL);
    assert_rc(tw_dlock_run(&l, NULL, NULL, &d), TW_EINVAL);
    assert_false(tw_dlock_locked(&l));
    assert_int_equal(j.calls, 0);

    assert_rc(tw_dsem_init(NULL, 1), TW_EINVAL);
    assert_rc(tw_dsem_init(&s, 2), 0);
    assert_rc(tw_dsem_acquire(NULL, &d), TW_EINVAL);
    assert_rc(tw_dsem_acquire(&s, NULL), TW_EINVAL);
    assert_rc(tw_dsem_release(NULL), TW_EINVAL);
    assert_rc(tw_dsem_run(&s, NULL, NULL, &d), TW_EINVAL);
    assert_int_equal(tw_dsem_tokens(&s), 2);

    assert_rc(tw_dqueue_create(1, 1, NULL), TW_EINVAL);
    assert_rc(tw_dqueue_create(1, 1, &q), 0);
    assert_rc(tw_dqueue_get(q, NULL), TW_EINVAL);
    assert_int_equal(tw_dqueue_waiting(q), 0);
    assert_rc(tw_dqueue_get(NULL, &d), TW_EINVAL);
    assert_rc(tw_dqueue_put(NULL, NULL, NULL), TW_EINVAL);
    tw_dqueue_destroy(q);
    tw_dqueue_destroy(NULL); /* must not crash */
    assert_null(d);
}

/* ==== seed 000: NetworkCounter ========================================================
 * next() increments a shared count, "records" it over the network (a Deferred
 * that a fake clock fires RECORD_DELAY later), then returns the count. */

#define RECORD_DELAY 0.5

struct net_counter {
    int count;
    tw_clock *clock;
    tw_dlock lock;
    int recorded[4]; /* the values sent to the network */
    int nrecorded;
};

static void record_done(void *arg)
{
    tw_deferred *d = arg;
    tw_deferred_callback(d, tw_result_none());
    tw_deferred_unref(d);
}

static tw_deferred *nc_record(struct net_counter *nc, int value)
{
    tw_deferred *d = tw_test_new_deferred();
    tw_clock_call *call;
    if (nc->nrecorded < 4)
        nc->recorded[nc->nrecorded] = value;
    nc->nrecorded++;
    assert_rc(tw_clock_call_later(nc->clock, RECORD_DELAY, record_done, tw_deferred_ref(d), &call),
              0);
    return d;
}

/* recorded(ignored): return self._count, read when the record completes. */
static tw_result nc_recorded(tw_result r, void *arg)
{
    struct net_counter *nc = arg;
    tw_result_drop(r);
    return tw_test_int_value(nc->count);
}

static tw_result nc_next_body(void *arg)
{
    struct net_counter *nc = arg;
    tw_deferred *recording;
    nc->count += 1;
    recording = nc_record(nc, nc->count);
    assert_rc(tw_deferred_add_callback(recording, nc_recorded, nc), 0);
    return tw_result_deferred(recording);
}

/* The closure version: the result is captured before the async step. */
static tw_result nc_recorded_captured(tw_result r, void *arg)
{
    tw_result_drop(r);
    return tw_test_int_value((int)(intptr_t)arg);
}

static tw_result nc_next_closure_body(void *arg)
{
    struct net_counter *nc = arg;
    tw_deferred *recording;
    int result;
    nc->count += 1;
    result = nc->count;
    recording = nc_record(nc, nc->count);
    assert_rc(tw_deferred_add_callback(recording, nc_recorded_captured, (void *)(intptr_t)result),
              0);
    return tw_result_deferred(recording);
}

static void nc_init(struct net_counter *nc, tw_fake_clock **fc)
{
    memset(nc, 0, sizeof *nc);
    assert_rc(tw_fake_clock_create(fc), 0);
    nc->clock = tw_fake_clock_clock(*fc);
}

/* mode 0: next() without a lock; 1: lock.run(_next); 2: closure, no lock. */
static void run_seed000(int mode, int want1, int want2)
{
    struct net_counter nc;
    tw_fake_clock *fc;
    tw_deferred *d1, *d2;
    tw_test_capture c1, c2;
    tw_result_fn body = mode == 2 ? nc_next_closure_body : nc_next_body;

    nc_init(&nc, &fc);
    if (mode == 1) {
        assert_rc(tw_dlock_run(&nc.lock, body, &nc, &d1), 0);
        assert_rc(tw_dlock_run(&nc.lock, body, &nc, &d2), 0);
        assert_int_equal(nc.count, 1); /* the second waits for the lock */
        assert_int_equal(tw_dlock_waiting(&nc.lock), 1);
    } else {
        assert_rc(tw_maybe_deferred(body, &nc, &d1), 0);
        assert_rc(tw_maybe_deferred(body, &nc, &d2), 0);
        assert_int_equal(nc.count, 2); /* both ran up to the network call */
    }
    tw_test_capture_add(d1, &c1);
    tw_test_capture_add(d2, &c2);
    assert_int_equal(c1.calls + c2.calls, 0);

    assert_rc(tw_fake_clock_advance(fc, RECORD_DELAY), 0);
    assert_int_equal(c1.calls, 1);
    if (mode == 1) {
        /* The second critical section started only when the first ended. */
        assert_int_equal(c2.calls, 0);
        assert_int_equal(nc.count, 2);
        assert_int_equal(tw_fake_clock_pending(fc), 1);
        assert_rc(tw_fake_clock_advance(fc, RECORD_DELAY), 0);
        assert_false(tw_dlock_locked(&nc.lock));
    }
    assert_int_equal(c2.calls, 1);
    if (captured_int(&c1) != want1 || captured_int(&c2) != want2)
        fail_msg("mode %d: d1 = %d, d2 = %d; expected %d and %d", mode, captured_int(&c1),
                 captured_int(&c2), want1, want2);
    /* Either way the network saw 1 then 2. */
    assert_int_equal(nc.nrecorded, 2);
    assert_int_equal(nc.recorded[0], 1);
    assert_int_equal(nc.recorded[1], 2);

    tw_test_capture_release(&c1);
    tw_test_capture_release(&c2);
    tw_deferred_unref(d1);
    tw_deferred_unref(d2);
    assert_int_equal(tw_fake_clock_pending(fc), 0);
    assert_rc(tw_fake_clock_destroy(fc), 0);
}

static void test_seed000_without_lock_corrupt(void **state)
{
    (void)state;
    run_seed000(0, 2, 2); /* "2 d1", "2 d2" */
}

static void test_seed000_with_dlock_run(void **state)
{
    (void)state;
    run_seed000(1, 1, 2);
}

static void test_seed000_closure_without_lock(void **state)
{
    (void)state;
    run_seed000(2, 1, 2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

/* ==== thread affinity (TW_DEBUG) ================================================== */

typedef struct wrong_thread_arg {
    tw_dqueue *q;
    tw_dlock *l;
    int put_rc, release_rc;
} wrong_thread_arg;

static void *wrong_thread(void *p)
{
    wrong_thread_arg *a = p;
    a->put_rc = tw_dqueue_put(a->q, NULL, NULL); /* Twisted's classic: a put from a pool thread */
    a->release_rc = tw_dlock_release(a->l);
    return NULL;
}

static void test_wrong_thread_reported(void **state)
{
    (void)state;
    wrong_thread_arg a = {0};
    tw_dlock l = TW_DLOCK_INIT;
    tw_deferred *held, *got;
    a.l = &l;
    assert_rc(tw_dqueue_create(TW_UNBOUNDED, TW_UNBOUNDED, &a.q), 0);
    assert_rc(tw_dlock_acquire(&l, &held), 0); /* first use: this thread owns the lock */
    tw_test_diag_reset();
    tw_test_join(tw_test_start(wrong_thread, &a));
    int misuse = tw_test_diag_count_kind(TW_DIAG_MISUSE);
    bool put_named = false, release_named = false;
    for (int i = 0; tw_test_diag_at(i); i++) {
        const tw_test_diag *d = tw_test_diag_at(i);
        put_named |= strcmp(d->function, "tw_dqueue_put") == 0;
        release_named |= strcmp(d->function, "tw_dlock_release") == 0;
    }
    /* The calls themselves still went through (a report, not an error). */
    assert_rc(a.put_rc, 0);
    assert_rc(a.release_rc, 0);
    assert_false(tw_dlock_locked(&l));
    assert_rc(tw_dqueue_get(a.q, &got), 0);
    assert_true(tw_deferred_called(got));
    tw_deferred_unref(got);
    tw_deferred_unref(held);
    tw_dqueue_destroy(a.q);

    tw_test_require_debug_report(misuse, "tw_dqueue_put and tw_dlock_release");
    assert_int_equal(misuse, 2);
    assert_true(put_named);
    assert_true(release_named);
    tw_test_diag_reset_kind(TW_DIAG_MISUSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_wrong_thread_reported),
        T(test_dlock_acquire_release),
        T(test_dlock_fifo),
        T(test_dlock_cancel_pending),
        T(test_dlock_cancel_after_grant),
        T(test_dlock_run_value_and_failure),
        T(test_dlock_run_deferred),
        T(test_dlock_run_waits_and_null_out),
        T(test_dlock_run_cancel),
        T(test_dlock_run_already_fired_deferred),
        T(test_dlock_no_barging),
        T(test_dlock_release_inside_callback_order),
        T(test_dlock_many_waiters_bounded_stack),
        T(test_dsem_init),
        T(test_dsem_init_bounds),
        T(test_dsem_acquire_release_overflow),
        T(test_dsem_fifo_and_cancel),
        T(test_dsem_run),
        T(test_dsem_many_waiters_bounded_stack),
        T(test_dqueue_put_then_get),
        T(test_dqueue_get_then_put),
        T(test_dqueue_size_bound),
        T(test_dqueue_size_zero),
        T(test_dqueue_backlog),
        T(test_dqueue_cancel_get),
        T(test_dqueue_destroy),
        T(test_dqueue_invariant_walk),
        T(test_dqueue_no_barging_inside_hand_off),
        T(test_dqueue_put_from_getter_bounded_stack),
        T(test_prims_invalid_arguments),
        T(test_seed000_without_lock_corrupt),
        T(test_seed000_with_dlock_run),
        T(test_seed000_closure_without_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
