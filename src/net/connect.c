/* Connecting: a connector walks a list of addresses (one, or what the
 * resolver found for a name), trying each in turn until one connects, under
 * one timeout for the whole attempt.
 *
 * conn_finish is the one way out: it fires the caller's Deferred (with the
 * protocol context, or a failure naming the address) and frees the connector
 * (or, while the factory's build and connection_made run, leaves that to
 * on_connected, whose frame still uses it: a cancel may come from inside
 * them).
 * It runs from the writable event, the timer, the Deferred's canceller, the
 * resolver's answer, or the reactor's shutdown, and cancels whatever else is
 * still pending: the lookup (whose callback, run by that cancel, sees `done`
 * and leaves the connector alone), the timer, the socket. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/errno_map.h"
#include "net/net.h"

typedef struct conn {
    tw__net *ns;
    tw_reactor *r;
    tw_deferred *d; /* ours until conn_finish fires it */
    tw_factory f;
    int fd;
    bool watching;
    bool done;
    tw_delayed_call *timer;
    double timeout;
    tw_deferred *lookup;          /* the resolver's, while resolving */
    tw_result addrs_res;          /* its value once it came (we own it) */
    const tw_address_list *addrs; /* NULL: `one` is the only address */
    size_t next;
    tw_address one;
    tw_address cur;
    tw_failure *last; /* why the last address failed */
    bool starting;    /* on_connected runs build and connection_made: it frees c */
    char host[256];   /* the name looked up, or "" */
    tw__ring link;
} conn;

/* "localhost (127.0.0.1:7000)" or "127.0.0.1:7000" */
static void describe(const conn *c, const tw_address *a, char *buf, size_t size)
{
    char addr[TW_ADDRESS_STRLEN];
    if (a && a->len)
        tw_address_format(a, addr, sizeof addr);
    else
        snprintf(addr, sizeof addr, "?");
    if (c->host[0] && a && a->len)
        snprintf(buf, size, "%s (%s)", c->host, addr);
    else if (c->host[0])
        snprintf(buf, size, "%s", c->host);
    else
        snprintf(buf, size, "%s", addr);
}

static void conn_finish(conn *c, tw_result res)
{
    if (c->done) {
        tw_result_drop(res);
        return;
    }
    c->done = true;
    if (c->lookup) {
        tw_deferred *l = c->lookup;
        c->lookup = NULL;
        tw_deferred_cancel(l);
        tw_deferred_unref(l);
    }
    if (c->timer) {
        tw_delayed_call_cancel(c->timer);
        tw_delayed_call_unref(c->timer);
    }
    if (c->fd >= 0) {
        if (c->watching)
            tw_reactor_remove_writer(c->r, c->fd);
        close(c->fd);
    }
    tw_result_drop(c->addrs_res);
    if (c->last)
        tw_failure_unref(c->last);
    tw__ring_remove(&c->link);
    tw_deferred *d = c->d;
    if (!c->starting) /* else on_connected's frame still reads c: it frees it */
        TW__DELETE(c);
    tw_deferred_callback(d, res);
    tw_deferred_unref(d);
}

static void conn_fail(conn *c, int code, const char *what)
{
    char name[TW_ADDRESS_STRLEN + 300];
    describe(c, c->cur.len ? &c->cur : (c->addrs ? NULL : &c->one), name, sizeof name);
    conn_finish(c, tw_result_fail(code, "connecting to %s: %s", name, what));
}

/* The current address failed with errno err: remember why. */
static void record(conn *c, int err)
{
    char name[TW_ADDRESS_STRLEN + 300], buf[128];
    describe(c, &c->cur, name, sizeof name);
    if (c->last)
        tw_failure_unref(c->last);
    const char *why = err == EAGAIN ? "the listener's backlog is full"
                                    : tw__sock_strerror(-err, buf, sizeof buf);
    c->last = tw_failure_new(tw__from_errno(err), "connecting to %s: %s", name, why);
}

static void on_connected(int fd, unsigned events, void *arg);

/* Starts on the next address, or fails with the last address's reason. */
static void try_next(conn *c)
{
    for (;;) {
        const tw_address *a = NULL;
        if (c->addrs)
            a = c->next < c->addrs->count ? &c->addrs->items[c->next] : NULL;
        else if (c->next == 0)
            a = &c->one;
        if (!a) {
            tw_failure *f = c->last;
            c->last = NULL;
            if (!f)
                f = tw_failure_new(TW_ENOTFOUND, "connecting to %s: no address found", c->host);
            conn_finish(c, tw_result_failure(f));
            return;
        }
        c->next++;
        c->cur = *a;
        int fd = tw__sock_open(a->u.sa.sa_family);
        if (fd < 0) {
            record(c, -fd);
            continue;
        }
        int err = 0;
        if (connect(fd, &a->u.sa, a->len) != 0 && errno != EINPROGRESS)
            err = errno;
        if (!err) {
            /* Connected or on its way: the writable event says which, so the
             * protocol never starts inside tw_reactor_connect. */
            int rc = tw_reactor_add_writer(c->r, fd, on_connected, c);
            if (rc == 0) {
                c->fd = fd;
                c->watching = true;
                return;
            }
            err = rc == TW_ENOMEM ? ENOMEM : EINVAL;
        }
        close(fd);
        record(c, err);
    }
}

static void on_connected(int fd, unsigned events, void *arg)
{
    (void)events;
    conn *c = arg;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    tw_reactor_remove_writer(c->r, fd);
    c->watching = false;
    if (err) {
        close(fd);
        c->fd = -1;
        record(c, err);
        try_next(c);
        return;
    }
    tw__net *ns = c->ns;
    tw__net_enter(ns);
    c->fd = -1; /* the transport's now, or closed */
    /* The factory's build and the protocol's connection_made may cancel the
     * Deferred: conn_finish then fires it, and this frame frees c. */
    c->starting = true;
    tw_transport *t;
    int rc = tw__transport_new(ns, fd, c->cur.u.sa.sa_family == AF_UNIX, NULL, &c->f, &t);
    if (rc) {
        conn_fail(c, rc, rc == TW_ENOMEM ? "out of memory" : "the factory refused the connection");
    } else {
        tw__transport_start(t);
        if (!c->done)
            conn_finish(c, tw_result_value(t->ctx, NULL));
        else /* cancelled meanwhile: the caller has abandoned this connection */
            (void)tw_transport_abort_connection(t);
    }
    TW__DELETE(c);
    tw__net_leave(ns);
}

static void on_timeout(void *arg)
{
    conn *c = arg;
    tw_delayed_call_unref(c->timer);
    c->timer = NULL;
    char what[64];
    snprintf(what, sizeof what, "timed out after %g s", c->timeout);
    conn_fail(c, TW_ETIMEDOUT, what);
}

static void on_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    /* From inside build or connection_made (on_connected's frame), the
     * connection is aborted once connection_made has returned. */
    conn_fail(arg, TW_ECANCELED, "cancelled");
}

static tw_result on_resolved(tw_result res, void *arg)
{
    conn *c = arg;
    if (c->done) { /* conn_finish cancelled the lookup */
        tw_result_drop(res);
        return tw_result_none();
    }
    tw_deferred *l = c->lookup;
    c->lookup = NULL;
    tw_deferred_unref(l); /* its chain holds it while this runs */
    if (tw_result_is_failure(res)) {
        conn_finish(c, res); /* the resolver's message names the host */
        return tw_result_none();
    }
    c->addrs_res = res;
    c->addrs = res.ptr;
    try_next(c);
    return tw_result_none();
}

int tw__connect(tw_reactor *r, const char *host, const tw_address *addr, uint16_t port,
                double timeout, const tw_factory *f, tw_deferred **out)
{
    tw__net *ns;
    int rc = tw__net_get(r, &ns);
    if (rc)
        return rc;
    conn *c = TW__NEW(conn);
    if (!c)
        return TW_ENOMEM;
    c->ns = ns;
    c->r = r;
    c->f = *f;
    c->fd = -1;
    c->timeout = timeout;
    c->addrs_res = tw_result_none();
    if (host)
        snprintf(c->host, sizeof c->host, "%s", host);
    else
        c->one = *addr;
    if (timeout >= 0 && timeout < INFINITY &&
        (rc = tw_reactor_call_later(r, timeout, on_timeout, c, &c->timer)) != 0) {
        TW__DELETE(c);
        return rc;
    }
    if ((rc = tw_deferred_create(&c->d, on_cancel, c)) != 0) {
        if (c->timer) {
            tw_delayed_call_cancel(c->timer);
            tw_delayed_call_unref(c->timer);
        }
        TW__DELETE(c);
        return rc;
    }
    tw__ring_push_back(&ns->connectors, &c->link);
    *out = tw_deferred_ref(c->d); /* before anything can fire it */
    if (!host) {
        try_next(c);
        return 0;
    }
    tw_deferred *l;
    rc = tw_reactor_resolve(r, host, port, AF_UNSPEC, &l);
    if (rc) {
        conn_fail(c, rc, tw_strerror(rc));
        return 0;
    }
    c->lookup = l;
    if (tw_deferred_add_both(l, on_resolved, c) != 0)
        conn_fail(c, TW_ENOMEM, "out of memory");
    return 0;
}

int tw_reactor_connect(tw_reactor *r, const tw_address *addr, double timeout,
                       const tw_factory *f, tw_deferred **out)
{
    int family = tw_address_family(addr);
    if (!r || !f || !f->protocol || !out || timeout != timeout ||
        (family != AF_INET && family != AF_INET6 && family != AF_UNIX))
        return TW_EINVAL;
    TW__NCHECK(r, "the reactor", "tw_reactor_connect");
    return tw__connect(r, NULL, addr, 0, timeout, f, out);
}

void tw__connectors_shutdown(tw__net *ns)
{
    while (!tw__ring_empty(&ns->connectors))
        conn_fail(TW__RING_ITEM(ns->connectors.next, conn, link), TW_ESHUTDOWN,
                  "the reactor is shutting down");
}
