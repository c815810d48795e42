/*
 * net_twine_server.c — the net suite's workloads served with twine's net
 * layer (include/twine/net.h), the way its header's example writes them.
 *
 *   pingpong, stream  data_received writes the bytes back with
 *                     tw_transport_write (queued, and sent when the callback
 *                     returns); when the client closes its side, the
 *                     transport sends what is left and closes (the default
 *                     without eof_received)
 *   accept            connection_made writes the greeting; the client's
 *                     reset ends the connection
 *   write_batch       connection_made calls tw_transport_write once per
 *                     8-byte message, then tw_transport_lose_connection
 * The listener is tw_reactor_listen on 127.0.0.1 with a backlog of
 * NET_BACKLOG; TCP_NODELAY is the transports' default (set on the listening
 * socket, which passes it on). SIGTERM: tw_reactor_handle_signals stops the
 * reactor, whose shutdown closes every connection. As in the other twine
 * benchmarks, the run is invalid (exit status 1, so the client rejects it)
 * if a write or close failed, if twine reported anything through the
 * diagnostic hook, or if a block twine allocated is still live once the
 * reactor is destroyed.
 *
 * usage: net_twine_server pingpong|stream|accept|write_batch PORT [COUNT]
 */
#include "net_common.h"

#include <twine.h>

static long batch_count;
static unsigned char *batch_msgs;
static long write_errors; /* a write that failed: reported at exit */
static long diag_reports; /* atomic: a report may come from a pool thread */

static void on_diag(void *ctx, const tw_diag *d)
{
    (void)ctx;
    if (__atomic_fetch_add(&diag_reports, 1, __ATOMIC_RELAXED) == 0)
        fprintf(stderr, "net_twine_server: twine reported (%d, %s) in %s: %s\n", (int)d->kind,
                tw_strerror(d->code), d->function ? d->function : "?",
                d->message ? d->message : "");
}

static void echo_received(void *ctx, tw_transport *t, const void *data, size_t len)
{
    (void)ctx;
    if (tw_transport_write(t, data, len) != 0)
        write_errors++;
}

static void greet(void *ctx, tw_transport *t)
{
    (void)ctx;
    if (tw_transport_write(t, NET_GREETING, NET_GREETING_SIZE) != 0)
        write_errors++;
}

static void batch_write(void *ctx, tw_transport *t)
{
    long i;

    (void)ctx;
    for (i = 0; i < batch_count; i++)
        if (tw_transport_write(t, batch_msgs + (size_t)i * NET_BATCH_MSG, NET_BATCH_MSG) != 0)
            write_errors++;
    if (tw_transport_lose_connection(t) != 0)
        write_errors++;
}

static const tw_protocol protocols[] = {
    [NET_PINGPONG] = {.data_received = echo_received},
    [NET_STREAM] = {.data_received = echo_received},
    [NET_ACCEPT] = {.connection_made = greet},
    [NET_WRITE_BATCH] = {.connection_made = batch_write},
};

static int fail(const char *what, int rc)
{
    fprintf(stderr, "net_twine_server: %s: %s\n", what, tw_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    tw_listen_options options = {.backlog = NET_BACKLOG};
    tw_factory factory = {NULL, NULL, NULL};
    tw_listener *listener;
    tw_failure *why;
    tw_address addr;
    tw_reactor *r;
    int workload, port, rc;
    size_t live0 = tw_allocator_live();

    net_server_args(argc, argv, &workload, &port, &batch_count);
    tw_set_diag_hook(on_diag, NULL);
    if (workload == NET_WRITE_BATCH)
        batch_msgs = net_batch_alloc(batch_count);
    factory.protocol = &protocols[workload];
    if ((rc = tw_reactor_create(&r)) != 0)
        return fail("tw_reactor_create", rc);
    if ((rc = tw_reactor_handle_signals(r)) != 0)
        return fail("tw_reactor_handle_signals", rc);
    if ((rc = tw_address_ip(&addr, "127.0.0.1", (uint16_t)port)) != 0)
        return fail("tw_address_ip", rc);
    if ((rc = tw_reactor_listen(r, &addr, &options, &factory, &listener, &why)) != 0) {
        fprintf(stderr, "net_twine_server: %s\n", tw_failure_message(why));
        return 1;
    }
    if ((rc = tw_listener_address(listener, &addr)) != 0)
        return fail("tw_listener_address", rc);
    net_server_ready(tw_address_port(&addr));
    if ((rc = tw_reactor_run(r)) != 0)
        return fail("tw_reactor_run", rc);
    tw_listener_stop(listener, NULL);
    if ((rc = tw_reactor_destroy(r)) != 0)
        return fail("tw_reactor_destroy", rc);
    free(batch_msgs);
    if (write_errors) {
        fprintf(stderr, "net_twine_server: %ld writes failed\n", write_errors);
        return 1;
    }
    if (__atomic_load_n(&diag_reports, __ATOMIC_RELAXED) != 0)
        return 1;
    if (tw_allocator_live() != live0) {
        fprintf(stderr, "net_twine_server: %zu twine blocks still allocated\n",
                tw_allocator_live() - live0);
        return 1;
    }
    return 0;
}
