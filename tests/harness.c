#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

uint64_t tw_test_scaled(uint64_t n, uint64_t floor)
{
    const char *s = getenv("TW_TEST_SCALE");
    double scale = s ? strtod(s, NULL) : 1.0;
    uint64_t v;
    if (!(scale > 0.0) || scale > 1.0)
        scale = 1.0;
    v = (uint64_t)((double)n * scale);
    return v < floor ? floor : v;
}

pthread_t tw_test_start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, fn, arg);
    assert_int_equal(rc, 0);
    return t;
}

void *tw_test_join(pthread_t t)
{
    void *ret = NULL;
    assert_int_equal(pthread_join(t, &ret), 0);
    return ret;
}

void tw_test_run_threads(int n, void *(*fn)(void *), void *base, size_t stride)
{
    pthread_t *ts = calloc((size_t)n, sizeof *ts);
    assert_non_null(ts);
    for (int i = 0; i < n; i++)
        ts[i] = tw_test_start(fn, (char *)base + (size_t)i * stride);
    for (int i = 0; i < n; i++)
        tw_test_join(ts[i]);
    free(ts);
}

double tw_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tw_test_check_elapsed_at_least(double t0, double t1, double asked)
{
    double elapsed = t1 - t0;
    if (elapsed < asked - TW_TEST_ROUNDING_SLACK)
        fail_msg("timeout %.3f s returned early, after %.9f s", asked, elapsed);
    if (elapsed > asked + 5.0)
        fail_msg("timeout %.3f s returned only after %.3f s", asked, elapsed);
}

void tw_test_tally_init(tw_test_tally *t)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_init(&t->mu, NULL);
    t->count = 0;
}

void tw_test_tally_destroy(tw_test_tally *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

void tw_test_tally_add(tw_test_tally *t)
{
    pthread_mutex_lock(&t->mu);
    t->count++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

int tw_test_tally_get(tw_test_tally *t)
{
    int n;
    pthread_mutex_lock(&t->mu);
    n = t->count;
    pthread_mutex_unlock(&t->mu);
    return n;
}

bool tw_test_tally_wait(tw_test_tally *t, int n, double seconds)
{
    struct timespec until;
    bool ok;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)seconds;
    until.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->mu);
    while (t->count < n) {
        if (pthread_cond_timedwait(&t->cv, &t->mu, &until) != 0 && t->count < n)
            break;
    }
    ok = t->count >= n;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void tw_test_must_reach(tw_test_tally *t, int n, double seconds, const char *what)
{
    if (!tw_test_tally_wait(t, n, seconds)) {
        fprintf(stderr, "FATAL: %s: %d of %d threads proceeded within %.0f s\n", what,
                tw_test_tally_get(t), n, seconds);
        abort();
    }
}

struct bounded_arg {
    void *(*fn)(void *);
    void *arg;
    tw_test_tally *done;
};

static void *bounded_main(void *p)
{
    struct bounded_arg *b = p;
    b->fn(b->arg);
    tw_test_tally_add(b->done);
    return NULL;
}

void tw_test_run_threads_bounded(int n, void *(*fn)(void *), void *base, size_t stride,
                                 const char *what)
{
    struct bounded_arg args[16];
    pthread_t t[16];
    tw_test_tally done;
    assert_true(n <= 16);
    tw_test_tally_init(&done);
    for (int i = 0; i < n; i++) {
        args[i] = (struct bounded_arg){fn, (char *)base + (size_t)i * stride, &done};
        t[i] = tw_test_start(bounded_main, &args[i]);
    }
    tw_test_must_reach(&done, n, 60.0, what);
    for (int i = 0; i < n; i++)
        tw_test_join(t[i]);
    tw_test_tally_destroy(&done);
}

int tw_test_count_task(void *arg)
{
    __atomic_fetch_add((int *)arg, 1, __ATOMIC_SEQ_CST);
    return 0;
}

int tw_test_set_event_task(void *arg)
{
    tw_event_set(arg);
    return 0;
}

void tw_test_wait_event(tw_event *e, double limit)
{
    assert_int_equal(tw_event_wait_timeout(e, limit), 0);
}

void tw_test_log_add(tw_lock *lock, size_t *n, int *v, size_t cap, int value)
{
    tw_lock_acquire(lock);
    if (*n < cap)
        v[*n] = value;
    (*n)++;
    tw_lock_release(lock);
}

size_t tw_test_log_len(tw_lock *lock, const size_t *n)
{
    size_t got;
    tw_lock_acquire(lock);
    got = *n;
    tw_lock_release(lock);
    return got;
}

void tw_test_expect_log(const int *got, size_t got_n, const int *want, size_t n)
{
    assert_int_equal(got_n, n);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("log[%zu] = %d, expected %d", i, got[i], want[i]);
}

void tw_test_settle(tw_worker *w, bool memory, bool thread, double limit)
{
    if (memory) {
        while (tw_memory_worker_perform(w, NULL))
            ;
    } else if (thread) {
        tw_event done = TW_EVENT_INIT;
        assert_int_equal(tw_worker_do(w, tw_test_set_event_task, &done), 0);
        tw_test_wait_event(&done, limit);
    }
}
