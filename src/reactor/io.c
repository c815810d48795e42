/* fd watchers: a record per fd (reader, writer, what the poller has), in an
 * array indexed by fd. The waker's read end is registered like any fd but
 * handled here.
 *
 * Dispatch re-reads the record before each call, so a callback that removes
 * or replaces a watcher (its own or another fd's) in the same batch is
 * honoured: a removed watcher is not called. When an fd's last watcher goes,
 * the batch's events still to come for it are dropped too: the callback may
 * close the fd and a new one may get its number and a watcher, which must
 * not receive the old fd's events. */
#include <string.h>

#include "base/alloc.h"
#include "reactor/reactor.h"

int tw__io_init(tw_reactor *r, enum tw_poller which)
{
    const tw__poller_ops *ops;
    switch (which) {
    case TW_POLLER_DEFAULT:
        ops = tw__poller_native() ? tw__poller_native() : &tw__poller_poll;
        break;
    case TW_POLLER_EPOLL:
        ops = tw__poller_native();
        if (!ops)
            return TW_ENOTSUP;
        break;
    case TW_POLLER_POLL:
        ops = &tw__poller_poll;
        break;
    default:
        return TW_EINVAL;
    }
    int rc = ops->create(&r->poller);
    if (rc)
        return rc;
    r->pops = ops;
    rc = ops->set(r->poller, r->wake_rfd, 0, TW_READABLE);
    if (rc) {
        ops->destroy(r->poller);
        r->pops = NULL;
    }
    return rc;
}

void tw__io_destroy(tw_reactor *r)
{
    if (r->pops)
        r->pops->destroy(r->poller);
    tw__free(r->fds, r->nfds * sizeof *r->fds);
}

int tw__fd_table_cover(void **table, size_t *len, size_t elem, int fd, int fill)
{
    if ((size_t)fd < *len)
        return 0;
    size_t n = *len ? *len : 64;
    while (n <= (size_t)fd)
        n *= 2;
    char *a = tw__realloc(*table, *len * elem, n * elem);
    if (!a)
        return TW_ENOMEM;
    memset(a + *len * elem, fill, (n - *len) * elem);
    *table = a;
    *len = n;
    return 0;
}

static tw__fdrec *record(tw_reactor *r, int fd)
{
    void *t = r->fds;
    if (tw__fd_table_cover(&t, &r->nfds, sizeof *r->fds, fd, 0) != 0)
        return NULL;
    r->fds = t;
    return &r->fds[fd];
}

static int add(tw_reactor *r, int fd, unsigned which, tw_fd_fn fn, void *arg)
{
    if (fd < 0 || !fn || fd == r->wake_rfd)
        return TW_EINVAL;
    /* An fd that is not open is refused by the poller when it is first
     * watched (epoll_ctl's EBADF; the poll poller checks), not here: a
     * check of our own would cost every new connection a system call. */
    tw__fdrec *rec = record(r, fd);
    if (!rec)
        return TW_ENOMEM;
    unsigned want = rec->events | which;
    if (want != rec->events) {
        int rc = r->pops->set(r->poller, fd, rec->events, want);
        if (rc)
            return rc;
        r->nwatched += rec->events == 0;
        rec->events = want;
    }
    if (which == TW_READABLE) {
        rec->rfn = fn;
        rec->rarg = arg;
    } else {
        rec->wfn = fn;
        rec->warg = arg;
    }
    return 0;
}

static int remove_one(tw_reactor *r, int fd, unsigned which)
{
    if (fd < 0 || (size_t)fd >= r->nfds || !(r->fds[fd].events & which))
        return TW_EINVAL;
    tw__fdrec *rec = &r->fds[fd];
    unsigned want = rec->events & ~which;
    /* The fd may already be closed: the poller forgets it either way. */
    (void)r->pops->set(r->poller, fd, rec->events, want);
    r->nwatched -= want == 0;
    rec->events = want;
    if (want == 0)
        for (int i = r->ev_next; i < r->ev_end; i++)
            if (r->events[i].fd == fd)
                r->events[i].fd = -1;
    if (which == TW_READABLE) {
        rec->rfn = NULL;
        rec->rarg = NULL;
    } else {
        rec->wfn = NULL;
        rec->warg = NULL;
    }
    return 0;
}

int tw_reactor_add_reader(tw_reactor *r, int fd, tw_fd_fn fn, void *arg)
{
    if (!r)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_add_reader");
    return add(r, fd, TW_READABLE, fn, arg);
}

int tw_reactor_add_writer(tw_reactor *r, int fd, tw_fd_fn fn, void *arg)
{
    if (!r)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_add_writer");
    return add(r, fd, TW_WRITABLE, fn, arg);
}

int tw_reactor_remove_reader(tw_reactor *r, int fd)
{
    if (!r)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_remove_reader");
    return remove_one(r, fd, TW_READABLE);
}

int tw_reactor_remove_writer(tw_reactor *r, int fd)
{
    if (!r)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_remove_writer");
    return remove_one(r, fd, TW_WRITABLE);
}

void tw__io_poll(tw_reactor *r, int timeout_ms)
{
    int n = r->pops->wait(r->poller, timeout_ms, r->events, TW__POLL_BATCH);
    r->ev_end = n;
    for (int i = 0; i < n && r->state != R_DONE; i++) {
        int fd = r->events[i].fd;
        unsigned ev = r->events[i].events;
        r->ev_next = i; /* this event too: the reader may remove the fd's last watcher */
        if (fd < 0)
            continue; /* its last watcher was removed earlier in this batch */
        if (fd == r->wake_rfd) {
            tw__waker_drain(fd);
            continue;
        }
        if ((size_t)fd >= r->nfds)
            continue;
        /* Re-read the record before each call: an earlier callback may have
         * removed it. Readers first, as Twisted does. */
        if ((ev & TW_READABLE) && r->fds[fd].rfn)
            r->fds[fd].rfn(fd, ev, r->fds[fd].rarg);
        if ((ev & TW_WRITABLE) && r->events[i].fd == fd && r->fds[fd].wfn)
            r->fds[fd].wfn(fd, ev, r->fds[fd].warg);
    }
    r->ev_next = r->ev_end = 0;
}
