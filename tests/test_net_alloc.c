/*
 * Allocation failure across the net layer. A test allocator fails exactly
 * the Nth allocation after it is armed; one exchange is run with N = 1, 2,
 * ... until it completes without the failure being hit. The exchange: listen,
 * connect, the client sends "hello", the server echoes it (queued, since it
 * writes inside its callback), the client closes on reading it, and a
 * lookup of a name runs in the pool meanwhile. Whatever allocation fails,
 * every call returns 0 or TW_ENOMEM (a listen's failure says so), every
 * connect Deferred fires, every connection made is lost exactly once, the
 * loop never hangs, and once the reactor is destroyed nothing is left
 * allocated.
 */
#include "net_util.h"

#include "net/net.h"

static struct {
    unsigned long fail_at, calls;
    int fired;
} F;

static void *f_alloc(void *ctx, size_t size)
{
    (void)ctx;
    unsigned long c = __atomic_add_fetch(&F.calls, 1, __ATOMIC_SEQ_CST);
    if (c == __atomic_load_n(&F.fail_at, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&F.fired, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    return malloc(size);
}

static void *f_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)old_size;
    if (!ptr)
        return f_alloc(ctx, new_size);
    return realloc(ptr, new_size);
}

static void f_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

static const tw_allocator failing = {f_alloc, f_realloc, f_free, NULL};

static void arm(unsigned long n)
{
    __atomic_store_n(&F.fail_at, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&F.calls, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&F.fired, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&F.fail_at, n, __ATOMIC_SEQ_CST);
}

static bool disarm(void)
{
    __atomic_store_n(&F.fail_at, 0, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&F.fired, __ATOMIC_SEQ_CST) != 0;
}

static int diags;
static void quiet(void *ctx, const tw_diag *d)
{
    (void)ctx;
    (void)d;
    __atomic_fetch_add(&diags, 1, __ATOMIC_SEQ_CST);
}

static int teardown(void **state)
{
    (void)state;
    disarm();
    tw_set_diag_hook(NULL, NULL);
    tw_set_allocator(NULL);
    return 0;
}

/* ---- the exchange's protocols --------------------------------------------------- */

typedef struct side {
    int made, lost, lost_code;
    size_t got;
} side;

static side server, client;

static void made(void *ctx, tw_transport *t)
{
    side *s = ctx;
    s->made++;
    if (s == &client && tw_transport_write(t, "hello", 5) != 0)
        tw_transport_abort_connection(t);
}

static void data(void *ctx, tw_transport *t, const void *d, size_t len)
{
    side *s = ctx;
    s->got += len;
    if (s == &server) {
        int rc = tw_transport_write(t, d, len);
        if (rc) {
            assert_int_equal(rc, TW_ENOMEM);
            tw_transport_abort_connection(t);
        }
    } else if (s->got >= 5) {
        tw_transport_lose_connection(t);
    }
}

static void lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)t;
    side *s = ctx;
    s->lost++;
    s->lost_code = tw_failure_code(why);
}

static const tw_protocol proto = {made, data, NULL, lost};

static tw_result lookup_done(tw_result r, void *arg)
{
    (*(int *)arg)++;
    tw_result_drop(r);
    return tw_result_none();
}

static int hold(const char *host)
{
    (void)host;
    return 0; /* "localhost": a real lookup of /etc/hosts */
}

static void test_net_alloc_failures(void **state)
{
    (void)state;
    tw_set_diag_hook(quiet, NULL);
    tw__resolver_hook = hold;
    assert_int_equal(tw_allocator_live(), 0);
    assert_rc(tw_set_allocator(&failing), 0);
    unsigned long n;
    int failures_seen = 0;
    for (n = 1; n < 400; n++) {
        memset(&server, 0, sizeof server);
        memset(&client, 0, sizeof client);
        tw_reactor *r;
        assert_rc(tw_reactor_create(&r), 0);
        tw_factory sf = {&proto, NULL, &server}, cf = {&proto, NULL, &client};
        tw_listener *l = NULL;
        tw_deferred *d = NULL, *lk = NULL;
        outcome o = {0};
        int lookups = 0;
        arm(n);
        tw_failure *why = NULL;
        int rc = tw_endpoint_listen(r, "tcp:0:interface=127.0.0.1", &sf, &l, &why);
        if (rc) {
            assert_int_equal(rc, TW_ENOMEM);
            assert_int_equal(tw_failure_code(why), TW_ENOMEM);
            tw_failure_unref(why);
        } else {
            char ep[64];
            snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", net_port(l));
            rc = tw_endpoint_connect(r, ep, &cf, &d);
            if (rc) {
                assert_int_equal(rc, TW_ENOMEM);
                d = NULL;
            } else if (tw_deferred_add_both(d, outcome_cb, &o) != 0) {
                o.fired = 1; /* could not watch it: the run still ends by connection_lost */
                o.code = TW_ENOMEM;
            }
            rc = tw_reactor_resolve(r, "localhost", 80, AF_INET, &lk);
            if (rc)
                assert_int_equal(rc, TW_ENOMEM);
            else if (tw_deferred_add_both(lk, lookup_done, &lookups) != 0)
                lookups = 1;
            /* done: the client's Deferred fired, and a client that was made is lost */
            NET_RUN_UNTIL(r, (!d || o.fired) && client.lost == client.made && (!lk || lookups),
                          20);
        }
        bool hit = disarm();
        failures_seen += hit;
        assert_true(client.lost == client.made && client.made <= 1);
        if (d)
            tw_deferred_unref(d);
        if (lk)
            tw_deferred_unref(lk);
        if (l)
            assert_rc(tw_listener_stop(l, NULL), 0);
        assert_rc(tw_reactor_destroy(r), 0);
        assert_true(server.lost == server.made && server.made <= 1);
        assert_int_equal(tw_allocator_live(), 0);
        if (!hit) {
            /* the whole exchange ran without hitting the failure: it worked */
            assert_int_equal(client.got, 5);
            assert_int_equal(client.lost_code, TW_ECONNDONE);
            break;
        }
    }
    assert_true(n < 400);
    assert_true(failures_seen > 10); /* it went through many allocations */
    printf("allocation failures: %d points of failure, each unwound cleanly\n", failures_seen);
    assert_rc(tw_set_allocator(NULL), 0);
    tw__resolver_hook = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_net_alloc_failures, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
