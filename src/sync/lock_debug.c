/* The tracking paths of Lock, RLock and Semaphore (the _tracked functions of
 * twine/sync.h), which code compiled with TW_DEBUG calls instead of the
 * inline ones, with its file and line. They are built in every
 * configuration: an application may track against a library built without
 * TW_DEBUG. docs/deadlocks.md describes the detector they feed.
 *
 * An acquire tells the detector before it tries the object
 * (tw__dbg_acquire: the order of what the thread holds and this, checked
 * and an inversion reported, before the thread can wait), waits through
 * tw__dbg_park (the live check at the threshold), and pushes the object on
 * the thread's held stack once it holds it (tw__dbg_acquired). A release
 * pops it (tw__dbg_release). A try adds no edge, since it cannot wait; so
 * does a timeout of 0; an RLock re-entry adds nothing at all.
 *
 * Mixed builds. An application and the library may be compiled with and
 * without TW_DEBUG in any combination, so an entry must never outlive the
 * hold it records:
 *   - forgetting is always safe: the library's releases on its caller's
 *     behalf (tw_cond_release) call the tracking release in every build;
 *   - remembering is safe only where the matching release tracks too. The
 *     library's functions that return holding their caller's object
 *     (tw_cond_acquire*, the exported tw_lock_acquire_timeout,
 *     tw_rlock_try_acquire, ...) and those that give it back and take it
 *     again (a Condition wait) use the plain paths, which leave the caller's
 *     entry, if any, as it was; code compiled with TW_DEBUG gets macros for
 *     tracking versions of each;
 *   - tw_lock_run, TW_WITH and the lock worker take and give back their
 *     object themselves, so they track whenever the library does.
 * And the detector checks an entry before it believes it (src/debug/thread.c):
 * a Lock another thread released, or that nobody holds, is not held. */
#include "debug/fast.h"
#include "sync/lock.h"

/* ---- Lock ------------------------------------------------------------------------ */

/* Anything but the fast path below: the detector's general calls. */
__attribute__((noinline, cold)) static int lock_acquire_slow(tw_lock *l, tw_deadline deadline, unsigned sub, unsigned flags,
                             const char *file, int line, const char *function)
{
    tw__dbg_acq a;
    tw__dbg_acquire(&a, l, TW__DK_LOCK, sub, flags, file, line, function);
    int rc = tw__lock_try_acquire_plain(l);
    if (rc != 0 && !(flags & TW__DA_TRY)) {
        int token = tw__dbg_wait_begin(TW__DK_LOCK, l, 0, file, line, function);
        rc = tw__lock_acquire_slow_dbg(l, deadline);
        tw__dbg_wait_end(token);
    }
    if (rc == 0)
        tw__dbg_acquired(&a, l, TW__DK_LOCK, flags, file, line);
    return rc;
}

/* The fast path, when nothing is new: the thread has its record, the first
 * probe of the map has l's class, and the held stack with l on top was seen
 * before (or is empty, or l is a try): nothing to check, only the entry to
 * push and the owner to note. Same steps as tw__dbg_acquire and
 * tw__dbg_acquired (src/debug/thread.c), inline. */
static inline int lock_acquire(tw_lock *l, tw_deadline deadline, unsigned sub, unsigned flags,
                               const char *file, int line, const char *function)
{
    if (!l)
        return TW_EINVAL;
    tw__dbg_thread *t = tw__dbg_self;
    uint32_t slot = UINT32_MAX, cls, d;
    bool try_ = flags & TW__DA_TRY;
    if (!t || sub || !(cls = tw__dbg_class_fast(l, TW__DK_LOCK, &slot)) ||
        (d = t->depth) >= DBG_HELD)
        return lock_acquire_slow(l, deadline, sub, flags, file, line, function);
    uint64_t key = tw__dbg_chain(d ? t->held[d - 1].chain : 0, cls, try_);
    if (d && !try_ && !tw__dbg_chain_known(key))
        return lock_acquire_slow(l, deadline, sub, flags, file, line, function);
    int rc = tw__lock_try_acquire_plain(l);
    if (rc != 0 && !try_) {
        int token = tw__dbg_wait_begin(TW__DK_LOCK, l, 0, file, line, function);
        rc = tw__lock_acquire_slow_dbg(l, deadline);
        tw__dbg_wait_end(token);
    }
    if (rc != 0)
        return rc;
    tw__dbg_held *h = &t->held[d];
    ST(h->obj, (const void *)l);
    ST(h->file, file);
    ST(h->line, line);
    ST(h->cls, cls);
    ST(h->kind, (uint8_t)TW__DK_LOCK);
    ST(h->flags, (uint8_t)(try_ ? HF_TRY : 0));
    ST(h->slot, slot);
    h->chain = key;
    /* release: a reader that sees the depth sees the entry. */
    __atomic_store_n(&t->depth, d + 1, __ATOMIC_RELEASE);
    ST(tw__dbg_map_owner[slot], LD(t->tid));
    return 0;
}

void tw__lock_init_tracked(tw_lock *l, const char *file, int line)
{
    if (!l)
        return;
    __atomic_store_n(&l->word, 0, __ATOMIC_RELAXED);
    tw__dbg_init_site(l, TW__DK_LOCK, file, line);
}

int tw__lock_acquire_tracked(tw_lock *l, unsigned subclass, const char *file, int line)
{
    return lock_acquire(l, TW_DEADLINE_NEVER, subclass, 0, file, line, "tw_lock_acquire");
}

int tw__lock_try_acquire_tracked(tw_lock *l, const char *file, int line)
{
    return lock_acquire(l, TW_DEADLINE_NEVER, 0, TW__DA_TRY, file, line, "tw_lock_try_acquire");
}

int tw__lock_acquire_timeout_tracked(tw_lock *l, double timeout, const char *file, int line)
{
    tw_deadline d;
    if (!l || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (timeout == 0) /* no wait: a try, with the timeout's error */
        return lock_acquire(l, d, 0, TW__DA_TRY, file, line, "tw_lock_acquire_timeout") == 0
                   ? 0
                   : TW_ETIMEDOUT;
    return lock_acquire(l, d, 0, 0, file, line, "tw_lock_acquire_timeout");
}

int tw__lock_release_tracked(tw_lock *l)
{
    if (!l)
        return TW_EINVAL;
    /* The fast path: l on top of the thread's stack, its owner this thread.
     * Else the general forget. Either way before the release: once the Lock
     * is free, another thread may take it and become its owner in the map. */
    tw__dbg_thread *t = tw__dbg_self;
    uint32_t d, slot;
    if (t && (d = t->depth) && LD(t->held[d - 1].obj) == (const void *)l &&
        t->held[d - 1].kind == TW__DK_LOCK && (slot = t->held[d - 1].slot) < DBG_MAP &&
        LD(tw__dbg_map_key[slot]) == (uintptr_t)l && LD(tw__dbg_map_owner[slot]) == LD(t->tid)) {
        ST(t->depth, d - 1);
        ST(tw__dbg_map_owner[slot], 0);
    } else {
        tw__dbg_release(l, TW__DK_LOCK, 1);
    }
    return tw__lock_release_plain(l);
}

int tw__lock_run_tracked(tw_lock *l, int (*fn)(void *arg), void *arg, const char *file,
                         int line)
{
    if (!l || !fn)
        return TW_EINVAL;
    lock_acquire(l, TW_DEADLINE_NEVER, 0, 0, file, line, "tw_lock_run");
    int rc = fn(arg);
    tw__lock_release_tracked(l);
    return rc;
}

/* ---- RLock ------------------------------------------------------------------------ */

static int rlock_acquire(tw_rlock *r, tw_deadline deadline, unsigned sub, unsigned flags,
                         const char *file, int line, const char *function)
{
    tw__dbg_acq a;
    if (!r)
        return TW_EINVAL;
    uint32_t me = tw__self();
    /* relaxed: only this thread can have stored its own id there. */
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) == me) {
        if (r->count == UINT32_MAX)
            return TW_EOVERFLOW;
        r->count++; /* a re-entry: no order, no entry */
        return 0;
    }
    tw__dbg_acquire(&a, r, TW__DK_RLOCK, sub, flags, file, line, function);
    int rc = tw__lock_try_acquire_plain(&r->lock);
    if (rc != 0 && !(flags & TW__DA_TRY)) {
        int token = tw__dbg_wait_begin(TW__DK_RLOCK, r, 0, file, line, function);
        rc = tw__lock_acquire_slow_dbg(&r->lock, deadline);
        tw__dbg_wait_end(token);
    }
    if (rc != 0)
        return rc;
    __atomic_store_n(&r->owner, me, __ATOMIC_RELAXED);
    r->count = 1;
    tw__dbg_acquired(&a, r, TW__DK_RLOCK, flags, file, line);
    return 0;
}

void tw__rlock_init_tracked(tw_rlock *r, const char *file, int line)
{
    if (!r)
        return;
    (tw_rlock_init)(r);
    tw__dbg_init_site(r, TW__DK_RLOCK, file, line);
}

int tw__rlock_acquire_tracked(tw_rlock *r, unsigned subclass, const char *file, int line)
{
    return rlock_acquire(r, TW_DEADLINE_NEVER, subclass, 0, file, line, "tw_rlock_acquire");
}

int tw__rlock_try_acquire_tracked(tw_rlock *r, const char *file, int line)
{
    return rlock_acquire(r, TW_DEADLINE_NEVER, 0, TW__DA_TRY, file, line,
                         "tw_rlock_try_acquire");
}

int tw__rlock_acquire_timeout_tracked(tw_rlock *r, double timeout, const char *file, int line)
{
    tw_deadline d;
    if (!r || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (timeout == 0) {
        int rc = rlock_acquire(r, d, 0, TW__DA_TRY, file, line, "tw_rlock_acquire_timeout");
        return rc == TW_EBUSY ? TW_ETIMEDOUT : rc;
    }
    return rlock_acquire(r, d, 0, 0, file, line, "tw_rlock_acquire_timeout");
}

int tw__rlock_release_tracked(tw_rlock *r)
{
    if (!r)
        return TW_EINVAL;
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) != tw__self())
        return TW_EPERM;
    if (--r->count != 0)
        return 0;
    tw__dbg_release(r, TW__DK_RLOCK, 1);
    __atomic_store_n(&r->owner, 0, __ATOMIC_RELAXED);
    return tw__lock_release_plain(&r->lock);
}

int tw__rlock_run_tracked(tw_rlock *r, int (*fn)(void *arg), void *arg, const char *file,
                          int line)
{
    int rc;
    if (!r || !fn)
        return TW_EINVAL;
    if ((rc = rlock_acquire(r, TW_DEADLINE_NEVER, 0, 0, file, line, "tw_rlock_run")) != 0)
        return rc;
    rc = fn(arg);
    tw__rlock_release_tracked(r);
    return rc;
}

/* ---- Semaphore ---------------------------------------------------------------------- */

static int sem_acquire(tw_sem *s, tw_deadline deadline, unsigned sub, unsigned flags,
                       const char *file, int line, const char *function)
{
    tw__dbg_acq a;
    if (!s)
        return TW_EINVAL;
    tw__dbg_acquire(&a, s, TW__DK_SEM, sub, flags, file, line, function);
    int rc = (tw_sem_try_acquire)(s);
    if (rc != 0 && !(flags & TW__DA_TRY)) {
        int token = tw__dbg_wait_begin(TW__DK_SEM, s, 0, file, line, function);
        rc = tw__sem_acquire_slow_dbg(s, deadline);
        tw__dbg_wait_end(token);
    }
    if (rc == 0)
        tw__dbg_acquired(&a, s, TW__DK_SEM, flags, file, line);
    return rc;
}

int tw__sem_init_tracked(tw_sem *s, uint32_t value, const char *file, int line)
{
    int rc = (tw_sem_init)(s, value);
    if (rc == 0)
        tw__dbg_init_site(s, TW__DK_SEM, file, line);
    return rc;
}

int tw__sem_acquire_tracked(tw_sem *s, unsigned subclass, const char *file, int line)
{
    return sem_acquire(s, TW_DEADLINE_NEVER, subclass, 0, file, line, "tw_sem_acquire");
}

int tw__sem_try_acquire_tracked(tw_sem *s, const char *file, int line)
{
    return sem_acquire(s, TW_DEADLINE_NEVER, 0, TW__DA_TRY, file, line, "tw_sem_try_acquire");
}

int tw__sem_acquire_timeout_tracked(tw_sem *s, double timeout, const char *file, int line)
{
    tw_deadline d;
    if (!s || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (timeout == 0) {
        int rc = sem_acquire(s, d, 0, TW__DA_TRY, file, line, "tw_sem_acquire_timeout");
        return rc == TW_EBUSY ? TW_ETIMEDOUT : rc;
    }
    return sem_acquire(s, d, 0, 0, file, line, "tw_sem_acquire_timeout");
}

int tw__sem_release_tracked(tw_sem *s, uint32_t n)
{
    if (!s || n == 0)
        return TW_EINVAL;
    tw__dbg_release(s, TW__DK_SEM, n);
    return tw__sem_release_upto(s, n, TW_SEM_VALUE_MAX);
}

int tw__sem_run_tracked(tw_sem *s, int (*fn)(void *arg), void *arg, const char *file, int line)
{
    if (!s || !fn)
        return TW_EINVAL;
    sem_acquire(s, TW_DEADLINE_NEVER, 0, 0, file, line, "tw_sem_run");
    int rc = fn(arg);
    tw__sem_release_tracked(s, 1);
    return rc;
}

int tw__bsem_init_tracked(tw_bsem *b, uint32_t value, const char *file, int line)
{
    int rc = (tw_bsem_init)(b, value);
    if (rc == 0)
        tw__dbg_init_site(&b->sem, TW__DK_SEM, file, line);
    return rc;
}

int tw__bsem_release_tracked(tw_bsem *b, uint32_t n)
{
    if (!b || n == 0)
        return TW_EINVAL;
    tw__dbg_release(&b->sem, TW__DK_SEM, n);
    return tw__sem_release_upto(&b->sem, n,
                                b->limit < TW_SEM_VALUE_MAX ? b->limit : TW_SEM_VALUE_MAX);
}

int tw__bsem_run_tracked(tw_bsem *b, int (*fn)(void *arg), void *arg, const char *file,
                         int line)
{
    if (!b || !fn)
        return TW_EINVAL;
    sem_acquire(&b->sem, TW_DEADLINE_NEVER, 0, 0, file, line, "tw_bsem_run");
    int rc = fn(arg);
    tw__bsem_release_tracked(b, 1);
    return rc;
}
