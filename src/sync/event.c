/* Event.
 *
 * State word: bit 0 SET; bit 1 WAITERS (some thread may be parked); bits
 * 2..31 count how many times the event went from clear to set (mod 2^30).
 * A waiter remembers the count when it starts and returns as soon as the
 * event is set or the count moved, so a set followed quickly by a clear
 * still releases every thread that was waiting during the set — as in
 * Python, where wait() returns True if set() happened while it waited.
 * (Only exactly 2^30 set/clear pairs during one wait could hide a set.)
 *
 * Memory order: set is a release, the waiter's and is_set's loads are
 * acquires: whatever the setter wrote before set is visible to a thread that
 * returns from wait. */
#include "debug/debug.h"
#include "platform/wait.h"

#include <twine/sync.h>

#define SET 1u
#define WAITERS 2u
#define ONE_SET 4u

int tw_event_set(tw_event *e)
{
    uint32_t old, next;
    if (!e)
        return TW_EINVAL;
    old = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
    do {
        if (old & SET)
            return 0;
        next = ((old + ONE_SET) | SET) & ~WAITERS;
    } while (!__atomic_compare_exchange_n(&e->word, &old, next, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
#ifdef TW_DEBUG
    tw__dbg_signal(TW__DK_EVENT, e, next >> 2); /* who sets it, for the live check */
#endif
    if (old & WAITERS)
        tw__wake(&e->word, TW__WAKE_ALL);
    return 0;
}

int tw_event_clear(tw_event *e)
{
    if (!e)
        return TW_EINVAL;
    __atomic_fetch_and(&e->word, ~SET, __ATOMIC_RELAXED);
    return 0;
}

/* park: tw__wait or tw__dbg_park (see lock.c). */
static inline int wait_with(tw_event *e, tw_deadline deadline,
                            int (*park)(uint32_t *addr, uint32_t expect, tw_deadline deadline))
{
    uint32_t w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
    uint32_t sets = w >> 2;
    for (;;) {
        int rc;
        if ((w & SET) || (w >> 2) != sets)
            return 0;
        if (!(w & WAITERS)) {
            if (!__atomic_compare_exchange_n(&e->word, &w, w | WAITERS, true, __ATOMIC_ACQUIRE,
                                             __ATOMIC_ACQUIRE))
                continue; /* w was reloaded: re-check */
            w |= WAITERS;
        }
        rc = park(&e->word, w, deadline);
        w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
        if (rc == TW_ETIMEDOUT && !(w & SET) && (w >> 2) == sets)
            return TW_ETIMEDOUT;
    }
}

static int wait_until(tw_event *e, tw_deadline deadline)
{
#ifdef TW_DEBUG
    /* The count of sets tells the live check whether the setter it knows
     * made the set this wait needs. */
    uint32_t sets = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE) >> 2;
    int token = tw__dbg_wait_begin(TW__DK_EVENT, e, sets, NULL, 0, "tw_event_wait");
    int rc = wait_with(e, deadline, tw__dbg_park);
    tw__dbg_wait_end(token);
    return rc;
#else
    return wait_with(e, deadline, tw__wait);
#endif
}

int tw_event_wait(tw_event *e)
{
    if (!e)
        return TW_EINVAL;
    return wait_until(e, TW_DEADLINE_NEVER);
}

int tw_event_try_wait(tw_event *e)
{
    if (!e)
        return TW_EINVAL;
    return tw_event_is_set(e) ? 0 : TW_EBUSY;
}

int tw_event_wait_timeout(tw_event *e, double timeout)
{
    tw_deadline d;
    if (!e || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (tw_event_is_set(e))
        return 0;
    if (timeout == 0)
        return TW_ETIMEDOUT;
    return wait_until(e, d);
}
