/* What a coroutine awaits besides a plain Deferred: a producer's return code
 * and Deferred together, a sleep on a clock, several Deferreds at once, and
 * a DeferredLock or DeferredSemaphore held for a block. All of it is built
 * on tw_await and the deferred layer's public functions: this layer needs
 * no loop, and the reactor's clock and thread work arrive as a tw_clock and
 * as Deferreds. */
#include <math.h>

#include "async/coro.h"
#include "base/alloc.h"
#include "deferred/deferred.h"

/* ---- a producer's code and Deferred ------------------------------------------ */

tw_result tw_await_call_at(int rc, tw_deferred **d, const char *file, int line)
{
    if (rc)
        return tw_result_fail(rc, "the call that was to give the awaited Deferred failed: %s",
                              tw_strerror(rc));
    if (!d)
        return tw_result_fail(TW_EINVAL, "tw_await_call without a Deferred");
    return tw_await_at(*d, file, line);
}

/* ---- sleeping ----------------------------------------------------------------- */

/* On the sleeping coroutine's stack: it stays there until the sleep ends. */
struct sleeper {
    tw_clock *clock;
    tw_clock_call *call;
    tw_deferred *d; /* the clock call's reference */
};

static void wake(void *arg)
{
    struct sleeper *s = arg;
    tw_deferred *d = s->d; /* s is gone once the coroutine resumes */
    tw_deferred_callback(d, tw_result_none());
    tw_deferred_unref(d);
}

/* Canceller: the clock call will not run, so its reference goes here; the
 * cancel then fails d with TW_ECANCELED. */
static void stop(tw_deferred *d, void *arg)
{
    struct sleeper *s = arg;
    if (tw_clock_cancel(s->clock, s->call) == 0)
        tw_deferred_unref(d);
}

int tw_await_sleep_at(tw_clock *clock, double seconds, const char *file, int line)
{
    struct sleeper s = {clock, NULL, NULL};
    tw_result r;
    int rc;

    if (!tw__co_current) {
        tw_diag_report(TW_DIAG_MISUSE, TW_EPERM, "tw_await_sleep",
                       "tw_await_sleep outside a coroutine: nothing to suspend");
        return TW_EPERM;
    }
    if (!clock || !(seconds >= 0) || isinf(seconds))
        return TW_EINVAL;
    rc = tw_deferred_create_at(&s.d, stop, &s, file, line);
    if (rc)
        return rc;
    rc = tw_clock_call_later(clock, seconds, wake, &s, &s.call);
    if (rc) {
        tw_deferred_unref(s.d);
        return rc;
    }
    tw_deferred_ref(s.d); /* one for the clock call, one for tw_await */
    r = tw_await_at(s.d, file, line);
    rc = tw_result_is_failure(r) ? tw_failure_code(tw_result_as_failure(r)) : 0;
    tw_result_drop(r);
    return rc;
}

/* ---- several Deferreds -------------------------------------------------------- */

static void unref_all(tw_deferred *const *ds, size_t n)
{
    for (size_t i = 0; ds && i < n; i++)
        tw_deferred_unref(ds[i]);
}

tw_result tw_await_all_at(tw_deferred *const *ds, size_t n, const char *file, int line)
{
    tw_deferred *list;
    int rc;

    if (!tw__co_current) {
        unref_all(ds, n);
        return tw_await_at(NULL, file, line); /* the misuse report and TW_EPERM */
    }
    /* The list keeps no reference to its inputs (their producers do), so
     * abandoned inputs still fail it with TW_EABANDONED. */
    rc = tw_gather_results(ds, n, true, &list);
    unref_all(ds, n);
    if (rc)
        return tw_result_fail(rc, "tw_await_all: %s", tw_strerror(rc));
    return tw_await_at(list, file, line);
}

/* tw_await_any: a race over n inputs, owned by one entry on each input
 * (until its result arrives) and by the awaiting coroutine. It points to each
 * input weakly: an input lives until its entry has run (an abandoned one
 * runs it as it goes), and the entry clears the pointer, so whatever is still
 * pointed to may be cancelled. The race holds its Deferred until freed. */
typedef struct race race;
struct race_slot {
    race *r;
    tw_deferred *input; /* weak; NULL once its result arrived */
};
struct race {
    tw_deferred *d;
    size_t n, owners, failed;
    size_t winner;            /* SIZE_MAX until a value arrives */
    tw_failure *first_failure; /* of the lowest-numbered input, a reference */
    size_t first_index;
    struct race_slot slots[];
};

static void race_put(race *r)
{
    if (--r->owners)
        return;
    if (r->first_failure)
        tw_failure_unref(r->first_failure);
    tw_deferred_unref(r->d);
    tw__free(r, sizeof *r + r->n * sizeof r->slots[0]);
}

/* Cancels every input that has not reported (each check is made right
 * before its cancel, which may make others report). */
static void race_cancel_rest(race *r)
{
    r->owners++;
    for (size_t i = 0; i < r->n; i++)
        if (r->slots[i].input)
            tw_deferred_cancel(r->slots[i].input);
    race_put(r);
}

static tw_result race_input(tw_result in, void *arg)
{
    struct race_slot *s = arg;
    race *r = s->r;
    size_t i = (size_t)(s - r->slots);
    s->input = NULL;
    if (tw_deferred_called(r->d)) {
        tw_result_drop(in); /* a loser's result: dropped, failures included */
    } else if (!tw_result_is_failure(in)) {
        r->winner = i;
        tw_deferred_callback(r->d, in);
        race_cancel_rest(r);
    } else {
        tw_failure *f = tw_result_as_failure(in);
        if (!r->first_failure || i < r->first_index) {
            if (r->first_failure)
                tw_failure_unref(r->first_failure);
            r->first_failure = tw_failure_ref(f);
            r->first_index = i;
        }
        tw_result_drop(in);
        if (++r->failed == r->n) {
            f = r->first_failure;
            tw_deferred_errback(r->d, tw_failure_wrap(tw_failure_ref(f), tw_failure_code(f),
                                                      "all %zu awaited Deferreds failed; "
                                                      "the first: %s",
                                                      r->n, tw_failure_message(f)));
        }
    }
    race_put(r);
    return tw_result_none();
}

static void race_cancelled(tw_deferred *d, void *arg)
{
    (void)d;
    race_cancel_rest(arg);
}

tw_result tw_await_any_at(tw_deferred *const *ds, size_t n, size_t *index, const char *file,
                          int line)
{
    race *r;
    tw_result out;
    size_t i;
    int rc;

    if (index)
        *index = SIZE_MAX;
    if (!tw__co_current) {
        unref_all(ds, n);
        return tw_await_at(NULL, file, line);
    }
    for (i = 0; ds && i < n && ds[i]; i++)
        ;
    if (n == 0 || i < n || n > SIZE_MAX / 2 / sizeof r->slots[0]) {
        unref_all(ds, i);
        return tw_result_fail(TW_EINVAL, "tw_await_any of no Deferreds, or of NULL");
    }
    r = tw__alloc(sizeof *r + n * sizeof r->slots[0]);
    if (!r || (rc = tw_deferred_create_at(&r->d, race_cancelled, r, file, line)) != 0) {
        tw__free(r, sizeof *r + n * sizeof r->slots[0]);
        unref_all(ds, n);
        return tw_result_fail(TW_ENOMEM, "no memory to await any of %zu Deferreds", n);
    }
    r->n = n;
    r->owners = 1; /* ours, until the end */
    r->failed = 0;
    r->winner = SIZE_MAX;
    r->first_failure = NULL;
    r->first_index = 0;
    for (i = 0; i < n; i++) {
        r->slots[i].r = r;
        r->slots[i].input = ds[i];
    }
    /* An input that has fired reports as its entry is added. A value wins
     * at once and cancels every input not yet reported, including those
     * not attached yet (the caller's references keep them alive until the
     * loop after this one): their entries, added next, take the result. */
    for (i = 0; i < n; i++) {
        r->owners++; /* the entry's, before it can run */
        if (tw_deferred_add_both(ds[i], race_input, &r->slots[i]) != 0) {
            r->owners--;
            r->slots[i].input = NULL; /* cannot wait on it: it counts as failed */
            if (++r->failed == n && !tw_deferred_called(r->d))
                tw_deferred_errback(r->d, tw_failure_new(TW_ENOMEM, "no memory to await "
                                                         "any of %zu Deferreds", n));
        }
    }
    for (i = 0; i < n; i++)
        tw_deferred_unref(ds[i]);
    out = tw_await_at(tw_deferred_ref(r->d), file, line);
    if (index)
        *index = r->winner;
    race_put(r);
    return out;
}

/* ---- guards --------------------------------------------------------------------- */

int tw__await_release_dlock(void *l)
{
    return tw_dlock_release(l);
}

int tw__await_release_dsem(void *s)
{
    return tw_dsem_release(s);
}

/* rc = the acquire's outcome; the guard holds obj when it is 0. */
static tw__guard enter(tw_result r, void *obj, int (*release)(void *), int *rc)
{
    tw__guard g = {NULL, release, 0};
    int code = tw_result_is_failure(r) ? tw_failure_code(tw_result_as_failure(r)) : 0;
    tw_result_drop(r); /* a grant's value is the primitive itself, with no drop */
    if (rc)
        *rc = code;
    else if (code)
        tw_diag_report(TW_DIAG_MISUSE, code, "TW_AWAIT_WITH",
                       "TW_AWAIT_WITH without a code to report that the block did not run");
    if (code == 0) {
        g.obj = obj;
        g.once = 1;
    }
    return g;
}

/* A grant that can be made at once is taken without a Deferred: the lock
 * or token is the guard's before the block, as TW_WITH's is. Otherwise the
 * Deferred acquire gives is awaited as tw_await awaits (twine/async.h has
 * the inline side, tw__await_guard_inline). */
int tw__await_guard_begin(void *p, int sem, const char *file, int line, tw__await *a)
{
    tw_deferred *d = NULL;
    int code;
    if (!tw__co_current) {
        a->r = tw_await_at(NULL, file, line); /* the misuse report and TW_EPERM */
        return 0;
    }
    if (sem ? tw__dsem_try_acquire(p) : tw__dlock_try_acquire(p)) {
        a->r = tw_result_none();
        return 0;
    }
    code = sem ? tw_dsem_acquire(p, &d) : tw_dlock_acquire(p, &d);
    if (code) {
        a->r = tw_await_call_at(code, &d, file, line);
        return 0;
    }
    return tw__await_begin(d, file, line, a);
}

tw__guard tw__await_guard_end(void *p, int sem, int *rc, tw_result r)
{
    return enter(r, p, sem ? tw__await_release_dsem : tw__await_release_dlock, rc);
}

/* For compilers without the inline switch. */
static tw__guard guard(void *p, int sem, int *rc, const char *file, int line)
{
    tw__await a;
    if (tw__await_guard_begin(p, sem, file, line, &a))
        tw__ctx_suspend(a.from, a.to); /* resumed with the result in a.r */
    return tw__await_guard_end(p, sem, rc, a.r);
}

tw__guard tw__await_guard_dlock(tw_dlock *l, int *rc, const char *file, int line)
{
    return guard(l, 0, rc, file, line);
}

tw__guard tw__await_guard_dsem(tw_dsem *s, int *rc, const char *file, int line)
{
    return guard(s, 1, rc, file, line);
}
