/* RLock: a Lock plus an owner and a depth.
 *
 * `owner` is written only by the thread that holds `lock` (set after taking
 * it, cleared before releasing it) and read by anyone; a reader can only find
 * its own id there if it wrote it itself, so relaxed accesses suffice for the
 * "do I own it?" test. `count` is touched only by the owner. */
#include "base/thread.h"

#include <twine/sync.h>

/* The names in parentheses: code compiled with TW_DEBUG=1 sees macros of
 * these names (twine/sync.h); these are the untracked functions. */
void(tw_rlock_init)(tw_rlock *r)
{
    if (!r)
        return;
    (tw_lock_init)(&r->lock);
    __atomic_store_n(&r->owner, 0, __ATOMIC_RELAXED);
    r->count = 0;
}

/* Returns 1 if the caller already owns r (after bumping the depth), 0 if it
 * does not, or TW_EOVERFLOW at maximum depth. */
static int reenter(tw_rlock *r, uint32_t me)
{
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) != me)
        return 0;
    if (r->count == UINT32_MAX)
        return TW_EOVERFLOW;
    r->count++;
    return 1;
}

static void take(tw_rlock *r, uint32_t me)
{
    __atomic_store_n(&r->owner, me, __ATOMIC_RELAXED);
    r->count = 1;
}

/* The inline acquire's CAS found the lock held by another thread: straight
 * to the Lock's slow path, without trying the same CAS again. */
int tw__rlock_acquire_slow(tw_rlock *r, uint32_t me)
{
    int rc = tw__lock_acquire_slow(&r->lock, TW_DEADLINE_NEVER);
    if (rc == 0)
        take(r, me);
    return rc;
}

int(tw_rlock_try_acquire)(tw_rlock *r)
{
    uint32_t me;
    int rc;
    if (!r)
        return TW_EINVAL;
    me = tw__thread_id();
    if ((rc = reenter(r, me)) != 0)
        return rc < 0 ? rc : 0;
    if (tw__lock_try_acquire_plain(&r->lock) != 0)
        return TW_EBUSY;
    take(r, me);
    return 0;
}

int(tw_rlock_acquire_timeout)(tw_rlock *r, double timeout)
{
    uint32_t me;
    int rc;
    if (!r || timeout != timeout)
        return TW_EINVAL;
    me = tw__thread_id();
    if ((rc = reenter(r, me)) != 0)
        return rc < 0 ? rc : 0;
    if ((rc = (tw_lock_acquire_timeout)(&r->lock, timeout)) != 0) /* untracked */
        return rc;
    take(r, me);
    return 0;
}

bool tw_rlock_is_owned(const tw_rlock *r)
{
    return r && __atomic_load_n(&r->owner, __ATOMIC_RELAXED) == tw__thread_id();
}

uint32_t tw_rlock_count(const tw_rlock *r)
{
    return tw_rlock_is_owned(r) ? r->count : 0;
}

bool tw_rlock_locked(const tw_rlock *r)
{
    return r && tw_lock_locked(&r->lock);
}

int(tw_rlock_run)(tw_rlock *r, int (*fn)(void *arg), void *arg)
{
    int rc;
    if (!r || !fn)
        return TW_EINVAL;
    if ((rc = tw_rlock_acquire(r)) != 0)
        return rc;
    rc = fn(arg);
    tw_rlock_release(r);
    return rc;
}
