/*
 * The adaptive spin-then-sleep policy (src/base/spin_wait.h) that the
 * reactor's loop and pool threads use before sleeping.
 *
 * ready() counts its calls and answers from a script, so each test sees how
 * many times the watcher looked: once means "yielded and gave up", more
 * means "watched". Whether the budget is 50 us or another value does not
 * matter to these tests; what they check is the state machine: success
 * restores the full budget, a full watch that times out halves it, after
 * TW__SPIN_ZERO_CUT halvings only every TW__SPIN_PROBE-th wait watches, a
 * cap of 0 means no watch and teaches nothing, a shorter cap that runs out
 * is a miss, and a thread allowed on one CPU never watches.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <pthread.h>
#include <sched.h>

#include "base/spin_wait.h"
#include "base/thread.h"
#include "platform/wait.h"

typedef struct script {
    unsigned calls;    /* ready() calls so far */
    unsigned ready_at; /* the call that first answers true; 0 = never */
    unsigned flag;     /* atomic: set by another thread; ready once non-zero */
} script;

static bool scripted(const void *arg)
{
    script *s = (script *)arg;
    s->calls++;
    if (__atomic_load_n(&s->flag, __ATOMIC_ACQUIRE))
        return true;
    return s->ready_at != 0 && s->calls >= s->ready_at;
}

static void need_two_cpus(void)
{
    if (tw__spin_limit() == 0)
        skip(); /* this thread may run on one CPU only: it never watches */
}

/* Work already there when the first look comes: true, nothing learnt. */
static void test_ready_at_once(void **state)
{
    (void)state;
    tw__spin_state st = {3, 7};
    script sc = {0, 1, 0};
    assert_true(tw__spin_wait(&st, scripted, &sc, -1));
    assert_int_equal(sc.calls, 1);
    assert_int_equal(st.cut, 3);
    assert_int_equal(st.waits, 7);
}

/* Work arriving during the watch: true, and the full budget is back. */
static void test_seen_while_watching_restores_budget(void **state)
{
    (void)state;
    need_two_cpus();
    /* A watch stalled past its budget (a preempted vCPU) times out instead:
     * try a few times; one that never sees the answer fails every time. */
    bool seen = false;
    for (int i = 0; i < 200 && !seen; i++) {
        tw__spin_state st = {1, 3};
        script sc = {0, 10, 0};
        seen = tw__spin_wait(&st, scripted, &sc, -1);
        if (seen) {
            assert_int_equal(sc.calls, 10);
            assert_int_equal(st.cut, 0);
            assert_int_equal(st.waits, 0);
        } else {
            assert_int_equal(st.cut, 2);
        }
    }
    assert_true(seen);
}

/* A partner on another thread: the watch sees its store. */
typedef struct partner {
    script sc;
    unsigned running; /* atomic: the partner thread has started */
} partner;

static void *set_flag_later(void *arg)
{
    partner *pt = arg;
    __atomic_store_n(&pt->running, 1, __ATOMIC_RELEASE);
    sched_yield();
    __atomic_store_n(&pt->sc.flag, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_sees_another_threads_store(void **state)
{
    (void)state;
    need_two_cpus();
    int seen = 0;
    /* The watch starts once the partner runs (creating a thread can take
     * longer than a budget under load). The partner may still be slower
     * than a whole budget (a stalled vCPU): try again; a watcher that never
     * sees the store fails every time. */
    for (int i = 0; i < 200 && !seen; i++) {
        tw__spin_state st = {0, 0};
        partner pt = {{0, 0, 0}, 0};
        pthread_t t = tw_test_start(set_flag_later, &pt);
        while (!__atomic_load_n(&pt.running, __ATOMIC_ACQUIRE))
            sched_yield();
        seen = tw__spin_wait(&st, scripted, &pt.sc, -1);
        tw_test_join(t);
        if (seen)
            assert_int_equal(st.cut, 0);
        else
            assert_int_equal(st.cut, 1);
    }
    assert_true(seen);
}

/* Nothing ever arrives: each full watch halves the budget; after
 * TW__SPIN_ZERO_CUT of them the thread only yields, except that every
 * TW__SPIN_PROBE-th wait watches with the full budget again. */
static void test_timeouts_decay_then_probe(void **state)
{
    (void)state;
    need_two_cpus();
    tw__spin_state st = {0, 0};
    for (unsigned i = 1; i <= TW__SPIN_ZERO_CUT; i++) {
        script sc = {0, 0, 0};
        assert_false(tw__spin_wait(&st, scripted, &sc, -1));
        assert_true(sc.calls > 1); /* it watched */
        assert_int_equal(st.cut, i);
    }
    for (int round = 0; round < 2; round++) {
        for (unsigned i = 1; i < TW__SPIN_PROBE; i++) {
            script sc = {0, 0, 0};
            assert_false(tw__spin_wait(&st, scripted, &sc, -1));
            assert_int_equal(sc.calls, 1); /* yielded, looked once */
        }
        script probe = {0, 0, 0};
        assert_false(tw__spin_wait(&st, scripted, &probe, -1));
        assert_true(probe.calls > 1); /* the probe watched */
        assert_int_equal(st.cut, TW__SPIN_ZERO_CUT); /* a failed probe changes nothing */
    }
    /* A probe that succeeds brings the full budget back. */
    for (unsigned i = 1; i < TW__SPIN_PROBE; i++) {
        script sc = {0, 0, 0};
        assert_false(tw__spin_wait(&st, scripted, &sc, -1));
    }
    script hit = {0, 5, 0};
    assert_true(tw__spin_wait(&st, scripted, &hit, -1));
    assert_int_equal(st.cut, 0);
    assert_int_equal(st.waits, 0);
}

/* A cap of 0 (a timer due now) allows one look and teaches nothing. */
static void test_cap_zero_looks_once_and_keeps_state(void **state)
{
    (void)state;
    need_two_cpus();
    tw__spin_state st = {2, 0};
    script sc = {0, 0, 0};
    assert_false(tw__spin_wait(&st, scripted, &sc, 0));
    assert_int_equal(sc.calls, 1);
    assert_int_equal(st.cut, 2);
}

/* A short cap (a timer due soon) is a partial watch: it looks more than
 * once, and running out of it counts as a miss, so that a loop whose timers
 * are always nearer than the budget does not watch every time. */
static void test_short_cap_runs_out_as_a_miss(void **state)
{
    (void)state;
    need_two_cpus();
    tw__spin_state st = {1, 0};
    script sc = {0, 0, 0};
    assert_false(tw__spin_wait(&st, scripted, &sc, 2000));
    assert_true(sc.calls > 1);
    assert_int_equal(st.cut, 2);
}

/* A thread allowed on one CPU only never watches: the thread it waits for
 * can only run once it stops. */
typedef struct one_cpu_result {
    int pinned; /* pinned, and the backend sees the affinity */
    unsigned calls;
    bool got;
    tw__spin_state st;
} one_cpu_result;

static void *on_one_cpu(void *arg)
{
    one_cpu_result *res = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(sched_getcpu(), &set);
    /* The portable backend counts the CPUs online, not the affinity. */
    res->pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0 &&
                  tw__thread_cpus() == 1;
    /* A new thread: its spin limit is measured now, under the new affinity. */
    script sc = {0, 0, 0};
    res->got = tw__spin_wait(&res->st, scripted, &sc, -1);
    res->calls = sc.calls;
    return NULL;
}

static void test_one_cpu_never_watches(void **state)
{
    (void)state;
    one_cpu_result res = {0};
    tw_test_join(tw_test_start(on_one_cpu, &res));
    if (!res.pinned)
        skip();
    assert_false(res.got);
    assert_int_equal(res.calls, 1);
    assert_int_equal(res.st.cut, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_at_once),
        cmocka_unit_test(test_seen_while_watching_restores_budget),
        cmocka_unit_test(test_sees_another_threads_store),
        cmocka_unit_test(test_timeouts_decay_then_probe),
        cmocka_unit_test(test_cap_zero_looks_once_and_keeps_state),
        cmocka_unit_test(test_short_cap_runs_out_as_a_miss),
        cmocka_unit_test(test_one_cpu_never_watches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
