/* What the net layer's tests share: the fixture (no diagnostic, no
 * twine block and no descriptor left behind), a loop driver, a recording
 * protocol ("peer") and a few raw-socket functions. Real sockets on loopback
 * only. */
#ifndef TW_TEST_NET_UTIL_H
#define TW_TEST_NET_UTIL_H

#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <twine/net.h>

/* ---- fixture --------------------------------------------------------------------- */

static inline int net_count_fds(void)
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

static int net_fds_at_start __attribute__((unused));

static inline int net_setup(void **state)
{
    (void)state;
    tw_test_trace_clear();
    tw_test_twine_setup(TW_TEST_DIAG_ECHO_ALL);
    net_fds_at_start = net_count_fds();
    return 0;
}

static inline int net_teardown(void **state)
{
    (void)state;
    int fds = net_count_fds();
    int rc = tw_test_twine_teardown(TW_TEST_DIAGS_NONE);
    if (fds != net_fds_at_start) {
        fprintf(stderr, "open descriptors after the test: %d (was %d)\n", fds, net_fds_at_start);
        rc = -1;
    }
    return rc;
}

/* ---- the loop ---------------------------------------------------------------------- */

static inline tw_reactor *net_reactor(bool fake)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.fake_clock = fake;
    tw_reactor *r;
    assert_rc(tw_reactor_create_with(&cfg, &r), 0);
    return r;
}

/* Iterates r until pred(arg) holds; fails the test after `limit` seconds of
 * real time (a safety net, never the expected path). */
#define NET_RUN_UNTIL(r, cond, limit)                                                  \
    do {                                                                               \
        double until_ = tw_test_now() + (limit);                                       \
        while (!(cond)) {                                                              \
            if (tw_test_now() > until_)                                                \
                fail_msg("%s: not reached within %g s", #cond, (double)(limit));       \
            int rc_ = tw_reactor_iterate((r), 0.01);                                   \
            if (rc_ != 0)                                                              \
                fail_msg("tw_reactor_iterate: %s", tw_err_name(rc_));                   \
        }                                                                              \
    } while (0)

/* ---- a recording protocol ------------------------------------------------------------ */

typedef struct peer peer;
struct peer {
    /* configuration (copied from the factory's template) */
    bool echo;           /* write back what arrives */
    bool keep_half_open; /* eof_received returns this */
    bool tr;             /* trace callbacks ("made", "data", "eof", "lost") */
    void (*on_made)(peer *p);
    void (*on_data)(peer *p, const void *data, size_t len);
    void (*on_lost)(peer *p);
    void *user;
    /* what happened */
    tw_transport *t; /* until connection_lost */
    int index;
    int made, eofs, lost;
    int lost_code;
    char lost_msg[256];
    unsigned char *got;
    size_t got_len, got_cap;
    size_t data_calls;
};

#define NET_PEERS 512
static peer net_peers[NET_PEERS] __attribute__((unused));
static int net_npeers __attribute__((unused));

static inline void peers_reset(void)
{
    for (int i = 0; i < net_npeers; i++)
        free(net_peers[i].got);
    memset(net_peers, 0, sizeof net_peers);
    net_npeers = 0;
}

static inline int peer_build(void *arg, const tw_address *addr, void **ctx)
{
    (void)addr;
    if (net_npeers >= NET_PEERS)
        return TW_ENOMEM;
    peer *p = &net_peers[net_npeers];
    *p = *(const peer *)arg;
    p->index = net_npeers++;
    *ctx = p;
    return 0;
}

static inline void peer_made(void *ctx, tw_transport *t)
{
    peer *p = ctx;
    p->t = t;
    p->made++;
    if (p->tr)
        tw_test_tr("made%d", p->index);
    if (p->on_made)
        p->on_made(p);
}

static inline void peer_data(void *ctx, tw_transport *t, const void *data, size_t len)
{
    peer *p = ctx;
    assert_ptr_equal(t, p->t);
    assert_int_equal(p->lost, 0);
    p->data_calls++;
    if (p->got_len + len > p->got_cap) {
        size_t cap = p->got_cap ? p->got_cap : 4096;
        while (cap < p->got_len + len)
            cap *= 2;
        p->got = realloc(p->got, cap);
        assert_non_null(p->got);
        p->got_cap = cap;
    }
    memcpy(p->got + p->got_len, data, len);
    p->got_len += len;
    if (p->tr)
        tw_test_tr("data%d", p->index);
    if (p->echo)
        assert_rc(tw_transport_write(t, data, len), 0);
    if (p->on_data)
        p->on_data(p, data, len);
}

static inline bool peer_eof(void *ctx, tw_transport *t)
{
    peer *p = ctx;
    assert_ptr_equal(t, p->t);
    p->eofs++;
    if (p->tr)
        tw_test_tr("eof%d", p->index);
    return p->keep_half_open;
}

static inline void peer_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    peer *p = ctx;
    assert_ptr_equal(t, p->t);
    assert_int_equal(p->lost, 0);
    p->lost++;
    p->lost_code = tw_failure_code(why);
    snprintf(p->lost_msg, sizeof p->lost_msg, "%s", tw_failure_message(why));
    if (p->tr)
        tw_test_tr("lost%d:%s", p->index, tw_err_name(p->lost_code));
    if (p->on_lost)
        p->on_lost(p);
    p->t = NULL;
}

static const tw_protocol peer_protocol __attribute__((unused)) = {peer_made, peer_data, peer_eof,
                                                                   peer_lost};

static inline tw_factory peer_factory(peer *tmpl)
{
    tw_factory f = {&peer_protocol, peer_build, tmpl};
    return f;
}

static inline int peers_lost(void)
{
    int n = 0;
    for (int i = 0; i < net_npeers; i++)
        n += net_peers[i].lost;
    return n;
}

/* ---- listening and connecting -------------------------------------------------------------- */

static inline tw_listener *net_listen(tw_reactor *r, const char *endpoint, const tw_factory *f)
{
    tw_listener *l = NULL;
    tw_failure *why = NULL;
    int rc = tw_endpoint_listen(r, endpoint, f, &l, &why);
    if (rc)
        fail_msg("listening on %s: %s (%s)", endpoint, tw_err_name(rc),
                 why ? tw_failure_message(why) : "");
    return l;
}

static inline int net_port(tw_listener *l)
{
    tw_address a;
    assert_rc(tw_listener_address(l, &a), 0);
    int port = tw_address_port(&a);
    assert_true(port > 0);
    return port;
}

/* A Deferred's outcome, captured. */
typedef struct outcome {
    int fired;
    int code; /* 0 for a value */
    void *value;
    char msg[256];
} outcome;

static inline tw_result outcome_cb(tw_result r, void *arg)
{
    outcome *o = arg;
    o->fired++;
    if (tw_result_is_failure(r)) {
        tw_failure *f = tw_result_as_failure(r);
        o->code = tw_failure_code(f);
        snprintf(o->msg, sizeof o->msg, "%s", tw_failure_message(f));
        tw_result_drop(r);
    } else {
        o->code = 0;
        o->value = r.ptr;
        return r; /* the value stays in the Deferred: net_take_value drops it */
    }
    return tw_result_none();
}

static inline void net_watch(tw_deferred *d, outcome *o)
{
    memset(o, 0, sizeof *o);
    assert_rc(tw_deferred_add_both(d, outcome_cb, o), 0);
}

/* Connects to endpoint; *d and *o watch it. */
static inline void net_connect(tw_reactor *r, const char *endpoint, const tw_factory *f,
                               tw_deferred **d, outcome *o)
{
    assert_rc(tw_endpoint_connect(r, endpoint, f, d), 0);
    net_watch(*d, o);
}

/* ---- raw sockets, for the peer the test controls itself ----------------------------------- */

/* A blocking connect to 127.0.0.1:port, then made non-blocking. */
static inline int raw_connect(int family, int port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    }
    if (connect(fd, (struct sockaddr *)&ss, len) != 0)
        fail_msg("raw connect to port %d: %s", port, strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Reads what is there without blocking, appending to buf; returns bytes
 * read (0 at end of file sets *eof), -errno on an error. */
static inline ssize_t raw_read(int fd, unsigned char *buf, size_t cap, size_t *len, bool *eof)
{
    ssize_t total = 0;
    while (*len < cap) {
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n > 0) {
            *len += (size_t)n;
            total += n;
            continue;
        }
        if (n == 0)
            *eof = true;
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        break;
    }
    return total;
}

/* Deterministic pseudo-random bytes. */
static inline void net_fill(unsigned char *buf, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (unsigned char)x;
    }
}

#endif
