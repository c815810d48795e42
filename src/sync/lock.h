/* Internal: Lock and Semaphore entry points for other sync modules and the
 * detector (src/debug/). */
#ifndef TW_SYNC_LOCK_H
#define TW_SYNC_LOCK_H

#include <twine/sync.h>

/* Acquires l as a thread that may have other threads parked behind it (the
 * word is left at 2, never 1), so that its release wakes the next one. A
 * thread woken from the lock's wait queue must acquire this way: it cannot
 * know whether it was the last sleeper. No spinning. */
void tw__lock_acquire_contended(tw_lock *l);

/* The slow path parking through tw__dbg_park (which looks for deadlocks at
 * the threshold), for the tracking paths, which bracket the wait themselves. */
int tw__lock_acquire_slow_dbg(tw_lock *l, tw_deadline deadline);
/* The slow path that never tells the detector: the detector's own lock. */
int tw__lock_acquire_slow_raw(tw_lock *l, tw_deadline deadline);

/* Semaphore: the slow path parking through tw__dbg_park; a release of n
 * tokens that refuses to pass `limit`. */
int tw__sem_acquire_slow_dbg(tw_sem *s, tw_deadline deadline);
int tw__sem_release_upto(tw_sem *s, uint32_t n, uint32_t limit);

/* Debug builds (src/debug/wait.c). How long a thread waits on a twine
 * primitive before the checks (a Lock it acquired itself, a deadlock), in
 * nanoseconds: tw_deadlock_set_threshold in seconds; tests lower it. */
#define TW__LOCK_SELF_WAIT_REPORT 1000000000
void tw__lock_set_self_wait_report(int64_t ns);

#endif
