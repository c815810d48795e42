/*
 * Allocation and thread-start failure across the worker layer (the Queue
 * has its own tests).
 *
 * A test allocator (tw_set_allocator) fails exactly the Nth allocation after
 * it is armed. For every operation that allocates — creating each worker
 * kind, tw_worker_do on each, creating a team, tw_team_do, grow and shrink
 * (the calls and the bookkeeping they cause on the coordinator), creating a
 * pool, tw_pool_do into an empty pool, growing a busy pool by a submit, and
 * tw_pool_resize to a higher min — the test runs the operation with N = 1,
 * 2, ... until it succeeds without the failure being hit. Each failing call
 * must return TW_ENOMEM (or complete its promise another way where the
 * header allows it: a task backlogged behind a live thread), leave nothing
 * allocated (tw_allocator_live back to its value before the call, and 0
 * after everything is destroyed) and leave the object usable. The same is
 * done with tw__thread_fail_nth for thread starts (TW_ESYS).
 *
 * The allocator can only be swapped while nothing is allocated, so each test
 * installs it on an empty heap and removes it after destroying everything.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/thread_start.h"

#define HANG_LIMIT 10.0

/* ==== the failing allocator ================================================= */

static struct {
    unsigned long fail_at; /* atomic: this allocation after arming fails; 0 = none */
    unsigned long calls;   /* atomic: allocations since arming */
    int fired;             /* atomic */
} F;

static void *f_alloc(void *ctx, size_t size)
{
    (void)ctx;
    unsigned long c = __atomic_add_fetch(&F.calls, 1, __ATOMIC_SEQ_CST);
    unsigned long at = __atomic_load_n(&F.fail_at, __ATOMIC_SEQ_CST);
    if (at != 0 && c == at) {
        __atomic_store_n(&F.fired, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    return malloc(size);
}

static void *f_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)ctx;
    (void)old_size;
    return realloc(ptr, new_size);
}

static void f_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

static const tw_allocator failing = {f_alloc, f_realloc, f_free, NULL};

static void arm(unsigned long n)
{
    __atomic_store_n(&F.fail_at, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&F.calls, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&F.fired, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&F.fail_at, n, __ATOMIC_SEQ_CST);
}

/* Disarms; true if the armed failure happened. */
static bool disarm(void)
{
    __atomic_store_n(&F.fail_at, 0, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&F.fired, __ATOMIC_SEQ_CST) != 0;
}

static void begin(void)
{
    assert_int_equal(tw_allocator_live(), 0);
    assert_int_equal(tw_set_allocator(&failing), 0);
}

static void end(void)
{
    assert_int_equal(tw_allocator_live(), 0);
    assert_int_equal(tw_set_allocator(NULL), 0);
}

static int teardown(void **state)
{
    (void)state;
    disarm();
    tw__thread_fail_nth(0);
    tw_set_diag_hook(NULL, NULL);
    tw_set_allocator(NULL); /* TW_EBUSY if a failed test leaked: nothing to do */
    return 0;
}

/* Diagnostics are expected here (thread starts that fail): keep stderr
 * quiet and count them. */
static int diag_seen;
static void quiet_hook(void *ctx, const tw_diag *d)
{
    (void)ctx;
    (void)d;
    __atomic_fetch_add(&diag_seen, 1, __ATOMIC_SEQ_CST);
}

/* A loop must have exercised at least one failure, or it tested nothing. */
#define EXPECT_SOME_FAILURES(n) assert_true((n) > 1)

/* ==== tasks and helpers ======================================================= */

enum kind { K_MEMORY, K_THREAD, K_LOCK, K_COUNT };
static tw_lock kind_lock;

static int create_kind(enum kind k, tw_worker **w)
{
    return k == K_MEMORY   ? tw_memory_worker_create(w)
           : k == K_THREAD ? tw_thread_worker_create(w)
                           : tw_lock_worker_create(&kind_lock, w);
}

/* Runs what the worker has accepted (allocator disarmed). */
static void settle(enum kind k, tw_worker *w)
{
    tw_test_settle(w, k == K_MEMORY, k == K_THREAD, HANG_LIMIT);
}

/* ==== workers ================================================================= */

static void test_alloc_set_allocator_busy(void **state)
{
    (void)state;
    tw_worker *w;
    assert_int_equal(tw_memory_worker_create(&w), 0);
    assert_int_equal(tw_set_allocator(&failing), TW_EBUSY);
    assert_int_equal(tw_worker_destroy(w), 0);
    begin();
    assert_int_equal(tw_memory_worker_create(&w), 0);
    assert_int_equal(tw_set_allocator(NULL), TW_EBUSY);
    assert_int_equal(tw_worker_destroy(w), 0);
    end();
}

static void test_alloc_worker_create(void **state)
{
    (void)state;
    begin();
    for (int k = 0; k < K_COUNT; k++) {
        unsigned long n;
        for (n = 1;; n++) {
            tw_worker *w = NULL;
            arm(n);
            int rc = create_kind((enum kind)k, &w);
            bool fired = disarm();
            if (!fired) {
                assert_int_equal(rc, 0);
                int ran = 0;
                assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
                settle((enum kind)k, w);
                assert_int_equal(tw_worker_destroy(w), 0);
                assert_int_equal(ran, 1);
                break;
            }
            assert_int_equal(rc, TW_ENOMEM);
            assert_int_equal(tw_allocator_live(), 0);
        }
        EXPECT_SOME_FAILURES(n);
        assert_int_equal(tw_allocator_live(), 0);
    }
    end();
}

static void test_alloc_worker_do(void **state)
{
    (void)state;
    begin();
    for (int k = 0; k < K_COUNT; k++) {
        tw_worker *w;
        int ran = 0, accepted = 0;
        unsigned long n;
        assert_int_equal(create_kind((enum kind)k, &w), 0);
        size_t base = tw_allocator_live();
        for (n = 1;; n++) {
            arm(n);
            int rc = tw_worker_do(w, tw_test_count_task, &ran);
            bool fired = disarm();
            if (rc == 0)
                accepted++;
            if (!fired) {
                assert_int_equal(rc, 0);
                break;
            }
            assert_int_equal(rc, TW_ENOMEM);
            assert_int_equal(tw_allocator_live(), base);
            settle((enum kind)k, w);
            assert_int_equal(__atomic_load_n(&ran, __ATOMIC_SEQ_CST), accepted);
        }
        EXPECT_SOME_FAILURES(n);
        settle((enum kind)k, w);
        assert_int_equal(tw_worker_destroy(w), 0);
        assert_int_equal(ran, accepted);
        assert_int_equal(tw_allocator_live(), 0);
    }
    end();
}

static void test_alloc_thread_worker_start_failure(void **state)
{
    (void)state;
    begin();
    unsigned long n;
    for (n = 1;; n++) {
        tw_worker *w = NULL;
        tw__thread_fail_nth((unsigned)n);
        int rc = tw_thread_worker_create(&w);
        tw__thread_fail_nth(0);
        if (rc == 0) {
            int ran = 0;
            assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
            assert_int_equal(tw_worker_destroy(w), 0);
            assert_int_equal(ran, 1);
            break;
        }
        assert_int_equal(rc, TW_ESYS);
        assert_int_equal(tw_allocator_live(), 0);
    }
    EXPECT_SOME_FAILURES(n);
    end();
}

/* ==== team ==================================================================== */

#define MAXW 16

typedef struct factory {
    size_t limit, created, retired, live;
    tw_worker *w[MAXW];
    int bad_retire;
} factory;

static tw_worker *fac_create(void *ctx)
{
    factory *f = ctx;
    tw_worker *w;
    if (f->live >= f->limit || f->created >= MAXW)
        return NULL;
    if (tw_memory_worker_create(&w) != 0)
        return NULL;
    f->w[f->created++] = w;
    f->live++;
    return w;
}

static void fac_retire(void *ctx, tw_worker *w)
{
    factory *f = ctx;
    for (size_t i = 0; i < f->created; i++) {
        if (f->w[i] == w) {
            if (tw_worker_quit(w) != TW_EQUIT || tw_memory_worker_pending(w) != 0)
                f->bad_retire++;
            tw_worker_destroy(w);
            f->w[i] = NULL;
            f->retired++;
            f->live--;
            return;
        }
    }
    f->bad_retire++;
}

typedef struct tfx {
    tw_worker *coord;
    factory fac; /* the team's factory context: a tfx is never copied */
    tw_team *team;
} tfx;

static void run_everything(tw_worker *coord, factory *f)
{
    bool moved;
    do {
        moved = false;
        while (tw_memory_worker_perform(coord, NULL))
            moved = true;
        for (size_t i = 0; i < f->created; i++)
            if (f->w[i] && tw_memory_worker_perform(f->w[i], NULL))
                moved = true;
    } while (moved);
}

static void run_all(tfx *x)
{
    run_everything(x->coord, &x->fac);
}

static void tfx_new(tfx *x, size_t limit)
{
    tw_team_workers tw = {fac_create, fac_retire, NULL};
    memset(x, 0, sizeof *x);
    x->fac.limit = limit;
    tw.ctx = &x->fac;
    assert_int_equal(tw_memory_worker_create(&x->coord), 0);
    assert_int_equal(tw_team_create(x->coord, &tw, &x->team), 0);
}

static void tfx_done(tfx *x)
{
    assert_int_equal(tw_team_quit(x->team), 0);
    run_all(x);
    assert_int_equal(x->fac.bad_retire, 0);
    assert_int_equal(x->fac.live, 0);
    assert_int_equal(tw_team_destroy(x->team), 0);
    assert_int_equal(tw_worker_destroy(x->coord), 0);
}

static void expect_team(tfx *x, size_t idle, size_t busy, size_t backlog)
{
    tw_team_stats s;
    assert_int_equal(tw_team_stats_get(x->team, &s), 0);
    assert_int_equal(s.idle, idle);
    assert_int_equal(s.busy, busy);
    assert_int_equal(s.backlog, backlog);
    assert_int_equal(x->fac.live, idle + busy); /* no worker lost or leaked */
}

static void test_alloc_team_create(void **state)
{
    (void)state;
    begin();
    tw_worker *coord;
    factory fac;
    tw_team_workers tw = {fac_create, fac_retire, &fac};
    unsigned long n;
    memset(&fac, 0, sizeof fac);
    fac.limit = 1;
    assert_int_equal(tw_memory_worker_create(&coord), 0);
    size_t base = tw_allocator_live();
    for (n = 1;; n++) {
        tw_team *t = NULL;
        arm(n);
        int rc = tw_team_create(coord, &tw, &t);
        if (!disarm()) {
            assert_int_equal(rc, 0);
            int ran = 0;
            assert_int_equal(tw_team_do(t, tw_test_count_task, &ran), 0);
            run_everything(coord, &fac);
            assert_int_equal(ran, 1);
            assert_int_equal(tw_team_quit(t), 0);
            run_everything(coord, &fac);
            assert_int_equal(fac.live, 0);
            assert_int_equal(tw_team_destroy(t), 0);
            break;
        }
        assert_int_equal(rc, TW_ENOMEM);
        assert_int_equal(tw_allocator_live(), base);
    }
    EXPECT_SOME_FAILURES(n);
    assert_int_equal(tw_worker_destroy(coord), 0);
    end();
}

/* The calls themselves: do, grow, shrink. A refused call posts nothing. */
static void test_alloc_team_calls(void **state)
{
    (void)state;
    begin();
    tfx x;
    int ran = 0, accepted = 0;
    tfx_new(&x, 2);
    for (int op = 0; op < 3; op++) {
        unsigned long n;
        for (n = 1;; n++) {
            size_t base = tw_allocator_live();
            arm(n);
            int rc = op == 0   ? tw_team_do(x.team, tw_test_count_task, &ran)
                     : op == 1 ? tw_team_grow(x.team, 1)
                               : tw_team_shrink(x.team, 1);
            bool fired = disarm();
            if (!fired) {
                assert_int_equal(rc, 0);
                accepted += op == 0;
                run_all(&x);
                break;
            }
            assert_int_equal(rc, TW_ENOMEM);
            assert_int_equal(tw_allocator_live(), base);
            assert_int_equal(tw_memory_worker_pending(x.coord), 0);
        }
        EXPECT_SOME_FAILURES(n);
    }
    /* do: one worker made and kept; grow: a second; shrink: one retired. */
    expect_team(&x, 1, 0, 0);
    assert_int_equal(ran, accepted);
    tfx_done(&x);
    end();
}

/* The bookkeeping on the coordinator: a dispatch that needs a new worker
 * (the factory's worker, then the team's record of it). A failure there
 * leaves the task in the backlog, where a later grow picks it up. */
static void test_alloc_team_dispatch(void **state)
{
    (void)state;
    begin();
    unsigned long n;
    for (n = 1;; n++) {
        tfx x;
        int ran = 0;
        tfx_new(&x, 2);
        assert_int_equal(tw_team_do(x.team, tw_test_count_task, &ran), 0);
        arm(n);
        while (tw_memory_worker_perform(x.coord, NULL))
            ;
        bool fired = disarm();
        if (!fired) {
            expect_team(&x, 0, 1, 0);
            run_all(&x);
            assert_int_equal(ran, 1);
            tfx_done(&x);
            break;
        }
        expect_team(&x, 0, 0, 1); /* waiting, not lost */
        assert_int_equal(ran, 0);
        assert_int_equal(tw_team_grow(x.team, 1), 0);
        run_all(&x);
        assert_int_equal(ran, 1);
        expect_team(&x, 1, 0, 0);
        tfx_done(&x);
        assert_int_equal(tw_allocator_live(), 0);
    }
    EXPECT_SOME_FAILURES(n);
    end();
}

/* grow(3)'s work on the coordinator: it stops at the first worker it
 * cannot make; the workers made are kept; the rest can be grown later. */
static void test_alloc_team_grow_on_coordinator(void **state)
{
    (void)state;
    begin();
    unsigned long n;
    for (n = 1;; n++) {
        tfx x;
        tfx_new(&x, 3);
        assert_int_equal(tw_team_grow(x.team, 3), 0);
        arm(n);
        while (tw_memory_worker_perform(x.coord, NULL))
            ;
        bool fired = disarm();
        tw_team_stats s;
        assert_int_equal(tw_team_stats_get(x.team, &s), 0);
        assert_int_equal(s.idle, x.fac.live);
        if (!fired) {
            assert_int_equal(s.idle, 3);
            tfx_done(&x);
            break;
        }
        assert_true(s.idle < 3);
        assert_int_equal(tw_team_grow(x.team, 3 - s.idle), 0);
        run_all(&x);
        expect_team(&x, 3, 0, 0);
        tfx_done(&x);
        assert_int_equal(tw_allocator_live(), 0);
    }
    EXPECT_SOME_FAILURES(n);
    end();
}

/* ==== pool ==================================================================== */

static void test_alloc_pool_create(void **state)
{
    (void)state;
    static const size_t sizes[][2] = {{0, 1}, {1, 1}, {2, 4}};
    begin();
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned long n;
        for (n = 1;; n++) {
            tw_pool *p = NULL;
            arm(n);
            int rc = tw_pool_create(sizes[i][0], sizes[i][1], &p);
            bool fired = disarm();
            if (!fired) {
                assert_int_equal(rc, 0);
                tw_pool_stats s;
                assert_int_equal(tw_pool_stats_get(p, &s), 0);
                assert_int_equal(s.threads, sizes[i][0]);
                tw_event ran = TW_EVENT_INIT;
                assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ran), 0);
                tw_test_wait_event(&ran, HANG_LIMIT);
                assert_int_equal(tw_pool_destroy(p), 0);
                break;
            }
            assert_int_equal(rc, TW_ENOMEM);
            assert_int_equal(tw_allocator_live(), 0);
        }
        EXPECT_SOME_FAILURES(n);
        assert_int_equal(tw_allocator_live(), 0);
    }
    end();
}

/* tw_pool_do into a pool with no thread: the node, the thread's worker, the
 * team's record of it. With no thread to run it, a task that met a failure
 * must be refused (TW_ENOMEM) and never run. */
static void test_alloc_pool_do_without_threads(void **state)
{
    (void)state;
    char problem[300] = "";
    begin();
    tw_set_diag_hook(quiet_hook, NULL);
    unsigned long n;
    for (n = 1;; n++) {
        tw_pool *p;
        int ran = 0;
        assert_int_equal(tw_pool_create(0, 2, &p), 0);
        arm(n);
        int rc = tw_pool_do(p, tw_test_count_task, &ran);
        bool fired = disarm();
        if (!fired) {
            assert_int_equal(rc, 0);
            assert_int_equal(tw_pool_destroy(p), 0);
            assert_int_equal(ran, 1);
            break;
        }
        tw_pool_stats s;
        assert_int_equal(tw_pool_stats_get(p, &s), 0);
        if (rc != TW_ENOMEM && !problem[0])
            snprintf(problem, sizeof problem,
                     "allocation %lu of tw_pool_do into a pool with no thread failed: returned "
                     "%s with %zu thread(s) and %zu task(s) in the backlog (expected TW_ENOMEM)",
                     n, tw_err_name(rc), s.team.idle + s.team.busy, s.team.backlog);
        /* Usable: the next one runs. */
        tw_event ok = TW_EVENT_INIT;
        assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ok), 0);
        tw_test_wait_event(&ok, HANG_LIMIT);
        assert_int_equal(tw_pool_destroy(p), 0);
        assert_int_equal(ran, rc == 0 ? 1 : 0); /* refused: never run */
        assert_int_equal(tw_allocator_live(), 0);
    }
    EXPECT_SOME_FAILURES(n);
    tw_set_diag_hook(NULL, NULL);
    end();
    if (problem[0])
        fail_msg("%s", problem);
}

/* Growth by a submit while the only thread is busy: a failure to make the
 * new thread leaves the task in the backlog (a thread exists to run it), or
 * refuses it (TW_ENOMEM); either way it runs exactly when accepted. */
typedef struct gate {
    tw_event started, release;
} gate;

static int gate_task(void *arg)
{
    gate *g = arg;
    tw_event_set(&g->started);
    tw_event_wait_timeout(&g->release, HANG_LIMIT);
    return 0;
}

static void test_alloc_pool_growth_by_submit(void **state)
{
    (void)state;
    begin();
    tw_set_diag_hook(quiet_hook, NULL);
    unsigned long n;
    for (n = 1;; n++) {
        tw_pool *p;
        gate g;
        int ran = 0;
        memset(&g, 0, sizeof g);
        assert_int_equal(tw_pool_create(0, 2, &p), 0);
        assert_int_equal(tw_pool_do(p, gate_task, &g), 0);
        tw_test_wait_event(&g.started, HANG_LIMIT);
        arm(n);
        int rc = tw_pool_do(p, tw_test_count_task, &ran);
        bool fired = disarm();
        tw_pool_stats s;
        assert_int_equal(tw_pool_stats_get(p, &s), 0);
        if (!fired) {
            assert_int_equal(rc, 0);
            assert_int_equal(s.threads, 2);
        } else if (rc == 0) {
            assert_int_equal(s.team.backlog, 1); /* behind the gate */
        } else {
            assert_int_equal(rc, TW_ENOMEM);
        }
        tw_event_set(&g.release);
        assert_int_equal(tw_pool_destroy(p), 0);
        assert_int_equal(ran, rc == 0 ? 1 : 0);
        assert_int_equal(tw_allocator_live(), 0);
        if (!fired)
            break;
    }
    EXPECT_SOME_FAILURES(n);
    tw_set_diag_hook(NULL, NULL);
    end();
}

/* Raising min makes threads at once; if one cannot be made the caller must
 * hear of it (or the threads must be there). */
static void test_alloc_pool_resize_min(void **state)
{
    (void)state;
    char problem[300] = "";
    begin();
    tw_set_diag_hook(quiet_hook, NULL);
    unsigned long n;
    for (n = 1;; n++) {
        tw_pool *p;
        assert_int_equal(tw_pool_create(0, 4, &p), 0);
        arm(n);
        int rc = tw_pool_resize(p, 2, 4);
        bool fired = disarm();
        tw_pool_stats s;
        assert_int_equal(tw_pool_stats_get(p, &s), 0);
        if (!fired) {
            assert_int_equal(rc, 0);
            assert_int_equal(s.threads, 2);
            assert_int_equal(tw_pool_destroy(p), 0);
            break;
        }
        if (rc == 0 && s.team.idle + s.team.busy < 2 && !problem[0])
            snprintf(problem, sizeof problem,
                     "allocation %lu of tw_pool_resize(2, 4) failed: returned 0 with %zu of the "
                     "2 threads of min (expected TW_ENOMEM)",
                     n, s.team.idle + s.team.busy);
        if (rc != 0)
            assert_int_equal(rc, TW_ENOMEM);
        assert_int_equal(s.min, 2); /* the new limits apply either way */
        assert_int_equal(s.max, 4);
        tw_event ok = TW_EVENT_INIT;
        assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ok), 0);
        tw_test_wait_event(&ok, HANG_LIMIT);
        assert_int_equal(tw_pool_destroy(p), 0);
        assert_int_equal(tw_allocator_live(), 0);
    }
    EXPECT_SOME_FAILURES(n);
    tw_set_diag_hook(NULL, NULL);
    end();
    if (problem[0])
        fail_msg("%s", problem);
}

/* ==== thread starts ============================================================ */

static void test_thread_fail_pool_create(void **state)
{
    (void)state;
    static const size_t sizes[][2] = {{1, 1}, {2, 4}, {0, 2}};
    begin();
    tw_set_diag_hook(quiet_hook, NULL);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned long n;
        for (n = 1;; n++) {
            tw_pool *p = NULL;
            tw__thread_fail_nth((unsigned)n);
            int rc = tw_pool_create(sizes[i][0], sizes[i][1], &p); /* min threads */
            tw__thread_fail_nth(0);
            if (rc == 0) {
                tw_pool_stats s;
                assert_int_equal(tw_pool_stats_get(p, &s), 0);
                assert_int_equal(s.threads, sizes[i][0]);
                tw_event ran = TW_EVENT_INIT;
                assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ran), 0);
                tw_test_wait_event(&ran, HANG_LIMIT);
                assert_int_equal(tw_pool_destroy(p), 0);
                break;
            }
            assert_int_equal(rc, TW_ESYS);
            assert_int_equal(tw_allocator_live(), 0);
        }
        assert_int_equal(n, sizes[i][0] + 1); /* each start failed once in turn */
        assert_int_equal(tw_allocator_live(), 0);
    }
    tw_set_diag_hook(NULL, NULL);
    end();
}

static void test_thread_fail_pool_do(void **state)
{
    (void)state;
    begin();
    tw_set_diag_hook(quiet_hook, NULL);
    /* No thread yet: refused with TW_ESYS, never run. */
    tw_pool *p;
    int ran = 0;
    assert_int_equal(tw_pool_create(0, 2, &p), 0);
    tw__thread_fail_nth(1);
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), TW_ESYS);
    tw__thread_fail_nth(0);
    tw_event ok = TW_EVENT_INIT;
    assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ok), 0);
    tw_test_wait_event(&ok, HANG_LIMIT);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 0);
    assert_int_equal(tw_allocator_live(), 0);

    /* A busy thread exists: backlogged, and runs once it is free. */
    gate g;
    memset(&g, 0, sizeof g);
    assert_int_equal(tw_pool_create(0, 2, &p), 0);
    assert_int_equal(tw_pool_do(p, gate_task, &g), 0);
    tw_test_wait_event(&g.started, HANG_LIMIT);
    tw__thread_fail_nth(1);
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), 0);
    tw__thread_fail_nth(0);
    tw_pool_stats s;
    assert_int_equal(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.threads, 1);
    assert_int_equal(s.team.backlog, 1);
    tw_event_set(&g.release);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 1);

    /* Raising min when a start fails. */
    assert_int_equal(tw_pool_create(0, 4, &p), 0);
    tw__thread_fail_nth(2);
    int rc = tw_pool_resize(p, 2, 4);
    tw__thread_fail_nth(0);
    assert_int_equal(tw_pool_stats_get(p, &s), 0);
    size_t threads = s.threads;
    if (rc != 0)
        assert_int_equal(rc, TW_ESYS);
    assert_int_equal(s.min, 2); /* the new limits apply either way */
    assert_int_equal(s.max, 4);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_true(__atomic_load_n(&diag_seen, __ATOMIC_SEQ_CST) > 0);
    tw_set_diag_hook(NULL, NULL);
    end();
    if (rc == 0 && threads < 2)
        fail_msg("a thread start failed in tw_pool_resize(2, 4): returned 0 with %zu of the 2 "
                 "threads of min (expected TW_ESYS)",
                 threads);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_alloc_set_allocator_busy, teardown),
        cmocka_unit_test_teardown(test_alloc_worker_create, teardown),
        cmocka_unit_test_teardown(test_alloc_worker_do, teardown),
        cmocka_unit_test_teardown(test_alloc_thread_worker_start_failure, teardown),
        cmocka_unit_test_teardown(test_alloc_team_create, teardown),
        cmocka_unit_test_teardown(test_alloc_team_calls, teardown),
        cmocka_unit_test_teardown(test_alloc_team_dispatch, teardown),
        cmocka_unit_test_teardown(test_alloc_team_grow_on_coordinator, teardown),
        cmocka_unit_test_teardown(test_alloc_pool_create, teardown),
        cmocka_unit_test_teardown(test_alloc_pool_do_without_threads, teardown),
        cmocka_unit_test_teardown(test_alloc_pool_growth_by_submit, teardown),
        cmocka_unit_test_teardown(test_alloc_pool_resize_min, teardown),
        cmocka_unit_test_teardown(test_thread_fail_pool_create, teardown),
        cmocka_unit_test_teardown(test_thread_fail_pool_do, teardown),
    };
    return cmocka_run_group_tests_name("alloc", tests, NULL, NULL);
}
