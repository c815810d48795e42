/* The socket calls whose spelling differs between systems, in one place:
 * non-blocking close-on-exec sockets (SOCK_NONBLOCK / accept4 where the
 * system has them, fcntl otherwise) and sends that never raise SIGPIPE
 * (MSG_NOSIGNAL, or SO_NOSIGPIPE set when the socket is made). */
#define _GNU_SOURCE /* accept4, strerror_r */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "net/net.h"

#ifdef MSG_NOSIGNAL
#define SEND_FLAGS (MSG_NOSIGNAL | MSG_DONTWAIT)
#else
#define SEND_FLAGS MSG_DONTWAIT
#endif

static int setup_fd(int fd)
{
#ifndef SOCK_NONBLOCK
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
#endif
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) < 0)
        return -errno;
#endif
    (void)fd;
    return 0;
}

int tw__sock_open(int family)
{
#ifdef SOCK_NONBLOCK
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
#else
    int fd = socket(family, SOCK_STREAM, 0);
#endif
    if (fd < 0)
        return -errno;
    int rc = setup_fd(fd);
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

int tw__sock_accept(int lfd, tw_address *peer)
{
    socklen_t len = sizeof peer->u;
    int fd;
    do {
#ifdef SOCK_NONBLOCK
        fd = accept4(lfd, &peer->u.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
        fd = accept(lfd, &peer->u.sa, &len);
#endif
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    int rc = setup_fd(fd);
    if (rc) {
        close(fd);
        return rc;
    }
    peer->len = len;
    return fd;
}

ssize_t tw__sock_send(int fd, const struct iovec *iov, int n)
{
    ssize_t k;
    do {
        if (n == 1) {
            k = send(fd, iov[0].iov_base, iov[0].iov_len, SEND_FLAGS);
        } else {
            struct msghdr m;
            memset(&m, 0, sizeof m);
            m.msg_iov = (struct iovec *)iov;
            m.msg_iovlen = (size_t)n;
            k = sendmsg(fd, &m, SEND_FLAGS);
        }
    } while (k < 0 && errno == EINTR);
    return k < 0 ? -errno : k;
}

const char *tw__sock_strerror(int neg_errno, char *buf, size_t size)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(-neg_errno, buf, size);
#else
    if (strerror_r(-neg_errno, buf, size) != 0)
        snprintf(buf, size, "error %d", -neg_errno);
    return buf;
#endif
}
