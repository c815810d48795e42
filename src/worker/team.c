/* Team: the pool algorithm.
 *
 * State machine of a member (one per worker):
 *   idle  --dispatch-->  busy  --task done (recycle)-->  busy | idle | retired
 *   idle  --shrink/quit/retire_if_idle/limit lowered-->  retired
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
 * Quit races. A submit, grow or shrink is counted in `pending` by a CAS that
 * fails once tw_team_quit has set the CLOSED bit (in the same add that counts
 * the quit message): it is counted before the quit, and the final step waits
 * for it, or it is refused. The final step (maybe_quit_coordinator) runs only
 * with the count at 0 under CLOSED, when no message can ever come again, so
 * nothing reaches the coordinator after it is quit.
 *
 * A task's result goes to the error hook in the worker's thread, right after
 * the task; the recycle message is sent whatever the result was. The task is
 * counted (count_done) after its member's change of state, so a snapshot
 * never shows a completed task's member still busy with it.
 *
 * FIFO start: a dispatch first hands the waiting tasks, oldest first, to idle
 * members and then to new ones (pump), and queues its own task behind any
 * that still wait; grow, recycle and the final step take the oldest first.
 *
 * A strict limit (teams with hooks.limit: the pool): members above a lowered
 * limit start nothing new. tw__team_limits_changed takes the ring back and
 * retires idle members until the limit is met (so no member is idle while
 * over it); a busy member above it retires in its recycle without taking a
 * task. A limit of 0 is a pause.
 *
 * ---- The incoming list (teams that opted in with hooks.limit: the pool) ----
 *
 * When every member is busy and the factory is at its limit, a new task can
 * only wait in the backlog until a member finishes. Then the coordinator need
 * not see the submission at all: the submitter pushes the node on `incoming`,
 * a Treiber stack (CAS on the head; consumers take the whole stack with one
 * exchange and reverse it), and a member finishing a task moves the stack
 * into the backlog, oldest first, before taking the oldest backlogged task.
 * For the pool this keeps submitters off the pool mutex entirely.
 *
 * `open` (written on the coordinator only, read by submitters) says whether
 * the fast path may be used. Invariants:
 *
 *   O1. open is set only on the coordinator, when a task has just been left
 *       in the backlog (or kicked there) while no member is idle, at least
 *       one is busy, the team is not quitting, and the members are at
 *       hooks.limit (maybe_open).
 *   O2. open is cleared (close_fast) before anything that could let a task
 *       waiting in incoming run sooner than "when a busy member finishes":
 *       a member going from busy to idle or retired (recycle with nothing
 *       left, or over the limit), a new idle member (grow), a changed limit
 *       (tw__team_limits_changed), and quit. Clearing is a seq_cst store
 *       followed by a seq_cst load of `incoming`; whatever it finds is moved
 *       into the backlog at once.
 *   O3. The backlog holds every task the coordinator has seen and not yet
 *       handed out, in submission order; incoming only holds tasks newer
 *       than all of them. So every path that adds to the backlog or hands a
 *       new task out first absorbs incoming (dispatch_msg, kick, recycle
 *       when the backlog is empty, grow, fill, quit_idlers), and FIFO order
 *       holds across both.
 *
 * Submitter (tw__team_offer): load `quit` (acquire) and `open` (relaxed, a
 * hint); push (CAS, seq_cst); load `open` again (seq_cst). If that load says
 * open, the task is taken: by O1 some member was busy when open was set, and
 * by O2 each member busy then clears open — after our load, since our load
 * still saw it set — before it stops being busy; its following load of
 * `incoming` is after our push in the single total order of seq_cst
 * operations, so it finds our task (or finds it already absorbed). This is
 * the store-load (Dekker) pairing: submitter CAS(incoming) → load(open)
 * against coordinator store(open) → load(incoming); with all four seq_cst at
 * least one side sees the other's write. If the load says closed, the
 * submitter cannot know whether anyone will look, so it kicks: takes the
 * coordinator context (the pool's mutex) and calls tw__team_kick, which
 * absorbs and dispatches like a slow-path submit. A kick is rare: it needs
 * an idle transition, a resize or a quit between the submitter's two loads.
 *
 * Data: each node's fields are written before its push CAS (release); the
 * pushes form a release sequence on `incoming`, and every consumer's
 * exchange is an acquire, so the consumer sees all of the nodes it takes.
 *
 * Quit. quit_msg closes open for good (O1 never reopens while quitting), so
 * a task is left in incoming at the final step (maybe_quit_coordinator) only
 * if its submitter read `open` closed and is bound to kick. The final step
 * therefore leaves incoming alone, and a kick that finds the coordinator
 * already quit takes its own node back (found by address *and* by the
 * submitter's ticket in `owner`, as a node that did run may have been freed
 * and its address reused) and the submit returns TW_EQUIT. A kick that does
 * not find its node (it was absorbed and ran before the team finished)
 * returns 0. Statistics: the backlog count includes incoming once absorbed;
 * the pool absorbs before reading it.
 *
 * The submitter never touches `pending` or the statistics on the fast path:
 * a pushed task is not a message, and the coordinator cannot quit while a
 * busy member exists (it will absorb the task), or it leaves the task to its
 * kicking submitter (above).
 *
 * ---- The ready ring (incoming teams) ----
 *
 * With tiny tasks, members finishing on different CPUs would otherwise meet
 * on the coordinator (the pool's mutex) once per task. So a member's recycle
 * also moves the oldest backlogged tasks into a small ring (RING slots), and
 * a member that finishes a task takes the next one from the ring with one CAS
 * on ring_head, without the coordinator, as long as the ring has one
 * (run_member_task). It is still one task at a time: the next is taken only
 * after the last one has finished, and the member stays busy throughout, so
 * no bookkeeping changes — except the completed/failed counts: such a member
 * counts the task it finished itself, once it holds the next; its last task
 * is counted by the recycle.
 *
 *   R1. The ring holds the oldest waiting tasks: everything in it is older
 *       than the backlog, which is older than incoming. take_oldest takes
 *       from the ring first; ring_fill moves from the backlog's head. So FIFO
 *       order holds across all three.
 *   R2. Only the coordinator adds to the ring (ring_fill, ring_tail); anyone
 *       may take (ring_take). So "the ring is empty", seen on the
 *       coordinator, stays true until the coordinator fills it; "it is not
 *       empty" may stop being true at any moment. Every decision that needs
 *       "nothing is waiting" (a member going idle or retiring) is taken on a
 *       failed take (recycle), never on a count.
 *   R3. A member stops being busy only in recycle: after a failed take, an
 *       absorb and close_fast (O2); or over a lowered limit, when the ring is
 *       empty anyway (tw__team_limits_changed emptied it, and only a recycle
 *       within the limit fills it). So the ring is empty whenever no member
 *       is busy: a team with no member has an empty ring (the pool's
 *       no-thread refusal and the kick only look in the backlog).
 *
 * Ring memory orders: ring_fill writes the slots, then stores ring_tail
 * (release); ring_take loads ring_tail (acquire) before reading a slot, so it
 * sees the slot and the node. ring_take reads the slot before its CAS on
 * ring_head (release); ring_fill loads ring_head (acquire) before reusing a
 * slot, so a slot is never overwritten while a taker that can still win its
 * CAS reads it (a taker with a stale head may read a reused slot, but then
 * its CAS fails). Head and tail are 64-bit counters: no ABA. */
#include "worker/team.h"

typedef struct member {
    tw_worker *worker;
    tw_team *team;
    struct member *next_idle; /* [C] idle stack link */
    tw_task *task;            /* the task handed over; [C] until `run` is submitted */
    tw_task run;              /* runs the task on the worker */
    tw_task done;             /* the recycle message */
    int result;               /* the task's result, read by recycle */
    /* Members are allocated back to back, and each is written for every task
     * by its own worker's thread: a line of padding (malloc aligns to 16
     * bytes only) keeps neighbours off each other's lines. */
    char pad[64];
} member;

/* Slots in the ready ring: a power of two. */
#define RING 64

typedef struct grow_msg {
    tw_task task;
    tw_team *team;
    size_t n;
    bool shrink;
} grow_msg;

struct tw_team {
    /* Set up at creation (hooks before the first task), then only read: by
     * submitters too. */
    tw_worker base;
    tw_worker *coord;
    tw_team_workers workers;
    tw_error_fn on_error;
    void *error_ctx;
    tw__team_hooks hooks;
    bool fast;          /* hooks.limit set: the incoming list is in use */
    bool refuse_unrunnable; /* dispatch refuses rather than backlog with no member */

    /* Read by every fast submit, written rarely: a line of its own. */
    _Alignas(64) uint32_t quit; /* atomic: tw_team_quit called */
    uint32_t open;      /* atomic, written on the coordinator only (O1, O2) */

    /* What every recycle touches: one line, which moves with the
     * coordinator (for the pool, with its mutex). */
    _Alignas(64) tw__fifo backlog; /* [C] */
    size_t n_backlog;   /* [C] written, atomically readable: backlog.n */
    member *idle;       /* [C] most recently idle first (warm caches) */
    size_t n_busy;      /* [C] written, atomically readable */

    size_t n_idle;      /* [C] written, atomically readable */
    size_t to_shrink;   /* [C] busy members to retire when they finish */
    bool quitting;      /* [C] quit seen by the coordinator */
    bool coord_quit;    /* [C] written, atomically readable: coordinator quit */
    tw__fifo stranded;  /* [C] kicked nodes found after the coordinator quit */
    tw_task quit_msg;

    /* Pushed by submitters, taken by the coordinator. */
    _Alignas(64) tw_task *incoming; /* atomic: newest first */
    /* Written by submitters (slow path) and messages: a line of its own.
     * Bits below CLOSED count the messages posted and not yet run; CLOSED is
     * set by tw_team_quit in the same step that counts its own message. A
     * message is counted only while CLOSED is clear (post), so once the count
     * is back to 0 with CLOSED set, none can ever come again: that is the
     * moment the final step may quit the coordinator. */
    _Alignas(64) size_t pending; /* atomic */

    /* Kept off the coordinator's line: measured faster with two workers on
     * different CPUs than a plain store next to the backlog. */
    _Alignas(64) uint64_t completed; /* atomic */
    uint64_t failed;    /* atomic */

    /* The ready ring (incoming teams; see the top of the file). Tasks
     * [ring_head, ring_tail) are the oldest waiting ones, older than the
     * backlog. ring_tail and the slots are written on the coordinator only;
     * ring_head is advanced (CAS) by any member taking a task. */
    _Alignas(64) uint64_t ring_head; /* atomic */
    _Alignas(64) uint64_t ring_tail; /* atomic */
    tw_task *ring[RING];             /* atomic slots */
};

static int team_submit_op(tw_worker *w, tw_task *t);
static int team_quit_op(tw_worker *w);
static int team_destroy_op(tw_worker *w);
static const tw_worker_ops team_ops = {"team", false, team_submit_op, team_quit_op, team_destroy_op};

#define CLOSED ((size_t)1 << (sizeof(size_t) * 8 - 1)) /* in `pending` */

static void set_count(size_t *field, size_t v)
{
    __atomic_store_n(field, v, __ATOMIC_RELAXED);
}

/* Tests: see tw__team_set_probe. Written only by tests, while no thread it
 * could concern runs. */
static void (*probe_fn)(int where, tw_task *task);

void tw__team_set_probe(void (*probe)(int where, tw_task *task))
{
    __atomic_store_n(&probe_fn, probe, __ATOMIC_RELAXED);
}

/* A relaxed load and a branch predicted not taken: nothing on the hot paths. */
static inline void probe(int where, tw_task *task)
{
    void (*fn)(int, tw_task *) = __atomic_load_n(&probe_fn, __ATOMIC_RELAXED);
    if (__builtin_expect(fn != NULL, 0))
        fn(where, task);
}

/* Sends a recycle message. Not counted in `pending`: a member with a recycle
 * in flight still exists, and destroy already waits for every member — so the
 * workers never touch the submitters' counter. */
static void post_recycle(tw_team *t, member *m)
{
    t->coord->ops->submit(t->coord, &m->done);
}

/* Counts a message and sends it to the coordinator; TW_EQUIT once the team
 * has quit. Counting and the quit check are one CAS on `pending`, so a
 * message is either counted before tw_team_quit closed it — then the final
 * step waits for it, and the coordinator, which the team quits only in that
 * step, takes it — or refused. A quit flag read first and a count added after
 * would leave a window in which the final step saw no message and quit the
 * coordinator under a message it had just been given. Relaxed: the message
 * itself travels through the coordinator's submit, which orders it. */
static int post(tw_team *t, tw_task *msg)
{
    size_t v;
    int rc;
    probe(TW__TEAM_AT_POST, msg);
    v = __atomic_load_n(&t->pending, __ATOMIC_RELAXED);
    do {
        if (v & CLOSED)
            return TW_EQUIT;
    } while (!__atomic_compare_exchange_n(&t->pending, &v, v + 1, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    rc = t->coord->ops->submit(t->coord, msg);
    if (rc != 0) /* only a coordinator quit from outside the team refuses */
        __atomic_fetch_sub(&t->pending, 1, __ATOMIC_RELAXED);
    return rc;
}

static void maybe_quit_coordinator(tw_team *t);

/* Every counted message ends by calling this. While the team is not quitting,
 * the decrement is its last access to the team (quitting is read first).
 * While quitting, the message that brings the count to 0 may quit the
 * coordinator; destroy waits for that too. */
static void message_done(tw_team *t)
{
    bool quitting = t->quitting;
    /* release: destroy's acquire load sees everything the message did. */
    if ((__atomic_sub_fetch(&t->pending, 1, __ATOMIC_ACQ_REL) & ~CLOSED) == 0 && quitting)
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

/* ---- the ready ring (see the top of the file) ------------------------------ */

/* Any thread: the oldest task in the ring, or NULL. A member that finished a
 * task calls this before (instead of) sending its recycle. */
static tw_task *ring_take(tw_team *t)
{
    uint64_t h = __atomic_load_n(&t->ring_head, __ATOMIC_RELAXED);
    for (;;) {
        /* acquire: pairs with ring_fill's release store of ring_tail, so the
         * slot, and the node it points to, are visible. */
        uint64_t tail = __atomic_load_n(&t->ring_tail, __ATOMIC_ACQUIRE);
        tw_task *task;
        if (h == tail)
            return NULL;
        /* Slot h is not reused while ring_head <= h (ring_fill never lets
         * the tail run RING past the head); if the head moved on, the CAS
         * below fails and the value read is dropped. */
        task = __atomic_load_n(&t->ring[h % RING], __ATOMIC_RELAXED);
        /* release: our read of the slot happens before ring_fill, whose
         * acquire load of ring_head sees the new head, reuses it. */
        if (__atomic_compare_exchange_n(&t->ring_head, &h, h + 1, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
            return task;
    }
}

/* Any thread: tasks in the ring (head first: the difference is never
 * negative). */
static size_t ring_count(tw_team *t)
{
    uint64_t h = __atomic_load_n(&t->ring_head, __ATOMIC_RELAXED);
    return (size_t)(__atomic_load_n(&t->ring_tail, __ATOMIC_RELAXED) - h);
}

/* [C] Tasks waiting for a member: ring and backlog (incoming not counted). */
static size_t waiting(tw_team *t)
{
    return ring_count(t) + t->backlog.n;
}

/* [C] Moves the oldest backlogged tasks into the ring while it has room.
 * The ring's tasks are older than the backlog's, so FIFO order holds. */
static void ring_fill(tw_team *t)
{
    uint64_t tail = __atomic_load_n(&t->ring_tail, __ATOMIC_RELAXED); /* only we write it */
    /* acquire: pairs with ring_take's release CAS (slots below the head
     * have been read). */
    uint64_t limit = __atomic_load_n(&t->ring_head, __ATOMIC_ACQUIRE) + RING;
    uint64_t start = tail;
    while (tail < limit && t->backlog.n > 0)
        __atomic_store_n(&t->ring[tail++ % RING], tw__fifo_pop(&t->backlog), __ATOMIC_RELAXED);
    if (tail != start) {
        set_count(&t->n_backlog, t->backlog.n);
        /* release: publishes the slots and the nodes to ring_take. */
        __atomic_store_n(&t->ring_tail, tail, __ATOMIC_RELEASE);
    }
}

/* [C] The oldest waiting task (ring first, then backlog), or NULL. */
static tw_task *take_oldest(tw_team *t)
{
    tw_task *task = ring_take(t);
    if (!task && (task = tw__fifo_pop(&t->backlog)))
        set_count(&t->n_backlog, t->backlog.n);
    return task;
}

/* [C] Takes every task in the ring back to the head of the backlog, oldest
 * first (R1 holds: they are older than the backlog). Members may take from
 * the ring at the same moment: what they win, they run, as if they had
 * finished a moment earlier. */
static void ring_unfill(tw_team *t)
{
    tw__fifo back = {NULL, NULL, 0};
    tw_task *task;
    while ((task = ring_take(t)))
        tw__fifo_push(&back, task);
    if (!back.head)
        return;
    back.tail->next = t->backlog.head;
    t->backlog.head = back.head;
    if (!t->backlog.tail)
        t->backlog.tail = back.tail;
    t->backlog.n += back.n;
    set_count(&t->n_backlog, t->backlog.n);
}

/* ---- the incoming list (see the top of the file) --------------------------- */

/* [C] Moves incoming into the backlog, oldest first (O3). After the
 * coordinator quit, incoming belongs to kicking submitters: left alone. */
static void absorb(tw_team *t)
{
    tw_task *list, *oldest = NULL, *newest;
    size_t n = 0;
    if (!t->fast || t->coord_quit)
        return;
    /* relaxed: a hint that saves the exchange (a write to a line submitters
     * use) when nothing waits; a push it misses is seen by a later absorb or
     * kicked by its submitter (O2). */
    if (!__atomic_load_n(&t->incoming, __ATOMIC_RELAXED))
        return;
    /* acquire: pairs with the release of every push CAS (they form a release
     * sequence), so each node's fields and link are visible. */
    list = __atomic_exchange_n(&t->incoming, NULL, __ATOMIC_ACQUIRE);
    newest = list;
    while (list) { /* newest first: reverse, in one pass (each node is a cache miss) */
        tw_task *next = list->next;
        list->next = oldest;
        oldest = list;
        list = next;
        n++;
    }
    /* Splice oldest..newest after the backlog's tail. */
    if (t->backlog.tail)
        t->backlog.tail->next = oldest;
    else
        t->backlog.head = oldest;
    t->backlog.tail = newest;
    t->backlog.n += n;
    set_count(&t->n_backlog, t->backlog.n);
}

/* [C] O2: closes the fast path, then looks at incoming once more. The store
 * and the load are seq_cst: they pair with the submitter's push CAS and
 * re-load of `open` (tw__team_offer). If open is already closed, the store
 * that closed it was followed by such a load, and a submitter that saw it
 * open had pushed before that load: nothing more to do. */
static void close_fast(tw_team *t)
{
    if (!t->fast || !__atomic_load_n(&t->open, __ATOMIC_RELAXED)) /* only we write it */
        return;
    __atomic_store_n(&t->open, 0, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&t->incoming, __ATOMIC_SEQ_CST))
        absorb(t);
}

/* [C] Members the factory allows now (SIZE_MAX for a team without hooks). */
static size_t limit_of(tw_team *t)
{
    return t->fast ? t->hooks.limit(t->hooks.ctx) : SIZE_MAX;
}

/* [C] Members, idle and busy. */
static size_t members(const tw_team *t)
{
    return t->n_idle + t->n_busy;
}

/* [C] A task waits while every member is busy at the limit. */
static bool backed_up(tw_team *t)
{
    return t->fast && !t->coord_quit && waiting(t) > 0 && !t->idle && t->n_busy > 0 &&
           members(t) >= limit_of(t);
}

/* [C] O1: opens the fast path when a new task could only wait in the backlog
 * and a busy member is certain to come back to it; and tells the hooks that
 * tasks wait behind busy members at the limit (also while quitting, when the
 * fast path stays closed: a wedge then is a shutdown hang). seq_cst: a
 * submitter's seq_cst load that reads it is ordered before the store that
 * closes it again (see close_fast). */
static void maybe_open(tw_team *t)
{
    if (!backed_up(t))
        return;
    if (t->hooks.saturated)
        t->hooks.saturated(t->hooks.ctx);
    if (!t->quitting && !__atomic_load_n(&t->open, __ATOMIC_RELAXED))
        __atomic_store_n(&t->open, 1, __ATOMIC_SEQ_CST);
}

static member *recruit(tw_team *t);
static void assign(tw_team *t, member *m, tw_task *task);
static void push_idle(tw_team *t, member *m);

/* [C] Incoming teams: hands backlogged tasks, oldest first, to idle members,
 * then, if `grow`, to new ones while the factory gives them. */
static void pump(tw_team *t, bool grow)
{
    while (waiting(t) > 0) {
        member *m = t->idle;
        tw_task *task;
        if (m) {
            t->idle = m->next_idle;
            set_count(&t->n_idle, t->n_idle - 1);
        } else if (!grow || !(m = recruit(t))) {
            break;
        }
        if (!(task = take_oldest(t))) {
            /* Busy members emptied the ring meanwhile. A new member going
             * idle closes the fast path (O2), which may absorb more. */
            push_idle(t, m);
            close_fast(t);
            continue;
        }
        assign(t, m, task);
    }
}

/* [C] Unlinks task from f if it is there and was submitted with `ticket`
 * (its `owner`): a node that ran may have been freed and its address reused
 * by a newer submission, which carries another ticket. */
static bool unlink_task(tw__fifo *f, tw_task *task, void *ticket)
{
    tw_task **pp, *prev = NULL;
    for (pp = &f->head; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp == task && task->owner == ticket) {
            *pp = task->next;
            if (f->tail == task)
                f->tail = prev;
            f->n--;
            return true;
        }
    }
    return false;
}

/* Gives a node back as it was submitted. */
static void restore(tw_task *task)
{
    task->fn = task->inner_fn;
    task->arg = task->inner_arg;
    task->owner = NULL;
}

/* ---------------------------------------------------------------------------- */

static void fill(tw_team *t);

/* [C] Once quitting, with nobody busy and no message still to run (a
 * dispatch accepted just before the quit must find the coordinator alive),
 * the coordinator's job is over. A backlog with no worker left gets workers
 * if the factory still gives any; a task that can never run is reported,
 * never dropped in silence. Incoming is left alone: what is still there
 * belongs to submitters bound to kick (see the top of the file). Setting
 * coord_quit is the last access. */
static void maybe_quit_coordinator(tw_team *t)
{
    tw_task *task;
    tw_worker *coord = t->coord;
    if (!t->quitting || t->coord_quit || t->n_busy != 0 || t->n_idle != 0 ||
        (__atomic_load_n(&t->pending, __ATOMIC_ACQUIRE) & ~CLOSED) != 0)
        return;
    if (waiting(t) > 0) {
        fill(t);
        if (t->n_busy > 0)
            return; /* they drain the backlog, then retire */
    }
    while ((task = take_oldest(t))) {
        tw_diag_report(TW_DIAG_WARNING, TW_ESHUTDOWN, "tw_team_quit",
                       "a backlogged task cannot run: the team quit and no worker can be made");
        if (t->on_error)
            t->on_error(t->error_ctx, TW_ESHUTDOWN);
        if (task->flags & TW__TASK_HELD)
            tw__free(task, sizeof *task);
    }
    set_count(&t->n_backlog, 0);
    if (t->hooks.finished)
        t->hooks.finished(t->hooks.ctx);
    coord->ops->quit(coord);
    /* release: pairs with destroy's acquire load; nothing touches t after
     * (but a kick, which holds the coordinator context, may read it). */
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

/* [C] Hands task to busy member m. One task at a time: a member that took a
 * second one could sit on it while blocked in the first, with other workers
 * idle — the very wedge the pool watches for. */
static void hand(member *m, tw_task *task)
{
    m->task = task;
    /* Workers the team created refuse only after the team quit them, and
     * the team never quits a busy member, so submit cannot fail here. The
     * submit hands the task over (the worker's queue orders it). */
    m->worker->ops->submit(m->worker, &m->run);
}

/* [C] Makes m busy with task. */
static void assign(tw_team *t, member *m, tw_task *task)
{
    set_count(&t->n_busy, t->n_busy + 1);
    hand(m, task);
}

/* [C] Runs task now if a worker is free or can be made; else backlogs it. */
static void dispatch(tw_team *t, tw_task *task)
{
    member *m = t->idle;
    if (m) {
        t->idle = m->next_idle;
        set_count(&t->n_idle, t->n_idle - 1);
    } else if (!(m = recruit(t))) {
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

/* [C] Retires up to n members: idle ones now, busy ones when they finish.
 * Incoming teams first give waiting tasks to idle members (O3: an idle
 * member is never retired while older work waits). */
static void quit_idlers(tw_team *t, size_t n)
{
    if (t->fast) {
        absorb(t);
        pump(t, true);
    }
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

/* The node a synchronous dispatch refused, for the submitting thread. */
static __thread tw_task *refused_task __attribute__((tls_model("initial-exec")));

tw_task *tw__team_take_refused(void)
{
    tw_task *task = refused_task;
    refused_task = NULL;
    return task;
}

void tw__team_refuse_unrunnable(tw_team *t)
{
    t->refuse_unrunnable = true;
}

/* The dispatch message: the submitted task's own node. */
static int dispatch_msg(void *arg)
{
    tw_task *task = arg;
    tw_team *t = task->owner;
    task->owner = NULL;
    /* FIFO start: tasks already waiting go first — to idle members, then to
     * new ones if the factory gives them again — and a task that still finds
     * older ones waiting queues behind them. */
    absorb(t); /* O3 */
    pump(t, true);
    if (waiting(t) > 0) {
        tw__fifo_push(&t->backlog, task);
        set_count(&t->n_backlog, t->backlog.n);
    } else {
        dispatch(t, task);
    }
    maybe_open(t);
    if (t->refuse_unrunnable && members(t) == 0 && t->backlog.tail == task &&
        limit_of(t) > 0) {
        /* No member, and the factory failed to make one (it was not at its
         * limit: a limit of 0 pauses, and the task waits): nobody would ever
         * run it. It is the node this message just queued, so taking it back
         * is exact. */
        unlink_task(&t->backlog, task, NULL);
        set_count(&t->n_backlog, t->backlog.n);
        restore(task);
        refused_task = task;
    }
    message_done(t);
    return 0;
}

/* Counts a finished task. A member counts after its own bookkeeping (it is
 * idle, retired, or busy with the next task), and the count is released
 * after it: tw_team_stats_get loads the counts first (acquire), so a snapshot
 * that counts a task also sees its member no longer busy with it — for the
 * pool, whose snapshot is taken under the coordinator's lock, the two are a
 * single step anyway. completed before failed, loaded in the other order:
 * failed never exceeds completed in a snapshot. */
static void count_done(tw_team *t, int rc)
{
    __atomic_fetch_add(&t->completed, 1, __ATOMIC_RELEASE);
    if (rc != 0)
        __atomic_fetch_add(&t->failed, 1, __ATOMIC_RELEASE);
}

/* On the member's worker: the task, then the recycle message. A member of
 * an incoming team first takes its next task from the ready ring, as long
 * as there is one, without the coordinator: it stays busy, so only the counts
 * change, and it updates those itself, once it holds the next task. The last
 * task's result goes to the recycle, which counts it with the member's own
 * change of state. One task at a time still: the next is taken only once the
 * last has finished. */
static int run_member_task(void *arg)
{
    member *m = arg;
    tw_team *t = m->team;
    tw_task *task = m->task;
    for (;;) {
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
        if (!t->fast || !(task = ring_take(t)))
            break;
        count_done(t, rc); /* busy with the next one: no state changes */
    }
    probe(TW__TEAM_AT_RECYCLE, NULL);
    post_recycle(t, m); /* cannot be refused: the coordinator outlives members */
    return 0;
}

/* The recycle message: m finished a task. It takes the oldest waiting task
 * — on an incoming team, after moving incoming into an empty backlog — and
 * refills the ready ring; a member above the factory's limit (it was lowered)
 * takes none and retires. One that stops being busy first closes the fast
 * path (O2). The task is counted after the member's change of state
 * (count_done). */
static int recycle(void *arg)
{
    member *m = arg;
    tw_team *t = m->team;
    int result = m->result;
    bool over = t->fast && members(t) > limit_of(t);
    tw_task *next = NULL;
    if (!over) {
        next = take_oldest(t); /* backlog first, even when quitting */
        if (!next && t->fast) {
            /* Nothing waiting (members may empty the ring at any time, so
             * only this answer counts): take in incoming; before stopping
             * being busy, close the fast path (O2). */
            absorb(t);
            if (t->backlog.n == 0)
                close_fast(t);
            next = take_oldest(t);
        }
    }
    if (next) {
        hand(m, next); /* still busy: the count stays */
        count_done(t, result);
        if (t->fast) {
            if (t->idle)
                pump(t, false); /* absorbed tasks whose submitters are about to kick */
            ring_fill(t);
        }
        return 0;
    }
    /* m stops being busy (the fast path is closed: O2). Over the limit, what
     * closing finds waits for the members within it, or for a raised limit:
     * there is no idle member over the limit (tw__team_limits_changed). */
    if (over)
        close_fast(t);
    set_count(&t->n_busy, t->n_busy - 1);
    count_done(t, result);
    if (t->quitting || t->to_shrink > 0 || over) {
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
    if (t->fast && n > 0) { /* new members may be idle: O2, O3 */
        close_fast(t);
        absorb(t);
    }
    for (size_t i = 0; i < n; i++) {
        member *m = recruit(t);
        tw_task *next;
        if (!m)
            break;
        if ((next = take_oldest(t)))
            assign(t, m, next);
        else
            push_idle(t, m);
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
    close_fast(t); /* for good: maybe_open never opens while quitting */
    quit_idlers(t, t->n_idle + t->n_busy);
    message_done(t); /* quits the coordinator if nothing is left to run */
    return 0;
}

/* ---- internal API for the pool (coordinator context) ---------------------- */

bool tw__team_retire_if_idle(tw_team *t, tw_worker *w, size_t keep)
{
    member **pp;
    if (t->fast) { /* waiting work goes to idle members before any retires */
        absorb(t);
        pump(t, false);
    }
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

/* [C] Recruits workers for the backlog while the factory gives them. Leaves
 * incoming alone: maybe_quit_coordinator must (see there). */
static void fill(tw_team *t)
{
    while (waiting(t) > 0) {
        member *m = recruit(t);
        tw_task *task;
        if (!m)
            break;
        if (!(task = take_oldest(t))) { /* busy members emptied the ring meanwhile */
            push_idle(t, m);
            close_fast(t); /* O2; what it absorbs goes to the idle member first */
            pump(t, false);
            continue;
        }
        assign(t, m, task);
    }
}

void tw__team_grow_now(tw_team *t, size_t n)
{
    grow_now(t, n);
}

size_t tw__team_members(tw_team *t)
{
    return __atomic_load_n(&t->n_idle, __ATOMIC_RELAXED) +
           __atomic_load_n(&t->n_busy, __ATOMIC_RELAXED);
}

void tw__team_set_hooks(tw_team *t, const tw__team_hooks *hooks)
{
    t->hooks = *hooks;
    t->fast = hooks->limit != NULL;
}

int tw__team_offer(tw_team *t, tw_task *task, bool held, void *ticket)
{
    tw_task *head;
    if (!t->fast)
        return TW__TEAM_SLOW;
    if (__atomic_load_n(&t->quit, __ATOMIC_ACQUIRE))
        return TW_EQUIT;
    /* relaxed: a hint; the seq_cst load below decides. */
    if (!__atomic_load_n(&t->open, __ATOMIC_RELAXED))
        return TW__TEAM_SLOW;
    probe(TW__TEAM_AT_OFFER, task); /* tests only: hold it inside the race window */
    task->inner_fn = task->fn;
    task->inner_arg = task->arg;
    task->flags = held ? TW__TASK_HELD : 0;
    task->owner = ticket;
    head = __atomic_load_n(&t->incoming, __ATOMIC_RELAXED);
    do
        task->next = head;
    /* seq_cst: releases the node to the consumer's acquire exchange, and is
     * the store half of the submitter's side of the Dekker pairing. */
    while (!__atomic_compare_exchange_n(&t->incoming, &head, task, true, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
    /* seq_cst: the load half; pairs with close_fast's store then load. */
    return __atomic_load_n(&t->open, __ATOMIC_SEQ_CST) ? 0 : TW__TEAM_KICK;
}

int tw__team_kick(tw_team *t, tw_task *task, void *ticket)
{
    int rc = 0;
    if (t->coord_quit) {
        /* The team finished after the push: every node still in incoming
         * belongs to a kicking submitter. Each takes its own back. */
        tw_task *list = __atomic_exchange_n(&t->incoming, NULL, __ATOMIC_ACQUIRE);
        while (list) {
            tw_task *next = list->next;
            tw__fifo_push(&t->stranded, list);
            list = next;
        }
        if (!unlink_task(&t->stranded, task, ticket))
            return 0; /* absorbed, and ran, before the team finished */
        restore(task);
        return TW_EQUIT;
    }
    absorb(t);
    pump(t, true);
    if (members(t) == 0 && limit_of(t) > 0 && unlink_task(&t->backlog, task, ticket)) {
        /* No worker exists, and the factory failed to make one (it was not
         * at its limit: at a limit of 0 the task waits): nothing would ever
         * run it. */
        set_count(&t->n_backlog, t->backlog.n);
        restore(task);
        rc = TW__TEAM_ALONE;
    }
    maybe_open(t);
    if (t->quitting)
        maybe_quit_coordinator(t);
    return rc;
}

void tw__team_absorb(tw_team *t)
{
    if (!t->fast)
        return;
    absorb(t);
    pump(t, false);
    maybe_open(t);
}

void tw__team_limits_changed(tw_team *t)
{
    size_t limit;
    if (!t->fast)
        return;
    close_fast(t);
    absorb(t);
    limit = limit_of(t);
    if (members(t) > limit) {
        /* Lowered: members above the limit start nothing new, not even what
         * is lined up in the ring; idle ones go now, busy ones when their
         * task ends (recycle). So no idle member is left over the limit. */
        ring_unfill(t);
        while (t->idle && members(t) > limit) {
            member *m = t->idle;
            t->idle = m->next_idle;
            set_count(&t->n_idle, t->n_idle - 1);
            retire(t, m);
        }
    }
    pump(t, true); /* raised: the oldest waiting tasks get the new room */
    maybe_open(t);
    maybe_quit_coordinator(t);
}

bool tw__team_saturated(tw_team *t)
{
    return backed_up(t) || __atomic_load_n(&t->open, __ATOMIC_RELAXED);
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
    /* Closes post and counts the quit message in one step (see `pending`). */
    __atomic_fetch_add(&t->pending, CLOSED + 1, __ATOMIC_RELAXED);
    if (t->coord->ops->submit(t->coord, &t->quit_msg) != 0) {
        __atomic_fetch_sub(&t->pending, 1, __ATOMIC_RELAXED);
        return TW_EQUIT; /* the coordinator was quit from outside */
    }
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
    /* acquire, counts first: pairs with count_done, so the members' state
     * read after is at least as new as the completions counted. */
    out->failed = __atomic_load_n(&t->failed, __ATOMIC_ACQUIRE);
    out->completed = __atomic_load_n(&t->completed, __ATOMIC_ACQUIRE);
    out->idle = __atomic_load_n(&t->n_idle, __ATOMIC_RELAXED);
    out->busy = __atomic_load_n(&t->n_busy, __ATOMIC_RELAXED);
    out->backlog = __atomic_load_n(&t->n_backlog, __ATOMIC_RELAXED) + ring_count(t);
    return 0;
}

int tw_team_destroy(tw_team *t)
{
    if (!t)
        return TW_EINVAL;
    /* acquire: pairs with message_done, so nothing still touches the team. */
    if ((__atomic_load_n(&t->pending, __ATOMIC_ACQUIRE) & ~CLOSED) != 0 ||
        tw__team_members(t) != 0 ||
        __atomic_load_n(&t->n_backlog, __ATOMIC_RELAXED) != 0 ||
        __atomic_load_n(&t->incoming, __ATOMIC_ACQUIRE) != NULL || t->stranded.n != 0 ||
        ring_count(t) != 0)
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
