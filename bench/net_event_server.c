/*
 * net_event_server.c — the net suite's workloads served with libevent's
 * bufferevents, the way its documentation's examples write them.
 *
 *   pingpong, stream  a socket bufferevent whose read callback moves the
 *                     whole input buffer to the output
 *                     (bufferevent_write_buffer, no copy); on EOF, the
 *                     connection is freed once its output has drained
 *   accept            an evconnlistener; the greeting with one
 *                     bufferevent_write; freed on the client's reset
 *   write_batch       one bufferevent_write per 8-byte message, then the
 *                     connection is freed once its output has drained
 * SIGTERM: an event breaks the loop; every connection is freed.
 *
 * usage: net_event_server pingpong|stream|accept|write_batch PORT [COUNT]
 */
#include "net_common.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

static struct event_base *base;
static int workload;
static long batch_count;
static unsigned char *batch_msgs;

/* Every open connection, so that SIGTERM can free them. */
struct conn {
    struct bufferevent *bev;
    struct conn *prev, *next;
};
static struct conn conns = {NULL, &conns, &conns};

static void oom(void)
{
    fprintf(stderr, "net_event_server: out of memory\n");
    exit(1);
}

static void conn_free(struct conn *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    bufferevent_free(c->bev); /* closes the socket (BEV_OPT_CLOSE_ON_FREE) */
    free(c);
}

/* The write callback of a connection that is to close: runs when its output
 * has drained (the low-water mark is 0). */
static void free_when_sent(struct bufferevent *bev, void *arg)
{
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(arg);
}

static void echo_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (bufferevent_write_buffer(bev, bufferevent_get_input(bev)) != 0)
        oom();
}

static void discard_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        /* the client closed its side: send what is left, then close */
        bufferevent_disable(bev, EV_READ);
        bufferevent_setcb(bev, NULL, free_when_sent, on_event, c);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    static const int one = 1;
    struct conn *c = malloc(sizeof *c);
    long i;

    (void)l;
    (void)sa;
    (void)salen;
    (void)arg;
    if (!c)
        oom();
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        perror("net_event_server: setsockopt(TCP_NODELAY)");
        exit(1);
    }
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev)
        oom();
    c->next = &conns;
    c->prev = conns.prev;
    conns.prev->next = c;
    conns.prev = c;
    switch (workload) {
    case NET_ACCEPT:
        bufferevent_setcb(c->bev, discard_read, NULL, on_event, c);
        if (bufferevent_write(c->bev, NET_GREETING, NET_GREETING_SIZE) != 0)
            oom();
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        break;
    case NET_WRITE_BATCH:
        bufferevent_setcb(c->bev, NULL, free_when_sent, on_event, c);
        for (i = 0; i < batch_count; i++)
            if (bufferevent_write(c->bev, batch_msgs + (size_t)i * NET_BATCH_MSG,
                                  NET_BATCH_MSG) != 0)
                oom();
        bufferevent_enable(c->bev, EV_WRITE);
        break;
    default:
        bufferevent_setcb(c->bev, echo_read, NULL, on_event, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    }
}

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof sa;
    struct evconnlistener *listener;
    struct event *term;
    int port;

    net_server_args(argc, argv, &workload, &port, &batch_count);
    signal(SIGPIPE, SIG_IGN);
    if (workload == NET_WRITE_BATCH)
        batch_msgs = net_batch_alloc(batch_count);
    base = event_base_new();
    if (!base)
        oom();
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    listener = evconnlistener_new_bind(base, on_accept, NULL,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                           LEV_OPT_CLOSE_ON_EXEC,
                                       NET_BACKLOG, (struct sockaddr *)&sa, sizeof sa);
    term = evsignal_new(base, SIGTERM, on_sigterm, NULL);
    if (!listener || !term || evsignal_add(term, NULL) != 0 ||
        getsockname(evconnlistener_get_fd(listener), (struct sockaddr *)&sa, &salen) != 0) {
        perror("net_event_server: listening");
        return 1;
    }
    net_server_ready(ntohs(sa.sin_port));
    if (event_base_dispatch(base) < 0) {
        fprintf(stderr, "net_event_server: event_base_dispatch failed\n");
        return 1;
    }
    while (conns.next != &conns)
        conn_free(conns.next);
    evconnlistener_free(listener);
    event_free(term);
    event_base_free(base);
    free(batch_msgs);
    return 0;
}
