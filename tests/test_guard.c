/* Unit tests for the scoped guards of twine/sync.h: TW_WITH and its spelled-out
 * forms release what they hold on every way out of the block. */
#include "harness.h"

#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- diagnostic hook: counts every report ----------------------------------- */

static struct {
    int calls; /* atomic: the hook may run on any thread */
    enum tw_diag_kind kind;
    int code;
    bool has_function, has_message;
} diag;

static void diag_count(void *ctx, const tw_diag *d)
{
    (void)ctx;
    if (__atomic_add_fetch(&diag.calls, 1, __ATOMIC_RELAXED) == 1) {
        diag.kind = d->kind;
        diag.code = d->code;
        diag.has_function = d->function && d->function[0];
        diag.has_message = d->message != NULL;
    }
}

static int diag_calls(void)
{
    return __atomic_load_n(&diag.calls, __ATOMIC_RELAXED);
}

static int install_hook(void **state)
{
    (void)state;
    memset(&diag, 0, sizeof diag);
    tw_set_diag_hook(diag_count, NULL);
    return 0;
}

static int remove_hook(void **state)
{
    (void)state;
    tw_set_diag_hook(NULL, NULL);
    return 0;
}

/* Correct use of a guard reports nothing. */
static void assert_no_reports(void)
{
    if (diag_calls() != 0)
        fail_msg("%d unexpected diagnostic report(s), first code %s", diag_calls(),
                 tw_err_name(diag.code));
}

/* ---- how much of each object the calling thread holds ------------------------ */

#define SEM_START 2 /* the semaphores below start with two tokens */

static int depth_lock(tw_lock *l)
{
    return tw_lock_locked(l) ? 1 : 0;
}

static int depth_rlock(tw_rlock *r)
{
    uint32_t n = tw_rlock_count(r);
    if ((n > 0) != tw_rlock_locked(r) || (n > 0) != tw_rlock_is_owned(r))
        return -1000; /* owned by somebody else, or inconsistent */
    return (int)n;
}

static int depth_sem(tw_sem *s)
{
    return SEM_START - (int)tw_sem_value(s);
}

static int depth_bsem(tw_bsem *b)
{
    return (int)tw_bsem_limit(b) - (int)tw_bsem_value(b);
}

/* The depth of the condition's lock; while it is held, notify must be allowed. */
static int depth_cond(tw_cond *c)
{
    int d;
    switch (c->kind) {
    case 1:
        d = depth_lock(c->lock);
        break;
    case 2:
        d = depth_rlock(c->lock);
        break;
    default:
        d = depth_rlock(&c->own);
        break;
    }
    if (d > 0 && tw_cond_notify(c, 1) != 0)
        return -2000;
    return d;
}

static void check_path(const char *type, const char *path, int ran, int inner, int after,
                       int depth_after)
{
    if (ran != 1)
        fail_msg("TW_WITH(%s) %s: body ran %d times", type, path, ran);
    if (inner != 1)
        fail_msg("TW_WITH(%s) %s: held depth %d inside the block", type, path, inner);
    if (after != 0)
        fail_msg("TW_WITH(%s) %s: the statement after the exit ran", type, path);
    if (depth_after != 0)
        fail_msg("TW_WITH(%s) %s: still held (depth %d) after leaving the block", type, path,
                 depth_after);
}

static void check_loop_path(const char *type, const char *path, int ran, int loops, int bad,
                            int after, int depth_after)
{
    if (ran != 3 || loops != 3)
        fail_msg("TW_WITH(%s) %s in a loop: body ran %d times, loop %d times (want 3, 3)",
                 type, path, ran, loops);
    if (bad != 0)
        fail_msg("TW_WITH(%s) %s in a loop: %d wrong depth(s) inside or between blocks",
                 type, path, bad);
    if (after != 0)
        fail_msg("TW_WITH(%s) %s in a loop: the statement after the exit ran", type, path);
    if (depth_after != 0)
        fail_msg("TW_WITH(%s) %s in a loop: still held after the loop", type, path);
}

/* For one guarded type, helpers that leave a TW_WITH block by `return`, and a
 * test that leaves it by every way: falling off the end, return, return from
 * a loop nested in the block, break, continue, goto, and break / continue
 * inside an enclosing loop (which must leave the block, not the loop). */
#define DEFINE_GUARD_EXIT_TEST(NAME, T, DEPTH, SETUP)                                   \
    static int NAME##_via_return(T *p, int *ran, int *inner)                           \
    {                                                                                  \
        TW_WITH(p) {                                                                   \
            (*ran)++;                                                                  \
            *inner = DEPTH(p);                                                         \
            if (*ran > 0)                                                              \
                return 7;                                                              \
            *inner = -1;                                                               \
        }                                                                              \
        return -1;                                                                     \
    }                                                                                  \
                                                                                       \
    static int NAME##_via_nested_return(T *p, int *ran, int *inner)                    \
    {                                                                                  \
        TW_WITH(p) {                                                                   \
            (*ran)++;                                                                  \
            *inner = DEPTH(p);                                                         \
            for (int i = 0; i < 10; i++) {                                             \
                for (int j = 0; j < 10; j++) {                                         \
                    if (i == 2 && j == 3)                                              \
                        return i * 10 + j;                                             \
                }                                                                      \
            }                                                                          \
            *inner = -1;                                                               \
        }                                                                              \
        return -1;                                                                     \
    }                                                                                  \
                                                                                       \
    static void test_guard_##NAME##_exit_paths(void **state)                           \
    {                                                                                  \
        T obj;                                                                         \
        T *p = &obj;                                                                   \
        int ran, inner, after, loops, bad;                                             \
        (void)state;                                                                   \
        SETUP(p);                                                                      \
        assert_int_equal(DEPTH(p), 0);                                                 \
                                                                                       \
        ran = 0, inner = -1, after = 0;                                                \
        TW_WITH(p) {                                                                   \
            ran++;                                                                     \
            inner = DEPTH(p);                                                          \
        }                                                                              \
        check_path(#T, "falling off the end", ran, inner, after, DEPTH(p));            \
                                                                                       \
        ran = 0, inner = -1, after = 0;                                                \
        assert_int_equal(NAME##_via_return(p, &ran, &inner), 7);                       \
        check_path(#T, "return", ran, inner, after, DEPTH(p));                         \
                                                                                       \
        ran = 0, inner = -1, after = 0;                                                \
        assert_int_equal(NAME##_via_nested_return(p, &ran, &inner), 23);               \
        check_path(#T, "return from nested loops", ran, inner, after, DEPTH(p));       \
                                                                                       \
        ran = 0, inner = -1, after = 0;                                                \
        TW_WITH(p) {                                                                   \
            ran++;                                                                     \
            inner = DEPTH(p);                                                          \
            if (ran > 0)                                                               \
                break;                                                                 \
            after++;                                                                   \
        }                                                                              \
        check_path(#T, "break", ran, inner, after, DEPTH(p));                          \
                                                                                       \
        ran = 0, inner = -1, after = 0;                                                \
        TW_WITH(p) {                                                                   \
            ran++;                                                                     \
            inner = DEPTH(p);                                                          \
            if (ran > 0)                                                               \
                continue;                                                              \
            after++;                                                                   \
        }                                                                              \
        check_path(#T, "continue", ran, inner, after, DEPTH(p));                       \
                                                                                       \
        ran = 0, inner = -1, after = 0;                                                \
        TW_WITH(p) {                                                                   \
            ran++;                                                                     \
            inner = DEPTH(p);                                                          \
            if (ran > 0)                                                               \
                goto out;                                                              \
            after++;                                                                   \
        }                                                                              \
        after += 100; /* skipped by the goto */                                        \
    out:                                                                               \
        check_path(#T, "goto", ran, inner, after, DEPTH(p));                           \
                                                                                       \
        ran = 0, loops = 0, bad = 0, after = 0;                                        \
        for (int i = 0; i < 3; i++) {                                                  \
            TW_WITH(p) {                                                               \
                ran++;                                                                 \
                bad += DEPTH(p) != 1;                                                  \
                if (ran > 0)                                                           \
                    break;                                                             \
                after++;                                                               \
            }                                                                          \
            loops++;                                                                   \
            bad += DEPTH(p) != 0;                                                      \
        }                                                                              \
        check_loop_path(#T, "break", ran, loops, bad, after, DEPTH(p));                \
                                                                                       \
        ran = 0, loops = 0, bad = 0, after = 0;                                        \
        for (int i = 0; i < 3; i++) {                                                  \
            TW_WITH(p) {                                                               \
                ran++;                                                                 \
                bad += DEPTH(p) != 1;                                                  \
                if (ran > 0)                                                           \
                    continue;                                                          \
                after++;                                                               \
            }                                                                          \
            loops++;                                                                   \
            bad += DEPTH(p) != 0;                                                      \
        }                                                                              \
        check_loop_path(#T, "continue", ran, loops, bad, after, DEPTH(p));             \
        assert_no_reports();                                                           \
    }

static void setup_lock(tw_lock *l)
{
    tw_lock_init(l);
}

static void setup_rlock(tw_rlock *r)
{
    tw_rlock_init(r);
}

static void setup_sem(tw_sem *s)
{
    assert_rc(tw_sem_init(s, SEM_START), 0);
}

static void setup_bsem(tw_bsem *b)
{
    assert_rc(tw_bsem_init(b, SEM_START), 0);
}

static void setup_cond_own(tw_cond *c)
{
    tw_cond_init(c);
}

static tw_lock cond_target_lock = TW_LOCK_INIT;
static tw_rlock cond_target_rlock = TW_RLOCK_INIT;

/* The bound-lock setups reset the shared target, so that one test that
 * leaves it held cannot hang the next. */
static void setup_cond_lock(tw_cond *c)
{
    tw_lock_init(&cond_target_lock);
    assert_rc(tw_cond_init_lock(c, &cond_target_lock), 0);
}

static void setup_cond_rlock(tw_cond *c)
{
    tw_rlock_init(&cond_target_rlock);
    assert_rc(tw_cond_init_rlock(c, &cond_target_rlock), 0);
}

DEFINE_GUARD_EXIT_TEST(lock, tw_lock, depth_lock, setup_lock)
DEFINE_GUARD_EXIT_TEST(rlock, tw_rlock, depth_rlock, setup_rlock)
DEFINE_GUARD_EXIT_TEST(sem, tw_sem, depth_sem, setup_sem)
DEFINE_GUARD_EXIT_TEST(bsem, tw_bsem, depth_bsem, setup_bsem)
DEFINE_GUARD_EXIT_TEST(cond_own, tw_cond, depth_cond, setup_cond_own)
DEFINE_GUARD_EXIT_TEST(cond_lock, tw_cond, depth_cond, setup_cond_lock)
DEFINE_GUARD_EXIT_TEST(cond_rlock, tw_cond, depth_cond, setup_cond_rlock)

/* The statically initialised forms work with guards too. */
static void test_guard_static_initialisers(void **state)
{
    static tw_lock l = TW_LOCK_INIT;
    static tw_rlock r = TW_RLOCK_INIT;
    static tw_sem s = TW_SEM_INIT(SEM_START);
    static tw_bsem b = TW_BSEM_INIT(SEM_START);
    static tw_lock cl_lock = TW_LOCK_INIT;
    static tw_rlock cr_rlock = TW_RLOCK_INIT;
    static tw_cond c = TW_COND_INIT;
    static tw_cond cl = TW_COND_INIT_LOCK(&cl_lock);
    static tw_cond cr = TW_COND_INIT_RLOCK(&cr_rlock);
    int seen = 0;
    (void)state;
    TW_WITH(&l) seen += depth_lock(&l);
    TW_WITH(&r) seen += depth_rlock(&r);
    TW_WITH(&s) seen += depth_sem(&s);
    TW_WITH(&b) seen += depth_bsem(&b);
    TW_WITH(&c) seen += depth_cond(&c);
    TW_WITH(&cl) seen += depth_cond(&cl);
    TW_WITH(&cr) seen += depth_cond(&cr);
    assert_int_equal(seen, 7);
    assert_int_equal(depth_lock(&l) + depth_rlock(&r) + depth_sem(&s) + depth_bsem(&b) +
                         depth_cond(&c) + depth_cond(&cl) + depth_cond(&cr),
                     0);
    assert_no_reports();
}

/* ---- nesting ---------------------------------------------------------------- */

static int nested_return(tw_lock *a, tw_lock *b, int *inner_ok)
{
    TW_WITH(a) {
        TW_WITH(b) {
            *inner_ok = tw_lock_locked(a) && tw_lock_locked(b);
            return 11;
        }
    }
    return -1;
}

static void test_guard_nested_two_locks(void **state)
{
    tw_lock a = TW_LOCK_INIT, b = TW_LOCK_INIT;
    int inner_ok = 0, between_ok = 0, runs = 0;
    (void)state;
    TW_WITH(&a) {
        TW_WITH(&b) {
            runs++;
            inner_ok = tw_lock_locked(&a) && tw_lock_locked(&b);
        }
        between_ok = tw_lock_locked(&a) && !tw_lock_locked(&b);
    }
    assert_int_equal(runs, 1);
    assert_true(inner_ok);
    assert_true(between_ok);
    assert_false(tw_lock_locked(&a));
    assert_false(tw_lock_locked(&b));

    inner_ok = 0;
    assert_int_equal(nested_return(&a, &b, &inner_ok), 11);
    assert_true(inner_ok);
    assert_false(tw_lock_locked(&a));
    assert_false(tw_lock_locked(&b));

    /* goto out of both blocks at once. */
    inner_ok = 0;
    TW_WITH(&a) {
        TW_WITH(&b) {
            inner_ok = tw_lock_locked(&a) && tw_lock_locked(&b);
            goto done;
        }
        inner_ok = 0;
    }
    inner_ok = 0;
done:
    assert_true(inner_ok);
    assert_false(tw_lock_locked(&a));
    assert_false(tw_lock_locked(&b));

    /* break leaves only the inner block. */
    between_ok = 0;
    TW_WITH(&a) {
        TW_WITH(&b) {
            break;
        }
        between_ok = tw_lock_locked(&a) && !tw_lock_locked(&b);
    }
    assert_true(between_ok);
    assert_false(tw_lock_locked(&a));
    assert_false(tw_lock_locked(&b));
    assert_no_reports();
}

static void test_guard_nested_mixed_types(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    tw_rlock r = TW_RLOCK_INIT;
    tw_sem s = TW_SEM_INIT(SEM_START);
    tw_bsem b = TW_BSEM_INIT(SEM_START);
    tw_cond c = TW_COND_INIT;
    int inner = 0;
    (void)state;
    TW_WITH(&l) TW_WITH(&r) TW_WITH(&s) TW_WITH(&b) TW_WITH(&c) {
        inner = depth_lock(&l) + depth_rlock(&r) + depth_sem(&s) + depth_bsem(&b) +
                depth_cond(&c);
    }
    assert_int_equal(inner, 5);
    assert_int_equal(depth_lock(&l) + depth_rlock(&r) + depth_sem(&s) + depth_bsem(&b) +
                         depth_cond(&c),
                     0);
    assert_no_reports();
}

static int nested_rlock_return(tw_rlock *r, uint32_t *depth_inside)
{
    TW_WITH(r) {
        TW_WITH(r) {
            TW_WITH(r) {
                *depth_inside = tw_rlock_count(r);
                return 3;
            }
        }
    }
    return -1;
}

static void test_guard_nested_same_rlock(void **state)
{
    tw_rlock r = TW_RLOCK_INIT;
    uint32_t outer = 0, inner = 0, between = 0, deep = 0;
    (void)state;
    TW_WITH(&r) {
        outer = tw_rlock_count(&r);
        TW_WITH(&r) {
            inner = tw_rlock_count(&r);
        }
        between = tw_rlock_count(&r);
    }
    assert_int_equal(outer, 1);
    assert_int_equal(inner, 2);
    assert_int_equal(between, 1);
    assert_int_equal(tw_rlock_count(&r), 0);
    assert_false(tw_rlock_locked(&r));

    assert_int_equal(nested_rlock_return(&r, &deep), 3);
    assert_int_equal(deep, 3);
    assert_int_equal(tw_rlock_count(&r), 0);
    assert_false(tw_rlock_locked(&r));

    /* goto out of two levels of the same RLock. */
    deep = 0;
    TW_WITH(&r) {
        TW_WITH(&r) {
            deep = tw_rlock_count(&r);
            goto out;
        }
    }
out:
    assert_int_equal(deep, 2);
    assert_int_equal(tw_rlock_count(&r), 0);
    assert_false(tw_rlock_locked(&r));

    /* A guard on an RLock the thread already holds adds one level only. */
    assert_rc(tw_rlock_acquire(&r), 0);
    TW_WITH(&r) {
        deep = tw_rlock_count(&r);
    }
    assert_int_equal(deep, 2);
    assert_int_equal(tw_rlock_count(&r), 1);
    assert_rc(tw_rlock_release(&r), 0);
    assert_false(tw_rlock_locked(&r));
    assert_no_reports();
}

/* ---- spelled-out forms ---------------------------------------------------------- */

static void test_guard_spellings(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    tw_rlock r = TW_RLOCK_INIT;
    tw_sem s = TW_SEM_INIT(SEM_START);
    void *untyped = &l;
    int seen = 0, ran = 0;
    (void)state;
    TW_WITH_LOCK(&l) {
        seen += depth_lock(&l);
    }
    assert_false(tw_lock_locked(&l));
    TW_WITH_RLOCK(&r) {
        seen += depth_rlock(&r);
        TW_WITH_RLOCK(&r) seen += depth_rlock(&r); /* 2 */
    }
    assert_int_equal(tw_rlock_count(&r), 0);
    TW_WITH_SEM(&s) {
        seen += depth_sem(&s);
    }
    assert_int_equal(tw_sem_value(&s), SEM_START);
    assert_int_equal(seen, 5);

    /* The spelled-out forms cast, so an untyped pointer works. */
    TW_WITH_LOCK(untyped) {
        ran++;
        if (tw_lock_locked(&l))
            break;
        ran += 100;
    }
    assert_int_equal(ran, 1);
    assert_false(tw_lock_locked(&l));
    untyped = &s;
    TW_WITH_SEM(untyped) {
        ran++;
        assert_int_equal(tw_sem_value(&s), SEM_START - 1);
    }
    assert_int_equal(ran, 2);
    assert_int_equal(tw_sem_value(&s), SEM_START);
    assert_no_reports();
}

/* ---- NULL ---------------------------------------------------------------------- */

static void expect_one_misuse(const char *what, int ran)
{
    if (ran != 0)
        fail_msg("TW_WITH(%s) ran its body", what);
    if (diag_calls() != 1)
        fail_msg("TW_WITH(%s): %d diagnostic reports, expected 1", what, diag_calls());
    assert_int_equal(diag.kind, TW_DIAG_MISUSE);
    assert_rc(diag.code, TW_EINVAL);
    assert_true(diag.has_function);
    assert_true(diag.has_message);
    memset(&diag, 0, sizeof diag);
}

static void test_guard_null(void **state)
{
    int ran;
    (void)state;
    ran = 0;
    TW_WITH((tw_lock *)NULL) ran++;
    expect_one_misuse("(tw_lock *)NULL", ran);

    ran = 0;
    TW_WITH((tw_rlock *)NULL) {
        ran++;
    }
    expect_one_misuse("(tw_rlock *)NULL", ran);

    ran = 0;
    TW_WITH((tw_sem *)NULL) {
        ran++;
    }
    expect_one_misuse("(tw_sem *)NULL", ran);

    ran = 0;
    TW_WITH((tw_bsem *)NULL) {
        ran++;
    }
    expect_one_misuse("(tw_bsem *)NULL", ran);

    ran = 0;
    TW_WITH((tw_cond *)NULL) {
        ran++;
    }
    expect_one_misuse("(tw_cond *)NULL", ran);

    ran = 0;
    TW_WITH_LOCK(NULL) {
        ran++;
    }
    expect_one_misuse("TW_WITH_LOCK(NULL)", ran);

    ran = 0;
    TW_WITH_RLOCK(NULL) {
        ran++;
    }
    expect_one_misuse("TW_WITH_RLOCK(NULL)", ran);

    ran = 0;
    TW_WITH_SEM(NULL) {
        ran++;
    }
    expect_one_misuse("TW_WITH_SEM(NULL)", ran);

    /* A skipped block inside a loop does not end the loop or repeat a report. */
    ran = 0;
    for (int i = 0; i < 3; i++) {
        TW_WITH((tw_lock *)NULL) {
            ran += 100;
        }
        ran++;
    }
    assert_int_equal(ran, 3);
    assert_int_equal(diag_calls(), 3);
}

/* ---- guards and other threads ---------------------------------------------------- */

struct try_peek {
    tw_lock *lock;
    int rc;
};

static void *try_peek_main(void *arg)
{
    struct try_peek *t = arg;
    t->rc = tw_lock_try_acquire(t->lock);
    if (t->rc == 0)
        tw_lock_release(t->lock);
    return NULL;
}

/* While a thread is inside TW_WITH(&l), l is held against every other thread. */
static void test_guard_excludes_other_threads(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    struct try_peek inside = {.lock = &l, .rc = -100}, outside = {.lock = &l, .rc = -100};
    (void)state;
    TW_WITH(&l) {
        tw_test_join(tw_test_start(try_peek_main, &inside));
    }
    tw_test_join(tw_test_start(try_peek_main, &outside));
    assert_rc(inside.rc, TW_EBUSY);
    assert_rc(outside.rc, 0);
    assert_false(tw_lock_locked(&l));
    assert_no_reports();
}

struct guard_worker {
    tw_lock *lock;
    long *counter;
    int *inside;
    uint64_t start, n;
    int overlaps;
};

static void *guard_worker_main(void *arg)
{
    struct guard_worker *w = arg;
    for (uint64_t i = w->start; i < w->start + w->n; i++) {
        TW_WITH(w->lock) {
            if (__atomic_add_fetch(w->inside, 1, __ATOMIC_RELAXED) != 1)
                w->overlaps++;
            (*w->counter)++;
            __atomic_sub_fetch(w->inside, 1, __ATOMIC_RELAXED);
            if (i % 3 == 0)
                continue; /* leaves the block, not the loop */
            if (i % 3 == 1)
                break;
        }
    }
    return NULL;
}

/* Threads that leave their guarded blocks by falling off, break and continue
 * never overlap and never leave the lock held. */
static void test_guard_mutual_exclusion(void **state)
{
    enum { N = 4 };
    tw_lock l = TW_LOCK_INIT;
    long counter = 0;
    int inside = 0;
    struct guard_worker w[N];
    uint64_t n = tw_test_scaled(10000, 300);
    (void)state;
    /* Precondition, one exit kind at a time on the calling thread: a guard
     * that leaked the lock would otherwise hang the threads below. */
    for (uint64_t k = 0; k < 3; k++) {
        struct guard_worker one = {.lock = &l, .counter = &counter, .inside = &inside,
                                   .start = k, .n = 1};
        guard_worker_main(&one);
        assert_false(tw_lock_locked(&l));
    }
    assert_int_equal(counter, 3);
    counter = 0;
    for (int i = 0; i < N; i++)
        w[i] = (struct guard_worker){.lock = &l, .counter = &counter, .inside = &inside, .n = n};
    tw_test_run_threads_bounded(N, guard_worker_main, w, sizeof w[0], "guard_worker_main");
    for (int i = 0; i < N; i++)
        assert_int_equal(w[i].overlaps, 0);
    assert_int_equal(counter, (long)(n * N));
    assert_false(tw_lock_locked(&l));
    assert_no_reports();
}

struct sem_guard_user {
    tw_sem *sem;
    tw_test_tally *started, *entered;
    uint32_t value_inside;
};

static void *sem_guard_user_main(void *arg)
{
    struct sem_guard_user *u = arg;
    tw_test_tally_add(u->started);
    TW_WITH(u->sem) {
        u->value_inside = tw_sem_value(u->sem);
        tw_test_tally_add(u->entered);
    }
    return NULL;
}

/* TW_WITH on an empty semaphore waits for a token, and gives it back. */
static void test_guard_sem_waits_for_token(void **state)
{
    tw_sem s = TW_SEM_INIT(0);
    tw_test_tally started, entered;
    struct sem_guard_user u = {.sem = &s, .value_inside = 99};
    pthread_t t;
    (void)state;
    /* Precondition: the guard gives the token back. */
    assert_rc(tw_sem_release(&s, 1), 0);
    TW_WITH(&s) {
        assert_int_equal(tw_sem_value(&s), 0);
    }
    assert_int_equal(tw_sem_value(&s), 1);
    assert_rc(tw_sem_try_acquire(&s), 0);
    tw_test_tally_init(&started);
    tw_test_tally_init(&entered);
    u.started = &started;
    u.entered = &entered;
    t = tw_test_start(sem_guard_user_main, &u);
    assert_true(tw_test_tally_wait(&started, 1, 30.0));
    /* Bounded poll until the thread waits inside the semaphore (documented
     * `waiters` field); no verdict depends on it. */
    for (double until = tw_test_now() + 2.0;
         tw_test_now() < until && __atomic_load_n(&s.waiters, __ATOMIC_RELAXED) == 0;)
        sched_yield();
    assert_int_equal(tw_test_tally_get(&entered), 0);
    assert_rc(tw_sem_release(&s, 1), 0);
    tw_test_must_reach(&entered, 1, 30.0, "TW_WITH(tw_sem *) after release");
    tw_test_join(t);
    assert_int_equal(tw_test_tally_get(&entered), 1);
    assert_int_equal(u.value_inside, 0);
    assert_int_equal(tw_sem_value(&s), 1);
    tw_test_tally_destroy(&started);
    tw_test_tally_destroy(&entered);
    assert_no_reports();
}

/* The usage in sync.h's essay: a consumer waits on a Condition inside
 * TW_WITH, a producer changes the state and notifies inside TW_WITH. */
struct cond_consumer {
    tw_cond *cond;
    int *ready;
    tw_test_tally *entered, *left;
    int seen, wait_errors;
};

static void *cond_consumer_main(void *arg)
{
    struct cond_consumer *c = arg;
    TW_WITH(c->cond) {
        tw_test_tally_add(c->entered);
        while (!*c->ready) {
            if (tw_cond_wait(c->cond) != 0)
                c->wait_errors++;
        }
        c->seen = *c->ready;
    }
    tw_test_tally_add(c->left);
    return NULL;
}

static void test_guard_cond_producer_consumer(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    tw_cond c = TW_COND_INIT_LOCK(&l);
    int ready = 0;
    tw_test_tally entered, left;
    struct cond_consumer con = {.cond = &c, .ready = &ready};
    pthread_t t;
    (void)state;
    /* Precondition: the guard gives the lock back, else the threads below hang. */
    TW_WITH(&c) {
        assert_true(tw_lock_locked(&l));
    }
    assert_false(tw_lock_locked(&l));
    tw_test_tally_init(&entered);
    tw_test_tally_init(&left);
    con.entered = &entered;
    con.left = &left;
    t = tw_test_start(cond_consumer_main, &con);
    assert_true(tw_test_tally_wait(&entered, 1, 30.0));
    TW_WITH(&c) {
        ready = 42;
        assert_rc(tw_cond_notify_all(&c), 0);
    }
    tw_test_must_reach(&left, 1, 30.0, "consumer after notify");
    tw_test_join(t);
    assert_int_equal(con.seen, 42);
    assert_int_equal(con.wait_errors, 0);
    assert_false(tw_lock_locked(&l));
    tw_test_tally_destroy(&entered);
    tw_test_tally_destroy(&left);
    assert_no_reports();
}

#define GUARD_TEST(f) cmocka_unit_test_setup_teardown(f, install_hook, remove_hook)

int main(void)
{
    const struct CMUnitTest tests[] = {
        GUARD_TEST(test_guard_lock_exit_paths),
        GUARD_TEST(test_guard_rlock_exit_paths),
        GUARD_TEST(test_guard_sem_exit_paths),
        GUARD_TEST(test_guard_bsem_exit_paths),
        GUARD_TEST(test_guard_cond_own_exit_paths),
        GUARD_TEST(test_guard_cond_lock_exit_paths),
        GUARD_TEST(test_guard_cond_rlock_exit_paths),
        GUARD_TEST(test_guard_static_initialisers),
        GUARD_TEST(test_guard_nested_two_locks),
        GUARD_TEST(test_guard_nested_mixed_types),
        GUARD_TEST(test_guard_nested_same_rlock),
        GUARD_TEST(test_guard_spellings),
        GUARD_TEST(test_guard_null),
        GUARD_TEST(test_guard_excludes_other_threads),
        GUARD_TEST(test_guard_mutual_exclusion),
        GUARD_TEST(test_guard_sem_waits_for_token),
        GUARD_TEST(test_guard_cond_producer_consumer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
