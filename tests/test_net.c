/*
 * Unit tests for twine/net.h on real sockets, loopback only: addresses and
 * endpoint strings (and their errors), echo over many connections with exact
 * byte equality, half-close in both directions, abort versus lose, flow
 * control both ways with the memory it costs measured, connects refused,
 * timed out (a listener whose backlog is full keeps the attempt pending, on
 * the machine) and cancelled, IPv6 on ::1 (skipped where the machine has
 * none), Unix sockets, writes to closed transports, SIGPIPE, the order of
 * connection_lost against the call that closed, and shutdown.
 *
 * Each test checks (teardown) that no diagnostic was reported unexpectedly,
 * that no twine block is left and that no descriptor leaked.
 */
#define _GNU_SOURCE
#include "net_util.h"

#include <math.h>
#include <signal.h>
#include <sys/stat.h>

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

/* ==== addresses ================================================================= */

static void test_addresses(void **state)
{
    (void)state;
    tw_address a;
    char buf[TW_ADDRESS_STRLEN];
    assert_rc(tw_address_ip(&a, "127.0.0.1", 80), 0);
    assert_int_equal(tw_address_family(&a), AF_INET);
    assert_int_equal(tw_address_port(&a), 80);
    tw_address_format(&a, buf, sizeof buf);
    assert_string_equal(buf, "127.0.0.1:80");
    assert_rc(tw_address_ip(&a, "::1", 443), 0);
    assert_int_equal(tw_address_family(&a), AF_INET6);
    tw_address_format(&a, buf, sizeof buf);
    assert_string_equal(buf, "[::1]:443");
    assert_rc(tw_address_ip(&a, "[::1]", 7), 0);
    assert_int_equal(tw_address_port(&a), 7);
    assert_rc(tw_address_ip(&a, "fe80::1%lo", 7), 0);
    assert_true(a.u.in6.sin6_scope_id > 0);
    assert_rc(tw_address_ip(&a, "localhost", 80), TW_EINVAL); /* names go to the resolver */
    assert_rc(tw_address_ip(&a, "1.2.3", 80), TW_EINVAL);
    assert_rc(tw_address_ip(&a, "", 80), TW_EINVAL);
    assert_rc(tw_address_ip(&a, "::1%nosuchif", 80), TW_EINVAL);
    assert_rc(tw_address_ip(NULL, "::1", 80), TW_EINVAL);
    assert_rc(tw_address_unix(&a, "/tmp/x.sock"), 0);
    assert_int_equal(tw_address_family(&a), AF_UNIX);
    assert_rc(tw_address_port(&a), TW_EINVAL);
    tw_address_format(&a, buf, sizeof buf);
    assert_string_equal(buf, "unix:/tmp/x.sock");
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    assert_rc(tw_address_unix(&a, longpath), TW_EINVAL);
    assert_rc(tw_address_unix(&a, ""), TW_EINVAL);
    memset(&a, 0, sizeof a);
    assert_int_equal(tw_address_family(&a), 0);
    /* snprintf-style: the full length, truncated output */
    assert_rc(tw_address_ip(&a, "10.0.0.1", 8080), 0);
    assert_int_equal(tw_address_format(&a, buf, 4), strlen("10.0.0.1:8080"));
    assert_string_equal(buf, "10.");
}

/* ==== endpoint strings ============================================================ */

static void expect_listen_error(tw_reactor *r, const char *endpoint, const char *needle)
{
    peer tmpl = {0};
    tw_factory f = peer_factory(&tmpl);
    tw_listener *l = NULL;
    tw_failure *why = NULL;
    int rc = tw_endpoint_listen(r, endpoint, &f, &l, &why);
    if (rc != TW_EINVAL)
        fail_msg("listen \"%s\": %s, expected TW_EINVAL", endpoint, tw_err_name(rc));
    assert_non_null(why);
    assert_int_equal(tw_failure_code(why), TW_EINVAL);
    if (!strstr(tw_failure_message(why), needle))
        fail_msg("listen \"%s\": message \"%s\" lacks \"%s\"", endpoint,
                 tw_failure_message(why), needle);
    tw_failure_unref(why);
    assert_null(l);
}

static void expect_connect_error(tw_reactor *r, const char *endpoint, const char *needle)
{
    peer tmpl = {0};
    tw_factory f = peer_factory(&tmpl);
    tw_deferred *d;
    outcome o;
    net_connect(r, endpoint, &f, &d, &o);
    assert_int_equal(o.fired, 1); /* at once */
    if (o.code != TW_EINVAL || !strstr(o.msg, needle))
        fail_msg("connect \"%s\": %s \"%s\", expected TW_EINVAL with \"%s\"", endpoint,
                 tw_err_name(o.code), o.msg, needle);
    tw_deferred_unref(d);
}

static void test_endpoint_errors(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    expect_listen_error(r, "", "empty");
    expect_listen_error(r, "tcp", "missing the port");
    expect_listen_error(r, "tcp:", "port \"\" is not a number");
    expect_listen_error(r, "tcp:http", "port \"http\" is not a number from 0 to 65535");
    expect_listen_error(r, "tcp:65536", "65536");
    expect_listen_error(r, "tcp:-1", "port");
    expect_listen_error(r, "tcp:80:interface=localhost", "not a numeric IP address");
    expect_listen_error(r, "tcp:80:interface=::1", "write ':' inside an address as \\:");
    expect_listen_error(r, "tcp6:80:interface=127.0.0.1", "tcp6 needs an IPv6 interface");
    expect_listen_error(r, "tcp:80:backlog=many", "backlog \"many\"");
    expect_listen_error(r, "tcp:80:color=blue", "unknown option \"color\"");
    expect_listen_error(r, "tcp:80:port=81", "\"port\" given twice");
    expect_listen_error(r, "tcp:80:127.0.0.1:5:6", "too many arguments");
    expect_listen_error(r, "tcp:80\\", "lone backslash");
    expect_listen_error(r, "tcp:80:=x", "empty name");
    expect_listen_error(r, "udp:53", "unknown type \"udp\"");
    expect_listen_error(r, "unix:", "missing the socket's path");
    expect_listen_error(r, "unix:/tmp/x:mode=999", "mode \"999\"");
    expect_listen_error(r, "unix:/tmp/x:lockfile=1", "unknown option \"lockfile\"");
    char longp[300] = "unix:/";
    memset(longp + 6, 'p', 200);
    expect_listen_error(r, longp, "at most");

    expect_connect_error(r, "", "empty");
    expect_connect_error(r, "tcp:127.0.0.1", "missing the port");
    expect_connect_error(r, "tcp::80", "empty host");
    expect_connect_error(r, "tcp:127.0.0.1:0", "port \"0\" is not a number from 1 to 65535");
    expect_connect_error(r, "tcp:127.0.0.1:80:timeout=soon", "timeout \"soon\"");
    expect_connect_error(r, "tcp:127.0.0.1:80:timeout=-1", "timeout \"-1\"");
    expect_connect_error(r, "tcp:127.0.0.1:80:bindAddress=x", "unknown option \"bindAddress\"");
    expect_connect_error(r, "unix", "missing the socket's path");
    expect_connect_error(r, "ssl:host:443", "unknown type \"ssl\"");

    /* bad arguments that have no Deferred to carry them */
    peer tmpl = {0};
    tw_factory f = peer_factory(&tmpl);
    tw_deferred *d;
    tw_listener *l;
    tw_failure *why;
    assert_rc(tw_endpoint_connect(r, NULL, &f, &d), TW_EINVAL);
    assert_rc(tw_endpoint_connect(r, "tcp:127.0.0.1:1", NULL, &d), TW_EINVAL);
    assert_rc(tw_endpoint_listen(NULL, "tcp:0", &f, &l, &why), TW_EINVAL);
    assert_int_equal(tw_failure_code(why), TW_EINVAL);
    tw_failure_unref(why);
    assert_rc(tw_endpoint_listen(r, "tcp:0", &f, &l, NULL), 0);
    assert_rc(tw_listener_stop(l, NULL), 0);
    tw_factory nop = {NULL, NULL, NULL};
    assert_rc(tw_endpoint_listen(r, "tcp:0", &nop, &l, NULL), TW_EINVAL);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* Escapes and keywords reach the socket: \: in an interface, [::1], named ports. */
static void test_endpoint_forms(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer tmpl = {0};
    tw_factory f = peer_factory(&tmpl);
    tw_listener *l = net_listen(r, "tcp:port=0:interface=127.0.0.1:backlog=5", &f);
    tw_address a;
    char buf[TW_ADDRESS_STRLEN];
    assert_rc(tw_listener_address(l, &a), 0);
    tw_address_format(&a, buf, sizeof buf);
    assert_true(strncmp(buf, "127.0.0.1:", 10) == 0);
    assert_rc(tw_listener_stop(l, NULL), 0);
    tw_listener *l6;
    tw_failure *why = NULL;
    if (tw_endpoint_listen(r, "tcp:0:interface=\\:\\:1", &f, &l6, &why) == 0) {
        assert_rc(tw_listener_address(l6, &a), 0);
        assert_int_equal(tw_address_family(&a), AF_INET6);
        assert_rc(tw_listener_stop(l6, NULL), 0);
        l6 = net_listen(r, "tcp6:0:interface=[::1]", &f);
        assert_rc(tw_listener_address(l6, &a), 0);
        assert_int_equal(tw_address_family(&a), AF_INET6);
        assert_rc(tw_listener_stop(l6, NULL), 0);
    } else {
        tw_failure_unref(why); /* no ::1 here: the IPv6 test skips too */
    }
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== echo ====================================================================== */

typedef struct payload {
    unsigned char *bytes;
    size_t len;
} payload;

static payload *client_payloads;

/* Sends the client's payload in pieces of assorted sizes through write,
 * writev and write_owned, then half-closes. */
static void client_send(peer *p)
{
    payload *pl = &client_payloads[(intptr_t)p->user];
    size_t off = 0;
    uint32_t x = (uint32_t)(uintptr_t)p->user * 7919u + 17u;
    int kind = 0;
    while (off < pl->len) {
        x = x * 1103515245u + 12345u;
        size_t n = 1 + (x >> 8) % 9000;
        if (n > pl->len - off)
            n = pl->len - off;
        switch (kind++ % 3) {
        case 0:
            assert_rc(tw_transport_write(p->t, pl->bytes + off, n), 0);
            break;
        case 1: {
            size_t h = n / 2;
            struct iovec v[3] = {{pl->bytes + off, h}, {NULL, 0}, {pl->bytes + off + h, n - h}};
            assert_rc(tw_transport_writev(p->t, v, 3), 0);
            break;
        }
        default: {
            void *copy = malloc(n);
            memcpy(copy, pl->bytes + off, n);
            assert_rc(tw_transport_write_owned(p->t, copy, n, free), 0);
            break;
        }
        }
        off += n;
    }
    assert_rc(tw_transport_close_write(p->t), 0);
    assert_rc(tw_transport_write(p->t, "x", 1), TW_ENOTCONN); /* write side shut */
}

static void echo_many(const char *endpoint_fmt, bool unix_socket, int nconn, size_t max_len)
{
    tw_reactor *r = net_reactor(false);
    peer server = {.echo = true};
    tw_factory sf = peer_factory(&server);
    char path[128] = "";
    char ep[256];
    tw_listener *l;
    if (unix_socket) {
        char dir[] = "/tmp/twine-net-XXXXXX";
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/echo.sock", dir);
        snprintf(ep, sizeof ep, "unix:%s", path);
        l = net_listen(r, ep, &sf);
    } else {
        snprintf(ep, sizeof ep, endpoint_fmt, 0);
        l = net_listen(r, ep, &sf);
        snprintf(ep, sizeof ep, "tcp:%s:%d", strncmp(endpoint_fmt, "tcp6", 4) == 0 ? "\\:\\:1" : "127.0.0.1",
                 net_port(l));
    }
    client_payloads = calloc((size_t)nconn, sizeof *client_payloads);
    tw_deferred **ds = calloc((size_t)nconn, sizeof *ds);
    outcome *os = calloc((size_t)nconn, sizeof *os);
    peer *tmpl = calloc((size_t)nconn, sizeof *tmpl); /* a factory keeps its arg */
    for (int i = 0; i < nconn; i++) {
        size_t len = i == 0 ? 0 : 1 + (size_t)((uint32_t)i * 2654435761u % max_len);
        client_payloads[i].len = len;
        client_payloads[i].bytes = malloc(len ? len : 1);
        net_fill(client_payloads[i].bytes, len, (uint32_t)i + 1);
        tmpl[i] = (peer){.on_made = client_send, .user = (void *)(intptr_t)i};
        tw_factory cf = peer_factory(&tmpl[i]);
        net_connect(r, ep, &cf, &ds[i], &os[i]);
    }
    NET_RUN_UNTIL(r, peers_lost() == 2 * nconn, 60);
    int clients = 0;
    for (int i = 0; i < net_npeers; i++) {
        peer *p = &net_peers[i];
        assert_int_equal(p->made, 1);
        assert_int_equal(p->eofs, 1);
        if (p->lost_code != TW_ECONNDONE)
            fail_msg("peer %d lost with %s: %s", i, tw_err_name(p->lost_code), p->lost_msg);
        if (p->on_made) {
            payload *pl = &client_payloads[(intptr_t)p->user];
            assert_int_equal(p->got_len, pl->len);
            assert_true(pl->len == 0 || memcmp(p->got, pl->bytes, pl->len) == 0);
            clients++;
        }
    }
    assert_int_equal(clients, nconn);
    for (int i = 0; i < nconn; i++) {
        assert_int_equal(os[i].fired, 1);
        assert_int_equal(os[i].code, 0);
        peer *p = os[i].value; /* the Deferred fired with the client's context */
        assert_ptr_equal(p->user, (void *)(intptr_t)i);
        tw_deferred_unref(ds[i]);
        free(client_payloads[i].bytes);
    }
    /* the server got the same bytes, each connection its own */
    size_t total_in = 0, total_out = 0;
    for (int i = 0; i < net_npeers; i++)
        if (net_peers[i].echo)
            total_in += net_peers[i].got_len;
    for (int i = 0; i < nconn; i++)
        total_out += client_payloads[i].len;
    assert_int_equal(total_in, total_out);
    free(ds);
    free(os);
    free(tmpl);
    free(client_payloads);
    tw_deferred *stopped;
    assert_rc(tw_listener_stop(l, &stopped), 0);
    assert_true(tw_deferred_called(stopped));
    tw_deferred_unref(stopped);
    if (unix_socket) {
        struct stat st;
        assert_int_equal(stat(path, &st), -1); /* stop removed the socket file */
        *strrchr(path, '/') = '\0';
        assert_int_equal(rmdir(path), 0);
    }
    assert_rc(tw_reactor_destroy(r), 0);
}

static void test_echo_tcp(void **state)
{
    (void)state;
    echo_many("tcp:%d:interface=127.0.0.1", false, 32, 200000);
}

static void test_echo_unix(void **state)
{
    (void)state;
    echo_many(NULL, true, 16, 100000);
}

static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {0};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void test_echo_ipv6(void **state)
{
    (void)state;
    if (!have_ipv6_loopback())
        skip();
    echo_many("tcp6:%d:interface=\\:\\:1", false, 8, 100000);
}

/* ==== half-close ================================================================== */

static void send_ping_and_shut(peer *p)
{
    assert_rc(tw_transport_write(p->t, "ping", 4), 0);
    assert_rc(tw_transport_close_write(p->t), 0);
    assert_rc(tw_transport_close_write(p->t), TW_ENOTCONN);
}

static void reply_then_lose(peer *p, const void *data, size_t len)
{
    (void)data;
    (void)len;
    (void)p;
}

static bool server_eof_reply(void *ctx, tw_transport *t)
{
    /* half-open: the client can no longer send, but still reads */
    peer *p = ctx;
    p->eofs++;
    tw_test_tr("eof%d", p->index);
    assert_rc(tw_transport_write(t, "pong", 4), 0);
    assert_rc(tw_transport_lose_connection(t), 0);
    assert_rc(tw_transport_write(t, "late", 4), TW_ENOTCONN);
    return true;
}

static void test_half_close_by_client(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.tr = true, .on_data = reply_then_lose};
    tw_factory sf = peer_factory(&server);
    tw_protocol sp = peer_protocol;
    sp.eof_received = server_eof_reply;
    sf.protocol = &sp;
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {.tr = true, .on_made = send_ping_and_shut};
    tw_factory cf = peer_factory(&client);
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, peers_lost() == 2, 10);
    peer *c = o.value, *s = c == &net_peers[0] ? &net_peers[1] : &net_peers[0];
    assert_int_equal(s->got_len, 4);
    assert_memory_equal(s->got, "ping", 4);
    assert_int_equal(c->got_len, 4);
    assert_memory_equal(c->got, "pong", 4);
    assert_int_equal(c->eofs, 1);
    assert_int_equal(s->lost_code, TW_ECONNDONE);
    assert_int_equal(c->lost_code, TW_ECONNDONE);
    assert_non_null(strstr(c->lost_msg, "closed cleanly"));
    assert_non_null(strstr(c->lost_msg, "127.0.0.1:"));
    tw_deferred_unref(d);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

static void hello_and_shut(peer *p)
{
    assert_rc(tw_transport_write(p->t, "hello", 5), 0);
    assert_rc(tw_transport_close_write(p->t), 0);
}

static bool client_eof_reply(void *ctx, tw_transport *t)
{
    peer *p = ctx;
    p->eofs++;
    assert_rc(tw_transport_write(t, "reply", 5), 0);
    assert_rc(tw_transport_close_write(t), 0);
    return true;
}

static void test_half_close_by_server(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = hello_and_shut, .keep_half_open = true};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    tw_protocol cp = peer_protocol;
    cp.eof_received = client_eof_reply;
    cf.protocol = &cp;
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, peers_lost() == 2, 10);
    peer *c = o.value, *s = c == &net_peers[0] ? &net_peers[1] : &net_peers[0];
    assert_int_equal(c->got_len, 5);
    assert_memory_equal(c->got, "hello", 5);
    assert_int_equal(s->got_len, 5); /* the server read after shutting its write side */
    assert_memory_equal(s->got, "reply", 5);
    assert_int_equal(s->eofs, 1);
    assert_int_equal(c->eofs, 1);
    assert_int_equal(s->lost_code, TW_ECONNDONE);
    assert_int_equal(c->lost_code, TW_ECONNDONE);
    tw_deferred_unref(d);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== lose versus abort ============================================================ */

#define BIG (16u << 20)
static unsigned char *big;

static void write_big_then_lose(peer *p)
{
    assert_rc(tw_transport_write(p->t, big, BIG), 0);
    assert_true(tw_transport_buffered(p->t) > 0); /* more than the kernel takes at once */
    assert_rc(tw_transport_lose_connection(p->t), 0);
    assert_rc(tw_transport_lose_connection(p->t), TW_ENOTCONN);
    assert_true(tw_transport_connected(p->t) == false);
}

static void write_big_then_abort(peer *p, const void *data, size_t len)
{
    (void)data;
    (void)len;
    assert_rc(tw_transport_write(p->t, big, BIG), 0);
    assert_true(tw_transport_buffered(p->t) > 0);
    assert_rc(tw_transport_abort_connection(p->t), 0);
    /* closed at once, connection_lost not yet: it comes after this callback */
    assert_int_equal(p->lost, 0);
    assert_rc(tw_transport_abort_connection(p->t), TW_ENOTCONN);
    assert_rc(tw_transport_write(p->t, "x", 1), TW_ENOTCONN);
    assert_int_equal(tw_transport_buffered(p->t), 0); /* the queue was dropped */
    tw_test_tr("aborted");
}

static void pause_at_once(peer *p)
{
    assert_rc(tw_transport_pause_reading(p->t), 0);
}

static void go_then_pause(peer *p)
{
    assert_rc(tw_transport_write(p->t, "go", 2), 0);
    pause_at_once(p);
}

static void lose_or_abort(bool abort_it)
{
    tw_reactor *r = net_reactor(false);
    big = malloc(BIG);
    net_fill(big, BIG, 99);
    /* abort: once the client is connected (its first bytes), so that the
     * reset cannot reach its connect */
    peer server = {.tr = true,
                   .on_made = abort_it ? NULL : write_big_then_lose,
                   .on_data = abort_it ? write_big_then_abort : NULL};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {.on_made = abort_it ? go_then_pause : NULL};
    tw_factory cf = peer_factory(&client);
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired && net_npeers == 2 && net_peers[0].lost + net_peers[1].lost >= 1, 30);
    peer *c = o.value, *s = c == &net_peers[0] ? &net_peers[1] : &net_peers[0];
    if (abort_it) {
        /* the server's connection_lost came after the callback that aborted */
        assert_int_equal(s->lost, 1);
        assert_int_equal(s->lost_code, TW_ECONNABORTED);
        assert_non_null(strstr(s->lost_msg, "aborted"));
        assert_non_null(strstr(tw_test_trace, "aborted lost"));
        assert_rc(tw_transport_resume_reading(c->t), 0);
    }
    NET_RUN_UNTIL(r, peers_lost() == 2, 30);
    if (abort_it) {
        if (c->lost_code != TW_ECONNRESET)
            fail_msg("client lost with %s (%s), expected a reset", tw_err_name(c->lost_code),
                     c->lost_msg);
        assert_int_equal(c->eofs, 0);
        assert_true(c->got_len < BIG); /* the queue was dropped */
        assert_true(c->got_len == 0 || memcmp(c->got, big, c->got_len) == 0);
    } else {
        assert_int_equal(c->got_len, BIG); /* lose sends everything first */
        assert_memory_equal(c->got, big, BIG);
        assert_int_equal(c->eofs, 1);
        assert_int_equal(c->lost_code, TW_ECONNDONE);
        assert_int_equal(s->lost_code, TW_ECONNDONE);
    }
    free(big);
    tw_deferred_unref(d);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

static void test_lose_sends_everything(void **state)
{
    (void)state;
    lose_or_abort(false);
}

static void test_abort_drops_and_resets(void **state)
{
    (void)state;
    lose_or_abort(true);
}

/* ==== flow control =================================================================== */

#define MSG 4096
#define HIGH (64 * 1024) /* the default high-water mark */
typedef struct producer_state {
    tw_transport *t;
    size_t produced, limit;
    size_t max_buffered;
    int pauses, resumes, stops;
    bool paused;
    unsigned char msg[MSG];
} producer_state;

static producer_state prod;

static void produce(void)
{
    while (!prod.paused && prod.produced < prod.limit && prod.t) {
        net_fill(prod.msg, MSG, (uint32_t)(prod.produced / MSG));
        assert_rc(tw_transport_write(prod.t, prod.msg, MSG), 0);
        prod.produced += MSG;
        size_t b = tw_transport_buffered(prod.t);
        if (b > prod.max_buffered)
            prod.max_buffered = b;
    }
}

static void prod_pause(void *arg)
{
    assert_ptr_equal(arg, &prod);
    assert_false(prod.paused);
    prod.paused = true;
    prod.pauses++;
}

static void prod_resume(void *arg)
{
    assert_ptr_equal(arg, &prod);
    assert_true(prod.paused);
    prod.paused = false;
    prod.resumes++;
    produce();
}

static void prod_stop(void *arg)
{
    (void)arg;
    prod.stops++;
    prod.t = NULL;
}

static const tw_producer producer = {prod_pause, prod_resume, prod_stop};

static void start_producing(peer *p)
{
    prod.t = p->t;
    assert_rc(tw_transport_register_producer(p->t, &producer, &prod), 0);
    assert_rc(tw_transport_register_producer(p->t, &producer, &prod), TW_EBUSY);
    produce();
}

static void check_stream(const peer *c, size_t n)
{
    unsigned char expect[MSG];
    for (size_t off = 0; off < n; off += MSG) {
        net_fill(expect, MSG, (uint32_t)(off / MSG));
        if (memcmp(c->got + off, expect, MSG) != 0)
            fail_msg("message at %zu differs", off);
    }
}

/* A producer writing as fast as it can to a peer that does not read: the
 * transport pauses it at the high-water mark, so its queue and the library's
 * allocations stay bounded while the peer is stalled; once the peer reads
 * again every byte arrives, in order. */
static void test_backpressure_bounded_memory(void **state)
{
    (void)state;
    memset(&prod, 0, sizeof prod);
    /* whole messages: the producer writes MSG bytes at a time */
    prod.limit = tw_test_scaled(64u << 20, 8u << 20) / MSG * MSG;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = start_producing};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {.on_made = pause_at_once};
    tw_factory cf = peer_factory(&client);
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, prod.t && prod.paused, 10);
    /* The peer reads nothing: the kernel's buffers fill, then ours up to the
     * mark. Run the loop until the producer has been paused for 50 rounds in
     * a row: the connection is stalled. */
    size_t live_max = 0;
    for (int quiet = 0; quiet < 50;) {
        size_t before = prod.produced;
        assert_rc(tw_reactor_iterate(r, 0.002), 0);
        quiet = prod.paused && prod.produced == before ? quiet + 1 : 0;
        size_t live = tw_allocator_live();
        if (live > live_max)
            live_max = live;
    }
    assert_true(prod.produced < prod.limit);
    assert_true(prod.max_buffered <= HIGH + MSG);
    assert_true(tw_transport_buffered(prod.t) <= HIGH + MSG);
    /* memory: the queue's chunks, the read buffer, the records: a few dozen
     * blocks, whatever the limit (64 MiB of messages would be 16384 chunks) */
    size_t live_stalled = tw_allocator_live();
    printf("stalled peer: %zu bytes produced, at most %zu queued, %zu twine blocks live\n",
           prod.produced, prod.max_buffered, live_stalled);
    peer *c = o.value;
    assert_rc(tw_transport_resume_reading(c->t), 0);
    NET_RUN_UNTIL(r, c->got_len == prod.limit, 60);
    check_stream(c, prod.limit);
    assert_true(prod.resumes >= 1);
    assert_int_equal(prod.pauses, prod.resumes + (prod.paused ? 1 : 0));
    assert_true(prod.max_buffered <= HIGH + MSG);
    assert_true(live_max < live_stalled + 64);
    assert_true(live_max < 200);
    /* closing stops the producer before connection_lost */
    assert_rc(tw_transport_abort_connection(c->t), 0);
    NET_RUN_UNTIL(r, peers_lost() == 2, 10);
    assert_int_equal(prod.stops, 1);
    tw_deferred_unref(d);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* Write limits move the marks; a producer registered above the mark is
 * paused at once; unregister forgets it. */
static void limits_case(peer *p)
{
    assert_rc(tw_transport_set_write_limits(p->t, 0, 0), TW_EINVAL);
    assert_rc(tw_transport_set_write_limits(p->t, 10, 11), TW_EINVAL);
    assert_rc(tw_transport_set_write_limits(p->t, 100, 10), 0);
    unsigned char buf[200] = {0};
    assert_rc(tw_transport_write(p->t, buf, sizeof buf), 0); /* queued: we are in a callback */
    assert_int_equal(tw_transport_buffered(p->t), 200);
    memset(&prod, 0, sizeof prod);
    assert_rc(tw_transport_register_producer(p->t, &producer, &prod), 0);
    assert_true(prod.paused); /* above the mark already */
    assert_rc(tw_transport_unregister_producer(p->t), 0);
    assert_rc(tw_transport_unregister_producer(p->t), TW_EINVAL);
    assert_rc(tw_transport_register_producer(p->t, NULL, &prod), TW_EINVAL);
    tw_test_tr("limits-ok");
}

static void test_write_limits(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = limits_case};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    int fd = raw_connect(AF_INET, net_port(l));
    NET_RUN_UNTIL(r, net_npeers == 1 && net_peers[0].made, 10);
    EXPECT_TRACE("limits-ok");
    /* the 200 bytes went out when the callback returned */
    unsigned char buf[256];
    size_t len = 0;
    bool eof = false;
    NET_RUN_UNTIL(r, (raw_read(fd, buf, sizeof buf, &len, &eof), len == 200), 10);
    close(fd);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* A protocol that pauses reading gets nothing until it resumes; the peer's
 * bytes wait in the kernel, and all arrive after. */
static void test_pause_reading(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = pause_at_once};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    int fd = raw_connect(AF_INET, net_port(l));
    NET_RUN_UNTIL(r, net_npeers == 1 && net_peers[0].made, 10);
    unsigned char msg[1000];
    net_fill(msg, sizeof msg, 5);
    assert_int_equal(write(fd, msg, sizeof msg), (ssize_t)sizeof msg);
    for (int i = 0; i < 20; i++)
        assert_rc(tw_reactor_iterate(r, 0.005), 0);
    peer *s = &net_peers[0];
    assert_int_equal(s->data_calls, 0);
    assert_rc(tw_transport_resume_reading(s->t), 0);
    NET_RUN_UNTIL(r, s->got_len == sizeof msg, 10);
    assert_memory_equal(s->got, msg, sizeof msg);
    close(fd);
    NET_RUN_UNTIL(r, s->lost, 10);
    assert_int_equal(s->lost_code, TW_ECONNDONE);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== connecting ==================================================================== */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_connect_refused(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    char ep[64];
    int port = free_port();
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired, 10);
    assert_int_equal(o.code, TW_ECONNREFUSED);
    char where[32];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    if (!strstr(o.msg, where))
        fail_msg("\"%s\" does not name %s", o.msg, where);
    assert_int_equal(net_npeers, 0); /* no protocol was made */
    tw_deferred_unref(d);
    /* the same by address, with no timeout at all; a NaN timeout is refused */
    tw_address a;
    assert_rc(tw_address_ip(&a, "127.0.0.1", (uint16_t)port), 0);
    assert_rc(tw_reactor_connect(r, &a, NAN, &cf, &d), TW_EINVAL);
    assert_rc(tw_reactor_connect(r, &a, INFINITY, &cf, &d), 0);
    net_watch(d, &o);
    NET_RUN_UNTIL(r, o.fired, 10);
    assert_int_equal(o.code, TW_ECONNREFUSED);
    tw_deferred_unref(d);
    /* and a Unix socket nobody listens on */
    net_connect(r, "unix:/nonexistent/twine.sock", &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired, 10);
    assert_true(o.code == TW_ENOTFOUND || o.code == TW_ECONNREFUSED);
    assert_non_null(strstr(o.msg, "unix:/nonexistent/twine.sock"));
    tw_deferred_unref(d);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* A listener that never accepts, with a backlog of 0 already taken: a
 * connect to it stays pending (the kernel drops its SYNs), on this machine. */
static int full_listener(int *filler)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 0), 0);
    socklen_t len = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &len);
    *filler = raw_connect(AF_INET, ntohs(a.sin_port));
    return l;
}

static int listener_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    int filler, lfd = full_listener(&filler);
    tw_reactor *r = net_reactor(false);
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    tw_address a;
    assert_rc(tw_address_ip(&a, "127.0.0.1", (uint16_t)listener_port(lfd)), 0);
    tw_deferred *d;
    outcome o;
    double t0 = tw_test_now();
    assert_rc(tw_reactor_connect(r, &a, 0.2, &cf, &d), 0);
    net_watch(d, &o);
    NET_RUN_UNTIL(r, o.fired, 10);
    tw_test_check_elapsed_at_least(t0, tw_test_now(), 0.2);
    assert_int_equal(o.code, TW_ETIMEDOUT);
    assert_non_null(strstr(o.msg, "timed out after 0.2 s"));
    assert_non_null(strstr(o.msg, "127.0.0.1:"));
    tw_deferred_unref(d);
    assert_rc(tw_reactor_destroy(r), 0);
    close(filler);
    close(lfd);
}

/* The same on the fake clock: the timeout is exact and nothing else fires it. */
static void test_connect_timeout_fake_clock(void **state)
{
    (void)state;
    int filler, lfd = full_listener(&filler);
    tw_reactor *r = net_reactor(true);
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d:timeout=5", listener_port(lfd));
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_rc(tw_reactor_advance(r, 4.999), 0);
    assert_int_equal(o.fired, 0);
    assert_rc(tw_reactor_advance(r, 0.001), 0);
    assert_int_equal(o.fired, 1);
    assert_int_equal(o.code, TW_ETIMEDOUT);
    tw_deferred_unref(d);
    assert_rc(tw_reactor_destroy(r), 0);
    close(filler);
    close(lfd);
}

static void test_connect_cancel(void **state)
{
    (void)state;
    int filler, lfd = full_listener(&filler);
    tw_reactor *r = net_reactor(false);
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", listener_port(lfd));
    int fds = net_count_fds();
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    for (int i = 0; i < 5; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_int_equal(o.fired, 0);
    assert_int_equal(net_count_fds(), fds + 1); /* the attempt's socket */
    assert_rc(tw_deferred_cancel(d), 0);
    assert_int_equal(o.fired, 1);
    assert_int_equal(o.code, TW_ECANCELED);
    assert_non_null(strstr(o.msg, "127.0.0.1:"));
    assert_int_equal(net_count_fds(), fds); /* abandoned: closed */
    assert_rc(tw_deferred_cancel(d), 0);    /* nothing more happens */
    assert_int_equal(o.fired, 1);
    tw_deferred_unref(d);
    assert_int_equal(net_npeers, 0);
    assert_rc(tw_reactor_destroy(r), 0);
    close(filler);
    close(lfd);
}

static int refuse_build(void *arg, const tw_address *peer_addr, void **ctx)
{
    (void)arg;
    (void)peer_addr;
    (void)ctx;
    return TW_EPERM;
}

/* A factory that refuses: the server closes the socket; a connect fails with
 * the factory's code. */
static void test_factory_refuses(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    tw_factory refuse = {&peer_protocol, refuse_build, NULL};
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &refuse);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired && net_peers[0].lost, 10);
    assert_int_equal(o.code, 0);
    assert_true(net_peers[0].lost_code == TW_ECONNDONE ||
                net_peers[0].lost_code == TW_ECONNRESET);
    tw_deferred_unref(d);
    net_connect(r, ep, &refuse, &d, &o); /* the client side refuses */
    NET_RUN_UNTIL(r, o.fired, 10);
    assert_int_equal(o.code, TW_EPERM);
    assert_non_null(strstr(o.msg, "refused the connection"));
    tw_deferred_unref(d);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== listening ====================================================================== */

static void test_listen_errors(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer tmpl = {0};
    tw_factory f = peer_factory(&tmpl);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:%d:interface=127.0.0.1", net_port(l));
    tw_listener *l2;
    tw_failure *why;
    assert_rc(tw_endpoint_listen(r, ep, &f, &l2, &why), TW_EADDRINUSE);
    assert_non_null(strstr(tw_failure_message(why), "127.0.0.1:"));
    tw_failure_unref(why);
    /* a Unix socket whose file is in the way */
    char dir[] = "/tmp/twine-net-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "unix:%s/s:mode=0600", dir);
    tw_listener *u = net_listen(r, path, &f);
    struct stat st;
    char fpath[128];
    snprintf(fpath, sizeof fpath, "%s/s", dir);
    assert_int_equal(stat(fpath, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_rc(tw_endpoint_listen(r, path, &f, &l2, &why), TW_EADDRINUSE);
    assert_non_null(strstr(tw_failure_message(why), fpath));
    assert_non_null(strstr(tw_failure_message(why), "in the way"));
    tw_failure_unref(why);
    assert_int_equal(stat(fpath, &st), 0); /* the failed listen left the file alone */
    assert_rc(tw_listener_stop(u, NULL), 0);
    assert_int_equal(stat(fpath, &st), -1);
    assert_int_equal(rmdir(dir), 0);
    /* a directory nobody may write to */
    int rc = tw_endpoint_listen(r, "unix:/proc/twine.sock", &f, &l2, &why);
    assert_true(rc == TW_EACCES || rc == TW_ENOTFOUND || rc == TW_EIO);
    assert_int_equal(tw_failure_code(why), rc);
    assert_non_null(strstr(tw_failure_message(why), "unix:/proc/twine.sock"));
    tw_failure_unref(why);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_listener_stop(NULL, NULL), TW_EINVAL);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* A protocol stops its listener from connection_made; the accept loop in
 * progress frees it afterwards. */
static tw_listener *stop_me;
static void stop_listener_made(peer *p)
{
    (void)p;
    if (stop_me) {
        assert_rc(tw_listener_stop(stop_me, NULL), 0);
        stop_me = NULL;
    }
}

static void test_stop_listener_from_callback(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = stop_listener_made};
    tw_factory f = peer_factory(&server);
    stop_me = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int port = net_port(stop_me);
    int a = raw_connect(AF_INET, port), b = raw_connect(AF_INET, port);
    NET_RUN_UNTIL(r, stop_me == NULL, 10);
    assert_int_equal(net_npeers, 1); /* the second was not accepted */
    close(a);
    close(b);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== closed transports, ordering, SIGPIPE ============================================ */

static tw_transport *kept;

static void keep_ref(peer *p)
{
    kept = tw_transport_ref(p->t);
}

static void abort_in_data(peer *p, const void *data, size_t len)
{
    (void)data;
    (void)len;
    tw_test_tr("abort");
    assert_rc(tw_transport_abort_connection(p->t), 0);
    tw_test_tr("returned");
}

/* connection_lost never runs inside the call that closed; a transport kept
 * with a reference after connection_lost refuses every call safely. */
static void test_closed_transport(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.tr = true, .on_made = keep_ref, .on_data = abort_in_data};
    tw_factory f = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int fd = raw_connect(AF_INET, net_port(l));
    assert_int_equal(write(fd, "x", 1), 1);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    EXPECT_TRACE("made0 data0 abort returned lost0:TW_ECONNABORTED");
    assert_rc(tw_transport_write(kept, "x", 1), TW_ENOTCONN);
    assert_rc(tw_transport_writev(kept, NULL, 0), TW_ENOTCONN);
    int drops = 0;
    char *owned = malloc(4);
    assert_rc(tw_transport_write_owned(kept, owned, 4, free), TW_ENOTCONN); /* freed */
    (void)drops;
    assert_rc(tw_transport_lose_connection(kept), TW_ENOTCONN);
    assert_rc(tw_transport_abort_connection(kept), TW_ENOTCONN);
    assert_rc(tw_transport_close_write(kept), TW_ENOTCONN);
    assert_rc(tw_transport_pause_reading(kept), TW_ENOTCONN);
    assert_rc(tw_transport_resume_reading(kept), TW_ENOTCONN);
    assert_rc(tw_transport_fileno(kept), TW_ENOTCONN);
    assert_false(tw_transport_connected(kept));
    assert_int_equal(tw_transport_buffered(kept), 0);
    tw_address a;
    assert_rc(tw_transport_local_address(kept, &a), TW_ENOTCONN);
    assert_rc(tw_transport_peer_address(kept, &a), 0); /* kept */
    assert_int_equal(tw_address_family(&a), AF_INET);
    assert_ptr_equal(tw_transport_context(kept), &net_peers[0]);
    tw_transport_unref(kept);
    kept = NULL;
    close(fd);
    assert_rc(tw_transport_write(NULL, "x", 1), TW_EINVAL);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* Writing to a peer that has gone: an error code and connection_lost, never
 * SIGPIPE (the default action, restored here, would kill the test). */
static void test_no_sigpipe(void **state)
{
    (void)state;
    struct sigaction dfl = {0}, old;
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, &old);
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = keep_ref};
    tw_factory f = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int fd = raw_connect(AF_INET, net_port(l));
    NET_RUN_UNTIL(r, kept != NULL, 10);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* a reset */
    unsigned char buf[4096] = {0};
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) /* outside callbacks: each write goes out */
        rc = tw_transport_write(kept, buf, sizeof buf);
    assert_true(rc == TW_ECONNRESET || rc == TW_ENOTCONN);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_int_equal(net_peers[0].lost_code, TW_ECONNRESET);
    assert_non_null(strstr(net_peers[0].lost_msg, "reset by peer"));
    tw_transport_unref(kept);
    kept = NULL;
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
    sigaction(SIGPIPE, &old, NULL);
}

/* Addresses and options of an open transport. */
static void inspect(peer *p)
{
    tw_address local, remote;
    assert_rc(tw_transport_local_address(p->t, &local), 0);
    assert_rc(tw_transport_peer_address(p->t, &remote), 0);
    assert_int_equal(tw_address_family(&local), AF_INET);
    assert_int_equal(tw_address_family(&remote), AF_INET);
    int fd = tw_transport_fileno(p->t);
    assert_true(fd >= 0);
    int v = 0;
    socklen_t len = sizeof v;
    getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len);
    assert_int_equal(v, 1); /* on by default */
    assert_rc(tw_transport_set_nodelay(p->t, false), 0);
    getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len);
    assert_int_equal(v, 0);
    assert_rc(tw_transport_set_keepalive(p->t, true), 0);
    getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len);
    assert_int_equal(v, 1);
    assert_true(tw_transport_connected(p->t));
    assert_ptr_equal(tw_transport_context(p->t), p);
    assert_non_null(tw_transport_reactor(p->t));
    tw_test_tr("inspected");
    assert_rc(tw_transport_lose_connection(p->t), 0);
}

static void inspect_unix(peer *p)
{
    assert_rc(tw_transport_set_nodelay(p->t, true), TW_ENOTSUP);
    assert_rc(tw_transport_set_keepalive(p->t, true), TW_ENOTSUP);
    tw_test_tr("unix");
    assert_rc(tw_transport_lose_connection(p->t), 0);
}

static void test_transport_properties(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = inspect};
    tw_factory f = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int fd = raw_connect(AF_INET, net_port(l));
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    EXPECT_TRACE("inspected");
    close(fd);
    assert_rc(tw_listener_stop(l, NULL), 0);
    char dir[] = "/tmp/twine-net-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ep[128];
    snprintf(ep, sizeof ep, "unix:%s/p.sock", dir);
    peer us = {.on_made = inspect_unix};
    tw_factory uf = peer_factory(&us);
    l = net_listen(r, ep, &uf);
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, peers_lost() == 3, 10);
    EXPECT_TRACE("inspected unix");
    /* the accepted Unix connection's messages name the listener's path */
    for (int i = 1; i < 3; i++)
        assert_non_null(strstr(net_peers[i].lost_msg, "p.sock"));
    tw_deferred_unref(d);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== shutdown ======================================================================== */

static void test_shutdown_closes_everything(void **state)
{
    (void)state;
    int filler, lfd = full_listener(&filler);
    tw_reactor *r = net_reactor(false);
    peer server = {.tr = true};
    tw_factory f = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {.tr = true};
    tw_factory cf = peer_factory(&client);
    tw_deferred *d, *pending;
    outcome o, po;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired && net_npeers == 2, 10);
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", listener_port(lfd));
    net_connect(r, ep, &cf, &pending, &po);
    tw_test_trace_clear();
    assert_rc(tw_reactor_stop(r), 0);
    assert_rc(tw_reactor_run(r), 0);
    assert_int_equal(peers_lost(), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(net_peers[i].lost_code, TW_ECONNLOST);
        assert_non_null(strstr(net_peers[i].lost_msg, "shutting down"));
    }
    assert_int_equal(po.fired, 1);
    assert_int_equal(po.code, TW_ESHUTDOWN);
    /* after shutdown: refused, and the listener's handle is still ours to stop */
    tw_deferred *late;
    assert_rc(tw_endpoint_connect(r, ep, &cf, &late), TW_ESHUTDOWN);
    tw_listener *l2;
    tw_failure *why;
    assert_rc(tw_endpoint_listen(r, "tcp:0", &f, &l2, &why), TW_ESHUTDOWN);
    assert_non_null(strstr(tw_failure_message(why), "shutting down"));
    tw_failure_unref(why);
    tw_deferred *stopped;
    assert_rc(tw_listener_stop(l, &stopped), 0);
    tw_deferred_unref(stopped);
    tw_deferred_unref(d);
    tw_deferred_unref(pending);
    assert_rc(tw_reactor_destroy(r), 0);
    close(filler);
    close(lfd);
}

/* ==== main ============================================================================== */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_addresses),
        T(test_endpoint_errors),
        T(test_endpoint_forms),
        T(test_echo_tcp),
        T(test_echo_unix),
        T(test_echo_ipv6),
        T(test_half_close_by_client),
        T(test_half_close_by_server),
        T(test_lose_sends_everything),
        T(test_abort_drops_and_resets),
        T(test_backpressure_bounded_memory),
        T(test_write_limits),
        T(test_pause_reading),
        T(test_connect_refused),
        T(test_connect_timeout),
        T(test_connect_timeout_fake_clock),
        T(test_connect_cancel),
        T(test_factory_refuses),
        T(test_listen_errors),
        T(test_stop_listener_from_callback),
        T(test_closed_transport),
        T(test_no_sigpipe),
        T(test_transport_properties),
        T(test_shutdown_closes_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
