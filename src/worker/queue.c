/* The blocking Queue: Python's queue.Queue, with 3.13's shutdown.
 *
 * One tw_lock guards the whole queue; three Conditions share it:
 *   not_empty       getters wait here while the store is empty and the queue
 *                   is not shut down;
 *   not_full        putters wait here while a bounded store is full and the
 *                   queue is not shut down;
 *   all_tasks_done  joiners wait here while unfinished > 0.
 * Each state change notifies exactly the waiters it can satisfy: a put wakes
 * one getter, a get from a bounded queue one putter, the task_done that
 * brings unfinished to 0 every joiner, and shutdown every getter and putter
 * (they all must see it). A notified waiter never times out (see tw_cond),
 * so a notification is never lost to a waiter that gives up. Nor to a failed
 * allocation: a putter only waits on a full queue, where cap == maxsize, so
 * once woken it never needs to grow the store.
 *
 * Storage (the `store`, guarded by the lock):
 *   FIFO / LIFO   a ring of void * of `cap` slots; the items are the `count`
 *                 slots from `head`, wrapping. FIFO takes at head, LIFO at
 *                 the far end; both add at the far end, so a LIFO's head
 *                 stays 0.
 *   PRIORITY      a binary min-heap of {item, seq} in `count` slots, ordered
 *                 by cmp and then by seq, the put sequence number, so that
 *                 equal items leave in the order they came.
 * The buffer is allocated at the first put and doubles when full (never past
 * maxsize for a bounded queue), through tw__realloc: a failed growth leaves
 * the old buffer, and so the queue, exactly as it was. It never shrinks.
 *
 * Callbacks: cmp runs under the lock and must not call into this queue. drop
 * runs without the lock: during an immediate shutdown it may call into the
 * queue (tw_queue_size, a put that fails); during destroy it must not.
 *
 * Shutdown. `shut` goes NONE → SOFT → HARD, or straight to HARD, and never
 * back. An immediate shutdown detaches the store under the lock (the queue is
 * then empty, and stays so since every put fails), hands the detached items
 * to drop outside the lock in the order get would have returned them, and
 * only then, under the lock again, counts them as done and wakes the joiners
 * if unfinished reached 0: a join that returns after an immediate shutdown
 * knows every dropped item has been through drop. */
#include <string.h>

#include "base/alloc.h"

#include <twine/worker.h>

enum { SHUT_NONE = 0, SHUT_SOFT = 1, SHUT_HARD = 2 };

/* Slots allocated at the first put (fewer if maxsize is smaller). */
#define INITIAL_CAP 16

/* A heap slot: the item and its put sequence number, the tie-break. */
typedef struct slot {
    void *item;
    uint64_t seq;
} slot;

typedef struct store {
    void *buf;    /* void *[cap] (ring) or slot[cap] (heap); NULL until the first put */
    size_t cap;   /* slots allocated */
    size_t head;  /* ring only: index of the oldest item */
    size_t count; /* items held */
} store;

/* The fixed part of a queue: set by create, then only read (without the lock). */
typedef struct policy {
    enum tw_queue_kind kind;
    int (*cmp)(const void *a, const void *b, void *ctx);
    void *cmp_ctx;
    void (*drop)(void *item, void *ctx);
    void *drop_ctx;
} policy;

struct tw_queue {
    tw_lock lock; /* guards every field below except the immutable ones */
    tw_cond not_empty, not_full, all_tasks_done; /* all three over lock */
    store st;
    uint64_t next_seq; /* the next put's sequence number (the heap's tie-break) */
    size_t unfinished; /* items put and not yet marked done (task_done or dropped) */
    int shut;          /* SHUT_* */
    /* Immutable after create: read without the lock. */
    size_t maxsize; /* 0 = unbounded */
    policy pol;
};

/* ---- storage ------------------------------------------------------------- */

static size_t slot_size(enum tw_queue_kind kind)
{
    return kind == TW_QUEUE_PRIORITY ? sizeof(slot) : sizeof(void *);
}

/* (i + j) mod cap, for i < cap and j <= cap, without overflow. */
static size_t ring_wrap(size_t i, size_t j, size_t cap)
{
    return i >= cap - j ? i - (cap - j) : i + j;
}

/* Makes room for one more item: 0, or TW_ENOMEM with s unchanged. The caller
 * has checked that a bounded queue is below maxsize. */
static int store_reserve(store *s, enum tw_queue_kind kind, size_t maxsize)
{
    size_t sz = slot_size(kind), ncap;
    void *nbuf;
    if (s->count < s->cap)
        return 0;
    if (s->cap == 0)
        ncap = INITIAL_CAP;
    else if (s->cap > SIZE_MAX / 2 / sz)
        return TW_ENOMEM;
    else
        ncap = s->cap * 2;
    if (maxsize != 0 && ncap > maxsize)
        ncap = maxsize; /* > cap, since count == cap < maxsize */
    nbuf = tw__realloc(s->buf, s->cap * sz, ncap * sz);
    if (!nbuf)
        return TW_ENOMEM;
    if (kind != TW_QUEUE_PRIORITY && s->head + s->count > s->cap) {
        /* The ring wrapped: move the run from head to the old end up to the
         * new end, so the items are again the `count` slots from head. */
        size_t run = s->cap - s->head;
        void **ring = nbuf;
        memmove(ring + (ncap - run), ring + s->head, run * sizeof *ring);
        s->head = ncap - run;
    }
    s->buf = nbuf;
    s->cap = ncap;
    return 0;
}

/* Whether heap slot a leaves before b. */
static bool heap_before(const policy *p, const slot *a, const slot *b)
{
    int c = p->cmp(a->item, b->item, p->cmp_ctx);
    return c < 0 || (c == 0 && a->seq < b->seq);
}

/* Adds an item; the caller has reserved room. */
static void store_push(store *s, const policy *p, void *item, uint64_t seq)
{
    if (p->kind == TW_QUEUE_PRIORITY) {
        slot *h = s->buf, x = {item, seq};
        size_t i = s->count;
        while (i > 0) {
            size_t parent = (i - 1) / 2;
            if (!heap_before(p, &x, &h[parent]))
                break;
            h[i] = h[parent];
            i = parent;
        }
        h[i] = x;
    } else {
        void **ring = s->buf;
        ring[ring_wrap(s->head, s->count, s->cap)] = item;
    }
    s->count++;
}

/* Removes the next item per the queue's order; s must not be empty. */
static void *store_take(store *s, const policy *p)
{
    void **ring = s->buf;
    void *item;
    if (p->kind == TW_QUEUE_PRIORITY) {
        slot *h = s->buf, last;
        size_t n = --s->count, i = 0;
        item = h[0].item;
        last = h[n];
        /* Sift the last slot down from the root into the hole. */
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= n)
                break;
            if (c + 1 < n && heap_before(p, &h[c + 1], &h[c]))
                c++;
            if (!heap_before(p, &h[c], &last))
                break;
            h[i] = h[c];
            i = c;
        }
        if (n > 0)
            h[i] = last;
        return item;
    }
    if (p->kind == TW_QUEUE_FIFO) {
        item = ring[s->head];
        s->head = ring_wrap(s->head, 1, s->cap);
    } else {
        item = ring[ring_wrap(s->head, s->count - 1, s->cap)];
    }
    if (--s->count == 0)
        s->head = 0;
    return item;
}

/* Hands every item of a store nobody else can see to drop (in get order),
 * then frees its buffer. */
static void store_drain(store *s, const policy *p)
{
    while (s->count > 0) {
        void *item = store_take(s, p);
        if (p->drop)
            p->drop(item, p->drop_ctx);
    }
    tw__free(s->buf, s->cap * slot_size(p->kind));
    s->buf = NULL;
    s->cap = 0;
}

/* ---- create / destroy ---------------------------------------------------- */

int tw_queue_create_with(const tw_queue_config *cfg, tw_queue **out)
{
    tw_queue *q;
    if (!cfg || !out)
        return TW_EINVAL;
    if (cfg->kind != TW_QUEUE_FIFO && cfg->kind != TW_QUEUE_LIFO &&
        cfg->kind != TW_QUEUE_PRIORITY)
        return TW_EINVAL;
    if (cfg->kind == TW_QUEUE_PRIORITY && !cfg->cmp)
        return TW_EINVAL;
    q = TW__NEW(tw_queue);
    if (!q)
        return TW_ENOMEM;
    tw_lock_init(&q->lock);
    tw_cond_init_lock(&q->not_empty, &q->lock);
    tw_cond_init_lock(&q->not_full, &q->lock);
    tw_cond_init_lock(&q->all_tasks_done, &q->lock);
    q->shut = SHUT_NONE;
    q->maxsize = cfg->maxsize;
    q->pol.kind = cfg->kind;
    q->pol.cmp = cfg->cmp;
    q->pol.cmp_ctx = cfg->cmp_ctx;
    q->pol.drop = cfg->drop;
    q->pol.drop_ctx = cfg->drop_ctx;
    *out = q;
    return 0;
}

int tw_queue_create(enum tw_queue_kind kind, size_t maxsize, tw_queue **out)
{
    tw_queue_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = kind;
    cfg.maxsize = maxsize;
    return tw_queue_create_with(&cfg, out);
}

int tw_queue_destroy(tw_queue *q)
{
    if (!q)
        return TW_EINVAL;
    /* No other thread may use q any more, so the store needs no lock. */
    store_drain(&q->st, &q->pol);
    TW__DELETE(q);
    return 0;
}

/* ---- put / get ----------------------------------------------------------- */

/* Lock held. Waits on c, the lock held again on return, until woken or the
 * deadline passes: 0 (woken: re-check), or TW_ETIMEDOUT once tw_now_ns() has
 * reached d. The remaining time is recomputed from d on every call, so
 * spurious wake-ups and lost races never stretch the caller's timeout. */
static int wait_until(tw_cond *c, tw_deadline d)
{
    if (d != TW_DEADLINE_NEVER && tw_now_ns() >= d)
        return TW_ETIMEDOUT;
    /* A TW_ETIMEDOUT from the condition is not trusted as is: converting
     * to seconds and back may round the deadline down by a nanosecond. The
     * caller re-checks its predicate and calls again, which looks at d. */
    (void)tw_cond_wait_timeout(c, tw_deadline_remaining(d));
    return 0;
}

/* Full for a put: bounded and at maxsize. Lock held. */
static bool is_full(const tw_queue *q)
{
    return q->maxsize != 0 && q->st.count >= q->maxsize;
}

/* Puts, waiting until deadline d (now = do not wait). `busy` is the code for
 * a full queue: TW_EFULL for the try form, TW_ETIMEDOUT otherwise. */
static int put_until(tw_queue *q, void *item, tw_deadline d, int busy)
{
    int rc = 0;
    tw_lock_acquire(&q->lock);
    for (;;) {
        if (q->shut != SHUT_NONE) {
            rc = TW_ESHUTDOWN;
            goto out;
        }
        if (!is_full(q))
            break;
        if (wait_until(&q->not_full, d) == TW_ETIMEDOUT) {
            rc = busy;
            goto out;
        }
    }
    rc = store_reserve(&q->st, q->pol.kind, q->maxsize);
    if (rc != 0)
        goto out;
    store_push(&q->st, &q->pol, item, q->next_seq++);
    q->unfinished++;
    tw_cond_notify(&q->not_empty, 1);
out:
    tw_lock_release(&q->lock);
    return rc;
}

/* As put_until; `busy` is TW_EEMPTY for the try form. */
static int get_until(tw_queue *q, void **item, tw_deadline d, int busy)
{
    int rc = 0;
    tw_lock_acquire(&q->lock);
    while (q->st.count == 0) {
        /* Shut down (softly or not) and empty: it stays empty, never wait. */
        if (q->shut != SHUT_NONE) {
            rc = TW_ESHUTDOWN;
            goto out;
        }
        if (wait_until(&q->not_empty, d) == TW_ETIMEDOUT) {
            rc = busy;
            goto out;
        }
    }
    *item = store_take(&q->st, &q->pol);
    if (q->maxsize != 0)
        tw_cond_notify(&q->not_full, 1);
out:
    tw_lock_release(&q->lock);
    return rc;
}

/* The deadline for a timeout, or TW_EINVAL (NaN). */
static int deadline_of(double timeout, tw_deadline *d)
{
    return tw_deadline_from_timeout(timeout, d) == 0 ? 0 : TW_EINVAL;
}

int tw_queue_put(tw_queue *q, void *item)
{
    if (!q)
        return TW_EINVAL;
    return put_until(q, item, TW_DEADLINE_NEVER, TW_ETIMEDOUT);
}

int tw_queue_try_put(tw_queue *q, void *item)
{
    if (!q)
        return TW_EINVAL;
    /* INT64_MIN: already passed, whatever the clock says. */
    return put_until(q, item, INT64_MIN, TW_EFULL);
}

int tw_queue_put_timeout(tw_queue *q, void *item, double timeout)
{
    tw_deadline d;
    if (!q || deadline_of(timeout, &d) != 0)
        return TW_EINVAL;
    return put_until(q, item, d, TW_ETIMEDOUT);
}

int tw_queue_get(tw_queue *q, void **item)
{
    if (!q || !item)
        return TW_EINVAL;
    return get_until(q, item, TW_DEADLINE_NEVER, TW_ETIMEDOUT);
}

int tw_queue_try_get(tw_queue *q, void **item)
{
    if (!q || !item)
        return TW_EINVAL;
    return get_until(q, item, INT64_MIN, TW_EEMPTY);
}

int tw_queue_get_timeout(tw_queue *q, void **item, double timeout)
{
    tw_deadline d;
    if (!q || !item || deadline_of(timeout, &d) != 0)
        return TW_EINVAL;
    return get_until(q, item, d, TW_ETIMEDOUT);
}

/* ---- state --------------------------------------------------------------- */

size_t tw_queue_size(tw_queue *q)
{
    size_t n;
    if (!q)
        return 0;
    tw_lock_acquire(&q->lock);
    n = q->st.count;
    tw_lock_release(&q->lock);
    return n;
}

bool tw_queue_empty(tw_queue *q)
{
    return tw_queue_size(q) == 0;
}

bool tw_queue_full(tw_queue *q)
{
    bool full;
    if (!q)
        return false;
    tw_lock_acquire(&q->lock);
    full = is_full(q);
    tw_lock_release(&q->lock);
    return full;
}

/* Whether tw_queue_shutdown has been called (a snapshot, as Python's
 * is_shutdown). */
bool tw_queue_is_shutdown(tw_queue *q)
{
    bool shut;
    if (!q)
        return false;
    tw_lock_acquire(&q->lock);
    shut = q->shut != SHUT_NONE;
    tw_lock_release(&q->lock);
    return shut;
}

/* ---- task_done / join ---------------------------------------------------- */

int tw_queue_task_done(tw_queue *q)
{
    int rc = 0;
    if (!q)
        return TW_EINVAL;
    tw_lock_acquire(&q->lock);
    if (q->unfinished == 0)
        rc = TW_EOVERFLOW;
    else if (--q->unfinished == 0)
        tw_cond_notify_all(&q->all_tasks_done);
    tw_lock_release(&q->lock);
    return rc;
}

static int join_until(tw_queue *q, tw_deadline d)
{
    int rc = 0;
    tw_lock_acquire(&q->lock);
    while (q->unfinished > 0) {
        if (wait_until(&q->all_tasks_done, d) == TW_ETIMEDOUT) {
            rc = TW_ETIMEDOUT;
            break;
        }
    }
    tw_lock_release(&q->lock);
    return rc;
}

int tw_queue_join(tw_queue *q)
{
    if (!q)
        return TW_EINVAL;
    return join_until(q, TW_DEADLINE_NEVER);
}

int tw_queue_join_timeout(tw_queue *q, double timeout)
{
    tw_deadline d;
    if (!q || deadline_of(timeout, &d) != 0)
        return TW_EINVAL;
    return join_until(q, d);
}

/* ---- shutdown ------------------------------------------------------------ */

int tw_queue_shutdown(tw_queue *q, bool immediate)
{
    store detached = {NULL, 0, 0, 0};
    size_t dropped;

    if (!q)
        return TW_EINVAL;
    tw_lock_acquire(&q->lock);
    if (immediate) {
        q->shut = SHUT_HARD;
        detached = q->st;
        memset(&q->st, 0, sizeof q->st);
    } else if (q->shut == SHUT_NONE) {
        q->shut = SHUT_SOFT;
    }
    /* Every getter of an empty queue and every putter must fail now. */
    tw_cond_notify_all(&q->not_empty);
    tw_cond_notify_all(&q->not_full);
    tw_lock_release(&q->lock);

    if (!detached.buf)
        return 0;
    dropped = detached.count;
    store_drain(&detached, &q->pol);
    if (dropped == 0)
        return 0;

    /* The dropped items count as done. Items got before the shutdown and not
     * yet marked are still owed their task_done, so this cannot go below 0
     * unless task_done was over-called meanwhile; clamp for that case. */
    tw_lock_acquire(&q->lock);
    q->unfinished -= dropped < q->unfinished ? dropped : q->unfinished;
    if (q->unfinished == 0)
        tw_cond_notify_all(&q->all_tasks_done);
    tw_lock_release(&q->lock);
    return 0;
}
