/*
 * socket_threads — seed 001 on sockets: Twisted's threading howto, with a
 * real server and client on loopback.
 *
 * A line protocol answers two requests:
 *
 *   fib N     The reply is computed by a blocking function (a slow Fibonacci)
 *             in defer_to_thread, so the loop keeps serving meanwhile; the
 *             reply is written on the loop thread, in the Deferred's
 *             callback, as every transport call must be.
 *   count N   A pool thread writes N lines itself. "Writing data to a
 *             transport from a protocol is not thread-safe" (seed 001), so
 *             it uses tw_transport_write_from_thread, which hands the bytes
 *             to the loop in the order the thread wrote them. (A plain
 *             tw_transport_write from that thread would race with the loop;
 *             builds with TW_DEBUG report such a call, naming the function.)
 *
 * The client connects to "localhost", a name looked up in the reactor's
 * pool ("in the reactor's thread pool", seed 001), where lookups may take
 * at most half of the threads. The work requested from threads holds a
 * reference to the transport (tw_transport_ref), so a connection that closes
 * first is never written to after it is gone: the late write is refused.
 *
 * Checks every reply and exits 0 when all are right.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine.h>

static tw_reactor *reactor;
static pthread_t loop_thread;
static int failures;

static void expect(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "socket_threads: FAILED: %s\n", what);
        failures++;
    }
}

/* ---- the server: a line protocol --------------------------------------------------- */

typedef struct lines {
    char line[128];
    size_t len;
} lines;

typedef struct fib_job {
    tw_transport *t; /* a reference: the connection may close before the answer */
    long n;
    bool off_loop;   /* where the blocking function ran */
} fib_job;

static long fib(long n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/* On a pool thread: blocks (computes) for a while. */
static tw_result fib_blocking(void *arg, tw_cancel *cancel)
{
    (void)cancel;
    fib_job *j = arg;
    j->off_loop = !pthread_equal(pthread_self(), loop_thread);
    long *v = malloc(sizeof *v);
    if (!v)
        return tw_result_fail(TW_ENOMEM, "no memory for the answer");
    *v = fib(j->n);
    return tw_result_value(v, free);
}

/* On the loop thread: the answer goes out through the transport. */
static tw_result fib_reply(tw_result r, void *arg)
{
    fib_job *j = arg;
    expect(pthread_equal(pthread_self(), loop_thread), "the reply is written on the loop thread");
    expect(j->off_loop, "the blocking function ran on a pool thread");
    char out[64];
    int n = tw_result_is_failure(r)
                ? snprintf(out, sizeof out, "error %s\n",
                           tw_failure_message(tw_result_as_failure(r)))
                : snprintf(out, sizeof out, "fib %ld = %ld\n", j->n, *(long *)r.ptr);
    tw_transport_write(j->t, out, (size_t)n); /* TW_ENOTCONN if it closed meanwhile */
    tw_result_drop(r);
    tw_transport_unref(j->t);
    free(j);
    return tw_result_none();
}

typedef struct count_job {
    tw_transport *t;
    int n;
} count_job;

/* On a pool thread: writes through the loop, the thread-safe way. */
static int count_lines(void *arg)
{
    count_job *j = arg;
    char out[32];
    for (int i = 0; i < j->n; i++) {
        int len = snprintf(out, sizeof out, "tick %d\n", i);
        tw_transport_write_from_thread(j->t, out, (size_t)len);
    }
    tw_transport_write_from_thread(j->t, "count done\n", 11);
    tw_transport_unref(j->t);
    free(j);
    return 0;
}

static void serve_line(tw_transport *t, const char *line)
{
    long n;
    if (sscanf(line, "fib %ld", &n) == 1 && n >= 0 && n <= 40) {
        fib_job *j = calloc(1, sizeof *j);
        tw_deferred *d;
        j->t = tw_transport_ref(t);
        j->n = n;
        if (tw_defer_to_thread(reactor, fib_blocking, j, &d) != 0) {
            tw_transport_unref(t);
            free(j);
            return;
        }
        tw_deferred_add_both(d, fib_reply, j);
        tw_deferred_unref(d);
    } else if (sscanf(line, "count %ld", &n) == 1 && n >= 0 && n <= 1000) {
        count_job *j = calloc(1, sizeof *j);
        j->t = tw_transport_ref(t);
        j->n = (int)n;
        if (tw_reactor_call_in_thread(reactor, count_lines, j) != 0) {
            tw_transport_unref(t);
            free(j);
        }
    } else {
        tw_transport_write(t, "error: fib N or count N\n", 24);
    }
}

static int lines_build(void *arg, const tw_address *peer, void **ctx)
{
    (void)arg;
    (void)peer;
    *ctx = calloc(1, sizeof(lines));
    return *ctx ? 0 : TW_ENOMEM;
}

static void lines_data(void *ctx, tw_transport *t, const void *data, size_t len)
{
    lines *s = ctx;
    const char *p = data;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n') {
            s->line[s->len] = '\0';
            serve_line(t, s->line);
            s->len = 0;
        } else if (s->len < sizeof s->line - 1) {
            s->line[s->len++] = p[i];
        }
    }
}

static void lines_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)t;
    (void)why;
    free(ctx); /* the jobs in flight hold the transport, not this state */
}

static const tw_protocol server_protocol = {NULL, lines_data, NULL, lines_lost};

/* ---- the client ------------------------------------------------------------------------ */

typedef struct asker {
    char got[4096];
    size_t len;
    bool closed;
} asker;

static asker client;

static void ask(void *ctx, tw_transport *t)
{
    (void)ctx;
    const char *requests = "fib 27\nfib 20\ncount 5\n";
    tw_transport_write(t, requests, strlen(requests));
}

static bool all_answers(void)
{
    return strstr(client.got, "fib 27 = 196418\n") && strstr(client.got, "fib 20 = 6765\n") &&
           strstr(client.got, "count done\n");
}

static void answers(void *ctx, tw_transport *t, const void *data, size_t len)
{
    (void)ctx;
    if (client.len + len < sizeof client.got) {
        memcpy(client.got + client.len, data, len);
        client.len += len;
        client.got[client.len] = '\0';
    }
    if (all_answers())
        tw_transport_lose_connection(t);
}

static void client_lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)ctx;
    (void)t;
    expect(tw_failure_code(why) == TW_ECONNDONE, "the client's connection ends cleanly");
    client.closed = true;
    tw_reactor_stop(reactor);
}

static const tw_protocol client_protocol = {ask, answers, NULL, client_lost};

static tw_result connect_failed(tw_result r, void *arg)
{
    (void)arg;
    fprintf(stderr, "socket_threads: %s\n", tw_failure_message(tw_result_as_failure(r)));
    failures++;
    tw_result_drop(r);
    tw_reactor_stop(reactor);
    return tw_result_none();
}

static void give_up(void *arg)
{
    (void)arg;
    expect(false, "the exchange finishes within 20 s");
    tw_reactor_stop(reactor);
}

int main(void)
{
    loop_thread = pthread_self();
    if (tw_reactor_create(&reactor) != 0)
        return 1;
    tw_factory server = {&server_protocol, lines_build, NULL};
    tw_listener *l;
    tw_failure *why;
    if (tw_endpoint_listen(reactor, "tcp:0:interface=127.0.0.1", &server, &l, &why) != 0) {
        fprintf(stderr, "socket_threads: %s\n", tw_failure_message(why));
        return 1;
    }
    tw_address a;
    tw_listener_address(l, &a);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:localhost:%d:timeout=10", tw_address_port(&a));
    printf("server on 127.0.0.1:%d; the client connects to %s\n", tw_address_port(&a), ep + 4);
    printf("   (\"localhost\" is looked up on a pool thread: at most half of them do lookups)\n");
    tw_factory cf = {&client_protocol, NULL, NULL};
    tw_deferred *d;
    tw_endpoint_connect(reactor, ep, &cf, &d);
    tw_deferred_add_errback(d, connect_failed, NULL);
    tw_deferred_unref(d);
    tw_reactor_call_later(reactor, 20.0, give_up, NULL, NULL);
    tw_reactor_run(reactor);

    expect(client.closed, "the client got every answer and closed");
    /* the count's lines arrive in the order the pool thread wrote them */
    char *t0 = strstr(client.got, "tick 0\n"), *t4 = strstr(client.got, "tick 4\n");
    char *done = strstr(client.got, "count done\n");
    expect(t0 && t4 && done && t0 < t4 && t4 < done, "the pool thread's lines arrived in its order");
    printf("the client sent: fib 27, fib 20, count 5; it got:\n");
    for (char *line = strtok(client.got, "\n"); line; line = strtok(NULL, "\n"))
        printf("   %s\n", line);
    printf("fib replies: computed on pool threads, written on the loop thread\n");
    printf("tick lines: written by a pool thread with tw_transport_write_from_thread\n");
    tw_listener_stop(l, NULL);
    tw_reactor_destroy(reactor);
    if (failures) {
        printf("socket_threads: %d check(s) failed\n", failures);
        return 1;
    }
    printf("socket_threads: all checks passed\n");
    return 0;
}
