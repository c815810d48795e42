/* Internal: Lock entry points for other sync modules. */
#ifndef TW_SYNC_LOCK_H
#define TW_SYNC_LOCK_H

#include <twine/sync.h>

/* Acquires l as a thread that may have other threads parked behind it (the
 * word is left at 2, never 1), so that its release wakes the next one. A
 * thread woken from the lock's wait queue must acquire this way: it cannot
 * know whether it was the last sleeper. No spinning. */
void tw__lock_acquire_contended(tw_lock *l);

/* Debug builds (lock_debug.c). How long a thread waits on a Lock it acquired
 * itself before the probable self-deadlock report, in nanoseconds; tests
 * lower it. */
#define TW__LOCK_SELF_WAIT_REPORT 1000000000
void tw__lock_set_self_wait_report(int64_t ns);

#endif
