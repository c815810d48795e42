/*
 * Team on memory workers: the pool algorithm driven one step at a time.
 *
 * The coordinator is a memory worker behind a thin "spy" worker that counts
 * quit calls and can hold one submission at a gate (to reproduce exactly one
 * interleaving of two threads). Workers come from a factory with a settable
 * limit that hands out memory workers and, on retire, checks the team quit
 * them and left nothing queued, then destroys them. Every step is a perform
 * on the coordinator or on one worker, so statistics, order and the identity
 * of the worker that got each task are checked after each step.
 *
 * Covered: dispatch (idle worker, else new worker, else FIFO backlog); stats
 * at each step; grow, shrink (idle first, busy after their task and only when
 * no backlog waits, more than exist, TW_TEAM_ALL); quit with backlog and with
 * idle workers, the coordinator quit only at the end; destroy refusing until
 * then; the error hook and the default; caller nodes freed, overwritten or
 * re-submitted by their own task; the team as a tw_worker; new workers made
 * while draining after quit; a factory refusing everything at quit (tasks
 * reported with TW_ESHUTDOWN); a submit racing with quit; a submit and a
 * grow held (through the team's test probe) between their quit check and the
 * counting of their message while the team takes its final step: refused,
 * never accepted and lost; FIFO start when the factory gives workers again.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#include "worker/team.h"

#define HANG_LIMIT 10.0

/* ==== recorders ============================================================ */

#define LOG_MAX 256

typedef struct logbook {
    tw_lock lock;
    size_t n;
    int v[LOG_MAX];
} logbook;

static void log_add(logbook *l, int v)
{
    tw_test_log_add(&l->lock, &l->n, l->v, LOG_MAX, v);
}

static void expect_log(const logbook *l, const int *want, size_t n)
{
    tw_test_expect_log(l->v, l->n, want, n);
}

#define DIAG_MAX 64
static struct {
    tw_lock lock;
    size_t n;
    int codes[DIAG_MAX];
} diags;

static void diag_hook(void *ctx, const tw_diag *d)
{
    (void)ctx;
    tw_lock_acquire(&diags.lock);
    if (diags.n < DIAG_MAX)
        diags.codes[diags.n] = d->code;
    diags.n++;
    tw_lock_release(&diags.lock);
}

static void diag_begin(void)
{
    memset(&diags, 0, sizeof diags);
    tw_set_diag_hook(diag_hook, NULL);
}

static size_t diag_count_code(int code)
{
    size_t k = 0;
    for (size_t i = 0; i < diags.n && i < DIAG_MAX; i++)
        k += diags.codes[i] == code;
    return k;
}

static int teardown(void **state)
{
    (void)state;
    tw_set_diag_hook(NULL, NULL);
    tw__team_set_probe(NULL);
    return 0;
}

/* ==== the spy coordinator ================================================== */

typedef struct spy {
    tw_worker base;
    tw_worker *inner; /* a memory worker */
    int quits;        /* quit calls */
    int gate_armed;   /* atomic: the next submit waits at the gate */
    tw_event arrived, release;
} spy;

static int spy_submit(tw_worker *w, tw_task *t)
{
    spy *s = (spy *)w;
    if (__atomic_exchange_n(&s->gate_armed, 0, __ATOMIC_SEQ_CST)) {
        tw_event_set(&s->arrived);
        tw_event_wait_timeout(&s->release, HANG_LIMIT);
    }
    /* Straight to the implementation, as a worker that wraps another must:
     * the node keeps the flags twine gave it. */
    return s->inner->ops->submit(s->inner, t);
}

static int spy_quit(tw_worker *w)
{
    spy *s = (spy *)w;
    __atomic_fetch_add(&s->quits, 1, __ATOMIC_SEQ_CST);
    return s->inner->ops->quit(s->inner);
}

static int spy_destroy(tw_worker *w)
{
    spy *s = (spy *)w;
    int rc = tw_worker_destroy(s->inner);
    free(s);
    return rc;
}

static const tw_worker_ops spy_ops = {"spy", true, spy_submit, spy_quit, spy_destroy};

static spy *spy_new(void)
{
    spy *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->base.ops = &spy_ops;
    assert_int_equal(tw_memory_worker_create(&s->inner), 0);
    return s;
}

/* ==== the factory ========================================================== */

#define MAXW 32

typedef struct factory {
    size_t limit;          /* live workers it will give */
    size_t created, retired;
    tw_worker *w[MAXW];    /* by creation order; NULL once retired */
    int retired_unquit;    /* retire got a worker the team had not quit */
    int retired_pending;   /* retire got a worker with tasks queued */
    int retired_unknown;   /* retire got a worker the factory never made */
    void (*on_create)(void *arg); /* if set, called first by every create */
    void *on_create_arg;
} factory;

static tw_worker *fac_create(void *ctx)
{
    factory *f = ctx;
    tw_worker *w;
    if (f->on_create)
        f->on_create(f->on_create_arg);
    if (f->created - f->retired >= f->limit || f->created >= MAXW)
        return NULL;
    if (tw_memory_worker_create(&w) != 0)
        return NULL;
    f->w[f->created++] = w;
    return w;
}

static void fac_retire(void *ctx, tw_worker *w)
{
    factory *f = ctx;
    size_t i;
    for (i = 0; i < f->created; i++)
        if (f->w[i] == w)
            break;
    if (i == f->created) {
        f->retired_unknown++;
        return;
    }
    if (tw_memory_worker_pending(w) != 0)
        f->retired_pending++;
    if (tw_worker_quit(w) != TW_EQUIT)
        f->retired_unquit++;
    tw_worker_destroy(w);
    f->w[i] = NULL;
    f->retired++;
}

/* ==== fixture ============================================================== */

typedef struct fx {
    spy *coord;
    factory fac;
    tw_team *team;
    size_t live0;
    tw_lock err_lock;
    size_t n_err;
    int errs[64];
} fx;

static void error_hook(void *ctx, int code)
{
    fx *f = ctx;
    tw_test_log_add(&f->err_lock, &f->n_err, f->errs, 64, code);
}

static fx *fx_new(size_t limit, bool hook)
{
    fx *f = calloc(1, sizeof *f);
    tw_team_workers tw = {fac_create, fac_retire, NULL};
    assert_non_null(f);
    f->live0 = tw_allocator_live();
    f->fac.limit = limit;
    f->coord = spy_new();
    tw.ctx = &f->fac;
    assert_int_equal(tw_team_create(&f->coord->base, &tw, &f->team), 0);
    if (hook)
        assert_int_equal(tw_team_set_error_hook(f->team, error_hook, f), 0);
    return f;
}

/* Performs the coordinator until it has nothing; returns how many ran. */
static size_t run_coord(fx *f)
{
    size_t n = 0;
    int rc;
    while (tw_memory_worker_perform(f->coord->inner, &rc)) {
        assert_int_equal(rc, 0);
        n++;
    }
    return n;
}

static size_t coord_pending(fx *f)
{
    return tw_memory_worker_pending(f->coord->inner);
}

static size_t pending_on(fx *f, size_t i)
{
    assert_true(i < f->fac.created);
    assert_non_null(f->fac.w[i]);
    return tw_memory_worker_pending(f->fac.w[i]);
}

/* Runs one task on worker i (which must have one). */
static void run_worker(fx *f, size_t i)
{
    int rc = 12345;
    assert_true(i < f->fac.created);
    assert_non_null(f->fac.w[i]);
    assert_true(tw_memory_worker_perform(f->fac.w[i], &rc));
    assert_int_equal(rc, 0); /* the team's wrapper; results go to the hook */
}

/* Runs everything anywhere until nothing moves. */
static void run_all(fx *f)
{
    bool moved;
    do {
        moved = run_coord(f) > 0;
        for (size_t i = 0; i < f->fac.created; i++)
            if (f->fac.w[i] && tw_memory_worker_perform(f->fac.w[i], NULL))
                moved = true;
    } while (moved);
}

/* Quits (unless quit already), drains, and checks the end state: every
 * worker retired properly, the coordinator quit exactly once, destroy 0,
 * nothing leaked. */
static void fx_finish(fx *f, bool quit_done)
{
    if (!quit_done)
        assert_int_equal(tw_team_quit(f->team), 0);
    run_all(f);
    assert_int_equal(f->fac.retired, f->fac.created);
    assert_int_equal(f->fac.retired_unquit, 0);
    assert_int_equal(f->fac.retired_pending, 0);
    assert_int_equal(f->fac.retired_unknown, 0);
    assert_int_equal(f->coord->quits, 1);
    assert_int_equal(tw_team_destroy(f->team), 0);
    assert_int_equal(tw_worker_destroy(&f->coord->base), 0);
    assert_int_equal(tw_allocator_live(), f->live0);
    free(f);
}

#define EXPECT_STATS(f, i, b, bl, c, fl)                                                        \
    do {                                                                                        \
        tw_team_stats s_;                                                                       \
        memset(&s_, 0xff, sizeof s_);                                                           \
        assert_int_equal(tw_team_stats_get((f)->team, &s_), 0);                                 \
        assert_int_equal(s_.idle, (i));                                                         \
        assert_int_equal(s_.busy, (b));                                                         \
        assert_int_equal(s_.backlog, (bl));                                                     \
        assert_int_equal(s_.completed, (c));                                                    \
        assert_int_equal(s_.failed, (fl));                                                      \
    } while (0)

/* ==== tasks ================================================================= */

#define NTASK 32
static logbook tlog;
static struct targ {
    int id;
    int code; /* what the task returns */
} targs[NTASK];

static int log_task(void *arg)
{
    struct targ *a = arg;
    log_add(&tlog, a->id);
    return a->code;
}

static void reset_tasks(void)
{
    memset(&tlog, 0, sizeof tlog);
    for (int i = 0; i < NTASK; i++) {
        targs[i].id = i;
        targs[i].code = 0;
    }
}

static void team_do(fx *f, int id)
{
    assert_int_equal(tw_team_do(f->team, log_task, &targs[id]), 0);
}

/* ==== tests ================================================================ */

static int noop_task(void *arg)
{
    (void)arg;
    return 0;
}

static void test_team_bad_arguments(void **state)
{
    (void)state;
    spy *s = spy_new();
    factory fac;
    tw_team_workers good = {fac_create, fac_retire, &fac};
    tw_team_workers no_create = {NULL, fac_retire, &fac};
    tw_team_workers no_retire = {fac_create, NULL, &fac};
    tw_team *t = NULL;
    memset(&fac, 0, sizeof fac);
    fac.limit = 1;
    assert_int_equal(tw_team_create(NULL, &good, &t), TW_EINVAL);
    assert_int_equal(tw_team_create(&s->base, NULL, &t), TW_EINVAL);
    assert_int_equal(tw_team_create(&s->base, &no_create, &t), TW_EINVAL);
    assert_int_equal(tw_team_create(&s->base, &no_retire, &t), TW_EINVAL);
    assert_int_equal(tw_team_create(&s->base, &good, NULL), TW_EINVAL);
    assert_null(t);

    assert_int_equal(tw_team_create(&s->base, &good, &t), 0);
    /* A coordinator must be exclusive: a team is not. */
    {
        tw_team *t2 = NULL;
        assert_false(tw_worker_exclusive(tw_team_worker(t)));
        assert_int_equal(tw_team_create(tw_team_worker(t), &good, &t2), TW_EINVAL);
        assert_null(t2);
    }
    tw_task nofn = TW_TASK_INIT(NULL, NULL);
    tw_team_stats st;
    assert_int_equal(tw_team_set_error_hook(NULL, error_hook, NULL), TW_EINVAL);
    assert_null(tw_team_worker(NULL));
    assert_int_equal(tw_team_submit(NULL, &nofn), TW_EINVAL);
    assert_int_equal(tw_team_submit(t, NULL), TW_EINVAL);
    assert_int_equal(tw_team_submit(t, &nofn), TW_EINVAL);
    assert_int_equal(tw_team_do(NULL, noop_task, NULL), TW_EINVAL);
    assert_int_equal(tw_team_do(t, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_team_grow(NULL, 1), TW_EINVAL);
    assert_int_equal(tw_team_shrink(NULL, 1), TW_EINVAL);
    assert_int_equal(tw_team_quit(NULL), TW_EINVAL);
    assert_int_equal(tw_team_stats_get(NULL, &st), TW_EINVAL);
    assert_int_equal(tw_team_stats_get(t, NULL), TW_EINVAL);
    assert_int_equal(tw_team_destroy(NULL), TW_EINVAL);
    /* None of that reached the coordinator. */
    assert_int_equal(tw_memory_worker_pending(s->inner), 0);
    /* A team that never had workers or work can go at once. */
    assert_int_equal(tw_team_destroy(t), 0);
    assert_int_equal(fac.created, 0);
    assert_int_equal(tw_worker_destroy(&s->base), 0);
}

/* Idle worker first, else a new one, else the backlog. */
static void test_team_dispatch_idle_new_backlog(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(2, false);
    EXPECT_STATS(f, 0, 0, 0, 0, 0);

    team_do(f, 0);
    assert_int_equal(coord_pending(f), 1); /* a message, not yet dispatched */
    EXPECT_STATS(f, 0, 0, 0, 0, 0);
    assert_int_equal(run_coord(f), 1);
    EXPECT_STATS(f, 0, 1, 0, 0, 0);
    assert_int_equal(f->fac.created, 1);
    assert_int_equal(pending_on(f, 0), 1);

    team_do(f, 1);
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 0, 0, 0);
    assert_int_equal(f->fac.created, 2);
    assert_int_equal(pending_on(f, 1), 1);

    team_do(f, 2); /* at the limit: backlog */
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 1, 0, 0);
    assert_int_equal(f->fac.created, 2);

    run_worker(f, 0); /* task 0; the recycle message is on the coordinator */
    EXPECT_STATS(f, 0, 2, 1, 0, 0);
    assert_int_equal(coord_pending(f), 1);
    run_coord(f); /* worker 0 takes the backlog */
    EXPECT_STATS(f, 0, 2, 0, 1, 0);
    assert_int_equal(pending_on(f, 0), 1);

    run_worker(f, 0); /* task 2 */
    run_coord(f);
    EXPECT_STATS(f, 1, 1, 0, 2, 0);

    team_do(f, 3); /* goes to the idle worker, no new one */
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 0, 2, 0);
    assert_int_equal(f->fac.created, 2);
    assert_int_equal(pending_on(f, 0), 1);
    assert_int_equal(pending_on(f, 1), 1);

    run_worker(f, 1); /* task 1 */
    run_coord(f);
    EXPECT_STATS(f, 1, 1, 0, 3, 0);
    run_worker(f, 0); /* task 3 */
    run_coord(f);
    EXPECT_STATS(f, 2, 0, 0, 4, 0);

    static const int want[] = {0, 2, 1, 3};
    expect_log(&tlog, want, 4);
    assert_int_equal(f->fac.retired, 0);
    fx_finish(f, false);
}

/* One worker: the backlog leaves strictly in submission order, including
 * tasks submitted while it drains. */
static void test_team_backlog_fifo(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(1, false);
    team_do(f, 0);
    run_coord(f);
    for (int i = 1; i < 10; i++) {
        team_do(f, i);
        run_coord(f);
        EXPECT_STATS(f, 0, 1, (size_t)i, 0, 0);
    }
    size_t backlog = 9;
    uint64_t done = 0;
    int extra = 10;
    while (pending_on(f, 0) > 0) {
        run_worker(f, 0);
        run_coord(f);
        done++;
        if (backlog > 0)
            backlog--;
        if (done == 3 || done == 5) { /* newcomers queue behind */
            team_do(f, extra++);
            run_coord(f);
            backlog++;
        }
        EXPECT_STATS(f, backlog == 0 && pending_on(f, 0) == 0 ? 1 : 0,
                     pending_on(f, 0) ? 1 : 0, backlog, done, 0);
    }
    assert_int_equal(done, 12);
    static const int want[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    expect_log(&tlog, want, 12);
    assert_int_equal(f->fac.created, 1);
    fx_finish(f, false);
}

static void test_team_grow(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(0, false);
    team_do(f, 0);
    team_do(f, 1);
    team_do(f, 2);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 3, 0, 0);
    assert_int_equal(f->fac.created, 0);

    f->fac.limit = 3;
    assert_int_equal(tw_team_grow(f->team, 2), 0);
    EXPECT_STATS(f, 0, 0, 3, 0, 0); /* on the coordinator, not yet run */
    assert_int_equal(run_coord(f), 1);
    /* Two new workers took the two oldest tasks at once. */
    assert_int_equal(f->fac.created, 2);
    EXPECT_STATS(f, 0, 2, 1, 0, 0);

    assert_int_equal(tw_team_grow(f->team, 5), 0); /* stops at the first refusal */
    run_coord(f);
    assert_int_equal(f->fac.created, 3);
    EXPECT_STATS(f, 0, 3, 0, 0, 0);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(pending_on(f, i), 1);
    /* Worker i got task i. */
    run_worker(f, 2);
    run_worker(f, 0);
    run_worker(f, 1);
    static const int want[] = {2, 0, 1};
    expect_log(&tlog, want, 3);
    run_coord(f);
    EXPECT_STATS(f, 3, 0, 0, 3, 0);

    assert_int_equal(tw_team_grow(f->team, 1), 0); /* limit reached */
    run_coord(f);
    EXPECT_STATS(f, 3, 0, 0, 3, 0);
    assert_int_equal(f->fac.created, 3);

    f->fac.limit = 4;
    assert_int_equal(tw_team_grow(f->team, 1), 0);
    run_coord(f);
    EXPECT_STATS(f, 4, 0, 0, 3, 0);

    assert_int_equal(tw_team_grow(f->team, 0), 0);
    assert_int_equal(coord_pending(f), 0);
    fx_finish(f, false);
}

static size_t busy_worker(fx *f)
{
    size_t found = MAXW;
    for (size_t i = 0; i < f->fac.created; i++)
        if (f->fac.w[i] && tw_memory_worker_pending(f->fac.w[i]) > 0) {
            assert_int_equal(found, MAXW);
            found = i;
        }
    assert_true(found != MAXW);
    return found;
}

static void test_team_shrink_idle_first(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(3, false);
    assert_int_equal(tw_team_grow(f->team, 3), 0);
    run_coord(f);
    EXPECT_STATS(f, 3, 0, 0, 0, 0);
    team_do(f, 0);
    run_coord(f);
    EXPECT_STATS(f, 2, 1, 0, 0, 0);
    size_t b = busy_worker(f);

    assert_int_equal(tw_team_shrink(f->team, 1), 0);
    EXPECT_STATS(f, 2, 1, 0, 0, 0);
    run_coord(f);
    EXPECT_STATS(f, 1, 1, 0, 0, 0);
    assert_int_equal(f->fac.retired, 1);
    assert_non_null(f->fac.w[b]); /* not the busy one */

    assert_int_equal(tw_team_shrink(f->team, 2), 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 1, 0, 0, 0);
    assert_int_equal(f->fac.retired, 2);
    assert_non_null(f->fac.w[b]); /* busy: retired after its task */

    run_worker(f, b);
    EXPECT_STATS(f, 0, 1, 0, 0, 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 0, 1, 0);
    assert_int_equal(f->fac.retired, 3);
    assert_null(f->fac.w[b]);
    assert_int_equal(f->coord->quits, 0); /* shrinking is not quitting */

    /* Still a working team: a new task gets a new worker, which stays. */
    team_do(f, 1);
    run_coord(f);
    EXPECT_STATS(f, 0, 1, 0, 1, 0);
    assert_int_equal(f->fac.created, 4);
    run_worker(f, 3);
    run_coord(f);
    EXPECT_STATS(f, 1, 0, 0, 2, 0);
    assert_int_equal(f->fac.retired, 3);
    fx_finish(f, false);
}

/* Busy workers marked for retirement still drain the backlog first. */
static void test_team_shrink_busy_waits_for_backlog(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(2, false);
    for (int i = 0; i < 4; i++)
        team_do(f, i);
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 2, 0, 0);
    assert_int_equal(tw_team_shrink(f->team, 2), 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 2, 0, 0);
    assert_int_equal(f->fac.retired, 0);

    run_worker(f, 0); /* 0 */
    run_coord(f);     /* takes 2 instead of retiring */
    EXPECT_STATS(f, 0, 2, 1, 1, 0);
    assert_int_equal(f->fac.retired, 0);
    run_worker(f, 1); /* 1 */
    run_coord(f);     /* takes 3 */
    EXPECT_STATS(f, 0, 2, 0, 2, 0);
    assert_int_equal(f->fac.retired, 0);
    run_worker(f, 0); /* 2 */
    run_coord(f);     /* nothing waits: retired */
    EXPECT_STATS(f, 0, 1, 0, 3, 0);
    assert_int_equal(f->fac.retired, 1);
    assert_null(f->fac.w[0]);
    run_worker(f, 1); /* 3 */
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 0, 4, 0);
    assert_int_equal(f->fac.retired, 2);
    static const int want[] = {0, 1, 2, 3};
    expect_log(&tlog, want, 4);
    fx_finish(f, false);
}

/* Shrinking by more than exist retires what exists, and no more: a worker
 * made afterwards is not retired for the excess. */
static void test_team_shrink_more_than_exist(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(2, false);
    assert_int_equal(tw_team_grow(f->team, 2), 0);
    run_coord(f);
    team_do(f, 0);
    run_coord(f);
    EXPECT_STATS(f, 1, 1, 0, 0, 0);
    size_t b = busy_worker(f);
    assert_int_equal(tw_team_shrink(f->team, 10), 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 1, 0, 0, 0);
    run_worker(f, b);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 0, 1, 0);
    assert_int_equal(f->fac.retired, 2);

    team_do(f, 1);
    team_do(f, 2);
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 0, 1, 0);
    run_worker(f, 2);
    run_worker(f, 3);
    run_coord(f);
    EXPECT_STATS(f, 2, 0, 0, 3, 0);
    assert_int_equal(f->fac.retired, 2);
    fx_finish(f, false);
}

static void test_team_shrink_all(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(3, false);
    assert_int_equal(tw_team_grow(f->team, 3), 0);
    run_coord(f);
    team_do(f, 0);
    team_do(f, 1);
    run_coord(f);
    EXPECT_STATS(f, 1, 2, 0, 0, 0);
    assert_int_equal(tw_team_shrink(f->team, TW_TEAM_ALL), 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 0, 0, 0);
    assert_int_equal(f->fac.retired, 1);
    run_all(f);
    EXPECT_STATS(f, 0, 0, 0, 2, 0);
    assert_int_equal(f->fac.retired, 3);
    assert_int_equal(f->coord->quits, 0);

    team_do(f, 2); /* a fresh worker, which stays */
    run_all(f);
    EXPECT_STATS(f, 1, 0, 0, 3, 0);
    assert_int_equal(f->fac.created, 4);
    assert_int_equal(f->fac.retired, 3);
    /* TW_TEAM_ALL on idle workers only */
    assert_int_equal(tw_team_shrink(f->team, TW_TEAM_ALL), 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 0, 3, 0);
    assert_int_equal(f->fac.retired, 4);
    fx_finish(f, false);
}

static void test_team_quit_with_backlog(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(1, false);
    for (int i = 0; i < 4; i++)
        team_do(f, i);
    run_coord(f);
    EXPECT_STATS(f, 0, 1, 3, 0, 0);

    assert_int_equal(tw_team_quit(f->team), 0);
    /* Refused at once, before the coordinator has seen the quit. */
    assert_int_equal(tw_team_do(f->team, log_task, &targs[9]), TW_EQUIT);
    tw_task mine = TW_TASK_INIT(log_task, &targs[8]);
    assert_int_equal(tw_team_submit(f->team, &mine), TW_EQUIT);
    assert_ptr_equal(mine.fn, log_task);
    assert_ptr_equal(mine.arg, &targs[8]);
    assert_int_equal(tw_team_grow(f->team, 1), TW_EQUIT);
    assert_int_equal(tw_team_shrink(f->team, 1), TW_EQUIT);
    assert_int_equal(tw_team_quit(f->team), TW_EQUIT);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY);

    run_coord(f);
    EXPECT_STATS(f, 0, 1, 3, 0, 0);
    assert_int_equal(f->coord->quits, 0);
    for (int i = 1; i <= 3; i++) {
        run_worker(f, 0);
        run_coord(f);
        EXPECT_STATS(f, 0, 1, 3 - (size_t)i, (uint64_t)i, 0);
        assert_int_equal(f->coord->quits, 0); /* not before the end */
        assert_int_equal(tw_team_destroy(f->team), TW_EBUSY);
    }
    run_worker(f, 0);
    assert_int_equal(f->coord->quits, 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 0, 4, 0);
    assert_int_equal(f->fac.retired, 1);
    assert_int_equal(f->coord->quits, 1);
    static const int want[] = {0, 1, 2, 3};
    expect_log(&tlog, want, 4);
    fx_finish(f, true);
}

/* Idle workers go at once; the busy one after its task; then the
 * coordinator. */
static void test_team_quit_idle_and_busy(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(3, false);
    assert_int_equal(tw_team_grow(f->team, 3), 0);
    run_coord(f);
    team_do(f, 0);
    run_coord(f);
    size_t b = busy_worker(f);
    assert_int_equal(tw_team_quit(f->team), 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 1, 0, 0, 0);
    assert_int_equal(f->fac.retired, 2);
    assert_int_equal(f->coord->quits, 0);
    run_worker(f, b);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 0, 1, 0);
    assert_int_equal(f->fac.retired, 3);
    assert_int_equal(f->coord->quits, 1);
    fx_finish(f, true);
}

static void test_team_quit_idle_only(void **state)
{
    (void)state;
    fx *f = fx_new(2, false);
    assert_int_equal(tw_team_grow(f->team, 2), 0);
    run_coord(f);
    assert_int_equal(tw_team_quit(f->team), 0);
    assert_int_equal(run_coord(f), 1);
    EXPECT_STATS(f, 0, 0, 0, 0, 0);
    assert_int_equal(f->fac.retired, 2);
    assert_int_equal(f->coord->quits, 1);
    fx_finish(f, true);
}

static void test_team_destroy_busy_until_done(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(1, false);
    assert_int_equal(tw_team_grow(f->team, 1), 0);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY); /* a message waits */
    run_coord(f);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY); /* a worker */
    team_do(f, 0);
    team_do(f, 1);
    run_coord(f);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY); /* busy, backlog */
    assert_int_equal(tw_team_quit(f->team), 0);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY);
    run_coord(f);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY);
    run_worker(f, 0);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY); /* recycle waits */
    run_coord(f);
    run_worker(f, 0);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY);
    fx_finish(f, true); /* destroy 0 once the coordinator has run it all */

    /* Backlog alone (the factory refuses) is work too. */
    reset_tasks();
    f = fx_new(0, false);
    team_do(f, 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 1, 0, 0);
    assert_int_equal(tw_team_destroy(f->team), TW_EBUSY);
    f->fac.limit = 1;
    assert_int_equal(tw_team_grow(f->team, 1), 0);
    run_all(f);
    EXPECT_STATS(f, 1, 0, 0, 1, 0);
    fx_finish(f, false);
}

static void test_team_error_hook(void **state)
{
    (void)state;
    reset_tasks();
    diag_begin();
    fx *f = fx_new(1, true);
    targs[0].code = -5;
    targs[2].code = TW_EBUSY;
    targs[3].code = 1;
    for (int i = 0; i < 5; i++)
        team_do(f, i);
    run_coord(f);
    uint64_t failed = 0;
    for (int i = 0; i < 5; i++) {
        run_worker(f, 0);
        run_coord(f);
        failed += targs[i].code != 0;
        EXPECT_STATS(f, i == 4, i < 4, (size_t)(i < 4 ? 3 - i : 0), (uint64_t)i + 1, failed);
    }
    static const int want[] = {0, 1, 2, 3, 4};
    expect_log(&tlog, want, 5); /* the team kept going */
    assert_int_equal(f->n_err, 3);
    assert_int_equal(f->errs[0], -5);
    assert_int_equal(f->errs[1], TW_EBUSY);
    assert_int_equal(f->errs[2], 1);
    assert_int_equal(diags.n, 0); /* the hook took them */
    fx_finish(f, false);

    /* No hook (or NULL set again): the diagnostic hook gets them. */
    for (int round = 0; round < 2; round++) {
        reset_tasks();
        diag_begin();
        f = fx_new(1, round == 1);
        if (round == 1)
            assert_int_equal(tw_team_set_error_hook(f->team, NULL, NULL), 0);
        targs[0].code = -77;
        team_do(f, 0);
        team_do(f, 1);
        run_all(f);
        EXPECT_STATS(f, 1, 0, 0, 2, 1);
        assert_int_equal(diag_count_code(-77), 1);
        assert_int_equal(diags.n, 1);
        assert_int_equal(f->n_err, 0);
        fx_finish(f, false);
    }
    tw_set_diag_hook(NULL, NULL);
}

/* Caller-provided nodes: after fn runs the team never touches the node. */
typedef struct owned_node {
    tw_task task;
    tw_team *team;
    int rounds;
    int runs;
    bool scribble; /* overwrite the node when done */
    bool release;  /* free the node when done */
    int *freed_runs;
} owned_node;

static int owned_task(void *arg)
{
    owned_node *n = arg;
    n->runs++;
    if (--n->rounds > 0) {
        tw_task_init(&n->task, owned_task, n);
        if (tw_team_submit(n->team, &n->task) != 0)
            n->runs += 1000;
    } else if (n->release) {
        *n->freed_runs = n->runs;
        memset(n, 0x5A, sizeof *n);
        free(n);
    } else if (n->scribble) {
        memset(&n->task, 0xA5, sizeof n->task);
    }
    return 0;
}

static bool all_bytes(const void *p, unsigned char v, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != v)
            return false;
    return true;
}

static void test_team_caller_node_untouched_after_fn(void **state)
{
    (void)state;
    fx *f = fx_new(2, false);

    /* Overwritten by its task: still the task's bytes after the recycle. */
    owned_node a;
    memset(&a, 0, sizeof a);
    tw_task_init(&a.task, owned_task, &a);
    a.team = f->team;
    a.rounds = 1;
    a.scribble = true;
    assert_int_equal(tw_team_submit(f->team, &a.task), 0);
    run_all(f);
    assert_int_equal(a.runs, 1);
    assert_true(all_bytes(&a.task, 0xA5, sizeof a.task));

    /* Re-submitted by its own task three times (one node, four runs). */
    owned_node b;
    memset(&b, 0, sizeof b);
    tw_task_init(&b.task, owned_task, &b);
    b.team = f->team;
    b.rounds = 4;
    b.scribble = true;
    assert_int_equal(tw_team_submit(f->team, &b.task), 0);
    run_all(f);
    assert_int_equal(b.runs, 4);
    assert_true(all_bytes(&b.task, 0xA5, sizeof b.task));

    /* Freed by its task (a touch afterwards is an ASan report), from the
     * backlog too. */
    int freed_runs[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        owned_node *n = malloc(sizeof *n);
        assert_non_null(n);
        memset(n, 0, sizeof *n);
        tw_task_init(&n->task, owned_task, n);
        n->team = f->team;
        n->rounds = 2;
        n->release = true;
        n->freed_runs = &freed_runs[i];
        assert_int_equal(tw_team_submit(f->team, &n->task), 0);
    }
    run_all(f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(freed_runs[i], 2);
    EXPECT_STATS(f, 2, 0, 0, 1 + 4 + 6, 0);
    fx_finish(f, false);
}

static void test_team_as_worker(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(2, false);
    tw_worker *w = tw_team_worker(f->team);
    assert_non_null(w);
    assert_false(tw_worker_exclusive(w));
    assert_non_null(tw_worker_name(w));
    assert_string_not_equal(tw_worker_name(w), "spy");

    tw_task node = TW_TASK_INIT(log_task, &targs[1]);
    assert_int_equal(tw_worker_do(w, log_task, &targs[0]), 0);
    assert_int_equal(tw_worker_submit(w, &node), 0);
    run_all(f);
    static const int want[] = {0, 1};
    expect_log(&tlog, want, 2);
    EXPECT_STATS(f, 2, 0, 0, 2, 0);
    assert_int_equal(tw_worker_destroy(w), TW_EBUSY); /* workers */

    assert_int_equal(tw_worker_quit(w), 0);
    assert_int_equal(tw_team_quit(f->team), TW_EQUIT);
    assert_int_equal(tw_worker_quit(w), TW_EQUIT);
    size_t live = tw_allocator_live();
    assert_int_equal(tw_worker_do(w, log_task, &targs[5]), TW_EQUIT);
    assert_int_equal(tw_allocator_live(), live);
    tw_task late = TW_TASK_INIT(log_task, &targs[6]);
    assert_int_equal(tw_worker_submit(w, &late), TW_EQUIT);
    assert_ptr_equal(late.fn, log_task);
    assert_ptr_equal(late.arg, &targs[6]);
    assert_int_equal(tw_worker_destroy(w), TW_EBUSY); /* quit not yet run */
    run_all(f);
    assert_int_equal(f->coord->quits, 1);
    assert_int_equal(f->fac.retired, 2);
    expect_log(&tlog, want, 2);
    assert_int_equal(tw_worker_destroy(w), 0);
    assert_int_equal(tw_worker_destroy(&f->coord->base), 0);
    assert_int_equal(tw_allocator_live(), f->live0);
    free(f);
}

/* After quit, a backlog with no worker left gets new workers if the factory
 * gives them (Twisted's team does the same), and they retire at the end. */
static void test_team_new_workers_while_draining_after_quit(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(0, true);
    for (int i = 0; i < 3; i++)
        team_do(f, i);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 3, 0, 0);
    f->fac.limit = 1;
    assert_int_equal(tw_team_quit(f->team), 0);
    run_coord(f);
    assert_int_equal(f->fac.created, 1);
    EXPECT_STATS(f, 0, 1, 2, 0, 0);
    assert_int_equal(f->coord->quits, 0);
    run_all(f);
    static const int want[] = {0, 1, 2};
    expect_log(&tlog, want, 3);
    EXPECT_STATS(f, 0, 0, 0, 3, 0);
    assert_int_equal(f->n_err, 0);
    fx_finish(f, true);
}

/* Quit with a backlog and a factory that refuses everything: the tasks
 * can never run, and each is reported with TW_ESHUTDOWN. */
static void test_team_quit_factory_refuses(void **state)
{
    (void)state;
    for (int hook = 1; hook >= 0; hook--) {
        reset_tasks();
        diag_begin();
        fx *f = fx_new(0, hook);
        tw_task mine = TW_TASK_INIT(log_task, &targs[1]);
        team_do(f, 0);
        assert_int_equal(tw_team_submit(f->team, &mine), 0);
        team_do(f, 2);
        run_coord(f);
        EXPECT_STATS(f, 0, 0, 3, 0, 0);
        assert_int_equal(tw_team_quit(f->team), 0);
        run_coord(f);
        EXPECT_STATS(f, 0, 0, 0, 0, 0);
        assert_int_equal(tlog.n, 0); /* never ran */
        if (hook) {
            assert_int_equal(f->n_err, 3);
            for (int i = 0; i < 3; i++)
                assert_int_equal(f->errs[i], TW_ESHUTDOWN);
        } else {
            assert_int_equal(diag_count_code(TW_ESHUTDOWN), 3);
        }
        assert_int_equal(f->fac.created, 0);
        fx_finish(f, true); /* coordinator quit, destroy 0, nodes freed */
        assert_int_equal(tlog.n, 0);
    }
    tw_set_diag_hook(NULL, NULL);
}

/* Reproduces one interleaving of a submit in thread A with a quit in the
 * main thread: A has passed the quit check and is inside the coordinator's
 * submit when the quit is posted; A's message lands behind the quit
 * message. Either A's submit is refused (and the task never runs), or it is
 * accepted, runs, and the team still winds down completely. */
typedef struct racer {
    fx *f;
    int rc;
} racer;

static void *race_submit(void *arg)
{
    racer *r = arg;
    r->rc = tw_team_do(r->f->team, log_task, &targs[7]);
    return NULL;
}

static void test_team_submit_racing_quit(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(2, true);
    racer r = {f, 12345};
    __atomic_store_n(&f->coord->gate_armed, 1, __ATOMIC_SEQ_CST);
    pthread_t th = tw_test_start(race_submit, &r);
    assert_int_equal(tw_event_wait_timeout(&f->coord->arrived, HANG_LIMIT), 0);
    assert_int_equal(tw_team_quit(f->team), 0);
    tw_event_set(&f->coord->release);
    tw_test_join(th);
    run_all(f);
    if (r.rc == TW_EQUIT) {
        assert_int_equal(tlog.n, 0);
    } else {
        assert_int_equal(r.rc, 0);
        assert_int_equal(tlog.n, 1);
        assert_int_equal(tlog.v[0], 7);
    }
    tw_team_stats st;
    assert_int_equal(tw_team_stats_get(f->team, &st), 0);
    if (st.busy != 0 || f->fac.retired != f->fac.created)
        fail_msg("submit accepted (rc %d) while quitting: the task ran but the team did not wind "
                 "down: busy %zu, workers made %zu, retired %zu, coordinator quit %d time(s), "
                 "destroy %s",
                 r.rc, st.busy, f->fac.created, f->fac.retired, f->coord->quits,
                 tw_err_name(tw_team_destroy(f->team)));
    EXPECT_STATS(f, 0, 0, 0, r.rc == 0 ? 1 : 0, 0);
    assert_int_equal(f->n_err, 0);
    fx_finish(f, true);
}


/* ==== calls racing the team's final step ====================================
 * A submit or grow passes the quit check, then is held (the team's probe at
 * TW__TEAM_AT_POST) before its message is counted. The team quits; its final
 * step finds no message pending and a task still waiting, and asks the
 * factory for a worker to run it: there, inside the final step and before the
 * coordinator is quit, the held call is let go and runs to its end. It lost
 * the race, so it must be refused (TW_EQUIT): accepted, its message would
 * reach a coordinator the team is about to quit — a task that never runs, or
 * a worker that nobody ever quits, and a team that never finishes. */
static struct {
    int where;
    int armed; /* atomic: the next call at `where` is held */
    tw_event arrived, release;
} hold;

static void hold_probe(int where, tw_task *task)
{
    (void)task;
    if (where != hold.where || !__atomic_exchange_n(&hold.armed, 0, __ATOMIC_SEQ_CST))
        return;
    tw_event_set(&hold.arrived);
    tw_event_wait_timeout(&hold.release, HANG_LIMIT);
}

static void hold_begin(int where)
{
    memset(&hold, 0, sizeof hold);
    hold.where = where;
    __atomic_store_n(&hold.armed, 1, __ATOMIC_SEQ_CST);
    tw__team_set_probe(hold_probe);
}

typedef struct final_race {
    fx *f;
    bool grow; /* tw_team_grow(1), else tw_team_submit(node) */
    tw_task node;
    pthread_t th;
    int rc;
    bool let_go;
} final_race;

static void *final_race_call(void *arg)
{
    final_race *r = arg;
    r->rc = r->grow ? tw_team_grow(r->f->team, 1) : tw_team_submit(r->f->team, &r->node);
    return NULL;
}

/* The factory's on_create, during the final step: the held call goes on and
 * returns before the step continues. */
static void final_race_let_go(void *arg)
{
    final_race *r = arg;
    if (r->let_go)
        return;
    r->let_go = true;
    tw_event_set(&hold.release);
    tw_test_join(r->th);
}

static void run_final_race(bool grow)
{
    reset_tasks();
    diag_begin(); /* task 0's TW_ESHUTDOWN is reported there too */
    fx *f = fx_new(0, true); /* the factory refuses: task 0 waits */
    final_race r;
    memset(&r, 0, sizeof r);
    r.f = f;
    r.grow = grow;
    r.rc = 12345;
    tw_task_init(&r.node, log_task, &targs[5]);
    team_do(f, 0);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 1, 0, 0);

    hold_begin(TW__TEAM_AT_POST);
    r.th = tw_test_start(final_race_call, &r);
    tw_test_wait_event(&hold.arrived, HANG_LIMIT); /* past the quit check, not counted */
    assert_int_equal(tw_team_quit(f->team), 0);
    f->fac.on_create = final_race_let_go;
    f->fac.on_create_arg = &r;
    /* The quit message, and in it the final step; nothing else yet. */
    assert_true(tw_memory_worker_perform(f->coord->inner, NULL));
    tw__team_set_probe(NULL);
    f->fac.on_create = NULL;
    assert_true(r.let_go); /* the final step did ask the factory */
    /* A worker can be made now: what an accepted call left on the
     * coordinator would make one. */
    f->fac.limit = 1;
    run_all(f);

    tw_team_stats st;
    assert_int_equal(tw_team_stats_get(f->team, &st), 0);
    if (r.rc != TW_EQUIT)
        fail_msg("tw_team_%s, racing the final step, returned %d (%s) after the team had "
                 "finished: tasks run %zu, backlog %zu, busy %zu, workers made %zu, retired %zu, "
                 "coordinator quit %d time(s), destroy %s",
                 grow ? "grow" : "submit", r.rc, tw_err_name(r.rc), tlog.n, st.backlog,
                 st.busy, f->fac.created, f->fac.retired, f->coord->quits,
                 tw_err_name(tw_team_destroy(f->team)));
    if (!grow) { /* the node comes back as it was submitted */
        assert_ptr_equal(r.node.fn, log_task);
        assert_ptr_equal(r.node.arg, &targs[5]);
    }
    assert_int_equal(tlog.n, 0);
    /* Task 0 could never run: reported, not dropped. */
    assert_int_equal(f->n_err, 1);
    assert_int_equal(f->errs[0], TW_ESHUTDOWN);
    assert_int_equal(f->fac.created, 0);
    EXPECT_STATS(f, 0, 0, 0, 0, 0);
    fx_finish(f, true);
}

static void test_team_submit_racing_final_step(void **state)
{
    (void)state;
    run_final_race(false);
}

static void test_team_grow_racing_final_step(void **state)
{
    (void)state;
    run_final_race(true);
}

/* FIFO start: when the factory gives workers again (its limit was raised
 * without a grow), the next dispatch first gives them the tasks that were
 * already waiting; the newcomer queues behind them. */
static void test_team_backlog_first_when_factory_gives_again(void **state)
{
    (void)state;
    reset_tasks();
    fx *f = fx_new(0, false);
    for (int i = 0; i < 3; i++)
        team_do(f, i);
    run_coord(f);
    EXPECT_STATS(f, 0, 0, 3, 0, 0);
    f->fac.limit = 2;
    team_do(f, 3);
    run_coord(f);
    EXPECT_STATS(f, 0, 2, 2, 0, 0); /* tasks 0 and 1 started; 2, then 3, wait */
    assert_int_equal(f->fac.created, 2);
    run_worker(f, 0);
    run_worker(f, 1);
    static const int first[] = {0, 1};
    expect_log(&tlog, first, 2);
    run_all(f);
    static const int want[] = {0, 1, 2, 3};
    expect_log(&tlog, want, 4);
    EXPECT_STATS(f, 2, 0, 0, 4, 0);

    /* The same with one worker: it takes the oldest, not the newcomer. */
    reset_tasks();
    tw_team_shrink(f->team, TW_TEAM_ALL);
    run_all(f);
    f->fac.limit = 0;
    for (int i = 0; i < 3; i++)
        team_do(f, i);
    run_coord(f);
    f->fac.limit = 1;
    team_do(f, 3);
    run_coord(f);
    EXPECT_STATS(f, 0, 1, 3, 4, 0);
    run_all(f);
    expect_log(&tlog, want, 4);
    fx_finish(f, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_team_bad_arguments, teardown),
        cmocka_unit_test_teardown(test_team_dispatch_idle_new_backlog, teardown),
        cmocka_unit_test_teardown(test_team_backlog_fifo, teardown),
        cmocka_unit_test_teardown(test_team_grow, teardown),
        cmocka_unit_test_teardown(test_team_shrink_idle_first, teardown),
        cmocka_unit_test_teardown(test_team_shrink_busy_waits_for_backlog, teardown),
        cmocka_unit_test_teardown(test_team_shrink_more_than_exist, teardown),
        cmocka_unit_test_teardown(test_team_shrink_all, teardown),
        cmocka_unit_test_teardown(test_team_quit_with_backlog, teardown),
        cmocka_unit_test_teardown(test_team_quit_idle_and_busy, teardown),
        cmocka_unit_test_teardown(test_team_quit_idle_only, teardown),
        cmocka_unit_test_teardown(test_team_destroy_busy_until_done, teardown),
        cmocka_unit_test_teardown(test_team_error_hook, teardown),
        cmocka_unit_test_teardown(test_team_caller_node_untouched_after_fn, teardown),
        cmocka_unit_test_teardown(test_team_as_worker, teardown),
        cmocka_unit_test_teardown(test_team_new_workers_while_draining_after_quit, teardown),
        cmocka_unit_test_teardown(test_team_quit_factory_refuses, teardown),
        cmocka_unit_test_teardown(test_team_submit_racing_quit, teardown),
        cmocka_unit_test_teardown(test_team_submit_racing_final_step, teardown),
        cmocka_unit_test_teardown(test_team_grow_racing_final_step, teardown),
        cmocka_unit_test_teardown(test_team_backlog_first_when_factory_gives_again, teardown),
    };
    return cmocka_run_group_tests_name("team", tests, NULL, NULL);
}
