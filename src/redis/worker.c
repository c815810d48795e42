/* The pool across machines: a worker keeps `concurrency` gets outstanding
 * on a queue; each entry runs on a pool thread (tw_defer_to_thread), and
 * on the loop thread again its result decides: a value acknowledges the
 * entry, a failure leaves it pending for the queue's claims (and, after
 * max_deliveries, its dead-letter stream). Stop cancels the gets still
 * waiting and fires once the tasks and acknowledgements in flight are done. */
#include <stdio.h>
#include <string.h>

#include "redis/redis.h"

struct tw_redis_worker {
    tw_redis_queue *q;
    tw_reactor *r;
    tw_pool *pool;
    tw_redis_task_fn fn;
    void *arg;
    size_t concurrency;
    tw_deferred **gets; /* outstanding gets, to cancel at stop */
    size_t ngets;
    size_t running; /* tasks running: what concurrency bounds, with the gets */
    size_t busy;    /* tasks running and acknowledgements on their way: what stop waits for */
    bool stopping;
    tw_deferred *stopped;
    tw_delayed_call *retry; /* gets again after the queue failed them */
    tw_redis_worker_stats stats;
};

typedef struct task {
    tw_redis_worker *w;
    tw_redis_entry *e;
} task;

static void take_next(tw_redis_worker *w);

static void maybe_done(tw_redis_worker *w)
{
    if (!w->stopping || w->busy || w->ngets)
        return;
    if (w->retry) {
        tw_delayed_call_cancel(w->retry);
        tw_delayed_call_unref(w->retry);
    }
    tw_deferred *d = w->stopped;
    tw__free(w->gets, w->concurrency * sizeof *w->gets);
    TW__DELETE(w);
    if (d) {
        tw_deferred_callback(d, tw_result_none());
        tw_deferred_unref(d);
    }
}

static tw_result run_task(void *arg, tw_cancel *cancel)
{
    task *t = arg;
    return t->w->fn(t->e, t->w->arg, cancel);
}

static tw_result on_acked(tw_result r, void *arg)
{
    tw_redis_worker *w = arg;
    if (!tw_result_is_failure(r))
        w->stats.acked++;
    tw_result_drop(r); /* not acknowledged: it is claimed again later */
    w->busy--;
    maybe_done(w);
    return tw_result_none();
}

static tw_result on_task_done(tw_result r, void *arg)
{
    task *t = arg;
    tw_redis_worker *w = t->w;
    bool ok = !tw_result_is_failure(r);
    tw_result_drop(r);
    w->running--;
    tw_deferred *d = NULL;
    if (ok) {
        w->stats.done++;
        if (tw_redis_queue_ack(w->q, t->e->id, &d) != 0)
            d = NULL;
    } else {
        w->stats.failed++;
    }
    tw_redis_entry_free(t->e);
    TW__DELETE(t);
    if (d) {
        tw_deferred_add_both(d, on_acked, w);
        tw_deferred_unref(d);
    } else {
        w->busy--;
    }
    take_next(w);
    maybe_done(w);
    return tw_result_none();
}

static void forget_get(tw_redis_worker *w, tw_deferred *d)
{
    for (size_t i = 0; i < w->ngets; i++)
        if (w->gets[i] == d) {
            w->gets[i] = w->gets[--w->ngets];
            tw_deferred_unref(d);
            return;
        }
}

static void retry_fired(void *arg)
{
    tw_redis_worker *w = arg;
    tw_delayed_call_unref(w->retry);
    w->retry = NULL;
    take_next(w);
}

typedef struct get_ctx {
    tw_redis_worker *w;
    tw_deferred *d;
} get_ctx;

static tw_result on_entry(tw_result r, void *arg)
{
    get_ctx *g = arg;
    tw_redis_worker *w = g->w;
    forget_get(w, g->d);
    TW__DELETE(g);
    if (tw_result_is_failure(r)) {
        /* cancelled by stop; or the queue failed it (an error Redis keeps
         * giving, such as a stream key of another type): said, and tried
         * again in a second, so that the worker never stops in silence */
        if (!w->stopping) {
            char msg[512];
            snprintf(msg, sizeof msg, "a worker's get failed, trying again in 1 s: %s",
                     tw_failure_message(tw_result_as_failure(r)));
            tw_diag_report(TW_DIAG_WARNING, tw_failure_code(tw_result_as_failure(r)),
                           "tw_redis_worker", msg);
            if (!w->retry &&
                tw_reactor_call_later(w->r, 1.0, retry_fired, w, &w->retry) != 0)
                w->retry = NULL;
        }
        tw_result_drop(r);
        maybe_done(w);
        return tw_result_none();
    }
    task *t = TW__NEW(task);
    if (!t) {
        tw_result_drop(r); /* left pending: claimed again later */
        maybe_done(w);
        return tw_result_none();
    }
    t->w = w;
    t->e = r.ptr; /* ours now: freed when the task is done */
    tw_deferred *d;
    int rc = w->pool ? tw_defer_to_thread_pool(w->r, w->pool, run_task, t, &d)
                     : tw_defer_to_thread(w->r, run_task, t, &d);
    if (rc) {
        tw_redis_entry_free(t->e);
        TW__DELETE(t);
        maybe_done(w);
        return tw_result_none();
    }
    w->busy++;
    w->running++;
    w->stats.started++;
    tw_deferred_add_both(d, on_task_done, t);
    tw_deferred_unref(d);
    return tw_result_none();
}

/* Keeps `concurrency` entries in hand: gets waiting plus tasks running. */
static void take_next(tw_redis_worker *w)
{
    while (!w->stopping && !w->retry && w->ngets + w->running < w->concurrency) {
        get_ctx *g = TW__NEW(get_ctx);
        if (!g)
            return;
        g->w = w;
        if (tw_redis_queue_get(w->q, &g->d) != 0) {
            TW__DELETE(g);
            return;
        }
        w->gets[w->ngets++] = tw_deferred_ref(g->d);
        tw_deferred *d = g->d;
        tw_deferred_add_both(d, on_entry, g);
        tw_deferred_unref(d);
    }
}

int tw_redis_worker_start(tw_redis_queue *q, tw_pool *pool, size_t concurrency,
                          tw_redis_task_fn fn, void *arg, tw_redis_worker **out)
{
    if (!q || !concurrency || concurrency > 65536 || !fn || !out)
        return TW_EINVAL;
    tw_redis_worker *w = TW__NEW(tw_redis_worker);
    if (!w)
        return TW_ENOMEM;
    w->gets = tw__alloc(concurrency * sizeof *w->gets);
    if (!w->gets) {
        TW__DELETE(w);
        return TW_ENOMEM;
    }
    w->q = q;
    w->r = tw__redis_queue_reactor(q);
    w->pool = pool;
    w->fn = fn;
    w->arg = arg;
    w->concurrency = concurrency;
    take_next(w);
    *out = w;
    return 0;
}

int tw_redis_worker_stop(tw_redis_worker *w, tw_deferred **out)
{
    if (!w || w->stopping)
        return TW_EINVAL;
    if (out) {
        int rc = tw_deferred_create(&w->stopped, NULL, NULL);
        if (rc)
            return rc;
        *out = tw_deferred_ref(w->stopped);
    }
    w->stopping = true;
    w->busy++; /* keeps w while the gets are cancelled */
    while (w->ngets) {
        tw_deferred *d = tw_deferred_ref(w->gets[0]);
        tw_deferred_cancel(d); /* on_entry forgets it */
        tw_deferred_unref(d);
    }
    w->busy--;
    maybe_done(w);
    return 0;
}

void tw_redis_worker_stats_get(const tw_redis_worker *w, tw_redis_worker_stats *out)
{
    if (w && out)
        *out = w->stats;
}
