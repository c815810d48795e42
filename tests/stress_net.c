/*
 * Stress for the net layer, on loopback, sizes scaled by TW_TEST_SCALE and
 * every check exact:
 *  - echo: many concurrent connections each send random bytes in writes of
 *    random sizes (write, writev, write_owned), half-close, and get every
 *    byte back, equal;
 *  - churn: waves of connections made and closed at once, half by
 *    lose_connection, half by abort_connection: every connection_made has
 *    its one connection_lost, with a reason that fits how it ended, and
 *    nothing is left behind;
 *  - threads: pool threads write numbered lines to a few transports through
 *    write_from_thread: every line arrives, each thread's in order.
 */
#define _GNU_SOURCE
#include "net_util.h"

#include <stdatomic.h>

static int setup(void **state)
{
    peers_reset();
    return net_setup(state);
}

static int teardown(void **state)
{
    peers_reset();
    return net_teardown(state);
}

/* ==== echo ====================================================================== */

typedef struct econn {
    tw_transport *t;
    unsigned char *out; /* what this client sends */
    size_t len;
    unsigned char *in; /* what came back */
    size_t got;
    int lost_code;
    bool lost;
    uint32_t seed;
} econn;

static econn *econns;
static int echo_lost, server_lost, server_bad;

static void srv_data(void *ctx, tw_transport *t, const void *data, size_t len)
{
    (void)ctx;
    int rc = tw_transport_write(t, data, len);
    if (rc)
        server_bad++;
}

static void srv_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)ctx;
    (void)t;
    if (tw_failure_code(why) != TW_ECONNDONE)
        server_bad++;
    server_lost++;
}

static const tw_protocol echo_server = {NULL, srv_data, NULL, srv_lost};

static void cli_made(void *ctx, tw_transport *t)
{
    econn *c = ctx;
    c->t = t;
    uint32_t x = c->seed;
    size_t off = 0;
    int kind = 0;
    while (off < c->len) {
        x = x * 1103515245u + 12345u;
        size_t n = 1 + (x >> 4) % 20000;
        if (n > c->len - off)
            n = c->len - off;
        int rc;
        if (kind % 3 == 0) {
            rc = tw_transport_write(t, c->out + off, n);
        } else if (kind % 3 == 1) {
            struct iovec v[2] = {{c->out + off, n / 3}, {c->out + off + n / 3, n - n / 3}};
            rc = tw_transport_writev(t, v, 2);
        } else {
            void *copy = malloc(n);
            memcpy(copy, c->out + off, n);
            rc = tw_transport_write_owned(t, copy, n, free);
        }
        assert_rc(rc, 0);
        kind++;
        off += n;
    }
    assert_rc(tw_transport_close_write(t), 0);
}

static void cli_data(void *ctx, tw_transport *t, const void *data, size_t len)
{
    (void)t;
    econn *c = ctx;
    assert_true(c->got + len <= c->len);
    memcpy(c->in + c->got, data, len);
    c->got += len;
}

static void cli_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)t;
    econn *c = ctx;
    assert_false(c->lost);
    c->lost = true;
    c->lost_code = tw_failure_code(why);
    echo_lost++;
}

static const tw_protocol echo_client = {cli_made, cli_data, NULL, cli_lost};

static int cli_build(void *arg, const tw_address *a, void **ctx)
{
    (void)a;
    *ctx = arg;
    return 0;
}

static void test_echo_many(void **state)
{
    (void)state;
    int n = (int)tw_test_scaled(200, 20);
    size_t max_len = tw_test_scaled(256u << 10, 32u << 10);
    echo_lost = server_lost = server_bad = 0;
    tw_reactor *r = net_reactor(false);
    tw_factory sf = {&echo_server, NULL, NULL};
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1:backlog=1024", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    econns = calloc((size_t)n, sizeof *econns);
    tw_deferred **ds = calloc((size_t)n, sizeof *ds);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        econn *c = &econns[i];
        c->seed = (uint32_t)i * 7919u + 1u;
        c->len = (size_t)(c->seed * 2654435761u % max_len);
        c->out = malloc(c->len + 1);
        c->in = malloc(c->len + 1);
        net_fill(c->out, c->len, c->seed);
        total += c->len;
        tw_factory cf = {&echo_client, cli_build, c};
        assert_rc(tw_endpoint_connect(r, ep, &cf, &ds[i]), 0);
    }
    NET_RUN_UNTIL(r, echo_lost == n && server_lost == n, 300);
    size_t back = 0;
    for (int i = 0; i < n; i++) {
        econn *c = &econns[i];
        if (c->lost_code != TW_ECONNDONE)
            fail_msg("client %d lost with %s", i, tw_err_name(c->lost_code));
        assert_int_equal(c->got, c->len);
        if (c->len && memcmp(c->in, c->out, c->len) != 0)
            fail_msg("client %d got different bytes back", i);
        back += c->got;
        free(c->out);
        free(c->in);
        tw_deferred_unref(ds[i]);
    }
    assert_int_equal(back, total);
    assert_int_equal(server_bad, 0);
    printf("echo: %d connections, %zu bytes each way, all equal\n", n, total);
    free(econns);
    free(ds);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== churn ====================================================================== */

static int churn_made[2], churn_lost[2], churn_bad;

static void churn_srv_made(void *ctx, tw_transport *t)
{
    (void)ctx;
    (void)t;
    churn_made[0]++;
}

static void churn_srv_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)ctx;
    (void)t;
    int code = tw_failure_code(why);
    if (code != TW_ECONNDONE && code != TW_ECONNRESET)
        churn_bad++;
    churn_lost[0]++;
}

static const tw_protocol churn_server = {churn_srv_made, srv_data, NULL, churn_srv_lost};

static void churn_cli_made(void *ctx, tw_transport *t)
{
    churn_made[1]++;
    assert_rc(tw_transport_write(t, "hello, world", 12), 0);
    if ((intptr_t)ctx & 1)
        assert_rc(tw_transport_abort_connection(t), 0);
    else
        assert_rc(tw_transport_lose_connection(t), 0);
}

static void churn_cli_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)t;
    int want = ((intptr_t)ctx & 1) ? TW_ECONNABORTED : TW_ECONNDONE;
    if (tw_failure_code(why) != want)
        churn_bad++;
    churn_lost[1]++;
}

static const tw_protocol churn_client = {churn_cli_made, NULL, NULL, churn_cli_lost};

static void test_churn(void **state)
{
    (void)state;
    int waves = (int)tw_test_scaled(40, 4), per = 100;
    memset(churn_made, 0, sizeof churn_made);
    memset(churn_lost, 0, sizeof churn_lost);
    churn_bad = 0;
    tw_reactor *r = net_reactor(false);
    tw_factory sf = {&churn_server, NULL, NULL};
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    tw_address a;
    assert_rc(tw_listener_address(l, &a), 0);
    tw_deferred **ds = calloc((size_t)per, sizeof *ds);
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < per; i++) {
            tw_factory cf = {&churn_client, cli_build, (void *)(intptr_t)i};
            assert_rc(tw_reactor_connect(r, &a, 10, &cf, &ds[i]), 0);
        }
        int want = (w + 1) * per;
        NET_RUN_UNTIL(r, churn_lost[0] == want && churn_lost[1] == want, 60);
        for (int i = 0; i < per; i++) {
            tw_result res;
            assert_true(tw_deferred_peek(ds[i], &res));
            assert_true(tw_result_is_value(res));
            tw_deferred_unref(ds[i]);
        }
    }
    assert_int_equal(churn_made[0], waves * per);
    assert_int_equal(churn_made[1], waves * per);
    assert_int_equal(churn_bad, 0);
    printf("churn: %d connections made and closed on each side\n", waves * per);
    free(ds);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== writes from threads ============================================================ */

#define THREADS 8
#define CONNS 2

typedef struct tjob {
    tw_transport *t;
    int id, count;
} tjob;

static tjob tjobs[THREADS];
static tw_transport *tconn[CONNS];
static int tconns;

static int tjob_run(void *arg)
{
    tjob *j = arg;
    char line[32];
    for (int i = 0; i < j->count; i++) {
        int n = snprintf(line, sizeof line, "%d:%d\n", j->id, i);
        if (tw_transport_write_from_thread(j->t, line, (size_t)n) != 0)
            return TW_EIO;
    }
    tw_transport_unref(j->t);
    return 0;
}

static void tsrv_made(void *ctx, tw_transport *t)
{
    (void)ctx;
    tconn[tconns++] = t;
}

static const tw_protocol thread_server = {tsrv_made, NULL, NULL, NULL};

static void test_threads_write(void **state)
{
    (void)state;
    int count = (int)tw_test_scaled(20000, 500);
    tconns = 0;
    tw_reactor *r = net_reactor(false);
    tw_factory sf = {&thread_server, NULL, NULL};
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    int fds[CONNS];
    for (int c = 0; c < CONNS; c++)
        fds[c] = raw_connect(AF_INET, net_port(l));
    NET_RUN_UNTIL(r, tconns == CONNS, 10);
    for (int k = 0; k < THREADS; k++) {
        tjobs[k] = (tjob){tw_transport_ref(tconn[k % CONNS]), k, count};
        assert_rc(tw_reactor_call_in_thread(r, tjob_run, &tjobs[k]), 0);
    }
    /* each connection gets the lines of its threads, k % CONNS == c */
    size_t want[CONNS] = {0};
    for (int k = 0; k < THREADS; k++)
        for (int i = 0; i < count; i++)
            want[k % CONNS] += (size_t)snprintf(NULL, 0, "%d:%d\n", k, i);
    unsigned char *buf[CONNS];
    size_t len[CONNS] = {0};
    bool eof = false;
    for (int c = 0; c < CONNS; c++)
        buf[c] = malloc(want[c] + 1);
    NET_RUN_UNTIL(r, (raw_read(fds[0], buf[0], want[0] + 1, &len[0], &eof),
                      raw_read(fds[1], buf[1], want[1] + 1, &len[1], &eof),
                      len[0] >= want[0] && len[1] >= want[1]),
                  120);
    int next[THREADS] = {0};
    for (int c = 0; c < CONNS; c++) {
        assert_int_equal(len[c], want[c]);
        for (char *s = (char *)buf[c]; s < (char *)buf[c] + len[c];) {
            int k, i;
            assert_int_equal(sscanf(s, "%d:%d", &k, &i), 2);
            assert_int_equal(k % CONNS, c);
            assert_int_equal(i, next[k]);
            next[k]++;
            s = strchr(s, '\n') + 1;
        }
        free(buf[c]);
        close(fds[c]);
    }
    for (int k = 0; k < THREADS; k++)
        assert_int_equal(next[k], count);
    printf("threads: %d threads wrote %d lines each, all in order\n", THREADS, count);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_echo_many),
        T(test_churn),
        T(test_threads_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
