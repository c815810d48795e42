/*
 * Stress for the Queue. Sizes go through tw_test_scaled (TW_TEST_SCALE), so
 * the sanitizer and valgrind runs shrink them; the checks never change.
 *
 *  - Many producers to many consumers through a small bounded queue, for each
 *    kind: every item is received exactly once (a per-item count and the sum),
 *    and for FIFO each consumer sees each producer's items in the order they
 *    were put. The consumers stop on the soft shutdown that follows join.
 *  - Shutdown, soft or immediate, racing with producers: every put either
 *    succeeded, and its item was then got or dropped exactly once, or
 *    returned TW_ESHUTDOWN, and so did every put after it in that thread;
 *    join then returns at once (got items were marked done, dropped ones
 *    count as done).
 *
 * Items are integers: item = seq * PRODUCERS + producer + 1 (never NULL, so
 * a NULL would show as a bad item). Worker threads never call cmocka: they
 * count what went wrong and the main thread asserts after joining them.
 */
#include "harness.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRODUCERS 4
#define CONSUMERS 4
#define HANG_LIMIT 60.0

#define P(i) ((void *)(uintptr_t)(i))
#define U(p) ((uintptr_t)(p))

static const enum tw_queue_kind KINDS[] = {TW_QUEUE_FIFO, TW_QUEUE_LIFO, TW_QUEUE_PRIORITY};

static const char *kind_name(enum tw_queue_kind k)
{
    return k == TW_QUEUE_FIFO ? "fifo" : k == TW_QUEUE_LIFO ? "lifo" : "priority";
}

static int cmp_value(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    return U(a) < U(b) ? -1 : U(a) > U(b);
}

static void report(const char *what, uint64_t ops, double t0)
{
    double secs = tw_test_now() - t0;
    printf("stress: %-40s %10llu items %7.2f s %7.2f M items/s\n", what,
           (unsigned long long)ops, secs, secs > 0 ? (double)ops / secs / 1e6 : 0.0);
    fflush(stdout);
}

/* What every item went through; indexed by item - 1. */
typedef struct ledger {
    size_t n;              /* items that may be tried */
    unsigned char *put_ok; /* written by the item's producer only */
    atomic_uchar *got;     /* incremented by whichever consumer gets it */
    unsigned char *dropped; /* written by drop, which runs in the main thread */
} ledger;

static void ledger_init(ledger *l, size_t n)
{
    l->n = n;
    l->put_ok = calloc(n, 1);
    l->got = calloc(n, sizeof *l->got);
    l->dropped = calloc(n, 1);
    assert_non_null(l->put_ok);
    assert_non_null(l->got);
    assert_non_null(l->dropped);
}

static void ledger_free(ledger *l)
{
    free(l->put_ok);
    free((void *)l->got);
    free(l->dropped);
}

typedef struct shared {
    tw_queue *q;
    enum tw_queue_kind kind;
    ledger led;
    uint64_t per_producer;    /* items each producer tries */
    atomic_uint_fast64_t got; /* items got, all consumers */
    uint64_t trigger;         /* when `got` reaches it, `halfway` is set */
    tw_event halfway;
} shared;

typedef struct worker {
    shared *sh;
    int id;
    uint64_t items;      /* put (producer) or got (consumer) */
    uint64_t refused;    /* producer: puts that returned TW_ESHUTDOWN */
    uint64_t sum;        /* consumer: sum of items got */
    uint64_t bad;        /* calls that returned something unexpected, or bad items */
    uint64_t disorder;   /* consumer, FIFO: a producer's items out of order */
    uint64_t after_shut; /* producer: a put that succeeded after one was refused */
} worker;

static void drop_item(void *item, void *ctx)
{
    ledger *l = ctx;
    uintptr_t v = U(item);
    if (v >= 1 && v <= l->n)
        l->dropped[v - 1]++;
}

static void *producer_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    for (uint64_t seq = 0; seq < sh->per_producer; seq++) {
        uintptr_t v = (uintptr_t)(seq * PRODUCERS + (uint64_t)w->id + 1);
        int rc = tw_queue_put(sh->q, P(v));
        if (rc == 0) {
            sh->led.put_ok[v - 1] = 1;
            w->items++;
            if (w->refused)
                w->after_shut++;
        } else if (rc == TW_ESHUTDOWN) {
            /* After the first refusal, try three more: all must be refused. */
            if (++w->refused > 3)
                break;
        } else {
            w->bad++;
        }
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    int64_t last[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++)
        last[p] = -1;
    for (;;) {
        void *item;
        uintptr_t v;
        int rc = tw_queue_get(sh->q, &item);
        if (rc == TW_ESHUTDOWN)
            break;
        if (rc != 0) {
            w->bad++;
            break;
        }
        v = U(item);
        if (v < 1 || v > sh->led.n) {
            w->bad++;
        } else {
            int p = (int)((v - 1) % PRODUCERS);
            int64_t seq = (int64_t)((v - 1) / PRODUCERS);
            if (sh->kind == TW_QUEUE_FIFO && seq <= last[p])
                w->disorder++;
            last[p] = seq;
            atomic_fetch_add_explicit(&sh->led.got[v - 1], 1, memory_order_relaxed);
            w->sum += v;
        }
        w->items++;
        if (tw_queue_task_done(sh->q) != 0)
            w->bad++;
        if (atomic_fetch_add_explicit(&sh->got, 1, memory_order_relaxed) + 1 == sh->trigger)
            tw_event_set(&sh->halfway);
    }
    return NULL;
}

static tw_queue *make_queue(enum tw_queue_kind kind, size_t maxsize, ledger *led)
{
    tw_queue_config cfg;
    tw_queue *q = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = kind;
    cfg.maxsize = maxsize;
    cfg.cmp = cmp_value;
    cfg.drop = drop_item;
    cfg.drop_ctx = led;
    assert_int_equal(tw_queue_create_with(&cfg, &q), 0);
    return q;
}

static void start_all(worker *w, int n, void *(*fn)(void *), shared *sh, int first_id,
                      pthread_t *t)
{
    for (int i = 0; i < n; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].sh = sh;
        w[i].id = first_id + i;
        t[i] = tw_test_start(fn, &w[i]);
    }
}

static void join_all(int n, pthread_t *t)
{
    for (int i = 0; i < n; i++)
        tw_test_join(t[i]);
}

/* Sums the workers' error counters and fails on any. */
static void check_workers(const char *what, const worker *w, int n)
{
    uint64_t bad = 0, disorder = 0, after = 0;
    for (int i = 0; i < n; i++) {
        bad += w[i].bad;
        disorder += w[i].disorder;
        after += w[i].after_shut;
    }
    if (bad)
        fail_msg("%s: %llu unexpected results", what, (unsigned long long)bad);
    if (disorder)
        fail_msg("%s: a producer's items were seen out of order %llu times", what,
                 (unsigned long long)disorder);
    if (after)
        fail_msg("%s: %llu puts succeeded after one was refused", what,
                 (unsigned long long)after);
}

/* ==== producers to consumers ================================================= */

static void run_mpmc(enum tw_queue_kind kind, uint64_t total)
{
    static shared sh;
    worker prod[PRODUCERS], cons[CONSUMERS];
    pthread_t tp[PRODUCERS], tc[CONSUMERS];
    uint64_t got = 0, sum = 0, n;
    char what[64];
    double t0;

    memset(&sh, 0, sizeof sh);
    sh.kind = kind;
    sh.per_producer = total / PRODUCERS;
    n = sh.per_producer * PRODUCERS;
    ledger_init(&sh.led, (size_t)n);
    sh.trigger = UINT64_MAX;
    sh.q = make_queue(kind, 64, &sh.led);

    t0 = tw_test_now();
    start_all(cons, CONSUMERS, consumer_main, &sh, 0, tc);
    start_all(prod, PRODUCERS, producer_main, &sh, 0, tp);
    join_all(PRODUCERS, tp);
    /* Every item put; join returns once every one has been got and marked. */
    if (tw_queue_join_timeout(sh.q, HANG_LIMIT) != 0)
        fail_msg("%s: join did not return", kind_name(kind));
    assert_true(tw_queue_empty(sh.q));
    assert_int_equal(tw_queue_shutdown(sh.q, false), 0); /* releases the consumers */
    join_all(CONSUMERS, tc);
    snprintf(what, sizeof what, "%s %d -> %d, bounded 64", kind_name(kind), PRODUCERS, CONSUMERS);
    report(what, n, t0);

    check_workers(what, prod, PRODUCERS);
    check_workers(what, cons, CONSUMERS);
    for (int i = 0; i < CONSUMERS; i++) {
        got += cons[i].items;
        sum += cons[i].sum;
    }
    assert_int_equal(got, n);
    assert_int_equal(sum, n * (n + 1) / 2);
    for (size_t i = 0; i < sh.led.n; i++)
        if (sh.led.got[i] != 1)
            fail_msg("%s: item %zu got %u times", what, i + 1, (unsigned)sh.led.got[i]);
    assert_int_equal(tw_queue_destroy(sh.q), 0);
    for (size_t i = 0; i < sh.led.n; i++)
        assert_int_equal(sh.led.dropped[i], 0);
    assert_int_equal(tw_allocator_live(), 0);
    ledger_free(&sh.led);
}

static void test_stress_queue_mpmc(void **state)
{
    (void)state;
    run_mpmc(TW_QUEUE_FIFO, tw_test_scaled(1u << 20, 4000));
    run_mpmc(TW_QUEUE_LIFO, tw_test_scaled(1u << 18, 4000));
    run_mpmc(TW_QUEUE_PRIORITY, tw_test_scaled(1u << 18, 4000));
}

/* ==== shutdown racing with producers ========================================== */

static void test_stress_queue_shutdown_race(void **state)
{
    static shared sh;
    uint64_t rounds = tw_test_scaled(36, 6), per = tw_test_scaled(20000, 400);
    uint64_t refused_total = 0, items_total = 0, dropped_total = 0;
    double t0 = tw_test_now();
    (void)state;

    for (uint64_t r = 0; r < rounds; r++) {
        enum tw_queue_kind kind = KINDS[r % 3];
        bool immediate = (r / 3) % 2 == 1;
        worker prod[PRODUCERS], cons[CONSUMERS / 2];
        pthread_t tp[PRODUCERS], tc[CONSUMERS / 2];
        uint64_t put = 0, put_calls_ok = 0, refused = 0, got = 0, dropped = 0;
        char what[64];

        memset(&sh, 0, sizeof sh);
        sh.kind = kind;
        sh.per_producer = per;
        ledger_init(&sh.led, (size_t)(per * PRODUCERS));
        /* Shut down when a quarter of what could be put has been got. */
        sh.trigger = per * PRODUCERS / 4;
        tw_event_init(&sh.halfway);
        sh.q = make_queue(kind, 32, &sh.led);
        snprintf(what, sizeof what, "round %llu, %s, %s shutdown", (unsigned long long)r,
                 kind_name(kind), immediate ? "immediate" : "soft");

        start_all(cons, CONSUMERS / 2, consumer_main, &sh, 0, tc);
        start_all(prod, PRODUCERS, producer_main, &sh, 0, tp);
        if (tw_event_wait_timeout(&sh.halfway, HANG_LIMIT) != 0)
            fail_msg("%s: consumers stalled", what);
        assert_int_equal(tw_queue_shutdown(sh.q, immediate), 0);
        join_all(PRODUCERS, tp);
        join_all(CONSUMERS / 2, tc);

        check_workers(what, prod, PRODUCERS);
        check_workers(what, cons, CONSUMERS / 2);
        /* Got items were marked done, dropped ones count as done. */
        assert_int_equal(tw_queue_join_timeout(sh.q, 0.0), 0);
        assert_true(tw_queue_empty(sh.q));
        assert_int_equal(tw_queue_destroy(sh.q), 0);
        assert_int_equal(tw_allocator_live(), 0);

        for (size_t i = 0; i < sh.led.n; i++) {
            unsigned g = sh.led.got[i], d = sh.led.dropped[i];
            if (sh.led.put_ok[i] ? g + d != 1 : g + d != 0)
                fail_msg("%s: item %zu %s, then got %u and dropped %u times", what, i + 1,
                         sh.led.put_ok[i] ? "put" : "refused", g, d);
            put += sh.led.put_ok[i];
            got += g;
            dropped += d;
        }
        if (!immediate && dropped)
            fail_msg("%s: a soft shutdown dropped %llu items", what, (unsigned long long)dropped);
        for (int i = 0; i < PRODUCERS; i++) {
            refused += prod[i].refused;
            put_calls_ok += prod[i].items;
        }
        assert_int_equal(put_calls_ok, put);
        assert_int_equal(got + dropped, put);
        items_total += put;
        refused_total += refused;
        dropped_total += dropped;
        ledger_free(&sh.led);
    }
    report("shutdown racing with 4 producers", items_total, t0);
    printf("stress: %llu rounds, %llu puts refused, %llu items dropped\n",
           (unsigned long long)rounds, (unsigned long long)refused_total,
           (unsigned long long)dropped_total);
    /* The shutdown came when about a quarter had been got: puts were refused. */
    assert_true(refused_total > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_queue_mpmc),
        cmocka_unit_test(test_stress_queue_shutdown_race),
    };
    return cmocka_run_group_tests_name("queue stress", tests, NULL, NULL);
}
