/*
 * net_server_event — the libevent server of the net suite, on bufferevents.
 *
 *     net_server_event echo            the read callback moves the input buffer to
 *                                      the output buffer (evbuffer_add_buffer, no
 *                                      copy); reading stops while more than 64 KiB
 *                                      wait to be written
 *     net_server_event batch COUNT     COUNT 8-byte messages to the first
 *                                      connection, one bufferevent_write each, as
 *                                      fast as the output buffer allows (kept under
 *                                      64 KiB), then exits
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#define HIGH (64 * 1024)

static struct event_base *base;
static long batch_count, sent;
static struct bufferevent *bbev;

static void echo_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
    if (evbuffer_get_length(bufferevent_get_output(bev)) > HIGH)
        bufferevent_disable(bev, EV_READ);
}

static void echo_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_enable(bev, EV_READ); /* the output drained to the low watermark */
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        bufferevent_free(bev);
        if (bev == bbev)
            event_base_loopbreak(base);
    }
}

static void produce(struct bufferevent *bev)
{
    static const char msg[8] = "0123456\n";
    struct evbuffer *out = bufferevent_get_output(bev);
    while (sent < batch_count && evbuffer_get_length(out) <= HIGH) {
        bufferevent_write(bev, msg, sizeof msg);
        sent++;
    }
}

static void batch_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (sent < batch_count) {
        produce(bev);
    } else if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        bufferevent_free(bev); /* everything written: close */
        event_base_loopbreak(base);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (batch_count) {
        if (bbev) {
            bufferevent_free(bev);
            return;
        }
        bbev = bev;
        bufferevent_setcb(bev, NULL, batch_write, on_event, NULL);
        bufferevent_setwatermark(bev, EV_WRITE, HIGH / 4, 0);
        bufferevent_enable(bev, EV_WRITE);
        produce(bev);
    } else {
        bufferevent_setcb(bev, echo_read, echo_write, on_event, NULL);
        bufferevent_setwatermark(bev, EV_WRITE, HIGH / 4, 0);
        bufferevent_enable(bev, EV_READ | EV_WRITE);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "echo") != 0 && (strcmp(argv[1], "batch") != 0 || argc < 3))) {
        fprintf(stderr, "usage: %s echo | batch COUNT\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "batch") == 0)
        batch_count = atol(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    struct event *sig = evsignal_new(base, SIGTERM, on_signal, NULL);
    event_add(sig, NULL);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evconnlistener *l = evconnlistener_new_bind(
        base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
        (struct sockaddr *)&a, sizeof a);
    if (!l)
        return 1;
    socklen_t len = sizeof a;
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&a, &len);
    printf("listening on %d\n", ntohs(a.sin_port));
    fflush(stdout);
    event_base_dispatch(base);
    evconnlistener_free(l);
    event_free(sig);
    event_base_free(base);
    return 0;
}
