/* The resolver: getaddrinfo on the reactor's pool, at most half of the
 * pool's threads at a time.
 *
 * A lookup record waits in the reactor's FIFO (lookups_waiting) until fewer
 * than limit = max(1, pool max / 2) records are in the pool, then goes to the
 * pool as a task of its own (no allocation: the record holds the task node
 * and the call node that brings the answer back). lookups_in_pool counts the
 * records handed over whose answer has not come back to the loop, which is
 * at least the number of pool threads busy with lookups: a cancelled lookup
 * keeps its thread busy until getaddrinfo returns, and keeps its place in
 * the count until then.
 *
 * References to a record (atomic): the loop's, while the record is on one of
 * the reactor's lists (dropped at delivery, at a cancel while it waits, or
 * when shutdown detaches it), and the task's, from submission until its
 * answer has been delivered (the post carries it) or refused. `state`
 * settles a cancel on the loop against the task starting: one CAS from
 * QUEUED decides whether getaddrinfo runs. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/errno_map.h"
#include "net/net.h"

int (*tw__resolver_hook)(const char *host);

enum { L_QUEUED = 0, L_RUNNING = 1, L_SKIPPED = 2 };

struct tw__lookup {
    tw_task task;
    tw_call back;
    tw_reactor *r;
    tw__net *ns;     /* NULL once detached (shutdown) */
    tw_deferred *d;  /* ours until fired; NULL after */
    bool in_pool;
    int family;
    uint16_t port;
    uint32_t refs;    /* atomic */
    uint32_t state;   /* atomic: L_* */
    tw_result result; /* written by the task before it posts `back` */
    tw__ring link;    /* in lookups_waiting or lookups_running */
    size_t hostlen;
    char host[];
};

typedef struct tw__lookup lookup;

static void put(lookup *k)
{
    /* acq_rel: the last owner sees the other's writes before freeing. */
    if (__atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) == 0)
        tw__free(k, sizeof *k + k->hostlen + 1);
}

static void list_free(void *p)
{
    tw_address_list *l = p;
    tw__free(l, sizeof *l + l->count * sizeof l->items[0]);
}

static tw_address_list *list_new(size_t n)
{
    tw_address_list *l = tw__alloc(sizeof *l + n * sizeof l->items[0]);
    if (l)
        l->count = n;
    return l;
}

/* Fires the record's Deferred with r, if it still has one. */
static void settle(lookup *k, tw_result r)
{
    tw_deferred *d = k->d;
    if (!d) {
        tw_result_drop(r);
        return;
    }
    k->d = NULL;
    tw_deferred_callback(d, r);
    tw_deferred_unref(d);
}

/* ---- the pool side ---------------------------------------------------------------- */

static tw_result answer(lookup *k)
{
    int rc = tw__resolver_hook ? tw__resolver_hook(k->host) : 0;
    struct addrinfo *ai = NULL;
    if (rc == 0) {
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = k->family;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        char port[8];
        snprintf(port, sizeof port, "%u", (unsigned)k->port);
        rc = getaddrinfo(k->host, port, &hints, &ai);
    }
    if (rc) {
        int code;
        switch (rc) {
        case EAI_MEMORY:
            code = TW_ENOMEM;
            break;
        case EAI_SYSTEM:
            code = tw__from_errno(errno);
            break;
        case EAI_NONAME:
        case EAI_AGAIN:
        case EAI_FAIL:
#ifdef EAI_NODATA
        case EAI_NODATA:
#endif
        case EAI_FAMILY:
            code = TW_ENOTFOUND;
            break;
        default:
            code = TW_EIO;
        }
        return tw_result_fail(code, "looking up %s: %s", k->host, gai_strerror(rc));
    }
    size_t n = 0;
    for (struct addrinfo *p = ai; p; p = p->ai_next)
        n += (p->ai_family == AF_INET || p->ai_family == AF_INET6) &&
             p->ai_addrlen <= sizeof(((tw_address *)0)->u);
    tw_address_list *l = list_new(n);
    if (!l) {
        freeaddrinfo(ai);
        return tw_result_fail(TW_ENOMEM, "looking up %s: out of memory", k->host);
    }
    n = 0;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        if ((p->ai_family != AF_INET && p->ai_family != AF_INET6) ||
            p->ai_addrlen > sizeof l->items[0].u)
            continue;
        memset(&l->items[n], 0, sizeof l->items[n]);
        memcpy(&l->items[n].u, p->ai_addr, p->ai_addrlen);
        l->items[n].len = p->ai_addrlen;
        n++;
    }
    freeaddrinfo(ai);
    if (n == 0) {
        list_free(l);
        return tw_result_fail(TW_ENOTFOUND, "looking up %s: no stream address", k->host);
    }
    return tw_result_value(l, list_free);
}

static int lookup_task(void *arg)
{
    lookup *k = arg;
    uint32_t expect = L_QUEUED;
    /* acq_rel: pairs with the canceller's CAS; whoever wins decides. */
    if (__atomic_compare_exchange_n(&k->state, &expect, L_RUNNING, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        k->result = answer(k);
    else
        k->result = tw_result_none(); /* cancelled before it started */
    if (tw_reactor_post(k->r, &k->back) != 0) {
        /* The reactor has shut down; shutdown detached the record. */
        tw_result_drop(k->result);
        put(k);
    }
    return 0;
}

/* ---- the loop side ------------------------------------------------------------------ */

static size_t limit(tw__net *ns)
{
    tw_pool *p;
    tw_pool_stats st;
    if (tw_reactor_get_thread_pool(ns->r, &p) != 0 || tw_pool_stats_get(p, &st) != 0)
        return 1;
    return st.max / 2 > 1 ? st.max / 2 : 1;
}

/* Hands waiting records to the pool while fewer than the limit are there. */
static void pump(tw__net *ns)
{
    if (tw__ring_empty(&ns->lookups_waiting))
        return;
    size_t max = limit(ns);
    while (ns->lookups_in_pool < max && !tw__ring_empty(&ns->lookups_waiting)) {
        lookup *k = TW__RING_ITEM(ns->lookups_waiting.next, lookup, link);
        tw__ring_remove(&k->link);
        tw_pool *p;
        int rc = tw_reactor_get_thread_pool(ns->r, &p);
        tw_task_init(&k->task, lookup_task, k);
        __atomic_store_n(&k->refs, 2, __ATOMIC_RELAXED); /* not shared yet */
        if (rc == 0)
            rc = tw_pool_submit(p, &k->task);
        if (rc) {
            settle(k, tw_result_fail(rc, "looking up %s: no pool thread: %s", k->host,
                                     tw_strerror(rc)));
            tw__free(k, sizeof *k + k->hostlen + 1);
            continue;
        }
        k->in_pool = true;
        ns->lookups_in_pool++;
        tw__ring_push_back(&ns->lookups_running, &k->link);
    }
}

static void deliver(void *arg)
{
    lookup *k = arg;
    tw__net *ns = k->ns;
    tw_result res = k->result;
    k->result = tw_result_none();
    settle(k, res);
    if (ns) {
        tw__ring_remove(&k->link);
        ns->lookups_in_pool--;
        put(k); /* the loop's */
    }
    put(k); /* the task's, which came with the post */
    if (ns)
        pump(ns);
}

static void lookup_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    lookup *k = arg;
    if (k->in_pool) {
        uint32_t expect = L_QUEUED;
        __atomic_compare_exchange_n(&k->state, &expect, L_SKIPPED, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
        settle(k, tw_result_fail(TW_ECANCELED, "looking up %s: cancelled", k->host));
        return; /* its answer, when it comes, is dropped */
    }
    tw__ring_remove(&k->link);
    settle(k, tw_result_fail(TW_ECANCELED, "looking up %s: cancelled", k->host));
    put(k);
}

int tw_reactor_resolve(tw_reactor *r, const char *host, uint16_t port, int family,
                       tw_deferred **out)
{
    if (!r || !host || !*host || !out ||
        (family != AF_UNSPEC && family != AF_INET && family != AF_INET6))
        return TW_EINVAL;
    TW__NCHECK(r, "the reactor", "tw_reactor_resolve");
    size_t hostlen = strlen(host);
    if (hostlen > 1024)
        return tw_deferred_fail(out, tw_failure_new(TW_EINVAL, "looking up a name of %zu bytes: "
                                                               "too long", hostlen));
    tw_address a;
    if (tw_address_ip(&a, host, port) == 0) { /* numeric: no thread needed */
        if (family != AF_UNSPEC && family != a.u.sa.sa_family)
            return tw_deferred_fail(out, tw_failure_new(TW_ENOTFOUND,
                                                        "looking up %s: not an %s address", host,
                                                        family == AF_INET ? "IPv4" : "IPv6"));
        tw_address_list *l = list_new(1);
        if (!l)
            return TW_ENOMEM;
        l->items[0] = a;
        return tw_deferred_succeed(out, l, list_free);
    }
    tw__net *ns;
    int rc = tw__net_get(r, &ns);
    if (rc)
        return rc;
    lookup *k = tw__alloc(sizeof *k + hostlen + 1);
    if (!k)
        return TW_ENOMEM;
    memset(k, 0, sizeof *k);
    k->back = (tw_call)TW_CALL_INIT(deliver, k);
    k->r = r;
    k->ns = ns;
    k->family = family;
    k->port = port;
    k->refs = 1;
    k->state = L_QUEUED;
    k->result = tw_result_none();
    k->hostlen = hostlen;
    memcpy(k->host, host, hostlen + 1);
    if ((rc = tw_deferred_create(&k->d, lookup_cancel, k)) != 0) {
        tw__free(k, sizeof *k + hostlen + 1);
        return rc;
    }
    *out = tw_deferred_ref(k->d);
    tw__ring_push_back(&ns->lookups_waiting, &k->link);
    pump(ns);
    return 0;
}

void tw__lookups_shutdown(tw__net *ns)
{
    while (!tw__ring_empty(&ns->lookups_waiting)) {
        lookup *k = TW__RING_ITEM(ns->lookups_waiting.next, lookup, link);
        tw__ring_remove(&k->link);
        settle(k, tw_result_fail(TW_ESHUTDOWN, "looking up %s: the reactor is shutting down",
                                 k->host));
        put(k);
    }
    while (!tw__ring_empty(&ns->lookups_running)) {
        lookup *k = TW__RING_ITEM(ns->lookups_running.next, lookup, link);
        tw__ring_remove(&k->link);
        ns->lookups_in_pool--;
        k->ns = NULL;
        uint32_t expect = L_QUEUED;
        __atomic_compare_exchange_n(&k->state, &expect, L_SKIPPED, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
        settle(k, tw_result_fail(TW_ESHUTDOWN, "looking up %s: the reactor is shutting down",
                                 k->host));
        put(k); /* the loop's; the task keeps its own */
    }
}

size_t tw__resolver_in_pool(tw_reactor *r)
{
    tw__net *ns;
    return tw__net_get(r, &ns) == 0 ? ns->lookups_in_pool : 0;
}
