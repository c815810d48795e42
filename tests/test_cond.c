/*
 * Condition: the zeroed Condition with its own RLock, binding to a Lock or an
 * RLock, TW_EPERM without the lock, argument errors, timed waits, full release
 * of a recursively held RLock, notify(n) waking exactly n waiters oldest first,
 * notify_all, wait_for, several Conditions on one lock, producer/consumer and
 * ping-pong without lost wake-ups, run and the guard.
 *
 * Ordering between threads comes from the Condition under test itself: a
 * waiter registers in shared state under the lock and then waits, and since a
 * waiter is enqueued atomically with releasing the lock, a thread that then
 * holds the lock knows the waiter is queued. The waiters report on a second
 * Condition sharing the same lock, which the main thread waits on.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* Exactly representable in binary, so the nanosecond deadline is exact. */
#define SHORT_TIMEOUT 0.0625
/* How long to watch for a waiter that should not wake. A correct condition
 * never wakes it, so the window can only miss a bug, never invent one. */
#define QUIET_WINDOW 0.05
/* Bound that turns a hang into a failure message. */
#define HANG_LIMIT 10.0

enum kind { KIND_OWN, KIND_LOCK, KIND_RLOCK };

static const char *kind_name(enum kind k)
{
    return k == KIND_OWN ? "own rlock" : k == KIND_LOCK ? "tw_lock" : "tw_rlock";
}

typedef struct fixture {
    enum kind kind;
    tw_lock l;
    tw_rlock r;
    tw_cond c;   /* the condition under test */
    tw_cond reg; /* shares c's lock (KIND_LOCK and KIND_RLOCK only) */
} fixture;

static void fixture_init(fixture *f, enum kind k)
{
    memset(f, 0, sizeof *f);
    f->kind = k;
    tw_lock_init(&f->l);
    tw_rlock_init(&f->r);
    switch (k) {
    case KIND_OWN:
        tw_cond_init(&f->c);
        break;
    case KIND_LOCK:
        assert_int_equal(tw_cond_init_lock(&f->c, &f->l), 0);
        assert_int_equal(tw_cond_init_lock(&f->reg, &f->l), 0);
        break;
    case KIND_RLOCK:
        assert_int_equal(tw_cond_init_rlock(&f->c, &f->r), 0);
        assert_int_equal(tw_cond_init_rlock(&f->reg, &f->r), 0);
        break;
    }
}

/* Releases `depth` times (each 0), then once more, which must be TW_EPERM:
 * proves the caller held the lock at exactly that depth. */
static void release_expect_depth(fixture *f, int depth)
{
    if (f->kind == KIND_RLOCK)
        assert_int_equal(tw_rlock_count(&f->r), (uint32_t)depth);
    if (f->kind == KIND_LOCK)
        assert_true(tw_lock_locked(&f->l));
    for (int i = 0; i < depth; i++)
        assert_int_equal(tw_cond_release(&f->c), 0);
    assert_int_equal(tw_cond_release(&f->c), TW_EPERM);
    if (f->kind == KIND_LOCK)
        assert_false(tw_lock_locked(&f->l));
    if (f->kind == KIND_RLOCK)
        assert_false(tw_rlock_locked(&f->r));
}

/* ---- predicates and waiting helpers -------------------------------------- */

typedef struct at_least {
    const int *value;
    int target;
} at_least;

static bool pred_at_least(void *arg)
{
    const at_least *a = arg;
    return *a->value >= a->target;
}

static bool pred_flag(void *arg)
{
    return *(const int *)arg != 0;
}

/* Holding c's lock: waits on c until *value >= target. */
static void await_value(tw_cond *c, const int *value, int target)
{
    at_least a = {value, target};
    int rc = tw_cond_wait_for(c, pred_at_least, &a, HANG_LIMIT);
    if (rc != 0)
        fail_msg("waited %.0f s for a count to reach %d; it is %d (rc %s)", HANG_LIMIT, target,
                 *value, tw_err_name(rc));
}

/* Holding c's lock: asserts that *value stays below limit for a while. */
static void assert_stays_below(tw_cond *c, const int *value, int limit)
{
    at_least a = {value, limit};
    int rc = tw_cond_wait_for(c, pred_at_least, &a, QUIET_WINDOW);
    if (rc != TW_ETIMEDOUT)
        fail_msg("a count reached %d (now %d) though nothing should have woken (rc %s)", limit,
                 *value, tw_err_name(rc));
}

/* ---- probe: what another thread sees while the main thread holds the lock */

typedef struct probe {
    tw_cond *c;
    bool full; /* also try release / notify / wait (not for a plain Lock, where
                * any thread may release and notify) */
    int try_rc, release_rc, notify_rc, notify_all_rc, wait_rc;
} probe;

static void *probe_main(void *arg)
{
    probe *p = arg;
    p->try_rc = tw_cond_try_acquire(p->c);
    if (p->try_rc == 0)
        tw_cond_release(p->c);
    if (p->full) {
        p->release_rc = tw_cond_release(p->c);
        p->notify_rc = tw_cond_notify(p->c, 1);
        p->notify_all_rc = tw_cond_notify_all(p->c);
        p->wait_rc = tw_cond_wait_timeout(p->c, 0.0);
    }
    return NULL;
}

static probe run_probe(tw_cond *c, bool full)
{
    probe p;
    memset(&p, 0, sizeof p);
    p.c = c;
    p.full = full;
    tw_test_join(tw_test_start(probe_main, &p));
    return p;
}

/* ---- basic state --------------------------------------------------------- */

static void test_cond_zeroed_uses_own_rlock(void **state)
{
    static tw_cond stat_cond = TW_COND_INIT;
    tw_cond c;
    tw_lock l = TW_LOCK_INIT;
    probe p;
    (void)state;

    memset(&c, 0, sizeof c);
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_int_equal(tw_cond_acquire(&c), 0); /* recursive, like Python's Condition() */
    assert_int_equal(tw_cond_try_acquire(&c), 0);
    assert_int_equal(tw_cond_acquire_timeout(&c, 0.0), 0);
    assert_int_equal(tw_cond_notify(&c, 1), 0);
    assert_int_equal(tw_cond_notify(&c, 0), 0);
    assert_int_equal(tw_cond_notify_all(&c), 0);
    assert_int_equal(tw_cond_wait_timeout(&c, 0.0), TW_ETIMEDOUT);

    /* Another thread: the lock is taken, and it is not the owner. */
    p = run_probe(&c, true);
    assert_int_equal(p.try_rc, TW_EBUSY);
    assert_int_equal(p.release_rc, TW_EPERM);
    assert_int_equal(p.notify_rc, TW_EPERM);
    assert_int_equal(p.notify_all_rc, TW_EPERM);
    assert_int_equal(p.wait_rc, TW_EPERM);

    /* Depth 4, restored by the timed wait above. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(tw_cond_release(&c), 0);
    assert_int_equal(tw_cond_release(&c), TW_EPERM);

    p = run_probe(&c, false);
    assert_int_equal(p.try_rc, 0);

    /* The static initializer. */
    assert_int_equal(tw_cond_acquire(&stat_cond), 0);
    assert_int_equal(tw_cond_acquire(&stat_cond), 0);
    assert_int_equal(tw_cond_wait_timeout(&stat_cond, 0.0), TW_ETIMEDOUT);
    assert_int_equal(tw_cond_release(&stat_cond), 0);
    assert_int_equal(tw_cond_release(&stat_cond), 0);
    assert_int_equal(tw_cond_release(&stat_cond), TW_EPERM);

    /* tw_cond_init undoes a binding: the condition uses its own RLock again. */
    assert_int_equal(tw_cond_init_lock(&c, &l), 0);
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_true(tw_lock_locked(&l));
    assert_int_equal(tw_cond_release(&c), 0);
    tw_cond_init(&c);
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_false(tw_lock_locked(&l));
    assert_int_equal(tw_cond_acquire(&c), 0); /* recursive again */
    assert_int_equal(tw_cond_release(&c), 0);
    assert_int_equal(tw_cond_release(&c), 0);
    assert_int_equal(tw_cond_release(&c), TW_EPERM);
}

static void test_cond_bound_to_lock(void **state)
{
    static tw_lock stat_lock = TW_LOCK_INIT;
    static tw_cond stat_cond = TW_COND_INIT_LOCK(&stat_lock);
    tw_lock l = TW_LOCK_INIT;
    tw_cond c;
    probe p;
    (void)state;

    assert_int_equal(tw_cond_init_lock(&c, &l), 0);
    assert_false(tw_lock_locked(&l));
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_true(tw_lock_locked(&l));
    assert_int_equal(tw_cond_try_acquire(&c), TW_EBUSY); /* a Lock is not recursive */
    assert_int_equal(tw_lock_try_acquire(&l), TW_EBUSY);
    p = run_probe(&c, false);
    assert_int_equal(p.try_rc, TW_EBUSY);
    assert_int_equal(tw_cond_release(&c), 0);
    assert_false(tw_lock_locked(&l));
    assert_int_equal(tw_cond_release(&c), TW_EPERM);

    /* Holding the lock directly counts as holding the condition's lock. */
    assert_int_equal(tw_lock_acquire(&l), 0);
    assert_int_equal(tw_cond_notify(&c, 1), 0);
    assert_int_equal(tw_cond_notify_all(&c), 0);
    assert_int_equal(tw_cond_wait_timeout(&c, 0.0), TW_ETIMEDOUT);
    assert_true(tw_lock_locked(&l));
    assert_int_equal(tw_lock_release(&l), 0);

    assert_int_equal(tw_cond_acquire_timeout(&c, 1.0), 0);
    assert_true(tw_lock_locked(&l));
    assert_int_equal(tw_cond_release(&c), 0);

    assert_int_equal(tw_cond_acquire(&stat_cond), 0);
    assert_true(tw_lock_locked(&stat_lock));
    assert_int_equal(tw_cond_wait_timeout(&stat_cond, 0.0), TW_ETIMEDOUT);
    assert_true(tw_lock_locked(&stat_lock));
    assert_int_equal(tw_cond_release(&stat_cond), 0);
    assert_false(tw_lock_locked(&stat_lock));
}

static void test_cond_bound_to_rlock(void **state)
{
    static tw_rlock stat_rlock = TW_RLOCK_INIT;
    static tw_cond stat_cond = TW_COND_INIT_RLOCK(&stat_rlock);
    tw_rlock r = TW_RLOCK_INIT;
    tw_cond c;
    probe p;
    (void)state;

    assert_int_equal(tw_cond_init_rlock(&c, &r), 0);
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_true(tw_rlock_is_owned(&r));
    assert_int_equal(tw_rlock_count(&r), 1);
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_int_equal(tw_cond_try_acquire(&c), 0);
    assert_int_equal(tw_rlock_acquire(&r), 0);
    assert_int_equal(tw_rlock_count(&r), 4);

    p = run_probe(&c, true); /* not the owner: nothing is permitted */
    assert_int_equal(p.try_rc, TW_EBUSY);
    assert_int_equal(p.release_rc, TW_EPERM);
    assert_int_equal(p.notify_rc, TW_EPERM);
    assert_int_equal(p.notify_all_rc, TW_EPERM);
    assert_int_equal(p.wait_rc, TW_EPERM);
    assert_int_equal(tw_rlock_count(&r), 4);

    assert_int_equal(tw_cond_wait_timeout(&c, 0.0), TW_ETIMEDOUT);
    assert_int_equal(tw_rlock_count(&r), 4);
    assert_int_equal(tw_rlock_release(&r), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tw_cond_release(&c), 0);
    assert_false(tw_rlock_is_owned(&r));
    assert_false(tw_rlock_locked(&r));
    assert_int_equal(tw_cond_release(&c), TW_EPERM);

    assert_int_equal(tw_cond_acquire(&stat_cond), 0);
    assert_true(tw_rlock_is_owned(&stat_rlock));
    assert_int_equal(tw_cond_notify(&stat_cond, 2), 0);
    assert_int_equal(tw_cond_release(&stat_cond), 0);
    assert_false(tw_rlock_locked(&stat_rlock));
}

static bool pred_false(void *arg)
{
    (void)arg;
    return false;
}

static void test_cond_eperm_without_lock(void **state)
{
    fixture f;
    (void)state;

    for (enum kind k = KIND_OWN; k <= KIND_RLOCK; k++) {
        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        assert_int_equal(tw_cond_wait(&f.c), TW_EPERM);
        assert_int_equal(tw_cond_wait_timeout(&f.c, 1.0), TW_EPERM);
        assert_int_equal(tw_cond_wait_timeout(&f.c, -1.0), TW_EPERM);
        assert_int_equal(tw_cond_wait_for(&f.c, pred_false, NULL, 1.0), TW_EPERM);
        assert_int_equal(tw_cond_notify(&f.c, 1), TW_EPERM);
        assert_int_equal(tw_cond_notify_all(&f.c), TW_EPERM);
        assert_int_equal(tw_cond_release(&f.c), TW_EPERM);
        /* Nothing changed: the lock is free and works. */
        assert_int_equal(tw_cond_acquire_timeout(&f.c, 0.0), 0);
        assert_int_equal(tw_cond_notify(&f.c, 1), 0);
        release_expect_depth(&f, 1);
    }
}

static int return_seven(void *arg)
{
    (void)arg;
    return 7;
}

static void test_cond_invalid_arguments(void **state)
{
    tw_lock l = TW_LOCK_INIT;
    tw_rlock r = TW_RLOCK_INIT;
    tw_cond c = TW_COND_INIT;
    int calls = 0;
    (void)state;

    tw_cond_init(NULL); /* must not crash */
    assert_int_equal(tw_cond_init_lock(NULL, &l), TW_EINVAL);
    assert_int_equal(tw_cond_init_lock(&c, NULL), TW_EINVAL);
    assert_int_equal(tw_cond_init_rlock(NULL, &r), TW_EINVAL);
    assert_int_equal(tw_cond_init_rlock(&c, NULL), TW_EINVAL);
    assert_int_equal(tw_cond_acquire(NULL), TW_EINVAL);
    assert_int_equal(tw_cond_try_acquire(NULL), TW_EINVAL);
    assert_int_equal(tw_cond_acquire_timeout(NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_cond_release(NULL), TW_EINVAL);
    assert_int_equal(tw_cond_wait(NULL), TW_EINVAL);
    assert_int_equal(tw_cond_wait_timeout(NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_cond_wait_for(NULL, pred_false, NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_cond_notify(NULL, 1), TW_EINVAL);
    assert_int_equal(tw_cond_notify_all(NULL), TW_EINVAL);
    assert_int_equal(tw_cond_run(NULL, return_seven, NULL), TW_EINVAL);

    /* NaN while the lock is free: refused, and the lock stays free. */
    assert_int_equal(tw_cond_acquire_timeout(&c, NAN), TW_EINVAL);
    assert_int_equal(run_probe(&c, false).try_rc, 0);
    assert_int_equal(tw_cond_run(&c, NULL, NULL), TW_EINVAL);
    assert_int_equal(run_probe(&c, false).try_rc, 0);

    /* NaN and NULL while holding it at depth 2: refused, nothing happened. */
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_int_equal(tw_cond_acquire(&c), 0);
    assert_int_equal(tw_cond_wait_timeout(&c, NAN), TW_EINVAL);
    assert_int_equal(tw_cond_wait_for(&c, pred_false, &calls, NAN), TW_EINVAL);
    assert_int_equal(tw_cond_wait_for(&c, NULL, NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_cond_release(&c), 0);
    assert_int_equal(tw_cond_release(&c), 0);
    assert_int_equal(tw_cond_release(&c), TW_EPERM);
}

/* ---- timed waits --------------------------------------------------------- */

static void test_cond_wait_timeout_expires(void **state)
{
    fixture f;
    (void)state;

    for (enum kind k = KIND_OWN; k <= KIND_RLOCK; k++) {
        int depth = k == KIND_LOCK ? 1 : 2;
        double t0, elapsed;
        probe p;

        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        for (int i = 0; i < depth; i++)
            assert_int_equal(tw_cond_acquire(&f.c), 0);

        t0 = tw_test_now();
        assert_int_equal(tw_cond_wait_timeout(&f.c, SHORT_TIMEOUT), TW_ETIMEDOUT);
        elapsed = tw_test_now() - t0;
        if (elapsed < SHORT_TIMEOUT)
            fail_msg("timed out after %.9f s, asked for %.9f s", elapsed, SHORT_TIMEOUT);
        assert_true(elapsed < 5.0);

        assert_int_equal(tw_cond_wait_timeout(&f.c, 0.0), TW_ETIMEDOUT);
        assert_int_equal(tw_cond_wait_timeout(&f.c, 1e-9), TW_ETIMEDOUT);

        /* The lock is held again, at the same depth. */
        p = run_probe(&f.c, false);
        assert_int_equal(p.try_rc, TW_EBUSY);
        release_expect_depth(&f, depth);
    }
}

/* Holder: takes the condition's lock, reports, keeps it until told. */
typedef struct holder {
    tw_cond *c;
    tw_event held, release;
    int rc;
} holder;

static void *holder_main(void *arg)
{
    holder *h = arg;
    h->rc = tw_cond_acquire(h->c);
    tw_event_set(&h->held);
    tw_event_wait(&h->release);
    if (h->rc == 0)
        h->rc = tw_cond_release(h->c);
    return NULL;
}

static void test_cond_acquire_timeout_and_try(void **state)
{
    fixture f;
    (void)state;

    for (enum kind k = KIND_OWN; k <= KIND_RLOCK; k++) {
        holder h;
        pthread_t t;
        double t0, elapsed;

        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        memset(&h, 0, sizeof h);
        h.c = &f.c;
        t = tw_test_start(holder_main, &h);
        assert_int_equal(tw_event_wait(&h.held), 0);

        assert_int_equal(tw_cond_try_acquire(&f.c), TW_EBUSY);
        assert_int_equal(tw_cond_acquire_timeout(&f.c, 0.0), TW_ETIMEDOUT);
        t0 = tw_test_now();
        assert_int_equal(tw_cond_acquire_timeout(&f.c, SHORT_TIMEOUT), TW_ETIMEDOUT);
        elapsed = tw_test_now() - t0;
        if (elapsed < SHORT_TIMEOUT)
            fail_msg("timed out after %.9f s, asked for %.9f s", elapsed, SHORT_TIMEOUT);

        assert_int_equal(tw_event_set(&h.release), 0);
        assert_int_equal(tw_cond_acquire_timeout(&f.c, HANG_LIMIT), 0);
        tw_test_join(t);
        assert_int_equal(h.rc, 0);
        release_expect_depth(&f, 1);
    }
}

/* ---- wait releases a recursively held RLock fully ------------------------ */

typedef struct recursive {
    fixture *f;
    atomic_int registered; /* set holding the lock, just before waiting */
    int go;
    int acquire_rc[3];
    int wait_rc;
    uint32_t depth_after; /* KIND_RLOCK only */
    int release_rc[4];
} recursive;

static void *recursive_waiter(void *arg)
{
    recursive *x = arg;
    tw_cond *c = &x->f->c;
    for (int i = 0; i < 3; i++)
        x->acquire_rc[i] = tw_cond_acquire(c);
    atomic_store(&x->registered, 1);
    x->wait_rc = tw_cond_wait_for(c, pred_flag, &x->go, HANG_LIMIT);
    x->depth_after = tw_rlock_count(&x->f->r);
    for (int i = 0; i < 4; i++)
        x->release_rc[i] = tw_cond_release(c);
    return NULL;
}

static void test_cond_wait_releases_recursive_rlock(void **state)
{
    static const enum kind kinds[] = {KIND_OWN, KIND_RLOCK};
    static fixture f;  /* both outlive the test if the waiter is left stuck */
    static recursive x;
    (void)state;

    for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++) {
        enum kind k = kinds[ki];
        pthread_t t;

        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        memset(&x, 0, sizeof x);
        x.f = &f;

        t = tw_test_start(recursive_waiter, &x);
        while (!atomic_load(&x.registered))
            sched_yield();
        /* The waiter holds the lock three deep until its wait gives up all
         * three levels; once this thread has the lock, the waiter is queued. */
        if (tw_cond_acquire_timeout(&f.c, HANG_LIMIT) != 0)
            fail_msg("%s: the lock was not free while a depth-3 owner waited", kind_name(k));
        if (k == KIND_RLOCK) {
            assert_true(tw_rlock_is_owned(&f.r));
            assert_int_equal(tw_rlock_count(&f.r), 1);
        }
        assert_int_equal(tw_cond_try_acquire(&f.c), 0); /* ours, recursively */
        assert_int_equal(tw_cond_release(&f.c), 0);
        x.go = 1;
        assert_int_equal(tw_cond_notify_all(&f.c), 0);
        assert_int_equal(tw_cond_release(&f.c), 0);
        tw_test_join(t);

        for (int i = 0; i < 3; i++)
            assert_int_equal(x.acquire_rc[i], 0);
        assert_int_equal(x.wait_rc, 0);
        if (k == KIND_RLOCK)
            assert_int_equal(x.depth_after, 3);
        for (int i = 0; i < 3; i++)
            assert_int_equal(x.release_rc[i], 0);
        assert_int_equal(x.release_rc[3], TW_EPERM);
    }
}

/* ---- notify(n): exactly n, oldest first ---------------------------------- */

enum { FIFO_K = 6 };

typedef struct fifo {
    fixture *f;
    double timeout[FIFO_K]; /* by registration index; 0: tw_cond_wait */
    int registered, n_woken;
    int order[FIFO_K];
    int rc[FIFO_K];
    int bad;
} fifo;

static void *fifo_waiter(void *arg)
{
    fifo *s = arg;
    int idx, rc;
    if (tw_cond_acquire(&s->f->c) != 0) {
        s->bad++; /* unreachable unless acquire is broken; main sees it */
        return NULL;
    }
    idx = s->registered++;
    if (tw_cond_notify_all(&s->f->reg) != 0)
        s->bad++;
    rc = s->timeout[idx] != 0 ? tw_cond_wait_timeout(&s->f->c, s->timeout[idx])
                              : tw_cond_wait(&s->f->c);
    s->rc[idx] = rc;
    s->order[s->n_woken++] = idx;
    if (tw_cond_notify_all(&s->f->reg) != 0)
        s->bad++;
    if (tw_cond_release(&s->f->c) != 0)
        s->bad++;
    return NULL;
}

static void test_cond_notify_n_fifo(void **state)
{
    fixture f;
    (void)state;

    for (enum kind k = KIND_LOCK; k <= KIND_RLOCK; k++) {
        fifo s;
        pthread_t t[FIFO_K];

        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        memset(&s, 0, sizeof s);
        s.f = &f;
        for (int i = 0; i < FIFO_K; i++)
            s.timeout[i] = (i % 2) ? 60.0 : 0; /* both forms share one queue */

        assert_int_equal(tw_cond_acquire(&f.c), 0);
        for (int i = 0; i < FIFO_K; i++) {
            t[i] = tw_test_start(fifo_waiter, &s);
            await_value(&f.reg, &s.registered, i + 1); /* enqueued in order 0..K-1 */
        }

        assert_int_equal(tw_cond_notify(&f.c, 0), 0);
        assert_stays_below(&f.reg, &s.n_woken, 1);

        assert_int_equal(tw_cond_notify(&f.c, 2), 0);
        await_value(&f.reg, &s.n_woken, 2);
        assert_stays_below(&f.reg, &s.n_woken, 3);
        assert_true((s.order[0] == 0 && s.order[1] == 1) ||
                    (s.order[0] == 1 && s.order[1] == 0));

        assert_int_equal(tw_cond_notify(&f.c, 1), 0);
        await_value(&f.reg, &s.n_woken, 3);
        assert_stays_below(&f.reg, &s.n_woken, 4);
        assert_int_equal(s.order[2], 2);

        assert_int_equal(tw_cond_notify(&f.c, 1), 0);
        await_value(&f.reg, &s.n_woken, 4);
        assert_stays_below(&f.reg, &s.n_woken, 5);
        assert_int_equal(s.order[3], 3);

        /* notify_all: the rest, re-taking the lock in queue order. */
        assert_int_equal(tw_cond_notify_all(&f.c), 0);
        await_value(&f.reg, &s.n_woken, FIFO_K);
        assert_int_equal(s.order[4], 4);
        assert_int_equal(s.order[5], 5);

        /* Nobody left: notifying more than are waiting is fine. */
        assert_int_equal(tw_cond_notify(&f.c, 3), 0);
        assert_int_equal(tw_cond_notify_all(&f.c), 0);
        assert_int_equal(tw_cond_release(&f.c), 0);
        for (int i = 0; i < FIFO_K; i++)
            tw_test_join(t[i]);
        assert_int_equal(s.bad, 0);
        assert_int_equal(s.n_woken, FIFO_K);
        for (int i = 0; i < FIFO_K; i++)
            assert_int_equal(s.rc[i], 0);
    }
}

/* Waiters that time out leave the queue from its head, middle and tail; the
 * others keep their order and a later waiter queues behind them. */
static void test_cond_timed_out_waiters_leave_queue(void **state)
{
    fixture f;
    fifo s;
    pthread_t t[FIFO_K];
    (void)state;

    for (enum kind k = KIND_LOCK; k <= KIND_RLOCK; k++) {
        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        memset(&s, 0, sizeof s);
        s.f = &f;
        /* 0, 2 and 4 (head, middle, tail) time out; 1 and 3 wait for notify. */
        s.timeout[0] = s.timeout[2] = s.timeout[4] = SHORT_TIMEOUT;

        assert_int_equal(tw_cond_acquire(&f.c), 0);
        for (int i = 0; i < 5; i++) {
            t[i] = tw_test_start(fifo_waiter, &s);
            await_value(&f.reg, &s.registered, i + 1);
        }
        await_value(&f.reg, &s.n_woken, 3);
        assert_int_equal(s.rc[0], TW_ETIMEDOUT);
        assert_int_equal(s.rc[2], TW_ETIMEDOUT);
        assert_int_equal(s.rc[4], TW_ETIMEDOUT);

        /* A newcomer queues behind the survivors. */
        t[5] = tw_test_start(fifo_waiter, &s);
        await_value(&f.reg, &s.registered, 6);

        assert_int_equal(tw_cond_notify(&f.c, 1), 0);
        await_value(&f.reg, &s.n_woken, 4);
        assert_stays_below(&f.reg, &s.n_woken, 5);
        assert_int_equal(s.order[3], 1);
        assert_int_equal(tw_cond_notify(&f.c, 1), 0);
        await_value(&f.reg, &s.n_woken, 5);
        assert_stays_below(&f.reg, &s.n_woken, 6);
        assert_int_equal(s.order[4], 3);
        assert_int_equal(tw_cond_notify(&f.c, 1), 0);
        await_value(&f.reg, &s.n_woken, 6);
        assert_int_equal(s.order[5], 5);
        assert_int_equal(tw_cond_release(&f.c), 0);
        for (int i = 0; i < FIFO_K; i++)
            tw_test_join(t[i]);
        assert_int_equal(s.bad, 0);
        assert_int_equal(s.rc[1], 0);
        assert_int_equal(s.rc[3], 0);
        assert_int_equal(s.rc[5], 0);
    }
}

/* notify(n) with n above the number of waiters wakes them all, exactly once. */
static void test_cond_notify_more_than_waiting(void **state)
{
    fixture f;
    fifo s;
    pthread_t t[3];
    (void)state;

    fixture_init(&f, KIND_LOCK);
    memset(&s, 0, sizeof s);
    s.f = &f;
    assert_int_equal(tw_cond_acquire(&f.c), 0);
    for (int i = 0; i < 3; i++) {
        t[i] = tw_test_start(fifo_waiter, &s);
        await_value(&f.reg, &s.registered, i + 1);
    }
    assert_int_equal(tw_cond_notify(&f.c, 1000), 0);
    await_value(&f.reg, &s.n_woken, 3);
    assert_int_equal(tw_cond_release(&f.c), 0);
    for (int i = 0; i < 3; i++)
        tw_test_join(t[i]);
    assert_int_equal(s.bad, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.rc[i], 0);
        assert_int_equal(s.order[i], i);
    }
}

/* ---- notify_all on a zeroed condition ------------------------------------ */

enum { ALL_K = 6 };

typedef struct gather {
    tw_cond c;
    int registered, go, returned;
    int rc[ALL_K];
    int bad;
} gather;

static void *gather_waiter(void *arg)
{
    gather *g = arg;
    int idx;
    if (tw_cond_acquire(&g->c) != 0) {
        g->bad++;
        return NULL;
    }
    idx = g->registered++;
    tw_cond_notify_all(&g->c); /* for the main thread; the others re-check and wait on */
    g->rc[idx] = tw_cond_wait_for(&g->c, pred_flag, &g->go, HANG_LIMIT);
    g->returned++;
    if (tw_cond_release(&g->c) != 0)
        g->bad++;
    return NULL;
}

static void test_cond_notify_all_wakes_everyone(void **state)
{
    static gather g; /* waiters may outlive a failed test */
    pthread_t t[ALL_K];
    (void)state;

    memset(&g, 0, sizeof g);
    assert_int_equal(tw_cond_acquire(&g.c), 0);
    for (int i = 0; i < ALL_K; i++)
        t[i] = tw_test_start(gather_waiter, &g);
    await_value(&g.c, &g.registered, ALL_K);
    assert_int_equal(g.returned, 0);
    g.go = 1;
    assert_int_equal(tw_cond_notify_all(&g.c), 0);
    assert_int_equal(tw_cond_release(&g.c), 0);
    for (int i = 0; i < ALL_K; i++)
        tw_test_join(t[i]);
    assert_int_equal(g.bad, 0);
    assert_int_equal(g.returned, ALL_K);
    for (int i = 0; i < ALL_K; i++)
        assert_int_equal(g.rc[i], 0); /* not TW_ETIMEDOUT: one notify_all woke all */
}

/* ---- wait_for ------------------------------------------------------------ */

static bool pred_true_counting(void *arg)
{
    ++*(int *)arg;
    return true;
}

static bool pred_false_counting(void *arg)
{
    ++*(int *)arg;
    return false;
}

static void test_cond_wait_for_immediate_and_timeout(void **state)
{
    fixture f;
    (void)state;

    for (enum kind k = KIND_OWN; k <= KIND_RLOCK; k++) {
        int calls = 0;
        double t0, elapsed;

        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        assert_int_equal(tw_cond_acquire(&f.c), 0);

        /* A true predicate never waits: nobody would notify this thread. */
        assert_int_equal(tw_cond_wait_for(&f.c, pred_true_counting, &calls, -1.0), 0);
        assert_true(calls >= 1);
        calls = 0;
        assert_int_equal(tw_cond_wait_for(&f.c, pred_true_counting, &calls, 0.0), 0);
        assert_true(calls >= 1);

        calls = 0;
        assert_int_equal(tw_cond_wait_for(&f.c, pred_false_counting, &calls, 0.0), TW_ETIMEDOUT);
        assert_true(calls >= 1);

        calls = 0;
        t0 = tw_test_now();
        assert_int_equal(tw_cond_wait_for(&f.c, pred_false_counting, &calls, SHORT_TIMEOUT),
                         TW_ETIMEDOUT);
        elapsed = tw_test_now() - t0;
        if (elapsed < SHORT_TIMEOUT)
            fail_msg("timed out after %.9f s, asked for %.9f s", elapsed, SHORT_TIMEOUT);
        assert_true(elapsed < 5.0);
        assert_true(calls >= 1);

        assert_int_equal(run_probe(&f.c, false).try_rc, TW_EBUSY);
        release_expect_depth(&f, 1);
    }
}

typedef struct stepper {
    fixture *f;
    int value;
    int calls;
    int rc, value_at_return;
    double elapsed;
    int done;
} stepper;

/* Counts its calls and reports each one on reg, then asks value >= 3. */
static bool pred_value_reaches_3(void *arg)
{
    stepper *s = arg;
    s->calls++;
    tw_cond_notify_all(&s->f->reg);
    return s->value >= 3;
}

static void *stepper_main(void *arg)
{
    stepper *s = arg;
    if (tw_cond_acquire(&s->f->c) != 0)
        return NULL;
    s->rc = tw_cond_wait_for(&s->f->c, pred_value_reaches_3, s, HANG_LIMIT);
    s->value_at_return = s->value;
    tw_cond_release(&s->f->c);
    return NULL;
}

/* The predicate becomes true only after several notifies; each notify makes
 * the waiter re-check it and wait again. */
static void test_cond_wait_for_becomes_true(void **state)
{
    fixture f;
    stepper s;
    pthread_t t;
    (void)state;

    fixture_init(&f, KIND_LOCK);
    memset(&s, 0, sizeof s);
    s.f = &f;
    s.rc = -1000;

    assert_int_equal(tw_cond_acquire(&f.c), 0);
    t = tw_test_start(stepper_main, &s);
    await_value(&f.reg, &s.calls, 1);
    for (int v = 1; v <= 3; v++) {
        int seen = s.calls;
        s.value = v;
        assert_int_equal(tw_cond_notify(&f.c, 1), 0);
        if (v < 3)
            await_value(&f.reg, &s.calls, seen + 1); /* checked, false, waiting again */
    }
    assert_int_equal(tw_cond_release(&f.c), 0);
    tw_test_join(t);
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.value_at_return, 3);
    assert_true(s.calls >= 4);
}

/* Counts its calls, reports each on reg, never true. */
static bool pred_never_reporting(void *arg)
{
    stepper *s = arg;
    s->calls++;
    tw_cond_notify_all(&s->f->reg);
    return false;
}

#define STRETCH_TIMEOUT 0.0625 /* the wait_for under test */
#define STRETCH_PESTER 1.5     /* how long the waiter is re-notified, at most */
#define STRETCH_SLACK 1.0      /* lateness tolerated: scheduling, not design */
enum { STRETCH_TRIALS = 12 };

static void *pester_target_main(void *arg)
{
    stepper *s = arg;
    double t0;
    if (tw_cond_acquire(&s->f->c) != 0)
        return NULL;
    t0 = tw_test_now();
    s->rc = tw_cond_wait_for(&s->f->c, pred_never_reporting, s, STRETCH_TIMEOUT);
    s->elapsed = tw_test_now() - t0;
    s->done = 1;
    tw_cond_notify_all(&s->f->reg);
    tw_cond_release(&s->f->c);
    return NULL;
}

typedef struct progress {
    const stepper *s;
    int seen;
} progress;

static bool pred_progress(void *arg)
{
    const progress *p = arg;
    return p->s->done || p->s->calls > p->seen;
}

/* The timeout bounds the whole wait_for: a waiter whose predicate stays false
 * returns TW_ETIMEDOUT at its deadline even if it is notified again every
 * time it goes back to sleep. Whether a notification lands just after the
 * deadline, before the waiter has re-taken the lock, is a race; it is won most
 * often when both threads share one CPU, as on a single-CPU machine, so the
 * test runs there when it can, and makes many short trials; any one that
 * overruns fails. */
static void test_cond_wait_for_timeout_not_stretched(void **state)
{
    static fixture f; /* both outlive the test if the waiter is left stuck */
    static stepper s;
    double worst = 0;
    long total_notifies = 0;
    cpu_set_t saved;
    bool pinned = false;
    (void)state;

    /* The waiters started below inherit this thread's CPU set. */
    if (pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (CPU_ISSET(cpu, &saved)) {
                cpu_set_t one;
                CPU_ZERO(&one);
                CPU_SET(cpu, &one);
                pinned = pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0;
                break;
            }
        }
    }

    for (int trial = 0; trial < STRETCH_TRIALS; trial++) {
        progress p;
        pthread_t t;
        double start;
        int notifies = 0;

        fixture_init(&f, KIND_LOCK);
        memset(&s, 0, sizeof s);
        s.f = &f;
        s.rc = -1000;
        p.s = &s;
        p.seen = 0;

        assert_int_equal(tw_cond_acquire(&f.c), 0);
        t = tw_test_start(pester_target_main, &s);
        start = tw_test_now();
        for (;;) {
            int rc = tw_cond_wait_for(&f.reg, pred_progress, &p, HANG_LIMIT);
            if (rc != 0) {
                tw_cond_release(&f.c);
                if (pinned)
                    pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
                fail_msg("trial %d: the waiter made no progress for %.0f s", trial, HANG_LIMIT);
            }
            if (s.done)
                break;
            p.seen = s.calls;
            /* The waiter is queued again (it checked the predicate under the
             * lock, then waited): wake it, for a while. */
            if (tw_test_now() - start < STRETCH_PESTER) {
                assert_int_equal(tw_cond_notify(&f.c, 1), 0);
                notifies++;
            }
        }
        assert_int_equal(tw_cond_release(&f.c), 0);
        tw_test_join(t);
        if (pinned && trial == STRETCH_TRIALS - 1)
            assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof saved, &saved), 0);
        total_notifies += notifies;
        if (s.elapsed > worst)
            worst = s.elapsed;
        if (pinned && trial < STRETCH_TRIALS - 1 &&
            (s.rc != TW_ETIMEDOUT || s.elapsed < STRETCH_TIMEOUT ||
             s.elapsed > STRETCH_TIMEOUT + STRETCH_SLACK))
            pthread_setaffinity_np(pthread_self(), sizeof saved, &saved); /* failing below */
        assert_int_equal(s.rc, TW_ETIMEDOUT);
        if (s.elapsed < STRETCH_TIMEOUT || s.elapsed > STRETCH_TIMEOUT + STRETCH_SLACK)
            fail_msg("trial %d: wait_for(%.4f s) returned after %.3f s, re-notified %d times",
                     trial, STRETCH_TIMEOUT, s.elapsed, notifies);
        assert_true(s.calls >= 2); /* it was woken and re-checked at least once */
    }
    print_message("%d trials%s, %ld wake-ups, slowest return %.3f s after a %.4f s timeout\n",
                  STRETCH_TRIALS, pinned ? " on one CPU" : "", total_notifies, worst,
                  STRETCH_TIMEOUT);
}

/* ---- several conditions on one lock -------------------------------------- */

typedef struct pair_waiter {
    tw_cond *c, *reg;
    int *registered;
    int woken;
    int rc;
} pair_waiter;

static void *pair_waiter_main(void *arg)
{
    pair_waiter *w = arg;
    if (tw_cond_acquire(w->c) != 0)
        return NULL;
    ++*w->registered;
    tw_cond_notify_all(w->reg);
    w->rc = tw_cond_wait(w->c);
    w->woken = 1;
    tw_cond_notify_all(w->reg);
    tw_cond_release(w->c);
    return NULL;
}

static void test_cond_several_conditions_share_lock(void **state)
{
    fixture f;
    (void)state;

    for (enum kind k = KIND_LOCK; k <= KIND_RLOCK; k++) {
        tw_cond other;
        int registered = 0;
        pair_waiter a, b;
        pthread_t ta, tb;

        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        if (k == KIND_LOCK)
            assert_int_equal(tw_cond_init_lock(&other, &f.l), 0);
        else
            assert_int_equal(tw_cond_init_rlock(&other, &f.r), 0);
        a = (pair_waiter){&f.c, &f.reg, &registered, 0, -1000};
        b = (pair_waiter){&other, &f.reg, &registered, 0, -1000};

        assert_int_equal(tw_cond_acquire(&f.reg), 0);
        ta = tw_test_start(pair_waiter_main, &a);
        await_value(&f.reg, &registered, 1);
        tb = tw_test_start(pair_waiter_main, &b);
        await_value(&f.reg, &registered, 2);

        /* Notifying one condition wakes only its own waiter. */
        assert_int_equal(tw_cond_notify_all(&f.c), 0);
        await_value(&f.reg, &a.woken, 1);
        assert_stays_below(&f.reg, &b.woken, 1);
        assert_int_equal(tw_cond_notify(&f.c, 1), 0); /* nobody left on c */
        assert_stays_below(&f.reg, &b.woken, 1);

        assert_int_equal(tw_cond_notify(&other, 1), 0);
        await_value(&f.reg, &b.woken, 1);
        assert_int_equal(tw_cond_release(&f.reg), 0);
        tw_test_join(ta);
        tw_test_join(tb);
        assert_int_equal(a.rc, 0);
        assert_int_equal(b.rc, 0);
    }
}

/* ---- producer / consumer ------------------------------------------------- */

enum { PC_CAP = 4, PC_PRODUCERS = 2, PC_CONSUMERS = 2, PC_PER_PRODUCER = 20000 };
#define PC_TOTAL (PC_PRODUCERS * PC_PER_PRODUCER)

typedef struct pc {
    tw_lock lock;
    tw_cond not_empty, not_full; /* both on `lock` */
    int buf[PC_CAP];
    int head, count;
    long taken;
    unsigned char seen[PC_TOTAL + 1];
    long consumed[PC_CONSUMERS];
    long long sum[PC_CONSUMERS];
    int max_count;
    int bad;
} pc;

typedef struct pc_arg {
    pc *q;
    int id;
} pc_arg;

static void *producer_main(void *arg)
{
    pc_arg *a = arg;
    pc *q = a->q;
    for (int i = 0; i < PC_PER_PRODUCER; i++) {
        int item = a->id * PC_PER_PRODUCER + i + 1;
        tw_cond_acquire(&q->not_full);
        while (q->count == PC_CAP)
            if (tw_cond_wait(&q->not_full) != 0)
                q->bad++;
        q->buf[(q->head + q->count) % PC_CAP] = item;
        q->count++;
        if (q->count > q->max_count)
            q->max_count = q->count;
        if (tw_cond_notify(&q->not_empty, 1) != 0)
            q->bad++;
        tw_cond_release(&q->not_full);
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    pc_arg *a = arg;
    pc *q = a->q;
    for (;;) {
        int item;
        tw_cond_acquire(&q->not_empty);
        while (q->count == 0 && q->taken < PC_TOTAL)
            if (tw_cond_wait(&q->not_empty) != 0)
                q->bad++;
        if (q->count == 0) { /* everything has been taken */
            tw_cond_release(&q->not_empty);
            break;
        }
        item = q->buf[q->head];
        q->head = (q->head + 1) % PC_CAP;
        q->count--;
        q->taken++;
        if (item < 1 || item > PC_TOTAL)
            q->bad++;
        else
            q->seen[item]++;
        q->consumed[a->id]++;
        q->sum[a->id] += item;
        if (q->taken == PC_TOTAL)
            tw_cond_notify_all(&q->not_empty); /* let the other consumers finish */
        if (tw_cond_notify(&q->not_full, 1) != 0)
            q->bad++;
        tw_cond_release(&q->not_empty);
    }
    return NULL;
}

static void test_cond_producer_consumer(void **state)
{
    static pc q;
    pc_arg pa[PC_PRODUCERS], ca[PC_CONSUMERS];
    pthread_t tp[PC_PRODUCERS], tc[PC_CONSUMERS];
    long total = 0;
    long long sum = 0;
    (void)state;

    memset(&q, 0, sizeof q);
    assert_int_equal(tw_cond_init_lock(&q.not_empty, &q.lock), 0);
    assert_int_equal(tw_cond_init_lock(&q.not_full, &q.lock), 0);
    for (int i = 0; i < PC_CONSUMERS; i++) {
        ca[i] = (pc_arg){&q, i};
        tc[i] = tw_test_start(consumer_main, &ca[i]);
    }
    for (int i = 0; i < PC_PRODUCERS; i++) {
        pa[i] = (pc_arg){&q, i};
        tp[i] = tw_test_start(producer_main, &pa[i]);
    }
    for (int i = 0; i < PC_PRODUCERS; i++)
        tw_test_join(tp[i]);
    for (int i = 0; i < PC_CONSUMERS; i++)
        tw_test_join(tc[i]);

    assert_int_equal(q.bad, 0);
    assert_int_equal(q.count, 0);
    assert_int_equal(q.taken, PC_TOTAL);
    assert_true(q.max_count <= PC_CAP);
    for (int i = 0; i < PC_CONSUMERS; i++) {
        total += q.consumed[i];
        sum += q.sum[i];
    }
    assert_int_equal(total, PC_TOTAL);
    assert_true(sum == (long long)PC_TOTAL * (PC_TOTAL + 1) / 2);
    for (int i = 1; i <= PC_TOTAL; i++)
        if (q.seen[i] != 1)
            fail_msg("item %d consumed %d times", i, q.seen[i]);
    assert_false(tw_lock_locked(&q.lock));
}

/* ---- ping-pong: no lost wake-ups ----------------------------------------- */

typedef struct pingpong {
    tw_cond *c;
    int turn;
    long rounds, count;
    int bad;
} pingpong;

typedef struct pp_arg {
    pingpong *p;
    int me;
} pp_arg;

static void *pingpong_main(void *arg)
{
    pp_arg *a = arg;
    pingpong *p = a->p;
    for (long i = 0; i < p->rounds; i++) {
        if (tw_cond_acquire(p->c) != 0) {
            p->bad++;
            return NULL;
        }
        while (p->turn != a->me)
            if (tw_cond_wait(p->c) != 0)
                p->bad++;
        p->count++;
        p->turn = 1 - a->me;
        /* At most the other thread waits: one notify must reach it. */
        if (tw_cond_notify(p->c, 1) != 0)
            p->bad++;
        tw_cond_release(p->c);
    }
    return NULL;
}

static void test_cond_ping_pong(void **state)
{
    enum { ROUNDS = 10000 };
    fixture f;
    (void)state;

    for (enum kind k = KIND_OWN; k <= KIND_RLOCK; k++) {
        pingpong p;
        pp_arg a0, a1;
        pthread_t t0, t1;
        double start = tw_test_now();

        fixture_init(&f, k);
        memset(&p, 0, sizeof p);
        p.c = &f.c;
        p.rounds = ROUNDS;
        a0 = (pp_arg){&p, 0};
        a1 = (pp_arg){&p, 1};
        t1 = tw_test_start(pingpong_main, &a1);
        t0 = tw_test_start(pingpong_main, &a0);
        tw_test_join(t0);
        tw_test_join(t1);
        print_message("kind %s: %d round trips in %.3f s\n", kind_name(k), ROUNDS,
                      tw_test_now() - start);
        assert_int_equal(p.bad, 0);
        assert_int_equal(p.count, 2 * ROUNDS);
        assert_int_equal(p.turn, 0);
    }
}

/* ---- run and the guard --------------------------------------------------- */

/* Returns 11 if the caller holds the condition's lock (notify permitted). */
static int held_probe_fn(void *arg)
{
    fixture *f = arg;
    if (tw_cond_notify(&f->c, 1) != 0)
        return -100;
    if (f->kind == KIND_LOCK && !tw_lock_locked(&f->l))
        return -101;
    if (f->kind == KIND_RLOCK && tw_rlock_count(&f->r) != 1)
        return -102;
    return 11;
}

static int failing_fn(void *arg)
{
    (void)arg;
    return TW_ECANCELED;
}

static int guarded_early_return(fixture *f)
{
    TW_WITH(&f->c) {
        if (tw_cond_notify(&f->c, 1) != 0)
            return -1;
        return 5; /* the guard releases on the way out */
    }
    return -2;
}

static void test_cond_run_and_guard(void **state)
{
    fixture f;
    (void)state;

    for (enum kind k = KIND_OWN; k <= KIND_RLOCK; k++) {
        int ran = 0;

        fixture_init(&f, k);
        print_message("kind: %s\n", kind_name(k));
        assert_int_equal(tw_cond_run(&f.c, held_probe_fn, &f), 11);
        assert_int_equal(tw_cond_notify(&f.c, 1), TW_EPERM); /* released */
        assert_int_equal(tw_cond_run(&f.c, failing_fn, NULL), TW_ECANCELED);
        assert_int_equal(tw_cond_notify(&f.c, 1), TW_EPERM);

        TW_WITH(&f.c) {
            ran = 1;
            assert_int_equal(held_probe_fn(&f), 11);
        }
        assert_int_equal(ran, 1);
        assert_int_equal(tw_cond_notify(&f.c, 1), TW_EPERM);

        assert_int_equal(guarded_early_return(&f), 5);
        assert_int_equal(tw_cond_notify(&f.c, 1), TW_EPERM);
        assert_int_equal(run_probe(&f.c, false).try_rc, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cond_zeroed_uses_own_rlock),
        cmocka_unit_test(test_cond_bound_to_lock),
        cmocka_unit_test(test_cond_bound_to_rlock),
        cmocka_unit_test(test_cond_eperm_without_lock),
        cmocka_unit_test(test_cond_invalid_arguments),
        cmocka_unit_test(test_cond_wait_timeout_expires),
        cmocka_unit_test(test_cond_acquire_timeout_and_try),
        cmocka_unit_test(test_cond_wait_releases_recursive_rlock),
        cmocka_unit_test(test_cond_notify_n_fifo),
        cmocka_unit_test(test_cond_timed_out_waiters_leave_queue),
        cmocka_unit_test(test_cond_notify_more_than_waiting),
        cmocka_unit_test(test_cond_notify_all_wakes_everyone),
        cmocka_unit_test(test_cond_wait_for_immediate_and_timeout),
        cmocka_unit_test(test_cond_wait_for_becomes_true),
        cmocka_unit_test(test_cond_wait_for_timeout_not_stretched),
        cmocka_unit_test(test_cond_several_conditions_share_lock),
        cmocka_unit_test(test_cond_producer_consumer),
        cmocka_unit_test(test_cond_ping_pong),
        cmocka_unit_test(test_cond_run_and_guard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
