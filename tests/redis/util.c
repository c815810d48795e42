#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tw_test_redis rt_server;
static bool have_server;

int rt_group_setup(void **state)
{
    (void)state;
    have_server = tw_test_redis_start(&rt_server, NULL) == 0;
    if (!have_server)
        fprintf(stderr, "no redis-server for these tests: %s\n", rt_server.why);
    return 0;
}

int rt_group_teardown(void **state)
{
    (void)state;
    tw_test_redis_stop(&rt_server);
    return 0;
}

void rt_require_server(void)
{
    if (!have_server) {
        print_message("skipped: %s\n", rt_server.why);
        skip();
    }
}

int rt_setup(void **state)
{
    (void)state;
    if (have_server) {
        redisReply *r = tw_test_redis_cmd(&rt_server, "FLUSHALL");
        if (r)
            freeReplyObject(r);
    }
    tw_test_trace_clear();
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    return 0;
}

static tw_test_redis own[2];
static int nown;

tw_test_redis *rt_own_server(const char *const *extra)
{
    assert_true(nown < 2);
    tw_test_redis *s = &own[nown];
    if (tw_test_redis_start(s, extra) != 0) {
        print_message("skipped: %s\n", s->why);
        skip();
    }
    nown++;
    return s;
}

int rt_teardown(void **state)
{
    (void)state;
    while (nown)
        tw_test_redis_stop(&own[--nown]);
    return tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
}

static bool loading(const tw_test_redis *s)
{
    redisReply *info = tw_test_redis_cmd(s, "INFO persistence");
    bool yes = info && info->type == REDIS_REPLY_STRING && strstr(info->str, "loading:1");
    if (info)
        freeReplyObject(info);
    return yes;
}

redisContext *rt_loading_begin(const tw_test_redis *s, double seconds)
{
    enum { KEYS = 2000 };
    long long delay_us = (long long)(seconds * 1e6 / KEYS);
    redisReply *rep = tw_test_redis_cmd(s, "DEBUG POPULATE %d rt:loading", KEYS);
    assert_non_null(rep);
    freeReplyObject(rep);
    rep = tw_test_redis_cmd(s, "CONFIG SET key-load-delay %lld", delay_us);
    assert_non_null(rep);
    freeReplyObject(rep);
    rep = tw_test_redis_cmd(s, "CONFIG SET loading-process-events-interval-bytes 1024");
    assert_non_null(rep);
    freeReplyObject(rep);
    /* sent, its reply read at the end: the server blocks this connection */
    redisContext *reload = tw_test_redis_connect(s);
    assert_non_null(reload);
    assert_int_equal(redisAppendCommand(reload, "DEBUG RELOAD"), REDIS_OK);
    int done = 0;
    while (!done)
        assert_int_equal(redisBufferWrite(reload, &done), REDIS_OK);
    double deadline = tw_test_now() + 10;
    while (!loading(s)) {
        if (tw_test_now() > deadline)
            fail_msg("the server never started loading");
    }
    return reload;
}

void rt_loading_end(redisContext *reload)
{
    void *rep = NULL;
    assert_int_equal(redisGetReply(reload, &rep), REDIS_OK);
    freeReplyObject(rep);
    redisFree(reload);
}

tw_reactor *rt_reactor(bool fake_clock)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.fake_clock = fake_clock;
    tw_reactor *r = NULL;
    assert_rc(tw_reactor_create_with(&cfg, &r), 0);
    return r;
}

void rt_reactor_free(tw_reactor *r)
{
    assert_rc(tw_reactor_destroy(r), 0);
}

tw_redis_config rt_config(int port, double command_timeout)
{
    tw_redis_config cfg = TW_REDIS_CONFIG_INIT;
    cfg.port = port;
    cfg.command_timeout = command_timeout;
    cfg.reconnect_min = 0.01;
    cfg.reconnect_max = 0.2;
    return cfg;
}

tw_redis *rt_connect_to(tw_reactor *r, const tw_redis_config *cfg)
{
    tw_redis *c = NULL;
    assert_rc(tw_redis_connect(r, cfg, &c), 0);
    tw_deferred *d;
    assert_rc(tw_redis_wait_connected(c, &d), 0);
    tw_result res = rt_wait(r, d);
    if (tw_result_is_failure(res))
        fail_msg("no connection: %s", tw_failure_message(tw_result_as_failure(res)));
    tw_result_drop(res);
    assert_true(tw_redis_connected(c));
    return c;
}

tw_redis *rt_connect(tw_reactor *r)
{
    rt_require_server();
    tw_redis_config cfg = rt_config(rt_server.port, 10.0);
    return rt_connect_to(r, &cfg);
}

void rt_close(tw_reactor *r, tw_redis *c)
{
    tw_deferred *d;
    assert_rc(tw_redis_close(c, &d), 0);
    tw_result res = rt_wait(r, d);
    assert_false(tw_result_is_failure(res));
    tw_result_drop(res);
}

void rt_until(tw_reactor *r, const bool *flag, double limit)
{
    double deadline = tw_test_now() + limit;
    while (!*flag) {
        if (tw_test_now() > deadline)
            fail_msg("not done after %g s", limit);
        assert_rc(tw_reactor_iterate(r, 0.05), 0);
    }
}

void rt_until_gone(tw_reactor *r, const char *key, double limit)
{
    double deadline = tw_test_now() + limit;
    while (tw_test_redis_int(&rt_server, "EXISTS %s", key) != 0) {
        if (tw_test_now() > deadline)
            fail_msg("%s still exists after %g s", key, limit);
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
}

typedef struct waiter {
    bool done;
    tw_result r;
} waiter;

static tw_result take(tw_result r, void *arg)
{
    waiter *w = arg;
    w->r = r;
    w->done = true;
    return tw_result_none();
}

tw_result rt_wait(tw_reactor *r, tw_deferred *d)
{
    waiter w = {false, {NULL, NULL}};
    assert_rc(tw_deferred_add_both(d, take, &w), 0);
    tw_deferred_unref(d);
    rt_until(r, &w.done, 20.0);
    return w.r;
}

tw_redis_reply *rt_reply(tw_reactor *r, tw_deferred *d)
{
    tw_result res = rt_wait(r, d);
    if (tw_result_is_failure(res)) {
        char buf[512];
        tw_failure_format(tw_result_as_failure(res), buf, sizeof buf);
        tw_result_drop(res);
        fail_msg("expected a reply, got %s", buf);
    }
    assert_true(res.drop == tw_redis_reply_free);
    return res.ptr;
}

int rt_failure(tw_reactor *r, tw_deferred *d, char *msg, size_t size)
{
    tw_result res = rt_wait(r, d);
    if (!tw_result_is_failure(res)) {
        tw_result_drop(res);
        fail_msg("expected a failure, got a value");
    }
    int code = tw_failure_code(tw_result_as_failure(res));
    if (msg)
        snprintf(msg, size, "%s", tw_failure_message(tw_result_as_failure(res)));
    tw_result_drop(res);
    return code;
}

static tw_redis_reply *vcmd(tw_reactor *r, tw_redis *c, const char *fmt, va_list ap)
{
    tw_deferred *d;
    assert_rc(tw_redis_commandv(c, &d, fmt, ap), 0);
    return rt_reply(r, d);
}

tw_redis_reply *rt_cmd(tw_reactor *r, tw_redis *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tw_redis_reply *rep = vcmd(r, c, fmt, ap);
    va_end(ap);
    return rep;
}

long long rt_int(tw_reactor *r, tw_redis *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tw_redis_reply *rep = vcmd(r, c, fmt, ap);
    va_end(ap);
    long long v = 0;
    if (rep->type == TW_REDIS_INTEGER)
        v = rep->integer;
    else if (rep->type == TW_REDIS_STRING)
        v = strtoll(rep->str, NULL, 10);
    else if (rep->type == TW_REDIS_NIL)
        v = 0;
    else
        fail_msg("reply of type %d is not an integer", (int)rep->type);
    tw_redis_reply_free(rep);
    return v;
}
