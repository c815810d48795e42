/* Transports: reading, writing, closing, half-close and flow control.
 *
 * States (net.h): OPEN -> CLOSING (lose_connection: the queue drains, then
 * the socket closes) -> CLOSED (socket closed, connection_lost owed) -> DEAD
 * (delivered). finish() is the one way to CLOSED: it removes the watchers,
 * closes the socket, drops the queue, records the reason and puts the
 * transport on the reactor's lost list. deliver() is the one way to DEAD; it
 * runs only from tw__net_leave, so never inside a call the protocol made.
 *
 * Writing. While an entry is in progress (ns->depth > 0: we are inside a
 * protocol callback, or some other callback the net layer runs), a write is
 * queued and the transport goes on the dirty list, and tw__net_leave sends
 * the whole queue with one sendmsg when the outermost entry returns. Outside
 * any entry, a write goes to the socket at once when nothing is queued. A
 * write of a chunk or more is sent at once in either case, when the socket
 * is not known to be full, so large buffers are not copied. What the socket
 * does not take is queued (copied, or the caller's buffer kept with its drop
 * function) and the writer is watched until the queue is empty.
 * Invariant outside entries: a non-empty queue has its writer watched.
 *
 * Flow control. Crossing the high-water mark pauses the producer, from
 * inside the write that crossed it (as in Twisted). Draining to the
 * low-water mark resumes it: at once in a writable event, or, when the dirty
 * flush at the end of an entry drained it, at the next writable event
 * (TF_RESUME keeps the writer watched for it), so a producer that refills
 * the queue each time cannot keep tw__net_leave looping. A transport that
 * takes no more writes (lose_connection, close_write) never resumes its
 * producer: every write would fail; it stays paused until it is stopped,
 * before connection_lost. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/errno_map.h"
#include "net/net.h"

#define CHECK(t, fn) TW__NCHECK((t)->r, "a transport", (fn))

/* ---- references ------------------------------------------------------------------- */

tw_transport *tw_transport_ref(tw_transport *t)
{
    if (t) /* relaxed: the caller holds a reference, which keeps t alive */
        __atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
    return t;
}

void tw_transport_unref(tw_transport *t)
{
    /* acq_rel: the last holder sees every other holder's writes before freeing. */
    if (t && __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0)
        TW__DELETE(t);
}

/* ---- watchers --------------------------------------------------------------------- */

static void on_readable(int fd, unsigned events, void *arg);
static void on_writable(int fd, unsigned events, void *arg);

static void update_reader(tw_transport *t)
{
    bool want = t->state == T_OPEN && !(t->flags & (TF_PAUSED | TF_EOF));
    if (want == !!(t->flags & TF_READING))
        return;
    if (want && tw_reactor_add_reader(t->r, t->fd, on_readable, t) == 0)
        t->flags |= TF_READING;
    else if (!want && tw_reactor_remove_reader(t->r, t->fd) == 0)
        t->flags &= ~TF_READING;
}

static void update_writer(tw_transport *t)
{
    bool want = t->state < T_CLOSED && (t->q.n > 0 || (t->flags & TF_RESUME));
    if (want == !!(t->flags & TF_WRITING))
        return;
    if (want && tw_reactor_add_writer(t->r, t->fd, on_writable, t) == 0)
        t->flags |= TF_WRITING;
    else if (!want && tw_reactor_remove_writer(t->r, t->fd) == 0)
        t->flags &= ~TF_WRITING;
}

/* ---- closing ---------------------------------------------------------------------- */

static bool named(const tw_address *a)
{
    if (!a->len)
        return false;
    if (a->u.sa.sa_family != AF_UNIX)
        return true;
    return a->len > offsetof(struct sockaddr_un, sun_path) &&
           (a->u.un.sun_path[0] || a->len > offsetof(struct sockaddr_un, sun_path) + 1);
}

/* The address messages name: the peer's, or for an accepted Unix connection
 * (whose peer has no name) the listener's path. Formatted only when a
 * reason is made, while the socket is still open. */
static void name_of(const tw_transport *t, char *buf, size_t size)
{
    if (named(&t->peer)) {
        tw_address_format(&t->peer, buf, size);
        return;
    }
    tw_address local;
    local.len = sizeof local.u;
    if (getsockname(t->fd, &local.u.sa, &local.len) != 0)
        local.len = 0;
    tw_address_format(&local, buf, size);
}

static tw_failure *reason(tw_transport *t, int code, const char *detail)
{
    char name[TW_ADDRESS_STRLEN];
    name_of(t, name, sizeof name);
    switch (code) {
    case TW_ECONNDONE:
        return tw_failure_new(code, "connection with %s closed cleanly", name);
    case TW_ECONNRESET:
        return tw_failure_new(code, "connection with %s reset by peer", name);
    case TW_ECONNABORTED:
        return tw_failure_new(code, "connection with %s aborted", name);
    case TW_ETIMEDOUT:
        return tw_failure_new(code, "connection with %s timed out", name);
    default:
        return tw_failure_new(code, "connection with %s lost: %s", name,
                              detail ? detail : tw_strerror(code));
    }
}

/* OPEN or CLOSING -> CLOSED (see the top). */
static void finish(tw_transport *t, int code, const char *detail, bool reset)
{
    if (t->state >= T_CLOSED)
        return;
    tw__net *ns = t->ns;
    if (t->flags & TF_READING)
        tw_reactor_remove_reader(t->r, t->fd);
    if (t->flags & TF_WRITING)
        tw_reactor_remove_writer(t->r, t->fd);
    t->flags &= ~(TF_READING | TF_WRITING | TF_RESUME);
    t->reason = reason(t, code, detail); /* while the socket can still tell its name */
    if (reset) { /* abort: the peer sees a reset, not an orderly end */
        struct linger lg = {1, 0};
        setsockopt(t->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(t->fd);
    t->fd = -1;
    t->state = T_CLOSED; /* before the drop functions run: they may call the transport */
    tw__wq_clear(ns, &t->q);
    t->next_lost = NULL;
    if (ns->lost_tail)
        ns->lost_tail->next_lost = t;
    else
        ns->lost_head = t;
    ns->lost_tail = t;
    tw__net_schedule(ns);
}

/* A failed system call on an open transport: its reason, and the code the
 * caller returns. */
static int fail_errno(tw_transport *t, int err)
{
    int code = tw__from_errno(err);
    if (code != TW_ECONNRESET && code != TW_ETIMEDOUT)
        code = TW_ECONNLOST;
    char buf[128];
    /* Only a lost connection's message carries the system's words: a reset
     * or a timeout says it all (and strerror_r goes through gettext). */
    finish(t, code, code == TW_ECONNLOST ? tw__sock_strerror(-err, buf, sizeof buf) : NULL,
           false);
    return code == TW_ECONNLOST ? tw__from_errno(err) : code;
}

static void deliver(tw_transport *t)
{
    t->state = T_DEAD;
    tw_failure *why = t->reason;
    t->reason = NULL;
    if (t->flags & TF_PRODUCER) {
        t->flags &= ~(TF_PRODUCER | TF_PROD_PAUSED);
        if (t->prod.stop_producing)
            t->prod.stop_producing(t->prod_arg);
    }
    if (t->proto->connection_lost)
        t->proto->connection_lost(t->ctx, t, why);
    tw_failure_unref(why);
    tw__ring_remove(&t->link);
    t->ns = NULL;
    tw_transport_unref(t); /* the net layer's */
}

static void shut_write(tw_transport *t)
{
    if (shutdown(t->fd, SHUT_WR) != 0) {
        fail_errno(t, errno);
        return;
    }
    t->flags |= TF_WR_SHUT;
    if (t->flags & TF_EOF) /* both directions are done */
        finish(t, TW_ECONNDONE, NULL, false);
}

/* ---- writing ---------------------------------------------------------------------- */

/* Takes writes: open, and neither side's closing under way. */
static int writable(const tw_transport *t)
{
    return t->state == T_OPEN && !(t->flags & (TF_WR_CLOSING | TF_WR_SHUT)) ? 0 : TW_ENOTCONN;
}

static void resume_producer(tw_transport *t)
{
    t->flags &= ~(TF_PROD_PAUSED | TF_RESUME);
    t->prod.resume_producing(t->prod_arg);
}

/* Sends the queue; then what an empty queue allows: closing, shutting the
 * write side, resuming the producer. */
static void flush(tw_transport *t, bool writable_event)
{
    int rc = tw__wq_send(t->ns, &t->q, t->fd);
    if (t->state >= T_CLOSED)
        return; /* a drop function closed it */
    if (rc) {
        fail_errno(t, -rc);
        return;
    }
    if (t->q.n == 0) {
        if (t->state == T_CLOSING) {
            finish(t, TW_ECONNDONE, NULL, false);
            return;
        }
        if ((t->flags & (TF_WR_CLOSING | TF_WR_SHUT)) == TF_WR_CLOSING) {
            shut_write(t);
            if (t->state != T_OPEN)
                return;
        }
    }
    /* A transport that takes no more writes (lose_connection, close_write)
     * leaves its producer paused: it is stopped before connection_lost. */
    if ((t->flags & TF_PROD_PAUSED) && t->q.bytes <= t->low && writable(t) == 0) {
        if (writable_event) {
            resume_producer(t);
            if (t->state >= T_CLOSED)
                return;
        } else {
            t->flags |= TF_RESUME;
        }
    }
    update_writer(t);
}

static void mark_dirty(tw_transport *t)
{
    tw__net *ns = t->ns;
    t->flags |= TF_DIRTY;
    t->next_dirty = NULL;
    if (ns->dirty_tail)
        ns->dirty_tail->next_dirty = t;
    else
        ns->dirty_head = t;
    ns->dirty_tail = t;
}

/* Bytes were added to the queue, which held `before` bytes; `full`: a send
 * just now did not take everything. */
static void queued(tw_transport *t, size_t before, bool full)
{
    if (full || t->ns->depth == 0)
        update_writer(t); /* outside entries we always try first: the socket is full */
    else if (!(t->flags & TF_DIRTY) && (before == 0 || !(t->flags & TF_WRITING)))
        mark_dirty(t); /* not known to be full: tw__net_leave sends */
    if ((t->flags & (TF_PRODUCER | TF_PROD_PAUSED)) == TF_PRODUCER && t->q.bytes > t->high) {
        t->flags |= TF_PROD_PAUSED;
        t->flags &= ~TF_RESUME;
        t->prod.pause_producing(t->prod_arg);
    }
}

/* Sends iov[0..n) at once if the rules above allow: returns the bytes sent
 * (0: queue all of it), or a negative errno; *tried: a send was made (so a
 * short count means the socket is full). */
static ssize_t send_now(tw_transport *t, const struct iovec *iov, int n, size_t total, bool *tried)
{
    bool big = total >= TW__NET_CHUNK;
    *tried = false;
    if (t->q.n) {
        if (!big || (t->flags & TF_WRITING))
            return 0;
        *tried = true;
        int rc = tw__wq_send(t->ns, &t->q, t->fd); /* what was queued goes first */
        if (t->state >= T_CLOSED)
            return -ENOTCONN; /* a drop function closed it */
        if (rc)
            return rc;
        if (t->q.n)
            return 0;
    } else if (t->ns->depth && !big) {
        return 0;
    }
    *tried = true;
    ssize_t k = tw__sock_send(t->fd, iov, n < TW__NET_IOV ? n : TW__NET_IOV);
    return k == -EAGAIN || k == -EWOULDBLOCK ? 0 : k;
}

/* The common path of write and writev: send what can go now, copy the rest. */
static int write_iov(tw_transport *t, const struct iovec *iov, int n, size_t total)
{
    size_t before = t->q.bytes;
    bool tried;
    ssize_t k = send_now(t, iov, n, total, &tried);
    if (k < 0)
        return t->state >= T_CLOSED ? TW_ENOTCONN : fail_errno(t, (int)-k);
    size_t sent = (size_t)k;
    if (sent == total)
        return 0;
    size_t skip = sent;
    for (int i = 0; i < n; i++) {
        const char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        if (tw__wq_copy(t->ns, &t->q, p + skip, len - skip) != 0) {
            if (sent || t->q.bytes != before) {
                /* Part of these bytes is gone or queued: the stream has a
                 * hole, and the connection cannot go on. */
                finish(t, TW_ECONNLOST, "out of memory queueing a write", false);
            }
            return TW_ENOMEM;
        }
        skip = 0;
    }
    queued(t, before, tried);
    return 0;
}

int tw_transport_write(tw_transport *t, const void *data, size_t len)
{
    if (!t || (!data && len))
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_write");
    int rc = writable(t);
    if (rc || len == 0)
        return rc;
    struct iovec v = {(void *)data, len};
    return write_iov(t, &v, 1, len);
}

int tw_transport_writev(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    if (!t || iovcnt < 0 || (iovcnt && !iov))
        return TW_EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_base && iov[i].iov_len)
            return TW_EINVAL;
        if (total + iov[i].iov_len < total)
            return TW_EINVAL;
        total += iov[i].iov_len;
    }
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_writev");
    int rc = writable(t);
    if (rc || total == 0)
        return rc;
    return write_iov(t, iov, iovcnt, total);
}

int tw_transport_write_owned(tw_transport *t, void *data, size_t len, tw_drop_fn drop)
{
    int rc = 0;
    if (!t || (!data && len)) {
        rc = TW_EINVAL;
    } else if (t->state == T_DEAD) {
        rc = TW_ENOTCONN;
    } else {
        CHECK(t, "tw_transport_write_owned");
        rc = writable(t);
    }
    if (rc || len == 0)
        goto drop;
    size_t before = t->q.bytes;
    struct iovec v = {data, len};
    bool tried;
    ssize_t k = send_now(t, &v, 1, len, &tried);
    if (k < 0) {
        rc = t->state >= T_CLOSED ? TW_ENOTCONN : fail_errno(t, (int)-k);
        goto drop;
    }
    if ((size_t)k == len)
        goto drop; /* all sent */
    if (tw__wq_own(t->ns, &t->q, (char *)data + k, len - (size_t)k, drop, data) != 0) {
        if (k)
            finish(t, TW_ECONNLOST, "out of memory queueing a write", false);
        rc = TW_ENOMEM;
        goto drop;
    }
    queued(t, before, tried);
    return 0;
drop:
    if (drop && data)
        drop(data);
    return rc;
}

size_t tw_transport_buffered(const tw_transport *t)
{
    if (!t || t->state == T_DEAD)
        return 0;
    CHECK(t, "tw_transport_buffered");
    return t->q.bytes;
}

int tw_transport_set_write_limits(tw_transport *t, size_t high, size_t low)
{
    if (!t || high < 1 || low > high)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_set_write_limits");
    t->high = high;
    t->low = low;
    if (t->state >= T_CLOSED)
        return 0;
    if ((t->flags & TF_PROD_PAUSED) && t->q.bytes <= low && writable(t) == 0) {
        t->flags |= TF_RESUME; /* at the next writable event, never inside this call */
        update_writer(t);
    } else {
        queued(t, t->q.bytes, false); /* pauses if now above */
    }
    return 0;
}

/* ---- the producer ------------------------------------------------------------------- */

int tw_transport_register_producer(tw_transport *t, const tw_producer *p, void *arg)
{
    if (!t || !p || !p->pause_producing || !p->resume_producing)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_register_producer");
    if (t->state >= T_CLOSED)
        return TW_ENOTCONN;
    if (t->flags & TF_PRODUCER)
        return TW_EBUSY;
    t->prod = *p;
    t->prod_arg = arg;
    t->flags |= TF_PRODUCER;
    if (t->q.bytes > t->high) {
        t->flags |= TF_PROD_PAUSED;
        t->prod.pause_producing(arg);
    }
    return 0;
}

int tw_transport_unregister_producer(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_EINVAL;
    CHECK(t, "tw_transport_unregister_producer");
    if (!(t->flags & TF_PRODUCER))
        return TW_EINVAL;
    t->flags &= ~(TF_PRODUCER | TF_PROD_PAUSED | TF_RESUME);
    if (t->state < T_CLOSED)
        update_writer(t);
    return 0;
}

/* ---- closing, half-closing, pausing ---------------------------------------------------- */

static void lose(tw_transport *t)
{
    t->state = T_CLOSING;
    t->flags &= ~TF_RESUME; /* no more writes: the producer stays paused */
    update_reader(t);
    if (t->q.n == 0)
        finish(t, TW_ECONNDONE, NULL, false);
}

int tw_transport_lose_connection(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_lose_connection");
    if (t->state != T_OPEN)
        return TW_ENOTCONN;
    lose(t);
    return 0;
}

int tw_transport_abort_connection(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_abort_connection");
    if (t->state >= T_CLOSED)
        return TW_ENOTCONN;
    finish(t, TW_ECONNABORTED, NULL, true);
    return 0;
}

int tw_transport_close_write(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_close_write");
    int rc = writable(t);
    if (rc)
        return rc;
    t->flags |= TF_WR_CLOSING;
    t->flags &= ~TF_RESUME; /* no more writes: the producer stays paused */
    if (t->q.n == 0)
        shut_write(t);
    if (t->state < T_CLOSED)
        update_writer(t);
    return 0;
}

static int set_paused(tw_transport *t, bool paused, const char *fn)
{
    if (!t)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, fn);
    (void)fn;
    if (t->state != T_OPEN)
        return TW_ENOTCONN;
    if (paused)
        t->flags |= TF_PAUSED;
    else
        t->flags &= ~TF_PAUSED;
    update_reader(t);
    return 0;
}

int tw_transport_pause_reading(tw_transport *t)
{
    return set_paused(t, true, "tw_transport_pause_reading");
}

int tw_transport_resume_reading(tw_transport *t)
{
    return set_paused(t, false, "tw_transport_resume_reading");
}

/* ---- reading ------------------------------------------------------------------------- */

static void got_eof(tw_transport *t)
{
    t->flags |= TF_EOF;
    update_reader(t);
    bool keep = t->proto->eof_received && t->proto->eof_received(t->ctx, t);
    if (t->state != T_OPEN)
        return; /* the callback closed it */
    if (!keep)
        lose(t);
    else if (t->flags & TF_WR_SHUT)
        finish(t, TW_ECONNDONE, NULL, false);
}

static void read_some(tw_transport *t)
{
    tw__net *ns = t->ns;
    if (!ns->rbuf && !(ns->rbuf = tw__alloc(TW__NET_RBUF))) {
        finish(t, TW_ECONNLOST, "out of memory for the read buffer", false);
        return;
    }
    for (int i = 0; i < TW__NET_READS; i++) {
        ssize_t n = recv(t->fd, ns->rbuf, TW__NET_RBUF, 0);
        if (n > 0) {
            if (t->proto->data_received)
                t->proto->data_received(t->ctx, t, ns->rbuf, (size_t)n);
            if (!(t->flags & TF_READING) || n < TW__NET_RBUF)
                return; /* paused or closed by the protocol, or the socket is drained */
        } else if (n == 0) {
            got_eof(t);
            return;
        } else if (errno == EINTR) {
            continue;
        } else {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fail_errno(t, errno);
            return;
        }
    }
}

static void on_readable(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    tw_transport *t = arg;
    tw__net *ns = t->ns;
    tw__net_enter(ns);
    read_some(t);
    tw__net_leave(ns);
}

static void on_writable(int fd, unsigned events, void *arg)
{
    (void)fd;
    (void)events;
    tw_transport *t = arg;
    tw__net *ns = t->ns;
    tw__net_enter(ns);
    flush(t, true);
    tw__net_leave(ns);
}

/* ---- entries and their exit --------------------------------------------------------- */

void tw__net_leave(tw__net *ns)
{
    if (ns->depth > 1) {
        ns->depth--;
        return;
    }
    /* Still at depth 1: what the callbacks below do is queued and handled by
     * this loop. Dirty transports first: one that is dirty is never freed
     * before it has been flushed (deliver runs only when none is dirty). */
    for (;;) {
        tw_transport *t = ns->dirty_head;
        if (t) {
            ns->dirty_head = t->next_dirty;
            if (!ns->dirty_head)
                ns->dirty_tail = NULL;
            t->flags &= ~TF_DIRTY;
            if (t->state < T_CLOSED)
                flush(t, false);
            continue;
        }
        t = ns->lost_head;
        if (!t)
            break;
        ns->lost_head = t->next_lost;
        if (!ns->lost_head)
            ns->lost_tail = NULL;
        deliver(t);
    }
    ns->depth = 0;
}

void tw__net_schedule(tw__net *ns)
{
    if (ns->depth > 0 || ns->tick_posted)
        return;
    ns->tick_posted = true;
    if (tw_reactor_post(ns->r, &ns->tick) != 0) {
        /* The reactor no longer runs calls (only after its shutdown, when
         * nothing of ours is open): deliver now. */
        ns->tick_posted = false;
        tw__net_enter(ns);
        tw__net_leave(ns);
    }
}

void tw__transports_shutdown(tw__net *ns)
{
    for (tw__ring *l = ns->transports.next; l != &ns->transports; l = l->next) {
        tw_transport *t = TW__RING_ITEM(l, tw_transport, link);
        finish(t, TW_ECONNLOST, "the reactor is shutting down", false);
    }
}

/* ---- making one --------------------------------------------------------------------- */

int tw__transport_new(tw__net *ns, int fd, bool is_unix, const tw_address *peer,
                      const tw_factory *f, tw_transport **out)
{
    tw_transport *t = TW__NEW(tw_transport);
    if (!t) {
        close(fd);
        return TW_ENOMEM;
    }
    t->ns = ns;
    t->r = ns->r;
    t->fd = fd;
    t->refs = 1;
    t->proto = f->protocol;
    t->flags = is_unix ? TF_UNIX : 0;
    t->high = TW__NET_HIGH;
    t->low = TW__NET_LOW;
    tw__wq_init(&t->q);
    tw__ring_init(&t->link);
    if (peer) {
        t->peer = *peer;
    } else {
        t->peer.len = sizeof t->peer.u;
        if (getpeername(fd, &t->peer.u.sa, &t->peer.len) != 0)
            t->peer.len = 0;
    }
    if (!is_unix && !(peer && TW__SOCK_ACCEPT_INHERITS_NODELAY)) {
        int one = 1; /* on by default */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    int rc = tw_reactor_add_reader(ns->r, fd, on_readable, t);
    if (rc) {
        close(fd);
        TW__DELETE(t);
        return rc;
    }
    t->flags |= TF_READING;
    void *ctx = f->arg;
    if (f->build && (rc = f->build(f->arg, &t->peer, &ctx)) != 0) {
        tw_reactor_remove_reader(ns->r, fd);
        close(fd);
        TW__DELETE(t);
        return rc;
    }
    t->ctx = ctx;
    tw__ring_push_back(&ns->transports, &t->link);
    *out = t;
    return 0;
}

void tw__transport_start(tw_transport *t)
{
    if (t->proto->connection_made)
        t->proto->connection_made(t->ctx, t);
}

/* ---- properties ----------------------------------------------------------------------- */

int tw_transport_local_address(const tw_transport *t, tw_address *out)
{
    if (!t || !out)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_local_address");
    if (t->state >= T_CLOSED)
        return TW_ENOTCONN;
    out->len = sizeof out->u;
    if (getsockname(t->fd, &out->u.sa, &out->len) != 0)
        return tw__from_errno(errno);
    return 0;
}

int tw_transport_peer_address(const tw_transport *t, tw_address *out)
{
    if (!t || !out)
        return TW_EINVAL;
    if (t->state != T_DEAD)
        CHECK(t, "tw_transport_peer_address");
    *out = t->peer;
    return 0;
}

static int set_opt(tw_transport *t, int level, int opt, bool on, const char *fn)
{
    if (!t)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, fn);
    (void)fn;
    if (t->state >= T_CLOSED)
        return TW_ENOTCONN;
    if (t->flags & TF_UNIX)
        return TW_ENOTSUP;
    int v = on;
    return setsockopt(t->fd, level, opt, &v, sizeof v) == 0 ? 0 : tw__from_errno(errno);
}

int tw_transport_set_nodelay(tw_transport *t, bool on)
{
    return set_opt(t, IPPROTO_TCP, TCP_NODELAY, on, "tw_transport_set_nodelay");
}

int tw_transport_set_keepalive(tw_transport *t, bool on)
{
    return set_opt(t, SOL_SOCKET, SO_KEEPALIVE, on, "tw_transport_set_keepalive");
}

int tw_transport_fileno(const tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    if (t->state == T_DEAD)
        return TW_ENOTCONN;
    CHECK(t, "tw_transport_fileno");
    return t->state >= T_CLOSED ? TW_ENOTCONN : t->fd;
}

bool tw_transport_connected(const tw_transport *t)
{
    if (!t || t->state == T_DEAD)
        return false;
    CHECK(t, "tw_transport_connected");
    return t->state == T_OPEN;
}

void *tw_transport_context(const tw_transport *t)
{
    if (!t)
        return NULL;
    if (t->state != T_DEAD)
        CHECK(t, "tw_transport_context");
    return t->ctx;
}

tw_reactor *tw_transport_reactor(const tw_transport *t)
{
    return t ? t->r : NULL;
}

/* ---- from other threads ------------------------------------------------------------------ */

typedef struct twrite {
    tw_call call;
    tw_transport *t;
    size_t len;
    char data[];
} twrite;

static void twrite_run(void *arg)
{
    twrite *w = arg;
    tw_transport *t = w->t;
    if (w->len && writable(t) == 0) { /* else it has closed: connection_lost told the protocol */
        tw__net *ns = t->ns;
        struct iovec v = {w->data, w->len};
        tw__net_enter(ns);
        /* Nobody is left to hear of a failure: bytes dropped while the
         * connection went on would be a hole in the stream, so it ends. */
        if (write_iov(t, &v, 1, w->len) != 0)
            finish(t, TW_ECONNLOST, "out of memory queueing a write from another thread", false);
        tw__net_leave(ns);
    }
    tw__free(w, sizeof *w + w->len);
    tw_transport_unref(t);
}

int tw_transport_write_from_thread(tw_transport *t, const void *data, size_t len)
{
    if (!t || (!data && len) || len > SIZE_MAX - sizeof(twrite))
        return TW_EINVAL;
    twrite *w = tw__alloc(sizeof *w + len);
    if (!w)
        return TW_ENOMEM;
    w->call = (tw_call)TW_CALL_INIT(twrite_run, w);
    w->t = tw_transport_ref(t);
    w->len = len;
    if (len)
        memcpy(w->data, data, len);
    int rc = tw_reactor_post(t->r, &w->call);
    if (rc) {
        tw_transport_unref(t);
        tw__free(w, sizeof *w + len);
    }
    return rc;
}
