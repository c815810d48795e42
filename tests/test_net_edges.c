/*
 * Edge cases of the net layer's lifetimes and state machines, each forced
 * deterministically on real loopback sockets: a listener stopped from the
 * connection_lost of a connection it has just accepted, a connect's Deferred
 * cancelled from inside connection_made.
 *
 * Every test runs under a scribbling allocator: twine's freed blocks are
 * overwritten before they go back to malloc, so a block read after it was
 * freed reads garbage and the test fails on any build, not only under
 * AddressSanitizer. The fixture also checks that no diagnostic was
 * reported, that no twine block is left and that no descriptor leaked.
 */
#define _GNU_SOURCE
#include "net_util.h"

/* ---- the scribbling allocator --------------------------------------------------------- */

/* Overwrites a block about to be freed; the barrier keeps the compiler from
 * dropping the stores as dead before free. */
static void scribble(void *p, size_t size)
{
    memset(p, 0xA5, size);
    __asm__ volatile("" : : "r"(p) : "memory");
}

static void *s_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void *s_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)ctx;
    void *p = malloc(new_size ? new_size : 1);
    if (!p)
        return NULL;
    if (ptr) {
        memcpy(p, ptr, old_size < new_size ? old_size : new_size);
        scribble(ptr, old_size);
        free(ptr);
    }
    return p;
}

static void s_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (ptr)
        scribble(ptr, size);
    free(ptr);
}

static const tw_allocator scribbling = {s_alloc, s_realloc, s_free, NULL};

static int setup(void **state)
{
    peers_reset();
    assert_rc(tw_set_allocator(&scribbling), 0);
    return net_setup(state);
}

static int teardown(void **state)
{
    peers_reset();
    int rc = net_teardown(state);
    if (tw_set_allocator(NULL) != 0)
        rc = -1;
    return rc;
}

/* ==== a listener stopped by the connection_lost of its own accept batch =============== */

static tw_listener *stop_in_lost;

static void abort_at_once(peer *p)
{
    assert_rc(tw_transport_abort_connection(p->t), 0);
}

static void stop_listener_lost(peer *p)
{
    (void)p;
    if (stop_in_lost) {
        assert_rc(tw_listener_stop(stop_in_lost, NULL), 0);
        stop_in_lost = NULL;
    }
}

/* connection_lost of a connection aborted in its connection_made is
 * delivered when the accept callback leaves the net layer, still inside the
 * accept batch: a listener stopped there is freed once, after the batch. */
static void test_stop_listener_from_connection_lost(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.tr = true, .on_made = abort_at_once, .on_lost = stop_listener_lost};
    tw_factory f = peer_factory(&server);
    stop_in_lost = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int fd = raw_connect(AF_INET, net_port(stop_in_lost));
    NET_RUN_UNTIL(r, stop_in_lost == NULL, 10);
    EXPECT_TRACE("made0 lost0:TW_ECONNABORTED");
    close(fd);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== a connect cancelled from inside connection_made ================================ */

static tw_deferred *cancel_me;

static void cancel_own_connect(peer *p)
{
    (void)p;
    tw_test_tr("cancel");
    assert_rc(tw_deferred_cancel(cancel_me), 0);
    tw_test_tr("returned");
}

/* The connection is up and connection_made runs, but the Deferred has not
 * fired yet: cancelling it then abandons the attempt as it says. The
 * Deferred fails with TW_ECANCELED, the connection is aborted (the protocol
 * gets connection_lost, after connection_made has returned) and the server
 * sees it end. */
static void test_cancel_connect_in_connection_made(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {0};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {.tr = true, .on_made = cancel_own_connect};
    tw_factory cf = peer_factory(&client);
    outcome o;
    net_connect(r, ep, &cf, &cancel_me, &o);
    NET_RUN_UNTIL(r, o.fired, 10);
    assert_int_equal(o.fired, 1);
    assert_int_equal(o.code, TW_ECANCELED);
    NET_RUN_UNTIL(r, peers_lost() == 2, 10);
    peer *c = net_peers[0].tr ? &net_peers[0] : &net_peers[1];
    assert_int_equal(c->lost_code, TW_ECONNABORTED);
    char want[128];
    snprintf(want, sizeof want, "made%d cancel returned lost%d:TW_ECONNABORTED", c->index,
             c->index);
    EXPECT_TRACE(want);
    tw_deferred_unref(cancel_me);
    cancel_me = NULL;
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== main ============================================================================= */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_stop_listener_from_connection_lost),
        T(test_cancel_connect_in_connection_made),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
