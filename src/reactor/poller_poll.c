/* The portable poller: poll(2) over an array of pollfd, with a map from fd to
 * its slot so that changing an fd's interest is O(1). Removing swaps the last
 * slot into the hole. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>

#include "base/alloc.h"
#include "reactor/reactor.h"

struct tw__poller {
    struct pollfd *pfd;
    size_t n, cap;
    size_t next_scan; /* where the next scan of ready fds starts */
    int *slot; /* fd -> index in pfd, or -1 */
    size_t nslot;
};

static int pl_create(tw__poller **out)
{
    tw__poller *p = TW__NEW(tw__poller);
    if (!p)
        return TW_ENOMEM;
    *out = p;
    return 0;
}

static void pl_destroy(tw__poller *p)
{
    tw__free(p->pfd, p->cap * sizeof *p->pfd);
    tw__free(p->slot, p->nslot * sizeof *p->slot);
    TW__DELETE(p);
}

static int pl_set(tw__poller *p, int fd, unsigned old, unsigned events)
{
    (void)old;
    if (fd < 0)
        return TW_EINVAL;
    if ((size_t)fd >= p->nslot) {
        if (!events)
            return 0;
        void *t = p->slot;
        if (tw__fd_table_cover(&t, &p->nslot, sizeof *p->slot, fd, 0xff) != 0)
            return TW_ENOMEM; /* 0xff bytes: an int slot of -1, "not polled" */
        p->slot = t;
    }
    int i = p->slot[fd];
    short want = (short)((events & TW_READABLE ? POLLIN : 0) | (events & TW_WRITABLE ? POLLOUT : 0));
    if (!events) {
        if (i >= 0) {
            p->pfd[i] = p->pfd[--p->n];
            if ((size_t)i < p->n)
                p->slot[p->pfd[i].fd] = i;
            p->slot[fd] = -1;
        }
        return 0;
    }
    if (i < 0) {
        /* poll(2) would report a closed fd as POLLNVAL forever: refuse it
         * now, as epoll_ctl does. */
        int saved = errno;
        int open = fcntl(fd, F_GETFD);
        errno = saved;
        if (open < 0)
            return TW_EINVAL;
        if (p->n == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 16;
            struct pollfd *a = tw__realloc(p->pfd, p->cap * sizeof *a, cap * sizeof *a);
            if (!a)
                return TW_ENOMEM;
            p->pfd = a;
            p->cap = cap;
        }
        i = (int)p->n++;
        p->slot[fd] = i;
        p->pfd[i].fd = fd;
    }
    p->pfd[i].events = want;
    p->pfd[i].revents = 0;
    return 0;
}

static int pl_wait(tw__poller *p, int timeout_ms, tw__poll_event *out, int max)
{
    int saved = errno;
    int n = poll(p->pfd, (nfds_t)p->n, timeout_ms);
    errno = saved;
    if (n <= 0)
        return 0;
    /* Scan from where the last full batch stopped, so that with more ready
     * fds than fit in one batch none is starved. */
    int k = 0;
    size_t first = p->next_scan < p->n ? p->next_scan : 0;
    for (size_t j = 0; j < p->n && k < max; j++) {
        size_t i = (first + j) % p->n;
        short e = p->pfd[i].revents;
        if (!e)
            continue;
        unsigned ev = 0;
        if (e & POLLIN)
            ev |= TW_READABLE;
        if (e & POLLOUT)
            ev |= TW_WRITABLE;
        if (e & (POLLERR | POLLHUP | POLLNVAL))
            ev |= TW_READABLE | TW_WRITABLE;
        out[k].fd = p->pfd[i].fd;
        out[k].events = ev;
        if (++k == max)
            p->next_scan = i + 1; /* full: the next batch starts after this one */
    }
    return k;
}

const tw__poller_ops tw__poller_poll = {"poll", pl_create, pl_destroy, pl_set, pl_wait};
