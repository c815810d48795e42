/*
 * redis_bench.c — the Redis layer against hiredis itself (the floor) and
 * redis-server's own redis-benchmark (the ceiling); bench/py_redis.py runs
 * the same workloads with redis-py. Each program starts its own redis-server
 * (tests/redis_server.c: a free port, a temporary directory, no persistence).
 *
 *   redis_ping              one PING round trip at a time: hiredis's blocking
 *                           client (the floor of any client) and a tw_redis
 *                           on the reactor (each reply's callback sends the
 *                           next PING); us/roundtrip
 *   redis_lock_uncontended  one client: acquire, then release, each waited
 *                           for (two round trips, as any correct lock); the
 *                           floor row is two hiredis PINGs; us/op
 *   redis_lock_contended    8 processes on one lock name, each running a
 *                           read-modify-write of a counter under the lock
 *                           (GET, then a fenced SET) for a few seconds, 32
 *                           sections queued per process; the counter must
 *                           equal the acquisitions counted. ops/s, plus
 *                           `least_busy_shortfall` (1 - the least busy
 *                           process's share / an even share: 0 is perfectly
 *                           even, 0.5 is half an even share),
 *                           `client_cmds_per_acq` (commands the clients sent
 *                           per acquisition: acquire script, GET, fenced SET,
 *                           release script) and `server_calls_per_acq` (INFO
 *                           commandstats, calls made inside scripts included)
 *   redis_queue             one producer (puts pipelined, 64 in flight) and
 *                           one consumer (64 gets in hand, each entry acked
 *                           as it arrives) on two connections, 100-byte
 *                           payloads, reads of COUNT 1 and COUNT 16; ops/s
 *                           (an op is a put, its get and its ack). The
 *                           ceiling row is redis-benchmark -P 16 running
 *                           XADD alone
 *
 * usage: twine_bench_redis [--csv PATH] [--scale F] [--only WORKLOAD[,...]]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <twine/reactor.h>
#include <twine/redis.h>

#include "redis_server.h"

extern char **environ;

#define N_PING 20000L
#define N_LOCK 5000L
#define N_QUEUE 20000L
#define CONTEND_PROCS 8
#define CONTEND_SECONDS 3.0
#define CONTEND_QUEUED 32

static tw_test_redis server;

#define CHECK_TW(what, expr) bench_die_tw(what, (expr))

/* ---- a reactor and a connection ---------------------------------------------------- */

static tw_reactor *reactor;

static tw_redis *connect_redis(int port)
{
    tw_redis_config cfg = TW_REDIS_CONFIG_INIT;
    cfg.port = port;
    cfg.command_timeout = 30;
    tw_redis *c;
    CHECK_TW("tw_redis_connect", tw_redis_connect(reactor, &cfg, &c));
    tw_deferred *d;
    CHECK_TW("tw_redis_wait_connected", tw_redis_wait_connected(c, &d));
    while (!tw_deferred_called(d))
        CHECK_TW("tw_reactor_iterate", tw_reactor_iterate(reactor, 1.0));
    tw_deferred_unref(d);
    if (!tw_redis_connected(c))
        bench_die("connect", tw_redis_last_error(c));
    return c;
}

static void close_redis(tw_redis *c)
{
    tw_deferred *d;
    CHECK_TW("tw_redis_close", tw_redis_close(c, &d));
    while (!tw_deferred_called(d))
        CHECK_TW("tw_reactor_iterate", tw_reactor_iterate(reactor, 1.0));
    tw_deferred_unref(d);
}

static void run_until(const long *left)
{
    while (*left > 0)
        CHECK_TW("tw_reactor_iterate", tw_reactor_iterate(reactor, 1.0));
}

static tw_result die_on_failure(tw_result r)
{
    if (tw_result_is_failure(r))
        bench_die("a command", tw_failure_message(tw_result_as_failure(r)));
    return r;
}

/* ---- redis_ping ------------------------------------------------------------------- */

static double hiredis_pings(long n, int per_op)
{
    redisContext *c = tw_test_redis_connect(&server);
    if (!c)
        bench_die("hiredis connect", "no server");
    double t0 = bench_now();
    for (long i = 0; i < n * per_op; i++) {
        redisReply *r = redisCommand(c, "PING");
        if (!r || r->type != REDIS_REPLY_STATUS)
            bench_die("hiredis PING", c->errstr);
        freeReplyObject(r);
    }
    double t = bench_now() - t0;
    redisFree(c);
    return t / (double)n * 1e6;
}

typedef struct pinger {
    tw_redis *c;
    long left, done;
} pinger;

static void send_ping(pinger *p);

static tw_result on_pong(tw_result r, void *arg)
{
    pinger *p = arg;
    r = die_on_failure(r);
    tw_result_drop(r);
    p->done++;
    if (--p->left > 0)
        send_ping(p);
    return tw_result_none();
}

static void send_ping(pinger *p)
{
    tw_deferred *d;
    CHECK_TW("tw_redis_command", tw_redis_command(p->c, &d, "PING"));
    tw_deferred_add_both(d, on_pong, p);
    tw_deferred_unref(d);
}

static double twine_pings(tw_redis *c, long n)
{
    pinger p = {c, n, 0};
    double t0 = bench_now();
    send_ping(&p);
    run_until(&p.left);
    double t = bench_now() - t0;
    bench_check_count("redis_ping", "twine PING", p.done, n);
    return t / (double)n * 1e6;
}

static void bench_ping(tw_redis *c)
{
    long n = bench_scaled(N_PING);
    double h[BENCH_REPS], t[BENCH_REPS];
    bench_watch("redis_ping");
    for (int i = 0; i < BENCH_REPS; i++) {
        h[i] = hiredis_pings(n, 1);
        t[i] = twine_pings(c, n);
    }
    bench_watch(NULL);
    bench_record("redis_ping", "hiredis PING", "us/roundtrip", false, h, BENCH_REPS);
    bench_record("redis_ping", "twine PING", "us/roundtrip", false, t, BENCH_REPS);
}

/* ---- redis_lock_uncontended ----------------------------------------------------------- */

typedef struct locker {
    tw_redis_lock *l;
    long left, done;
} locker;

static void lock_step(locker *k);

static tw_result on_released(tw_result r, void *arg)
{
    locker *k = arg;
    r = die_on_failure(r);
    tw_result_drop(r);
    k->done++;
    if (--k->left > 0)
        lock_step(k);
    return tw_result_none();
}

static tw_result on_granted(tw_result r, void *arg)
{
    locker *k = arg;
    r = die_on_failure(r);
    tw_result_drop(r);
    tw_deferred *d;
    CHECK_TW("tw_redis_lock_release", tw_redis_lock_release(k->l, &d));
    tw_deferred_add_both(d, on_released, k);
    tw_deferred_unref(d);
    return tw_result_none();
}

static void lock_step(locker *k)
{
    tw_deferred *d;
    CHECK_TW("tw_redis_lock_acquire", tw_redis_lock_acquire(k->l, &d));
    tw_deferred_add_both(d, on_granted, k);
    tw_deferred_unref(d);
}

static void bench_lock_uncontended(tw_redis *c)
{
    long n = bench_scaled(N_LOCK);
    tw_redis_lock *l;
    CHECK_TW("tw_redis_lock_create", tw_redis_lock_create(c, "bench:uncontended", 10.0, &l));
    locker warm = {l, 100, 0};
    lock_step(&warm);
    run_until(&warm.left);
    double floor[BENCH_REPS], t[BENCH_REPS];
    bench_watch("redis_lock_uncontended");
    for (int i = 0; i < BENCH_REPS; i++) {
        floor[i] = hiredis_pings(n, 2);
        locker k = {l, n, 0};
        double t0 = bench_now();
        lock_step(&k);
        run_until(&k.left);
        t[i] = (bench_now() - t0) / (double)n * 1e6;
        bench_check_count("redis_lock_uncontended", "twine redis lock", k.done, n);
    }
    bench_watch(NULL);
    tw_redis_lock_stats st;
    tw_redis_lock_stats_get(l, &st);
    bench_check_count("redis_lock_uncontended", "twine redis lock retries", (long)st.retries, 0);
    CHECK_TW("tw_redis_lock_destroy", tw_redis_lock_destroy(l));
    bench_record("redis_lock_uncontended", "hiredis 2 x PING (floor)", "us/op", false, floor,
                 BENCH_REPS);
    bench_record("redis_lock_uncontended", "twine redis lock", "us/op", false, t, BENCH_REPS);
}

/* ---- redis_lock_contended -------------------------------------------------------------- */

/* A child process: waits for a byte on stdin, then runs read-modify-writes
 * under the lock for `seconds`, keeping CONTEND_QUEUED sections queued;
 * prints how many it completed. */
typedef struct contender {
    tw_redis *c;
    tw_redis_lock *l;
    double end;
    long done, inflight, failed;
} contender;

static tw_result contend_write(tw_result r, void *arg)
{
    contender *k = arg;
    if (tw_result_is_failure(r))
        return r;
    const tw_redis_reply *rep = r.ptr;
    long long v = rep->type == TW_REDIS_STRING ? strtoll(rep->str, NULL, 10) : 0;
    tw_result_drop(r);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", v + 1);
    tw_deferred *d;
    int rc = tw_redis_lock_fenced_set(k->l, "bench:counter", buf, (size_t)n, &d);
    if (rc)
        return tw_result_fail(rc, "fenced set");
    return tw_result_deferred(d);
}

static tw_result contend_section(void *arg)
{
    contender *k = arg;
    tw_deferred *d;
    int rc = tw_redis_command(k->c, &d, "GET bench:counter");
    if (rc)
        return tw_result_fail(rc, "GET");
    tw_deferred_add_callback(d, contend_write, k);
    return tw_result_deferred(d);
}

static void contend_more(contender *k);

static tw_result contend_done(tw_result r, void *arg)
{
    contender *k = arg;
    if (tw_result_is_failure(r))
        k->failed++;
    else
        k->done++;
    tw_result_drop(r);
    k->inflight--;
    contend_more(k);
    return tw_result_none();
}

static void contend_more(contender *k)
{
    while (k->inflight < CONTEND_QUEUED && bench_now() < k->end) {
        tw_deferred *d;
        CHECK_TW("tw_redis_lock_run", tw_redis_lock_run(k->l, contend_section, k, &d));
        k->inflight++;
        tw_deferred_add_both(d, contend_done, k);
        tw_deferred_unref(d);
    }
}

static int child_contend(int port, double seconds)
{
    CHECK_TW("tw_reactor_create", tw_reactor_create(&reactor));
    contender k = {0};
    k.c = connect_redis(port);
    CHECK_TW("tw_redis_lock_create",
             tw_redis_lock_create(k.c, "bench:contended", 10.0, &k.l));
    /* one round trip first: the lock's wake channel is subscribed by then */
    tw_deferred *d;
    CHECK_TW("PING", tw_redis_command(k.c, &d, "PING"));
    while (!tw_deferred_called(d))
        tw_reactor_iterate(reactor, 1.0);
    tw_deferred_unref(d);
    for (int i = 0; i < 20; i++)
        tw_reactor_iterate(reactor, 0.01);
    printf("ready\n");
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1)
        return 1;
    tw_redis_stats st0, st1;
    tw_redis_stats_get(k.c, &st0);
    k.end = bench_now() + seconds;
    contend_more(&k);
    while (k.inflight > 0)
        CHECK_TW("tw_reactor_iterate", tw_reactor_iterate(reactor, 1.0));
    tw_redis_stats_get(k.c, &st1);
    printf("%ld %ld %llu\n", k.done, k.failed, (unsigned long long)(st1.commands - st0.commands));
    fflush(stdout);
    tw_redis_lock_destroy(k.l);
    close_redis(k.c);
    tw_reactor_destroy(reactor);
    return 0;
}

static long long cmdstats_total(void)
{
    redisReply *r = tw_test_redis_cmd(&server, "INFO commandstats");
    if (!r || r->type != REDIS_REPLY_STRING)
        bench_die("INFO commandstats", "no reply");
    long long total = 0;
    for (const char *p = strstr(r->str, "calls="); p; p = strstr(p + 1, "calls="))
        if (p[-1] == ':') /* "cmdstat_x:calls=N", not rejected_calls or failed_calls */
            total += strtoll(p + 6, NULL, 10);
    freeReplyObject(r);
    return total;
}

static void bench_lock_contended(void)
{
    double seconds = CONTEND_SECONDS * (bench_scaled(1000) / 1000.0);
    if (seconds < 0.5)
        seconds = 0.5;
    double ops[BENCH_REPS], shortfall[BENCH_REPS], cmds[BENCH_REPS], client[BENCH_REPS];
    bench_watch("redis_lock_contended");
    for (int rep = 0; rep < BENCH_REPS; rep++) {
        redisReply *r = tw_test_redis_cmd(&server, "DEL bench:counter");
        if (r)
            freeReplyObject(r);
        pid_t pid[CONTEND_PROCS];
        FILE *out[CONTEND_PROCS];
        int go[CONTEND_PROCS];
        char port[16], secs[32];
        snprintf(port, sizeof port, "%d", server.port);
        snprintf(secs, sizeof secs, "%g", seconds);
        for (int i = 0; i < CONTEND_PROCS; i++) {
            int in[2], o[2];
            if (pipe(in) || pipe(o))
                bench_die("pipe", strerror(errno));
            posix_spawn_file_actions_t fa;
            posix_spawn_file_actions_init(&fa);
            posix_spawn_file_actions_adddup2(&fa, in[0], 0);
            posix_spawn_file_actions_adddup2(&fa, o[1], 1);
            posix_spawn_file_actions_addclose(&fa, in[1]);
            posix_spawn_file_actions_addclose(&fa, o[0]);
            char *argv[] = {"twine_bench_redis", "--child-contend", port, secs, NULL};
            bench_die_rc("posix_spawn",
                         posix_spawn(&pid[i], "/proc/self/exe", &fa, NULL, argv, environ));
            posix_spawn_file_actions_destroy(&fa);
            close(in[0]);
            close(o[1]);
            go[i] = in[1];
            out[i] = fdopen(o[0], "r");
        }
        char line[64];
        for (int i = 0; i < CONTEND_PROCS; i++)
            if (!fgets(line, sizeof line, out[i]) || strncmp(line, "ready", 5) != 0)
                bench_die("a contending process", "did not start");
        r = tw_test_redis_cmd(&server, "CONFIG RESETSTAT");
        if (r)
            freeReplyObject(r);
        long long cmds0 = cmdstats_total();
        double t0 = bench_now();
        for (int i = 0; i < CONTEND_PROCS; i++) {
            if (write(go[i], "g", 1) != 1)
                bench_die("go", strerror(errno));
            close(go[i]);
        }
        long done[CONTEND_PROCS], total = 0, failed = 0;
        long long sent = 0;
        for (int i = 0; i < CONTEND_PROCS; i++) {
            long f = 0;
            long long c = 0;
            if (!fgets(line, sizeof line, out[i]) ||
                sscanf(line, "%ld %ld %lld", &done[i], &f, &c) != 3)
                bench_die("a contending process", "gave no count");
            total += done[i];
            failed += f;
            sent += c;
            fclose(out[i]);
        }
        double t = bench_now() - t0;
        long long cmds1 = cmdstats_total();
        for (int i = 0; i < CONTEND_PROCS; i++) {
            int st;
            waitpid(pid[i], &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                bench_die("a contending process", "failed");
        }
        bench_check_count("redis_lock_contended", "twine redis lock failures", failed, 0);
        bench_check_count("redis_lock_contended", "twine redis lock counter",
                          (long)tw_test_redis_int(&server, "GET bench:counter"), total);
        long least = done[0];
        for (int i = 1; i < CONTEND_PROCS; i++)
            if (done[i] < least)
                least = done[i];
        ops[rep] = (double)total / t;
        shortfall[rep] = 1.0 - (double)least / ((double)total / CONTEND_PROCS);
        /* the two INFO calls and the DEL are the bench's own */
        cmds[rep] = (double)(cmds1 - cmds0 - 1) / (double)total;
        client[rep] = (double)sent / (double)total;
    }
    bench_watch(NULL);
    bench_record("redis_lock_contended", "twine redis lock", "ops/s", true, ops, BENCH_REPS);
    bench_record_extra("redis_lock_contended", "twine redis lock", "least_busy_shortfall",
                       "share", shortfall, BENCH_REPS);
    bench_record_extra("redis_lock_contended", "twine redis lock", "client_cmds_per_acq",
                       "commands", client, BENCH_REPS);
    bench_record_extra("redis_lock_contended", "twine redis lock", "server_calls_per_acq",
                       "calls", cmds, BENCH_REPS);
}

/* ---- redis_queue ----------------------------------------------------------------------- */

typedef struct qrun {
    tw_redis_queue *prod, *cons;
    long to_put, puts_inflight, to_get, gets_inflight, acks_left;
    char payload[100];
} qrun;

static void q_more(qrun *q);

static tw_result q_put_done(tw_result r, void *arg)
{
    qrun *q = arg;
    r = die_on_failure(r);
    tw_result_drop(r);
    q->puts_inflight--;
    q_more(q);
    return tw_result_none();
}

static tw_result q_acked(tw_result r, void *arg)
{
    qrun *q = arg;
    r = die_on_failure(r);
    const tw_redis_reply *rep = r.ptr;
    if (rep->integer != 1)
        bench_die("ack", "the entry was not pending");
    tw_result_drop(r);
    q->acks_left--;
    return tw_result_none();
}

static tw_result q_got(tw_result r, void *arg)
{
    qrun *q = arg;
    r = die_on_failure(r);
    const tw_redis_entry *e = r.ptr;
    if (e->len != sizeof q->payload)
        bench_die("get", "payload of the wrong size");
    tw_deferred *d;
    CHECK_TW("tw_redis_queue_ack", tw_redis_queue_ack(q->cons, e->id, &d));
    tw_deferred_add_both(d, q_acked, q);
    tw_deferred_unref(d);
    tw_result_drop(r);
    q->gets_inflight--;
    q_more(q);
    return tw_result_none();
}

static void q_more(qrun *q)
{
    /* counts move before each call: a get can hand an entry to an older
     * get at once, whose callback comes back here */
    while (q->to_put > 0 && q->puts_inflight < 64) {
        tw_deferred *d;
        q->to_put--;
        q->puts_inflight++;
        CHECK_TW("tw_redis_queue_put",
                 tw_redis_queue_put(q->prod, q->payload, sizeof q->payload, &d));
        tw_deferred_add_both(d, q_put_done, q);
        tw_deferred_unref(d);
    }
    while (q->to_get > 0 && q->gets_inflight < 64) {
        tw_deferred *d;
        q->to_get--;
        q->gets_inflight++;
        CHECK_TW("tw_redis_queue_get", tw_redis_queue_get(q->cons, &d));
        tw_deferred_add_both(d, q_got, q);
        tw_deferred_unref(d);
    }
}

static double queue_run(tw_redis *pc, tw_redis *cc, uint32_t batch, long n, const char *stream)
{
    tw_redis_queue_config cfg = TW_REDIS_QUEUE_CONFIG_INIT;
    cfg.stream = stream;
    cfg.consumer = "bench";
    cfg.batch = batch;
    cfg.block = 0.1;
    qrun q = {0};
    memset(q.payload, 'x', sizeof q.payload);
    CHECK_TW("tw_redis_queue_open", tw_redis_queue_open(pc, &cfg, &q.prod));
    CHECK_TW("tw_redis_queue_open", tw_redis_queue_open(cc, &cfg, &q.cons));
    q.to_put = q.to_get = q.acks_left = n;
    double t0 = bench_now();
    q_more(&q);
    run_until(&q.acks_left);
    double t = bench_now() - t0;
    bench_check_count("redis_queue", "twine queue", n - q.acks_left, n);
    CHECK_TW("tw_redis_queue_close", tw_redis_queue_close(q.prod));
    CHECK_TW("tw_redis_queue_close", tw_redis_queue_close(q.cons));
    if (tw_test_redis_int(&server, "XLEN %s", stream) != 0)
        bench_die("redis_queue", "entries left in the stream");
    redisReply *r = tw_test_redis_cmd(&server, "DEL %s", stream);
    if (r)
        freeReplyObject(r);
    return (double)n / t;
}

/* redis-benchmark's own rate for XADD with 16 commands pipelined. */
static double xadd_ceiling(long n)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "redis-benchmark -h 127.0.0.1 -p %d -c 1 -P 16 -n %ld --csv XADD bench:ceiling '*' d "
             "%0100d 2>/dev/null",
             server.port, n, 0);
    FILE *p = popen(cmd, "r");
    if (!p)
        bench_die("redis-benchmark", strerror(errno));
    char line[512];
    double rps = 0;
    while (fgets(line, sizeof line, p)) {
        /* "XADD ...","123456.79",... */
        char *q = strstr(line, "\",\"");
        if (q && strncmp(line, "\"XADD", 5) == 0)
            rps = strtod(q + 3, NULL);
    }
    pclose(p);
    redisReply *r = tw_test_redis_cmd(&server, "DEL bench:ceiling");
    if (r)
        freeReplyObject(r);
    if (rps <= 0)
        bench_die("redis-benchmark", "no figure (is redis-tools installed?)");
    return rps;
}

static void bench_queue(tw_redis *pc, tw_redis *cc)
{
    long n = bench_scaled(N_QUEUE);
    double c1[BENCH_REPS], c16[BENCH_REPS], ceil[BENCH_REPS];
    queue_run(pc, cc, 16, n / 10 + 1, "bench:warm");
    bench_watch("redis_queue");
    for (int i = 0; i < BENCH_REPS; i++) {
        c1[i] = queue_run(pc, cc, 1, n, "bench:q1");
        c16[i] = queue_run(pc, cc, 16, n, "bench:q16");
        ceil[i] = xadd_ceiling(n * 5);
    }
    bench_watch(NULL);
    bench_record("redis_queue", "redis-benchmark XADD -P 16 (ceiling)", "ops/s", true, ceil,
                 BENCH_REPS);
    bench_record("redis_queue", "twine queue COUNT 1", "ops/s", true, c1, BENCH_REPS);
    bench_record("redis_queue", "twine queue COUNT 16", "ops/s", true, c16, BENCH_REPS);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--child-contend"))
        return child_contend(atoi(argv[2]), atof(argv[3]));
    struct bench_args a;
    if (!bench_parse_args(argc, argv, false, NULL, "[--csv PATH] [--scale F] [--only WORKLOAD[,...]]",
                          &a))
        return 2;
    bench_watchdog_init();
    if (tw_test_redis_start(&server, NULL) != 0)
        bench_die("redis-server", server.why);
    bench_open_csv(a.csv);
    CHECK_TW("tw_reactor_create", tw_reactor_create(&reactor));
    tw_redis *c = connect_redis(server.port), *c2 = connect_redis(server.port);
    if (bench_selected(a.only, "redis_ping"))
        bench_ping(c);
    if (bench_selected(a.only, "redis_lock_uncontended"))
        bench_lock_uncontended(c);
    if (bench_selected(a.only, "redis_lock_contended"))
        bench_lock_contended();
    if (bench_selected(a.only, "redis_queue"))
        bench_queue(c, c2);
    close_redis(c);
    close_redis(c2);
    CHECK_TW("tw_reactor_destroy", tw_reactor_destroy(reactor));
    bench_close_csv();
    tw_test_redis_stop(&server);
    return 0;
}
