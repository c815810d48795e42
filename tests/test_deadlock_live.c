/*
 * Deadlock detection, the live check (docs/deadlocks.md): a thread that has
 * waited longer than the threshold on a twine primitive looks at what every
 * waiting thread waits for and reports a set of threads that wait for each
 * other, once, naming each wait and each holder with its file:line. It
 * covers waits with no order edge: a Semaphore held as a lock, an Event whose
 * only known setter waits too.
 *
 * This file defines TW_DEBUG itself, so its calls take the tracking paths
 * whatever the library's build (the Event waits count only in a library
 * built with TW_DEBUG, where the test is skipped otherwise). The threshold
 * is lowered to 50 ms; every deadlock here is made of timed waits, which end
 * it when they time out, so a missing report fails the test instead of
 * hanging it. Threads meet at tallies (pthreads), never at twine objects
 * other than the ones under test, and never by sleeping.
 */
#define TW_DEBUG 1
#include "harness.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT 30.0
#define STUCK 3.0 /* seconds each deadlocked wait lasts before timing out */

/* ---- reports ---------------------------------------------------------------- */

#define KEEP 16
static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int code;
    char function[64];
    char message[2048];
} kept[KEEP];
static int n_kept;

static void keep(void *ctx, const tw_diag *d)
{
    (void)ctx;
    pthread_mutex_lock(&kept_mu);
    if (n_kept < KEEP) {
        kept[n_kept].code = d->code;
        snprintf(kept[n_kept].function, sizeof kept[n_kept].function, "%s",
                 d->function ? d->function : "");
        snprintf(kept[n_kept].message, sizeof kept[n_kept].message, "%s",
                 d->message ? d->message : "");
    }
    n_kept++;
    pthread_mutex_unlock(&kept_mu);
    if (getenv("TW_TEST_ECHO")) /* to read the reports: TW_TEST_ECHO=1 */
        fprintf(stderr, "report (%s) in %s: %s\n", tw_err_name(d->code), d->function,
                d->message);
}

/* The number of reports whose message starts with `prefix`. */
static int count(const char *prefix)
{
    int n = 0;
    pthread_mutex_lock(&kept_mu);
    for (int i = 0; i < n_kept && i < KEEP; i++)
        if (strncmp(kept[i].message, prefix, strlen(prefix)) == 0)
            n++;
    pthread_mutex_unlock(&kept_mu);
    return n;
}

/* The first report starting with prefix (NULL if none). */
static const char *find(const char *prefix)
{
    for (int i = 0; i < n_kept && i < KEEP; i++)
        if (strncmp(kept[i].message, prefix, strlen(prefix)) == 0)
            return kept[i].message;
    return NULL;
}

static void expect_in(const char *m, const char *needle)
{
    assert_non_null(m);
    if (!strstr(m, needle))
        fail_msg("the report lacks \"%s\": %s", needle, m);
}

static const char *at(int line)
{
    static char buf[8][64];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, 64, "test_deadlock_live.c:%d", line);
    return b;
}

static const char *thread_no(uint32_t tid)
{
    static char buf[4][32];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, 32, "thread %u ", (unsigned)tid);
    return b;
}

/* Waits (yielding) until a report starting with prefix has come. */
static void await_report(const char *prefix)
{
    double t0 = tw_test_now();
    while (count(prefix) == 0) {
        if (tw_test_now() - t0 > LIMIT)
            fail_msg("no \"%s\" report after %.0f s", prefix, LIMIT);
        sched_yield();
    }
}

static int setup(void **state)
{
    (void)state;
    pthread_mutex_lock(&kept_mu);
    n_kept = 0;
    pthread_mutex_unlock(&kept_mu);
    tw_set_diag_hook(keep, NULL);
    assert_int_equal(tw_deadlock_set_threshold(0.05), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tw_deadlock_set_threshold(1.0);
    tw_set_diag_hook(NULL, NULL);
    return 0;
}

/* ---- two Locks, two threads -------------------------------------------------- */

typedef struct pair {
    tw_lock a, b;
    tw_test_tally both_hold; /* each thread adds one once it holds its first */
    uint32_t tid[2];
    int line_first[2], line_wait[2];
    int rc[2];
} pair;

typedef struct side {
    pair *p;
    int me;
} side;

static void *take_two(void *arg)
{
    side *s = arg;
    pair *p = s->p;
    tw_lock *first = s->me ? &p->b : &p->a, *second = s->me ? &p->a : &p->b;
    p->tid[s->me] = tw__self();
    p->line_first[s->me] = __LINE__ + 1;
    tw_lock_acquire(first);
    tw_test_tally_add(&p->both_hold);
    tw_test_must_reach(&p->both_hold, 2, LIMIT, "both first acquires");
    p->line_wait[s->me] = __LINE__ + 1;
    p->rc[s->me] = tw_lock_acquire_timeout(second, STUCK);
    if (p->rc[s->me] == 0)
        tw_lock_release(second);
    tw_lock_release(first);
    return NULL;
}

/* Each thread holds one Lock and waits, with a timeout, for the other's: a
 * deadlock until the timeouts. Reported once, with both waits and both
 * holds; the order inversion is reported too, before either thread waits. */
static void test_two_threads_timed_acquires(void **state)
{
    (void)state;
    pair p;
    memset(&p, 0, sizeof p);
    tw_lock_init(&p.a);
    tw_lock_init(&p.b);
    tw_test_tally_init(&p.both_hold);
    side s0 = {&p, 0}, s1 = {&p, 1};
    pthread_t t0 = tw_test_start(take_two, &s0), t1 = tw_test_start(take_two, &s1);
    await_report("deadlock:");
    tw_test_join(t0);
    tw_test_join(t1);
    tw_test_tally_destroy(&p.both_hold);
    /* A deadlock: the first wait to time out ends it (the other thread then
     * gets its Lock). */
    assert_true(p.rc[0] == TW_ETIMEDOUT || p.rc[1] == TW_ETIMEDOUT);
    assert_int_equal(count("deadlock:"), 1);
    assert_int_equal(count("lock order inversion"), 1);
    const char *m = find("deadlock:");
    for (int i = 0; i < 2; i++) {
        expect_in(m, thread_no(p.tid[i]));
        expect_in(m, at(p.line_first[i]));
        expect_in(m, at(p.line_wait[i]));
    }
    expect_in(m, "tw_lock_acquire_timeout");
}

/* ---- a Semaphore held as a lock ------------------------------------------------- */

typedef struct semcase {
    tw_sem slots; /* one token: a lock */
    tw_lock l;
    tw_test_tally both;
    int rc[2];
} semcase;

static void *hold_sem_want_lock(void *arg)
{
    semcase *c = arg;
    tw_sem_acquire(&c->slots);
    tw_test_tally_add(&c->both);
    tw_test_must_reach(&c->both, 2, LIMIT, "both holds");
    c->rc[0] = tw_lock_acquire_timeout(&c->l, STUCK);
    if (c->rc[0] == 0)
        tw_lock_release(&c->l);
    tw_sem_release(&c->slots, 1);
    return NULL;
}

static void *hold_lock_want_sem(void *arg)
{
    semcase *c = arg;
    tw_lock_acquire(&c->l);
    tw_test_tally_add(&c->both);
    tw_test_must_reach(&c->both, 2, LIMIT, "both holds");
    c->rc[1] = tw_sem_acquire_timeout(&c->slots, STUCK);
    if (c->rc[1] == 0)
        tw_sem_release(&c->slots, 1);
    tw_lock_release(&c->l);
    return NULL;
}

static void test_semaphore_held_as_a_lock(void **state)
{
    (void)state;
    semcase c;
    memset(&c, 0, sizeof c);
    tw_sem_init(&c.slots, 1);
    tw_lock_init(&c.l);
    tw_test_tally_init(&c.both);
    pthread_t a = tw_test_start(hold_sem_want_lock, &c), b = tw_test_start(hold_lock_want_sem, &c);
    await_report("deadlock:");
    tw_test_join(a);
    tw_test_join(b);
    tw_test_tally_destroy(&c.both);
    assert_true(c.rc[0] == TW_ETIMEDOUT || c.rc[1] == TW_ETIMEDOUT);
    assert_int_equal(count("deadlock:"), 1);
    expect_in(find("deadlock:"), "Semaphore");
    expect_in(find("deadlock:"), "tw_sem_acquire_timeout");
}

/* ---- an Event whose only setter waits too -------------------------------------- */

typedef struct evcase {
    tw_event ready;
    tw_lock l;
    tw_test_tally step;
    uint32_t setter;
    int rc_wait, rc_lock;
} evcase;

/* The setter sets the Event once (round one goes well), then, for round two,
 * wants the Lock the waiter holds before it would set it again. */
static void *setter(void *arg)
{
    evcase *c = arg;
    c->setter = tw__self();
    tw_event_set(&c->ready);
    tw_test_tally_add(&c->step); /* 1: set once */
    tw_test_must_reach(&c->step, 2, LIMIT, "the waiter's round two");
    c->rc_lock = tw_lock_acquire_timeout(&c->l, STUCK);
    if (c->rc_lock == 0) {
        tw_event_set(&c->ready);
        tw_lock_release(&c->l);
    }
    return NULL;
}

static void test_event_whose_only_setter_waits(void **state)
{
    (void)state;
    if (tw_test_build_has_tw_debug() != 1)
        skip(); /* Event waits count only in a library built with TW_DEBUG */
    /* Static: an object on a stack is at an address other objects had
     * before, and the setters they had are not this one's. */
    static evcase c;
    memset(&c, 0, sizeof c);
    tw_event_init(&c.ready);
    tw_lock_init(&c.l);
    tw_test_tally_init(&c.step);
    pthread_t t = tw_test_start(setter, &c);
    tw_test_must_reach(&c.step, 1, LIMIT, "the first set");
    assert_int_equal(tw_event_wait_timeout(&c.ready, 0), 0);
    tw_event_clear(&c.ready);
    tw_lock_acquire(&c.l);
    tw_test_tally_add(&c.step); /* 2 */
    c.rc_wait = tw_event_wait_timeout(&c.ready, STUCK);
    tw_lock_release(&c.l);
    tw_test_join(t);
    tw_test_tally_destroy(&c.step);
    assert_int_equal(c.rc_wait, TW_ETIMEDOUT);
    assert_int_equal(count("deadlock:"), 1);
    const char *m = find("deadlock:");
    expect_in(m, "Event");
    expect_in(m, thread_no(c.setter));
    expect_in(m, "only thread");
}

/* ---- waits that are no deadlock --------------------------------------------------- */

typedef struct busy {
    tw_lock l;
    tw_test_tally held, waiter_parked;
} busy;

/* Holds the Lock, without waiting on anything of twine's, until the main
 * thread has waited for it for several thresholds. */
static void *hold_while_busy(void *arg)
{
    busy *b = arg;
    tw_lock_acquire(&b->l);
    tw_test_tally_add(&b->held);
    while (__atomic_load_n(&b->l.word, __ATOMIC_ACQUIRE) != 2) /* the waiter parked */
        sched_yield();
    tw_test_must_reach(&b->waiter_parked, 1, LIMIT, "the waiter's timeout");
    tw_lock_release(&b->l);
    return NULL;
}

/* A waiter whose holder runs is not deadlocked, however long it waits. */
static void test_holder_running_not_reported(void **state)
{
    (void)state;
    busy b;
    memset(&b, 0, sizeof b);
    tw_lock_init(&b.l);
    tw_test_tally_init(&b.held);
    tw_test_tally_init(&b.waiter_parked);
    pthread_t t = tw_test_start(hold_while_busy, &b);
    tw_test_must_reach(&b.held, 1, LIMIT, "the holder's acquire");
    assert_int_equal(tw_lock_acquire_timeout(&b.l, 0.3), TW_ETIMEDOUT); /* 6 thresholds */
    tw_test_tally_add(&b.waiter_parked);
    tw_test_join(t);
    tw_test_tally_destroy(&b.held);
    tw_test_tally_destroy(&b.waiter_parked);
    assert_int_equal(n_kept, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_threads_timed_acquires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_semaphore_held_as_a_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_whose_only_setter_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_holder_running_not_reported, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
