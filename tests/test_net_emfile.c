/*
 * A listener out of file descriptors (RLIMIT_NOFILE lowered, every
 * descriptor below it taken) stops watching its socket instead of spinning
 * on the connection it cannot accept, says so once through the diagnostic
 * hook, retries after 0.1 s, then 0.2 s, ..., and accepts again once a
 * descriptor is free. On the fake clock, so the back-off is exact; the loop
 * still polls the real socket.
 */
#define _GNU_SOURCE
#include "net_util.h"

#include <sys/resource.h>

#include "net/net.h"

static int setup(void **state)
{
    peers_reset();
    return net_setup(state);
}

static int teardown(void **state)
{
    peers_reset();
    return net_teardown(state);
}

static void test_emfile_backs_off(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(true);
    peer server = {0};
    tw_factory f = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &f);
    int client = raw_connect(AF_INET, net_port(l)); /* waits in the backlog */

    /* Every descriptor below a low limit taken. */
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int top = 0;
    for (int fd = 0; fd < 2048; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            top = fd;
    low = old;
    low.rlim_cur = (rlim_t)top + 8;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    static int fill[2048]; /* the holes below it too */
    int nfill = 0;
    for (int fd; nfill < 2048 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
        fill[nfill++] = fd;
    assert_int_equal(errno, EMFILE);

    tw_test_diag_reset();
    for (int i = 0; i < 5; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_int_equal(tw__listener_fd_shortages(l), 1);
    assert_true(tw__listener_backing_off(l));
    assert_int_equal(tw_test_diag_count(), 1);
    const tw_test_diag *d = tw_test_diag_at(0);
    assert_int_equal(d->kind, TW_DIAG_WARNING);
    assert_int_equal(d->code, TW_ESYS);
    assert_non_null(strstr(d->message, "127.0.0.1:"));
    assert_non_null(strstr(d->message, "0.1 s"));
    assert_non_null(strstr(d->message, strerror(EMFILE)));
    /* not watched: the pending connection does not wake the loop again */
    for (int i = 0; i < 50; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_int_equal(tw__listener_fd_shortages(l), 1);

    assert_rc(tw_reactor_advance(r, 0.099), 0);
    assert_true(tw__listener_backing_off(l));
    assert_rc(tw_reactor_advance(r, 0.001), 0); /* 0.1 s: watched again, fails again */
    for (int i = 0; i < 5; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_int_equal(tw__listener_fd_shortages(l), 2);
    assert_true(tw__listener_backing_off(l));
    assert_int_equal(tw_test_diag_count(), 1); /* once per shortage */

    close(fill[--nfill]); /* one descriptor free */
    assert_rc(tw_reactor_advance(r, 0.199), 0);
    for (int i = 0; i < 5; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_int_equal(net_npeers, 0); /* still backing off: 0.2 s this time */
    assert_rc(tw_reactor_advance(r, 0.001), 0);
    NET_RUN_UNTIL(r, net_npeers == 1 && net_peers[0].made == 1, 10);
    assert_int_equal(tw__listener_fd_shortages(l), 2);
    assert_false(tw__listener_backing_off(l));
    tw_test_diag_reset();

    while (nfill)
        close(fill[--nfill]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    close(client);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_emfile_backs_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
