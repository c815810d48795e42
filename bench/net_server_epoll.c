/*
 * net_server_epoll — the floor of the net suite: a minimal echo server on
 * epoll, with nothing a library adds (no queue object, no callbacks, no
 * flow control beyond what a correct echo needs). What the kernel allows.
 *
 *     net_server_epoll echo
 *
 * Level-triggered; accepts until EAGAIN; per readable event one read into a
 * shared 64 KiB buffer and one write back. A connection whose write does not
 * take everything keeps the rest in a buffer of its own and stops reading
 * until it has drained (so memory stays bounded, as in the other servers).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
    int fd;
    char *pending; /* unsent bytes, or NULL */
    size_t plen, poff;
} conn;

static volatile sig_atomic_t stop;
static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static char buf[65536];

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "echo") != 0) {
        fprintf(stderr, "usage: %s echo\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1024) != 0)
        return 1;
    getsockname(l, (struct sockaddr *)&a, &len);
    printf("listening on %d\n", ntohs(a.sin_port));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->pending) { /* writable: drain, then read again */
                ssize_t k = send(c->fd, c->pending + c->poff, c->plen - c->poff, MSG_NOSIGNAL);
                if (k > 0)
                    c->poff += (size_t)k;
                if (k < 0 && errno != EAGAIN)
                    goto close_it;
                if (c->poff == c->plen) {
                    free(c->pending);
                    c->pending = NULL;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                }
                continue;
            }
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                goto close_it;
            if (r < 0)
                continue;
            ssize_t k = send(c->fd, buf, (size_t)r, MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN)
                goto close_it;
            if (k < r) {
                size_t sent = k > 0 ? (size_t)k : 0;
                c->plen = (size_t)r - sent;
                c->poff = 0;
                c->pending = malloc(c->plen);
                memcpy(c->pending, buf + sent, c->plen);
                struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
            }
            continue;
        close_it:
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            free(c->pending);
            free(c);
        }
    }
    return 0;
}
