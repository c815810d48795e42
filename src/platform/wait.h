/* Internal: park a thread on a 32-bit word and wake threads parked on it.
 * This is the only thing the sync layer needs from the platform; each backend
 * implements it in one file (linux/wait.c: futex; posix/wait.c: hashed
 * pthread mutex/cond buckets).
 *
 * Contract (the futex contract):
 * - tw__wait(addr, expect, deadline) atomically checks *addr == expect and, if
 *   so, sleeps until a tw__wake on addr, the deadline, or a spurious wake-up.
 *   If *addr != expect it returns at once. Returns 0, or TW_ETIMEDOUT once the
 *   monotonic deadline has passed. Callers always re-check their condition:
 *   a 0 return proves nothing.
 * - tw__wake(addr, n) wakes up to n threads parked on addr (n = TW__WAKE_ALL
 *   for all). The word may already be dead (its owner returned): waking an
 *   address nobody waits on is harmless, and the backends never dereference it.
 * - tw__requeue moves a parked thread to another word (wait morphing: a
 *   thread notified under a lock sleeps on until the lock is released).
 * - A waker must change *addr before it wakes, and the change must be visible
 *   (seq_cst or release) to the waiter's re-check.
 */
#ifndef TW_PLATFORM_WAIT_H
#define TW_PLATFORM_WAIT_H

#include <limits.h>
#include <stdint.h>

#include <twine/base.h>

#define TW__WAKE_ALL INT_MAX

int tw__wait(uint32_t *addr, uint32_t expect, tw_deadline deadline);
void tw__wake(uint32_t *addr, int n);

/* Moves one thread parked on `from` (if *from still equals from_val) so that
 * it now waits on `to` and is woken by a tw__wake(to, ...) instead; nobody is
 * woken now. Returns 1 if a thread was moved, 0 if none was parked, or
 * TW_ENOTSUP where the backend cannot move waiters (the caller then wakes the
 * thread instead). The moved thread's tw__wait returns 0 when woken on `to`. */
int tw__requeue(uint32_t *from, uint32_t from_val, uint32_t *to);

/* How many CPUs the calling thread may run on (its affinity mask where the
 * platform has one, else the CPUs online); at least 1. A system call: cache it. */
int tw__thread_cpus(void);

#endif
