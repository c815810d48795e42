/*
 * Stress for the sync layer: every primitive under four threads, with counts
 * verified exactly. Sizes go through tw_test_scaled (TW_TEST_SCALE), so the
 * sanitizer and valgrind runs shrink them; the checks never change.
 *
 * Each test prints its operation count and time. An "operation" is one
 * acquire/release pair for the locks and semaphores, one set, clear or wait
 * call for the Event, one acquire, wait, notify or release call for the
 * Condition, and one wait call for the Barrier.
 *
 * Worker threads never call cmocka: they count what went wrong and the main
 * thread asserts after joining them.
 */
#include "harness.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4

typedef struct worker {
    void *shared;
    int id;
    uint64_t iters;
    uint64_t ops;     /* operations performed (see above) */
    uint64_t bad;     /* calls that returned something unexpected */
    uint64_t overlap; /* times more threads were inside than allowed */
} worker;

static void run_workers(void *(*fn)(void *), void *shared, uint64_t iters, worker *w)
{
    for (int i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].shared = shared;
        w[i].id = i;
        w[i].iters = iters;
    }
    tw_test_run_threads(THREADS, fn, w, sizeof w[0]);
}

/* Sums the workers' counters and fails on any error. Returns total ops. */
static uint64_t check_workers(const char *what, const worker *w)
{
    uint64_t ops = 0, bad = 0, overlap = 0;
    for (int i = 0; i < THREADS; i++) {
        ops += w[i].ops;
        bad += w[i].bad;
        overlap += w[i].overlap;
    }
    if (bad)
        fail_msg("%s: %llu calls returned an unexpected code", what, (unsigned long long)bad);
    if (overlap)
        fail_msg("%s: exclusion violated %llu times", what, (unsigned long long)overlap);
    return ops;
}

static void report(const char *what, uint64_t ops, double t0)
{
    double secs = tw_test_now() - t0;
    printf("stress: %-34s %11llu ops %7.2f s %7.2f Mops/s\n", what, (unsigned long long)ops,
           secs, secs > 0 ? (double)ops / secs / 1e6 : 0.0);
    fflush(stdout);
}

/* Enters / leaves a region that at most `limit` threads may occupy. */
static void enter(atomic_uint *inside, unsigned limit, unsigned n, worker *w)
{
    if (atomic_fetch_add_explicit(inside, n, memory_order_relaxed) + n > limit)
        w->overlap++;
}

static void leave(atomic_uint *inside, unsigned n)
{
    atomic_fetch_sub_explicit(inside, n, memory_order_relaxed);
}

/* ==== Lock ================================================================ */

typedef struct lock_shared {
    tw_lock lock;
    uint64_t counter; /* guarded by lock */
    atomic_uint inside;
} lock_shared;

static void *lock_worker(void *arg)
{
    worker *w = arg;
    lock_shared *s = w->shared;
    for (uint64_t i = 0; i < w->iters; i++) {
        int rc;
        if ((i & 7) == 0) { /* the guard */
            TW_WITH(&s->lock) {
                enter(&s->inside, 1, 1, w);
                s->counter++;
                leave(&s->inside, 1);
            }
            w->ops++;
            continue;
        }
        switch (i & 7) {
        case 1:
            rc = tw_lock_acquire_timeout(&s->lock, 60.0);
            break;
        case 2:
            rc = tw_lock_try_acquire(&s->lock);
            if (rc == TW_EBUSY)
                rc = tw_lock_acquire(&s->lock);
            break;
        default:
            rc = tw_lock_acquire(&s->lock);
            break;
        }
        if (rc != 0) {
            w->bad++;
            continue;
        }
        enter(&s->inside, 1, 1, w);
        s->counter++;
        leave(&s->inside, 1);
        if (tw_lock_release(&s->lock) != 0)
            w->bad++;
        w->ops++;
    }
    return NULL;
}

static void stress_lock(void **state)
{
    static lock_shared s;
    worker w[THREADS];
    uint64_t iters = tw_test_scaled(10000000 / THREADS, 1000);
    double t0 = tw_test_now();
    (void)state;

    memset(&s, 0, sizeof s);
    run_workers(lock_worker, &s, iters, w);
    report("Lock counter", check_workers("Lock", w), t0);
    assert_int_equal(s.counter, THREADS * iters);
    assert_false(tw_lock_locked(&s.lock));
    assert_int_equal(tw_lock_release(&s.lock), TW_EPERM);
}

/* ==== RLock =============================================================== */

typedef struct rlock_shared {
    tw_rlock lock;
    uint64_t counter; /* guarded by lock */
    atomic_uint inside;
} rlock_shared;

static void *rlock_worker(void *arg)
{
    worker *w = arg;
    rlock_shared *s = w->shared;
    for (uint64_t i = 0; i < w->iters; i++) {
        uint32_t depth = 1 + (uint32_t)(i % 3);
        int rc = (i & 4) ? tw_rlock_acquire_timeout(&s->lock, 60.0) : tw_rlock_acquire(&s->lock);
        if (rc != 0) {
            w->bad++;
            continue;
        }
        enter(&s->inside, 1, 1, w);
        /* Nested levels: the owner never waits, whichever form it uses. */
        for (uint32_t d = 2; d <= depth; d++) {
            rc = (d == 2) ? tw_rlock_try_acquire(&s->lock)
                          : tw_rlock_acquire_timeout(&s->lock, 0.0);
            if (rc != 0)
                w->bad++;
        }
        if (tw_rlock_count(&s->lock) != depth || !tw_rlock_is_owned(&s->lock))
            w->bad++;
        s->counter++;
        for (uint32_t d = depth; d >= 2; d--)
            if (tw_rlock_release(&s->lock) != 0)
                w->bad++;
        leave(&s->inside, 1);
        if (tw_rlock_release(&s->lock) != 0)
            w->bad++;
        if (tw_rlock_is_owned(&s->lock))
            w->bad++;
        w->ops += depth;
    }
    /* Not the owner now: a release is refused. */
    if (tw_rlock_release(&s->lock) != TW_EPERM)
        w->bad++;
    return NULL;
}

static void stress_rlock(void **state)
{
    static rlock_shared s;
    worker w[THREADS];
    /* Depths cycle 1, 2, 3: two acquire/release pairs per iteration on
     * average; the +1 makes the count a whole number of cycles. */
    uint64_t iters = tw_test_scaled(10000000 / THREADS / 2 + 1, 1000);
    double t0 = tw_test_now();
    (void)state;

    memset(&s, 0, sizeof s);
    run_workers(rlock_worker, &s, iters, w);
    report("RLock nesting 1..3", check_workers("RLock", w), t0);
    assert_int_equal(s.counter, THREADS * iters);
    assert_false(tw_rlock_locked(&s.lock));
}

/* ==== Semaphore =========================================================== */

typedef struct sem_shared {
    tw_sem sem;
    uint32_t limit;   /* initial value */
    uint64_t counter; /* guarded by sem when limit == 1 */
    atomic_uint inside;
    atomic_uint max_value; /* largest value sampled */
} sem_shared;

static void note_value(atomic_uint *max, uint32_t v)
{
    unsigned m = atomic_load_explicit(max, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak_explicit(max, &m, v, memory_order_relaxed,
                                                           memory_order_relaxed))
        ;
}

static int sem_take(tw_sem *s, uint64_t i)
{
    int rc;
    switch (i % 3) {
    case 0:
        return tw_sem_acquire(s);
    case 1:
        return tw_sem_acquire_timeout(s, 60.0);
    default:
        rc = tw_sem_try_acquire(s);
        return rc == TW_EBUSY ? tw_sem_acquire(s) : rc;
    }
}

static void *sem_mutex_worker(void *arg)
{
    worker *w = arg;
    sem_shared *s = w->shared;
    for (uint64_t i = 0; i < w->iters; i++) {
        if (sem_take(&s->sem, i) != 0) {
            w->bad++;
            continue;
        }
        enter(&s->inside, 1, 1, w);
        s->counter++;
        leave(&s->inside, 1);
        if (tw_sem_release(&s->sem, 1) != 0)
            w->bad++;
        w->ops++;
    }
    return NULL;
}

static void stress_sem_mutex(void **state)
{
    static sem_shared s;
    worker w[THREADS];
    uint64_t iters = tw_test_scaled(10000000 / THREADS, 1000);
    double t0 = tw_test_now();
    (void)state;

    memset(&s, 0, sizeof s);
    assert_int_equal(tw_sem_init(&s.sem, 1), 0);
    run_workers(sem_mutex_worker, &s, iters, w);
    report("Semaphore(1) as a mutex", check_workers("Semaphore(1)", w), t0);
    assert_int_equal(s.counter, THREADS * iters);
    assert_int_equal(tw_sem_value(&s.sem), 1);
}

static void *sem_counting_worker(void *arg)
{
    worker *w = arg;
    sem_shared *s = w->shared;
    for (uint64_t i = 0; i < w->iters; i++) {
        uint32_t held = 1;
        uint32_t v;
        if (sem_take(&s->sem, i) != 0) {
            w->bad++;
            continue;
        }
        /* Sometimes a second token, if one is free: released together. */
        if ((i & 3) == 0 && tw_sem_try_acquire(&s->sem) == 0)
            held = 2;
        enter(&s->inside, s->limit, held, w);
        v = tw_sem_value(&s->sem);
        note_value(&s->max_value, v);
        if (v + held > s->limit)
            w->overlap++;
        leave(&s->inside, held);
        if (tw_sem_release(&s->sem, held) != 0)
            w->bad++;
        w->ops += held;
    }
    return NULL;
}

static void stress_sem_counting(void **state)
{
    static sem_shared s;
    worker w[THREADS];
    uint64_t iters = tw_test_scaled(10000000 / THREADS, 1000);
    double t0 = tw_test_now();
    (void)state;

    memset(&s, 0, sizeof s);
    s.limit = 2;
    assert_int_equal(tw_sem_init(&s.sem, s.limit), 0);
    run_workers(sem_counting_worker, &s, iters, w);
    report("Semaphore(2), 4 threads", check_workers("Semaphore(2)", w), t0);
    assert_true(atomic_load(&s.max_value) <= s.limit);
    assert_int_equal(tw_sem_value(&s.sem), s.limit); /* every token came back */
}

/* ==== BoundedSemaphore ==================================================== */

typedef struct bsem_shared {
    tw_bsem bsem;
    atomic_uint inside;
    atomic_uint max_value;
} bsem_shared;

static void *bsem_worker(void *arg)
{
    worker *w = arg;
    bsem_shared *s = w->shared;
    uint32_t limit = tw_bsem_limit(&s->bsem);
    for (uint64_t i = 0; i < w->iters; i++) {
        int rc;
        uint32_t v;
        switch (i % 3) {
        case 0:
            rc = tw_bsem_acquire(&s->bsem);
            break;
        case 1:
            rc = tw_bsem_acquire_timeout(&s->bsem, 60.0);
            break;
        default:
            rc = tw_bsem_try_acquire(&s->bsem);
            if (rc == TW_EBUSY)
                rc = tw_bsem_acquire(&s->bsem);
            break;
        }
        if (rc != 0) {
            w->bad++;
            continue;
        }
        enter(&s->inside, limit, 1, w);
        v = tw_bsem_value(&s->bsem);
        note_value(&s->max_value, v);
        if (v + 1 > limit)
            w->overlap++;
        /* Releasing more than the limit can never fit, whatever the others
         * hold: refused, nothing changes. */
        if ((i & 63) == 0 && tw_bsem_release(&s->bsem, limit + 1) != TW_EOVERFLOW)
            w->bad++;
        leave(&s->inside, 1);
        if (tw_bsem_release(&s->bsem, 1) != 0)
            w->bad++;
        w->ops++;
    }
    return NULL;
}

static void stress_bsem(void **state)
{
    static bsem_shared s;
    worker w[THREADS];
    uint64_t iters = tw_test_scaled(10000000 / THREADS, 1000);
    double t0 = tw_test_now();
    (void)state;

    memset(&s, 0, sizeof s);
    assert_int_equal(tw_bsem_init(&s.bsem, 3), 0);
    run_workers(bsem_worker, &s, iters, w);
    report("BoundedSemaphore(3), 4 threads", check_workers("BoundedSemaphore", w), t0);
    assert_true(atomic_load(&s.max_value) <= 3);
    assert_int_equal(tw_bsem_value(&s.bsem), 3);
    assert_int_equal(tw_bsem_limit(&s.bsem), 3);
    assert_int_equal(tw_bsem_release(&s.bsem, 1), TW_EOVERFLOW);
    assert_int_equal(tw_bsem_value(&s.bsem), 3);
}

/* ==== Event =============================================================== */

/* Two pairs of threads; in each pair the turn passes through two events. */
typedef struct event_pair {
    tw_event turn[2];
    uint64_t counter; /* ordered by the events */
} event_pair;

static void *event_worker(void *arg)
{
    worker *w = arg;
    event_pair *p = (event_pair *)w->shared + w->id / 2;
    int me = w->id % 2;
    tw_event *mine = &p->turn[me], *theirs = &p->turn[1 - me];
    for (uint64_t i = 0; i < w->iters; i++) {
        int rc = (i & 1) ? tw_event_wait_timeout(mine, 60.0) : tw_event_wait(mine);
        if (rc != 0)
            w->bad++;
        if (tw_event_clear(mine) != 0)
            w->bad++;
        p->counter++;
        if (tw_event_set(theirs) != 0)
            w->bad++;
        w->ops += 3;
    }
    return NULL;
}

static void stress_event_ping_pong(void **state)
{
    static event_pair pairs[THREADS / 2];
    worker w[THREADS];
    /* Three event calls per hand-off, one hand-off per thread iteration. */
    uint64_t iters = tw_test_scaled(10000000 / THREADS / 3 + 1, 1000);
    double t0 = tw_test_now();
    (void)state;

    memset(pairs, 0, sizeof pairs);
    for (int i = 0; i < THREADS / 2; i++)
        assert_int_equal(tw_event_set(&pairs[i].turn[0]), 0);
    run_workers(event_worker, pairs, iters, w);
    report("Event ping-pong, 2 pairs", check_workers("Event", w), t0);
    for (int i = 0; i < THREADS / 2; i++) {
        assert_int_equal(pairs[i].counter, 2 * iters);
        assert_true(tw_event_is_set(&pairs[i].turn[0])); /* the last hand-back */
        assert_false(tw_event_is_set(&pairs[i].turn[1]));
    }
}

/* ==== Condition =========================================================== */

enum { PC_CAP = 16, PRODUCERS = THREADS / 2, CONSUMERS = THREADS - THREADS / 2 };

typedef struct pc_shared {
    tw_lock lock;
    tw_cond not_empty, not_full; /* both on lock */
    uint64_t buf[PC_CAP];
    uint32_t head, count;
    uint64_t per_producer, total, taken;
    uint64_t sum[CONSUMERS], consumed[CONSUMERS];
    uint64_t out_of_order;
} pc_shared;

/* Item k of producer p is p * per_producer + k + 1: every item is distinct
 * and the items of one producer rise. */
static void *pc_worker(void *arg)
{
    worker *w = arg;
    pc_shared *s = w->shared;
    if (w->id < PRODUCERS) {
        for (uint64_t k = 0; k < s->per_producer; k++) {
            uint64_t item = (uint64_t)w->id * s->per_producer + k + 1;
            if (tw_cond_acquire(&s->not_full) != 0) {
                w->bad++;
                return NULL;
            }
            while (s->count == PC_CAP) {
                if (tw_cond_wait(&s->not_full) != 0)
                    w->bad++;
                w->ops++;
            }
            s->buf[(s->head + s->count) % PC_CAP] = item;
            s->count++;
            if (tw_cond_notify(&s->not_empty, 1) != 0)
                w->bad++;
            if (tw_cond_release(&s->not_full) != 0)
                w->bad++;
            w->ops += 3;
        }
    } else {
        int c = w->id - PRODUCERS;
        uint64_t last[PRODUCERS];
        memset(last, 0, sizeof last);
        for (;;) {
            uint64_t item;
            uint64_t p;
            if (tw_cond_acquire(&s->not_empty) != 0) {
                w->bad++;
                return NULL;
            }
            while (s->count == 0 && s->taken < s->total) {
                if (tw_cond_wait(&s->not_empty) != 0)
                    w->bad++;
                w->ops++;
            }
            if (s->count == 0) {
                tw_cond_release(&s->not_empty);
                w->ops += 2;
                break;
            }
            item = s->buf[s->head];
            s->head = (s->head + 1) % PC_CAP;
            s->count--;
            s->taken++;
            p = (item - 1) / s->per_producer;
            if (item == 0 || p >= PRODUCERS) {
                w->bad++;
            } else {
                if (item <= last[p]) /* one producer's items come out in order */
                    s->out_of_order++;
                last[p] = item;
            }
            s->sum[c] += item;
            s->consumed[c]++;
            if (s->taken == s->total && tw_cond_notify_all(&s->not_empty) != 0)
                w->bad++;
            if (tw_cond_notify(&s->not_full, 1) != 0)
                w->bad++;
            if (tw_cond_release(&s->not_empty) != 0)
                w->bad++;
            w->ops += 3;
        }
    }
    return NULL;
}

static void stress_cond_producer_consumer(void **state)
{
    static pc_shared s;
    worker w[THREADS];
    uint64_t consumed = 0, sum = 0;
    double t0 = tw_test_now();
    (void)state;

    memset(&s, 0, sizeof s);
    assert_int_equal(tw_cond_init_lock(&s.not_empty, &s.lock), 0);
    assert_int_equal(tw_cond_init_lock(&s.not_full, &s.lock), 0);
    s.per_producer = tw_test_scaled(10000000 / 6 / PRODUCERS, 1000);
    s.total = s.per_producer * PRODUCERS;
    run_workers(pc_worker, &s, 0, w);
    report("Condition producer/consumer", check_workers("Condition", w), t0);

    for (int c = 0; c < CONSUMERS; c++) {
        consumed += s.consumed[c];
        sum += s.sum[c];
    }
    assert_int_equal(s.out_of_order, 0);
    assert_int_equal(s.taken, s.total);
    assert_int_equal(consumed, s.total);
    assert_int_equal(s.count, 0);
    assert_true(sum == s.total * (s.total + 1) / 2);
    assert_false(tw_lock_locked(&s.lock));
}

/* ==== Barrier ============================================================= */

typedef struct barrier_shared {
    tw_barrier b;
    uint64_t cycles;
    uint64_t action_runs;   /* touched only by the action, which the barrier orders */
    atomic_uint *idx_bits;  /* per cycle: byte i counts returns of index i */
    atomic_uint *arrived;   /* per cycle: threads that arrived */
    atomic_uint action_bad; /* action saw a cycle not complete / already released */
} barrier_shared;

static const unsigned ALL_INDICES = 0x01010101u; /* one return of each of 4 indices */

static int barrier_action(void *arg)
{
    barrier_shared *s = arg;
    uint64_t c = s->action_runs++;
    if (c >= s->cycles || atomic_load(&s->arrived[c]) != THREADS ||
        atomic_load(&s->idx_bits[c]) != 0 ||
        (c > 0 && atomic_load(&s->idx_bits[c - 1]) != ALL_INDICES))
        atomic_fetch_add(&s->action_bad, 1);
    return 0;
}

static void *barrier_worker(void *arg)
{
    worker *w = arg;
    barrier_shared *s = w->shared;
    for (uint64_t c = 0; c < s->cycles; c++) {
        int idx;
        atomic_fetch_add_explicit(&s->arrived[c], 1, memory_order_relaxed);
        idx = (c & 1) ? tw_barrier_wait_timeout(&s->b, 60.0) : tw_barrier_wait(&s->b);
        w->ops++;
        if (idx < 0 || idx >= THREADS) {
            w->bad++;
            continue;
        }
        atomic_fetch_add_explicit(&s->idx_bits[c], 1u << (8 * idx), memory_order_relaxed);
    }
    return NULL;
}

static void stress_barrier_cycles(void **state)
{
    static barrier_shared s;
    worker w[THREADS];
    double t0 = tw_test_now();
    uint64_t incomplete = 0;
    (void)state;

    _Static_assert(THREADS == 4, "ALL_INDICES assumes four parties");
    memset(&s, 0, sizeof s);
    s.cycles = tw_test_scaled(10000000 / THREADS, 200);
    s.idx_bits = calloc(s.cycles, sizeof *s.idx_bits);
    s.arrived = calloc(s.cycles, sizeof *s.arrived);
    assert_non_null(s.idx_bits);
    assert_non_null(s.arrived);
    assert_int_equal(tw_barrier_init(&s.b, THREADS, barrier_action, &s), 0);
    run_workers(barrier_worker, &s, 0, w);
    report("Barrier(4) cycles", check_workers("Barrier", w), t0);

    for (uint64_t c = 0; c < s.cycles; c++)
        if (atomic_load(&s.idx_bits[c]) != ALL_INDICES)
            incomplete++;
    assert_int_equal(incomplete, 0);
    assert_int_equal(atomic_load(&s.action_bad), 0);
    assert_int_equal(s.action_runs, s.cycles);
    assert_false(tw_barrier_broken(&s.b));
    assert_int_equal(tw_barrier_n_waiting(&s.b), 0);
    free(s.idx_bits);
    free(s.arrived);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stress_lock),
        cmocka_unit_test(stress_rlock),
        cmocka_unit_test(stress_sem_mutex),
        cmocka_unit_test(stress_sem_counting),
        cmocka_unit_test(stress_bsem),
        cmocka_unit_test(stress_event_ping_pong),
        cmocka_unit_test(stress_cond_producer_consumer),
        cmocka_unit_test(stress_barrier_cycles),
    };
    double t0 = tw_test_now();
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    printf("stress: total %.2f s\n", tw_test_now() - t0);
    return rc;
}
