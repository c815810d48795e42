/* Thread worker: one thread draining one FIFO.
 *
 * `lock` guards queue, quit and sleeping. The thread takes the whole queue at
 * once and runs it without the lock (batching: one lock round trip per batch,
 * not per task); a submitter notifies only when the thread is asleep. Tasks
 * run in submission order, never overlapping. */
#include "base/thread.h"
#include "base/thread_start.h"
#include "worker/worker.h"

typedef struct thread_worker {
    tw_worker base;
    tw_lock lock;
    tw_cond wake; /* over lock */
    tw__fifo queue;
    bool quit;
    bool sleeping;
    pthread_t thread;
    uint32_t thread_id; /* twine id of the worker's thread, for destroy's check */
} thread_worker;

static int tw_submit(tw_worker *w, tw_task *t);
static int tw_quit_(tw_worker *w);
static int tw_destroy_(tw_worker *w);

static const tw_worker_ops thread_ops = {"thread", true, tw_submit, tw_quit_, tw_destroy_};

static void *loop(void *arg)
{
    thread_worker *tw = arg;
    __atomic_store_n(&tw->thread_id, tw__thread_id(), __ATOMIC_RELEASE);
    tw_lock_acquire(&tw->lock);
    for (;;) {
        tw_task *batch = tw__fifo_take_all(&tw->queue);
        if (!batch) {
            if (tw->quit)
                break;
            tw->sleeping = true;
            tw_cond_wait(&tw->wake);
            tw->sleeping = false;
            continue;
        }
        tw_lock_release(&tw->lock);
        while (batch) {
            tw_task *t = batch;
            int rc;
            batch = t->next; /* read before running: t may be freed by its task */
            if ((rc = tw__task_run(t)) != 0)
                tw__task_failed("thread worker task", rc);
        }
        tw_lock_acquire(&tw->lock);
    }
    tw_lock_release(&tw->lock);
    return NULL;
}

int tw_thread_worker_create(tw_worker **out)
{
    thread_worker *tw;
    int rc;
    if (!out)
        return TW_EINVAL;
    if (!(tw = TW__NEW(thread_worker)))
        return TW_ENOMEM;
    tw->base.ops = &thread_ops;
    tw_cond_init_lock(&tw->wake, &tw->lock);
    if ((rc = tw__thread_start(&tw->thread, loop, tw, 0, 0)) != 0) {
        TW__DELETE(tw);
        return rc;
    }
    *out = &tw->base;
    return 0;
}

static int tw_submit(tw_worker *w, tw_task *t)
{
    thread_worker *tw = (thread_worker *)w;
    int rc = 0;
    tw_lock_acquire(&tw->lock);
    if (tw->quit) {
        rc = TW_EQUIT;
    } else {
        tw__fifo_push(&tw->queue, t);
        if (tw->sleeping)
            tw_cond_notify(&tw->wake, 1);
    }
    tw_lock_release(&tw->lock);
    return rc;
}

static int tw_quit_(tw_worker *w)
{
    thread_worker *tw = (thread_worker *)w;
    int rc = 0;
    tw_lock_acquire(&tw->lock);
    if (tw->quit)
        rc = TW_EQUIT;
    tw->quit = true;
    tw_cond_notify(&tw->wake, 1);
    tw_lock_release(&tw->lock);
    return rc;
}

static int tw_destroy_(tw_worker *w)
{
    thread_worker *tw = (thread_worker *)w;
    if (__atomic_load_n(&tw->thread_id, __ATOMIC_ACQUIRE) == tw__thread_id())
        return TW_EDEADLK; /* joining our own thread would never return */
    tw_quit_(w);
    pthread_join(tw->thread, NULL);
    TW__DELETE(tw);
    return 0;
}
