/*
 * The net layer and threads: the resolver in the reactor's pool (numeric
 * names on the spot, real lookups of "localhost", failures, cancellation
 * while waiting, while queued in the pool and while running, and the limit
 * of half the pool's threads observed with a pool busy with other work),
 * connecting by name, the thread-safe write from pool threads (every byte,
 * each thread's order kept), and the TW_DEBUG report of a transport used
 * from another thread.
 *
 * Lookups that must block or fail use the resolver's test hook
 * (tw__resolver_hook), which runs on the pool thread in place of a name
 * server: no query leaves the machine. Blocking is released through gates
 * (pthread mutex and condition), never timed.
 */
#define _GNU_SOURCE
#include "net_util.h"

#include <arpa/inet.h>
#include <netdb.h>

#include "net/net.h"

static int setup(void **state)
{
    peers_reset();
    return net_setup(state);
}

static int teardown(void **state)
{
    tw__resolver_hook = NULL;
    peers_reset();
    return net_teardown(state);
}

/* ==== a gate: threads wait at it until the test opens it a number of times ==== */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int opened; /* passes granted */
    int passed;
} gate;

static gate lookup_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
static gate task_gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void gate_reset(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->opened = g->passed = 0;
    pthread_mutex_unlock(&g->mu);
}

static void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (g->passed >= g->opened)
        pthread_cond_wait(&g->cv, &g->mu);
    g->passed++;
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g, int n)
{
    pthread_mutex_lock(&g->mu);
    g->opened += n;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ==== the hook: names starting with "slow" wait at the lookup gate, then
 * fail as unknown; "missing..." names fail at once; others are looked up ==== */

static tw_test_tally entered;
static pthread_mutex_t names_mu = PTHREAD_MUTEX_INITIALIZER;
static char entered_names[16][32];
static int nentered;

static int hook(const char *host)
{
    if (strncmp(host, "missing", 7) == 0)
        return EAI_NONAME;
    if (strncmp(host, "slow", 4) != 0)
        return 0;
    pthread_mutex_lock(&names_mu);
    if (nentered < 16)
        snprintf(entered_names[nentered++], 32, "%s", host);
    pthread_mutex_unlock(&names_mu);
    tw_test_tally_add(&entered);
    gate_pass(&lookup_gate);
    return EAI_NONAME;
}

static void hook_install(void)
{
    tw_test_tally_init(&entered);
    gate_reset(&lookup_gate);
    gate_reset(&task_gate);
    nentered = 0;
    tw__resolver_hook = hook;
}

static bool was_entered(const char *name)
{
    bool found = false;
    pthread_mutex_lock(&names_mu);
    for (int i = 0; i < nentered; i++)
        found |= strcmp(entered_names[i], name) == 0;
    pthread_mutex_unlock(&names_mu);
    return found;
}

static tw_reactor *pool_reactor(size_t pool_max)
{
    tw_reactor_config cfg = TW_REACTOR_CONFIG_INIT;
    cfg.pool_max = pool_max;
    tw_reactor *r;
    assert_rc(tw_reactor_create_with(&cfg, &r), 0);
    return r;
}

static tw_deferred *resolve(tw_reactor *r, const char *host, outcome *o)
{
    tw_deferred *d;
    assert_rc(tw_reactor_resolve(r, host, 80, AF_UNSPEC, &d), 0);
    net_watch(d, o);
    return d;
}

/* ==== the resolver ========================================================== */

static void test_resolve_numeric_skips_the_pool(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    outcome o;
    tw_deferred *d = resolve(r, "127.0.0.1", &o);
    assert_int_equal(o.fired, 1); /* at once: no thread */
    assert_int_equal(o.code, 0);
    tw_address_list *l = o.value;
    assert_int_equal(l->count, 1);
    char buf[TW_ADDRESS_STRLEN];
    tw_address_format(&l->items[0], buf, sizeof buf);
    assert_string_equal(buf, "127.0.0.1:80");
    tw_deferred_unref(d);
    d = resolve(r, "[::1]", &o);
    assert_int_equal(o.code, 0);
    tw_deferred_unref(d);
    tw_deferred *d6;
    assert_rc(tw_reactor_resolve(r, "::1", 80, AF_INET, &d6), 0);
    net_watch(d6, &o);
    assert_int_equal(o.code, TW_ENOTFOUND);
    assert_non_null(strstr(o.msg, "not an IPv4 address"));
    tw_deferred_unref(d6);
    tw_pool_stats st;
    tw_pool *p;
    assert_rc(tw_reactor_get_thread_pool(r, &p), 0);
    assert_rc(tw_pool_stats_get(p, &st), 0);
    assert_int_equal(st.threads, 0); /* no lookup ever reached the pool */
    /* bad arguments */
    assert_rc(tw_reactor_resolve(r, "", 80, AF_UNSPEC, &d), TW_EINVAL);
    assert_rc(tw_reactor_resolve(r, NULL, 80, AF_UNSPEC, &d), TW_EINVAL);
    assert_rc(tw_reactor_resolve(r, "x", 80, AF_UNIX, &d), TW_EINVAL);
    assert_rc(tw_reactor_destroy(r), 0);
}

static void test_resolve_localhost(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    outcome o;
    tw_deferred *d;
    assert_rc(tw_reactor_resolve(r, "localhost", 8080, AF_INET, &d), 0);
    net_watch(d, &o);
    NET_RUN_UNTIL(r, o.fired, 30);
    if (o.code != 0)
        fail_msg("looking up localhost: %s", o.msg);
    tw_address_list *l = o.value;
    assert_true(l->count >= 1);
    bool loopback = false;
    for (size_t i = 0; i < l->count; i++) {
        assert_int_equal(tw_address_family(&l->items[i]), AF_INET);
        assert_int_equal(tw_address_port(&l->items[i]), 8080);
        loopback |= ntohl(l->items[i].u.in.sin_addr.s_addr) >> 24 == 127;
    }
    assert_true(loopback);
    tw_deferred_unref(d);
    assert_rc(tw_reactor_destroy(r), 0);
}

static void test_resolve_not_found(void **state)
{
    (void)state;
    hook_install();
    tw_reactor *r = net_reactor(false);
    outcome o;
    tw_deferred *d = resolve(r, "missing.example", &o);
    NET_RUN_UNTIL(r, o.fired, 30);
    assert_int_equal(o.code, TW_ENOTFOUND);
    assert_non_null(strstr(o.msg, "looking up missing.example"));
    tw_deferred_unref(d);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* Blocks a pool thread until the task gate opens: other thread work. */
static tw_test_tally other_started;
static tw_result other_work(void *arg, tw_cancel *cancel)
{
    (void)arg;
    (void)cancel;
    tw_test_tally_add(&other_started);
    gate_pass(&task_gate);
    return tw_result_none();
}

/* A pool of 4: lookups take at most 2 of its threads, whatever the number
 * waiting, and the other 2 stay free for other work, which starts at once. */
static void test_resolve_half_the_pool(void **state)
{
    (void)state;
    hook_install();
    tw_test_tally_init(&other_started);
    tw_reactor *r = pool_reactor(4);
    outcome o[5];
    tw_deferred *d[5];
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "slow%d", i);
        d[i] = resolve(r, name, &o[i]);
    }
    NET_RUN_UNTIL(r, tw_test_tally_get(&entered) == 2, 30);
    assert_int_equal(tw__resolver_in_pool(r), 2);
    assert_true(was_entered("slow0") && was_entered("slow1")); /* in order */
    /* other work is not starved: two tasks start on the two threads left */
    tw_deferred *w[2];
    outcome wo[2];
    for (int i = 0; i < 2; i++) {
        assert_rc(tw_defer_to_thread(r, other_work, NULL, &w[i]), 0);
        net_watch(w[i], &wo[i]);
    }
    NET_RUN_UNTIL(r, tw_test_tally_get(&other_started) == 2, 30);
    tw_pool *p;
    tw_pool_stats st;
    assert_rc(tw_reactor_get_thread_pool(r, &p), 0);
    assert_rc(tw_pool_stats_get(p, &st), 0);
    assert_int_equal(st.team.busy, 4);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_int_equal(tw_test_tally_get(&entered), 2); /* the other three still wait */
    assert_int_equal(tw__resolver_in_pool(r), 2);
    /* one answer back: the next lookup, in order, takes its place */
    gate_open(&lookup_gate, 1);
    NET_RUN_UNTIL(r, tw_test_tally_get(&entered) == 3, 30);
    assert_true(was_entered("slow2"));
    assert_int_equal(tw__resolver_in_pool(r), 2);
    assert_int_equal(o[0].fired + o[1].fired, 1);
    gate_open(&lookup_gate, 4);
    gate_open(&task_gate, 2);
    NET_RUN_UNTIL(r, o[0].fired + o[1].fired + o[2].fired + o[3].fired + o[4].fired == 5, 30);
    NET_RUN_UNTIL(r, wo[0].fired + wo[1].fired == 2, 30);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(o[i].code, TW_ENOTFOUND);
        tw_deferred_unref(d[i]);
    }
    assert_int_equal(tw__resolver_in_pool(r), 0);
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(w[i]);
    assert_rc(tw_reactor_destroy(r), 0);
    tw_test_tally_destroy(&other_started);
    tw_test_tally_destroy(&entered);
}

/* A pool of 2: one lookup at a time. Cancelling a lookup that waits its
 * turn removes it (it never runs); cancelling the running one fails it at
 * once while its thread, still in getaddrinfo, keeps its place until the
 * answer is back (and dropped). */
static void test_resolve_cancel(void **state)
{
    (void)state;
    hook_install();
    tw_reactor *r = pool_reactor(2);
    outcome oa, ob, oc;
    tw_deferred *a = resolve(r, "slowA", &oa);
    tw_deferred *b = resolve(r, "slowB", &ob);
    NET_RUN_UNTIL(r, tw_test_tally_get(&entered) == 1, 30);
    assert_int_equal(tw__resolver_in_pool(r), 1);
    assert_rc(tw_deferred_cancel(b), 0); /* waiting */
    assert_int_equal(ob.fired, 1);
    assert_int_equal(ob.code, TW_ECANCELED);
    assert_non_null(strstr(ob.msg, "looking up slowB: cancelled"));
    assert_rc(tw_deferred_cancel(a), 0); /* running */
    assert_int_equal(oa.fired, 1);
    assert_int_equal(oa.code, TW_ECANCELED);
    tw_deferred *c = resolve(r, "slowC", &oc);
    for (int i = 0; i < 10; i++)
        assert_rc(tw_reactor_iterate(r, 0.001), 0);
    assert_int_equal(tw__resolver_in_pool(r), 1); /* A's thread is still busy */
    assert_int_equal(tw_test_tally_get(&entered), 1);
    gate_open(&lookup_gate, 1); /* A's getaddrinfo returns: its answer is dropped */
    NET_RUN_UNTIL(r, tw_test_tally_get(&entered) == 2, 30);
    assert_true(was_entered("slowC"));
    assert_false(was_entered("slowB"));
    assert_int_equal(oa.fired, 1);
    gate_open(&lookup_gate, 1);
    NET_RUN_UNTIL(r, oc.fired, 30);
    assert_int_equal(oc.code, TW_ENOTFOUND);
    assert_int_equal(tw__resolver_in_pool(r), 0);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_deferred_unref(c);
    assert_rc(tw_reactor_destroy(r), 0);
    tw_test_tally_destroy(&entered);
}

/* Handed to the pool but queued there behind other work: a cancel wins the
 * race with the thread that would start it, and getaddrinfo never runs. */
static void test_resolve_cancel_queued_in_pool(void **state)
{
    (void)state;
    hook_install();
    tw_test_tally_init(&other_started);
    tw_reactor *r = pool_reactor(2);
    tw_deferred *w[2];
    outcome wo[2];
    for (int i = 0; i < 2; i++) {
        assert_rc(tw_defer_to_thread(r, other_work, NULL, &w[i]), 0);
        net_watch(w[i], &wo[i]);
    }
    NET_RUN_UNTIL(r, tw_test_tally_get(&other_started) == 2, 30);
    outcome o;
    tw_deferred *d = resolve(r, "slowQ", &o);
    assert_int_equal(tw__resolver_in_pool(r), 1); /* handed over, no thread free */
    assert_rc(tw_deferred_cancel(d), 0);
    assert_int_equal(o.code, TW_ECANCELED);
    gate_open(&task_gate, 2);
    NET_RUN_UNTIL(r, wo[0].fired + wo[1].fired == 2 && tw__resolver_in_pool(r) == 0, 30);
    assert_int_equal(tw_test_tally_get(&entered), 0); /* it never ran */
    tw_deferred_unref(d);
    for (int i = 0; i < 2; i++)
        tw_deferred_unref(w[i]);
    assert_rc(tw_reactor_destroy(r), 0);
    tw_test_tally_destroy(&other_started);
    tw_test_tally_destroy(&entered);
}

/* Shutdown with lookups waiting and running: all fail with TW_ESHUTDOWN.
 * The test's own during-shutdown trigger, added after the net layer's, lets
 * the running lookup's thread go, so that the pool's stop can end. */
static tw_result open_lookup_gate(void *arg)
{
    (void)arg;
    gate_open(&lookup_gate, 8);
    return tw_result_none();
}

static void test_resolve_shutdown(void **state)
{
    (void)state;
    hook_install();
    tw_reactor *r = pool_reactor(2);
    outcome o1, o2;
    tw_deferred *d1 = resolve(r, "slow1", &o1);
    tw_deferred *d2 = resolve(r, "slow2", &o2);
    NET_RUN_UNTIL(r, tw_test_tally_get(&entered) == 1, 30);
    assert_rc(tw_reactor_add_trigger(r, TW_DURING_SHUTDOWN, open_lookup_gate, NULL, NULL), 0);
    assert_rc(tw_reactor_stop(r), 0);
    assert_rc(tw_reactor_run(r), 0);
    assert_int_equal(o1.code, TW_ESHUTDOWN);
    assert_non_null(strstr(o1.msg, "looking up slow1: the reactor is shutting down"));
    assert_int_equal(o2.code, TW_ESHUTDOWN);
    assert_false(was_entered("slow2"));
    tw_deferred_unref(d1);
    tw_deferred_unref(d2);
    assert_rc(tw_reactor_destroy(r), 0);
    tw_test_tally_destroy(&entered);
}

/* ==== connecting by name ================================================================ */

static void test_connect_by_name(void **state)
{
    (void)state;
    hook_install();
    tw_reactor *r = net_reactor(false);
    peer server = {0};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    peer client = {0};
    tw_factory cf = peer_factory(&client);
    char ep[80];
    /* localhost may give ::1 first, where nobody listens: the next address is tried */
    snprintf(ep, sizeof ep, "tcp:localhost:%d", net_port(l));
    tw_deferred *d;
    outcome o;
    net_connect(r, ep, &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired, 30);
    if (o.code != 0)
        fail_msg("%s: %s", ep, o.msg);
    peer *c = o.value;
    assert_rc(tw_transport_lose_connection(c->t), 0);
    NET_RUN_UNTIL(r, peers_lost() == 2, 10);
    tw_deferred_unref(d);
    /* a name nobody knows */
    net_connect(r, "tcp:missing.example:80", &cf, &d, &o);
    NET_RUN_UNTIL(r, o.fired, 30);
    assert_int_equal(o.code, TW_ENOTFOUND);
    assert_non_null(strstr(o.msg, "missing.example"));
    tw_deferred_unref(d);
    /* cancelled while the name is looked up */
    net_connect(r, "tcp:slowhost:80", &cf, &d, &o);
    NET_RUN_UNTIL(r, tw_test_tally_get(&entered) == 1, 30);
    assert_rc(tw_deferred_cancel(d), 0);
    assert_int_equal(o.code, TW_ECANCELED);
    assert_non_null(strstr(o.msg, "connecting to slowhost: cancelled"));
    tw_deferred_unref(d);
    gate_open(&lookup_gate, 1);
    NET_RUN_UNTIL(r, tw__resolver_in_pool(r) == 0, 30);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
    tw_test_tally_destroy(&entered);
}

/* ==== writing from pool threads ========================================================== */

#define WRITERS 4
typedef struct writer_job {
    tw_transport *t; /* a reference of the job's */
    int id, count;
} writer_job;

static writer_job jobs[WRITERS];
static tw_reactor *job_reactor;

static int write_lines(void *arg)
{
    writer_job *j = arg;
    char line[32];
    for (int i = 0; i < j->count; i++) {
        int n = snprintf(line, sizeof line, "%d:%d\n", j->id, i);
        assert_rc(tw_transport_write_from_thread(j->t, line, (size_t)n), 0);
    }
    tw_transport_unref(j->t);
    return 0;
}

static void hand_to_threads(peer *p)
{
    for (int k = 0; k < WRITERS; k++) {
        jobs[k].t = tw_transport_ref(p->t);
        jobs[k].id = k;
        jobs[k].count = 500;
        assert_rc(tw_reactor_call_in_thread(job_reactor, write_lines, &jobs[k]), 0);
    }
}

static void test_write_from_threads(void **state)
{
    (void)state;
    tw_reactor *r = job_reactor = net_reactor(false);
    peer server = {.on_made = hand_to_threads};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    int fd = raw_connect(AF_INET, net_port(l));
    static unsigned char buf[1 << 16];
    size_t len = 0, want = 0;
    for (int k = 0; k < WRITERS; k++)
        for (int i = 0; i < 500; i++)
            want += (size_t)snprintf(NULL, 0, "%d:%d\n", k, i);
    bool eof = false;
    NET_RUN_UNTIL(r, (raw_read(fd, buf, sizeof buf, &len, &eof), len >= want), 30);
    assert_int_equal(len, want);
    int next[WRITERS] = {0};
    for (char *s = (char *)buf; s < (char *)buf + len;) {
        int k, i;
        assert_int_equal(sscanf(s, "%d:%d", &k, &i), 2);
        assert_true(k >= 0 && k < WRITERS);
        assert_int_equal(i, next[k]); /* each thread's order */
        next[k]++;
        s = strchr(s, '\n') + 1;
    }
    for (int k = 0; k < WRITERS; k++)
        assert_int_equal(next[k], 500);
    close(fd);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
}

/* ==== TW_DEBUG: a transport used from another thread ====================================== */

static tw_transport *shared;
static int misuse_rc, safe_rc, diags_after_safe;

static void share(peer *p)
{
    shared = tw_transport_ref(p->t);
}

static void *wrong_thread(void *arg)
{
    (void)arg;
    safe_rc = tw_transport_write_from_thread(shared, "B", 1); /* the right way: no report */
    diags_after_safe = tw_test_diag_count();
    misuse_rc = tw_transport_write(shared, "A", 1); /* seed 001's trap */
    return NULL;
}

static void test_debug_wrong_thread_write(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = share};
    tw_factory sf = peer_factory(&server);
    tw_listener *l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    int fd = raw_connect(AF_INET, net_port(l));
    NET_RUN_UNTIL(r, shared != NULL, 10);
    tw_test_diag_reset();
    tw_test_join(tw_test_start(wrong_thread, NULL)); /* the loop is not running meanwhile */
    int n = tw_test_diag_count();
    tw_test_diag rec = {0};
    if (n > 0)
        rec = *tw_test_diag_at(0);
    tw_test_diag_reset();
    assert_rc(safe_rc, 0);
    assert_int_equal(diags_after_safe, 0);
    assert_rc(misuse_rc, 0);
    unsigned char buf[4];
    size_t len = 0;
    bool eof = false;
    NET_RUN_UNTIL(r, (raw_read(fd, buf, sizeof buf, &len, &eof), len == 2), 10);
    assert_memory_equal(buf, "AB", 2); /* the misuse wrote at once, the safe one on the loop */
    tw_transport_unref(shared);
    shared = NULL;
    close(fd);
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    assert_rc(tw_listener_stop(l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
    tw_test_require_debug_report(n, "tw_transport_write");
    assert_int_equal(n, 1);
    assert_int_equal(rec.kind, TW_DIAG_MISUSE);
    assert_string_equal(rec.function, "tw_transport_write");
    assert_non_null(strstr(rec.message, "a transport"));
}

static tw_reactor *dbg_r;
static tw_listener *dbg_l;
static void *wrong_thread_listen(void *arg)
{
    (void)arg;
    peer tmpl = {0};
    tw_factory f = peer_factory(&tmpl);
    tw_failure *why;
    assert_rc(tw_endpoint_listen(dbg_r, "tcp:0:interface=127.0.0.1", &f, &dbg_l, &why), 0);
    return NULL;
}

static void test_debug_wrong_thread_listen(void **state)
{
    (void)state;
    dbg_r = net_reactor(false);
    tw_test_diag_reset();
    tw_test_join(tw_test_start(wrong_thread_listen, NULL));
    int n = tw_test_diag_count();
    tw_test_diag rec = {0};
    if (n > 0)
        rec = *tw_test_diag_at(0);
    tw_test_diag_reset();
    assert_rc(tw_listener_stop(dbg_l, NULL), 0);
    assert_rc(tw_reactor_destroy(dbg_r), 0);
    tw_test_require_debug_report(n, "tw_endpoint_listen");
    assert_string_equal(rec.function, "tw_endpoint_listen");
}

/* Every loop-thread function of the layer, called from another thread while
 * the loop is idle: each call is reported, first under its own name (the
 * reactor's functions it calls in turn may report too). The calls are
 * ordered so that each still finds what it acts on (the closing ones last). */
static tw_listener *every_l;
static char every_fns[40][64], every_first[40][96];
static int every_counts[40], every_n;

static void every_call(const char *fn, int before)
{
    snprintf(every_fns[every_n], sizeof every_fns[0], "%s", fn);
    every_counts[every_n] = tw_test_diag_count() - before;
    every_first[every_n][0] = '\0';
    if (every_counts[every_n] > 0 && before < TW_TEST_DIAG_CAP)
        snprintf(every_first[every_n], sizeof every_first[0], "%s",
                 tw_test_diag_at(before)->function);
    every_n++;
}

#define EVERY(fn, call)                                                                \
    do {                                                                               \
        int before_ = tw_test_diag_count();                                            \
        (void)(call);                                                                  \
        every_call(fn, before_);                                                       \
    } while (0)

static void nop(void *arg)
{
    (void)arg;
}
static const tw_producer nop_producer = {nop, nop, NULL};

static void *every_function(void *arg)
{
    tw_reactor *r = arg;
    tw_transport *t = shared;
    tw_address a;
    struct iovec v = {(void *)"v", 1};
    tw_deferred *d;
    EVERY("tw_transport_buffered", tw_transport_buffered(t));
    EVERY("tw_transport_set_write_limits", tw_transport_set_write_limits(t, 100, 10));
    EVERY("tw_transport_register_producer", tw_transport_register_producer(t, &nop_producer, t));
    EVERY("tw_transport_unregister_producer", tw_transport_unregister_producer(t));
    EVERY("tw_transport_local_address", tw_transport_local_address(t, &a));
    EVERY("tw_transport_peer_address", tw_transport_peer_address(t, &a));
    EVERY("tw_transport_set_nodelay", tw_transport_set_nodelay(t, true));
    EVERY("tw_transport_set_keepalive", tw_transport_set_keepalive(t, false));
    EVERY("tw_transport_fileno", tw_transport_fileno(t));
    EVERY("tw_transport_connected", tw_transport_connected(t));
    EVERY("tw_transport_context", tw_transport_context(t));
    EVERY("tw_transport_pause_reading", tw_transport_pause_reading(t));
    EVERY("tw_transport_resume_reading", tw_transport_resume_reading(t));
    EVERY("tw_transport_write", tw_transport_write(t, "w", 1));
    EVERY("tw_transport_writev", tw_transport_writev(t, &v, 1));
    EVERY("tw_transport_write_owned", tw_transport_write_owned(t, (void *)"o", 1, NULL));
    EVERY("tw_transport_close_write", tw_transport_close_write(t));
    EVERY("tw_transport_lose_connection", tw_transport_lose_connection(t));
    EVERY("tw_transport_abort_connection", tw_transport_abort_connection(t));
    EVERY("tw_listener_address", tw_listener_address(every_l, &a));
    EVERY("tw_reactor_resolve", tw_reactor_resolve(r, "127.0.0.1", 80, AF_UNSPEC, &d));
    tw_deferred_unref(d);
    return NULL;
}

static void test_debug_wrong_thread_every_function(void **state)
{
    (void)state;
    tw_reactor *r = net_reactor(false);
    peer server = {.on_made = share};
    tw_factory sf = peer_factory(&server);
    every_l = net_listen(r, "tcp:0:interface=127.0.0.1", &sf);
    int fd = raw_connect(AF_INET, net_port(every_l));
    NET_RUN_UNTIL(r, shared != NULL, 10);
    tw_test_diag_reset();
    every_n = 0;
    tw_test_join(tw_test_start(every_function, r)); /* the loop is not running meanwhile */
    int total = tw_test_diag_count();
    tw_test_diag_reset();
    NET_RUN_UNTIL(r, peers_lost() == 1, 10);
    tw_transport_unref(shared);
    shared = NULL;
    close(fd);
    assert_rc(tw_listener_stop(every_l, NULL), 0);
    assert_rc(tw_reactor_destroy(r), 0);
    tw_test_require_debug_report(total, "a transport function");
    for (int i = 0; i < every_n; i++)
        if (every_counts[i] < 1 || strcmp(every_first[i], every_fns[i]) != 0)
            fail_msg("%s from another thread: %d reports, the first from \"%s\"", every_fns[i],
                     every_counts[i], every_first[i]);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_resolve_numeric_skips_the_pool),
        T(test_resolve_localhost),
        T(test_resolve_not_found),
        T(test_resolve_half_the_pool),
        T(test_resolve_cancel),
        T(test_resolve_cancel_queued_in_pool),
        T(test_resolve_shutdown),
        T(test_connect_by_name),
        T(test_write_from_threads),
        T(test_debug_wrong_thread_write),
        T(test_debug_wrong_thread_listen),
        T(test_debug_wrong_thread_every_function),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
