/*
 * thread_pool — seed 001: workers, the pool, resizing, and a wedged pool.
 *
 * 1. A pool runs tasks on threads it makes on demand; each result comes back
 *    through a Condition.
 * 2. A long-running job gets a dedicated thread worker rather than a pool
 *    thread, so it cannot starve the pool.
 * 3. Resizing: with max 1, three tasks queue up; raising max to 2 runs the
 *    backlog at once on the one new thread, oldest first — not only when the
 *    next task arrives.
 * 4. The trap: two "blocker" tasks wait for an "unblocker" queued behind them
 *    in a pool of two threads. Nothing can ever finish. The pool notices (no
 *    task finished for wedge_timeout while every thread is busy and work waits),
 *    reports it once, and grows one thread past its limit so the unblocker runs.
 * 5. A server's own policy: the same wedge with wedge_extra 0 and the pool's
 *    own wedge hook, which raises max itself. Then a pause: max 0 takes tasks
 *    into the backlog and starts none until the limit is raised.
 */
#include <stdio.h>
#include <string.h>

#include <twine.h>

static int check(int rc, const char *what)
{
    if (rc != 0)
        fprintf(stderr, "thread_pool: %s: %s\n", what, tw_err_name(rc));
    return rc;
}

/* ---- 1. results back from the pool ------------------------------------- */

static tw_lock results_lock = TW_LOCK_INIT;
static tw_cond results_ready = TW_COND_INIT_LOCK(&results_lock);
static long results_sum;
static int results_count;

static int square(void *arg)
{
    long x = (long)arg;
    TW_WITH(&results_lock) {
        results_sum += x * x;
        results_count++;
        tw_cond_notify_all(&results_ready);
    }
    return 0;
}

static bool all_ten(void *arg)
{
    (void)arg;
    return results_count == 10;
}

/* ---- 2. a dedicated worker --------------------------------------------- */

static tw_event job_done = TW_EVENT_INIT;
static long job_steps;

static int long_job(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        job_steps++;
    return tw_event_set(&job_done);
}

/* ---- 3. resizing --------------------------------------------------------- */

static int order[3], ordered;

static int record(void *arg)
{
    TW_WITH(&results_lock) {
        order[ordered++] = (int)(long)arg;
        tw_cond_notify_all(&results_ready);
    }
    return 0;
}

static bool three_recorded(void *arg)
{
    (void)arg;
    return ordered == 3;
}

/* ---- 4. the wedge --------------------------------------------------------- */

static tw_event unblocked = TW_EVENT_INIT;
static char wedge_report[256];

static void on_diag(void *ctx, const tw_diag *d)
{
    (void)ctx;
    if (d->code == TW_EDEADLK && !wedge_report[0])
        snprintf(wedge_report, sizeof wedge_report, "%s", d->message);
}

static int blocker(void *arg)
{
    (void)arg;
    /* Waits for a task queued behind it. (The timeout only keeps a broken
     * build from hanging the demo.) */
    return tw_event_wait_timeout(&unblocked, 10.0);
}

static int unblocker(void *arg)
{
    (void)arg;
    return tw_event_set(&unblocked);
}

/* ---- 5. the pool's own wedge hook, and a pause ----------------------------- */

static void grow_on_wedge(void *ctx, tw_pool *p, const tw_pool_stats *s)
{
    int *grown = ctx;
    /* On the pool's watch thread, outside its lock: resizing is fine here. */
    if (tw_pool_resize(p, s->min, s->max + 1) == 0)
        (*grown)++;
}

int main(void)
{
    tw_pool *pool;
    tw_worker *dedicated;
    tw_pool_stats st;
    int rc = 0;

    /* 1 */
    if (check(tw_pool_create(0, 4, &pool), "tw_pool_create"))
        return 1;
    for (long i = 1; i <= 10; i++)
        rc |= check(tw_pool_do(pool, square, (void *)i), "tw_pool_do");
    TW_WITH(&results_lock)
        rc |= check(tw_cond_wait_for(&results_ready, all_ten, NULL, 10.0), "wait for results");
    tw_pool_stats_get(pool, &st);
    printf("1. pool(0, 4): 10 tasks, sum of squares 1..10 = %ld (expected 385); "
           "%zu threads made on demand\n", results_sum, st.threads);
    rc |= results_sum != 385;

    /* 2 */
    rc |= check(tw_thread_worker_create(&dedicated), "tw_thread_worker_create");
    rc |= check(tw_worker_do(dedicated, long_job, NULL), "tw_worker_do");
    rc |= check(tw_event_wait_timeout(&job_done, 10.0), "long job");
    tw_worker_destroy(dedicated);
    printf("2. a long job on its own thread worker: %ld steps, pool untouched\n", job_steps);

    /* 3 */
    rc |= check(tw_pool_resize(pool, 0, 1), "resize to 1");
    rc |= check(tw_pool_do(pool, blocker, NULL), "hold the one thread");
    for (long i = 0; i < 3; i++)
        rc |= check(tw_pool_do(pool, record, (void *)i), "queue behind it");
    tw_pool_stats_get(pool, &st);
    printf("3. max 1, its thread busy: backlog %zu; ", st.team.backlog);
    /* One new thread: it takes the backlog one task at a time, oldest first. */
    rc |= check(tw_pool_resize(pool, 0, 2), "resize to 2");
    TW_WITH(&results_lock)
        rc |= check(tw_cond_wait_for(&results_ready, three_recorded, NULL, 10.0), "backlog");
    printf("raised to 2: the backlog ran at once, in order %d %d %d\n", order[0], order[1], order[2]);
    rc |= order[0] != 0 || order[1] != 1 || order[2] != 2;
    tw_event_set(&unblocked);
    rc |= check(tw_pool_stop(pool, 10.0, NULL), "tw_pool_stop");
    tw_pool_destroy(pool);
    tw_event_clear(&unblocked);

    /* 4 */
    {
        tw_pool_config cfg = TW_POOL_CONFIG_INIT(0, 2);
        cfg.wedge_timeout = 0.2;
        cfg.wedge_extra = 1;
        tw_set_diag_hook(on_diag, NULL);
        rc |= check(tw_pool_create_with(&cfg, &pool), "tw_pool_create_with");
        rc |= check(tw_pool_do(pool, blocker, NULL), "blocker 1");
        rc |= check(tw_pool_do(pool, blocker, NULL), "blocker 2");
        rc |= check(tw_pool_do(pool, unblocker, NULL), "unblocker");
        rc |= check(tw_pool_stop(pool, 10.0, NULL), "stop after the wedge");
        tw_pool_stats_get(pool, &st);
        tw_set_diag_hook(NULL, NULL);
        printf("4. two blockers waiting on an unblocker queued behind them, pool max 2:\n"
               "   reported: \"%s\"\n"
               "   the pool grew one thread past its limit; completed %llu of 3, failed %llu\n",
               wedge_report[0] ? wedge_report : "(nothing)",
               (unsigned long long)st.team.completed, (unsigned long long)st.team.failed);
        rc |= !wedge_report[0] || st.wedges != 1 || st.team.completed != 3 || st.team.failed != 0;
        tw_pool_destroy(pool);
    }

    /* 5 */
    {
        tw_pool_config cfg = TW_POOL_CONFIG_INIT(0, 2);
        int grown = 0;
        cfg.wedge_timeout = 0.2; /* wedge_extra 0: the hook decides */
        tw_event_clear(&unblocked);
        tw_set_diag_hook(on_diag, NULL);
        rc |= check(tw_pool_create_with(&cfg, &pool), "tw_pool_create_with");
        rc |= check(tw_pool_set_wedge_hook(pool, grow_on_wedge, &grown), "wedge hook");
        rc |= check(tw_pool_do(pool, blocker, NULL), "blocker 1");
        rc |= check(tw_pool_do(pool, blocker, NULL), "blocker 2");
        rc |= check(tw_pool_do(pool, unblocker, NULL), "unblocker");
        rc |= check(tw_pool_stop(pool, 10.0, NULL), "stop after the wedge");
        tw_pool_stats_get(pool, &st);
        tw_set_diag_hook(NULL, NULL);
        printf("5. the same wedge, wedge_extra 0: the pool's wedge hook raised max to %zu "
               "itself; completed %llu of 3\n",
               st.max, (unsigned long long)st.team.completed);
        rc |= grown != 1 || st.max != 3 || st.team.completed != 3;
        tw_pool_destroy(pool);

        rc |= check(tw_pool_create(0, 2, &pool), "tw_pool_create");
        rc |= check(tw_pool_resize(pool, 0, 0), "pause");
        ordered = 0;
        for (long i = 0; i < 3; i++)
            rc |= check(tw_pool_do(pool, record, (void *)i), "queue while paused");
        tw_pool_stats_get(pool, &st);
        printf("   paused (max 0): backlog %zu, %zu threads; ", st.team.backlog, st.threads);
        rc |= st.team.backlog != 3 || st.threads != 0;
        rc |= check(tw_pool_resize(pool, 0, 1), "resume");
        TW_WITH(&results_lock)
            rc |= check(tw_cond_wait_for(&results_ready, three_recorded, NULL, 10.0), "resumed");
        printf("resumed with max 1: ran in order %d %d %d\n", order[0], order[1], order[2]);
        rc |= order[0] != 0 || order[1] != 1 || order[2] != 2;
        tw_pool_destroy(pool);
    }
    if (rc == 0)
        printf("ok\n");
    return rc ? 1 : 0;
}
