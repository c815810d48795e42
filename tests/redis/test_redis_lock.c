/*
 * The distributed lock (twine/redis.h) against a real redis-server: first
 * use from two loops on two threads at once (no data race), grants
 * with strictly increasing fencing tokens, FIFO among one lock's waiters,
 * run() releasing on success and failure, hand-off to another "process"
 * (another connection, another process id) by pub/sub without polling, and
 * found at once when its message was lost to a subscriber reconnecting, a
 * handed-over lease measured from its grant, not from its message, locks
 * sharing one connection (two of one name exclude each other; a grant for
 * one name is not taken by a waiter for another), a release whose watcher
 * acquires again, a one-shot client closing its connection from the
 * callback of a grant delivered by pub/sub, an
 * exact counter under contention from several connections, the watchdog
 * keeping a short lease alive and stopping at release, leases lost (key
 * deleted, server paused) reported through lease_lost, time_left and run,
 * a release lost with its connection sent again (the lock does not stay
 * with a holder that let go),
 * fenced writes refused with TW_ESTALE, a holder killed with SIGKILL (a
 * child process: the others proceed after the TTL and its late write is
 * refused), an acquire meeting a server still loading its data, cancel and
 * destroy, and bad input.
 */
#define _GNU_SOURCE
#include "util.h"

#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ==== helpers ====================================================================== */

typedef struct grant_log {
    int n;
    int order[256];
    uint64_t token[256];
    bool release; /* release at once from the callback */
} grant_log;

typedef struct grant_ctx {
    grant_log *log;
    tw_redis_lock *l;
    int index;
} grant_ctx;

static tw_result on_granted(tw_result r, void *arg)
{
    grant_ctx *g = arg;
    assert_false(tw_result_is_failure(r));
    assert_ptr_equal(r.ptr, g->l);
    g->log->order[g->log->n] = g->index;
    g->log->token[g->log->n] = tw_redis_lock_token(g->l);
    g->log->n++;
    if (g->log->release)
        assert_rc(tw_redis_lock_release(g->l, NULL), 0);
    return r;
}

static void acquire_logged(tw_redis_lock *l, grant_log *log, grant_ctx *g, int index)
{
    tw_deferred *d;
    g->log = log;
    g->l = l;
    g->index = index;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    assert_rc(tw_deferred_add_callback(d, on_granted, g), 0);
    tw_deferred_unref(d);
}

static void until_count(tw_reactor *r, const int *n, int want, double limit)
{
    double deadline = tw_test_now() + limit;
    while (*n < want) {
        if (tw_test_now() > deadline)
            fail_msg("count %d after %g s, expected %d", *n, limit, want);
        assert_rc(tw_reactor_iterate(r, 0.05), 0);
    }
}

static void iterate_for(tw_reactor *r, double seconds)
{
    double end = tw_test_now() + seconds;
    while (tw_test_now() < end)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
}

static bool key_exists(const char *key)
{
    return tw_test_redis_int(&rt_server, "EXISTS %s", key) == 1;
}

/* ==== two loops ==================================================================== */

/* Two reactors on two threads, each with its own connection, use the lock
 * for the first time in the process at the same moment: the scripts'
 * digests, computed on first use and shared by all connections, are
 * computed once, with no data race (ThreadSanitizer checks). This is the
 * first test of the program, so that nothing has used a script before. */
typedef struct loop_user {
    int port;
    char name[16];
    tw_test_tally *start;
    int rc;
    bool granted;
} loop_user;

static void *use_lock_on_own_loop(void *arg)
{
    loop_user *u = arg;
    tw_reactor *r;
    tw_redis *c;
    tw_redis_lock *l;
    tw_deferred *d;
    tw_redis_config cfg = rt_config(u->port, 10.0);
    if ((u->rc = tw_reactor_create(&r)))
        return NULL;
    if ((u->rc = tw_redis_connect(r, &cfg, &c)) ||
        (u->rc = tw_redis_lock_create(c, u->name, 5.0, &l)))
        return NULL;
    tw_test_tally_add(u->start);
    tw_test_tally_wait(u->start, 2, 10);
    if ((u->rc = tw_redis_lock_acquire(l, &d)))
        return NULL;
    double deadline = tw_test_now() + 10;
    while (!tw_deferred_called(d) && tw_test_now() < deadline)
        tw_reactor_iterate(r, 0.01);
    tw_result res;
    u->granted = tw_deferred_peek(d, &res) && !tw_result_is_failure(res);
    tw_deferred_unref(d);
    if (u->granted)
        tw_redis_lock_release(l, NULL);
    for (int i = 0; i < 5; i++)
        tw_reactor_iterate(r, 0.01);
    tw_redis_lock_destroy(l);
    tw_redis_close(c, &d);
    while (!tw_deferred_called(d) && tw_test_now() < deadline + 10)
        tw_reactor_iterate(r, 0.01);
    tw_deferred_unref(d);
    u->rc = tw_reactor_destroy(r);
    return NULL;
}

static void test_first_use_on_two_loops(void **state)
{
    (void)state;
    rt_require_server();
    tw_test_tally start;
    tw_test_tally_init(&start);
    loop_user u[2] = {{rt_server.port, "loop0", &start, -1, false},
                      {rt_server.port, "loop1", &start, -1, false}};
    tw_test_run_threads(2, use_lock_on_own_loop, u, sizeof u[0]);
    tw_test_tally_destroy(&start);
    for (int i = 0; i < 2; i++) {
        assert_rc(u[i].rc, 0);
        assert_true(u[i].granted);
    }
}

/* ==== basics ======================================================================= */

static void test_acquire_release(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "basic", 5.0, &l), 0);
    assert_false(tw_redis_lock_held(l));
    assert_int_equal(tw_redis_lock_token(l), 0);
    assert_true(tw_redis_lock_time_left(l) == 0);

    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
    assert_ptr_equal(res.ptr, l);
    assert_true(tw_redis_lock_held(l));
    uint64_t t1 = tw_redis_lock_token(l);
    assert_true(t1 >= 1);
    double left = tw_redis_lock_time_left(l);
    assert_true(left > 4.0 && left <= 5.0);
    assert_true(key_exists("twine:lock:{basic}"));
    assert_int_equal(tw_test_redis_int(&rt_server, "GET twine:lock:{basic}:fence"), (long long)t1);

    tw_deferred *rel;
    assert_rc(tw_redis_lock_release(l, &rel), 0);
    assert_false(tw_redis_lock_held(l));
    assert_rc(tw_redis_lock_release(l, NULL), TW_EPERM);
    res = rt_wait(r, rel);
    assert_false(tw_result_is_failure(res));
    assert_false(key_exists("twine:lock:{basic}"));

    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
    assert_int_equal(tw_redis_lock_token(l), t1 + 1);
    assert_rc(tw_redis_lock_release(l, NULL), 0);

    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(l, &st);
    assert_int_equal(st.acquired, 2);
    assert_int_equal(st.attempts, 2);
    assert_int_equal(st.retries, 0);
    assert_int_equal(st.lost, 0);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* The waiters of one lock are served in FIFO order, each with a new token. */
static void test_fifo_in_process(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "fifo", 5.0, &l), 0);
    enum { N = 40 };
    grant_log log = {0};
    log.release = true;
    grant_ctx g[N];
    for (int i = 0; i < N; i++)
        acquire_logged(l, &log, &g[i], i);
    assert_int_equal(tw_redis_lock_waiting(l), N);
    until_count(r, &log.n, N, 20);
    for (int i = 0; i < N; i++) {
        assert_int_equal(log.order[i], i);
        if (i)
            assert_true(log.token[i] == log.token[i - 1] + 1);
    }
    for (int i = 0; i < 3; i++)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== run ========================================================================== */

static tw_result fn_value(void *arg)
{
    tw_redis_lock *l = arg;
    assert_true(tw_redis_lock_held(l));
    return tw_test_int_value(7);
}

static tw_result fn_fail(void *arg)
{
    (void)arg;
    return tw_result_fail(TW_EIO, "the section failed");
}

typedef struct later {
    tw_redis *c;
    tw_redis_lock *l;
} later;

/* A section that takes a round trip: the lock is held until it ends. */
static tw_result fn_deferred(void *arg)
{
    later *lt = arg;
    tw_deferred *d;
    assert_rc(tw_redis_command(lt->c, &d, "INCR inside"), 0);
    return tw_result_deferred(d);
}

static void test_run(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "run", 5.0, &l), 0);
    tw_deferred *d;

    assert_rc(tw_redis_lock_run(l, fn_value, l, &d), 0);
    tw_result res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
    assert_int_equal(*(int *)res.ptr, 7);
    tw_result_drop(res);
    assert_false(tw_redis_lock_held(l));
    assert_false(key_exists("twine:lock:{run}")); /* released before run fired */

    assert_rc(tw_redis_lock_run(l, fn_fail, NULL, &d), 0);
    assert_int_equal(rt_failure(r, d, NULL, 0), TW_EIO);
    assert_false(key_exists("twine:lock:{run}"));

    later lt = {c, l};
    assert_rc(tw_redis_lock_run(l, fn_deferred, &lt, &d), 0);
    tw_redis_reply *rep = rt_reply(r, d);
    assert_int_equal(rep->integer, 1);
    tw_redis_reply_free(rep);
    assert_false(key_exists("twine:lock:{run}"));

    /* without a Deferred for the result */
    assert_rc(tw_redis_lock_run(l, fn_deferred, &lt, NULL), 0);
    double deadline = tw_test_now() + 10;
    while (tw_test_redis_int(&rt_server, "GET inside") != 2 && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    rt_until_gone(r, "twine:lock:{run}", 10); /* released when the section's reply came */
    assert_false(tw_redis_lock_held(l));
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== between processes ============================================================= */

/* Two connections are two processes to the lock (two process ids): the
 * waiter is granted by the holder's release and told by pub/sub, long
 * before the 30 s TTL, after one acquire script and no retry. */
static void test_handoff_by_pubsub(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *ca = rt_connect(r), *cb = rt_connect(r);
    tw_redis_lock *a, *b;
    assert_rc(tw_redis_lock_create(ca, "handoff", 30.0, &a), 0);
    assert_rc(tw_redis_lock_create(cb, "handoff", 30.0, &b), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(a, &d), 0);
    tw_result_drop(rt_wait(r, d));
    uint64_t ta = tw_redis_lock_token(a);

    grant_log log = {0};
    grant_ctx g;
    acquire_logged(b, &log, &g, 0);
    double deadline = tw_test_now() + 10;
    while (tw_test_redis_int(&rt_server, "ZCARD twine:lock:{handoff}:queue") != 1 &&
           tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(log.n, 0);
    double t0 = tw_test_now();
    assert_rc(tw_redis_lock_release(a, NULL), 0);
    until_count(r, &log.n, 1, 5);
    assert_true(tw_test_now() - t0 < 5.0);
    assert_true(tw_redis_lock_held(b));
    assert_int_equal(tw_redis_lock_token(b), ta + 1);
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(b, &st);
    assert_int_equal(st.attempts, 1);
    assert_int_equal(st.retries, 0);
    assert_int_equal(st.handoffs, 1);
    assert_int_equal(tw_test_redis_int(&rt_server, "EXISTS twine:lock:{handoff}:queue"), 0);
    assert_rc(tw_redis_lock_release(b, NULL), 0);
    rt_until_gone(r, "twine:lock:{handoff}", 10);
    assert_rc(tw_redis_lock_destroy(a), 0);
    assert_rc(tw_redis_lock_destroy(b), 0);
    rt_close(r, ca);
    rt_close(r, cb);
    rt_reactor_free(r);
}

/* The waiter's subscriber connection killed just before the holder's
 * release hands the lock over: the grant message is published to nobody.
 * When the subscriber comes back and has subscribed again, the waiter asks
 * at once (the acquire script finds the lock its own) instead of sleeping
 * until its retry, a TTL away, by which time the lease it was handed would
 * have run out. A fake clock: the retry can only come if the test moves
 * time 30 s on, and it moves it by less than 2 s. */
static void test_handoff_lost_on_reconnect(void **state)
{
    (void)state;
    rt_require_server();
    tw_reactor *r = rt_reactor(true);
    tw_redis_config cfg = rt_config(rt_server.port, 10.0);
    tw_redis *ca = rt_connect_to(r, &cfg), *cb = rt_connect_to(r, &cfg);
    tw_redis_lock *a, *b;
    assert_rc(tw_redis_lock_create(ca, "resub", 30.0, &a), 0);
    assert_rc(tw_redis_lock_create(cb, "resub", 30.0, &b), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(a, &d), 0);
    tw_result_drop(rt_wait(r, d));
    uint64_t ta = tw_redis_lock_token(a);
    grant_log log = {0};
    grant_ctx g;
    acquire_logged(b, &log, &g, 0);
    double deadline = tw_test_now() + 10;
    while (tw_test_redis_int(&rt_server, "ZCARD twine:lock:{resub}:queue") != 1) {
        if (tw_test_now() > deadline)
            fail_msg("the waiter never queued");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
    /* both subscribers go (the holder needs none); the release follows
     * before either can come back, so the hand-off's message is lost */
    assert_true(tw_test_redis_int(&rt_server, "CLIENT KILL TYPE pubsub") >= 1);
    assert_rc(tw_redis_lock_release(a, NULL), 0);
    double moved = 0;
    while (log.n < 1 && moved < 2.0) {
        if (tw_test_now() > deadline + 10)
            fail_msg("no grant after 10 s");
        assert_rc(tw_reactor_iterate(r, 0.005), 0);
        assert_rc(tw_reactor_advance(r, 0.01), 0);
        moved += 0.01;
    }
    if (log.n < 1)
        fail_msg("the lost hand-off was not noticed when the subscriber came back");
    assert_true(tw_redis_lock_held(b));
    assert_int_equal(tw_redis_lock_token(b), ta + 1);
    assert_true(tw_redis_lock_time_left(b) > 25.0);
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(b, &st);
    assert_int_equal(st.handoffs, 0); /* found by asking, not told */
    assert_rc(tw_redis_lock_release(b, NULL), 0);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_rc(tw_redis_lock_destroy(a), 0);
    assert_rc(tw_redis_lock_destroy(b), 0);
    rt_close(r, ca);
    rt_close(r, cb);
    rt_reactor_free(r);
}

/* The lease a hand-off grants starts when the releaser's script runs, not
 * when the waiter reads the message: a waiter process that stalls in
 * between (here: its reactor not run for a second of a 2 s lease) must not
 * believe it has a whole TTL left, nor learn of a loss later than the
 * server forgets it. Two reactors in one thread are the two processes. */
static void test_handoff_time_left(void **state)
{
    (void)state;
    tw_reactor *rh = rt_reactor(false), *rw = rt_reactor(false);
    tw_redis *ch = rt_connect(rh), *cw = rt_connect(rw);
    tw_redis_lock *h, *w;
    assert_rc(tw_redis_lock_create(ch, "stall", 2.0, &h), 0);
    assert_rc(tw_redis_lock_create(cw, "stall", 2.0, &w), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(h, &d), 0);
    tw_result_drop(rt_wait(rh, d));
    grant_log log = {0};
    grant_ctx g;
    acquire_logged(w, &log, &g, 0);
    double deadline = tw_test_now() + 10;
    while (tw_test_redis_int(&rt_server, "ZCARD twine:lock:{stall}:queue") != 1) {
        if (tw_test_now() > deadline)
            fail_msg("the waiter never queued");
        assert_rc(tw_reactor_iterate(rw, 0.01), 0);
    }
    /* the release hands the lock over; the waiter's process stalls */
    tw_deferred *rel;
    assert_rc(tw_redis_lock_release(h, &rel), 0);
    tw_result res = rt_wait(rh, rel);
    assert_false(tw_result_is_failure(res));
    while (tw_test_redis_int(&rt_server, "PTTL twine:lock:{stall}") > 1000) {
        if (tw_test_now() > deadline)
            fail_msg("the lease never ran down");
        assert_rc(tw_reactor_iterate(rh, 0.01), 0);
    }
    /* and reads its grant (its retry is not due for another second) */
    while (log.n < 1) {
        if (tw_test_now() > deadline)
            fail_msg("the waiter never got the lock");
        assert_rc(tw_reactor_iterate(rw, 0.01), 0);
    }
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(w, &st);
    assert_int_equal(st.handoffs, 1);
    double left = tw_redis_lock_time_left(w);
    double server = (double)tw_test_redis_int(&rt_server, "PTTL twine:lock:{stall}") / 1000.0;
    if (left > server + 0.05)
        fail_msg("time_left says %.3f s, the server keeps the lease %.3f s", left, server);
    assert_true(left > server - 0.3); /* sure, and not needlessly short */
    assert_rc(tw_redis_lock_release(w, NULL), 0);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(rw, 0.01), 0);
    assert_rc(tw_redis_lock_destroy(h), 0);
    assert_rc(tw_redis_lock_destroy(w), 0);
    rt_close(rh, ch);
    rt_close(rw, cw);
    rt_reactor_free(rh);
    rt_reactor_free(rw);
}

/* Locks made on one connection share its process id: each turn must still
 * have an owner id of its own. Two locks of one name exclude each other
 * (they contend like two processes), and a grant handed to a waiter of
 * lock "x" is not taken by a waiter of lock "y" on the same connection. */
static void test_locks_on_one_connection(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r), *other = rt_connect(r);
    tw_redis_lock *a, *b;
    assert_rc(tw_redis_lock_create(c, "twin", 5.0, &a), 0);
    assert_rc(tw_redis_lock_create(c, "twin", 5.0, &b), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(a, &d), 0);
    tw_result_drop(rt_wait(r, d));
    uint64_t ta = tw_redis_lock_token(a);
    grant_log log = {0};
    grant_ctx g;
    acquire_logged(b, &log, &g, 0);
    double deadline = tw_test_now() + 10;
    do { /* b's acquire has come back, queued or (wrongly) granted */
        if (tw_test_now() > deadline)
            fail_msg("b's acquire never came back");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    } while (!log.n && tw_test_redis_int(&rt_server, "ZCARD twine:lock:{twin}:queue") != 1);
    if (log.n)
        fail_msg("two locks of one name held at once (tokens %llu and %llu)",
                 (unsigned long long)ta, (unsigned long long)tw_redis_lock_token(b));
    assert_rc(tw_redis_lock_release(a, NULL), 0);
    until_count(r, &log.n, 1, 5);
    assert_int_equal(tw_redis_lock_token(b), ta + 1);
    assert_rc(tw_redis_lock_release(b, NULL), 0);

    /* x and y held elsewhere; a waits for x, b2 for y, on one connection */
    tw_redis_lock *x, *y, *ax, *by;
    assert_rc(tw_redis_lock_create(other, "x", 5.0, &x), 0);
    assert_rc(tw_redis_lock_create(other, "y", 5.0, &y), 0);
    assert_rc(tw_redis_lock_create(c, "x", 5.0, &ax), 0);
    assert_rc(tw_redis_lock_create(c, "y", 5.0, &by), 0);
    assert_rc(tw_redis_lock_acquire(x, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_acquire(y, &d), 0);
    tw_result_drop(rt_wait(r, d));
    grant_log lx = {0}, ly = {0};
    grant_ctx gx, gy;
    acquire_logged(ax, &lx, &gx, 0);
    acquire_logged(by, &ly, &gy, 0);
    while (tw_test_redis_int(&rt_server, "ZCARD twine:lock:{x}:queue") != 1 ||
           tw_test_redis_int(&rt_server, "ZCARD twine:lock:{y}:queue") != 1) {
        if (tw_test_now() > deadline)
            fail_msg("the waiters never queued");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
    assert_rc(tw_redis_lock_release(x, NULL), 0); /* hands x to ax */
    until_count(r, &lx.n, 1, 5);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_true(tw_redis_lock_held(ax));
    if (tw_redis_lock_held(by))
        fail_msg("a waiter for y took the grant of x while y is held elsewhere");
    assert_true(tw_redis_lock_held(y));
    assert_rc(tw_redis_lock_release(ax, NULL), 0);
    assert_rc(tw_redis_lock_release(y, NULL), 0);
    until_count(r, &ly.n, 1, 5);
    assert_rc(tw_redis_lock_release(by, NULL), 0);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    tw_redis_lock *all_locks[] = {a, b, x, y, ax, by};
    for (int i = 0; i < 6; i++)
        assert_rc(tw_redis_lock_destroy(all_locks[i]), 0);
    rt_close(r, c);
    rt_close(r, other);
    rt_reactor_free(r);
}

/* A lease_lost watcher fires with none when the lock is released; its
 * callback may acquire again. That acquire waits its turn behind the local
 * waiter the release passes the lock to, and leaves nothing behind in
 * Redis: no stray registration that a later release would hand the lock to
 * (the fence counter counts the grants: exactly three). */
typedef struct reacquire {
    tw_redis_lock *l;
    grant_log *log;
    grant_ctx g;
} reacquire;

static tw_result watcher_acquires(tw_result r, void *arg)
{
    reacquire *ra = arg;
    assert_false(tw_result_is_failure(r));
    acquire_logged(ra->l, ra->log, &ra->g, 2);
    return r;
}

static void test_release_watcher_acquires(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "watch", 5.0, &l), 0);
    grant_log log = {0};
    log.release = true;
    grant_ctx g1;
    tw_deferred *d, *lost;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    uint64_t t0 = tw_redis_lock_token(l);
    acquire_logged(l, &log, &g1, 1); /* a local waiter */
    reacquire ra = {l, &log, {0}};
    assert_rc(tw_redis_lock_lease_lost(l, &lost), 0);
    assert_rc(tw_deferred_add_callback(lost, watcher_acquires, &ra), 0);
    tw_deferred_unref(lost);
    assert_rc(tw_redis_lock_release(l, NULL), 0);
    until_count(r, &log.n, 2, 5);
    assert_int_equal(log.order[0], 1);
    assert_int_equal(log.order[1], 2);
    assert_true(log.token[0] == t0 + 1 && log.token[1] == t0 + 2);
    rt_until_gone(r, "twine:lock:{watch}", 5);
    assert_false(key_exists("twine:lock:{watch}:queue"));
    assert_int_equal(tw_test_redis_int(&rt_server, "GET twine:lock:{watch}:fence"),
                     (long long)(t0 + 2));
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(l, &st);
    assert_int_equal(st.lost, 0);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A one-shot client: the callback of a grant handed over by pub/sub
 * releases the lock, destroys it and closes its connection, all from
 * inside the subscriber connection's delivery of that grant. */
typedef struct one_shot {
    tw_redis *c;
    tw_redis_lock *l;
    tw_deferred *closed;
    int granted;
} one_shot;

static tw_result grant_then_leave(tw_result r, void *arg)
{
    one_shot *o = arg;
    assert_false(tw_result_is_failure(r));
    o->granted++;
    assert_rc(tw_redis_lock_release(o->l, NULL), 0);
    assert_rc(tw_redis_lock_destroy(o->l), 0);
    assert_rc(tw_redis_close(o->c, &o->closed), 0);
    return tw_result_none();
}

static void test_close_from_handoff(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *ca = rt_connect(r);
    one_shot o = {rt_connect(r), NULL, NULL, 0};
    tw_redis_lock *a;
    assert_rc(tw_redis_lock_create(ca, "bye", 5.0, &a), 0);
    assert_rc(tw_redis_lock_create(o.c, "bye", 5.0, &o.l), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(a, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_acquire(o.l, &d), 0);
    assert_rc(tw_deferred_add_callback(d, grant_then_leave, &o), 0);
    tw_deferred_unref(d);
    double deadline = tw_test_now() + 10;
    while (tw_test_redis_int(&rt_server, "ZCARD twine:lock:{bye}:queue") != 1) {
        if (tw_test_now() > deadline)
            fail_msg("the waiter never queued");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
    assert_rc(tw_redis_lock_release(a, NULL), 0);
    while (!o.closed || !tw_deferred_called(o.closed)) {
        if (tw_test_now() > deadline)
            fail_msg("the one-shot client never closed");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
    tw_deferred_unref(o.closed);
    assert_int_equal(o.granted, 1);
    rt_until_gone(r, "twine:lock:{bye}", 10);
    assert_rc(tw_redis_lock_destroy(a), 0);
    rt_close(r, ca);
    rt_reactor_free(r);
}

/* ---- contention: a read-modify-write under the lock from several connections */

typedef struct rmw {
    int index;
    tw_redis *c;
    tw_redis_lock *l;
    int done;
    uint64_t tokens[512];
    int ntok;
    int failures;
} rmw;

typedef struct rmw_all {
    uint64_t order[2048]; /* tokens in grant order, across all */
    int who[2048];        /* and whose */
    int n;
} rmw_all;

static rmw_all all;

static tw_result rmw_write(tw_result r, void *arg)
{
    rmw *w = arg;
    if (tw_result_is_failure(r))
        return r;
    const tw_redis_reply *rep = r.ptr;
    long long v = rep->type == TW_REDIS_NIL ? 0 : strtoll(rep->str, NULL, 10);
    tw_result_drop(r);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", v + 1);
    tw_deferred *d;
    assert_rc(tw_redis_lock_fenced_set(w->l, "counter", buf, (size_t)n, &d), 0);
    return tw_result_deferred(d);
}

static tw_result rmw_section(void *arg)
{
    rmw *w = arg;
    uint64_t tok = tw_redis_lock_token(w->l);
    w->tokens[w->ntok++] = tok;
    all.who[all.n] = w->index;
    all.order[all.n++] = tok;
    tw_deferred *d;
    assert_rc(tw_redis_command(w->c, &d, "GET counter"), 0);
    tw_deferred_add_callback(d, rmw_write, w);
    return tw_result_deferred(d);
}

static tw_result rmw_done(tw_result r, void *arg)
{
    rmw *w = arg;
    if (tw_result_is_failure(r))
        w->failures++;
    w->done++;
    tw_result_drop(r);
    return tw_result_none();
}

static void test_contended_counter(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    enum { K = 4 };
    int n = (int)tw_test_scaled(100, 20);
    rmw w[K];
    memset(w, 0, sizeof w);
    memset(&all, 0, sizeof all);
    for (int k = 0; k < K; k++) {
        w[k].index = k;
        w[k].c = rt_connect(r);
        assert_rc(tw_redis_lock_create(w[k].c, "counter", 30.0, &w[k].l), 0);
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K; k++) {
            tw_deferred *d;
            assert_rc(tw_redis_lock_run(w[k].l, rmw_section, &w[k], &d), 0);
            tw_deferred_add_both(d, rmw_done, &w[k]);
            tw_deferred_unref(d);
        }
    double deadline = tw_test_now() + 60;
    for (;;) {
        int done = 0;
        for (int k = 0; k < K; k++)
            done += w[k].done;
        if (done == K * n)
            break;
        if (tw_test_now() > deadline)
            fail_msg("%d of %d sections done", done, K * n);
        assert_rc(tw_reactor_iterate(r, 0.05), 0);
    }
    assert_int_equal(tw_test_redis_int(&rt_server, "GET counter"), K * n);
    assert_int_equal(all.n, K * n);
    for (int i = 1; i < all.n; i++)
        if (all.order[i] != all.order[i - 1] + 1)
            fail_msg("grant %d has token %llu after %llu", i, (unsigned long long)all.order[i],
                     (unsigned long long)all.order[i - 1]);
    /* once every process has had a turn (so each is always holding or
     * waiting in Redis), and while each still has sections to run, none
     * takes more than 4 turns in a row: its own waiters pass the lock on 3
     * times, then another process gets it */
    int seen[K] = {0}, run = 0, longest = 0, first_round = 0, have = 0;
    for (int i = 0; i < all.n && have < K; i++)
        if (seen[all.who[i]]++ == 0 && ++have == K)
            first_round = i + 1;
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < all.n; i++) {
        if (++seen[all.who[i]] == n)
            break;
        run = i && all.who[i] == all.who[i - 1] ? run + 1 : 1;
        if (i >= first_round && run > longest)
            longest = run;
    }
    assert_true(first_round > 0);
    if (longest > 4)
        fail_msg("a process took %d turns in a row while the others waited", longest);
    uint64_t passes = 0;
    for (int k = 0; k < K; k++) {
        assert_int_equal(w[k].failures, 0);
        assert_int_equal(w[k].ntok, n);
        tw_redis_lock_stats st;
        tw_redis_lock_stats_get(w[k].l, &st);
        assert_int_equal(st.acquired, n);
        assert_int_equal(st.retries, 0); /* nobody polled */
        assert_int_equal(st.lost, 0);
        passes += st.passes;
    }
    assert_true(passes > 0);
    iterate_for(r, 0.05);
    for (int k = 0; k < K; k++) {
        assert_rc(tw_redis_lock_destroy(w[k].l), 0);
        rt_close(r, w[k].c);
    }
    rt_reactor_free(r);
}

/* ==== leases ======================================================================== */

/* A lease of 0.3 s held for 1.2 s: the watchdog keeps it; release stops
 * the watchdog at once (no renewal after it). */
static void test_watchdog(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "dog", 0.3, &l), 0);
    tw_deferred *d, *lost;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_lease_lost(l, &lost), 0);
    tw_test_capture cap;
    tw_test_capture_add(lost, &cap);
    iterate_for(r, 1.2);
    assert_true(tw_redis_lock_held(l));
    assert_true(key_exists("twine:lock:{dog}"));
    assert_true(tw_redis_lock_time_left(l) > 0);
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(l, &st);
    assert_true(st.renewals >= 3);
    assert_int_equal(st.lost, 0);
    assert_int_equal(cap.calls, 0);
    assert_rc(tw_redis_lock_release(l, NULL), 0);
    /* released: the watcher fires with none, synchronously */
    assert_int_equal(cap.calls, 1);
    assert_false(tw_result_is_failure(cap.r));
    uint64_t renewals = st.renewals;
    iterate_for(r, 0.6);
    tw_redis_lock_stats_get(l, &st);
    assert_int_equal(st.renewals, renewals);
    assert_false(key_exists("twine:lock:{dog}"));
    tw_test_capture_release(&cap);
    tw_deferred_unref(lost);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* The lock's key deleted behind the holder's back: the next renewal finds
 * another owner (none), the lease is lost: lease_lost fails, time_left is
 * 0, and the release reports TW_ELEASE. */
typedef struct slow_section {
    tw_reactor *r;
    tw_redis *c;
    tw_redis_lock *l;
} slow_section;

static void test_lease_lost(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "lose", 0.3, &l), 0);
    tw_deferred *d, *lost;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_lease_lost(l, &lost), 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "DEL twine:lock:{lose}"), 1);
    char msg[256];
    assert_int_equal(rt_failure(r, lost, msg, sizeof msg), TW_ELEASE);
    assert_non_null(strstr(msg, "lease lost"));
    assert_true(tw_redis_lock_held(l)); /* until released */
    assert_true(tw_redis_lock_time_left(l) == 0);
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(l, &st);
    assert_int_equal(st.lost, 1);
    /* a lease_lost asked for now fails at once */
    assert_rc(tw_redis_lock_lease_lost(l, &lost), 0);
    assert_int_equal(rt_failure(r, lost, NULL, 0), TW_ELEASE);
    tw_deferred *rel;
    assert_rc(tw_redis_lock_release(l, &rel), 0);
    assert_int_equal(rt_failure(r, rel, NULL, 0), TW_ELEASE);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* run: the lease lost in the middle of the section turns its value into
 * TW_ELEASE. */
static tw_result fn_until_lost(void *arg)
{
    slow_section *s = arg;
    tw_deferred *lost;
    assert_int_equal(tw_test_redis_int(&rt_server, "DEL twine:lock:{lose2}"), 1);
    assert_rc(tw_redis_lock_lease_lost(s->l, &lost), 0);
    return tw_result_deferred(lost);
}

static tw_result trap_lease(tw_result r, void *arg)
{
    (void)arg;
    if (tw_failure_trap(tw_result_as_failure(r), TW_ELEASE)) {
        tw_result_drop(r);
        return tw_test_int_value(1); /* the section "succeeded" */
    }
    return r;
}

static tw_result fn_until_lost_then_value(void *arg)
{
    tw_result res = fn_until_lost(arg);
    tw_deferred_add_errback(res.ptr, trap_lease, NULL);
    return res;
}

static void test_run_lease_lost(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    slow_section s = {r, c, NULL};
    assert_rc(tw_redis_lock_create(c, "lose2", 0.3, &s.l), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_run(s.l, fn_until_lost_then_value, &s, &d), 0);
    char msg[256];
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_ELEASE);
    assert_non_null(strstr(msg, "critical section"));
    assert_false(tw_redis_lock_held(s.l));
    assert_rc(tw_redis_lock_destroy(s.l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A server paused longer than the lease: the renewal cannot get through,
 * and the lease is lost at its deadline. */
static void test_lease_lost_server_paused(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *pauser = rt_connect(r);
    tw_redis_config cfg = rt_config(rt_server.port, 5.0);
    tw_redis *c = rt_connect_to(r, &cfg);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "paused", 0.3, &l), 0);
    tw_deferred *d, *lost, *sleep_d;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_lease_lost(l, &lost), 0);
    double t0 = tw_test_now();
    assert_rc(tw_redis_command(pauser, &sleep_d, "DEBUG SLEEP 1.2"), 0);
    char msg[256];
    assert_int_equal(rt_failure(r, lost, msg, sizeof msg), TW_ELEASE);
    double t = tw_test_now() - t0;
    assert_true(t < 1.0); /* noticed at the deadline, not when the server woke */
    assert_non_null(strstr(msg, "no renewal"));
    tw_redis_reply_free(rt_reply(r, sleep_d));
    tw_deferred *rel;
    assert_rc(tw_redis_lock_release(l, &rel), 0);
    assert_int_equal(rt_failure(r, rel, NULL, 0), TW_ELEASE);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_close(r, pauser);
    rt_reactor_free(r);
}

/* A release lost with its connection (written, then the connection killed
 * before the server read it: CLIENT PAUSE WRITE holds it unread) says so,
 * TW_ECONNLOST; but the lock does not stay with a holder that is gone for
 * the rest of its 30 s lease: the release is sent again on the new
 * connection (it is owner-checked, so a second run would be harmless).
 * The same for a release that passes the lock to a local waiter. */
static void release_lost_case(tw_reactor *r, tw_redis *c, tw_redis_lock *l, bool pass)
{
    long long id = rt_int(r, c, "CLIENT ID");
    tw_deferred *d, *rel;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    uint64_t t0 = tw_redis_lock_token(l);
    grant_log log = {0};
    grant_ctx g;
    if (pass)
        acquire_logged(l, &log, &g, 0);
    redisReply *rep = tw_test_redis_cmd(&rt_server, "CLIENT PAUSE 5000 WRITE");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_rc(tw_redis_lock_release(l, &rel), 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "CLIENT KILL ID %lld", id), 1);
    rep = tw_test_redis_cmd(&rt_server, "CLIENT UNPAUSE");
    assert_non_null(rep);
    freeReplyObject(rep);
    assert_int_equal(rt_failure(r, rel, NULL, 0), TW_ECONNLOST);
    double deadline = tw_test_now() + 3;
    if (pass) { /* the waiter gets its turn, with the next token */
        until_count(r, &log.n, 1, 3);
        assert_int_equal(log.token[0], t0 + 1);
        assert_rc(tw_redis_lock_release(l, NULL), 0);
    }
    while (key_exists("twine:lock:{gone}")) {
        if (tw_test_now() > deadline)
            fail_msg("the lock stayed with a released holder (%s)", pass ? "pass" : "release");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
}

static void test_release_lost_in_flight(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "gone", 30.0, &l), 0);
    release_lost_case(r, c, l, false);
    release_lost_case(r, c, l, true);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== fencing ====================================================================== */

static void test_fenced_set(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "fence", 5.0, &l), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_fenced_set(l, "res", "x", 1, &d), TW_EPERM);
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    uint64_t t1 = tw_redis_lock_token(l);
    static const char v1[] = {'o', 0, 'n', 'e'};
    assert_rc(tw_redis_lock_fenced_set(l, "res", v1, sizeof v1, &d), 0);
    tw_redis_reply_free(rt_reply(r, d));
    assert_rc(tw_redis_lock_release(l, NULL), 0);
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    uint64_t t2 = tw_redis_lock_token(l);
    assert_true(t2 > t1);
    /* the old holder's write, replayed: refused by Redis */
    char msg[256];
    assert_rc(tw_redis_fenced_set(c, "fence", t1, "res", "late", 4, &d), 0);
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_ESTALE);
    assert_non_null(strstr(msg, "older"));
    /* a token never issued */
    assert_rc(tw_redis_fenced_set(c, "fence", t2 + 5, "res", "bogus", 5, &d), 0);
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_EREMOTE);
    tw_redis_reply *rep = rt_cmd(r, c, "GET res");
    assert_int_equal(rep->len, sizeof v1);
    assert_memory_equal(rep->str, v1, sizeof v1);
    tw_redis_reply_free(rep);
    assert_rc(tw_redis_lock_release(l, NULL), 0);
    assert_rc(tw_redis_fenced_set(c, "", 1, "res", "x", 1, &d), TW_EINVAL);
    assert_rc(tw_redis_fenced_set(c, "fence", 1, NULL, "x", 1, &d), TW_EINVAL);
    iterate_for(r, 0.02);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== a holder killed with SIGKILL ==================================================== */

/* The child: holds the lock "killed" (TTL 1 s), writes "child" fenced,
 * says "held <token>" on stdout, and keeps renewing until it is killed. */
static int child_hold(int port)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    tw_reactor *r;
    if (tw_reactor_create(&r))
        return 2;
    tw_redis_config cfg = TW_REDIS_CONFIG_INIT;
    cfg.port = port;
    tw_redis *c;
    tw_redis_lock *l;
    if (tw_redis_connect(r, &cfg, &c) || tw_redis_lock_create(c, "killed", 1.0, &l))
        return 3;
    tw_deferred *d;
    tw_redis_lock_acquire(l, &d);
    while (!tw_deferred_called(d))
        tw_reactor_iterate(r, 0.05);
    tw_deferred_unref(d);
    tw_redis_lock_fenced_set(l, "guarded", "child", 5, &d);
    while (!tw_deferred_called(d))
        tw_reactor_iterate(r, 0.05);
    tw_deferred_unref(d);
    printf("held %llu\n", (unsigned long long)tw_redis_lock_token(l));
    fflush(stdout);
    for (;;)
        tw_reactor_iterate(r, 1.0);
}

static void test_holder_killed(void **state)
{
    (void)state;
    rt_require_server();
    int p[2];
    assert_int_equal(pipe(p), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    char port[16];
    snprintf(port, sizeof port, "%d", rt_server.port);
    char *argv[] = {"test_redis_lock", "--hold", port, NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    unsigned long long child_token = 0;
    int got = fscanf(f, "held %llu", &child_token);
    fclose(f);
    if (got != 1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the child did not take the lock");
    }

    tw_reactor *r = rt_reactor(false);
    /* two other processes wait for it */
    tw_redis *c = rt_connect(r), *c2 = rt_connect(r);
    tw_redis_lock *l, *l2;
    assert_rc(tw_redis_lock_create(c, "killed", 1.0, &l), 0);
    assert_rc(tw_redis_lock_create(c2, "killed", 1.0, &l2), 0);
    grant_log log = {0};
    log.release = true; /* each releases at once: the next one's turn */
    grant_ctx g, g2;
    acquire_logged(l, &log, &g, 1);
    acquire_logged(l2, &log, &g2, 2);
    iterate_for(r, 0.3);
    assert_int_equal(log.n, 0); /* the child renews: still its */
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    double t0 = tw_test_now();
    until_count(r, &log.n, 1, 10);
    double waited = tw_test_now() - t0;
    /* at most the TTL (1 s) after its last renewal, plus the retry's jitter */
    assert_true(waited <= 1.0 * 1.1 + 0.5);
    until_count(r, &log.n, 2, 10);
    /* tokens strictly increase: the dead holder's, then each waiter's */
    assert_true(log.token[0] > child_token);
    assert_true(log.token[1] > log.token[0]);
    assert_int_equal(log.token[1], child_token + 2);
    tw_redis_lock_stats st, st2;
    tw_redis_lock_stats_get(l, &st);
    tw_redis_lock_stats_get(l2, &st2);
    assert_int_equal(st.acquired + st2.acquired, 2);
    assert_true(st.retries + st2.retries >= 1); /* found the dead holder's lease run out */
    assert_true(st.handoffs + st2.handoffs >= 1); /* the second, at least, was handed over */
    /* the dead holder's late write, replayed: refused */
    tw_deferred *d;
    assert_rc(tw_redis_fenced_set(c, "killed", child_token, "guarded", "late", 4, &d), 0);
    assert_int_equal(rt_failure(r, d, NULL, 0), TW_ESTALE);
    tw_redis_reply *rep = rt_cmd(r, c, "GET guarded");
    assert_string_equal(rep->str, "child");
    tw_redis_reply_free(rep);
    rt_until_gone(r, "twine:lock:{killed}", 10);
    assert_rc(tw_redis_lock_destroy(l), 0);
    assert_rc(tw_redis_lock_destroy(l2), 0);
    rt_close(r, c);
    rt_close(r, c2);
    rt_reactor_free(r);
}

/* The server restarted (no persistence) under a holder: its renewals come
 * back "not the owner", the lease is lost, and the lock works again. */
/* A server still loading its data after a restart answers "LOADING": an
 * acquire sent then is tried again until the server is ready, instead of
 * failing every waiter with the server's passing state. */
static void test_acquire_while_loading(void **state)
{
    (void)state;
    tw_test_redis *own = rt_own_server(NULL);
    tw_reactor *r = rt_reactor(false);
    tw_redis_config cfg = rt_config(own->port, 5.0);
    tw_redis *c = rt_connect_to(r, &cfg);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "loading", 5.0, &l), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(l, &d), 0); /* the wake channel, first */
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_release(l, NULL), 0);
    iterate_for(r, 0.05);
    redisContext *reload = rt_loading_begin(own, 0.6);
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result res = rt_wait(r, d);
    if (tw_result_is_failure(res))
        fail_msg("acquire failed: %s", tw_failure_message(tw_result_as_failure(res)));
    assert_true(tw_redis_lock_held(l));
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(l, &st);
    assert_true(st.retries >= 1); /* it did meet the loading server */
    rt_loading_end(reload);
    assert_rc(tw_redis_lock_release(l, NULL), 0);
    iterate_for(r, 0.05);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

static void test_server_restart_loses_lease(void **state)
{
    (void)state;
    tw_test_redis *own = rt_own_server(NULL);
    tw_reactor *r = rt_reactor(false);
    tw_redis_config cfg = rt_config(own->port, 2.0);
    tw_redis *c = rt_connect_to(r, &cfg);
    tw_redis_lock *l;
    assert_rc(tw_redis_lock_create(c, "restart", 1.0, &l), 0);
    tw_deferred *d, *lost;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_lease_lost(l, &lost), 0);
    tw_test_redis_kill(own, SIGKILL);
    assert_int_equal(tw_test_redis_restart(own), 0);
    char msg[256];
    assert_int_equal(rt_failure(r, lost, msg, sizeof msg), TW_ELEASE);
    assert_rc(tw_redis_lock_release(l, &d), 0);
    assert_int_equal(rt_failure(r, d, NULL, 0), TW_ELEASE);
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
    assert_int_equal(tw_redis_lock_token(l), 1); /* the counter was not persisted */
    assert_rc(tw_redis_lock_release(l, NULL), 0);
    iterate_for(r, 0.05);
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== cancel, destroy, bad input ====================================================== */

static void test_cancel_and_destroy(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *ca = rt_connect(r), *cb = rt_connect(r);
    tw_redis_lock *a, *b;
    assert_rc(tw_redis_lock_create(ca, "cd", 30.0, &a), 0);
    assert_rc(tw_redis_lock_create(cb, "cd", 30.0, &b), 0);
    tw_deferred *d, *w1, *w2;
    assert_rc(tw_redis_lock_acquire(a, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_destroy(a), TW_EBUSY);
    /* b waits in Redis, then gives up: its registration goes */
    assert_rc(tw_redis_lock_acquire(b, &w1), 0);
    double deadline = tw_test_now() + 10;
    while (tw_test_redis_int(&rt_server, "ZCARD twine:lock:{cd}:queue") != 1 &&
           tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_rc(tw_deferred_cancel(w1), 0);
    assert_int_equal(rt_failure(r, w1, NULL, 0), TW_ECANCELED);
    while (tw_test_redis_int(&rt_server, "ZCARD twine:lock:{cd}:queue") != 0 &&
           tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "EXISTS twine:lock:{cd}:ttl"), 0);
    /* a release with nobody waiting deletes the key */
    tw_deferred *rel;
    assert_rc(tw_redis_lock_release(a, &rel), 0);
    tw_result_drop(rt_wait(r, rel));
    assert_false(key_exists("twine:lock:{cd}"));
    /* destroy with waiters: they fail with TW_ESHUTDOWN */
    assert_rc(tw_redis_lock_acquire(a, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_acquire(b, &w1), 0);
    assert_rc(tw_redis_lock_acquire(b, &w2), 0);
    assert_rc(tw_redis_lock_destroy(b), 0);
    assert_int_equal(rt_failure(r, w1, NULL, 0), TW_ESHUTDOWN);
    assert_int_equal(rt_failure(r, w2, NULL, 0), TW_ESHUTDOWN);
    assert_rc(tw_redis_lock_release(a, &rel), 0);
    tw_result res = rt_wait(r, rel);
    assert_false(tw_result_is_failure(res));
    assert_false(key_exists("twine:lock:{cd}"));
    assert_rc(tw_redis_lock_destroy(a), 0);
    rt_close(r, ca);
    rt_close(r, cb);
    rt_reactor_free(r);
}

static void test_bad_input(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_lock *l = NULL;
    assert_rc(tw_redis_lock_create(NULL, "x", 1, &l), TW_EINVAL);
    assert_rc(tw_redis_lock_create(c, NULL, 1, &l), TW_EINVAL);
    assert_rc(tw_redis_lock_create(c, "", 1, &l), TW_EINVAL);
    assert_rc(tw_redis_lock_create(c, "x", 1, NULL), TW_EINVAL);
    char longname[514];
    memset(longname, 'n', 513);
    longname[513] = 0;
    assert_rc(tw_redis_lock_create(c, longname, 1, &l), TW_EINVAL);
    longname[512] = 0;
    assert_rc(tw_redis_lock_create(c, longname, 1, &l), 0);
    assert_rc(tw_redis_lock_destroy(l), 0);
    const double bad_ttl[] = {0, -1, NAN, INFINITY, 0.001, 2e6};
    for (size_t i = 0; i < sizeof bad_ttl / sizeof *bad_ttl; i++)
        if (tw_redis_lock_create(c, "x", bad_ttl[i], &l) != TW_EINVAL)
            fail_msg("ttl %g was accepted", bad_ttl[i]);

    /* the lock's key holds another type: a clear error, nothing touched */
    tw_redis_reply_free(rt_cmd(r, c, "RPUSH %s a b", "twine:lock:{typed}"));
    assert_rc(tw_redis_lock_create(c, "typed", 1.0, &l), 0);
    tw_deferred *d;
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    char msg[256];
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_EREMOTE);
    assert_non_null(strstr(msg, "WRONGTYPE"));
    assert_int_equal(tw_test_redis_int(&rt_server, "LLEN twine:lock:{typed}"), 2);
    assert_rc(tw_redis_lock_release(l, NULL), TW_EPERM);
    assert_rc(tw_redis_lock_lease_lost(l, &d), TW_EPERM);
    assert_rc(tw_redis_lock_run(l, NULL, NULL, &d), TW_EINVAL);
    assert_rc(tw_redis_lock_destroy(l), 0);
    /* a name with spaces, braces and bytes above 127 */
    assert_rc(tw_redis_lock_create(c, "a b {c} \xc3\xa9", 1.0, &l), 0);
    assert_rc(tw_redis_lock_acquire(l, &d), 0);
    tw_result_drop(rt_wait(r, d));
    assert_rc(tw_redis_lock_release(l, &d), 0);
    tw_result res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
    assert_rc(tw_redis_lock_destroy(l), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== main ========================================================================= */

#define T(fn) cmocka_unit_test_setup_teardown(fn, rt_setup, rt_teardown)

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--hold") == 0)
        return child_hold(atoi(argv[2]));
    const struct CMUnitTest tests[] = {
        T(test_first_use_on_two_loops),
        T(test_acquire_release),
        T(test_fifo_in_process),
        T(test_run),
        T(test_handoff_by_pubsub),
        T(test_handoff_lost_on_reconnect),
        T(test_handoff_time_left),
        T(test_locks_on_one_connection),
        T(test_release_watcher_acquires),
        T(test_close_from_handoff),
        T(test_contended_counter),
        T(test_watchdog),
        T(test_lease_lost),
        T(test_run_lease_lost),
        T(test_lease_lost_server_paused),
        T(test_release_lost_in_flight),
        T(test_fenced_set),
        T(test_holder_killed),
        T(test_acquire_while_loading),
        T(test_server_restart_loses_lease),
        T(test_cancel_and_destroy),
        T(test_bad_input),
    };
    return cmocka_run_group_tests(tests, rt_group_setup, rt_group_teardown);
}
