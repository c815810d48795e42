/* Lock worker: runs each task in the submitting thread, holding `lock`.
 *
 * Re-entrancy is flattened into iteration: each thread keeps a stack of the
 * lock workers it is currently running tasks for (a thread-local list of
 * frames on the C stack). A submit that finds its worker in that stack only
 * appends to the frame's queue and returns; the outer submit runs it after
 * the current task, still under the lock. So tasks never nest and a plain,
 * non-recursive lock never deadlocks on itself.
 *
 * quit sets a flag. A submit reads it only once it holds the lock, so a
 * submit that was still waiting for the lock when quit was called is refused
 * too: once quit has returned, no task starts that had not already started
 * or been queued by one running (a submit already running keeps going until
 * its frame's queue is empty). The team relies on that: its final step quits
 * the pool's coordinator under the lock, and nothing may run on it after. */
#include "worker/worker.h"

typedef struct lock_worker {
    tw_worker base;
    tw_lock *lock;
    uint32_t quit; /* atomic */
} lock_worker;

typedef struct frame {
    lock_worker *worker;
    tw__fifo queue;
    struct frame *up;
} frame;

static __thread frame *running __attribute__((tls_model("initial-exec")));

static int lw_submit(tw_worker *w, tw_task *t);
static int lw_quit(tw_worker *w);
static int lw_destroy(tw_worker *w);

static const tw_worker_ops lock_ops = {"lock", true, lw_submit, lw_quit, lw_destroy};

int tw_lock_worker_create(tw_lock *lock, tw_worker **out)
{
    lock_worker *l;
    if (!lock || !out)
        return TW_EINVAL;
    if (!(l = TW__NEW(lock_worker)))
        return TW_ENOMEM;
    l->base.ops = &lock_ops;
    l->lock = lock;
    *out = &l->base;
    return 0;
}

static int lw_submit(tw_worker *w, tw_task *t)
{
    lock_worker *l = (lock_worker *)w;
    frame f, *fr;
    tw_task *next;

    for (fr = running; fr; fr = fr->up) {
        if (fr->worker == l) { /* from inside one of our own tasks: we hold the lock */
            if (__atomic_load_n(&l->quit, __ATOMIC_ACQUIRE))
                return TW_EQUIT;
            tw__fifo_push(&fr->queue, t);
            return 0;
        }
    }
    tw_lock_acquire(l->lock);
    /* Under the lock: a quit made while we waited for it refuses us. (The
     * lock also orders a quit made by a task under it before this load.) */
    if (__atomic_load_n(&l->quit, __ATOMIC_ACQUIRE)) {
        tw_lock_release(l->lock);
        return TW_EQUIT;
    }
    f.worker = l;
    f.queue.head = f.queue.tail = NULL;
    f.queue.n = 0;
    f.up = running;
    running = &f;
    for (next = t; next; next = tw__fifo_pop(&f.queue)) {
        int rc = tw__task_run(next);
        if (rc != 0)
            tw__task_failed("lock worker task", rc);
    }
    tw_lock_release(l->lock);
    running = f.up;
    return 0;
}

static int lw_quit(tw_worker *w)
{
    lock_worker *l = (lock_worker *)w;
    return __atomic_exchange_n(&l->quit, 1, __ATOMIC_ACQ_REL) ? TW_EQUIT : 0;
}

static int lw_destroy(tw_worker *w)
{
    TW__DELETE((lock_worker *)w);
    return 0;
}
