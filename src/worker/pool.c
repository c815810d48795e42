/* Pool: a team on threads.
 *
 * Locks: `mu` is the pool's one lock. The team's coordinator is a lock worker
 * over mu, so every piece of team bookkeeping runs holding mu, in whichever
 * thread submits or finishes a task; fields marked [P] are guarded by mu too.
 * The pool calls team internals (tw__team_*) directly while holding mu: that
 * is the coordinator's context. Nothing else is taken under mu except the
 * leaf locks of sync objects it signals. The error hook runs in the pool
 * thread, outside mu.
 *
 * Fast path: while every thread is busy at the limit, a submit pushes the
 * task on the team's incoming list and never takes mu; a thread finishing a
 * task moves the list into the backlog under mu (team.c has the protocol).
 * The pool tells the team its limit (the `limit` hook: max + extra; 0 while
 * paused, max 0, lifted to one thread once stopping so that stop runs the
 * backlog), tells it
 * whenever the limit changes (resize, the wedge watch's extra threads), and
 * moves incoming into the backlog before reading statistics.
 *
 * Pool threads are detached. Each is a worker with a one-task slot: the team
 * gives a member one task at a time (the next one only from the recycle that
 * follows the previous), so a slot is enough. A thread waits on its semaphore
 * for work or quit; once it has been idle for idle_timeout it asks (under mu)
 * to be retired if the team has more than min members. Exiting, a thread
 * decrements `threads` under mu and signals `exited`; that unlock is its last
 * access to the pool, so stop can wait for threads == 0 and then free
 * everything. Exited threads leave nothing behind: there is no list of dead
 * threads to join.
 *
 * Wedge watch: a detached thread that runs only while a wedge can form. The
 * team calls the `saturated` hook when a task is left waiting with every
 * member busy at the limit; that starts the watch (if wedge_timeout > 0).
 * Every quarter of wedge_timeout it looks for "all members busy at the limit,
 * backlog waiting, no completion for wedge_timeout"; it reports that once per
 * wedge (diagnostic hook, then the pool's wedge hook outside mu) and may raise
 * the limit by one thread per wedge_timeout, up to wedge_extra. When the
 * backlog empties, the extra allowance goes back to 0 and threads above max
 * retire. The watch leaves at the first look that finds nothing that could
 * wedge (and no extra allowance to take back), so a pool that is not backed
 * up has only its own threads. It keeps watching while the pool stops (a
 * wedge then is a shutdown hang); stop waits for it to leave. */
#include <stdio.h>

#include "base/spin_wait.h"
#include "base/thread.h"
#include "base/thread_start.h"
#include "debug/debug.h"
#include "worker/team.h"

typedef struct pool_thread pool_thread;


struct tw_pool {
    /* Read by every submit: kept off the lines that mu's holders write. */
    tw_worker base;
    tw_worker *coord;
    tw_team *team;

    _Alignas(64) tw_lock mu;
    tw_cond exited;     /* over mu: threads decreased, the team finished, or
                           the watch left */
    tw_cond watch_cv;   /* over mu: wakes the watch early (settings, stop) */
    tw_pool_config cfg; /* [P] changed by resize and the setters */
    int64_t idle_ns;    /* atomic, written under mu: cfg.idle_timeout in ns,
                           negative = never (read by idle threads) */
    size_t threads;     /* [P] live threads, including exiting ones */
    size_t extra;       /* [P] threads allowed past max by the wedge watch */
    uint64_t wedges;    /* [P] */
    bool stopping;      /* [P] */
    bool team_done;     /* [P] the team quit its coordinator: no task is left
                           and no thread will be made */
    bool watching;      /* [P] the watch thread is running */
    bool watch_quit;    /* [P] stop is done with everything else: the watch
                           leaves and never starts again */
    int refused;        /* [P] written, atomically readable: why the last
                           thread start failed (TW_ENOMEM, TW_ESYS), or 0 */
    tw_pool_wedge_fn on_wedge; /* [P] the pool's wedge hook, or NULL */
    void *wedge_ctx;           /* [P] */
    pool_thread *spare; /* [P] records of exited threads, for reuse */
    pool_thread *live;  /* [P] records of running threads (for stop's report) */
    uint32_t numbered;  /* [P] threads started so far: each gets the next number */
};

struct pool_thread {
    tw_worker base;
    tw_pool *pool;
    tw_sem wake;       /* posted for a task or for quit */
    tw_task *slot;     /* atomic: the task to run next */
    uint32_t quit;     /* atomic */
    pool_thread *next; /* [P] in the spare list */
    pool_thread *live_next, **live_prev; /* [P] in the live list */
    uint32_t number;   /* [P] 1 for the pool's first thread, 2 for the next, ... */
    int64_t task_since; /* atomic: when its current task started, 0 when idle */
    tw__spin_state spin; /* its own: the watch for work before sleeping */
    /* Records are allocated back to back and malloc aligns to 16 bytes only:
     * a line of padding keeps the next record's slot and semaphore, written
     * by another thread for every task, off the lines of this one's. */
    char pad[64];
};

/* The pool and record of the calling pool thread, if it is one. */
static __thread tw_pool *this_pool __attribute__((tls_model("initial-exec")));
static __thread pool_thread *this_thread __attribute__((tls_model("initial-exec")));
/* A thread given work by this thread's submit, to wake once mu is released. */
static __thread pool_thread *wake_later __attribute__((tls_model("initial-exec")));

/* ---- pool threads ---------------------------------------------------------- */

/* Called under mu (the team assigns on its coordinator). The wake is put off
 * until the submitter has released mu where it can be: a thread woken while
 * mu is held would run straight into it and sleep again. A thread given work
 * by its own recycle needs no wake at all. */
static int pt_submit(tw_worker *w, tw_task *t)
{
    pool_thread *pt = (pool_thread *)w;
    if (__atomic_load_n(&pt->quit, __ATOMIC_ACQUIRE))
        return TW_EQUIT;
    /* release: pairs with the exchange in thread_main; the slot is empty, as
     * the team gives a member new work only when it has none. */
    __atomic_store_n(&pt->slot, t, __ATOMIC_RELEASE);
    if (pt == this_thread)
        return 0;
    if (!wake_later) {
        wake_later = pt;
        return 0;
    }
    tw_sem_release(&pt->wake, 1);
    return 0;
}

/* After releasing mu: the wake pt_submit put off. A record is never freed
 * while the pool lives (exited threads' records are kept for reuse), so a
 * late wake is at worst a spurious one. */
static void wake_deferred(void)
{
    pool_thread *pt = wake_later;
    if (pt) {
        wake_later = NULL;
        tw_sem_release(&pt->wake, 1);
    }
}

static int pt_quit(tw_worker *w)
{
    pool_thread *pt = (pool_thread *)w;
    if (__atomic_exchange_n(&pt->quit, 1, __ATOMIC_ACQ_REL))
        return TW_EQUIT;
    tw_sem_release(&pt->wake, 1);
    return 0;
}

static int pt_destroy(tw_worker *w)
{
    (void)w; /* a pool thread frees itself when it exits */
    return TW_ENOTSUP;
}

static const tw_worker_ops pool_thread_ops = {"pool thread", true, pt_submit, pt_quit, pt_destroy};

static bool sem_posted(const void *sem)
{
    return tw_sem_value(sem) != 0;
}

/* Seconds to nanoseconds for idle_ns: negative stays -1 (never), huge
 * saturates. */
static int64_t idle_to_ns(double seconds)
{
    if (seconds < 0)
        return -1;
    return seconds >= 9e9 ? INT64_MAX : (int64_t)(seconds * 1e9);
}

/* When an idle thread that went idle at `since` may ask to retire. Read at
 * every sleep, so a changed idle timeout applies to threads already asleep
 * (tw_pool_set_idle_timeout wakes them to read it). relaxed: the semaphore
 * that wakes them orders the store before this load. */
static tw_deadline idle_deadline(tw_pool *p, int64_t since)
{
    int64_t ns = __atomic_load_n(&p->idle_ns, __ATOMIC_RELAXED);
    if (ns < 0 || since > TW_DEADLINE_NEVER - ns)
        return TW_DEADLINE_NEVER;
    return since + ns;
}

static void *thread_main(void *arg)
{
    pool_thread *pt = arg;
    tw_pool *p = pt->pool;
    int64_t idle_since = 0; /* when it last went to sleep with no work; 0: not idle */
    this_pool = p;
    this_thread = pt;
#ifdef TW_DEBUG
    tw__dbg_pool_thread(p); /* a node of the wait-for graph: idle, or busy with a task */
#endif
    for (;;) {
        tw_task *t = __atomic_exchange_n(&pt->slot, NULL, __ATOMIC_ACQUIRE);
        if (t) {
            /* relaxed: read only for stop's report */
            __atomic_store_n(&pt->task_since, tw_now_ns(), __ATOMIC_RELAXED);
#ifdef TW_DEBUG
            tw__dbg_pool_task(t);
#endif
            tw__task_run(t); /* the team's runner: reports errors itself */
#ifdef TW_DEBUG
            tw__dbg_pool_task(NULL);
#endif
            __atomic_store_n(&pt->task_since, 0, __ATOMIC_RELAXED);
            wake_deferred(); /* its recycle may have given another thread work */
            idle_since = 0;
            continue;
        }
        if (__atomic_load_n(&pt->quit, __ATOMIC_ACQUIRE))
            break;
        if (tw_sem_try_acquire(&pt->wake) == 0) /* no clock read when work waits */
            continue;
        /* Work often comes back within microseconds (a reactor's loop issuing
         * the next defer_to_thread): watch for it before paying for a sleep
         * and the submitter for a wake-up (src/base/spin_wait.h). */
        if (tw__spin_wait(&pt->spin, sem_posted, &pt->wake, -1) &&
            tw_sem_try_acquire(&pt->wake) == 0)
            continue;
        if (!idle_since)
            idle_since = tw_now_ns();
        if (tw__sem_acquire_slow(&pt->wake, idle_deadline(p, idle_since)) == TW_ETIMEDOUT) {
            tw_lock_acquire(&p->mu);
            if (!tw__team_retire_if_idle(p->team, &pt->base, p->cfg.min))
                idle_since = 0; /* kept (min): a new idle period starts */
            tw_lock_release(&p->mu);
            wake_deferred();
        }
    }
    /* pt_quit runs under mu, so once we hold mu nobody else is using pt; its
     * record goes to the spare list (a late deferred wake may still post it). */
    tw_lock_acquire(&p->mu);
    *pt->live_prev = pt->live_next;
    if (pt->live_next)
        pt->live_next->live_prev = pt->live_prev;
    pt->next = p->spare;
    p->spare = pt;
    p->threads--;
    tw_cond_notify_all(&p->exited);
    tw_lock_release(&p->mu); /* the last access to the pool */
    return NULL;
}

/* [P] The team's `limit` hook: threads allowed now, max + extra. A paused
 * pool (max 0) allows none, and that is not a wedge (extra is 0 then: see
 * resize). Stopping lifts a pause to one thread, so that stop runs the
 * backlog. */
static size_t pool_limit(void *ctx)
{
    tw_pool *p = ctx;
    size_t max = p->cfg.max;
    if (max == 0 && !p->stopping)
        return 0;
    return (max ? max : 1) + p->extra;
}

/* [P] The team's factory: a new thread while below the limit. It is asked
 * only on the coordinator, for work the team accepted: after stop, for work
 * accepted before it, and never once the team has finished (a message that
 * lost the race with the quit is refused before it is counted, and nothing
 * runs on a quit lock worker). */
static tw_worker *create_thread(void *ctx)
{
    tw_pool *p = ctx;
    pool_thread *pt;
    pthread_t th;
    int rc;
    if (tw__team_members(p->team) >= pool_limit(p))
        return NULL;
    if ((pt = p->spare)) {
        p->spare = pt->next;
    } else if (!(pt = TW__NEW(pool_thread))) {
        __atomic_store_n(&p->refused, TW_ENOMEM, __ATOMIC_RELAXED);
        return NULL;
    }
    pt->base.ops = &pool_thread_ops;
    pt->pool = p;
    __atomic_store_n(&pt->slot, NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&pt->quit, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pt->task_since, 0, __ATOMIC_RELAXED);
    /* A late wake for the record's previous thread may land on the new one's
     * semaphore: a spurious wake, harmless (the loop re-checks its slot). */
    if ((rc = tw__thread_start(&th, thread_main, pt, p->cfg.stack_size, 1)) != 0) {
        pt->next = p->spare;
        p->spare = pt;
        __atomic_store_n(&p->refused, rc, __ATOMIC_RELAXED);
        tw_diag_report(TW_DIAG_WARNING, rc, "tw_pool", "could not start a pool thread");
        return NULL;
    }
    __atomic_store_n(&p->refused, 0, __ATOMIC_RELAXED);
    p->threads++;
    pt->number = ++p->numbered;
    pt->live_next = p->live;
    pt->live_prev = &p->live;
    if (p->live)
        p->live->live_prev = &pt->live_next;
    p->live = pt;
    return &pt->base;
}

/* [P] The team has quit the thread's worker; the thread exits by itself. */
static void retire_thread(void *ctx, tw_worker *w)
{
    (void)ctx;
    (void)w;
}

/* [P] The team's `finished` hook: stop may return once threads are gone too. */
static void pool_team_finished(void *ctx)
{
    tw_pool *p = ctx;
    p->team_done = true;
    tw_cond_notify_all(&p->exited);
}

/* ---- the wedge watch -------------------------------------------------------- */

static void *watch_main(void *arg);

/* [P] Starts the watch if it is wanted and not running. A thread that cannot
 * be started is reported; the next saturation tries again. */
static void watch_start(tw_pool *p)
{
    pthread_t th;
    int rc;
    if (p->watching || p->watch_quit || !(p->cfg.wedge_timeout > 0) || pool_limit(p) == 0)
        return; /* running, stopped, off, or paused (nothing can start: no wedge to break) */
    if ((rc = tw__thread_start(&th, watch_main, p, 0, 1)) != 0) {
        tw_diag_report(TW_DIAG_WARNING, rc, "tw_pool",
                       "could not start the wedge watch (tried again when work next waits "
                       "behind busy threads)");
        return;
    }
    p->watching = true;
}

/* [P] The team's `saturated` hook: a task waits behind every thread busy at
 * the limit. */
static void pool_saturated(void *ctx)
{
    watch_start(ctx);
}

/* [P] Statistics, with the pushed tasks moved into the backlog first. */
static void snapshot(tw_pool *p, tw_pool_stats *out)
{
    tw__team_absorb(p->team);
    tw_team_stats_get(p->team, &out->team);
    out->threads = p->threads;
    out->min = p->cfg.min;
    out->max = p->cfg.max;
    out->extra = p->extra;
    out->wedges = p->wedges;
}

static void report_wedge(tw_pool *p, const tw_team_stats *s)
{
    char msg[200];
    snprintf(msg, sizeof msg,
             "pool wedged: all %zu threads busy (limit %zu), %zu waiting in the backlog, "
             "none finished for %.3g s",
             s->busy, pool_limit(p), s->backlog, p->cfg.wedge_timeout);
    tw_diag_report(TW_DIAG_WARNING, TW_EDEADLK, "tw_pool", msg);
}

/* [P] One more thread past max, if wedge_extra allows. */
static void grow_for_wedge(tw_pool *p)
{
    if (p->extra < p->cfg.wedge_extra) {
        p->extra++;
        tw__team_limits_changed(p->team); /* the new thread takes the oldest task */
        wake_deferred();                  /* under mu: rare, and correct either way */
    }
}

static void *watch_main(void *arg)
{
    tw_pool *p = arg;
    uint64_t seen = UINT64_MAX;
    int64_t since = tw_now_ns();
    bool reported = false;
    this_pool = p; /* tw_pool_stop from the wedge hook: TW_EDEADLK */
    tw_lock_acquire(&p->mu);
    while (!p->watch_quit && p->cfg.wedge_timeout > 0) {
        tw_team_stats s;
        int64_t now;
        size_t limit;
        tw_cond_wait_timeout(&p->watch_cv, p->cfg.wedge_timeout / 4);
        if (p->watch_quit || !(p->cfg.wedge_timeout > 0))
            break;
        tw__team_absorb(p->team); /* pushed tasks count as backlog */
        wake_deferred();          /* under mu: rare, and correct either way */
        tw_team_stats_get(p->team, &s);
        now = tw_now_ns();
        limit = pool_limit(p);
        if (s.completed != seen || s.backlog == 0 || s.busy == 0 || s.busy < limit ||
            limit == 0) {
            /* Moving, nothing waiting, or paused (the backlog waits by
             * choice): not wedged. */
            seen = s.completed;
            since = now;
            reported = false;
            if (s.backlog == 0 && p->extra > 0) {
                p->extra = 0;
                tw__team_limits_changed(p->team); /* threads above max retire */
                wake_deferred();
            }
            if (p->extra == 0 && (limit == 0 || !tw__team_saturated(p->team)))
                break; /* nothing can wedge until the team says so again */
            continue;
        }
        if ((double)(now - since) * 1e-9 < p->cfg.wedge_timeout)
            continue;
        since = now; /* the next step, if needed, one wedge_timeout later */
        if (reported) {
            grow_for_wedge(p);
            continue;
        }
        reported = true;
        p->wedges++;
        report_wedge(p, &s);
        if (p->on_wedge) {
            tw_pool_wedge_fn fn = p->on_wedge;
            void *ctx = p->wedge_ctx;
            tw_pool_stats at;
            snapshot(p, &at);
            grow_for_wedge(p);
            /* Outside mu, so that the hook may resize the pool, read its
             * statistics or submit; stop waits for the watch, hence for it. */
            tw_lock_release(&p->mu);
            fn(ctx, p, &at);
            tw_lock_acquire(&p->mu);
        } else {
            grow_for_wedge(p);
        }
    }
    p->watching = false;
    tw_cond_notify_all(&p->exited);
    tw_lock_release(&p->mu); /* the last access to the pool */
    return NULL;
}

/* ---- public API ----------------------------------------------------------- */

static int pool_submit_op(tw_worker *w, tw_task *t);
static int pool_quit_op(tw_worker *w);
static int pool_destroy_op(tw_worker *w);
static const tw_worker_ops pool_ops = {"pool", false, pool_submit_op, pool_quit_op, pool_destroy_op};

static bool config_ok(const tw_pool_config *c)
{
    return c->min <= c->max && c->idle_timeout == c->idle_timeout &&
           c->wedge_timeout == c->wedge_timeout;
}

/* The reason a thread could not be made (a task refused, a min not reached). */
static int refusal(tw_pool *p)
{
    int rc = __atomic_load_n(&p->refused, __ATOMIC_RELAXED);
    return rc != 0 ? rc : TW_ENOMEM; /* the thread started; its member record did not */
}

static void free_pool(tw_pool *p)
{
    while (p->spare) {
        pool_thread *pt = p->spare;
        p->spare = pt->next;
        TW__DELETE(pt);
    }
    if (p->team)
        tw_team_destroy(p->team);
    if (p->coord)
        tw_worker_destroy(p->coord);
    TW__DELETE(p);
}

/* Waits (mu held) until the team is finished, every thread has exited and
 * the watch has left, or the deadline passes. Threads alone are not enough:
 * a dispatch counted before the quit may still be on its way, and would make
 * a new thread after the old ones had all exited. The watch is told to leave
 * only then: until then a wedge is a shutdown hang, which it exists to
 * break. */
static int wait_done(tw_pool *p, tw_deadline d)
{
    for (;;) {
        double left;
        if (p->threads == 0 && p->team_done) {
            if (!p->watching)
                return 0;
            if (!p->watch_quit) {
                p->watch_quit = true;
                tw_cond_notify_all(&p->watch_cv);
            }
        }
        if ((left = tw_deadline_remaining(d)) == 0.0)
            return TW_ETIMEDOUT;
        tw_cond_wait_timeout(&p->exited, left);
    }
}

int tw_pool_create_with(const tw_pool_config *cfg, tw_pool **out)
{
    tw_pool *p;
    tw_team_workers f;
    int rc;
    if (!cfg || !out || !config_ok(cfg))
        return TW_EINVAL;
    if (!(p = TW__NEW(tw_pool)))
        return TW_ENOMEM;
    p->base.ops = &pool_ops;
    p->cfg = *cfg;
    p->idle_ns = idle_to_ns(cfg->idle_timeout);
    tw_cond_init_lock(&p->exited, &p->mu);
    tw_cond_init_lock(&p->watch_cv, &p->mu);
    f.create = create_thread;
    f.retire = retire_thread;
    f.ctx = p;
    if ((rc = tw_lock_worker_create(&p->mu, &p->coord)) != 0 ||
        (rc = tw_team_create(p->coord, &f, &p->team)) != 0) {
        free_pool(p);
        return rc;
    }
    {
        tw__team_hooks h = {pool_limit, pool_saturated, pool_team_finished, p};
        tw__team_set_hooks(p->team, &h);
        tw__team_refuse_unrunnable(p->team);
    }

    tw_lock_acquire(&p->mu);
    tw__team_grow_now(p->team, cfg->min);
    if (tw__team_members(p->team) < cfg->min)
        rc = refusal(p);
    tw_lock_release(&p->mu);
    wake_deferred();
    if (rc != 0) {
        tw_pool_stop(p, -1, NULL);
        free_pool(p);
        return rc;
    }
    *out = p;
    return 0;
}

int tw_pool_create(size_t min, size_t max, tw_pool **out)
{
    tw_pool_config cfg = TW_POOL_CONFIG_INIT(min, max);
    return tw_pool_create_with(&cfg, out);
}

int tw_pool_set_error_hook(tw_pool *p, tw_error_fn fn, void *ctx)
{
    return p ? tw_team_set_error_hook(p->team, fn, ctx) : TW_EINVAL;
}

tw_worker *tw_pool_worker(tw_pool *p)
{
    return p ? &p->base : NULL;
}

/* Submits; a task that no thread exists or can be started for is refused,
 * so that nothing waits for a thread that will never come.
 *
 * Fast path: while every thread is busy at the limit, the task is pushed on
 * the team's incoming list without taking mu, and a thread finishing a task
 * picks it up (see team.c). If the fast path closed during the push, the
 * task is kicked: dispatched under mu like any other. */
static int submit(tw_pool *p, tw_task *t, bool held)
{
    char ticket; /* its address identifies this submission to the kick */
    int rc = tw__team_offer(p->team, t, held, &ticket);
    if (rc == 0 || rc == TW_EQUIT)
        return rc;
    if (rc == TW__TEAM_KICK) {
        tw_lock_acquire(&p->mu);
        rc = tw__team_kick(p->team, t, &ticket);
        if (rc == TW__TEAM_ALONE)
            rc = refusal(p);
        tw_lock_release(&p->mu);
        wake_deferred();
        return rc;
    }
    rc = held ? tw_team_worker(p->team)->ops->submit(tw_team_worker(p->team), t)
              : tw_team_submit(p->team, t);
    wake_deferred();
    /* The dispatch ran right here; if no thread existed or could be made, it
     * refused the task rather than backlog it for a thread that will never
     * come (tw__team_refuse_unrunnable). */
    if (rc == 0 && tw__team_take_refused() == t)
        rc = refusal(p);
    return rc;
}

int tw_pool_submit(tw_pool *p, tw_task *t)
{
    if (!p || !t || !t->fn)
        return TW_EINVAL;
    t->flags = 0;
    return submit(p, t, false);
}

int tw_pool_do(tw_pool *p, tw_task_fn fn, void *arg)
{
    return p ? tw_worker_do(&p->base, fn, arg) : TW_EINVAL;
}

static int pool_submit_op(tw_worker *w, tw_task *t)
{
    tw_pool *p = (tw_pool *)w;
    bool held = (t->flags & TW__TASK_OWNED) != 0;
    return submit(p, t, held);
}

int tw_pool_resize(tw_pool *p, size_t min, size_t max)
{
    tw_team_stats s;
    size_t members;
    int rc = 0;
    if (!p || min > max)
        return TW_EINVAL;
    tw_lock_acquire(&p->mu);
    if (p->team_done) { /* stopped: no thread will be made again */
        tw_lock_release(&p->mu);
        return TW_EQUIT;
    }
    p->cfg.min = min;
    p->cfg.max = max;
    if (max == 0)
        p->extra = 0; /* a pause withdraws the wedge allowance too */
    /* Lowered: threads above the limit start nothing more (idle ones go now,
     * busy ones after their task). Raised: the backlog takes the new room at
     * once, oldest first. */
    tw__team_limits_changed(p->team);
    members = tw__team_members(p->team);
    /* While stopping, only the backlog gets threads (a raised max can break
     * a wedge that hangs the stop); min threads would only idle, and an idle
     * thread of a quitting team would never be retired. */
    if (!p->stopping && members < min)
        tw__team_grow_now(p->team, min - members);
    members = tw__team_members(p->team);
    tw_team_stats_get(p->team, &s);
    /* The limits stand either way; the missing threads come later. */
    if ((!p->stopping && members < min) ||
        (members == 0 && s.backlog > 0 && pool_limit(p) > 0))
        rc = refusal(p);
    tw_lock_release(&p->mu);
    wake_deferred();
    return rc;
}

int tw_pool_set_idle_timeout(tw_pool *p, double seconds)
{
    if (!p || seconds != seconds)
        return TW_EINVAL;
    tw_lock_acquire(&p->mu);
    p->cfg.idle_timeout = seconds;
    __atomic_store_n(&p->idle_ns, idle_to_ns(seconds), __ATOMIC_RELAXED);
    /* Threads asleep read it when they wake: wake them all (a busy one finds
     * the token after its task and goes round its loop once more). */
    for (pool_thread *pt = p->live; pt; pt = pt->live_next)
        tw_sem_release(&pt->wake, 1);
    tw_lock_release(&p->mu);
    return 0;
}

int tw_pool_set_wedge(tw_pool *p, double timeout, size_t extra)
{
    if (!p || timeout != timeout)
        return TW_EINVAL;
    tw_lock_acquire(&p->mu);
    p->cfg.wedge_timeout = timeout;
    p->cfg.wedge_extra = extra;
    if (!(timeout > 0))
        extra = 0; /* no watch: nothing will take an allowance back */
    if (p->extra > extra) {
        p->extra = extra;
        tw__team_limits_changed(p->team);
    }
    tw_cond_notify_all(&p->watch_cv); /* the watch takes the new period, or leaves */
    if (tw__team_saturated(p->team))
        watch_start(p);
    tw_lock_release(&p->mu);
    wake_deferred();
    return 0;
}

int tw_pool_set_wedge_hook(tw_pool *p, tw_pool_wedge_fn fn, void *ctx)
{
    if (!p)
        return TW_EINVAL;
    tw_lock_acquire(&p->mu);
    p->on_wedge = fn;
    p->wedge_ctx = ctx;
    tw_lock_release(&p->mu);
    return 0;
}

int tw_pool_stats_get(tw_pool *p, tw_pool_stats *out)
{
    if (!p || !out)
        return TW_EINVAL;
    tw_lock_acquire(&p->mu);
    snapshot(p, out);
    tw_lock_release(&p->mu);
    wake_deferred();
    return 0;
}

/* [P] Says which threads keep stop waiting, through the diagnostic hook. */
static void report_stuck(tw_pool *p)
{
    char msg[256];
    int64_t now = tw_now_ns();
    size_t n = 0, len;
    pool_thread *pt;
    len = (size_t)snprintf(msg, sizeof msg, "stop timed out with %zu thread(s) still running:",
                           p->threads);
    for (pt = p->live; pt && len < sizeof msg; pt = pt->live_next, n++) {
        int64_t since = __atomic_load_n(&pt->task_since, __ATOMIC_RELAXED);
        if (n == 8) {
            len += (size_t)snprintf(msg + len, sizeof msg - len, " ...");
            break;
        }
        if (since)
            len += (size_t)snprintf(msg + len, sizeof msg - len, " #%u (in a task for %.3g s)",
                                    pt->number, (double)(now - since) * 1e-9);
        else
            len += (size_t)snprintf(msg + len, sizeof msg - len, " #%u (between tasks)",
                                    pt->number);
    }
    if (!p->live)
        snprintf(msg + len, sizeof msg - len,
                 p->watching && p->team_done ? " none; the pool's wedge hook has not returned"
                                             : " none; a submission is still being dispatched");
    tw_diag_report(TW_DIAG_WARNING, TW_ETIMEDOUT, "tw_pool_stop", msg);
}

int tw_pool_stop(tw_pool *p, double timeout, size_t *stuck)
{
    tw_deadline d;
    bool first;
    int rc;
    if (!p || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (this_pool == p)
        return TW_EDEADLK; /* it would wait for its own thread */
    tw_lock_acquire(&p->mu);
    first = !p->stopping;
    p->stopping = true;
    tw_lock_release(&p->mu);
    if (first) {
        tw_team_quit(p->team); /* backlog still runs; threads retire as they idle */
        wake_deferred();
    }
    tw_lock_acquire(&p->mu);
#ifdef TW_DEBUG
    int token = tw__dbg_pool_stop_begin(p); /* waits for p's threads */
#endif
    rc = wait_done(p, d);
#ifdef TW_DEBUG
    tw__dbg_wait_end(token);
#endif
    if (stuck)
        *stuck = p->threads;
    if (rc == TW_ETIMEDOUT && timeout != 0) /* 0 polls; it does not wait, so nothing is stuck */
        report_stuck(p);
    tw_lock_release(&p->mu);
    return rc;
}

static int pool_quit_op(tw_worker *w)
{
    tw_pool *p = (tw_pool *)w;
    bool already;
    tw_lock_acquire(&p->mu);
    already = p->stopping;
    tw_lock_release(&p->mu);
    if (already)
        return TW_EQUIT;
    return tw_pool_stop(p, 0, NULL) == TW_EDEADLK ? TW_EDEADLK : 0;
}

int tw_pool_destroy(tw_pool *p)
{
    int rc;
    if (!p)
        return TW_EINVAL;
    if ((rc = tw_pool_stop(p, -1, NULL)) != 0)
        return rc;
    free_pool(p);
    return 0;
}

static int pool_destroy_op(tw_worker *w)
{
    return tw_pool_destroy((tw_pool *)w);
}
