/* Memory worker: a FIFO drained one task per perform call, in the caller's
 * thread — the deterministic stand-in for a thread in tests. `lock` guards
 * the queue and the flags (submit may come from any thread); perform runs the
 * task without holding it, so a task may submit to this worker. It is
 * exclusive: a perform that overlaps another (from a second thread, or from
 * inside a task) runs nothing and returns false. */
#include "worker/worker.h"

typedef struct memory_worker {
    tw_worker base;
    tw_lock lock;
    tw__fifo queue;
    bool quit;
    bool performing; /* a perform is running a task: another one runs nothing */
} memory_worker;

static int mw_submit(tw_worker *w, tw_task *t);
static int mw_quit(tw_worker *w);
static int mw_destroy(tw_worker *w);

static const tw_worker_ops memory_ops = {"memory", true, mw_submit, mw_quit, mw_destroy};

static memory_worker *as_mw(tw_worker *w)
{
    return w && w->ops == &memory_ops ? (memory_worker *)w : NULL;
}

int tw_memory_worker_create(tw_worker **out)
{
    memory_worker *m;
    if (!out)
        return TW_EINVAL;
    if (!(m = TW__NEW(memory_worker)))
        return TW_ENOMEM;
    m->base.ops = &memory_ops;
    *out = &m->base;
    return 0;
}

static int mw_submit(tw_worker *w, tw_task *t)
{
    memory_worker *m = as_mw(w);
    int rc = 0;
    tw_lock_acquire(&m->lock);
    if (m->quit)
        rc = TW_EQUIT;
    else
        tw__fifo_push(&m->queue, t);
    tw_lock_release(&m->lock);
    return rc;
}

static int mw_quit(tw_worker *w)
{
    memory_worker *m = as_mw(w);
    int rc = 0;
    tw_lock_acquire(&m->lock);
    if (m->quit)
        rc = TW_EQUIT;
    m->quit = true;
    tw_lock_release(&m->lock);
    return rc;
}

bool tw_memory_worker_perform(tw_worker *w, int *result)
{
    memory_worker *m = as_mw(w);
    tw_task *t;
    int rc;
    if (!m)
        return false;
    tw_lock_acquire(&m->lock);
    t = m->performing ? NULL : tw__fifo_pop(&m->queue);
    m->performing = t != NULL;
    tw_lock_release(&m->lock);
    if (!t)
        return false;
    rc = tw__task_run(t);
    tw_lock_acquire(&m->lock);
    m->performing = false;
    tw_lock_release(&m->lock);
    if (result)
        *result = rc;
    else if (rc != 0)
        tw__task_failed("tw_memory_worker_perform", rc);
    return true;
}

size_t tw_memory_worker_pending(tw_worker *w)
{
    memory_worker *m = as_mw(w);
    size_t n;
    if (!m)
        return 0;
    tw_lock_acquire(&m->lock);
    n = m->queue.n;
    tw_lock_release(&m->lock);
    return n;
}

/* Tasks still queued are released without running: a memory worker is
 * destroyed by the test that drives it, which decides what runs. Nodes twine
 * allocated are freed. */
static int mw_destroy(tw_worker *w)
{
    memory_worker *m = as_mw(w);
    tw_task *t;
    while ((t = tw__fifo_pop(&m->queue)))
        if (t->flags & TW__TASK_OWNED)
            tw__free(t, sizeof *t);
    TW__DELETE(m);
    return 0;
}
