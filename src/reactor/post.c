/* Calls from other threads.
 *
 * `posted` is a lock-free LIFO (a Treiber stack) of caller nodes. Posting is
 * one CAS; the loop takes the whole stack with one exchange and reverses it,
 * so each batch runs in posting order — per thread, and overall by the order
 * the CASes succeeded. A call posted while a batch runs waits for the next
 * iteration. Once shut down the head holds TW__POST_CLOSED and posting fails.
 *
 * Wake-ups are coalesced by `wake_pending`: a poster writes the waker only
 * when it turns the flag from 0 to 1; the loop clears it (tw__reactor_rearm)
 * before it checks for posted calls and decides how long to sleep. Both
 * sides are seq_cst, a store-load handshake: either the poster's exchange
 * comes after the clear and writes the waker, or it came before, and then
 * its push (earlier still) is visible to the loop's check, which then does
 * not sleep. */
#include "base/alloc.h"
#include "reactor/reactor.h"

int tw_reactor_post(tw_reactor *r, tw_call *node)
{
    if (!r || !node || !node->fn)
        return TW_EINVAL;
    tw_call *head = __atomic_load_n(&r->posted, __ATOMIC_RELAXED);
    do {
        if (head == TW__POST_CLOSED)
            return TW_ESHUTDOWN;
        node->next = head;
        /* seq_cst: the push happens before the wake-flag exchange below (the
         * handshake above); release would suffice for the node's contents. */
    } while (!__atomic_compare_exchange_n(&r->posted, &head, node, true, __ATOMIC_SEQ_CST,
                                          __ATOMIC_RELAXED));
    tw__reactor_wake(r);
    return 0;
}

void tw__reactor_wake(tw_reactor *r)
{
    if (__atomic_exchange_n(&r->wake_pending, 1, __ATOMIC_SEQ_CST) == 0)
        tw__waker_wake(r->wake_wfd);
}

void tw__reactor_rearm(tw_reactor *r)
{
    __atomic_store_n(&r->wake_pending, 0, __ATOMIC_SEQ_CST);
}

bool tw__posted_pending(const tw_reactor *r)
{
    tw_call *h = __atomic_load_n(&r->posted, __ATOMIC_SEQ_CST);
    return h != NULL && h != TW__POST_CLOSED;
}

typedef struct alloc_call {
    tw_call node;
    tw_call_fn fn;
    void *arg;
} alloc_call;

static void run_alloc_call(void *p)
{
    alloc_call *c = p;
    tw_call_fn fn = c->fn;
    void *arg = c->arg;
    TW__DELETE(c);
    fn(arg);
}

int tw_reactor_call_from_thread(tw_reactor *r, tw_call_fn fn, void *arg)
{
    if (!r || !fn)
        return TW_EINVAL;
    alloc_call *c = tw__alloc(sizeof *c);
    if (!c)
        return TW_ENOMEM;
    c->node.fn = run_alloc_call;
    c->node.arg = c;
    c->fn = fn;
    c->arg = arg;
    int rc = tw_reactor_post(r, &c->node);
    if (rc)
        TW__DELETE(c);
    return rc;
}

/* Runs a batch taken from the stack (newest first). */
static void run_batch(tw_call *lifo)
{
    tw_call *fifo = NULL;
    while (lifo) {
        tw_call *next = lifo->next;
        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
    }
    while (fifo) {
        tw_call *next = fifo->next; /* fn may free or reuse its node */
        fifo->fn(fifo->arg);
        fifo = next;
    }
}

bool tw__posted_run(tw_reactor *r)
{
    tw_call *h = __atomic_load_n(&r->posted, __ATOMIC_RELAXED);
    if (!h || h == TW__POST_CLOSED)
        return false;
    /* acquire: the nodes' contents, published by the posters' CAS. */
    h = __atomic_exchange_n(&r->posted, NULL, __ATOMIC_ACQUIRE);
    run_batch(h);
    return true;
}

void tw__posted_close(tw_reactor *r)
{
    for (;;) {
        tw_call *h = __atomic_exchange_n(&r->posted, NULL, __ATOMIC_ACQUIRE);
        if (h) {
            run_batch(h);
            continue;
        }
        tw_call *expect = NULL;
        if (__atomic_compare_exchange_n(&r->posted, &expect, TW__POST_CLOSED, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return;
    }
}
