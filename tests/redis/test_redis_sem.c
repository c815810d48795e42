/*
 * The distributed semaphore (twine/redis.h) against a real redis-server:
 * permits as expiring ids in a sorted set, FIFO among one semaphore's
 * waiters, a release waking another process by pub/sub (and a release
 * missed while its subscriber reconnected noticed then), a dead holder's
 * permit expiring back into the pool, renewal by the watchdog and its stop
 * at release, a lost permit, a watcher releasing the permit again from its
 * callback (refused), an acquire meeting a server still loading its data,
 * a release lost with its connection sent again,
 * run() on success and failure, the limit reached (sections held inside
 * until the test lets them go) and never exceeded under contention from
 * several connections (exact counts), and bad input.
 */
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void iterate_for(tw_reactor *r, double seconds)
{
    double end = tw_test_now() + seconds;
    while (tw_test_now() < end)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
}

static tw_redis_permit *take(tw_reactor *r, tw_deferred *d)
{
    tw_result res = rt_wait(r, d);
    if (tw_result_is_failure(res))
        fail_msg("no permit: %s", tw_failure_message(tw_result_as_failure(res)));
    return res.ptr;
}

typedef struct log {
    int n;
    int order[64];
    tw_redis_permit *p[64];
} log_t;

typedef struct slot {
    log_t *log;
    int index;
} slot;

static tw_result note(tw_result r, void *arg)
{
    slot *s = arg;
    assert_false(tw_result_is_failure(r));
    s->log->p[s->log->n] = r.ptr;
    s->log->order[s->log->n++] = s->index;
    return r;
}

static void test_permits(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_sem *s;
    assert_rc(tw_redis_sem_create(c, "three", 3, 5.0, &s), 0);
    log_t log = {0};
    slot sl[6];
    for (int i = 0; i < 6; i++) {
        tw_deferred *d;
        sl[i] = (slot){&log, i};
        assert_rc(tw_redis_sem_acquire(s, &d), 0);
        assert_rc(tw_deferred_add_callback(d, note, &sl[i]), 0);
        tw_deferred_unref(d);
    }
    double deadline = tw_test_now() + 10;
    while (log.n < 3 && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    iterate_for(r, 0.1);
    assert_int_equal(log.n, 3);
    assert_int_equal(tw_redis_sem_held(s), 3);
    assert_int_equal(tw_redis_sem_waiting(s), 3);
    assert_int_equal(tw_test_redis_int(&rt_server, "ZCARD twine:sem:{three}"), 3);
    assert_string_not_equal(tw_redis_permit_id(log.p[0]), tw_redis_permit_id(log.p[1]));
    assert_true(tw_redis_permit_time_left(log.p[0]) > 4.0);
    /* each release lets the next waiter in, in order */
    for (int k = 0; k < 3; k++) {
        assert_rc(tw_redis_sem_release(s, log.p[k], NULL), 0);
        while (log.n < 4 + k && tw_test_now() < deadline)
            assert_rc(tw_reactor_iterate(r, 0.01), 0);
        assert_int_equal(log.n, 4 + k);
    }
    for (int i = 0; i < 6; i++)
        assert_int_equal(log.order[i], i);
    assert_rc(tw_redis_sem_destroy(s), TW_EBUSY);
    for (int k = 3; k < 6; k++) {
        tw_deferred *d;
        assert_rc(tw_redis_sem_release(s, log.p[k], &d), 0);
        tw_result res = rt_wait(r, d);
        assert_false(tw_result_is_failure(res));
    }
    assert_int_equal(tw_test_redis_int(&rt_server, "EXISTS twine:sem:{three}"), 0);
    assert_rc(tw_redis_sem_destroy(s), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* Another process (connection) waits; a release wakes it by pub/sub, long
 * before any permit would expire. */
static void test_wake_other_process(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *ca = rt_connect(r), *cb = rt_connect(r);
    tw_redis_sem *a, *b;
    assert_rc(tw_redis_sem_create(ca, "two", 2, 30.0, &a), 0);
    assert_rc(tw_redis_sem_create(cb, "two", 2, 30.0, &b), 0);
    tw_deferred *d;
    assert_rc(tw_redis_sem_acquire(a, &d), 0);
    tw_redis_permit *p1 = take(r, d);
    assert_rc(tw_redis_sem_acquire(a, &d), 0);
    tw_redis_permit *p2 = take(r, d);
    tw_deferred *wb;
    assert_rc(tw_redis_sem_acquire(b, &wb), 0);
    tw_test_capture cap;
    tw_test_capture_add(wb, &cap);
    iterate_for(r, 0.2);
    assert_int_equal(cap.calls, 0);
    double t0 = tw_test_now();
    assert_rc(tw_redis_sem_release(a, p1, NULL), 0);
    double deadline = t0 + 5;
    while (!cap.calls && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(cap.calls, 1);
    assert_false(tw_result_is_failure(cap.r));
    tw_redis_permit *pb = cap.r.ptr;
    assert_int_equal(tw_redis_sem_held(b), 1);
    tw_deferred_unref(wb);
    assert_rc(tw_redis_sem_release(b, pb, NULL), 0);
    assert_rc(tw_redis_sem_release(a, p2, NULL), 0);
    rt_until_gone(r, "twine:sem:{two}", 10);
    assert_rc(tw_redis_sem_destroy(a), 0);
    assert_rc(tw_redis_sem_destroy(b), 0);
    rt_close(r, ca);
    rt_close(r, cb);
    rt_reactor_free(r);
}

/* The waiter's subscriber connection killed just before a release: the
 * release's message reaches nobody. When the subscriber is back and has
 * subscribed again, the waiter tries at once instead of sleeping until the
 * first permit would expire, 30 s away (a fake clock, moved by less than
 * 2 s). */
static void test_wake_lost_on_reconnect(void **state)
{
    (void)state;
    rt_require_server();
    tw_reactor *r = rt_reactor(true);
    tw_redis_config cfg = rt_config(rt_server.port, 10.0);
    tw_redis *ca = rt_connect_to(r, &cfg), *cb = rt_connect_to(r, &cfg);
    tw_redis_sem *a, *b;
    assert_rc(tw_redis_sem_create(ca, "resub", 1, 30.0, &a), 0);
    assert_rc(tw_redis_sem_create(cb, "resub", 1, 30.0, &b), 0);
    tw_deferred *d;
    assert_rc(tw_redis_sem_acquire(a, &d), 0);
    tw_redis_permit *pa = take(r, d);
    tw_redis_stats st;
    tw_redis_stats_get(cb, &st);
    uint64_t replies = st.replies;
    tw_deferred *wb;
    assert_rc(tw_redis_sem_acquire(b, &wb), 0);
    tw_test_capture cap;
    tw_test_capture_add(wb, &cap);
    double deadline = tw_test_now() + 10;
    do { /* the waiter's try has come back "none free" */
        if (tw_test_now() > deadline)
            fail_msg("the waiter's try never came back");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
        tw_redis_stats_get(cb, &st);
    } while (st.replies == replies || st.in_flight);
    assert_int_equal(cap.calls, 0);
    assert_true(tw_test_redis_int(&rt_server, "CLIENT KILL TYPE pubsub") >= 1);
    assert_rc(tw_redis_sem_release(a, pa, NULL), 0);
    double moved = 0;
    while (!cap.calls && moved < 2.0) {
        if (tw_test_now() > deadline + 10)
            fail_msg("no permit after 10 s");
        assert_rc(tw_reactor_iterate(r, 0.005), 0);
        assert_rc(tw_reactor_advance(r, 0.01), 0);
        moved += 0.01;
    }
    if (!cap.calls)
        fail_msg("the lost release was not noticed when the subscriber came back");
    assert_false(tw_result_is_failure(cap.r));
    tw_redis_permit *pb = cap.r.ptr;
    assert_int_equal(tw_redis_sem_held(b), 1);
    tw_deferred_unref(wb);
    assert_rc(tw_redis_sem_release(b, pb, NULL), 0);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_rc(tw_redis_sem_destroy(a), 0);
    assert_rc(tw_redis_sem_destroy(b), 0);
    rt_close(r, ca);
    rt_close(r, cb);
    rt_reactor_free(r);
}

/* A permit whose holder died (an id put there by hand, expiring in 0.5 s)
 * returns to the pool: the waiter gets it when it expires, without any
 * release to wake it. */
static void test_expired_permit_returns(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    redisReply *t = tw_test_redis_cmd(&rt_server, "TIME");
    assert_non_null(t);
    long long now_ms = atoll(t->element[0]->str) * 1000 + atoll(t->element[1]->str) / 1000;
    freeReplyObject(t);
    assert_int_equal(tw_test_redis_int(&rt_server, "ZADD twine:sem:{one} %lld dead:1",
                                       now_ms + 500),
                     1);
    tw_redis_sem *s;
    assert_rc(tw_redis_sem_create(c, "one", 1, 5.0, &s), 0);
    tw_deferred *d;
    double t0 = tw_test_now();
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    tw_redis_permit *p = take(r, d);
    double waited = tw_test_now() - t0;
    assert_true(waited >= 0.4 && waited < 3.0);
    assert_int_equal(tw_test_redis_int(&rt_server, "ZSCORE twine:sem:{one} dead:1"), 0);
    assert_rc(tw_redis_sem_release(s, p, NULL), 0);
    iterate_for(r, 0.02);
    assert_rc(tw_redis_sem_destroy(s), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* Renewals keep a 0.3 s permit for 1.2 s; they stop at release. A permit
 * taken away is reported lost. */
static void test_renewal_and_loss(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_sem *s;
    assert_rc(tw_redis_sem_create(c, "renew", 2, 0.3, &s), 0);
    tw_deferred *d, *lost;
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    tw_redis_permit *p = take(r, d);
    assert_rc(tw_redis_permit_lost(p, &lost), 0);
    tw_test_capture cap;
    tw_test_capture_add(lost, &cap);
    iterate_for(r, 1.2);
    assert_int_equal(cap.calls, 0);
    assert_true(tw_redis_permit_time_left(p) > 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "ZCARD twine:sem:{renew}"), 1);
    assert_rc(tw_redis_sem_release(s, p, NULL), 0);
    assert_int_equal(cap.calls, 1); /* released: the watcher fires with none */
    assert_false(tw_result_is_failure(cap.r));
    tw_test_capture_release(&cap);
    tw_deferred_unref(lost);
    iterate_for(r, 0.5);
    assert_int_equal(tw_test_redis_int(&rt_server, "EXISTS twine:sem:{renew}"), 0);

    /* taken away behind its back */
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    p = take(r, d);
    assert_rc(tw_redis_permit_lost(p, &lost), 0);
    char id[64];
    snprintf(id, sizeof id, "%s", tw_redis_permit_id(p));
    assert_int_equal(tw_test_redis_int(&rt_server, "ZREM twine:sem:{renew} %s", id), 1);
    char msg[256];
    assert_int_equal(rt_failure(r, lost, msg, sizeof msg), TW_ELEASE);
    assert_non_null(strstr(msg, id));
    assert_true(tw_redis_permit_time_left(p) == 0);
    assert_rc(tw_redis_sem_release(s, p, &d), 0);
    assert_int_equal(rt_failure(r, d, NULL, 0), TW_ELEASE);
    assert_rc(tw_redis_sem_destroy(s), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A permit_lost watcher fires with none at release, from inside it; a
 * callback that releases the same permit again gets TW_EPERM (it is no
 * longer held), and the semaphore's count stays right. A permit lost gets
 * its watchers' failures, and one of them may release it. */
typedef struct again {
    tw_redis_sem *s;
    tw_redis_permit *p;
    int rc;
} again;

static tw_result release_again(tw_result r, void *arg)
{
    again *a = arg;
    assert_false(tw_result_is_failure(r));
    a->rc = tw_redis_sem_release(a->s, a->p, NULL);
    return r;
}

static tw_result release_lost(tw_result r, void *arg)
{
    again *a = arg;
    assert_true(tw_failure_check(tw_result_as_failure(r), TW_ELEASE));
    a->rc = tw_redis_sem_release(a->s, a->p, NULL);
    tw_result_drop(r);
    return tw_result_none();
}

static void test_release_from_watcher(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_sem *s;
    assert_rc(tw_redis_sem_create(c, "twice", 2, 5.0, &s), 0);
    tw_deferred *d, *lost;
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    tw_redis_permit *p = take(r, d);
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    tw_redis_permit *p2 = take(r, d);
    again a = {s, p, 1};
    assert_rc(tw_redis_permit_lost(p, &lost), 0);
    assert_rc(tw_deferred_add_callback(lost, release_again, &a), 0);
    tw_deferred_unref(lost);
    assert_rc(tw_redis_sem_release(s, p, NULL), 0);
    assert_int_equal(a.rc, TW_EPERM);
    assert_int_equal(tw_redis_sem_held(s), 1);

    /* the natural answer to a lost permit, giving it back from the
     * callback, while the watchers are being told (two of them) */
    again b = {s, p2, 1}, b2 = {s, p2, 1};
    tw_deferred *lost2;
    assert_rc(tw_redis_permit_lost(p2, &lost), 0);
    assert_rc(tw_deferred_add_errback(lost, release_lost, &b), 0);
    assert_rc(tw_redis_permit_lost(p2, &lost2), 0);
    assert_rc(tw_deferred_add_errback(lost2, release_lost, &b2), 0);
    char id[64];
    snprintf(id, sizeof id, "%s", tw_redis_permit_id(p2));
    assert_int_equal(tw_test_redis_int(&rt_server, "ZREM twine:sem:{twice} %s", id), 1);
    double deadline = tw_test_now() + 10;
    while ((b.rc == 1 || b2.rc == 1) && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_true((b.rc == 0 && b2.rc == TW_EPERM) || (b.rc == TW_EPERM && b2.rc == 0));
    tw_deferred_unref(lost);
    tw_deferred_unref(lost2);
    assert_int_equal(tw_redis_sem_held(s), 0);
    rt_until_gone(r, "twine:sem:{twice}", 10);
    assert_rc(tw_redis_sem_destroy(s), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A server still loading its data (after a restart) answers "LOADING": an
 * acquire sent then is tried again until the server is ready. */
static void test_acquire_while_loading(void **state)
{
    (void)state;
    tw_test_redis *own = rt_own_server(NULL);
    tw_reactor *r = rt_reactor(false);
    tw_redis_config cfg = rt_config(own->port, 5.0);
    tw_redis *c = rt_connect_to(r, &cfg);
    tw_redis_sem *s;
    assert_rc(tw_redis_sem_create(c, "loading", 1, 5.0, &s), 0);
    tw_deferred *d;
    assert_rc(tw_redis_sem_acquire(s, &d), 0); /* the wake channel, first */
    assert_rc(tw_redis_sem_release(s, take(r, d), NULL), 0);
    iterate_for(r, 0.05);
    redisContext *reload = rt_loading_begin(own, 0.6);
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    tw_redis_permit *p = take(r, d);
    rt_loading_end(reload);
    assert_rc(tw_redis_sem_release(s, p, NULL), 0);
    iterate_for(r, 0.05);
    assert_rc(tw_redis_sem_destroy(s), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A permit's release lost with its connection (held unread by CLIENT
 * PAUSE WRITE, then the connection killed) fails with TW_ECONNLOST, and is
 * sent again on the new connection: the permit does not stay taken for the
 * rest of its 30 s. */
static void test_release_lost_in_flight(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_sem *s;
    assert_rc(tw_redis_sem_create(c, "gone", 1, 30.0, &s), 0);
    long long id = rt_int(r, c, "CLIENT ID");
    tw_deferred *d, *rel;
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    tw_redis_permit *p = take(r, d);
    redisReply *rep = tw_test_redis_cmd(&rt_server, "CLIENT PAUSE 5000 WRITE");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_rc(tw_redis_sem_release(s, p, &rel), 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "CLIENT KILL ID %lld", id), 1);
    rep = tw_test_redis_cmd(&rt_server, "CLIENT UNPAUSE");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_int_equal(rt_failure(r, rel, NULL, 0), TW_ECONNLOST);
    double deadline = tw_test_now() + 3;
    while (tw_test_redis_int(&rt_server, "EXISTS twine:sem:{gone}") != 0) {
        if (tw_test_now() > deadline)
            fail_msg("the permit stayed taken after its release");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
    assert_rc(tw_redis_sem_destroy(s), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ---- run, and the limit under contention ------------------------------------------ */

enum { K = 4, LIMIT = 2 };

/* What the sections of every connection share. While `gated`, a section
 * that enters waits for the test to open its gate (a Deferred) before its
 * INCR: the test so holds LIMIT sections inside at once, which the timing
 * of the replies alone does not promise (one connection's sections never
 * overlap: its next grant is read after the INCR reply that ends the
 * section before it). */
typedef struct arena {
    int inside, max_inside, done, failed;
    bool gated;
    int ngate;
    tw_deferred *gate[LIMIT];
} arena;

typedef struct section {
    tw_redis *c;
    arena *a;
} section;

static tw_result leave_section(tw_result r, void *arg)
{
    section *s = arg;
    s->a->inside--;
    return r;
}

static tw_result incr_section(tw_result r, void *arg)
{
    section *s = arg;
    tw_result_drop(r);
    tw_deferred *d;
    assert_rc(tw_redis_command(s->c, &d, "INCR sections"), 0);
    tw_deferred_add_both(d, leave_section, s);
    return tw_result_deferred(d);
}

static tw_result enter_section(void *arg)
{
    section *s = arg;
    arena *a = s->a;
    if (++a->inside > a->max_inside)
        a->max_inside = a->inside;
    if (a->gated && a->ngate < LIMIT) {
        tw_deferred *g;
        assert_rc(tw_deferred_create(&g, NULL, NULL), 0);
        assert_rc(tw_deferred_add_callback(g, incr_section, s), 0);
        a->gate[a->ngate++] = tw_deferred_ref(g);
        return tw_result_deferred(g);
    }
    return incr_section(tw_result_none(), s);
}

static tw_result count_done(tw_result r, void *arg)
{
    section *s = arg;
    if (tw_result_is_failure(r))
        s->a->failed++;
    s->a->done++;
    tw_result_drop(r);
    return tw_result_none();
}

static void test_limit_under_contention(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    int n = (int)tw_test_scaled(100, 20);
    arena a = {.gated = true};
    tw_redis *c[K];
    tw_redis_sem *s[K];
    section sec[K];
    for (int k = 0; k < K; k++) {
        c[k] = rt_connect(r);
        assert_rc(tw_redis_sem_create(c[k], "limit", LIMIT, 30.0, &s[k]), 0);
        sec[k] = (section){c[k], &a};
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K; k++) {
            tw_deferred *d;
            assert_rc(tw_redis_sem_run(s[k], enter_section, &sec[k], &d), 0);
            tw_deferred_add_both(d, count_done, &sec[k]);
            tw_deferred_unref(d);
        }
    /* LIMIT sections held inside: every other run waits, none is granted */
    double deadline = tw_test_now() + 20;
    while (a.ngate < LIMIT) {
        if (tw_test_now() > deadline)
            fail_msg("%d of %d sections inside after 20 s", a.ngate, LIMIT);
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
    size_t held = 0, waiting = 0;
    for (int k = 0; k < K; k++) {
        held += tw_redis_sem_held(s[k]);
        waiting += tw_redis_sem_waiting(s[k]);
    }
    assert_int_equal(a.inside, LIMIT);
    assert_int_equal(held, LIMIT);
    assert_int_equal(waiting, (size_t)(K * n - LIMIT));
    assert_int_equal(tw_test_redis_int(&rt_server, "ZCARD twine:sem:{limit}"), LIMIT);
    a.gated = false;
    for (int i = 0; i < a.ngate; i++) {
        assert_rc(tw_deferred_callback(a.gate[i], tw_result_none()), 0);
        tw_deferred_unref(a.gate[i]);
    }
    deadline = tw_test_now() + 60;
    while (a.done < K * n) {
        if (tw_test_now() > deadline)
            fail_msg("%d of %d sections done", a.done, K * n);
        assert_rc(tw_reactor_iterate(r, 0.05), 0);
        /* never more than LIMIT permits in the set */
        if (a.done % 50 == 0)
            assert_true(tw_test_redis_int(&rt_server, "ZCARD twine:sem:{limit}") <= LIMIT);
    }
    assert_int_equal(a.failed, 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "GET sections"), K * n);
    assert_int_equal(a.max_inside, LIMIT);
    assert_int_equal(a.inside, 0);
    for (int k = 0; k < K; k++) {
        assert_int_equal(tw_redis_sem_held(s[k]), 0);
        assert_int_equal(tw_redis_sem_waiting(s[k]), 0);
        assert_rc(tw_redis_sem_destroy(s[k]), 0);
        rt_close(r, c[k]);
    }
    rt_reactor_free(r);
}

static tw_result fn_fail(void *arg)
{
    (void)arg;
    return tw_result_fail(TW_EIO, "section failed");
}

static void test_run_failure_releases(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_sem *s;
    assert_rc(tw_redis_sem_create(c, "runf", 1, 5.0, &s), 0);
    for (int i = 0; i < 3; i++) {
        tw_deferred *d;
        assert_rc(tw_redis_sem_run(s, fn_fail, NULL, &d), 0);
        assert_int_equal(rt_failure(r, d, NULL, 0), TW_EIO);
        assert_int_equal(tw_redis_sem_held(s), 0);
    }
    assert_int_equal(tw_test_redis_int(&rt_server, "EXISTS twine:sem:{runf}"), 0);
    assert_rc(tw_redis_sem_destroy(s), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

static void test_bad_input(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_sem *s = NULL, *s2;
    assert_rc(tw_redis_sem_create(c, "x", 0, 1, &s), TW_EINVAL);
    assert_rc(tw_redis_sem_create(c, "", 1, 1, &s), TW_EINVAL);
    assert_rc(tw_redis_sem_create(c, NULL, 1, 1, &s), TW_EINVAL);
    assert_rc(tw_redis_sem_create(c, "x", 1, NAN, &s), TW_EINVAL);
    assert_rc(tw_redis_sem_create(c, "x", 1, 0, &s), TW_EINVAL);
    assert_rc(tw_redis_sem_create(c, "x", 1, -2, &s), TW_EINVAL);
    assert_null(s);
    assert_rc(tw_redis_sem_create(c, "x", 1, 5, &s), 0);
    assert_rc(tw_redis_sem_create(c, "y", 1, 5, &s2), 0);
    tw_deferred *d;
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    tw_redis_permit *p = take(r, d);
    assert_rc(tw_redis_sem_release(s2, p, NULL), TW_EPERM); /* not s2's */
    assert_rc(tw_redis_sem_release(s, p, NULL), 0);
    assert_rc(tw_redis_sem_run(s, NULL, NULL, &d), TW_EINVAL);
    /* the key holds another type: a clear error, the key untouched */
    tw_redis_reply_free(rt_cmd(r, c, "SET %s %s", "twine:sem:{y}", "text"));
    assert_rc(tw_redis_sem_acquire(s2, &d), 0);
    char msg[256];
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_EREMOTE);
    assert_non_null(strstr(msg, "WRONGTYPE"));
    tw_redis_reply *rep = rt_cmd(r, c, "GET %s", "twine:sem:{y}");
    assert_string_equal(rep->str, "text");
    tw_redis_reply_free(rep);
    /* destroy: TW_EBUSY while a permit is held; waiters fail with TW_ESHUTDOWN */
    assert_rc(tw_redis_sem_acquire(s, &d), 0);
    p = take(r, d);
    tw_redis_sem *s3;
    assert_rc(tw_redis_sem_create(c, "x", 1, 5, &s3), 0);
    tw_deferred *w1, *w2;
    assert_rc(tw_redis_sem_acquire(s3, &w1), 0);
    assert_rc(tw_redis_sem_acquire(s3, &w2), 0);
    iterate_for(r, 0.1);
    assert_int_equal(tw_redis_sem_waiting(s3), 2);
    assert_rc(tw_redis_sem_destroy(s), TW_EBUSY);
    assert_rc(tw_redis_sem_destroy(s3), 0);
    assert_int_equal(rt_failure(r, w1, NULL, 0), TW_ESHUTDOWN);
    assert_int_equal(rt_failure(r, w2, NULL, 0), TW_ESHUTDOWN);
    assert_rc(tw_redis_sem_release(s, p, &d), 0);
    tw_result res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
    assert_int_equal(tw_test_redis_int(&rt_server, "EXISTS twine:sem:{x}"), 0);
    assert_rc(tw_redis_sem_destroy(s), 0);
    assert_rc(tw_redis_sem_destroy(s2), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, rt_setup, rt_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_permits),
        T(test_wake_other_process),
        T(test_wake_lost_on_reconnect),
        T(test_expired_permit_returns),
        T(test_renewal_and_loss),
        T(test_release_from_watcher),
        T(test_acquire_while_loading),
        T(test_release_lost_in_flight),
        T(test_limit_under_contention),
        T(test_run_failure_releases),
        T(test_bad_input),
    };
    return cmocka_run_group_tests(tests, rt_group_setup, rt_group_teardown);
}
