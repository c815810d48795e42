/* Condition.
 *
 * Each waiter queues a node on its own stack. The list and every node's links
 * are guarded by the condition's lock; only `state`, the word the waiter
 * parks on, is read without the lock.
 *
 * Node states:
 *   WAITING   in the condition's FIFO; may time out.
 *   CHAINED   notified, and linked behind an earlier notified waiter; it will
 *             be woken by that waiter, not by the notifier.
 *   SIGNALED  notified: re-take the lock, then signal the next node of its
 *             chain, if any.
 *   REQUEUED  as SIGNALED, and the thread was moved from the node's word to
 *             the lock's wait queue: it must re-take the lock in the contended
 *             form (the lock word left at 2), since others may sleep there too.
 * notify(n) detaches the n oldest nodes as one chain, marks the first
 * SIGNALED and the rest CHAINED, and signals only the first. Each signalled
 * waiter signals its successor once it holds the lock, so notify_all never
 * makes every waiter rush the lock at once: at most two of them compete.
 *
 * Signalling is wait morphing: the signaller holds the lock, so instead of
 * waking a thread that would only run into the held lock and park again, it
 * moves the parked thread onto the lock word (tw__requeue). The release of the
 * lock then wakes it, once. A waiter sets PARKED in its state just before it
 * sleeps; the signaller swaps SIGNALED in and makes the system call only if it
 * took PARKED out. Where the backend cannot move threads it wakes the thread
 * instead; a waiter that had not parked simply sees SIGNALED.
 *
 * Node lifetime: a waiter returns only after it has re-taken the lock and
 * settled its node, so a thread holding the lock may touch any node it finds
 * in the list or a chain. Wakes are issued under the lock for that reason.
 *
 * A WAITING node that times out re-takes the lock and looks again: still
 * WAITING → it unlinks itself and reports the timeout; CHAINED (notified
 * meanwhile) → it unlinks itself from the chain, its predecessor passing the
 * baton straight to its successor, and reports success; SIGNALED → it passes
 * the baton and reports success. A notification is never lost. */
#include <sched.h>

#include "base/thread.h"
#include "debug/debug.h"
#include "platform/wait.h"
#include "sync/lock.h"

#include <twine/sync.h>

enum { WAITING = 0, CHAINED = 1, SIGNALED = 2, REQUEUED = 3 };
/* Or'ed into WAITING / CHAINED by the waiter just before it sleeps: only a
 * parked thread is worth a requeue system call. */
#define PARKED 4u
enum { KIND_OWN = 0, KIND_LOCK = 1, KIND_RLOCK = 2 };

struct tw__cond_waiter {
    struct tw__cond_waiter *next, *prev;
    uint32_t state;
};

/* The names in parentheses here and below: code compiled with TW_DEBUG=1
 * sees macros of these names (twine/sync.h); these are the untracked
 * functions. */
void(tw_cond_init)(tw_cond *c)
{
    if (!c)
        return;
    c->lock = NULL;
    c->kind = KIND_OWN;
    (tw_rlock_init)(&c->own);
    c->head = c->tail = NULL;
}

int tw_cond_init_lock(tw_cond *c, tw_lock *l)
{
    if (!c || !l)
        return TW_EINVAL;
    (tw_cond_init)(c);
    c->lock = l;
    c->kind = KIND_LOCK;
    return 0;
}

int tw_cond_init_rlock(tw_cond *c, tw_rlock *r)
{
    if (!c || !r)
        return TW_EINVAL;
    (tw_cond_init)(c);
    c->lock = r;
    c->kind = KIND_RLOCK;
    return 0;
}

/* The RLock behind c, or NULL when c uses a plain Lock. */
static tw_rlock *rlock_of(tw_cond *c)
{
    if (c->kind == KIND_LOCK)
        return NULL;
    return c->kind == KIND_RLOCK ? (tw_rlock *)c->lock : &c->own;
}

static bool valid(const tw_cond *c)
{
    return c && (c->kind == KIND_OWN || (c->kind <= KIND_RLOCK && c->lock));
}

/* These return holding the caller's lock: untracked (see "Mixed builds" in
 * lock_debug.c); TW_DEBUG code gets the tracking ones below. */
int(tw_cond_acquire)(tw_cond *c)
{
    if (!valid(c))
        return TW_EINVAL;
    return c->kind == KIND_LOCK ? tw__lock_acquire_plain(c->lock)
                                : (tw_rlock_acquire)(rlock_of(c));
}

int(tw_cond_try_acquire)(tw_cond *c)
{
    if (!valid(c))
        return TW_EINVAL;
    return c->kind == KIND_LOCK ? tw__lock_try_acquire_plain(c->lock)
                                : (tw_rlock_try_acquire)(rlock_of(c));
}

int(tw_cond_acquire_timeout)(tw_cond *c, double timeout)
{
    if (!valid(c))
        return TW_EINVAL;
    return c->kind == KIND_LOCK ? (tw_lock_acquire_timeout)(c->lock, timeout)
                                : (tw_rlock_acquire_timeout)(rlock_of(c), timeout);
}

int tw_cond_release(tw_cond *c)
{
    if (!valid(c))
        return TW_EINVAL;
    /* The caller may have taken the lock through a tracking path: forgetting
     * it is right in every build (see "Mixed builds" in lock_debug.c). */
    return c->kind == KIND_LOCK ? tw__lock_release_tracked(c->lock)
                                : tw__rlock_release_tracked(rlock_of(c));
}

int(tw_cond_run)(tw_cond *c, int (*fn)(void *arg), void *arg)
{
    int rc;
    if (!valid(c) || !fn)
        return TW_EINVAL;
    if ((rc = tw_cond_acquire(c)) != 0) /* tracked in a TW_DEBUG library, as the release */
        return rc;
    rc = fn(arg);
    tw_cond_release(c);
    return rc;
}

/* ---- tracking (TW_DEBUG code) ------------------------------------------------- */

void tw__cond_init_tracked(tw_cond *c, const char *file, int line)
{
    if (!c)
        return;
    (tw_cond_init)(c);
    tw__rlock_init_tracked(&c->own, file, line); /* the class of its own RLock */
}

int tw__cond_acquire_tracked(tw_cond *c, double timeout, const char *file, int line)
{
    if (!valid(c))
        return TW_EINVAL;
    if (c->kind == KIND_LOCK)
        return timeout < 0 ? tw__lock_acquire_tracked(c->lock, 0, file, line)
                           : tw__lock_acquire_timeout_tracked(c->lock, timeout, file, line);
    return timeout < 0 ? tw__rlock_acquire_tracked(rlock_of(c), 0, file, line)
                       : tw__rlock_acquire_timeout_tracked(rlock_of(c), timeout, file, line);
}

int tw__cond_try_acquire_tracked(tw_cond *c, const char *file, int line)
{
    if (!valid(c))
        return TW_EINVAL;
    return c->kind == KIND_LOCK ? tw__lock_try_acquire_tracked(c->lock, file, line)
                                : tw__rlock_try_acquire_tracked(rlock_of(c), file, line);
}

int tw__cond_run_tracked(tw_cond *c, int (*fn)(void *arg), void *arg, const char *file,
                         int line)
{
    int rc;
    if (!valid(c) || !fn)
        return TW_EINVAL;
    if ((rc = tw__cond_acquire_tracked(c, -1.0, file, line)) != 0)
        return rc;
    rc = fn(arg);
    tw_cond_release(c);
    return rc;
}

int tw__lock_class_add_cond(tw_lock_class *cls, tw_cond *c)
{
    if (!valid(c) || !cls)
        return TW_EINVAL;
    return c->kind == KIND_LOCK ? tw__lock_class_add(cls, c->lock, TW__DK_LOCK)
                                : tw__lock_class_add(cls, rlock_of(c), TW__DK_RLOCK);
}

/* Whether the caller may wait/notify: an RLock must be owned by it; a plain
 * Lock can only be checked for being held at all. */
static bool held(tw_cond *c)
{
    return c->kind == KIND_LOCK ? tw_lock_locked(c->lock) : tw_rlock_is_owned(rlock_of(c));
}

/* Gives the lock up entirely; returns the RLock depth to restore. */
static uint32_t release_all(tw_cond *c)
{
    tw_rlock *r = rlock_of(c);
    uint32_t depth;
    if (!r) {
#ifdef TW_DEBUG
        tw__dbg_cond_lock(c->lock, false); /* held again after the wait */
#endif
        tw__lock_release_plain(c->lock);
        return 0;
    }
    depth = r->count;
    r->count = 0;
    __atomic_store_n(&r->owner, 0, __ATOMIC_RELAXED);
    tw__lock_release_plain(&r->lock);
    return depth;
}

/* The Lock inside c's lock. */
static tw_lock *inner_lock(tw_cond *c)
{
    tw_rlock *r = rlock_of(c);
    return r ? &r->lock : (tw_lock *)c->lock;
}

static void reacquire(tw_cond *c, uint32_t depth, bool contended)
{
    tw_rlock *r = rlock_of(c);
    if (contended)
        tw__lock_acquire_contended(inner_lock(c));
    else
        tw__lock_acquire_plain(inner_lock(c));
    if (!r) {
#ifdef TW_DEBUG
        tw__dbg_cond_lock(c->lock, true);
#endif
        return;
    }
    __atomic_store_n(&r->owner, tw__thread_id(), __ATOMIC_RELAXED);
    r->count = depth;
}

/* Lock held. Lets w's thread go: it will run once it can take the lock. */
static void signal_node(tw_cond *c, struct tw__cond_waiter *w)
{
    tw_lock *l = inner_lock(c);
    uint32_t word, old;
    int moved;
    /* acq_rel: the release pairs with the waiter's acquire load of its state;
     * the exchange tells whether the thread is (about to be) asleep. */
    old = __atomic_exchange_n(&w->state, SIGNALED, __ATOMIC_ACQ_REL);
    if (!(old & PARKED))
        return; /* not asleep: it will see SIGNALED without a system call */
    /* Mark the lock contended first, so that its release wakes the thread
     * once it sleeps there. With correct use we hold the lock and the word is
     * 1 or 2; a word of 0 means a plain Lock was released under a notifier
     * that did not hold it, and then the waiter is simply woken. */
    word = __atomic_load_n(&l->word, __ATOMIC_RELAXED);
    while (word != 0 && !__atomic_compare_exchange_n(&l->word, &word, 2, true, __ATOMIC_RELAXED,
                                                     __ATOMIC_RELAXED))
        ;
    moved = word != 0 ? tw__requeue(&w->state, SIGNALED, &l->word) : TW_ENOTSUP;
    if (moved == 1) {
        /* It sleeps on the lock word now. The waiter reads REQUEUED only after
         * a release has woken it. If the lock was released meanwhile (misuse
         * again), nobody would: wake it from the lock's queue ourselves. */
        __atomic_store_n(&w->state, REQUEUED, __ATOMIC_RELAXED);
        if (__atomic_load_n(&l->word, __ATOMIC_SEQ_CST) == 0)
            tw__wake(&l->word, 1);
    } else if (moved < 0) {
        tw__wake(&w->state, 1);
    } /* moved == 0: it had not gone to sleep after all; it sees SIGNALED */
}

/* Lock held. Signals the node after w in its chain. */
static void pass_baton(tw_cond *c, struct tw__cond_waiter *w)
{
    struct tw__cond_waiter *next = w->next;
    if (!next)
        return;
    next->prev = NULL;
    signal_node(c, next);
}

static int wait_until(tw_cond *c, tw_deadline deadline)
{
    struct tw__cond_waiter w = {NULL, c->tail, WAITING};
    bool timed_out = false;
    uint32_t depth, s;
#ifdef TW_DEBUG
    /* The live check reads the node's state: a notified waiter only waits
     * for the lock. */
    int token = tw__dbg_wait_begin(TW__DK_COND, c, (uintptr_t)&w.state, NULL, 0, "tw_cond_wait");
#define PARK tw__dbg_park
#else
#define PARK tw__wait
#endif

    if (c->tail)
        c->tail->next = &w;
    else
        c->head = &w;
    c->tail = &w;
    depth = release_all(c);

    /* Before parking: spin briefly in case the notifier is running on another
     * CPU, then yield once in case it is waiting for this CPU. Either way a
     * quick notify then costs no sleep and no wake-up. */
    for (TW__SPIN(i, d))
        if (__atomic_load_n(&w.state, __ATOMIC_ACQUIRE) != WAITING)
            break;
    if (__atomic_load_n(&w.state, __ATOMIC_ACQUIRE) == WAITING)
        sched_yield();

    for (;;) {
        uint32_t base;
        s = __atomic_load_n(&w.state, __ATOMIC_ACQUIRE);
        base = s & ~PARKED;
        if (base >= SIGNALED || timed_out)
            break;
        /* Say we are going to sleep; a notifier that swapped SIGNALED in
         * first makes the CAS fail, and we look again. notify may also turn
         * WAITING into CHAINED (keeping PARKED) while we sleep. */
        if (!(s & PARKED) && !__atomic_compare_exchange_n(&w.state, &s, s | PARKED, false,
                                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        /* Only a WAITING node may time out; a notified one waits for its baton. */
        if (PARK(&w.state, s | PARKED, base == WAITING ? deadline : TW_DEADLINE_NEVER) ==
                TW_ETIMEDOUT &&
            base == WAITING)
            timed_out = true;
    }
    s &= ~PARKED;
#undef PARK
#ifdef TW_DEBUG
    tw__dbg_wait_end(token);
#endif

    reacquire(c, depth, s == REQUEUED);
    /* stable now that we hold the lock */
    s = __atomic_load_n(&w.state, __ATOMIC_RELAXED) & ~PARKED;
    if (s == WAITING) { /* timed out, never notified: leave the FIFO */
        if (w.prev)
            w.prev->next = w.next;
        else
            c->head = w.next;
        if (w.next)
            w.next->prev = w.prev;
        else
            c->tail = w.prev;
        return TW_ETIMEDOUT;
    }
    if (s == CHAINED) { /* notified while timing out: leave the chain */
        w.prev->next = w.next;
        if (w.next)
            w.next->prev = w.prev;
        return 0;
    }
    pass_baton(c, &w);
    return 0;
}

static int wait_checked(tw_cond *c, double timeout)
{
    tw_deadline d;
    if (!valid(c) || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (!held(c))
        return TW_EPERM;
    return wait_until(c, d);
}

int tw_cond_wait(tw_cond *c)
{
    return wait_checked(c, -1.0);
}

int tw_cond_wait_timeout(tw_cond *c, double timeout)
{
    return wait_checked(c, timeout);
}

int tw_cond_wait_for(tw_cond *c, bool (*pred)(void *arg), void *arg, double timeout)
{
    tw_deadline d;
    if (!valid(c) || !pred || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (!held(c))
        return TW_EPERM;
    /* The deadline is checked before every wait, not only by the wait: a
     * waiter notified again and again while pred stays false must still
     * time out. */
    while (!pred(arg)) {
        if (d != TW_DEADLINE_NEVER && tw_now_ns() >= d)
            return TW_ETIMEDOUT;
        if (wait_until(c, d) == TW_ETIMEDOUT)
            return pred(arg) ? 0 : TW_ETIMEDOUT;
    }
    return 0;
}

int tw_cond_notify(tw_cond *c, uint32_t n)
{
    struct tw__cond_waiter *first, *last;
    if (!valid(c))
        return TW_EINVAL;
    if (!held(c))
        return TW_EPERM;
#ifdef TW_DEBUG
    tw__dbg_signal(TW__DK_COND, c, 0); /* who notifies it, for the live check */
#endif
    if (n == 0 || !c->head)
        return 0;
    first = last = c->head;
    while (--n > 0 && last->next) {
        last = last->next;
        /* WAITING (0) becomes CHAINED, keeping PARKED if the thread sleeps:
         * its futex value changes, but nobody wakes it — it sleeps on. */
        __atomic_fetch_or(&last->state, CHAINED, __ATOMIC_RELAXED);
    }
    c->head = last->next;
    if (c->head)
        c->head->prev = NULL;
    else
        c->tail = NULL;
    last->next = NULL;
    signal_node(c, first);
    return 0;
}

int tw_cond_notify_all(tw_cond *c)
{
    return tw_cond_notify(c, UINT32_MAX);
}
