/* Lock: the slow paths behind the inline fast paths in twine/sync.h.
 *
 * State word: 0 unlocked; 1 locked, nobody parked; 2 locked, threads may be
 * parked. Only a thread about to park (or that has just woken from parking)
 * writes 2, so an uncontended release (1 -> 0) never enters the kernel. A
 * thread that acquires via the slow path keeps the word at 2, since it cannot
 * know whether others still sleep: at worst one release makes a needless wake
 * call.
 *
 * Memory order: every transition that takes the lock is acquire, the release
 * exchange is release; that pairing is the lock's whole happens-before edge.
 *
 * Fairness: a waiter first spins a bounded time with exponential backoff
 * (not at all when it can only run on one CPU), politely (see below), then
 * parks; the kernel wakes parked waiters oldest first, but
 * a woken waiter competes with newcomers (no hand-off), which keeps
 * throughput high. A waiter that keeps losing is not starved forever in
 * practice, but Lock makes no FIFO promise — exactly as Python's Lock. */
#include "base/thread.h"
#include "debug/debug.h"
#include "platform/wait.h"
#include "sync/lock.h"

#include <twine/sync.h>

/* park: tw__wait, or tw__dbg_park; a constant in each caller below, so
 * the compiler makes one copy of this per park. */
static inline int slow(tw_lock *l, tw_deadline deadline,
                       int (*park)(uint32_t *addr, uint32_t expect, tw_deadline deadline))
{
    uint32_t w;
    bool seen_free = false;
    if (!l)
        return TW_EINVAL;

    /* Spin while the holder is likely to release soon: read-only probes with
     * backoff, so the cache line stays with the holder between probes. The
     * spinner is polite: it takes the lock only when two probes in a row find
     * it free, i.e. the holder has left rather than released and re-taken it
     * in a loop. Taking it at the first sight of 0 would steal it at every
     * release and move its cache line back and forth on each acquire. */
    for (TW__SPIN(i, d)) {
        w = __atomic_load_n(&l->word, __ATOMIC_RELAXED);
        if (w == 0 && seen_free) {
            if (__atomic_compare_exchange_n(&l->word, &w, 1, false, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return 0;
        }
        seen_free = w == 0;
        if (w == 2)
            break; /* others are already parked: join them */
    }

    /* Announce a parked thread by storing 2; if the word was 0 the exchange
     * took the lock (acquire pairs with the releasing exchange). */
    while (__atomic_exchange_n(&l->word, 2, __ATOMIC_ACQUIRE) != 0) {
        if (park(&l->word, 2, deadline) == TW_ETIMEDOUT) {
            /* One last chance: the lock may have been released at the deadline. */
            w = 0;
            if (__atomic_compare_exchange_n(&l->word, &w, 2, false, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return 0;
            return TW_ETIMEDOUT;
        }
    }
    return 0;
}

int tw__lock_acquire_slow(tw_lock *l, tw_deadline deadline)
{
#ifdef TW_DEBUG
    /* Untracked callers (a Condition's, an RLock's own Lock, code without
     * TW_DEBUG): the wait still counts in the live check. */
    int token = tw__dbg_wait_begin(TW__DK_LOCK, l, 0, NULL, 0, "tw_lock_acquire");
    int rc = slow(l, deadline, tw__dbg_park);
    tw__dbg_wait_end(token);
    return rc;
#else
    return slow(l, deadline, tw__wait);
#endif
}

int tw__lock_acquire_slow_dbg(tw_lock *l, tw_deadline deadline)
{
    return slow(l, deadline, tw__dbg_park);
}

int tw__lock_acquire_slow_raw(tw_lock *l, tw_deadline deadline)
{
    return slow(l, deadline, tw__wait);
}

void tw__lock_acquire_contended(tw_lock *l)
{
    while (__atomic_exchange_n(&l->word, 2, __ATOMIC_ACQUIRE) != 0)
        tw__wait(&l->word, 2, TW_DEADLINE_NEVER);
}

int tw__lock_release_slow(tw_lock *l, uint32_t old)
{
    if (old == 0)
        return TW_EPERM; /* was not held; the exchange wrote 0 over 0 */
    tw__wake(&l->word, 1);
    return 0;
}

/* The name in parentheses: code compiled with TW_DEBUG=1 sees a macro of
 * that name (twine/sync.h), and this is the untracked function. */
int(tw_lock_acquire_timeout)(tw_lock *l, double timeout)
{
    tw_deadline d;
    if (!l || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (tw__lock_try_acquire_plain(l) == 0)
        return 0;
    if (timeout == 0)
        return TW_ETIMEDOUT;
    return tw__lock_acquire_slow(l, d);
}

int(tw_lock_run)(tw_lock *l, int (*fn)(void *arg), void *arg)
{
    int rc;
    if (!l || !fn)
        return TW_EINVAL;
    tw_lock_acquire(l); /* tracked in a TW_DEBUG library: the release is too */
    rc = fn(arg);
    tw_lock_release(l);
    return rc;
}
