/*
 * twine/http.h — an HTTP client on libcurl, driven by the reactor.
 *
 * A client runs any number of HTTP/1.1 (and HTTPS) transfers at once on the
 * reactor's loop thread, without threads of its own: libcurl's multi-socket
 * interface tells the client which sockets to watch and when to wake it, and
 * the client turns those into the reactor's fd watchers and a timer. Each
 * request returns a Deferred that fires with the response (status, headers,
 * body) or fails with a tw_failure:
 *
 *     static tw_result show(tw_result r, void *arg)            // the loop thread
 *     {
 *         if (tw_result_is_failure(r)) {                        // DNS, connect, TLS, timeout...
 *             fprintf(stderr, "%s\n", tw_failure_message(tw_result_as_failure(r)));
 *         } else {
 *             tw_http_response *resp = r.ptr;                    // ours until dropped
 *             printf("%d, %zu bytes of %s\n", resp->status, resp->body_len,
 *                    tw_http_response_header(resp, "Content-Type"));
 *         }
 *         tw_result_drop(r);                                    // frees the response
 *         tw_reactor_stop(arg);
 *         return tw_result_none();
 *     }
 *
 *     tw_reactor *r;
 *     tw_http_client *c;
 *     tw_deferred *d;
 *     tw_reactor_create(&r);
 *     tw_http_client_create(r, NULL, &c);
 *     const char *hdrs[] = {"Accept: application/json", NULL};
 *     tw_http_request req = {.method = "POST", .url = "http://127.0.0.1:8080/count",
 *                            .headers = hdrs, .body = "n=1", .body_len = 3,
 *                            .timeout = 5.0};
 *     tw_http_client_request(c, &req, &d);
 *     tw_deferred_add_both(d, show, r);
 *     tw_deferred_unref(d);               // the client keeps it until it fires
 *     tw_reactor_run(r);
 *     tw_http_client_destroy(c);
 *     tw_reactor_destroy(r);
 *
 * Results. An HTTP response of any status — 404 and 500 included — is a
 * result, not a failure. A failure carries a TW_E* code and a message that
 * names the method, the URL (without any user:password@ it holds, so that
 * logs never see credentials) and curl's own explanation:
 *     TW_ENOTFOUND     the host name did not resolve
 *     TW_ECONNREFUSED  nothing listens there (TW_EUNREACH: no route to it)
 *     TW_ETIMEDOUT     the request's timeout or connect_timeout passed
 *     TW_ETLS          the TLS handshake or the peer's certificate failed
 *     TW_ECONNRESET, TW_ECONNLOST  the connection broke, or closed mid-response
 *     TW_EPROTO        the server's reply was not HTTP, too many redirects
 *     TW_EOVERFLOW     the body is larger than the request's max_body
 *     TW_ECANCELED     the Deferred was cancelled
 *     TW_ESHUTDOWN     the client was destroyed, or the reactor shut down
 *     TW_EIO           anything else curl reports
 * A host under .invalid never resolves (RFC 6761): it fails with TW_ENOTFOUND
 * without a lookup.
 *
 * Cancelling a request's Deferred aborts its transfer at once (the connection
 * is closed, never reused) and fails it with TW_ECANCELED. Destroying the
 * client fails every transfer in flight with TW_ESHUTDOWN; so does the
 * reactor's shutdown (a during-shutdown trigger), which also closes every
 * connection and frees curl's handles. The client then refuses requests with
 * TW_ESHUTDOWN, and may be destroyed before or after the reactor.
 *
 * Connections. Requests of one client to one host reuse its connections
 * (HTTP/1.1 keep-alive): a connection goes back to the client's pool when
 * its response is complete. Proxies are never taken from the environment
 * (http_proxy and friends): only the client's `proxy`.
 *
 * Threads. A client belongs to its reactor's loop thread, like the reactor's
 * own functions (twine/reactor.h); builds with TW_DEBUG report a call from
 * another thread, naming the function. Other threads hand requests over with
 * tw_reactor_call_from_thread.
 *
 * libcurl. twine calls curl_global_init(CURL_GLOBAL_DEFAULT) once, under
 * pthread_once, when the first client is created, and never calls
 * curl_global_cleanup (whose memory stays reachable until exit): libcurl
 * 7.88's global init is not thread-safe unless curl_version_info reports
 * CURL_VERSION_THREADSAFE. A program that also uses libcurl itself calls
 * curl_global_init before it creates the first client (curl counts the calls).
 *
 * Linking. The client is its own library, so that programs that do not use
 * it do not link libcurl: link with -ltwine-http -ltwine (pkg-config
 * twine-http), or in CMake find_package(twine COMPONENTS http) and link
 * twine::twine_http. This header is not included by <twine.h>.
 *
 * docs/http.md has the internals: how curl's socket and timer callbacks map
 * to the reactor's watchers and timers, ownership, cancellation, shutdown.
 */
#ifndef TWINE_HTTP_H
#define TWINE_HTTP_H

#include "base.h"
#include "deferred.h"
#include "reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tw_http_client tw_http_client;

/* ==== the client ========================================================== */

typedef struct tw_http_client_config {
    long max_connections;      /* open at once, all hosts; 0: no limit */
    long max_host_connections; /* open at once to one host; 0: no limit */
    long max_idle_connections; /* kept open for reuse; 0: curl's default (4 per transfer) */
    const char *proxy;         /* "http://host:port" (copied); NULL: none */
} tw_http_client_config;

#define TW_HTTP_CLIENT_CONFIG_INIT {0, 0, 0, NULL}

/* cfg may be NULL (the defaults above). TW_EINVAL for a negative limit,
 * TW_ESHUTDOWN once the reactor has run its during-shutdown triggers,
 * TW_ESYS if libcurl cannot initialise. */
TW_API int tw_http_client_create(tw_reactor *r, const tw_http_client_config *cfg,
                                 tw_http_client **out);
/* Fails the transfers in flight with TW_ESHUTDOWN (their callbacks run before
 * this returns), closes every connection and frees the client. May be called
 * from a request's callback; NULL is ignored. */
TW_API void tw_http_client_destroy(tw_http_client *c);
/* Transfers in flight (started, not yet fired). */
TW_API size_t tw_http_client_pending(const tw_http_client *c);

/* ==== requests ============================================================
 * All-zero fields are the defaults, so a designated initializer names only
 * what differs. Everything is copied: the request, its strings and its body
 * may be freed as soon as tw_http_client_request returns. */

#define TW_HTTP_MAX_BODY_DEFAULT ((size_t)64 << 20) /* 64 MiB */

typedef struct tw_http_request {
    const char *method;         /* NULL: "GET", or "POST" when there is a body */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* NULL-terminated; each "Name: value", "Name:" (drops a
                                   header curl would send) or "Name;" (an empty value) */
    const void *body;           /* the request body, body_len bytes; NULL: none (without a
                                   Content-Type header, curl sends it as a form) */
    size_t body_len;
    double timeout;             /* seconds for the whole request; 0 or negative: no limit */
    double connect_timeout;     /* seconds to connect; 0 or negative: curl's (300 s) */
    size_t max_body;            /* response body bytes; 0: TW_HTTP_MAX_BODY_DEFAULT,
                                   SIZE_MAX: no limit (a HEAD's response has no body,
                                   whatever its Content-Length says) */
    bool follow_redirects;      /* off: a 3xx is the result */
    int max_redirects;          /* when following; 0: 20 */
} tw_http_request;

/* Starts the request; *out gets one reference to its Deferred. TW_EINVAL for
 * a malformed URL, a scheme other than http and https, a method that is not
 * an HTTP token, a header without ':' (or ';') or with a line break, body_len
 * without a body, a NaN timeout, a negative max_redirects; TW_ESHUTDOWN
 * once the client is destroyed or the reactor has shut down; TW_ENOMEM. */
TW_API int tw_http_client_request(tw_http_client *c, const tw_http_request *req,
                                  tw_deferred **out);
/* A GET of url with the defaults. */
TW_API int tw_http_client_get(tw_http_client *c, const char *url, tw_deferred **out);

/* ==== responses ===========================================================
 * What a request's Deferred fires with: a value whose drop function frees
 * it (tw_result_drop). Headers are those of the final response, in the order
 * received, trailers of a chunked body after them; the status line, and the
 * headers of interim (100) and followed redirect responses, are not kept. */

typedef struct tw_http_header {
    const char *name;
    const char *value; /* without surrounding whitespace */
} tw_http_header;

typedef struct tw_http_response {
    int status;                    /* 200, 404, ... */
    int version;                   /* 10, 11, 20 or 30 (HTTP/1.0 ... HTTP/3) */
    const char *url;               /* the last URL requested (after redirects) */
    const tw_http_header *headers; /* nheaders of them */
    size_t nheaders;
    const char *body; /* body_len bytes, followed by a NUL that is not counted */
    size_t body_len;
} tw_http_response;

/* The value of the first header called `name` (case-insensitively), or NULL. */
TW_API const char *tw_http_response_header(const tw_http_response *resp, const char *name);
/* Frees a response (what tw_result_drop does with the Deferred's value). */
TW_API void tw_http_response_free(tw_http_response *resp);

#ifdef __cplusplus
}
#endif

#endif /* TWINE_HTTP_H */
