/*
 * Edge cases of the net layer's lifetimes and state machines, each forced
 * deterministically on real loopback sockets: a listener stopped from the
 * connection_lost of a connection it has just accepted.
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

/* ==== main ============================================================================= */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_stop_listener_from_connection_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
