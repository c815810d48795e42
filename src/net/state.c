/* The net layer's state per reactor, found through a small registry keyed
 * by the reactor (the reactor's public interface has no slot for it).
 *
 * Lifetime. Made by the first listen, connect or lookup on a reactor, which
 * also adds two shutdown triggers: the during-shutdown one closes every
 * connection, listener, connect and lookup (their owners hear of it at once)
 * and refuses new ones; the after-shutdown one takes the state out of the
 * registry and frees it. After the during phase nothing refers to the state
 * any more (closed transports, listeners and lookup records only keep their
 * own memory), except the tick if it is still in the reactor's queue: the
 * state is then freed by the tick when it runs, in the reactor's last drain
 * of posted calls. */
#include "base/alloc.h"
#include "net/net.h"

static tw_lock registry_lock = TW_LOCK_INIT;
static tw__net *registry; /* guarded by registry_lock */

static void ns_free(tw__net *ns)
{
    tw__net_chunks_free(ns);
    if (ns->rbuf)
        tw__free(ns->rbuf, TW__NET_RBUF);
    TW__DELETE(ns);
}

static void tick_run(void *arg)
{
    tw__net *ns = arg;
    ns->tick_posted = false;
    if (ns->free_after_tick) {
        ns_free(ns);
        return;
    }
    tw__net_enter(ns);
    tw__net_leave(ns);
}

static tw_result during_shutdown(void *arg)
{
    tw__net *ns = arg;
    ns->closed = true;
    tw__net_enter(ns);
    tw__lookups_shutdown(ns);
    tw__connectors_shutdown(ns);
    tw__listeners_shutdown(ns);
    tw__transports_shutdown(ns);
    tw__net_leave(ns); /* delivers every connection_lost */
    return tw_result_none();
}

static tw_result after_shutdown(void *arg)
{
    tw__net *ns = arg;
    tw_lock_acquire(&registry_lock);
    for (tw__net **p = &registry; *p; p = &(*p)->next)
        if (*p == ns) {
            *p = ns->next;
            break;
        }
    tw_lock_release(&registry_lock);
    if (ns->tick_posted)
        ns->free_after_tick = true;
    else
        ns_free(ns);
    return tw_result_none();
}

int tw__net_get(tw_reactor *r, tw__net **out)
{
    tw__net *ns;
    tw_lock_acquire(&registry_lock);
    for (ns = registry; ns && ns->r != r; ns = ns->next)
        ;
    tw_lock_release(&registry_lock);
    if (ns) {
        *out = ns;
        return ns->closed ? TW_ESHUTDOWN : 0;
    }
    ns = TW__NEW(tw__net);
    if (!ns)
        return TW_ENOMEM;
    ns->r = r;
    ns->tick = (tw_call)TW_CALL_INIT(tick_run, ns);
    tw__ring_init(&ns->transports);
    tw__ring_init(&ns->listeners);
    tw__ring_init(&ns->connectors);
    tw__ring_init(&ns->lookups_waiting);
    tw__ring_init(&ns->lookups_running);
    uint64_t id;
    int rc = tw_reactor_add_trigger(r, TW_DURING_SHUTDOWN, during_shutdown, ns, &id);
    if (rc == 0) {
        rc = tw_reactor_add_trigger(r, TW_AFTER_SHUTDOWN, after_shutdown, ns, NULL);
        if (rc)
            tw_reactor_remove_trigger(r, id);
    }
    if (rc) {
        TW__DELETE(ns);
        return rc;
    }
    tw_lock_acquire(&registry_lock);
    ns->next = registry;
    registry = ns;
    tw_lock_release(&registry_lock);
    *out = ns;
    return 0;
}
