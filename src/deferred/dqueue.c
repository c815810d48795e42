/* DeferredQueue: items kept in a ring, gets waiting on an intrusive list.
 *
 * Hand-off works like the lock's: put() gives the oldest item to the oldest
 * waiting get and fires it, running the getter's chain before returning. A
 * put made from inside such a chain only adds its item (`firing` is set) and
 * the outer loop hands it on, so 10^5 getters that each put again use a
 * bounded stack. Outside a hand-off loop, items and waiting gets are never
 * both present; inside one they may be, and then a new get queues behind the
 * waiting ones instead of taking an item that is theirs.
 *
 * Capacity: an item is accepted while count < waiting + size (it is either
 * for a waiting get, or fits the bound). */
#include "base/alloc.h"
#include "deferred/deferred.h"

struct tw_dqueue {
    tw_result *items; /* ring of cap values; cap is 0 or a power of two (8, doubling) */
    size_t cap, head, count;
    size_t size, backlog;
    tw_deferred *whead, *wtail; /* waiting gets, oldest first */
    size_t waiting;
    int firing;
    bool closing; /* inside tw_dqueue_destroy: getters' errbacks may call back */
#ifdef TW_DEBUG
    uint32_t thread; /* the creating thread */
#endif
};

#ifdef TW_DEBUG
#define CHECK_THREAD(q, fn)                                                            \
    do {                                                                               \
        if ((q)->thread != tw__self())                                                 \
            tw__wrong_thread("a DeferredQueue", (q)->thread, (fn));                    \
    } while (0)
#else
#define CHECK_THREAD(q, fn) ((void)0)
#endif

static inline tw__wlist getters(tw_dqueue *q)
{
    tw__wlist l = {&q->whead, &q->wtail, &q->waiting};
    return l;
}

static int ring_push(tw_dqueue *q, tw_result v)
{
    if (q->count == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        tw_result *items = tw__alloc(cap * sizeof *items);
        if (!items)
            return TW_ENOMEM;
        for (size_t i = 0; i < q->count; i++)
            items[i] = q->items[(q->head + i) & (q->cap - 1)];
        if (q->items)
            tw__free(q->items, q->cap * sizeof *q->items);
        q->items = items;
        q->cap = cap;
        q->head = 0;
    }
    q->items[(q->head + q->count++) & (q->cap - 1)] = v;
    return 0;
}

static tw_result ring_pop(tw_dqueue *q)
{
    tw_result v = q->items[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    return v;
}

int tw_dqueue_create(size_t size, size_t backlog, tw_dqueue **out)
{
    if (!out)
        return TW_EINVAL;
    tw_dqueue *q = TW__NEW(tw_dqueue);
    if (!q)
        return TW_ENOMEM;
    q->size = size;
    q->backlog = backlog;
#ifdef TW_DEBUG
    q->thread = tw__self();
#endif
    *out = q;
    return 0;
}

static void hand_off(tw_dqueue *q)
{
    if (q->firing)
        return;
    q->firing = 1;
    tw_deferred *d; /* gets fired by their holders are skipped: the item waits */
    while (q->count && (d = tw__wlist_next(getters(q)))) {
        tw__deferred_fire(d, ring_pop(q));
        tw_deferred_unref(d);
    }
    q->firing = 0;
}

int tw_dqueue_put(tw_dqueue *q, void *ptr, tw_drop_fn drop)
{
    if (!q)
        return TW_EINVAL;
    CHECK_THREAD(q, "tw_dqueue_put");
    if (q->closing)
        return TW_ESHUTDOWN;
    size_t room = q->waiting + q->size < q->waiting ? SIZE_MAX : q->waiting + q->size;
    if (q->count >= room)
        return TW_EOVERFLOW;
    int rc = ring_push(q, tw_result_value(ptr, drop));
    if (rc)
        return rc;
    hand_off(q);
    return 0;
}

static void cancel_get(tw_deferred *d, void *arg)
{
    tw_dqueue *q = arg;
    tw__wlist_unlink(getters(q), d);
    tw_deferred_unref(d); /* the list's reference */
}

int tw_dqueue_get(tw_dqueue *q, tw_deferred **out)
{
    if (!q || !out)
        return TW_EINVAL;
    CHECK_THREAD(q, "tw_dqueue_get");
    if (q->closing)
        return TW_ESHUTDOWN;
    if (q->count && !q->whead) {
        int rc = tw__deferred_new_fired(out, q->items[q->head]);
        if (rc == 0)
            ring_pop(q); /* taken by the Deferred; on failure it stays kept */
        return rc;
    }
    if (q->waiting >= q->backlog)
        return TW_EUNDERFLOW;
    return tw__wlist_wait(getters(q), cancel_get, q, out);
}

size_t tw_dqueue_pending(const tw_dqueue *q)
{
    return q ? q->count : 0;
}

size_t tw_dqueue_waiting(const tw_dqueue *q)
{
    return q ? q->waiting : 0;
}

void tw_dqueue_destroy(tw_dqueue *q)
{
    if (!q)
        return;
    CHECK_THREAD(q, "tw_dqueue_destroy");
    if (q->firing || q->closing) {
        tw_diag_report(TW_DIAG_MISUSE, TW_EBUSY, "tw_dqueue_destroy",
                       "a DeferredQueue cannot be destroyed from inside its own hand-off or "
                       "destruction");
        return;
    }
    /* From here put and get return TW_ESHUTDOWN, also from the errbacks
     * of the gets failed below. */
    q->closing = true;
    while (q->count)
        tw_result_drop(ring_pop(q));
    tw_deferred *d;
    while ((d = tw__wlist_next(getters(q)))) {
        tw__deferred_fire(d, tw_result_fail(TW_ESHUTDOWN, "the DeferredQueue was destroyed"));
        tw_deferred_unref(d);
    }
    if (q->items)
        tw__free(q->items, q->cap * sizeof *q->items);
    TW__DELETE(q);
}
