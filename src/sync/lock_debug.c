/* Lock in debug builds: which Locks each thread acquired, and the probable
 * self-deadlock report.
 *
 * Code compiled with TW_DEBUG on (the library's own code in -DTW_DEBUG=ON
 * builds, and any application that defines it empty or non-zero) reaches
 * these instead of the inline paths of twine/sync.h; they are built in
 * every configuration. Each thread keeps the Locks it acquired and
 * has not released itself in a small array. A thread that has to wait for a
 * Lock in its own array is waiting for itself, unless another thread releases
 * that Lock for it, which a Lock allows (Python's too: a Lock used as a
 * signal). So the wait is not refused: after TW__LOCK_SELF_WAIT_REPORT it is
 * reported once through the diagnostic hook (TW_DIAG_WARNING, TW_EDEADLK),
 * and it goes on.
 *
 * Mixed builds. An application and the library may be compiled with and
 * without TW_DEBUG in any combination, so an entry must never outlive the
 * hold it records, or a later wait would be reported falsely:
 *   - forgetting is always safe: the library's releases on its caller's
 *     behalf (tw_cond_release) call tw__lock_release_tracked in every build;
 *   - remembering is safe only where the matching release tracks too. The
 *     library's functions that return holding their caller's Lock
 *     (tw_cond_acquire*, the exported tw_lock_acquire_timeout) and those
 *     that give it back and take it again (a Condition wait) use the plain
 *     paths, which leave the caller's entry, if any, as it was. An RLock's
 *     own Lock is never tracked: an RLock cannot wait for itself;
 *   - tw_lock_run, TW_WITH and the lock worker take and give back their
 *     Lock themselves, so they track whenever the library does.
 *
 * The array is the thread's own and needs no synchronisation. A Lock that
 * another thread released stays in its acquirer's array until the acquirer
 * acquires and releases it again; if the acquirer meanwhile waits on it
 * while a third thread holds it, that wait is reported too, falsely; hence
 * "probable". Locks past the array's capacity are not remembered (no report
 * for them, never a false one). */
#include <stdio.h>

#include "sync/lock.h"

#include "base/diag.h"
#include "base/time.h"

#define HELD_MAX 32

/* The default TLS model: these are in every build of the library, used only
 * by tracking code, and must not take static TLS from a dlopen'd libtwine. */
static __thread tw_lock *held[HELD_MAX];
static __thread unsigned n_held;

/* relaxed: a setting for tests, read once per self-wait. */
static int64_t report_after_ns = TW__LOCK_SELF_WAIT_REPORT;

void tw__lock_set_self_wait_report(int64_t ns)
{
    __atomic_store_n(&report_after_ns, ns, __ATOMIC_RELAXED);
}

static bool holds(const tw_lock *l)
{
    for (unsigned i = 0; i < n_held; i++)
        if (held[i] == l)
            return true;
    return false;
}

static void remember(tw_lock *l)
{
    if (n_held < HELD_MAX && !holds(l))
        held[n_held++] = l;
}

static void forget(const tw_lock *l)
{
    for (unsigned i = 0; i < n_held; i++) {
        if (held[i] == l) {
            held[i] = held[--n_held];
            return;
        }
    }
}

static void report_self_wait(const tw_lock *l, const char *function)
{
    char msg[256];
    snprintf(msg, sizeof msg,
             "probable self-deadlock: thread %u waits for Lock %p, which it acquired itself "
             "and has not released (a Lock is not reentrant: use tw_rlock); it keeps waiting",
             (unsigned)tw__self(), (const void *)l);
    tw_diag_report(TW_DIAG_WARNING, TW_EDEADLK, function, msg);
}

static int acquire(tw_lock *l, tw_deadline deadline, const char *function)
{
    if (!l)
        return TW_EINVAL;
    if (tw__lock_try_acquire_plain(l) == 0) {
        remember(l);
        return 0;
    }
    int rc;
    if (holds(l)) {
        int64_t after = __atomic_load_n(&report_after_ns, __ATOMIC_RELAXED);
        tw_deadline first = tw__add_sat(tw_now_ns(), after);
        if (first > deadline)
            first = deadline;
        rc = tw__lock_acquire_slow(l, first);
        if (rc == TW_ETIMEDOUT && first != deadline) {
            report_self_wait(l, function);
            rc = tw__lock_acquire_slow(l, deadline);
        }
    } else {
        rc = tw__lock_acquire_slow(l, deadline);
    }
    if (rc == 0)
        remember(l);
    return rc;
}

int tw__lock_acquire_tracked(tw_lock *l, tw_deadline deadline)
{
    return acquire(l, deadline, "tw_lock_acquire");
}

int tw__lock_acquire_timeout_tracked(tw_lock *l, double timeout)
{
    tw_deadline d;
    if (!l || tw_deadline_from_timeout(timeout, &d) != 0)
        return TW_EINVAL;
    if (timeout == 0) /* no wait, so no report */
        return tw__lock_try_acquire_tracked(l) == 0 ? 0 : TW_ETIMEDOUT;
    return acquire(l, d, "tw_lock_acquire_timeout");
}

int tw__lock_try_acquire_tracked(tw_lock *l)
{
    int rc = tw__lock_try_acquire_plain(l);
    if (rc == 0)
        remember(l);
    return rc;
}

int tw__lock_release_tracked(tw_lock *l)
{
    int rc = tw__lock_release_plain(l);
    if (rc == 0)
        forget(l);
    return rc;
}
