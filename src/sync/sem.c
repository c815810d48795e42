/* Semaphore and BoundedSemaphore.
 *
 * `value` is the number of available tokens and the word waiters park on;
 * `waiters` counts threads in the slow path. A release adds to value and then
 * wakes only if waiters > 0, so an uncontended release makes no system call.
 *
 * The two sides form a store-load (Dekker) pair, so both are seq_cst:
 *   waiter:  waiters += 1; then read value (and park only if it is 0)
 *   release: value += n;   then read waiters (and wake only if > 0)
 * At least one side sees the other's store: either the releaser sees the
 * waiter and wakes it, or the waiter sees the new value and does not park
 * (the futex itself re-checks value == 0 atomically).
 *
 * Fairness: release wakes up to n parked threads, but a running thread may
 * take a token first; a woken waiter that loses re-parks. No FIFO promise,
 * as in Python. */
#include "debug/debug.h"
#include "platform/wait.h"
#include "sync/lock.h"

#include <twine/sync.h>

/* The name in parentheses here and below: code compiled with TW_DEBUG=1
 * sees macros of these names (twine/sync.h); these are the untracked
 * functions. */
int(tw_sem_init)(tw_sem *s, uint32_t value)
{
    if (!s || value > TW_SEM_VALUE_MAX)
        return TW_EINVAL;
    __atomic_store_n(&s->value, value, __ATOMIC_RELAXED);
    __atomic_store_n(&s->waiters, 0, __ATOMIC_RELAXED);
    return 0;
}

/* park: tw__wait or tw__dbg_park (see lock.c). */
static inline int slow(tw_sem *s, tw_deadline deadline,
                       int (*park)(uint32_t *addr, uint32_t expect, tw_deadline deadline))
{
    int waited = 0, result;
    if (!s)
        return TW_EINVAL;
    __atomic_fetch_add(&s->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        uint32_t v = __atomic_load_n(&s->value, __ATOMIC_SEQ_CST);
        if (v > 0) {
            /* acquire: pairs with the release add in tw_sem_release. */
            if (__atomic_compare_exchange_n(&s->value, &v, v - 1, false, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                result = 0;
                break;
            }
            continue;
        }
        if (waited == TW_ETIMEDOUT) { /* re-checked once after the deadline */
            result = TW_ETIMEDOUT;
            break;
        }
        waited = park(&s->value, 0, deadline);
    }
    __atomic_fetch_sub(&s->waiters, 1, __ATOMIC_RELAXED);
    return result;
}

int tw__sem_acquire_slow(tw_sem *s, tw_deadline deadline)
{
#ifdef TW_DEBUG
    int token = tw__dbg_wait_begin(TW__DK_SEM, s, 0, NULL, 0, "tw_sem_acquire");
    int rc = slow(s, deadline, tw__dbg_park);
    tw__dbg_wait_end(token);
    return rc;
#else
    return slow(s, deadline, tw__wait);
#endif
}

int tw__sem_acquire_slow_dbg(tw_sem *s, tw_deadline deadline)
{
    return slow(s, deadline, tw__dbg_park);
}

int(tw_sem_acquire_timeout)(tw_sem *s, double timeout)
{
    tw_deadline d;
    if (!s || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if ((tw_sem_try_acquire)(s) == 0)
        return 0;
    if (timeout == 0)
        return TW_ETIMEDOUT;
    return tw__sem_acquire_slow(s, d);
}

/* Adds n tokens unless the value would pass `limit`; wakes waiters. */
int tw__sem_release_upto(tw_sem *s, uint32_t n, uint32_t limit)
{
    uint32_t v;
    if (!s || n == 0)
        return TW_EINVAL;
#ifdef TW_DEBUG
    tw__dbg_signal(TW__DK_SEM, s, 0); /* who releases it, for the live check */
#endif
    v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
    do {
        if (n > limit || v > limit - n)
            return TW_EOVERFLOW;
        /* seq_cst: the store half of the Dekker pair described above; it is
         * also the release that pairs with the acquiring CAS. */
    } while (!__atomic_compare_exchange_n(&s->value, &v, v + n, true, __ATOMIC_SEQ_CST,
                                          __ATOMIC_RELAXED));
    if (__atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST) > 0)
        tw__wake(&s->value, n > (uint32_t)TW__WAKE_ALL ? TW__WAKE_ALL : (int)n);
    return 0;
}

int(tw_sem_release)(tw_sem *s, uint32_t n)
{
    return tw__sem_release_upto(s, n, TW_SEM_VALUE_MAX);
}

uint32_t tw_sem_value(const tw_sem *s)
{
    return s ? __atomic_load_n(&s->value, __ATOMIC_RELAXED) : 0;
}

int(tw_sem_run)(tw_sem *s, int (*fn)(void *arg), void *arg)
{
    int rc;
    if (!s || !fn)
        return TW_EINVAL;
    tw_sem_acquire(s);
    rc = fn(arg);
    tw_sem_release(s, 1);
    return rc;
}

int(tw_bsem_init)(tw_bsem *b, uint32_t value)
{
    int rc;
    if (!b)
        return TW_EINVAL;
    if ((rc = (tw_sem_init)(&b->sem, value)) != 0)
        return rc;
    b->limit = value;
    return 0;
}

int(tw_bsem_acquire_timeout)(tw_bsem *b, double timeout)
{
    return (tw_sem_acquire_timeout)(b ? &b->sem : NULL, timeout);
}

int(tw_bsem_release)(tw_bsem *b, uint32_t n)
{
    if (!b)
        return TW_EINVAL;
    return tw__sem_release_upto(&b->sem, n, b->limit < TW_SEM_VALUE_MAX ? b->limit : TW_SEM_VALUE_MAX);
}

uint32_t tw_bsem_value(const tw_bsem *b)
{
    return b ? tw_sem_value(&b->sem) : 0;
}

uint32_t tw_bsem_limit(const tw_bsem *b)
{
    return b ? b->limit : 0;
}

int(tw_bsem_run)(tw_bsem *b, int (*fn)(void *arg), void *arg)
{
    int rc;
    if (!b || !fn)
        return TW_EINVAL;
    tw_bsem_acquire(b);
    rc = fn(arg);
    tw_bsem_release(b, 1);
    return rc;
}
