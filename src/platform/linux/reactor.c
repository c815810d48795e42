/* Linux backend of the reactor: the epoll poller and the eventfd waker. */
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/alloc.h"
#include "reactor/reactor.h"

/* ---- waker: one eventfd, both ends -------------------------------------- */

int tw__waker_open(int *read_fd, int *write_fd)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return TW_ESYS;
    *read_fd = *write_fd = fd;
    return 0;
}

void tw__waker_close(int read_fd, int write_fd)
{
    (void)write_fd;
    close(read_fd);
}

void tw__waker_wake(int write_fd)
{
    uint64_t one = 1;
    int saved = errno;
    /* EAGAIN means the counter is at its maximum: it is readable anyway. */
    while (write(write_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    errno = saved;
}

void tw__waker_drain(int read_fd)
{
    uint64_t n;
    int saved = errno;
    while (read(read_fd, &n, sizeof n) < 0 && errno == EINTR)
        ;
    errno = saved;
}

/* ---- epoll ------------------------------------------------------------------ */

struct tw__poller {
    int epfd;
    struct epoll_event ev[TW__POLL_BATCH];
};

static int ep_create(tw__poller **out)
{
    tw__poller *p = TW__NEW(tw__poller);
    if (!p)
        return TW_ENOMEM;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        TW__DELETE(p);
        return TW_ESYS;
    }
    *out = p;
    return 0;
}

static void ep_destroy(tw__poller *p)
{
    close(p->epfd);
    TW__DELETE(p);
}

static int ep_set(tw__poller *p, int fd, unsigned old, unsigned events)
{
    struct epoll_event ev = {0};
    ev.events = (events & TW_READABLE ? EPOLLIN : 0u) | (events & TW_WRITABLE ? EPOLLOUT : 0u);
    ev.data.fd = fd;
    int op = !old ? EPOLL_CTL_ADD : !events ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    int saved = errno;
    int rc = epoll_ctl(p->epfd, op, fd, &ev);
    int err = errno;
    errno = saved;
    if (rc == 0)
        return 0;
    if (op == EPOLL_CTL_DEL && (err == EBADF || err == ENOENT))
        return 0; /* closed before it was removed: the kernel dropped it already */
    return err == ENOMEM || err == ENOSPC ? TW_ESYS : TW_EINVAL;
}

static int ep_wait(tw__poller *p, int timeout_ms, tw__poll_event *out, int max)
{
    if (max > TW__POLL_BATCH)
        max = TW__POLL_BATCH;
    int saved = errno;
    int n = epoll_wait(p->epfd, p->ev, max, timeout_ms);
    errno = saved;
    if (n < 0)
        return 0; /* EINTR: the caller loops */
    for (int i = 0; i < n; i++) {
        uint32_t e = p->ev[i].events;
        unsigned ev = 0;
        if (e & (EPOLLIN | EPOLLPRI | EPOLLRDHUP))
            ev |= TW_READABLE;
        if (e & EPOLLOUT)
            ev |= TW_WRITABLE;
        if (e & (EPOLLERR | EPOLLHUP))
            ev |= TW_READABLE | TW_WRITABLE;
        out[i].fd = p->ev[i].data.fd;
        out[i].events = ev;
    }
    return n;
}

static const tw__poller_ops epoll_ops = {"epoll", ep_create, ep_destroy, ep_set, ep_wait};

const tw__poller_ops *tw__poller_native(void)
{
    return &epoll_ops;
}
