/* Internal: the Deferred's layout and the hooks the deferred layer's modules
 * share (failure.c, deferred.c, timeout.c, list.c, prim.c, dqueue.c).
 *
 * Everything here is single-threaded: a Deferred and whatever holds one are
 * used by one thread (builds with TW_DEBUG report other threads' calls). */
#ifndef TW_DEFERRED_INTERNAL_H
#define TW_DEFERRED_INTERNAL_H

#include <twine/deferred.h>

#include "base/diag.h"

/* ---- callback entries -----------------------------------------------------
 * The chain is a FIFO array of entries, ent[head .. head+count). A pair added
 * with tw_deferred_add_callbacks takes two entries: the callback half (E_PAIR)
 * and the errback half right after it; exactly one of the two runs. */
enum {
    E_VALUE = 1u,   /* runs when the current result is not a failure */
    E_FAILURE = 2u, /* runs when it is */
    E_BOTH = 3u,
    E_PAIR = 4u,  /* this entry and the next form one pair */
    E_CHAIN = 8u, /* continuation: hands the result to the Deferred in arg (holds a reference) */
    E_RUN = 16u,  /* DeferredLock/Semaphore run: fn is a tw_result_fn, the value is the primitive */
    E_DROP = 32u  /* fn is a tw_drop_fn, called with arg; the result passes through */
};

typedef void (*tw__fnptr)(void);

struct tw__entry {
    tw__fnptr fn;
    void *arg;
    uint32_t kind;
};

/* Entries stored inside the Deferred; longer chains move to a heap array. */
#define TW__INLINE_ENTRIES 12

/* flags */
enum {
    F_CALLED = 1u,        /* has a result (fired) */
    F_WAITING = 2u,       /* result is a Deferred this one waits on (weak pointer; its
                             E_CHAIN entry holds a reference to this one) */
    F_ON_STACK = 4u,      /* on a run loop's stack: that loop will run what is added */
    F_SUPPRESS = 8u,      /* cancelled without canceller: swallow one late result */
    F_CANCELLER_RAN = 16u,
    F_HEAP_ENTRIES = 32u, /* ent points to a heap array of cap entries */
    /* Each of these makes fields meaningful that are not set (nor read) without it, so
     * that a Deferred that never meets them costs nothing more to make, fire and free. */
    F_HINT = 64u,         /* hint and hint_cuts are set */
    F_PINNED = 128u,      /* pins > 0; cuts counts hand-offs since the first pin */
    F_DEAD = 256u,        /* freed, but the block stays until the last pin goes */
    F_CANCELLER_DROP = 512u /* canceller_drop is set */
};

struct tw_deferred {
    tw_result result;    /* meaningful once F_CALLED; none while a callback holds it */
    struct tw__entry *ent;
    uint32_t head, count, cap;
    uint32_t refs;
    uint32_t flags;
    tw_deferred *stack_next;   /* run-loop stack link, while F_ON_STACK */
    tw_canceller_fn canceller;
    void *canceller_arg;
    tw_deferred *wprev, *wnext; /* waiter list of a DeferredLock/Semaphore/Queue */
    const char *file;           /* creation site (may be NULL) */
    int line;
    /* User pauses only; waiting on a chain is F_WAITING. Not next to flags:
     * the two are tested together (tw__deferred_ready) right after a store to
     * flags, and a compiler merges adjacent fields into one 8-byte load,
     * which the 4-byte store cannot be forwarded to (a stall of a dozen
     * cycles or so on every fire). */
    uint32_t paused;
    /* The wait path's shortcut (deferred.c, "Finding the innermost"). With
     * F_HINT (only while F_WAITING): a Deferred further along the path than
     * result.ptr, pinned; it holds while hint->cuts == hint_cuts. */
    tw_deferred *hint;
    uint64_t hint_cuts;
    uint64_t cuts;              /* with F_PINNED: hand-offs made to waiters */
    uint32_t pins;              /* with F_PINNED: hints pointing here */
    tw_drop_fn canceller_drop;  /* with F_CANCELLER_DROP: drops canceller_arg */
#ifdef TW_DEBUG
    uint32_t thread; /* tw__self() of the creator */
#endif
    struct tw__entry inline_ent[TW__INLINE_ENTRIES];
};

/* Fired, not paused, not waiting: its chain can run. */
static inline bool tw__deferred_ready(const tw_deferred *d)
{
    return (d->flags & (F_CALLED | F_WAITING)) == F_CALLED && d->paused == 0;
}

/* Fired and its chain run to the end: not paused, not waiting, nothing left
 * to run, not on a loop's stack. A callback added now would run at once. */
static inline bool tw__deferred_finished(const tw_deferred *d)
{
    return tw__deferred_ready(d) && d->count == 0 && !(d->flags & F_ON_STACK);
}

/* Creates with one reference (the creation site may be NULL). */
int tw__deferred_new(tw_deferred **out, tw_canceller_fn canceller, void *arg, const char *file,
                     int line);
/* Creates an already-fired Deferred holding r (one reference). On TW_ENOMEM
 * r is not consumed: the caller still owns it. */
int tw__deferred_new_fired(tw_deferred **out, tw_result r);
/* If d is finished (tw__deferred_finished), moves its result to *out,
 * leaving d with none (so
 * a failure taken is not reported again when d is freed), and returns true.
 * How a chain takes the result of a Deferred returned to it. */
bool tw__deferred_take(tw_deferred *d, tw_result *out);
/* Makes room for n more entries; TW_ENOMEM leaves d unchanged. */
int tw__deferred_reserve(tw_deferred *d, uint32_t n);
/* Appends an entry; room must have been reserved. Does not run the chain. */
static inline void tw__deferred_push(tw_deferred *d, tw__fnptr fn, void *arg, uint32_t kind)
{
    struct tw__entry *e = &d->ent[d->head + d->count++];
    e->fn = fn;
    e->arg = arg;
    e->kind = kind;
}
/* Runs d's chain if it can run (fired, not paused, not waiting, not already
 * being run by a loop further up the stack). */
void tw__deferred_run(tw_deferred *d);
/* Fires without the thread check: the internal paths of lock, queue and list. */
int tw__deferred_fire(tw_deferred *d, tw_result r);
/* Fires d with r, which carries a Deferred (its reference is consumed): d
 * waits on it, as a chain waits on a Deferred one of its callbacks returned
 * (the cycle check included), and its callbacks run with that Deferred's
 * result. What async's coroutines fire their Deferred with when their
 * function returns a Deferred, or when a cancel hands their result on. If d
 * has fired, r is dropped: TW_EALREADY (0 when a cancel without canceller
 * swallows it). */
int tw__deferred_fire_chained(tw_deferred *d, tw_result r);
/* The innermost Deferred of d's wait path: d itself unless d waits; the one
 * a cancel reaches and the one whose result d will get. Amortised constant
 * time (path compression). */
tw_deferred *tw__deferred_innermost(tw_deferred *d);
/* Tests only: steps taken along wait paths by tw__deferred_innermost on the
 * calling thread (a cycle check or a cancel that starts at a Deferred that
 * is not waiting takes none). */
extern _Thread_local uint64_t tw__deferred_hops;

#ifdef TW_DEBUG
void tw__deferred_wrong_thread(const tw_deferred *d, const char *function);
#define TW__CHECK_THREAD(d, fn)                                                        \
    do {                                                                               \
        if ((d)->thread != tw__self())                                                 \
            tw__deferred_wrong_thread((d), (fn));                                      \
    } while (0)
#else
#define TW__CHECK_THREAD(d, fn) ((void)0)
#endif

/* unhandled.c: reports f, the failure a Deferred created at file:line (file
 * may be NULL) ended with when it was freed: to the unhandled-failure hook,
 * or else to the diagnostic hook. */
void tw__deferred_report_unhandled(tw_failure *f, const char *file, int line);

/* failure.c: a failure made by a list carries the failing input's index.
 * Only on a failure nobody else holds yet. */
void tw__failure_set_index(tw_failure *f, size_t index);

/* prim.c: the E_RUN entry. r is the granted value (the primitive). */
tw_result tw__prim_run(tw_result r, tw_result_fn fn, void *arg);
/* Takes a grant of p if acquire would grant it at once: one is free and
 * nobody waits (a grant returned inside a hand-off is not taken ahead of
 * the queue). */
static inline bool tw__dprim_take_now(tw__dprim *p)
{
    if (p->held < (p->limit ? p->limit : 1) && !p->head) {
        p->held++;
        return true;
    }
    return false;
}
/* Takes the lock, or a token of the semaphore, if acquire would grant it at
 * once, without the already-fired Deferred acquire makes for that; false
 * when the caller would have to wait, and for what acquire refuses (NULL,
 * the wrong kind). In prim.c for TW_DEBUG builds, which check the thread. */
#ifdef TW_DEBUG
bool tw__dlock_try_acquire(tw_dlock *l);
bool tw__dsem_try_acquire(tw_dsem *s);
#else
static inline bool tw__dlock_try_acquire(tw_dlock *l)
{
    return l && l->p.limit <= 1 && tw__dprim_take_now(&l->p);
}
static inline bool tw__dsem_try_acquire(tw_dsem *s)
{
    return s && s->p.limit != 0 && tw__dprim_take_now(&s->p);
}
#endif

/* ---- waiter lists (prim.c, dqueue.c) -------------------------------------
 * Intrusive FIFO through wprev/wnext; the list holds one reference to each
 * Deferred on it. */
typedef struct tw__wlist {
    tw_deferred **head, **tail;
    size_t *count;
} tw__wlist;

static inline void tw__wlist_push(tw__wlist l, tw_deferred *d)
{
    d->wnext = NULL;
    d->wprev = *l.tail;
    if (*l.tail)
        (*l.tail)->wnext = d;
    else
        *l.head = d;
    *l.tail = d;
    ++*l.count;
}

static inline void tw__wlist_unlink(tw__wlist l, tw_deferred *d)
{
    if (d->wprev)
        d->wprev->wnext = d->wnext;
    else
        *l.head = d->wnext;
    if (d->wnext)
        d->wnext->wprev = d->wprev;
    else
        *l.tail = d->wprev;
    d->wprev = d->wnext = NULL;
    --*l.count;
}

static inline tw_deferred *tw__wlist_pop(tw__wlist l)
{
    tw_deferred *d = *l.head;
    if (d)
        tw__wlist_unlink(l, d);
    return d;
}

/* A new waiter at the back of l: a Deferred whose cancel calls
 * cancel(d, arg) (which must unlink it and drop the list's reference). */
static inline int tw__wlist_wait(tw__wlist l, tw_canceller_fn cancel, void *arg,
                                 tw_deferred **out)
{
    tw_deferred *d;
    int rc = tw__deferred_new(&d, cancel, arg, NULL, 0);
    if (rc)
        return rc;
    d->refs++; /* the list's */
    tw__wlist_push(l, d);
    *out = d;
    return 0;
}

/* The oldest waiter still to be fired, taken off l with the list's
 * reference, which the caller drops after firing it; NULL if none. Waiters
 * already fired by their holders are dropped on the way. Its canceller is
 * cleared: it is no longer on the list. */
static inline tw_deferred *tw__wlist_next(tw__wlist l)
{
    tw_deferred *d;
    while ((d = tw__wlist_pop(l)) && (d->flags & F_CALLED))
        tw_deferred_unref(d);
    if (d)
        d->canceller = NULL;
    return d;
}

#endif
