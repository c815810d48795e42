/*
 * net_epoll_server.c — the net suite's floor: the least a server can do on
 * Linux for each workload, written by hand on epoll, so that what it costs is
 * (nearly) all the kernel's. Every other server is measured against it.
 *
 * One thread, level-triggered epoll, non-blocking sockets.
 *   pingpong, stream  one read of up to 64 KiB per readiness, written back at
 *                     once; what the socket does not take waits in the
 *                     connection's buffer, and the connection stops reading
 *                     (EPOLLOUT instead of EPOLLIN) until it is sent
 *   accept            accept4 until EAGAIN; each connection gets the greeting
 *                     with one write and is watched until the client resets it
 * TCP_NODELAY is set on the listening socket, from which Linux passes it on
 * to every accepted one (the other servers set it per connection, as their
 * libraries' users do, except twine's, which does the same as this one).
 *   write_batch       the protocol's messages are appended to one buffer
 *                     (an 8-byte copy each), which goes out in writes as
 *                     large as the socket takes: the best coalescing there is
 * SIGTERM arrives through a signalfd in the same epoll set.
 *
 * usage: net_epoll_server pingpong|stream|accept|write_batch PORT [COUNT]
 */
#define _GNU_SOURCE
#include "net_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO_BUF 65536

struct conn {
    size_t off, len;    /* bytes out[off..len) are still to be sent */
    unsigned char *out; /* echo: buf; write_batch: the coalesced messages */
    unsigned char buf[]; /* echo only */
};

static int ep, lfd, sfd;
static int workload;
static long batch_count;
static unsigned char *batch_msgs; /* the messages, from which the protocol copies each */
static struct conn **conns;       /* by fd */
static int conns_len;

static void die(const char *what)
{
    fprintf(stderr, "net_epoll_server: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void watch(int op, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) != 0)
        die("epoll_ctl");
}

static void conn_close(int fd)
{
    if (fd < conns_len && conns[fd]) {
        if (conns[fd]->out != conns[fd]->buf)
            free(conns[fd]->out);
        free(conns[fd]);
        conns[fd] = NULL;
    }
    close(fd); /* also leaves the epoll set: the fd is never duplicated */
}

/* Sends out[off..len). Returns 1 when all of it is sent, 0 when the socket is
 * full, -1 when the connection is gone. */
static int flush(int fd, struct conn *c)
{
    while (c->off < c->len) {
        ssize_t w = write(fd, c->out + c->off, c->len - c->off);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        c->off += (size_t)w;
    }
    return 1;
}

static struct conn *conn_new(int fd, size_t extra)
{
    struct conn *c = calloc(1, sizeof *c + extra);
    if (!c)
        die("calloc");
    if (fd >= conns_len) {
        int n = conns_len ? conns_len : 64;
        while (n <= fd)
            n *= 2;
        conns = realloc(conns, (size_t)n * sizeof *conns);
        if (!conns)
            die("realloc");
        memset(conns + conns_len, 0, (size_t)(n - conns_len) * sizeof *conns);
        conns_len = n;
    }
    conns[fd] = c;
    return c;
}

/* The protocol of write_batch: one write per message into the connection's
 * buffer, then as much as the socket takes. */
static void batch_start(int fd)
{
    struct conn *c = conn_new(fd, 0);
    size_t cap = 4096;
    long i;

    c->out = malloc(cap);
    if (!c->out)
        die("malloc");
    for (i = 0; i < batch_count; i++) {
        if (c->len + NET_BATCH_MSG > cap) {
            cap *= 2;
            c->out = realloc(c->out, cap);
            if (!c->out)
                die("realloc");
        }
        memcpy(c->out + c->len, batch_msgs + (size_t)i * NET_BATCH_MSG, NET_BATCH_MSG);
        c->len += NET_BATCH_MSG;
    }
    switch (flush(fd, c)) {
    case 1:
        conn_close(fd);
        break;
    case 0:
        watch(EPOLL_CTL_ADD, fd, EPOLLOUT);
        break;
    default:
        conn_close(fd);
    }
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == ECONNABORTED || errno == EINTR)
                return;
            die("accept4");
        }
        switch (workload) {
        case NET_ACCEPT:
            /* the socket is empty: an 8-byte write always goes in whole */
            if (write(fd, NET_GREETING, NET_GREETING_SIZE) != NET_GREETING_SIZE) {
                close(fd);
                continue;
            }
            watch(EPOLL_CTL_ADD, fd, EPOLLIN);
            break;
        case NET_WRITE_BATCH:
            batch_start(fd);
            break;
        default: {
            struct conn *c = conn_new(fd, ECHO_BUF);
            c->out = c->buf;
            watch(EPOLL_CTL_ADD, fd, EPOLLIN);
        }
        }
    }
}

/* A connection that has something left to send waits for EPOLLOUT and reads
 * nothing, so its client's close is seen only once all of it is sent. */
static void on_echo(int fd)
{
    struct conn *c = conns[fd];
    ssize_t n;

    if (c->off < c->len) {
        int r = flush(fd, c);
        if (r < 0) {
            conn_close(fd);
        } else if (r == 1) {
            c->off = c->len = 0;
            watch(EPOLL_CTL_MOD, fd, EPOLLIN);
        }
        return;
    }
    n = read(fd, c->buf, ECHO_BUF);
    if (n > 0) {
        c->off = 0;
        c->len = (size_t)n;
        switch (flush(fd, c)) {
        case 1:
            c->off = c->len = 0;
            break;
        case 0:
            watch(EPOLL_CTL_MOD, fd, EPOLLOUT);
            break;
        default:
            conn_close(fd);
        }
    } else if (n == 0 || errno != EAGAIN) {
        conn_close(fd);
    }
}

static void on_conn(int fd)
{
    char sink[64];

    switch (workload) {
    case NET_ACCEPT: {
        ssize_t n = read(fd, sink, sizeof sink);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            conn_close(fd); /* the client's reset, or its close */
        break;
    }
    case NET_WRITE_BATCH: {
        int r = flush(fd, conns[fd]);
        if (r != 0)
            conn_close(fd);
        break;
    }
    default:
        on_echo(fd);
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof sa;
    struct epoll_event evs[256];
    sigset_t mask;
    int port, one = 1, i, n;
    bool running = true;

    net_server_args(argc, argv, &workload, &port, &batch_count);
    if (workload == NET_WRITE_BATCH)
        batch_msgs = net_batch_alloc(batch_count);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
        die("sigprocmask");
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    ep = epoll_create1(EPOLL_CLOEXEC);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sfd < 0 || ep < 0 || lfd < 0)
        die("signalfd, epoll_create1 or socket");
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    /* Linux passes TCP_NODELAY on from the listening socket to the sockets
     * it accepts: set once here, it costs accepted connections nothing */
    if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, NET_BACKLOG) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0)
        die("listening");
    watch(EPOLL_CTL_ADD, lfd, EPOLLIN);
    watch(EPOLL_CTL_ADD, sfd, EPOLLIN);
    net_server_ready(ntohs(sa.sin_port));

    while (running) {
        n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd)
                on_accept();
            else if (fd == sfd)
                running = false;
            else
                on_conn(fd);
        }
    }
    for (i = 0; i < conns_len; i++)
        if (conns[i])
            conn_close(i);
    free(conns);
    free(batch_msgs);
    close(lfd);
    close(ep);
    close(sfd);
    return 0;
}
