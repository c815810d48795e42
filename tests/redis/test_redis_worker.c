/*
 * The pool across machines (twine/redis.h): workers taking queue entries and
 * running each on a thread pool. Every entry processed exactly once by two
 * workers on two connections (two "processes"), acknowledged on success;
 * tasks that fail are redelivered and succeed later; an entry that always
 * fails ends in the dead-letter stream; stop waits for the tasks in flight.
 */
#include "util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXN = 512 };

typedef struct job_state {
    atomic_int runs[MAXN];     /* times each job ran */
    atomic_int ok[MAXN];       /* times it succeeded */
    atomic_int fail_first;     /* even jobs fail their first run */
    atomic_int poison;         /* job 0 always fails */
    tw_event *hold;            /* tasks wait for it when set */
    atomic_int started;
} job_state;

static tw_result job(const tw_redis_entry *e, void *arg, tw_cancel *cancel)
{
    job_state *s = arg;
    (void)cancel;
    int i = atoi(e->data);
    if (i < 0 || i >= MAXN)
        return tw_result_fail(TW_EINVAL, "bad job %s", e->data);
    atomic_fetch_add(&s->started, 1);
    if (s->hold)
        tw_event_wait(s->hold);
    int run = atomic_fetch_add(&s->runs[i], 1);
    if (atomic_load(&s->poison) && i == 0)
        return tw_result_fail(TW_EIO, "job 0 always fails");
    if (atomic_load(&s->fail_first) && i % 2 == 0 && run == 0)
        return tw_result_fail(TW_EIO, "job %d fails once", i);
    atomic_fetch_add(&s->ok[i], 1);
    return tw_test_int_value(i);
}

static void put_jobs(tw_reactor *r, tw_redis_queue *q, int n)
{
    for (int i = 0; i < n; i++) {
        char buf[16];
        int len = snprintf(buf, sizeof buf, "%d", i);
        tw_deferred *d;
        assert_rc(tw_redis_queue_put(q, buf, (size_t)len, &d), 0);
        tw_redis_reply_free(rt_reply(r, d));
    }
}

static int sum(atomic_int *v, int n)
{
    int s = 0;
    for (int i = 0; i < n; i++)
        s += atomic_load(&v[i]);
    return s;
}

static void stop(tw_reactor *r, tw_redis_worker *w)
{
    tw_deferred *d;
    assert_rc(tw_redis_worker_stop(w, &d), 0);
    tw_result res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
}

static tw_redis_queue_config qcfg(const char *stream, const char *consumer)
{
    tw_redis_queue_config cfg = TW_REDIS_QUEUE_CONFIG_INIT;
    cfg.stream = stream;
    cfg.consumer = consumer;
    cfg.block = 0.1;
    return cfg;
}

/* Two workers on two connections share the stream: each job runs exactly
 * once, every entry is acknowledged. */
static void test_two_workers(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c1 = rt_connect(r), *c2 = rt_connect(r);
    tw_redis_queue_config a = qcfg("work", "one"), b = qcfg("work", "two");
    tw_redis_queue *q1, *q2;
    assert_rc(tw_redis_queue_open(c1, &a, &q1), 0);
    assert_rc(tw_redis_queue_open(c2, &b, &q2), 0);
    int n = (int)tw_test_scaled(MAXN, 40);
    static job_state s;
    memset(&s, 0, sizeof s);
    put_jobs(r, q1, n);
    tw_redis_worker *w1, *w2;
    assert_rc(tw_redis_worker_start(q1, NULL, 4, job, &s, &w1), 0);
    assert_rc(tw_redis_worker_start(q2, NULL, 4, job, &s, &w2), 0);
    double deadline = tw_test_now() + 60;
    tw_redis_worker_stats s1, s2;
    do {
        assert_rc(tw_reactor_iterate(r, 0.02), 0);
        tw_redis_worker_stats_get(w1, &s1);
        tw_redis_worker_stats_get(w2, &s2);
    } while (s1.acked + s2.acked < (uint64_t)n && tw_test_now() < deadline);
    assert_int_equal(s1.acked + s2.acked, n);
    assert_int_equal(s1.done + s2.done, n);
    assert_int_equal(s1.failed + s2.failed, 0);
    assert_true(s1.done > 0 && s2.done > 0); /* both took part */
    for (int i = 0; i < n; i++)
        assert_int_equal(atomic_load(&s.runs[i]), 1);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN work"), 0);
    stop(r, w1);
    stop(r, w2);
    assert_rc(tw_redis_queue_close(q1), 0);
    assert_rc(tw_redis_queue_close(q2), 0);
    rt_close(r, c1);
    rt_close(r, c2);
    rt_reactor_free(r);
}

/* Tasks that fail leave their entries pending: claimed again after
 * claim_idle, they succeed; one that always fails is dead-lettered after
 * max_deliveries. */
static void test_failures_redelivered(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("retry", "w");
    cfg.claim_idle = 0.2;
    cfg.max_deliveries = 3;
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    enum { N = 20 };
    static job_state s;
    memset(&s, 0, sizeof s);
    atomic_store(&s.fail_first, 1);
    atomic_store(&s.poison, 1);
    put_jobs(r, q, N);
    tw_redis_worker *w;
    assert_rc(tw_redis_worker_start(q, NULL, 3, job, &s, &w), 0);
    double deadline = tw_test_now() + 30;
    tw_redis_queue_stats qs;
    do {
        assert_rc(tw_reactor_iterate(r, 0.02), 0);
        tw_redis_queue_stats_get(q, &qs);
    } while ((sum(s.ok, N) < N - 1 || qs.dead < 1) && tw_test_now() < deadline);
    for (int i = 1; i < N; i++) {
        assert_int_equal(atomic_load(&s.ok[i]), 1);
        assert_int_equal(atomic_load(&s.runs[i]), i % 2 == 0 ? 2 : 1);
    }
    assert_int_equal(atomic_load(&s.ok[0]), 0);
    assert_int_equal(atomic_load(&s.runs[0]), 3); /* delivered max_deliveries times */
    assert_int_equal(qs.dead, 1);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN retry:dead"), 1);
    tw_redis_worker_stats ws;
    tw_redis_worker_stats_get(w, &ws);
    assert_int_equal(ws.done, N - 1);
    assert_int_equal(ws.failed, 3 + (N - 1) / 2);
    stop(r, w);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN retry"), 0);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

static void *release_later(void *arg)
{
    tw_event_set(arg);
    return NULL;
}

/* stop fires only after the tasks running have finished and been acked. */
static void test_stop_waits(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("stopq", "w");
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    static job_state s;
    memset(&s, 0, sizeof s);
    tw_event hold = TW_EVENT_INIT;
    s.hold = &hold;
    put_jobs(r, q, 3);
    tw_redis_worker *w;
    assert_rc(tw_redis_worker_start(q, NULL, 2, job, &s, &w), 0);
    double deadline = tw_test_now() + 10;
    while (atomic_load(&s.started) < 2 && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(atomic_load(&s.started), 2);
    tw_deferred *d;
    assert_rc(tw_redis_worker_stop(w, &d), 0);
    tw_test_capture cap;
    tw_test_capture_add(d, &cap);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(cap.calls, 0); /* two tasks still held */
    tw_test_join(tw_test_start(release_later, &hold));
    while (!cap.calls && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(cap.calls, 1);
    assert_int_equal(sum(s.ok, 3), 2); /* the third was never taken */
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN stopq"), 1);
    tw_test_capture_release(&cap);
    tw_deferred_unref(d);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A queue that keeps failing its gets (the stream's key holds a string): the
 * worker says so through the diagnostic hook and tries again, instead of
 * stopping in silence; stop still ends it. */
static void test_failing_queue_reported(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_reply_free(rt_cmd(r, c, "SET %s %s", "notastream", "text"));
    tw_redis_queue_config cfg = qcfg("notastream", "w");
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    static job_state s;
    memset(&s, 0, sizeof s);
    tw_redis_worker *w;
    assert_rc(tw_redis_worker_start(q, NULL, 2, job, &s, &w), 0);
    double deadline = tw_test_now() + 10;
    while (tw_test_diag_count_kind(TW_DIAG_WARNING) < 2 && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.05), 0);
    const tw_test_diag *d = tw_test_diag_find(TW_DIAG_WARNING);
    assert_non_null(d);
    assert_non_null(strstr(d->message, "WRONGTYPE"));
    stop(r, w);
    tw_test_diag_reset();
    assert_int_equal(atomic_load(&s.started), 0);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

static void test_bad_input(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("badw", "w");
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    tw_redis_worker *w = NULL;
    static job_state s;
    assert_rc(tw_redis_worker_start(NULL, NULL, 1, job, &s, &w), TW_EINVAL);
    assert_rc(tw_redis_worker_start(q, NULL, 0, job, &s, &w), TW_EINVAL);
    assert_rc(tw_redis_worker_start(q, NULL, 1, NULL, &s, &w), TW_EINVAL);
    assert_rc(tw_redis_worker_start(q, NULL, 1, job, &s, NULL), TW_EINVAL);
    assert_null(w);
    assert_rc(tw_redis_worker_stop(NULL, NULL), TW_EINVAL);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, rt_setup, rt_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_two_workers),
        T(test_failures_redelivered),
        T(test_stop_waits),
        T(test_failing_queue_reported),
        T(test_bad_input),
    };
    return cmocka_run_group_tests(tests, rt_group_setup, rt_group_teardown);
}
