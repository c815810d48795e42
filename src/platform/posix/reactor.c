/* Portable backend of the reactor: a self-pipe waker; no native poller (the
 * reactor uses poll(2)). */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "reactor/reactor.h"

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

int tw__waker_open(int *read_fd, int *write_fd)
{
    int fds[2];
    int saved = errno;
    if (pipe(fds) != 0) {
        errno = saved;
        return TW_ESYS;
    }
    if (set_flags(fds[0]) || set_flags(fds[1])) {
        close(fds[0]);
        close(fds[1]);
        errno = saved;
        return TW_ESYS;
    }
    *read_fd = fds[0];
    *write_fd = fds[1];
    return 0;
}

void tw__waker_close(int read_fd, int write_fd)
{
    close(read_fd);
    close(write_fd);
}

void tw__waker_wake(int write_fd)
{
    char b = 1;
    int saved = errno;
    /* EAGAIN: the pipe is full, so it is readable already. */
    while (write(write_fd, &b, 1) < 0 && errno == EINTR)
        ;
    errno = saved;
}

void tw__waker_drain(int read_fd)
{
    char buf[256];
    int saved = errno;
    for (;;) {
        ssize_t n = read(read_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < (ssize_t)sizeof buf)
            break;
    }
    errno = saved;
}

const tw__poller_ops *tw__poller_native(void)
{
    return NULL;
}
