/* tw_deferred_add_timeout: a clock call that cancels the Deferred, and an
 * entry on its chain that converts the result and cancels the call.
 *
 * The context has two owners, the clock call (until it runs or is cancelled)
 * and the chain entry (until it runs); `owners` counts them. Whichever comes
 * first decides: the call marks the context timed out and cancels; the
 * entry, arriving first, cancels the call. The call points to the Deferred
 * without a reference: the Deferred cannot be freed before its entry has run
 * (an abandoned one runs its chain first), and the entry cancels the call.
 * So a Deferred nobody holds is abandoned as usual, timeout or not. The
 * last owner to let go drops on_timeout's argument, if it came with a drop
 * function: the entry has run, so on_timeout can never be called again. */
#include "base/alloc.h"
#include "base/time.h"
#include "deferred/deferred.h"

typedef struct timeout_ctx {
    tw_deferred *d;
    tw_clock *clock;
    tw_clock_call *call; /* NULL once it ran or was cancelled */
    tw_timeout_fn on_timeout;
    void *arg;
    tw_drop_fn drop; /* of arg; may be NULL */
    double seconds;
    int owners;
    bool timed_out;
} timeout_ctx;

static void put(timeout_ctx *c)
{
    if (--c->owners)
        return;
    if (c->drop)
        c->drop(c->arg);
    TW__DELETE(c);
}

static void on_timer(void *arg)
{
    timeout_ctx *c = arg;
    tw_deferred *d = c->d;
    c->call = NULL;
    c->timed_out = true;
    put(c); /* the entry still owns c: it runs inside the cancel or later */
    tw_deferred_cancel(d);
}

static tw_result default_on_timeout(tw_result r, double seconds, void *arg)
{
    (void)arg;
    tw_failure *f = tw_result_as_failure(r);
    if (!tw_failure_check(f, TW_ECANCELED))
        return r;
    return tw_result_failure(
        tw_failure_wrap(f, TW_ETIMEDOUT, "Deferred timed out after %g seconds", seconds));
}

static tw_result on_result(tw_result r, void *arg)
{
    timeout_ctx *c = arg;
    if (c->call) { /* first: the timeout will not happen */
        tw_clock_cancel(c->clock, c->call);
        c->call = NULL;
        put(c);
    }
    if (c->timed_out)
        r = c->on_timeout(r, c->seconds, c->arg);
    put(c);
    return r;
}

int tw_deferred_add_timeout_full(tw_deferred *d, double seconds, tw_clock *clock,
                                 tw_timeout_fn on_timeout, void *arg, tw_drop_fn drop)
{
    int64_t ns;
    int rc = TW_EINVAL;
    timeout_ctx *c = NULL;
    if (!d || !clock || !clock->ops || tw__delay_ns(seconds, &ns))
        goto fail;
    TW__CHECK_THREAD(d, "tw_deferred_add_timeout");
    rc = TW_ENOMEM;
    c = TW__NEW(timeout_ctx);
    if (!c || tw__deferred_reserve(d, 1))
        goto fail;
    c->d = d;
    c->clock = clock;
    c->on_timeout = on_timeout ? on_timeout : default_on_timeout;
    c->arg = arg;
    c->drop = drop;
    c->seconds = seconds;
    c->owners = 2;
    rc = tw_clock_call_later(clock, seconds, on_timer, c, &c->call);
    if (rc)
        goto fail;
    tw__deferred_push(d, (tw__fnptr)on_result, c, E_BOTH);
    tw__deferred_run(d);
    return 0;
fail:
    if (c)
        TW__DELETE(c);
    if (drop)
        drop(arg);
    return rc;
}

int tw_deferred_add_timeout(tw_deferred *d, double seconds, tw_clock *clock,
                            tw_timeout_fn on_timeout, void *arg)
{
    return tw_deferred_add_timeout_full(d, seconds, clock, on_timeout, arg, NULL);
}
