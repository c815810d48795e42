/*
 * Stress for the pool: four submitting threads against pool(2, 4).
 *
 *   count      10^6 tasks (scaled by TW_TEST_SCALE), half through tw_pool_do
 *              and half through tw_pool_submit with the submitter's own
 *              nodes; every task runs exactly once and the team's completed
 *              count agrees.
 *   stop race  rounds in which a stop lands while the submitters are still
 *              submitting: every submit either returned 0 (and that task ran
 *              exactly once) or TW_EQUIT (and it never ran). The stop must
 *              return (bounded: a thread that never exits fails the round).
 *              Rounds alternate between a pool that keeps its threads and
 *              one that reaps idle threads at once (min 0, tiny
 *              idle_timeout), so the stop also meets a pool with no thread.
 *   resize     the same submitters while another thread keeps changing the
 *              limits — pausing (max 0), lowering below the threads busy,
 *              raising — the idle timeout and the wedge settings; the round
 *              ends paused or not, and stop runs whatever waits. Every task
 *              runs exactly once, the completed count agrees, and stop
 *              leaves no thread.
 *
 * Sizes go through tw_test_scaled; the checks never change. Submitting
 * threads never call cmocka: they record, the main thread asserts.
 */
#include "harness.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUBMITTERS 4
#define STOP_LIMIT 20.0

static void quiet_hook(void *ctx, const tw_diag *d)
{
    (void)ctx;
    (void)d;
}

static void report(const char *what, uint64_t n, double t0)
{
    double dt = tw_test_now() - t0;
    printf("    %-28s %10llu tasks  %7.3f s  %8.0f tasks/s\n", what, (unsigned long long)n, dt,
           dt > 0 ? (double)n / dt : 0.0);
}

/* ==== exact count ============================================================ */

typedef struct counter {
    uint64_t ran; /* atomic */
} counter;

static int count_task(void *arg)
{
    __atomic_fetch_add(&((counter *)arg)->ran, 1, __ATOMIC_RELAXED);
    return 0;
}

typedef struct node_task {
    tw_task task;
    counter *c;
    int *reuse_ok; /* set when the node may be submitted again */
} node_task;

static int node_count_task(void *arg)
{
    node_task *n = arg;
    counter *c = n->c;
    int *ok = n->reuse_ok;
    __atomic_fetch_add(&c->ran, 1, __ATOMIC_RELAXED);
    /* release: the submitter reuses the node only after this store. */
    __atomic_store_n(ok, 1, __ATOMIC_RELEASE);
    return 0;
}

#define NODES 256

typedef struct submitter {
    tw_pool *p;
    counter *c;
    uint64_t n;
    uint64_t bad;
    node_task nodes[NODES];
    int free_[NODES];
} submitter;

static void *submit_count(void *arg)
{
    submitter *s = arg;
    size_t next = 0;
    uint64_t sent = 0;
    for (size_t i = 0; i < NODES; i++)
        s->free_[i] = 1;
    while (sent < s->n) {
        /* Every other task on one of our own nodes, reused round-robin once
         * its task has run; tw_pool_do otherwise, or while it is not free. */
        if (sent % 2 == 0 || !__atomic_load_n(&s->free_[next], __ATOMIC_ACQUIRE)) {
            if (tw_pool_do(s->p, count_task, s->c) != 0)
                s->bad++;
            sent++;
            continue;
        }
        s->free_[next] = 0;
        s->nodes[next].c = s->c;
        s->nodes[next].reuse_ok = &s->free_[next];
        tw_task_init(&s->nodes[next].task, node_count_task, &s->nodes[next]);
        if (tw_pool_submit(s->p, &s->nodes[next].task) != 0) {
            s->bad++;
            s->free_[next] = 1;
        }
        sent++;
        next = (next + 1) % NODES;
    }
    return NULL;
}

static void test_stress_pool_count(void **state)
{
    (void)state;
    uint64_t total = tw_test_scaled(1000000, 20000);
    uint64_t per = total / SUBMITTERS;
    tw_pool *p;
    counter c = {0};
    submitter *subs = calloc(SUBMITTERS, sizeof *subs);
    assert_non_null(subs);
    assert_int_equal(tw_pool_create(2, 4, &p), 0);
    for (int i = 0; i < SUBMITTERS; i++) {
        subs[i].p = p;
        subs[i].c = &c;
        subs[i].n = per;
    }
    double t0 = tw_test_now();
    tw_test_run_threads(SUBMITTERS, submit_count, subs, sizeof subs[0]);
    assert_int_equal(tw_pool_stop(p, STOP_LIMIT, NULL), 0);
    report("4 submitters, pool(2,4)", per * SUBMITTERS, t0);
    for (int i = 0; i < SUBMITTERS; i++)
        assert_int_equal(subs[i].bad, 0);
    assert_int_equal(__atomic_load_n(&c.ran, __ATOMIC_SEQ_CST), per * SUBMITTERS);
    tw_pool_stats s;
    assert_int_equal(tw_pool_stats_get(p, &s), 0);
    assert_int_equal(s.team.completed, per * SUBMITTERS);
    assert_int_equal(s.team.failed, 0);
    assert_int_equal(s.threads, 0);
    assert_int_equal(tw_pool_destroy(p), 0);
    free(subs);
}

/* ==== stop racing with submitters ============================================= */

typedef struct racer {
    tw_pool *p;
    uint64_t cap;          /* submissions at most */
    uint64_t submitted;    /* calls made */
    int *rc;               /* per submission */
    uint32_t *ran;         /* per submission, incremented by the task */
    uint64_t *accepted;    /* shared, atomic: submits that returned 0 */
    uint64_t bad;          /* codes other than 0 / TW_EQUIT */
    tw_event *go;
} racer;

static int race_task(void *arg)
{
    uint32_t *ran = arg;
    __atomic_fetch_add(ran, 1, __ATOMIC_RELAXED);
    return 0;
}

static void *race_submit(void *arg)
{
    racer *r = arg;
    tw_event_wait_timeout(r->go, 10.0);
    for (uint64_t i = 0; i < r->cap; i++) {
        int rc = tw_pool_do(r->p, race_task, &r->ran[i]);
        r->rc[i] = rc;
        r->submitted = i + 1;
        if (rc == TW_EQUIT)
            break;
        if (rc != 0)
            r->bad++;
        __atomic_fetch_add(r->accepted, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_stress_pool_stop_race(void **state)
{
    (void)state;
    uint64_t rounds = tw_test_scaled(1000, 200);
    uint64_t cap = tw_test_scaled(4000, 400);
    racer r[SUBMITTERS];
    uint64_t accepted_total = 0, refused_total = 0, round;
    char problem[400] = "";
    double t0 = tw_test_now();
    for (int i = 0; i < SUBMITTERS; i++) {
        r[i].rc = calloc(cap, sizeof *r[i].rc);
        r[i].ran = calloc(cap, sizeof *r[i].ran);
        assert_non_null(r[i].rc);
        assert_non_null(r[i].ran);
    }
    for (round = 0; round < rounds && !problem[0]; round++) {
        tw_pool_config cfg = TW_POOL_CONFIG_INIT(2, 4);
        tw_pool *p;
        tw_event go = TW_EVENT_INIT;
        uint64_t accepted = 0;
        pthread_t th[SUBMITTERS];
        if (round % 2) { /* threads come and go all the time */
            cfg.min = 0;
            cfg.idle_timeout = 0.0001;
        }
        cfg.wedge_timeout = 0;
        assert_int_equal(tw_pool_create_with(&cfg, &p), 0);
        for (int i = 0; i < SUBMITTERS; i++) {
            memset(r[i].rc, 0, cap * sizeof *r[i].rc);
            memset(r[i].ran, 0, cap * sizeof *r[i].ran);
            r[i].p = p;
            r[i].cap = cap;
            r[i].submitted = 0;
            r[i].accepted = &accepted;
            r[i].bad = 0;
            r[i].go = &go;
            th[i] = tw_test_start(race_submit, &r[i]);
        }
        tw_event_set(&go);
        /* Stop after a varying amount of accepted work (sometimes at once). */
        uint64_t wait_for = (round * 37) % (cap / 2);
        double end = tw_test_now() + 10.0;
        while (__atomic_load_n(&accepted, __ATOMIC_RELAXED) < wait_for && tw_test_now() < end)
            sched_yield();
        size_t stuck = 0;
        int rc = tw_pool_stop(p, STOP_LIMIT, &stuck);
        for (int i = 0; i < SUBMITTERS; i++)
            tw_test_join(th[i]);
        tw_pool_stats s;
        tw_pool_stats_get(p, &s);
        if (rc != 0) {
            snprintf(problem, sizeof problem,
                     "round %llu: stop returned %s with %zu thread(s) that never exit "
                     "(team: idle %zu busy %zu backlog %zu completed %llu)",
                     (unsigned long long)round, tw_err_name(rc), stuck, s.team.idle,
                     s.team.busy, s.team.backlog, (unsigned long long)s.team.completed);
            break; /* the pool is still in use: it cannot be destroyed */
        }
        /* stop returned 0: every submission is accounted for, now. */
        for (int i = 0; i < SUBMITTERS && !problem[0]; i++) {
            if (r[i].bad)
                snprintf(problem, sizeof problem, "round %llu: submitter %d: %llu unexpected codes",
                         (unsigned long long)round, i, (unsigned long long)r[i].bad);
            for (uint64_t k = 0; k < r[i].submitted && !problem[0]; k++) {
                uint32_t ran = __atomic_load_n(&r[i].ran[k], __ATOMIC_RELAXED);
                if ((r[i].rc[k] == 0 && ran != 1) || (r[i].rc[k] == TW_EQUIT && ran != 0))
                    snprintf(problem, sizeof problem,
                             "round %llu: submitter %d task %llu %s, but had run %u time(s) when "
                             "stop returned 0 (pool threads %zu, team busy %zu)",
                             (unsigned long long)round, i, (unsigned long long)k,
                             r[i].rc[k] == 0 ? "accepted" : "refused", ran, s.threads,
                             s.team.busy);
                accepted_total += r[i].rc[k] == 0;
                refused_total += r[i].rc[k] == TW_EQUIT;
            }
            for (uint64_t k = r[i].submitted; k < cap && !problem[0]; k++)
                if (r[i].ran[k] != 0)
                    snprintf(problem, sizeof problem, "round %llu: a task never submitted ran",
                             (unsigned long long)round);
        }
        if (problem[0])
            break; /* a late thread may still use the pool: leave it */
        assert_int_equal(s.threads, 0);
        assert_int_equal(tw_pool_destroy(p), 0);
    }
    if (!problem[0]) {
        report("stop racing submitters", accepted_total, t0);
        printf("    %llu rounds, %llu accepted, %llu refused with TW_EQUIT\n",
               (unsigned long long)rounds, (unsigned long long)accepted_total,
               (unsigned long long)refused_total);
        for (int i = 0; i < SUBMITTERS; i++) {
            free(r[i].rc);
            free(r[i].ran);
        }
    }
    if (problem[0])
        fail_msg("%s", problem); /* the arrays stay: a late task may still write them */
}

/* ==== limits changing under load ================================================= */

typedef struct changer {
    tw_pool *p;
    int stop; /* atomic */
    uint64_t changes;
    uint64_t bad;
} changer;

static void *change_limits(void *arg)
{
    static const size_t limits[][2] = {{0, 0}, {0, 1}, {1, 3}, {0, 0}, {2, 4}, {0, 2}, {0, 4}};
    changer *c = arg;
    size_t i = 0;
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        const size_t *l = limits[i % (sizeof limits / sizeof limits[0])];
        if (tw_pool_resize(c->p, l[0], l[1]) != 0)
            c->bad++;
        if (i % 5 == 0 && tw_pool_set_idle_timeout(c->p, i % 10 ? 0.0001 : -1) != 0)
            c->bad++;
        if (i % 7 == 0 && tw_pool_set_wedge(c->p, i % 14 ? 0.001 : 0, i % 3) != 0)
            c->bad++;
        c->changes++;
        i++;
        sched_yield();
    }
    return NULL;
}

static void test_stress_pool_resize_race(void **state)
{
    (void)state;
    uint64_t rounds = tw_test_scaled(40, 6);
    uint64_t per = tw_test_scaled(50000, 2000) / SUBMITTERS;
    uint64_t changes = 0;
    double t0 = tw_test_now();
    submitter *subs = calloc(SUBMITTERS, sizeof *subs);
    assert_non_null(subs);
    tw_set_diag_hook(quiet_hook, NULL); /* wedges of a paused pool with busy threads */
    for (uint64_t round = 0; round < rounds; round++) {
        tw_pool *p;
        counter c = {0};
        changer ch;
        memset(&ch, 0, sizeof ch);
        assert_int_equal(tw_pool_create(0, 2, &p), 0);
        ch.p = p;
        for (int i = 0; i < SUBMITTERS; i++) {
            memset(&subs[i], 0, sizeof subs[i]);
            subs[i].p = p;
            subs[i].c = &c;
            subs[i].n = per;
        }
        pthread_t th = tw_test_start(change_limits, &ch);
        tw_test_run_threads_bounded(SUBMITTERS, submit_count, subs, sizeof subs[0],
                                    "submitters while the limits change");
        __atomic_store_n(&ch.stop, 1, __ATOMIC_RELEASE);
        tw_test_join(th);
        assert_int_equal(ch.bad, 0);
        changes += ch.changes;
        if (round % 2) /* else stop runs a paused pool's backlog itself */
            assert_int_equal(tw_pool_resize(p, 0, 3), 0);
        if (tw_pool_stop(p, STOP_LIMIT, NULL) != 0) {
            tw_pool_stats s;
            tw_pool_stats_get(p, &s);
            fail_msg("round %llu: stop timed out: %zu threads, idle %zu busy %zu backlog %zu, "
                     "completed %llu of %llu, max %zu",
                     (unsigned long long)round, s.threads, s.team.idle, s.team.busy,
                     s.team.backlog, (unsigned long long)s.team.completed,
                     (unsigned long long)(per * SUBMITTERS), s.max);
        }
        for (int i = 0; i < SUBMITTERS; i++)
            assert_int_equal(subs[i].bad, 0);
        assert_int_equal(__atomic_load_n(&c.ran, __ATOMIC_SEQ_CST), per * SUBMITTERS);
        tw_pool_stats s;
        assert_int_equal(tw_pool_stats_get(p, &s), 0);
        assert_int_equal(s.team.completed, per * SUBMITTERS);
        assert_int_equal(s.team.backlog + s.team.busy + s.team.idle, 0);
        assert_int_equal(s.threads, 0);
        assert_int_equal(tw_pool_destroy(p), 0);
    }
    tw_set_diag_hook(NULL, NULL);
    report("submitters, limits changing", rounds * per * SUBMITTERS, t0);
    printf("    %llu rounds, %llu changes of limits and settings\n", (unsigned long long)rounds,
           (unsigned long long)changes);
    free(subs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_pool_count),
        cmocka_unit_test(test_stress_pool_stop_race),
        cmocka_unit_test(test_stress_pool_resize_race),
    };
    return cmocka_run_group_tests_name("stress_pool", tests, NULL, NULL);
}
