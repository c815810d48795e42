/*
 * net_server_twine — the twine server of the net suite.
 *
 *     net_server_twine echo            an echo server (as examples/echo_server.c)
 *     net_server_twine batch COUNT     writes COUNT 8-byte messages to its first
 *                                      connection as fast as flow control lets it,
 *                                      one tw_transport_write each, then exits
 *
 * Listens on 127.0.0.1, port chosen by the system, and prints "listening on
 * PORT". SIGTERM stops it. One thread: the reactor's pool is never used.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine.h>

static tw_reactor *r;
static long batch_count; /* 0: echo */

/* ---- echo: the connection is the producer of its own echo ----------------------- */

static void pause_reading(void *t)
{
    tw_transport_pause_reading(t);
}

static void resume_reading(void *t)
{
    tw_transport_resume_reading(t);
}

static const tw_producer reading = {pause_reading, resume_reading, NULL};

static void echo_made(void *ctx, tw_transport *t)
{
    (void)ctx;
    tw_transport_register_producer(t, &reading, t);
}

static void echo_data(void *ctx, tw_transport *t, const void *data, size_t len)
{
    (void)ctx;
    tw_transport_write(t, data, len);
}

static const tw_protocol echo = {echo_made, echo_data, NULL, NULL};

/* ---- batch ----------------------------------------------------------------------- */

static struct {
    tw_transport *t;
    long sent;
    bool paused;
} b;

static void produce(void)
{
    static const char msg[8] = "0123456\n";
    while (!b.paused && b.sent < batch_count) {
        tw_transport_write(b.t, msg, sizeof msg);
        b.sent++;
    }
    if (b.sent == batch_count && b.t) {
        tw_transport_unregister_producer(b.t);
        tw_transport_lose_connection(b.t);
        b.t = NULL;
    }
}

static void batch_pause(void *arg)
{
    (void)arg;
    b.paused = true;
}

static void batch_resume(void *arg)
{
    (void)arg;
    b.paused = false;
    produce();
}

static const tw_producer batch_producer = {batch_pause, batch_resume, NULL};

static void batch_made(void *ctx, tw_transport *t)
{
    (void)ctx;
    if (b.t || b.sent) {
        tw_transport_abort_connection(t); /* one batch per process */
        return;
    }
    b.t = t;
    tw_transport_register_producer(t, &batch_producer, NULL);
    produce();
}

static void batch_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)ctx;
    (void)t;
    (void)why;
    if (b.sent == batch_count)
        tw_reactor_stop(r);
}

static const tw_protocol batch = {batch_made, NULL, NULL, batch_lost};

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "echo") != 0 && (strcmp(argv[1], "batch") != 0 || argc < 3))) {
        fprintf(stderr, "usage: %s echo | batch COUNT\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "batch") == 0)
        batch_count = atol(argv[2]);
    if (tw_reactor_create(&r) != 0 || tw_reactor_handle_signals(r) != 0)
        return 1;
    tw_factory f = {batch_count ? &batch : &echo, NULL, NULL};
    tw_listener *l;
    tw_failure *why;
    if (tw_endpoint_listen(r, "tcp:0:interface=127.0.0.1", &f, &l, &why) != 0) {
        fprintf(stderr, "%s\n", tw_failure_message(why));
        return 1;
    }
    tw_address a;
    tw_listener_address(l, &a);
    printf("listening on %d\n", tw_address_port(&a));
    fflush(stdout);
    tw_reactor_run(r);
    tw_listener_stop(l, NULL);
    tw_reactor_destroy(r);
    return 0;
}
