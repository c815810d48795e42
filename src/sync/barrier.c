/* Barrier.
 *
 * Every field of tw_barrier is guarded by b->lock. Each waiter parks on a
 * node on its own stack, listed in b->head for the current cycle. A node's
 * `state` is the word it parks on:
 *   WAITING   listed; the waiter may time out and break the barrier.
 *   CLOSING   the cycle is complete and its action is running; the node has
 *             been taken off the list and its waiter must wait for the verdict
 *             (it can no longer time out, since the cycle did not fail).
 *   DONE      `result` holds the waiter's index or TW_EBROKEN; the waiter
 *             returns it without taking the lock again.
 * A node is written by others only until its state becomes DONE; after that
 * store nobody touches it (the wake that follows uses only its address).
 *
 * The last thread to arrive takes the cycle's nodes off the list, marks them
 * CLOSING, sets bit 0 of `drain`, releases the lock and runs the action
 * without holding it. Threads that arrive meanwhile park on `drain` until the
 * bit clears, so they join the next cycle only after this one is settled and
 * two actions never run at once. Then, holding the lock again, the last thread
 * publishes DONE with each waiter's index — or TW_EBROKEN for all if the
 * action failed or an abort/reset came in the meantime (drain_broken) — clears
 * the bit (adding 2, so parked arrivals see the word change) and wakes them.
 *
 * A default timeout (timed, timeout) is set at initialisation only and read
 * under the lock by tw_barrier_wait, which turns it into its deadline when
 * it gets the lock: a wait never ends before the timeout it was given. */
#include <math.h>

#include "platform/wait.h"

#include <twine/sync.h>

enum { WAITING = 0, CLOSING = 1, DONE = 2 };

struct tw__barrier_waiter {
    struct tw__barrier_waiter *next;
    uint32_t state;
    int result;
};

static int init(tw_barrier *b, uint32_t parties, int (*action)(void *arg), void *arg,
                bool timed, double timeout)
{
    if (!b || parties == 0 || parties > TW_BARRIER_PARTIES_MAX || isnan(timeout))
        return TW_EINVAL;
    tw_lock_init(&b->lock);
    b->parties = parties;
    b->count = 0;
    b->broken = 0;
    b->drain = 0;
    b->drain_broken = 0;
    b->action = action;
    b->arg = arg;
    b->head = NULL;
    b->timed = timed;
    b->timeout = timeout;
    return 0;
}

int tw_barrier_init(tw_barrier *b, uint32_t parties, int (*action)(void *arg), void *arg)
{
    return init(b, parties, action, arg, false, 0.0);
}

int tw_barrier_init_timeout(tw_barrier *b, uint32_t parties, int (*action)(void *arg),
                            void *arg, double timeout)
{
    return init(b, parties, action, arg, true, timeout);
}

/* Publishes a verdict on a chain of nodes (linked by next) and wakes them. */
static void finish(struct tw__barrier_waiter *w, int broken)
{
    while (w) {
        struct tw__barrier_waiter *next = w->next; /* read before DONE frees w */
        if (broken)
            w->result = TW_EBROKEN;
        /* release: pairs with the waiter's acquire load, publishing result. */
        __atomic_store_n(&w->state, DONE, __ATOMIC_RELEASE);
        tw__wake(&w->state, 1);
        w = next;
    }
}

/* Lock held. Fails every waiter of the current cycle. */
static void fail_waiters(tw_barrier *b)
{
    struct tw__barrier_waiter *w = b->head;
    b->head = NULL;
    b->count = 0;
    finish(w, 1);
}

/* Lock held; returns with it held. Waits while a cycle's action runs. */
static bool wait_drain(tw_barrier *b, bool try_only)
{
    while (b->drain & 1) {
        uint32_t v = b->drain;
        if (try_only)
            return false;
        tw_lock_release(&b->lock);
        tw__wait(&b->drain, v, TW_DEADLINE_NEVER); /* bounded by the action */
        tw_lock_acquire(&b->lock);
    }
    return true;
}

/* Last arrival, lock held: settles the cycle; returns with the lock released. */
static int complete(tw_barrier *b, uint32_t index)
{
    struct tw__barrier_waiter *cycle = b->head, *w;
    int (*action)(void *) = b->action;
    void *arg = b->arg;
    bool failed, bad;
    for (w = cycle; w; w = w->next)
        __atomic_store_n(&w->state, CLOSING, __ATOMIC_RELAXED);
    b->head = NULL;
    b->count = 0;
    b->drain_broken = 0;
    __atomic_store_n(&b->drain, b->drain | 1, __ATOMIC_RELAXED);
    tw_lock_release(&b->lock);

    failed = action && action(arg) != 0;

    tw_lock_acquire(&b->lock);
    bad = failed || b->drain_broken;
    if (failed)
        b->broken = 1;
    b->drain_broken = 0;
    finish(cycle, bad);
    __atomic_store_n(&b->drain, b->drain + 1, __ATOMIC_RELEASE); /* odd + 1: even, moved */
    tw__wake(&b->drain, TW__WAKE_ALL);
    tw_lock_release(&b->lock);
    return bad ? TW_EBROKEN : (int)index;
}

/* by_default: the caller gave no timeout; the barrier's default, if it has
 * one, replaces `deadline`. */
static int wait_until(tw_barrier *b, tw_deadline deadline, bool try_only, bool by_default)
{
    struct tw__barrier_waiter self = {NULL, WAITING, 0};
    uint32_t index;

    if (!b)
        return TW_EINVAL;
    tw_lock_acquire(&b->lock);
    if (b->parties == 0 ||
        (by_default && b->timed && tw_deadline_from_timeout(b->timeout, &deadline) != 0)) {
        tw_lock_release(&b->lock);
        return TW_EINVAL;
    }
    if (!wait_drain(b, try_only)) {
        tw_lock_release(&b->lock);
        return TW_EBUSY;
    }
    if (b->broken) {
        tw_lock_release(&b->lock);
        return TW_EBROKEN;
    }
    index = b->count;
    if (index + 1 == b->parties)
        return complete(b, index);
    if (try_only) {
        tw_lock_release(&b->lock);
        return TW_EBUSY;
    }
    self.result = (int)index;
    self.next = b->head;
    b->head = &self;
    b->count++;
    tw_lock_release(&b->lock);

    for (;;) {
        uint32_t s = __atomic_load_n(&self.state, __ATOMIC_ACQUIRE);
        if (s == DONE)
            return self.result;
        if (tw__wait(&self.state, s, s == WAITING ? deadline : TW_DEADLINE_NEVER) ==
                TW_ETIMEDOUT &&
            s == WAITING) {
            tw_lock_acquire(&b->lock);
            if (__atomic_load_n(&self.state, __ATOMIC_RELAXED) == WAITING) {
                b->broken = 1; /* a timeout breaks the barrier for everyone */
                fail_waiters(b);
            }
            tw_lock_release(&b->lock);
        }
    }
}

int tw_barrier_wait(tw_barrier *b)
{
    return wait_until(b, TW_DEADLINE_NEVER, false, true);
}

int tw_barrier_try_wait(tw_barrier *b)
{
    return wait_until(b, TW_DEADLINE_NEVER, true, false);
}

int tw_barrier_wait_timeout(tw_barrier *b, double timeout)
{
    tw_deadline d;
    if (!b || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    return wait_until(b, d, false, false);
}

int tw_barrier_abort(tw_barrier *b)
{
    if (!b)
        return TW_EINVAL;
    tw_lock_acquire(&b->lock);
    b->broken = 1;
    if (b->drain & 1)
        b->drain_broken = 1;
    fail_waiters(b);
    tw_lock_release(&b->lock);
    return 0;
}

int tw_barrier_reset(tw_barrier *b)
{
    if (!b)
        return TW_EINVAL;
    tw_lock_acquire(&b->lock);
    fail_waiters(b);
    if (b->drain & 1)
        b->drain_broken = 1;
    b->broken = 0;
    tw_lock_release(&b->lock);
    return 0;
}

uint32_t tw_barrier_parties(const tw_barrier *b)
{
    return b ? __atomic_load_n(&b->parties, __ATOMIC_RELAXED) : 0;
}

uint32_t tw_barrier_n_waiting(tw_barrier *b)
{
    uint32_t n;
    if (!b)
        return 0;
    tw_lock_acquire(&b->lock);
    n = b->count;
    tw_lock_release(&b->lock);
    return n;
}

bool tw_barrier_broken(tw_barrier *b)
{
    bool broken;
    if (!b)
        return false;
    tw_lock_acquire(&b->lock);
    broken = b->broken != 0;
    tw_lock_release(&b->lock);
    return broken;
}
