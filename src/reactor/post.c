/* Calls from other threads.
 *
 * Two structures, one order.
 *  - The ring: a bounded multi-producer queue of (fn, arg) cells, each with
 *    a sequence number. A poster claims a slot with one CAS on `ring_tail`,
 *    writes the cell and publishes it by storing its position + 1 as the
 *    cell's sequence; the loop reads cells in order and gives them back by
 *    advancing `ring_head` (release), never by writing a cell: a cell's
 *    line is written by posters only, so the loop reading one cell does not
 *    pull back the line a poster is filling next (a poster and a loop on
 *    two CPUs otherwise bounced the lines between their caches and ran at a
 *    fifth of the speed, depending on where the scheduler put them). Posters
 *    read `ring_head` only when the ring looks full by `head_seen`, their
 *    own cached copy. No allocation, no node: this is the path of nearly
 *    every call, from tw_reactor_call_from_thread and tw_reactor_post alike.
 *  - The overflow stack: when the ring is full, a call goes on a lock-free
 *    LIFO (a Treiber stack) of tw_call nodes — the caller's node for
 *    tw_reactor_post, an allocated one for call_from_thread — and `ovf`
 *    counts the calls on it that have not run.
 *
 * Per-thread FIFO across the two: a poster uses the ring only while `ovf`
 * is 0, so once a thread's call went on the stack, its later calls follow
 * it there until the loop has run them. Each batch the loop first takes the
 * whole stack, then runs the published ring cells up to the tail it sees
 * after taking it (a thread's ring calls are older than its stack calls),
 * then the stack's calls in posting order, and only then lowers `ovf`.
 *
 * Wake-ups are coalesced by `wake_pending`: a poster writes the waker only
 * when it turns the flag from 0 to 1; the loop clears it (tw__reactor_rearm)
 * before it checks for work and decides to sleep. The check reads the ring's
 * tail (a claimed slot counts, published or not), `ovf` and the stack's
 * head; the posters' CAS on the tail, or increment of `ovf`, comes before
 * their flag load. All are seq_cst: a store-load handshake, so either the
 * poster sees the flag clear and writes, or the loop sees the call coming and
 * does not sleep. A poster wakes before its call is published or pushed, so
 * it never touches the reactor after the call can have run.
 *
 * Closing: the loop sets RING_CLOSED in the tail with one atomic OR. From
 * then on other threads are refused (one that checked just before may still
 * add its one call), and the slots claimed before it are run (their posters
 * publish them at once). Calls made by the calls being drained, on the loop
 * thread, go on the stack, which is run until it is empty and swapped for
 * TW__POST_CLOSED. Every accepted call runs exactly once. */
#include <sched.h>

#include "base/alloc.h"
#include "base/thread.h"
#include "reactor/reactor.h"

#define RING_CLOSED (UINT64_C(1) << 63)

/* The allocator promises malloc's alignment only: the cells' 64 bytes more
 * let the ring start on a cache line. */
#define RING_BYTES (TW__RING_SIZE * sizeof(tw__cell) + 64)

int tw__post_init(tw_reactor *r)
{
    r->ring_mem = tw__alloc(RING_BYTES);
    if (!r->ring_mem)
        return TW_ENOMEM;
    r->ring = (tw__cell *)(((uintptr_t)r->ring_mem + 63) & ~(uintptr_t)63);
    for (uint64_t i = 0; i < TW__RING_SIZE; i++)
        r->ring[i].seq = 0; /* nothing published: slot i's first call is published as i + 1 */
    return 0;
}

void tw__post_destroy(tw_reactor *r)
{
    tw__free(r->ring_mem, RING_BYTES);
    r->ring_mem = NULL;
    r->ring = NULL;
}

void tw__reactor_wake(tw_reactor *r)
{
    /* A load before the exchange: while the flag is set (the loop has not
     * re-armed yet) no poster needs to write, nor to pay a read-modify-write
     * on the line the loop also writes. */
    if (__atomic_load_n(&r->wake_pending, __ATOMIC_SEQ_CST))
        return;
    if (__atomic_exchange_n(&r->wake_pending, 1, __ATOMIC_SEQ_CST) == 0)
        tw__waker_wake(r->wake_wfd);
}

void tw__reactor_rearm(tw_reactor *r)
{
    __atomic_store_n(&r->wake_pending, 0, __ATOMIC_SEQ_CST);
}

/* 0, TW_EFULL or TW_ESHUTDOWN. */
static int ring_push(tw_reactor *r, tw_call_fn fn, void *arg)
{
    /* relaxed: only a starting guess; the CAS below decides. */
    uint64_t pos = __atomic_load_n(&r->ring_tail, __ATOMIC_RELAXED);
    /* acquire: pairs with the release below by the poster that cached it,
     * which had acquired ring_head itself, so the loop's reads of the cells
     * before it happen before our reuse of one (a relaxed cache gave a
     * second poster no such order: ThreadSanitizer's report of a cell written
     * while the loop read it). */
    uint64_t head = __atomic_load_n(&r->head_seen, __ATOMIC_ACQUIRE);
    for (;;) {
        if (pos & RING_CLOSED)
            return TW_ESHUTDOWN;
        if (pos - head >= TW__RING_SIZE) {
            /* acquire: pairs with the loop's release of ring_head, so its
             * reads of the cells before head are done before we reuse one. */
            head = __atomic_load_n(&r->ring_head, __ATOMIC_ACQUIRE);
            if (pos - head >= TW__RING_SIZE)
                return TW_EFULL; /* the loop has not run the call a lap ago yet */
            __atomic_store_n(&r->head_seen, head, __ATOMIC_RELEASE);
        }
        /* seq_cst: the claim comes before the wake-flag load (handshake). */
        if (__atomic_compare_exchange_n(&r->ring_tail, &pos, pos + 1, true, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED))
            break;
    }
    tw__cell *c = &r->ring[pos & (TW__RING_SIZE - 1)];
    /* Wake before publishing: the loop cannot run the call before it is
     * published, so the poster is done with the reactor by then (the call
     * may be what lets the application destroy it). A loop that wakes early
     * sees the claimed slot and waits for it without sleeping. */
    tw__reactor_wake(r);
    c->fn = fn;
    c->arg = arg;
    /* release: fn and arg before the loop sees the cell published (acquire). */
    __atomic_store_n(&c->seq, pos + 1, __ATOMIC_RELEASE);
    return 0;
}

static int stack_push(tw_reactor *r, tw_call *node)
{
    /* Counted before it is visible, so that no call of this thread can use
     * the ring until the loop has run this one; and the loop, which counts
     * `ovf` as work, does not sleep between the wake-up and the push. As
     * for the ring, the wake-up comes before the call can run. */
    __atomic_fetch_add(&r->ovf, 1, __ATOMIC_SEQ_CST);
    tw__reactor_wake(r);
    tw_call *head = __atomic_load_n(&r->posted, __ATOMIC_RELAXED); /* a guess; the CAS decides */
    do {
        if (head == TW__POST_CLOSED) {
            __atomic_fetch_sub(&r->ovf, 1, __ATOMIC_SEQ_CST);
            return TW_ESHUTDOWN;
        }
        node->next = head;
        /* release: the node's contents before the loop takes it (its acquire
         * exchange). The wake-up handshake rests on `ovf`, raised above. */
    } while (!__atomic_compare_exchange_n(&r->posted, &head, node, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
    return 0;
}

/* The ring is full: the loop is behind. Retries while the loop is making
 * progress, yielding the CPU (on one CPU the loop needs it to catch up);
 * gives up (TW_EFULL: the stack) when the loop has run nothing for a
 * millisecond (it may be blocked, and must never wait for a poster), or
 * when another thread has moved to the stack (its order comes first). */
static int wait_for_room(tw_reactor *r, tw_call_fn fn, void *arg)
{
    uint64_t seen = __atomic_load_n(&r->ring_head, __ATOMIC_RELAXED);
    int64_t since = tw_now_ns();
    for (int i = 1;; i++) {
        if (i < 16 && tw__spin_limit() > 0) /* no spinning where the loop shares our CPU */
            tw__cpu_relax();
        else
            sched_yield();
        if (__atomic_load_n(&r->ovf, __ATOMIC_SEQ_CST) != 0)
            return TW_EFULL;
        int rc = ring_push(r, fn, arg);
        if (rc != TW_EFULL)
            return rc;
        if ((i & 15) == 0) {
            uint64_t head = __atomic_load_n(&r->ring_head, __ATOMIC_RELAXED);
            int64_t now = tw_now_ns();
            if (head != seen) {
                seen = head;
                since = now;
            } else if (now - since > 1000000) {
                return TW_EFULL;
            }
        }
    }
}

/* The ring, unless calls wait on the stack. 0, TW_ESHUTDOWN, or TW_EFULL:
 * the call must go on the stack (the caller brings a node).
 *
 * A full ring means the loop is behind: a thread other than the loop's waits
 * while the loop makes progress (wait_for_room). The loop must never wait
 * for a poster, so its own calls go to the stack at once. */
static int enqueue(tw_reactor *r, tw_call_fn fn, void *arg)
{
    int rc = TW_EFULL;
    bool ring = __atomic_load_n(&r->ovf, __ATOMIC_SEQ_CST) == 0;
    if (ring) {
        /* ring_push refuses a closed ring itself: its CAS on the tail is
         * what decides, so the common case checks nothing else. */
        rc = ring_push(r, fn, arg);
        if (rc == 0)
            return 0;
    }
    /* relaxed: only the loop thread can see its own id there. */
    bool on_loop = __atomic_load_n(&r->loop_thread, __ATOMIC_RELAXED) == tw__self();
    if (on_loop)
        return TW_EFULL; /* full, or closed and this is a call made by a call being
                          * drained: the stack, until that closes too */
    if (ring && rc == TW_EFULL) {
        rc = wait_for_room(r, fn, arg);
        if (rc == 0)
            return 0;
    }
    /* Closing: only the calls being drained may still add calls (on the
     * loop thread); others are refused, so that posters that never stop
     * cannot keep shutdown from ending. A poster that saw the ring open
     * adds at most this one call. */
    if (rc == TW_ESHUTDOWN || (__atomic_load_n(&r->ring_tail, __ATOMIC_SEQ_CST) & RING_CLOSED))
        return TW_ESHUTDOWN;
    return TW_EFULL;
}

int tw_reactor_post(tw_reactor *r, tw_call *node)
{
    if (!r || !node || !node->fn)
        return TW_EINVAL;
    int rc = enqueue(r, node->fn, node->arg);
    return rc == TW_EFULL ? stack_push(r, node) : rc;
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
    int rc = enqueue(r, fn, arg);
    if (rc != TW_EFULL)
        return rc;
    /* The ring is full or closed, or calls wait on the stack: a node of our own. */
    alloc_call *c = tw__alloc(sizeof *c);
    if (!c)
        return TW_ENOMEM;
    c->node.fn = run_alloc_call;
    c->node.arg = c;
    c->fn = fn;
    c->arg = arg;
    rc = stack_push(r, &c->node);
    if (rc)
        TW__DELETE(c);
    return rc;
}

bool tw__posted_ready(const tw_reactor *r)
{
    const tw__cell *c = &r->ring[r->ring_head & (TW__RING_SIZE - 1)];
    /* relaxed: a hint; ring_run's acquire load is what reads the call. */
    return __atomic_load_n(&c->seq, __ATOMIC_RELAXED) == r->ring_head + 1 ||
           __atomic_load_n(&r->ovf, __ATOMIC_RELAXED) != 0;
}

bool tw__posted_pending(const tw_reactor *r)
{
    uint64_t tail = __atomic_load_n(&r->ring_tail, __ATOMIC_SEQ_CST) & ~RING_CLOSED;
    if (tail != r->ring_head || __atomic_load_n(&r->ovf, __ATOMIC_SEQ_CST) != 0)
        return true;
    tw_call *h = __atomic_load_n(&r->posted, __ATOMIC_SEQ_CST);
    return h != NULL && h != TW__POST_CLOSED;
}

/* Runs the ring's cells from ring_head up to `end`. With wait, a claimed
 * cell not yet published is waited for (its poster is between two stores);
 * without, the run stops there and the rest waits for the next batch. */
static void ring_run(tw_reactor *r, uint64_t end, bool wait)
{
    while (r->ring_head != end) {
        tw__cell *c = &r->ring[r->ring_head & (TW__RING_SIZE - 1)];
        uint64_t seq;
        int spins = 0;
        while ((seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE)) != r->ring_head + 1) {
            if (!wait)
                return;
            if (++spins > tw__spin_limit()) /* 0 on one CPU: the poster needs it */
                sched_yield();
            else
                tw__cpu_relax();
        }
        tw_call_fn fn = c->fn;
        void *arg = c->arg;
        /* release: our reads of the cell before a poster reuses it (its
         * acquire load in ring_push). The loop never writes a cell, so a
         * poster filling the next cells keeps their lines to itself. */
        __atomic_store_n(&r->ring_head, r->ring_head + 1, __ATOMIC_RELEASE);
        fn(arg);
    }
}

/* Runs the stack's calls (newest first as taken) in posting order. */
static void stack_run(tw_reactor *r, tw_call *lifo)
{
    tw_call *fifo = NULL;
    uint32_t n = 0;
    while (lifo) {
        tw_call *next = lifo->next;
        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
        n++;
    }
    while (fifo) {
        tw_call *next = fifo->next; /* fn may free or reuse its node */
        fifo->fn(fifo->arg);
        fifo = next;
    }
    if (n)
        __atomic_fetch_sub(&r->ovf, n, __ATOMIC_SEQ_CST);
}

bool tw__posted_run(tw_reactor *r)
{
    /* relaxed: a hint; the exchange below (acquire) is what takes the calls. */
    tw_call *h = __atomic_load_n(&r->posted, __ATOMIC_RELAXED);
    if (h && h != TW__POST_CLOSED) {
        /* acquire: the nodes, and the ring cells their posters published before. */
        tw_call *taken = __atomic_exchange_n(&r->posted, NULL, __ATOMIC_ACQUIRE);
        uint64_t end = __atomic_load_n(&r->ring_tail, __ATOMIC_ACQUIRE) & ~RING_CLOSED;
        ring_run(r, end, true); /* before the stack: those are older */
        stack_run(r, taken);
        return true;
    }
    /* The common case: the published cells, in order, up to a budget. The
     * tail is not read: a poster's claim is a CAS on it, and each read here
     * would pull its line away from the poster. */
    uint64_t head = r->ring_head;
    ring_run(r, head + TW__POST_BUDGET, false);
    return r->ring_head != head;
}

void tw__posted_close(tw_reactor *r)
{
    uint64_t end = __atomic_fetch_or(&r->ring_tail, RING_CLOSED, __ATOMIC_SEQ_CST) & ~RING_CLOSED;
    for (;;) {
        tw_call *taken = __atomic_exchange_n(&r->posted, NULL, __ATOMIC_ACQUIRE);
        ring_run(r, end, true);
        if (taken) {
            stack_run(r, taken);
            continue;
        }
        tw_call *expect = NULL;
        if (__atomic_compare_exchange_n(&r->posted, &expect, TW__POST_CLOSED, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return;
    }
}
