/* Coroutines over Deferreds: tw_async, tw_await, cancel, delivery.
 *
 * Waiting. tw_await(d) on a d whose chain has run to its end takes d's
 * result and returns it: no callback, no switch, no recursion, however many
 * ready results follow one another (Twisted's `waiting` flag, without the
 * need for one). Otherwise it adds one entry to d, on_result, and drops the
 * caller's reference. If that makes d run its chain (d had fired with
 * entries still to run) or abandons d (the caller's reference was the last),
 * on_result runs before we get back: the coroutine is still AWAITING, so
 * on_result only leaves the result in the block. Otherwise the coroutine
 * marks itself SUSPENDED and switches out; when d fires, on_result runs on
 * the firing stack, hands the result over and resumes the coroutine there.
 * Nothing else holds d meanwhile, so a d whose producer lets go is
 * abandoned and the coroutine wakes with TW_EABANDONED.
 *
 * The outer Deferred. tw_async's Deferred (`out`) gets the coroutine's
 * result when fn returns. A Deferred that fn returns is not a result a
 * Deferred can fire with: out is fired to wait on it instead
 * (tw__deferred_fire_chained), as a chain waits on a Deferred one of its
 * callbacks returned. The same keeps a cancel from failing out, as Twisted's
 * inlineCallbacks does with an errback it puts first: the canceller
 * (cancel_out) makes a fresh Deferred to take the coroutine's result, fires
 * out to wait on it (out's own callbacks do not run yet), and cancels what
 * the coroutine awaits. Cancelling out again reaches the fresh one, whose
 * canceller does the same.
 *
 * Delivery, in bounded stack. When fn returns, the resumer (on_result or
 * tw_async) fires out, whose callbacks may resume another coroutine that
 * finishes in turn, and so on: a chain of coroutines each awaiting the one
 * before would nest one level per coroutine. So results are delivered by one
 * loop per thread: a coroutine that finishes while a delivery is under way
 * queues itself, and the loop below the delivery fires its Deferred next.
 * A coroutine's stack goes back to the cache before its Deferred fires.
 *
 * Return prediction. A return right after a switch goes where the
 * return-stack predictor cannot know (it holds the other stack's callers),
 * so each function that a switch lands in and that then returns costs one
 * misprediction. Each side has exactly one such function: tw_await's
 * waiting path (wait_for, reached by a tail call) on the coroutine's side,
 * on_result or tw_async on the resumer's. Deeper calls would add one each. */
#include <stdio.h>

#include "async/coro.h"
#include "deferred/deferred.h"

static _Thread_local struct {
    tw__co *head, *tail; /* finished coroutines whose results wait to be delivered */
    bool delivering;     /* a delivery loop runs further up this thread's stack(s) */
} q __attribute__((tls_model("initial-exec")));

/* tw_deferred_unref, with the common case (another reference is left)
 * inline. */
static inline void unref(tw_deferred *d)
{
#ifndef TW_DEBUG
    if (d->refs > 1) {
        d->refs--;
        return;
    }
#endif
    tw_deferred_unref(d);
}

/* ---- the outer Deferred ---------------------------------------------------- */

static void cancel_out(tw_deferred *d, void *arg);

/* A Deferred for co's result, cancel_out as canceller. Created at tw_async's
 * call site, which an unhandled failure's report names. */
static int new_out(tw__co *co, tw_deferred **out)
{
    return tw__deferred_new(out, cancel_out, co, co->file, co->line);
}

/* Fires out with the coroutine's result r (consumed): a value or failure,
 * or a Deferred for out to wait on. */
static void fire(tw_deferred *out, tw_result r)
{
    bool failed = tw_result_is_failure(r);
    int code = failed ? tw_failure_code(tw_result_as_failure(r)) : 0;
    int rc = tw_result_is_deferred(r) ? tw__deferred_fire_chained(out, r)
                                      : tw__deferred_fire(out, r);
    /* TW_EALREADY only if a cancel could not keep out (no memory for its
     * successor) and failed it; the late result is dropped. */
    if (rc == TW_EALREADY && failed)
        tw_diag_report(TW_DIAG_UNHANDLED, code, "tw_async",
                       "a coroutine's failure arrived after its Deferred had been cancelled");
}

/* ---- delivery ------------------------------------------------------------- */

/* The await trace: a failure that came out of an await and is now the
 * coroutine's result is wrapped with where it was awaited. */
static tw_result traced(tw__co *co, tw_result r)
{
    tw_failure *f = tw_result_as_failure(r);
    if (f && f == co->last_fail && co->fail_file)
        r = tw_result_failure(tw_failure_wrap(f, tw_failure_code(f),
                                              "awaited at %s:%d in the coroutine started at %s:%d",
                                              co->fail_file, co->fail_line,
                                              co->file ? co->file : "?", co->line));
    if (co->last_fail) {
        tw_failure_unref(co->last_fail);
        co->last_fail = NULL;
    }
    return r;
}

static void deliver(tw__co *co)
{
    tw_deferred *out = co->out;
    tw_result r = co->result;
    tw__co_free(co); /* the stack first: out's callbacks may start coroutines */
    if (out) {       /* NULL: a cancel delivered it already */
        fire(out, r);
        unref(out);
    }
}

/* co's body has returned; we are on the stack that resumed it. */
static __attribute__((noinline)) void finish(tw__co *co)
{
    co->state = TW__CO_DONE;
    if (__builtin_expect(co->last_fail != NULL, 0))
        co->result = traced(co, co->result);
    co->next_done = NULL;
    if (q.delivering) {
        if (q.tail)
            q.tail->next_done = co;
        else
            q.head = co;
        q.tail = co;
        return;
    }
    q.delivering = true;
    deliver(co);
    while ((co = q.head)) {
        q.head = co->next_done;
        if (!q.head)
            q.tail = NULL;
        deliver(co);
    }
    q.delivering = false;
}

/* Runs co until it waits or ends; delivers its result if it ended. */
static inline __attribute__((always_inline)) void run(tw__co *co)
{
    co->state = TW__CO_RUNNING;
    tw__co_resume(co);
    if (co->finished)
        finish(co);
}

/* ---- starting ------------------------------------------------------------- */

int tw_async_at(tw_result_fn fn, void *arg, tw_deferred **out, const char *file, int line)
{
    tw__co *co;
    tw_deferred *d;

    if (!fn || !out)
        return TW_EINVAL;
    co = tw__co_new(fn, arg, file, line);
    if (!co)
        return TW_ENOMEM;
    if (new_out(co, &d) != 0) {
        tw__co_free(co);
        return TW_ENOMEM;
    }
    d->refs = 2; /* the caller's and the coroutine's */
    /* Only what is read before it is written: the await site, the failure's
     * site and dest are set by the await that makes them meaningful,
     * next_done by finish(). */
    co->out = d;
    co->waiting_on = NULL;
    co->cancel_pending = false;
    co->last_fail = NULL;
    *out = d;
    co->state = TW__CO_RUNNING;
    tw__co_start(co);
    if (co->finished)
        finish(co);
    return 0;
}

bool tw_async_inside(void)
{
    return tw__co_current != NULL;
}

void tw_async_stats_get(tw_async_stats *out)
{
    if (!out)
        return;
    out->running = tw__co_live;
    out->stacks_cached = tw__stack_cached();
    out->stacks_mapped = tw__stack_mapped();
}

/* ---- awaiting ------------------------------------------------------------- */

/* The result an await returns: a failure is kept, with the await's site,
 * for the trace (traced). */
static inline tw_result got(tw__co *co, tw_result r)
{
    if (__builtin_expect(tw_result_is_failure(r), 0)) {
        if (co->last_fail)
            tw_failure_unref(co->last_fail);
        co->last_fail = tw_failure_ref(tw_result_as_failure(r));
        co->fail_file = co->await_file;
        co->fail_line = co->await_line;
    }
    return r;
}

/* On the Deferred awaited: hands its result to the coroutine, which owns it
 * now (d goes on with none), straight into the awaiting frame, and resumes
 * it unless it is still inside tw_await. Runs on the stack that fired d. */
static tw_result on_result(tw_result r, void *arg)
{
    tw__co *co = arg;
#ifdef TW_DEBUG
    if (co->thread != tw__self()) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "a Deferred awaited at %s:%d by a coroutine of thread %u (started at %s:%d) "
                 "fired on thread %u; the coroutine resumes on the firing thread (hand the "
                 "result over with call_from_thread)",
                 co->await_file ? co->await_file : "?", co->await_line, (unsigned)co->thread,
                 co->file ? co->file : "?", co->line, (unsigned)tw__self());
        tw_diag_report(TW_DIAG_MISUSE, TW_EPERM, "tw_await", msg);
    }
#endif
    co->waiting_on = NULL;
    *co->dest = got(co, r);
    if (co->state == TW__CO_AWAITING)
        co->state = TW__CO_RUNNING; /* tw_await takes it: no switch */
    else
        run(co);
    return tw_result_none();
}

/* An await up to the point where it would wait: 1 with *cop set when d has
 * no result ready, else 0 with the await's result in *r (d's, or a failure
 * of the await's own). Takes the caller's reference to d either way. */
static inline int start_await(tw_deferred *d, const char *file, int line, tw__co **cop,
                              tw_result *r)
{
    tw__co *co = tw__co_current;

    if (!co) {
        tw_diag_report(TW_DIAG_MISUSE, TW_EPERM, "tw_await",
                       "tw_await outside a coroutine: nothing to suspend (start one with "
                       "tw_async)");
        tw_deferred_unref(d);
        *r = tw_result_fail(TW_EPERM, "tw_await outside a coroutine");
        return 0;
    }
    if (!d) {
        *r = tw_result_fail(TW_EINVAL, "tw_await of NULL");
        return 0;
    }
    TW__CHECK_THREAD(d, "tw_await");
    if (d == co->out) {
        tw_deferred_unref(d);
        *r = tw_result_fail(TW_EDEADLK, "a coroutine awaited its own Deferred, which would "
                                        "wait forever");
        return 0;
    }
    co->await_file = file;
    co->await_line = line;
    if (tw__deferred_finished(d)) { /* ready: taken as it is, d goes on with none */
        /* Field by field: a Deferred fired just before (most often) has its
         * result written by two 8-byte stores, which a 16-byte load of the
         * pair (the compiler's choice for a struct copy) cannot be forwarded
         * from; the stall was most of an await of a ready Deferred. The
         * barrier keeps the two loads apart. */
        r->ptr = d->result.ptr;
        __asm__ volatile("" ::: "memory");
        r->drop = d->result.drop;
        d->result = tw_result_none();
        unref(d);
        *r = got(co, *r);
        return 0;
    }
    *cop = co;
    return 1;
}

/* Puts one entry on d (which has no result ready) and drops the caller's
 * reference: true when co must now switch out until d fires, false when the
 * entry ran at once (d ran its chain, or was abandoned) or could not be
 * added. Either way the await's result arrives in *r: at once, or when d
 * fires (on_result writes it there while the coroutine is switched out). */
static bool park(tw__co *co, tw_deferred *d, tw_result *r)
{
    co->state = TW__CO_AWAITING;
    co->dest = r;
    if (d->head + d->count >= d->cap && tw__deferred_reserve(d, 1) != 0) {
        co->state = TW__CO_RUNNING;
        tw_deferred_unref(d);
        *r = tw_result_fail(TW_ENOMEM, "no memory to await a Deferred");
        return false;
    }
    tw__deferred_push(d, (tw__fnptr)on_result, co, E_BOTH);
    if (d->flags & F_CALLED) /* paused, or entries still to run: they run now */
        tw__deferred_run(d);
    /* d lives at least until on_result has run (a Deferred is freed with no
     * entries left), so while we are AWAITING it may be used below. */
    unref(d);
    if (co->state == TW__CO_AWAITING && co->cancel_pending) {
        co->cancel_pending = false;
        tw_deferred_cancel(d);
    }
    if (co->state != TW__CO_AWAITING)
        return false; /* on_result has run: *r is set */
    co->waiting_on = d;
    co->state = TW__CO_SUSPENDED; /* until on_result, which sets RUNNING and resumes */
    return true;
}

/* tw_await of a d that has no result ready, switching here. */
static __attribute__((noinline)) tw_result wait_for(tw__co *co, tw_deferred *d)
{
    tw_result r;
    if (park(co, d, &r))
        tw__co_suspend(co);
    return r;
}

tw_result tw_await_at(tw_deferred *d, const char *file, int line)
{
    tw__co *co;
    tw_result r;
    if (!start_await(d, file, line, &co, &r))
        return r;
    return wait_for(co, d); /* a tail call: wait_for is the frame the switch lands in */
}

/* twine/async.h's inline tw_await. A caller that gets 1 switches from
 * a->from to a->to itself: possible where the switch is the x86-64 one and
 * no sanitizer needs telling (its annotations bracket every switch, here). */
#if defined(TW__SWITCH_X86_64) && !defined(TW__ASAN) && !defined(TW__TSAN)
int tw__await_begin(tw_deferred *d, const char *file, int line, tw__await *a)
{
    tw__co *co;
    if (!start_await(d, file, line, &co, &a->r) || !park(co, d, &a->r))
        return 0;
    a->from = &co->ctx;
    a->to = &co->resumer;
    return 1;
}
#else
int tw__await_begin(tw_deferred *d, const char *file, int line, tw__await *a)
{
    a->r = tw_await_at(d, file, line);
    return 0;
}
#endif

/* ---- cancelling ------------------------------------------------------------ */

/* Canceller of the Deferred that takes co's result (d == co->out). */
static void cancel_out(tw_deferred *d, void *arg)
{
    tw__co *co = arg;
    tw_deferred *next;

    if (co->state == TW__CO_DONE) { /* finished, delivery queued: deliver now */
        tw_result r = co->result;
        co->result = tw_result_none();
        co->out = NULL;
        fire(d, r);
        tw_deferred_unref(d);
        return;
    }
    /* Keep d from failing: it waits on `next`, which takes the result. With
     * no memory for next, d fails with TW_ECANCELED below us (fire() then
     * drops the coroutine's late result). */
    if (new_out(co, &next) == 0) {
        co->out = next;
        tw__deferred_fire_chained(d, tw_result_deferred(tw_deferred_ref(next)));
        tw_deferred_unref(d); /* the coroutine's; next's chain holds d now */
    }
    if (co->state == TW__CO_SUSPENDED)
        tw_deferred_cancel(co->waiting_on); /* may resume co, even to its end */
    else
        co->cancel_pending = true;
}
