/*
 * pool_bench.c — twine's thread pool against libuv's and GLib's on the same
 * workloads.
 *
 *   pool_throughput          10^6 empty tasks submitted from one thread to a
 *                            pool of 2 threads; tasks/s from just before the
 *                            first submit to the moment the last task has run
 *   pool_roundtrip_pinned    one task submitted and its completion awaited,
 *   pool_roundtrip_unpinned  N_RT_* times in sequence, with the submitting
 *                            thread and the pool's threads all on one CPU, or
 *                            placed freely; the median round trip of a run in
 *                            us, and its 99th percentile as the workload
 *                            pool_roundtrip_*_p99
 *
 * Every task adds one to a counter and every run checks it (a run that lost or
 * invented tasks aborts the suite). Each workload runs every implementation
 * BENCH_REPS times, round-robin; each row reports the median of the runs (the
 * headline figure), the best and the worst, plus extra rows in the CSV:
 * `submit` (ns the submitting thread spent per task), `mean` (round trips),
 * and for libuv `work_only` (tasks/s counted up to the last work callback
 * rather than the last after_work callback).
 *
 * twine: tw_pool_create(2, 2). "twine pool submit" submits caller-provided
 * tw_task nodes (a preallocated array for the throughput run, one reused node
 * for the round trip, which waits on a tw_sem the task releases); "twine pool
 * do" lets tw_pool_do allocate each node.
 *
 * libuv reads its pool size (UV_THREADPOOL_SIZE) once per process, at the
 * first uv_queue_work. Every libuv run is therefore a child process (this
 * program with --child) started with the variable set to 2 or unset (the
 * default, 4). The child runs one repetition and writes its figures to a pipe,
 * so the round-robin order is kept. Completion in libuv is the after_work
 * callback on the loop thread; the round trip queues the next request from
 * there.
 *
 * GLib: GThreadPool with max_threads 2, shared (exclusive = FALSE: threads
 * from GLib's process-wide set) and exclusive; the round trip waits on a
 * GAsyncQueue the task pushes to.
 *
 * Placement: pinned runs pin the submitting thread before the pool is made, so
 * threads the pool creates inherit the mask; every round-trip task also places
 * its own thread (once per thread), which covers threads created before the
 * run, such as GLib's shared ones.
 *
 * usage: twine_bench_pool [--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]
 *   --scale multiplies every iteration count (0.01 for a smoke run), --only
 *   selects workloads by name prefix, --impl implementations by exact name.
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <twine/sync.h>
#include <twine/worker.h>
#include <unistd.h>
#include <uv.h>

extern char **environ;

#define N_THROUGHPUT 1000000L
#define N_RT_PINNED 100000L
#define N_RT_UNPINNED 100000L
#define POOL_THREADS 2
/* ---- implementations ------------------------------------------------------- */
enum kind { K_TWINE_SUBMIT, K_TWINE_DO, K_UV, K_GLIB };

struct impl {
    const char *name;
    enum kind kind;
    int uv_threads; /* K_UV: UV_THREADPOOL_SIZE for the child, 0 = unset */
    bool exclusive; /* K_GLIB */
};

/* One repetition's figures. value is the headline (tasks/s, or the median
 * round trip in us). */
struct result {
    double value;
    double p99;       /* round trips, us */
    double mean;      /* round trips, us */
    double submit_ns; /* throughput: submitting thread's time per task */
    double work_only; /* libuv throughput: tasks/s up to the last work callback */
};

/* ---- a one-shot gate the main thread waits on --------------------------------
 * Opened once per run by the task that finishes the run; its cost is not
 * timed (the task stamps the end time before opening it). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};

static void gate_reset(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = false;
    pthread_mutex_unlock(&gate.mu);
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mu);
    gate.open = true;
    pthread_cond_signal(&gate.cv);
    pthread_mutex_unlock(&gate.mu);
}

static void gate_wait(void)
{
    pthread_mutex_lock(&gate.mu);
    while (!gate.open)
        pthread_cond_wait(&gate.cv, &gate.mu);
    pthread_mutex_unlock(&gate.mu);
}

/* ==== pool_throughput ========================================================
 * The counter has a cache line of its own. The task whose increment reaches
 * the target stamps the end time and opens the gate. */
static struct {
    _Alignas(64) long done;
    char pad[64 - sizeof(long)];
    long target;
    double end;
    long after_done;  /* libuv: after_work callbacks, loop thread only */
    double work_end;  /* libuv: when the last work callback ran */
} tp;

static void tp_reset(long target)
{
    __atomic_store_n(&tp.done, 0, __ATOMIC_RELAXED);
    tp.target = target;
    tp.end = tp.work_end = 0;
    tp.after_done = 0;
    gate_reset();
}

static inline void tp_count(void)
{
    /* relaxed: the increments only need to be counted; the end stamp reaches
     * the main thread through the gate's mutex. */
    if (__atomic_add_fetch(&tp.done, 1, __ATOMIC_RELAXED) == tp.target) {
        tp.end = bench_now();
        gate_open();
    }
}

static long tp_done(void)
{
    return __atomic_load_n(&tp.done, __ATOMIC_RELAXED);
}

/* ---- twine ---- */
static tw_task *tw_nodes;
static long tw_nodes_len;

static int tp_tw_fn(void *arg)
{
    (void)arg;
    tp_count();
    return 0;
}

/* After a complete stop every task has been counted by the pool itself. */
static void tw_check_stats(tw_pool *p, const char *workload, const char *impl, long want)
{
    tw_pool_stats st;
    bench_die_tw("tw_pool_stats_get", tw_pool_stats_get(p, &st));
    bench_check_count(workload, impl, (long)st.team.completed, want);
    bench_check_count(workload, impl, (long)st.team.failed, 0);
}

static void tp_twine(const struct impl *im, long n, struct result *r)
{
    tw_pool *p;
    double t0, t1;
    long i;
    int rc;

    if (im->kind == K_TWINE_SUBMIT)
        tw_nodes = bench_reserve(tw_nodes, &tw_nodes_len, n, sizeof *tw_nodes, "task nodes");
    bench_die_tw("tw_pool_create", tw_pool_create(POOL_THREADS, POOL_THREADS, &p));
    tp_reset(1);
    bench_die_tw("tw_pool_do", tw_pool_do(p, tp_tw_fn, NULL));
    gate_wait();

    tp_reset(n);
    t0 = bench_now();
    if (im->kind == K_TWINE_SUBMIT) {
        for (i = 0; i < n; i++) {
            tw_task_init(&tw_nodes[i], tp_tw_fn, NULL);
            rc = tw_pool_submit(p, &tw_nodes[i]);
            if (rc != 0)
                bench_die_tw("tw_pool_submit", rc);
        }
    } else {
        for (i = 0; i < n; i++) {
            rc = tw_pool_do(p, tp_tw_fn, NULL);
            if (rc != 0)
                bench_die_tw("tw_pool_do", rc);
        }
    }
    t1 = bench_now();
    gate_wait();

    bench_die_tw("tw_pool_stop", tw_pool_stop(p, -1.0, NULL));
    tw_check_stats(p, "pool_throughput", im->name, n + 1);
    bench_die_tw("tw_pool_destroy", tw_pool_destroy(p));
    bench_check_count("pool_throughput", im->name, tp_done(), n);
    r->value = (double)n / (tp.end - t0);
    r->submit_ns = (t1 - t0) * 1e9 / (double)n;
}

/* ---- GLib ---- */
static void tp_glib_fn(gpointer data, gpointer user)
{
    (void)data;
    (void)user;
    tp_count();
}

static GThreadPool *glib_pool_new(GFunc fn, bool exclusive)
{
    GError *err = NULL;
    GThreadPool *pool = g_thread_pool_new(fn, NULL, POOL_THREADS, exclusive, &err);
    if (!pool)
        bench_die("g_thread_pool_new", err ? err->message : NULL);
    return pool;
}

static void tp_glib(const struct impl *im, long n, struct result *r)
{
    GThreadPool *pool = glib_pool_new(tp_glib_fn, im->exclusive);
    GError *err = NULL;
    double t0, t1;
    long i;

    tp_reset(1);
    g_thread_pool_push(pool, &tp, NULL);
    gate_wait();

    tp_reset(n);
    t0 = bench_now();
    for (i = 0; i < n; i++) {
        if (!g_thread_pool_push(pool, &tp, &err))
            bench_die("g_thread_pool_push", err ? err->message : NULL);
    }
    t1 = bench_now();
    gate_wait();

    g_thread_pool_free(pool, FALSE, TRUE);
    bench_check_count("pool_throughput", im->name, tp_done(), n);
    r->value = (double)n / (tp.end - t0);
    r->submit_ns = (t1 - t0) * 1e9 / (double)n;
}

/* ---- libuv (child process only) ---- */
static void tp_uv_work(uv_work_t *req)
{
    (void)req;
    if (__atomic_add_fetch(&tp.done, 1, __ATOMIC_RELAXED) == tp.target)
        tp.work_end = bench_now();
}

static void tp_uv_after(uv_work_t *req, int status)
{
    (void)req;
    if (status != 0)
        bench_die("uv after_work", uv_strerror(status));
    if (++tp.after_done == tp.target)
        tp.end = bench_now();
}

static void tp_uv(const struct impl *im, long n, struct result *r)
{
    uv_loop_t loop;
    uv_work_t *reqs;
    double t0, t1;
    long i;
    int rc;

    reqs = malloc((size_t)n * sizeof *reqs);
    if (!reqs)
        bench_die("malloc", "uv_work_t array");
    memset(reqs, 0, (size_t)n * sizeof *reqs);
    bench_die_rc("uv_loop_init", -uv_loop_init(&loop));

    /* the first request starts libuv's pool threads */
    tp_reset(1);
    bench_die_rc("uv_queue_work", -uv_queue_work(&loop, &reqs[0], tp_uv_work, tp_uv_after));
    uv_run(&loop, UV_RUN_DEFAULT);

    tp_reset(n);
    t0 = bench_now();
    for (i = 0; i < n; i++) {
        rc = uv_queue_work(&loop, &reqs[i], tp_uv_work, tp_uv_after);
        if (rc != 0)
            bench_die("uv_queue_work", uv_strerror(rc));
    }
    t1 = bench_now();
    uv_run(&loop, UV_RUN_DEFAULT);

    bench_die_rc("uv_loop_close", -uv_loop_close(&loop));
    free(reqs);
    bench_check_count("pool_throughput", im->name, tp_done(), n);
    bench_check_count("pool_throughput", im->name, tp.after_done, n);
    r->value = (double)n / (tp.end - t0);
    r->work_only = (double)n / (tp.work_end - t0);
    r->submit_ns = (t1 - t0) * 1e9 / (double)n;
}

/* ==== pool_roundtrip ==========================================================
 * One warm-up round trip, then n timed ones. One clock read per round trip:
 * each one ends where the next begins. */
static double *rt_lat; /* us, n of them */
static long rt_lat_len;
static struct {
    _Alignas(64) long count;
    bool pin;
} rt;

static void rt_prepare(long n, bool pin)
{
    rt_lat = bench_reserve(rt_lat, &rt_lat_len, n, sizeof *rt_lat, "latencies");
    __atomic_store_n(&rt.count, 0, __ATOMIC_RELAXED);
    rt.pin = pin;
    bench_place_self(pin);
}

static inline void rt_task(void)
{
    bench_place_self(rt.pin);
    __atomic_add_fetch(&rt.count, 1, __ATOMIC_RELAXED);
}

static void rt_finish(const char *impl, long n, struct result *r)
{
    bench_check_count(rt.pin ? "pool_roundtrip_pinned" : "pool_roundtrip_unpinned", impl,
                      __atomic_load_n(&rt.count, __ATOMIC_RELAXED), n + 1);
    bench_latency_stats(rt_lat, n, &r->value, &r->p99, &r->mean);
}

/* ---- twine: submit a node, wait on a semaphore the task releases ---- */
static int rt_tw_fn(void *arg)
{
    rt_task();
    tw_sem_release(arg, 1);
    return 0;
}

static void rt_twine(const struct impl *im, long n, bool pin, struct result *r)
{
    tw_pool *p;
    tw_task node;
    tw_sem done = TW_SEM_INIT(0);
    double start, t;
    long i;
    int rc;

    rt_prepare(n, pin);
    bench_die_tw("tw_pool_create", tw_pool_create(POOL_THREADS, POOL_THREADS, &p));
    start = bench_now();
    for (i = -1; i < n; i++) {
        /* the pool is done with the node once the task has run */
        if (im->kind == K_TWINE_SUBMIT) {
            tw_task_init(&node, rt_tw_fn, &done);
            rc = tw_pool_submit(p, &node);
        } else {
            rc = tw_pool_do(p, rt_tw_fn, &done);
        }
        if (rc != 0)
            bench_die_tw("tw_pool submit", rc);
        tw_sem_acquire(&done);
        t = bench_now();
        if (i >= 0)
            rt_lat[i] = (t - start) * 1e6;
        start = t;
    }
    bench_die_tw("tw_pool_stop", tw_pool_stop(p, -1.0, NULL));
    tw_check_stats(p, rt.pin ? "pool_roundtrip_pinned" : "pool_roundtrip_unpinned", im->name,
                   n + 1);
    bench_die_tw("tw_pool_destroy", tw_pool_destroy(p));
    rt_finish(im->name, n, r);
}

/* ---- GLib: push, pop the GAsyncQueue the task pushes to ---- */
static void rt_glib_fn(gpointer data, gpointer user)
{
    (void)user;
    rt_task();
    g_async_queue_push(data, &rt);
}

static void rt_glib(const struct impl *im, long n, bool pin, struct result *r)
{
    GThreadPool *pool;
    GAsyncQueue *q;
    GError *err = NULL;
    double start, t;
    long i;

    rt_prepare(n, pin);
    pool = glib_pool_new(rt_glib_fn, im->exclusive);
    q = g_async_queue_new();
    start = bench_now();
    for (i = -1; i < n; i++) {
        if (!g_thread_pool_push(pool, q, &err))
            bench_die("g_thread_pool_push", err ? err->message : NULL);
        g_async_queue_pop(q);
        t = bench_now();
        if (i >= 0)
            rt_lat[i] = (t - start) * 1e6;
        start = t;
    }
    g_thread_pool_free(pool, FALSE, TRUE);
    g_async_queue_unref(q);
    rt_finish(im->name, n, r);
}

/* ---- libuv (child process only): the next request is queued from the
 * previous one's after_work callback, on the loop thread ---- */
static struct {
    uv_loop_t loop;
    uv_work_t req;
    long i, n;
    double start;
} ruv;

static void rt_uv_work(uv_work_t *req)
{
    (void)req;
    rt_task();
}

static void rt_uv_after(uv_work_t *req, int status)
{
    double t = bench_now();
    int rc;

    if (status != 0)
        bench_die("uv after_work", uv_strerror(status));
    if (ruv.i >= 0)
        rt_lat[ruv.i] = (t - ruv.start) * 1e6;
    ruv.start = t;
    if (++ruv.i < ruv.n) {
        rc = uv_queue_work(&ruv.loop, req, rt_uv_work, rt_uv_after);
        if (rc != 0)
            bench_die("uv_queue_work", uv_strerror(rc));
    }
}

static void rt_uv(const struct impl *im, long n, bool pin, struct result *r)
{
    rt_prepare(n, pin);
    bench_die_rc("uv_loop_init", -uv_loop_init(&ruv.loop));
    ruv.i = -1;
    ruv.n = n;
    ruv.start = bench_now();
    bench_die_rc("uv_queue_work", -uv_queue_work(&ruv.loop, &ruv.req, rt_uv_work, rt_uv_after));
    uv_run(&ruv.loop, UV_RUN_DEFAULT);
    bench_die_rc("uv_loop_close", -uv_loop_close(&ruv.loop));
    rt_finish(im->name, n, r);
}

/* ==== workloads ============================================================== */
struct workload {
    const char *name;
    const char *unit;
    bool higher_is_better;
    bool roundtrip;
    bool pin;
    long n;
};

static const struct workload workloads[] = {
    {"pool_throughput", "tasks/s", true, false, false, N_THROUGHPUT},
    {"pool_roundtrip_pinned", "us/roundtrip", false, true, true, N_RT_PINNED},
    {"pool_roundtrip_unpinned", "us/roundtrip", false, true, false, N_RT_UNPINNED},
};

static const struct impl throughput_impls[] = {
    {"twine pool submit", K_TWINE_SUBMIT, 0, false},
    {"twine pool do", K_TWINE_DO, 0, false},
    {"libuv uv_queue_work 2 thr", K_UV, 2, false},
    {"libuv uv_queue_work 4 thr", K_UV, 0, false},
    {"GThreadPool shared", K_GLIB, 0, false},
    {"GThreadPool exclusive", K_GLIB, 0, true},
};

static const struct impl roundtrip_impls[] = {
    {"twine pool submit", K_TWINE_SUBMIT, 0, false},
    {"libuv uv_queue_work 2 thr", K_UV, 2, false},
    {"GThreadPool shared", K_GLIB, 0, false},
    {"GThreadPool exclusive", K_GLIB, 0, true},
};

static const struct impl *impls_of(const struct workload *w, int *count)
{
    if (w->roundtrip) {
        *count = BENCH_COUNT_OF(roundtrip_impls);
        return roundtrip_impls;
    }
    *count = BENCH_COUNT_OF(throughput_impls);
    return throughput_impls;
}

/* Runs one repetition in this process. */
static void run_here(const struct workload *w, const struct impl *im, long n, struct result *r)
{
    memset(r, 0, sizeof *r);
    switch (im->kind) {
    case K_TWINE_SUBMIT:
    case K_TWINE_DO:
        if (w->roundtrip)
            rt_twine(im, n, w->pin, r);
        else
            tp_twine(im, n, r);
        break;
    case K_GLIB:
        if (w->roundtrip)
            rt_glib(im, n, w->pin, r);
        else
            tp_glib(im, n, r);
        break;
    case K_UV:
        if (w->roundtrip)
            rt_uv(im, n, w->pin, r);
        else
            tp_uv(im, n, r);
        break;
    }
}

/* Runs one repetition in a child process (this program with --child), with
 * UV_THREADPOOL_SIZE set as the implementation asks. */
static void run_child(const struct workload *w, const struct impl *im, long n, struct result *r)
{
    static const char var[] = "UV_THREADPOOL_SIZE=";
    char nbuf[32], envvar[64], buf[512];
    char *argv[7];
    char **envp;
    posix_spawn_file_actions_t fa;
    size_t envc = 0, len = 0, j, k = 0;
    ssize_t got;
    int fds[2], status, rc;
    pid_t pid;

    while (environ[envc])
        envc++;
    envp = calloc(envc + 2, sizeof *envp);
    if (!envp)
        bench_die("calloc", "environment");
    for (j = 0; j < envc; j++)
        if (strncmp(environ[j], var, sizeof var - 1) != 0)
            envp[k++] = environ[j];
    if (im->uv_threads > 0) {
        snprintf(envvar, sizeof envvar, "%s%d", var, im->uv_threads);
        envp[k++] = envvar;
    }
    envp[k] = NULL;

    snprintf(nbuf, sizeof nbuf, "%ld", n);
    argv[0] = "twine_bench_pool";
    argv[1] = "--child";
    argv[2] = (char *)w->name;
    argv[3] = (char *)im->name;
    argv[4] = nbuf;
    argv[5] = NULL;

    if (pipe2(fds, O_CLOEXEC) != 0)
        bench_die("pipe2", strerror(errno));
    bench_die_rc("posix_spawn_file_actions_init", posix_spawn_file_actions_init(&fa));
    bench_die_rc("posix_spawn_file_actions_adddup2", posix_spawn_file_actions_adddup2(&fa, fds[1], 1));
    /* the child must start with the whole process mask, whatever this thread did */
    bench_place_self(false);
    fflush(stdout);
    rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp);
    bench_die_rc("posix_spawn", rc);
    bench_watch_child(pid);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    free(envp);
    while (len < sizeof buf - 1 && (got = read(fds[0], buf + len, sizeof buf - 1 - len)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            bench_die("read", strerror(errno));
        }
        len += (size_t)got;
    }
    buf[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            bench_die("waitpid", strerror(errno));
    bench_watch_child(0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench: %s / %s: the child process failed\n", w->name, im->name);
        /* a wrong count in the child is a wrong count here */
        exit(WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 2 : 1);
    }
    memset(r, 0, sizeof *r);
    if (sscanf(buf, "%lf %lf %lf %lf %lf", &r->value, &r->p99, &r->mean, &r->submit_ns,
               &r->work_only) != 5)
        bench_die("reading the child's figures", buf);
}

/* ==== driver ================================================================= */
static const char *impl_list; /* --impl */


static void run_workload(const struct workload *w)
{
    enum { MAX_IMPLS = 8 };
    struct result res[MAX_IMPLS][BENCH_REPS];
    double s[BENCH_REPS];
    const struct impl *impls;
    char p99name[64];
    long n = bench_scaled(w->n);
    int count, rep, i, k;

    impls = impls_of(w, &count);
    if (count > MAX_IMPLS)
        abort();
    printf("%s: %ld %s, %d round-robin repetitions%s\n", w->name, n,
           w->roundtrip ? "round trips" : "tasks", BENCH_REPS,
           w->pin ? " (pinned: every thread on one CPU)" : "");
    fflush(stdout);
    for (rep = 0; rep < BENCH_REPS; rep++) {
        for (i = 0; i < count; i++) {
            if (!bench_listed(impl_list, impls[i].name))
                continue;
            bench_watch(impls[i].name);
            if (impls[i].kind == K_UV)
                run_child(w, &impls[i], n, &res[i][rep]);
            else
                run_here(w, &impls[i], n, &res[i][rep]);
            bench_watch(NULL);
        }
    }
    bench_place_self(false);

    snprintf(p99name, sizeof p99name, "%s_p99", w->name);
    for (i = 0; i < count; i++) {
        if (!bench_listed(impl_list, impls[i].name))
            continue;
        for (k = 0; k < BENCH_REPS; k++)
            s[k] = res[i][k].value;
        bench_record(w->name, impls[i].name, w->unit, w->higher_is_better, s, BENCH_REPS);
        if (w->roundtrip) {
            for (k = 0; k < BENCH_REPS; k++)
                s[k] = res[i][k].mean;
            bench_record_extra(w->name, impls[i].name, "mean", w->unit, s, BENCH_REPS);
        } else {
            for (k = 0; k < BENCH_REPS; k++)
                s[k] = res[i][k].submit_ns;
            bench_record_extra(w->name, impls[i].name, "submit", "ns/task", s, BENCH_REPS);
            if (impls[i].kind == K_UV) {
                for (k = 0; k < BENCH_REPS; k++)
                    s[k] = res[i][k].work_only;
                bench_record_extra(w->name, impls[i].name, "work_only", w->unit, s, BENCH_REPS);
            }
        }
    }
    if (!w->roundtrip)
        return;
    for (i = 0; i < count; i++) {
        if (!bench_listed(impl_list, impls[i].name))
            continue;
        for (k = 0; k < BENCH_REPS; k++)
            s[k] = res[i][k].p99;
        bench_record(p99name, impls[i].name, w->unit, false, s, BENCH_REPS);
    }
}

/* --child WORKLOAD IMPL N: one repetition; the figures go to stdout. */
static int child_main(int argc, char **argv)
{
    const struct workload *w = NULL;
    const struct impl *impls, *im = NULL;
    struct result r;
    int count, i;

    if (argc != 5)
        return 1;
    for (i = 0; i < BENCH_COUNT_OF(workloads); i++)
        if (strcmp(workloads[i].name, argv[2]) == 0)
            w = &workloads[i];
    if (!w)
        return 1;
    impls = impls_of(w, &count);
    for (i = 0; i < count; i++)
        if (strcmp(impls[i].name, argv[3]) == 0)
            im = &impls[i];
    if (!im)
        return 1;
    bench_placement_init();
    bench_watch(im->name);
    run_here(w, im, strtol(argv[4], NULL, 10), &r);
    printf("%.17g %.17g %.17g %.17g %.17g\n", r.value, r.p99, r.mean, r.submit_ns, r.work_only);
    return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct bench_args args;
    int i;

    bench_watchdog_init();
    if (argc > 1 && strcmp(argv[1], "--child") == 0)
        return child_main(argc, argv);
    if (!bench_parse_args(argc, argv, true, NULL,
                          "[--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]",
                          &args))
        return 2;
    impl_list = args.impl;
    if (getenv("UV_THREADPOOL_SIZE"))
        printf("(UV_THREADPOOL_SIZE is set here; each libuv run sets its own)\n");

    bench_open_csv(args.csv);
    bench_placement_init();
    bench_warm_up(0.2);
    for (i = 0; i < BENCH_COUNT_OF(workloads); i++)
        if (bench_selected(args.only, workloads[i].name))
            run_workload(&workloads[i]);
    bench_close_csv();
    return 0;
}
