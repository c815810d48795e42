/*
 * Workers: the tw_worker interface on each kind (argument errors, submit, do,
 * quit, destroy, exclusive, name), then what each kind promises on top.
 *
 *   thread  FIFO, never overlapping, on one thread of its own; quit drains
 *           the queue and the thread exits (seen through a thread-specific
 *           destructor, not by destroy's join); quit from one of its own
 *           tasks; destroy from its own task is TW_EDEADLK; failing tasks
 *           reach the diagnostic hook; a thread that cannot start is TW_ESYS
 *           with nothing leaked.
 *   lock    runs at once in the caller's thread under the lock; re-entrant
 *           submits are flattened (run after the current task, not nested),
 *           per worker; threads are serialised; quit from inside a task; a
 *           submit waiting for the lock when quit comes is refused.
 *   memory  one task per perform; nested or overlapping performs run nothing;
 *           quit keeps accepted work performable; destroy releases queued
 *           tasks without running them.
 *
 * Other threads never call cmocka: tasks record what they saw and the main
 * thread asserts. Nothing sleeps to order threads: Events gate tasks, and a
 * bounded wait (HANG_LIMIT) only turns a hang into a failure.
 */
#include "harness.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "base/thread_start.h"

#define HANG_LIMIT 10.0
/* How long to watch for something that must not happen (can only miss a
 * bug, never invent one). */
#define QUIET_WINDOW 0.02

/* ==== recorders ============================================================ */

#define LOG_MAX 8192

/* A thread-safe append-only log of ints. */
typedef struct logbook {
    tw_lock lock;
    size_t n;
    int v[LOG_MAX];
} logbook;

static void log_add(logbook *l, int v)
{
    tw_test_log_add(&l->lock, &l->n, l->v, LOG_MAX, v);
}

static size_t log_len(logbook *l)
{
    return tw_test_log_len(&l->lock, &l->n);
}

static void expect_log(logbook *l, const int *want, size_t n)
{
    tw_test_expect_log(l->v, log_len(l), want, n);
}

/* Diagnostic reports, from any thread. */
#define DIAG_MAX 64
typedef struct diag_rec {
    tw_lock lock;
    size_t n;
    int codes[DIAG_MAX];
    enum tw_diag_kind kinds[DIAG_MAX];
    bool had_function;
    tw_event any;
} diag_rec;

static diag_rec diags;

static void diag_hook(void *ctx, const tw_diag *d)
{
    diag_rec *r = ctx;
    tw_lock_acquire(&r->lock);
    if (r->n < DIAG_MAX) {
        r->codes[r->n] = d->code;
        r->kinds[r->n] = d->kind;
    }
    if (d->function)
        r->had_function = true;
    r->n++;
    tw_lock_release(&r->lock);
    tw_event_set(&r->any);
}

static void diag_begin(void)
{
    memset(&diags, 0, sizeof diags);
    tw_set_diag_hook(diag_hook, &diags);
}

static size_t diag_count(void)
{
    size_t n;
    tw_lock_acquire(&diags.lock);
    n = diags.n;
    tw_lock_release(&diags.lock);
    return n;
}

static int teardown(void **state)
{
    (void)state;
    tw_set_diag_hook(NULL, NULL);
    tw__thread_fail_nth(0);
    return 0;
}

/* ==== tasks ================================================================= */

static int return_code_task(void *arg)
{
    return (int)(intptr_t)arg;
}

/* Logs an id. */
typedef struct log_arg {
    logbook *log;
    int id;
} log_arg;

static int log_task(void *arg)
{
    log_arg *a = arg;
    log_add(a->log, a->id);
    return 0;
}

/* ==== the interface on each kind ============================================= */

enum kind { K_MEMORY, K_THREAD, K_LOCK, K_COUNT };
static tw_lock kind_lock;

static tw_worker *make_worker(enum kind k)
{
    tw_worker *w = NULL;
    int rc = k == K_MEMORY   ? tw_memory_worker_create(&w)
             : k == K_THREAD ? tw_thread_worker_create(&w)
                             : tw_lock_worker_create(&kind_lock, &w);
    assert_int_equal(rc, 0);
    assert_non_null(w);
    return w;
}

/* Runs everything accepted so far (the worker not quit yet; a lock worker
 * has already run them). */
static void settle(enum kind k, tw_worker *w)
{
    tw_test_settle(w, k == K_MEMORY, k == K_THREAD, HANG_LIMIT);
}

static void test_worker_null_arguments(void **state)
{
    (void)state;
    tw_lock lock = TW_LOCK_INIT;
    assert_int_equal(tw_memory_worker_create(NULL), TW_EINVAL);
    assert_int_equal(tw_thread_worker_create(NULL), TW_EINVAL);
    assert_int_equal(tw_lock_worker_create(NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_lock_worker_create(&lock, NULL), TW_EINVAL);
    {
        tw_worker *w = NULL;
        assert_int_equal(tw_lock_worker_create(NULL, &w), TW_EINVAL);
        assert_null(w);
    }

    int ran = 0;
    tw_task t = TW_TASK_INIT(tw_test_count_task, &ran);
    tw_task nofn = TW_TASK_INIT(NULL, &ran);
    assert_int_equal(tw_worker_submit(NULL, &t), TW_EINVAL);
    assert_int_equal(tw_worker_do(NULL, tw_test_count_task, &ran), TW_EINVAL);
    assert_int_equal(tw_worker_quit(NULL), TW_EINVAL);
    assert_int_equal(tw_worker_destroy(NULL), TW_EINVAL);
    assert_false(tw_worker_exclusive(NULL));
    assert_non_null(tw_worker_name(NULL));
    assert_false(tw_memory_worker_perform(NULL, NULL));
    assert_int_equal(tw_memory_worker_pending(NULL), 0);

    for (int k = 0; k < K_COUNT; k++) {
        tw_worker *w = make_worker((enum kind)k);
        size_t live = tw_allocator_live();
        assert_int_equal(tw_worker_submit(w, NULL), TW_EINVAL);
        assert_int_equal(tw_worker_submit(w, &nofn), TW_EINVAL);
        assert_int_equal(tw_worker_do(w, NULL, &ran), TW_EINVAL);
        assert_int_equal(tw_allocator_live(), live);
        settle((enum kind)k, w);
        assert_int_equal(tw_worker_destroy(w), 0);
    }
    assert_int_equal(ran, 0);
}

static void test_worker_interface_each_kind(void **state)
{
    (void)state;
    const char *names[K_COUNT];
    for (int k = 0; k < K_COUNT; k++) {
        size_t live0 = tw_allocator_live();
        tw_worker *w = make_worker((enum kind)k);
        int ran = 0;
        tw_task node = TW_TASK_INIT(tw_test_count_task, &ran);

        names[k] = tw_worker_name(w);
        assert_non_null(names[k]);
        assert_true(names[k][0] != '\0');
        assert_true(tw_worker_exclusive(w));

        assert_int_equal(tw_worker_submit(w, &node), 0);
        assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
        settle((enum kind)k, w);
        assert_int_equal(__atomic_load_n(&ran, __ATOMIC_SEQ_CST), 2);

        assert_int_equal(tw_worker_quit(w), 0);

        /* Refused: the node is not taken (fields as they were), never run. */
        tw_task other = TW_TASK_INIT(tw_test_count_task, &ran);
        tw_task refused = TW_TASK_INIT(tw_test_count_task, &ran);
        refused.next = &other;
        assert_int_equal(tw_worker_submit(w, &refused), TW_EQUIT);
        assert_ptr_equal(refused.fn, tw_test_count_task);
        assert_ptr_equal(refused.arg, &ran);
        assert_ptr_equal(refused.next, &other);
        size_t live = tw_allocator_live();
        assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), TW_EQUIT);
        assert_int_equal(tw_allocator_live(), live); /* the refused node was freed */

        assert_int_equal(tw_worker_quit(w), TW_EQUIT);
        if (k == K_MEMORY)
            assert_false(tw_memory_worker_perform(w, NULL));
        assert_int_equal(tw_worker_destroy(w), 0);
        assert_int_equal(__atomic_load_n(&ran, __ATOMIC_SEQ_CST), 2);
        assert_int_equal(tw_allocator_live(), live0);
    }
    /* Each kind says which it is. */
    assert_string_not_equal(names[K_MEMORY], names[K_THREAD]);
    assert_string_not_equal(names[K_MEMORY], names[K_LOCK]);
    assert_string_not_equal(names[K_THREAD], names[K_LOCK]);
}

/* Destroy without quit: quits first (for a thread worker the queued work
 * still runs before destroy returns). */
static void test_worker_destroy_without_quit(void **state)
{
    (void)state;
    size_t live0 = tw_allocator_live();
    for (int k = 0; k < K_COUNT; k++) {
        tw_worker *w = make_worker((enum kind)k);
        int ran = 0;
        assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
        settle((enum kind)k, w);
        assert_int_equal(tw_worker_destroy(w), 0);
        assert_int_equal(ran, 1);
    }
    assert_int_equal(tw_allocator_live(), live0);
}

/* ==== thread worker ======================================================== */

typedef struct seq_state {
    int inside;      /* tasks running right now */
    int overlaps;    /* times a task found another one running */
    logbook log;
    pthread_t thread;
    int other_thread; /* tasks that ran on a thread other than the first one's */
    int first;
} seq_state;

typedef struct seq_arg {
    seq_state *s;
    int id;
} seq_arg;

static int seq_task(void *arg)
{
    seq_arg *a = arg;
    seq_state *s = a->s;
    if (__atomic_fetch_add(&s->inside, 1, __ATOMIC_SEQ_CST) != 0)
        __atomic_fetch_add(&s->overlaps, 1, __ATOMIC_SEQ_CST);
    if (!s->first) {
        s->thread = pthread_self();
        s->first = 1;
    } else if (!pthread_equal(s->thread, pthread_self())) {
        s->other_thread++;
    }
    log_add(&s->log, a->id);
    __atomic_fetch_sub(&s->inside, 1, __ATOMIC_SEQ_CST);
    return 0;
}

#define SUBMITTERS 3
#define PER_SUBMITTER 1000
#define MAIN_TASKS 2000

typedef struct submitter {
    tw_worker *w;
    seq_state *s;
    seq_arg args[PER_SUBMITTER];
    int id;
    int bad;
} submitter;

static void *submit_many(void *arg)
{
    submitter *sub = arg;
    for (int i = 0; i < PER_SUBMITTER; i++) {
        sub->args[i].s = sub->s;
        sub->args[i].id = (sub->id + 1) * 100000 + i;
        if (tw_worker_do(sub->w, seq_task, &sub->args[i]) != 0)
            sub->bad++;
    }
    return NULL;
}

static void test_thread_worker_fifo_no_overlap(void **state)
{
    (void)state;
    static seq_state s;
    static seq_arg args[MAIN_TASKS];
    static tw_task nodes[MAIN_TASKS];
    static submitter subs[SUBMITTERS];
    tw_worker *w = make_worker(K_THREAD);
    memset(&s, 0, sizeof s);

    /* Alone: strict submission order, mixing own nodes and tw_worker_do. */
    for (int i = 0; i < MAIN_TASKS; i++) {
        args[i].s = &s;
        args[i].id = i;
        if (i % 2) {
            tw_task_init(&nodes[i], seq_task, &args[i]);
            assert_int_equal(tw_worker_submit(w, &nodes[i]), 0);
        } else {
            assert_int_equal(tw_worker_do(w, seq_task, &args[i]), 0);
        }
    }
    settle(K_THREAD, w);
    assert_int_equal(log_len(&s.log), MAIN_TASKS);
    for (int i = 0; i < MAIN_TASKS; i++)
        if (s.log.v[i] != i)
            fail_msg("task %d ran at position %d", s.log.v[i], i);
    assert_false(pthread_equal(s.thread, pthread_self()));

    /* Several submitters: each one's tasks in its order, none overlapping. */
    s.log.n = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        subs[i].w = w;
        subs[i].s = &s;
        subs[i].id = i;
        subs[i].bad = 0;
    }
    tw_test_run_threads(SUBMITTERS, submit_many, subs, sizeof subs[0]);
    assert_int_equal(tw_worker_destroy(w), 0); /* runs what is queued, joins */
    for (int i = 0; i < SUBMITTERS; i++)
        assert_int_equal(subs[i].bad, 0);
    assert_int_equal(log_len(&s.log), SUBMITTERS * PER_SUBMITTER);
    int next[SUBMITTERS] = {0};
    for (size_t i = 0; i < s.log.n; i++) {
        int who = s.log.v[i] / 100000 - 1, idx = s.log.v[i] % 100000;
        if (idx != next[who])
            fail_msg("submitter %d: task %d ran where %d was due", who, idx, next[who]);
        next[who]++;
    }
    assert_int_equal(s.overlaps, 0);
    assert_int_equal(s.other_thread, 0);
}

/* Thread exit seen from inside the thread: a thread-specific value whose
 * destructor sets an Event when the thread ends. */
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static void exit_destructor(void *v)
{
    tw_event_set(v);
}

static void make_exit_key(void)
{
    pthread_key_create(&exit_key, exit_destructor);
}

static int watch_exit_task(void *arg)
{
    pthread_once(&exit_key_once, make_exit_key);
    pthread_setspecific(exit_key, arg);
    return 0;
}

static int gate_task(void *arg)
{
    tw_event_wait_timeout(arg, HANG_LIMIT);
    return 0;
}

static void test_thread_worker_quit_drains_then_exits(void **state)
{
    (void)state;
    tw_worker *w = make_worker(K_THREAD);
    tw_event exited = TW_EVENT_INIT, gate = TW_EVENT_INIT;
    logbook *log = calloc(1, sizeof *log);
    log_arg la[5];
    assert_non_null(log);
    assert_int_equal(tw_worker_do(w, watch_exit_task, &exited), 0);
    assert_int_equal(tw_worker_do(w, gate_task, &gate), 0);
    for (int i = 0; i < 5; i++) {
        la[i].log = log;
        la[i].id = i;
        assert_int_equal(tw_worker_do(w, log_task, &la[i]), 0);
    }
    assert_int_equal(tw_worker_quit(w), 0);
    int late = 0;
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &late), TW_EQUIT);
    assert_int_equal(tw_worker_quit(w), TW_EQUIT);
    /* Still gated: the queue is intact, the thread alive. */
    assert_int_equal(tw_event_wait_timeout(&exited, QUIET_WINDOW), TW_ETIMEDOUT);
    assert_int_equal(log_len(log), 0);
    tw_event_set(&gate);
    /* The thread ends by itself once the queue is empty (no destroy yet). */
    tw_test_wait_event(&exited, HANG_LIMIT);
    static const int want[] = {0, 1, 2, 3, 4};
    expect_log(log, want, 5);
    assert_int_equal(tw_worker_destroy(w), 0);
    assert_int_equal(late, 0);
    free(log);
}

typedef struct self_quit {
    tw_worker *w;
    tw_event gate;
    logbook log;
    int quit_rc, quit2_rc, submit_rc, destroy_rc;
    int late;
} self_quit;

static int self_quit_task(void *arg)
{
    self_quit *q = arg;
    tw_event_wait_timeout(&q->gate, HANG_LIMIT);
    log_add(&q->log, 0);
    q->quit_rc = tw_worker_quit(q->w);
    q->submit_rc = tw_worker_do(q->w, tw_test_count_task, &q->late);
    q->quit2_rc = tw_worker_quit(q->w);
    log_add(&q->log, 1);
    return 0;
}

static void test_thread_worker_quit_from_own_task(void **state)
{
    (void)state;
    self_quit *q = calloc(1, sizeof *q);
    tw_event exited = TW_EVENT_INIT;
    log_arg la[3];
    assert_non_null(q);
    q->w = make_worker(K_THREAD);
    q->quit_rc = q->quit2_rc = q->submit_rc = 12345;
    assert_int_equal(tw_worker_do(q->w, watch_exit_task, &exited), 0);
    assert_int_equal(tw_worker_do(q->w, self_quit_task, q), 0);
    for (int i = 0; i < 3; i++) { /* queued before the quit */
        la[i].log = &q->log;
        la[i].id = 10 + i;
        assert_int_equal(tw_worker_do(q->w, log_task, &la[i]), 0);
    }
    tw_event_set(&q->gate);
    tw_test_wait_event(&exited, HANG_LIMIT);
    static const int want[] = {0, 1, 10, 11, 12};
    expect_log(&q->log, want, 5);
    assert_int_equal(q->quit_rc, 0);
    assert_int_equal(q->submit_rc, TW_EQUIT);
    assert_int_equal(q->quit2_rc, TW_EQUIT);
    assert_int_equal(tw_worker_quit(q->w), TW_EQUIT);
    assert_int_equal(tw_worker_destroy(q->w), 0);
    assert_int_equal(q->late, 0);
    free(q);
}

static int self_destroy_task(void *arg)
{
    self_quit *q = arg;
    q->destroy_rc = tw_worker_destroy(q->w);
    return 0;
}

static void test_thread_worker_destroy_from_own_task(void **state)
{
    (void)state;
    self_quit *q = calloc(1, sizeof *q);
    tw_event done = TW_EVENT_INIT;
    assert_non_null(q);
    q->w = make_worker(K_THREAD);
    q->destroy_rc = 12345;
    assert_int_equal(tw_worker_do(q->w, self_destroy_task, q), 0);
    assert_int_equal(tw_worker_do(q->w, tw_test_set_event_task, &done), 0);
    tw_test_wait_event(&done, HANG_LIMIT);
    assert_int_equal(q->destroy_rc, TW_EDEADLK);
    /* It did nothing: the worker still takes and runs work. */
    int ran = 0;
    assert_int_equal(tw_worker_do(q->w, tw_test_count_task, &ran), 0);
    settle(K_THREAD, q->w);
    assert_int_equal(ran, 1);
    assert_int_equal(tw_worker_destroy(q->w), 0);
    free(q);
}

static void test_thread_worker_failing_task_reported(void **state)
{
    (void)state;
    tw_worker *w = make_worker(K_THREAD);
    int ran = 0;
    diag_begin();
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)-1000), 0);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)0), 0);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)TW_EBUSY), 0);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)7), 0);
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0); /* the worker goes on */
    assert_int_equal(tw_worker_destroy(w), 0);
    assert_int_equal(ran, 1);
    assert_int_equal(diag_count(), 3);
    assert_int_equal(diags.codes[0], -1000);
    assert_int_equal(diags.codes[1], TW_EBUSY);
    assert_int_equal(diags.codes[2], 7);
    assert_true(diags.had_function);
    tw_set_diag_hook(NULL, NULL);
}

static void test_thread_worker_start_failure(void **state)
{
    (void)state;
    size_t live0 = tw_allocator_live();
    tw_worker *w = NULL;
    tw__thread_fail_nth(1);
    assert_int_equal(tw_thread_worker_create(&w), TW_ESYS);
    assert_int_equal(tw_allocator_live(), live0);
    /* The injected failure was used up: the next start works. */
    w = make_worker(K_THREAD);
    int ran = 0;
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
    assert_int_equal(tw_worker_destroy(w), 0);
    assert_int_equal(ran, 1);
    assert_int_equal(tw_allocator_live(), live0);
}

/* A node the caller allocated (with malloc, outside twine) and that its own
 * task frees, or re-submits: the worker must not touch it after calling fn.
 * (Under ASan a touch after free is a report.) */
typedef struct self_node {
    tw_task task;
    tw_worker *w;
    int *count;
    int rounds;
    tw_event *done;
} self_node;

static int self_freeing_task(void *arg)
{
    self_node *n = arg;
    tw_event *done = n->done;
    int *count = n->count;
    __atomic_fetch_add(count, 1, __ATOMIC_SEQ_CST);
    if (--n->rounds > 0) {
        /* reuse: the same node goes round again */
        tw_task_init(&n->task, self_freeing_task, n);
        if (tw_worker_submit(n->w, &n->task) != 0)
            (*count) += 1000;
    } else {
        memset(n, 0xA5, sizeof *n);
        free(n);
        if (done)
            tw_event_set(done);
    }
    return 0;
}

static void test_worker_node_reused_or_freed_by_its_task(void **state)
{
    (void)state;
    for (int k = 0; k < K_COUNT; k++) {
        tw_worker *w = make_worker((enum kind)k);
        tw_event done = TW_EVENT_INIT;
        int count = 0;
        self_node *n = malloc(sizeof *n);
        assert_non_null(n);
        tw_task_init(&n->task, self_freeing_task, n);
        n->w = w;
        n->count = &count;
        n->rounds = 5;
        n->done = &done;
        assert_int_equal(tw_worker_submit(w, &n->task), 0);
        if (k == K_MEMORY)
            while (tw_memory_worker_perform(w, NULL))
                ;
        tw_test_wait_event(&done, HANG_LIMIT);
        assert_int_equal(tw_worker_destroy(w), 0);
        assert_int_equal(count, 5);
    }
}

/* ==== lock worker ========================================================== */

typedef struct lock_probe {
    tw_lock *lock;
    tw_worker *w;
    logbook log;
    bool locked;
    pthread_t thread;
    int inner_rc;
    int overlaps, inside;
} lock_probe;

static int probe_task(void *arg)
{
    lock_probe *p = arg;
    p->locked = tw_lock_locked(p->lock);
    p->thread = pthread_self();
    log_add(&p->log, 1);
    return 0;
}

static void test_lock_worker_runs_in_caller_under_lock(void **state)
{
    (void)state;
    tw_lock lock = TW_LOCK_INIT;
    lock_probe *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->lock = &lock;
    assert_int_equal(tw_lock_worker_create(&lock, &p->w), 0);
    assert_int_equal(tw_worker_submit(p->w, &(tw_task)TW_TASK_INIT(probe_task, p)), 0);
    /* Ran before submit returned, in this thread, holding the lock. */
    assert_int_equal(log_len(&p->log), 1);
    assert_true(p->locked);
    assert_true(pthread_equal(p->thread, pthread_self()));
    assert_false(tw_lock_locked(&lock));
    p->locked = false;
    assert_int_equal(tw_worker_do(p->w, probe_task, p), 0);
    assert_int_equal(log_len(&p->log), 2);
    assert_true(p->locked);
    assert_false(tw_lock_locked(&lock));
    assert_int_equal(tw_worker_destroy(p->w), 0);
    free(p);
}

static int reent_inner(void *arg)
{
    lock_probe *p = arg;
    log_add(&p->log, 3);
    if (!tw_lock_locked(p->lock))
        log_add(&p->log, -1);
    return 0;
}

static int reent_inner2(void *arg)
{
    lock_probe *p = arg;
    log_add(&p->log, 4);
    return 0;
}

static int reent_outer(void *arg)
{
    lock_probe *p = arg;
    log_add(&p->log, 1); /* outer start */
    p->inner_rc = tw_worker_do(p->w, reent_inner, p);
    if (tw_worker_do(p->w, reent_inner2, p) != 0)
        log_add(&p->log, -2);
    if (!pthread_equal(p->thread, pthread_self()))
        log_add(&p->log, -3);
    log_add(&p->log, 2); /* outer end */
    return 0;
}

static void test_lock_worker_reentrant_flattened(void **state)
{
    (void)state;
    tw_lock lock = TW_LOCK_INIT;
    lock_probe *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->lock = &lock;
    p->thread = pthread_self();
    p->inner_rc = 12345;
    assert_int_equal(tw_lock_worker_create(&lock, &p->w), 0);
    assert_int_equal(tw_worker_do(p->w, reent_outer, p), 0);
    /* outer-start, outer-end, then the re-entrant ones in order. */
    static const int want[] = {1, 2, 3, 4};
    expect_log(&p->log, want, 4);
    assert_int_equal(p->inner_rc, 0);
    assert_false(tw_lock_locked(&lock));
    /* Again: the frame was left clean. */
    p->log.n = 0;
    assert_int_equal(tw_worker_do(p->w, reent_outer, p), 0);
    expect_log(&p->log, want, 4);
    assert_int_equal(tw_worker_destroy(p->w), 0);
    free(p);
}

/* Two lock workers on different locks: a submit to the other worker from a
 * task runs at once (it is not re-entrant for that worker); a submit back to
 * the first one from there waits for the first one's current task. */
typedef struct two_workers {
    tw_lock la, lb;
    tw_worker *a, *b;
    logbook log;
} two_workers;

static int tw_a_later(void *arg)
{
    two_workers *t = arg;
    log_add(&t->log, 5); /* a's second task */
    return 0;
}

static int tw_b_task(void *arg)
{
    two_workers *t = arg;
    log_add(&t->log, 2); /* b start, a's lock still held */
    if (!tw_lock_locked(&t->la) || !tw_lock_locked(&t->lb))
        log_add(&t->log, -1);
    if (tw_worker_do(t->a, tw_a_later, t) != 0)
        log_add(&t->log, -2);
    log_add(&t->log, 3); /* b end */
    return 0;
}

static int tw_a_task(void *arg)
{
    two_workers *t = arg;
    log_add(&t->log, 1); /* a start */
    if (tw_worker_do(t->b, tw_b_task, t) != 0)
        log_add(&t->log, -3);
    log_add(&t->log, 4); /* a end */
    return 0;
}

static void test_lock_worker_reentrancy_is_per_worker(void **state)
{
    (void)state;
    two_workers *t = calloc(1, sizeof *t);
    assert_non_null(t);
    assert_int_equal(tw_lock_worker_create(&t->la, &t->a), 0);
    assert_int_equal(tw_lock_worker_create(&t->lb, &t->b), 0);
    assert_int_equal(tw_worker_do(t->a, tw_a_task, t), 0);
    static const int want[] = {1, 2, 3, 4, 5};
    expect_log(&t->log, want, 5);
    assert_false(tw_lock_locked(&t->la));
    assert_false(tw_lock_locked(&t->lb));
    assert_int_equal(tw_worker_destroy(t->a), 0);
    assert_int_equal(tw_worker_destroy(t->b), 0);
    free(t);
}

#define LOCK_THREADS 4
#define LOCK_ITERS 3000

typedef struct lock_shared {
    tw_lock lock;
    tw_worker *w;
    int inside, overlaps, unlocked;
    long total; /* only changed under the lock */
} lock_shared;

typedef struct lock_thread {
    lock_shared *s;
    int bad;
} lock_thread;

static int lock_count_task(void *arg)
{
    lock_shared *s = arg;
    if (__atomic_fetch_add(&s->inside, 1, __ATOMIC_SEQ_CST) != 0)
        __atomic_fetch_add(&s->overlaps, 1, __ATOMIC_SEQ_CST);
    if (!tw_lock_locked(&s->lock))
        __atomic_fetch_add(&s->unlocked, 1, __ATOMIC_SEQ_CST);
    s->total++;
    __atomic_fetch_sub(&s->inside, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void *lock_submitter(void *arg)
{
    lock_thread *lt = arg;
    for (int i = 0; i < LOCK_ITERS; i++) {
        int rc = i % 2 ? tw_worker_do(lt->s->w, lock_count_task, lt->s)
                       : tw_worker_submit(lt->s->w, &(tw_task)TW_TASK_INIT(lock_count_task, lt->s));
        if (rc != 0)
            lt->bad++;
    }
    return NULL;
}

static void test_lock_worker_threads_never_overlap(void **state)
{
    (void)state;
    lock_shared s;
    lock_thread lt[LOCK_THREADS];
    memset(&s, 0, sizeof s);
    memset(lt, 0, sizeof lt);
    assert_int_equal(tw_lock_worker_create(&s.lock, &s.w), 0);
    for (int i = 0; i < LOCK_THREADS; i++)
        lt[i].s = &s;
    tw_test_run_threads(LOCK_THREADS, lock_submitter, lt, sizeof lt[0]);
    for (int i = 0; i < LOCK_THREADS; i++)
        assert_int_equal(lt[i].bad, 0);
    assert_int_equal(s.overlaps, 0);
    assert_int_equal(s.unlocked, 0);
    assert_int_equal(s.total, (long)LOCK_THREADS * LOCK_ITERS);
    assert_int_equal(tw_worker_destroy(s.w), 0);
}

/* The lock taken by someone else: the submit waits for it. */
typedef struct lock_wait {
    tw_lock lock;
    tw_worker *w;
    tw_event about_to_submit, ran;
    int rc;
    bool locked_inside;
} lock_wait;

static int lock_wait_task(void *arg)
{
    lock_wait *lw = arg;
    lw->locked_inside = tw_lock_locked(&lw->lock);
    tw_event_set(&lw->ran);
    return 0;
}

static void *lock_wait_thread(void *arg)
{
    lock_wait *lw = arg;
    tw_event_set(&lw->about_to_submit);
    lw->rc = tw_worker_do(lw->w, lock_wait_task, lw);
    return NULL;
}

static void test_lock_worker_waits_for_lock(void **state)
{
    (void)state;
    lock_wait lw;
    memset(&lw, 0, sizeof lw);
    lw.rc = 12345;
    assert_int_equal(tw_lock_worker_create(&lw.lock, &lw.w), 0);
    assert_int_equal(tw_lock_acquire(&lw.lock), 0);
    pthread_t th = tw_test_start(lock_wait_thread, &lw);
    tw_test_wait_event(&lw.about_to_submit, HANG_LIMIT);
    assert_int_equal(tw_event_wait_timeout(&lw.ran, QUIET_WINDOW), TW_ETIMEDOUT);
    assert_int_equal(tw_lock_release(&lw.lock), 0);
    tw_test_join(th);
    assert_int_equal(lw.rc, 0);
    assert_true(tw_event_is_set(&lw.ran));
    assert_true(lw.locked_inside);
    assert_int_equal(tw_worker_destroy(lw.w), 0);
}

/* quit from inside a task: what was queued re-entrantly before the quit
 * still runs (in this submit); later submits are refused. */
static int lq_queued(void *arg)
{
    lock_probe *p = arg;
    log_add(&p->log, 3);
    return 0;
}

static int lq_outer(void *arg)
{
    lock_probe *p = arg;
    log_add(&p->log, 1);
    if (tw_worker_do(p->w, lq_queued, p) != 0)
        log_add(&p->log, -1);
    if (tw_worker_quit(p->w) != 0)
        log_add(&p->log, -2);
    p->inner_rc = tw_worker_do(p->w, lq_queued, p);
    log_add(&p->log, 2);
    return 0;
}

static void test_lock_worker_quit_from_task(void **state)
{
    (void)state;
    tw_lock lock = TW_LOCK_INIT;
    lock_probe *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->lock = &lock;
    assert_int_equal(tw_lock_worker_create(&lock, &p->w), 0);
    assert_int_equal(tw_worker_do(p->w, lq_outer, p), 0);
    static const int want[] = {1, 2, 3};
    expect_log(&p->log, want, 3);
    assert_int_equal(p->inner_rc, TW_EQUIT);
    assert_int_equal(tw_worker_quit(p->w), TW_EQUIT);
    assert_int_equal(tw_worker_do(p->w, lq_queued, p), TW_EQUIT);
    assert_int_equal(log_len(&p->log), 3);
    assert_false(tw_lock_locked(&lock));
    assert_int_equal(tw_worker_destroy(p->w), 0);
    free(p);
}

/* quit while another thread's submit waits for the lock (it has passed
 * everything before taking it): once the lock is free, that submit is
 * refused and its task never runs — nothing starts on a quit lock worker.
 * The waiter is seen through the lock's word, which is 2 once a thread is
 * parked on it (include/twine/sync.h). */
typedef struct quit_race {
    tw_lock lock;
    tw_worker *w;
    int ran;
    int rc;
} quit_race;

static void *quit_race_submit(void *arg)
{
    quit_race *q = arg;
    q->rc = tw_worker_do(q->w, tw_test_count_task, &q->ran);
    return NULL;
}

static void test_lock_worker_quit_refuses_waiting_submit(void **state)
{
    (void)state;
    quit_race q;
    memset(&q, 0, sizeof q);
    q.rc = 12345;
    assert_int_equal(tw_lock_worker_create(&q.lock, &q.w), 0);
    assert_int_equal(tw_lock_acquire(&q.lock), 0);
    pthread_t th = tw_test_start(quit_race_submit, &q);
    double end = tw_test_now() + HANG_LIMIT;
    while (__atomic_load_n(&q.lock.word, __ATOMIC_SEQ_CST) != 2) {
        if (tw_test_now() > end)
            fail_msg("the submitting thread never waited for the lock");
        sched_yield();
    }
    assert_int_equal(tw_worker_quit(q.w), 0);
    assert_int_equal(tw_lock_release(&q.lock), 0);
    tw_test_join(th);
    if (q.rc != TW_EQUIT || q.ran != 0)
        fail_msg("a submit waiting for the lock when the worker quit returned %d (%s) and its "
                 "task ran %d time(s): expected TW_EQUIT, never run",
                 q.rc, tw_err_name(q.rc), q.ran);
    assert_false(tw_lock_locked(&q.lock));
    assert_int_equal(tw_worker_destroy(q.w), 0);
}

static void test_lock_worker_failing_task_reported(void **state)
{
    (void)state;
    tw_lock lock = TW_LOCK_INIT;
    tw_worker *w;
    diag_begin();
    assert_int_equal(tw_lock_worker_create(&lock, &w), 0);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)-321), 0);
    assert_int_equal(diag_count(), 1);
    assert_int_equal(diags.codes[0], -321);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)0), 0);
    assert_int_equal(diag_count(), 1);
    assert_false(tw_lock_locked(&lock)); /* released however the task ended */
    assert_int_equal(tw_worker_destroy(w), 0);
    tw_set_diag_hook(NULL, NULL);
}

/* ==== memory worker ======================================================== */

static void test_memory_worker_one_task_per_perform(void **state)
{
    (void)state;
    tw_worker *w = make_worker(K_MEMORY);
    logbook *log = calloc(1, sizeof *log);
    log_arg la[3];
    tw_task nodes[3];
    assert_non_null(log);
    assert_false(tw_memory_worker_perform(w, NULL)); /* empty */
    assert_int_equal(tw_memory_worker_pending(w), 0);
    for (int i = 0; i < 3; i++) {
        la[i].log = log;
        la[i].id = i;
        if (i == 1) {
            tw_task_init(&nodes[i], log_task, &la[i]);
            assert_int_equal(tw_worker_submit(w, &nodes[i]), 0);
        } else {
            assert_int_equal(tw_worker_do(w, log_task, &la[i]), 0);
        }
        assert_int_equal(tw_memory_worker_pending(w), (size_t)i + 1);
    }
    assert_int_equal(log_len(log), 0); /* nothing runs until performed */
    for (int i = 0; i < 3; i++) {
        int result = 12345;
        assert_true(tw_memory_worker_perform(w, &result));
        assert_int_equal(result, 0);
        assert_int_equal(log_len(log), (size_t)i + 1);
        assert_int_equal(log->v[i], i);
        assert_int_equal(tw_memory_worker_pending(w), 2 - (size_t)i);
    }
    assert_false(tw_memory_worker_perform(w, NULL));
    assert_int_equal(tw_worker_destroy(w), 0);
    free(log);
}

static void test_memory_worker_result(void **state)
{
    (void)state;
    tw_worker *w = make_worker(K_MEMORY);
    int result = 0;
    diag_begin();
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)42), 0);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)TW_ETIMEDOUT), 0);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)-9), 0);
    assert_int_equal(tw_worker_do(w, return_code_task, (void *)(intptr_t)0), 0);
    assert_true(tw_memory_worker_perform(w, &result));
    assert_int_equal(result, 42);
    assert_true(tw_memory_worker_perform(w, &result));
    assert_int_equal(result, TW_ETIMEDOUT);
    assert_int_equal(diag_count(), 0); /* the caller took the results */
    /* Without a place for the result, a failure goes to the hook. */
    assert_true(tw_memory_worker_perform(w, NULL));
    assert_int_equal(diag_count(), 1);
    assert_int_equal(diags.codes[0], -9);
    assert_true(tw_memory_worker_perform(w, NULL));
    assert_int_equal(diag_count(), 1);
    result = 77;
    assert_false(tw_memory_worker_perform(w, &result));
    assert_int_equal(tw_worker_destroy(w), 0);
    tw_set_diag_hook(NULL, NULL);
}

static void test_memory_worker_quit_keeps_accepted(void **state)
{
    (void)state;
    tw_worker *w = make_worker(K_MEMORY);
    int ran = 0;
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
    assert_int_equal(tw_worker_submit(w, &(tw_task)TW_TASK_INIT(tw_test_count_task, &ran)), 0);
    assert_int_equal(tw_worker_quit(w), 0);
    assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), TW_EQUIT);
    assert_int_equal(tw_memory_worker_pending(w), 2);
    assert_true(tw_memory_worker_perform(w, NULL));
    assert_true(tw_memory_worker_perform(w, NULL));
    assert_int_equal(ran, 2);
    assert_false(tw_memory_worker_perform(w, NULL));
    assert_int_equal(tw_memory_worker_pending(w), 0);
    assert_int_equal(tw_worker_submit(w, &(tw_task)TW_TASK_INIT(tw_test_count_task, &ran)), TW_EQUIT);
    assert_false(tw_memory_worker_perform(w, NULL));
    assert_int_equal(tw_worker_quit(w), TW_EQUIT);
    assert_int_equal(tw_worker_destroy(w), 0);
    assert_int_equal(ran, 2);
}

typedef struct nested {
    tw_worker *w;
    bool nested_ran;
    int result;
    int later;
    size_t pending_inside;
    int submit_rc;
} nested;

static int nested_perform_task(void *arg)
{
    nested *n = arg;
    n->result = 12345;
    n->nested_ran = tw_memory_worker_perform(n->w, &n->result);
    n->submit_rc = tw_worker_do(n->w, tw_test_count_task, &n->later);
    n->pending_inside = tw_memory_worker_pending(n->w);
    return 0;
}

static void test_memory_worker_nested_perform(void **state)
{
    (void)state;
    nested n;
    memset(&n, 0, sizeof n);
    n.w = make_worker(K_MEMORY);
    assert_int_equal(tw_worker_do(n.w, nested_perform_task, &n), 0);
    assert_int_equal(tw_worker_do(n.w, tw_test_count_task, &n.later), 0);
    assert_true(tw_memory_worker_perform(n.w, NULL));
    assert_false(n.nested_ran);     /* the nested perform ran nothing */
    assert_int_equal(n.result, 12345);
    assert_int_equal(n.later, 0);   /* not even the task queued behind */
    assert_int_equal(n.submit_rc, 0);
    assert_int_equal(n.pending_inside, 2);
    assert_true(tw_memory_worker_perform(n.w, NULL));
    assert_true(tw_memory_worker_perform(n.w, NULL));
    assert_int_equal(n.later, 2);
    assert_false(tw_memory_worker_perform(n.w, NULL));
    assert_int_equal(tw_worker_destroy(n.w), 0);
}

/* A perform from a second thread while one is running runs nothing. */
typedef struct overlap {
    tw_worker *w;
    tw_event running, checked;
    int ran_second;
    bool other_performed;
} overlap;

static int overlap_task(void *arg)
{
    overlap *o = arg;
    tw_event_set(&o->running);
    tw_event_wait_timeout(&o->checked, HANG_LIMIT);
    return 0;
}

static void *overlap_thread(void *arg)
{
    overlap *o = arg;
    tw_event_wait_timeout(&o->running, HANG_LIMIT);
    o->other_performed = tw_memory_worker_perform(o->w, NULL);
    tw_event_set(&o->checked);
    return NULL;
}

static void test_memory_worker_overlapping_perform(void **state)
{
    (void)state;
    overlap o;
    memset(&o, 0, sizeof o);
    o.w = make_worker(K_MEMORY);
    assert_int_equal(tw_worker_do(o.w, overlap_task, &o), 0);
    assert_int_equal(tw_worker_do(o.w, tw_test_count_task, &o.ran_second), 0);
    pthread_t th = tw_test_start(overlap_thread, &o);
    assert_true(tw_memory_worker_perform(o.w, NULL));
    tw_test_join(th);
    assert_false(o.other_performed);
    assert_int_equal(o.ran_second, 0);
    assert_int_equal(tw_memory_worker_pending(o.w), 1);
    assert_true(tw_memory_worker_perform(o.w, NULL));
    assert_int_equal(o.ran_second, 1);
    assert_int_equal(tw_worker_destroy(o.w), 0);
}

static void test_memory_worker_not_a_memory_worker(void **state)
{
    (void)state;
    tw_lock lock = TW_LOCK_INIT;
    tw_worker *lw, *th;
    assert_int_equal(tw_lock_worker_create(&lock, &lw), 0);
    assert_false(tw_memory_worker_perform(lw, NULL));
    assert_int_equal(tw_memory_worker_pending(lw), 0);
    th = make_worker(K_THREAD);
    assert_false(tw_memory_worker_perform(th, NULL));
    assert_int_equal(tw_memory_worker_pending(th), 0);
    assert_int_equal(tw_worker_destroy(th), 0);
    assert_int_equal(tw_worker_destroy(lw), 0);
}

static void test_memory_worker_destroy_releases_queued(void **state)
{
    (void)state;
    size_t live0 = tw_allocator_live();
    tw_worker *w = make_worker(K_MEMORY);
    int ran = 0;
    tw_task mine[2] = {TW_TASK_INIT(tw_test_count_task, &ran), TW_TASK_INIT(tw_test_count_task, &ran)};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tw_worker_do(w, tw_test_count_task, &ran), 0);
    assert_int_equal(tw_worker_submit(w, &mine[0]), 0);
    assert_int_equal(tw_worker_submit(w, &mine[1]), 0);
    assert_true(tw_allocator_live() > live0);
    assert_int_equal(tw_memory_worker_pending(w), 5);
    assert_int_equal(tw_worker_destroy(w), 0);
    assert_int_equal(ran, 0);                     /* none of them ran */
    assert_int_equal(tw_allocator_live(), live0); /* twine's nodes freed */
    /* The caller's nodes are the caller's again. */
    assert_ptr_equal(mine[0].fn, tw_test_count_task);
    assert_ptr_equal(mine[1].arg, &ran);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_worker_null_arguments, teardown),
        cmocka_unit_test_teardown(test_worker_interface_each_kind, teardown),
        cmocka_unit_test_teardown(test_worker_destroy_without_quit, teardown),
        cmocka_unit_test_teardown(test_worker_node_reused_or_freed_by_its_task, teardown),
        cmocka_unit_test_teardown(test_thread_worker_fifo_no_overlap, teardown),
        cmocka_unit_test_teardown(test_thread_worker_quit_drains_then_exits, teardown),
        cmocka_unit_test_teardown(test_thread_worker_quit_from_own_task, teardown),
        cmocka_unit_test_teardown(test_thread_worker_destroy_from_own_task, teardown),
        cmocka_unit_test_teardown(test_thread_worker_failing_task_reported, teardown),
        cmocka_unit_test_teardown(test_thread_worker_start_failure, teardown),
        cmocka_unit_test_teardown(test_lock_worker_runs_in_caller_under_lock, teardown),
        cmocka_unit_test_teardown(test_lock_worker_reentrant_flattened, teardown),
        cmocka_unit_test_teardown(test_lock_worker_reentrancy_is_per_worker, teardown),
        cmocka_unit_test_teardown(test_lock_worker_threads_never_overlap, teardown),
        cmocka_unit_test_teardown(test_lock_worker_waits_for_lock, teardown),
        cmocka_unit_test_teardown(test_lock_worker_quit_from_task, teardown),
        cmocka_unit_test_teardown(test_lock_worker_quit_refuses_waiting_submit, teardown),
        cmocka_unit_test_teardown(test_lock_worker_failing_task_reported, teardown),
        cmocka_unit_test_teardown(test_memory_worker_one_task_per_perform, teardown),
        cmocka_unit_test_teardown(test_memory_worker_result, teardown),
        cmocka_unit_test_teardown(test_memory_worker_quit_keeps_accepted, teardown),
        cmocka_unit_test_teardown(test_memory_worker_nested_perform, teardown),
        cmocka_unit_test_teardown(test_memory_worker_overlapping_perform, teardown),
        cmocka_unit_test_teardown(test_memory_worker_not_a_memory_worker, teardown),
        cmocka_unit_test_teardown(test_memory_worker_destroy_releases_queued, teardown),
    };
    return cmocka_run_group_tests_name("worker", tests, NULL, NULL);
}
