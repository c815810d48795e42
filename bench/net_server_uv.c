/*
 * net_server_uv — the libuv server of the net suite, written the way
 * libuv's own echo benchmark and documentation write one.
 *
 *     net_server_uv echo            uv_read_start; each read goes back with one
 *                                   uv_write (its request and buffer allocated,
 *                                   freed in the write callback); reading stops
 *                                   while more than 64 KiB wait to be written
 *     net_server_uv batch COUNT     COUNT 8-byte messages to the first connection,
 *                                   one uv_write each, as fast as the write queue
 *                                   allows (kept under 64 KiB), then exits
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define HIGH (64 * 1024)

static uv_loop_t *loop;
static uv_tcp_t server;
static long batch_count;

typedef struct wreq {
    uv_write_t req;
    uv_buf_t buf;
} wreq;

static void on_close(uv_handle_t *h)
{
    free(h);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = suggested;
}

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    uv_stream_t *s = req->handle;
    free(w->buf.base);
    free(w);
    if (status == 0 && uv_stream_get_write_queue_size(s) <= HIGH / 4 && !uv_is_closing((uv_handle_t *)s))
        uv_read_start(s, alloc_cb, NULL); /* resumes (a no-op while reading) */
    (void)status;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n > 0) {
        wreq *w = malloc(sizeof *w);
        w->buf = uv_buf_init(buf->base, (unsigned)n);
        uv_write(&w->req, s, &w->buf, 1, on_write);
        if (uv_stream_get_write_queue_size(s) > HIGH)
            uv_read_stop(s);
        return;
    }
    free(buf->base);
    if (n < 0)
        uv_close((uv_handle_t *)s, on_close);
}

/* ---- batch ---------------------------------------------------------------------- */

static long sent;
static uv_stream_t *bstream;
static char msg[8] = "0123456\n";

static void produce(void);

static void on_batch_close(uv_handle_t *h)
{
    free(h);
    uv_stop(loop);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    uv_close((uv_handle_t *)req->handle, on_batch_close);
    free(req);
}

static void on_batch_write(uv_write_t *req, int status)
{
    free(req);
    if (status == 0)
        produce();
}

static void produce(void)
{
    while (sent < batch_count && uv_stream_get_write_queue_size(bstream) <= HIGH) {
        uv_write_t *req = malloc(sizeof *req);
        uv_buf_t b = uv_buf_init(msg, sizeof msg);
        uv_write(req, bstream, &b, 1, on_batch_write);
        sent++;
    }
    if (sent == batch_count && bstream) {
        uv_shutdown_t *sh = malloc(sizeof *sh);
        uv_shutdown(sh, bstream, on_shutdown); /* after the queued writes */
        bstream = NULL;
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    if (status != 0)
        return;
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(loop, c);
    if (uv_accept(l, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, on_close);
        return;
    }
    uv_tcp_nodelay(c, 1);
    if (batch_count) {
        if (bstream || sent) {
            uv_close((uv_handle_t *)c, on_close);
            return;
        }
        bstream = (uv_stream_t *)c;
        produce();
    } else {
        uv_read_start((uv_stream_t *)c, alloc_cb, on_read);
    }
}

static void on_signal(uv_signal_t *h, int sig)
{
    (void)sig;
    uv_close((uv_handle_t *)h, NULL);
    uv_stop(loop);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "echo") != 0 && (strcmp(argv[1], "batch") != 0 || argc < 3))) {
        fprintf(stderr, "usage: %s echo | batch COUNT\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "batch") == 0)
        batch_count = atol(argv[2]);
    loop = uv_default_loop();
    uv_signal_t sig;
    uv_signal_init(loop, &sig);
    uv_signal_start(&sig, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&sig);
    uv_tcp_init(loop, &server);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&server, 1024, on_connection) != 0)
        return 1;
    int len = sizeof a;
    uv_tcp_getsockname(&server, (struct sockaddr *)&a, &len);
    printf("listening on %d\n", ntohs(a.sin_port));
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
