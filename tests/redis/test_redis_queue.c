/*
 * The distributed queue on Redis Streams (twine/redis.h) against a real
 * redis-server: put, get and ack in order with binary payloads; a get
 * waiting for a later put; reads in batches; a restarted consumer re-reading
 * its own pending entries first; entries of a dead consumer claimed after
 * claim_idle; dead-lettering after max_deliveries; a read lost on its way (the
 * reader killed, a reply past its timeout) re-reading only what it may have
 * taken, never an entry in hand; a 2000-byte stream name and its dead-letter
 * stream; a consumer process killed
 * with SIGKILL in the middle of an entry (delivered again, none lost); a
 * server killed and restarted with appendfsync always (nothing put is lost);
 * close; bad input and payloads of several MiB.
 */
#define _GNU_SOURCE
#include "util.h"

#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static tw_redis_queue_config qcfg(const char *stream, const char *consumer)
{
    tw_redis_queue_config cfg = TW_REDIS_QUEUE_CONFIG_INIT;
    cfg.stream = stream;
    cfg.consumer = consumer;
    cfg.block = 0.2;
    return cfg;
}

static void put(tw_reactor *r, tw_redis_queue *q, const void *data, size_t len)
{
    tw_deferred *d;
    assert_rc(tw_redis_queue_put(q, data, len, &d), 0);
    tw_redis_reply *rep = rt_reply(r, d);
    assert_int_equal(rep->type, TW_REDIS_STRING);
    assert_non_null(strchr(rep->str, '-'));
    tw_redis_reply_free(rep);
}

static tw_redis_entry *get(tw_reactor *r, tw_redis_queue *q)
{
    tw_deferred *d;
    assert_rc(tw_redis_queue_get(q, &d), 0);
    tw_result res = rt_wait(r, d);
    if (tw_result_is_failure(res))
        fail_msg("get failed: %s", tw_failure_message(tw_result_as_failure(res)));
    assert_true(res.drop == tw_redis_entry_free);
    return res.ptr;
}

static void ack(tw_reactor *r, tw_redis_queue *q, const char *id, long long want)
{
    tw_deferred *d;
    assert_rc(tw_redis_queue_ack(q, id, &d), 0);
    tw_redis_reply *rep = rt_reply(r, d);
    assert_int_equal(rep->integer, want);
    tw_redis_reply_free(rep);
}

static void iterate_for(tw_reactor *r, double seconds)
{
    double end = tw_test_now() + seconds;
    while (tw_test_now() < end)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
}

static void test_put_get_ack(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("jobs", "worker-1");
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    assert_string_equal(tw_redis_queue_consumer(q), "worker-1");
    static const char p1[] = {'a', 0, 'b'};
    put(r, q, p1, sizeof p1);
    put(r, q, "second", 6);
    put(r, q, "", 0);
    tw_redis_entry *e1 = get(r, q), *e2 = get(r, q), *e3 = get(r, q);
    assert_int_equal(e1->len, sizeof p1);
    assert_memory_equal(e1->data, p1, sizeof p1);
    assert_int_equal(e1->deliveries, 1);
    assert_string_equal(e2->data, "second");
    assert_int_equal(e3->len, 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN jobs"), 3);
    ack(r, q, e1->id, 1);
    ack(r, q, e1->id, 0); /* no longer pending */
    ack(r, q, e2->id, 1);
    ack(r, q, e3->id, 1);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN jobs"), 0);
    tw_redis_entry_free(e1);
    tw_redis_entry_free(e2);
    tw_redis_entry_free(e3);
    tw_redis_queue_stats st;
    tw_redis_queue_stats_get(q, &st);
    assert_int_equal(st.delivered, 3);
    assert_int_equal(st.redelivered, 0);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A get waits for a put made later, from another connection. */
static void test_get_waits_for_put(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r), *pc = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("later", "w");
    tw_redis_queue *q, *producer;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    assert_rc(tw_redis_queue_open(pc, &cfg, &producer), 0);
    tw_deferred *d;
    assert_rc(tw_redis_queue_get(q, &d), 0);
    tw_test_capture cap;
    tw_test_capture_add(d, &cap);
    iterate_for(r, 0.5); /* a few blocking reads come back empty */
    assert_int_equal(cap.calls, 0);
    assert_int_equal(tw_redis_queue_waiting(q), 1);
    put(r, producer, "hello", 5);
    double deadline = tw_test_now() + 5;
    while (!cap.calls && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(cap.calls, 1);
    const tw_redis_entry *e = cap.r.ptr;
    assert_string_equal(e->data, "hello");
    ack(r, q, e->id, 1);
    tw_test_capture_release(&cap);
    tw_deferred_unref(d);
    assert_rc(tw_redis_queue_close(q), 0);
    assert_rc(tw_redis_queue_close(producer), 0);
    rt_close(r, c);
    rt_close(r, pc);
    rt_reactor_free(r);
}

/* 64 entries through gets issued together: read in batches of 16. */
static void test_batches(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("batch", "w");
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    enum { N = 64 };
    for (int i = 0; i < N; i++) {
        char buf[16];
        int n = snprintf(buf, sizeof buf, "%d", i);
        put(r, q, buf, (size_t)n);
    }
    for (int i = 0; i < N; i++) {
        tw_redis_entry *e = get(r, q);
        assert_int_equal(atoi(e->data), i);
        ack(r, q, e->id, 1);
        tw_redis_entry_free(e);
    }
    tw_redis_queue_stats st;
    tw_redis_queue_stats_get(q, &st);
    assert_int_equal(st.delivered, N);
    assert_true(st.reads <= N / 16 + 2);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A consumer that restarts under the same name first gets back what it had
 * read and not acknowledged, counted as a second delivery. */
static void test_restart_rereads_pending(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("pend", "same");
    cfg.batch = 1;
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    put(r, q, "one", 3);
    put(r, q, "two", 3);
    put(r, q, "three", 5);
    tw_redis_entry *e1 = get(r, q), *e2 = get(r, q);
    assert_string_equal(e1->data, "one");
    assert_string_equal(e2->data, "two");
    tw_redis_entry_free(e1);
    tw_redis_entry_free(e2);
    assert_rc(tw_redis_queue_close(q), 0); /* no ack: both stay pending */
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    tw_redis_entry *a = get(r, q), *b = get(r, q), *n = get(r, q);
    assert_string_equal(a->data, "one");
    assert_int_equal(a->deliveries, 2);
    assert_string_equal(b->data, "two");
    assert_int_equal(b->deliveries, 2);
    assert_string_equal(n->data, "three");
    assert_int_equal(n->deliveries, 1);
    ack(r, q, a->id, 1);
    ack(r, q, b->id, 1);
    ack(r, q, n->id, 1);
    tw_redis_entry_free(a);
    tw_redis_entry_free(b);
    tw_redis_entry_free(n);
    tw_redis_queue_stats st;
    tw_redis_queue_stats_get(q, &st);
    assert_int_equal(st.redelivered, 2);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* Another consumer's entry, idle for claim_idle, is claimed. */
static void test_claim_from_dead_consumer(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config ca = qcfg("claim", "gone"), cb = qcfg("claim", "alive");
    ca.batch = 1;
    cb.claim_idle = 0.3;
    tw_redis_queue *qa, *qb;
    assert_rc(tw_redis_queue_open(c, &ca, &qa), 0);
    put(r, qa, "orphan", 6);
    tw_redis_entry *e = get(r, qa);
    char id[64];
    snprintf(id, sizeof id, "%s", e->id);
    tw_redis_entry_free(e);
    assert_rc(tw_redis_queue_close(qa), 0); /* "dies" holding it */
    assert_rc(tw_redis_queue_open(c, &cb, &qb), 0);
    double t0 = tw_test_now();
    e = get(r, qb);
    assert_true(tw_test_now() - t0 >= 0.25);
    assert_string_equal(e->id, id);
    assert_string_equal(e->data, "orphan");
    assert_int_equal(e->deliveries, 2);
    ack(r, qb, e->id, 1);
    tw_redis_entry_free(e);
    tw_redis_queue_stats st;
    tw_redis_queue_stats_get(qb, &st);
    assert_int_equal(st.claimed, 1);
    assert_rc(tw_redis_queue_close(qb), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* An entry never acknowledged is delivered max_deliveries times, then moved
 * to the dead-letter stream with its id, payload and delivery count. */
static void test_dead_letter(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("poison", "w");
    cfg.claim_idle = 0.2;
    cfg.max_deliveries = 3;
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    static const char bad[] = {'x', 0, 'y'};
    put(r, q, bad, sizeof bad);
    char id[64] = "";
    for (uint32_t n = 1; n <= 3; n++) {
        tw_redis_entry *e = get(r, q); /* fails to process it: no ack */
        assert_int_equal(e->deliveries, n);
        snprintf(id, sizeof id, "%s", e->id);
        tw_redis_entry_free(e);
    }
    tw_deferred *d;
    assert_rc(tw_redis_queue_get(q, &d), 0);
    double deadline = tw_test_now() + 10;
    tw_redis_queue_stats st;
    do {
        assert_rc(tw_reactor_iterate(r, 0.02), 0);
        tw_redis_queue_stats_get(q, &st);
    } while (st.dead < 1 && tw_test_now() < deadline);
    assert_int_equal(st.dead, 1);
    assert_false(tw_deferred_called(d)); /* the get waits for a real entry */
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN poison"), 0);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN poison:dead"), 1);
    redisReply *dl = tw_test_redis_cmd(&rt_server, "XRANGE poison:dead - +");
    assert_non_null(dl);
    redisReply *fields = dl->element[0]->element[1];
    bool saw_id = false, saw_payload = false, saw_count = false;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const char *f = fields->element[i]->str;
        redisReply *v = fields->element[i + 1];
        if (!strcmp(f, "id"))
            saw_id = !strcmp(v->str, id);
        if (!strcmp(f, "d"))
            saw_payload = v->len == sizeof bad && !memcmp(v->str, bad, sizeof bad);
        if (!strcmp(f, "deliveries"))
            saw_count = !strcmp(v->str, "3");
    }
    freeReplyObject(dl);
    assert_true(saw_id && saw_payload && saw_count);
    put(r, q, "fine", 4);
    tw_redis_entry *e = rt_wait(r, d).ptr;
    assert_string_equal(e->data, "fine");
    ack(r, q, e->id, 1);
    tw_redis_entry_free(e);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ---- a read lost on its way ------------------------------------------------------ */

/* The id of the server's client blocked in `cmd` (from CLIENT LIST), or -1. */
static long long blocked_client(const tw_test_redis *srv, const char *cmd)
{
    redisReply *list = tw_test_redis_cmd(srv, "CLIENT LIST");
    long long id = -1;
    char want[64];
    snprintf(want, sizeof want, " cmd=%s", cmd);
    for (const char *line = list ? list->str : NULL; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf ? n : sizeof buf - 1), line);
        if (strstr(buf, want) && strstr(buf, " flags=b"))
            id = strtoll(buf + 3, NULL, 10); /* "id=N ..." */
        line = end ? end + 1 : NULL;
    }
    if (list)
        freeReplyObject(list);
    return id;
}

static void until_blocked(tw_reactor *r, long long *id)
{
    double deadline = tw_test_now() + 10;
    while ((*id = blocked_client(&rt_server, "xreadgroup")) < 0) {
        if (tw_test_now() > deadline)
            fail_msg("the queue's read never blocked on the server");
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    }
}

/* A blocking read whose reply is lost (its connection killed, or its reply
 * late past its timeout) may have delivered entries, so the queue re-reads
 * its own pending entries; but only those the lost read may have taken. An
 * entry already handed to a get and still being processed is neither
 * delivered again nor counted as a delivery (which with max_deliveries 2
 * would dead-letter it on the next miss), and an entry the lost reply
 * carried is delivered, once. */
static void test_lost_read_rereads_only_its_own(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(true); /* the timeouts are the queue's timers */
    tw_redis_config ccfg = rt_config(rt_server.port, 1.0);
    rt_require_server();
    tw_redis *c = rt_connect_to(r, &ccfg);
    tw_redis_queue_config cfg = qcfg("lost", "w");
    cfg.max_deliveries = 2;
    cfg.block = 5.0;
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    put(r, q, "in hand", 7);
    tw_redis_entry *held = get(r, q); /* being processed: not acknowledged yet */
    assert_string_equal(held->data, "in hand");
    assert_int_equal(held->deliveries, 1);

    /* 1. the reader's connection killed while its read blocks */
    tw_deferred *d;
    assert_rc(tw_redis_queue_get(q, &d), 0);
    tw_test_capture cap;
    tw_test_capture_add(d, &cap);
    long long id;
    until_blocked(r, &id);
    assert_int_equal(tw_test_redis_int(&rt_server, "CLIENT KILL ID %lld", id), 1);
    /* the queue notices, re-reads, and blocks again on a new connection */
    long long id2 = -1;
    double deadline = tw_test_now() + 10;
    while (!cap.calls && ((id2 = blocked_client(&rt_server, "xreadgroup")) < 0 || id2 == id)) {
        if (tw_test_now() > deadline)
            fail_msg("the queue never read again");
        assert_rc(tw_reactor_iterate(r, 0.005), 0);
        assert_rc(tw_reactor_advance(r, 0.01), 0);
    }
    if (cap.calls) /* nothing new: "in hand" must not be given again */
        fail_msg("a get was given %s after the read was lost",
                 tw_result_is_failure(cap.r) ? "a failure"
                                             : ((const tw_redis_entry *)cap.r.ptr)->data);

    /* 2. a read served on the server whose reply comes after its timeout:
     * the entry is pending for us, and only the re-read can deliver it */
    redisReply *added = tw_test_redis_cmd(&rt_server, "XADD lost * d carried");
    assert_non_null(added);
    char carried[64];
    snprintf(carried, sizeof carried, "%s", added->str);
    freeReplyObject(added);
    assert_rc(tw_reactor_advance(r, cfg.block + 1.0 + 0.01), 0); /* before any reading */
    deadline = tw_test_now() + 10;
    while (!cap.calls) {
        if (tw_test_now() > deadline)
            fail_msg("the carried entry was never delivered");
        assert_rc(tw_reactor_iterate(r, 0.005), 0);
        assert_rc(tw_reactor_advance(r, 0.01), 0);
    }
    assert_false(tw_result_is_failure(cap.r));
    const tw_redis_entry *e = cap.r.ptr;
    assert_string_equal(e->data, "carried");
    assert_string_equal(e->id, carried);
    assert_int_equal(e->deliveries, 2); /* the lost read counted as one */
    ack(r, q, e->id, 1);
    tw_test_capture_release(&cap);
    tw_deferred_unref(d);

    ack(r, q, held->id, 1); /* still pending, never dead-lettered */
    tw_redis_entry_free(held);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN lost:dead"), 0);
    tw_redis_queue_stats st;
    tw_redis_queue_stats_get(q, &st);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(st.dead, 0);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* A long stream name (2000 bytes): its dead-letter stream is exactly
 * "<stream>:dead", not a name cut short. */
static void test_long_stream_name(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    char name[2001], dead[2006];
    memset(name, 'q', sizeof name - 1);
    name[sizeof name - 1] = 0;
    snprintf(dead, sizeof dead, "%s:dead", name);
    tw_redis_queue_config cfg = qcfg(name, "w");
    cfg.claim_idle = 0.1;
    cfg.max_deliveries = 1;
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    put(r, q, "once", 4);
    tw_redis_entry *e = get(r, q); /* not acknowledged: dead-lettered when claimed */
    tw_redis_entry_free(e);
    tw_deferred *d;
    assert_rc(tw_redis_queue_get(q, &d), 0);
    double deadline = tw_test_now() + 10;
    tw_redis_queue_stats st;
    do {
        assert_rc(tw_reactor_iterate(r, 0.02), 0);
        tw_redis_queue_stats_get(q, &st);
    } while (st.dead < 1 && tw_test_now() < deadline);
    assert_int_equal(st.dead, 1);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN %s", dead), 1);
    assert_rc(tw_redis_queue_close(q), 0);
    assert_int_equal(rt_failure(r, d, NULL, 0), TW_ESHUTDOWN);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ---- a consumer killed in the middle of an entry ----------------------------------- */

/* The child: consumer "doomed", one entry at a time; takes one entry, says
 * "took <id>", and never finishes it. */
static int child_consume(int port)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    tw_reactor *r;
    if (tw_reactor_create(&r))
        return 2;
    tw_redis_config cfg = TW_REDIS_CONFIG_INIT;
    cfg.port = port;
    tw_redis *c;
    tw_redis_queue *q;
    tw_redis_queue_config qc = TW_REDIS_QUEUE_CONFIG_INIT;
    qc.stream = "killed";
    qc.consumer = "doomed";
    qc.batch = 1;
    if (tw_redis_connect(r, &cfg, &c) || tw_redis_queue_open(c, &qc, &q))
        return 3;
    tw_deferred *d;
    tw_redis_queue_get(q, &d);
    while (!tw_deferred_called(d))
        tw_reactor_iterate(r, 0.05);
    tw_result res;
    tw_deferred_peek(d, &res);
    printf("took %s\n", ((const tw_redis_entry *)res.ptr)->id);
    fflush(stdout);
    for (;;)
        tw_reactor_iterate(r, 1.0);
}

static void test_consumer_killed(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue_config cfg = qcfg("killed", "survivor");
    cfg.claim_idle = 0.3;
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    int n = (int)tw_test_scaled(50, 10);
    for (int i = 0; i < n; i++) {
        char buf[16];
        int len = snprintf(buf, sizeof buf, "job%d", i);
        put(r, q, buf, (size_t)len);
    }
    int p[2];
    assert_int_equal(pipe(p), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    char port[16];
    snprintf(port, sizeof port, "%d", rt_server.port);
    char *argv[] = {"test_redis_queue", "--consume", port, NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    char taken[64] = "";
    int got = fscanf(f, "took %63s", taken);
    fclose(f);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(got, 1);

    bool seen[64] = {false};
    int processed = 0, again = 0;
    while (processed < n) {
        tw_redis_entry *e = get(r, q);
        int i = atoi(e->data + 3);
        assert_true(i >= 0 && i < n);
        assert_false(seen[i]);
        seen[i] = true;
        processed++;
        if (!strcmp(e->id, taken)) {
            assert_int_equal(e->deliveries, 2);
            again++;
        } else {
            assert_int_equal(e->deliveries, 1);
        }
        ack(r, q, e->id, 1);
        tw_redis_entry_free(e);
    }
    assert_int_equal(again, 1);
    assert_int_equal(tw_test_redis_int(&rt_server, "XLEN killed"), 0);
    tw_redis_queue_stats st;
    tw_redis_queue_stats_get(q, &st);
    assert_int_equal(st.claimed, 1);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ---- the server restarted -------------------------------------------------------- */

typedef struct puts_tally {
    int ok, failed;
} puts_tally;

static tw_result count_put(tw_result res, void *arg)
{
    puts_tally *t = arg;
    if (tw_result_is_failure(res))
        t->failed++;
    else
        t->ok++;
    tw_result_drop(res);
    return tw_result_none();
}

/* With appendfsync always, every entry whose put was acknowledged before
 * the server was killed is there after its restart; puts issued while it
 * was down wait for it and complete. */
static void test_restart_keeps_entries(void **state)
{
    (void)state;
    const char *args[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    tw_test_redis *own = rt_own_server(args);
    tw_reactor *r = rt_reactor(false);
    tw_redis_config ccfg = rt_config(own->port, 10.0);
    tw_redis *c = rt_connect_to(r, &ccfg);
    tw_redis_queue_config cfg = qcfg("durable", "w");
    tw_redis_queue *q;
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    int n = (int)tw_test_scaled(200, 20);
    puts_tally t = {0, 0};
    for (int i = 0; i < n; i++) {
        char buf[16];
        int len = snprintf(buf, sizeof buf, "e%d", i);
        tw_deferred *d;
        assert_rc(tw_redis_queue_put(q, buf, (size_t)len, &d), 0);
        tw_deferred_add_both(d, count_put, &t);
        tw_deferred_unref(d);
    }
    double deadline = tw_test_now() + 20;
    while (t.ok + t.failed < n && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(t.ok, n);
    tw_test_redis_kill(own, SIGKILL);
    /* puts while it is down: they wait for the connection */
    int m = 10;
    for (int i = n; i < n + m; i++) {
        char buf[16];
        int len = snprintf(buf, sizeof buf, "e%d", i);
        tw_deferred *d;
        assert_rc(tw_redis_queue_put(q, buf, (size_t)len, &d), 0);
        tw_deferred_add_both(d, count_put, &t);
        tw_deferred_unref(d);
    }
    while (tw_redis_connected(c) && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(tw_test_redis_restart(own), 0);
    while (t.ok + t.failed < n + m && tw_test_now() < deadline)
        assert_rc(tw_reactor_iterate(r, 0.01), 0);
    assert_int_equal(t.ok + t.failed, n + m);
    /* a put written into the dying connection fails with TW_ECONNLOST (and
     * may or may not be there): only the acknowledged ones are promised */
    char *seen = calloc((size_t)(n + m), 1);
    int got = 0;
    while (got < t.ok) {
        tw_redis_entry *e = get(r, q);
        int i = atoi(e->data + 1);
        assert_true(i >= 0 && i < n + m);
        assert_false(seen[i]);
        seen[i] = 1;
        got++;
        ack(r, q, e->id, 1);
        tw_redis_entry_free(e);
    }
    for (int i = 0; i < n; i++)
        if (!seen[i])
            fail_msg("entry e%d was acknowledged by put and is lost", i);
    free(seen);
    /* and nothing else: a put that failed had not reached the server */
    assert_int_equal(tw_test_redis_int(own, "XLEN durable"), 0);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

/* ---- close, bad input ------------------------------------------------------------- */

static void test_close_and_bad_input(void **state)
{
    (void)state;
    tw_reactor *r = rt_reactor(false);
    tw_redis *c = rt_connect(r);
    tw_redis_queue *q = NULL;
    tw_redis_queue_config cfg = qcfg("bad", "w");
    tw_redis_queue_config b = cfg;
    b.stream = "";
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.stream = NULL;
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.group = "";
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.consumer = "";
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.claim_idle = 0;
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.claim_idle = NAN;
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.max_deliveries = 0;
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.batch = 0;
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    b = cfg;
    b.block = -1;
    assert_rc(tw_redis_queue_open(c, &b, &q), TW_EINVAL);
    assert_null(q);
    cfg.consumer = NULL; /* a name is made up */
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    assert_true(strlen(tw_redis_queue_consumer(q)) > 5);
    tw_deferred *d;
    assert_rc(tw_redis_queue_put(q, NULL, 3, &d), TW_EINVAL);
    assert_rc(tw_redis_queue_ack(q, "", &d), TW_EINVAL);

    /* several MiB with NUL bytes */
    size_t n = 5u << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i % 5 ? i * 7 : 0);
    put(r, q, big, n);
    tw_redis_entry *e = get(r, q);
    assert_int_equal(e->len, n);
    assert_memory_equal(e->data, big, n);
    ack(r, q, e->id, 1);
    tw_redis_entry_free(e);
    free(big);
    assert_rc(tw_redis_queue_ack(q, "not-an-id", &d), 0);
    assert_int_equal(rt_failure(r, d, NULL, 0), TW_EREMOTE);

    /* close with gets waiting */
    tw_deferred *g1, *g2;
    assert_rc(tw_redis_queue_get(q, &g1), 0);
    assert_rc(tw_redis_queue_get(q, &g2), 0);
    iterate_for(r, 0.05);
    assert_rc(tw_redis_queue_close(q), 0);
    assert_int_equal(rt_failure(r, g1, NULL, 0), TW_ESHUTDOWN);
    assert_int_equal(rt_failure(r, g2, NULL, 0), TW_ESHUTDOWN);

    /* the stream's key holds another type: gets fail with Redis's error */
    tw_redis_reply_free(rt_cmd(r, c, "SET %s %s", "typed", "text"));
    cfg.stream = "typed";
    assert_rc(tw_redis_queue_open(c, &cfg, &q), 0);
    assert_rc(tw_redis_queue_get(q, &g1), 0);
    char msg[256];
    assert_int_equal(rt_failure(r, g1, msg, sizeof msg), TW_EREMOTE);
    assert_non_null(strstr(msg, "WRONGTYPE"));
    tw_redis_reply *rep = rt_cmd(r, c, "GET typed");
    assert_string_equal(rep->str, "text");
    tw_redis_reply_free(rep);
    assert_rc(tw_redis_queue_put(q, "x", 1, &d), 0);
    assert_int_equal(rt_failure(r, d, NULL, 0), TW_EREMOTE);
    assert_rc(tw_redis_queue_close(q), 0);
    rt_close(r, c);
    rt_reactor_free(r);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, rt_setup, rt_teardown)

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--consume") == 0)
        return child_consume(atoi(argv[2]));
    const struct CMUnitTest tests[] = {
        T(test_put_get_ack),
        T(test_get_waits_for_put),
        T(test_batches),
        T(test_restart_rereads_pending),
        T(test_claim_from_dead_consumer),
        T(test_dead_letter),
        T(test_lost_read_rereads_only_its_own),
        T(test_long_stream_name),
        T(test_consumer_killed),
        T(test_restart_keeps_entries),
        T(test_close_and_bad_input),
    };
    return cmocka_run_group_tests(tests, rt_group_setup, rt_group_teardown);
}
