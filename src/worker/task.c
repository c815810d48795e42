/* The worker interface: argument checks and node ownership, then the
 * implementation's ops. */
#include "worker/worker.h"

void tw__task_failed(const char *where, int code)
{
    tw_diag_report(TW_DIAG_WARNING, code, where, "a task returned an error");
}

int tw_worker_submit(tw_worker *w, tw_task *t)
{
    if (!w || !w->ops || !t || !t->fn)
        return TW_EINVAL;
    t->flags = 0;
    return w->ops->submit(w, t);
}

int tw_worker_do(tw_worker *w, tw_task_fn fn, void *arg)
{
    tw_task *t;
    int rc;
    if (!w || !w->ops || !fn)
        return TW_EINVAL;
    if (!(t = tw__alloc(sizeof *t)))
        return TW_ENOMEM;
    tw_task_init(t, fn, arg);
    t->flags = TW__TASK_OWNED;
    if ((rc = w->ops->submit(w, t)) != 0)
        tw__free(t, sizeof *t); /* refused: the node is still ours */
    return rc;
}

int tw_worker_quit(tw_worker *w)
{
    if (!w || !w->ops)
        return TW_EINVAL;
    return w->ops->quit(w);
}

int tw_worker_destroy(tw_worker *w)
{
    if (!w || !w->ops)
        return TW_EINVAL;
    return w->ops->destroy(w);
}

bool tw_worker_exclusive(const tw_worker *w)
{
    return w && w->ops && w->ops->exclusive;
}

const char *tw_worker_name(const tw_worker *w)
{
    return w && w->ops && w->ops->name ? w->ops->name : "?";
}
