/* DeferredLock and DeferredSemaphore: one core, a count of grants against a
 * limit (a lock is a semaphore of one token whose zeroed state is valid).
 *
 * Hand-off. release() gives the freed grant to the oldest waiter and fires
 * its Deferred, which runs the waiter's chain before release() returns — no
 * window in which a third party could take the grant. A waiter's chain often
 * releases at once (run() of a synchronous function); that inner release
 * only returns the grant (`firing` is set), and the outer release's loop
 * hands it to the next waiter. So 10^5 such waiters use a bounded stack.
 *
 * Invariants: outside a hand-off loop, held < limit implies no waiters.
 * acquire() grants at once only when held < limit and no one waits, so a
 * grant returned inside a hand-off cannot be taken ahead of the queue. Each
 * waiter on the list is held by one reference of the list's. */
#include <twine/sync.h>

#include "debug/debug.h"
#include "deferred/deferred.h"

_Static_assert(TW_DSEM_TOKENS_MAX == TW_SEM_VALUE_MAX,
               "a DeferredSemaphore holds what a Semaphore holds");

static inline uint32_t lim(const tw__dprim *p)
{
    return p->limit ? p->limit : 1;
}

/* TW_DEBUG builds: the first use records the thread; later uses from
 * another thread are reported. */
static inline void check_thread(tw__dprim *p, const char *function)
{
#ifdef TW_DEBUG
    uint32_t me = tw__self();
    if (!p->thread)
        p->thread = me;
    else if (p->thread != me)
        tw__wrong_thread(p->limit ? "a DeferredSemaphore" : "a DeferredLock", p->thread,
                         function);
#else
    (void)p;
    (void)function;
#endif
}

static inline tw__wlist waiters(tw__dprim *p)
{
    tw__wlist l = {&p->head, &p->tail, &p->waiting};
    return l;
}

/* Canceller of a pending acquire: leaves the queue; cancel then fails it. */
static void cancel_waiter(tw_deferred *d, void *arg)
{
    tw__dprim *p = arg;
    tw__wlist_unlink(waiters(p), d);
    tw_deferred_unref(d); /* the list's reference; the canceller's caller holds one */
}

#ifdef TW_DEBUG
static bool try_acquire(tw__dprim *p, const char *function)
{
    check_thread(p, function);
    return tw__dprim_take_now(p);
}
#endif

static int acquire(tw__dprim *p, tw_deferred **out)
{
    if (p->held < lim(p) && !p->head) { /* granted at once: nothing to cancel */
        int rc = tw__deferred_new_fired(out, tw_result_value(p, NULL));
        if (rc == 0)
            p->held++;
#ifdef TW_DEBUG
        if (rc == 0) /* a node of the wait-for graph, held */
            tw__dbg_dprim_acquire(p, p->limit, *out, true);
#endif
        return rc;
    }
#ifdef TW_DEBUG
    int rc = tw__wlist_wait(waiters(p), cancel_waiter, p, out);
    if (rc == 0) /* and waited for by *out */
        tw__dbg_dprim_acquire(p, p->limit, *out, false);
    return rc;
#else
    return tw__wlist_wait(waiters(p), cancel_waiter, p, out);
#endif
}

static int release(tw__dprim *p)
{
    if (p->held == 0)
        return p->limit ? TW_EOVERFLOW : TW_EPERM;
    p->held--;
#ifdef TW_DEBUG
    tw__dbg_dprim_release(p);
#endif
    if (p->firing)
        return 0; /* the hand-off loop below us gives it on */
    p->firing = 1;
    tw_deferred *d; /* waiters fired by their holders get no grant (tw__wlist_next) */
    while (p->held < lim(p) && (d = tw__wlist_next(waiters(p)))) {
        p->held++;
#ifdef TW_DEBUG
        tw__dbg_dprim_granted(p, p->limit);
#endif
        tw__deferred_fire(d, tw_result_value(p, NULL));
        tw_deferred_unref(d);
    }
    p->firing = 0;
    return 0;
}

static tw_result release_cb(tw_result r, void *arg)
{
    tw__dprim *p = arg;
    int rc = release(p);
    if (rc)
        tw_diag_report(TW_DIAG_MISUSE, rc, "tw_dlock_run",
                       "the lock or semaphore was released inside run() before its function's "
                       "result was ready; run() releases it itself");
    return r;
}

tw_result tw__prim_run(tw_result r, tw_result_fn fn, void *arg)
{
    tw__dprim *p = r.ptr; /* the granted value */
#ifdef TW_DEBUG
    tw__dbg_dprim_run(p, p->limit, true, NULL); /* fn runs holding p */
#endif
    tw_result out = fn(arg);
#ifdef TW_DEBUG /* and p stays held until fn's Deferred fires */
    tw__dbg_dprim_run(p, p->limit, false,
                      tw_result_is_deferred(out) && out.ptr && !tw_deferred_called(out.ptr)
                          ? out.ptr
                          : NULL);
#endif
    if (!tw_result_is_deferred(out)) {
        release_cb(out, p);
        return out;
    }
    tw_deferred *d = out.ptr;
    if (!d) {
        release_cb(out, p);
        return tw_result_fail(TW_EINVAL, "run()'s function returned a NULL Deferred");
    }
    if (tw__deferred_take(d, &out)) {
        /* Already fired, chain done (tw_deferred_succeed): its result now,
         * as the run loop would take it, and release. */
        tw_deferred_unref(d);
        release_cb(out, p);
        return out;
    }
    /* Release when fn's Deferred has its result; the run loop then takes
     * that result or waits for it (room for both entries reserved here). */
    if (tw__deferred_reserve(d, 2)) {
        tw_result_drop(out);
        release_cb(out, p);
        return tw_result_fail(TW_ENOMEM, "no memory to wait for run()'s Deferred");
    }
    tw__deferred_push(d, (tw__fnptr)release_cb, p, E_BOTH);
    tw__deferred_run(d);
    return out;
}

/* fn(arg) once granted; drop(arg) (if any) once the chain is past that
 * entry: after the release, or when the acquire failed (cancelled) and fn
 * never ran. */
static int run(tw__dprim *p, tw_result_fn fn, void *arg, tw_drop_fn drop, tw_deferred **out)
{
    tw_deferred *d;
    int rc = acquire(p, &d);
    if (rc) {
        if (drop)
            drop(arg);
        return rc;
    }
    /* A fresh Deferred has inline room for both: this cannot fail. */
    tw__deferred_push(d, (tw__fnptr)fn, arg, E_RUN | E_VALUE);
    if (drop)
        tw__deferred_push(d, (tw__fnptr)drop, arg, E_DROP | E_BOTH);
    tw__deferred_run(d);
    if (out)
        *out = d;
    else
        tw_deferred_unref(d);
    return 0;
}

/* Bad arguments: the argument is still consumed. */
static int refuse(void *arg, tw_drop_fn drop)
{
    if (drop)
        drop(arg);
    return TW_EINVAL;
}

/* ---- DeferredLock ---- */

int tw_dlock_acquire(tw_dlock *l, tw_deferred **out)
{
    if (!l || !out || l->p.limit > 1)
        return TW_EINVAL;
    check_thread(&l->p, "tw_dlock_acquire");
    return acquire(&l->p, out);
}

int tw_dlock_release(tw_dlock *l)
{
    if (!l || l->p.limit > 1)
        return TW_EINVAL;
    check_thread(&l->p, "tw_dlock_release");
    return release(&l->p);
}

int tw_dlock_run(tw_dlock *l, tw_result_fn fn, void *arg, tw_deferred **out)
{
    if (!l || !fn || l->p.limit > 1)
        return TW_EINVAL;
    check_thread(&l->p, "tw_dlock_run");
    return run(&l->p, fn, arg, NULL, out);
}

int tw_dlock_run_full(tw_dlock *l, tw_result_fn fn, void *arg, tw_drop_fn drop,
                      tw_deferred **out)
{
    if (!l || !fn || l->p.limit > 1)
        return refuse(arg, drop);
    check_thread(&l->p, "tw_dlock_run_full");
    return run(&l->p, fn, arg, drop, out);
}

#ifdef TW_DEBUG
bool tw__dlock_try_acquire(tw_dlock *l)
{
    return l && l->p.limit <= 1 && try_acquire(&l->p, "tw_dlock_acquire");
}
#endif

bool tw_dlock_locked(const tw_dlock *l)
{
    return l && l->p.held > 0;
}

size_t tw_dlock_waiting(const tw_dlock *l)
{
    return l ? l->p.waiting : 0;
}

/* ---- DeferredSemaphore ---- */

int tw_dsem_init(tw_dsem *s, uint32_t tokens)
{
    /* Above the bound is almost always a negative count converted (-1
     * arrives as 4294967295): refused, as tw_sem_init refuses it. */
    if (!s || tokens < 1 || tokens > TW_DSEM_TOKENS_MAX)
        return TW_EINVAL;
    tw__dprim zero = {NULL, NULL, 0, 0, tokens, 0, 0};
    s->p = zero;
    return 0;
}

int tw_dsem_acquire(tw_dsem *s, tw_deferred **out)
{
    if (!s || !out || s->p.limit == 0)
        return TW_EINVAL;
    check_thread(&s->p, "tw_dsem_acquire");
    return acquire(&s->p, out);
}

#ifdef TW_DEBUG
bool tw__dsem_try_acquire(tw_dsem *s)
{
    return s && s->p.limit != 0 && try_acquire(&s->p, "tw_dsem_acquire");
}
#endif

int tw_dsem_release(tw_dsem *s)
{
    if (!s || s->p.limit == 0)
        return TW_EINVAL;
    check_thread(&s->p, "tw_dsem_release");
    return release(&s->p);
}

int tw_dsem_run(tw_dsem *s, tw_result_fn fn, void *arg, tw_deferred **out)
{
    if (!s || !fn || s->p.limit == 0)
        return TW_EINVAL;
    check_thread(&s->p, "tw_dsem_run");
    return run(&s->p, fn, arg, NULL, out);
}

int tw_dsem_run_full(tw_dsem *s, tw_result_fn fn, void *arg, tw_drop_fn drop,
                     tw_deferred **out)
{
    if (!s || !fn || s->p.limit == 0)
        return refuse(arg, drop);
    check_thread(&s->p, "tw_dsem_run_full");
    return run(&s->p, fn, arg, drop, out);
}

uint32_t tw_dsem_tokens(const tw_dsem *s)
{
    return s && s->p.limit ? s->p.limit - s->p.held : 0;
}

uint32_t tw_dsem_limit(const tw_dsem *s)
{
    return s ? s->p.limit : 0;
}

size_t tw_dsem_waiting(const tw_dsem *s)
{
    return s ? s->p.waiting : 0;
}
