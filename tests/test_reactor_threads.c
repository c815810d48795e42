/*
 * Unit tests for the thread bridge of twine/reactor.h: calls from other
 * threads (tw_reactor_call_from_thread, tw_reactor_post), the reactor's pool
 * (creation, limit, suggest_thread_pool_size, call_in_thread,
 * call_multiple_in_thread), defer_to_thread and its cancel token, and
 * tw_blocking_call_from_thread, including the shutdown cases Twisted gets
 * wrong (twisted-semantics §3.5, §4, §8 items 1, 2, 6, 8; #10124).
 *
 * The test's main thread creates every reactor and runs its loop, so "the
 * loop thread" is the main thread. Other threads never call cmocka: they
 * record, and the main thread asserts after joining them. No sleeps: Events,
 * tallies, pool FIFO order with a limit of one, and shutdown's own ordering
 * make every case deterministic. A 60 s real-clock watchdog ends a run whose
 * own stop never comes, so a hang fails the test instead.
 *
 * Every test checks (teardown) that no diagnostic was reported unexpectedly
 * and that no twine block is left.
 */
#include "harness.h"

#include <twine/reactor.h>

#include "reactor/reactor.h" /* TW__RING_SIZE */

#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ==== fixture ================================================================== */

static pthread_t loop_thread; /* the main thread, which runs every loop here */

static bool on_loop(void)
{
    return pthread_equal(pthread_self(), loop_thread) != 0;
}

/* Every test: diagnostics recorded (and echoed), none expected unless the test
 * resets them; no twine block left behind. */
static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    loop_thread = pthread_self();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

/* ==== helpers ================================================================== */

#define LIMIT 30.0 /* seconds a thread may take to reach a point it must reach */
/* Seconds after which tw_test_arm_watchdog ends a run whose own stop (the
 * test's) never came. */
#define WATCHDOG 60.0

static tw_reactor *new_reactor(void)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    tw_reactor *r = NULL;
    cfg.pool_stop_timeout = LIMIT;
    assert_rc(tw_reactor_create_with(&cfg, &r), 0);
    assert_non_null(r);
    return r;
}

static void run_loop(tw_reactor *r)
{
    assert_rc(tw_reactor_run(r), 0);
    assert_false(tw_test_watchdog_fired());
}

static void call_stop(void *arg)
{
    tw_reactor_stop(arg);
}

static void free_int_drop(void *p)
{
    free(p);
}

static int *new_int(int v)
{
    int *p = malloc(sizeof *p);
    if (p)
        *p = v;
    return p;
}

/* ==== call_from_thread ========================================================= */

typedef struct onloop {
    tw_reactor *r;
    pthread_t poster;
    int rc1, rc2;
    int ran;
    bool ran_on_loop;
} onloop;

static void onloop_call(void *arg)
{
    onloop *o = arg;
    o->ran++;
    o->ran_on_loop = on_loop();
}

static void *onloop_thread(void *arg)
{
    onloop *o = arg;
    o->rc1 = tw_reactor_call_from_thread(o->r, onloop_call, o);
    o->rc2 = tw_reactor_call_from_thread(o->r, call_stop, o->r);
    return NULL;
}

static void onloop_start(void *arg)
{
    onloop *o = arg;
    o->poster = tw_test_start(onloop_thread, o);
}

static void test_call_from_thread_runs_on_loop(void **state)
{
    (void)state;
    onloop o = {0};
    o.rc1 = o.rc2 = 99;
    o.r = new_reactor();
    tw_test_arm_watchdog(o.r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(o.r, onloop_start, &o), 0);
    run_loop(o.r);
    tw_test_join(o.poster);
    assert_rc(o.rc1, 0);
    assert_rc(o.rc2, 0);
    assert_int_equal(o.ran, 1);
    assert_true(o.ran_on_loop);
    assert_rc(tw_reactor_destroy(o.r), 0);
}

/* Several threads post numbered calls; each thread's calls run in its order. */
#define FIFO_THREADS 3
#define FIFO_CALLS 2000

typedef struct fifo_ctx fifo_ctx;
typedef struct fifo_item {
    fifo_ctx *c;
    int thread, seq;
} fifo_item;

struct fifo_ctx {
    tw_reactor *r;
    fifo_item items[FIFO_THREADS][FIFO_CALLS];
    int next[FIFO_THREADS]; /* loop side */
    int out_of_order, wrong_thread, done;
    int bad_rc[FIFO_THREADS];
    pthread_t th[FIFO_THREADS];
};

static void fifo_call(void *arg)
{
    fifo_item *it = arg;
    fifo_ctx *c = it->c;
    if (c->next[it->thread] != it->seq)
        c->out_of_order++;
    c->next[it->thread] = it->seq + 1;
    if (!on_loop())
        c->wrong_thread++;
}

static void fifo_done(void *arg)
{
    fifo_ctx *c = arg;
    if (++c->done == FIFO_THREADS)
        tw_reactor_stop(c->r);
}

typedef struct fifo_arg {
    fifo_ctx *c;
    int thread;
} fifo_arg;
static fifo_arg fifo_args[FIFO_THREADS];

static void *fifo_poster(void *arg)
{
    fifo_arg *a = arg;
    fifo_ctx *c = a->c;
    for (int i = 0; i < FIFO_CALLS; i++) {
        fifo_item *it = &c->items[a->thread][i];
        it->c = c;
        it->thread = a->thread;
        it->seq = i;
        if (tw_reactor_call_from_thread(c->r, fifo_call, it) != 0)
            c->bad_rc[a->thread]++;
    }
    if (tw_reactor_call_from_thread(c->r, fifo_done, c) != 0)
        c->bad_rc[a->thread]++;
    return NULL;
}

static void fifo_start(void *arg)
{
    fifo_ctx *c = arg;
    for (int t = 0; t < FIFO_THREADS; t++) {
        fifo_args[t].c = c;
        fifo_args[t].thread = t;
        c->th[t] = tw_test_start(fifo_poster, &fifo_args[t]);
    }
}

static void test_call_from_thread_fifo_per_thread(void **state)
{
    (void)state;
    fifo_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->r = new_reactor();
    tw_test_arm_watchdog(c->r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(c->r, fifo_start, c), 0);
    run_loop(c->r);
    for (int t = 0; t < FIFO_THREADS; t++)
        tw_test_join(c->th[t]);
    assert_int_equal(c->done, FIFO_THREADS);
    assert_int_equal(c->out_of_order, 0);
    assert_int_equal(c->wrong_thread, 0);
    for (int t = 0; t < FIFO_THREADS; t++) {
        assert_int_equal(c->bad_rc[t], 0);
        assert_int_equal(c->next[t], FIFO_CALLS);
    }
    assert_rc(tw_reactor_destroy(c->r), 0);
    free(c);
}

/* The ring filled before the loop runs (the rest of that thread's calls go
 * on the overflow stack), then laps of it posted while the loop runs: every
 * call runs once, in the one thread's order, whichever way each went. */
#define LAP_PRE (TW__RING_SIZE + 100)
#define LAP_ALL (LAP_PRE + 3 * TW__RING_SIZE + 7)

typedef struct lap_ctx {
    tw_reactor *r;
    int next, ran, out_of_order, wrong_thread, bad_rc;
    int seqs[LAP_ALL];
    pthread_t th;
} lap_ctx;

static lap_ctx *lap_of(int *seq)
{
    return (lap_ctx *)((char *)(seq - *seq) - offsetof(lap_ctx, seqs));
}

static void lap_call(void *arg)
{
    int *seq = arg;
    lap_ctx *c = lap_of(seq);
    c->ran++;
    if (*seq != c->next)
        c->out_of_order++;
    c->next = *seq + 1;
    if (!on_loop())
        c->wrong_thread++;
    if (*seq == LAP_ALL - 1)
        tw_reactor_stop(c->r);
}

static void lap_post(lap_ctx *c, int from, int to)
{
    for (int i = from; i < to; i++)
        if (tw_reactor_call_from_thread(c->r, lap_call, &c->seqs[i]) != 0)
            c->bad_rc++;
}

static void *lap_pre(void *arg)
{
    lap_post(arg, 0, LAP_PRE);
    return NULL;
}

static void *lap_rest(void *arg)
{
    lap_post(arg, LAP_PRE, LAP_ALL);
    return NULL;
}

static void lap_start(void *arg)
{
    lap_ctx *c = arg;
    c->th = tw_test_start(lap_rest, c);
}

static void test_call_from_thread_ring_full_then_laps(void **state)
{
    (void)state;
    lap_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    for (int i = 0; i < LAP_ALL; i++)
        c->seqs[i] = i;
    c->r = new_reactor();
    tw_test_arm_watchdog(c->r, WATCHDOG);
    tw_test_join(tw_test_start(lap_pre, c)); /* nothing runs yet: the ring fills */
    assert_int_equal(c->ran, 0);
    assert_rc(tw_reactor_call_when_running(c->r, lap_start, c), 0);
    run_loop(c->r);
    tw_test_join(c->th);
    assert_int_equal(c->bad_rc, 0);
    assert_int_equal(c->ran, LAP_ALL);
    assert_int_equal(c->out_of_order, 0);
    assert_int_equal(c->wrong_thread, 0);
    assert_rc(tw_reactor_destroy(c->r), 0);
    free(c);
}

/* tw_reactor_post with nodes the caller allocated; fn frees its own node. */
#define NODE_CALLS 500

typedef struct node_ctx {
    tw_reactor *r;
    int ran, next, out_of_order, wrong_thread, bad_rc;
    pthread_t th;
} node_ctx;

typedef struct my_node {
    tw_call call;
    node_ctx *c;
    int seq;
    bool last;
} my_node;

static void my_node_fn(void *arg)
{
    my_node *n = arg;
    node_ctx *c = n->c;
    c->ran++;
    if (n->seq != c->next)
        c->out_of_order++;
    c->next = n->seq + 1;
    if (!on_loop())
        c->wrong_thread++;
    bool last = n->last;
    memset(n, 0xa5, sizeof *n); /* the reactor must not read it after this */
    free(n);
    if (last)
        tw_reactor_stop(c->r);
}

static void *node_poster(void *arg)
{
    node_ctx *c = arg;
    for (int i = 0; i < NODE_CALLS; i++) {
        my_node *n = malloc(sizeof *n);
        if (!n) {
            c->bad_rc++;
            continue;
        }
        n->call = (tw_call)TW_CALL_INIT(my_node_fn, n);
        n->c = c;
        n->seq = i;
        n->last = i == NODE_CALLS - 1;
        if (tw_reactor_post(c->r, &n->call) != 0) {
            c->bad_rc++;
            free(n);
        }
    }
    return NULL;
}

static void node_start(void *arg)
{
    node_ctx *c = arg;
    c->th = tw_test_start(node_poster, c);
}

static void test_post_caller_nodes_freed_in_fn(void **state)
{
    (void)state;
    node_ctx c = {0};
    c.r = new_reactor();
    tw_test_arm_watchdog(c.r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(c.r, node_start, &c), 0);
    run_loop(c.r);
    tw_test_join(c.th);
    assert_int_equal(c.bad_rc, 0);
    assert_int_equal(c.ran, NODE_CALLS);
    assert_int_equal(c.out_of_order, 0);
    assert_int_equal(c.wrong_thread, 0);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* One node, reused: reposted from inside its own fn (loop side), and by a
 * thread once fn has said it is done with it. */
#define REUSE_ROUNDS 200

typedef struct reuse_ctx {
    tw_reactor *r;
    tw_call node;
    int ran;
    int repost_rc;
    int free_flag; /* atomic: fn is done with the node */
    int thread_bad;
    pthread_t th;
} reuse_ctx;

static void reuse_fn(void *arg)
{
    reuse_ctx *c = arg;
    c->ran++;
    if (c->ran < REUSE_ROUNDS) {
        /* Reuse the node for the next call from inside fn. */
        int rc = tw_reactor_post(c->r, &c->node);
        if (rc)
            c->repost_rc = rc;
        return;
    }
    if (c->ran == 2 * REUSE_ROUNDS) {
        tw_reactor_stop(c->r);
        return;
    }
    /* Done with the node: the thread may post it again. */
    __atomic_store_n(&c->free_flag, 1, __ATOMIC_RELEASE);
}

static void *reuse_thread(void *arg)
{
    reuse_ctx *c = arg;
    for (int i = 0; i < REUSE_ROUNDS; i++) {
        double end = tw_test_now() + LIMIT;
        while (!__atomic_load_n(&c->free_flag, __ATOMIC_ACQUIRE)) {
            if (tw_test_now() > end) {
                c->thread_bad++;
                return NULL;
            }
            sched_yield();
        }
        __atomic_store_n(&c->free_flag, 0, __ATOMIC_RELAXED);
        c->node.fn = reuse_fn;
        c->node.arg = c;
        if (tw_reactor_post(c->r, &c->node) != 0)
            c->thread_bad++;
    }
    return NULL;
}

static void test_post_node_reused(void **state)
{
    (void)state;
    reuse_ctx c = {0};
    c.r = new_reactor();
    tw_test_arm_watchdog(c.r, WATCHDOG);
    c.node = (tw_call)TW_CALL_INIT(reuse_fn, &c);
    c.th = tw_test_start(reuse_thread, &c);
    assert_rc(tw_reactor_post(c.r, &c.node), 0);
    run_loop(c.r);
    tw_test_join(c.th);
    assert_rc(c.repost_rc, 0);
    assert_int_equal(c.thread_bad, 0);
    assert_int_equal(c.ran, 2 * REUSE_ROUNDS);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* Posted before run, even with a stop before run: runs once. */
static void count_call(void *arg)
{
    (*(int *)arg)++;
}

static void test_post_before_run_runs(void **state)
{
    (void)state;
    int ran = 0;
    tw_reactor *r = new_reactor();
    assert_rc(tw_reactor_call_from_thread(r, count_call, &ran), 0);
    assert_rc(tw_reactor_stop(r), 0);
    assert_rc(tw_reactor_run(r), 0);
    assert_int_equal(ran, 1);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* After shutdown: TW_ESHUTDOWN, and the node is not taken (nor written). */
typedef struct late_post {
    tw_reactor *r;
    tw_call node;
    int rc_post, rc_call;
    int ran;
} late_post;

static void *late_poster(void *arg)
{
    late_post *lp = arg;
    lp->rc_post = tw_reactor_post(lp->r, &lp->node);
    lp->rc_call = tw_reactor_call_from_thread(lp->r, count_call, &lp->ran);
    return NULL;
}

static void test_post_after_shutdown_refused(void **state)
{
    (void)state;
    static tw_call sentinel;
    int ran = 0;
    tw_reactor *r = new_reactor();
    assert_rc(tw_reactor_call_from_thread(r, call_stop, r), 0);
    run_loop(r);

    /* From the thread that ran the loop. */
    tw_call node = TW_CALL_INIT(count_call, &ran);
    node.next = &sentinel;
    assert_rc(tw_reactor_post(r, &node), TW_ESHUTDOWN);
    assert_ptr_equal(node.next, &sentinel);
    assert_true(node.fn == count_call);
    assert_ptr_equal(node.arg, &ran);
    assert_rc(tw_reactor_call_from_thread(r, count_call, &ran), TW_ESHUTDOWN);

    /* From another thread. */
    late_post lp = {0};
    lp.r = r;
    lp.rc_post = lp.rc_call = 99;
    lp.node = (tw_call)TW_CALL_INIT(count_call, &lp.ran);
    lp.node.next = &sentinel;
    tw_test_join(tw_test_start(late_poster, &lp));
    assert_rc(lp.rc_post, TW_ESHUTDOWN);
    assert_rc(lp.rc_call, TW_ESHUTDOWN);
    assert_ptr_equal(lp.node.next, &sentinel);

    assert_rc(tw_reactor_destroy(r), 0);
    assert_int_equal(ran, 0);
    assert_int_equal(lp.ran, 0);
}

/* Calls accepted during shutdown — posted from threads in each phase, by a
 * pool thread while the pool stops, and by a posted call while the posted
 * calls are being closed — all run before run() returns. */
#define SD_CALLS 50

typedef struct sd_ctx {
    tw_reactor *r;
    int phase_rc[3][SD_CALLS];
    int phase_ran[3][SD_CALLS]; /* loop side */
    int phase_cur;
    tw_event gate;
    int pool_post_rc, pool_gate_rc;
    int pool_ran;
    int chain_rc[3];
    int chain_ran;
    int trigger_order[8], ntriggers;
    int ran_after_last_trigger; /* calls that ran after the after-trigger */
    bool after_done;
} sd_ctx;

typedef struct sd_arg {
    sd_ctx *c;
    int phase;
} sd_arg;

static sd_arg sd_args[3];

static void sd_call(void *arg)
{
    int *slot = arg;
    (*slot)++;
}

static void *sd_poster(void *arg)
{
    sd_arg *a = arg;
    for (int i = 0; i < SD_CALLS; i++)
        a->c->phase_rc[a->phase][i] =
            tw_reactor_call_from_thread(a->c->r, sd_call, &a->c->phase_ran[a->phase][i]);
    return NULL;
}

/* Posts SD_CALLS calls from a new thread and joins it (on the loop thread). */
static void sd_post_phase(sd_ctx *c, int phase)
{
    sd_args[phase].c = c;
    sd_args[phase].phase = phase;
    pthread_t t;
    if (pthread_create(&t, NULL, sd_poster, &sd_args[phase]) == 0)
        pthread_join(t, NULL);
}

static void sd_chain(void *arg)
{
    sd_ctx *c = arg;
    if (c->after_done)
        c->ran_after_last_trigger++;
    if (++c->chain_ran < 3)
        c->chain_rc[c->chain_ran] = tw_reactor_call_from_thread(c->r, sd_chain, c);
}

static tw_result sd_before(void *arg)
{
    sd_ctx *c = arg;
    c->trigger_order[c->ntriggers++] = 0;
    sd_post_phase(c, 0);
    return tw_result_none();
}

static tw_result sd_during(void *arg)
{
    sd_ctx *c = arg;
    c->trigger_order[c->ntriggers++] = 1;
    sd_post_phase(c, 1);
    tw_event_set(&c->gate); /* the pool task posts while the pool stops */
    return tw_result_none();
}

static tw_result sd_after(void *arg)
{
    sd_ctx *c = arg;
    c->trigger_order[c->ntriggers++] = 2;
    sd_post_phase(c, 2);
    c->chain_rc[0] = tw_reactor_call_from_thread(c->r, sd_chain, c);
    c->after_done = true;
    return tw_result_none();
}

static void sd_pool_call(void *arg)
{
    ((sd_ctx *)arg)->pool_ran++;
}

static int sd_pool_task(void *arg)
{
    sd_ctx *c = arg;
    c->pool_gate_rc = tw_event_wait_timeout(&c->gate, LIMIT);
    c->pool_post_rc = tw_reactor_call_from_thread(c->r, sd_pool_call, c);
    return 0;
}

static void test_calls_accepted_during_shutdown_run(void **state)
{
    (void)state;
    sd_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->r = new_reactor();
    c->pool_post_rc = c->pool_gate_rc = 99;
    for (int i = 0; i < 3; i++)
        c->chain_rc[i] = 99;
    assert_rc(tw_reactor_add_trigger(c->r, TW_BEFORE_SHUTDOWN, sd_before, c, NULL), 0);
    assert_rc(tw_reactor_add_trigger(c->r, TW_DURING_SHUTDOWN, sd_during, c, NULL), 0);
    assert_rc(tw_reactor_add_trigger(c->r, TW_AFTER_SHUTDOWN, sd_after, c, NULL), 0);
    assert_rc(tw_reactor_call_in_thread(c->r, sd_pool_task, c), 0);
    tw_test_arm_watchdog(c->r, WATCHDOG);
    assert_rc(tw_reactor_call_from_thread(c->r, call_stop, c->r), 0);
    run_loop(c->r);
    assert_int_equal(c->ntriggers, 3);
    for (int p = 0; p < 3; p++) {
        assert_int_equal(c->trigger_order[p], p);
        for (int i = 0; i < SD_CALLS; i++) {
            assert_rc(c->phase_rc[p][i], 0);
            assert_int_equal(c->phase_ran[p][i], 1);
        }
    }
    assert_rc(c->pool_gate_rc, 0);
    assert_rc(c->pool_post_rc, 0);
    assert_int_equal(c->pool_ran, 1);
    for (int i = 0; i < 3; i++)
        assert_rc(c->chain_rc[i], 0);
    assert_int_equal(c->chain_ran, 3);
    assert_int_equal(c->ran_after_last_trigger, 3);
    /* And now the door is shut. */
    int late = 0;
    assert_rc(tw_reactor_call_from_thread(c->r, count_call, &late), TW_ESHUTDOWN);
    assert_rc(tw_reactor_destroy(c->r), 0);
    assert_int_equal(late, 0);
    free(c);
}

/* ==== the reactor's pool ======================================================= */

static void test_pool_created_on_first_use_default_limit(void **state)
{
    (void)state;
    tw_reactor *r;
    assert_rc(tw_reactor_create(&r), 0);
    tw_pool *p = NULL, *p2 = NULL;
    assert_rc(tw_reactor_get_thread_pool(r, &p), 0);
    assert_non_null(p);
    tw_pool_stats s;
    assert_rc(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.max, 10);
    assert_int_equal(s.min, 0);
    assert_int_equal(s.threads, 0); /* min 0: no thread before there is work */
    assert_rc(tw_reactor_get_thread_pool(r, &p2), 0);
    assert_ptr_equal(p, p2);
    assert_rc(tw_reactor_get_thread_pool(r, NULL), TW_EINVAL);
    assert_rc(tw_reactor_destroy(r), 0); /* never ran: shuts down, stops the pool */

    /* pool_max 0 means 10; another value is the limit. */
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.pool_max = 0;
    assert_rc(tw_reactor_create_with(&cfg, &r), 0);
    assert_rc(tw_reactor_get_thread_pool(r, &p), 0);
    assert_rc(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.max, 10);
    assert_rc(tw_reactor_destroy(r), 0);
    cfg.pool_max = 3;
    assert_rc(tw_reactor_create_with(&cfg, &r), 0);
    assert_rc(tw_reactor_get_thread_pool(r, &p), 0);
    assert_rc(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.max, 3);
    assert_rc(tw_reactor_destroy(r), 0);
}

static void test_suggest_pool_size_before_and_after_creation(void **state)
{
    (void)state;
    tw_reactor *r = new_reactor();
    tw_pool *p;
    tw_pool_stats s;
    assert_rc(tw_reactor_suggest_thread_pool_size(r, 0), TW_EINVAL);
    assert_rc(tw_reactor_suggest_thread_pool_size(r, 4), 0); /* before: applies at creation */
    assert_rc(tw_reactor_get_thread_pool(r, &p), 0);
    assert_rc(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.max, 4);
    assert_int_equal(s.min, 0);
    assert_rc(tw_reactor_suggest_thread_pool_size(r, 7), 0); /* after: resizes the pool */
    assert_rc(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.max, 7);
    assert_rc(tw_reactor_suggest_thread_pool_size(r, 1), 0);
    assert_rc(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.max, 1);
    assert_rc(tw_reactor_suggest_thread_pool_size(r, 0), TW_EINVAL);
    assert_rc(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.max, 1);
    assert_rc(tw_reactor_destroy(r), 0);
}

static int nop_task(void *arg)
{
    (void)arg;
    return 0;
}

static tw_result nop_thread_fn(void *arg, tw_cancel *cancel)
{
    (void)arg;
    (void)cancel;
    return tw_result_none();
}

static void test_pool_functions_after_shutdown(void **state)
{
    (void)state;
    tw_reactor *r = new_reactor();
    tw_pool *p = NULL;
    tw_deferred *d = NULL;
    assert_rc(tw_reactor_get_thread_pool(r, &p), 0); /* the pool exists, and is stopped */
    assert_rc(tw_reactor_stop(r), 0);
    run_loop(r);
    p = NULL;
    assert_rc(tw_reactor_get_thread_pool(r, &p), TW_ESHUTDOWN);
    assert_null(p);
    assert_rc(tw_reactor_suggest_thread_pool_size(r, 3), TW_ESHUTDOWN);
    assert_rc(tw_reactor_call_in_thread(r, nop_task, NULL), TW_ESHUTDOWN);
    tw_thread_call calls[1] = {{nop_task, NULL}};
    assert_rc(tw_reactor_call_multiple_in_thread(r, calls, 1), TW_ESHUTDOWN);
    assert_rc(tw_defer_to_thread(r, nop_thread_fn, NULL, &d), TW_ESHUTDOWN);
    assert_null(d);
    /* The application's pool after shutdown: refused too (the result could
     * never be delivered). */
    tw_pool *mine;
    assert_rc(tw_pool_create(0, 1, &mine), 0);
    assert_rc(tw_defer_to_thread_pool(r, mine, nop_thread_fn, NULL, &d), TW_ESHUTDOWN);
    assert_null(d);
    assert_rc(tw_pool_destroy(mine), 0);
    assert_rc(tw_reactor_destroy(r), 0);

    /* A reactor whose pool was never made refuses in the same way. */
    r = new_reactor();
    assert_rc(tw_reactor_stop(r), 0);
    run_loop(r);
    assert_rc(tw_reactor_call_in_thread(r, nop_task, NULL), TW_ESHUTDOWN);
    assert_rc(tw_reactor_get_thread_pool(r, &p), TW_ESHUTDOWN);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* call_in_thread: a pool thread, not the loop's; the result comes back by post. */
typedef struct cit_ctx {
    tw_reactor *r;
    bool task_on_loop;
    int task_ran;
    int post_rc;
    int back_ran;
    bool back_on_loop;
} cit_ctx;

static void cit_back(void *arg)
{
    cit_ctx *c = arg;
    c->back_ran++;
    c->back_on_loop = on_loop();
    tw_reactor_stop(c->r);
}

static int cit_task(void *arg)
{
    cit_ctx *c = arg;
    c->task_ran++;
    c->task_on_loop = on_loop();
    c->post_rc = tw_reactor_call_from_thread(c->r, cit_back, c);
    return 0;
}

static void cit_start(void *arg)
{
    cit_ctx *c = arg;
    if (tw_reactor_call_in_thread(c->r, cit_task, c) != 0)
        tw_reactor_stop(c->r);
}

static void test_call_in_thread_off_loop(void **state)
{
    (void)state;
    cit_ctx c = {0};
    c.post_rc = 99;
    c.task_on_loop = true;
    c.r = new_reactor();
    tw_test_arm_watchdog(c.r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(c.r, cit_start, &c), 0);
    run_loop(c.r);
    assert_int_equal(c.task_ran, 1);
    assert_false(c.task_on_loop);
    assert_rc(c.post_rc, 0);
    assert_int_equal(c.back_ran, 1);
    assert_true(c.back_on_loop);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* A task's non-zero return goes to the diagnostic hook (the pool's default). */
static int failing_task(void *arg)
{
    (void)arg;
    return 4321;
}

static void test_call_in_thread_error_reported(void **state)
{
    (void)state;
    tw_reactor *r = new_reactor();
    assert_rc(tw_reactor_call_in_thread(r, failing_task, NULL), 0);
    assert_rc(tw_reactor_stop(r), 0);
    run_loop(r); /* shutdown waits for the queued task */
    assert_rc(tw_reactor_destroy(r), 0);
    assert_int_equal(tw_test_diag_count(), 1);
    assert_int_equal(tw_test_diag_at(0)->code, 4321);
    tw_test_diag_reset();
}

/* call_multiple_in_thread: in order, on one thread (Twisted's test_callMultiple). */
#define MULTI 10

typedef struct multi_ctx {
    tw_reactor *r;
    int log[MULTI + 1];
    int n;
    pthread_t threads[MULTI + 1];
    int post_rc;
    int seen_at_back;
} multi_ctx;

typedef struct multi_arg {
    multi_ctx *c;
    int i;
} multi_arg;

static multi_arg multi_args[MULTI];

static int multi_append(void *arg)
{
    multi_arg *a = arg;
    a->c->threads[a->c->n] = pthread_self();
    a->c->log[a->c->n++] = a->i;
    return 0;
}

static void multi_back(void *arg)
{
    multi_ctx *c = arg;
    c->seen_at_back = c->n;
    tw_reactor_stop(c->r);
}

static int multi_post(void *arg)
{
    multi_ctx *c = arg;
    c->threads[c->n] = pthread_self();
    c->log[c->n++] = -1;
    c->post_rc = tw_reactor_call_from_thread(c->r, multi_back, c);
    return 0;
}

static void multi_start(void *arg)
{
    multi_ctx *c = arg;
    tw_thread_call calls[MULTI + 1];
    for (int i = 0; i < MULTI; i++) {
        multi_args[i].c = c;
        multi_args[i].i = i;
        calls[i].fn = multi_append;
        calls[i].arg = &multi_args[i];
    }
    calls[MULTI].fn = multi_post;
    calls[MULTI].arg = c;
    /* Several threads available: one thread must still run them all. */
    tw_reactor_suggest_thread_pool_size(c->r, 4);
    if (tw_reactor_call_multiple_in_thread(c->r, calls, MULTI + 1) != 0)
        tw_reactor_stop(c->r);
    memset(calls, 0, sizeof calls); /* the array was copied */
}

static void test_call_multiple_in_thread_one_thread_in_order(void **state)
{
    (void)state;
    multi_ctx c = {0};
    c.post_rc = 99;
    c.r = new_reactor();
    tw_test_arm_watchdog(c.r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(c.r, multi_start, &c), 0);
    run_loop(c.r);
    assert_int_equal(c.n, MULTI + 1);
    assert_int_equal(c.seen_at_back, MULTI + 1);
    assert_rc(c.post_rc, 0);
    for (int i = 0; i < MULTI; i++)
        assert_int_equal(c.log[i], i);
    assert_int_equal(c.log[MULTI], -1);
    for (int i = 0; i <= MULTI; i++) {
        assert_true(pthread_equal(c.threads[i], c.threads[0]));
        assert_false(pthread_equal(c.threads[i], loop_thread));
    }
    tw_thread_call bad[1] = {{NULL, NULL}};
    assert_rc(tw_reactor_call_multiple_in_thread(c.r, bad, 1), TW_EINVAL);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* ==== defer_to_thread ========================================================== */

typedef struct dtt_ctx {
    tw_reactor *r;
    int arg;
    bool fn_on_loop;
    int fn_ran;
    int cb_ran, eb_ran;
    bool cb_on_loop;
    int value;
    int code;
    char message[64];
} dtt_ctx;

static tw_result double_fn(void *arg, tw_cancel *cancel)
{
    dtt_ctx *c = arg;
    c->fn_ran++;
    c->fn_on_loop = on_loop();
    if (tw_cancel_requested(cancel))
        return tw_result_fail(TW_EINVAL, "cancel requested unexpectedly");
    int *v = new_int(c->arg * 2);
    return v ? tw_result_value(v, free_int_drop) : tw_result_fail(TW_ENOMEM, NULL);
}

static tw_result failing_fn(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    dtt_ctx *c = arg;
    c->fn_ran++;
    c->fn_on_loop = on_loop();
    return tw_result_fail(5150, "bar %d", c->arg);
}

static tw_result dtt_cb(tw_result res, void *arg)
{
    dtt_ctx *c = arg;
    c->cb_ran++;
    c->cb_on_loop = on_loop();
    c->value = res.ptr ? *(int *)res.ptr : -1;
    tw_result_drop(res);
    tw_reactor_stop(c->r);
    return tw_result_none();
}

static tw_result dtt_eb(tw_result res, void *arg)
{
    dtt_ctx *c = arg;
    tw_failure *f = tw_result_as_failure(res);
    c->eb_ran++;
    c->cb_on_loop = on_loop();
    c->code = tw_failure_code(f);
    snprintf(c->message, sizeof c->message, "%s", tw_failure_message(f));
    tw_result_drop(res);
    tw_reactor_stop(c->r);
    return tw_result_none();
}

static void run_dtt(dtt_ctx *c, tw_thread_fn fn, tw_pool *user_pool)
{
    tw_deferred *d = NULL;
    c->r = new_reactor();
    c->fn_on_loop = true;
    tw_test_arm_watchdog(c->r, WATCHDOG);
    if (user_pool)
        assert_rc(tw_defer_to_thread_pool(c->r, user_pool, fn, c, &d), 0);
    else
        assert_rc(tw_defer_to_thread(c->r, fn, c, &d), 0);
    assert_non_null(d);
    assert_rc(tw_deferred_add_callbacks(d, dtt_cb, c, dtt_eb, c), 0);
    tw_deferred_unref(d);
    run_loop(c->r);
    assert_int_equal(c->fn_ran, 1);
    assert_false(c->fn_on_loop);
    assert_true(c->cb_on_loop);
}

static void test_defer_to_thread_value(void **state)
{
    (void)state;
    dtt_ctx c = {0};
    c.arg = 21;
    run_dtt(&c, double_fn, NULL);
    assert_int_equal(c.cb_ran, 1);
    assert_int_equal(c.eb_ran, 0);
    assert_int_equal(c.value, 42);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_defer_to_thread_failure(void **state)
{
    (void)state;
    dtt_ctx c = {0};
    c.arg = 7;
    run_dtt(&c, failing_fn, NULL);
    assert_int_equal(c.cb_ran, 0);
    assert_int_equal(c.eb_ran, 1);
    assert_int_equal(c.code, 5150);
    assert_string_equal(c.message, "bar 7");
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* The loop watches for a defer_to_thread result before it sleeps; timers and
 * other threads' calls must still run meanwhile. Here the task can only
 * finish once a timer has run on the loop, and the timer is due while the
 * loop is watching (or already sleeping) for the task's result. */
typedef struct timer_gate {
    tw_reactor *r;
    tw_event timer_ran;
    tw_event posted_ran;
    int order; /* 1: timer, 2: posted call, 3: result */
    int result;
} timer_gate;

static void gate_timer(void *arg)
{
    timer_gate *g = arg;
    g->order = g->order * 10 + 1;
    tw_event_set(&g->timer_ran);
}

static void gate_posted(void *arg)
{
    timer_gate *g = arg;
    g->order = g->order * 10 + 2;
    tw_event_set(&g->posted_ran);
}

static tw_result gate_task(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    timer_gate *g = arg;
    if (tw_event_wait_timeout(&g->timer_ran, WATCHDOG) != 0)
        return tw_result_fail(TW_ETIMEDOUT, "the timer never ran");
    /* A call from this thread while the loop waits for our result. */
    if (tw_reactor_call_from_thread(g->r, gate_posted, g) != 0 ||
        tw_event_wait_timeout(&g->posted_ran, WATCHDOG) != 0)
        return tw_result_fail(TW_ETIMEDOUT, "the posted call never ran");
    return tw_result_none();
}

static tw_result gate_done(tw_result res, void *arg)
{
    timer_gate *g = arg;
    g->order = g->order * 10 + 3;
    g->result = tw_result_is_failure(res) ? tw_failure_code(tw_result_as_failure(res)) : 0;
    tw_result_drop(res);
    tw_reactor_stop(g->r);
    return tw_result_none();
}

static void test_defer_to_thread_loop_serves_timers_and_calls_meanwhile(void **state)
{
    (void)state;
    timer_gate g = {0};
    g.r = new_reactor();
    tw_test_arm_watchdog(g.r, WATCHDOG);
    tw_deferred *d = NULL;
    assert_rc(tw_defer_to_thread(g.r, gate_task, &g, &d), 0);
    assert_rc(tw_deferred_add_both(d, gate_done, &g), 0);
    tw_deferred_unref(d);
    assert_rc(tw_reactor_call_later(g.r, 0.002, gate_timer, &g, NULL), 0);
    run_loop(g.r);
    assert_int_equal(g.result, 0);
    assert_int_equal(g.order, 123);
    assert_rc(tw_reactor_destroy(g.r), 0);
}

/* A chain of round trips, each issued from the previous one's callback,
 * while an fd stays readable. Whether the loop watched for a result or slept
 * for it, every iteration polls the fds once (without waiting when a result
 * is already there), so the level-triggered reader is called exactly once
 * per iteration. */
enum { FD_CHAIN = 200 };

typedef struct fd_chain {
    tw_reactor *r;
    int left;
    int results;
    int reads;
} fd_chain;

static tw_result chain_task(void *arg, tw_cancel *cancel)
{
    (void)arg;
    (void)cancel;
    return tw_result_none();
}

static tw_result chain_next(tw_result res, void *arg);

static void chain_issue(fd_chain *c)
{
    tw_deferred *d = NULL;
    assert_rc(tw_defer_to_thread(c->r, chain_task, c, &d), 0);
    assert_rc(tw_deferred_add_both(d, chain_next, c), 0);
    tw_deferred_unref(d);
}

static tw_result chain_next(tw_result res, void *arg)
{
    fd_chain *c = arg;
    assert_false(tw_result_is_failure(res));
    tw_result_drop(res);
    c->results++;
    if (--c->left > 0)
        chain_issue(c);
    return tw_result_none();
}

static void chain_read(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    ((fd_chain *)arg)->reads++; /* the byte stays: level-triggered, readable again */
}

static void test_defer_to_thread_chain_fds_served(void **state)
{
    (void)state;
    fd_chain c = {new_reactor(), FD_CHAIN, 0, 0};
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    assert_rc(tw_reactor_add_reader(c.r, sv[0], chain_read, &c), 0);
    chain_issue(&c);
    int iterations = 0;
    double t0 = tw_test_now();
    while (c.results < FD_CHAIN && tw_test_now() - t0 < WATCHDOG) {
        assert_rc(tw_reactor_iterate(c.r, 1.0), 0);
        iterations++;
        assert_int_equal(c.reads, iterations);
    }
    assert_int_equal(c.results, FD_CHAIN);
    assert_rc(tw_reactor_remove_reader(c.r, sv[0]), 0);
    assert_rc(tw_reactor_destroy(c.r), 0);
    close(sv[0]);
    close(sv[1]);
}

static void test_defer_to_thread_pool_user_pool(void **state)
{
    (void)state;
    tw_pool *mine;
    assert_rc(tw_pool_create(0, 2, &mine), 0);
    dtt_ctx c = {0};
    c.arg = 50;
    run_dtt(&c, double_fn, mine);
    assert_int_equal(c.cb_ran, 1);
    assert_int_equal(c.value, 100);
    /* The application stops its pool (no thread of it may still be inside a
     * call on the reactor when the reactor is destroyed). */
    assert_rc(tw_pool_stop(mine, LIMIT, NULL), 0);
    tw_pool_stats s;
    assert_rc(tw_pool_stats_get(mine, &s), 0);
    assert_int_equal(s.team.completed, 1);
    assert_rc(tw_reactor_destroy(c.r), 0);
    assert_rc(tw_pool_destroy(mine), 0);

    /* The failure side, on the application's pool. */
    assert_rc(tw_pool_create(0, 2, &mine), 0);
    dtt_ctx c2 = {0};
    c2.arg = 9;
    run_dtt(&c2, failing_fn, mine);
    assert_int_equal(c2.eb_ran, 1);
    assert_int_equal(c2.code, 5150);
    assert_string_equal(c2.message, "bar 9");
    assert_rc(tw_pool_stop(mine, LIMIT, NULL), 0);
    assert_rc(tw_reactor_destroy(c2.r), 0);
    assert_rc(tw_pool_destroy(mine), 0);
}

/* ---- cancel ---- */

typedef struct cancel_ctx {
    tw_reactor *r;
    tw_deferred *d;
    tw_event gate;     /* the blocker waits for it */
    tw_event started;  /* set by a running thread function */
    int blocker_rc;
    int fn_ran;
    int cb_ran, eb_ran;
    int eb_code;
    bool fired_at_once;    /* d had fired when cancel returned */
    int eb_at_once;        /* errbacks run by the time cancel returned */
    bool requested_before; /* the function saw a request before it was made */
    bool requested_after;
    int wait_rc;
    double waited;
    int drops;
    bool drop_on_loop;
    bool fail_late; /* the running function returns a failure instead of a value */
    int marker_rc;
} cancel_ctx;

static tw_result counted_fn(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    cancel_ctx *c = arg;
    __atomic_fetch_add(&c->fn_ran, 1, __ATOMIC_RELAXED);
    return tw_result_none();
}

static int blocker(void *arg)
{
    cancel_ctx *c = arg;
    c->blocker_rc = tw_event_wait_timeout(&c->gate, LIMIT);
    return 0;
}

static tw_result cancel_cb(tw_result res, void *arg)
{
    cancel_ctx *c = arg;
    c->cb_ran++;
    tw_result_drop(res);
    return tw_result_none();
}

static tw_result cancel_eb(tw_result res, void *arg)
{
    cancel_ctx *c = arg;
    c->eb_ran++;
    c->eb_code = tw_failure_code(tw_result_as_failure(res));
    tw_result_drop(res);
    return tw_result_none();
}

static void marker_back(void *arg)
{
    tw_reactor_stop(arg);
}

/* Runs after the skipped task (FIFO, one thread): proves it has been passed. */
static int marker_task(void *arg)
{
    cancel_ctx *c = arg;
    c->marker_rc = tw_reactor_call_from_thread(c->r, marker_back, c->r);
    return 0;
}

static void cancel_queued_start(void *arg)
{
    cancel_ctx *c = arg;
    tw_deferred *d;
    /* One thread, held by the blocker: the defer_to_thread task waits behind it. */
    if (tw_reactor_suggest_thread_pool_size(c->r, 1) != 0 ||
        tw_reactor_call_in_thread(c->r, blocker, c) != 0 ||
        tw_defer_to_thread(c->r, counted_fn, c, &d) != 0) {
        tw_reactor_stop(c->r);
        return;
    }
    tw_deferred_add_callbacks(d, cancel_cb, c, cancel_eb, c);
    tw_deferred_cancel(d);
    c->fired_at_once = tw_deferred_called(d);
    c->eb_at_once = c->eb_ran;
    tw_deferred_cancel(d); /* a second cancel changes nothing */
    tw_deferred_unref(d);
    tw_event_set(&c->gate);
    if (tw_reactor_call_in_thread(c->r, marker_task, c) != 0)
        tw_reactor_stop(c->r);
}

static void test_cancel_defer_to_thread_not_started(void **state)
{
    (void)state;
    cancel_ctx c = {0};
    c.blocker_rc = c.marker_rc = 99;
    c.r = new_reactor();
    tw_test_arm_watchdog(c.r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(c.r, cancel_queued_start, &c), 0);
    run_loop(c.r);
    assert_true(c.fired_at_once);
    assert_int_equal(c.eb_at_once, 1);
    assert_int_equal(c.eb_ran, 1);
    assert_int_equal(c.cb_ran, 0);
    assert_int_equal(c.eb_code, TW_ECANCELED);
    assert_rc(c.blocker_rc, 0);
    assert_rc(c.marker_rc, 0);
    assert_int_equal(__atomic_load_n(&c.fn_ran, __ATOMIC_RELAXED), 0);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void late_drop(void *p)
{
    cancel_ctx *c = p;
    c->drops++;
    c->drop_on_loop = on_loop();
}

static void do_cancel(void *arg)
{
    cancel_ctx *c = arg;
    tw_deferred_cancel(c->d);
    c->fired_at_once = tw_deferred_called(c->d);
    c->eb_at_once = c->eb_ran;
    tw_deferred_unref(c->d);
    c->d = NULL;
    tw_reactor_stop(c->r); /* shutdown still delivers (and drops) the late result */
}

static tw_result running_fn(void *arg, tw_cancel *cancel)
{
    cancel_ctx *c = arg;
    __atomic_fetch_add(&c->fn_ran, 1, __ATOMIC_RELAXED);
    c->requested_before = tw_cancel_requested(cancel);
    tw_reactor_call_from_thread(c->r, do_cancel, c); /* the loop cancels us now */
    double t0 = tw_test_now();
    c->wait_rc = tw_cancel_wait(cancel, LIMIT);
    c->waited = tw_test_now() - t0;
    c->requested_after = tw_cancel_requested(cancel);
    if (c->fail_late) {
        tw_failure *f = tw_failure_new(6000, "late failure");
        tw_failure_set_payload(f, c, late_drop);
        return tw_result_failure(f);
    }
    return tw_result_value(c, late_drop); /* counted when dropped */
}

static void run_cancel_running(bool fail_late)
{
    cancel_ctx c = {0};
    c.wait_rc = 99;
    c.fail_late = fail_late;
    c.r = new_reactor();
    tw_test_arm_watchdog(c.r, WATCHDOG);
    assert_rc(tw_defer_to_thread(c.r, running_fn, &c, &c.d), 0);
    assert_rc(tw_deferred_add_callbacks(c.d, cancel_cb, &c, cancel_eb, &c), 0);
    run_loop(c.r);
    assert_int_equal(__atomic_load_n(&c.fn_ran, __ATOMIC_RELAXED), 1);
    assert_false(c.requested_before);
    assert_rc(c.wait_rc, 0);
    assert_true(c.waited < LIMIT);
    assert_true(c.requested_after);
    assert_true(c.fired_at_once);
    assert_int_equal(c.eb_at_once, 1);
    assert_int_equal(c.eb_ran, 1); /* exactly once, with the cancellation */
    assert_int_equal(c.cb_ran, 0);
    assert_int_equal(c.eb_code, TW_ECANCELED);
    assert_int_equal(c.drops, 1); /* the late result was dropped */
    assert_true(c.drop_on_loop);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_cancel_defer_to_thread_running(void **state)
{
    (void)state;
    run_cancel_running(false);
}

static void test_cancel_defer_to_thread_running_late_failure(void **state)
{
    (void)state;
    run_cancel_running(true);
}

/* tw_cancel_wait times out while nobody cancels. */
typedef struct cwait_ctx {
    int rc;
    bool requested;
} cwait_ctx;

static tw_result cwait_fn(void *arg, tw_cancel *cancel)
{
    cwait_ctx *c = arg;
    c->rc = tw_cancel_wait(cancel, 0.001);
    c->requested = tw_cancel_requested(cancel);
    return tw_result_none();
}

static tw_result stop_cb(tw_result res, void *arg)
{
    tw_reactor_stop(arg);
    return res;
}

static void test_cancel_wait_times_out_without_cancel(void **state)
{
    (void)state;
    cwait_ctx c = {99, true};
    tw_reactor *r = new_reactor();
    tw_deferred *d;
    tw_test_arm_watchdog(r, WATCHDOG);
    assert_rc(tw_defer_to_thread(r, cwait_fn, &c, &d), 0);
    assert_rc(tw_deferred_add_both(d, stop_cb, r), 0);
    run_loop(r);
    tw_result res;
    assert_true(tw_deferred_peek(d, &res));
    assert_true(tw_result_is_value(res));
    tw_deferred_unref(d);
    assert_rc(c.rc, TW_ETIMEDOUT);
    assert_false(c.requested);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== blocking_call_from_thread ================================================ */

enum bc_kind {
    BC_VALUE,
    BC_FAILURE,
    BC_LATER_VALUE,
    BC_LATER_FAILURE,
    BC_FIRED_DEFERRED
};

typedef struct bc_ctx {
    tw_reactor *r;
    enum bc_kind kind;
    pthread_t th;
    int rc;
    tw_result out;
    int fn_ran;
    bool fn_on_loop;
    int timer_rc;
    tw_test_tally finished;
} bc_ctx;

static void fire_later(void *arg)
{
    tw_deferred *d = arg;
    char *egg = strdup("egg");
    tw_deferred_callback(d, tw_result_value(egg, free));
    tw_deferred_unref(d);
}

static void fail_later(void *arg)
{
    tw_deferred *d = arg;
    tw_deferred_errback(d, tw_failure_new(7007, "spam"));
    tw_deferred_unref(d);
}

static tw_result bc_fn(void *arg)
{
    bc_ctx *c = arg;
    tw_deferred *d;
    c->fn_ran++;
    c->fn_on_loop = on_loop();
    switch (c->kind) {
    case BC_VALUE:
        return tw_result_value(strdup("foo"), free);
    case BC_FAILURE:
        return tw_result_fail(7001, "bar");
    case BC_LATER_VALUE:
    case BC_LATER_FAILURE:
        if (tw_deferred_create(&d, NULL, NULL) != 0)
            return tw_result_fail(TW_ENOMEM, NULL);
        /* The timer holds one reference; the result takes the other. */
        c->timer_rc = tw_reactor_call_later(c->r, 0.01,
                                            c->kind == BC_LATER_VALUE ? fire_later : fail_later,
                                            tw_deferred_ref(d), NULL);
        return tw_result_deferred(d);
    case BC_FIRED_DEFERRED:
        if (tw_deferred_succeed(&d, strdup("ham"), free) != 0)
            return tw_result_fail(TW_ENOMEM, NULL);
        return tw_result_deferred(d);
    }
    return tw_result_none();
}

static void *bc_thread(void *arg)
{
    bc_ctx *c = arg;
    c->rc = tw_blocking_call_from_thread(c->r, bc_fn, c, &c->out);
    tw_reactor_stop(c->r);
    tw_test_tally_add(&c->finished);
    return NULL;
}

static void bc_start(void *arg)
{
    bc_ctx *c = arg;
    c->th = tw_test_start(bc_thread, c);
}

static void run_bc(bc_ctx *c, enum bc_kind kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->rc = 99;
    c->timer_rc = 0;
    tw_test_tally_init(&c->finished);
    c->r = new_reactor();
    tw_test_arm_watchdog(c->r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(c->r, bc_start, c), 0);
    run_loop(c->r);
    tw_test_must_reach(&c->finished, 1, LIMIT, "a blocking call that must return");
    tw_test_join(c->th);
    tw_test_tally_destroy(&c->finished);
    assert_int_equal(c->fn_ran, 1);
    assert_true(c->fn_on_loop);
    assert_rc(c->timer_rc, 0);
    assert_rc(c->rc, 0);
}

static void expect_str_result(tw_result r, const char *want)
{
    assert_true(tw_result_is_value(r));
    assert_non_null(r.ptr);
    assert_string_equal((const char *)r.ptr, want);
    tw_result_drop(r);
}

static void expect_fail_result(tw_result r, int code, const char *msg)
{
    assert_true(tw_result_is_failure(r));
    assert_int_equal(tw_failure_code(tw_result_as_failure(r)), code);
    assert_string_equal(tw_failure_message(tw_result_as_failure(r)), msg);
    tw_result_drop(r);
}

static void test_blocking_call_value(void **state)
{
    (void)state;
    bc_ctx c;
    run_bc(&c, BC_VALUE);
    expect_str_result(c.out, "foo");
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_blocking_call_failure(void **state)
{
    (void)state;
    bc_ctx c;
    run_bc(&c, BC_FAILURE);
    expect_fail_result(c.out, 7001, "bar");
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_blocking_call_deferred_fired_later(void **state)
{
    (void)state;
    bc_ctx c;
    run_bc(&c, BC_LATER_VALUE);
    expect_str_result(c.out, "egg");
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_blocking_call_deferred_failed_later(void **state)
{
    (void)state;
    bc_ctx c;
    run_bc(&c, BC_LATER_FAILURE);
    expect_fail_result(c.out, 7007, "spam");
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_blocking_call_deferred_already_fired(void **state)
{
    (void)state;
    bc_ctx c;
    run_bc(&c, BC_FIRED_DEFERRED);
    expect_str_result(c.out, "ham");
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* On the loop thread: TW_EDEADLK at once (Twisted hangs). */
static int deadlk_calls;
static tw_result deadlk_fn(void *arg)
{
    (void)arg;
    deadlk_calls++;
    return tw_result_none();
}

typedef struct deadlk_ctx {
    tw_reactor *r;
    int rc_running, rc_timer;
    tw_result out;
} deadlk_ctx;

static void deadlk_running(void *arg)
{
    deadlk_ctx *c = arg;
    c->rc_running = tw_blocking_call_from_thread(c->r, deadlk_fn, NULL, &c->out);
}

static void deadlk_timer(void *arg)
{
    deadlk_ctx *c = arg;
    c->rc_timer = tw_blocking_call_from_thread(c->r, deadlk_fn, NULL, &c->out);
    tw_reactor_stop(c->r);
}

static void test_blocking_call_on_loop_thread_edeadlk(void **state)
{
    (void)state;
    deadlk_ctx c = {0};
    c.rc_running = c.rc_timer = 99;
    deadlk_calls = 0;
    c.r = new_reactor();
    /* Before run, the creating thread is the loop thread. */
    assert_rc(tw_blocking_call_from_thread(c.r, deadlk_fn, NULL, &c.out), TW_EDEADLK);
    tw_test_arm_watchdog(c.r, WATCHDOG);
    assert_rc(tw_reactor_call_when_running(c.r, deadlk_running, &c), 0);
    assert_rc(tw_reactor_call_later(c.r, 0.0, deadlk_timer, &c, NULL), 0);
    run_loop(c.r);
    assert_rc(c.rc_running, TW_EDEADLK);
    assert_rc(c.rc_timer, TW_EDEADLK);
    assert_int_equal(deadlk_calls, 0);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* While a before-shutdown trigger's Deferred holds shutdown, the loop still
 * serves blocking calls: the trigger's helper thread makes one that fires it. */
typedef struct hold_ctx {
    tw_reactor *r;
    tw_deferred *hold;
    pthread_t th;
    int rc;
    tw_result out;
    int fn_ran;
} hold_ctx;

static tw_result hold_fn(void *arg)
{
    hold_ctx *c = arg;
    c->fn_ran++;
    tw_deferred_callback(c->hold, tw_result_none()); /* releases shutdown */
    return tw_result_value(strdup("held"), free);
}

static void *hold_thread(void *arg)
{
    hold_ctx *c = arg;
    c->rc = tw_blocking_call_from_thread(c->r, hold_fn, c, &c->out);
    return NULL;
}

static tw_result hold_trigger(void *arg)
{
    hold_ctx *c = arg;
    if (tw_deferred_create(&c->hold, NULL, NULL) != 0)
        return tw_result_none();
    c->th = tw_test_start(hold_thread, c);
    return tw_result_deferred(tw_deferred_ref(c->hold));
}

static void test_blocking_call_served_during_before_phase(void **state)
{
    (void)state;
    hold_ctx c = {0};
    c.rc = 99;
    c.r = new_reactor();
    tw_test_arm_watchdog(c.r, WATCHDOG);
    assert_rc(tw_reactor_add_trigger(c.r, TW_BEFORE_SHUTDOWN, hold_trigger, &c, NULL), 0);
    assert_rc(tw_reactor_stop(c.r), 0);
    run_loop(c.r);
    tw_test_join(c.th);
    assert_int_equal(c.fn_ran, 1);
    assert_rc(c.rc, 0);
    expect_str_result(c.out, "held");
    assert_true(tw_deferred_called(c.hold));
    tw_deferred_unref(c.hold);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* Twisted #10124: a defer_to_thread task waits for an Event that shutdown
 * sets, then makes a blocking call. Twisted hangs in the pool's join. Here
 * the call is refused (the during phase is reached), the task ends, and its
 * result is still delivered while the pool stops. */
typedef struct t10124 {
    tw_reactor *r;
    tw_event gate;
    int gate_rc;
    int bc_rc;
    tw_result out;
    int fn_ran;
    bool fn_on_loop;
    int cb_ran, eb_ran;
    int value;
    int set_in_phase; /* which trigger sets the gate */
} t10124;

static tw_result t10124_bc_fn(void *arg)
{
    t10124 *c = arg;
    c->fn_ran++;
    c->fn_on_loop = on_loop();
    return tw_result_none();
}

static tw_result t10124_task(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    t10124 *c = arg;
    c->gate_rc = tw_event_wait_timeout(&c->gate, LIMIT);
    c->bc_rc = tw_blocking_call_from_thread(c->r, t10124_bc_fn, c, &c->out);
    if (c->bc_rc == 0)
        tw_result_drop(c->out);
    return tw_result_value(new_int(10124), free_int_drop);
}

static tw_result t10124_trigger(void *arg)
{
    tw_event_set(&((t10124 *)arg)->gate);
    return tw_result_none();
}

static tw_result t10124_cb(tw_result res, void *arg)
{
    t10124 *c = arg;
    c->cb_ran++;
    c->value = res.ptr ? *(int *)res.ptr : -1;
    tw_result_drop(res);
    return tw_result_none();
}

static tw_result t10124_eb(tw_result res, void *arg)
{
    t10124 *c = arg;
    c->eb_ran++;
    tw_result_drop(res);
    return tw_result_none();
}

static void run_10124(t10124 *c, enum tw_trigger_phase phase)
{
    tw_deferred *d;
    memset(c, 0, sizeof *c);
    c->gate_rc = c->bc_rc = 99;
    c->r = new_reactor();
    tw_test_arm_watchdog(c->r, WATCHDOG);
    assert_rc(tw_defer_to_thread(c->r, t10124_task, c, &d), 0);
    assert_rc(tw_deferred_add_callbacks(d, t10124_cb, c, t10124_eb, c), 0);
    tw_deferred_unref(d);
    assert_rc(tw_reactor_add_trigger(c->r, phase, t10124_trigger, c, NULL), 0);
    assert_rc(tw_reactor_call_later(c->r, 0.0, call_stop, c->r, NULL), 0);
    run_loop(c->r); /* returns: no hang */
    assert_rc(c->gate_rc, 0);
    assert_int_equal(c->cb_ran, 1);
    assert_int_equal(c->eb_ran, 0);
    assert_int_equal(c->value, 10124);
}

static void test_blocking_call_in_shutdown_10124_during(void **state)
{
    (void)state;
    t10124 c;
    run_10124(&c, TW_DURING_SHUTDOWN);
    assert_rc(c.bc_rc, TW_ESHUTDOWN);
    assert_int_equal(c.fn_ran, 0);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_blocking_call_in_shutdown_10124_before(void **state)
{
    (void)state;
    t10124 c;
    run_10124(&c, TW_BEFORE_SHUTDOWN);
    /* Either it got in before the during phase, or it was refused. */
    if (c.bc_rc == 0) {
        assert_int_equal(c.fn_ran, 1);
        assert_true(c.fn_on_loop);
    } else {
        assert_rc(c.bc_rc, TW_ESHUTDOWN);
        assert_int_equal(c.fn_ran, 0);
    }
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* A blocking call still waiting (on a Deferred that has not fired) when
 * shutdown reaches the during phase is released with TW_ESHUTDOWN. */
typedef struct pend_ctx {
    tw_reactor *r;
    tw_deferred *d; /* the Deferred the blocking call waits on */
    int rc;
    tw_result out;
    int fn_ran;
    bool from_pool;
    bool phase_during_seen_release; /* the call had returned by the during trigger */
    int returned;                   /* atomic */
    pthread_t th;
    tw_test_tally finished;
} pend_ctx;

static tw_result pend_fn(void *arg)
{
    pend_ctx *c = arg;
    c->fn_ran++;
    if (tw_deferred_create(&c->d, NULL, NULL) != 0)
        return tw_result_fail(TW_ENOMEM, NULL);
    tw_reactor_stop(c->r); /* shutdown begins while the call waits */
    return tw_result_deferred(tw_deferred_ref(c->d));
}

static int pend_task(void *arg)
{
    pend_ctx *c = arg;
    c->rc = tw_blocking_call_from_thread(c->r, pend_fn, c, &c->out);
    __atomic_store_n(&c->returned, 1, __ATOMIC_RELEASE);
    tw_test_tally_add(&c->finished);
    return 0;
}

static void *pend_thread(void *arg)
{
    pend_task(arg);
    return NULL;
}

static void pend_start(void *arg)
{
    pend_ctx *c = arg;
    if (c->from_pool) {
        if (tw_reactor_call_in_thread(c->r, pend_task, c) != 0)
            tw_reactor_stop(c->r);
    } else {
        c->th = tw_test_start(pend_thread, c);
    }
}

static tw_result pend_during(void *arg)
{
    pend_ctx *c = arg;
    /* Released at the start of the during phase: give the thread its time. */
    if (!c->from_pool) {
        tw_test_must_reach(&c->finished, 1, LIMIT, "a blocking call released at shutdown");
        c->phase_during_seen_release = __atomic_load_n(&c->returned, __ATOMIC_ACQUIRE) != 0;
    }
    return tw_result_none();
}

static void run_pend(pend_ctx *c, bool from_pool)
{
    memset(c, 0, sizeof *c);
    c->rc = 99;
    c->from_pool = from_pool;
    tw_test_tally_init(&c->finished);
    c->r = new_reactor();
    tw_test_arm_watchdog(c->r, WATCHDOG);
    assert_rc(tw_reactor_add_trigger(c->r, TW_DURING_SHUTDOWN, pend_during, c, NULL), 0);
    assert_rc(tw_reactor_call_when_running(c->r, pend_start, c), 0);
    run_loop(c->r); /* returns: the pool's stop was not held by the waiting thread */
    tw_test_must_reach(&c->finished, 1, LIMIT, "a blocking call released at shutdown");
    if (!from_pool) {
        tw_test_join(c->th);
        assert_true(c->phase_during_seen_release);
    }
    tw_test_tally_destroy(&c->finished);
    assert_int_equal(c->fn_ran, 1);
    assert_rc(c->rc, TW_ESHUTDOWN);
    assert_non_null(c->d);
    assert_false(tw_deferred_called(c->d));
}

static void test_blocking_call_waiting_released_fired_late(void **state)
{
    (void)state;
    pend_ctx c;
    run_pend(&c, true); /* from a pool thread: #10124's shape */
    /* Fired after run returned: the result finds its waiter gone, and is dropped. */
    assert_rc(tw_deferred_callback(c.d, tw_result_value(strdup("too late"), free)), 0);
    tw_deferred_unref(c.d);
    assert_rc(tw_reactor_destroy(c.r), 0);
}

static void test_blocking_call_waiting_released_abandoned(void **state)
{
    (void)state;
    pend_ctx c;
    run_pend(&c, false); /* from a plain thread */
    tw_deferred_unref(c.d); /* never fired: abandoned, quietly */
    assert_rc(tw_reactor_destroy(c.r), 0);
}

/* After shutdown: refused at once, fn never runs. */
typedef struct after_bc {
    tw_reactor *r;
    int rc;
    tw_result out;
} after_bc;

static void *after_bc_thread(void *arg)
{
    after_bc *a = arg;
    a->rc = tw_blocking_call_from_thread(a->r, deadlk_fn, NULL, &a->out);
    return NULL;
}

static void test_blocking_call_after_shutdown(void **state)
{
    (void)state;
    after_bc a = {0};
    a.rc = 99;
    deadlk_calls = 0;
    a.r = new_reactor();
    assert_rc(tw_reactor_stop(a.r), 0);
    run_loop(a.r);
    tw_test_join(tw_test_start(after_bc_thread, &a));
    assert_rc(a.rc, TW_ESHUTDOWN);
    assert_int_equal(deadlk_calls, 0);
    assert_rc(tw_reactor_destroy(a.r), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_call_from_thread_runs_on_loop),
        T(test_call_from_thread_fifo_per_thread),
        T(test_call_from_thread_ring_full_then_laps),
        T(test_post_caller_nodes_freed_in_fn),
        T(test_post_node_reused),
        T(test_post_before_run_runs),
        T(test_post_after_shutdown_refused),
        T(test_calls_accepted_during_shutdown_run),
        T(test_pool_created_on_first_use_default_limit),
        T(test_suggest_pool_size_before_and_after_creation),
        T(test_pool_functions_after_shutdown),
        T(test_call_in_thread_off_loop),
        T(test_call_in_thread_error_reported),
        T(test_call_multiple_in_thread_one_thread_in_order),
        T(test_defer_to_thread_value),
        T(test_defer_to_thread_failure),
        T(test_defer_to_thread_loop_serves_timers_and_calls_meanwhile),
        T(test_defer_to_thread_chain_fds_served),
        T(test_defer_to_thread_pool_user_pool),
        T(test_cancel_defer_to_thread_not_started),
        T(test_cancel_defer_to_thread_running),
        T(test_cancel_defer_to_thread_running_late_failure),
        T(test_cancel_wait_times_out_without_cancel),
        T(test_blocking_call_value),
        T(test_blocking_call_failure),
        T(test_blocking_call_deferred_fired_later),
        T(test_blocking_call_deferred_failed_later),
        T(test_blocking_call_deferred_already_fired),
        T(test_blocking_call_on_loop_thread_edeadlk),
        T(test_blocking_call_served_during_before_phase),
        T(test_blocking_call_in_shutdown_10124_during),
        T(test_blocking_call_in_shutdown_10124_before),
        T(test_blocking_call_waiting_released_fired_late),
        T(test_blocking_call_waiting_released_abandoned),
        T(test_blocking_call_after_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
