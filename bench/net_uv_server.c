/*
 * net_uv_server.c — the net suite's workloads served with libuv's uv_tcp, the
 * way libuv's own echo benchmark and its users write them.
 *
 *   pingpong, stream  uv_read_start with a 64 KiB buffer malloc'd per read
 *                     (libuv's suggested size); every read goes back with one
 *                     uv_write, whose callback frees the buffer; on EOF,
 *                     uv_shutdown, then uv_close
 *   accept            uv_accept; the greeting with one uv_write; uv_read_start
 *                     until the client's reset, then uv_close
 *   write_batch       one uv_write per 8-byte message (the server side of
 *                     libuv's tcp_write_batch benchmark: a uv_write_t per
 *                     message, preallocated), then uv_shutdown and uv_close
 *                     once the shutdown completes
 * SIGTERM: a uv_signal_t closes every handle, and uv_run returns.
 *
 * usage: net_uv_server pingpong|stream|accept|write_batch PORT [COUNT]
 */
#include "net_common.h"

#include <signal.h>
#include <uv.h>

static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_signal_t sigterm;
static int workload;
static long batch_count;
static unsigned char *batch_msgs;

/* write_batch: one connection at a time (the client makes them in turn). */
static struct {
    uv_write_t *reqs;
    uv_buf_t *bufs;
    uv_shutdown_t shutdown;
    long written; /* write callbacks with status 0 */
    bool busy;
} batch;

static void check(const char *what, int rc)
{
    if (rc != 0) {
        fprintf(stderr, "net_uv_server: %s: %s\n", what, uv_strerror(rc));
        exit(1);
    }
}

static void on_closed(uv_handle_t *h)
{
    free(h);
}

static void close_conn(uv_stream_t *s)
{
    if (!uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    close_conn(req->handle);
    free(req);
}

/* ---- echo ---- */
struct echo_write {
    uv_write_t req;
    uv_buf_t buf;
};

static void echo_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void echo_written(uv_write_t *req, int status)
{
    struct echo_write *w = (struct echo_write *)req;
    (void)status; /* a failed write also shows up as a read error */
    free(w->buf.base);
    free(w);
}

static void echo_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0) {
        struct echo_write *w = malloc(sizeof *w);
        if (!w) {
            fprintf(stderr, "net_uv_server: out of memory\n");
            exit(1);
        }
        w->buf = uv_buf_init(buf->base, (unsigned)nread);
        check("uv_write", uv_write(&w->req, s, &w->buf, 1, echo_written));
        return;
    }
    free(buf->base);
    if (nread == UV_EOF) {
        uv_shutdown_t *req = malloc(sizeof *req);
        if (!req || uv_shutdown(req, s, on_shutdown) != 0) {
            free(req);
            close_conn(s);
        }
    } else if (nread < 0) {
        close_conn(s);
    }
}

/* ---- accept ---- */
static char sink[64];

static void sink_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(sink, sizeof sink);
}

static void greet_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread < 0)
        close_conn(s);
}

static void greet_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* ---- write_batch ---- */
static void batch_written(uv_write_t *req, int status)
{
    (void)req;
    if (status == 0)
        batch.written++;
}

static void batch_done(uv_shutdown_t *req, int status)
{
    if (status == 0 && batch.written != batch_count) {
        fprintf(stderr, "net_uv_server: %ld of %ld writes completed\n", batch.written, batch_count);
        exit(1);
    }
    batch.busy = false;
    close_conn(req->handle);
}

static void batch_start(uv_stream_t *s)
{
    long i;

    if (batch.busy) {
        fprintf(stderr, "net_uv_server: write_batch serves one connection at a time\n");
        exit(1);
    }
    batch.busy = true;
    batch.written = 0;
    for (i = 0; i < batch_count; i++)
        check("uv_write", uv_write(&batch.reqs[i], s, &batch.bufs[i], 1, batch_written));
    check("uv_shutdown", uv_shutdown(&batch.shutdown, s, batch_done));
}

static void on_connection(uv_stream_t *server, int status)
{
    uv_tcp_t *c;

    check("connection", status);
    c = malloc(sizeof *c);
    if (!c) {
        fprintf(stderr, "net_uv_server: out of memory\n");
        exit(1);
    }
    check("uv_tcp_init", uv_tcp_init(loop, c));
    check("uv_accept", uv_accept(server, (uv_stream_t *)c));
    check("uv_tcp_nodelay", uv_tcp_nodelay(c, 1));
    switch (workload) {
    case NET_ACCEPT: {
        static uv_buf_t greeting;
        uv_write_t *req = malloc(sizeof *req);
        if (!req) {
            fprintf(stderr, "net_uv_server: out of memory\n");
            exit(1);
        }
        greeting = uv_buf_init((char *)NET_GREETING, NET_GREETING_SIZE);
        check("uv_write", uv_write(req, (uv_stream_t *)c, &greeting, 1, greet_written));
        check("uv_read_start", uv_read_start((uv_stream_t *)c, sink_alloc, greet_read));
        break;
    }
    case NET_WRITE_BATCH:
        batch_start((uv_stream_t *)c);
        break;
    default:
        check("uv_read_start", uv_read_start((uv_stream_t *)c, echo_alloc, echo_read));
    }
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    uv_close(h, h->type == UV_TCP && h != (uv_handle_t *)&listener ? on_closed : NULL);
}

static void on_sigterm(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    uv_walk(loop, close_any, NULL);
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    int salen = sizeof sa, port;
    long i;

    net_server_args(argc, argv, &workload, &port, &batch_count);
    signal(SIGPIPE, SIG_IGN);
    if (workload == NET_WRITE_BATCH) {
        batch_msgs = net_batch_alloc(batch_count);
        batch.reqs = calloc((size_t)batch_count, sizeof *batch.reqs);
        batch.bufs = calloc((size_t)batch_count, sizeof *batch.bufs);
        if (!batch.reqs || !batch.bufs) {
            fprintf(stderr, "net_uv_server: out of memory\n");
            return 1;
        }
        for (i = 0; i < batch_count; i++)
            batch.bufs[i] =
                uv_buf_init((char *)batch_msgs + (size_t)i * NET_BATCH_MSG, NET_BATCH_MSG);
    }
    loop = uv_default_loop();
    check("uv_signal_init", uv_signal_init(loop, &sigterm));
    check("uv_signal_start", uv_signal_start(&sigterm, on_sigterm, SIGTERM));
    check("uv_tcp_init", uv_tcp_init(loop, &listener));
    check("uv_ip4_addr", uv_ip4_addr("127.0.0.1", port, &sa));
    check("uv_tcp_bind", uv_tcp_bind(&listener, (const struct sockaddr *)&sa, 0));
    check("uv_listen", uv_listen((uv_stream_t *)&listener, NET_BACKLOG, on_connection));
    check("uv_tcp_getsockname",
          uv_tcp_getsockname(&listener, (struct sockaddr *)&sa, &salen));
    net_server_ready(ntohs(sa.sin_port));
    check("uv_run", uv_run(loop, UV_RUN_DEFAULT));
    check("uv_loop_close", uv_loop_close(loop));
    free(batch.reqs);
    free(batch.bufs);
    free(batch_msgs);
    return 0;
}
