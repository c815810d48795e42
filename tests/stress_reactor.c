/*
 * Stress for the reactor's thread bridge.
 *
 *   posts       10^6 calls (scaled by TW_TEST_SCALE) from four threads into a
 *               running loop, through tw_reactor_call_from_thread, and again
 *               through tw_reactor_post with the posters' own nodes: every
 *               call runs once, on the loop thread, in its thread's order
 *               (per-thread sequence numbers checked as they arrive).
 *   round trips 10^5 defer_to_thread round trips: the thread function returns
 *               arg * 2, a callback on the loop checks it and issues the next;
 *               one in flight, then eight lanes in flight at once.
 *   stop race   four threads post as fast as they can while the loop stops
 *               (from a posted call, from another thread, from a timer):
 *               every post either returned 0 and ran exactly once, or
 *               returned TW_ESHUTDOWN and never ran. Both sides are counted.
 *   endless     the same with posters that only stop when refused: shutdown
 *               must complete while they are still posting (each poster must
 *               be refused long before a generous cap).
 *
 * Sizes go through tw_test_scaled; the checks never change. Posting threads
 * never call cmocka: they record, the main thread (which runs every loop)
 * asserts after joining them. A 120 s watchdog timer ends a run whose own
 * stop never comes.
 */
#include "harness.h"

#include <twine/reactor.h>

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POSTERS 4
#define WATCHDOG 120.0

static void report(const char *what, uint64_t n, double t0)
{
    double dt = tw_test_now() - t0;
    printf("    %-34s %10llu  %7.3f s  %10.0f /s\n", what, (unsigned long long)n, dt,
           dt > 0 ? (double)n / dt : 0.0);
}

static pthread_t loop_thread;

static tw_reactor *new_reactor(void)
{
    tw_reactor *r = NULL;
    assert_rc(tw_reactor_create(&r), 0);
    tw_test_arm_watchdog(r, WATCHDOG);
    return r;
}

/* ==== (a) a million posts, in per-thread order ================================== */

#define SEQ_BITS 40
#define SEQ_MASK ((UINT64_C(1) << SEQ_BITS) - 1)

typedef struct seq_node {
    tw_call call;
    uint64_t tag;
} seq_node;

typedef struct flood {
    tw_reactor *r;
    uint64_t per;           /* calls per poster */
    uint64_t next[POSTERS]; /* loop side: the sequence number expected next */
    uint64_t delivered, out_of_order, wrong_thread;
    bool use_nodes;
    tw_event go;
    pthread_t th[POSTERS];
} flood;

typedef struct flood_poster {
    flood *f;
    int id;
    uint64_t bad;
    seq_node *nodes; /* use_nodes: one per call */
} flood_poster;

static flood *the_flood; /* the loop-side calls' context */
static flood_poster flood_posters[POSTERS];

static void flood_check(uint64_t tag)
{
    flood *f = the_flood;
    unsigned t = (unsigned)(tag >> SEQ_BITS);
    uint64_t seq = tag & SEQ_MASK;
    if (t >= POSTERS || f->next[t] != seq)
        f->out_of_order++;
    if (t < POSTERS)
        f->next[t] = seq + 1;
    if (!pthread_equal(pthread_self(), loop_thread))
        f->wrong_thread++;
    if (++f->delivered == f->per * POSTERS)
        tw_reactor_stop(f->r);
}

static void flood_call(void *arg)
{
    flood_check((uint64_t)(uintptr_t)arg);
}

static void flood_node_call(void *arg)
{
    flood_check(((seq_node *)arg)->tag);
}

static void *flood_post(void *arg)
{
    flood_poster *p = arg;
    flood *f = p->f;
    tw_event_wait_timeout(&f->go, 10.0);
    for (uint64_t i = 0; i < f->per; i++) {
        uint64_t tag = ((uint64_t)p->id << SEQ_BITS) | i;
        int rc;
        if (f->use_nodes) {
            seq_node *n = &p->nodes[i];
            n->call = (tw_call)TW_CALL_INIT(flood_node_call, n);
            n->tag = tag;
            rc = tw_reactor_post(f->r, &n->call);
        } else {
            rc = tw_reactor_call_from_thread(f->r, flood_call, (void *)(uintptr_t)tag);
        }
        if (rc != 0)
            p->bad++;
    }
    return NULL;
}

static void flood_start(void *arg)
{
    flood *f = arg;
    for (int i = 0; i < POSTERS; i++)
        f->th[i] = tw_test_start(flood_post, &flood_posters[i]);
    tw_event_set(&f->go);
}

static void run_flood(bool use_nodes)
{
    uint64_t total = tw_test_scaled(1000000, 10000);
    flood *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->per = total / POSTERS;
    f->use_nodes = use_nodes;
    f->r = new_reactor();
    the_flood = f;
    loop_thread = pthread_self();
    for (int i = 0; i < POSTERS; i++) {
        flood_posters[i].f = f;
        flood_posters[i].id = i;
        flood_posters[i].bad = 0;
        flood_posters[i].nodes = NULL;
        if (use_nodes) {
            flood_posters[i].nodes = calloc(f->per, sizeof(seq_node));
            assert_non_null(flood_posters[i].nodes);
        }
    }
    assert_rc(tw_reactor_call_when_running(f->r, flood_start, f), 0);
    double t0 = tw_test_now();
    assert_rc(tw_reactor_run(f->r), 0);
    for (int i = 0; i < POSTERS; i++)
        tw_test_join(f->th[i]);
    report(use_nodes ? "posts, caller nodes, 4 threads" : "call_from_thread, 4 threads",
           f->delivered, t0);
    assert_false(tw_test_watchdog_fired());
    for (int i = 0; i < POSTERS; i++) {
        assert_int_equal(flood_posters[i].bad, 0);
        assert_int_equal(f->next[i], f->per);
        free(flood_posters[i].nodes);
    }
    assert_int_equal(f->out_of_order, 0);
    assert_int_equal(f->wrong_thread, 0);
    assert_int_equal(f->delivered, f->per * POSTERS);
    assert_rc(tw_reactor_destroy(f->r), 0);
    free(f);
}

static void test_stress_call_from_thread_order(void **state)
{
    (void)state;
    run_flood(false);
}

static void test_stress_post_nodes_order(void **state)
{
    (void)state;
    run_flood(true);
}

/* ==== (b) defer_to_thread round trips =========================================== */

typedef struct trips trips;
typedef struct lane {
    trips *t;
    uint64_t next_arg; /* the argument of the call in flight */
    uint64_t done;
} lane;

#define MAX_LANES 8

struct trips {
    tw_reactor *r;
    uint64_t per_lane;
    int lanes, lanes_done;
    uint64_t completed, wrong, failures, issue_errors, wrong_thread;
    lane lane[MAX_LANES];
};

static tw_result times_two(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    return tw_result_value((void *)((uintptr_t)arg * 2), NULL);
}

static tw_result trip_cb(tw_result res, void *arg);
static tw_result trip_eb(tw_result res, void *arg);

static void lane_issue(lane *l)
{
    trips *t = l->t;
    tw_deferred *d;
    int rc = tw_defer_to_thread(t->r, times_two, (void *)(uintptr_t)l->next_arg, &d);
    if (rc == 0)
        rc = tw_deferred_add_callbacks(d, trip_cb, l, trip_eb, l);
    if (rc != 0) {
        t->issue_errors++;
        tw_reactor_stop(t->r);
        return;
    }
    tw_deferred_unref(d);
}

static void lane_finish(lane *l)
{
    trips *t = l->t;
    if (++t->lanes_done == t->lanes)
        tw_reactor_stop(t->r);
}

static tw_result trip_cb(tw_result res, void *arg)
{
    lane *l = arg;
    trips *t = l->t;
    if ((uintptr_t)res.ptr != l->next_arg * 2)
        t->wrong++;
    if (!pthread_equal(pthread_self(), loop_thread))
        t->wrong_thread++;
    tw_result_drop(res);
    t->completed++;
    l->done++;
    /* Arguments differ per lane and per call: lane i issues i, i + L, i + 2L... */
    l->next_arg += (uint64_t)t->lanes;
    if (l->done < t->per_lane)
        lane_issue(l);
    else
        lane_finish(l);
    return tw_result_none();
}

static tw_result trip_eb(tw_result res, void *arg)
{
    lane *l = arg;
    l->t->failures++;
    tw_result_drop(res);
    tw_reactor_stop(l->t->r);
    return tw_result_none();
}

static void trips_start(void *arg)
{
    trips *t = arg;
    for (int i = 0; i < t->lanes; i++)
        lane_issue(&t->lane[i]);
}

static void run_trips(int lanes)
{
    uint64_t total = tw_test_scaled(100000, 2000);
    trips t;
    memset(&t, 0, sizeof t);
    t.lanes = lanes;
    t.per_lane = total / (uint64_t)lanes;
    t.r = new_reactor();
    loop_thread = pthread_self();
    for (int i = 0; i < lanes; i++) {
        t.lane[i].t = &t;
        t.lane[i].next_arg = (uint64_t)i + 1;
    }
    assert_rc(tw_reactor_call_when_running(t.r, trips_start, &t), 0);
    double t0 = tw_test_now();
    assert_rc(tw_reactor_run(t.r), 0);
    char what[64];
    snprintf(what, sizeof what, "defer_to_thread, %d in flight", lanes);
    report(what, t.completed, t0);
    assert_false(tw_test_watchdog_fired());
    assert_int_equal(t.issue_errors, 0);
    assert_int_equal(t.failures, 0);
    assert_int_equal(t.wrong, 0);
    assert_int_equal(t.wrong_thread, 0);
    assert_int_equal(t.completed, t.per_lane * (uint64_t)lanes);
    for (int i = 0; i < lanes; i++)
        assert_int_equal(t.lane[i].done, t.per_lane);
    assert_rc(tw_reactor_destroy(t.r), 0);
}

static void test_stress_defer_to_thread_one(void **state)
{
    (void)state;
    run_trips(1);
}

static void test_stress_defer_to_thread_eight(void **state)
{
    (void)state;
    run_trips(8);
}

/* ==== (c) stop under load ======================================================= */

enum { STOP_FROM_CALL = 0, STOP_FROM_THREAD = 1, STOP_FROM_TIMER = 2 };

typedef struct race {
    tw_reactor *r;
    uint64_t cap;       /* posts per poster at most */
    uint64_t threshold; /* delivered (or accepted) calls before the stop */
    int how;
    uint64_t delivered;     /* loop side */
    uint64_t accepted;      /* atomic: posts that returned 0 so far */
    tw_event go;
} race;

typedef struct racer {
    race *rc_;
    uint64_t submitted;
    int *rc;
    uint32_t *ran; /* loop side, per post */
    uint64_t bad;  /* codes other than 0 / TW_ESHUTDOWN, or a post accepted after a refusal */
} racer;

static race *the_race;
static racer racers[POSTERS];

static void race_call(void *arg)
{
    uint32_t *ran = arg;
    (*ran)++;
    race *rc = the_race;
    if (++rc->delivered == rc->threshold && rc->how == STOP_FROM_CALL)
        tw_reactor_stop(rc->r);
}

static void *race_post(void *arg)
{
    racer *p = arg;
    race *ra = p->rc_;
    tw_event_wait_timeout(&ra->go, 10.0);
    uint64_t i;
    for (i = 0; i < ra->cap; i++) {
        int rc = tw_reactor_call_from_thread(ra->r, race_call, &p->ran[i]);
        p->rc[i] = rc;
        if (rc == TW_ESHUTDOWN) {
            i++;
            break;
        }
        if (rc != 0)
            p->bad++;
        else
            __atomic_fetch_add(&ra->accepted, 1, __ATOMIC_RELAXED);
    }
    /* Once refused, always refused. */
    for (int k = 0; k < 3 && i < ra->cap && p->rc[i - 1] == TW_ESHUTDOWN; k++, i++) {
        p->rc[i] = tw_reactor_call_from_thread(ra->r, race_call, &p->ran[i]);
        if (p->rc[i] != TW_ESHUTDOWN)
            p->bad++;
    }
    p->submitted = i;
    return NULL;
}

static void *race_stopper(void *arg)
{
    race *ra = arg;
    double end = tw_test_now() + 30.0;
    while (__atomic_load_n(&ra->accepted, __ATOMIC_RELAXED) < ra->threshold &&
           tw_test_now() < end)
        sched_yield();
    tw_reactor_stop(ra->r);
    return NULL;
}

static void race_timer_stop(void *arg)
{
    tw_reactor_stop(arg);
}

typedef struct race_launch {
    race *ra;
    pthread_t th[POSTERS + 1];
    int nthreads;
} race_launch;

static void race_start(void *arg)
{
    race_launch *l = arg;
    race *ra = l->ra;
    l->nthreads = 0;
    for (int i = 0; i < POSTERS; i++)
        l->th[l->nthreads++] = tw_test_start(race_post, &racers[i]);
    if (ra->how == STOP_FROM_THREAD)
        l->th[l->nthreads++] = tw_test_start(race_stopper, ra);
    else if (ra->how == STOP_FROM_TIMER)
        tw_reactor_call_later(ra->r, 0.001 * (double)(ra->threshold % 5), race_timer_stop, ra->r,
                              NULL);
    tw_event_set(&ra->go);
}

static void test_stress_stop_under_load(void **state)
{
    (void)state;
    uint64_t rounds = tw_test_scaled(30, 6);
    uint64_t cap = tw_test_scaled(1 << 18, 1 << 13);
    uint64_t accepted_total = 0, refused_total = 0, delivered_total = 0;
    char problem[400] = "";
    for (int i = 0; i < POSTERS; i++) {
        racers[i].rc = calloc(cap, sizeof *racers[i].rc);
        racers[i].ran = calloc(cap, sizeof *racers[i].ran);
        assert_non_null(racers[i].rc);
        assert_non_null(racers[i].ran);
    }
    loop_thread = pthread_self();
    double t0 = tw_test_now();
    for (uint64_t round = 0; round < rounds && !problem[0]; round++) {
        race ra;
        race_launch launch;
        memset(&ra, 0, sizeof ra);
        memset(&launch, 0, sizeof launch);
        ra.r = new_reactor();
        ra.cap = cap;
        ra.how = (int)(round % 3);
        /* From "at once" to an eighth of one poster's capacity. */
        ra.threshold = 1 + (round * 7919) % (cap / 8);
        launch.ra = &ra;
        the_race = &ra;
        for (int i = 0; i < POSTERS; i++) {
            memset(racers[i].rc, 0, cap * sizeof *racers[i].rc);
            memset(racers[i].ran, 0, cap * sizeof *racers[i].ran);
            racers[i].rc_ = &ra;
            racers[i].submitted = 0;
            racers[i].bad = 0;
        }
        assert_rc(tw_reactor_call_when_running(ra.r, race_start, &launch), 0);
        assert_rc(tw_reactor_run(ra.r), 0);
        for (int i = 0; i < launch.nthreads; i++)
            tw_test_join(launch.th[i]);
        if (tw_test_watchdog_fired())
            snprintf(problem, sizeof problem, "round %llu: the loop never stopped",
                     (unsigned long long)round);
        uint64_t accepted = 0;
        for (int i = 0; i < POSTERS && !problem[0]; i++) {
            racer *p = &racers[i];
            if (p->bad)
                snprintf(problem, sizeof problem,
                         "round %llu: poster %d: %llu unexpected codes (or accepted after a "
                         "refusal)",
                         (unsigned long long)round, i, (unsigned long long)p->bad);
            for (uint64_t k = 0; k < p->submitted && !problem[0]; k++) {
                if ((p->rc[k] == 0 && p->ran[k] != 1) ||
                    (p->rc[k] == TW_ESHUTDOWN && p->ran[k] != 0))
                    snprintf(problem, sizeof problem,
                             "round %llu: poster %d call %llu %s, but ran %u time(s)",
                             (unsigned long long)round, i, (unsigned long long)k,
                             p->rc[k] == 0 ? "accepted" : "refused", p->ran[k]);
                accepted += p->rc[k] == 0;
                refused_total += p->rc[k] == TW_ESHUTDOWN;
            }
            for (uint64_t k = p->submitted; k < cap && !problem[0]; k++)
                if (p->ran[k] != 0)
                    snprintf(problem, sizeof problem, "round %llu: a call never posted ran",
                             (unsigned long long)round);
        }
        if (!problem[0] && accepted != ra.delivered)
            snprintf(problem, sizeof problem,
                     "round %llu: %llu posts accepted but %llu calls ran",
                     (unsigned long long)round, (unsigned long long)accepted,
                     (unsigned long long)ra.delivered);
        accepted_total += accepted;
        delivered_total += ra.delivered;
        assert_rc(tw_reactor_destroy(ra.r), 0);
    }
    report("posts racing stop (accepted)", accepted_total, t0);
    printf("    %llu rounds, %llu accepted and run, %llu refused with TW_ESHUTDOWN\n",
           (unsigned long long)rounds, (unsigned long long)delivered_total,
           (unsigned long long)refused_total);
    for (int i = 0; i < POSTERS; i++) {
        free(racers[i].rc);
        free(racers[i].ran);
    }
    if (problem[0])
        fail_msg("%s", problem);
}

/* ---- the same, with posters that never run out of work --------------------------
 * Shutdown must complete while threads keep posting: the posters stop only
 * when they are refused (or, to keep a failing run finite, when they reach a
 * cap far beyond what a bounded shutdown lets them post). A poster that
 * reaches the cap means run() did not return until the posters ran dry. */

typedef struct flow {
    tw_reactor *r;
    uint64_t cap, threshold;
    uint64_t delivered, after_stop; /* loop side */
    double t_stop;
    tw_event go;
} flow;

typedef struct flow_poster {
    flow *f;
    uint64_t accepted;
    int last_rc;
    bool hit_cap;
} flow_poster;

static flow *the_flow;
static flow_poster flow_posters[POSTERS];

static void flow_call(void *arg)
{
    (void)arg;
    flow *f = the_flow;
    if (f->t_stop > 0)
        f->after_stop++;
    if (++f->delivered == f->threshold) {
        f->t_stop = tw_test_now();
        tw_reactor_stop(f->r);
    }
}

static void *flow_post(void *arg)
{
    flow_poster *p = arg;
    flow *f = p->f;
    tw_event_wait_timeout(&f->go, 10.0);
    p->last_rc = 0;
    while (p->accepted < f->cap) {
        p->last_rc = tw_reactor_call_from_thread(f->r, flow_call, NULL);
        if (p->last_rc != 0)
            break;
        p->accepted++;
    }
    p->hit_cap = p->last_rc == 0;
    return NULL;
}

static void test_stress_stop_under_endless_load(void **state)
{
    (void)state;
    uint64_t rounds = tw_test_scaled(100, 10);
    /* No cap in practice: posters post until they are refused. A finite cap
     * let a poster run out of work while the loop was starved of CPU (a
     * loaded CI machine), which looked like a shutdown that never ended;
     * a shutdown that really never ends is caught by the watchdog. */
    uint64_t cap = UINT64_MAX;
    char problem[512] = "";
    double t0 = tw_test_now();
    uint64_t total = 0;
    loop_thread = pthread_self();
    for (uint64_t round = 0; round < rounds && !problem[0]; round++) {
        flow f;
        pthread_t th[POSTERS];
        memset(&f, 0, sizeof f);
        f.r = new_reactor();
        f.cap = cap;
        f.threshold = 1000 * (round + 1);
        the_flow = &f;
        for (int i = 0; i < POSTERS; i++) {
            memset(&flow_posters[i], 0, sizeof flow_posters[i]);
            flow_posters[i].f = &f;
            th[i] = tw_test_start(flow_post, &flow_posters[i]);
        }
        tw_event_set(&f.go);
        assert_rc(tw_reactor_run(f.r), 0);
        double t_ret = tw_test_now();
        for (int i = 0; i < POSTERS; i++)
            tw_test_join(th[i]);
        uint64_t accepted = 0;
        int capped = 0;
        for (int i = 0; i < POSTERS; i++) {
            accepted += flow_posters[i].accepted;
            if (flow_posters[i].hit_cap)
                capped++;
            else if (flow_posters[i].last_rc != TW_ESHUTDOWN && !problem[0])
                snprintf(problem, sizeof problem, "round %llu: poster %d refused with %s",
                         (unsigned long long)round, i, tw_err_name(flow_posters[i].last_rc));
        }
        total += f.delivered;
        if (tw_test_watchdog_fired() && !problem[0])
            snprintf(problem, sizeof problem, "round %llu: the loop never stopped",
                     (unsigned long long)round);
        if (accepted != f.delivered && !problem[0])
            snprintf(problem, sizeof problem, "round %llu: %llu posts accepted but %llu ran",
                     (unsigned long long)round, (unsigned long long)accepted,
                     (unsigned long long)f.delivered);
        if (capped && !problem[0])
            snprintf(problem, sizeof problem,
                     "round %llu: shutdown did not complete while threads kept posting: run() "
                     "returned %.3f s after the stop, having run %llu calls posted after it, "
                     "only once %d of %d posters had run out of work (%llu calls each)",
                     (unsigned long long)round, t_ret - f.t_stop,
                     (unsigned long long)f.after_stop, capped, POSTERS,
                     (unsigned long long)cap);
        assert_rc(tw_reactor_destroy(f.r), 0);
    }
    report("endless posters, stop (run)", total, t0);
    if (problem[0])
        fail_msg("%s", problem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_call_from_thread_order),
        cmocka_unit_test(test_stress_post_nodes_order),
        cmocka_unit_test(test_stress_defer_to_thread_one),
        cmocka_unit_test(test_stress_defer_to_thread_eight),
        cmocka_unit_test(test_stress_stop_under_load),
        cmocka_unit_test(test_stress_stop_under_endless_load),
    };
    return cmocka_run_group_tests_name("stress_reactor", tests, NULL, NULL);
}
