/* Internal: what every worker implementation shares. */
#ifndef TW_WORKER_WORKER_H
#define TW_WORKER_WORKER_H

#include <twine/worker.h>

#include "base/alloc.h"

/* tw_task.flags */
#define TW__TASK_OWNED 1u /* allocated by tw_worker_do: freed when it runs */
#define TW__TASK_HELD 2u  /* allocated by twine, held by a wrapping worker (team) */

/* Runs t the way every worker must: reads what it needs, frees a node twine
 * allocated, then calls the function — so fn may free or reuse its node. */
static inline int tw__task_run(tw_task *t)
{
    tw_task_fn fn = t->fn;
    void *arg = t->arg;
    if (t->flags & TW__TASK_OWNED)
        tw__free(t, sizeof *t);
    return fn(arg);
}

/* Reports a task's non-zero result where no error hook is configured. */
void tw__task_failed(const char *where, int code);

/* An intrusive FIFO of tasks, guarded by whoever holds it. */
typedef struct tw__fifo {
    tw_task *head, *tail;
    size_t n;
} tw__fifo;

static inline void tw__fifo_push(tw__fifo *f, tw_task *t)
{
    t->next = NULL;
    if (f->tail)
        f->tail->next = t;
    else
        f->head = t;
    f->tail = t;
    f->n++;
}

static inline tw_task *tw__fifo_pop(tw__fifo *f)
{
    tw_task *t = f->head;
    if (t) {
        f->head = t->next;
        if (!f->head)
            f->tail = NULL;
        f->n--;
    }
    return t;
}

/* Takes every task at once (for batching). */
static inline tw_task *tw__fifo_take_all(tw__fifo *f)
{
    tw_task *t = f->head;
    f->head = f->tail = NULL;
    f->n = 0;
    return t;
}

#endif
