/*
 * http_bench.c — twine's HTTP client against libcurl's multi-socket interface
 * on libuv (the shape of curl's docs/examples/multi-uv.c), on the same GETs
 * to the same local server.
 *
 *   http_get_concurrent      rounds of N_CONC (100) GETs started at once; the
 *                            next round starts when the last response of the
 *                            previous one is in; wall time per GET, in us
 *   http_get_concurrent_cpu  the same runs: the client process's CPU time
 *                            (user + system) per GET, in us
 *
 * Only the client differs. The server (tests/http_server.c: a thread per
 * connection, blocking sockets) runs in a child process forked before
 * anything else, so the CPU figure is the client's alone; the client runs
 * one thread (numeric addresses: curl starts no resolver thread). Each run
 * makes a fresh client, runs one untimed round (which opens the
 * connections), then the timed rounds, which reuse them (HTTP/1.1
 * keep-alive). Every response must be a 200 with BODY bytes whose first and
 * last match the server's pattern; a run that misses one stops the program.
 *
 * twine: tw_http_client_get, each Deferred's callback checking and dropping
 * the response. libuv: one uv_poll_t per socket curl announces (assigned
 * with curl_multi_assign, as curl's example does), one uv_timer_t for curl's
 * timer (a 0 ms timeout runs at the loop's next pass, as twine's does; curl's
 * example uses 1 ms there, which would slow libuv here), and after every
 * curl_multi_socket_action a sweep of curl_multi_info_read; each transfer
 * collects its body in a buffer grown by doubling. The same curl options on
 * both sides where they matter: no signals, no proxy.
 *
 * usage: twine_bench_http [--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]
 */
#define _GNU_SOURCE
#include "bench_util.h"
#include "http_server.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <twine/http.h>
#include <twine/reactor.h>
#include <unistd.h>
#include <uv.h>

#define N_CONC 100   /* GETs in flight at once */
#define N_ROUNDS 40L /* timed rounds a run (scaled) */
#define BODY 4096    /* bytes a response */

static char url[128];
static const char *impl_list;

static double process_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void check_body(const char *impl, long status, const char *body, size_t len)
{
    if (status != 200 || len != BODY || (unsigned char)body[0] != http_server_pattern(1, 0) ||
        (unsigned char)body[len - 1] != http_server_pattern(1, len - 1)) {
        fprintf(stderr, "bench: %s: status %ld, %zu bytes\n", impl, status, len);
        exit(2);
    }
}

/* One run's state, either side. */
static struct {
    long rounds;     /* rounds still to start after the current one */
    int left;        /* responses of the current round still to come */
    long got;        /* responses counted in timed rounds */
    bool timed;      /* the current round is timed */
    double t0, cpu0; /* at the start of the first timed round */
    double t1, cpu1; /* at the end of the last */
} run;

/* The end of a round: starts the next (the first one after the untimed
 * round starts the clock), or stops the clock. false when the run is over. */
static bool round_over(void)
{
    if (run.rounds == 0) {
        run.t1 = bench_now();
        run.cpu1 = process_cpu();
        return false;
    }
    if (!run.timed) {
        run.timed = true;
        run.t0 = bench_now();
        run.cpu0 = process_cpu();
    }
    run.rounds--;
    run.left = N_CONC;
    return true;
}

/* ==== twine ==================================================================== */

static tw_reactor *tw_r;
static tw_http_client *tw_c;

static void tw_round(void);

static tw_result tw_done(tw_result r, void *arg)
{
    (void)arg;
    if (tw_result_is_failure(r)) {
        fprintf(stderr, "bench: twine: %s\n", tw_failure_message(tw_result_as_failure(r)));
        exit(2);
    }
    tw_http_response *resp = r.ptr;
    check_body("twine", resp->status, resp->body, resp->body_len);
    tw_result_drop(r);
    run.got += run.timed;
    if (--run.left == 0) {
        if (round_over())
            tw_round();
        else
            tw_reactor_stop(tw_r);
    }
    return tw_result_none();
}

static void tw_round(void)
{
    for (int i = 0; i < N_CONC; i++) {
        tw_deferred *d;
        bench_die_tw("tw_http_client_get", tw_http_client_get(tw_c, url, &d));
        bench_die_tw("tw_deferred_add_both", tw_deferred_add_both(d, tw_done, NULL));
        tw_deferred_unref(d);
    }
}

static void run_twine(long rounds)
{
    size_t live0 = tw_allocator_live();
    bench_die_tw("tw_reactor_create", tw_reactor_create(&tw_r));
    bench_die_tw("tw_http_client_create", tw_http_client_create(tw_r, NULL, &tw_c));
    memset(&run, 0, sizeof run);
    run.rounds = rounds;
    run.left = N_CONC;
    tw_round();
    bench_die_tw("tw_reactor_run", tw_reactor_run(tw_r));
    tw_http_client_destroy(tw_c);
    bench_die_tw("tw_reactor_destroy", tw_reactor_destroy(tw_r));
    bench_twine_check("http_get_concurrent", live0);
}

/* ==== libcurl multi on libuv ======================================================= */

typedef struct lu_side {
    uv_loop_t loop;
    uv_timer_t timer;
    CURLM *multi;
} lu_side;

typedef struct lu_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    lu_side *u;
} lu_sock;

typedef struct lu_xfer {
    char *buf;
    size_t len, cap;
} lu_xfer;

static lu_side U;

static void die_if(int rc)
{
    if (rc != 0)
        bench_die("libuv", uv_strerror(rc));
}

static size_t lu_write_cb(char *data, size_t size, size_t n, void *arg)
{
    lu_xfer *x = arg;
    size_t len = size * n;
    if (x->len + len > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        while (cap < x->len + len)
            cap *= 2;
        char *b = realloc(x->buf, cap);
        if (!b)
            return 0;
        x->buf = b;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, data, len);
    x->len += len;
    return len;
}

static void lu_round(void);

static void lu_check_info(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(U.multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        if (m->data.result != CURLE_OK) {
            fprintf(stderr, "bench: libuv: %s\n", curl_easy_strerror(m->data.result));
            exit(2);
        }
        lu_xfer *x;
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(U.multi, e);
        curl_easy_cleanup(e);
        check_body("libuv", status, x->buf, x->len);
        free(x->buf);
        free(x);
        run.got += run.timed;
        if (--run.left == 0) {
            if (round_over())
                lu_round();
            else
                uv_stop(&U.loop);
        }
    }
}

static void lu_on_poll(uv_poll_t *h, int status, int events)
{
    lu_sock *k = h->data;
    int flags = status < 0 ? CURL_CSELECT_IN | CURL_CSELECT_OUT
                           : (events & UV_READABLE ? CURL_CSELECT_IN : 0) |
                                 (events & UV_WRITABLE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(U.multi, k->fd, flags, &running);
    lu_check_info();
}

static void lu_on_timer(uv_timer_t *t)
{
    (void)t;
    int running;
    curl_multi_socket_action(U.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    lu_check_info();
}

static int lu_timer_cb(CURLM *multi, long timeout_ms, void *arg)
{
    (void)multi;
    (void)arg;
    if (timeout_ms < 0)
        uv_timer_stop(&U.timer);
    else
        uv_timer_start(&U.timer, lu_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void lu_free_sock(uv_handle_t *h)
{
    free(h->data);
}

static int lu_socket_cb(CURL *e, curl_socket_t s, int what, void *arg, void *sockp)
{
    (void)e;
    (void)arg;
    lu_sock *k = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            uv_poll_stop(&k->poll);
            uv_close((uv_handle_t *)&k->poll, lu_free_sock);
            curl_multi_assign(U.multi, s, NULL);
        }
        return 0;
    }
    if (!k) {
        k = malloc(sizeof *k);
        if (!k)
            bench_die("malloc", "socket");
        k->fd = s;
        k->u = &U;
        uv_poll_init_socket(&U.loop, &k->poll, s);
        k->poll.data = k;
        curl_multi_assign(U.multi, s, k);
    }
    int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&k->poll, ev, lu_on_poll);
    return 0;
}

static void lu_round(void)
{
    for (int i = 0; i < N_CONC; i++) {
        CURL *e = curl_easy_init();
        lu_xfer *x = calloc(1, sizeof *x);
        if (!e || !x)
            bench_die("curl_easy_init", "out of memory");
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, lu_write_cb);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)x);
        if (curl_multi_add_handle(U.multi, e) != CURLM_OK)
            bench_die("curl_multi_add_handle", "failed");
    }
}

static void lu_close_all(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void run_uv(long rounds)
{
    die_if(uv_loop_init(&U.loop));
    uv_timer_init(&U.loop, &U.timer);
    U.multi = curl_multi_init();
    curl_multi_setopt(U.multi, CURLMOPT_SOCKETFUNCTION, lu_socket_cb);
    curl_multi_setopt(U.multi, CURLMOPT_TIMERFUNCTION, lu_timer_cb);
    memset(&run, 0, sizeof run);
    run.rounds = rounds;
    run.left = N_CONC;
    lu_round();
    uv_run(&U.loop, UV_RUN_DEFAULT);
    curl_multi_cleanup(U.multi); /* closes the connections (REMOVE: their polls close) */
    uv_walk(&U.loop, lu_close_all, NULL);
    uv_run(&U.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&U.loop) != 0)
        bench_die("uv_loop_close", "handles left");
}

/* ==== driver ========================================================================= */

static pid_t server_pid;
static int server_pipe = -1; /* its close stops the server */

/* Forks the server; its port comes back through a pipe, and it stops when
 * the pipe closes (this process exiting, or stop_server). */
static void start_server(void)
{
    int to_child[2], to_parent[2];
    if (pipe(to_child) != 0 || pipe(to_parent) != 0)
        bench_die("pipe", strerror(errno));
    fflush(NULL);
    server_pid = fork();
    if (server_pid < 0)
        bench_die("fork", strerror(errno));
    if (server_pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        http_server *s = http_server_start();
        int port = s ? http_server_port(s) : -1;
        if (write(to_parent[1], &port, sizeof port) != (ssize_t)sizeof port)
            _exit(1);
        char c;
        while (read(to_child[0], &c, 1) < 0 && errno == EINTR)
            ;
        if (s)
            http_server_stop(s);
        _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    int port = -1;
    if (read(to_parent[0], &port, sizeof port) != (ssize_t)sizeof port || port < 0)
        bench_die("the HTTP server", "did not start");
    close(to_parent[0]);
    bench_watch_child(server_pid);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/bytes?n=%d&seed=1", port, BODY);
    server_pipe = to_child[1];
}

static void stop_server(void)
{
    close(server_pipe);
    waitpid(server_pid, NULL, 0);
    bench_watch_child(0);
}

typedef struct impl {
    const char *name;
    void (*run)(long rounds);
} impl;

static const impl impls[] = {
    {"twine http client", run_twine},
    {"libuv + curl multi", run_uv},
};

int main(int argc, char **argv)
{
    struct bench_args args;
    bench_watchdog_init();
    if (!bench_parse_args(argc, argv, true, NULL,
                          "[--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]",
                          &args))
        return 2;
    impl_list = args.impl;
    if (!bench_selected(args.only, "http_get_concurrent"))
        return 0;
    start_server();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        bench_die("curl_global_init", "failed");
    bench_twine_diag_init();
    bench_open_csv(args.csv);
    bench_warm_up(0.2);

    enum { NI = sizeof impls / sizeof *impls };
    double wall[NI][BENCH_REPS], cpu[NI][BENCH_REPS];
    long rounds = bench_scaled(N_ROUNDS);
    printf("http_get_concurrent: %ld rounds of %d GETs at once (%d bytes each), "
           "%d round-robin repetitions\n",
           rounds, N_CONC, BODY, BENCH_REPS);
    fflush(stdout);
    for (int rep = 0; rep < BENCH_REPS; rep++) {
        for (int i = 0; i < (int)NI; i++) {
            if (!bench_listed(impl_list, impls[i].name))
                continue;
            bench_watch(impls[i].name);
            impls[i].run(rounds);
            bench_watch(NULL);
            bench_check_count("http_get_concurrent", impls[i].name, run.got,
                              rounds * N_CONC);
            wall[i][rep] = (run.t1 - run.t0) * 1e6 / (double)run.got;
            cpu[i][rep] = (run.cpu1 - run.cpu0) * 1e6 / (double)run.got;
        }
    }
    for (int i = 0; i < (int)NI; i++) {
        if (!bench_listed(impl_list, impls[i].name))
            continue;
        bench_record("http_get_concurrent", impls[i].name, "us/request", false, wall[i],
                     BENCH_REPS);
        bench_record("http_get_concurrent_cpu", impls[i].name, "us/request", false, cpu[i],
                     BENCH_REPS);
    }
    bench_close_csv();
    stop_server();
    return 0;
}
