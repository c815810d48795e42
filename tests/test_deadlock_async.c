/*
 * Deadlock detection across threads and the loop (docs/deadlocks.md): the
 * loop thread, each pool, thread work and each DeferredLock are nodes of the
 * same graph, so a wait on the loop or on thread work counts like a wait on
 * a Lock. Each test builds one of the mixed deadlocks of the issue and
 * checks that it is reported with its cycle, and that a Lock left held by a
 * thread that exits, or by a loop callback, is reported with its site:
 *   - a pool thread holding Lock L calls blocking_call_from_thread while a
 *     loop callback waits on L;
 *   - a thread blocked on the loop (blocking_call_from_thread; a Queue) while
 *     the loop blocks on that thread's work (tw_pool_stop; another Queue);
 *   - a DeferredLock held across a defer_to_thread whose thread function
 *     waits on the same DeferredLock;
 *   - every pool thread blocked on loop callbacks that wait for thread work
 *     queued behind them (seed 001's wedge).
 *
 * The hooks that make the loop, the pools and the DeferredLocks part of the
 * graph are in a library built with TW_DEBUG; against one without, these
 * tests are skipped (the thread-exit one runs: it needs only this file's
 * tracking). Every deadlock here ends by itself: its waits are timed, or a
 * timer of the loop cancels what is waited for once the report has come.
 * The threshold is 50 ms.
 */
#define TW_DEBUG 1
#include "harness.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT 30.0
#define STUCK 3.0

/* ---- reports ---------------------------------------------------------------- */

#define KEEP 32
static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int code;
    char function[64];
    char message[2048];
} kept[KEEP];
static int n_kept;

static void keep(void *ctx, const tw_diag *d)
{
    (void)ctx;
    pthread_mutex_lock(&kept_mu);
    if (n_kept < KEEP) {
        kept[n_kept].code = d->code;
        snprintf(kept[n_kept].function, sizeof kept[n_kept].function, "%s",
                 d->function ? d->function : "");
        snprintf(kept[n_kept].message, sizeof kept[n_kept].message, "%s",
                 d->message ? d->message : "");
    }
    n_kept++;
    pthread_mutex_unlock(&kept_mu);
    if (getenv("TW_TEST_ECHO")) /* to read the reports: TW_TEST_ECHO=1 */
        fprintf(stderr, "report (%s) in %s: %s\n", tw_err_name(d->code), d->function,
                d->message);
}

static int count(const char *prefix)
{
    int n = 0;
    pthread_mutex_lock(&kept_mu);
    for (int i = 0; i < n_kept && i < KEEP; i++)
        if (strncmp(kept[i].message, prefix, strlen(prefix)) == 0)
            n++;
    pthread_mutex_unlock(&kept_mu);
    return n;
}

static const char *find(const char *prefix)
{
    for (int i = 0; i < n_kept && i < KEEP; i++)
        if (strncmp(kept[i].message, prefix, strlen(prefix)) == 0)
            return kept[i].message;
    return NULL;
}

/* The same, for reports containing `needle` anywhere. */
static int reports_with(const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&kept_mu);
    for (int i = 0; i < n_kept && i < KEEP; i++)
        if (strstr(kept[i].message, needle))
            n++;
    pthread_mutex_unlock(&kept_mu);
    return n;
}

static const char *find_with(const char *needle)
{
    for (int i = 0; i < n_kept && i < KEEP; i++)
        if (strstr(kept[i].message, needle))
            return kept[i].message;
    return NULL;
}

static void expect_in(const char *m, const char *needle)
{
    assert_non_null(m);
    if (!strstr(m, needle))
        fail_msg("the report lacks \"%s\": %s", needle, m);
}

static const char *at(int line)
{
    static char buf[8][64];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, 64, "test_deadlock_async.c:%d", line);
    return b;
}

static void need_debug_library(void)
{
    if (tw_test_build_has_tw_debug() != 1)
        skip(); /* the loop's, pools' and DeferredLocks' hooks are TW_DEBUG code */
}

static int setup(void **state)
{
    (void)state;
    pthread_mutex_lock(&kept_mu);
    n_kept = 0;
    pthread_mutex_unlock(&kept_mu);
    tw_set_diag_hook(keep, NULL);
    assert_int_equal(tw_deadlock_set_threshold(0.05), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tw_deadlock_set_threshold(1.0);
    tw_set_diag_hook(NULL, NULL);
    return 0;
}

static tw_reactor *new_reactor(size_t pool_max)
{
    tw_reactor *r;
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.pool_max = pool_max;
    assert_int_equal(tw_reactor_create_with(&cfg, &r), 0);
    tw_test_arm_watchdog(r, LIMIT);
    return r;
}

static void run_reactor(tw_reactor *r)
{
    assert_int_equal(tw_reactor_run(r), 0);
    assert_false(tw_test_watchdog_fired());
    assert_int_equal(tw_reactor_destroy(r), 0);
}

/* ---- 1: a pool thread holding L waits for the loop, which waits for L ------------ */

typedef struct c1 {
    tw_reactor *r;
    tw_lock l;
    int line_hold, line_wait;
    int loop_rc, call_rc;
} c1;

static tw_result c1_on_loop(void *arg)
{
    c1 *c = arg;
    c->line_wait = __LINE__ + 1;
    c->loop_rc = tw_lock_acquire_timeout(&c->l, STUCK);
    if (c->loop_rc == 0)
        tw_lock_release(&c->l);
    return tw_result_none();
}

static int c1_in_thread(void *arg)
{
    c1 *c = arg;
    tw_result res;
    c->line_hold = __LINE__ + 1;
    tw_lock_acquire(&c->l);
    c->call_rc = tw_blocking_call_from_thread(c->r, c1_on_loop, c, &res);
    if (c->call_rc == 0)
        tw_result_drop(res);
    tw_lock_release(&c->l);
    tw_reactor_stop(c->r);
    return 0;
}

static void test_pool_thread_holding_a_lock_waits_for_the_loop(void **state)
{
    (void)state;
    need_debug_library();
    c1 c;
    memset(&c, 0, sizeof c);
    tw_lock_init(&c.l);
    c.r = new_reactor(2);
    assert_int_equal(tw_reactor_call_in_thread(c.r, c1_in_thread, &c), 0);
    run_reactor(c.r);
    assert_int_equal(c.loop_rc, TW_ETIMEDOUT); /* it was a deadlock */
    assert_int_equal(c.call_rc, 0);
    /* Predicted by the order graph as soon as the callback took L... */
    assert_int_equal(count("lock order inversion"), 1);
    const char *m = find("lock order inversion");
    expect_in(m, "the loop of reactor");
    expect_in(m, at(c.line_hold));
    expect_in(m, at(c.line_wait));
    /* ...and found live. */
    assert_int_equal(count("deadlock:"), 1);
    m = find("deadlock:");
    expect_in(m, "tw_blocking_call_from_thread");
    expect_in(m, "the loop of reactor");
    expect_in(m, at(c.line_wait));
    expect_in(m, at(c.line_hold));
}

/* ---- 2: a thread blocked on the loop, the loop blocked on its work --------------- */

typedef struct c2 {
    tw_reactor *r;
    tw_pool *pool;
    tw_test_tally started;
    int stop_rc, call_rc;
} c2;

static tw_result nothing(void *arg)
{
    (void)arg;
    return tw_result_none();
}

static int c2_task(void *arg)
{
    c2 *c = arg;
    tw_result res;
    tw_test_tally_add(&c->started);
    c->call_rc = tw_blocking_call_from_thread(c->r, nothing, c, &res);
    if (c->call_rc == 0)
        tw_result_drop(res);
    tw_reactor_stop(c->r);
    return 0;
}

/* The loop stops a pool whose thread waits for the loop. */
static void c2_on_loop(void *arg)
{
    c2 *c = arg;
    assert_int_equal(tw_pool_do(c->pool, c2_task, c), 0);
    tw_test_must_reach(&c->started, 1, LIMIT, "the pool task");
    c->stop_rc = tw_pool_stop(c->pool, STUCK, NULL);
}

static void test_loop_stops_a_pool_whose_thread_waits_for_the_loop(void **state)
{
    (void)state;
    need_debug_library();
    c2 c;
    memset(&c, 0, sizeof c);
    tw_test_tally_init(&c.started);
    c.r = new_reactor(2);
    assert_int_equal(tw_pool_create(1, 1, &c.pool), 0);
    assert_int_equal(tw_reactor_call_when_running(c.r, c2_on_loop, &c), 0);
    run_reactor(c.r);
    assert_int_equal(tw_pool_destroy(c.pool), 0);
    tw_test_tally_destroy(&c.started);
    assert_int_equal(c.stop_rc, TW_ETIMEDOUT);
    assert_int_equal(c.call_rc, 0);
    assert_int_equal(count("deadlock:"), 1);
    const char *m = find("deadlock:");
    expect_in(m, "tw_pool_stop");
    expect_in(m, "tw_blocking_call_from_thread");
    expect_in(m, "the loop of reactor");
}

typedef struct c2q {
    tw_reactor *r;
    tw_queue *to_thread, *to_loop;
    int round2_rc;
} c2q;

static int c2q_task(void *arg)
{
    c2q *c = arg;
    for (int round = 0; round < 2; round++) {
        void *item;
        if (tw_queue_get_timeout(c->to_thread, &item, LIMIT) == 0)
            tw_queue_put(c->to_loop, item);
    }
    tw_reactor_stop(c->r);
    return 0;
}

/* Round one: the loop hands the thread an item and waits for it to come
 * back. Round two: the loop waits for the item first, while the thread
 * waits for one from the loop. */
static void c2q_on_loop(void *arg)
{
    c2q *c = arg;
    void *item;
    static int token;
    assert_int_equal(tw_reactor_call_in_thread(c->r, c2q_task, c), 0);
    assert_int_equal(tw_queue_put(c->to_thread, &token), 0);
    assert_int_equal(tw_queue_get_timeout(c->to_loop, &item, LIMIT), 0);
    c->round2_rc = tw_queue_get_timeout(c->to_loop, &item, STUCK);
    tw_queue_put(c->to_thread, &token); /* now the thread finishes */
}

static void test_thread_and_loop_wait_on_each_others_queue(void **state)
{
    (void)state;
    need_debug_library();
    c2q c;
    memset(&c, 0, sizeof c);
    c.r = new_reactor(2);
    assert_int_equal(tw_queue_create(TW_QUEUE_FIFO, 0, &c.to_thread), 0);
    assert_int_equal(tw_queue_create(TW_QUEUE_FIFO, 0, &c.to_loop), 0);
    assert_int_equal(tw_reactor_call_when_running(c.r, c2q_on_loop, &c), 0);
    run_reactor(c.r);
    tw_queue_destroy(c.to_thread);
    tw_queue_destroy(c.to_loop);
    assert_int_equal(c.round2_rc, TW_ETIMEDOUT);
    assert_int_equal(count("deadlock:"), 1);
    const char *m = find("deadlock:");
    expect_in(m, "Condition");
    expect_in(m, "only thread");
}

/* ---- 3: a DeferredLock held across thread work that waits for it ----------------- */

typedef struct c3 {
    tw_reactor *r;
    tw_dlock dl;
    tw_deferred *waiting; /* the thread's acquire, pending (a reference) */
    tw_delayed_call *poll;
    int call_rc;
    bool call_failed;
} c3;

static tw_result c3_take(void *arg)
{
    c3 *c = arg;
    tw_deferred *d;
    assert_int_equal(tw_dlock_acquire(&c->dl, &d), 0);
    c->waiting = tw_deferred_ref(d);
    return tw_result_deferred(d);
}

/* The thread function waits for the DeferredLock its caller holds. */
static tw_result c3_thread_fn(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    c3 *c = arg;
    tw_result res;
    c->call_rc = tw_blocking_call_from_thread(c->r, c3_take, c, &res);
    if (c->call_rc == 0) {
        c->call_failed = tw_result_is_failure(res);
        tw_result_drop(res);
    }
    return tw_result_none();
}

/* Holding the DeferredLock, until the thread work's Deferred fires. */
static tw_result c3_locked(void *arg)
{
    c3 *c = arg;
    tw_deferred *d;
    assert_int_equal(tw_defer_to_thread(c->r, c3_thread_fn, c, &d), 0);
    return tw_result_deferred(d);
}

static tw_result c3_done(tw_result r, void *arg)
{
    tw_result_drop(r);
    tw_reactor_stop(((c3 *)arg)->r);
    return tw_result_none();
}

/* Every 10 ms: once the deadlock is reported, break it by cancelling the
 * thread's acquire (it fails, the thread's call returns, the work ends, and
 * the DeferredLock is released). */
static void c3_poll(void *arg)
{
    c3 *c = arg;
    tw_delayed_call_unref(c->poll);
    c->poll = NULL;
    if (count("deadlock:") > 0 && c->waiting) {
        tw_deferred_cancel(c->waiting);
        tw_deferred_unref(c->waiting);
        c->waiting = NULL;
        return;
    }
    tw_reactor_call_later(c->r, 0.01, c3_poll, c, &c->poll);
}

static void c3_start(void *arg)
{
    c3 *c = arg;
    tw_deferred *d;
    assert_int_equal(tw_dlock_run(&c->dl, c3_locked, c, &d), 0);
    assert_int_equal(tw_deferred_add_both(d, c3_done, c), 0);
    tw_deferred_unref(d);
    tw_reactor_call_later(c->r, 0.01, c3_poll, c, &c->poll);
}

static void test_dlock_held_across_thread_work_that_waits_for_it(void **state)
{
    (void)state;
    need_debug_library();
    static c3 c;
    memset(&c, 0, sizeof c);
    c.r = new_reactor(2);
    assert_int_equal(tw_reactor_call_when_running(c.r, c3_start, &c), 0);
    run_reactor(c.r);
    assert_int_equal(c.call_rc, 0);
    assert_true(c.call_failed); /* cancelled: the deadlock was real */
    assert_false(tw_dlock_locked(&c.dl));
    /* The order graph saw it coming: the DeferredLock is held across the
     * thread function, which waits for it. */
    assert_int_equal(count("lock order inversion"), 1);
    expect_in(find("lock order inversion"), "DeferredLock");
    expect_in(find("lock order inversion"), "thread function");
    assert_int_equal(count("deadlock:"), 1);
    const char *m = find("deadlock:");
    expect_in(m, "DeferredLock");
    expect_in(m, "tw_dlock_run");
    expect_in(m, "tw_blocking_call_from_thread");
}

/* ---- 4: every pool thread waits for work queued behind it (seed 001) ------------ */

#define WEDGE 2

typedef struct c4 {
    tw_reactor *r;
    tw_deferred *inner[WEDGE]; /* references, while pending */
    int n_inner;
    tw_delayed_call *poll;
    int done;
    int failed;
} c4;

static tw_result c4_inner_fn(void *arg, tw_cancel *cancel)
{
    (void)arg;
    (void)cancel;
    return tw_result_none();
}

/* On the loop: wait for more thread work, which can only queue. */
static tw_result c4_on_loop(void *arg)
{
    c4 *c = arg;
    tw_deferred *d;
    assert_int_equal(tw_defer_to_thread(c->r, c4_inner_fn, c, &d), 0);
    c->inner[c->n_inner++] = tw_deferred_ref(d);
    return tw_result_deferred(d);
}

static tw_result c4_blocker(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    c4 *c = arg;
    tw_result res;
    if (tw_blocking_call_from_thread(c->r, c4_on_loop, c, &res) == 0) {
        if (tw_result_is_failure(res))
            __atomic_fetch_add(&c->failed, 1, __ATOMIC_RELAXED);
        tw_result_drop(res);
    }
    return tw_result_none();
}

static tw_result c4_blocker_done(tw_result r, void *arg)
{
    c4 *c = arg;
    tw_result_drop(r);
    if (++c->done == WEDGE)
        tw_reactor_stop(c->r);
    return tw_result_none();
}

static void c4_poll(void *arg)
{
    c4 *c = arg;
    tw_delayed_call_unref(c->poll);
    c->poll = NULL;
    if (count("deadlock:") > 0) {
        for (int i = 0; i < c->n_inner; i++) {
            tw_deferred_cancel(c->inner[i]);
            tw_deferred_unref(c->inner[i]);
        }
        c->n_inner = 0;
        return;
    }
    tw_reactor_call_later(c->r, 0.01, c4_poll, c, &c->poll);
}

static void c4_start(void *arg)
{
    c4 *c = arg;
    for (int i = 0; i < WEDGE; i++) {
        tw_deferred *d;
        assert_int_equal(tw_defer_to_thread(c->r, c4_blocker, c, &d), 0);
        assert_int_equal(tw_deferred_add_both(d, c4_blocker_done, c), 0);
        tw_deferred_unref(d);
    }
    tw_reactor_call_later(c->r, 0.01, c4_poll, c, &c->poll);
}

static void test_pool_wedged_by_work_queued_behind_it(void **state)
{
    (void)state;
    need_debug_library();
    static c4 c;
    memset(&c, 0, sizeof c);
    c.r = new_reactor(WEDGE);
    assert_int_equal(tw_reactor_call_when_running(c.r, c4_start, &c), 0);
    run_reactor(c.r);
    assert_int_equal(c.done, WEDGE);
    assert_int_equal(c.failed, WEDGE); /* the inner work was cancelled: it never ran */
    assert_int_equal(count("deadlock:"), 1);
    const char *m = find("deadlock:");
    expect_in(m, "tw_blocking_call_from_thread");
    expect_in(m, "queued in pool");
    expect_in(m, "all 2 of its threads");
}

/* ---- 5: Locks left held ---------------------------------------------------------- */

typedef struct left {
    tw_lock l;
    int line;
    uint32_t tid;
} left;

static void *take_and_exit(void *arg)
{
    left *c = arg;
    c->tid = tw__self();
    c->line = __LINE__ + 1;
    tw_lock_acquire(&c->l);
    return NULL; /* seed 002: the release never comes */
}

static void test_thread_exits_holding_a_lock(void **state)
{
    (void)state;
    left c;
    memset(&c, 0, sizeof c);
    tw_lock_init(&c.l);
    tw_test_join(tw_test_start(take_and_exit, &c));
    assert_int_equal(reports_with("exits holding"), 1);
    const char *m = find_with("exits holding");
    expect_in(m, at(c.line));
    char who[32];
    snprintf(who, sizeof who, "thread %u exits", (unsigned)c.tid);
    expect_in(m, who);
    assert_int_equal(tw_lock_release(&c.l), 0); /* any thread may */
    assert_int_equal(reports_with("exits holding"), 1);
}

typedef struct leftloop {
    tw_reactor *r;
    tw_lock l;
    int line;
} leftloop;

static void leave_it_held(void *arg)
{
    leftloop *c = arg;
    c->line = __LINE__ + 1;
    tw_lock_acquire(&c->l);
    tw_reactor_stop(c->r); /* the next iteration finds it held */
}

static void test_loop_callback_returns_holding_a_lock(void **state)
{
    (void)state;
    need_debug_library();
    leftloop c;
    memset(&c, 0, sizeof c);
    tw_lock_init(&c.l);
    c.r = new_reactor(2);
    assert_int_equal(tw_reactor_call_when_running(c.r, leave_it_held, &c), 0);
    run_reactor(c.r);
    assert_int_equal(reports_with("a loop callback returned to the loop holding"), 1);
    expect_in(find("a loop callback"), at(c.line));
    assert_int_equal(tw_lock_release(&c.l), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pool_thread_holding_a_lock_waits_for_the_loop,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_stops_a_pool_whose_thread_waits_for_the_loop,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_and_loop_wait_on_each_others_queue, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dlock_held_across_thread_work_that_waits_for_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_wedged_by_work_queued_behind_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_thread_exits_holding_a_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_callback_returns_holding_a_lock, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
