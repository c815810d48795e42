/* The Deferred: callback chain, firing, pause, chaining, cancel, lifetime.
 *
 * The run loop. A chain is run by tw__deferred_run, never by recursion: the
 * Deferreds being processed form an explicit stack linked through
 * stack_next, each marked F_ON_STACK and holding one reference for the loop.
 * When a chain hands its result to a Deferred that was waiting on it (an
 * E_CHAIN entry), the waiter is pushed and processed next; if the handing
 * Deferred has nothing left, it is popped first, so a nest of 10^5 chained
 * Deferreds unwinds with a stack of depth one. A call that would run a chain
 * already on some loop's stack returns at once: that loop runs the new
 * entries when control gets back to it (Twisted's _runningCallbacks).
 *
 * Invariants:
 *  - F_WAITING implies F_CALLED, result is the Deferred waited on (not
 *    owned), and that Deferred's chain holds an E_CHAIN entry with a
 *    reference to this one. So a waiting Deferred is never freed, and the one
 *    it waits on lives at least until the hand-off.
 *  - A Deferred whose reference count reaches zero with entries left (it
 *    never fired, or it was left paused) runs them first (abandon()): an
 *    unfired one fires with TW_EABANDONED, so waiting callbacks and
 *    Deferreds learn of it. So a Deferred is freed only with no entries.
 *  - While a callback runs, result is none: the callback owns the result.
 *
 * Finding the innermost. A waiting Deferred's result.ptr names the one it
 * waits on; following those links leads to the innermost Deferred of its
 * wait path, which the cycle check of chaining (settle) and cancel need.
 * The waits form a forest: a Deferred waits on one other, many may wait on
 * one. Walking the links is quadratic when a nest is built from the inside
 * out (each new outer link would walk the whole nest), so each waiting
 * Deferred keeps a shortcut, `hint`, to one further along its path (union-
 * find with path compression: a walk points every Deferred it passes at the
 * innermost it found). Links are only ever cut at the innermost end of a
 * path: a hand-off (E_CHAIN) runs in the chain of a Deferred that is not
 * waiting. So until the hint's target itself hands off (its `cuts` moves),
 * every link between a Deferred and its hint still stands, and the hint
 * holds; a stale one is passed over for result.ptr and replaced by the next
 * walk. A hint pins its target's block (`pins`): a target freed meanwhile
 * stays allocated, F_DEAD, until the last hint to it is dropped, so reading
 * its `cuts` is always safe. A Deferred holds a hint only while it waits.
 * Only a pinned Deferred counts its cuts: a hint is stamped with its target's
 * count, and nothing reads the count of a Deferred no hint points to, so the
 * count starts at the first pin and the common Deferred, never pinned, pays
 * nothing for it.
 *
 * Single-threaded: no atomics. Builds with TW_DEBUG check the thread. */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "deferred/deferred.h"

static void destroy(tw_deferred *d);

_Thread_local uint64_t tw__deferred_hops;

/* Deferreds are made and freed at a high rate on one thread: a few freed
 * ones are kept per thread for reuse. */
static const tw__block_cache cache = {sizeof(tw_deferred), 32, TW__CACHE_SLOT_DEFERRED};
static void abandon(tw_deferred *d);

#ifdef TW_DEBUG
void tw__deferred_wrong_thread(const tw_deferred *d, const char *function)
{
    char what[200];
    snprintf(what, sizeof what, "a Deferred created at %s:%d", d->file ? d->file : "?",
             d->line);
    tw__wrong_thread(what, d->thread, function);
}
#endif

/* ---- creation and storage ----------------------------------------------- */

int tw__deferred_new(tw_deferred **out, tw_canceller_fn canceller, void *arg, const char *file,
                     int line)
{
    /* The inline entries are left uninitialised: only [head, head+count) is read. */
    tw_deferred *d = tw__cache_alloc(&cache);
    if (!d)
        return TW_ENOMEM;
    d->result = tw_result_none();
    d->ent = d->inline_ent;
    d->head = d->count = 0;
    d->cap = TW__INLINE_ENTRIES;
    d->refs = 1;
    d->flags = 0;
    d->paused = 0;
    d->stack_next = NULL;
    d->canceller = canceller;
    d->canceller_arg = arg;
    d->wprev = d->wnext = NULL;
    d->file = file;
    d->line = line;
#ifdef TW_DEBUG
    d->thread = tw__self();
#endif
    *out = d;
    return 0;
}

int tw_deferred_create_full_at(tw_deferred **out, tw_canceller_fn canceller, void *arg,
                               tw_drop_fn drop, const char *file, int line)
{
    int rc = out ? tw__deferred_new(out, canceller, arg, file, line) : TW_EINVAL;
    if (rc) {
        if (drop)
            drop(arg);
        return rc;
    }
    if (drop) {
        (*out)->canceller_drop = drop;
        (*out)->flags |= F_CANCELLER_DROP;
    }
    return 0;
}

int tw_deferred_create_at(tw_deferred **out, tw_canceller_fn canceller, void *arg,
                          const char *file, int line)
{
    if (!out)
        return TW_EINVAL;
    return tw__deferred_new(out, canceller, arg, file, line);
}

#undef tw_deferred_create
int tw_deferred_create(tw_deferred **out, tw_canceller_fn canceller, void *arg)
{
    return tw_deferred_create_at(out, canceller, arg, NULL, 0);
}

#undef tw_deferred_create_full
int tw_deferred_create_full(tw_deferred **out, tw_canceller_fn canceller, void *arg,
                            tw_drop_fn drop)
{
    return tw_deferred_create_full_at(out, canceller, arg, drop, NULL, 0);
}

int tw__deferred_reserve(tw_deferred *d, uint32_t n)
{
    if (d->head + d->count + n <= d->cap)
        return 0;
    if (d->count + n <= d->cap) { /* room at the front: entries already run */
        memmove(d->ent, d->ent + d->head, d->count * sizeof *d->ent);
        d->head = 0;
        return 0;
    }
    if (d->count + (uint64_t)n > UINT32_MAX / 2)
        return TW_ENOMEM;
    uint32_t cap = d->cap * 2;
    while (cap < d->count + n)
        cap *= 2;
    struct tw__entry *e = tw__alloc((size_t)cap * sizeof *e);
    if (!e)
        return TW_ENOMEM;
    memcpy(e, d->ent + d->head, d->count * sizeof *e);
    if (d->flags & F_HEAP_ENTRIES)
        tw__free(d->ent, (size_t)d->cap * sizeof *d->ent);
    d->ent = e;
    d->cap = cap;
    d->head = 0;
    d->flags |= F_HEAP_ENTRIES;
    return 0;
}

/* ---- the run loop ---------------------------------------------------------- */

/* Pops cur (the top of a loop's stack) and returns the new top. */
static tw_deferred *pop(tw_deferred *cur)
{
    tw_deferred *next = cur->stack_next;
    cur->flags &= ~F_ON_STACK;
    tw_deferred_unref(cur);
    return next;
}

bool tw__deferred_take(tw_deferred *d, tw_result *out)
{
    if (!tw__deferred_finished(d))
        return false;
    *out = d->result;
    d->result = tw_result_none();
    return true;
}

/* ---- finding the innermost (see the top of this file) ------------------------- */

/* The next Deferred along the wait path of x (which waits): its hint while
 * that holds, else the one it waits on. */
static inline tw_deferred *next_on_path(const tw_deferred *x)
{
    if ((x->flags & F_HINT) && x->hint->cuts == x->hint_cuts)
        return x->hint;
    return x->result.ptr;
}

static void unpin(tw_deferred *h)
{
    if (--h->pins != 0)
        return;
    h->flags &= ~F_PINNED;
    if (h->flags & F_DEAD)
        tw__cache_free(&cache, h);
}

/* x (waiting) takes r, a Deferred further along its path, as its hint. */
static void set_hint(tw_deferred *x, tw_deferred *r)
{
    tw_deferred *old = x->flags & F_HINT ? x->hint : NULL;
    if (r == x->result.ptr) {
        x->flags &= ~F_HINT; /* the link itself */
    } else {
        if (!(r->flags & F_PINNED)) { /* no hint points to r: its count starts */
            r->flags |= F_PINNED;
            r->pins = 0;
            r->cuts = 0;
        }
        r->pins++;
        x->flags |= F_HINT;
        x->hint = r;
        x->hint_cuts = r->cuts;
    }
    if (old)
        unpin(old); /* after the pin above: old may be r */
}

/* Hand-off from cur to w, for a cur with hints pointing to it or a w with a
 * hint: the link is cut, hints to cur no longer hold, and w's own goes. */
static __attribute__((noinline)) void cut(tw_deferred *cur, tw_deferred *w)
{
    if (cur->flags & F_PINNED)
        cur->cuts++;
    if (w->flags & F_HINT) {
        w->flags &= ~F_HINT;
        unpin(w->hint);
    }
}

tw_deferred *tw__deferred_innermost(tw_deferred *d)
{
    if (!(d->flags & F_WAITING))
        return d;
    tw_deferred *r = d;
    uint64_t hops = 0;
    do {
        r = next_on_path(r);
        hops++;
    } while (r->flags & F_WAITING);
    tw__deferred_hops += hops;
    /* Compress: every Deferred passed points at r. Each step reads its
     * next before replacing its hint; a hint that held is a Deferred on the
     * path, alive, so the unpin in set_hint frees only stale targets, which
     * the walk does not visit. */
    if (hops > 1 || ((d->flags & F_HINT) && d->hint != r))
        for (tw_deferred *x = d, *next; x != r; x = next) {
            next = next_on_path(x);
            set_hint(x, r);
        }
    return r;
}

/* A callback of cur returned a Deferred (r, whose reference it hands over).
 * Either takes its result at once or makes cur wait on it. */
static void settle(tw_deferred *cur, tw_result r)
{
    tw_deferred *d = r.ptr;
    if (!d) {
        cur->result = tw_result_fail(TW_EINVAL, "a callback returned a NULL Deferred");
        return;
    }
    /* Waiting on d would close a cycle if d is cur, or waits (through any
     * number of links) on cur: every Deferred of the cycle would wait
     * forever. cur runs, so it waits on nothing: the cycle is there exactly
     * when d's innermost is cur. */
    tw_deferred *in = tw__deferred_innermost(d);
    if (in == cur) {
        tw_deferred_unref(d); /* the loop's own reference keeps cur alive */
        cur->result = tw_result_fail(TW_EDEADLK, d == cur
                                                     ? "a callback returned the Deferred it is "
                                                       "attached to, which would wait on itself"
                                                     : "a callback returned a Deferred that "
                                                       "waits on this one: they would wait on "
                                                       "each other forever");
        return;
    }
    if (tw__deferred_take(d, &cur->result)) {
        tw_deferred_unref(d);
        return;
    }
    if (tw__deferred_reserve(d, 1) != 0) {
        tw_deferred_unref(d);
        cur->result = tw_result_fail(TW_ENOMEM, "no memory to wait on a chained Deferred");
        return;
    }
    cur->refs++; /* for the E_CHAIN entry */
    tw__deferred_push(d, NULL, cur, E_CHAIN | E_BOTH);
    cur->flags |= F_WAITING;
    cur->result = r; /* weak from here: the reference is given back below */
    if (in != d) /* a nest growing outwards: cur starts with the shortcut */
        set_hint(cur, in);
    /* If that was the last reference, d is abandoned now and its E_CHAIN
     * entry hands TW_EABANDONED back to cur (on our stack, so not pushed). */
    tw_deferred_unref(d);
}

void tw__deferred_run(tw_deferred *d)
{
    if ((d->flags & F_ON_STACK) || !tw__deferred_ready(d) || d->count == 0)
        return;
    d->refs++;
    d->flags |= F_ON_STACK;
    d->stack_next = NULL;
    tw_deferred *top = d;
    while (top) {
        tw_deferred *cur = top;
        if (!tw__deferred_ready(cur) || cur->count == 0) {
            top = pop(cur);
            continue;
        }
        struct tw__entry e = cur->ent[cur->head++];
        cur->count--;
        bool failed = tw_result_is_failure(cur->result);
        if (e.kind & E_PAIR) {
            struct tw__entry eb = cur->ent[cur->head++];
            cur->count--;
            if (failed)
                e = eb;
        } else if (!(e.kind & (failed ? E_FAILURE : E_VALUE))) {
            continue; /* the other side: the result passes through */
        }
        if (cur->count == 0)
            cur->head = 0;

        if (e.kind & (E_CHAIN | E_DROP)) {
            if (e.kind & E_DROP) {
                ((tw_drop_fn)e.fn)(e.arg);
                continue;
            }
            /* Hand the result to the Deferred waiting on cur; the entry's
             * reference to it passes to this loop (or is dropped). */
            tw_deferred *w = e.arg;
            w->result = cur->result;
            cur->result = tw_result_none();
            w->flags &= ~F_WAITING;
            if (__builtin_expect((cur->flags & F_PINNED) | (w->flags & F_HINT), 0))
                cut(cur, w);
            if (cur->count == 0)
                top = pop(cur); /* done: keep the stack shallow */
            if (!(w->flags & F_ON_STACK) && tw__deferred_ready(w)) {
                w->flags |= F_ON_STACK;
                w->stack_next = top;
                top = w;
            } else {
                tw_deferred_unref(w);
            }
            continue;
        }

        tw_result in = cur->result, out;
        cur->result = tw_result_none();
        if (e.kind & E_RUN)
            out = tw__prim_run(in, (tw_result_fn)e.fn, e.arg);
        else
            out = ((tw_callback_fn)e.fn)(in, e.arg);
        if (tw_result_is_deferred(out))
            settle(cur, out);
        else
            cur->result = out;
    }
}

/* ---- firing ------------------------------------------------------------------ */

/* d has fired: its canceller can never run; its argument is dropped. */
static void canceller_done(tw_deferred *d)
{
    d->flags &= ~F_CANCELLER_DROP;
    d->canceller = NULL;
    d->canceller_drop(d->canceller_arg);
}

/* Fires d, which has a canceller argument to drop once the chain this
 * firing runs has run (the canceller can no longer run). When the canceller
 * is running (it fires d itself), the cancel that runs it drops the argument
 * after it returns. The drop may release the reference the caller fires
 * through: d is held across it. */
static __attribute__((noinline)) void fire_dropping(tw_deferred *d)
{
    if (d->flags & F_CANCELLER_RAN) {
        tw__deferred_run(d);
        return;
    }
    d->refs++;
    tw__deferred_run(d);
    canceller_done(d);
    tw_deferred_unref(d);
}

/* d has fired already: r is dropped. A late result after a cancel without
 * canceller is swallowed once. */
static int fired_twice(tw_deferred *d, tw_result r)
{
    tw_result_drop(r);
    if (d->flags & F_SUPPRESS) {
        d->flags &= ~F_SUPPRESS;
        return 0;
    }
    return TW_EALREADY;
}

int tw__deferred_fire(tw_deferred *d, tw_result r)
{
    if (tw_result_is_deferred(r)) {
        tw_result_drop(r);
        return TW_EINVAL;
    }
    if (d->flags & F_CALLED)
        return fired_twice(d, r);
    d->flags |= F_CALLED;
    d->result = r;
    if (__builtin_expect(d->flags & F_CANCELLER_DROP, 0))
        fire_dropping(d);
    else
        tw__deferred_run(d);
    return 0;
}

int tw__deferred_fire_chained(tw_deferred *d, tw_result r)
{
    if (d->flags & F_CALLED)
        return fired_twice(d, r);
    /* As run_one: the chain is on no loop's stack, and d is marked so while
     * settle runs, since settle may hand d a result at once (an abandoned
     * r) and d's entries then run below, in order. */
    d->flags |= F_CALLED | F_ON_STACK;
    d->refs++;
    settle(d, r);
    d->flags &= ~F_ON_STACK;
    if (__builtin_expect(d->flags & F_CANCELLER_DROP, 0))
        fire_dropping(d);
    else
        tw__deferred_run(d);
    tw_deferred_unref(d);
    return 0;
}

int tw_deferred_callback(tw_deferred *d, tw_result r)
{
    if (!d) {
        tw_result_drop(r);
        return TW_EINVAL;
    }
    TW__CHECK_THREAD(d, "tw_deferred_callback");
    return tw__deferred_fire(d, r);
}

int tw_deferred_errback(tw_deferred *d, tw_failure *f)
{
    if (!f) {
        if (d)
            TW__CHECK_THREAD(d, "tw_deferred_errback");
        return TW_EINVAL;
    }
    if (!d) {
        tw_failure_unref(f);
        return TW_EINVAL;
    }
    TW__CHECK_THREAD(d, "tw_deferred_errback");
    return tw__deferred_fire(d, tw_result_failure(f));
}

int tw__deferred_new_fired(tw_deferred **out, tw_result r)
{
    int rc = tw__deferred_new(out, NULL, NULL, NULL, 0);
    if (rc)
        return rc;
    (*out)->flags |= F_CALLED;
    (*out)->result = r;
    return 0;
}

/* An already-fired Deferred; consumes r in every case. */
static int new_fired_or_drop(tw_deferred **out, tw_result r)
{
    int rc = out ? tw__deferred_new_fired(out, r) : TW_EINVAL;
    if (rc)
        tw_result_drop(r);
    return rc;
}

int tw_deferred_succeed(tw_deferred **out, void *ptr, tw_drop_fn drop)
{
    return new_fired_or_drop(out, tw_result_value(ptr, drop));
}

int tw_deferred_fail(tw_deferred **out, tw_failure *f)
{
    if (!f)
        return TW_EINVAL;
    return new_fired_or_drop(out, tw_result_failure(f));
}

int tw_maybe_deferred(tw_result_fn fn, void *arg, tw_deferred **out)
{
    if (!fn || !out)
        return TW_EINVAL;
    tw_result r = fn(arg);
    if (tw_result_is_deferred(r)) {
        if (!r.ptr)
            return TW_EINVAL;
        *out = r.ptr;
        return 0;
    }
    return new_fired_or_drop(out, r);
}

/* ---- callbacks --------------------------------------------------------------- */

int tw_deferred_add_callbacks(tw_deferred *d, tw_callback_fn callback, void *cb_arg,
                              tw_callback_fn errback, void *eb_arg)
{
    if (!d || (!callback && !errback))
        return TW_EINVAL;
    TW__CHECK_THREAD(d, "tw_deferred_add_callbacks");
    if (callback && errback && (callback != errback || cb_arg != eb_arg)) {
        if (tw__deferred_reserve(d, 2))
            return TW_ENOMEM;
        tw__deferred_push(d, (tw__fnptr)callback, cb_arg, E_PAIR | E_VALUE);
        tw__deferred_push(d, (tw__fnptr)errback, eb_arg, E_FAILURE);
    } else {
        if (tw__deferred_reserve(d, 1))
            return TW_ENOMEM;
        uint32_t kind = callback && errback ? E_BOTH : callback ? E_VALUE : E_FAILURE;
        tw__deferred_push(d, (tw__fnptr)(callback ? callback : errback),
                          callback ? cb_arg : eb_arg, kind);
    }
    tw__deferred_run(d);
    return 0;
}

/* A callback added to a Deferred whose chain has run to its end runs at
 * once, without the loop's set-up; what it leaves behind (entries it added,
 * a Deferred it returned) goes through the loop as usual. */
static void run_one(tw_deferred *d, tw_callback_fn fn, void *arg)
{
    d->refs++;
    d->flags |= F_ON_STACK;
    tw_result in = d->result;
    d->result = tw_result_none();
    tw_result out = fn(in, arg);
    if (tw_result_is_deferred(out))
        settle(d, out);
    else
        d->result = out;
    d->flags &= ~F_ON_STACK;
    tw__deferred_run(d);
    tw_deferred_unref(d);
}

static int add_one(tw_deferred *d, tw_callback_fn fn, void *arg, uint32_t kind,
                   const char *function)
{
    if (!d || !fn)
        return TW_EINVAL;
    TW__CHECK_THREAD(d, function);
    (void)function;
    if (!(d->flags & F_CALLED)) { /* the common case: building the chain */
        if (d->head + d->count >= d->cap && tw__deferred_reserve(d, 1))
            return TW_ENOMEM;
        tw__deferred_push(d, (tw__fnptr)fn, arg, kind);
        return 0;
    }
    if (tw__deferred_finished(d)) {
        bool failed = tw_result_is_failure(d->result);
        if (kind & (failed ? E_FAILURE : E_VALUE))
            run_one(d, fn, arg);
        return 0; /* the other side: it would pass the result through */
    }
    if (d->head + d->count >= d->cap && tw__deferred_reserve(d, 1))
        return TW_ENOMEM;
    tw__deferred_push(d, (tw__fnptr)fn, arg, kind);
    tw__deferred_run(d);
    return 0;
}

int tw_deferred_add_callback(tw_deferred *d, tw_callback_fn fn, void *arg)
{
    return add_one(d, fn, arg, E_VALUE, "tw_deferred_add_callback");
}

int tw_deferred_add_errback(tw_deferred *d, tw_callback_fn fn, void *arg)
{
    return add_one(d, fn, arg, E_FAILURE, "tw_deferred_add_errback");
}

int tw_deferred_add_both(tw_deferred *d, tw_callback_fn fn, void *arg)
{
    return add_one(d, fn, arg, E_BOTH, "tw_deferred_add_both");
}

/* ---- pause, cancel ----------------------------------------------------------- */

int tw_deferred_pause(tw_deferred *d)
{
    if (!d)
        return TW_EINVAL;
    TW__CHECK_THREAD(d, "tw_deferred_pause");
    if (d->paused == UINT32_MAX)
        return TW_EOVERFLOW;
    d->paused++;
    return 0;
}

int tw_deferred_unpause(tw_deferred *d)
{
    if (!d)
        return TW_EINVAL;
    TW__CHECK_THREAD(d, "tw_deferred_unpause");
    if (d->paused == 0)
        return TW_EPERM;
    if (--d->paused == 0)
        tw__deferred_run(d);
    return 0;
}

int tw_deferred_cancel(tw_deferred *d)
{
    if (!d)
        return TW_EINVAL;
    TW__CHECK_THREAD(d, "tw_deferred_cancel");
    /* Fired but waiting: the result will come from the innermost Deferred
     * of the chain, so that is the one to cancel. */
    d = tw__deferred_innermost(d);
    if (d->flags & F_CALLED)
        return 0;
    d->refs++; /* the canceller may drop the last other reference */
    bool ran = false;
    if (d->canceller) {
        if (!(d->flags & F_CANCELLER_RAN)) {
            d->flags |= F_CANCELLER_RAN;
            d->canceller(d, d->canceller_arg);
            ran = true;
        }
    } else {
        d->flags |= F_SUPPRESS;
    }
    if (!(d->flags & F_CALLED))
        tw__deferred_fire(d, tw_result_fail(TW_ECANCELED, "Deferred was cancelled"));
    if (ran && (d->flags & F_CANCELLER_DROP)) /* fired now, the canceller has returned */
        canceller_done(d);
    tw_deferred_unref(d);
    return 0;
}

/* ---- lifetime ------------------------------------------------------------------ */

tw_deferred *tw_deferred_ref(tw_deferred *d)
{
    if (d) {
        TW__CHECK_THREAD(d, "tw_deferred_ref");
        d->refs++;
    }
    return d;
}

void tw_deferred_unref(tw_deferred *d)
{
    if (!d)
        return;
    TW__CHECK_THREAD(d, "tw_deferred_unref");
    if (--d->refs != 0)
        return;
    if (d->count != 0)
        abandon(d);
    else
        destroy(d);
}

/* No reference is left, yet entries wait: d never fired, or it was left
 * paused. Nobody can fire or unpause it any more. An unfired d fires with
 * TW_EABANDONED; a paused one is reported and unpaused, its chain going on
 * with the result it has (a DeferredLock grant still reaches run(), which
 * releases it). A callback may pause d again: nobody could undo that either,
 * so the loop unpauses until every entry has run (each pass runs at least
 * one). A callback may also make d wait; the chain then holds d. */
static void abandon(tw_deferred *d)
{
    char where[160];
    if (d->file)
        snprintf(where, sizeof where, " (created at %s:%d)", d->file, d->line);
    else
        where[0] = '\0';
    d->refs = 1;
    if (!(d->flags & F_CALLED)) {
        d->flags |= F_CALLED;
        d->result = tw_result_fail(TW_EABANDONED, "Deferred released before it fired%s", where);
    } else {
        char msg[256];
        snprintf(msg, sizeof msg, "Deferred%s released while paused; its remaining callbacks "
                 "run now", where);
        tw_diag_report(TW_DIAG_MISUSE, TW_EABANDONED, "tw_deferred_unref", msg);
    }
    do {
        d->paused = 0;
        tw__deferred_run(d);
    } while (d->count && d->refs == 1 && !(d->flags & (F_WAITING | F_ON_STACK)));
    if (d->flags & F_CANCELLER_DROP) /* it fired above: the canceller can no longer run */
        canceller_done(d);
    tw_deferred_unref(d);
}

static void destroy(tw_deferred *d)
{
    if (tw_result_is_failure(d->result))
        tw__deferred_report_unhandled(d->result.ptr, d->file, d->line);
    tw_result_drop(d->result);
    if (__builtin_expect(d->flags & (F_HEAP_ENTRIES | F_PINNED), 0)) {
        if (d->flags & F_HEAP_ENTRIES)
            tw__free(d->ent, (size_t)d->cap * sizeof *d->ent);
        if (d->flags & F_PINNED) { /* hints point here: the last unpin frees the block */
            d->flags |= F_DEAD;
            return;
        }
    }
    tw__cache_free(&cache, d);
}

/* ---- inspection -------------------------------------------------------------- */

bool tw_deferred_called(const tw_deferred *d)
{
    return d && (d->flags & F_CALLED);
}

unsigned tw_deferred_paused(const tw_deferred *d)
{
    return d ? d->paused : 0;
}

tw_deferred *tw_deferred_waiting_on(const tw_deferred *d)
{
    return d && (d->flags & F_WAITING) ? d->result.ptr : NULL;
}

bool tw_deferred_peek(const tw_deferred *d, tw_result *out)
{
    if (!d || (d->flags & (F_CALLED | F_WAITING)) != F_CALLED)
        return false;
    if (out)
        *out = d->result;
    return true;
}
