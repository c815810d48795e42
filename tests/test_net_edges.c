/*
 * Edge cases of the net layer's lifetimes and state machines, each forced
 * deterministically on real loopback sockets: a listener stopped from the
 * connection_lost of a connection it has just accepted, a connect's Deferred
 * cancelled from inside connection_made or the factory's build, a connect
 * whose timeout passes as it connects, a paused producer on a transport
 * that is losing its connection, a write from another thread that the loop
 * cannot queue.
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

/* When non-zero, the allocation that brings it to zero fails. */
static unsigned long fail_in;
static bool failed;

static void *s_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (fail_in && --fail_in == 0) {
        failed = true;
        return NULL;
    }
    return malloc(size);
}

static void *s_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    void *p = s_alloc(ctx, new_size ? new_size : 1);
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
    fail_in = 0;
    failed = false;
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

/* The same from inside the factory's build function, before the transport
 * exists: the connection is still made (the context build returns is the
 * protocol's, and connection_lost is where the protocol frees it), then
 * aborted. */
static int cancel_in_build(void *arg, const tw_address *addr, void **ctx)
{
    tw_test_tr("build");
    assert_rc(tw_deferred_cancel(cancel_me), 0);
    return peer_build(arg, addr, ctx);
}

static void test_cancel_connect_in_build(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {0};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
    peer client = {.tr = true};
    tw_factory cf = {&peer_protocol, cancel_in_build, &client};
    outcome o;
    net_connect(r, ep, &cf, &cancel_me, &o);
    NET_RUN_UNTIL(r, o.fired, 10);
    assert_int_equal(o.fired, 1);
    assert_int_equal(o.code, TW_ECANCELED);
    NET_RUN_UNTIL(r, peers_lost() == 2, 10);
    peer *c = net_peers[0].tr ? &net_peers[0] : &net_peers[1];
    assert_int_equal(c->made, 1);
    assert_int_equal(c->lost_code, TW_ECONNABORTED);
    char want[128];
    snprintf(want, sizeof want, "build made%d lost%d:TW_ECONNABORTED", c->index, c->index);
    EXPECT_TRACE(want);
    tw_deferred_unref(cancel_me);
    cancel_me = NULL;
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== a connect's timeout at the moment it connects ==================================== */

/* On the fake clock: the connection is up in the kernel (the listener's
 * side completed the handshake) and its writable event is pending when the
 * timeout passes. The timer wins: the Deferred fails once with
 * TW_ETIMEDOUT, no protocol is made on the client's side, the socket is
 * closed (the server sees the end) and nothing is left. And once connected,
 * the timeout passing changes nothing. */
static void test_connect_timeout_as_it_connects(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(true);
    peer server = {.tr = true};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d:timeout=5", net_port(l));
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    assert_rc(tw_reactor_advance(r, 5), 0); /* before any iteration: the event waits */
    assert_int_equal(o.fired, 1);
    assert_int_equal(o.code, TW_ETIMEDOUT);
    NET_RUN_UNTIL(r, net_npeers == 1 && net_peers[0].lost == 1, 10);
    assert_int_equal(net_peers[0].lost_code, TW_ECONNDONE);
    tw_deferred_unref(d);

    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired, 10);
    assert_int_equal(o.code, 0);
    assert_rc(tw_reactor_advance(r, 10), 0);
    assert_int_equal(o.fired, 1);
    peer *c = o.value;
    assert_int_equal(c->lost, 0);
    assert_rc(tw_transport_lose_connection(c->t), 0);
    NET_RUN_UNTIL(r, peers_lost() == 3, 10);
    tw_deferred_unref(d);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== a paused producer and lose_connection ========================================== */

#define CHUNK 4096

static struct {
    tw_transport *t;
    unsigned char msg[CHUNK];
    size_t produced;
    bool paused;
    int pauses, resumes, stops, failed_writes;
} pp;

static void pp_produce(void)
{
    while (!pp.paused && pp.t) {
        net_fill(pp.msg, CHUNK, (uint32_t)(pp.produced / CHUNK));
        if (tw_transport_write(pp.t, pp.msg, CHUNK) != 0) {
            pp.failed_writes++;
            return;
        }
        pp.produced += CHUNK;
    }
}

static void pp_pause(void *arg)
{
    (void)arg;
    pp.paused = true;
    pp.pauses++;
}

static void pp_resume(void *arg)
{
    (void)arg;
    pp.paused = false;
    pp.resumes++;
    tw_test_tr("resume");
    pp_produce();
}

static void pp_stop(void *arg)
{
    (void)arg;
    pp.stops++;
    tw_test_tr("stop");
    pp.t = NULL;
}

static const tw_producer pp_producer = {pp_pause, pp_resume, pp_stop};

/* A connect to 127.0.0.1:port whose receive buffer (and so the window it
 * offers) is a few KiB: the sender's queue drains a little per read. */
static int connect_small_window(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int size = 4096;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size), 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    return fd;
}

static bool pp_close_write; /* close the write side instead of losing the connection */

/* Produces until paused, then loses the connection (or closes its write
 * side). A small send buffer: the kernel holds little of what the peer has
 * not taken. */
static void produce_then_lose(peer *p)
{
    int size = 4096;
    assert_int_equal(
        setsockopt(tw_transport_fileno(p->t), SOL_SOCKET, SO_SNDBUF, &size, sizeof size), 0);
    pp.t = p->t;
    assert_rc(tw_transport_register_producer(p->t, &pp_producer, NULL), 0);
    pp_produce();
    assert_true(pp.paused);
    if (pp_close_write)
        assert_rc(tw_transport_close_write(p->t), 0);
    else
        assert_rc(tw_transport_lose_connection(p->t), 0);
}

/* After lose_connection (or close_write) the transport takes no more
 * writes; draining its queue past the low-water mark must not resume the
 * producer (whose every write would fail), only send what was queued, close
 * (the write side), and stop the producer before connection_lost. */
static void paused_producer_and_closing(bool close_write)
{
    memset(&pp, 0, sizeof pp);
    pp_close_write = close_write;
    tw_reactor *r = net_reactor(false);
    peer server = {.tr = true, .on_made = produce_then_lose};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    int fd = connect_small_window(net_port(l));
    /* Read only once the producer is paused; then each read lets the
     * transport send a few KiB of its queue, which so passes the low-water
     * mark before it is empty. */
    NET_RUN_UNTIL(r, net_npeers == 1 && net_peers[0].made, 10);
    assert_true(pp.paused);
    size_t cap = pp.produced + 1;
    unsigned char *buf = malloc(cap);
    size_t len = 0;
    bool eof = false;
    NET_RUN_UNTIL(r, (raw_read(fd, buf, cap, &len, &eof), eof), 30);
    assert_int_equal(len, pp.produced);
    for (size_t off = 0; off < len; off += CHUNK) {
        net_fill(pp.msg, CHUNK, (uint32_t)(off / CHUNK));
        assert_memory_equal(buf + off, pp.msg, CHUNK);
    }
    if (close_write) { /* the server still reads: it ends when the client closes */
        assert_int_equal(pp.stops, 0);
        close(fd);
    }
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_int_equal(net_peers[0].lost_code, TW_ECONNDONE);
    assert_int_equal(pp.resumes, 0);
    assert_int_equal(pp.failed_writes, 0);
    assert_int_equal(pp.stops, 1);
    EXPECT_TRACE(close_write ? "made0 eof0 stop lost0:TW_ECONNDONE" : "made0 stop lost0:TW_ECONNDONE");
    free(buf);
    if (!close_write)
        close(fd);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

static void test_paused_producer_not_resumed_while_losing(void **state)
{
    (void)state;
    paused_producer_and_closing(false);
}

static void test_paused_producer_not_resumed_after_close_write(void **state)
{
    (void)state;
    paused_producer_and_closing(true);
}

/* ==== write_from_thread when the loop cannot queue the bytes ============================ */

/* A write handed over with tw_transport_write_from_thread that the loop
 * cannot queue (out of memory for a copy chunk) has nobody to return its
 * error to: dropping those bytes and going on would leave a hole in the
 * stream the peer reads. The connection ends instead (TW_ECONNLOST, saying
 * why), and no later write gets through. */
static void test_write_from_thread_out_of_memory(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.tr = true};
    tw_factory f = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int fd = raw_connect(AF_INET, net_port(l));
    NET_RUN_UNTIL(r, net_npeers == 1 && net_peers[0].made, 10);
    tw_transport *t = tw_transport_ref(net_peers[0].t);
    assert_rc(tw_transport_write_from_thread(t, "A", 1), 0);
    fail_in = 1; /* the loop's copy of "A" into a chunk */
    assert_rc(tw_reactor_iterate(r, 0), 0);
    assert_true(failed);
    assert_rc(tw_transport_write_from_thread(t, "B", 1), 0);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_int_equal(net_peers[0].lost_code, TW_ECONNLOST);
    assert_non_null(strstr(net_peers[0].lost_msg, "out of memory"));
    unsigned char buf[8];
    size_t len = 0;
    bool eof = false;
    NET_RUN_UNTIL(r, (raw_read(fd, buf, sizeof buf, &len, &eof), eof), 10);
    assert_int_equal(len, 0); /* neither byte: "B" never follows a lost "A" */
    tw_transport_unref(t);
    close(fd);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== write_owned chained from a drop function ========================================= */

/* libuv's users chain writes from the write callback; twine's nearest
 * equivalent is write_owned's drop function, called once the buffer is
 * sent. A drop that writes the next buffer (here a large one, which is sent
 * at once) must find the queue consistent: each buffer goes out once, in
 * order, and each drop runs exactly once. */
#define CHAIN_FIRST 1000
#define CHAIN_SECOND (32 * 1024)

static struct {
    tw_transport *t;
    unsigned char *first, *second;
    int first_drops, second_drops;
} chain;

static void drop_second(void *p)
{
    assert_ptr_equal(p, chain.second);
    chain.second_drops++;
}

static void drop_first(void *p)
{
    assert_ptr_equal(p, chain.first);
    chain.first_drops++;
    if (chain.first_drops == 1)
        assert_rc(tw_transport_write_owned(chain.t, chain.second, CHAIN_SECOND, drop_second), 0);
}

static void write_chain(peer *p)
{
    chain.t = p->t;
    assert_rc(tw_transport_write_owned(p->t, chain.first, CHAIN_FIRST, drop_first), 0);
}

static void test_write_owned_chained_from_drop(void **state)
{
    (void)state;
    memset(&chain, 0, sizeof chain);
    chain.first = malloc(CHAIN_FIRST);
    chain.second = malloc(CHAIN_SECOND);
    net_fill(chain.first, CHAIN_FIRST, 1);
    net_fill(chain.second, CHAIN_SECOND, 2);
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = write_chain};
    tw_factory f = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int fd = raw_connect(AF_INET, net_port(l));
    size_t want = CHAIN_FIRST + CHAIN_SECOND, cap = 2 * want, len = 0;
    unsigned char *buf = malloc(cap);
    bool eof = false;
    NET_RUN_UNTIL(r, chain.second_drops > 0 && (raw_read(fd, buf, cap, &len, &eof), len >= want),
                  10);
    for (int i = 0; i < 10; i++) { /* anything more would come at once */
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
        raw_read(fd, buf, cap, &len, &eof);
    }
    assert_int_equal(len, want);
    assert_memory_equal(buf, chain.first, CHAIN_FIRST);
    assert_memory_equal(buf + CHAIN_FIRST, chain.second, CHAIN_SECOND);
    assert_int_equal(chain.first_drops, 1);
    assert_int_equal(chain.second_drops, 1);
    close(fd);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    free(buf);
    free(chain.first);
    free(chain.second);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== endpoint strings: square brackets ================================================ */

/* Square brackets hold an IPv6 address whose colons are the address's
 * ("tcp:[::1]:80", "interface=[::1]"): only where an argument's value
 * starts, and never in a Unix socket's path, where '[' and ']' are plain
 * characters (and ':' still needs its backslash). */
static void test_endpoint_brackets_in_unix_paths(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    char dir[] = "/tmp/twine-net-XXXXXX";
    assert_non_null(mkdtemp(dir));
    peer server = {0};
    tw_factory f = peer_factory(&server);
    const char *names[] = {"a[1].sock", "[b", "c]", "[d:e].sock"};
    const char *written[] = {"a[1].sock", "[b", "c]", "[d\\:e].sock"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char ep[256], path[256];
        snprintf(ep, sizeof ep, "unix:%s/%s:mode=0600", dir, written[i]);
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        tw_listener *l = net_listen(r, ep, &f);
        tw_address a;
        assert_rc(tw_listener_address(l, &a), 0);
        assert_string_equal(a.u.un.sun_path, path);
        snprintf(ep, sizeof ep, "unix:%s/%s", dir, written[i]);
        tw_deferred *d;
        outcome o;
        net_connect(r, ep, &f, &d, &o);
        NET_RUN_UNTIL(r, o.fired, 10);
        assert_int_equal(o.code, 0);
        tw_transport_abort_connection(((peer *)o.value)->t);
        NET_RUN_UNTIL(r, peers_lost() == net_npeers && net_npeers == 2 * (int)(i + 1), 10);
        tw_deferred_unref(d);
        assert_rc(tw_listener_stop(l, NULL), 0);
    }
    /* In TCP's arguments they still hold an address. */
    tw_listener *l = net_listen(r, "tcp:0:interface=[127.0.0.1]", &f);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== main ============================================================================= */

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_stop_listener_from_connection_lost),
        T(test_cancel_connect_in_connection_made),
        T(test_cancel_connect_in_build),
        T(test_connect_timeout_as_it_connects),
        T(test_paused_producer_not_resumed_while_losing),
        T(test_paused_producer_not_resumed_after_close_write),
        T(test_write_from_thread_out_of_memory),
        T(test_write_owned_chained_from_drop),
        T(test_endpoint_brackets_in_unix_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
