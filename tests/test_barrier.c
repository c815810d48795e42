/*
 * Barrier: init errors and the zeroed barrier, arrival indices over many
 * cycles, the action (once per cycle, in the last arrival, before anyone is
 * released), breaking by a failed action, a timeout or abort, reset,
 * n_waiting / broken / parties, try_wait, and the default timeout that
 * tw_barrier_wait uses (Python's Barrier(parties, action, timeout)).
 *
 * A test knows how many threads wait in the current cycle from
 * tw_barrier_n_waiting, which it polls; a thread counted there has joined the
 * cycle, whether or not it is asleep yet.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* Exactly representable in binary, so the nanosecond deadline is exact. */
#define SHORT_TIMEOUT 0.0625
/* Bound that turns a hang into a failure message. */
#define HANG_LIMIT 10.0

/* Polls until exactly n threads wait in the current cycle. */
static void await_n_waiting(tw_barrier *b, uint32_t n)
{
    double end = tw_test_now() + HANG_LIMIT;
    uint32_t now;
    while ((now = tw_barrier_n_waiting(b)) != n) {
        if (tw_test_now() >= end)
            fail_msg("n_waiting is %u after %.0f s, expected %u", now, HANG_LIMIT, n);
        sched_yield();
    }
}

/* One thread calling wait (timeout < 0) or wait_timeout once. */
typedef struct party {
    tw_barrier *b;
    double timeout;
    int rc;
    pthread_t thread;
} party;

static void *party_main(void *arg)
{
    party *p = arg;
    p->rc = p->timeout < 0 ? tw_barrier_wait(p->b) : tw_barrier_wait_timeout(p->b, p->timeout);
    return NULL;
}

static void party_start(party *p, tw_barrier *b, double timeout)
{
    p->b = b;
    p->timeout = timeout;
    p->rc = -1000;
    p->thread = tw_test_start(party_main, p);
}

static void party_join(party *p)
{
    tw_test_join(p->thread);
}

/* Action that counts its runs, remembers its thread, returns `result`. */
typedef struct act {
    atomic_int runs;
    int result;
    pthread_t runner;
} act;

static int action_fn(void *arg)
{
    act *a = arg;
    a->runner = pthread_self();
    atomic_fetch_add(&a->runs, 1);
    return a->result;
}

static void act_init(act *a, int result)
{
    memset(a, 0, sizeof *a);
    atomic_init(&a->runs, 0);
    a->result = result;
}

/* Runs one full cycle of `parties` threads: parties - 1 started threads and
 * the caller, arriving last. Asserts the indices are the arrival order. */
static void full_cycle(tw_barrier *b, uint32_t parties)
{
    party p[8];
    assert_true(parties >= 1 && parties <= 8);
    for (uint32_t i = 0; i + 1 < parties; i++) {
        party_start(&p[i], b, -1.0);
        await_n_waiting(b, i + 1);
    }
    assert_int_equal(tw_barrier_wait(b), (int)parties - 1);
    for (uint32_t i = 0; i + 1 < parties; i++) {
        party_join(&p[i]);
        assert_int_equal(p[i].rc, (int)i);
    }
    assert_int_equal(tw_barrier_n_waiting(b), 0);
    assert_false(tw_barrier_broken(b));
}

/* ---- tests --------------------------------------------------------------- */

static void test_barrier_init_errors_and_zeroed(void **state)
{
    tw_barrier b;
    (void)state;

    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_wait(&b), TW_EINVAL);
    assert_int_equal(tw_barrier_try_wait(&b), TW_EINVAL);
    assert_int_equal(tw_barrier_wait_timeout(&b, 1.0), TW_EINVAL);
    assert_int_equal(tw_barrier_wait_timeout(&b, -1.0), TW_EINVAL);
    assert_int_equal(tw_barrier_parties(&b), 0);
    assert_int_equal(tw_barrier_n_waiting(&b), 0);
    assert_false(tw_barrier_broken(&b));

    assert_int_equal(tw_barrier_init(NULL, 2, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_barrier_init(&b, 0, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_barrier_init(&b, TW_BARRIER_PARTIES_MAX + 1u, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_barrier_init(&b, UINT32_MAX, NULL, NULL), TW_EINVAL);
    /* Refused inits left it as it was. */
    assert_int_equal(tw_barrier_parties(&b), 0);
    assert_int_equal(tw_barrier_wait(&b), TW_EINVAL);

    assert_int_equal(tw_barrier_wait(NULL), TW_EINVAL);
    assert_int_equal(tw_barrier_try_wait(NULL), TW_EINVAL);
    assert_int_equal(tw_barrier_wait_timeout(NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_barrier_abort(NULL), TW_EINVAL);
    assert_int_equal(tw_barrier_reset(NULL), TW_EINVAL);

    assert_int_equal(tw_barrier_init(&b, 2, NULL, NULL), 0);
    assert_int_equal(tw_barrier_parties(&b), 2);
    assert_int_equal(tw_barrier_n_waiting(&b), 0);
    assert_false(tw_barrier_broken(&b));

    /* NaN is refused without joining or breaking anything. */
    assert_int_equal(tw_barrier_wait_timeout(&b, NAN), TW_EINVAL);
    assert_int_equal(tw_barrier_n_waiting(&b), 0);
    assert_false(tw_barrier_broken(&b));
    full_cycle(&b, 2);

    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, TW_BARRIER_PARTIES_MAX, NULL, NULL), 0);
    assert_int_equal(tw_barrier_parties(&b), TW_BARRIER_PARTIES_MAX);
    assert_int_equal(tw_barrier_try_wait(&b), TW_EBUSY);
}

static void test_barrier_single_party(void **state)
{
    static tw_barrier stat_barrier = TW_BARRIER_INIT(1, NULL, NULL);
    tw_barrier b;
    act a;
    (void)state;

    act_init(&a, 0);
    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, 1, action_fn, &a), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(tw_barrier_wait(&b), 0);
    assert_int_equal(tw_barrier_try_wait(&b), 0);
    assert_int_equal(tw_barrier_wait_timeout(&b, 0.0), 0); /* last arrival: no timeout */
    assert_int_equal(tw_barrier_wait_timeout(&b, 1.0), 0);
    assert_int_equal(atomic_load(&a.runs), 13);
    assert_true(pthread_equal(a.runner, pthread_self()));
    assert_false(tw_barrier_broken(&b));
    assert_int_equal(tw_barrier_n_waiting(&b), 0);

    assert_int_equal(tw_barrier_parties(&stat_barrier), 1);
    assert_int_equal(tw_barrier_wait(&stat_barrier), 0);
    assert_int_equal(tw_barrier_wait(&stat_barrier), 0);
}

static void test_barrier_static_initializer(void **state)
{
    static act a;
    static tw_barrier b = TW_BARRIER_INIT(3, action_fn, &a);
    (void)state;

    act_init(&a, 0);
    assert_int_equal(tw_barrier_parties(&b), 3);
    full_cycle(&b, 3);
    full_cycle(&b, 3);
    assert_int_equal(atomic_load(&a.runs), 2);
    assert_true(pthread_equal(a.runner, pthread_self())); /* the last arrival */
}

/* ---- many cycles ---------------------------------------------------------- */

enum { CY_K = 4, CY_N = 3000 };

enum cy_error {
    ERR_INDEX,          /* index outside 0..K-1 or an error */
    ERR_ACTION_EARLY,   /* action ran before all arrived */
    ERR_ACTION_LATE,    /* action ran after somebody was released */
    ERR_PREVIOUS,       /* action ran before the previous cycle finished */
    ERR_ACTION_MISSING, /* released without the cycle's action having run */
    ERR_ACTION_THREAD,  /* action did not run in the last arrival */
    ERR_RUNS,           /* more action runs than cycles */
    ERR_COUNT
};

typedef struct cycles {
    tw_barrier b;
    atomic_int arrived[CY_N], released[CY_N];
    atomic_int idx_count[CY_N][CY_K];
    int action_runs; /* touched only by the action, which the barrier orders */
    int action_done[CY_N];
    int action_thread[CY_N];
    atomic_int errors[ERR_COUNT];
} cycles;

static cycles cy;
static _Thread_local int thread_no = -1;

static void cy_error(enum cy_error e)
{
    atomic_fetch_add(&cy.errors[e], 1);
}

static int cycle_action(void *arg)
{
    cycles *s = arg;
    int c = s->action_runs++;
    if (c >= CY_N) {
        cy_error(ERR_RUNS);
        return 0;
    }
    if (atomic_load(&s->arrived[c]) != CY_K)
        cy_error(ERR_ACTION_EARLY);
    if (atomic_load(&s->released[c]) != 0)
        cy_error(ERR_ACTION_LATE);
    if (c > 0 && atomic_load(&s->released[c - 1]) != CY_K)
        cy_error(ERR_PREVIOUS);
    s->action_thread[c] = thread_no;
    s->action_done[c] = 1;
    return 0;
}

static void *cycle_main(void *arg)
{
    int no = *(const int *)arg;
    thread_no = no;
    for (int c = 0; c < CY_N; c++) {
        int idx;
        atomic_fetch_add(&cy.arrived[c], 1);
        /* All three forms join the same cycles. */
        switch (c % 3) {
        case 0:
            idx = tw_barrier_wait(&cy.b);
            break;
        case 1:
            idx = tw_barrier_wait_timeout(&cy.b, 60.0);
            break;
        default:
            idx = tw_barrier_try_wait(&cy.b);
            if (idx == TW_EBUSY)
                idx = tw_barrier_wait(&cy.b);
            break;
        }
        if (idx < 0 || idx >= CY_K) {
            cy_error(ERR_INDEX);
            continue;
        }
        atomic_fetch_add(&cy.idx_count[c][idx], 1);
        if (!cy.action_done[c])
            cy_error(ERR_ACTION_MISSING);
        else if (idx == CY_K - 1 && cy.action_thread[c] != no)
            cy_error(ERR_ACTION_THREAD);
        atomic_fetch_add(&cy.released[c], 1);
    }
    return NULL;
}

static void test_barrier_indices_and_action_over_cycles(void **state)
{
    static const char *const names[ERR_COUNT] = {
        "bad index", "action before all arrived", "action after a release",
        "action before the previous cycle ended", "released before the action",
        "action not in the last arrival", "too many action runs"};
    int nos[CY_K];
    double start = tw_test_now();
    (void)state;

    memset(&cy, 0, sizeof cy);
    assert_int_equal(tw_barrier_init(&cy.b, CY_K, cycle_action, &cy), 0);
    for (int i = 0; i < CY_K; i++)
        nos[i] = i;
    tw_test_run_threads(CY_K, cycle_main, nos, sizeof nos[0]);
    print_message("%d cycles of %d threads in %.3f s\n", CY_N, CY_K, tw_test_now() - start);

    for (int e = 0; e < ERR_COUNT; e++)
        if (atomic_load(&cy.errors[e]) != 0)
            fail_msg("%s: %d times", names[e], atomic_load(&cy.errors[e]));
    assert_int_equal(cy.action_runs, CY_N);
    for (int c = 0; c < CY_N; c++) {
        assert_int_equal(atomic_load(&cy.released[c]), CY_K);
        for (int i = 0; i < CY_K; i++)
            if (atomic_load(&cy.idx_count[c][i]) != 1)
                fail_msg("cycle %d: index %d returned %d times", c, i,
                         atomic_load(&cy.idx_count[c][i]));
    }
    assert_false(tw_barrier_broken(&cy.b));
    assert_int_equal(tw_barrier_n_waiting(&cy.b), 0);
}

/* ---- breaking ------------------------------------------------------------ */

/* The waiters of a cycle whose action fails, and every later wait, get
 * TW_EBROKEN; reset makes the barrier work again. */
static void test_barrier_action_failure_breaks(void **state)
{
    static const int failures[] = {-5, 1};
    tw_barrier b;
    act a;
    party p[2];
    int expected_runs = 0;
    (void)state;

    act_init(&a, 0);
    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, 3, action_fn, &a), 0);

    for (size_t f = 0; f < sizeof failures / sizeof failures[0]; f++) {
        double t0;

        a.result = failures[f];
        party_start(&p[0], &b, -1.0);
        party_start(&p[1], &b, 60.0);
        await_n_waiting(&b, 2);
        assert_int_equal(tw_barrier_wait(&b), TW_EBROKEN); /* last: runs the action */
        expected_runs++;
        party_join(&p[0]);
        party_join(&p[1]);
        assert_int_equal(p[0].rc, TW_EBROKEN);
        assert_int_equal(p[1].rc, TW_EBROKEN);
        assert_int_equal(atomic_load(&a.runs), expected_runs);
        assert_true(pthread_equal(a.runner, pthread_self()));

        assert_true(tw_barrier_broken(&b));
        assert_int_equal(tw_barrier_n_waiting(&b), 0);
        assert_int_equal(tw_barrier_parties(&b), 3);
        t0 = tw_test_now();
        assert_int_equal(tw_barrier_wait(&b), TW_EBROKEN);
        assert_int_equal(tw_barrier_wait_timeout(&b, 30.0), TW_EBROKEN);
        assert_int_equal(tw_barrier_try_wait(&b), TW_EBROKEN);
        assert_true(tw_test_now() - t0 < HANG_LIMIT); /* at once, not after 30 s */
        assert_int_equal(atomic_load(&a.runs), expected_runs); /* no cycle ran */

        assert_int_equal(tw_barrier_reset(&b), 0);
        assert_false(tw_barrier_broken(&b));
    }

    a.result = 0;
    full_cycle(&b, 3);
    assert_int_equal(atomic_load(&a.runs), expected_runs + 1);
}

static void test_barrier_timeout_breaks(void **state)
{
    tw_barrier b;
    act a;
    party p[2];
    double t0, elapsed;
    int rc;
    (void)state;

    act_init(&a, 0);
    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, 3, action_fn, &a), 0);

    party_start(&p[0], &b, -1.0);
    await_n_waiting(&b, 1);
    t0 = tw_test_now();
    rc = tw_barrier_wait_timeout(&b, SHORT_TIMEOUT);
    elapsed = tw_test_now() - t0;
    assert_int_equal(rc, TW_EBROKEN);
    if (elapsed < SHORT_TIMEOUT)
        fail_msg("gave up after %.9f s, asked for %.9f s", elapsed, SHORT_TIMEOUT);
    assert_true(elapsed < 5.0);
    party_join(&p[0]);
    assert_int_equal(p[0].rc, TW_EBROKEN); /* the forever-waiter was broken too */
    assert_true(tw_barrier_broken(&b));
    assert_int_equal(tw_barrier_n_waiting(&b), 0);
    assert_int_equal(atomic_load(&a.runs), 0);

    /* Later arrivals see the break at once. */
    party_start(&p[0], &b, -1.0);
    party_join(&p[0]);
    assert_int_equal(p[0].rc, TW_EBROKEN);
    assert_int_equal(tw_barrier_try_wait(&b), TW_EBROKEN);

    assert_int_equal(tw_barrier_reset(&b), 0);
    assert_false(tw_barrier_broken(&b));
    full_cycle(&b, 3);
    assert_int_equal(atomic_load(&a.runs), 1);

    /* Timeout 0 does not block: alone in the cycle, it breaks the barrier. */
    t0 = tw_test_now();
    assert_int_equal(tw_barrier_wait_timeout(&b, 0.0), TW_EBROKEN);
    assert_true(tw_test_now() - t0 < HANG_LIMIT);
    assert_true(tw_barrier_broken(&b));
    assert_int_equal(tw_barrier_reset(&b), 0);

    /* Timed waiters whose cycle completes in time get their indices. */
    party_start(&p[0], &b, 60.0);
    await_n_waiting(&b, 1);
    party_start(&p[1], &b, 60.0);
    await_n_waiting(&b, 2);
    assert_int_equal(tw_barrier_wait_timeout(&b, 60.0), 2);
    party_join(&p[0]);
    party_join(&p[1]);
    assert_int_equal(p[0].rc, 0);
    assert_int_equal(p[1].rc, 1);
    assert_false(tw_barrier_broken(&b));
    assert_int_equal(atomic_load(&a.runs), 2);
}

/* One thread calling tw_barrier_wait_timeout(b, -1): a timeout of its own,
 * forever, which the barrier's default must not replace. */
static void *forever_main(void *arg)
{
    party *p = arg;
    p->rc = tw_barrier_wait_timeout(p->b, -1.0);
    return NULL;
}

/* A default timeout (Python's Barrier(parties, action, timeout)): a wait
 * without a timeout of its own gives up after it and breaks the barrier, as
 * a timed wait does; reset keeps it. */
static void test_barrier_default_timeout_breaks(void **state)
{
    tw_barrier b;
    act a;
    party p[2];
    double t0, elapsed;
    int rc;
    (void)state;

    act_init(&a, 0);
    memset(&b, 0xa5, sizeof b); /* init sets every field */
    assert_int_equal(tw_barrier_init_timeout(&b, 3, action_fn, &a, SHORT_TIMEOUT), 0);

    /* A forever-waiter (its own timeout) and a default-waiter: the latter
     * runs out and breaks the cycle for both. */
    p[0].b = &b;
    p[0].rc = -1000;
    p[0].thread = tw_test_start(forever_main, &p[0]);
    await_n_waiting(&b, 1);
    t0 = tw_test_now();
    rc = tw_barrier_wait(&b);
    elapsed = tw_test_now() - t0;
    assert_int_equal(rc, TW_EBROKEN);
    if (elapsed < SHORT_TIMEOUT)
        fail_msg("gave up after %.9f s; the default timeout is %.9f s", elapsed, SHORT_TIMEOUT);
    assert_true(elapsed < 5.0);
    party_join(&p[0]);
    assert_int_equal(p[0].rc, TW_EBROKEN);
    assert_true(tw_barrier_broken(&b));
    assert_int_equal(atomic_load(&a.runs), 0);

    /* reset keeps the default: alone again, the wait runs out again. */
    assert_int_equal(tw_barrier_reset(&b), 0);
    t0 = tw_test_now();
    assert_int_equal(tw_barrier_wait(&b), TW_EBROKEN);
    assert_true(tw_test_now() - t0 >= SHORT_TIMEOUT);
    assert_int_equal(tw_barrier_reset(&b), 0);

    /* Default-waiters whose cycle completes in time get their indices; the
     * last arrival does not wait at all. */
    assert_int_equal(tw_barrier_init_timeout(&b, 3, action_fn, &a, 60.0), 0);
    party_start(&p[0], &b, -1.0);
    await_n_waiting(&b, 1);
    party_start(&p[1], &b, -1.0);
    await_n_waiting(&b, 2);
    assert_int_equal(tw_barrier_wait(&b), 2);
    party_join(&p[0]);
    party_join(&p[1]);
    assert_int_equal(p[0].rc, 0);
    assert_int_equal(p[1].rc, 1);
    assert_false(tw_barrier_broken(&b));
    assert_int_equal(atomic_load(&a.runs), 1);
}

/* A default of 0 (do not block) applies to tw_barrier_wait only: a wait with
 * a timeout of its own keeps it, and the last arrival completes the cycle. */
static void test_barrier_default_timeout_zero_and_own_timeouts(void **state)
{
    tw_barrier b;
    party p[1];
    double t0;
    (void)state;

    assert_int_equal(tw_barrier_init_timeout(&b, 2, NULL, NULL, 0.0), 0);
    t0 = tw_test_now();
    assert_int_equal(tw_barrier_wait(&b), TW_EBROKEN);
    assert_true(tw_test_now() - t0 < HANG_LIMIT);
    assert_true(tw_barrier_broken(&b));
    assert_int_equal(tw_barrier_reset(&b), 0);

    /* Its own timeout wins: with the default (0) it would have broken the
     * barrier at once and never been counted as waiting. */
    party_start(&p[0], &b, 60.0);
    await_n_waiting(&b, 1);
    assert_int_equal(tw_barrier_wait(&b), 1); /* last: completes, no wait */
    party_join(&p[0]);
    assert_int_equal(p[0].rc, 0);

    /* A negative timeout of its own is forever, not the default. */
    p[0].b = &b;
    p[0].rc = -1000;
    p[0].thread = tw_test_start(forever_main, &p[0]);
    await_n_waiting(&b, 1);
    assert_int_equal(tw_barrier_wait_timeout(&b, 60.0), 1);
    party_join(&p[0]);
    assert_int_equal(p[0].rc, 0);
    assert_false(tw_barrier_broken(&b));

    /* try_wait never blocks, default or not. */
    assert_int_equal(tw_barrier_try_wait(&b), TW_EBUSY);
    assert_false(tw_barrier_broken(&b));

    /* A negative default is forever: one party completes cycles alone. */
    assert_int_equal(tw_barrier_init_timeout(&b, 1, NULL, NULL, -1.0), 0);
    assert_int_equal(tw_barrier_wait(&b), 0);
}

/* Bad defaults and the static initialisers: a NaN default is TW_EINVAL at
 * init; through TW_BARRIER_INIT_TIMEOUT, at every wait. TW_BARRIER_INIT and a
 * zeroed barrier have no default. */
static void test_barrier_default_timeout_init(void **state)
{
    tw_barrier b;
    party p[1];
    double t0;
    (void)state;

    assert_int_equal(tw_barrier_init_timeout(NULL, 2, NULL, NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_barrier_init_timeout(&b, 0, NULL, NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_barrier_init_timeout(&b, 2, NULL, NULL, NAN), TW_EINVAL);

    tw_barrier nan_default = TW_BARRIER_INIT_TIMEOUT(2, NULL, NULL, NAN);
    assert_int_equal(tw_barrier_wait(&nan_default), TW_EINVAL);
    assert_int_equal(tw_barrier_n_waiting(&nan_default), 0);
    assert_false(tw_barrier_broken(&nan_default));

    tw_barrier fixed = TW_BARRIER_INIT_TIMEOUT(2, NULL, NULL, SHORT_TIMEOUT);
    t0 = tw_test_now();
    assert_int_equal(tw_barrier_wait(&fixed), TW_EBROKEN);
    assert_true(tw_test_now() - t0 >= SHORT_TIMEOUT);

    /* No default: the first waiter is still there when the second comes. */
    tw_barrier plain = TW_BARRIER_INIT(2, NULL, NULL);
    party_start(&p[0], &plain, -1.0);
    await_n_waiting(&plain, 1);
    assert_int_equal(tw_barrier_wait_timeout(&plain, 60.0), 1);
    party_join(&p[0]);
    assert_int_equal(p[0].rc, 0);

    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_wait(&b), TW_EINVAL); /* zeroed: no parties */
    assert_int_equal(tw_barrier_init(&b, 2, NULL, NULL), 0);
    party_start(&p[0], &b, -1.0);
    await_n_waiting(&b, 1);
    assert_int_equal(tw_barrier_wait(&b), 1);
    party_join(&p[0]);
    assert_int_equal(p[0].rc, 0);
}

static void test_barrier_abort(void **state)
{
    tw_barrier b;
    act a;
    party p[2];
    (void)state;

    act_init(&a, 0);
    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, 3, action_fn, &a), 0);

    party_start(&p[0], &b, -1.0);
    party_start(&p[1], &b, 60.0);
    await_n_waiting(&b, 2);
    assert_int_equal(tw_barrier_abort(&b), 0);
    party_join(&p[0]);
    party_join(&p[1]);
    assert_int_equal(p[0].rc, TW_EBROKEN);
    assert_int_equal(p[1].rc, TW_EBROKEN);
    assert_true(tw_barrier_broken(&b));
    assert_int_equal(tw_barrier_n_waiting(&b), 0);
    assert_int_equal(tw_barrier_wait(&b), TW_EBROKEN);
    assert_int_equal(tw_barrier_try_wait(&b), TW_EBROKEN);
    assert_int_equal(atomic_load(&a.runs), 0);

    assert_int_equal(tw_barrier_reset(&b), 0);
    assert_false(tw_barrier_broken(&b));
    full_cycle(&b, 3);
    assert_int_equal(atomic_load(&a.runs), 1);

    /* Abort with nobody waiting still breaks it for later waits. */
    assert_int_equal(tw_barrier_abort(&b), 0);
    assert_true(tw_barrier_broken(&b));
    assert_int_equal(tw_barrier_wait_timeout(&b, 30.0), TW_EBROKEN);
    assert_int_equal(tw_barrier_reset(&b), 0);
    full_cycle(&b, 3);
    assert_int_equal(atomic_load(&a.runs), 2);
}

static void test_barrier_reset(void **state)
{
    tw_barrier b;
    act a;
    party old[2], fresh[2];
    int seen[3] = {0, 0, 0};
    int idx;
    (void)state;

    act_init(&a, 0);
    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, 3, action_fn, &a), 0);

    /* Reset of an idle barrier changes nothing. */
    assert_int_equal(tw_barrier_reset(&b), 0);
    assert_false(tw_barrier_broken(&b));
    full_cycle(&b, 3);

    party_start(&old[0], &b, -1.0);
    party_start(&old[1], &b, 60.0);
    await_n_waiting(&b, 2);
    assert_int_equal(tw_barrier_reset(&b), 0);
    assert_false(tw_barrier_broken(&b)); /* usable again at once */
    assert_int_equal(tw_barrier_n_waiting(&b), 0);

    /* A new cycle right away, while the old waiters may still be leaving. */
    party_start(&fresh[0], &b, -1.0);
    party_start(&fresh[1], &b, -1.0);
    await_n_waiting(&b, 2);
    idx = tw_barrier_wait(&b);
    party_join(&fresh[0]);
    party_join(&fresh[1]);
    party_join(&old[0]);
    party_join(&old[1]);

    assert_int_equal(old[0].rc, TW_EBROKEN);
    assert_int_equal(old[1].rc, TW_EBROKEN);
    assert_int_equal(idx, 2);
    assert_true(fresh[0].rc >= 0 && fresh[0].rc < 2);
    assert_true(fresh[1].rc >= 0 && fresh[1].rc < 2);
    seen[idx]++;
    seen[fresh[0].rc]++;
    seen[fresh[1].rc]++;
    for (int i = 0; i < 3; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(atomic_load(&a.runs), 2);
    assert_false(tw_barrier_broken(&b));
    full_cycle(&b, 3);
}

static void test_barrier_n_waiting_and_parties(void **state)
{
    tw_barrier b;
    party p[3];
    (void)state;

    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, 4, NULL, NULL), 0);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(tw_barrier_n_waiting(&b), 0);
        for (int i = 0; i < 3; i++) {
            party_start(&p[i], &b, -1.0);
            await_n_waiting(&b, (uint32_t)i + 1);
            assert_int_equal(tw_barrier_parties(&b), 4);
            assert_false(tw_barrier_broken(&b));
        }
        assert_int_equal(tw_barrier_wait(&b), 3);
        for (int i = 0; i < 3; i++) {
            party_join(&p[i]);
            assert_int_equal(p[i].rc, i); /* indices are the order of arrival */
        }
        assert_int_equal(tw_barrier_n_waiting(&b), 0);
    }
}

static void test_barrier_try_wait(void **state)
{
    tw_barrier b;
    act a;
    party p[2];
    (void)state;

    act_init(&a, 0);
    memset(&b, 0, sizeof b);
    assert_int_equal(tw_barrier_init(&b, 3, action_fn, &a), 0);

    assert_int_equal(tw_barrier_try_wait(&b), TW_EBUSY);
    assert_int_equal(tw_barrier_n_waiting(&b), 0);
    assert_false(tw_barrier_broken(&b));

    party_start(&p[0], &b, -1.0);
    await_n_waiting(&b, 1);
    assert_int_equal(tw_barrier_try_wait(&b), TW_EBUSY);
    assert_int_equal(tw_barrier_n_waiting(&b), 1); /* did not join */
    assert_false(tw_barrier_broken(&b));           /* did not break */
    assert_int_equal(atomic_load(&a.runs), 0);

    party_start(&p[1], &b, -1.0);
    await_n_waiting(&b, 2);
    assert_int_equal(tw_barrier_try_wait(&b), 2); /* the last party completes it */
    party_join(&p[0]);
    party_join(&p[1]);
    assert_int_equal(p[0].rc, 0);
    assert_int_equal(p[1].rc, 1);
    assert_int_equal(atomic_load(&a.runs), 1);
    assert_true(pthread_equal(a.runner, pthread_self()));
    assert_false(tw_barrier_broken(&b));
    assert_int_equal(tw_barrier_n_waiting(&b), 0);

    /* A failing action reached through try_wait breaks the cycle too. */
    a.result = -1;
    party_start(&p[0], &b, -1.0);
    party_start(&p[1], &b, -1.0);
    await_n_waiting(&b, 2);
    assert_int_equal(tw_barrier_try_wait(&b), TW_EBROKEN);
    party_join(&p[0]);
    party_join(&p[1]);
    assert_int_equal(p[0].rc, TW_EBROKEN);
    assert_int_equal(p[1].rc, TW_EBROKEN);
    assert_true(tw_barrier_broken(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_barrier_init_errors_and_zeroed),
        cmocka_unit_test(test_barrier_single_party),
        cmocka_unit_test(test_barrier_static_initializer),
        cmocka_unit_test(test_barrier_indices_and_action_over_cycles),
        cmocka_unit_test(test_barrier_action_failure_breaks),
        cmocka_unit_test(test_barrier_timeout_breaks),
        cmocka_unit_test(test_barrier_default_timeout_breaks),
        cmocka_unit_test(test_barrier_default_timeout_zero_and_own_timeouts),
        cmocka_unit_test(test_barrier_default_timeout_init),
        cmocka_unit_test(test_barrier_abort),
        cmocka_unit_test(test_barrier_reset),
        cmocka_unit_test(test_barrier_n_waiting_and_parties),
        cmocka_unit_test(test_barrier_try_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
