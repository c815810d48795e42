/* Timers: a binary min-heap of delayed calls ordered by (when, seq), each
 * call knowing its index so that cancel and reset are O(log n).
 *
 * A delayed call is reference counted: the reactor holds one reference while
 * the call is pending, and each handle given out holds one. A call made
 * through the deferred layer's clock gives its user a handle (a reference to
 * the call and one to the clock) that dies when the call runs or is
 * cancelled, as tw_clock requires. */
#include "base/alloc.h"
#include "base/time.h"
#include "reactor/reactor.h"

static bool before(const tw_delayed_call *a, const tw_delayed_call *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void place(tw_reactor *r, size_t i, tw_delayed_call *c)
{
    r->heap[i] = c;
    c->index = i;
}

static void sift_up(tw_reactor *r, size_t i)
{
    tw_delayed_call *c = r->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(c, r->heap[parent]))
            break;
        place(r, i, r->heap[parent]);
        i = parent;
    }
    place(r, i, c);
}

static void sift_down(tw_reactor *r, size_t i)
{
    tw_delayed_call *c = r->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const tw_delayed_call *best = c;
        if (l < r->heap_len && before(r->heap[l], best))
            m = l, best = r->heap[l];
        if (l + 1 < r->heap_len && before(r->heap[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        place(r, i, r->heap[m]);
        i = m;
    }
    place(r, i, c);
}

static void heap_remove(tw_reactor *r, tw_delayed_call *c)
{
    size_t i = c->index;
    tw_delayed_call *last = r->heap[--r->heap_len];
    if (last != c) {
        place(r, i, last);
        sift_up(r, i);
        sift_down(r, last->index);
    }
}

static int heap_push(tw_reactor *r, tw_delayed_call *c)
{
    if (r->heap_len == r->heap_cap) {
        size_t cap = r->heap_cap ? r->heap_cap * 2 : 64;
        tw_delayed_call **h = tw__realloc(r->heap, r->heap_cap * sizeof *h, cap * sizeof *h);
        if (!h)
            return TW_ENOMEM;
        r->heap = h;
        r->heap_cap = cap;
    }
    r->heap[r->heap_len] = c;
    c->index = r->heap_len++;
    sift_up(r, c->index);
    return 0;
}

static void unref(tw_delayed_call *c)
{
    if (--c->refs == 0)
        TW__DELETE(c);
}

/* The call ran or never will: its argument is dropped, once. */
static void drop_arg(tw_delayed_call *c)
{
    tw_drop_fn drop = c->drop;
    c->drop = NULL;
    if (drop)
        drop(c->arg);
}

static void rclock_put(tw__rclock *rc)
{
    if (--rc->refs == 0)
        TW__DELETE(rc);
}

/* On an error, arg stays the caller's. */
static int schedule(tw_reactor *r, double seconds, tw_call_fn fn, void *arg,
                    tw_delayed_call **out)
{
    int64_t d;
    if (!fn || tw__delay_ns(seconds, &d))
        return TW_EINVAL;
    if (r->state == R_DONE)
        return TW_ESHUTDOWN;
    tw_delayed_call *c = TW__NEW(tw_delayed_call);
    if (!c)
        return TW_ENOMEM;
    c->r = r;
    c->when = tw__add_sat(tw__reactor_now(r), d);
    c->seq = r->timer_seq++;
    c->fn = fn;
    c->arg = arg;
    c->refs = 1;
    c->state = DC_PENDING;
    int rc = heap_push(r, c);
    if (rc) {
        TW__DELETE(c);
        return rc;
    }
    *out = c;
    return 0;
}

int tw_reactor_call_later_full(tw_reactor *r, double seconds, tw_call_fn fn, void *arg,
                               tw_drop_fn drop, tw_delayed_call **out)
{
    tw_delayed_call *c;
    int rc = TW_EINVAL;
    if (r) {
        TW__RCHECK(r, "tw_reactor_call_later");
        rc = schedule(r, seconds, fn, arg, &c);
    }
    if (rc) {
        if (drop)
            drop(arg);
        return rc;
    }
    c->drop = drop;
    if (out) {
        c->refs++;
        *out = c;
    }
    return 0;
}

int tw_reactor_call_later(tw_reactor *r, double seconds, tw_call_fn fn, void *arg,
                          tw_delayed_call **out)
{
    return tw_reactor_call_later_full(r, seconds, fn, arg, NULL, out);
}

int tw_delayed_call_cancel(tw_delayed_call *c)
{
    if (!c)
        return TW_EINVAL;
    if (c->state != DC_PENDING) /* the reactor may be gone: do not touch it */
        return TW_EALREADY;
    TW__RCHECK(c->r, "tw_delayed_call_cancel");
    heap_remove(c->r, c);
    c->state = DC_CANCELLED;
    drop_arg(c);
    unref(c);
    return 0;
}

static int move(tw_delayed_call *c, int64_t when)
{
    tw_reactor *r = c->r;
    c->when = when;
    c->seq = r->timer_seq++; /* moved: after the others due at the same time */
    /* The key changed both ways at once (time one way, seq up): restore the
     * heap in both directions. */
    sift_up(r, c->index);
    sift_down(r, c->index);
    return 0;
}

int tw_delayed_call_reset(tw_delayed_call *c, double seconds)
{
    int64_t d;
    if (!c || tw__delay_ns(seconds, &d))
        return TW_EINVAL;
    if (c->state != DC_PENDING)
        return TW_EALREADY;
    TW__RCHECK(c->r, "tw_delayed_call_reset");
    return move(c, tw__add_sat(tw__reactor_now(c->r), d));
}

int tw_delayed_call_delay(tw_delayed_call *c, double seconds)
{
    int64_t d;
    if (!c || tw__delay_ns(seconds, &d))
        return TW_EINVAL;
    if (c->state != DC_PENDING)
        return TW_EALREADY;
    TW__RCHECK(c->r, "tw_delayed_call_delay");
    return move(c, tw__add_sat(c->when, d));
}

bool tw_delayed_call_active(const tw_delayed_call *c)
{
    return c && c->state == DC_PENDING;
}

double tw_delayed_call_time(const tw_delayed_call *c)
{
    return c ? (double)c->when / 1e9 : 0.0;
}

void tw_delayed_call_unref(tw_delayed_call *c)
{
    if (c) {
        if (c->state == DC_PENDING)
            TW__RCHECK(c->r, "tw_delayed_call_unref");
        unref(c);
    }
}

void tw__timers_run(tw_reactor *r, int64_t now)
{
    /* Only calls that were due when this pass began: a call scheduled by a
     * call for "now" waits for the next iteration (no starvation of fds). */
    uint64_t seq_limit = r->timer_seq;
    while (r->heap_len) {
        tw_delayed_call *c = r->heap[0];
        if (c->when > now || c->seq >= seq_limit)
            break;
        heap_remove(r, c);
        c->state = DC_RAN;
        c->fn(c->arg);
        drop_arg(c);
        if (c->rclock) { /* a clock call's handle dies when it runs */
            rclock_put(c->rclock);
            unref(c);
        }
        unref(c);
        if (r->state == R_DONE)
            break;
    }
}

int64_t tw__timers_next(const tw_reactor *r, int64_t now)
{
    if (!r->heap_len)
        return -1;
    int64_t w = r->heap[0]->when;
    return w <= now ? 0 : w - now;
}

void tw__timers_destroy(tw_reactor *r)
{
    while (r->heap_len) {
        tw_delayed_call *c = r->heap[--r->heap_len];
        c->state = DC_CANCELLED;
        c->r = NULL; /* a handle may outlive the reactor */
        drop_arg(c);
        unref(c);
    }
    tw__free(r->heap, r->heap_cap * sizeof *r->heap);
    r->heap = NULL;
    r->heap_cap = 0;
}

/* ---- the deferred layer's clock -------------------------------------------- */

static int64_t clock_now(tw_clock *c)
{
    tw__rclock *rc = (tw__rclock *)c;
    return rc->r ? tw__reactor_now(rc->r) : tw_now_ns();
}

/* A clock call carries a second reference for its handle, and the handle a
 * reference to the clock, both held by the clock's user until the call runs
 * or the user cancels it. So a handle stays valid when the reactor shuts
 * down or is freed first: cancelling it then finds it no longer pending. */
static int clock_call_later(tw_clock *c, double seconds, tw_clock_fn fn, void *arg,
                            tw_clock_call **out)
{
    tw__rclock *rc = (tw__rclock *)c;
    if (!rc->r)
        return TW_ESHUTDOWN;
    tw_delayed_call *dc;
    int err = schedule(rc->r, seconds, fn, arg, &dc);
    if (err)
        return err;
    if (out) {
        dc->rclock = rc;
        rc->refs++;
        dc->refs++;
        *out = (tw_clock_call *)dc;
    }
    return 0;
}

static int clock_cancel(tw_clock *c, tw_clock_call *call)
{
    (void)c;
    tw_delayed_call *dc = (tw_delayed_call *)call;
    if (!dc || !dc->rclock)
        return TW_EINVAL;
    tw__rclock *rc = dc->rclock;
    int err = tw_delayed_call_cancel(dc);
    unref(dc); /* the handle's */
    rclock_put(rc);
    return err == TW_EALREADY ? 0 : err;
}

static const tw_clock_ops clock_ops = {clock_now, clock_call_later, clock_cancel};

int tw__clock_create(tw_reactor *r)
{
    tw__rclock *rc = TW__NEW(tw__rclock);
    if (!rc)
        return TW_ENOMEM;
    rc->clock.ops = &clock_ops;
    rc->r = r;
    rc->refs = 1;
    r->rclock = rc;
    return 0;
}

void tw__clock_detach(tw_reactor *r)
{
    if (r->rclock) {
        r->rclock->r = NULL;
        rclock_put(r->rclock);
        r->rclock = NULL;
    }
}
