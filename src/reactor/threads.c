/* The bridge between the loop and threads: the reactor's pool,
 * call_in_thread, defer_to_thread and blocking_call_from_thread.
 *
 * defer_to_thread. One record per call holds the pool's task node and the
 * node that carries the result back (tw_reactor_post), so a round trip
 * allocates the record and the Deferred, nothing else. The record has two
 * owners, counted atomically: the loop (until the result is delivered, or
 * shutdown fails the Deferred) and the task (until it has posted the result,
 * or failed to because the reactor has shut down). `state` settles the race
 * between a cancel on the loop and the task starting on a pool thread: one
 * CAS from QUEUED decides whether the function runs.
 *
 * blocking_call_from_thread. The waiting thread's frame holds the request and
 * an Event; the loop writes the result into it and sets the Event, and never
 * touches the frame after. If the function returns a Deferred, a loop-side
 * record waits for it; shutdown detaches those records (releasing their
 * threads with TW_ESHUTDOWN) and a Deferred that fires later finds its record
 * detached and drops the result. */
#include <poll.h>

#include "base/alloc.h"
#include "debug/debug.h"
#include "deferred/deferred.h"
#include "reactor/reactor.h"

struct tw_cancel {
    tw_event ev;
};

enum { Q_QUEUED = 0, Q_RUNNING = 1, Q_SKIPPED = 2 };

typedef struct tw__dthread tw__dthread;
typedef struct tw__bcall tw__bcall;

struct tw__dthread {
    tw_task task;
    tw_call back;
    tw_reactor *r;
    tw_deferred *d; /* loop side: the record's reference */
    tw_thread_fn fn;
    void *arg;
    tw_drop_fn drop; /* of arg, on the pool thread once fn returned or was skipped */
    tw_cancel cancel;
    tw_result result; /* written by the task before it posts `back` */
    uint32_t refs;    /* atomic: the loop's and the task's */
    uint32_t state;   /* atomic: Q_* */
    tw__dlink link;   /* in r->dthreads, loop side */
};

static void dthread_put(tw__dthread *t)
{
    /* acq_rel: the last owner sees the other's writes before freeing. */
    if (__atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) == 0)
        TW__DELETE(t);
}

/* ---- the pool ------------------------------------------------------------------ */

static int pool(tw_reactor *r, tw_pool **out)
{
    if (r->pool_closed)
        return TW_ESHUTDOWN;
    if (!r->pool) {
        tw_pool_config cfg = TW_POOL_CONFIG_INIT(0, r->pool_max);
        int rc = tw_pool_create_with(&cfg, &r->pool);
        if (rc)
            return rc;
    }
    *out = r->pool;
    return 0;
}

int tw_reactor_get_thread_pool(tw_reactor *r, tw_pool **out)
{
    if (!r || !out)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_get_thread_pool");
    return pool(r, out);
}

int tw_reactor_suggest_thread_pool_size(tw_reactor *r, size_t n)
{
    if (!r || n < 1)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_suggest_thread_pool_size");
    if (r->pool_closed)
        return TW_ESHUTDOWN;
    r->pool_max = n;
    return r->pool ? tw_pool_resize(r->pool, 0, n) : 0;
}

int tw_reactor_call_in_thread(tw_reactor *r, tw_task_fn fn, void *arg)
{
    if (!r || !fn)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_call_in_thread");
    tw_pool *p;
    int rc = pool(r, &p);
    return rc ? rc : tw_pool_do(p, fn, arg);
}

typedef struct multi {
    size_t n;
    tw_thread_call calls[];
} multi;

static int run_multi(void *arg)
{
    multi *m = arg;
    int first = 0;
    for (size_t i = 0; i < m->n; i++) {
        int rc = m->calls[i].fn(m->calls[i].arg);
        if (rc && !first)
            first = rc; /* the task's error: the first failing call's code */
        else if (rc)
            tw_diag_report(TW_DIAG_WARNING, rc, "tw_reactor_call_multiple_in_thread",
                           "a later call of the same batch failed too");
    }
    tw__free(m, sizeof *m + m->n * sizeof m->calls[0]);
    return first;
}

int tw_reactor_call_multiple_in_thread(tw_reactor *r, const tw_thread_call *calls, size_t n)
{
    if (!r || (n && !calls) || n > (SIZE_MAX - sizeof(multi)) / sizeof(tw_thread_call))
        return TW_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!calls[i].fn)
            return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_call_multiple_in_thread");
    tw_pool *p;
    int rc = pool(r, &p);
    if (rc)
        return rc;
    multi *m = tw__alloc(sizeof *m + n * sizeof m->calls[0]);
    if (!m)
        return TW_ENOMEM;
    m->n = n;
    for (size_t i = 0; i < n; i++)
        m->calls[i] = calls[i];
    rc = tw_pool_do(p, run_multi, m);
    if (rc)
        tw__free(m, sizeof *m + n * sizeof m->calls[0]);
    return rc;
}

/* ---- cancel tokens --------------------------------------------------------------- */

bool tw_cancel_requested(const tw_cancel *c)
{
    return c && tw_event_is_set((tw_event *)&c->ev);
}

int tw_cancel_wait(tw_cancel *c, double timeout)
{
    if (!c)
        return TW_EINVAL;
    return tw_event_wait_timeout(&c->ev, timeout);
}

/* ---- defer_to_thread ------------------------------------------------------------- */

/* The loop thread: the result has come back. */
/* Loop side, once per record, off r->dthreads: its Deferred gets res,
 * unless it was cancelled (fired already), when tw__deferred_fire drops
 * this late result. Delivery and shutdown's close each settle only records
 * still on the list, so t->d is always there. */
static void settle(tw__dthread *t, tw_result res)
{
    tw_deferred *d = t->d;
#ifdef TW_DEBUG
    tw__dbg_work_done(d); /* before its callbacks: a DeferredLock held across it ends */
#endif
    d->canceller = NULL;
    tw__deferred_fire(d, res);
    tw_deferred_unref(d);
}

static void dthread_deliver(void *arg)
{
    tw__dthread *t = arg;
    tw_reactor *r = t->r;
    tw__dlist_unlink(&r->dthreads, &t->link);
    tw_result res = t->result;
    if (tw_result_is_deferred(res)) {
        tw_result_drop(res); /* on the loop thread, where it belongs */
        res = tw_result_fail(TW_EINVAL, "a thread function returned a Deferred; it must "
                                        "return a value or a failure");
    }
    settle(t, res);
    dthread_put(t); /* the task's reference, which came with the post */
    dthread_put(t); /* the loop's */
}

/* A pool thread. */
static int dthread_task(void *arg)
{
    tw__dthread *t = arg;
    uint32_t expect = Q_QUEUED;
    /* acq_rel: pairs with the canceller's CAS; whoever wins decides. */
    if (__atomic_compare_exchange_n(&t->state, &expect, Q_RUNNING, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
#ifdef TW_DEBUG
        tw__dbg_work_run(t->d, (const void *)(uintptr_t)t->fn); /* runs d's work */
#endif
        t->result = t->fn(t->arg, &t->cancel);
#ifdef TW_DEBUG
        tw__dbg_work_run(NULL, NULL);
#endif
    } else
        t->result = tw_result_none(); /* cancelled before it started: never runs */
    if (t->drop)
        t->drop(t->arg);
    if (tw_reactor_post(t->r, &t->back) != 0) {
        /* The reactor has shut down and failed the Deferred already. */
        if (tw_result_is_deferred(t->result))
            tw_diag_report(TW_DIAG_MISUSE, TW_EINVAL, "tw_defer_to_thread",
                           "a thread function returned a Deferred (leaked: it belongs to the "
                           "loop thread, which has shut down)");
        else
            tw_result_drop(t->result);
        dthread_put(t);
    }
    return 0;
}

/* Canceller (loop thread): the Deferred then fails with TW_ECANCELED. */
static void dthread_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    tw__dthread *t = arg;
    tw_event_set(&t->cancel.ev);
    uint32_t expect = Q_QUEUED;
    __atomic_compare_exchange_n(&t->state, &expect, Q_SKIPPED, false, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
}

/* On an error, arg stays the caller's. */
static int defer(tw_reactor *r, tw_pool *p, tw_thread_fn fn, void *arg, tw_drop_fn drop,
                 tw_deferred **out)
{
    if (!r || !p || !fn || !out)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_defer_to_thread_pool");
    if (r->state == R_DONE)
        return TW_ESHUTDOWN;
    tw__dthread *t = tw__alloc(sizeof *t);
    if (!t)
        return TW_ENOMEM;
    tw_deferred *d;
    int rc = tw__deferred_new(&d, dthread_cancel, t, NULL, 0);
    if (rc) {
        TW__DELETE(t);
        return rc;
    }
    tw_task_init(&t->task, dthread_task, t);
    t->back = (tw_call)TW_CALL_INIT(dthread_deliver, t);
    t->r = r;
    t->d = d; /* the record's reference; the caller gets another */
    t->fn = fn;
    t->arg = arg;
    t->drop = drop;
    t->cancel.ev = (tw_event)TW_EVENT_INIT;
    t->result = tw_result_none();
    t->refs = 2;
    t->state = Q_QUEUED;
    rc = tw_pool_submit(p, &t->task);
    if (rc) {
        d->canceller = NULL;
        tw_deferred_unref(d);
        TW__DELETE(t);
        return rc;
    }
    tw__dlist_push(&r->dthreads, &t->link);
#ifdef TW_DEBUG
    tw__dbg_work_submitted(d, p, (const void *)(uintptr_t)fn, r);
#endif
    *out = tw_deferred_ref(d);
    return 0;
}

int tw_defer_to_thread_pool(tw_reactor *r, tw_pool *p, tw_thread_fn fn, void *arg,
                            tw_deferred **out)
{
    return defer(r, p, fn, arg, NULL, out);
}

int tw_defer_to_thread(tw_reactor *r, tw_thread_fn fn, void *arg, tw_deferred **out)
{
    if (!r || !fn || !out)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_defer_to_thread");
    tw_pool *p;
    int rc = pool(r, &p);
    return rc ? rc : defer(r, p, fn, arg, NULL, out);
}

int tw_defer_to_thread_full(tw_reactor *r, tw_pool *p, tw_thread_fn fn, void *arg,
                            tw_drop_fn drop, tw_deferred **out)
{
    int rc = TW_EINVAL;
    if (r && fn && out) {
        TW__RCHECK(r, "tw_defer_to_thread_full");
        rc = p ? 0 : pool(r, &p);
        if (rc == 0)
            rc = defer(r, p, fn, arg, drop, out);
    }
    if (rc && drop)
        drop(arg);
    return rc;
}

/* ---- blocking_call_from_thread ------------------------------------------------------ */

typedef struct bwait {
    tw_call call;
    tw_reactor *r;
    tw_result_fn fn;
    void *arg;
    tw_event done;
    int rc;
    tw_result result;
} bwait;

struct tw__bcall {
    bwait *w; /* NULL once released by shutdown */
    tw__dlink link; /* in r->bcalls */
};

/* Hands the outcome to the waiting thread; the frame is not touched after. */
static void release(bwait *w, int rc, tw_result res)
{
    w->rc = rc;
    w->result = res;
    tw_event_set(&w->done);
}

static tw_result bcall_done(tw_result res, void *arg)
{
    tw__bcall *b = arg;
    if (b->w) {
        bwait *w = b->w;
        tw__dlist_unlink(&w->r->bcalls, &b->link);
        release(w, 0, res);
    } else {
        tw_result_drop(res); /* its thread was released at shutdown */
    }
    TW__DELETE(b);
    return tw_result_none();
}

static void bcall_run(void *arg)
{
    bwait *w = arg;
    tw_reactor *r = w->r;
    if (__atomic_load_n(&r->bcalls_refused, __ATOMIC_RELAXED)) { /* our own store */
        release(w, TW_ESHUTDOWN, tw_result_none());
        return;
    }
#ifdef TW_DEBUG
    tw__dbg_bcall_serve(w, true); /* what the function takes, it takes for the waiter */
#endif
    tw_result res = w->fn(w->arg);
#ifdef TW_DEBUG
    tw__dbg_bcall_serve(w, false);
    if (tw_result_is_deferred(res) && res.ptr && !tw_deferred_called(res.ptr))
        tw__dbg_bcall_waits(w, res.ptr);
#endif
    if (!tw_result_is_deferred(res)) {
        release(w, 0, res);
        return;
    }
    tw_deferred *d = res.ptr;
    if (!d) {
        release(w, 0, tw_result_fail(TW_EINVAL, "the function returned a NULL Deferred"));
        return;
    }
    tw__bcall *b = TW__NEW(tw__bcall);
    if (!b || tw__deferred_reserve(d, 1)) {
        if (b)
            TW__DELETE(b);
        tw_deferred_unref(d);
        release(w, TW_ENOMEM, tw_result_none());
        return;
    }
    b->w = w;
    tw__dlist_push(&r->bcalls, &b->link);
    tw_deferred_add_both(d, bcall_done, b); /* room reserved: cannot fail */
    tw_deferred_unref(d);
}

int tw_blocking_call_from_thread(tw_reactor *r, tw_result_fn fn, void *arg, tw_result *out)
{
    if (!r || !fn || !out)
        return TW_EINVAL;
    /* relaxed: it can equal our id only if we stored it. */
    uint32_t loop = __atomic_load_n(&r->loop_thread, __ATOMIC_RELAXED);
    if (loop ? loop == tw__self() : r->owner == tw__self())
        return TW_EDEADLK; /* it would wait for itself */
    /* relaxed: a fast refusal only; a call that misses it is refused on
     * the loop (bcall_run), which reads its own store. */
    if (__atomic_load_n(&r->bcalls_refused, __ATOMIC_RELAXED))
        return TW_ESHUTDOWN;
    bwait w;
    w.call = (tw_call)TW_CALL_INIT(bcall_run, &w);
    w.r = r;
    w.fn = fn;
    w.arg = arg;
    w.done = (tw_event)TW_EVENT_INIT;
    w.rc = 0;
    w.result = tw_result_none();
#ifdef TW_DEBUG
    int token = tw__dbg_bcall_begin(r, &w); /* waits for r's loop; before the loop runs it */
#endif
    int rc = tw_reactor_post(r, &w.call);
    if (rc) {
#ifdef TW_DEBUG
        tw__dbg_wait_end(token);
#endif
        return rc;
    }
    tw_event_wait(&w.done);
#ifdef TW_DEBUG
    tw__dbg_wait_end(token);
#endif
    if (w.rc == 0)
        *out = w.result;
    return w.rc;
}

/* ---- shutdown ------------------------------------------------------------------------ */

void tw__threads_refuse_blocking(tw_reactor *r)
{
    __atomic_store_n(&r->bcalls_refused, 1, __ATOMIC_RELAXED); /* see tw_blocking_call_from_thread */
    while (r->bcalls) {
        tw__bcall *b = TW__DLIST_ITEM(r->bcalls, tw__bcall, link);
        bwait *w = b->w;
        tw__dlist_unlink(&r->bcalls, &b->link);
        b->w = NULL; /* freed by bcall_done when its Deferred fires */
        release(w, TW_ESHUTDOWN, tw_result_none());
    }
}

/* Stops the pool while still running the calls its threads post — results of
 * defer_to_thread, blocking calls (now refused at once) — so that no pool
 * thread waits on the loop while the loop waits for the pool. */
void tw__threads_stop_pool(tw_reactor *r)
{
    r->pool_closed = true;
    if (!r->pool)
        return;
    tw_deadline deadline;
    tw_deadline_from_timeout(r->pool_stop_timeout, &deadline);
    for (;;) {
        if (tw_pool_stop(r->pool, 0, NULL) == 0)
            break;
        if (tw_now_ns() >= deadline) {
            /* A stop with a timeout makes the pool name its stuck threads. */
            if (tw_pool_stop(r->pool, 0.001, NULL) == 0)
                break;
            tw_diag_report(TW_DIAG_WARNING, TW_ETIMEDOUT, "tw_reactor_stop",
                           "the reactor's pool did not stop in time; its stuck threads are "
                           "left running");
            return;
        }
        tw__posted_run(r);
        tw__reactor_rearm(r);
        if (!tw__posted_pending(r)) {
            struct pollfd pfd = {r->wake_rfd, POLLIN, 0};
            if (poll(&pfd, 1, 1) > 0)
                tw__waker_drain(r->wake_rfd);
        }
    }
    tw_pool_destroy(r->pool);
    r->pool = NULL;
}

void tw__threads_close(tw_reactor *r)
{
    while (r->dthreads) {
        tw__dthread *t = TW__DLIST_ITEM(r->dthreads, tw__dthread, link);
        tw__dlist_unlink(&r->dthreads, &t->link);
        tw_event_set(&t->cancel.ev); /* a task still running may stop now */
        settle(t, tw_deferred_called(t->d)
                      ? tw_result_none() /* cancelled already: no failure to make */
                      : tw_result_fail(TW_ESHUTDOWN, "the reactor shut down before the "
                                                     "thread's result could be delivered"));
        dthread_put(t); /* the loop's; the task drops its own when its post fails */
    }
}

bool tw__threads_destroy(tw_reactor *r)
{
    if (!r->pool)
        return false;
    if (tw_pool_stop(r->pool, 0, NULL) == 0) { /* they got unstuck meanwhile */
        tw_pool_destroy(r->pool);
        r->pool = NULL;
        return false;
    }
    /* Shutdown gave up on stuck threads; so does destroy (freeing the pool
     * would wait for them forever). Their tasks may still post their
     * results: the reactor's post state stays, closed, and is not freed. */
    tw_diag_report(TW_DIAG_WARNING, TW_EBUSY, "tw_reactor_destroy",
                   "the reactor's pool still has stuck threads; the pool and the reactor's "
                   "call queue are not freed");
    r->pool = NULL;
    return true;
}
