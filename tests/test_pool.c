/*
 * Pool: the team on real threads.
 *
 * Covered: the process's threads (an idle pool of min 0 adds none, one of min
 * 3 adds 3; the wedge watch comes with a wedge and goes with it); argument
 * errors; min threads made by create and by resize; tasks run on pool
 * threads; strict FIFO of the backlog (max 1); raising max dispatches the
 * backlog at once, oldest first, without a new submission; lowering max
 * retires threads as they become idle; idle threads above min exit after
 * idle_timeout (never before it, never below min); stop joins, drains the
 * backlog, times out with the number of stuck threads and can be called
 * again; stop/destroy from a pool thread is TW_EDEADLK; submit after stop is
 * TW_EQUIT, and a submit held (through the team's test probe) while stop
 * completes is refused; the error hook and the default; a thread that cannot
 * be started (no thread at all: the submit fails and the task never runs;
 * some thread: the task waits in the backlog and runs); the pool as a
 * tw_worker; caller nodes freed by their task; statistics, and their
 * consistency (a thread held just before its bookkeeping); the wedge
 * detector (seed 001: blockers waiting on an unblocker queued behind them)
 * with and without wedge_extra, and its silence on a pool that is merely
 * busy; a paused pool (max 0): tasks wait and start in order when the limit
 * is raised, a running task finishes and its thread starts nothing more (not
 * even what was lined up for it), a pause is not a wedge, stop runs the
 * backlog; settings changed on a running pool (idle timeout, wedge
 * settings); the pool's own wedge hook, growing the pool itself, also during
 * a stop.
 *
 * Tasks never call cmocka; they record, and Events tell the main thread when
 * to look. Where the outcome is asynchronous (a thread exiting), the main
 * thread polls the statistics with short sleeps up to HANG_LIMIT: it waits
 * for an outcome, it does not sleep instead of synchronising.
 */
#include "harness.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/thread_start.h"
#include "worker/team.h"

#define HANG_LIMIT 10.0

/* ==== helpers ================================================================ */

static void nap(void)
{
    struct timespec ts = {0, 1000000}; /* 1 ms between looks at the stats */
    nanosleep(&ts, NULL);
}

static tw_pool_stats stats(tw_pool *p)
{
    tw_pool_stats s;
    memset(&s, 0xff, sizeof s);
    assert_int_equal(tw_pool_stats_get(p, &s), 0);
    return s;
}

/* Polls until the pool has n threads; fails after HANG_LIMIT. Returns the
 * time it was seen. */
static double wait_threads(tw_pool *p, size_t n)
{
    double end = tw_test_now() + HANG_LIMIT;
    for (;;) {
        tw_pool_stats s = stats(p);
        if (s.threads == n)
            return tw_test_now();
        if (tw_test_now() > end)
            fail_msg("pool still has %zu threads, expected %zu", s.threads, n);
        nap();
    }
}

/* Polls until the pool has n threads and `idle` idle members (every task
 * finished and recycled); fails after HANG_LIMIT. */
static void wait_settled(tw_pool *p, size_t n, size_t idle)
{
    double end = tw_test_now() + HANG_LIMIT;
    for (;;) {
        tw_pool_stats s = stats(p);
        if (s.threads == n && s.team.idle == idle && s.team.busy == 0)
            return;
        if (tw_test_now() > end)
            fail_msg("pool has %zu threads, %zu idle, %zu busy; expected %zu threads, %zu idle",
                     s.threads, s.team.idle, s.team.busy, n, idle);
        nap();
    }
}

static tw_pool *make_pool(size_t min, size_t max, double idle, double wedge, size_t extra)
{
    tw_pool_config cfg = TW_POOL_CONFIG_INIT(min, max);
    tw_pool *p = NULL;
    cfg.idle_timeout = idle;
    cfg.wedge_timeout = wedge;
    cfg.wedge_extra = extra;
    assert_int_equal(tw_pool_create_with(&cfg, &p), 0);
    assert_non_null(p);
    return p;
}

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

static void expect_log(logbook *l, const int *want, size_t n)
{
    tw_test_expect_log(l->v, tw_test_log_len(&l->lock, &l->n), want, n);
}

/* Diagnostic reports; `deadlk` counts TW_EDEADLK warnings (wedges). */
#define DIAG_MAX 64
static struct {
    tw_lock lock;
    size_t n, deadlk, esys, timedout;
    int codes[DIAG_MAX];
    char last_timeout[256]; /* the message of the last TW_ETIMEDOUT report */
    tw_event wedge;
} diags;

static void diag_hook(void *ctx, const tw_diag *d)
{
    (void)ctx;
    tw_lock_acquire(&diags.lock);
    if (diags.n < DIAG_MAX)
        diags.codes[diags.n] = d->code;
    diags.n++;
    if (d->code == TW_EDEADLK && d->kind == TW_DIAG_WARNING)
        diags.deadlk++;
    if (d->code == TW_ESYS)
        diags.esys++;
    if (d->code == TW_ETIMEDOUT) {
        diags.timedout++;
        snprintf(diags.last_timeout, sizeof diags.last_timeout, "%s", d->message);
    }
    tw_lock_release(&diags.lock);
    if (d->code == TW_EDEADLK)
        tw_event_set(&diags.wedge);
}

static void diag_begin(void)
{
    memset(&diags, 0, sizeof diags);
    tw_set_diag_hook(diag_hook, NULL);
}

static size_t diag_read(size_t *field)
{
    size_t v;
    tw_lock_acquire(&diags.lock);
    v = *field;
    tw_lock_release(&diags.lock);
    return v;
}

static int teardown(void **state)
{
    (void)state;
    tw_set_diag_hook(NULL, NULL);
    tw__thread_fail_nth(0);
    tw__team_set_probe(NULL);
    return 0;
}

/* ==== the process's threads ==================================================== */

/* Threads of this process, as the kernel lists them. */
static size_t process_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Polls until the process has n threads; fails after HANG_LIMIT. A thread
 * that has left the pool is listed until the kernel has reaped it, a moment
 * later: there is nothing to wait on but the listing. */
static void wait_process_threads(size_t n)
{
    double end = tw_test_now() + HANG_LIMIT;
    size_t now;
    while ((now = process_threads()) != n) {
        if (tw_test_now() > end)
            fail_msg("the process has %zu threads, expected %zu", now, n);
        nap();
    }
}

static void *note_tid(void *arg)
{
    *(long *)arg = syscall(SYS_gettid);
    return NULL;
}

/* The process's threads once a thread has been started and has left the
 * listing: threads a runtime starts with the first thread (ThreadSanitizer's)
 * are there, and none is still leaving — provided no earlier test left
 * threads behind that are still leaving (these tests run first). */
static size_t settled_threads(void)
{
    char path[64];
    long tid = 0;
    double end = tw_test_now() + HANG_LIMIT;
    tw_test_join(tw_test_start(note_tid, &tid));
    snprintf(path, sizeof path, "/proc/self/task/%ld", tid);
    while (access(path, F_OK) == 0) {
        if (tw_test_now() > end)
            fail_msg("a joined thread is still listed after %.0f s", HANG_LIMIT);
        nap();
    }
    return process_threads();
}

/* ==== holding a thread at one of the team's probes =============================== */

static struct {
    int where;
    int armed; /* atomic: the next thread to reach `where` is held */
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

/* ==== tasks ================================================================== */

typedef struct targ {
    logbook *log;
    int id;
    int code;
    tw_event *done; /* set after logging, if not NULL */
} targ;

static int log_task(void *arg)
{
    targ *a = arg;
    log_add(a->log, a->id);
    if (a->done)
        tw_event_set(a->done);
    return a->code;
}

/* Blockers: `target` of them signal once all have started, then wait. */
typedef struct blockers {
    int started, finished, target;
    tw_event all_started, release;
} blockers;

static int block_task(void *arg)
{
    blockers *b = arg;
    if (__atomic_add_fetch(&b->started, 1, __ATOMIC_SEQ_CST) == b->target)
        tw_event_set(&b->all_started);
    tw_event_wait_timeout(&b->release, HANG_LIMIT);
    __atomic_fetch_add(&b->finished, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void start_blockers(tw_pool *p, blockers *b, int n)
{
    memset(b, 0, sizeof *b);
    b->target = n;
    for (int i = 0; i < n; i++)
        assert_int_equal(tw_pool_do(p, block_task, b), 0);
    tw_test_wait_event(&b->all_started, HANG_LIMIT);
}

/* ==== tests ================================================================== */

static int noop_task(void *arg)
{
    (void)arg;
    return 0;
}

static void test_pool_bad_arguments(void **state)
{
    (void)state;
    tw_pool *p = NULL;
    tw_pool_config cfg = TW_POOL_CONFIG_INIT(1, 0);
    assert_int_equal(tw_pool_create(3, 2, &p), TW_EINVAL);
    assert_int_equal(tw_pool_create(0, 1, NULL), TW_EINVAL);
    assert_int_equal(tw_pool_create_with(NULL, &p), TW_EINVAL);
    assert_int_equal(tw_pool_create_with(&cfg, &p), TW_EINVAL);
    cfg.max = 2;
    cfg.min = 5;
    assert_int_equal(tw_pool_create_with(&cfg, &p), TW_EINVAL);
    cfg.min = 0;
    cfg.idle_timeout = NAN;
    assert_int_equal(tw_pool_create_with(&cfg, &p), TW_EINVAL);
    cfg.idle_timeout = 1.0;
    cfg.wedge_timeout = NAN;
    assert_int_equal(tw_pool_create_with(&cfg, &p), TW_EINVAL);
    assert_null(p);

    tw_task nofn = TW_TASK_INIT(NULL, NULL);
    tw_pool_stats st;
    assert_int_equal(tw_pool_set_error_hook(NULL, NULL, NULL), TW_EINVAL);
    assert_null(tw_pool_worker(NULL));
    assert_int_equal(tw_pool_submit(NULL, &nofn), TW_EINVAL);
    assert_int_equal(tw_pool_do(NULL, noop_task, NULL), TW_EINVAL);
    assert_int_equal(tw_pool_resize(NULL, 0, 1), TW_EINVAL);
    assert_int_equal(tw_pool_stats_get(NULL, &st), TW_EINVAL);
    assert_int_equal(tw_pool_stop(NULL, 0, NULL), TW_EINVAL);
    assert_int_equal(tw_pool_destroy(NULL), TW_EINVAL);

    p = make_pool(1, 2, -1, 0, 0);
    int ran = 0;
    assert_int_equal(tw_pool_submit(p, NULL), TW_EINVAL);
    assert_int_equal(tw_pool_submit(p, &nofn), TW_EINVAL);
    assert_int_equal(tw_pool_do(p, NULL, &ran), TW_EINVAL);
    assert_int_equal(tw_pool_stats_get(p, NULL), TW_EINVAL);
    assert_int_equal(tw_pool_resize(p, 1, 0), TW_EINVAL);
    assert_int_equal(tw_pool_resize(p, 3, 2), TW_EINVAL);
    assert_int_equal(tw_pool_set_idle_timeout(NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_pool_set_idle_timeout(p, NAN), TW_EINVAL);
    assert_int_equal(tw_pool_set_wedge(NULL, 1.0, 0), TW_EINVAL);
    assert_int_equal(tw_pool_set_wedge(p, NAN, 0), TW_EINVAL);
    assert_int_equal(tw_pool_set_wedge_hook(NULL, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_pool_stop(p, NAN, NULL), TW_EINVAL);
    tw_pool_stats s = stats(p); /* the refused calls changed nothing */
    assert_int_equal(s.min, 1);
    assert_int_equal(s.max, 2);
    assert_int_equal(s.threads, 1);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 0);
}

static void test_pool_min_threads_at_create(void **state)
{
    (void)state;
    tw_pool *p;
    assert_int_equal(tw_pool_create(3, 5, &p), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.threads, 3);
    assert_int_equal(s.team.idle, 3);
    assert_int_equal(s.team.busy, 0);
    assert_int_equal(s.team.backlog, 0);
    assert_int_equal(s.min, 3);
    assert_int_equal(s.max, 5);
    assert_int_equal(s.extra, 0);
    assert_int_equal(s.wedges, 0);
    /* A raised min is made at once. */
    assert_int_equal(tw_pool_resize(p, 5, 5), 0);
    s = stats(p);
    assert_int_equal(s.threads, 5);
    assert_int_equal(s.team.idle, 5);
    assert_int_equal(s.min, 5);
    assert_int_equal(tw_pool_destroy(p), 0);

    assert_int_equal(tw_pool_create(0, 1, &p), 0);
    assert_int_equal(stats(p).threads, 0); /* made on demand */
    assert_int_equal(tw_pool_destroy(p), 0);
}

typedef struct where {
    pthread_t main;
    int on_main;
    int count;
} where;

static int where_task(void *arg)
{
    where *w = arg;
    if (pthread_equal(w->main, pthread_self()))
        __atomic_fetch_add(&w->on_main, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&w->count, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void test_pool_runs_tasks_and_stops(void **state)
{
    (void)state;
    tw_pool *p;
    where w = {pthread_self(), 0, 0};
    size_t stuck = 99;
    assert_int_equal(tw_pool_create(0, 4, &p), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(tw_pool_do(p, where_task, &w), 0);
    assert_true(stats(p).threads <= 4);
    assert_int_equal(tw_pool_stop(p, -1, &stuck), 0);
    assert_int_equal(stuck, 0);
    assert_int_equal(w.count, 200); /* all ran before stop returned */
    assert_int_equal(w.on_main, 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.team.completed, 200);
    assert_int_equal(s.team.idle + s.team.busy + s.team.backlog, 0);

    /* Stopped: no work, a second stop is fine, and resize makes no thread. */
    tw_task t = TW_TASK_INIT(where_task, &w);
    assert_int_equal(tw_pool_do(p, where_task, &w), TW_EQUIT);
    assert_int_equal(tw_pool_submit(p, &t), TW_EQUIT);
    assert_ptr_equal(t.fn, where_task);
    assert_ptr_equal(t.arg, &w);
    assert_int_equal(tw_pool_stop(p, -1, &stuck), 0);
    assert_int_equal(tw_pool_stop(p, 0, NULL), 0);
    assert_int_equal(tw_pool_resize(p, 2, 4), TW_EQUIT);
    assert_int_equal(stats(p).threads, 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(w.count, 200);
}

static void test_pool_fifo_with_one_thread(void **state)
{
    (void)state;
    tw_pool *p;
    blockers b;
    logbook log;
    targ a[20];
    tw_event done = TW_EVENT_INIT;
    memset(&log, 0, sizeof log);
    assert_int_equal(tw_pool_create(0, 1, &p), 0);
    start_blockers(p, &b, 1);
    for (int i = 0; i < 20; i++) {
        a[i] = (targ){&log, i, 0, i == 19 ? &done : NULL};
        assert_int_equal(tw_pool_do(p, log_task, &a[i]), 0);
    }
    tw_pool_stats s = stats(p);
    assert_int_equal(s.team.backlog, 20);
    assert_int_equal(s.team.busy, 1);
    assert_int_equal(s.threads, 1);
    tw_event_set(&b.release);
    tw_test_wait_event(&done, HANG_LIMIT);
    int want[20];
    for (int i = 0; i < 20; i++)
        want[i] = i;
    expect_log(&log, want, 20);
    assert_int_equal(tw_pool_destroy(p), 0);
}

/* Raising max hands the backlog to new threads at once, oldest first, with
 * no new submission (Twisted moved it only when something new came in, and
 * the newcomer ran first). */
static void test_pool_raise_max_dispatches_backlog(void **state)
{
    (void)state;
    tw_pool *p = make_pool(0, 1, -1, 0, 0);
    blockers b;
    logbook log;
    targ a[5];
    tw_event done = TW_EVENT_INIT;
    memset(&log, 0, sizeof log);
    start_blockers(p, &b, 1);
    for (int i = 0; i < 5; i++) {
        a[i] = (targ){&log, i, 0, i == 4 ? &done : NULL};
        assert_int_equal(tw_pool_do(p, log_task, &a[i]), 0);
    }
    assert_int_equal(stats(p).team.backlog, 5);
    assert_int_equal(tw_pool_resize(p, 0, 2), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.threads, 2);
    assert_int_equal(s.max, 2);
    assert_true(s.team.backlog <= 4); /* the oldest was taken by resize itself */
    tw_test_wait_event(&done, HANG_LIMIT);                /* while the blocker still holds thread 1 */
    static const int want[] = {0, 1, 2, 3, 4};
    expect_log(&log, want, 5);
    assert_int_equal(__atomic_load_n(&b.finished, __ATOMIC_SEQ_CST), 0);
    tw_event_set(&b.release);
    assert_int_equal(tw_pool_destroy(p), 0);
}

static void test_pool_lower_max_retires_as_idle(void **state)
{
    (void)state;
    tw_pool *p = make_pool(0, 3, -1, 0, 0);
    blockers b;
    start_blockers(p, &b, 3);
    assert_int_equal(stats(p).threads, 3);
    assert_int_equal(tw_pool_resize(p, 0, 1), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.max, 1);
    assert_int_equal(s.threads, 3); /* busy: they finish first */
    assert_int_equal(s.team.busy, 3);
    tw_event_set(&b.release);
    wait_settled(p, 1, 1);
    assert_int_equal(stats(p).team.completed, 3);

    /* Idle threads above a lowered max go at once. */
    assert_int_equal(tw_pool_resize(p, 3, 3), 0);
    assert_int_equal(stats(p).threads, 3);
    assert_int_equal(tw_pool_resize(p, 0, 1), 0);
    assert_int_equal(stats(p).team.idle, 1); /* retired at once ... */
    wait_threads(p, 1);                      /* ... and their threads exit */
    int ran = 0;
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 1);
}

static void test_pool_idle_timeout_reaps_above_min(void **state)
{
    (void)state;
    const double idle = 0.05;
    tw_pool *p = make_pool(1, 3, idle, 0, 0);
    blockers b;
    assert_int_equal(stats(p).threads, 1);
    start_blockers(p, &b, 3);
    assert_int_equal(stats(p).threads, 3);
    double t0 = tw_test_now();
    tw_event_set(&b.release);
    double t1 = wait_threads(p, 1);
    wait_settled(p, 1, 1);
    /* Timing is the behaviour here: no thread leaves before idle_timeout. */
    if (t1 - t0 < idle)
        fail_msg("idle threads exited after %.4f s, before idle_timeout %.2f s", t1 - t0, idle);
    /* And never below min, however long it idles. */
    double end = tw_test_now() + 4 * idle;
    while (tw_test_now() < end) {
        assert_int_equal(stats(p).threads, 1);
        nap();
    }
    tw_pool_stats s = stats(p);
    assert_int_equal(s.team.idle, 1);
    assert_int_equal(s.team.completed, 3);
    /* Lowering min lets the last one go too. */
    assert_int_equal(tw_pool_resize(p, 0, 3), 0);
    wait_threads(p, 0);
    int ran = 0;
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 1);
}

static void test_pool_stop_timeout_then_complete(void **state)
{
    (void)state;
    diag_begin();
    tw_pool *p = make_pool(0, 4, -1, 0, 0);
    blockers b;
    size_t stuck = 0;
    int ran = 0;
    start_blockers(p, &b, 1);
    double t0 = tw_test_now();
    assert_int_equal(tw_pool_stop(p, 0.05, &stuck), TW_ETIMEDOUT);
    assert_true(tw_test_now() - t0 >= 0.05);
    assert_int_equal(stuck, 1);
    /* The timed-out stop says which thread is stuck, and that it is in a task. */
    assert_int_equal(diag_read(&diags.timedout), 1);
    tw_lock_acquire(&diags.lock);
    if (!strstr(diags.last_timeout, "#1 (in a task for"))
        fail_msg("stop's report does not name the stuck thread: \"%s\"", diags.last_timeout);
    tw_lock_release(&diags.lock);
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), TW_EQUIT);
    assert_int_equal(tw_pool_stop(p, 0, &stuck), TW_ETIMEDOUT); /* still stuck */
    assert_int_equal(stuck, 1);
    assert_int_equal(diag_read(&diags.timedout), 1); /* a zero timeout polls: no report */
    assert_int_equal(tw_pool_stop(p, 0.01, &stuck), TW_ETIMEDOUT);
    assert_int_equal(diag_read(&diags.timedout), 2);
    tw_event_set(&b.release);
    assert_int_equal(tw_pool_stop(p, -1, &stuck), 0);
    assert_int_equal(stuck, 0);
    assert_int_equal(__atomic_load_n(&b.finished, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(stats(p).threads, 0);
    assert_int_equal(tw_pool_stop(p, 0, &stuck), 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 0);
}

static void test_pool_stop_runs_backlog(void **state)
{
    (void)state;
    tw_pool *p;
    blockers b;
    logbook log;
    targ a[5];
    memset(&log, 0, sizeof log);
    assert_int_equal(tw_pool_create(0, 1, &p), 0);
    start_blockers(p, &b, 1);
    for (int i = 0; i < 5; i++) {
        a[i] = (targ){&log, i, 0, NULL};
        assert_int_equal(tw_pool_do(p, log_task, &a[i]), 0);
    }
    assert_int_equal(tw_pool_stop(p, 0, NULL), TW_ETIMEDOUT); /* stopping now */
    int ran = 0;
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), TW_EQUIT);
    tw_event_set(&b.release);
    assert_int_equal(tw_pool_stop(p, -1, NULL), 0);
    static const int want[] = {0, 1, 2, 3, 4};
    expect_log(&log, want, 5);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 0);
}

typedef struct self_stop {
    tw_pool *p;
    int stop_rc, destroy_rc;
    tw_event done;
} self_stop;

static int self_stop_task(void *arg)
{
    self_stop *s = arg;
    s->stop_rc = tw_pool_stop(s->p, 1.0, NULL);
    s->destroy_rc = tw_pool_destroy(s->p);
    tw_event_set(&s->done);
    return 0;
}

static void test_pool_stop_from_own_thread(void **state)
{
    (void)state;
    self_stop s;
    memset(&s, 0, sizeof s);
    s.stop_rc = s.destroy_rc = 12345;
    assert_int_equal(tw_pool_create(1, 2, &s.p), 0);
    assert_int_equal(tw_pool_do(s.p, self_stop_task, &s), 0);
    tw_test_wait_event(&s.done, HANG_LIMIT);
    assert_int_equal(s.stop_rc, TW_EDEADLK);
    assert_int_equal(s.destroy_rc, TW_EDEADLK);
    /* Neither did anything: the pool still works. */
    tw_event again = TW_EVENT_INIT;
    assert_int_equal(tw_pool_do(s.p, tw_test_set_event_task, &again), 0);
    tw_test_wait_event(&again, HANG_LIMIT);
    assert_int_equal(tw_pool_destroy(s.p), 0);
}

typedef struct errs {
    tw_lock lock;
    size_t n;
    int codes[16];
} errs;

static void pool_error_hook(void *ctx, int code)
{
    errs *e = ctx;
    tw_test_log_add(&e->lock, &e->n, e->codes, 16, code);
}

static void test_pool_error_hook(void **state)
{
    (void)state;
    tw_pool *p;
    errs e;
    logbook log;
    targ a[4];
    memset(&e, 0, sizeof e);
    memset(&log, 0, sizeof log);
    diag_begin();
    assert_int_equal(tw_pool_create(0, 1, &p), 0);
    assert_int_equal(tw_pool_set_error_hook(p, pool_error_hook, &e), 0);
    static const int codes[4] = {-3, 0, TW_EINVAL, 99};
    for (int i = 0; i < 4; i++) {
        a[i] = (targ){&log, i, codes[i], NULL};
        assert_int_equal(tw_pool_do(p, log_task, &a[i]), 0);
    }
    assert_int_equal(tw_pool_stop(p, -1, NULL), 0);
    static const int want[] = {0, 1, 2, 3};
    expect_log(&log, want, 4); /* failures did not stop the pool */
    assert_int_equal(e.n, 3);
    assert_int_equal(e.codes[0], -3);
    assert_int_equal(e.codes[1], TW_EINVAL);
    assert_int_equal(e.codes[2], 99);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.team.completed, 4);
    assert_int_equal(s.team.failed, 3);
    assert_int_equal(diags.n, 0);
    assert_int_equal(tw_pool_destroy(p), 0);

    /* No hook: the diagnostic hook gets the code. */
    diag_begin();
    assert_int_equal(tw_pool_create(0, 1, &p), 0);
    a[0] = (targ){&log, 9, -4242, NULL};
    assert_int_equal(tw_pool_do(p, log_task, &a[0]), 0);
    assert_int_equal(tw_pool_stop(p, -1, NULL), 0);
    assert_int_equal(diags.n, 1);
    assert_int_equal(diags.codes[0], -4242);
    assert_int_equal(stats(p).team.failed, 1);
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
}

/* No thread exists and none can be started: the submit fails, and the task
 * never runs later. */
static void test_pool_thread_start_failure_without_threads(void **state)
{
    (void)state;
    diag_begin();
    tw_pool *p = make_pool(0, 2, -1, 0, 0);
    int ran = 0;
    tw__thread_fail_nth(1);
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), TW_ESYS);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.team.backlog, 0);
    assert_int_equal(s.team.busy + s.team.idle, 0);

    tw_task mine = TW_TASK_INIT(tw_test_count_task, &ran);
    tw__thread_fail_nth(1);
    assert_int_equal(tw_pool_submit(p, &mine), TW_ESYS);
    assert_ptr_equal(mine.fn, tw_test_count_task);
    assert_ptr_equal(mine.arg, &ran);
    assert_true(diag_read(&diags.esys) >= 1); /* reported too */

    /* The pool is fine afterwards. */
    tw_event ok = TW_EVENT_INIT;
    assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ok), 0);
    tw_test_wait_event(&ok, HANG_LIMIT);
    assert_int_equal(tw_pool_stop(p, -1, NULL), 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 0);
    tw_set_diag_hook(NULL, NULL);
}

/* A thread exists (busy): the task waits in the backlog and runs later. */
static void test_pool_thread_start_failure_with_a_thread(void **state)
{
    (void)state;
    diag_begin();
    tw_pool *p = make_pool(0, 2, -1, 0, 0);
    blockers b;
    tw_event ran = TW_EVENT_INIT;
    start_blockers(p, &b, 1);
    tw__thread_fail_nth(1);
    assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ran), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.threads, 1);
    assert_int_equal(s.team.backlog, 1);
    tw_event_set(&b.release);
    tw_test_wait_event(&ran, HANG_LIMIT);
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
}

static void test_pool_as_worker(void **state)
{
    (void)state;
    tw_pool *p;
    int ran = 0;
    assert_int_equal(tw_pool_create(0, 2, &p), 0);
    tw_worker *w = tw_pool_worker(p);
    assert_non_null(w);
    assert_false(tw_worker_exclusive(w));
    assert_non_null(tw_worker_name(w));
    tw_task node = TW_TASK_INIT(tw_test_count_task, &ran);
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
    assert_int_equal(tw_worker_submit(w, &node), 0);
    assert_int_equal(tw_pool_stop(p, -1, NULL), 0);
    assert_int_equal(ran, 2);
    assert_int_equal(tw_worker_quit(w), TW_EQUIT);
    assert_int_equal(tw_worker_destroy(w), 0);

    assert_int_equal(tw_pool_create(0, 2, &p), 0);
    w = tw_pool_worker(p);
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
    size_t live = tw_allocator_live();
    assert_int_equal(tw_worker_quit(w), 0);
    assert_int_equal(tw_worker_quit(w), TW_EQUIT);
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), TW_EQUIT);
    assert_true(tw_allocator_live() <= live);
    assert_int_equal(tw_worker_destroy(w), 0); /* waits for the work accepted */
    assert_int_equal(ran, 3);
}

typedef struct heap_node {
    tw_task task;
    int *count;
} heap_node;

static int heap_node_task(void *arg)
{
    heap_node *n = arg;
    int *count = n->count;
    memset(n, 0x5A, sizeof *n);
    free(n);
    __atomic_fetch_add(count, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void test_pool_caller_nodes_freed_by_task(void **state)
{
    (void)state;
    tw_pool *p;
    int count = 0;
    assert_int_equal(tw_pool_create(0, 3, &p), 0);
    for (int i = 0; i < 300; i++) {
        heap_node *n = malloc(sizeof *n);
        assert_non_null(n);
        tw_task_init(&n->task, heap_node_task, n);
        n->count = &count;
        assert_int_equal(tw_pool_submit(p, &n->task), 0);
    }
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(count, 300);
}

static void test_pool_statistics(void **state)
{
    (void)state;
    tw_pool *p = make_pool(1, 3, -1, 0, 0);
    blockers b;
    tw_pool_stats s = stats(p);
    assert_int_equal(s.threads, 1);
    assert_int_equal(s.team.idle, 1);
    start_blockers(p, &b, 3);
    s = stats(p);
    assert_int_equal(s.threads, 3);
    assert_int_equal(s.team.busy, 3);
    assert_int_equal(s.team.idle, 0);
    assert_int_equal(s.team.backlog, 0);
    int ran = 0;
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), 0);
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), 0);
    s = stats(p);
    assert_int_equal(s.team.backlog, 2);
    assert_int_equal(s.threads, 3);
    assert_int_equal(s.team.completed, 0);
    tw_event_set(&b.release);
    assert_int_equal(tw_pool_stop(p, -1, NULL), 0);
    s = stats(p);
    assert_int_equal(s.team.completed, 5);
    assert_int_equal(s.team.failed, 0);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.wedges, 0);
    assert_int_equal(ran, 2);
    assert_int_equal(tw_pool_destroy(p), 0);
}

/* Backlogged tasks start in FIFO order across threads too: when a second
 * thread comes free, it takes the oldest waiting task — never a newer one
 * while an older one waits behind a blocked task on another thread. */
typedef struct order {
    tw_event g1, g2, started1, started2, t1_started, t1_release, first_after;
    logbook log;
} order;

static int order_gate1(void *arg)
{
    order *o = arg;
    tw_event_set(&o->started1);
    tw_event_wait_timeout(&o->g1, HANG_LIMIT);
    return 0;
}

static int order_gate2(void *arg)
{
    order *o = arg;
    tw_event_set(&o->started2);
    tw_event_wait_timeout(&o->g2, HANG_LIMIT);
    return 0;
}

static int order_t1(void *arg)
{
    order *o = arg;
    log_add(&o->log, 1);
    tw_event_set(&o->t1_started);
    tw_event_wait_timeout(&o->t1_release, HANG_LIMIT);
    return 0;
}

typedef struct order_arg {
    order *o;
    int id;
} order_arg;

static int order_tn(void *arg)
{
    order_arg *a = arg;
    log_add(&a->o->log, a->id);
    tw_event_set(&a->o->first_after);
    return 0;
}

static void test_pool_backlog_fifo_across_threads(void **state)
{
    (void)state;
    order *o = calloc(1, sizeof *o);
    order_arg args[3];
    assert_non_null(o);
    tw_pool *p = make_pool(0, 2, -1, 0, 0);
    assert_int_equal(tw_pool_do(p, order_gate1, o), 0);
    tw_test_wait_event(&o->started1, HANG_LIMIT);
    assert_int_equal(tw_pool_do(p, order_gate2, o), 0);
    tw_test_wait_event(&o->started2, HANG_LIMIT);
    assert_int_equal(tw_pool_do(p, order_t1, o), 0);
    for (int i = 0; i < 3; i++) {
        args[i] = (order_arg){o, i + 2};
        assert_int_equal(tw_pool_do(p, order_tn, &args[i]), 0);
    }
    assert_int_equal(stats(p).team.backlog, 4);
    tw_event_set(&o->g1); /* thread 1 takes task 1, which blocks */
    tw_test_wait_event(&o->t1_started, HANG_LIMIT);
    tw_event_set(&o->g2); /* thread 2 is free: task 2 is the oldest waiting */
    tw_test_wait_event(&o->first_after, HANG_LIMIT);
    tw_lock_acquire(&o->log.lock);
    int second = o->log.n >= 2 ? o->log.v[1] : -1;
    tw_lock_release(&o->log.lock);
    tw_event_set(&o->t1_release);
    assert_int_equal(tw_pool_destroy(p), 0);
    logbook log = o->log;
    free(o);
    if (second != 2)
        fail_msg("with task 1 blocked on thread 1, thread 2 started task %d before the older "
                 "task 2",
                 second);
    static const int want[] = {1, 2, 3, 4};
    expect_log(&log, want, 4);
}

/* ==== wedge detection ========================================================== */

/* Seed 001: blockers wait for an Event that only the unblocker, queued
 * behind them, would set. */
typedef struct wedge {
    tw_event unblock, all_done;
    int done;
    int total;
} wedge;

static int wedge_blocker(void *arg)
{
    wedge *w = arg;
    tw_event_wait_timeout(&w->unblock, HANG_LIMIT);
    if (__atomic_add_fetch(&w->done, 1, __ATOMIC_SEQ_CST) == w->total)
        tw_event_set(&w->all_done);
    return 0;
}

static int wedge_unblocker(void *arg)
{
    wedge *w = arg;
    tw_event_set(&w->unblock);
    if (__atomic_add_fetch(&w->done, 1, __ATOMIC_SEQ_CST) == w->total)
        tw_event_set(&w->all_done);
    return 0;
}

#define WEDGE_TIMEOUT 0.2

static void test_pool_wedge_grows_past_max(void **state)
{
    (void)state;
    diag_begin();
    tw_pool *p = make_pool(0, 2, -1, WEDGE_TIMEOUT, 1);
    wedge w;
    memset(&w, 0, sizeof w);
    w.total = 3;
    double t0 = tw_test_now();
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_unblocker, &w), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.team.backlog, 1);
    tw_test_wait_event(&diags.wedge, HANG_LIMIT);
    double t1 = tw_test_now();
    tw_test_wait_event(&w.all_done, HANG_LIMIT); /* the extra thread ran the unblocker */
    if (t1 - t0 < WEDGE_TIMEOUT * 0.99)
        fail_msg("wedge reported after %.3f s, before wedge_timeout", t1 - t0);
    s = stats(p);
    assert_int_equal(s.wedges, 1);
    assert_int_equal(s.max, 2);
    assert_int_equal(diag_read(&diags.deadlk), 1);
    /* Once the backlog is empty the allowance goes and threads above max
     * retire. */
    double end = tw_test_now() + HANG_LIMIT;
    while ((s = stats(p)).extra != 0 || s.threads > 2) {
        if (tw_test_now() > end)
            fail_msg("still %zu extra allowed, %zu threads", s.extra, s.threads);
        nap();
    }
    assert_int_equal(tw_pool_stop(p, HANG_LIMIT, NULL), 0);
    assert_int_equal(stats(p).wedges, 1);
    assert_int_equal(stats(p).team.completed, 3);
    assert_int_equal(diag_read(&diags.deadlk), 1);
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
}

static void test_pool_wedge_reported_once(void **state)
{
    (void)state;
    diag_begin();
    tw_pool *p = make_pool(0, 2, -1, WEDGE_TIMEOUT, 0);
    wedge w;
    memset(&w, 0, sizeof w);
    w.total = 3;
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_unblocker, &w), 0);
    tw_test_wait_event(&diags.wedge, HANG_LIMIT);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.wedges, 1);
    assert_int_equal(s.extra, 0);
    assert_int_equal(s.threads, 2); /* no growth without wedge_extra */
    assert_int_equal(s.team.busy, 2);
    assert_int_equal(s.team.backlog, 1);
    /* Still wedged for several more periods: still one report. */
    assert_int_equal(tw_event_wait_timeout(&w.all_done, 2 * WEDGE_TIMEOUT), TW_ETIMEDOUT);
    assert_int_equal(diag_read(&diags.deadlk), 1);
    assert_int_equal(stats(p).wedges, 1);
    tw_event_set(&w.unblock); /* the test breaks the wedge itself */
    tw_test_wait_event(&w.all_done, HANG_LIMIT);
    assert_int_equal(tw_pool_stop(p, HANG_LIMIT, NULL), 0);
    assert_int_equal(stats(p).wedges, 1);
    assert_int_equal(diag_read(&diags.deadlk), 1);
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
}

/* The same wedge reached through a recycle: the only thread finishes a task
 * and takes the blocker while the unblocker is still waiting. The unblocker
 * is backlogged work like any other: the wedge is reported and, with
 * wedge_extra, an extra thread runs it. */
typedef struct wedge2 {
    wedge w;
    tw_event gate, gate_started;
} wedge2;

static int wedge2_gate(void *arg)
{
    wedge2 *x = arg;
    tw_event_set(&x->gate_started);
    tw_event_wait_timeout(&x->gate, HANG_LIMIT);
    return 0;
}

static void test_pool_wedge_after_recycle(void **state)
{
    (void)state;
    diag_begin();
    wedge2 *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->w.total = 2;
    tw_pool *p = make_pool(0, 1, -1, WEDGE_TIMEOUT, 1);
    assert_int_equal(tw_pool_do(p, wedge2_gate, x), 0);
    tw_test_wait_event(&x->gate_started, HANG_LIMIT);
    assert_int_equal(tw_pool_do(p, wedge_blocker, &x->w), 0);
    assert_int_equal(tw_pool_do(p, wedge_unblocker, &x->w), 0);
    assert_int_equal(stats(p).team.backlog, 2);
    tw_event_set(&x->gate);
    int rc = tw_event_wait_timeout(&x->w.all_done, 10 * WEDGE_TIMEOUT);
    tw_pool_stats s = stats(p);
    if (rc != 0)
        tw_event_set(&x->w.unblock); /* break it ourselves, to clean up */
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
    free(x);
    if (rc != 0)
        fail_msg("wedge not broken after %.1f s: %zu wedge(s) reported, backlog %zu, busy %zu, "
                 "threads %zu",
                 10 * WEDGE_TIMEOUT, (size_t)s.wedges, s.team.backlog, s.team.busy, s.threads);
    assert_int_equal(s.wedges, 1);
    assert_int_equal(diag_read(&diags.deadlk), 1);
}

/* Busy, not wedged: every thread busy at the limit and a backlog waiting the
 * whole time, but tasks keep completing. */
#define CHAINS 12

typedef struct churn {
    tw_pool *p;
    int stop;  /* atomic */
    int ended; /* chains that stopped */
    long runs;
    int bad;
    tw_event all_ended;
} churn;

static int churn_task(void *arg)
{
    churn *c = arg;
    tw_event never = TW_EVENT_INIT;
    tw_event_wait_timeout(&never, 0.0005); /* a little work */
    __atomic_fetch_add(&c->runs, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&c->stop, __ATOMIC_SEQ_CST)) {
        if (tw_pool_do(c->p, churn_task, c) == 0)
            return 0;
        __atomic_fetch_add(&c->bad, 1, __ATOMIC_SEQ_CST);
    }
    if (__atomic_add_fetch(&c->ended, 1, __ATOMIC_SEQ_CST) == CHAINS)
        tw_event_set(&c->all_ended);
    return 0;
}

static void test_pool_busy_is_not_wedged(void **state)
{
    (void)state;
    const double wedge_timeout = 0.1;
    diag_begin();
    churn c;
    memset(&c, 0, sizeof c);
    c.p = make_pool(0, 2, -1, wedge_timeout, 1);
    for (int i = 0; i < CHAINS; i++)
        assert_int_equal(tw_pool_do(c.p, churn_task, &c), 0);
    size_t samples = 0, saturated = 0;
    double end = tw_test_now() + 4 * wedge_timeout;
    while (tw_test_now() < end) {
        tw_pool_stats s = stats(c.p);
        samples++;
        saturated += s.team.backlog > 0 && s.team.busy == 2;
        nap();
    }
    __atomic_store_n(&c.stop, 1, __ATOMIC_SEQ_CST);
    tw_test_wait_event(&c.all_ended, HANG_LIMIT);
    tw_pool_stats s = stats(c.p);
    assert_int_equal(c.bad, 0);
    assert_int_equal(s.wedges, 0);
    assert_int_equal(s.extra, 0);
    assert_int_equal(diag_read(&diags.deadlk), 0);
    /* The scenario held: saturated with a backlog nearly all the time. */
    if (saturated * 4 < samples * 3)
        fail_msg("only %zu of %zu samples had every thread busy and a backlog", saturated,
                 samples);
    assert_int_equal(tw_pool_destroy(c.p), 0);
    assert_int_equal(diag_read(&diags.deadlk), 0);
    tw_set_diag_hook(NULL, NULL);
}

/* ==== threads: a pool of min n has n ============================================ */

/* The wedge watch is no standing thread: an idle pool of min 0 adds no thread
 * to the process, and one of min 3 adds exactly 3. This and the next test run
 * first, before any other test's threads could still be leaving. */
static void test_pool_idle_thread_count(void **state)
{
    (void)state;
    size_t base = settled_threads();
    tw_pool *p;
    assert_int_equal(tw_pool_create(0, 4, &p), 0); /* default config: the wedge watch is on */
    size_t n = process_threads();
    if (n != base)
        fail_msg("an idle pool of min 0 added %zu thread(s) to the process", n - base);
    assert_int_equal(tw_pool_destroy(p), 0);

    assert_int_equal(tw_pool_create(3, 4, &p), 0);
    n = process_threads();
    if (n != base + 3)
        fail_msg("an idle pool of min 3 added %zu thread(s) to the process", n - base);
    assert_int_equal(stats(p).threads, 3);
    assert_int_equal(tw_pool_destroy(p), 0);
    wait_process_threads(base);
}

/* Seed 001 on a pool of max 1: the blocker waits for the unblocker queued
 * behind it. The watch starts with the saturation, reports the wedge, adds
 * the extra thread that runs the unblocker, and leaves once the backlog is
 * empty; the pool's threads retire after their idle timeout, and the process
 * is back to the threads it had. */
static void test_pool_wedge_watch_comes_and_goes(void **state)
{
    (void)state;
    diag_begin();
    size_t base = settled_threads();
    tw_pool *p = make_pool(0, 1, 0.02, WEDGE_TIMEOUT, 1);
    assert_int_equal(process_threads(), base);
    wedge w;
    memset(&w, 0, sizeof w);
    w.total = 2;
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_unblocker, &w), 0);
    tw_test_wait_event(&diags.wedge, HANG_LIMIT); /* still detected */
    tw_test_wait_event(&w.all_done, HANG_LIMIT);  /* and broken by the extra thread */
    assert_int_equal(stats(p).wedges, 1);
    wait_threads(p, 0);
    wait_process_threads(base); /* no pool thread and no watch left */
    assert_int_equal(stats(p).extra, 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(diag_read(&diags.deadlk), 1);
    tw_set_diag_hook(NULL, NULL);
}

/* ==== a submit racing stop ========================================================= */

/* The submit passes the quit check and is held before its dispatch is counted
 * (the team's probe); stop completes meanwhile. Let go, the submit is refused
 * (TW_EQUIT) with its node as submitted, no thread is started for it, and its
 * task never runs. */
typedef struct racer {
    tw_pool *p;
    tw_task node;
    int rc;
} racer;

static void *racer_submit(void *arg)
{
    racer *r = arg;
    r->rc = tw_pool_submit(r->p, &r->node);
    return NULL;
}

static void test_pool_submit_racing_stop(void **state)
{
    (void)state;
    racer r;
    int ran = 0;
    memset(&r, 0, sizeof r);
    r.rc = 12345;
    r.p = make_pool(0, 1, -1, 0, 0);
    tw_task_init(&r.node, tw_test_count_task, &ran);
    hold_begin(TW__TEAM_AT_POST);
    pthread_t th = tw_test_start(racer_submit, &r);
    tw_test_wait_event(&hold.arrived, HANG_LIMIT);
    assert_int_equal(tw_pool_stop(r.p, HANG_LIMIT, NULL), 0);
    tw_event_set(&hold.release);
    tw_test_join(th);
    tw__team_set_probe(NULL);
    assert_int_equal(r.rc, TW_EQUIT);
    assert_ptr_equal(r.node.fn, tw_test_count_task);
    assert_ptr_equal(r.node.arg, &ran);
    tw_pool_stats s = stats(r.p);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.team.backlog + s.team.busy + s.team.idle, 0);
    assert_int_equal(tw_pool_destroy(r.p), 0);
    assert_int_equal(ran, 0);
}

/* ==== statistics are one snapshot ================================================== */

/* The thread has run the task and is held just before its bookkeeping (the
 * team's probe at TW__TEAM_AT_RECYCLE). A snapshot taken then must not count
 * the task completed while showing the thread still busy: the completion and
 * the thread going idle are one step. */
static void test_pool_stats_consistent_at_recycle(void **state)
{
    (void)state;
    tw_pool *p = make_pool(0, 1, -1, 0, 0);
    tw_event ran = TW_EVENT_INIT;
    hold_begin(TW__TEAM_AT_RECYCLE);
    assert_int_equal(tw_pool_do(p, tw_test_set_event_task, &ran), 0);
    tw_test_wait_event(&hold.arrived, HANG_LIMIT);
    assert_true(tw_event_is_set(&ran));
    tw_pool_stats s = stats(p);
    tw_event_set(&hold.release);
    if (s.team.completed == 1 && s.team.busy != 0)
        fail_msg("every task has completed (%llu), yet %zu thread(s) show busy",
                 (unsigned long long)s.team.completed, s.team.busy);
    assert_int_equal(s.team.completed + s.team.busy, 1);
    wait_settled(p, 1, 1);
    s = stats(p);
    assert_int_equal(s.team.completed, 1);
    assert_int_equal(s.team.busy, 0);
    tw__team_set_probe(NULL);
    assert_int_equal(tw_pool_destroy(p), 0);
}

/* ==== a paused pool (max 0) ========================================================= */

/* resize(0, 0) pauses (Twisted's adjustPoolsize(0, 0)): tasks are accepted
 * into the backlog and none starts; raising the limit starts them, oldest
 * first. */
static void test_pool_pause_and_resume(void **state)
{
    (void)state;
    tw_pool *p = make_pool(0, 2, -1, 0, 0);
    logbook log;
    targ a[6];
    tw_event done = TW_EVENT_INIT;
    memset(&log, 0, sizeof log);
    assert_int_equal(tw_pool_resize(p, 0, 0), 0);
    for (int i = 0; i < 6; i++) {
        a[i] = (targ){&log, i, 0, i == 5 ? &done : NULL};
        assert_int_equal(tw_pool_do(p, log_task, &a[i]), 0);
    }
    tw_pool_stats s = stats(p);
    assert_int_equal(s.max, 0);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.team.backlog, 6);
    assert_int_equal(tw_test_log_len(&log.lock, &log.n), 0);
    assert_int_equal(tw_pool_resize(p, 0, 1), 0);
    tw_test_wait_event(&done, HANG_LIMIT);
    static const int want[] = {0, 1, 2, 3, 4, 5};
    expect_log(&log, want, 6);
    assert_int_equal(tw_pool_destroy(p), 0);

    /* Created paused (limits 0, 0) too. */
    assert_int_equal(tw_pool_create(0, 0, &p), 0);
    int ran = 0;
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), 0);
    assert_int_equal(stats(p).team.backlog, 1);
    assert_int_equal(tw_pool_resize(p, 0, 1), 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 1);

    /* Raised when no thread can be started: resize says why, and the task
     * keeps waiting for the next chance. */
    diag_begin();
    p = make_pool(0, 0, -1, 0, 0);
    ran = 0;
    assert_int_equal(tw_pool_do(p, tw_test_count_task, &ran), 0);
    tw__thread_fail_nth(1);
    assert_int_equal(tw_pool_resize(p, 0, 1), TW_ESYS);
    tw__thread_fail_nth(0);
    s = stats(p);
    assert_int_equal(s.max, 1);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.team.backlog, 1);
    assert_int_equal(tw_pool_resize(p, 0, 1), 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(ran, 1);
    tw_set_diag_hook(NULL, NULL);
}

/* Pausing lets a running task finish, but its thread starts nothing more,
 * not even the tasks already lined up for it (the team's ready ring): it
 * retires after its task, and the waiting tasks start when the limit is
 * raised again. A paused pool is not wedged, however long the running task
 * takes: the wedge watch neither reports it nor adds a thread. */
typedef struct blocking {
    logbook *log;
    int id;
    tw_event started, release;
} blocking;

static int blocking_task(void *arg)
{
    blocking *b = arg;
    log_add(b->log, b->id);
    tw_event_set(&b->started);
    tw_event_wait_timeout(&b->release, HANG_LIMIT);
    return 0;
}

static void test_pool_pause_lets_running_task_finish(void **state)
{
    (void)state;
    diag_begin();
    tw_pool *p = make_pool(0, 1, -1, WEDGE_TIMEOUT, 1);
    logbook log;
    blocking b0, b1;
    targ a[3];
    tw_event done = TW_EVENT_INIT;
    memset(&log, 0, sizeof log);
    memset(&b0, 0, sizeof b0);
    memset(&b1, 0, sizeof b1);
    b0 = (blocking){&log, 0, TW_EVENT_INIT, TW_EVENT_INIT};
    b1 = (blocking){&log, 1, TW_EVENT_INIT, TW_EVENT_INIT};
    assert_int_equal(tw_pool_do(p, blocking_task, &b0), 0);
    tw_test_wait_event(&b0.started, HANG_LIMIT);
    assert_int_equal(tw_pool_do(p, blocking_task, &b1), 0);
    for (int i = 0; i < 3; i++) {
        a[i] = (targ){&log, i + 2, 0, i == 2 ? &done : NULL};
        assert_int_equal(tw_pool_do(p, log_task, &a[i]), 0);
    }
    assert_int_equal(stats(p).team.backlog, 4); /* all taken into the backlog */
    tw_event_set(&b0.release); /* the thread takes task 1 and lines up 2, 3 and 4 */
    tw_test_wait_event(&b1.started, HANG_LIMIT);
    assert_int_equal(tw_pool_resize(p, 0, 0), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.max, 0);
    assert_int_equal(s.team.busy, 1);
    assert_int_equal(s.team.backlog, 3);
    /* Task 1 runs on while the backlog waits: paused by choice, not wedged.
     * No report, and no extra thread to start the waiting tasks. */
    assert_int_equal(tw_event_wait_timeout(&done, 3 * WEDGE_TIMEOUT), TW_ETIMEDOUT);
    s = stats(p);
    assert_int_equal(s.wedges, 0);
    assert_int_equal(s.extra, 0);
    assert_int_equal(s.threads, 1);
    assert_int_equal(s.team.backlog, 3);
    assert_int_equal(diag_read(&diags.deadlk), 0);
    tw_event_set(&b1.release);
    wait_threads(p, 0); /* it retired after task 1 */
    s = stats(p);
    assert_int_equal(s.team.busy + s.team.idle, 0);
    assert_int_equal(s.team.backlog, 3);
    assert_int_equal(s.team.completed, 2);
    static const int before[] = {0, 1};
    expect_log(&log, before, 2);
    assert_int_equal(tw_pool_resize(p, 0, 1), 0);
    tw_test_wait_event(&done, HANG_LIMIT);
    static const int want[] = {0, 1, 2, 3, 4};
    expect_log(&log, want, 5);
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
}

/* stop on a paused pool: the backlog runs (on one thread, in order) before
 * stop returns; nothing is refused, nothing is lost. */
static void test_pool_stop_runs_paused_backlog(void **state)
{
    (void)state;
    errs e;
    logbook log;
    targ a[4];
    memset(&e, 0, sizeof e);
    memset(&log, 0, sizeof log);
    diag_begin();
    tw_pool *p = make_pool(0, 2, -1, 0, 0);
    assert_int_equal(tw_pool_set_error_hook(p, pool_error_hook, &e), 0);
    assert_int_equal(tw_pool_resize(p, 0, 0), 0);
    for (int i = 0; i < 4; i++) {
        a[i] = (targ){&log, i, 0, NULL};
        assert_int_equal(tw_pool_do(p, log_task, &a[i]), 0);
    }
    assert_int_equal(stats(p).team.backlog, 4);
    assert_int_equal(tw_pool_stop(p, HANG_LIMIT, NULL), 0);
    static const int want[] = {0, 1, 2, 3};
    expect_log(&log, want, 4);
    assert_int_equal(e.n, 0);
    assert_int_equal(diag_read(&diags.n), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.team.completed, 4);
    assert_int_equal(s.team.backlog, 0);
    assert_int_equal(s.threads, 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
}

/* ==== settings a running pool can change ============================================ */

/* The idle timeout applies at once, also to threads already asleep with the
 * old one (here: never reap). */
static void test_pool_set_idle_timeout(void **state)
{
    (void)state;
    tw_pool *p = make_pool(0, 2, -1, 0, 0);
    blockers b;
    start_blockers(p, &b, 2);
    tw_event_set(&b.release);
    wait_settled(p, 2, 2);
    assert_int_equal(tw_pool_set_idle_timeout(p, 0.02), 0);
    wait_threads(p, 0);
    /* New threads follow it too; and back to never. */
    start_blockers(p, &b, 1);
    assert_int_equal(tw_pool_set_idle_timeout(p, -1), 0);
    tw_event_set(&b.release);
    wait_settled(p, 1, 1);
    assert_int_equal(tw_pool_destroy(p), 0);
}

/* The wedge settings apply at once: a pool without a watch is wedged; turning
 * the watch on finds the wedge, reports it and adds the thread that breaks
 * it; turning it off withdraws the allowance. */
static void test_pool_set_wedge(void **state)
{
    (void)state;
    diag_begin();
    tw_pool *p = make_pool(0, 1, -1, 0, 0); /* no watch */
    wedge w;
    memset(&w, 0, sizeof w);
    w.total = 2;
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_unblocker, &w), 0);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.team.busy, 1);
    assert_int_equal(s.team.backlog, 1);
    assert_int_equal(tw_pool_set_wedge(p, WEDGE_TIMEOUT, 1), 0);
    tw_test_wait_event(&diags.wedge, HANG_LIMIT);
    tw_test_wait_event(&w.all_done, HANG_LIMIT);
    assert_int_equal(stats(p).wedges, 1);
    assert_int_equal(tw_pool_set_wedge(p, 0, 0), 0);
    assert_int_equal(stats(p).extra, 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(diag_read(&diags.deadlk), 1);
    tw_set_diag_hook(NULL, NULL);
}

/* The pool's own wedge hook: called once for the wedge, beside the diagnostic
 * hook, outside the pool's lock, with the statistics of that moment; it grows
 * the pool itself (wedge_extra is 0), which breaks the wedge. Stopping the
 * pool from there is refused: it would wait for itself. */
typedef struct wedge_seen {
    tw_lock lock;
    int calls;
    void *ctx;
    tw_pool *pool;
    tw_pool_stats at;
    int stop_rc, resize_rc;
} wedge_seen;

static void on_wedge(void *ctx, tw_pool *p, const tw_pool_stats *s)
{
    wedge_seen *w = ctx;
    int stop_rc = tw_pool_stop(p, 0, NULL);
    int resize_rc = tw_pool_resize(p, 0, 2);
    tw_lock_acquire(&w->lock);
    w->calls++;
    w->ctx = ctx;
    w->pool = p;
    w->at = *s;
    w->stop_rc = stop_rc;
    w->resize_rc = resize_rc;
    tw_lock_release(&w->lock);
}

static void test_pool_wedge_hook(void **state)
{
    (void)state;
    diag_begin();
    wedge_seen seen;
    memset(&seen, 0, sizeof seen);
    tw_pool *p = make_pool(0, 1, -1, WEDGE_TIMEOUT, 0);
    assert_int_equal(tw_pool_set_wedge_hook(p, on_wedge, &seen), 0);
    wedge w;
    memset(&w, 0, sizeof w);
    w.total = 2;
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_unblocker, &w), 0);
    tw_test_wait_event(&w.all_done, HANG_LIMIT); /* broken by the hook's resize */
    tw_lock_acquire(&seen.lock);
    wedge_seen got = seen;
    tw_lock_release(&seen.lock);
    assert_int_equal(got.calls, 1);
    assert_ptr_equal(got.ctx, &seen);
    assert_ptr_equal(got.pool, p);
    assert_int_equal(got.stop_rc, TW_EDEADLK);
    assert_int_equal(got.resize_rc, 0);
    assert_int_equal(got.at.team.busy, 1);
    assert_int_equal(got.at.team.backlog, 1);
    assert_int_equal(got.at.threads, 1);
    assert_int_equal(got.at.max, 1);
    assert_int_equal(got.at.extra, 0);
    assert_int_equal(got.at.wedges, 1);
    tw_pool_stats s = stats(p);
    assert_int_equal(s.max, 2);
    assert_int_equal(s.extra, 0);
    assert_int_equal(s.wedges, 1);
    assert_int_equal(diag_read(&diags.deadlk), 1); /* the diagnostic hook heard of it too */
    assert_int_equal(tw_pool_set_wedge_hook(p, NULL, NULL), 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    assert_int_equal(seen.calls, 1);

    /* The same wedge while the pool stops (a shutdown hang): the hook's
     * resize is what lets the stop finish. */
    memset(&seen, 0, sizeof seen);
    memset(&w, 0, sizeof w);
    w.total = 2;
    p = make_pool(0, 1, -1, WEDGE_TIMEOUT, 0);
    assert_int_equal(tw_pool_set_wedge_hook(p, on_wedge, &seen), 0);
    assert_int_equal(tw_pool_do(p, wedge_blocker, &w), 0);
    assert_int_equal(tw_pool_do(p, wedge_unblocker, &w), 0);
    assert_int_equal(tw_pool_stop(p, 0, NULL), TW_ETIMEDOUT); /* stopping */
    assert_int_equal(tw_pool_stop(p, HANG_LIMIT, NULL), 0);
    assert_true(tw_event_is_set(&w.all_done));
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.resize_rc, 0);
    assert_int_equal(seen.stop_rc, TW_EDEADLK);
    assert_int_equal(stats(p).max, 2);
    assert_int_equal(tw_pool_resize(p, 0, 3), TW_EQUIT); /* stopped */
    assert_int_equal(tw_pool_destroy(p), 0);
    tw_set_diag_hook(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: they count the process's threads (see there). */
        cmocka_unit_test_teardown(test_pool_idle_thread_count, teardown),
        cmocka_unit_test_teardown(test_pool_wedge_watch_comes_and_goes, teardown),
        cmocka_unit_test_teardown(test_pool_bad_arguments, teardown),
        cmocka_unit_test_teardown(test_pool_min_threads_at_create, teardown),
        cmocka_unit_test_teardown(test_pool_runs_tasks_and_stops, teardown),
        cmocka_unit_test_teardown(test_pool_fifo_with_one_thread, teardown),
        cmocka_unit_test_teardown(test_pool_raise_max_dispatches_backlog, teardown),
        cmocka_unit_test_teardown(test_pool_lower_max_retires_as_idle, teardown),
        cmocka_unit_test_teardown(test_pool_idle_timeout_reaps_above_min, teardown),
        cmocka_unit_test_teardown(test_pool_stop_timeout_then_complete, teardown),
        cmocka_unit_test_teardown(test_pool_stop_runs_backlog, teardown),
        cmocka_unit_test_teardown(test_pool_stop_from_own_thread, teardown),
        cmocka_unit_test_teardown(test_pool_error_hook, teardown),
        cmocka_unit_test_teardown(test_pool_thread_start_failure_without_threads, teardown),
        cmocka_unit_test_teardown(test_pool_thread_start_failure_with_a_thread, teardown),
        cmocka_unit_test_teardown(test_pool_as_worker, teardown),
        cmocka_unit_test_teardown(test_pool_caller_nodes_freed_by_task, teardown),
        cmocka_unit_test_teardown(test_pool_statistics, teardown),
        cmocka_unit_test_teardown(test_pool_backlog_fifo_across_threads, teardown),
        cmocka_unit_test_teardown(test_pool_wedge_grows_past_max, teardown),
        cmocka_unit_test_teardown(test_pool_wedge_reported_once, teardown),
        cmocka_unit_test_teardown(test_pool_wedge_after_recycle, teardown),
        cmocka_unit_test_teardown(test_pool_busy_is_not_wedged, teardown),
        cmocka_unit_test_teardown(test_pool_submit_racing_stop, teardown),
        cmocka_unit_test_teardown(test_pool_stats_consistent_at_recycle, teardown),
        cmocka_unit_test_teardown(test_pool_pause_and_resume, teardown),
        cmocka_unit_test_teardown(test_pool_pause_lets_running_task_finish, teardown),
        cmocka_unit_test_teardown(test_pool_stop_runs_paused_backlog, teardown),
        cmocka_unit_test_teardown(test_pool_set_idle_timeout, teardown),
        cmocka_unit_test_teardown(test_pool_set_wedge, teardown),
        cmocka_unit_test_teardown(test_pool_wedge_hook, teardown),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
