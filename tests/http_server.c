/* The HTTP client tests' server (http_server.h). Blocking sockets, a thread
 * per connection. Stopping shuts every socket down, which wakes whatever
 * call a thread is blocked in; then every thread is joined. */
#define _GNU_SOURCE
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
    struct conn *next;
    http_server *s;
    int fd;
    pthread_t thread;
} conn;

struct http_server {
    int lfd;
    int port;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    int gate_waiting;  /* /gate requests held */
    unsigned gate_gen; /* opened gates */
    conn *conns; /* every connection ever accepted, until stop joins it */
    int counts[HS_COUNTS];
};

/* ---- counts ------------------------------------------------------------------- */

static void count_add(http_server *s, enum http_server_count which, int d)
{
    pthread_mutex_lock(&s->mu);
    s->counts[which] += d;
    if (which == HS_OPEN && s->counts[HS_OPEN] > s->counts[HS_MAX_OPEN])
        s->counts[HS_MAX_OPEN] = s->counts[HS_OPEN];
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int http_server_count(http_server *s, enum http_server_count which)
{
    pthread_mutex_lock(&s->mu);
    int n = s->counts[which];
    pthread_mutex_unlock(&s->mu);
    return n;
}

bool http_server_wait(http_server *s, enum http_server_count which, int n, double seconds)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)seconds;
    end.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (s->counts[which] < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->cv, &s->mu, &end);
    bool ok = s->counts[which] >= n;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static bool stopping(http_server *s)
{
    pthread_mutex_lock(&s->mu);
    bool st = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---- I/O ---------------------------------------------------------------------- */

static bool send_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

static bool send_str(int fd, const char *s)
{
    return send_all(fd, s, strlen(s));
}

static bool send_pattern(int fd, uint32_t seed, uint64_t from, uint64_t n)
{
    unsigned char buf[65536];
    while (n > 0) {
        size_t k = n < sizeof buf ? (size_t)n : sizeof buf;
        for (size_t i = 0; i < k; i++)
            buf[i] = http_server_pattern(seed, from + i);
        if (!send_all(fd, buf, k))
            return false;
        from += k;
        n -= k;
    }
    return true;
}

/* Blocks until the client closes or resets the connection (true), or the
 * server stops (false). Whatever the client still sends is discarded. */
static bool wait_gone(http_server *s, int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0)
            continue;
        return !stopping(s);
    }
}

/* ---- requests ----------------------------------------------------------------- */

typedef struct request {
    char method[16];
    char target[1024];
    char headers[16384]; /* the header lines, as received */
    size_t content_length;
    bool expect_continue, close, chunked;
    char content_type[256];
    char *body;
} request;

/* The value of header `name` in the lines at h, copied into out. */
static bool header_value(const char *h, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *line = h; *line;) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = (size_t)(eol - v);
            if (n >= size)
                n = size - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        line = eol + 2;
    }
    return false;
}

/* Reads one request (its body too) from fd, whose unread bytes are in
 * buf[0..*have). false at the end of the connection or on a bad request. */
static bool read_request(http_server *s, int fd, char *buf, size_t cap, size_t *have, request *rq)
{
    char *end;
    buf[*have] = '\0';
    while (!(end = strstr(buf, "\r\n\r\n"))) {
        if (*have > 0 && !(buf[0] >= 'A' && buf[0] <= 'Z')) {
            /* Not HTTP (a TLS ClientHello, say): answer so, and close. */
            send_str(fd, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            return false;
        }
        if (*have >= cap - 1)
            return false;
        ssize_t r = recv(fd, buf + *have, cap - 1 - *have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0 || errno == ECONNRESET)
                if (!stopping(s))
                    count_add(s, HS_GONE, 1);
            return false;
        }
        *have += (size_t)r;
        buf[*have] = '\0';
    }
    size_t head = (size_t)(end - buf) + 4;
    char *line_end = strstr(buf, "\r\n");
    char version[16];
    *line_end = '\0';
    if (sscanf(buf, "%15s %1023s %15s", rq->method, rq->target, version) != 3)
        return false;
    const char *lines = line_end + 2;
    size_t hl = head - (size_t)(lines - buf);
    if (hl >= sizeof rq->headers)
        return false;
    memcpy(rq->headers, lines, hl);
    rq->headers[hl] = '\0';
    char v[256];
    rq->content_length = header_value(rq->headers, "Content-Length", v, sizeof v)
                             ? (size_t)strtoull(v, NULL, 10)
                             : 0;
    rq->expect_continue = header_value(rq->headers, "Expect", v, sizeof v) &&
                          strcasecmp(v, "100-continue") == 0;
    rq->close = (header_value(rq->headers, "Connection", v, sizeof v) &&
                 strcasecmp(v, "close") == 0) ||
                strcmp(version, "HTTP/1.0") == 0;
    rq->chunked = header_value(rq->headers, "Transfer-Encoding", v, sizeof v);
    if (!header_value(rq->headers, "Content-Type", rq->content_type, sizeof rq->content_type))
        rq->content_type[0] = '\0';
    if (rq->chunked || rq->content_length > ((size_t)64 << 20))
        return false;
    /* The body: what followed the head in buf, then the socket. */
    size_t extra = *have - head;
    rq->body = malloc(rq->content_length + 1);
    if (!rq->body)
        return false;
    size_t got = extra < rq->content_length ? extra : rq->content_length;
    memcpy(rq->body, buf + head, got);
    memmove(buf, buf + head + got, *have - head - got);
    *have -= head + got;
    if (rq->expect_continue && got < rq->content_length &&
        !send_str(fd, "HTTP/1.1 100 Continue\r\n\r\n"))
        return false;
    while (got < rq->content_length) {
        ssize_t r = recv(fd, rq->body + got, rq->content_length - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    rq->body[got] = '\0';
    count_add(s, HS_REQUESTS, 1);
    return true;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 302:
        return "Found";
    case 404:
        return "Not Found";
    case 500:
        return "Internal Server Error";
    default:
        return "Status";
    }
}

static bool respond(int fd, int status, const char *extra_headers, const char *body, size_t len)
{
    char head[1024];
    snprintf(head, sizeof head,
             "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n", status, reason(status), len,
             extra_headers ? extra_headers : "");
    return send_str(fd, head) && send_all(fd, body, len);
}

static uint64_t query_num(const char *target, const char *key, uint64_t otherwise)
{
    const char *q = strchr(target, '?');
    size_t kl = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, kl) == 0 && q[kl] == '=')
            return strtoull(q + kl + 1, NULL, 10);
        q = strchr(q, '&');
    }
    return otherwise;
}

static bool path_is(const char *target, const char *path)
{
    size_t n = strlen(path);
    return strncmp(target, path, n) == 0 && (target[n] == '\0' || target[n] == '?');
}

/* Serves one request; false when the connection must end. */
static bool serve(http_server *s, int fd, request *rq)
{
    const char *t = rq->target;
    if (path_is(t, "/hello"))
        return respond(fd, 200, "Content-Type: text/plain\r\n", "hello, world\n", 13);
    if (strncmp(t, "/status/", 8) == 0) {
        int st = atoi(t + 8);
        char body[64];
        int n = snprintf(body, sizeof body, "status %d\n", st);
        return respond(fd, st, NULL, body, (size_t)n);
    }
    if (path_is(t, "/bytes")) {
        uint64_t n = query_num(t, "n", 0);
        uint32_t seed = (uint32_t)query_num(t, "seed", 0);
        char head[256];
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 "Content-Length: %llu\r\n\r\n",
                 (unsigned long long)n);
        if (strcmp(rq->method, "HEAD") == 0) /* the head alone, announcing the body */
            return send_str(fd, head);
        return send_str(fd, head) && send_pattern(fd, seed, 0, n);
    }
    if (path_is(t, "/chunked")) {
        uint64_t n = query_num(t, "n", 0);
        uint32_t seed = (uint32_t)query_num(t, "seed", 0);
        if (!send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
            return false;
        uint64_t off = 0, size = 1;
        while (off < n) {
            uint64_t k = n - off < size ? n - off : size;
            char len[32];
            snprintf(len, sizeof len, "%llx\r\n", (unsigned long long)k);
            if (!send_str(fd, len) || !send_pattern(fd, seed, off, k) || !send_str(fd, "\r\n"))
                return false;
            off += k;
            size = size * 3 + 7; /* 1, 10, 37, 118, ...: sizes of every magnitude */
            if (size > 100000)
                size = 1 + size % 997;
        }
        return send_str(fd, "0\r\n\r\n");
    }
    if (path_is(t, "/stall") || path_is(t, "/silent")) {
        if (path_is(t, "/stall")) {
            uint64_t n = query_num(t, "n", 0);
            char head[256];
            snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                     (unsigned long long)(2 * n + 1));
            if (!send_str(fd, head) || !send_pattern(fd, 0, 0, n))
                return false;
        }
        count_add(s, HS_STALLED, 1);
        if (wait_gone(s, fd))
            count_add(s, HS_GONE, 1);
        return false;
    }
    if (path_is(t, "/gate")) {
        int n = (int)query_num(t, "n", 1);
        pthread_mutex_lock(&s->mu);
        if (++s->gate_waiting >= n) {
            s->gate_waiting = 0;
            s->gate_gen++;
            pthread_cond_broadcast(&s->cv);
        } else {
            unsigned gen = s->gate_gen;
            while (gen == s->gate_gen && !s->stopping)
                pthread_cond_wait(&s->cv, &s->mu);
        }
        bool st = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (st)
            return false;
        uint64_t len = query_num(t, "bytes", 0);
        uint32_t seed = (uint32_t)query_num(t, "seed", 0);
        char head[256];
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                 (unsigned long long)len);
        return send_str(fd, head) && send_pattern(fd, seed, 0, len);
    }
    if (path_is(t, "/echo")) {
        char extra[512] = "";
        if (rq->content_type[0])
            snprintf(extra, sizeof extra, "Content-Type: %s\r\n", rq->content_type);
        return respond(fd, 200, extra, rq->body, rq->content_length);
    }
    if (path_is(t, "/headers"))
        return respond(fd, 200, "Content-Type: text/plain\r\n", rq->headers,
                       strlen(rq->headers));
    if (path_is(t, "/many-headers")) {
        int n = (int)query_num(t, "n", 0);
        if (!send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"))
            return false;
        for (int i = 0; i < n; i++) {
            char h[64];
            snprintf(h, sizeof h, "X-Header-%d:   value %d  \r\n", i, i);
            if (!send_str(fd, h))
                return false;
        }
        return send_str(fd, "X-Folded: first\r\n  second\r\n\r\nend");
    }
    if (path_is(t, "/redirect"))
        return respond(fd, 302, "Location: /hello\r\n", "moved\n", 6);
    if (path_is(t, "/close")) {
        respond(fd, 200, "Connection: close\r\n", "bye\n", 4);
        return false;
    }
    return respond(fd, 404, "Content-Type: text/plain\r\n", "not found\n", 10);
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    http_server *s = c->s;
    size_t cap = 65536, have = 0;
    char *buf = malloc(cap);
    bool go = buf != NULL;
    while (go) {
        request rq;
        memset(&rq, 0, sizeof rq);
        go = read_request(s, c->fd, buf, cap, &have, &rq);
        if (go)
            go = serve(s, c->fd, &rq) && !rq.close;
        free(rq.body);
    }
    free(buf);
    count_add(s, HS_OPEN, -1);
    return NULL;
}

static void *accept_main(void *arg)
{
    http_server *s = arg;
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* shut down by stop */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->s = s;
        c->fd = fd;
        pthread_mutex_lock(&s->mu);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            free(c);
            return NULL;
        }
        c->next = s->conns;
        s->conns = c;
        s->counts[HS_ACCEPTED]++;
        if (++s->counts[HS_OPEN] > s->counts[HS_MAX_OPEN])
            s->counts[HS_MAX_OPEN] = s->counts[HS_OPEN];
        pthread_cond_broadcast(&s->cv);
        if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
            s->conns = c->next;
            s->counts[HS_OPEN]--;
            close(fd);
            free(c);
        }
        pthread_mutex_unlock(&s->mu);
    }
}

http_server *http_server_start(void)
{
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    int one = 1;
    if (s->lfd < 0 || setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(s->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->lfd, 512) != 0 ||
        getsockname(s->lfd, (struct sockaddr *)&a, &al) != 0 ||
        pthread_create(&s->acceptor, NULL, accept_main, s) != 0) {
        if (s->lfd >= 0)
            close(s->lfd);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    s->port = ntohs(a.sin_port);
    return s;
}

int http_server_port(const http_server *s)
{
    return s->port;
}

void http_server_stop(http_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv); /* releases /gate requests */
    pthread_mutex_unlock(&s->mu);
    shutdown(s->lfd, SHUT_RDWR); /* wakes accept() */
    pthread_join(s->acceptor, NULL);
    close(s->lfd);
    /* No connection joins the list any more. */
    for (conn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    while (s->conns) {
        conn *c = s->conns;
        s->conns = c->next;
        pthread_join(c->thread, NULL);
        close(c->fd);
        free(c);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
