/* The fake clock: time moves only in tw_fake_clock_advance.
 *
 * Scheduled calls sit in one list sorted by (deadline, sequence number), so
 * calls due together run in the order they were scheduled. Insertion is
 * linear: this clock serves tests, whose timers are few. A call is unlinked
 * before it runs, so it may schedule or cancel others, including while the
 * clock is advancing. */
#include "base/alloc.h"
#include "base/time.h"
#include "deferred/deferred.h"

struct tw_clock_call {
    tw_clock_call *next, *prev;
    int64_t when;
    uint64_t seq;
    tw_clock_fn fn;
    void *arg;
};

struct tw_fake_clock {
    tw_clock clock; /* first: a tw_clock * is a tw_fake_clock * */
    int64_t now;
    uint64_t seq;
    size_t pending;
    tw_clock_call *head, *tail;
};

static int64_t fake_now(tw_clock *c)
{
    return ((tw_fake_clock *)c)->now;
}

static int fake_call_later(tw_clock *c, double seconds, tw_clock_fn fn, void *arg,
                           tw_clock_call **out)
{
    tw_fake_clock *fc = (tw_fake_clock *)c;
    int64_t delay;
    if (!fn || tw__delay_ns(seconds, &delay))
        return TW_EINVAL;
    tw_clock_call *call = TW__NEW(tw_clock_call);
    if (!call)
        return TW_ENOMEM;
    call->when = tw__add_sat(fc->now, delay);
    call->seq = fc->seq++;
    call->fn = fn;
    call->arg = arg;
    /* Insert after the last call due no later (scan from the tail: new
     * calls are usually the latest). */
    tw_clock_call *after = fc->tail;
    while (after && after->when > call->when)
        after = after->prev;
    call->prev = after;
    call->next = after ? after->next : fc->head;
    if (call->next)
        call->next->prev = call;
    else
        fc->tail = call;
    if (after)
        after->next = call;
    else
        fc->head = call;
    fc->pending++;
    if (out)
        *out = call;
    return 0;
}

static void unlink_call(tw_fake_clock *fc, tw_clock_call *call)
{
    if (call->prev)
        call->prev->next = call->next;
    else
        fc->head = call->next;
    if (call->next)
        call->next->prev = call->prev;
    else
        fc->tail = call->prev;
    fc->pending--;
}

static int fake_cancel(tw_clock *c, tw_clock_call *call)
{
    tw_fake_clock *fc = (tw_fake_clock *)c;
    tw_clock_call *p = fc->head;
    while (p && p != call) /* a call that ran or was cancelled is not found */
        p = p->next;
    if (!p)
        return TW_EINVAL;
    unlink_call(fc, call);
    TW__DELETE(call);
    return 0;
}

static const tw_clock_ops fake_ops = {fake_now, fake_call_later, fake_cancel};

int tw_fake_clock_create(tw_fake_clock **out)
{
    if (!out)
        return TW_EINVAL;
    tw_fake_clock *fc = TW__NEW(tw_fake_clock);
    if (!fc)
        return TW_ENOMEM;
    fc->clock.ops = &fake_ops;
    *out = fc;
    return 0;
}

tw_clock *tw_fake_clock_clock(tw_fake_clock *fc)
{
    return fc ? &fc->clock : NULL;
}

int tw_fake_clock_advance(tw_fake_clock *fc, double seconds)
{
    int64_t delta;
    if (!fc || tw__delay_ns(seconds, &delta))
        return TW_EINVAL;
    int64_t target = tw__add_sat(fc->now, delta);
    while (fc->head && fc->head->when <= target) {
        tw_clock_call *call = fc->head;
        unlink_call(fc, call);
        if (call->when > fc->now)
            fc->now = call->when;
        tw_clock_fn fn = call->fn;
        void *arg = call->arg;
        TW__DELETE(call);
        fn(arg);
    }
    if (target > fc->now) /* a call may have advanced further itself */
        fc->now = target;
    return 0;
}

size_t tw_fake_clock_pending(const tw_fake_clock *fc)
{
    return fc ? fc->pending : 0;
}

int tw_fake_clock_destroy(tw_fake_clock *fc)
{
    if (!fc)
        return TW_EINVAL;
    if (fc->pending)
        return TW_EBUSY;
    TW__DELETE(fc);
    return 0;
}
