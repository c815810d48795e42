/*
 * The Redis connection (twine/redis.h) against a real redis-server started by
 * the test: replies of every type copied out of hiredis, Redis's errors as
 * TW_EREMOTE with its text, order kept across a connection that is not up
 * yet, command timeouts on a fake clock (no server: TW_ENOTCONN, exactly at
 * the timeout), a paused server (DEBUG SLEEP: TW_ETIMEDOUT, late replies
 * dropped), CLIENT KILL with commands in flight (TW_ECONNLOST, then a
 * reconnection), a server killed and restarted (every command accounted
 * for), cancel, close, AUTH and SELECT, a Unix socket, scripts (EVAL, then
 * EVALSHA, NOSCRIPT after SCRIPT FLUSH), bad input, payloads with NUL bytes
 * and of several MiB, a thread reaching the connection through
 * blocking_call_from_thread, and the TW_DEBUG wrong-thread report.
 */
#include "util.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis/redis.h"

/* ==== replies ===================================================================== */

static void test_reply_types(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);

    tw_redis_reply *rep = rt_cmd(r, c, "PING");
    assert_int_equal(rep->type, TW_REDIS_STATUS);
    assert_string_equal(rep->str, "PONG");
    assert_int_equal(rep->len, 4);
    tw_redis_reply_free(rep);

    static const char bin[] = {'a', 0, 'b', 0, 0, 'c'};
    rep = rt_cmd(r, c, "SET %s %b", "k", bin, sizeof bin);
    assert_int_equal(rep->type, TW_REDIS_STATUS);
    assert_string_equal(rep->str, "OK");
    tw_redis_reply_free(rep);
    rep = rt_cmd(r, c, "GET k");
    assert_int_equal(rep->type, TW_REDIS_STRING);
    assert_int_equal(rep->len, sizeof bin);
    assert_memory_equal(rep->str, bin, sizeof bin);
    assert_int_equal(rep->str[rep->len], 0);
    tw_redis_reply_free(rep);

    rep = rt_cmd(r, c, "GET %s", "missing");
    assert_int_equal(rep->type, TW_REDIS_NIL);
    tw_redis_reply_free(rep);

    assert_int_equal(rt_int(r, c, "INCRBY n %d", 41), 41);
    assert_int_equal(rt_int(r, c, "INCR n"), 42);

    /* nested arrays, an empty string, an empty array, an error element */
    rep = rt_cmd(r, c, "EVAL %s 0",
                 "return {1, 'two', {'x', {}}, '', redis.error_reply('E inner')}");
    assert_int_equal(rep->type, TW_REDIS_ARRAY);
    assert_int_equal(rep->len, 5);
    assert_int_equal(rep->element[0].type, TW_REDIS_INTEGER);
    assert_int_equal(rep->element[0].integer, 1);
    assert_string_equal(rep->element[1].str, "two");
    assert_int_equal(rep->element[2].type, TW_REDIS_ARRAY);
    assert_int_equal(rep->element[2].len, 2);
    assert_string_equal(rep->element[2].element[0].str, "x");
    assert_int_equal(rep->element[2].element[1].type, TW_REDIS_ARRAY);
    assert_int_equal(rep->element[2].element[1].len, 0);
    assert_int_equal(rep->element[3].type, TW_REDIS_STRING);
    assert_int_equal(rep->element[3].len, 0);
    assert_int_equal(rep->element[4].type, TW_REDIS_ERROR);
    assert_string_equal(rep->element[4].str, "E inner");
    tw_redis_reply_free(rep);

    rt_close(r, c);
    rt_reactor_free(r);
}

/* Redis's errors fail the Deferred with TW_EREMOTE and Redis's own text;
 * the connection goes on. */
static void test_remote_errors(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_reply_free(rt_cmd(r, c, "LPUSH list a"));
    tw_deferred *d;
    char msg[256];
    assert_rc(tw_redis_command(c, &d, "INCR list"), 0);
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_EREMOTE);
    assert_string_equal(msg, "WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_rc(tw_redis_command(c, &d, "NOSUCHCOMMAND x"), 0);
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_EREMOTE);
    assert_non_null(strstr(msg, "unknown command"));
    assert_int_equal(rt_int(r, c, "LLEN list"), 1);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== order, pipelining ============================================================= */

typedef struct seq_log {
    int n;
    long long got[512];
} seq_log;

static tw_result log_int(tw_result res, void *arg)
{
    seq_log *l = arg;
    const tw_redis_reply *rep = res.ptr;
    assert_false(tw_result_is_failure(res));
    l->got[l->n++] = rep->integer;
    tw_result_drop(res);
    return tw_result_none();
}

/* Commands issued before the connection is up wait and go in call order;
 * so do commands issued from inside reply callbacks. */
static void test_order_before_connect(void **state)
{
    (void)state;
    rt_require_server();
    tw_reactor *r = rt_reactor(false);
    tw_redis_config cfg = rt_config(rt_server.port, 10.0);
    tw_redis *c;
    assert_rc(tw_redis_connect(r, &cfg, &c), 0);
    assert_false(tw_redis_connected(c));
    seq_log log = {0, {0}};
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        tw_deferred *d;
        assert_rc(tw_redis_command(c, &d, "INCR seq"), 0);
        assert_rc(tw_deferred_add_callback(d, log_int, &log), 0);
        tw_deferred_unref(d);
    }
    tw_redis_stats st;
    tw_redis_stats_get(c, &st);
    assert_int_equal(st.waiting, N);
    double deadline = tw_test_now() + 10;
    while (log.n < N && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.05), 0);
    assert_int_equal(log.n, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(log.got[i], i + 1);
    tw_redis_stats_get(c, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.commands, N);
    assert_int_equal(st.replies, N);
    rt_close(r, c);
    rt_reactor_free(r);
}

typedef struct chain {
    tw_redis *c;
    int left;
    seq_log *log;
} chain;

static tw_result chain_next(tw_result res, void *arg)
{
    chain *ch = arg;
    res = log_int(res, ch->log);
    if (--ch->left > 0) {
        /* two at a time from inside the callback: they leave in one write */
        for (int i = 0; i < 2; i++) {
            tw_deferred *d;
            assert_rc(tw_redis_command(ch->c, &d, "INCR chain"), 0);
            assert_rc(tw_deferred_add_callback(d, i ? chain_next : log_int,
                                               i ? (void *)ch : (void *)ch->log),
                      0);
            tw_deferred_unref(d);
        }
    }
    return res;
}

static void test_commands_from_callbacks(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    seq_log log = {0, {0}};
    chain ch = {c, 100, &log};
    tw_deferred *d;
    assert_rc(tw_redis_command(c, &d, "INCR chain"), 0);
    assert_rc(tw_deferred_add_callback(d, chain_next, &ch), 0);
    tw_deferred_unref(d);
    double deadline = tw_test_now() + 10;
    while (log.n < 199 && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.05), 0);
    assert_int_equal(log.n, 199);
    for (int i = 0; i < 199; i++)
        assert_int_equal(log.got[i], i + 1);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== timeouts ===================================================================== */

/* Nothing listens: the connection keeps retrying, and a command fails with
 * TW_ENOTCONN at its timeout (a fake clock: exactly then, not before),
 * naming the connection error. */
static void test_not_connected_times_out(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(true);
    /* a port that is bound but not listening: every connect is refused */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    tw_redis_config cfg = rt_config(ntohs(a.sin_port), 2.0);
    tw_redis *c;
    assert_rc(tw_redis_connect(r, &cfg, &c), 0);
    tw_deferred *d;
    assert_rc(tw_redis_command(c, &d, "PING"), 0);
    tw_test_capture cap;
    tw_test_capture_add(d, &cap);
    for (int i = 0; i < 19; i++) {
        assert_rc(tw_reactor_advance(r, 0.1), 0); /* reconnection attempts */
        assert_rc(tw_reactor_iterate(r, 0), 0);
    }
    assert_int_equal(cap.calls, 0); /* 1.9 s: still waiting */
    assert_rc(tw_reactor_advance(r, 0.1), 0);
    assert_int_equal(cap.calls, 1);
    assert_true(tw_result_is_failure(cap.r));
    tw_failure *f = tw_result_as_failure(cap.r);
    assert_int_equal(tw_failure_code(f), TW_ENOTCONN);
    if (!strstr(tw_failure_message(f), "PING not sent") ||
        !strstr(tw_failure_message(f), "refused"))
        fail_msg("unclear message: %s", tw_failure_message(f));
    assert_non_null(strstr(tw_redis_last_error(c), "refused"));
    tw_test_capture_release(&cap);
    tw_deferred_unref(d);
    tw_redis_stats st;
    tw_redis_stats_get(c, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.connects, 0);
    rt_close(r, c);
    rt_reactor_free(r);
    close(fd);
}

/* A paused server: commands in flight time out with TW_ETIMEDOUT; the
 * replies that come after the pause are dropped, and later commands get
 * their own replies. */
static void test_paused_server_times_out(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *pauser = rt_connect(r);
    tw_redis_config cfg = rt_config(rt_server.port, 0.3);
    tw_redis *c = rt_connect_to(r, &cfg);
    tw_deferred *sleep_d, *d1, *d2;
    assert_rc(tw_redis_command(pauser, &sleep_d, "DEBUG SLEEP 1.5"), 0);
    assert_rc(tw_redis_command(c, &d1, "SET p 1"), 0);
    assert_rc(tw_redis_command(c, &d2, "INCR p"), 0);
    char msg[256];
    double t0 = tw_test_now();
    assert_int_equal(rt_failure(r, d1, msg, sizeof msg), TW_ETIMEDOUT);
    tw_test_check_elapsed_at_least(t0, tw_test_now(), 0.3 - 0.05);
    assert_non_null(strstr(msg, "may or may not have run"));
    assert_int_equal(rt_failure(r, d2, msg, sizeof msg), TW_ETIMEDOUT);
    tw_redis_reply_free(rt_reply(r, sleep_d)); /* the pause is over */
    /* the late replies of SET and INCR are dropped, not given to these */
    assert_int_equal(rt_int(r, c, "GET p"), 2);
    tw_redis_reply *rep = rt_cmd(r, c, "ECHO %s", "mine");
    assert_string_equal(rep->str, "mine");
    tw_redis_reply_free(rep);
    tw_redis_stats st;
    tw_redis_stats_get(c, &st);
    assert_int_equal(st.timeouts, 2);
    assert_int_equal(st.disconnects, 0);
    rt_close(r, c);
    rt_close(r, pauser);
    rt_reactor_free(r);
}

/* ==== connection loss ============================================================== */

/* CLIENT KILL with two commands in flight: both fail with TW_ECONNLOST, the
 * connection comes back by itself, and the next command works. */
static void test_client_kill_in_flight(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    long long id = rt_int(r, c, "CLIENT ID");
    tw_deferred *d1, *d2;
    assert_rc(tw_redis_command(c, &d1, "BLPOP %s 30", "never"), 0);
    assert_rc(tw_redis_command(c, &d2, "INCR after"), 0);
    /* wait until the server has the BLPOP blocked */
    double deadline = tw_test_now() + 10;
    for (;;) {
        redisReply *info = tw_test_redis_cmd(&rt_server, "INFO clients");
        bool blocked = info && strstr(info->str, "blocked_clients:1");
        if (info)
            freeReplyObject(info);
        if (blocked)
            break;
        if (tw_test_now() > deadline)
            fail_msg("the BLPOP never blocked on the server");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
    assert_int_equal(tw_test_redis_int(&rt_server, "CLIENT KILL ID %lld", id), 1);
    char msg[256];
    assert_int_equal(rt_failure(r, d1, msg, sizeof msg), TW_ECONNLOST);
    assert_non_null(strstr(msg, "BLPOP in flight"));
    assert_int_equal(rt_failure(r, d2, msg, sizeof msg), TW_ECONNLOST);
    assert_int_equal(rt_int(r, c, "INCR after"), 1); /* INCR never ran before */
    tw_redis_stats st;
    tw_redis_stats_get(c, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.disconnects, 1);
    rt_close(r, c);
    rt_reactor_free(r);
}

typedef struct tally {
    int ok, lost, notconn, other;
} tally;

static tw_result count_outcome(tw_result res, void *arg)
{
    tally *t = arg;
    tw_failure *f = tw_result_as_failure(res);
    if (!f)
        t->ok++;
    else if (tw_failure_code(f) == TW_ECONNLOST)
        t->lost++;
    else if (tw_failure_code(f) == TW_ENOTCONN)
        t->notconn++;
    else
        t->other++;
    tw_result_drop(res);
    return tw_result_none();
}

/* The server killed and restarted on the same port in the middle of a run:
 * every command either completes or fails with a clear error (none
 * vanishes), the connection comes back, and commands after the restart work. */
static void test_server_restart(void **state)
{
    (void)state;
    tw_test_redis *own = rt_own_server(NULL);
    tw_reactor *r = rt_reactor(false);
    tw_redis_config cfg = rt_config(own->port, 5.0);
    tw_redis *c = rt_connect_to(r, &cfg);
    tally t = {0, 0, 0, 0};
    enum { N = 200 };
    for (int i = 0; i < N / 2; i++) {
        tw_deferred *d;
        assert_rc(tw_redis_command(c, &d, "INCR k"), 0);
        assert_rc(tw_deferred_add_both(d, count_outcome, &t), 0);
        tw_deferred_unref(d);
    }
    double deadline = tw_test_now() + 10;
    while (t.ok < N / 2 && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.02), 0);
    assert_int_equal(t.ok, N / 2);
    tw_test_redis_kill(own, SIGKILL);
    /* into a socket whose server is gone, or waiting for the next one */
    for (int i = 0; i < N / 2; i++) {
        tw_deferred *d;
        assert_rc(tw_redis_command(c, &d, "INCR k"), 0);
        assert_rc(tw_deferred_add_both(d, count_outcome, &t), 0);
        tw_deferred_unref(d);
    }
    while (tw_redis_connected(c) && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.02), 0);
    assert_false(tw_redis_connected(c));
    assert_int_equal(tw_test_redis_restart(own), 0);
    while (t.ok + t.lost + t.notconn + t.other < N && tw_test_now() < deadline + 10)
        assert_rc(tw_reactor_iterate(r, 0.02), 0);
    assert_int_equal(t.ok + t.lost + t.notconn + t.other, N);
    assert_int_equal(t.other, 0);
    assert_int_equal(t.notconn, 0); /* the restart came well within 5 s */
    /* the server (no persistence) restarted empty: it ran exactly the
     * commands of the second half that completed */
    assert_int_equal(rt_int(r, c, "GET k"), t.ok - N / 2);
    tw_redis_stats st;
    tw_redis_stats_get(c, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.disconnects, 1);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== cancel, close =================================================================== */

static void test_cancel(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_deferred *d1, *d2;
    assert_rc(tw_redis_command(c, &d1, "ECHO %s", "one"), 0);
    assert_rc(tw_redis_command(c, &d2, "ECHO %s", "two"), 0);
    assert_rc(tw_deferred_cancel(d1), 0);
    assert_int_equal(rt_failure(r, d1, NULL, 0), TW_ECANCELED);
    tw_redis_reply *rep = rt_reply(r, d2);
    assert_string_equal(rep->str, "two"); /* not "one": the late reply was dropped */
    tw_redis_reply_free(rep);

    /* cancelled while waiting for a connection: never sent */
    tw_redis_config cfg = rt_config(rt_server.port, 10.0);
    tw_redis *c2;
    assert_rc(tw_redis_connect(r, &cfg, &c2), 0);
    assert_rc(tw_redis_command(c2, &d1, "INCR never"), 0);
    assert_rc(tw_deferred_cancel(d1), 0);
    assert_int_equal(rt_failure(r, d1, NULL, 0), TW_ECANCELED);
    assert_int_equal(rt_int(r, c2, "GET never"), 0);
    rt_close(r, c2);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* close: commands in flight get their replies; those waiting for a
 * connection fail with TW_ESHUTDOWN; new ones are refused. */
static void test_close(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_deferred *d1, *closed;
    assert_rc(tw_redis_command(c, &d1, "INCR x"), 0);
    assert_rc(tw_redis_close(c, &closed), 0);
    tw_redis_reply *rep = rt_reply(r, d1);
    assert_int_equal(rep->integer, 1);
    tw_redis_reply_free(rep);
    tw_result res = rt_wait(r, closed);
    assert_false(tw_result_is_failure(res));
    tw_result_drop(res);

    tw_redis_config cfg = rt_config(rt_server.port, 10.0);
    assert_rc(tw_redis_connect(r, &cfg, &c), 0);
    assert_rc(tw_redis_command(c, &d1, "INCR x"), 0); /* not connected yet */
    tw_deferred *w;
    assert_rc(tw_redis_wait_connected(c, &w), 0);
    assert_rc(tw_redis_close(c, &closed), 0);
    assert_int_equal(rt_failure(r, d1, NULL, 0), TW_ESHUTDOWN);
    assert_int_equal(rt_failure(r, w, NULL, 0), TW_ESHUTDOWN);
    res = rt_wait(r, closed);
    tw_result_drop(res);
    assert_int_equal(tw_test_redis_int(&rt_server, "GET x"), 1);
    rt_reactor_free(r);
}

static tw_result close_in_callback(tw_result res, void *arg)
{
    tw_redis *c = arg;
    tw_result_drop(res);
    assert_rc(tw_redis_close(c, NULL), 0);
    assert_rc(tw_redis_close(c, NULL), TW_EALREADY);
    return tw_result_none();
}

/* Closing from inside a reply callback, with more replies in the same read. */
static void test_close_in_callback(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_deferred *d1, *d2;
    assert_rc(tw_redis_command(c, &d1, "PING"), 0);
    assert_rc(tw_redis_command(c, &d2, "INCR y"), 0);
    assert_rc(tw_deferred_add_both(d1, close_in_callback, c), 0);
    tw_deferred_unref(d1);
    tw_redis_reply *rep = rt_reply(r, d2); /* in flight: still answered */
    assert_int_equal(rep->integer, 1);
    tw_redis_reply_free(rep);
    /* the connection frees itself; the teardown checks nothing is left */
    for (int i = 0; i < 5; i++)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    rt_reactor_free(r);
}

/* ==== configuration ===================================================================== */

static void test_auth_select_unix(void **state)
{
    (void)state;
    /* the socket in the server's directory (redis has moved into it by then) */
    const char *args[] = {"--requirepass", "s3cret", "--unixsocket", "redis.sock", NULL};
    tw_test_redis *own = rt_own_server(args);
    char sock[192];
    snprintf(sock, sizeof sock, "%s/redis.sock", own->dir);
    tw_reactor *r = rt_reactor(false);
    tw_redis_config cfg = rt_config(own->port, 5.0);
    cfg.password = "s3cret";
    cfg.db = 3;
    tw_redis *c = rt_connect_to(r, &cfg);
    tw_redis_reply_free(rt_cmd(r, c, "SET indb3 yes"));
    tw_redis_reply *info = rt_cmd(r, c, "CLIENT INFO");
    assert_non_null(strstr(info->str, " db=3 "));
    tw_redis_reply_free(info);
    rt_close(r, c);

    /* over the Unix socket, db 3 again */
    tw_redis_config ucfg = rt_config(0, 5.0);
    ucfg.unix_path = sock;
    ucfg.password = "s3cret";
    ucfg.db = 3;
    c = rt_connect_to(r, &ucfg);
    tw_redis_reply *rep = rt_cmd(r, c, "GET indb3");
    assert_string_equal(rep->str, "yes");
    tw_redis_reply_free(rep);
    rt_close(r, c);

    /* a wrong password: commands fail with the server's refusal */
    cfg.password = "wrong";
    c = rt_connect_to(r, &cfg);
    tw_deferred *d;
    char msg[256];
    assert_rc(tw_redis_command(c, &d, "GET indb3"), 0);
    assert_int_equal(rt_failure(r, d, msg, sizeof msg), TW_EREMOTE);
    assert_non_null(strstr(msg, "NOAUTH"));
    if (!strstr(tw_redis_last_error(c), "WRONGPASS"))
        fail_msg("last error: \"%s\"", tw_redis_last_error(c));
    rt_close(r, c);
    rt_reactor_free(r);
}

static void test_bad_input(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(true);
    tw_redis_config cfg = TW_REDIS_CONFIG_INIT;
    tw_redis *c = NULL;
    assert_rc(tw_redis_connect(NULL, &cfg, &c), TW_EINVAL);
    assert_rc(tw_redis_connect(r, NULL, &c), TW_EINVAL);
    assert_rc(tw_redis_connect(r, &cfg, NULL), TW_EINVAL);
    tw_redis_config bad = cfg;
    bad.port = 0;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.port = 70000;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.host = "";
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.connect_timeout = NAN;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.connect_timeout = 0;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.command_timeout = NAN;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.command_timeout = 0;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.reconnect_max = 0.01;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.unix_path = "";
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    bad = cfg;
    bad.db = -1;
    assert_rc(tw_redis_connect(r, &bad, &c), TW_EINVAL);
    assert_null(c);

    char buf[64];
    tw_redis_config p = TW_REDIS_CONFIG_INIT;
    assert_rc(tw_redis_parse_address("10.1.2.3:6380", buf, sizeof buf, &p), 0);
    assert_string_equal(p.host, "10.1.2.3");
    assert_int_equal(p.port, 6380);
    assert_rc(tw_redis_parse_address("[::1]:7000", buf, sizeof buf, &p), 0);
    assert_string_equal(p.host, "::1");
    assert_int_equal(p.port, 7000);
    assert_rc(tw_redis_parse_address("unix:/tmp/r.sock", buf, sizeof buf, &p), 0);
    assert_string_equal(p.unix_path, "/tmp/r.sock");
    const char *bads[] = {"host", "host:", ":6379", "host:0", "host:65536", "host:12x",
                          "::1:6379", "[::1]6379", "unix:", NULL};
    for (int i = 0; bads[i]; i++)
        if (tw_redis_parse_address(bads[i], buf, sizeof buf, &p) != TW_EINVAL)
            fail_msg("\"%s\" was accepted", bads[i]);
    assert_rc(tw_redis_parse_address("127.0.0.1:6379", buf, 4, &p), TW_EINVAL);

    /* a connection (to nowhere) and the command calls' argument checks */
    cfg.port = 1;
    assert_rc(tw_redis_connect(r, &cfg, &c), 0);
    tw_deferred *d = NULL;
    assert_rc(tw_redis_command(c, NULL, "PING"), TW_EINVAL);
    assert_rc(tw_redis_command(c, &d, NULL), TW_EINVAL);
    assert_rc(tw_redis_command(c, &d, "SET %q"), TW_EINVAL);
    assert_rc(tw_redis_command(c, &d, ""), TW_EINVAL);   /* no words: never answered */
    assert_rc(tw_redis_command(c, &d, "   "), TW_EINVAL);
    assert_rc(tw_redis_command_argv(c, 0, NULL, NULL, &d), TW_EINVAL);
    const char *argv[] = {"GET", NULL};
    assert_rc(tw_redis_command_argv(c, 2, argv, NULL, &d), TW_EINVAL);
    assert_rc(tw_redis_command_argv_timeout(c, NAN, 1, argv, NULL, &d), TW_EINVAL);
    assert_null(d);
    assert_rc(tw_redis_close(c, NULL), 0);
    rt_reactor_free(r);
}

/* Several MiB with NUL bytes everywhere, through argv (binary safe). */
static void test_large_payload(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    size_t n = 6u << 20;
    char *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i % 7 == 0 ? 0 : (i * 31) & 0xff);
    const char *argv[] = {"SET", "big", big};
    size_t lens[] = {3, 3, n};
    tw_deferred *d;
    assert_rc(tw_redis_command_argv(c, 3, argv, lens, &d), 0);
    tw_redis_reply_free(rt_reply(r, d));
    tw_redis_reply *rep = rt_cmd(r, c, "GET big");
    assert_int_equal(rep->type, TW_REDIS_STRING);
    assert_int_equal(rep->len, n);
    assert_memory_equal(rep->str, big, n);
    tw_redis_reply_free(rep);
    free(big);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== scripts ========================================================================= */

static tw__script test_script = {"test", "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}",
                                 7, "", false};

static long long eval_once(tw_reactor *r, tw_redis *c)
{
    const char *argv[] = {"ctr", "arg"};
    tw_deferred *d;
    assert_rc(tw__redis_eval(c, &test_script, 1, 2, argv, NULL, &d), 0);
    tw_redis_reply *rep = rt_reply(r, d);
    assert_int_equal(rep->len, 3);
    assert_string_equal(rep->element[0].str, "ctr");
    assert_string_equal(rep->element[1].str, "arg");
    long long v = rep->element[2].integer;
    tw_redis_reply_free(rep);
    return v;
}

static long long commandstat(const char *cmd)
{
    redisReply *info = tw_test_redis_cmd(&rt_server, "INFO commandstats");
    assert_non_null(info);
    char key[64];
    snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(info->str, key);
    long long v = p ? strtoll(p + strlen(key), NULL, 10) : 0;
    freeReplyObject(info);
    return v;
}

/* The first use on a connection sends EVAL, later ones EVALSHA; after
 * SCRIPT FLUSH, NOSCRIPT makes it send EVAL again, invisibly. */
static void test_scripts(void **state)
{
    (void)state;
    char sha[41];
    tw__sha1_hex("", 0, sha);
    assert_string_equal(sha, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    tw__sha1_hex("abc", 3, sha);
    assert_string_equal(sha, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *l56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    tw__sha1_hex(l56, strlen(l56), sha);
    assert_string_equal(sha, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");

    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_reply_free(rt_cmd(r, c, "CONFIG RESETSTAT"));
    assert_int_equal(eval_once(r, c), 1);
    assert_int_equal(eval_once(r, c), 2);
    assert_int_equal(eval_once(r, c), 3);
    assert_int_equal(commandstat("eval"), 1);
    assert_int_equal(commandstat("evalsha"), 2);
    tw_redis_reply_free(rt_cmd(r, c, "SCRIPT FLUSH"));
    assert_int_equal(eval_once(r, c), 4);
    assert_int_equal(commandstat("eval"), 2);
    assert_int_equal(commandstat("evalsha"), 3); /* one refused with NOSCRIPT */
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ==== threads ========================================================================= */

typedef struct from_thread {
    tw_reactor *r;
    tw_redis *c;
    tw_result got;
    int rc;
    bool done;
} from_thread;

static tw_result issue_get(void *arg)
{
    from_thread *ft = arg;
    tw_deferred *d;
    int rc = tw_redis_command(ft->c, &d, "GET %s", "shared");
    if (rc)
        return tw_result_fail(rc, "command refused");
    return tw_result_deferred(d);
}

static void *thread_main(void *arg)
{
    from_thread *ft = arg;
    ft->rc = tw_blocking_call_from_thread(ft->r, issue_get, ft, &ft->got);
    return NULL;
}

static void mark_done(void *arg)
{
    from_thread *ft = arg;
    ft->done = true;
}

static void *thread_then_post(void *arg)
{
    from_thread *ft = arg;
    thread_main(arg);
    tw_reactor_call_from_thread(ft->r, mark_done, ft);
    return NULL;
}

/* A thread waits for a reply through blocking_call_from_thread. */
static void test_blocking_call_from_thread(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_reply_free(rt_cmd(r, c, "SET shared %s", "from the loop"));
    from_thread ft = {r, c, {NULL, NULL}, 99, false};
    pthread_t t = tw_test_start(thread_then_post, &ft);
    rt_until(r, &ft.done, 20);
    tw_test_join(t);
    assert_rc(ft.rc, 0);
    assert_false(tw_result_is_failure(ft.got));
    const tw_redis_reply *rep = ft.got.ptr;
    assert_string_equal(rep->str, "from the loop");
    tw_result_drop(ft.got);
    rt_close(r, c);
    rt_reactor_free(r);
}

typedef struct wrong {
    tw_redis *c;
    tw_deferred *d;
    int rc;
} wrong;

static void *wrong_thread(void *arg)
{
    wrong *w = arg;
    w->rc = tw_redis_wait_connected(w->c, &w->d);
    return NULL;
}

/* TW_DEBUG builds report a call from a thread that is not the loop's. */
static void test_debug_wrong_thread(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    wrong w = {c, NULL, 99};
    tw_test_diag_reset();
    tw_test_join(tw_test_start(wrong_thread, &w));
    int n = tw_test_diag_count();
    tw_test_diag rec = {0};
    if (n > 0)
        rec = *tw_test_diag_at(0);
    tw_test_diag_reset();
    assert_rc(w.rc, 0);
    /* the Deferred was made on the other thread: the loop thread lets it go
     * (reported too, in TW_DEBUG builds, and forgotten) */
    tw_deferred_unref(w.d);
    tw_test_diag_reset();
    rt_close(r, c);
    rt_reactor_free(r);
    tw_test_require_debug_report(n, "tw_redis_wait_connected");
    assert_int_equal(rec.kind, TW_DIAG_MISUSE);
    assert_string_equal(rec.function, "tw_redis_wait_connected");
    assert_non_null(strstr(rec.message, "a Redis connection"));
}

/* ==== main ============================================================================= */

#define T(fn) cmocka_unit_test_setup_teardown(fn, rt_setup, rt_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_reply_types),
        T(test_remote_errors),
        T(test_order_before_connect),
        T(test_commands_from_callbacks),
        T(test_not_connected_times_out),
        T(test_paused_server_times_out),
        T(test_client_kill_in_flight),
        T(test_server_restart),
        T(test_cancel),
        T(test_close),
        T(test_close_in_callback),
        T(test_auth_select_unix),
        T(test_bad_input),
        T(test_large_payload),
        T(test_scripts),
        T(test_blocking_call_from_thread),
        T(test_debug_wrong_thread),
    };
    return cmocka_run_group_tests(tests, rt_group_setup, rt_group_teardown);
}
