/* Results: the response value a request's Deferred fires with, and failures
 * with their TW_E* codes and messages.
 *
 * A response is one block (the public struct, the header array, then the
 * header strings and the URL) plus the body's buffer, which moves from the
 * request to the response without a copy. */
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/errno_map.h"
#include "http/http.h"

typedef struct tw__http_resp {
    tw_http_response pub; /* first: the value's pointer is the block's */
    size_t size;          /* of this block */
    char *body;           /* the body's buffer (NULL: empty body) */
    size_t body_cap;
} tw__http_resp;

void tw_http_response_free(tw_http_response *resp)
{
    if (!resp)
        return;
    tw__http_resp *b = (tw__http_resp *)resp;
    tw__free(b->body, b->body_cap);
    tw__free(b, b->size);
}

static void drop_response(void *p)
{
    tw_http_response_free(p);
}

const char *tw_http_response_header(const tw_http_response *resp, const char *name)
{
    if (!resp || !name)
        return NULL;
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

/* ---- failures ------------------------------------------------------------------------ */

tw_result tw__http_fail(const tw__http_req *req, int code, const char *why)
{
    return tw_result_fail(code, "%s: %s", req->what, why);
}

/* The errno behind a connect, send or receive failure, as a code. */
static int os_code(CURL *e, int otherwise)
{
    long err = 0;
    if (curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &err) != CURLE_OK || err <= 0)
        return otherwise;
    return tw__from_errno((int)err);
}

static int code_of(CURL *e, CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return TW_ENOTFOUND;
    case CURLE_COULDNT_CONNECT:
        return os_code(e, TW_ECONNREFUSED);
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        return os_code(e, TW_EIO);
    case CURLE_OPERATION_TIMEDOUT:
        return TW_ETIMEDOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return TW_ETLS;
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return TW_ECONNLOST;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_UNSUPPORTED_PROTOCOL: /* a redirect to another scheme */
        return TW_EPROTO;
    case CURLE_URL_MALFORMAT:
        return TW_EINVAL;
    case CURLE_FILESIZE_EXCEEDED:
        return TW_EOVERFLOW;
    case CURLE_OUT_OF_MEMORY:
        return TW_ENOMEM;
    case CURLE_ABORTED_BY_CALLBACK:
        return TW_ECANCELED;
    case CURLE_LOGIN_DENIED:
    case CURLE_REMOTE_ACCESS_DENIED:
        return TW_EACCES;
    default:
        return TW_EIO;
    }
}

static tw_result failure(tw__http_req *req, CURLcode cc)
{
    if (req->err == TW_EOVERFLOW || cc == CURLE_FILESIZE_EXCEEDED)
        return tw_result_fail(TW_EOVERFLOW, "%s: the response body exceeds max_body (%zu bytes)",
                              req->what, req->max_body);
    if (req->err)
        return tw__http_fail(req, req->err, "out of memory for the response");
    return tw__http_fail(req, code_of(req->easy, cc),
                         req->errbuf[0] ? req->errbuf : curl_easy_strerror(cc));
}

/* ---- the response ---------------------------------------------------------------------- */

static int version_of(long v)
{
    switch (v) {
    case CURL_HTTP_VERSION_1_0:
        return 10;
    case CURL_HTTP_VERSION_1_1:
        return 11;
    case CURL_HTTP_VERSION_2_0:
        return 20;
    case CURL_HTTP_VERSION_3:
        return 30;
    default:
        return 0;
    }
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Fills the header array and the string area at s from req->head: one
 * header per line, a line that starts with whitespace continuing the one
 * before (obsolete folding); returns the end of what it wrote. The area has
 * head_len bytes: a line holds its name, ':', value and line end, which
 * become name, NUL, value, NUL. */
static char *parse_headers(const tw__http_req *req, tw_http_header *hs, size_t *count, char *s)
{
    const char *p = req->head, *end = req->head + req->head_len;
    size_t n = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        const char *le = eol ? eol : end;
        if (le > p && le[-1] == '\r')
            le--;
        const char *a = p;
        p = next;
        bool folded = is_space(*a);
        while (a < le && is_space(*a))
            a++;
        const char *z = le;
        while (z > a && is_space(z[-1]))
            z--;
        if (folded) {
            if (n == 0 || a == z)
                continue;
            s[-1] = ' '; /* the previous value's NUL */
            memcpy(s, a, (size_t)(z - a));
            s += z - a;
            *s++ = '\0';
            continue;
        }
        const char *colon = memchr(a, ':', (size_t)(z - a));
        if (!colon || colon == a)
            continue; /* not a header: curl passed it on, we do not keep it */
        const char *ne = colon;
        while (ne > a && is_space(ne[-1]))
            ne--;
        const char *v = colon + 1;
        while (v < z && is_space(*v))
            v++;
        hs[n].name = s;
        memcpy(s, a, (size_t)(ne - a));
        s += ne - a;
        *s++ = '\0';
        hs[n].value = s;
        memcpy(s, v, (size_t)(z - v));
        s += z - v;
        *s++ = '\0';
        n++;
    }
    *count = n;
    return s;
}

static tw_result response(tw__http_req *req)
{
    CURL *e = req->easy;
    long status = 0, version = 0;
    char *url = NULL;
    (void)curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    (void)curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
    (void)curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &url);
    if (!url)
        url = "";
    size_t lines = 0;
    for (size_t i = 0; i < req->head_len; i++)
        lines += req->head[i] == '\n';
    if (req->head_len && req->head[req->head_len - 1] != '\n')
        lines++;
    size_t url_len = strlen(url);
    size_t hoff = (sizeof(tw__http_resp) + _Alignof(tw_http_header) - 1) &
                  ~(_Alignof(tw_http_header) - 1);
    size_t soff = hoff + lines * sizeof(tw_http_header);
    size_t size = soff + req->head_len + 1 + url_len + 1;
    tw__http_resp *b = tw__alloc(size);
    if (!b)
        return tw__http_fail(req, TW_ENOMEM, "out of memory for the response");
    char *base = (char *)b;
    tw_http_header *hs = (tw_http_header *)(void *)(base + hoff);
    size_t n;
    char *s = parse_headers(req, hs, &n, base + soff);
    memcpy(s, url, url_len + 1);
    b->size = size;
    if (req->body)
        req->body[req->body_len] = '\0'; /* cap > len: reserved or written with room for it */
    b->body = req->body;
    b->body_cap = req->body_cap;
    req->body = NULL;
    req->body_cap = 0;
    b->pub.status = (int)status;
    b->pub.version = version_of(version);
    b->pub.url = s;
    b->pub.headers = hs;
    b->pub.nheaders = n;
    b->pub.body = b->body ? b->body : "";
    b->pub.body_len = b->body ? req->body_len : 0;
    return tw_result_value(b, drop_response);
}

tw_result tw__http_result(tw__http_req *req, CURLcode code)
{
    if (code != CURLE_OK || req->err)
        return failure(req, code);
    return response(req);
}
