/*
 * Stress for the pool's fast path (the team's incoming list): submits that
 * push a task without the pool mutex while every thread is busy at the
 * limit, racing with the transitions that close the fast path.
 *
 *   idle race   three submitters send bursts of short tasks to pool(0, 2),
 *               and after each burst sometimes wait until their own tasks
 *               have all run, so threads keep going idle (and, in every
 *               other round, exit after a tiny idle_timeout) just as new
 *               tasks are pushed: the lost-wake-up window the store-load
 *               handshake closes. Every task runs exactly once; nothing is
 *               left behind when the submitters stop (a lost task would
 *               hang the wait, bounded, and fail).
 *               Each pool thread must start any one submitter's tasks in
 *               the order they were submitted: FIFO dispatch means every
 *               take is the oldest task waiting, whether it comes from the
 *               ready ring, the backlog or the incoming list.
 *   fifo        the same against pool(0, 1): one thread, so the tasks of
 *               each submitter must start in the order they were submitted.
 *   stop race   rounds in which a stop lands while submitters keep a
 *               saturated pool(min, 2) busy (the fast path open): every
 *               submit returned 0 and its task ran exactly once, or returned
 *               TW_EQUIT, never ran, and got its node back as submitted. Half
 *               the tasks use tw_pool_do (nodes freed as they run, so
 *               addresses are reused at once), half the submitters' own
 *               nodes. The team's completed count equals the tasks accepted.
 *
 * Sizes go through tw_test_scaled; the checks never change. Submitting
 * threads never call cmocka: they record, the main thread asserts.
 */
#include "harness.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUBMITTERS 3
#define WAIT_LIMIT 20.0

/* ==== idle race and fifo ====================================================== */

typedef struct sub {
    tw_pool *p;
    int id;
    uint64_t n;          /* tasks to send */
    uint32_t *ran;       /* per task: times it ran */
    uint64_t done;       /* atomic: tasks of this submitter that ran */
    uint64_t last_seq;   /* atomic: seq + 1 of the last task that started (fifo) */
    uint64_t out_of_order; /* atomic: started before an older one (one thread) */
    uint64_t thread_out_of_order; /* atomic: a pool thread took it after a newer one */
    uint64_t bad_rc;     /* submits that did not return 0 */
    uint64_t stuck;      /* waits for its own tasks that timed out */
    unsigned seed;
    struct item *items;
} sub;

typedef struct item {
    sub *s;
    uint64_t seq;
} item;

/* Per pool thread: seq + 1 of the last task of each submitter it started. */
static __thread uint64_t seen[SUBMITTERS];

static int item_task(void *arg)
{
    item *it = arg;
    sub *s = it->s;
    if (seen[s->id] > it->seq)
        __atomic_fetch_add(&s->thread_out_of_order, 1, __ATOMIC_RELAXED);
    seen[s->id] = it->seq + 1;
    /* Start order: only meaningful with one thread (fifo), where tasks never
     * overlap, so a plain read-then-write is enough; atomics keep TSan calm. */
    uint64_t last = __atomic_load_n(&s->last_seq, __ATOMIC_RELAXED);
    if (last > it->seq)
        __atomic_fetch_add(&s->out_of_order, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->last_seq, it->seq + 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->ran[it->seq], 1, __ATOMIC_RELAXED);
    /* release: the submitter's acquire load of done sees the ran entry. */
    __atomic_fetch_add(&s->done, 1, __ATOMIC_RELEASE);
    return 0;
}

static unsigned next_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) & 0x7fff;
}

static void *burst_submitter(void *arg)
{
    sub *s = arg;
    uint64_t sent = 0;
    while (sent < s->n) {
        unsigned burst = 1 + next_rand(&s->seed) % 48;
        for (unsigned i = 0; i < burst && sent < s->n; i++, sent++) {
            s->items[sent].s = s;
            s->items[sent].seq = sent;
            if (tw_pool_do(s->p, item_task, &s->items[sent]) != 0)
                s->bad_rc++;
        }
        switch (next_rand(&s->seed) % 4) {
        case 0: { /* let the pool drain: its threads go idle */
            double end = tw_test_now() + WAIT_LIMIT;
            while (__atomic_load_n(&s->done, __ATOMIC_ACQUIRE) < sent - s->bad_rc) {
                if (tw_test_now() > end) {
                    s->stuck++;
                    return NULL;
                }
                sched_yield();
            }
            break;
        }
        case 1:
            sched_yield();
            break;
        default: /* straight on: the next burst lands on busy threads */
            break;
        }
    }
    return NULL;
}

static void run_bursts(size_t max, const char *what)
{
    uint64_t rounds = tw_test_scaled(40, 4);
    uint64_t per = tw_test_scaled(25000, 1500);
    uint64_t total = 0;
    double t0 = tw_test_now();
    sub *subs = calloc(SUBMITTERS, sizeof *subs);
    assert_non_null(subs);
    for (int i = 0; i < SUBMITTERS; i++) {
        subs[i].ran = calloc(per, sizeof *subs[i].ran);
        subs[i].items = calloc(per, sizeof *subs[i].items);
        assert_non_null(subs[i].ran);
        assert_non_null(subs[i].items);
    }
    for (uint64_t round = 0; round < rounds; round++) {
        tw_pool_config cfg = TW_POOL_CONFIG_INIT(0, max);
        tw_pool *p;
        cfg.wedge_timeout = 0;
        if (round % 2) /* threads exit as soon as they idle */
            cfg.idle_timeout = 0.0002;
        assert_int_equal(tw_pool_create_with(&cfg, &p), 0);
        for (int i = 0; i < SUBMITTERS; i++) {
            unsigned seed = subs[i].seed ? subs[i].seed : (unsigned)(i * 7919 + 1);
            uint32_t *ran = subs[i].ran;
            item *items = subs[i].items;
            memset(ran, 0, per * sizeof *ran);
            memset(&subs[i], 0, sizeof subs[i]);
            subs[i].p = p;
            subs[i].id = i;
            subs[i].n = per;
            subs[i].ran = ran;
            subs[i].items = items;
            subs[i].seed = seed + (unsigned)round;
        }
        tw_test_run_threads(SUBMITTERS, burst_submitter, subs, sizeof subs[0]);
        for (int i = 0; i < SUBMITTERS; i++) {
            assert_int_equal(subs[i].bad_rc, 0);
            if (subs[i].stuck)
                fail_msg("%s, round %llu: submitter %d: its tasks never all ran (%llu of %llu)",
                         what, (unsigned long long)round, i,
                         (unsigned long long)__atomic_load_n(&subs[i].done, __ATOMIC_SEQ_CST),
                         (unsigned long long)per);
        }
        assert_int_equal(tw_pool_stop(p, WAIT_LIMIT, NULL), 0);
        tw_pool_stats st;
        assert_int_equal(tw_pool_stats_get(p, &st), 0);
        assert_int_equal(st.team.completed, per * SUBMITTERS);
        assert_int_equal(st.team.backlog, 0);
        assert_int_equal(st.threads, 0);
        assert_int_equal(tw_pool_destroy(p), 0);
        for (int i = 0; i < SUBMITTERS; i++) {
            for (uint64_t k = 0; k < per; k++)
                if (subs[i].ran[k] != 1)
                    fail_msg("%s, round %llu: submitter %d task %llu ran %u times", what,
                             (unsigned long long)round, i, (unsigned long long)k,
                             subs[i].ran[k]);
            if (subs[i].thread_out_of_order != 0)
                fail_msg("%s, round %llu: submitter %d: a pool thread started %llu tasks after "
                         "a newer one of the same submitter (not FIFO)",
                         what, (unsigned long long)round, i,
                         (unsigned long long)subs[i].thread_out_of_order);
            if (max == 1 && subs[i].out_of_order != 0)
                fail_msg("%s, round %llu: submitter %d: %llu tasks started before an older "
                         "one of the same submitter",
                         what, (unsigned long long)round, i,
                         (unsigned long long)subs[i].out_of_order);
        }
        total += per * SUBMITTERS;
    }
    printf("    %-28s %10llu tasks  %7.3f s\n", what, (unsigned long long)total,
           tw_test_now() - t0);
    for (int i = 0; i < SUBMITTERS; i++) {
        free(subs[i].ran);
        free(subs[i].items);
    }
    free(subs);
}

static void test_fastpath_idle_race(void **state)
{
    (void)state;
    run_bursts(2, "idle race, pool(0,2)");
}

static void test_fastpath_fifo(void **state)
{
    (void)state;
    run_bursts(1, "fifo, pool(0,1)");
}

/* ==== stop race ================================================================ */

typedef struct node {
    tw_task task;
    uint32_t *ran;
} node;

typedef struct racer {
    tw_pool *p;
    int id;
    uint64_t cap;
    uint64_t submitted;
    int *rc;
    uint32_t *ran;
    node *nodes;
    uint64_t *accepted; /* shared, atomic */
    uint64_t bad;       /* codes other than 0 / TW_EQUIT */
    uint64_t not_restored; /* refused own nodes not given back as submitted */
    tw_event *go;
} racer;

/* A little work, so that both threads stay busy and the fast path open. */
static void spin_a_little(void)
{
    static int sink;
    for (int i = 0; i < 64; i++)
        __atomic_fetch_add(&sink, 0, __ATOMIC_RELAXED);
}

static int race_do_task(void *arg)
{
    spin_a_little();
    __atomic_fetch_add((uint32_t *)arg, 1, __ATOMIC_RELAXED);
    return 0;
}

static int race_node_task(void *arg)
{
    node *n = arg;
    spin_a_little();
    __atomic_fetch_add(n->ran, 1, __ATOMIC_RELAXED);
    return 0;
}

static void *stop_racer(void *arg)
{
    racer *r = arg;
    tw_event_wait_timeout(r->go, 10.0);
    for (uint64_t i = 0; i < r->cap; i++) {
        int rc;
        if ((i + (uint64_t)r->id) % 2) {
            rc = tw_pool_do(r->p, race_do_task, &r->ran[i]);
        } else {
            node *n = &r->nodes[i];
            n->ran = &r->ran[i];
            tw_task_init(&n->task, race_node_task, n);
            rc = tw_pool_submit(r->p, &n->task);
            if (rc == TW_EQUIT && (n->task.fn != race_node_task || n->task.arg != n))
                r->not_restored++;
        }
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

static void test_fastpath_stop_race(void **state)
{
    (void)state;
    uint64_t rounds = tw_test_scaled(300, 20);
    uint64_t cap = tw_test_scaled(6000, 600);
    racer r[SUBMITTERS];
    uint64_t accepted_total = 0, refused_total = 0;
    double t0 = tw_test_now();
    memset(r, 0, sizeof r);
    for (int i = 0; i < SUBMITTERS; i++) {
        r[i].rc = calloc(cap, sizeof *r[i].rc);
        r[i].ran = calloc(cap, sizeof *r[i].ran);
        r[i].nodes = calloc(cap, sizeof *r[i].nodes);
        assert_non_null(r[i].rc);
        assert_non_null(r[i].ran);
        assert_non_null(r[i].nodes);
    }
    for (uint64_t round = 0; round < rounds; round++) {
        tw_pool_config cfg = TW_POOL_CONFIG_INIT(round % 3 == 0 ? 2 : 0, 2);
        tw_pool *p;
        tw_event go = TW_EVENT_INIT;
        uint64_t accepted = 0, accepted_here = 0;
        pthread_t th[SUBMITTERS];
        cfg.wedge_timeout = 0;
        if (round % 3 == 1)
            cfg.idle_timeout = 0.0001; /* threads come and go */
        assert_int_equal(tw_pool_create_with(&cfg, &p), 0);
        for (int i = 0; i < SUBMITTERS; i++) {
            memset(r[i].rc, 0, cap * sizeof *r[i].rc);
            memset(r[i].ran, 0, cap * sizeof *r[i].ran);
            r[i].p = p;
            r[i].id = i;
            r[i].cap = cap;
            r[i].submitted = 0;
            r[i].accepted = &accepted;
            r[i].bad = 0;
            r[i].not_restored = 0;
            r[i].go = &go;
            th[i] = tw_test_start(stop_racer, &r[i]);
        }
        tw_event_set(&go);
        /* Stop after a varying amount of accepted work (sometimes at once). */
        uint64_t wait_for = (round * 53) % (cap / 2);
        double end = tw_test_now() + 10.0;
        while (__atomic_load_n(&accepted, __ATOMIC_RELAXED) < wait_for && tw_test_now() < end)
            sched_yield();
        size_t stuck = 0;
        int rc = tw_pool_stop(p, WAIT_LIMIT, &stuck);
        for (int i = 0; i < SUBMITTERS; i++)
            tw_test_join(th[i]);
        if (rc != 0)
            fail_msg("round %llu: stop returned %s with %zu thread(s) that never exit",
                     (unsigned long long)round, tw_err_name(rc), stuck);
        for (int i = 0; i < SUBMITTERS; i++) {
            assert_int_equal(r[i].bad, 0);
            assert_int_equal(r[i].not_restored, 0);
            for (uint64_t k = 0; k < r[i].submitted; k++) {
                uint32_t ran = __atomic_load_n(&r[i].ran[k], __ATOMIC_RELAXED);
                if (r[i].rc[k] == 0 && ran != 1)
                    fail_msg("round %llu: submitter %d task %llu accepted, ran %u times",
                             (unsigned long long)round, i, (unsigned long long)k, ran);
                if (r[i].rc[k] == TW_EQUIT && ran != 0)
                    fail_msg("round %llu: submitter %d task %llu refused, ran %u times",
                             (unsigned long long)round, i, (unsigned long long)k, ran);
                accepted_here += r[i].rc[k] == 0;
                refused_total += r[i].rc[k] == TW_EQUIT;
            }
            for (uint64_t k = r[i].submitted; k < cap; k++)
                assert_int_equal(r[i].ran[k], 0);
        }
        tw_pool_stats st;
        assert_int_equal(tw_pool_stats_get(p, &st), 0);
        assert_int_equal(st.team.completed, accepted_here);
        assert_int_equal(st.team.backlog, 0);
        assert_int_equal(st.threads, 0);
        assert_int_equal(tw_pool_destroy(p), 0);
        accepted_total += accepted_here;
    }
    printf("    %-28s %10llu tasks  %7.3f s\n", "stop racing submitters",
           (unsigned long long)accepted_total, tw_test_now() - t0);
    printf("    %llu rounds, %llu accepted, %llu refused with TW_EQUIT\n",
           (unsigned long long)rounds, (unsigned long long)accepted_total,
           (unsigned long long)refused_total);
    for (int i = 0; i < SUBMITTERS; i++) {
        free(r[i].rc);
        free(r[i].ran);
        free(r[i].nodes);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fastpath_idle_race),
        cmocka_unit_test(test_fastpath_fifo),
        cmocka_unit_test(test_fastpath_stop_race),
    };
    return cmocka_run_group_tests_name("stress_pool_fastpath", tests, NULL, NULL);
}
