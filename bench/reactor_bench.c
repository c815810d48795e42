/*
 * reactor_bench.c — twine's reactor (the bridge between the loop and threads)
 * against libuv's and GLib's main loops on the same workloads.
 *
 *   call_from_thread         one thread that is not the loop's posts 10^6
 *                            callbacks into a running loop, which runs them;
 *                            callbacks/s from just before the first post to
 *                            the moment the last callback has run (it stops
 *                            the loop)
 *   defer_to_thread_pinned   from the loop: one task to a pool thread and its
 *   defer_to_thread_unpinned result back on the loop, the next issued from
 *                            the previous one's completion callback, 10^5
 *                            times; every thread on one CPU, or placed freely;
 *                            the median round trip of a run in us, and its
 *                            99th percentile as the workload
 *                            defer_to_thread_*_p99
 *   defer_to_thread_sparse   the same round trip, but one every millisecond
 *                            (a timer issues each), unpinned: process CPU
 *                            time per round trip, in us, which shows what
 *                            any spinning or watching before sleeping
 *                            costs when work is sparse; extra metric
 *                            `latency`, the median round trip after the
 *                            pool has been idle for the gap
 *   call_from_thread_fresh   the same, each repetition in a fresh process
 *                            (10 of them, unpinned): where the two threads
 *                            land is decided per process, and the worst
 *                            placement is the one a user meets; twine's two
 *                            forms and libuv's preallocated queue
 *   defer_to_thread_floor    not a workload: what any pinned round trip
 *                            costs at least on this machine (below)
 *
 * call_from_thread. The loop runs on the main thread; a poster thread first
 * posts one untimed call and waits until it has run (so the loop is running
 * and warm), then stamps the start and posts the n timed calls. Each call
 * carries its sequence number: the callback checks that it runs in the order
 * posted and counts itself; the last one stamps the end and stops the loop.
 * twine: tw_reactor_call_from_thread (a node allocated per call), and
 * tw_reactor_post of caller nodes from a preallocated array. libuv: the usual
 * pattern, a mutex-protected FIFO plus uv_async_send after every push; the
 * async callback takes the whole queue under the mutex and runs it, with a
 * node malloc'd per call (freed on the loop) or from a preallocated array.
 * GLib: g_main_context_invoke into the GMainContext a GMainLoop runs on the
 * main thread (an idle source per call). Extra CSV metric `post`: ns per call
 * spent in the posting thread.
 *
 * defer_to_thread. The loop issues the first round trip once running; each
 * completion callback (on the loop thread) checks the value the task computed
 * from its input (2x + 1), stamps the time and issues the next; the last one
 * stops the loop. One untimed warm-up round trip first. twine:
 * tw_defer_to_thread on a reactor whose pool has at most 2 threads, and a
 * callback added to the Deferred. libuv: uv_queue_work with an after_work
 * callback, UV_THREADPOOL_SIZE=2 (set before libuv's first use). GLib:
 * g_task_run_in_thread on GLib's own task pool (its size cannot be set), the
 * GAsyncReadyCallback dispatched on the loop's thread-default context.
 * Pinned runs pin the loop thread before the loop (and twine's pool) is
 * made; every task also places its own thread (once per thread), which
 * covers pool threads that outlive a run (libuv's, GLib's).
 *
 * Checks: counts, order and values as above; for twine, any diagnostic report
 * and any block twine left allocated after tw_reactor_destroy invalidate the
 * run. A failed check stops the program with exit status 2 and no figure.
 *
 * usage: twine_bench_reactor [--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]
 *   --scale multiplies every iteration count (0.01 for a smoke run), --only
 *   selects workloads by name prefix, --impl implementations by exact name.
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <twine/reactor.h>
#include <unistd.h>
#include <uv.h>

extern char **environ;

#define N_CALLS 1000000L
#define N_DEFER 100000L
#define N_SPARSE 1000L /* one a millisecond: a second a run */
#define POOL_THREADS 2
static void die_uv(const char *what, int rc)
{
    if (rc != 0)
        bench_die(what, uv_strerror(rc));
}

static tw_reactor *tw_new_reactor(void)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    tw_reactor *r;

    cfg.pool_max = POOL_THREADS;
    cfg.pool_stop_timeout = -1.0;
    bench_die_tw("tw_reactor_create_with", tw_reactor_create_with(&cfg, &r));
    return r;
}

/* Runs r to the end and destroys it; then checks that twine reported nothing
 * and gave back every block it allocated since live0. */
static void tw_run_and_check(tw_reactor *r, const char *workload, size_t live0)
{
    bench_die_tw("tw_reactor_run", tw_reactor_run(r));
    bench_die_tw("tw_reactor_destroy", tw_reactor_destroy(r));
    bench_twine_check(workload, live0);
}

/* ---- implementations ------------------------------------------------------- */
enum kind {
    K_TWINE_CALL, /* call_from_thread: tw_reactor_call_from_thread; defer: tw_defer_to_thread */
    K_TWINE_POST, /* call_from_thread: tw_reactor_post of preallocated nodes */
    K_UV,         /* call_from_thread: malloc'd nodes; defer: uv_queue_work */
    K_UV_PREALLOC,
    K_GLIB
};

struct impl {
    const char *name;
    enum kind kind;
};

/* One repetition's figures. */
struct result {
    double value;   /* callbacks/s, the median round trip in us, or CPU us per round trip */
    double p99;     /* round trips, us */
    double mean;    /* round trips, us */
    double post_ns; /* call_from_thread: posting thread's time per call */
};

/* ==== call_from_thread ==========================================================
 * The loop-side state is touched by the loop thread only, except `start`,
 * `posted_end` (the poster's) and the warm-up flag. */
static struct {
    long n;         /* timed calls */
    long next;      /* loop: the sequence number the next call must carry */
    long ran;       /* loop: timed calls run */
    long disorder;  /* loop: calls that ran out of order */
    double start;   /* poster: just before the first timed post */
    double posted;  /* poster: just after the last timed post */
    double end;     /* loop: when the last call ran */
    bool warm;      /* the warm-up call has run (atomic) */
    void (*stop)(void); /* stops the loop (on the loop thread) */
} cft;

#define WARM_SEQ (-1L)

static void cft_reset(long n)
{
    memset(&cft, 0, sizeof cft);
    cft.n = n;
}

/* The callback every implementation runs: arg is the sequence number. */
static void cft_call(void *arg)
{
    long seq = (long)(intptr_t)arg;

    if (seq == WARM_SEQ) {
        __atomic_store_n(&cft.warm, true, __ATOMIC_RELEASE);
        return;
    }
    if (seq != cft.next)
        cft.disorder++;
    cft.next = seq + 1;
    if (++cft.ran == cft.n) {
        cft.end = bench_now();
        cft.stop();
    }
}

static void cft_wait_warm(void)
{
    while (!__atomic_load_n(&cft.warm, __ATOMIC_ACQUIRE))
        usleep(50);
}

static void cft_finish(const char *impl, struct result *r)
{
    bench_check_count("call_from_thread", impl, cft.ran, cft.n);
    bench_check_count("call_from_thread", impl, cft.disorder, 0);
    r->value = (double)cft.n / (cft.end - cft.start);
    r->post_ns = (cft.posted - cft.start) * 1e9 / (double)cft.n;
}

static pthread_t cft_spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    bench_die_rc("pthread_create", pthread_create(&t, NULL, fn, arg));
    return t;
}

/* ---- twine ---- */
static tw_reactor *cft_reactor;
static tw_call *cft_nodes;
static long cft_nodes_len;

static void cft_tw_stop(void)
{
    bench_die_tw("tw_reactor_stop", tw_reactor_stop(cft_reactor));
}

static void *cft_tw_poster(void *arg)
{
    const struct impl *im = arg;
    tw_reactor *r = cft_reactor;
    tw_call warm = TW_CALL_INIT(cft_call, (void *)(intptr_t)WARM_SEQ);
    long i, n = cft.n;
    int rc;

    bench_die_tw("tw_reactor_post", tw_reactor_post(r, &warm));
    cft_wait_warm();
    cft.start = bench_now();
    if (im->kind == K_TWINE_POST) {
        for (i = 0; i < n; i++) {
            cft_nodes[i].next = NULL;
            cft_nodes[i].fn = cft_call;
            cft_nodes[i].arg = (void *)(intptr_t)i;
            rc = tw_reactor_post(r, &cft_nodes[i]);
            if (__builtin_expect(rc != 0, 0))
                bench_die_tw("tw_reactor_post", rc);
        }
    } else {
        for (i = 0; i < n; i++) {
            rc = tw_reactor_call_from_thread(r, cft_call, (void *)(intptr_t)i);
            if (__builtin_expect(rc != 0, 0))
                bench_die_tw("tw_reactor_call_from_thread", rc);
        }
    }
    cft.posted = bench_now();
    return NULL;
}

static void cft_twine(const struct impl *im, long n, struct result *res)
{
    size_t live0 = tw_allocator_live();
    pthread_t poster;

    if (im->kind == K_TWINE_POST)
        cft_nodes = bench_reserve(cft_nodes, &cft_nodes_len, n, sizeof *cft_nodes, "call nodes");
    cft_reset(n);
    cft.stop = cft_tw_stop;
    cft_reactor = tw_new_reactor();
    poster = cft_spawn(cft_tw_poster, (void *)im);
    tw_run_and_check(cft_reactor, "call_from_thread", live0);
    bench_die_rc("pthread_join", pthread_join(poster, NULL));
    cft_finish(im->name, res);
}

/* ---- libuv: a mutex-protected FIFO and uv_async_send ---- */
struct uvq_node {
    struct uvq_node *next;
    void (*fn)(void *);
    void *arg;
    bool owned; /* malloc'd by the poster; the loop frees it */
};

static struct {
    uv_loop_t loop;
    uv_async_t async;
    pthread_mutex_t mu;
    struct uvq_node *head, *tail;
} uvq = {.mu = PTHREAD_MUTEX_INITIALIZER};
static struct uvq_node *uvq_nodes;
static long uvq_nodes_len;

static void uvq_push(struct uvq_node *node)
{
    int rc;

    node->next = NULL;
    pthread_mutex_lock(&uvq.mu);
    if (uvq.tail)
        uvq.tail->next = node;
    else
        uvq.head = node;
    uvq.tail = node;
    pthread_mutex_unlock(&uvq.mu);
    rc = uv_async_send(&uvq.async);
    if (__builtin_expect(rc != 0, 0))
        die_uv("uv_async_send", rc);
}

static void uvq_drain(uv_async_t *h)
{
    struct uvq_node *node, *next;

    (void)h;
    pthread_mutex_lock(&uvq.mu);
    node = uvq.head;
    uvq.head = uvq.tail = NULL;
    pthread_mutex_unlock(&uvq.mu);
    for (; node; node = next) {
        bool owned = node->owned; /* the warm-up node is gone once its call ran */
        next = node->next;
        node->fn(node->arg);
        if (owned)
            free(node);
    }
}

static void uvq_stop(void)
{
    uv_close((uv_handle_t *)&uvq.async, NULL);
}

static void *cft_uv_poster(void *arg)
{
    const struct impl *im = arg;
    struct uvq_node warm = {NULL, cft_call, (void *)(intptr_t)WARM_SEQ, false};
    struct uvq_node *node;
    long i, n = cft.n;

    uvq_push(&warm);
    cft_wait_warm();
    cft.start = bench_now();
    for (i = 0; i < n; i++) {
        if (im->kind == K_UV_PREALLOC) {
            node = &uvq_nodes[i];
            node->owned = false;
        } else {
            node = malloc(sizeof *node);
            if (!node)
                bench_die("malloc", "queue node");
            node->owned = true;
        }
        node->fn = cft_call;
        node->arg = (void *)(intptr_t)i;
        uvq_push(node);
    }
    cft.posted = bench_now();
    return NULL;
}

static void cft_uv(const struct impl *im, long n, struct result *res)
{
    pthread_t poster;

    if (im->kind == K_UV_PREALLOC)
        uvq_nodes = bench_reserve(uvq_nodes, &uvq_nodes_len, n, sizeof *uvq_nodes, "queue nodes");
    cft_reset(n);
    cft.stop = uvq_stop;
    uvq.head = uvq.tail = NULL;
    die_uv("uv_loop_init", uv_loop_init(&uvq.loop));
    die_uv("uv_async_init", uv_async_init(&uvq.loop, &uvq.async, uvq_drain));
    poster = cft_spawn(cft_uv_poster, (void *)im);
    uv_run(&uvq.loop, UV_RUN_DEFAULT);
    bench_die_rc("pthread_join", pthread_join(poster, NULL));
    die_uv("uv_loop_close", uv_loop_close(&uvq.loop));
    if (uvq.head)
        bench_die("libuv queue", "calls left in the queue");
    cft_finish(im->name, res);
}

/* ---- GLib: g_main_context_invoke into a GMainLoop on the main thread ---- */
static GMainContext *cft_gctx;
static GMainLoop *cft_gloop;

static gboolean cft_glib_fn(gpointer data)
{
    cft_call(data);
    return G_SOURCE_REMOVE;
}

static void cft_glib_stop(void)
{
    g_main_loop_quit(cft_gloop);
}

static void *cft_glib_poster(void *arg)
{
    GMainContext *ctx = cft_gctx;
    long i, n = cft.n;

    (void)arg;
    g_main_context_invoke(ctx, cft_glib_fn, (gpointer)(intptr_t)WARM_SEQ);
    cft_wait_warm();
    cft.start = bench_now();
    for (i = 0; i < n; i++)
        g_main_context_invoke(ctx, cft_glib_fn, (gpointer)(intptr_t)i);
    cft.posted = bench_now();
    return NULL;
}

static void cft_glib(const struct impl *im, long n, struct result *res)
{
    pthread_t poster;

    cft_reset(n);
    cft.stop = cft_glib_stop;
    cft_gctx = g_main_context_new();
    g_main_context_push_thread_default(cft_gctx);
    cft_gloop = g_main_loop_new(cft_gctx, FALSE);
    poster = cft_spawn(cft_glib_poster, NULL);
    g_main_loop_run(cft_gloop);
    bench_die_rc("pthread_join", pthread_join(poster, NULL));
    /* anything still queued would be a call run twice or invented */
    while (g_main_context_iteration(cft_gctx, FALSE))
        ;
    g_main_loop_unref(cft_gloop);
    g_main_context_pop_thread_default(cft_gctx);
    g_main_context_unref(cft_gctx);
    cft_finish(im->name, res);
}

/* ==== defer_to_thread ===========================================================
 * The loop thread owns everything but `tasks` (counted by the pool threads).
 * Round trip i (-1 is the warm-up) sends i + 2 to the task, which returns
 * 2 (i + 2) + 1. */
static double *dt_lat; /* us, n of them */
static long dt_lat_len;
static struct {
    _Alignas(64) long tasks; /* tasks run (atomic) */
    long i, n;               /* the round trip in flight, the number to time */
    long checked;            /* completions that carried the right value */
    double start;
    bool pin;
    double gap;      /* s between a completion and the next issue; 0: at once */
    const char *w;   /* the workload's name */
    double cpu0;     /* process CPU seconds at the start (sparse) */
} dt;

static double process_cpu(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0)
        bench_die("getrusage", strerror(errno));
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec * 1e-6;
}

static void dt_prepare(long n, bool pin)
{
    dt_lat = bench_reserve(dt_lat, &dt_lat_len, n, sizeof *dt_lat, "latencies");
    __atomic_store_n(&dt.tasks, 0, __ATOMIC_RELAXED);
    dt.i = -1;
    dt.n = n;
    dt.checked = 0;
    dt.pin = pin;
    bench_place_self(pin);
    dt.cpu0 = process_cpu();
}

static inline uintptr_t dt_input(void)
{
    return (uintptr_t)(dt.i + 2);
}

/* The pool side of every implementation. */
static inline uintptr_t dt_task(uintptr_t x)
{
    bench_place_self(dt.pin);
    __atomic_add_fetch(&dt.tasks, 1, __ATOMIC_RELAXED);
    return 2 * x + 1;
}

/* The loop side: checks the value and stamps the round trip; true if another
 * one is to be issued. */
static inline bool dt_done(uintptr_t value)
{
    double t = bench_now();

    if (value == 2 * dt_input() + 1)
        dt.checked++;
    if (dt.i >= 0)
        dt_lat[dt.i] = (t - dt.start) * 1e6;
    dt.start = t;
    return ++dt.i < dt.n;
}

static void dt_finish(const char *impl, struct result *r)
{
    const char *w = dt.w;
    long n = dt.n;
    double cpu = process_cpu() - dt.cpu0;

    bench_check_count(w, impl, __atomic_load_n(&dt.tasks, __ATOMIC_RELAXED), n + 1);
    bench_check_count(w, impl, dt.checked, n + 1);
    bench_check_count(w, impl, dt.i, n);
    bench_latency_stats(dt_lat, n, &r->value, &r->p99, &r->mean);
    if (dt.gap > 0) { /* the figure is the CPU; the latency becomes the extra */
        r->mean = r->value;
        r->value = cpu * 1e6 / (double)(n + 1);
    }
}

/* ---- twine: tw_defer_to_thread and a callback on its Deferred ---- */
static tw_reactor *dt_reactor;

static void dt_tw_issue(void);
static void dt_tw_first(void *arg);

static tw_result dt_tw_thread(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    return tw_result_value((void *)dt_task((uintptr_t)arg), NULL);
}

static tw_result dt_tw_back(tw_result r, void *arg)
{
    (void)arg;
    if (!tw_result_is_value(r)) {
        tw_result_drop(r);
        bench_die("tw_defer_to_thread", "the Deferred failed");
    }
    if (!dt_done((uintptr_t)r.ptr))
        bench_die_tw("tw_reactor_stop", tw_reactor_stop(dt_reactor));
    else if (dt.gap > 0)
        bench_die_tw("tw_reactor_call_later",
                     tw_reactor_call_later(dt_reactor, dt.gap, dt_tw_first, NULL, NULL));
    else
        dt_tw_issue();
    return tw_result_none();
}

static void dt_tw_issue(void)
{
    tw_deferred *d;

    bench_die_tw("tw_defer_to_thread",
           tw_defer_to_thread(dt_reactor, dt_tw_thread, (void *)dt_input(), &d));
    bench_die_tw("tw_deferred_add_callback", tw_deferred_add_callback(d, dt_tw_back, NULL));
    tw_deferred_unref(d);
}

static void dt_tw_first(void *arg)
{
    (void)arg;
    dt.start = bench_now();
    dt_tw_issue();
}

static void dt_twine(const struct impl *im, long n, bool pin, struct result *r)
{
    size_t live0 = tw_allocator_live();

    dt_prepare(n, pin);
    dt_reactor = tw_new_reactor();
    bench_die_tw("tw_reactor_call_when_running",
           tw_reactor_call_when_running(dt_reactor, dt_tw_first, NULL));
    tw_run_and_check(dt_reactor, dt.w, live0);
    dt_finish(im->name, r);
}

/* ---- libuv: uv_queue_work, the next request queued from after_work ---- */
static struct {
    uv_loop_t loop;
    uv_work_t req;
    uv_timer_t timer; /* sparse: issues the next request */
    uintptr_t in, out;
} duv;

static void dt_uv_work(uv_work_t *req);
static void dt_uv_after(uv_work_t *req, int status);

static void dt_uv_issue(uv_timer_t *t)
{
    (void)t;
    dt.start = bench_now();
    duv.in = dt_input();
    die_uv("uv_queue_work", uv_queue_work(&duv.loop, &duv.req, dt_uv_work, dt_uv_after));
}

static void dt_uv_work(uv_work_t *req)
{
    (void)req;
    duv.out = dt_task(duv.in);
}

static void dt_uv_after(uv_work_t *req, int status)
{
    die_uv("uv after_work", status);
    if (!dt_done(duv.out)) {
        uv_close((uv_handle_t *)&duv.timer, NULL);
    } else if (dt.gap > 0) {
        die_uv("uv_timer_start",
               uv_timer_start(&duv.timer, dt_uv_issue, (uint64_t)(dt.gap * 1e3 + 0.5), 0));
    } else {
        duv.in = dt_input();
        die_uv("uv_queue_work", uv_queue_work(&duv.loop, req, dt_uv_work, dt_uv_after));
    }
}

static void dt_uv(const struct impl *im, long n, bool pin, struct result *r)
{
    dt_prepare(n, pin);
    die_uv("uv_loop_init", uv_loop_init(&duv.loop));
    die_uv("uv_timer_init", uv_timer_init(&duv.loop, &duv.timer));
    duv.in = dt_input();
    duv.out = 0;
    dt.start = bench_now();
    die_uv("uv_queue_work", uv_queue_work(&duv.loop, &duv.req, dt_uv_work, dt_uv_after));
    uv_run(&duv.loop, UV_RUN_DEFAULT);
    die_uv("uv_loop_close", uv_loop_close(&duv.loop));
    dt_finish(im->name, r);
}

/* ---- GLib: GTask, g_task_run_in_thread, callback on the loop's context ---- */
static GMainLoop *dt_gloop;

static void dt_glib_issue(void);
static gboolean dt_glib_first(gpointer data);

static void dt_glib_thread(GTask *task, gpointer source, gpointer task_data, GCancellable *c)
{
    (void)source;
    (void)c;
    g_task_return_int(task, (gssize)dt_task((uintptr_t)task_data));
}

static void dt_glib_back(GObject *source, GAsyncResult *res, gpointer data)
{
    GError *err = NULL;
    gssize v;

    (void)source;
    (void)data;
    v = g_task_propagate_int(G_TASK(res), &err);
    if (err)
        bench_die("GTask", err->message);
    if (!dt_done((uintptr_t)v)) {
        g_main_loop_quit(dt_gloop);
    } else if (dt.gap > 0) {
        GSource *t = g_timeout_source_new((guint)(dt.gap * 1e3 + 0.5));
        g_source_set_callback(t, dt_glib_first, NULL, NULL);
        g_source_attach(t, g_main_loop_get_context(dt_gloop));
        g_source_unref(t);
    } else {
        dt_glib_issue();
    }
}

static void dt_glib_issue(void)
{
    GTask *task = g_task_new(NULL, NULL, dt_glib_back, NULL);

    g_task_set_task_data(task, (gpointer)dt_input(), NULL);
    g_task_run_in_thread(task, dt_glib_thread);
    g_object_unref(task);
}

static gboolean dt_glib_first(gpointer data)
{
    (void)data;
    dt.start = bench_now();
    dt_glib_issue();
    return G_SOURCE_REMOVE;
}

static void dt_glib(const struct impl *im, long n, bool pin, struct result *r)
{
    GMainContext *ctx;

    dt_prepare(n, pin);
    ctx = g_main_context_new();
    g_main_context_push_thread_default(ctx);
    dt_gloop = g_main_loop_new(ctx, FALSE);
    g_main_context_invoke(ctx, dt_glib_first, NULL);
    g_main_loop_run(dt_gloop);
    while (g_main_context_iteration(ctx, FALSE))
        ;
    g_main_loop_unref(dt_gloop);
    g_main_context_pop_thread_default(ctx);
    g_main_context_unref(ctx);
    dt_finish(im->name, r);
}

/* ==== workloads ============================================================== */
struct workload {
    const char *name;
    const char *unit;
    bool higher_is_better;
    bool roundtrip;
    bool pin;
    long n;
    double gap; /* defer_to_thread: s from a completion to the next issue */
    bool fresh; /* each repetition in a fresh process (FRESH_REPS of them) */
};

static const struct workload workloads[] = {
    {"call_from_thread", "callbacks/s", true, false, false, N_CALLS, 0, false},
    {"call_from_thread_fresh", "callbacks/s", true, false, false, N_CALLS, 0, true},
    {"defer_to_thread_pinned", "us/roundtrip", false, true, true, N_DEFER, 0, false},
    {"defer_to_thread_unpinned", "us/roundtrip", false, true, false, N_DEFER, 0, false},
    {"defer_to_thread_sparse", "us CPU/roundtrip", false, true, false, N_SPARSE, 0.001, false},
};

static const struct impl call_impls[] = {
    {"twine call_from_thread", K_TWINE_CALL},
    {"twine post", K_TWINE_POST},
    {"libuv async+mutex queue", K_UV},
    {"libuv async+mutex prealloc", K_UV_PREALLOC},
    {"GLib main_context_invoke", K_GLIB},
};

static const struct impl defer_impls[] = {
    {"twine defer_to_thread", K_TWINE_CALL},
    {"libuv uv_queue_work", K_UV},
    {"GLib GTask run_in_thread", K_GLIB},
};

/* The fresh-process runs: twine's two forms and libuv's fastest queue. */
static const struct impl fresh_impls[] = {
    {"twine call_from_thread", K_TWINE_CALL},
    {"twine post", K_TWINE_POST},
    {"libuv async+mutex prealloc", K_UV_PREALLOC},
};

static const struct impl *impls_of(const struct workload *w, int *count)
{
    if (w->fresh) {
        *count = BENCH_COUNT_OF(fresh_impls);
        return fresh_impls;
    }
    if (w->roundtrip) {
        *count = BENCH_COUNT_OF(defer_impls);
        return defer_impls;
    }
    *count = BENCH_COUNT_OF(call_impls);
    return call_impls;
}

static void run_here(const struct workload *w, const struct impl *im, long n, struct result *r)
{
    memset(r, 0, sizeof *r);
    dt.w = w->name;
    dt.gap = w->gap;
    switch (im->kind) {
    case K_TWINE_CALL:
    case K_TWINE_POST:
        if (w->roundtrip)
            dt_twine(im, n, w->pin, r);
        else
            cft_twine(im, n, r);
        break;
    case K_UV:
    case K_UV_PREALLOC:
        if (w->roundtrip)
            dt_uv(im, n, w->pin, r);
        else
            cft_uv(im, n, r);
        break;
    case K_GLIB:
        if (w->roundtrip)
            dt_glib(im, n, w->pin, r);
        else
            cft_glib(im, n, r);
        break;
    }
}

/* ==== the pinned floor ========================================================
 * Two threads on the bench CPU hand a word back and forth, each yielding the
 * CPU until it is its turn: no queue, no wake-up, no allocation, only the two
 * context switches that a round trip between two threads on one CPU cannot
 * avoid. No pinned defer_to_thread, of any library, can be faster, so this
 * bounds the speedup over Twisted that a pinned round trip can show. */
static struct {
    _Alignas(64) uint32_t turn; /* 1: the partner's turn, 0: the timer's */
    long rounds;
} floor_s;

static void *floor_partner(void *arg)
{
    (void)arg;
    bench_pin_self();
    for (long i = 0; i < floor_s.rounds; i++) {
        /* acquire/release: the word is the only thing handed over */
        while (__atomic_load_n(&floor_s.turn, __ATOMIC_ACQUIRE) != 1)
            sched_yield();
        __atomic_store_n(&floor_s.turn, 0, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void run_floor(void)
{
    double samples[BENCH_REPS];
    pthread_t t;
    int rc;

    printf("defer_to_thread_floor: %ld hand-offs there and back, %d repetitions (pinned)\n",
           bench_scaled(N_DEFER), BENCH_REPS);
    bench_place_self(true);
    for (int rep = 0; rep < BENCH_REPS; rep++) {
        floor_s.rounds = bench_scaled(N_DEFER);
        floor_s.turn = 0;
        if ((rc = pthread_create(&t, NULL, floor_partner, NULL)) != 0)
            bench_die("pthread_create", strerror(rc));
        double t0 = bench_now();
        for (long i = 0; i < floor_s.rounds; i++) {
            __atomic_store_n(&floor_s.turn, 1, __ATOMIC_RELEASE);
            while (__atomic_load_n(&floor_s.turn, __ATOMIC_ACQUIRE) != 0)
                sched_yield();
        }
        samples[rep] = (bench_now() - t0) * 1e6 / (double)floor_s.rounds;
        pthread_join(t, NULL);
    }
    bench_place_self(false);
    bench_record("defer_to_thread_floor", "two threads on one CPU: sched_yield hand-off",
                 "us/roundtrip", false, samples, BENCH_REPS);
}

/* ==== fresh processes ===========================================================
 * Where a figure depends on where the scheduler puts two threads, and that
 * placement is decided once per process (call_from_thread unpinned: the
 * poster and the loop on one CPU or on two), repetitions within one process
 * all see the same placement. call_from_thread_fresh runs each repetition
 * as this program with --child, in a new process; the table reports the
 * worst of them. */
#define FRESH_REPS 10

static void run_child(const struct workload *w, const struct impl *im, long n, struct result *r)
{
    char nbuf[32], buf[256];
    char *argv[] = {"twine_bench_reactor", "--child", (char *)w->name, (char *)im->name, nbuf,
                    NULL};
    posix_spawn_file_actions_t fa;
    size_t len = 0;
    ssize_t got;
    int fds[2], status;
    pid_t pid;

    snprintf(nbuf, sizeof nbuf, "%ld", n);
    if (pipe2(fds, O_CLOEXEC) != 0)
        bench_die("pipe2", strerror(errno));
    bench_die_rc("posix_spawn_file_actions_init", posix_spawn_file_actions_init(&fa));
    bench_die_rc("posix_spawn_file_actions_adddup2", posix_spawn_file_actions_adddup2(&fa, fds[1], 1));
    bench_place_self(false); /* the child starts with the whole process mask */
    fflush(stdout);
    bench_die_rc("posix_spawn", posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ));
    bench_watch_child(pid);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
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
        exit(WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 2 : 1); /* a wrong count stays one */
    }
    memset(r, 0, sizeof *r);
    if (sscanf(buf, "%lf %lf", &r->value, &r->post_ns) != 2)
        bench_die("reading the child's figures", buf);
}

/* --child WORKLOAD IMPL N: one repetition, its figures on stdout. */
static int child_main(int argc, char **argv)
{
    struct result r;
    const struct workload *w = NULL;
    const struct impl *im = NULL;
    int count;

    if (argc != 5)
        return 2;
    for (int i = 0; i < BENCH_COUNT_OF(workloads); i++)
        if (strcmp(workloads[i].name, argv[2]) == 0)
            w = &workloads[i];
    if (!w)
        return 2;
    const struct impl *impls = impls_of(w, &count);
    for (int i = 0; i < count; i++)
        if (strcmp(impls[i].name, argv[3]) == 0)
            im = &impls[i];
    if (!im)
        return 2;
    bench_twine_diag_init();
    run_here(w, im, atol(argv[4]), &r);
    printf("%.9g %.9g\n", r.value, r.post_ns);
    return 0;
}

/* ==== driver ================================================================= */
static const char *impl_list; /* --impl */

static void run_workload(const struct workload *w)
{
    enum { MAX_IMPLS = 8 };
    struct result res[MAX_IMPLS][FRESH_REPS];
    double s[FRESH_REPS];
    const struct impl *impls;
    char p99name[64];
    long n = bench_scaled(w->n);
    int count, rep, i, k;

    impls = impls_of(w, &count);
    if (count > MAX_IMPLS)
        abort();
    int reps = w->fresh ? FRESH_REPS : BENCH_REPS;
    printf("%s: %ld %s, %d round-robin repetitions%s%s\n", w->name, n,
           w->roundtrip ? "round trips" : "calls", reps,
           w->fresh ? ", each in a fresh process" : "",
           w->pin ? " (pinned: every thread on one CPU)" : "");
    fflush(stdout);
    for (rep = 0; rep < reps; rep++) {
        for (i = 0; i < count; i++) {
            if (!bench_listed(impl_list, impls[i].name))
                continue;
            bench_watch(impls[i].name);
            if (w->fresh)
                run_child(w, &impls[i], n, &res[i][rep]);
            else
                run_here(w, &impls[i], n, &res[i][rep]);
            bench_watch(NULL);
            bench_place_self(false);
        }
    }

    for (i = 0; i < count; i++) {
        if (!bench_listed(impl_list, impls[i].name))
            continue;
        for (k = 0; k < reps; k++)
            s[k] = res[i][k].value;
        bench_record(w->name, impls[i].name, w->unit, w->higher_is_better, s, reps);
        for (k = 0; k < reps; k++)
            s[k] = w->roundtrip ? res[i][k].mean : res[i][k].post_ns;
        if (w->gap > 0)
            bench_record_extra(w->name, impls[i].name, "latency", "us/roundtrip", s, reps);
        else if (w->roundtrip)
            bench_record_extra(w->name, impls[i].name, "mean", w->unit, s, reps);
        else
            bench_record_extra(w->name, impls[i].name, "post", "ns/call", s, reps);
    }
    if (!w->roundtrip || w->gap > 0)
        return;
    snprintf(p99name, sizeof p99name, "%s_p99", w->name);
    for (i = 0; i < count; i++) {
        if (!bench_listed(impl_list, impls[i].name))
            continue;
        for (k = 0; k < BENCH_REPS; k++)
            s[k] = res[i][k].p99;
        bench_record(p99name, impls[i].name, w->unit, false, s, BENCH_REPS);
    }
}

int main(int argc, char **argv)
{
    struct bench_args args;
    int i;

    if (argc > 1 && strcmp(argv[1], "--child") == 0)
        return child_main(argc, argv);
    bench_watchdog_init();
    if (!bench_parse_args(argc, argv, true, NULL,
                          "[--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]",
                          &args))
        return 2;
    impl_list = args.impl;
    /* libuv reads it once, at its pool's first use: before anything here. */
    if (setenv("UV_THREADPOOL_SIZE", "2", 1) != 0)
        bench_die("setenv", strerror(errno));
    bench_twine_diag_init();

    bench_open_csv(args.csv);
    bench_placement_init();
    bench_warm_up(0.2);
    for (i = 0; i < BENCH_COUNT_OF(workloads); i++)
        if (bench_selected(args.only, workloads[i].name))
            run_workload(&workloads[i]);
    if (bench_selected(args.only, "defer_to_thread_floor") && bench_listed(impl_list, "floor"))
        run_floor();
    bench_close_csv();
    return 0;
}
