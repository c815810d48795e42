/* A small HTTP/1.1 server for the HTTP client's tests: plain sockets on
 * 127.0.0.1, an accepting thread and one thread per connection, blocking
 * I/O, and no twine code, so that it checks the client independently.
 *
 * Keep-alive by default (HTTP/1.1); "Connection: close" from the client, or
 * /close, ends the connection after the response. "Expect: 100-continue" is
 * answered with a 100 before the body is read. Resources:
 *
 *   GET  /hello                  200, "hello, world\n", text/plain
 *   GET  /status/NNN             status NNN, body "status NNN\n"
 *   GET  /bytes?n=N&seed=S       200, N bytes of http_server_pattern(S, i), Content-Length
 *   HEAD /bytes?n=N              the same head (Content-Length: N), no body
 *   GET  /chunked?n=N&seed=S     200, the same N bytes in chunks of varying sizes
 *                                (Transfer-Encoding: chunked)
 *   GET  /stall?n=N              200 announcing 2N + 1 bytes, sends N of them (pattern
 *                                seed 0), then waits until the client goes away
 *   GET  /silent                 reads the request, answers nothing, waits likewise
 *   GET  /gate?n=N&bytes=B&seed=S  holds each request until N of them wait, then
 *                                answers each with B bytes of the pattern (seed S):
 *                                N requests in flight at once, on N connections
 *   POST /echo                   200, the request body; Content-Type echoed
 *   GET  /headers                200, the request's header lines as received
 *   GET  /many-headers?n=N       200, "end", with headers X-Header-0 to X-Header-(N-1)
 *                                ("   value i  ") and X-Folded, folded over two lines
 *   GET  /redirect               302 to /hello
 *   GET  /close                  200 "bye\n", Connection: close, then closes
 *   anything else                404, "not found\n"
 */
#ifndef TW_TEST_HTTP_SERVER_H
#define TW_TEST_HTTP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct http_server http_server;

/* Listens on 127.0.0.1 on a port the kernel picks; NULL on failure. */
http_server *http_server_start(void);
int http_server_port(const http_server *s);
/* Closes the listener and every connection, joins every thread, frees s. */
void http_server_stop(http_server *s);

enum http_server_count {
    HS_ACCEPTED, /* connections accepted */
    HS_REQUESTS, /* requests read */
    HS_STALLED,  /* /stall and /silent requests that reached their wait */
    HS_GONE,     /* connections the client closed or reset (not the server's stop) */
    HS_OPEN,     /* connections open now */
    HS_MAX_OPEN, /* the most open at once */
    HS_COUNTS
};

int http_server_count(http_server *s, enum http_server_count which);
/* Waits until the count reaches at least n; false if `seconds` pass first. */
bool http_server_wait(http_server *s, enum http_server_count which, int n, double seconds);

/* Byte i of the body served with seed `seed`. */
static inline unsigned char http_server_pattern(uint32_t seed, uint64_t i)
{
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 32 | seed);
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return (unsigned char)x;
}

#endif
