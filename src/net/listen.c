/* Listeners: bind and listen, accept in batches, back off when out of
 * descriptors, stop.
 *
 * Out of descriptors (EMFILE, ENFILE, or kernel memory: ENOBUFS, ENOMEM), a
 * listener that stayed watched would be woken again at once by the
 * connection it could not take, and the loop would spin. So the listener
 * stops watching its socket for a while (0.1 s, doubling to 1.6 s while the
 * shortage lasts; the pending connections wait in the kernel's backlog) and
 * says so once per shortage through the diagnostic hook. An accept that
 * succeeds ends the shortage.
 *
 * A protocol's connection_made may stop the listener that accepted it, and
 * so may a connection_lost delivered as the accept callback leaves the net
 * layer: stop closes the socket at once, but while the accept callback runs
 * (`accepting`, until after that leave) the callback frees the listener as
 * it returns. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/errno_map.h"
#include "net/net.h"

#define BACKOFF_FIRST 0.1
#define BACKOFF_MAX 1.6

struct tw_listener {
    tw__net *ns; /* NULL once closed (stopped, or the reactor shut down) */
    tw_reactor *r;
    int fd;
    bool watching;
    bool accepting; /* in the accept loop */
    bool stopped;   /* tw_listener_stop was called in the accept loop */
    bool short_reported;
    tw_factory f;
    tw_address addr;
    dev_t dev; /* a Unix socket's file, to remove only our own */
    ino_t ino;
    tw_delayed_call *backoff;
    double delay; /* the last back-off, 0 when none */
    uint64_t shortages;
    tw__ring link;
};

static void set_err(tw_failure **err, tw_failure *f)
{
    if (err)
        *err = f;
    else
        tw_failure_unref(f);
}

static void on_accept(int fd, unsigned events, void *arg);

static void close_socket(tw_listener *l)
{
    if (l->watching)
        tw_reactor_remove_reader(l->r, l->fd);
    l->watching = false;
    if (l->backoff) {
        tw_delayed_call_cancel(l->backoff);
        tw_delayed_call_unref(l->backoff);
        l->backoff = NULL;
    }
    close(l->fd);
    l->fd = -1;
    struct stat st;
    if (l->addr.u.sa.sa_family == AF_UNIX && l->addr.u.un.sun_path[0] &&
        stat(l->addr.u.un.sun_path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
        unlink(l->addr.u.un.sun_path);
    tw__ring_remove(&l->link);
    l->ns = NULL;
}

static void backoff_done(void *arg)
{
    tw_listener *l = arg;
    tw_delayed_call_unref(l->backoff);
    l->backoff = NULL;
    if (tw_reactor_add_reader(l->r, l->fd, on_accept, l) == 0)
        l->watching = true;
}

static void back_off(tw_listener *l, int neg_errno)
{
    l->shortages++;
    tw_reactor_remove_reader(l->r, l->fd);
    l->watching = false;
    l->delay = l->delay ? (l->delay * 2 > BACKOFF_MAX ? BACKOFF_MAX : l->delay * 2) : BACKOFF_FIRST;
    int rc = tw_reactor_call_later(l->r, l->delay, backoff_done, l, &l->backoff);
    if (rc) { /* cannot wait: watch again, at the cost of spinning */
        l->backoff = NULL;
        backoff_done(l);
    }
    if (!l->short_reported) {
        l->short_reported = true;
        char name[TW_ADDRESS_STRLEN], buf[128], msg[384];
        tw_address_format(&l->addr, name, sizeof name);
        snprintf(msg, sizeof msg,
                 "listener on %s cannot accept: %s; not accepting for %g s (and longer while "
                 "the shortage lasts)",
                 name, tw__sock_strerror(neg_errno, buf, sizeof buf), l->delay);
        tw_diag_report(TW_DIAG_WARNING, TW_ESYS, "tw_reactor_listen", msg);
    }
}

static void on_accept(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    tw_listener *l = arg;
    tw__net *ns = l->ns;
    bool is_unix = l->addr.u.sa.sa_family == AF_UNIX;
    tw__net_enter(ns);
    l->accepting = true;
    for (int i = 0; i < TW__NET_ACCEPTS && l->ns; i++) {
        tw_address peer;
        int c = tw__sock_accept(l->fd, &peer);
        if (c < 0) {
            /* accept takes a descriptor before it looks at the queue, so a
             * batch that used the last one ends so; only a wake-up whose
             * first accept fails is a shortage (the connection waiting
             * would wake us again at once). */
            if ((c == -EMFILE || c == -ENFILE || c == -ENOBUFS || c == -ENOMEM) && i == 0)
                back_off(l, c);
            else if (c == -ECONNABORTED || c == -EPROTO || c == -EPERM)
                continue; /* that one connection went wrong: take the next */
            break;        /* EAGAIN: none left */
        }
        l->delay = 0;
        l->short_reported = false;
        tw_transport *t;
        int rc = tw__transport_new(ns, c, is_unix, &peer, &l->f, &t);
        if (rc == 0)
            tw__transport_start(t);
        else if (rc == TW_ENOMEM)
            tw_diag_report(TW_DIAG_WARNING, rc, "tw_reactor_listen",
                           "out of memory for an accepted connection: closed it");
    }
    /* Still `accepting` while leaving: the connection_lost calls delivered
     * there may stop the listener too. */
    tw__net_leave(ns);
    l->accepting = false;
    if (l->stopped)
        TW__DELETE(l);
}

int tw_reactor_listen(tw_reactor *r, const tw_address *addr, const tw_listen_options *options,
                      const tw_factory *f, tw_listener **out, tw_failure **err)
{
    if (err)
        *err = NULL;
    int family = tw_address_family(addr);
    if (!r || !f || !f->protocol || !out ||
        (family != AF_INET && family != AF_INET6 && family != AF_UNIX) ||
        (options && (options->backlog < 0 || options->mode > 07777))) {
        set_err(err, tw_failure_new(TW_EINVAL, "tw_reactor_listen: invalid argument"));
        return TW_EINVAL;
    }
    TW__NCHECK(r, "the reactor", "tw_reactor_listen");
    return tw__listen(r, addr, options, f, out, err);
}

int tw__listen(tw_reactor *r, const tw_address *addr, const tw_listen_options *options,
               const tw_factory *f, tw_listener **out, tw_failure **err)
{
    int family = addr->u.sa.sa_family;
    char name[TW_ADDRESS_STRLEN], buf[128];
    tw_address_format(addr, name, sizeof name);
    tw__net *ns;
    int rc = tw__net_get(r, &ns);
    if (rc) {
        set_err(err, tw_failure_new(rc, "listening on %s: %s", name,
                                    rc == TW_ESHUTDOWN ? "the reactor is shutting down"
                                                       : tw_strerror(rc)));
        return rc;
    }
    int fd = tw__sock_open(family);
    if (fd < 0) {
        rc = tw__from_errno(-fd);
        set_err(err, tw_failure_new(rc, "listening on %s: %s", name,
                                    tw__sock_strerror(fd, buf, sizeof buf)));
        return rc;
    }
    const char *step = "bind";
    int one = 1;
    if (family != AF_UNIX && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        goto fail;
    if (family != AF_UNIX) /* accepted sockets inherit it where the system allows (sock.c) */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, &addr->u.sa, addr->len) != 0)
        goto fail;
    struct stat st = {0};
    if (family == AF_UNIX && addr->u.un.sun_path[0]) {
        step = "chmod";
        if (options && options->mode && chmod(addr->u.un.sun_path, options->mode) != 0)
            goto fail_unlink;
        if (stat(addr->u.un.sun_path, &st) != 0)
            goto fail_unlink;
    }
    step = "listen";
    if (listen(fd, options && options->backlog ? options->backlog : TW__NET_BACKLOG) != 0)
        goto fail_unlink;
    tw_listener *l = TW__NEW(tw_listener);
    if (!l) {
        errno = ENOMEM;
        goto fail_unlink;
    }
    l->ns = ns;
    l->r = r;
    l->fd = fd;
    l->f = *f;
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->addr.len = sizeof l->addr.u;
    if (getsockname(fd, &l->addr.u.sa, &l->addr.len) != 0 || family == AF_UNIX)
        l->addr = *addr; /* a Unix socket's name is the path asked for */
    rc = tw_reactor_add_reader(r, fd, on_accept, l);
    if (rc) {
        TW__DELETE(l);
        errno = rc == TW_ENOMEM ? ENOMEM : EINVAL;
        goto fail_unlink;
    }
    l->watching = true;
    tw__ring_push_back(&ns->listeners, &l->link);
    *out = l;
    return 0;

fail_unlink:
    if (family == AF_UNIX && addr->u.un.sun_path[0]) {
        int saved = errno;
        unlink(addr->u.un.sun_path);
        errno = saved;
    }
fail:;
    int e = errno;
    close(fd);
    rc = tw__from_errno(e);
    if (e == EADDRINUSE && family == AF_UNIX)
        set_err(err, tw_failure_new(rc, "listening on %s: %s (a socket file is in the way; "
                                        "remove it if no server uses it)",
                                    name, tw__sock_strerror(-e, buf, sizeof buf)));
    else
        set_err(err, tw_failure_new(rc, "listening on %s: %s failed: %s", name, step,
                                    tw__sock_strerror(-e, buf, sizeof buf)));
    return rc;
}

int tw_listener_address(const tw_listener *l, tw_address *out)
{
    if (!l || !out)
        return TW_EINVAL;
    if (l->ns)
        TW__NCHECK(l->r, "a listener", "tw_listener_address");
    *out = l->addr;
    return 0;
}

int tw_listener_stop(tw_listener *l, tw_deferred **out)
{
    if (!l)
        return TW_EINVAL;
    if (l->ns) {
        TW__NCHECK(l->r, "a listener", "tw_listener_stop");
        close_socket(l);
    }
    if (l->accepting)
        l->stopped = true; /* the accept loop frees it */
    else
        TW__DELETE(l);
    return out ? tw_deferred_succeed(out, NULL, NULL) : 0;
}

void tw__listeners_shutdown(tw__net *ns)
{
    while (!tw__ring_empty(&ns->listeners))
        close_socket(TW__RING_ITEM(ns->listeners.next, tw_listener, link));
}

uint64_t tw__listener_fd_shortages(const tw_listener *l)
{
    return l->shortages;
}

bool tw__listener_backing_off(const tw_listener *l)
{
    return l->backoff != NULL;
}
