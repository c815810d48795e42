/*
 * echo_server — a TCP (or Unix socket) echo server on twine's net layer.
 *
 *     echo_server ENDPOINT        e.g. tcp:0, tcp:7000:interface=127.0.0.1, unix:/tmp/echo.sock
 *
 * Prints "listening on PORT" (or the socket's path) on one line as soon as
 * it accepts, echoes every byte of every connection back, and exits 0 on
 * SIGTERM (or SIGINT) after closing its connections.
 *
 * What it shows:
 *  - a protocol is a table of callbacks; the factory makes one context per
 *    connection, which connection_lost frees;
 *  - flow control both ways: the connection is the producer of its own
 *    echo, so when the peer stops reading and the queue passes the
 *    high-water mark, the server stops reading too (and resumes when the
 *    queue drains): a client that never reads costs 64 KiB, not memory
 *    without bound;
 *  - half-close: when a client closes its sending side, the server sends
 *    what remains and then closes (the default when the protocol has no
 *    eof_received);
 *  - a graceful stop: a before-shutdown trigger stops listening, asks every
 *    connection to finish (lose_connection sends what is queued first) and
 *    makes the shutdown wait for them, at most 5 s, after which the
 *    reactor closes what is left.
 */
#include <stdio.h>
#include <stdlib.h>

#include <twine.h>

typedef struct conn {
    tw_transport *t;
    struct conn *prev, *next;
} conn;

static conn *conns;              /* open connections */
static tw_deferred *all_closed;  /* shutdown waits on it while connections remain */
static tw_listener *listener;

/* ---- the protocol ------------------------------------------------------------ */

static void pause_reading(void *arg)
{
    tw_transport_pause_reading(((conn *)arg)->t);
}

static void resume_reading(void *arg)
{
    tw_transport_resume_reading(((conn *)arg)->t);
}

static const tw_producer reading = {pause_reading, resume_reading, NULL};

static int build(void *arg, const tw_address *peer, void **ctx)
{
    (void)arg;
    (void)peer;
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return TW_ENOMEM; /* refused: the connection is closed */
    *ctx = c;
    return 0;
}

static void connection_made(void *ctx, tw_transport *t)
{
    conn *c = ctx;
    c->t = t;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    tw_transport_register_producer(t, &reading, c);
}

static void data_received(void *ctx, tw_transport *t, const void *data, size_t len)
{
    (void)ctx;
    tw_transport_write(t, data, len); /* queued and sent when this callback returns */
}

static void connection_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)t;
    (void)why;
    conn *c = ctx;
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c); /* nothing calls the protocol after this */
    if (!conns && all_closed) {
        tw_deferred *d = all_closed;
        all_closed = NULL;
        tw_deferred_callback(d, tw_result_none());
        tw_deferred_unref(d);
    }
}

static const tw_protocol echo = {
    .connection_made = connection_made,
    .data_received = data_received,
    .connection_lost = connection_lost,
};

/* ---- stopping --------------------------------------------------------------- */

static tw_result drain_after_timeout(tw_result r, void *arg)
{
    (void)arg;
    tw_result_drop(r); /* timed out: the reactor closes the rest */
    return tw_result_none();
}

static tw_result stop_gracefully(void *arg)
{
    tw_reactor *r = arg;
    tw_listener_stop(listener, NULL);
    listener = NULL;
    if (!conns)
        return tw_result_none();
    tw_deferred *d;
    if (tw_deferred_create(&d, NULL, NULL) != 0)
        return tw_result_none();
    all_closed = tw_deferred_ref(d);
    for (conn *c = conns; c; c = c->next)
        tw_transport_lose_connection(c->t);
    tw_deferred_add_timeout(d, 5.0, tw_reactor_clock(r), NULL, NULL);
    tw_deferred_add_errback(d, drain_after_timeout, NULL);
    return tw_result_deferred(d);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ENDPOINT   (tcp:PORT[:interface=ADDR], unix:PATH)\n", argv[0]);
        return 2;
    }
    tw_reactor *r;
    int rc = tw_reactor_create(&r);
    if (rc == 0)
        rc = tw_reactor_handle_signals(r);
    if (rc) {
        fprintf(stderr, "echo_server: %s\n", tw_strerror(rc));
        return 1;
    }
    tw_factory f = {&echo, build, NULL};
    tw_failure *why;
    rc = tw_endpoint_listen(r, argv[1], &f, &listener, &why);
    if (rc) {
        fprintf(stderr, "echo_server: %s\n", tw_failure_message(why));
        tw_failure_unref(why);
        tw_reactor_destroy(r);
        return 1;
    }
    tw_address a;
    tw_listener_address(listener, &a);
    if (tw_address_family(&a) == AF_UNIX)
        printf("listening on %s\n", a.u.un.sun_path);
    else
        printf("listening on %d\n", tw_address_port(&a));
    fflush(stdout);
    tw_reactor_add_trigger(r, TW_BEFORE_SHUTDOWN, stop_gracefully, r, NULL);
    rc = tw_reactor_run(r);
    if (listener) /* shutdown stopped it if stop_gracefully did not run */
        tw_listener_stop(listener, NULL);
    tw_reactor_destroy(r);
    return rc == 0 ? 0 : 1;
}
