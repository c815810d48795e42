/* A request's easy handle: checking the caller's request, curl's options,
 * and the write and header callbacks that collect the response.
 *
 * The callbacks run inside curl_multi_socket_action: they only copy bytes
 * into the request (through twine's allocator) and record a failure of the
 * client's own in req->err (the body over max_body, memory), returning a
 * short count so that curl stops the transfer (CURLE_WRITE_ERROR, which
 * response.c reads together with req->err). */
#include <limits.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "http/http.h"

/* ---- checking the request -------------------------------------------------------- */

/* RFC 9110's tchar: what a method and a header name are made of. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* "Name: value", "Name:" or "Name;", without a line break. */
static bool is_header(const char *h)
{
    size_t name = strcspn(h, ":;");
    return h[name] && is_token(h, name) && !strpbrk(h, "\r\n");
}

/* The common URL, checked without a parse: http or https, a host of
 * letters, digits, dots and dashes, an optional port from 1 to 65535, then
 * nothing or a path, query or fragment of visible ASCII. Anything of this
 * shape curl's URL parser accepts as it is. *host and *host_len: the host. */
static bool plain_url(const char *url, const char **host, size_t *host_len)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else
        return false;
    const char *h = p;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '.' || *p == '-')
        p++;
    if (p == h)
        return false;
    *host = h;
    *host_len = (size_t)(p - h);
    if (*p == ':') {
        unsigned long port = 0;
        const char *d = ++p;
        while (*p >= '0' && *p <= '9' && p - d < 6)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == d || port == 0 || port > 65535)
            return false; /* curl's parser decides */
    }
    if (*p && *p != '/' && *p != '?' && *p != '#')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

/* RFC 6761 §6.4: names under .invalid never resolve. */
static bool under_invalid(const char *host, size_t n)
{
    if (n && host[n - 1] == '.')
        n--;
    return (n == 7 && strncasecmp(host, "invalid", 7) == 0) ||
           (n > 8 && strncasecmp(host + n - 8, ".invalid", 8) == 0);
}

/* TW_EINVAL unless url is an absolute http or https URL with a host, as
 * curl will parse it: the common shape is checked here, anything else by
 * curl's URL parser. */
static int check_url(tw__http_req *req, const char *url)
{
    const char *host;
    size_t host_len;
    if (plain_url(url, &host, &host_len)) {
        req->refuse_lookup = under_invalid(host, host_len);
        return 0;
    }
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        return TW_EINVAL;
    CURLU *u = curl_url();
    if (!u)
        return TW_ENOMEM;
    char *h = NULL;
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_HOST, &h, 0);
    if (uc == CURLUE_OK)
        req->refuse_lookup = under_invalid(h, strlen(h));
    curl_free(h);
    curl_url_cleanup(u);
    return uc == CURLUE_OK ? 0 : uc == CURLUE_OUT_OF_MEMORY ? TW_ENOMEM : TW_EINVAL;
}

static int check(const tw_http_request *rq, const char *method)
{
    if (!rq->url || (rq->body_len && !rq->body) || isnan(rq->timeout) ||
        isnan(rq->connect_timeout) || rq->max_redirects < 0 ||
        !is_token(method, strlen(method)) || (rq->body && strcmp(method, "HEAD") == 0))
        return TW_EINVAL;
    for (const char *const *h = rq->headers; h && *h; h++)
        if (!is_header(*h))
            return TW_EINVAL;
    return 0;
}

/* ---- collecting the response ------------------------------------------------------ */

/* Grows *buf (of *cap bytes) to hold at least `need`: to `first` bytes (or
 * need) the first time, doubling after that. */
static int grow(char **buf, size_t *cap, size_t need, size_t first)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : first;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    char *b = tw__realloc(*buf, *cap, n);
    if (!b)
        return TW_ENOMEM;
    *buf = b;
    *cap = n;
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    tw__http_req *req = arg;
    size_t len = size * n; /* size is always 1 */
    if (len > req->max_body - req->body_len) {
        req->err = TW_EOVERFLOW;
        return 0;
    }
    if (grow(&req->body, &req->body_cap, req->body_len + len + 1, 4096)) {
        req->err = TW_ENOMEM;
        return 0;
    }
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';
    return len;
}

/* A Content-Length header: room for the body at once, within max_body
 * (curl itself fails a larger one: CURLOPT_MAXFILESIZE_LARGE) and 64 MiB (a
 * peer's claim is no reason to take more before the bytes come). A hint
 * only, so a failure to reserve is no failure. */
static void reserve(tw__http_req *req, const char *line, size_t len)
{
    static const char cl[] = "content-length:";
    if (req->no_body || len < sizeof cl || (line[0] | 0x20) != 'c' || strncasecmp(line, cl, sizeof cl - 1) != 0)
        return;
    size_t v = 0, i = sizeof cl - 1;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    for (; i < len && line[i] >= '0' && line[i] <= '9'; i++) {
        if (v > (req->max_body - (size_t)(line[i] - '0')) / 10)
            return;
        v = v * 10 + (size_t)(line[i] - '0');
    }
    if (v < req->max_body && v < TW_HTTP_MAX_BODY_DEFAULT)
        (void)grow(&req->body, &req->body_cap, v + 1, v + 1);
}

/* Moves the header lines out of head_buf, or grows their buffer. */
static int grow_head(tw__http_req *req, size_t need)
{
    if (req->head != req->head_buf)
        return grow(&req->head, &req->head_cap, need, 0);
    char *h = NULL;
    size_t cap = 0;
    if (grow(&h, &cap, need, 2 * sizeof req->head_buf))
        return TW_ENOMEM;
    memcpy(h, req->head, req->head_len);
    req->head = h;
    req->head_cap = cap;
    return 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    tw__http_req *req = arg;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* A response begins (after a 100 or a followed redirect): what came
         * before belonged to another. Its status line is not kept. */
        req->head_len = 0;
        req->body_len = 0;
        return len;
    }
    if (len <= 2 && strspn(data, "\r\n") >= len)
        return len; /* the blank line that ends the block */
    reserve(req, data, len);
    if (req->head_len + len > req->head_cap && grow_head(req, req->head_len + len)) {
        req->err = TW_ENOMEM;
        return 0;
    }
    memcpy(req->head + req->head_len, data, len);
    req->head_len += len;
    return len;
}

static int refuse_lookup(void *resolver_state, void *reserved, void *arg)
{
    (void)resolver_state;
    (void)reserved;
    (void)arg;
    return 1; /* curl fails the transfer with CURLE_COULDNT_RESOLVE_HOST */
}

/* ---- the easy handle -------------------------------------------------------------- */

static long ms_of(double seconds)
{
    double ms = ceil(seconds * 1000.0);
    return ms >= (double)LONG_MAX ? LONG_MAX : (long)ms;
}

/* Where url's userinfo ("user:password@" in "http://user:password@host/")
 * starts (*keep: the bytes before it) and how long it is (*skip; 0 if none). */
static void userinfo_span(const char *url, size_t *keep, size_t *skip)
{
    const char *auth = strstr(url, "://");
    *keep = 0;
    *skip = 0;
    if (!auth)
        return;
    auth += 3;
    size_t n = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + n; p++)
        if (*p == '@')
            at = p; /* the last one: a password may hold an escaped one only */
    if (at) {
        *keep = (size_t)(auth - url);
        *skip = (size_t)(at + 1 - auth);
    }
}

int tw__http_req_setup(tw__http_req *req, const tw_http_request *rq)
{
    const char *method = rq->method ? rq->method : rq->body ? "POST" : "GET";
    int rc = check(rq, method);
    if (rc == 0)
        rc = check_url(req, rq->url);
    if (rc)
        return rc;
    tw_http_client *c = req->c;
    if (c->proxy[0])
        req->refuse_lookup = false; /* the proxy resolves the URL's host */
    req->max_body = rq->max_body ? rq->max_body : TW_HTTP_MAX_BODY_DEFAULT;
    req->no_body = strcmp(method, "HEAD") == 0;
    req->head = req->head_buf;
    req->head_cap = sizeof req->head_buf;
    /* Messages name the URL without its user:password@, which must not
     * reach a log: the text before the userinfo, then the text after it. */
    size_t ml = strlen(method), keep, skip;
    userinfo_span(rq->url, &keep, &skip);
    size_t ul = strlen(rq->url) - skip;
    if (ml + 1 + ul + 1 <= sizeof req->what_buf) {
        req->what = req->what_buf;
    } else {
        req->what_size = ml + 1 + ul + 1;
        req->what = tw__alloc(req->what_size);
        if (!req->what)
            return TW_ENOMEM;
    }
    memcpy(req->what, method, ml);
    req->what[ml] = ' ';
    memcpy(req->what + ml + 1, rq->url, keep);
    memcpy(req->what + ml + 1 + keep, rq->url + keep + skip, ul - keep + 1);
    for (const char *const *h = rq->headers; h && *h; h++) {
        struct curl_slist *l = curl_slist_append(req->hdrs, *h);
        if (!l)
            return TW_ENOMEM;
        req->hdrs = l;
    }
    CURL *e = req->easy = curl_easy_init();
    if (!e)
        return TW_ENOMEM;

    CURLcode cc = CURLE_OK;
#define SET(opt, val)                                                                  \
    do {                                                                               \
        if (cc == CURLE_OK)                                                            \
            cc = curl_easy_setopt(e, opt, val);                                        \
    } while (0)
    SET(CURLOPT_URL, rq->url);
    SET(CURLOPT_PRIVATE, (void *)req);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROXY, c->proxy); /* "": none, whatever the environment says */
    SET(CURLOPT_ERRORBUFFER, req->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)req);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)req);
    SET(CURLOPT_CLOSESOCKETFUNCTION, tw__http_on_close_socket);
    SET(CURLOPT_CLOSESOCKETDATA, (void *)c);
    if (req->refuse_lookup)
        SET(CURLOPT_RESOLVER_START_FUNCTION, refuse_lookup);
    if (req->hdrs)
        SET(CURLOPT_HTTPHEADER, req->hdrs);
    if (rq->timeout > 0)
        SET(CURLOPT_TIMEOUT_MS, ms_of(rq->timeout));
    if (rq->connect_timeout > 0)
        SET(CURLOPT_CONNECTTIMEOUT_MS, ms_of(rq->connect_timeout));
    /* Curl checks a Content-Length against this limit even for a HEAD,
     * whose announced body never comes: on_body enforces max_body there. */
    if (!req->no_body && req->max_body != SIZE_MAX && req->max_body < (size_t)INT64_MAX)
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);
    if (rq->follow_redirects) { /* check_url has checked the first URL's scheme */
        SET(CURLOPT_FOLLOWLOCATION, 1L);
        SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        SET(CURLOPT_MAXREDIRS, rq->max_redirects ? (long)rq->max_redirects : 20L);
    }
    if (strcmp(method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0 || rq->body) {
        /* A body (possibly empty, so that Content-Length is sent), copied. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        SET(CURLOPT_COPYPOSTFIELDS, rq->body ? (const char *)rq->body : "");
        if (strcmp(method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, method);
    }
#undef SET
    return cc == CURLE_OK ? 0 : cc == CURLE_OUT_OF_MEMORY ? TW_ENOMEM : TW_EINVAL;
}

void tw__http_req_free(tw__http_req *req)
{
    if (req->easy)
        curl_easy_cleanup(req->easy);
    curl_slist_free_all(req->hdrs);
    if (req->what != req->what_buf)
        tw__free(req->what, req->what_size);
    tw__free(req->body, req->body_cap);
    if (req->head != req->head_buf)
        tw__free(req->head, req->head_cap);
    TW__DELETE(req);
}
