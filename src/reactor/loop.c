/* The reactor's lifecycle: create, run, one iteration, stop, shutdown and its
 * triggers, destroy.
 *
 * One iteration, in order:
 *   1. a requested stop begins shutdown (before-shutdown triggers run);
 *      when their Deferreds have all fired, shutdown completes (finish());
 *   2. the calls posted from threads before this iteration run, in order;
 *   3. the timers due now run, in (time, scheduling) order;
 *   4. with defer_to_thread work in flight and a wait allowed, the loop
 *      watches for work (a result, a stop) for up to 50 us, never past the
 *      next timer (src/base/spin_wait.h). Work found there, or already
 *      waiting: the iteration ends without re-arming the wake flag, after
 *      polling the fds without waiting if the application watches any;
 *   5. otherwise the wake flag is re-armed and the loop polls: without
 *      waiting if a call is waiting or a stop is requested, else until the
 *      next timer, a posted call's wake-up or an fd event; then it runs the
 *      fd callbacks, readers before writers.
 * finish() is the rest of shutdown: blocking calls released and refused,
 * during-shutdown triggers, the pool stopped, after-shutdown triggers, then
 * every posted call run until none is left and posting closed, then the
 * defer_to_thread Deferreds that can no longer get a result failed. */
#include <math.h>
#include <sched.h>
#include <stdio.h>

#include "base/alloc.h"
#include "base/spin_wait.h"
#include "base/time.h"
#include "debug/debug.h"
#include "reactor/reactor.h"

int64_t tw__reactor_now(const tw_reactor *r)
{
    return r->fake ? r->fake_now : tw_now_ns();
}

int tw_reactor_create_with(const tw_reactor_config *cfg, tw_reactor **out)
{
    tw_reactor_config def = TW_REACTOR_CONFIG_INIT;
    if (!out)
        return TW_EINVAL;
    if (!cfg)
        cfg = &def;
    if (isnan(cfg->pool_stop_timeout))
        return TW_EINVAL;
    tw_reactor *r = TW__NEW(tw_reactor);
    if (!r)
        return TW_ENOMEM;
    r->fake = cfg->fake_clock;
    r->owner = tw__self();
    r->pool_max = cfg->pool_max ? cfg->pool_max : 10;
    r->pool_stop_timeout = cfg->pool_stop_timeout;
    for (int i = 0; i < 3; i++)
        r->trigger_tail[i] = &r->triggers[i];
    r->startup_tail = &r->startup;
    int rc = tw__waker_open(&r->wake_rfd, &r->wake_wfd);
    if (rc) {
        TW__DELETE(r);
        return rc;
    }
    rc = tw__io_init(r, cfg->poller);
    if (rc == 0)
        rc = tw__clock_create(r);
    if (rc == 0)
        rc = tw__post_init(r);
    if (rc) {
        tw__clock_detach(r);
        tw__post_destroy(r);
        tw__io_destroy(r);
        tw__waker_close(r->wake_rfd, r->wake_wfd);
        TW__DELETE(r);
        return rc;
    }
    *out = r;
    return 0;
}

int tw_reactor_create(tw_reactor **out)
{
    return tw_reactor_create_with(NULL, out);
}

bool tw_reactor_running(const tw_reactor *r)
{
    return r && r->state != R_NEW && r->state != R_DONE;
}

double tw_reactor_seconds(const tw_reactor *r)
{
    return r ? (double)tw__reactor_now(r) / 1e9 : 0.0;
}

tw_clock *tw_reactor_clock(tw_reactor *r)
{
    return r ? &r->rclock->clock : NULL;
}

int tw_reactor_advance(tw_reactor *r, double seconds)
{
    int64_t d;
    if (!r || tw__delay_ns(seconds, &d))
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_advance");
    if (!r->fake)
        return TW_ENOTSUP;
    int64_t target = tw__add_sat(r->fake_now, d);
    for (;;) {
        int64_t next = tw__timers_next(r, r->fake_now);
        if (next < 0 || next > target - r->fake_now || r->state == R_DONE)
            break;
        r->fake_now += next;
        tw__timers_run(r, r->fake_now);
    }
    if (target > r->fake_now)
        r->fake_now = target;
    return 0;
}

int tw_reactor_stop(tw_reactor *r)
{
    /* Async-signal-safe: atomics and a write. `stoppers` counts the calls in
     * progress: once the flag is set the loop may finish at once, and
     * destroy waits for this call to be done with the waker. */
    if (!r)
        return TW_EINVAL;
    __atomic_fetch_add(&r->stoppers, 1, __ATOMIC_SEQ_CST);
    int rc = TW_EALREADY;
    if (!__atomic_exchange_n(&r->stop_requested, 1, __ATOMIC_SEQ_CST)) {
        tw__reactor_wake(r);
        rc = 0;
    }
    __atomic_fetch_sub(&r->stoppers, 1, __ATOMIC_SEQ_CST);
    return rc;
}

/* ---- triggers ------------------------------------------------------------------ */

int tw_reactor_add_trigger(tw_reactor *r, enum tw_trigger_phase phase, tw_result_fn fn,
                           void *arg, uint64_t *id)
{
    if (!r || !fn || (unsigned)phase > TW_AFTER_SHUTDOWN)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_add_trigger");
    if ((int)phase < r->phases_run)
        return TW_ESHUTDOWN; /* that phase has run */
    tw__trigger *t = TW__NEW(tw__trigger);
    if (!t)
        return TW_ENOMEM;
    t->id = ++r->trigger_seq;
    t->fn = fn;
    t->arg = arg;
    *r->trigger_tail[phase] = t;
    r->trigger_tail[phase] = &t->next;
    if (id)
        *id = t->id;
    return 0;
}

int tw_reactor_remove_trigger(tw_reactor *r, uint64_t id)
{
    if (!r)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_remove_trigger");
    for (int ph = 0; ph < 3; ph++) {
        for (tw__trigger **p = &r->triggers[ph]; *p; p = &(*p)->next) {
            if ((*p)->id != id)
                continue;
            tw__trigger *t = *p;
            *p = t->next;
            if (r->trigger_tail[ph] == &t->next)
                r->trigger_tail[ph] = p;
            TW__DELETE(t);
            return 0;
        }
    }
    return TW_EINVAL;
}

static void report_failure(tw_failure *f, const char *what)
{
    char text[320], msg[400];
    tw_failure_format(f, text, sizeof text);
    snprintf(msg, sizeof msg, "%s failed: %s", what, text);
    tw_diag_report(TW_DIAG_WARNING, tw_failure_code(f), "tw_reactor_stop", msg);
}

static tw_result before_done(tw_result res, void *arg)
{
    tw_reactor *r = arg;
    if (tw_result_is_failure(res))
        report_failure(tw_result_as_failure(res), "a before-shutdown trigger's Deferred");
    tw_result_drop(res);
    r->before_pending--;
    tw__reactor_wake(r); /* the loop goes on with shutdown at its next iteration */
    return tw_result_none();
}

/* Takes the phase's triggers off the reactor and runs them in order. A
 * trigger added while they run, to the same phase, runs too. */
static void run_triggers(tw_reactor *r, int phase, bool wait)
{
    tw__trigger *t;
    r->phases_run = phase; /* triggers added to this phase while it runs run too */
    while ((t = r->triggers[phase])) {
        r->triggers[phase] = t->next;
        if (!t->next)
            r->trigger_tail[phase] = &r->triggers[phase];
        tw_result res = t->fn(t->arg);
        TW__DELETE(t);
        if (tw_result_is_deferred(res) && !res.ptr) {
            tw_diag_report(TW_DIAG_MISUSE, TW_EINVAL, "tw_reactor_stop",
                           "a shutdown trigger returned a NULL Deferred");
        } else if (tw_result_is_deferred(res) && wait) {
            tw_deferred *d = res.ptr;
            r->before_pending++;
            if (tw_deferred_add_both(d, before_done, r) != 0) {
                r->before_pending--;
                tw_diag_report(TW_DIAG_WARNING, TW_ENOMEM, "tw_reactor_stop",
                               "no memory to wait for a before-shutdown trigger's Deferred");
            }
            tw_deferred_unref(d);
        } else if (tw_result_is_failure(res)) {
            report_failure(tw_result_as_failure(res), "a shutdown trigger");
            tw_result_drop(res);
        } else {
            tw_result_drop(res);
        }
    }
    r->phases_run = phase + 1;
}

static void free_triggers(tw_reactor *r)
{
    for (int ph = 0; ph < 3; ph++) {
        while (r->triggers[ph]) {
            tw__trigger *t = r->triggers[ph];
            r->triggers[ph] = t->next;
            TW__DELETE(t);
        }
        r->trigger_tail[ph] = &r->triggers[ph];
    }
}

/* ---- lifecycle ----------------------------------------------------------------- */

static void begin(tw_reactor *r)
{
    /* relaxed: other threads only compare it with their own id, which it
     * can equal only for the thread that stored it. */
    __atomic_store_n(&r->loop_thread, tw__self(), __ATOMIC_RELAXED);
    r->state = R_RUNNING;
}

static void start(tw_reactor *r)
{
    begin(r);
    tw__startup *s;
    while ((s = r->startup)) {
        r->startup = s->next;
        if (!s->next)
            r->startup_tail = &r->startup;
        tw_call_fn fn = s->fn;
        void *arg = s->arg;
        tw_drop_fn drop = s->drop;
        TW__DELETE(s);
        fn(arg);
        if (drop)
            drop(arg);
    }
}

static void finish(tw_reactor *r)
{
    tw__threads_refuse_blocking(r);
    run_triggers(r, TW_DURING_SHUTDOWN, false);
    tw__threads_stop_pool(r);
    run_triggers(r, TW_AFTER_SHUTDOWN, false);
    r->state = R_DONE;
    tw__posted_close(r);
    tw__threads_close(r);
    tw__timers_destroy(r);
}

/* A stop to begin, or a shutdown whose before triggers are all done. */
static bool loop_phase_ready(const tw_reactor *r)
{
    return (r->state == R_RUNNING && __atomic_load_n(&r->stop_requested, __ATOMIC_SEQ_CST)) ||
           (r->state == R_BEFORE && r->before_pending == 0);
}

/* Something for the next iteration to do without waiting: a posted call
 * (claimed, even if not yet published), or the phase above. */
static bool loop_has_work(const void *arg)
{
    const tw_reactor *r = arg;
    return tw__posted_pending(r) || loop_phase_ready(r);
}

/* Work the next iteration can run at once, read without touching the lines
 * posters write: a published call (not one still being written), a call on
 * the stack, or the phase above. */
static bool loop_has_ready_work(const tw_reactor *r)
{
    return tw__posted_ready(r) || loop_phase_ready(r);
}

/* How long the loop may wait, by watching or in the poller: not past
 * wait_ns (< 0: no limit) nor the next timer, which on a fake clock is never
 * reached by waiting unless it is due now (a timer scheduled by a timer for
 * "now": due, time does not move). */
static int64_t wait_cap(const tw_reactor *r, int64_t wait_ns)
{
    int64_t next = tw__timers_next(r, tw__reactor_now(r));
    if (r->fake)
        next = next == 0 ? 0 : -1;
    if (next >= 0 && (wait_ns < 0 || next < wait_ns))
        return next;
    return wait_ns;
}

/* One iteration (see the top of the file); wait_ns < 0 waits as long as needed. */
static void iterate(tw_reactor *r, int64_t wait_ns)
{
#ifdef TW_DEBUG
    tw__dbg_loop_idle(r); /* a callback of the last iteration left a Lock held? */
#endif
    if (r->state == R_RUNNING && __atomic_load_n(&r->stop_requested, __ATOMIC_SEQ_CST)) {
        r->state = R_BEFORE;
        run_triggers(r, TW_BEFORE_SHUTDOWN, true);
    }
    if (r->state == R_BEFORE && r->before_pending == 0) {
        finish(r);
        return;
    }
    if (!tw__posted_run(r) && tw__posted_pending(r))
        sched_yield(); /* a poster between claiming a slot and filling it: let it finish */
    if (r->state == R_DONE)
        return;
    int64_t now = tw__reactor_now(r);
    tw__timers_run(r, now);
    if (r->state == R_DONE)
        return;

    /* About to wait with defer_to_thread work in flight: its result is often
     * microseconds away, and a sleeping loop makes the pool thread pay for a
     * wake-up. Watch for it first, within the spin-wait budget and never past
     * the next timer (src/base/spin_wait.h). */
    bool seen = false;
    if (r->dthreads && wait_ns != 0) {
        seen = loop_has_work(r); /* the result may be back already */
        if (!seen) {
            /* The watch counts against the caller's wait, if it set one. */
            int64_t end = wait_ns > 0 ? tw__add_sat(tw_now_ns(), wait_ns) : 0;
            seen = tw__spin_wait(&r->spin, loop_has_work, r, wait_cap(r, wait_ns));
            if (wait_ns > 0) {
                int64_t left = end - tw_now_ns();
                wait_ns = left > 0 ? left : 0;
            }
        }
    }
    /* Work that is waiting and can run at once (a thread work's result, a
     * published call, a stop) runs without a re-arm, so that the posters'
     * next calls find the flag still set and skip the waker, and without a
     * trip through the poller unless the application watches fds. The
     * check reads only the next ring cell, not the tail that posters write
     * on every claim: a stream of calls from another CPU then runs without
     * the loop pulling the posters' lines over on each iteration. */
    if (seen || loop_has_ready_work(r)) {
        if (r->nwatched)
            tw__io_poll(r, 0);
        return;
    }
    tw__reactor_rearm(r);
    int64_t t = loop_has_work(r) ? 0 : wait_cap(r, wait_ns);
    /* Round up, so that a timer is never woken for before it is due. */
    int ms = t < 0 ? -1 : t > (int64_t)INT32_MAX * 1000000 ? INT32_MAX
                                                           : (int)((t + 999999) / 1000000);
    tw__io_poll(r, ms);
}

/* The calling thread takes the loop over, for run or one iteration: the
 * first time it starts the reactor, later it becomes the loop thread. */
static void enter(tw_reactor *r)
{
    r->in_run = true;
#ifdef TW_DEBUG
    tw__dbg_loop_enter(r); /* this thread runs r's loop: a node of the wait-for graph */
#endif
    if (r->state == R_NEW)
        start(r);
    else
        __atomic_store_n(&r->loop_thread, tw__self(), __ATOMIC_RELAXED); /* as in begin() */
}

int tw_reactor_run(tw_reactor *r)
{
    if (!r)
        return TW_EINVAL;
    /* Any thread may run the loop; from then on it is the loop thread. */
    if (r->in_run || r->state == R_DONE)
        return TW_EALREADY;
    enter(r);
    while (r->state != R_DONE)
        iterate(r, -1);
#ifdef TW_DEBUG
    tw__dbg_loop_leave(r);
#endif
    r->in_run = false;
    tw__signals_release(r);
    return 0;
}

int tw_reactor_iterate(tw_reactor *r, double timeout)
{
    if (!r || isnan(timeout))
        return TW_EINVAL;
    /* Any thread may iterate; it becomes the loop thread (as with run). */
    if (r->in_run)
        return TW_EBUSY;
    if (r->state == R_DONE)
        return TW_ESHUTDOWN;
    /* in_run also while iterating: a callback may not iterate or destroy
     * the reactor under its own iteration (TW_EBUSY), nor run it
     * (TW_EALREADY). */
    enter(r);
    int64_t ns = -1; /* a negative timeout waits as long as needed */
    if (timeout >= 0 && tw__delay_ns(timeout, &ns))
        ns = INT64_MAX; /* +inf (NaN was refused above) */
    iterate(r, ns);
#ifdef TW_DEBUG
    tw__dbg_loop_leave(r);
#endif
    r->in_run = false;
    if (r->state == R_DONE)
        tw__signals_release(r);
    return 0;
}

static int when_running(tw_reactor *r, tw_call_fn fn, void *arg, tw_drop_fn drop)
{
    if (!r || !fn)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_call_when_running");
    if (r->state == R_DONE)
        return TW_ESHUTDOWN;
    if (r->state != R_NEW) {
        fn(arg);
        if (drop)
            drop(arg);
        return 0;
    }
    tw__startup *s = TW__NEW(tw__startup);
    if (!s)
        return TW_ENOMEM;
    s->fn = fn;
    s->arg = arg;
    s->drop = drop;
    *r->startup_tail = s;
    r->startup_tail = &s->next;
    return 0;
}

int tw_reactor_call_when_running(tw_reactor *r, tw_call_fn fn, void *arg)
{
    return when_running(r, fn, arg, NULL);
}

int tw_reactor_call_when_running_full(tw_reactor *r, tw_call_fn fn, void *arg, tw_drop_fn drop)
{
    int rc = when_running(r, fn, arg, drop);
    if (rc && drop)
        drop(arg);
    return rc;
}

int tw_reactor_destroy(tw_reactor *r)
{
    if (!r)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_destroy");
    if (r->in_run)
        return TW_EBUSY;
    if (r->state != R_DONE) {
        /* Never ran, or iterated only: shut down as run() would. */
        tw_reactor_stop(r);
        if (r->state == R_NEW)
            begin(r); /* calls waiting for the loop to run never run */
        while (r->state != R_DONE)
            iterate(r, -1);
    }
    tw__signals_release(r);
    while (__atomic_load_n(&r->stoppers, __ATOMIC_SEQ_CST))
        sched_yield(); /* a tw_reactor_stop still writing the waker */
    bool abandoned = tw__threads_destroy(r);
    tw__clock_detach(r);
    free_triggers(r);
    while (r->startup) { /* never run: the reactor never ran */
        tw__startup *s = r->startup;
        r->startup = s->next;
        if (s->drop)
            s->drop(s->arg);
        TW__DELETE(s);
    }
    tw__io_destroy(r);
    tw__waker_close(r->wake_rfd, r->wake_wfd);
#ifdef TW_DEBUG
    tw__dbg_reactor_gone(r);
#endif
    if (abandoned)
        return 0; /* stuck pool threads may still post: they find it closed */
    tw__post_destroy(r);
    TW__DELETE(r);
    return 0;
}
