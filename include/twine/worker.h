/*
 * twine/worker.h — workers, the team (the thread pool algorithm), the pool,
 * and the blocking Queue.
 *
 * A worker runs tasks. Every worker has the same two operations — submit a
 * task, quit — so code written against tw_worker runs unchanged on a thread, on
 * the caller's thread under a lock, or, in tests, on a memory worker that runs
 * one task each time the test says so:
 *
 *     static int hello(void *arg) { puts(arg); return 0; }
 *
 *     tw_pool *pool;
 *     tw_pool_create(0, 4, &pool);                 // up to 4 threads, made on demand
 *     tw_pool_do(pool, hello, "from a pool thread");
 *     tw_pool_stop(pool, 5.0, NULL);               // queued work runs, threads exit
 *     tw_pool_destroy(pool);
 *
 * Tasks. A task is a function `int fn(void *arg)`; returning non-zero reports
 * an error (a TW_E* code or your own), which goes to the error hook of the team
 * or pool, or to the diagnostic hook — never silently dropped. tw_worker_do
 * allocates the task's node; tw_worker_submit takes a node you provide
 * (tw_task), so a hot path allocates nothing. The worker owns a submitted node
 * until it calls the task's function, and does not touch it after: fn may free
 * or reuse its own node.
 *
 * Shutdown. After quit, submit returns TW_EQUIT and the task is not taken; a
 * second quit returns TW_EQUIT. Work accepted before quit still runs. Every
 * task is either accepted and run, or refused at submission with an error:
 * a submit that races a quit either returns 0 and its task runs, or loses the
 * race and returns TW_EQUIT — never 0 for a task that then never runs.
 *
 * Threads. Everything here may be called from any thread, except where noted.
 */
#ifndef TWINE_WORKER_H
#define TWINE_WORKER_H

#include "base.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== tasks =============================================================== */

typedef int (*tw_task_fn)(void *arg);

typedef struct tw_task {
    struct tw_task *next; /* the worker's while it owns the node, like the rest */
    tw_task_fn fn;
    void *arg;
    tw_task_fn inner_fn;  /* a worker that wraps the task keeps the original here */
    void *inner_arg;
    void *owner;
    uint32_t flags;
} tw_task;

#define TW_TASK_INIT(fn, arg) {NULL, (fn), (arg), NULL, NULL, NULL, 0}

static inline void tw_task_init(tw_task *t, tw_task_fn fn, void *arg)
{
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    t->inner_fn = NULL;
    t->inner_arg = NULL;
    t->owner = NULL;
    t->flags = 0;
}

/* ==== the worker interface ================================================
 * An implementation embeds `tw_worker` as its first member and provides ops.
 * Exclusive workers guarantee their tasks never overlap in time. */
typedef struct tw_worker tw_worker;

typedef struct tw_worker_ops {
    const char *name;
    bool exclusive;
    /* Takes t (0) or refuses it (TW_EQUIT, ...) leaving it untouched. */
    int (*submit)(tw_worker *w, tw_task *t);
    int (*quit)(tw_worker *w);
    /* Releases the worker; quits it first if needed. */
    int (*destroy)(tw_worker *w);
} tw_worker_ops;

struct tw_worker {
    const tw_worker_ops *ops;
};

/* 0; TW_EQUIT after quit; TW_EINVAL for NULL w, t or t->fn. The node's
 * private fields are reset: a worker that forwards a task it was given to
 * another worker calls that worker's ops->submit instead, which keeps them. */
TW_API int tw_worker_submit(tw_worker *w, tw_task *t);
/* As submit, with a node allocated by twine and freed after the task runs
 * (or at once if refused). TW_ENOMEM if it cannot be allocated. */
TW_API int tw_worker_do(tw_worker *w, tw_task_fn fn, void *arg);
/* 0; TW_EQUIT if already quit. */
TW_API int tw_worker_quit(tw_worker *w);
/* Quits (if needed) and releases the worker. See each kind for details. */
TW_API int tw_worker_destroy(tw_worker *w);
TW_API bool tw_worker_exclusive(const tw_worker *w);
TW_API const char *tw_worker_name(const tw_worker *w);

/* ==== thread worker =======================================================
 * One thread and a FIFO queue; exclusive. quit lets the queued work finish,
 * then the thread exits. quit may be called from one of its own tasks: the
 * tasks queued before it still run. destroy quits if needed and joins the
 * thread; called from the worker's own thread it returns TW_EDEADLK and does
 * nothing. A task's non-zero result goes to the diagnostic hook. */
TW_API int tw_thread_worker_create(tw_worker **out);

/* ==== lock worker =========================================================
 * Runs each task at once in the calling thread while holding `lock`;
 * exclusive. A task submitted from inside a running task of the same worker
 * runs after the current one (in the same thread, still under the lock),
 * not nested. quit only refuses new work — including a submit still waiting
 * for the lock when quit is called: once quit returns, nothing starts but
 * what a submission already running queued, which it finishes. The lock must
 * outlive the worker. A task's non-zero result goes to the diagnostic hook. */
TW_API int tw_lock_worker_create(tw_lock *lock, tw_worker **out);

/* ==== memory worker =======================================================
 * Queues tasks and runs exactly one per tw_memory_worker_perform call, in the
 * caller's thread: the deterministic worker for tests. Exclusive: a perform
 * overlapping another one (from another thread, or from inside the running
 * task) runs nothing. After quit, perform still runs the tasks accepted before
 * the quit, then nothing. destroy releases queued tasks without running them. */
TW_API int tw_memory_worker_create(tw_worker **out);
/* Runs the oldest queued task: true if it ran one (its result in *result if
 * result is not NULL, else a non-zero result goes to the diagnostic hook);
 * false if there was none, another perform is running, or w is not a memory
 * worker. */
TW_API bool tw_memory_worker_perform(tw_worker *w, int *result);
/* Tasks waiting in it. */
TW_API size_t tw_memory_worker_pending(tw_worker *w);

/* ==== team ================================================================
 * The pool algorithm, independent of threads. All bookkeeping runs as tasks
 * on `coordinator`, an exclusive worker; workers come from a factory that may
 * refuse (a limit). With a memory worker as coordinator and memory workers as
 * workers, a team runs fully deterministically.
 *
 * do: an idle worker takes the task, else a new worker from the factory, else
 * it waits in the FIFO backlog. Tasks start in the order they were accepted:
 * a task that finds older ones waiting queues behind them, and when the
 * factory gives workers again, the oldest waiting tasks get them first. When
 * a worker finishes a task it takes the oldest backlogged one. grow(n)
 * creates up to n workers (stopping at the first refusal); they take backlog
 * at once. shrink(n) retires n workers: idle ones first, busy ones after
 * their current task (and only when no backlog is waiting for them). quit: no
 * new work; the backlog still runs; workers are retired as they become idle;
 * the coordinator is quit when the last one is gone. A submit, grow or shrink
 * racing quit either is accepted before the quit (and runs) or returns
 * TW_EQUIT.
 *
 * A task's non-zero result goes to the error hook (default: the diagnostic
 * hook); the team's bookkeeping runs no matter what the task returned. */
typedef struct tw_team tw_team;

typedef struct tw_team_workers {
    /* A new worker, or NULL to refuse (limit reached, or failure). */
    tw_worker *(*create)(void *ctx);
    /* w has been quit by the team and will never be used again: dispose of
     * it. Called on the coordinator. */
    void (*retire)(void *ctx, tw_worker *w);
    void *ctx;
} tw_team_workers;

typedef struct tw_team_stats {
    size_t idle;        /* workers waiting for work */
    size_t busy;        /* workers running a task */
    size_t backlog;     /* tasks waiting for a worker */
    uint64_t completed; /* tasks finished (whatever they returned) */
    uint64_t failed;    /* of those, tasks that returned non-zero */
} tw_team_stats;

typedef void (*tw_error_fn)(void *ctx, int code);

#define TW_TEAM_ALL SIZE_MAX

/* The team does not own the coordinator: destroy it after the team. */
TW_API int tw_team_create(tw_worker *coordinator, const tw_team_workers *workers, tw_team **out);
/* Before the first task; NULL restores the default. */
TW_API int tw_team_set_error_hook(tw_team *t, tw_error_fn fn, void *ctx);
/* The team seen as a worker (not exclusive). Its destroy is tw_team_destroy. */
TW_API tw_worker *tw_team_worker(tw_team *t);
TW_API int tw_team_submit(tw_team *t, tw_task *task);
TW_API int tw_team_do(tw_team *t, tw_task_fn fn, void *arg);
TW_API int tw_team_grow(tw_team *t, size_t n);
TW_API int tw_team_shrink(tw_team *t, size_t n);
TW_API int tw_team_quit(tw_team *t);
/* A snapshot. Read from outside the coordinator, the fields may be from
 * slightly different instants, but never inconsistently so: a task counted
 * completed no longer shows its worker busy with it (when every task has
 * completed, none is busy). */
TW_API int tw_team_stats_get(tw_team *t, tw_team_stats *out);
/* Frees the team. TW_EBUSY while it still has workers or work, or while a
 * quit team has not yet quit its coordinator (let the coordinator run until
 * then). No other thread may still be inside a call on t. */
TW_API int tw_team_destroy(tw_team *t);

/* ==== pool ================================================================
 * The production thread pool: a team on threads. Threads are created on
 * demand up to `max`; at least `min` are kept, and no other thread: a pool of
 * min 0 idles with none. Threads above min exit after idle_timeout without
 * work. Tasks start in strict FIFO order, also when the limit is raised
 * (raising it dispatches the backlog at once). Exited threads are joined
 * promptly: the pool never keeps a list of dead threads.
 *
 * Limits. Lowering max takes effect at once: idle threads above it exit, and
 * busy ones exit after their current task instead of taking another. max 0
 * pauses the pool (Twisted's adjustPoolsize(0, 0)): tasks are accepted into
 * the backlog and none starts until the limit is raised; running tasks finish.
 *
 * Wedge detection (tasks that wait for tasks queued behind them): when every
 * thread is busy at the limit, the backlog is not empty and no task has
 * finished for wedge_timeout seconds, the pool reports it once through the
 * diagnostic hook with its statistics, then calls the pool's own wedge hook
 * (if set), and, if wedge_extra > 0, adds threads past max, one per
 * wedge_timeout, up to wedge_extra, until work moves again. The watch is a
 * thread of its own that runs only while a wedge can form — from the moment
 * a task waits behind every thread busy at the limit until that clears — so
 * it costs nothing to a pool that keeps up. */
typedef struct tw_pool tw_pool;

typedef struct tw_pool_config {
    size_t min, max;       /* 0 <= min <= max; max 0 = paused */
    double idle_timeout;   /* seconds; negative = never reap idle threads */
    double wedge_timeout;  /* seconds; 0 or negative = no wedge detection */
    size_t wedge_extra;    /* threads allowed past max to break a wedge */
    size_t stack_size;     /* 0 = the system default */
} tw_pool_config;

/* Defaults: idle_timeout 60 s, wedge_timeout 5 s, wedge_extra 0. */
#define TW_POOL_CONFIG_INIT(mn, mx) {(mn), (mx), 60.0, 5.0, 0, 0}

typedef struct tw_pool_stats {
    tw_team_stats team;
    size_t threads;     /* live threads, including ones exiting (the wedge
                           watch, when it runs, is not one of them) */
    size_t min, max;    /* current limits */
    size_t extra;       /* threads currently allowed past max by the wedge detector */
    uint64_t wedges;    /* wedges reported */
} tw_pool_stats;

TW_API int tw_pool_create(size_t min, size_t max, tw_pool **out);
TW_API int tw_pool_create_with(const tw_pool_config *cfg, tw_pool **out);
TW_API int tw_pool_set_error_hook(tw_pool *p, tw_error_fn fn, void *ctx);
TW_API tw_worker *tw_pool_worker(tw_pool *p);
/* TW_EQUIT after stop (a submit racing stop either runs or gets TW_EQUIT).
 * TW_ESYS / TW_ENOMEM when the pool has no thread and starting one failed:
 * the task is not taken, since nothing would run it. A paused pool (max 0)
 * is not that case: it has no thread by choice, and takes the task into its
 * backlog. */
TW_API int tw_pool_submit(tw_pool *p, tw_task *task);
TW_API int tw_pool_do(tw_pool *p, tw_task_fn fn, void *arg);
/* New limits (TW_EINVAL unless min <= max; max 0 pauses). Grows to min at
 * once; a raised max takes backlog at once, oldest first; a lowered max
 * retires idle threads now and busy ones after their current task. If min
 * threads, or a thread for the waiting backlog of a pool that has none,
 * cannot be started now, the new limits still apply and the reason is
 * returned (TW_ESYS, TW_ENOMEM): the backlog waits for the next chance (a
 * submit, a resize, stop). During a stop the new limits apply to the work
 * still queued — a raised max can break a wedge that hangs the stop — and
 * min starts no thread; TW_EQUIT once stop has completed. */
TW_API int tw_pool_resize(tw_pool *p, size_t min, size_t max);
TW_API int tw_pool_stats_get(tw_pool *p, tw_pool_stats *out);

/* Settings a running pool can change, at any time, effective at once.
 * The idle timeout (seconds, negative = never; TW_EINVAL for NaN) applies to
 * threads already idle too, counted from when they became idle. */
TW_API int tw_pool_set_idle_timeout(tw_pool *p, double seconds);
/* The wedge settings (as in tw_pool_config; TW_EINVAL for a NaN timeout).
 * Turning detection on while a wedge can form starts watching now; turning
 * it off, or lowering wedge_extra, withdraws what is over the new allowance
 * (threads above it exit after their current task). */
TW_API int tw_pool_set_wedge(tw_pool *p, double timeout, size_t extra);
/* The pool's own wedge hook: called once per wedge, after the diagnostic
 * hook's report and after the extra thread (if any) was added, with the
 * pool's statistics as the wedge was found (stats->extra from before that
 * thread). It runs on the pool's watch thread, outside the pool's lock: it
 * may log, resize the pool (to grow it on its own terms, with wedge_extra 0;
 * also while the pool stops), read statistics or submit; tw_pool_stop and
 * tw_pool_destroy return TW_EDEADLK there. stop waits for it to return. NULL
 * removes it. */
typedef void (*tw_pool_wedge_fn)(void *ctx, tw_pool *p, const tw_pool_stats *stats);
TW_API int tw_pool_set_wedge_hook(tw_pool *p, tw_pool_wedge_fn fn, void *ctx);

/* Stops taking work, lets queued work finish and joins the threads, waiting
 * at most `timeout` seconds (negative = forever). A paused pool's backlog
 * runs too: stop lifts the pause to one thread, which runs it in order. 0, or
 * TW_ETIMEDOUT with the number of threads still running in *stuck (if not
 * NULL) — and, unless timeout is 0 (a poll), a report through the diagnostic
 * hook naming each of them (threads are numbered from 1 in the order the
 * pool started them) and how long its current task has run. A later stop
 * after one that timed out waits again (for its own timeout) and, if it times
 * out too, reports the threads still stuck: call it again for a bounded
 * shutdown that retries (Twisted raises AlreadyQuit instead). A stop after a
 * complete one returns 0. TW_EDEADLK from one of the pool's own threads. */
TW_API int tw_pool_stop(tw_pool *p, double timeout, size_t *stuck);
/* Stops (waiting forever) if needed, then frees. TW_EDEADLK from a pool thread.
 * No other thread may still be inside a call on p (stop may race with
 * submitters; destroy may not). */
TW_API int tw_pool_destroy(tw_pool *p);

/* ==== Queue ===============================================================
 * Python's queue.Queue: a blocking, thread-safe queue of void * items, FIFO,
 * LIFO or by priority (smallest first per cmp; equal items leave in FIFO
 * order), optionally bounded (maxsize 0 = unbounded).
 *
 * put waits while the queue is full, get while it is empty; each has try
 * (TW_EFULL / TW_EEMPTY) and timeout (TW_ETIMEDOUT) forms. task_done marks
 * one got item as processed; join waits until every item put has been
 * marked. shutdown: put fails with TW_ESHUTDOWN; get drains what is left and
 * then fails with TW_ESHUTDOWN instead of blocking; with `immediate`, the
 * remaining items are handed to the drop function (if any) and removed, and
 * get fails at once. Waiters are woken by shutdown. is_shutdown says whether
 * shutdown has been called (Python 3.13's Queue.is_shutdown). */
typedef struct tw_queue tw_queue;

enum tw_queue_kind { TW_QUEUE_FIFO = 0, TW_QUEUE_LIFO = 1, TW_QUEUE_PRIORITY = 2 };

typedef struct tw_queue_config {
    enum tw_queue_kind kind;
    size_t maxsize; /* 0 = unbounded */
    int (*cmp)(const void *a, const void *b, void *ctx); /* PRIORITY only: <0 if a first */
    void *cmp_ctx;
    void (*drop)(void *item, void *ctx); /* items removed by an immediate shutdown or destroy */
    void *drop_ctx;
} tw_queue_config;

/* FIFO or LIFO (TW_QUEUE_PRIORITY needs a cmp: use tw_queue_create_with). */
TW_API int tw_queue_create(enum tw_queue_kind kind, size_t maxsize, tw_queue **out);
TW_API int tw_queue_create_with(const tw_queue_config *cfg, tw_queue **out);
TW_API int tw_queue_put(tw_queue *q, void *item);
TW_API int tw_queue_try_put(tw_queue *q, void *item);
TW_API int tw_queue_put_timeout(tw_queue *q, void *item, double timeout);
TW_API int tw_queue_get(tw_queue *q, void **item);
TW_API int tw_queue_try_get(tw_queue *q, void **item);
TW_API int tw_queue_get_timeout(tw_queue *q, void **item, double timeout);
TW_API size_t tw_queue_size(tw_queue *q);
TW_API bool tw_queue_empty(tw_queue *q);
TW_API bool tw_queue_full(tw_queue *q);
/* TW_EOVERFLOW if called more times than items were put (nothing changes). */
TW_API int tw_queue_task_done(tw_queue *q);
TW_API int tw_queue_join(tw_queue *q);
TW_API int tw_queue_join_timeout(tw_queue *q, double timeout);
TW_API int tw_queue_shutdown(tw_queue *q, bool immediate);
/* true once tw_queue_shutdown has been called (either kind); false for NULL. */
TW_API bool tw_queue_is_shutdown(tw_queue *q);
/* Frees the queue, handing remaining items to drop. No thread may be using it. */
TW_API int tw_queue_destroy(tw_queue *q);

#ifdef __cplusplus
}
#endif

#endif /* TWINE_WORKER_H */
