/* The client: libcurl's global init, create and destroy, starting a request,
 * dispatch after curl calls, cancel, and closing (destroy, reactor shutdown).
 *
 * A request's life: tw_http_client_request makes its easy handle and adds it
 * to the multi handle (curl asks for a timer at once, for 0 ms). From then on
 * curl drives it through the watchers and the timer (watch.c); every
 * curl_multi_socket_action is followed by settle(), which reads curl's
 * finished transfers and, for each, detaches it (out of the list and the
 * multi handle), builds its result (response.c), frees it and fires its
 * Deferred. A Deferred fires exactly once, by one of: settle, the canceller,
 * fail_all (destroy, shutdown, a fatal callback failure). Each first detaches
 * the request, so the others no longer find it. */
#include <pthread.h>
#include <string.h>

#include "base/alloc.h"
#include "http/http.h"

#ifdef TW_DEBUG
#include "reactor/owner.h"

void tw__http_check_thread(const tw_http_client *c, const char *function)
{
    if (c->trigger_ran)
        return; /* shut down: anyone may clean up, and the reactor may be gone */
    uint32_t want = tw__reactor_thread(c->r);
    if (want && want != tw__self())
        tw__wrong_thread("an HTTP client", want, function);
}
#endif

/* ---- libcurl's global state --------------------------------------------------
 * curl_global_init is not thread-safe in libcurl 7.88 (unless built with
 * CURL_VERSION_THREADSAFE): one call, under pthread_once, before the first
 * client. Never cleaned up: curl_global_cleanup is not thread-safe either,
 * and another part of the program may still use libcurl. */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_code;

static void curl_init(void)
{
    curl_init_code = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void client_close(tw_http_client *c, int code, const char *why);
static void settle(tw_http_client *c);

/* Gives back a `busy` hold; the last one frees a destroyed client. */
static void release(tw_http_client *c)
{
    if (--c->busy > 0 || !c->destroyed)
        return;
    tw__free(c->proxy, c->proxy_size);
    TW__DELETE(c);
}

static tw_result on_shutdown(void *arg)
{
    tw_http_client *c = arg;
    c->trigger_ran = true;
    c->busy++;
    client_close(c, TW_ESHUTDOWN, "the reactor shut down");
    release(c);
    return tw_result_none();
}

static int multi_setup(tw_http_client *c, const tw_http_client_config *cfg)
{
    CURLM *m = c->multi;
    CURLMcode rc = curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, tw__http_on_socket);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m, CURLMOPT_SOCKETDATA, c);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, tw__http_on_timer);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(m, CURLMOPT_TIMERDATA, c);
    if (rc == CURLM_OK && cfg->max_connections)
        rc = curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, cfg->max_connections);
    if (rc == CURLM_OK && cfg->max_host_connections)
        rc = curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, cfg->max_host_connections);
    if (rc == CURLM_OK && cfg->max_idle_connections)
        rc = curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, cfg->max_idle_connections);
    return rc == CURLM_OK ? 0 : rc == CURLM_OUT_OF_MEMORY ? TW_ENOMEM : TW_EINVAL;
}

int tw_http_client_create(tw_reactor *r, const tw_http_client_config *cfg, tw_http_client **out)
{
    tw_http_client_config def = TW_HTTP_CLIENT_CONFIG_INIT;
    if (!r || !out)
        return TW_EINVAL;
    if (!cfg)
        cfg = &def;
    if (cfg->max_connections < 0 || cfg->max_host_connections < 0 ||
        cfg->max_idle_connections < 0)
        return TW_EINVAL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_code != CURLE_OK)
        return curl_init_code == CURLE_OUT_OF_MEMORY ? TW_ENOMEM : TW_ESYS;
    tw_http_client *c = TW__NEW(tw_http_client);
    if (!c)
        return TW_ENOMEM;
    c->r = r;
    TW__HCHECK(c, "tw_http_client_create");
    const char *proxy = cfg->proxy ? cfg->proxy : "";
    c->proxy_size = strlen(proxy) + 1;
    c->proxy = tw__alloc(c->proxy_size);
    if (!c->proxy) {
        TW__DELETE(c);
        return TW_ENOMEM;
    }
    memcpy(c->proxy, proxy, c->proxy_size);
    int rc = TW_ENOMEM;
    c->multi = curl_multi_init();
    if (c->multi)
        rc = multi_setup(c, cfg);
    if (rc == 0)
        rc = tw_reactor_add_trigger(r, TW_DURING_SHUTDOWN, on_shutdown, c, &c->trigger);
    if (rc) {
        if (c->multi)
            curl_multi_cleanup(c->multi);
        tw__free(c->proxy, c->proxy_size);
        TW__DELETE(c);
        return rc;
    }
    *out = c;
    return 0;
}

void tw_http_client_destroy(tw_http_client *c)
{
    if (!c)
        return;
    TW__HCHECK(c, "tw_http_client_destroy");
    if (c->destroyed) {
        tw_diag_report(TW_DIAG_MISUSE, TW_EALREADY, "tw_http_client_destroy",
                       "the HTTP client is already destroyed (from one of its callbacks)");
        return;
    }
    c->destroyed = true;
    c->busy++;
    client_close(c, TW_ESHUTDOWN, "the HTTP client was destroyed");
    release(c);
}

size_t tw_http_client_pending(const tw_http_client *c)
{
    if (!c)
        return 0;
    TW__HCHECK(c, "tw_http_client_pending");
    return c->nreqs;
}

/* ---- requests --------------------------------------------------------------------- */

void tw__http_detach(tw__http_req *req)
{
    tw_http_client *c = req->c;
    tw__dlist_unlink(&c->reqs, &req->link);
    c->nreqs--;
    if (c->multi)
        (void)curl_multi_remove_handle(c->multi, req->easy);
}

/* Frees a detached request and fires its Deferred with r: the last thing a
 * frame does with req, since the Deferred's callbacks may do anything. */
static void fire(tw__http_req *req, tw_result r)
{
    tw_deferred *d = req->d;
    tw__http_req_free(req);
    (void)tw_deferred_callback(d, r);
    tw_deferred_unref(d);
}

static void on_cancel(tw_deferred *d, void *arg)
{
    tw__http_req *req = arg;
    (void)d;
    tw__http_detach(req);
    fire(req, tw__http_fail(req, TW_ECANCELED, "cancelled"));
}

int tw_http_client_request(tw_http_client *c, const tw_http_request *rq, tw_deferred **out)
{
    if (!c || !rq || !out)
        return TW_EINVAL;
    TW__HCHECK(c, "tw_http_client_request");
    if (c->close_code)
        return TW_ESHUTDOWN;
    tw__http_req *req = TW__NEW(tw__http_req);
    if (!req)
        return TW_ENOMEM;
    req->c = c;
    int rc = tw__http_req_setup(req, rq);
    if (rc == 0)
        rc = tw_deferred_create(&req->d, on_cancel, req);
    if (rc == 0) {
        CURLMcode mc = curl_multi_add_handle(c->multi, req->easy);
        rc = mc == CURLM_OK ? 0 : mc == CURLM_OUT_OF_MEMORY ? TW_ENOMEM : TW_EINVAL;
    }
    if (rc) {
        if (req->d) {
            /* Never seen by anyone: drop it without the abandoned failure a
             * Deferred freed unfired gets. */
            (void)tw_deferred_callback(req->d, tw_result_none());
            tw_deferred_unref(req->d);
        }
        tw__http_req_free(req);
        return rc;
    }
    tw__dlist_push(&c->reqs, &req->link);
    c->nreqs++;
    *out = tw_deferred_ref(req->d);
    /* Adding the handle asked for curl's timer, which may have failed. */
    if (c->fatal) {
        c->busy++;
        settle(c);
        release(c);
    }
    return 0;
}

int tw_http_client_get(tw_http_client *c, const char *url, tw_deferred **out)
{
    tw_http_request rq = {.url = url};
    return tw_http_client_request(c, &rq, out);
}

/* ---- dispatch ---------------------------------------------------------------------- */

/* Fails every request in flight now (not those their callbacks start) with
 * code. Runs user code: the caller holds busy. */
static void fail_all(tw_http_client *c, int code, const char *why)
{
    for (tw__dlink *l = c->reqs; l; l = l->next)
        TW__DLIST_ITEM(l, tw__http_req, link)->doomed = true;
    for (;;) {
        tw__dlink *l = c->reqs;
        while (l && !TW__DLIST_ITEM(l, tw__http_req, link)->doomed)
            l = l->next;
        if (!l)
            return;
        tw__http_req *req = TW__DLIST_ITEM(l, tw__http_req, link);
        tw__http_detach(req);
        fire(req, tw__http_fail(req, code, why));
    }
}

/* After a curl call: fails everything if a callback could not reach the
 * reactor, then fires the transfers curl finished. Runs user code (which
 * may start, cancel, or destroy the client): the caller holds busy. */
static void settle(tw_http_client *c)
{
    for (;;) {
        if (c->close_code)
            return;
        if (c->fatal) {
            int code = c->fatal;
            c->fatal = 0;
            fail_all(c, code, c->fatal_why);
            continue;
        }
        int left;
        CURLMsg *m = curl_multi_info_read(c->multi, &left);
        if (!m)
            return;
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode code = m->data.result;
        char *priv = NULL;
        (void)curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        tw__http_req *req = (tw__http_req *)(void *)priv;
        tw__http_detach(req); /* m is dead from here */
        fire(req, tw__http_result(req, code));
    }
}

void tw__http_action(tw_http_client *c, curl_socket_t fd, int flags)
{
    c->busy++;
    if (c->multi) {
        int running;
        CURLMcode rc = curl_multi_socket_action(c->multi, fd, flags, &running);
        if (rc != CURLM_OK && rc != CURLM_BAD_SOCKET && !c->fatal) {
            /* CURLM_RECURSIVE_API_CALL would mean a call from inside a curl
             * callback, which this file never makes. */
            c->fatal = rc == CURLM_OUT_OF_MEMORY ? TW_ENOMEM : TW_EIO;
            c->fatal_why = curl_multi_strerror(rc);
        }
    }
    settle(c);
    release(c);
}

/* ---- closing ------------------------------------------------------------------------ */

static void client_close(tw_http_client *c, int code, const char *why)
{
    if (c->close_code)
        return; /* closed, or closing further up the stack */
    c->close_code = code;
    c->close_why = why;
    if (!c->trigger_ran)
        (void)tw_reactor_remove_trigger(c->r, c->trigger);
    fail_all(c, code, why); /* nothing new can join: requests are refused */
    /* Cached connections are not watched; closing them calls the socket and
     * close-socket callbacks, which only remove. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    tw__http_unwatch_all(c);
}
