/*
 * Tests of twine/http.h, the HTTP client on libcurl, against a real HTTP/1.1
 * server on loopback (tests/http_server.c, threads and blocking sockets, no
 * twine code): responses (200, 404, chunked, a large body, redirects, POST
 * and custom headers echoed), keep-alive reuse, failures (timeout, refused,
 * DNS for a .invalid name, TLS, body over max_body), cancelling before the
 * start and in the middle of a body, destroying the client and shutting the
 * reactor down with transfers in flight, many transfers at once, bad input,
 * the thread check, running out of memory, and the fd watchers' tolerance
 * of a socket closed before curl asks to stop watching it.
 *
 * The loop is driven with tw_reactor_iterate until what a test waits for has
 * happened (a Deferred fired, a server count reached), with a deadline that
 * fails the test instead of hanging it. The only timing assertion is the
 * request timeout's, where timing is the behaviour. Every test checks that
 * no diagnostic was reported unexpectedly, that no twine block is left and
 * that no file descriptor leaked.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "http_server.h"

#include <twine/http.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http.h" /* the client's layout: the fd table, transfers in flight */

/* ==== fixture ================================================================== */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static http_server *S;
static tw_reactor *R;
static tw_http_client *C;
static int fds_at_start;
static char url_buf[4][1024];
static int url_next;

/* A URL on the test server (valid until three more calls). */
static const char *url(const char *path)
{
    char *b = url_buf[url_next++ % 4];
    snprintf(b, sizeof url_buf[0], "http://127.0.0.1:%d%s", http_server_port(S), path);
    return b;
}

static void start(enum tw_poller poller)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.poller = poller;
    S = http_server_start();
    assert_non_null(S);
    assert_rc(tw_reactor_create_with(&cfg, &R), 0);
    assert_rc(tw_http_client_create(R, NULL, &C), 0);
}

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    fds_at_start = count_fds();
    start(TW_POLLER_DEFAULT);
    return 0;
}

static int setup_poll(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    fds_at_start = count_fds();
    start(TW_POLLER_POLL);
    return 0;
}

/* Tests that destroy the client or the reactor themselves set them NULL. */
static int teardown(void **state)
{
    (void)state;
    tw_http_client_destroy(C);
    if (R)
        assert_rc(tw_reactor_destroy(R), 0);
    C = NULL;
    R = NULL;
    http_server_stop(S);
    S = NULL;
    int rc = tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
    int fds = count_fds();
    if (fds != fds_at_start) {
        fprintf(stderr, "%d descriptors at the start, %d at the end\n", fds_at_start, fds);
        rc = -1;
    }
    return rc;
}

/* ==== driving the loop ============================================================ */

#define LIMIT 30.0 /* seconds a test waits for anything before it fails */

/* Iterates the loop until done(arg); fails the test after LIMIT seconds. */
static void run_until(bool (*done)(void *), void *arg, const char *what)
{
    double end = tw_test_now() + LIMIT;
    while (!done(arg)) {
        if (tw_test_now() > end)
            fail_msg("still waiting for %s after %.0f s", what, LIMIT);
        int rc = tw_reactor_iterate(R, 0.05);
        if (rc != 0)
            fail_msg("tw_reactor_iterate: %s", tw_err_name(rc));
    }
}

static bool fired(void *arg)
{
    return ((tw_test_capture *)arg)->calls > 0;
}

typedef struct server_wait {
    enum http_server_count which;
    int n;
} server_wait;

static bool server_reached(void *arg)
{
    server_wait *w = arg;
    return http_server_count(S, w->which) >= w->n;
}

/* Runs the loop until the server's count reaches n. */
static void run_until_server(enum http_server_count which, int n, const char *what)
{
    server_wait w = {which, n};
    run_until(server_reached, &w, what);
}

/* Starts rq, runs the loop until its Deferred fires, returns its result
 * (the caller's). */
static tw_result fetch(const tw_http_request *rq)
{
    tw_deferred *d;
    tw_test_capture cap;
    assert_rc(tw_http_client_request(C, rq, &d), 0);
    tw_test_capture_add(d, &cap);
    tw_deferred_unref(d);
    run_until(fired, &cap, rq->url);
    assert_int_equal(cap.calls, 1);
    return cap.r;
}

static tw_result fetch_get(const char *u)
{
    tw_http_request rq = {.url = u};
    return fetch(&rq);
}

/* The response r carries (fails the test on a failure or a wrong status). */
static tw_http_response *expect_response(tw_result r, int status)
{
    if (tw_result_is_failure(r))
        fail_msg("expected a response, got %s: %s",
                 tw_err_name(tw_failure_code(tw_result_as_failure(r))),
                 tw_failure_message(tw_result_as_failure(r)));
    tw_http_response *resp = r.ptr;
    assert_non_null(resp);
    assert_int_equal(resp->status, status);
    assert_int_equal(resp->body[resp->body_len], '\0');
    return resp;
}

/* Checks that r is a failure with `code` whose message contains each of the
 * two strings (NULL: nothing), then drops it. */
static void expect_failure(tw_result r, int code, const char *has, const char *has2)
{
    if (!tw_result_is_failure(r)) {
        tw_http_response *resp = r.ptr;
        fail_msg("expected %s, got a response with status %d", tw_err_name(code),
                 resp ? resp->status : -1);
    }
    tw_failure *f = tw_result_as_failure(r);
    const char *m = tw_failure_message(f);
    if (tw_failure_code(f) != code)
        fail_msg("expected %s, got %s: %s", tw_err_name(code), tw_err_name(tw_failure_code(f)),
                 m);
    if (has && !strstr(m, has))
        fail_msg("the message \"%s\" does not name \"%s\"", m, has);
    if (has2 && !strstr(m, has2))
        fail_msg("the message \"%s\" does not say \"%s\"", m, has2);
    tw_result_drop(r);
}

static void expect_pattern(const tw_http_response *resp, uint32_t seed, size_t n)
{
    assert_int_equal(resp->body_len, n);
    const unsigned char *b = (const unsigned char *)resp->body;
    for (size_t i = 0; i < n; i++)
        if (b[i] != http_server_pattern(seed, i))
            fail_msg("body byte %zu of %zu is %u, expected %u", i, n, b[i],
                     http_server_pattern(seed, i));
}

/* ==== responses ==================================================================== */

static void test_get_200(void **state)
{
    (void)state;
    const char *u = url("/hello");
    tw_result r = fetch_get(u);
    tw_http_response *resp = expect_response(r, 200);
    assert_int_equal(resp->version, 11);
    assert_int_equal(resp->body_len, 13);
    assert_string_equal(resp->body, "hello, world\n");
    assert_string_equal(resp->url, u);
    assert_string_equal(tw_http_response_header(resp, "content-type"), "text/plain");
    assert_string_equal(tw_http_response_header(resp, "Content-Length"), "13");
    assert_null(tw_http_response_header(resp, "X-Not-There"));
    assert_int_equal(resp->nheaders, 2);
    assert_string_equal(resp->headers[0].name, "Content-Length");
    assert_string_equal(resp->headers[1].name, "Content-Type");
    tw_result_drop(r);
    assert_int_equal(tw_http_client_pending(C), 0);
    /* By name: curl resolves localhost itself, to ::1 (where nothing
     * listens: that attempt fails and its socket is closed) and 127.0.0.1. */
    char u2[128];
    snprintf(u2, sizeof u2, "http://localhost:%d/hello", http_server_port(S));
    r = fetch_get(u2);
    resp = expect_response(r, 200);
    assert_string_equal(resp->body, "hello, world\n");
    tw_result_drop(r);
}

static void test_get_404_and_500_are_results(void **state)
{
    (void)state;
    tw_result r = fetch_get(url("/nothing/here"));
    tw_http_response *resp = expect_response(r, 404);
    assert_string_equal(resp->body, "not found\n");
    tw_result_drop(r);
    r = fetch_get(url("/status/500"));
    resp = expect_response(r, 500);
    assert_string_equal(resp->body, "status 500\n");
    tw_result_drop(r);
}

static void test_chunked(void **state)
{
    (void)state;
    tw_result r = fetch_get(url("/chunked?n=300000&seed=7"));
    tw_http_response *resp = expect_response(r, 200);
    assert_string_equal(tw_http_response_header(resp, "Transfer-Encoding"), "chunked");
    assert_null(tw_http_response_header(resp, "Content-Length"));
    expect_pattern(resp, 7, 300000);
    tw_result_drop(r);
}

static void test_large_body(void **state)
{
    (void)state;
    size_t n = (size_t)6 << 20; /* 6 MiB, checked byte for byte */
    char path[128];
    snprintf(path, sizeof path, "/bytes?n=%zu&seed=3", n);
    tw_result r = fetch_get(url(path));
    tw_http_response *resp = expect_response(r, 200);
    expect_pattern(resp, 3, n);
    tw_result_drop(r);
}

static void test_many_headers_and_a_long_url(void **state)
{
    (void)state;
    /* More header lines than the request keeps inline. */
    tw_result r = fetch_get(url("/many-headers?n=60"));
    tw_http_response *resp = expect_response(r, 200);
    assert_string_equal(resp->body, "end");
    assert_int_equal(resp->nheaders, 62);
    for (int i = 0; i < 60; i++) {
        char name[32], value[32];
        snprintf(name, sizeof name, "x-header-%d", i);
        snprintf(value, sizeof value, "value %d", i);
        assert_string_equal(tw_http_response_header(resp, name), value);
    }
    assert_string_equal(tw_http_response_header(resp, "X-Folded"), "first second");
    tw_result_drop(r);
    /* A URL longer than the request keeps inline, in a response and in a
     * failure's message. */
    char path[600];
    int n = snprintf(path, sizeof path, "/hello?pad=");
    while (n < 500)
        path[n++] = 'p';
    path[n] = '\0';
    char u[700];
    snprintf(u, sizeof u, "%s", url(path));
    r = fetch_get(u);
    resp = expect_response(r, 200);
    assert_string_equal(resp->url, u);
    tw_result_drop(r);
    tw_deferred *d;
    tw_test_capture cap;
    assert_rc(tw_http_client_get(C, u, &d), 0);
    tw_test_capture_add(d, &cap);
    assert_rc(tw_deferred_cancel(d), 0);
    expect_failure(cap.r, TW_ECANCELED, u, NULL);
    tw_deferred_unref(d);
}

static void test_redirects(void **state)
{
    (void)state;
    /* Off by default: the 302 is the result. */
    tw_result r = fetch_get(url("/redirect"));
    tw_http_response *resp = expect_response(r, 302);
    assert_string_equal(tw_http_response_header(resp, "Location"), "/hello");
    assert_string_equal(resp->body, "moved\n");
    tw_result_drop(r);
    /* Followed when asked: the final response, its headers only. */
    tw_http_request rq = {.url = url("/redirect"), .follow_redirects = true};
    r = fetch(&rq);
    resp = expect_response(r, 200);
    assert_string_equal(resp->body, "hello, world\n");
    assert_string_equal(resp->url, url("/hello"));
    assert_null(tw_http_response_header(resp, "Location"));
    tw_result_drop(r);
}

/* ==== requests ======================================================================= */

static void test_post_echo(void **state)
{
    (void)state;
    /* 100 KiB, and 2 MiB (over curl's threshold for Expect: 100-continue). */
    size_t sizes[] = {0, 100 << 10, 2 << 20};
    for (size_t k = 0; k < 3; k++) {
        size_t n = sizes[k];
        unsigned char *body = malloc(n + 1);
        assert_non_null(body);
        for (size_t i = 0; i < n; i++)
            body[i] = http_server_pattern(40 + (uint32_t)k, i);
        const char *hdrs[] = {"Content-Type: application/x-twine", NULL};
        tw_http_request rq = {.method = "POST", .url = url("/echo"), .headers = hdrs,
                              .body = n ? body : NULL, .body_len = n};
        tw_result r = fetch(&rq);
        memset(body, 0, n); /* the request copied it */
        tw_http_response *resp = expect_response(r, 200);
        assert_string_equal(tw_http_response_header(resp, "Content-Type"), "application/x-twine");
        expect_pattern(resp, 40 + (uint32_t)k, n);
        tw_result_drop(r);
        free(body);
    }
    /* Another method with a body. */
    tw_http_request rq = {.method = "PUT", .url = url("/echo"), .body = "put me", .body_len = 6};
    tw_result r = fetch(&rq);
    tw_http_response *resp = expect_response(r, 200);
    assert_string_equal(resp->body, "put me");
    tw_result_drop(r);
}

static void test_request_headers(void **state)
{
    (void)state;
    const char *hdrs[] = {"X-Twine-Test: 42", "Accept:", "X-Empty;", NULL};
    tw_http_request rq = {.url = url("/headers"), .headers = hdrs};
    tw_result r = fetch(&rq);
    tw_http_response *resp = expect_response(r, 200);
    if (!strstr(resp->body, "X-Twine-Test: 42\r\n"))
        fail_msg("the server did not get the header: %s", resp->body);
    if (!strstr(resp->body, "X-Empty:"))
        fail_msg("the server did not get the empty header: %s", resp->body);
    if (strstr(resp->body, "Accept:"))
        fail_msg("curl's Accept header was not dropped: %s", resp->body);
    if (strstr(resp->body, "User-Agent:"))
        fail_msg("a User-Agent was sent unasked: %s", resp->body);
    tw_result_drop(r);
}

static void test_keepalive_reuses_one_connection(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        tw_result r = fetch_get(url(i == 1 ? "/bytes?n=5000&seed=1" : "/hello"));
        expect_response(r, 200);
        tw_result_drop(r);
    }
    assert_int_equal(http_server_count(S, HS_ACCEPTED), 1);
    assert_int_equal(http_server_count(S, HS_REQUESTS), 3);
    /* A response that closes its connection: the next request opens another. */
    tw_result r = fetch_get(url("/close"));
    expect_response(r, 200);
    tw_result_drop(r);
    r = fetch_get(url("/hello"));
    expect_response(r, 200);
    tw_result_drop(r);
    assert_int_equal(http_server_count(S, HS_ACCEPTED), 2);
    assert_int_equal(http_server_count(S, HS_REQUESTS), 5);
}

/* Each response starts the next request from its callback. */
typedef struct chain {
    int left, done, ok;
} chain;

static tw_result chain_next(tw_result r, void *arg)
{
    chain *ch = arg;
    if (!tw_result_is_failure(r) && ((tw_http_response *)r.ptr)->status == 200)
        ch->ok++;
    tw_result_drop(r);
    if (--ch->left > 0) {
        tw_deferred *d;
        if (tw_http_client_get(C, url("/hello"), &d) == 0) {
            tw_deferred_add_both(d, chain_next, ch);
            tw_deferred_unref(d);
            return tw_result_none();
        }
    }
    ch->done = 1;
    return tw_result_none();
}

static bool chain_done(void *arg)
{
    return ((chain *)arg)->done != 0;
}

static void test_requests_from_callbacks(void **state)
{
    (void)state;
    chain ch = {10, 0, 0};
    tw_deferred *d;
    assert_rc(tw_http_client_get(C, url("/hello"), &d), 0);
    tw_deferred_add_both(d, chain_next, &ch);
    tw_deferred_unref(d);
    run_until(chain_done, &ch, "a chain of ten requests");
    assert_int_equal(ch.ok, 10);
    assert_int_equal(http_server_count(S, HS_ACCEPTED), 1);
}

/* ==== failures ======================================================================== */

static void test_timeout(void **state)
{
    (void)state;
    /* In the middle of a body. */
    tw_http_request rq = {.url = url("/stall?n=1000"), .timeout = 0.3};
    double t0 = tw_test_now();
    tw_result r = fetch(&rq);
    double t1 = tw_test_now();
    expect_failure(r, TW_ETIMEDOUT, rq.url, NULL);
    tw_test_check_elapsed_at_least(t0, t1, 0.3);
    /* Before any response. */
    tw_http_request rq2 = {.url = url("/silent"), .timeout = 0.2};
    t0 = tw_test_now();
    r = fetch(&rq2);
    t1 = tw_test_now();
    expect_failure(r, TW_ETIMEDOUT, rq2.url, "imed out");
    tw_test_check_elapsed_at_least(t0, t1, 0.2);
    /* Both connections were closed by the client. */
    run_until_server(HS_GONE, 2, "the timed-out connections to close");
    assert_int_equal(tw_http_client_pending(C), 0);
}

static void test_refused(void **state)
{
    (void)state;
    /* A port that was bound, then closed: nothing listens there. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/hello", ntohs(a.sin_port));
    expect_failure(fetch_get(u), TW_ECONNREFUSED, u, "onnect");

    /* A URL's user:password@ never reaches a message (messages go to logs). */
    char cred[160];
    snprintf(cred, sizeof cred, "http://alice:s3cret@127.0.0.1:%d/hello", ntohs(a.sin_port));
    tw_result r = fetch_get(cred);
    assert_true(tw_result_is_failure(r));
    const char *m = tw_failure_message(tw_result_as_failure(r));
    if (strstr(m, "s3cret") || strstr(m, "alice"))
        fail_msg("the message \"%s\" shows the URL's credentials", m);
    expect_failure(r, TW_ECONNREFUSED, u, "onnect"); /* the URL without them */
}

static void test_dns_failure(void **state)
{
    (void)state;
    /* RFC 6761: .invalid never resolves; the client refuses it without a
     * lookup, so nothing leaves the machine. */
    const char *u = "http://no-such-host.invalid/hello";
    expect_failure(fetch_get(u), TW_ENOTFOUND, u, "no-such-host.invalid");
    expect_failure(fetch_get("http://INVALID./"), TW_ENOTFOUND, "INVALID.", NULL);
    assert_int_equal(http_server_count(S, HS_ACCEPTED), 0);
}

static void test_tls_failure(void **state)
{
    (void)state;
    /* TLS to a server that speaks plain HTTP: the handshake fails. */
    char u[128];
    snprintf(u, sizeof u, "https://127.0.0.1:%d/hello", http_server_port(S));
    expect_failure(fetch_get(u), TW_ETLS, u, NULL);
}

static void test_max_body(void **state)
{
    (void)state;
    /* Announced by Content-Length. */
    tw_http_request rq = {.url = url("/bytes?n=100000&seed=1"), .max_body = 1000};
    expect_failure(fetch(&rq), TW_EOVERFLOW, rq.url, "max_body");
    /* Found while receiving a chunked body. */
    tw_http_request rq2 = {.url = url("/chunked?n=100000&seed=1"), .max_body = 1000};
    expect_failure(fetch(&rq2), TW_EOVERFLOW, rq2.url, "max_body");
    /* Exactly at the limit: fine. */
    tw_http_request rq3 = {.url = url("/chunked?n=1000&seed=1"), .max_body = 1000};
    tw_result r = fetch(&rq3);
    expect_pattern(expect_response(r, 200), 1, 1000);
    tw_result_drop(r);
}

/* A HEAD has no body, whatever its Content-Length announces: the response is
 * a result (not a body over max_body), its body is empty, and the
 * announced size is not reserved. */
static struct {
    size_t largest; /* the largest block asked for */
} H;

static void *h_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size > H.largest)
        H.largest = size;
    return malloc(size);
}

static void *h_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)ctx;
    (void)old_size;
    if (new_size > H.largest)
        H.largest = new_size;
    return realloc(ptr, new_size);
}

static void h_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

static void test_head_has_no_body(void **state)
{
    (void)state;
    tw_http_request rq = {.method = "HEAD", .url = url("/bytes?n=100000"), .max_body = 1000};
    tw_result r = fetch(&rq);
    tw_http_response *resp = expect_response(r, 200);
    assert_int_equal(resp->body_len, 0);
    assert_string_equal(tw_http_response_header(resp, "Content-Length"), "100000");
    tw_result_drop(r);
    /* Measured with an allocator that notes the largest block: a HEAD of
     * 50 MB takes nothing near it. */
    tw_http_client_destroy(C);
    C = NULL;
    assert_rc(tw_reactor_destroy(R), 0);
    R = NULL;
    static const tw_allocator noting = {h_alloc, h_realloc, h_free, NULL};
    assert_rc(tw_set_allocator(&noting), 0);
    H.largest = 0;
    assert_rc(tw_reactor_create(&R), 0);
    assert_rc(tw_http_client_create(R, NULL, &C), 0);
    tw_http_request big = {.method = "HEAD", .url = url("/bytes?n=50000000")};
    r = fetch(&big);
    resp = expect_response(r, 200);
    assert_int_equal(resp->body_len, 0);
    tw_result_drop(r);
    tw_http_client_destroy(C);
    C = NULL;
    assert_rc(tw_reactor_destroy(R), 0);
    R = NULL;
    assert_rc(tw_set_allocator(NULL), 0);
    if (H.largest >= 1000000)
        fail_msg("a HEAD of 50 MB allocated a block of %zu bytes", H.largest);
}

/* ==== cancel ============================================================================ */

static void test_cancel_before_start(void **state)
{
    (void)state;
    tw_deferred *d;
    tw_test_capture cap;
    const char *u = url("/hello");
    assert_rc(tw_http_client_get(C, u, &d), 0);
    tw_test_capture_add(d, &cap);
    assert_int_equal(tw_http_client_pending(C), 1);
    assert_rc(tw_deferred_cancel(d), 0);
    assert_int_equal(cap.calls, 1); /* at once */
    expect_failure(cap.r, TW_ECANCELED, u, "cancelled");
    tw_deferred_unref(d);
    assert_int_equal(tw_http_client_pending(C), 0);
    /* The next request is the only one the server ever sees. */
    tw_result r = fetch_get(url("/hello"));
    expect_response(r, 200);
    tw_result_drop(r);
    assert_int_equal(http_server_count(S, HS_ACCEPTED), 1);
    assert_int_equal(http_server_count(S, HS_REQUESTS), 1);
}

/* Body bytes received by the transfers in flight. */
static size_t body_bytes_in_flight(void)
{
    size_t n = 0;
    for (tw__dlink *l = C->reqs; l; l = l->next)
        n += TW__DLIST_ITEM(l, tw__http_req, link)->body_len;
    return n;
}

static bool got_partial_body(void *arg)
{
    return body_bytes_in_flight() >= *(size_t *)arg;
}

static void test_cancel_mid_body(void **state)
{
    (void)state;
    tw_deferred *d;
    tw_test_capture cap;
    size_t partial = 100000;
    const char *u = url("/stall?n=100000");
    assert_rc(tw_http_client_get(C, u, &d), 0);
    tw_test_capture_add(d, &cap);
    /* The server has sent the headers and 100000 of 200001 bytes: wait
     * until the client has them all, so that the cancel comes mid-body. */
    run_until(got_partial_body, &partial, "the first part of the body");
    assert_int_equal(cap.calls, 0);
    assert_rc(tw_deferred_cancel(d), 0);
    assert_int_equal(cap.calls, 1);
    expect_failure(cap.r, TW_ECANCELED, u, NULL);
    tw_deferred_unref(d);
    assert_int_equal(tw_http_client_pending(C), 0);
    /* The connection was closed, not kept for reuse. */
    run_until_server(HS_GONE, 1, "the cancelled transfer's connection to close");
    tw_result r = fetch_get(url("/hello"));
    expect_response(r, 200);
    tw_result_drop(r);
    assert_int_equal(http_server_count(S, HS_ACCEPTED), 2);
}

/* ==== many at once ========================================================================= */

static bool all_fired(void *arg)
{
    tw_test_capture *caps = arg;
    for (size_t i = 0; caps[i].calls >= 0; i++)
        if (caps[i].calls == 0)
            return false;
    return true;
}

/* n transfers at once, each answered only when all n have reached the
 * server (/gate): a client that ran them one after the other would never
 * get an answer. */
static void many_concurrent(void)
{
    size_t n = (size_t)tw_test_scaled(100, 10);
    int requests0 = http_server_count(S, HS_REQUESTS);
    int accepted0 = http_server_count(S, HS_ACCEPTED);
    tw_test_capture *caps = calloc(n + 1, sizeof *caps);
    assert_non_null(caps);
    caps[n].calls = -1; /* end marker */
    for (size_t i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/gate?n=%zu&bytes=%zu&seed=%zu", n, 1000 + i * 997, i);
        tw_deferred *d;
        assert_rc(tw_http_client_get(C, url(path), &d), 0);
        tw_test_capture_add(d, &caps[i]);
        tw_deferred_unref(d);
    }
    assert_int_equal(tw_http_client_pending(C), n);
    run_until(all_fired, caps, "every transfer");
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(caps[i].calls, 1);
        tw_http_response *resp = expect_response(caps[i].r, 200);
        expect_pattern(resp, (uint32_t)i, 1000 + i * 997);
        tw_test_capture_release(&caps[i]);
    }
    free(caps);
    assert_int_equal(tw_http_client_pending(C), 0);
    assert_int_equal(http_server_count(S, HS_REQUESTS) - requests0, (int)n);
    /* One connection each (one of them may be an idle one reused). */
    int accepted = http_server_count(S, HS_ACCEPTED) - accepted0;
    if (accepted < (int)n - 1 || accepted > (int)n)
        fail_msg("%d new connections for %zu transfers at once", accepted, n);
}

static void test_many_concurrent(void **state)
{
    (void)state;
    many_concurrent();
}

/* ==== destroy and shutdown with transfers in flight ============================================ */

static void start_stalled(tw_test_capture *caps, int n)
{
    for (int i = 0; i < n; i++) {
        tw_deferred *d;
        assert_rc(tw_http_client_get(C, url(i % 2 ? "/silent" : "/stall?n=10"), &d), 0);
        tw_test_capture_add(d, &caps[i]);
        tw_deferred_unref(d);
    }
    run_until_server(HS_STALLED, n, "every transfer to reach the server");
}

static void test_destroy_in_flight(void **state)
{
    (void)state;
    tw_test_capture caps[5];
    start_stalled(caps, 5);
    /* And one that never got to connect. */
    tw_test_capture late;
    tw_deferred *d;
    assert_rc(tw_http_client_get(C, url("/hello"), &d), 0);
    tw_test_capture_add(d, &late);
    tw_deferred_unref(d);
    assert_int_equal(tw_http_client_pending(C), 6);
    tw_http_client_destroy(C);
    C = NULL;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(caps[i].calls, 1);
        expect_failure(caps[i].r, TW_ESHUTDOWN, "http://127.0.0.1:", "destroyed");
    }
    assert_int_equal(late.calls, 1);
    expect_failure(late.r, TW_ESHUTDOWN, "/hello", "destroyed");
    /* Every connection is closed. */
    run_until_server(HS_GONE, 5, "the connections to close");
}

/* A response's callback destroys the client while others are in flight. */
typedef struct destroyer {
    tw_test_capture *others;
    int others_fired_inside;
    int called;
} destroyer;

static tw_result destroy_in_callback(tw_result r, void *arg)
{
    destroyer *de = arg;
    de->called++;
    tw_result_drop(r);
    tw_http_client_destroy(C);
    C = NULL;
    de->others_fired_inside = de->others[0].calls + de->others[1].calls;
    return tw_result_none();
}

static void test_destroy_from_a_callback(void **state)
{
    (void)state;
    tw_test_capture others[2];
    start_stalled(others, 2);
    destroyer de = {others, 0, 0};
    tw_deferred *d;
    assert_rc(tw_http_client_get(C, url("/hello"), &d), 0);
    tw_deferred_add_both(d, destroy_in_callback, &de);
    tw_deferred_unref(d);
    double end = tw_test_now() + LIMIT;
    while (!de.called && tw_test_now() < end)
        assert_rc(tw_reactor_iterate(R, 0.05), 0);
    assert_int_equal(de.called, 1);
    assert_int_equal(de.others_fired_inside, 2);
    for (int i = 0; i < 2; i++)
        expect_failure(others[i].r, TW_ESHUTDOWN, NULL, "destroyed");
    run_until_server(HS_GONE, 2, "the connections to close");
}

static void test_reactor_shutdown_in_flight(void **state)
{
    (void)state;
    tw_test_capture caps[4];
    start_stalled(caps, 4);
    assert_rc(tw_reactor_stop(R), 0);
    double end = tw_test_now() + LIMIT;
    int rc;
    while ((rc = tw_reactor_iterate(R, 0.05)) == 0 && tw_test_now() < end)
        ;
    assert_rc(rc, TW_ESHUTDOWN);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(caps[i].calls, 1);
        expect_failure(caps[i].r, TW_ESHUTDOWN, "http://127.0.0.1:", "reactor shut down");
    }
    assert_int_equal(tw_http_client_pending(C), 0);
    tw_deferred *d = NULL;
    assert_rc(tw_http_client_get(C, url("/hello"), &d), TW_ESHUTDOWN);
    assert_null(d);
    assert_true(http_server_wait(S, HS_GONE, 4, LIMIT));
    /* The client may outlive the reactor. */
    assert_rc(tw_reactor_destroy(R), 0);
    R = NULL;
    tw_http_client_destroy(C);
    C = NULL;
}

static void test_client_on_a_shut_down_reactor(void **state)
{
    (void)state;
    tw_http_client_destroy(C);
    C = NULL;
    assert_rc(tw_reactor_stop(R), 0);
    while (tw_reactor_iterate(R, 0.05) == 0)
        ;
    tw_http_client *c = NULL;
    assert_rc(tw_http_client_create(R, NULL, &c), TW_ESHUTDOWN);
    assert_null(c);
}

/* ==== bad input ================================================================================ */

static void test_bad_input(void **state)
{
    (void)state;
    tw_deferred *d = NULL;
    tw_http_client *c = NULL;
    tw_http_client_config cfg = TW_HTTP_CLIENT_CONFIG_INIT;
    cfg.max_connections = -1;
    assert_rc(tw_http_client_create(R, &cfg, &c), TW_EINVAL);
    assert_rc(tw_http_client_create(NULL, NULL, &c), TW_EINVAL);
    assert_rc(tw_http_client_create(R, NULL, NULL), TW_EINVAL);
    assert_null(c);
    assert_rc(tw_http_client_get(NULL, url("/hello"), &d), TW_EINVAL);
    assert_rc(tw_http_client_get(C, url("/hello"), NULL), TW_EINVAL);
    assert_rc(tw_http_client_request(C, NULL, &d), TW_EINVAL);
    const char *bad_urls[] = {NULL, "", "not a url", "ftp://127.0.0.1/", "file:///etc/passwd",
                              "http://", "127.0.0.1/hello", "http://exa mple/"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
        if (tw_http_client_get(C, bad_urls[i], &d) != TW_EINVAL)
            fail_msg("the URL \"%s\" was not refused", bad_urls[i] ? bad_urls[i] : "(null)");
    }
    const char *u = url("/hello");
    tw_http_request bad[] = {
        {.url = u, .method = ""},
        {.url = u, .method = "GE T"},
        {.url = u, .method = "GET\r\n"},
        {.url = u, .headers = (const char *[]){"NoColon", NULL}},
        {.url = u, .headers = (const char *[]){": no name", NULL}},
        {.url = u, .headers = (const char *[]){"X-A: 1\r\nX-B: 2", NULL}},
        {.url = u, .body_len = 5},
        {.url = u, .timeout = NAN},
        {.url = u, .connect_timeout = NAN},
        {.url = u, .max_redirects = -1},
        {.url = u, .method = "HEAD", .body = "x", .body_len = 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (tw_http_client_request(C, &bad[i], &d) != TW_EINVAL)
            fail_msg("bad request #%zu was not refused", i);
    assert_null(d);
    assert_int_equal(tw_http_client_pending(C), 0);
    tw_http_response_free(NULL);
    assert_null(tw_http_response_header(NULL, "x"));
    tw_http_client_destroy(NULL);
    assert_int_equal(tw_http_client_pending(NULL), 0);
    /* Nothing reached the server. */
    assert_int_equal(http_server_count(S, HS_ACCEPTED), 0);
    /* HEAD: a response without a body. */
    tw_http_request head = {.url = u, .method = "HEAD"};
    tw_result r = fetch(&head);
    tw_http_response *resp = expect_response(r, 200);
    assert_int_equal(resp->body_len, 0);
    assert_string_equal(tw_http_response_header(resp, "Content-Length"), "13");
    tw_result_drop(r);
}

/* ==== threads ==================================================================================== */

static void *pending_from_thread(void *arg)
{
    (void)arg;
    (void)tw_http_client_pending(C);
    return NULL;
}

static void test_wrong_thread_is_reported(void **state)
{
    (void)state;
    tw_test_diag_reset();
    tw_test_join(tw_test_start(pending_from_thread, NULL));
    int misuse = tw_test_diag_count_kind(TW_DIAG_MISUSE);
    const tw_test_diag *rep = tw_test_diag_find(TW_DIAG_MISUSE);
    char fn[96] = "";
    if (rep)
        snprintf(fn, sizeof fn, "%s", rep->function);
    tw_test_diag_reset();
    tw_test_require_debug_report(misuse, "tw_http_client_pending");
    assert_int_equal(misuse, 1);
    assert_string_equal(fn, "tw_http_client_pending");
}

/* ==== fd watchers: a socket closed before curl asks to stop watching it ========================== */

static bool events_seen(void *arg)
{
    return C->fd_events >= *(uint64_t *)arg;
}

static void closed_fd_tolerated(void)
{
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    int fd = a[0];
    assert_rc(tw__http_watch(C, fd, TW_READABLE), 0);
    /* Closed behind the client's back, then asked to stop: harmless. */
    close(fd);
    tw__http_unwatch(C, fd);
    assert_int_equal(C->watched[fd], 0);
    /* Closed and its number reused at once while still registered (the
     * poller may still hold the old registration or have dropped it):
     * watching the new socket, for more events, works. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    if (b[0] != fd) {
        assert_int_equal(dup2(b[0], fd), fd);
        close(b[0]);
        b[0] = fd;
    }
    assert_rc(tw__http_watch(C, fd, TW_READABLE), 0);
    close(fd);
    int c2[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c2), 0);
    if (c2[0] != fd) {
        assert_int_equal(dup2(c2[0], fd), fd);
        close(c2[0]);
        c2[0] = fd;
    }
    assert_rc(tw__http_watch(C, fd, TW_READABLE | TW_WRITABLE), 0);
    assert_int_equal(C->watched[fd], TW_READABLE | TW_WRITABLE);
    /* The new socket's events arrive (the callback passes them to curl,
     * which does not know the socket and ignores them). */
    uint64_t want = C->fd_events + 1;
    assert_int_equal(write(c2[1], "x", 1), 1);
    run_until(events_seen, &want, "an event on the reused fd number");
    tw__http_unwatch(C, fd);
    assert_int_equal(C->watched[fd], 0);
    close(fd);
    close(c2[1]);
    close(a[1]);
    close(b[1]);
}

static void test_closed_fd_tolerated(void **state)
{
    (void)state;
    closed_fd_tolerated();
}

/* ==== the portable poller ========================================================================= */

static void test_poll_poller(void **state)
{
    (void)state;
    tw_result r = fetch_get(url("/chunked?n=50000&seed=2"));
    expect_pattern(expect_response(r, 200), 2, 50000);
    tw_result_drop(r);
    many_concurrent();
    closed_fd_tolerated();
}

/* ==== running out of memory ======================================================================= */

static struct {
    unsigned long calls, fail_at; /* fail_at: 0 never */
    bool fired;
} A;

static bool a_fail(void)
{
    A.calls++;
    if (A.fail_at && A.calls == A.fail_at) {
        A.fired = true;
        return true;
    }
    return false;
}

static void *a_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return a_fail() ? NULL : malloc(size);
}

static void *a_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)ctx;
    (void)old_size;
    return a_fail() ? NULL : realloc(ptr, new_size);
}

static void a_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

static const tw_allocator failing = {a_alloc, a_realloc, a_free, NULL};

static void test_out_of_memory(void **state)
{
    (void)state;
    /* The allocator can only change with no twine block live. */
    tw_http_client_destroy(C);
    C = NULL;
    assert_rc(tw_reactor_destroy(R), 0);
    R = NULL;
    assert_int_equal(tw_allocator_live(), 0);
    assert_rc(tw_set_allocator(&failing), 0);
    assert_rc(tw_reactor_create(&R), 0);
    /* One GET first: the reactor's fd table and timer heap, which it keeps,
     * are then grown already. */
    assert_rc(tw_http_client_create(R, NULL, &C), 0);
    tw_result r0 = fetch_get(url("/hello"));
    expect_response(r0, 200);
    tw_result_drop(r0);
    tw_http_client_destroy(C);
    C = NULL;
    size_t base = tw_allocator_live();
    /* Fail each allocation of a client's creation and of a whole GET in
     * turn: every one is an error or a failure, nothing is left behind. */
    bool done = false;
    int errors = 0, failures = 0;
    for (unsigned long k = 1; !done; k++) {
        (void)tw_allocator_live();
        A.calls = 0;
        A.fired = false;
        A.fail_at = k;
        tw_http_client *c;
        int rc = tw_http_client_create(R, NULL, &c);
        if (rc) {
            assert_rc(rc, TW_ENOMEM);
            errors++;
            continue;
        }
        C = c;
        tw_deferred *d;
        rc = tw_http_client_get(c, url("/bytes?n=20000&seed=5"), &d);
        if (rc) {
            assert_rc(rc, TW_ENOMEM);
            errors++;
        } else {
            tw_test_capture cap;
            tw_test_capture_add(d, &cap);
            tw_deferred_unref(d);
            run_until(fired, &cap, "the GET");
            if (tw_result_is_failure(cap.r)) {
                expect_failure(cap.r, TW_ENOMEM, "/bytes", NULL);
                failures++;
            } else {
                expect_pattern(expect_response(cap.r, 200), 5, 20000);
                tw_test_capture_release(&cap);
            }
        }
        tw_http_client_destroy(c);
        C = NULL;
        done = !A.fired;
        A.fail_at = 0;
        assert_int_equal(tw_allocator_live(), base);
    }
    print_message("%d errors, %d failures\n", errors, failures);
    assert_true(errors > 0);
    assert_true(failures > 0); /* the body's buffer could not grow */
    assert_rc(tw_reactor_destroy(R), 0);
    R = NULL;
    assert_int_equal(tw_allocator_live(), 0);
    assert_rc(tw_set_allocator(NULL), 0);
}

/* ==== main ======================================================================================== */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TP(fn) cmocka_unit_test_setup_teardown(fn, setup_poll, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_get_200),
        T(test_get_404_and_500_are_results),
        T(test_chunked),
        T(test_large_body),
        T(test_many_headers_and_a_long_url),
        T(test_redirects),
        T(test_post_echo),
        T(test_request_headers),
        T(test_keepalive_reuses_one_connection),
        T(test_requests_from_callbacks),
        T(test_timeout),
        T(test_refused),
        T(test_dns_failure),
        T(test_tls_failure),
        T(test_max_body),
        T(test_head_has_no_body),
        T(test_cancel_before_start),
        T(test_cancel_mid_body),
        T(test_many_concurrent),
        T(test_destroy_in_flight),
        T(test_destroy_from_a_callback),
        T(test_reactor_shutdown_in_flight),
        T(test_client_on_a_shut_down_reactor),
        T(test_bad_input),
        T(test_wrong_thread_is_reported),
        T(test_closed_fd_tolerated),
        TP(test_poll_poller),
        T(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
