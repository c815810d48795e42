/* Internal: the HTTP client's layout and the interfaces between its modules:
 * client.c (lifecycle, dispatch after curl calls, closing), watch.c (curl's
 * socket and timer callbacks as the reactor's fd watchers and one timer),
 * request.c (a request's easy handle and the callbacks that fill it),
 * response.c (results: the response value, failures and their codes).
 *
 * Threads: everything here belongs to the reactor's loop thread.
 *
 * Re-entrancy. Curl's callbacks (socket, timer, write, header, close
 * socket, resolver start) only record: they call the reactor and the
 * allocator, never curl and never user code. User code runs only when a
 * Deferred fires, and the client fires Deferreds only between curl calls:
 * after curl_multi_socket_action has returned (client.c's settle), while
 * closing, and in a canceller. A frame that fires and then touches the
 * client again holds `busy`; a destroy made meanwhile (from a callback)
 * closes the client at once and leaves the free to the last such frame. */
#ifndef TW_HTTP_INTERNAL_H
#define TW_HTTP_INTERNAL_H

#include <curl/curl.h>
#include <twine/http.h>

#include "base/diag.h"
#include "base/dlist.h"

typedef struct tw__http_req tw__http_req;

struct tw_http_client {
    tw_reactor *r;
    CURLM *multi;           /* NULL once closed */
    tw_delayed_call *timer; /* curl's timeout; our reference, NULL when none */
    uint8_t *watched;       /* by fd: TW_READABLE | TW_WRITABLE this client registered */
    size_t nwatched;        /* entries of `watched` */
    tw__dlink *reqs;        /* tw__http_req.link: transfers in flight, newest first */
    size_t nreqs;
    char *proxy; /* "" for none */
    size_t proxy_size;
    uint64_t trigger; /* the during-shutdown trigger */
    bool trigger_ran; /* then the reactor may be gone: the client no longer touches it */
    bool destroyed;
    unsigned busy;   /* frames that run user code and touch the client afterwards */
    int close_code;  /* 0 while open; the code transfers in flight fail with */
    const char *close_why;
    /* A callback could not reach the reactor (a watcher or the timer could
     * not be set up): after the curl call, every transfer fails with it. */
    int fatal;
    const char *fatal_why;
    uint64_t fd_events; /* fd callbacks run (tests) */
};

/* Sizes of a request's inline buffers: what most requests need, so that a
 * request is one allocation under glibc's per-thread cache limit (1 KiB). */
#define TW__HTTP_WHAT_INLINE 160
#define TW__HTTP_HEAD_INLINE 384

struct tw__http_req {
    tw__dlink link; /* in c->reqs */
    tw_http_client *c;
    CURL *easy;
    tw_deferred *d; /* our reference, until it fires */
    struct curl_slist *hdrs;
    char *what; /* "METHOD URL", for messages: what_buf, or allocated (what_size) */
    size_t what_size;
    char *body; /* the response body so far, NUL-terminated when body_cap > 0 */
    size_t body_len, body_cap, max_body;
    /* The raw header lines of the latest response (not its status line):
     * head_buf, or allocated once they outgrow it (head_cap bytes). */
    char *head;
    size_t head_len, head_cap;
    int err;            /* a failure of the client's own (TW_EOVERFLOW, TW_ENOMEM), or 0 */
    bool doomed;        /* to be failed by fail_all */
    bool refuse_lookup; /* the URL's host is under .invalid */
    bool no_body;       /* HEAD: a Content-Length announces a body that never comes */
    char errbuf[CURL_ERROR_SIZE];
    char what_buf[TW__HTTP_WHAT_INLINE];
    char head_buf[TW__HTTP_HEAD_INLINE];
};

/* ---- thread check -----------------------------------------------------------
 * The client belongs to its reactor's loop thread (twine/reactor.h's rule:
 * the creating thread before the loop first runs, the loop thread while it
 * runs, anyone once it has shut down). */
#ifdef TW_DEBUG
void tw__http_check_thread(const tw_http_client *c, const char *function);
#define TW__HCHECK(c, fn) tw__http_check_thread((c), (fn))
#else
#define TW__HCHECK(c, fn) ((void)0)
#endif

/* ---- watch.c ---------------------------------------------------------------- */
/* CURLMOPT_SOCKETFUNCTION and CURLMOPT_TIMERFUNCTION (their data: the client). */
int tw__http_on_socket(CURL *easy, curl_socket_t fd, int what, void *client, void *sockp);
int tw__http_on_timer(CURLM *multi, long timeout_ms, void *client);
/* CURLOPT_CLOSESOCKETFUNCTION: forgets fd's watchers before closing it, so
 * that a number curl reuses at once never inherits a stale registration. */
int tw__http_on_close_socket(void *client, curl_socket_t fd);
/* Makes the reactor watch fd for `events` (TW_READABLE | TW_WRITABLE, not
 * 0) on the client's behalf. Tolerates a number that was closed and opened
 * again behind the client's back: if the poller refuses the change, the fd
 * is registered afresh. 0 or the reactor's code. */
int tw__http_watch(tw_http_client *c, int fd, unsigned events);
/* Stops watching fd (which may be closed already); nothing if not watched. */
void tw__http_unwatch(tw_http_client *c, int fd);
/* Stops watching every fd, cancels curl's timer, frees the table. */
void tw__http_unwatch_all(tw_http_client *c);

/* ---- client.c ---------------------------------------------------------------- */
/* Unlinks req from its client and takes its easy handle out of the multi
 * handle (the caller still reads its info, then frees it). */
void tw__http_detach(tw__http_req *req);
/* Runs curl_multi_socket_action(fd, flags) (fd CURL_SOCKET_TIMEOUT: the
 * timer), then fires what it finished. */
void tw__http_action(tw_http_client *c, curl_socket_t fd, int flags);

/* ---- request.c ---------------------------------------------------------------- */
/* Builds the easy handle of a request; 0, TW_EINVAL or TW_ENOMEM (req is then
 * freed by the caller with tw__http_req_free). */
int tw__http_req_setup(tw__http_req *req, const tw_http_request *rq);
/* Frees req and what it holds (the easy handle too, if any); not req->d. */
void tw__http_req_free(tw__http_req *req);

/* ---- response.c ---------------------------------------------------------------- */
/* The result of a finished transfer (curl's code): the response value, or a
 * failure. Takes req's body. Reads the easy handle's info: call before
 * freeing it. */
tw_result tw__http_result(tw__http_req *req, CURLcode code);
/* A failure of req with `code`, "METHOD URL: why". */
tw_result tw__http_fail(const tw__http_req *req, int code, const char *why);

#endif
