/* Team: the pool algorithm.
 *
 * State machine of a member (one per worker):
 *   idle  --dispatch-->  busy  --task done (recycle)-->  idle | retired
 *   idle  --shrink/quit/retire_if_idle-->  retired
 * A member is retired by quitting its worker and handing it to
 * workers.retire; the member record is freed at the same moment, so the team
 * never keeps records of dead workers.
 *
 * Threads and locks: every field marked [C] is touched only by tasks running
 * on the coordinator, an exclusive worker, so they need no lock. Those tasks
 * are messages: dispatch (carried in the submitted task's own node), recycle
 * (carried in the member's `done` node: a member has at most one task in
 * flight, so one node suffices), grow/shrink (allocated) and quit (a node in
 * the team, used once). So dispatching a task allocates nothing.
 *
 * A member's worker runs the member's own `run` node, which runs the task it
 * was handed and then posts the recycle; the user's node is only read.
 * `quit` and the statistics are atomics readable from any thread; `pending`
 * counts dispatch, grow, shrink and quit messages submitted to the
 * coordinator and not yet run, so destroy can refuse while one still points
 * at the team (a recycle message belongs to a member, which destroy also
 * waits for).
 *
 * A task's result goes to the error hook in the worker's thread, right after
 * the task; the recycle message is sent whatever the result was. */
#include "worker/team.h"

typedef struct member {
    tw_worker *worker;
    tw_team *team;
    struct member *next_idle; /* [C] idle stack link */
    tw_task *task;            /* the task handed over; [C] until `run` is submitted */
    tw_task run;              /* runs the task on the worker */
    tw_task done;             /* the recycle message */
    int result;               /* the task's result, read by recycle */
} member;

typedef struct grow_msg {
    tw_task task;
    tw_team *team;
    size_t n;
    bool shrink;
} grow_msg;

struct tw_team {
    tw_worker base;
    tw_worker *coord;
    tw_team_workers workers;
    tw_error_fn on_error;
    void *error_ctx;
    bool refuse_unrunnable; /* dispatch refuses rather than backlog with no member */

    member *idle;       /* [C] most recently idle first (warm caches) */
    size_t n_idle;      /* [C] written, atomically readable */
    size_t n_busy;      /* [C] written, atomically readable */
    tw__fifo backlog;   /* [C] */
    size_t n_backlog;   /* [C] written, atomically readable: backlog.n */
    size_t to_shrink;   /* [C] busy members to retire when they finish */
    bool quitting;      /* [C] quit seen by the coordinator */
    bool coord_quit;    /* [C] written, atomically readable: coordinator quit */
    tw_task quit_msg;

    uint32_t quit;      /* atomic: tw_team_quit called */
    /* Written by submitters and workers: a line of its own. */
    _Alignas(64) size_t pending; /* atomic: messages on the coordinator */
    _Alignas(64) uint64_t completed; /* atomic */
    uint64_t failed;    /* atomic */
};

static int team_submit_op(tw_worker *w, tw_task *t);
static int team_quit_op(tw_worker *w);
static int team_destroy_op(tw_worker *w);
static const tw_worker_ops team_ops = {"team", false, team_submit_op, team_quit_op, team_destroy_op};

static void set_count(size_t *field, size_t v)
{
    __atomic_store_n(field, v, __ATOMIC_RELAXED);
}

/* Sends a recycle message. Not counted in `pending`: a member with a recycle
 * in flight still exists, and destroy already waits for every member — so the
 * workers never touch the submitters' counter. */
static void post_recycle(tw_team *t, member *m)
{
    t->coord->ops->submit(t->coord, &m->done);
}

/* Sends a message to the coordinator. The coordinator refuses only after the
 * team has quit it, which happens once no member and no message is left. */
static int post(tw_team *t, tw_task *msg)
{
    int rc;
    __atomic_fetch_add(&t->pending, 1, __ATOMIC_RELAXED);
    rc = t->coord->ops->submit(t->coord, msg);
    if (rc != 0)
        __atomic_fetch_sub(&t->pending, 1, __ATOMIC_RELAXED);
    return rc;
}

static void maybe_quit_coordinator(tw_team *t);

/* Every counted message ends by calling this. While the team is not quitting,
 * the decrement is its last access to the team (quitting is read first).
 * While quitting, the message that brings pending to 0 may quit the
 * coordinator; destroy waits for that too. */
static void message_done(tw_team *t)
{
    bool quitting = t->quitting;
    /* release: destroy's acquire load sees everything the message did. */
    if (__atomic_sub_fetch(&t->pending, 1, __ATOMIC_ACQ_REL) == 0 && quitting)
        maybe_quit_coordinator(t);
}

/* [C] Quits and disposes of m's worker, and frees m. */
static void retire(tw_team *t, member *m)
{
    tw_worker *w = m->worker;
    TW__DELETE(m);
    w->ops->quit(w);
    t->workers.retire(t->workers.ctx, w);
}

static void fill(tw_team *t);

/* [C] Once quitting, with nobody busy and no message still to run (a
 * dispatch accepted just before the quit must find the coordinator alive),
 * the coordinator's job is over. A backlog with no worker left gets workers
 * if the factory still gives any; a task that can never run is reported,
 * never dropped in silence. Setting coord_quit is the last access. */
static void maybe_quit_coordinator(tw_team *t)
{
    tw_task *task;
    tw_worker *coord = t->coord;
    if (!t->quitting || t->coord_quit || t->n_busy != 0 || t->n_idle != 0 ||
        __atomic_load_n(&t->pending, __ATOMIC_ACQUIRE) != 0)
        return;
    if (t->backlog.n > 0) {
        fill(t);
        if (t->n_busy > 0)
            return; /* they drain the backlog, then retire */
    }
    while ((task = tw__fifo_pop(&t->backlog))) {
        tw_diag_report(TW_DIAG_WARNING, TW_ESHUTDOWN, "tw_team_quit",
                       "a backlogged task cannot run: the team quit and no worker can be made");
        if (t->on_error)
            t->on_error(t->error_ctx, TW_ESHUTDOWN);
        if (task->flags & TW__TASK_HELD)
            tw__free(task, sizeof *task);
    }
    set_count(&t->n_backlog, 0);
    coord->ops->quit(coord);
    /* release: pairs with destroy's acquire load; nothing touches t after. */
    __atomic_store_n(&t->coord_quit, true, __ATOMIC_RELEASE);
}

static int run_member_task(void *arg);
static int recycle(void *arg);

/* [C] A new member, or NULL if the factory refused (or memory ran out). */
static member *recruit(tw_team *t)
{
    tw_worker *w = t->workers.create(t->workers.ctx);
    member *m;
    if (!w)
        return NULL;
    if (!(m = TW__NEW(member))) {
        w->ops->quit(w);
        t->workers.retire(t->workers.ctx, w);
        return NULL;
    }
    m->worker = w;
    m->team = t;
    tw_task_init(&m->run, run_member_task, m);
    tw_task_init(&m->done, recycle, m);
    return m;
}

/* [C] Hands task to member m. One task at a time: a member that took a
 * second one could sit on it while blocked in the first, with other workers
 * idle — the very wedge the pool watches for. */
static void assign(tw_team *t, member *m, tw_task *task)
{
    set_count(&t->n_busy, t->n_busy + 1);
    m->task = task;
    /* Workers the team created refuse only after the team quit them, and
     * the team never quits a busy member, so submit cannot fail here. The
     * submit hands the task over (the worker's queue orders it). */
    m->worker->ops->submit(m->worker, &m->run);
}

/* The node a synchronous dispatch refused, for the submitting thread. */
static __thread tw_task *refused_task __attribute__((tls_model("initial-exec")));

tw_task *tw__team_take_refused(void)
{
    tw_task *task = refused_task;
    refused_task = NULL;
    return task;
}

/* [C] Runs task now if a worker is free or can be made; else backlogs it. */
static void dispatch(tw_team *t, tw_task *task)
{
    member *m = t->idle;
    if (m) {
        t->idle = m->next_idle;
        set_count(&t->n_idle, t->n_idle - 1);
    } else if (!(m = recruit(t))) {
        if (t->refuse_unrunnable && t->n_busy == 0) { /* nobody would ever run it */
            task->fn = task->inner_fn;
            task->arg = task->inner_arg;
            refused_task = task;
            return;
        }
        tw__fifo_push(&t->backlog, task);
        set_count(&t->n_backlog, t->backlog.n);
        return;
    }
    assign(t, m, task);
}

static void push_idle(tw_team *t, member *m)
{
    m->next_idle = t->idle;
    t->idle = m;
    set_count(&t->n_idle, t->n_idle + 1);
}

/* [C] Retires up to n members: idle ones now, busy ones when they finish. */
static void quit_idlers(tw_team *t, size_t n)
{
    while (n > 0 && t->idle) {
        member *m = t->idle;
        t->idle = m->next_idle;
        set_count(&t->n_idle, t->n_idle - 1);
        retire(t, m);
        n--;
    }
    /* The rest are busy: retire them as they finish (no more than exist). */
    {
        size_t unmarked = t->n_busy > t->to_shrink ? t->n_busy - t->to_shrink : 0;
        t->to_shrink += n < unmarked ? n : unmarked;
    }
    maybe_quit_coordinator(t);
}

/* The dispatch message: the submitted task's own node. */
static int dispatch_msg(void *arg)
{
    tw_task *task = arg;
    tw_team *t = task->owner;
    task->owner = NULL;
    dispatch(t, task);
    message_done(t);
    return 0;
}

/* On the member's worker: the task, then the recycle message. */
static int run_member_task(void *arg)
{
    member *m = arg;
    tw_team *t = m->team;
    tw_task *task = m->task;
    tw_task_fn fn = task->inner_fn; /* read all first: fn may free its node */
    void *fn_arg = task->inner_arg;
    int rc;
    if (task->flags & TW__TASK_HELD)
        tw__free(task, sizeof *task);
    rc = fn(fn_arg);
    if (rc != 0) {
        if (t->on_error)
            t->on_error(t->error_ctx, rc);
        else
            tw__task_failed("team task", rc);
    }
    m->result = rc;
    post_recycle(t, m); /* cannot be refused: the coordinator outlives members */
    return 0;
}

/* The recycle message: m finished a task. */
static int recycle(void *arg)
{
    member *m = arg;
    tw_team *t = m->team;
    tw_task *next;
    set_count(&t->n_busy, t->n_busy - 1);
    __atomic_fetch_add(&t->completed, 1, __ATOMIC_RELAXED);
    if (m->result != 0)
        __atomic_fetch_add(&t->failed, 1, __ATOMIC_RELAXED);
    if ((next = tw__fifo_pop(&t->backlog))) { /* backlog first, even when quitting */
        set_count(&t->n_backlog, t->backlog.n);
        assign(t, m, next);
    } else if (t->quitting || t->to_shrink > 0) {
        if (t->to_shrink > 0)
            t->to_shrink--;
        retire(t, m);
        maybe_quit_coordinator(t);
    } else {
        push_idle(t, m);
    }
    return 0;
}

/* [C] */
static void grow_now(tw_team *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        member *m = recruit(t);
        tw_task *next;
        if (!m)
            break;
        if ((next = tw__fifo_pop(&t->backlog))) {
            set_count(&t->n_backlog, t->backlog.n);
            assign(t, m, next);
        } else {
            push_idle(t, m);
        }
    }
}

static int grow_shrink_msg(void *arg)
{
    grow_msg *g = arg;
    tw_team *t = g->team;
    if (g->shrink)
        quit_idlers(t, g->n == TW_TEAM_ALL ? t->n_idle + t->n_busy : g->n);
    else
        grow_now(t, g->n);
    TW__DELETE(g);
    message_done(t);
    return 0;
}

static int quit_msg(void *arg)
{
    tw_team *t = arg;
    t->quitting = true;
    quit_idlers(t, t->n_idle + t->n_busy);
    message_done(t); /* quits the coordinator if nothing is left to run */
    return 0;
}

/* ---- internal API for the pool (coordinator context) ---------------------- */

bool tw__team_retire_if_idle(tw_team *t, tw_worker *w, size_t keep)
{
    member **pp;
    if (t->n_idle + t->n_busy <= keep)
        return false;
    for (pp = &t->idle; *pp; pp = &(*pp)->next_idle) {
        member *m = *pp;
        if (m->worker == w) {
            *pp = m->next_idle;
            set_count(&t->n_idle, t->n_idle - 1);
            retire(t, m);
            maybe_quit_coordinator(t);
            return true;
        }
    }
    return false;
}

/* [C] Recruits workers for the backlog while the factory gives them. */
static void fill(tw_team *t)
{
    while (t->backlog.n > 0) {
        member *m = recruit(t);
        if (!m)
            break;
        assign(t, m, tw__fifo_pop(&t->backlog));
        set_count(&t->n_backlog, t->backlog.n);
    }
}

void tw__team_fill(tw_team *t)
{
    fill(t);
}


void tw__team_grow_now(tw_team *t, size_t n)
{
    grow_now(t, n);
}

void tw__team_shrink_now(tw_team *t, size_t n)
{
    quit_idlers(t, n);
}

void tw__team_refuse_unrunnable(tw_team *t)
{
    t->refuse_unrunnable = true;
}

size_t tw__team_members(tw_team *t)
{
    return __atomic_load_n(&t->n_idle, __ATOMIC_RELAXED) +
           __atomic_load_n(&t->n_busy, __ATOMIC_RELAXED);
}

/* ---- public API ----------------------------------------------------------- */

int tw_team_create(tw_worker *coordinator, const tw_team_workers *workers, tw_team **out)
{
    tw_team *t;
    if (!coordinator || !coordinator->ops || !workers || !workers->create || !workers->retire ||
        !out)
        return TW_EINVAL;
    if (!coordinator->ops->exclusive)
        return TW_EINVAL; /* the bookkeeping relies on exclusivity */
    if (!(t = TW__NEW(tw_team)))
        return TW_ENOMEM;
    t->base.ops = &team_ops;
    t->coord = coordinator;
    t->workers = *workers;
    tw_task_init(&t->quit_msg, quit_msg, t);
    *out = t;
    return 0;
}

int tw_team_set_error_hook(tw_team *t, tw_error_fn fn, void *ctx)
{
    if (!t)
        return TW_EINVAL;
    t->on_error = fn;
    t->error_ctx = ctx;
    return 0;
}

tw_worker *tw_team_worker(tw_team *t)
{
    return t ? &t->base : NULL;
}

/* Wraps task for the team; `held` if twine allocated its node. */
static int submit(tw_team *t, tw_task *task, bool held)
{
    int rc;
    if (__atomic_load_n(&t->quit, __ATOMIC_ACQUIRE))
        return TW_EQUIT;
    task->inner_fn = task->fn;
    task->inner_arg = task->arg;
    task->flags = held ? TW__TASK_HELD : 0;
    task->fn = dispatch_msg;
    task->arg = task;
    task->owner = t;
    if ((rc = post(t, task)) != 0) { /* give the node back as it was */
        task->fn = task->inner_fn;
        task->arg = task->inner_arg;
        return TW_EQUIT;
    }
    return 0;
}

int tw_team_submit(tw_team *t, tw_task *task)
{
    if (!t || !task || !task->fn)
        return TW_EINVAL;
    return submit(t, task, false);
}

int tw_team_do(tw_team *t, tw_task_fn fn, void *arg)
{
    tw_task *task;
    int rc;
    if (!t || !fn)
        return TW_EINVAL;
    if (!(task = tw__alloc(sizeof *task)))
        return TW_ENOMEM;
    tw_task_init(task, fn, arg);
    if ((rc = submit(t, task, true)) != 0)
        tw__free(task, sizeof *task);
    return rc;
}

static int team_submit_op(tw_worker *w, tw_task *task)
{
    tw_team *t = (tw_team *)w;
    /* tw_worker_do allocated the node: the team frees it after the task. */
    bool held = (task->flags & TW__TASK_OWNED) != 0;
    return submit(t, task, held);
}

static int grow_shrink(tw_team *t, size_t n, bool shrink)
{
    grow_msg *g;
    if (!t)
        return TW_EINVAL;
    if (__atomic_load_n(&t->quit, __ATOMIC_ACQUIRE))
        return TW_EQUIT;
    if (n == 0)
        return 0;
    if (!(g = TW__NEW(grow_msg)))
        return TW_ENOMEM;
    tw_task_init(&g->task, grow_shrink_msg, g);
    g->team = t;
    g->n = n;
    g->shrink = shrink;
    if (post(t, &g->task) != 0) {
        TW__DELETE(g);
        return TW_EQUIT;
    }
    return 0;
}

int tw_team_grow(tw_team *t, size_t n)
{
    return grow_shrink(t, n, false);
}

int tw_team_shrink(tw_team *t, size_t n)
{
    return grow_shrink(t, n, true);
}

int tw_team_quit(tw_team *t)
{
    if (!t)
        return TW_EINVAL;
    if (__atomic_exchange_n(&t->quit, 1, __ATOMIC_ACQ_REL))
        return TW_EQUIT;
    if (post(t, &t->quit_msg) != 0)
        return TW_EQUIT; /* the coordinator was quit from outside */
    return 0;
}

static int team_quit_op(tw_worker *w)
{
    return tw_team_quit((tw_team *)w);
}

int tw_team_stats_get(tw_team *t, tw_team_stats *out)
{
    if (!t || !out)
        return TW_EINVAL;
    out->idle = __atomic_load_n(&t->n_idle, __ATOMIC_RELAXED);
    out->busy = __atomic_load_n(&t->n_busy, __ATOMIC_RELAXED);
    out->backlog = __atomic_load_n(&t->n_backlog, __ATOMIC_RELAXED);
    out->completed = __atomic_load_n(&t->completed, __ATOMIC_RELAXED);
    out->failed = __atomic_load_n(&t->failed, __ATOMIC_RELAXED);
    return 0;
}

int tw_team_destroy(tw_team *t)
{
    if (!t)
        return TW_EINVAL;
    /* acquire: pairs with message_done, so nothing still touches the team. */
    if (__atomic_load_n(&t->pending, __ATOMIC_ACQUIRE) != 0 || tw__team_members(t) != 0 ||
        __atomic_load_n(&t->n_backlog, __ATOMIC_RELAXED) != 0)
        return TW_EBUSY;
    /* A quitting team winds down by itself; it is done once it has quit its
     * coordinator (acquire: pairs with that store, its last access). */
    if (__atomic_load_n(&t->quit, __ATOMIC_ACQUIRE) &&
        !__atomic_load_n(&t->coord_quit, __ATOMIC_ACQUIRE))
        return TW_EBUSY;
    TW__DELETE(t);
    return 0;
}

static int team_destroy_op(tw_worker *w)
{
    return tw_team_destroy((tw_team *)w);
}
